/**
 * The one place that writes to clients. Bounded: a client whose socket buffer grows past the
 * limit (it stopped reading) is sent an `error` event (code 503) and a close 1013, and is dropped
 * 2 s later if it does not read those either, instead of growing our memory (docs/limits.md).
 * The most a socket can hold is the limit plus one message plus that small error event.
 */
import { GatewayError, wsErrorEvent } from '../protocol/errors.ts';
import type { WsConnection } from './transport.ts';

export const CLIENT_NOT_READING_CLOSE = 1013;
/** After the 1013 close, how long a client that still does not read keeps its TCP connection. */
export const CLIENT_NOT_READING_GRACE_MS = 2000;

export class ClientSink {
  private readonly conn: WsConnection;
  private readonly maxBuffered: number;
  private readonly sessionId: string | undefined;
  private closed = false;
  private overflowed = false;
  private onOverflow: (() => void) | undefined;

  constructor(conn: WsConnection, opts: { maxBufferedBytes: number; onOverflow?: () => void; sessionId?: string }) {
    this.conn = conn;
    this.maxBuffered = opts.maxBufferedBytes;
    this.onOverflow = opts.onOverflow;
    this.sessionId = opts.sessionId;
  }

  get isClosed(): boolean {
    return this.closed || !this.conn.isOpen;
  }

  /** Write one message; returns false when the client is gone or was cut off. */
  send(message: string): boolean {
    if (this.isClosed) return false;
    if (this.conn.bufferedAmount > this.maxBuffered) {
      this.cutOff();
      return false;
    }
    this.conn.send(message);
    return true;
  }

  close(code: number, reason = ''): void {
    if (this.closed) return;
    this.closed = true;
    this.conn.close(code, reason.slice(0, 120));
  }

  /** Drop the connection now; after a cut-off the grace timer does it (the error and close stay queued). */
  terminate(): void {
    this.closed = true;
    if (!this.overflowed) this.conn.terminate();
  }

  private cutOff(): void {
    this.overflowed = true;
    const err = new GatewayError('unavailable', `client is not reading: more than ${this.maxBuffered} bytes queued for it`);
    // Queued behind what the client has not read: it sees why, if it ever reads again.
    this.conn.send(wsErrorEvent(err, this.sessionId));
    this.close(CLIENT_NOT_READING_CLOSE, 'client not reading');
    // A client that does not read will not read the close frame either.
    setTimeout(() => this.conn.terminate(), CLIENT_NOT_READING_GRACE_MS).unref();
    const cb = this.onOverflow;
    this.onOverflow = undefined;
    cb?.();
  }
}
