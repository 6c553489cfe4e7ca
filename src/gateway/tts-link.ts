/**
 * Upstream TTS links: one object per provider connection (WebSocket) or per provider account
 * (HTTP), able to run generations one after another. The session drives generations through
 * this surface; adapters only say what to send and how to read what comes back.
 *
 * Billing: `onSent(chars)` is reported when text is actually written to the provider, so text
 * still queued when a generation is cancelled is never billed.
 */
import type { Logger } from '../log.ts';
import { GatewayError } from '../protocol/errors.ts';
import type {
  ProviderEndpoint,
  TtsAlignment,
  TtsAdapter,
  TtsEvent,
  TtsHttpAdapter,
  TtsOptions,
  TtsWsAdapter,
  TtsWsCodec,
} from '../providers/types.ts';
import { streamPost } from '../providers/upstream/http-upstream.ts';
import { connectUpstream, defaultCloseError, type UpstreamSocket } from '../providers/upstream/ws-upstream.ts';

export interface TtsGenSink {
  /** PCM s16le mono at the generation's provider rate (`opts.sampleRate`). */
  onAudio(pcm: Buffer): void;
  onAlignment(a: TtsAlignment): void;
  onDone(): void;
  /** The generation failed; the link is no longer usable for it. `how`: what failed (metric reason). */
  onError(err: GatewayError, how: TtsFailure): void;
  /** Characters written to the provider. */
  onSent(chars: number): void;
  /**
   * The next `units` UTF-16 units of the generation's text are fully voiced: all their audio was
   * passed to `onAudio` (links that know chunk boundaries, e.g. one HTTP request per chunk).
   * Used to continue a generation on another provider after a failure (tts-resume.ts).
   */
  onVoiced?(units: number): void;
}

/** How an upstream failed a generation: could not connect, reported an error, closed on it. */
export type TtsFailure = 'connect' | 'error' | 'close';

export interface TtsLink {
  readonly adapter: TtsAdapter;
  /** Links with the same key are interchangeable (pooling). */
  readonly key: string;
  /** Can start a generation now or once connected (not failed, closed or used up). */
  readonly usable: boolean;
  /** No generation in flight. */
  readonly idle: boolean;
  /** No generation has run on it yet (a prewarmed socket). */
  readonly fresh: boolean;
  start(gen: string, opts: TtsOptions, sink: TtsGenSink): void;
  text(text: string): void;
  end(): void;
  /** Periodic housekeeping (keep-alives). */
  tick(now: number): void;
  /** Give up now: cancels any generation in flight (the provider stops working on it). */
  drop(): void;
  /** Close gracefully (the link is idle and not wanted any more). */
  close(): void;
}

/** Count characters as providers bill them (code points, not UTF-16 units). */
export function countChars(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) n--;
  }
  return n;
}

export function linkKey(adapter: TtsAdapter, endpoint: ProviderEndpoint, opts: TtsOptions): string {
  return adapter.kind === 'ws' ? `${adapter.provider}|${endpoint.baseUrl}|${adapter.connectionKey(opts)}` : `${adapter.provider}|${endpoint.baseUrl}`;
}

interface LinkDeps {
  endpoint: ProviderEndpoint;
  log: Logger;
  /** Seconds to open the connection (metrics). */
  onConnected?(seconds: number): void;
}

type WsState = 'connecting' | 'open' | 'closed';

/** A provider WebSocket. */
export class WsTtsLink implements TtsLink {
  readonly adapter: TtsWsAdapter;
  readonly key: string;
  private readonly deps: LinkDeps;
  private readonly codec: TtsWsCodec;
  private readonly socket: UpstreamSocket;
  private readonly label: string;
  private state: WsState = 'connecting';
  /** Frames (and their character counts) waiting for the socket to open. */
  private pending: { frame: string; chars: number }[] = [];
  private gen: string | null = null;
  private opts: TtsOptions | null = null;
  private sink: TtsGenSink | null = null;
  /** The current generation's input has ended (no keep-alive may follow it). */
  private inputEnded = false;
  /** A 'one'-reuse socket that has served its generation. */
  private spent = false;
  /** Start times of the generations run on this socket within the last minute (bounded by the limit). */
  private starts: number[] = [];
  private lastSentAt = Date.now();
  private readonly startedAt = performance.now();

