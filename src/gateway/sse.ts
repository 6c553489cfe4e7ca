/**
 * The one SSE writer: headers, `data:` events, comment keep-alives and the `[DONE]` terminator
 * on a node:http response. Bounded: a client that stops reading (more than `maxBufferedBytes`
 * queued) is cut off instead of growing our memory.
 */
import type { ServerResponse } from 'node:http';

export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  Connection: 'keep-alive',
  // Tell reverse proxies (nginx) not to buffer the stream.
  'X-Accel-Buffering': 'no',
} as const;

export class SseWriter {
  private readonly res: ServerResponse;
  private readonly maxBuffered: number;
  private started = false;
  private ended = false;
  /** Last time anything was written (for keep-alive decisions). */
  lastWriteAt = 0;

  constructor(res: ServerResponse, opts: { maxBufferedBytes?: number } = {}) {
    this.res = res;
    this.maxBuffered = opts.maxBufferedBytes ?? 4 * 1024 * 1024;
  }

  get isStarted(): boolean {
    return this.started;
  }

  get isOpen(): boolean {
    return !this.ended && !this.res.destroyed && this.res.writable;
  }

  start(headers: Record<string, string> = {}): void {
    if (this.started) return;
    this.started = true;
    this.res.writeHead(200, { ...SSE_HEADERS, ...headers });
    this.res.flushHeaders();
    this.lastWriteAt = Date.now();
  }

  /** One `data:` event; `json` must not contain newlines (JSON.stringify output never does). */
  data(json: string): boolean {
    return this.write(`data: ${json}\n\n`);
  }

  comment(text: string): boolean {
    return this.write(`: ${text}\n\n`);
  }

  /** `data: [DONE]` and end the response. */
  done(): void {
    if (!this.isOpen) return;
    this.res.end('data: [DONE]\n\n');
    this.ended = true;
  }

  /** End without [DONE] (after an error event, or when the client is gone). */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.res.destroyed) this.res.end();
  }

  private write(s: string): boolean {
    if (!this.isOpen) return false;
    if (this.res.writableLength > this.maxBuffered) {
      this.ended = true;
      this.res.destroy();
      return false;
    }
    this.res.write(s);
    this.lastWriteAt = Date.now();
    return true;
  }
}
