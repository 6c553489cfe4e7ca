/**
 * Shared infrastructure for provider emulators (Deepgram today; AssemblyAI, Cartesia, ElevenLabs,
 * OpenAI later): an HTTP(S) server on 127.0.0.1 with a `ws` server in noServer mode, upgrade
 * validation with vendor-style HTTP rejections, wire recording, and fault switches.
 *
 * A concrete emulator supplies three hooks:
 * - `onUpgrade(ctx)`: decide an upgrade (reject with status/headers/body, or accept with extra
 *   101 headers and per-connection state). It runs for every upgrade, even one a fault refuses,
 *   so vendor headers such as a request id are always present.
 * - `onConnection(session, ctx, state)`: returns the message/close handler of one socket. The
 *   emulator talks to the client only through `session.send/close` (ordered, delayed by the
 *   outDelayMs fault and an optional latency, silenced by deadAir, recorded) and reports audio
 *   time with `session.reportAudio(seconds)`, which fires the audio-time faults.
 * - `onHttpRequest(req, res)` (optional): plain HTTP endpoints (REST emulators); default 404.
 *
 * Every promise that waits has a timeout.
 */
import { EventEmitter } from 'node:events';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import https from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

export interface TlsOptions {
  key: string | Buffer;
  cert: string | Buffer;
}

export interface FrameRecord {
  dir: 'in' | 'out';
  /** ms since the connection opened */
  t: number;
  kind: 'text' | 'binary' | 'close';
  text?: string;
  /** binary payload length */
  bytes?: number;
  /** binary payload, only with recordAudio */
  data?: Buffer;
  code?: number;
  reason?: string;
}

export type CloseInitiator = 'client' | 'server' | 'drop' | 'terminate';

export interface ConnectionRecord {
  id: number;
  /** pathname, e.g. /v1/listen */
  path: string;
  /** path + query exactly as requested */
  url: string;
  /** every query key with all its values, in order (repeated keys keep every value) */
  query: Record<string, string[]>;
  headers: IncomingHttpHeaders;
  openedAt: Date;
  frames: FrameRecord[];
  /** audio seconds reported by the emulator */
  audioSeconds: number;
  /** outgoing messages withheld by the deadAir fault */
  suppressed: number;
  closed: boolean;
  /**
   * How the socket ended. `drop` = TCP destroyed without a close frame (code 1006);
   * `terminate` = emulator shutdown.
   */
  close?: { code: number; reason: string; by: CloseInitiator };
}

export interface RejectedUpgrade {
  at: Date;
  path: string;
  url: string;
  query: Record<string, string[]>;
  headers: IncomingHttpHeaders;
  status: number;
  responseHeaders: Record<string, string>;
  body: string;
}

export interface HttpRequestRecord {
  at: Date;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  status?: number;
}

export interface FaultSwitches {
  /** refuse upgrades with this status (body/headers default to the emulator's error format) */
  refuseUpgrade: { status: number; message?: string; body?: string; headers?: Record<string, string> } | null;
  /** wait this long before answering an upgrade (101 or rejection) */
  upgradeDelayMs: number;
  /** delay every outgoing message (and server close) by this long, keeping order */
  outDelayMs: number;
  /** destroy the TCP socket (no close frame) once this much audio was received */
  dropAfterAudioSec: number | null;
  /** close with code/reason once this much audio was received */
  closeAfterAudioSec: { seconds: number; code: number; reason: string } | null;
  /** send one non-JSON text frame once this much audio was received */
  garbageAfterAudioSec: { seconds: number; text?: string } | null;
  /** keep accepting input but send nothing at all (no messages, no graceful close) */
  deadAir: boolean;
}

export function defaultFaults(): FaultSwitches {
  return {
    refuseUpgrade: null,
    upgradeDelayMs: 0,
    outDelayMs: 0,
    dropAfterAudioSec: null,
    closeAfterAudioSec: null,
    garbageAfterAudioSec: null,
    deadAir: false,
  };
}

export const GARBAGE_TEXT = '<<garbage: this frame is not JSON>>';

export interface UpgradeContext {
  req: IncomingMessage;
  url: URL;
  query: Record<string, string[]>;
}

export type UpgradeDecision<S> =
  | { accept: true; headers?: Record<string, string>; state: S }
  | { accept: false; status: number; headers?: Record<string, string>; body?: string };

export interface WsHandler {
  onMessage(data: Buffer, isBinary: boolean): void;
  /** called once when the socket is gone (any reason) */
  onClose(code: number, reason: string): void;
}