  constructor(adapter: TtsWsAdapter, opts: TtsOptions, deps: LinkDeps) {
    this.adapter = adapter;
    this.deps = deps;
    this.key = linkKey(adapter, deps.endpoint, opts);
    this.label = `${adapter.provider}/${opts.model}`;
    this.codec = adapter.createCodec(opts);
    this.socket = connectUpstream(
      adapter.request(opts, deps.endpoint),
      { timeoutMs: deps.endpoint.connectTimeoutMs, providerLabel: adapter.provider },
      {
        onOpen: () => this.onOpen(),
        onMessage: (data, isBinary) => this.onMessage(data, isBinary),
        onClose: (code, reason) => this.onClosed(code, reason),
        onConnectError: (err) => this.onConnectError(err),
      },
    );
  }

  get usable(): boolean {
    return this.state !== 'closed' && !this.spent && !this.atGenerationLimit();
  }

  get idle(): boolean {
    return this.gen === null;
  }

  get fresh(): boolean {
    return this.starts.length === 0;
  }

  /** The adapter's per-minute generation limit is reached on this socket. */
  private atGenerationLimit(): boolean {
    const max = this.adapter.maxGenerationsPerMinute;
    if (max === undefined || this.starts.length < max) return false;
    const since = Date.now() - 60_000;
    while (this.starts.length > 0 && (this.starts[0] as number) < since) this.starts.shift();
    return this.starts.length >= max;
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  start(gen: string, opts: TtsOptions, sink: TtsGenSink): void {
    if (!this.usable || this.gen !== null) throw new Error('link is busy or unusable');
    this.gen = gen;
    this.opts = opts;
    this.sink = sink;
    this.inputEnded = false;
    this.starts.push(Date.now());
    if (this.starts.length > (this.adapter.maxGenerationsPerMinute ?? 1)) this.starts.shift();
  }

  text(text: string): void {
    if (this.gen === null || this.opts === null) return;
    const chars = countChars(text);
    for (const frame of this.codec.text(this.gen, text, this.opts)) {
      this.write(frame, chars);
    }
  }

  end(): void {
    if (this.gen === null || this.opts === null) return;
    this.inputEnded = true;
    for (const frame of this.codec.end(this.gen, this.opts)) this.write(frame, 0);
  }

  private write(frame: string, chars: number): void {
    if (this.state === 'open') {
      this.socket.send(frame);
      this.lastSentAt = Date.now();
      if (chars > 0) this.sink?.onSent(chars);
    } else if (this.state === 'connecting') {
      this.pending.push({ frame, chars });
    }
  }

  tick(now: number): void {
    const ka = this.codec.keepAlive;
    if (ka && this.state === 'open' && !(this.gen !== null && this.inputEnded) && now - this.lastSentAt >= ka.idleMs) {
      this.socket.send(ka.message);
      this.lastSentAt = now;
    }
  }

  drop(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.pending = [];
    this.gen = null;
    this.sink = null;
    this.socket.terminate();
  }

  /** Close gracefully when idle (pool eviction, session end). */
  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.pending = [];
    this.socket.close(1000, '');
  }

