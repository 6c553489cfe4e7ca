/**
 * The one SSE parser (https://html.spec.whatwg.org/multipage/server-sent-events.html): feed it
 * bytes as they arrive, in any split; it yields complete events. Comment lines (`: keep-alive`),
 * `id:`/`retry:` and unknown fields are ignored; CRLF, CR and LF line ends are accepted; multi-line
 * `data:` is joined with "\n". Bounded: an event larger than `maxEventBytes` is an error.
 */
import type { SseEvent } from '../types.ts';

const LF = 0x0a;
const CR = 0x0d;

export class SseParser {
  private buf: Buffer = Buffer.alloc(0);
  private data: string[] = [];
  private event: string | undefined;
  private pendingBytes = 0;
  private readonly maxEventBytes: number;
  /** The previous chunk ended with CR: a leading LF in the next one belongs to it. */
  private skipLf = false;

  constructor(opts: { maxEventBytes?: number } = {}) {
    this.maxEventBytes = opts.maxEventBytes ?? 8 * 1024 * 1024;
  }

  /** Parse a chunk; returns the events it completed. Throws when an event exceeds the bound. */
  push(chunk: Buffer): SseEvent[] {
    const out: SseEvent[] = [];
    let buf = this.buf.length > 0 ? Buffer.concat([this.buf, chunk]) : chunk;
    let start = 0;
    if (this.skipLf && buf.length > 0) {
      if (buf[0] === LF) start = 1;
      this.skipLf = false;
    }
    for (let i = start; i < buf.length; i++) {
      const c = buf[i];
      if (c !== LF && c !== CR) continue;
      this.line(buf.toString('utf8', start, i), out);
      if (c === CR) {
        if (i + 1 < buf.length) {
          if (buf[i + 1] === LF) i++;
        } else {
          this.skipLf = true;
        }
      }
      start = i + 1;
    }
    buf = buf.subarray(start);
    this.buf = buf.length > 0 ? Buffer.from(buf) : Buffer.alloc(0);
    if (this.buf.length + this.pendingBytes > this.maxEventBytes) {
      throw new Error(`SSE event larger than ${this.maxEventBytes} bytes`);
    }
    return out;
  }

  /** End of stream: a final event without its blank line is dispatched (lenient, like browsers are not). */
  end(): SseEvent[] {
    const out: SseEvent[] = [];
    if (this.buf.length > 0) {
      this.line(this.buf.toString('utf8'), out);
      this.buf = Buffer.alloc(0);
    }
    this.dispatch(out);
    return out;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line.length === 0) {
      this.dispatch(out);
      return;
    }
    if (line.charCodeAt(0) === 0x3a /* : */) return; // comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    if (field === 'data') {
      this.data.push(value);
      this.pendingBytes += value.length;
      if (this.pendingBytes > this.maxEventBytes) throw new Error(`SSE event larger than ${this.maxEventBytes} bytes`);
    } else if (field === 'event') {
      this.event = value;
    }
  }

  private dispatch(out: SseEvent[]): void {
    if (this.data.length > 0) {
      const ev: SseEvent = { data: this.data.length === 1 ? (this.data[0] as string) : this.data.join('\n') };
      if (this.event !== undefined) ev.event = this.event;
      out.push(ev);
    }
    this.data = [];
    this.event = undefined;
    this.pendingBytes = 0;
  }
}