export interface EmulatorServerOptions<S> {
  name: string;
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** keep binary payloads in the wire record (default: lengths only) */
  recordAudio?: boolean;
  onUpgrade(ctx: UpgradeContext): UpgradeDecision<S> | Promise<UpgradeDecision<S>>;
  onConnection(session: WsSession, ctx: UpgradeContext, state: S): WsHandler;
  onHttpRequest?(req: IncomingMessage, res: ServerResponse): void | Promise<void>;
  /** vendor-style rejection used when a fault refuses an upgrade without an explicit body */
  formatError?(status: number, message: string): { headers?: Record<string, string>; body: string };
}

export function parseQuery(search: URLSearchParams): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [k, v] of search) (out[k] ??= []).push(v);
  return out;
}

function nowMs(): number {
  return performance.now();
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** One accepted WebSocket as seen by a concrete emulator. */
export class WsSession {
  readonly record: ConnectionRecord;
  /** this connection's own fault overrides (mutable; merged over the server-wide switches) */
  faults: Partial<FaultSwitches>;
  private readonly ws: WebSocket;
  private readonly socket: Duplex;
  private readonly server: EmulatorServer;
  private readonly t0: number;
  private readonly recordAudio: boolean;
  private queue: Array<{ due: number; run: () => void }> = [];
  private lastDue = 0;
  private timer: NodeJS.Timeout | null = null;
  private closing = false;
  private closeFrameSentFlag = false;
  private fired = { drop: false, close: false, garbage: false };

  constructor(ws: WebSocket, socket: Duplex, record: ConnectionRecord, server: EmulatorServer, faults: Partial<FaultSwitches>, recordAudio: boolean) {
    this.ws = ws;
    this.socket = socket;
    this.record = record;
    this.server = server;
    this.faults = faults;
    this.t0 = nowMs();
    this.recordAudio = recordAudio;
  }

  /** Server-wide switches with this connection's overrides on top. */
  get effectiveFaults(): FaultSwitches {
    return { ...this.server.faults, ...this.faults };
  }

  /** False once a close was queued/sent or the socket is gone. */
  get isOpen(): boolean {
    return !this.closing && !this.record.closed && this.ws.readyState === this.ws.OPEN;
  }

  /** ms since the connection opened */
  elapsed(): number {
    return round1(nowMs() - this.t0);
  }

  /** Send a text (string) or binary (Buffer) message, after outDelayMs + delayMs, in order. */
  send(data: string | Buffer, opts: { delayMs?: number } = {}): void {
    if (!this.isOpen) return;
    if (this.effectiveFaults.deadAir) {
      this.record.suppressed++;
      return;
    }
    this.enqueue((opts.delayMs ?? 0) + this.effectiveFaults.outDelayMs, () => this.rawSend(data));
  }

  /** Graceful close after any queued messages (silenced by deadAir). */
  close(code: number, reason: string, opts: { delayMs?: number } = {}): void {
    if (!this.isOpen) return;
    if (this.effectiveFaults.deadAir) {
      this.record.suppressed++;
      return;
    }
    this.closing = true;
    this.enqueue((opts.delayMs ?? 0) + this.effectiveFaults.outDelayMs, () => this.rawClose(code, reason));
  }

  /** Destroy the TCP connection without a close frame. */
  drop(): void {
    if (this.record.closed) return;
    this.closing = true;
    this.clearQueue();
    this.markClosed(1006, 'dropped: TCP destroyed without a close frame', 'drop');
    this.socket.destroy();
  }

  /**
   * Add received audio time and fire audio-time faults. Returns false when the connection is (being)
   * closed by a fault, in which case the emulator should ignore the audio.
   */
  reportAudio(seconds: number): boolean {
    this.record.audioSeconds += seconds;
    const total = this.record.audioSeconds + 1e-9; // float sums of chunk durations fall just short
    const f = this.effectiveFaults;
    if (f.dropAfterAudioSec != null && !this.fired.drop && total >= f.dropAfterAudioSec) {
      this.fired.drop = true;
      this.drop();
      return false;
    }
    if (f.closeAfterAudioSec && !this.fired.close && total >= f.closeAfterAudioSec.seconds) {
      this.fired.close = true;
      const { code, reason } = f.closeAfterAudioSec;
      this.closing = true;
      this.enqueue(f.outDelayMs, () => this.rawClose(code, reason));
      return false;
    }
    if (f.garbageAfterAudioSec && !this.fired.garbage && total >= f.garbageAfterAudioSec.seconds) {
      this.fired.garbage = true;
      const text = f.garbageAfterAudioSec.text ?? GARBAGE_TEXT;
      this.enqueue(f.outDelayMs, () => this.rawSend(text));
    }
    this.server.changed();
    return this.isOpen;
  }

  /** Record an incoming frame (called by the server). */
  recordIn(data: Buffer, isBinary: boolean): void {
    const t = this.elapsed();
    if (isBinary) {
      const frame: FrameRecord = { dir: 'in', t, kind: 'binary', bytes: data.length };
      if (this.recordAudio) frame.data = Buffer.from(data);
      this.record.frames.push(frame);
    } else {
      this.record.frames.push({ dir: 'in', t, kind: 'text', text: data.toString('utf8') });
    }
    this.server.changed();
  }

  /** Called by the server when the socket is gone. */
  markClosed(code: number, reason: string, by: CloseInitiator): void {
    if (this.record.closed) return;
    this.clearQueue();
    this.record.closed = true;
    this.record.close = { code, reason, by };
    // the peer's close frame (its own close, or the echo of ours); 1006 means none arrived
    if ((by === 'client' || by === 'server') && code !== 1006) {
      this.record.frames.push({ dir: 'in', t: this.elapsed(), kind: 'close', code, reason });
    }
    if (by === 'drop') this.record.frames.push({ dir: 'out', t: this.elapsed(), kind: 'close', code, reason });
    this.server.connectionClosed(this);
  }

  /** True once this side sent a close frame. */
  get closeFrameSent(): boolean {
    return this.closeFrameSentFlag;
  }

  private rawSend(data: string | Buffer): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    const t = this.elapsed();
    if (typeof data === 'string') {
      this.record.frames.push({ dir: 'out', t, kind: 'text', text: data });
      this.ws.send(data);
    } else {
      const frame: FrameRecord = { dir: 'out', t, kind: 'binary', bytes: data.length };
      if (this.recordAudio) frame.data = Buffer.from(data);
      this.record.frames.push(frame);
      this.ws.send(data, { binary: true });
    }
    this.server.changed();
  }

  private rawClose(code: number, reason: string): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    this.closing = true;
    this.closeFrameSentFlag = true;
    this.record.frames.push({ dir: 'out', t: this.elapsed(), kind: 'close', code, reason });
    this.ws.close(code, reason);
    this.server.changed();
  }

  private enqueue(delayMs: number, run: () => void): void {
    if (delayMs <= 0 && this.queue.length === 0) {
      run();
      return;
    }
    const due = Math.max(nowMs() + Math.max(0, delayMs), this.lastDue);
    this.lastDue = due;
    this.queue.push({ due, run });
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.queue.length === 0) return;
    const wait = Math.max(0, this.queue[0]!.due - nowMs());
    this.timer = setTimeout(() => {
      this.timer = null;
      const now = nowMs();
      while (this.queue.length > 0 && this.queue[0]!.due <= now + 1) this.queue.shift()!.run();
      if (this.queue.length === 0) this.lastDue = 0;
      this.schedule();
    }, wait);
  }

  private clearQueue(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
  }
}