  private onOpen(): void {
    if (this.state !== 'connecting') return;
    this.state = 'open';
    this.deps.onConnected?.((performance.now() - this.startedAt) / 1000);
    for (const m of this.codec.openMessages) this.socket.send(m);
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) {
      this.socket.send(p.frame);
      if (p.chars > 0) this.sink?.onSent(p.chars);
    }
    this.lastSentAt = Date.now();
  }

  private onConnectError(err: GatewayError): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.pending = [];
    this.failGen(err, 'connect');
  }

  private onClosed(code: number, reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.gen !== null) {
      this.failGen(this.adapter.closeError?.(code, reason) ?? defaultCloseError(this.adapter.provider, code, reason), 'close');
    } else {
      this.deps.log.debug({ provider: this.adapter.provider, code }, 'idle tts upstream closed');
    }
  }

  private failGen(err: GatewayError, how: TtsFailure): void {
    const sink = this.sink;
    this.gen = null;
    this.sink = null;
    sink?.onError(err, how);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.state === 'closed') return;
    let events: TtsEvent[];
    try {
      events = this.codec.decode(data, isBinary);
    } catch (err) {
      events = [{ type: 'error', gen: this.gen, error: new GatewayError('provider_error', `${this.label}: unreadable provider message`, undefined, { cause: err }) }];
    }
    for (const ev of events) {
      const sink = this.sink;
      // Stragglers of an earlier (finished or cancelled) generation are dropped.
      if (sink === null || (ev.gen !== null && ev.gen !== this.gen)) continue;
      switch (ev.type) {
        case 'audio':
          sink.onAudio(ev.pcm);
          break;
        case 'alignment':
          sink.onAlignment(ev.alignment);
          break;
        case 'done':
          this.gen = null;
          this.sink = null;
          if (this.adapter.reuse === 'one') {
            this.spent = true;
            this.close();
          }
          sink.onDone();
          break;
        case 'error':
          // The socket may carry stale output of the failed generation: never reuse it.
          this.drop();
          sink.onError(ev.error, 'error');
          return;
      }
    }
  }
}

/** Audio of one HTTP request, kept in order behind the requests before it. */
interface HttpJob {
  text: string;
  chars: number;
  /** Text units voiced once this job's audio is all out (its text plus whitespace skipped after it). */
  units: number;
  started: boolean;
  finished: boolean;
  held: Buffer[];
  abort: (() => void) | null;
  /** The request failed while another one was playing: reported when this job's turn comes. */
  failed: { err: GatewayError; how: TtsFailure } | null;
}

/** Requests in flight per generation: the one being played plus one fetched ahead. */
const HTTP_CONCURRENCY = 2;

/** An HTTP provider: one streaming request per text chunk, played in order. */
export class HttpTtsLink implements TtsLink {
  readonly adapter: TtsHttpAdapter;
  readonly key: string;
  private readonly deps: LinkDeps;
  private readonly label: string;
  private gen: string | null = null;
  private opts: TtsOptions | null = null;
  private sink: TtsGenSink | null = null;
  private jobs: HttpJob[] = [];
  private ended = false;
  private dropped = false;

  constructor(adapter: TtsHttpAdapter, opts: TtsOptions, deps: LinkDeps) {
    this.adapter = adapter;
    this.deps = deps;
    this.key = linkKey(adapter, deps.endpoint, opts);
    this.label = adapter.provider;
  }

  get usable(): boolean {
    return !this.dropped;
  }

  get idle(): boolean {
    return this.gen === null;
  }

  get fresh(): boolean {
    return false;
  }

  start(gen: string, opts: TtsOptions, sink: TtsGenSink): void {
    if (this.dropped || this.gen !== null) throw new Error('link is busy or unusable');
    this.gen = gen;
    this.opts = opts;
    this.sink = sink;
    this.jobs = [];
    this.ended = false;
  }

  text(text: string): void {
    if (this.gen === null) return;
    for (const part of splitText(text, this.adapter.maxChars)) {
      if (part.trim() === '') {
        // Nothing to say: voiced with the job before it, or at once.
        const last = this.jobs.at(-1);
        if (last) last.units += part.length;
        else this.sink?.onVoiced?.(part.length);
        continue;
      }
      this.jobs.push({ text: part, chars: countChars(part), units: part.length, started: false, finished: false, held: [], abort: null, failed: null });
    }
    this.pump();
  }

