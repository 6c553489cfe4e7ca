/**
 * The one place that writes to clients. Bounded: a client whose socket buffer grows past the
 * limit (it stopped reading) is sent a close 1013 and dropped instead of growing our memory.
 */
import type { WsConnection } from './transport.ts';

export const CLIENT_NOT_READING_CLOSE = 1013;

export class ClientSink {
  private readonly conn: WsConnection;
  private readonly maxBuffered: number;
  private closed = false;
  private onOverflow: (() => void) | undefined;

  constructor(conn: WsConnection, opts: { maxBufferedBytes: number; onOverflow?: () => void }) {
    this.conn = conn;
    this.maxBuffered = opts.maxBufferedBytes;
    this.onOverflow = opts.onOverflow;
  }

  get isClosed(): boolean {
    return this.closed || !this.conn.isOpen;
  }

  /** Write one message; returns false when the client is gone or was cut off. */
  send(message: string): boolean {
    if (this.isClosed) return false;
    if (this.conn.bufferedAmount > this.maxBuffered) {
      this.close(CLIENT_NOT_READING_CLOSE, 'client not reading');
      // A client that does not read will not read the close frame either.
      setTimeout(() => this.conn.terminate(), 2000).unref();
      const cb = this.onOverflow;
      this.onOverflow = undefined;
      cb?.();
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

  terminate(): void {
    this.closed = true;
    this.conn.terminate();
  }
}