export class EmulatorServer extends EventEmitter {
  readonly name: string;
  /** server-wide fault switches; mutate freely at run time */
  faults: FaultSwitches = defaultFaults();
  readonly connections: ConnectionRecord[] = [];
  readonly sessions: WsSession[] = [];
  readonly rejected: RejectedUpgrade[] = [];
  readonly httpRequests: HttpRequestRecord[] = [];
  url = '';
  wsUrl = '';
  port = 0;
  private readonly opts: EmulatorServerOptions<unknown>;
  private readonly server: http.Server | https.Server;
  private readonly wss: WebSocketServer;
  private readonly upgradeHeaders = new WeakMap<IncomingMessage, Record<string, string>>();
  private readonly rawSockets = new Set<Duplex>();
  private readonly pendingTimers = new Set<NodeJS.Timeout>();
  private nextFaults: Partial<FaultSwitches>[] = [];
  private nextId = 1;
  private shuttingDown = false;

  constructor(opts: EmulatorServerOptions<unknown>) {
    super();
    this.setMaxListeners(0);
    this.name = opts.name;
    this.opts = opts;
    const onRequest = (req: IncomingMessage, res: ServerResponse) => this.handleHttp(req, res);
    this.server = opts.tls ? https.createServer({ key: opts.tls.key, cert: opts.tls.cert }, onRequest) : http.createServer(onRequest);
    this.wss = new WebSocketServer({ noServer: true, clientTracking: true });
    this.wss.on('headers', (headers, req) => {
      const extra = this.upgradeHeaders.get(req);
      if (extra) for (const [k, v] of Object.entries(extra)) headers.push(`${k}: ${v}`);
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.handleUpgrade(req, socket, head);
    });
  }