  end(): void {
    if (this.gen === null) return;
    this.ended = true;
    this.pump();
  }

  tick(): void {}

  close(): void {
    this.drop();
  }

  drop(): void {
    this.dropped = true;
    for (const j of this.jobs) j.abort?.();
    this.jobs = [];
    this.gen = null;
    this.sink = null;
  }

  private pump(): void {
    const sink = this.sink;
    const opts = this.opts;
    if (sink === null || opts === null) return;
    // Play finished jobs at the head; their held audio was already forwarded or is flushed here.
    while (this.jobs.length > 0 && (this.jobs[0] as HttpJob).finished) {
      const done = this.jobs.shift() as HttpJob;
      sink.onVoiced?.(done.units);
      if (this.sink !== sink) return;
      const next = this.jobs[0];
      if (next && next.failed === null) for (const b of next.held.splice(0)) sink.onAudio(b);
    }
    const head = this.jobs[0];
    if (head?.failed) {
      this.fail(sink, head.failed.err, head.failed.how);
      return;
    }
    if (this.jobs.length === 0) {
      if (this.ended) {
        this.gen = null;
        this.sink = null;
        sink.onDone();
      }
      return;
    }
    let inFlight = 0;
    for (const job of this.jobs) {
      if (inFlight >= HTTP_CONCURRENCY) break;
      inFlight++;
      if (!job.started) this.startJob(job, opts, sink);
    }
  }

  private startJob(job: HttpJob, opts: TtsOptions, sink: TtsGenSink): void {
    job.started = true;
    sink.onSent(job.chars);
    const startedAt = performance.now();
    let first = true;
    job.abort = streamPost(
      this.adapter.request(opts, job.text, this.deps.endpoint),
      { timeoutMs: this.deps.endpoint.connectTimeoutMs, label: this.label },
      {
        onData: (chunk) => {
          if (this.sink !== sink) return;
          if (first) {
            first = false;
            this.deps.onConnected?.((performance.now() - startedAt) / 1000);
          }
          if (this.jobs[0] === job) sink.onAudio(chunk);
          else job.held.push(chunk);
        },
        onEnd: () => {
          if (this.sink !== sink) return;
          job.finished = true;
          this.pump();
        },
        onError: (err) => {
          if (this.sink !== sink) return;
          const how: TtsFailure = first ? 'connect' : 'error';
          const at = this.jobs.indexOf(job);
          if (at > 0) {
            // A request fetched ahead failed: the one playing finishes first (its audio is good),
            // then the error, so the generation fails on a chunk boundary. Its partial audio is
            // never played; requests queued after it are given up.
            job.failed = { err, how };
            job.held = [];
            for (const j of this.jobs.splice(at + 1)) j.abort?.();
            return;
          }
          this.fail(sink, err, how);
        },
      },
    );
  }

  private fail(sink: TtsGenSink, err: GatewayError, how: TtsFailure): void {
    for (const j of this.jobs) j.abort?.();
    this.jobs = [];
    this.gen = null;
    this.sink = null;
    sink.onError(err, how);
  }
}

/** Split text into pieces of at most `max` characters, preferring whitespace boundaries. */
export function splitText(text: string, max: number): string[] {
  if (text.length <= max) return [text];
  const out: string[] = [];
  let rest = text;
  while (rest.length > max) {
    // Cut after the last space that keeps the piece within `max`, else hard at `max`.
    const space = rest.lastIndexOf(' ', max - 1);
    const cut = space > 0 ? space + 1 : max;
    out.push(rest.slice(0, cut));
    rest = rest.slice(cut);
  }
  if (rest) out.push(rest);
  return out;
}

export function createLink(adapter: TtsAdapter, opts: TtsOptions, deps: LinkDeps): TtsLink {
  return adapter.kind === 'ws' ? new WsTtsLink(adapter, opts, deps) : new HttpTtsLink(adapter, opts, deps);
}
