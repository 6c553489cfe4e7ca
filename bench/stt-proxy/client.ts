/**
 * One real-time STT stream of the bench: a WebSocket that sends a 50 ms frame every 50 ms
 * (drift-free schedule, late frames sent back to back like a client catching up) and records when
 * each frame was handed to the socket and when each non-empty transcript arrived.
 *
 * Paths:
 * - direct: Deepgram's protocol straight to the emulator (binary PCM, the exact URL and headers
 *   the gateway's adapter would use), i.e. what an agent with a Deepgram plugin does;
 * - gateway: the LiveKit inference protocol to the gateway, audio as `input_audio` JSON/base64
 *   text frames (what the LiveKit clients send) or as binary PCM frames (the gateway's fast path).
 */
import WebSocket from 'ws';
import { perfToMono } from './clock.ts';

export type Path = 'direct' | 'gateway';
export type Mode = 'json' | 'binary';

export interface Audio {
  frameBytes: number;
  frameMs: number;
  /** one loop of the script, frame by frame: raw PCM */
  pcm: Buffer[];
  /** the same frames as `{"type":"input_audio","audio":"<base64>"}` (UTF-8, sent as text) */
  json: Buffer[];
}

export interface Target {
  path: Path;
  mode: Mode;
  url: string;
  headers: Record<string, string>;
  /** gateway: the session.create message (sent on open, like the clients do) */
  create?: string;
}

const CLOSE_STREAM = '{"type":"CloseStream"}';
const SESSION_CLOSE = '{"type":"session.close"}';
const RESULTS_PREFIX = '{"type":"Results"';

export class BenchStream {
  readonly tag: string;
  readonly target: Target;
  /** monotonic ms when frame i was handed to ws.send (NaN: not sent) */
  readonly sendAt: Float64Array;
  /** ms frame i was sent after its scheduled time (client pacing lag) */
  readonly lag: Float64Array;
  /** non-empty transcripts, in arrival order: monotonic arrival time and text */
  readonly evAt: number[] = [];
  readonly evText: string[] = [];
  readonly errors: string[] = [];
  sent = 0;
  /** ms from starting the connection to ready (direct: open; gateway: session.created) */
  setupMs = NaN;
  private readonly audio: Audio;
  private readonly offset: number;
  private ws: WebSocket | null = null;
  private timer: NodeJS.Timeout | null = null;
  private t0 = 0;
  private streaming = false;
  private finishing = false;
  private onDone: (() => void) | null = null;
  private closedP: Promise<void> | null = null;

  constructor(tag: string, target: Target, audio: Audio, frames: number, offset: number) {
    this.tag = tag;
    this.target = target;
    this.audio = audio;
    this.offset = offset;
    this.sendAt = new Float64Array(frames).fill(NaN);
    this.lag = new Float64Array(frames).fill(NaN);
  }

  get frames(): number {
    return this.sendAt.length;
  }