  async listen(): Promise<void> {
    const host = this.opts.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen(this.opts.port ?? 0, host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.port = (this.server.address() as AddressInfo).port;
    const scheme = this.opts.tls ? 'https' : 'http';
    this.url = `${scheme}://${host}:${this.port}`;
    this.wsUrl = `${this.opts.tls ? 'wss' : 'ws'}://${host}:${this.port}`;
  }

  /** Apply these faults to the next upgrade attempt only (queued: one entry per attempt). */
  faultNext(f: Partial<FaultSwitches>): void {
    this.nextFaults.push(f);
  }

  /** Reset server-wide switches and drop queued next-connection faults. */
  resetFaults(): void {
    this.faults = defaultFaults();
    this.nextFaults = [];
  }

  openSessions(): WsSession[] {
    return this.sessions.filter((s) => !s.record.closed);
  }

  /** Notify waiters that something was recorded. */
  changed(): void {
    this.emit('change');
  }

  /** Resolve with the predicate's first truthy value; reject after timeoutMs. */
  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return waitForEvent(this, 'change', predicate, timeoutMs, `${this.name}: ${what}`);
  }

  /** Wait until at least n connections were accepted; resolves the n-th (1-based). */
  waitForConnection(n = 1, timeoutMs = 2000): Promise<ConnectionRecord> {
    return this.waitFor(() => this.connections[n - 1], timeoutMs, `connection #${n}`);
  }

  /** Wait until a connection (default: the latest) is closed. */
  waitForClose(conn?: ConnectionRecord | number, timeoutMs = 2000): Promise<ConnectionRecord> {
    const pick = () =>
      typeof conn === 'number' ? this.connections[conn] : (conn ?? this.connections[this.connections.length - 1]);
    return this.waitFor(() => {
      const c = pick();
      return c && c.closed ? c : undefined;
    }, timeoutMs, 'connection close');
  }

  /** Wait until n upgrades were rejected. */
  waitForRejection(n = 1, timeoutMs = 2000): Promise<RejectedUpgrade> {
    return this.waitFor(() => this.rejected[n - 1], timeoutMs, `rejection #${n}`);
  }

  /** Terminate every socket and stop listening. */
  async close(timeoutMs = 3000): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const t of this.pendingTimers) clearTimeout(t);
    this.pendingTimers.clear();
    for (const s of this.sessions) if (!s.record.closed) s.markClosed(1006, 'emulator shutdown', 'terminate');
    for (const ws of this.wss.clients) ws.terminate();
    for (const sock of this.rawSockets) sock.destroy();
    await withTimeout(
      new Promise<void>((resolve) => {
        this.wss.close(() => {
          this.server.close(() => resolve());
          this.server.closeAllConnections();
        });
      }),
      timeoutMs,
      `${this.name}: server close`,
    );
  }

  connectionClosed(session: WsSession): void {
    this.emit('connection-close', session.record);
    this.changed();
  }

  private consumeNextFaults(): Partial<FaultSwitches> {
    return this.nextFaults.shift() ?? {};
  }

  private async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    this.rawSockets.add(socket);
    socket.once('close', () => this.rawSockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const url = new URL(req.url ?? '/', 'http://emulator');
    const query = parseQuery(url.searchParams);
    const ctx: UpgradeContext = { req, url, query };
    const own = this.consumeNextFaults();
    const faults = { ...this.faults, ...own };
    if (faults.upgradeDelayMs > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          this.pendingTimers.delete(t);
          resolve();
        }, faults.upgradeDelayMs);
        this.pendingTimers.add(t);
      });
    }
    if (this.shuttingDown || socket.destroyed) return;
    let decision: UpgradeDecision<unknown>;
    try {
      decision = await this.opts.onUpgrade(ctx);
    } catch (err) {
      decision = { accept: false, status: 500, body: JSON.stringify({ error: String(err) }) };
    }
    if (this.shuttingDown || socket.destroyed) return;
    const refusal = faults.refuseUpgrade;
    if (refusal) {
      const formatted = refusal.body === undefined && this.opts.formatError
        ? this.opts.formatError(refusal.status, refusal.message ?? 'Injected fault')
        : { headers: {}, body: refusal.body ?? '' };
      const headers = { ...(decision.headers ?? {}), ...(formatted.headers ?? {}), ...(refusal.headers ?? {}) };
      this.reject(ctx, socket, refusal.status, headers, formatted.body);
      return;
    }
    if (!decision.accept) {
      this.reject(ctx, socket, decision.status, decision.headers ?? {}, decision.body ?? '');
      return;
    }
    const accepted = decision;
    if (accepted.headers) this.upgradeHeaders.set(req, accepted.headers);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.rawSockets.delete(socket);
      const record: ConnectionRecord = {
        id: this.nextId++,
        path: url.pathname,
        url: req.url ?? '/',
        query,
        headers: req.headers,
        openedAt: new Date(),
        frames: [],
        audioSeconds: 0,
        suppressed: 0,
        closed: false,
      };
      const session = new WsSession(ws, socket, record, this, own, this.opts.recordAudio ?? false);
      this.connections.push(record);
      this.sessions.push(session);
      let handler: WsHandler | null = null;
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (record.closed) return;
        session.recordIn(data, isBinary);
        handler?.onMessage(data, isBinary);
      });
      ws.on('error', () => {
        /* recorded by the close event */
      });
      ws.on('close', (code: number, reason: Buffer) => {
        if (!record.closed) {
          session.markClosed(code, reason.toString('utf8'), session.closeFrameSent ? 'server' : 'client');
        }
        handler?.onClose(record.close?.code ?? code, record.close?.reason ?? reason.toString('utf8'));
        handler = null;
      });
      this.emit('connection', record);
      handler = this.opts.onConnection(session, ctx, accepted.state);
      this.changed();
    });
  }

  private reject(ctx: UpgradeContext, socket: Duplex, status: number, headers: Record<string, string>, body: string): void {
    const bodyBuf = Buffer.from(body, 'utf8');
    const all: Record<string, string> = {
      Connection: 'close',
      'Content-Type': body.startsWith('{') ? 'application/json' : 'text/plain; charset=utf-8',
      'Content-Length': String(bodyBuf.length),
      ...headers,
    };
    const lines = [`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}`];
    for (const [k, v] of Object.entries(all)) lines.push(`${k}: ${v}`);
    socket.write(lines.join('\r\n') + '\r\n\r\n');
    socket.end(bodyBuf);
    const rec: RejectedUpgrade = {
      at: new Date(),
      path: ctx.url.pathname,
      url: ctx.req.url ?? '/',
      query: ctx.query,
      headers: ctx.req.headers,
      status,
      responseHeaders: headers,
      body,
    };
    this.rejected.push(rec);
    this.emit('rejected', rec);
    this.changed();
  }

  private handleHttp(req: IncomingMessage, res: ServerResponse): void {
    const rec: HttpRequestRecord = { at: new Date(), method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers };
    this.httpRequests.push(rec);
    res.on('finish', () => {
      rec.status = res.statusCode;
      this.changed();
    });
    const handler = this.opts.onHttpRequest;
    if (!handler) {
      res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: 'not found' }));
      return;
    }
    Promise.resolve(handler(req, res)).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: String(err) }));
    });
  }
}

/** Create and start an emulator server. */
export async function startEmulatorServer<S>(opts: EmulatorServerOptions<S>): Promise<EmulatorServer> {
  const server = new EmulatorServer(opts as EmulatorServerOptions<unknown>);
  await server.listen();
  return server;
}

/** Resolve when `predicate` returns a truthy value, re-checked on each `event`; reject after timeoutMs. */
export function waitForEvent<T>(
  emitter: EventEmitter,
  event: string,
  predicate: () => T | undefined | null | false,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const first = predicate();
  if (first) return Promise.resolve(first);
  return new Promise<T>((resolve, reject) => {
    const onChange = () => {
      const v = predicate();
      if (v) {
        cleanup();
        resolve(v);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      emitter.off(event, onChange);
    };
    emitter.on(event, onChange);
  });
}

/** Race a promise against a timeout. */
export function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/**
 * A throwaway self-signed certificate for 127.0.0.1/localhost (needs the `openssl` binary).
 * Clients must trust it (`ca: cert`, NODE_EXTRA_CA_CERTS, or rejectUnauthorized: false).
 */
export function selfSignedCert(): TlsOptions {
  const dir = mkdtempSync(join(tmpdir(), 'emulator-tls-'));
  try {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ], { stdio: 'ignore' });
    return { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