  /** Open the socket; resolves when the stream can send audio. */
  connect(timeoutMs = 15_000): Promise<void> {
    const started = performance.now();
    const ws = new WebSocket(this.target.url, { headers: this.target.headers, perMessageDeflate: false, handshakeTimeout: timeoutMs });
    this.ws = ws;
    this.closedP = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      const timer = setTimeout(() => fail(new Error('not ready in time')), timeoutMs);
      const ok = (): void => {
        if (ready) return;
        ready = true;
        clearTimeout(timer);
        this.setupMs = performance.now() - started;
        resolve();
      };
      const fail = (err: Error): void => {
        if (ready) return;
        ready = true;
        clearTimeout(timer);
        this.errors.push(`connect: ${err.message}`);
        ws.terminate();
        reject(err);
      };
      ws.on('error', (err) => {
        if (!ready) fail(err);
        else this.errors.push(`socket: ${err.message}`);
      });
      ws.on('unexpected-response', (_req, res) => fail(new Error(`HTTP ${res.statusCode}`)));
      ws.on('close', (code, reason) => {
        this.stopTimer();
        if (!ready) fail(new Error(`closed ${code} before ready`));
        else if (!this.finishing) this.errors.push(`closed ${code} ${reason.toString().slice(0, 80)} while streaming`);
        this.done();
      });
      ws.on('open', () => {
        if (this.target.path === 'direct') ok();
        else ws.send(this.target.create ?? '');
      });
      if (this.target.path === 'direct') ws.on('message', (data: Buffer, isBinary: boolean) => this.onDirect(data, isBinary));
      else ws.on('message', (data: Buffer, isBinary: boolean) => this.onGateway(data, isBinary, ok, fail));
    });
  }

  private onDirect(data: Buffer, isBinary: boolean): void {
    const at = perfToMono(performance.now());
    if (isBinary || data.length < RESULTS_PREFIX.length || data.toString('latin1', 0, RESULTS_PREFIX.length) !== RESULTS_PREFIX) return;
    const msg = JSON.parse(data.toString('utf8')) as { channel?: { alternatives?: Array<{ transcript?: string }> } };
    const text = msg.channel?.alternatives?.[0]?.transcript ?? '';
    if (text === '') return;
    this.evAt.push(at);
    this.evText.push(text);
  }

  private onGateway(data: Buffer, isBinary: boolean, ok: () => void, fail: (e: Error) => void): void {
    const at = perfToMono(performance.now());
    if (isBinary) return;
    const msg = JSON.parse(data.toString('utf8')) as { type?: string; transcript?: string; message?: string; code?: number };
    switch (msg.type) {
      case 'interim_transcript':
      case 'final_transcript':
        if (msg.transcript) {
          this.evAt.push(at);
          this.evText.push(msg.transcript);
        }
        return;
      case 'session.created':
        ok();
        return;
      case 'error':
        this.errors.push(`error event ${msg.code}: ${String(msg.message).slice(0, 120)}`);
        fail(new Error(`error event ${msg.code}`));
        return;
      default:
    }
  }

  /** Start sending at performance.now() time `at`; resolves after the last frame. */
  stream(at: number): Promise<void> {
    this.t0 = at;
    this.streaming = true;
    return new Promise<void>((resolve) => {
      this.onDone = resolve;
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        this.done();
        return;
      }
      this.schedule();
    });
  }

  private schedule(): void {
    const due = this.t0 + this.sent * this.audio.frameMs;
    this.timer = setTimeout(this.tick, Math.max(0, due - performance.now()));
  }

  private readonly tick = (): void => {
    this.timer = null;
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      this.done();
      return;
    }
    const { frameMs, pcm, json } = this.audio;
    const loop = pcm.length;
    const binary = this.target.path === 'direct' || this.target.mode === 'binary';
    let now = performance.now();
    while (this.sent < this.frames && this.t0 + this.sent * frameMs <= now) {
      const i = this.sent;
      const k = (this.offset + i) % loop;
      const at = performance.now();
      ws.send(binary ? (pcm[k] as Buffer) : (json[k] as Buffer), { binary, compress: false });
      this.sendAt[i] = perfToMono(at);
      this.lag[i] = at - (this.t0 + i * frameMs);
      this.sent++;
      now = performance.now();
    }
    if (this.sent < this.frames) this.schedule();
    else this.done();
  };

  private done(): void {
    if (!this.streaming) return;
    this.streaming = false;
    const cb = this.onDone;
    this.onDone = null;
    cb?.();
  }

  private stopTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** End the stream the way each protocol's client does, and wait for the close. */
  async finish(timeoutMs = 5000): Promise<void> {
    this.finishing = true;
    this.stopTimer();
    const ws = this.ws;
    if (!ws) return;
    if (ws.readyState === WebSocket.OPEN) {
      if (this.target.path === 'direct') {
        ws.send(CLOSE_STREAM); // the emulator flushes, sends Metadata and closes
      } else {
        ws.send(SESSION_CLOSE);
        ws.close(1000);
      }
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs);
    });
    const timedOut = await Promise.race([(this.closedP ?? Promise.resolve()).then(() => false), late]);
    clearTimeout(timer);
    if (timedOut) {
      this.errors.push('no close within 5 s');
      ws.terminate();
    }
  }

  terminate(): void {
    this.finishing = true;
    this.stopTimer();
    this.ws?.terminate();
    this.done();
  }
}
