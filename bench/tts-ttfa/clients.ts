/**
 * The bench's clients: a small WebSocket wrapper (every socket tracked so that cleanup can cut
 * them all), one generation timed on it, and a streaming HTTP POST for OpenAI. Every wait has a
 * timeout and rejects when the socket closes.
 *
 * Time to first audio is taken from the 'message' event (performance.now() before any parsing),
 * so what a scenario parses afterwards does not count.
 */
import http from 'node:http';
import WebSocket from 'ws';
import type { HttpRequestSpec, TtsWsCodec } from '../../src/providers/types.ts';

/** What one message means for the generation being timed. */
export type Kind = 'audio' | 'done' | 'audio+done' | 'ignore' | { error: string };

export interface Timed {
  /** first audio - t0, ms */
  ttfaMs: number;
  /** done - t0, ms */
  totalMs: number;
}

const liveSockets = new Set<WebSocket>();
const liveRequests = new Set<http.ClientRequest>();

/** Cut every socket and request still open (cleanup, SIGINT). */
export function terminateAll(): void {
  for (const ws of liveSockets) ws.terminate();
  liveSockets.clear();
  for (const r of liveRequests) r.destroy();
  liveRequests.clear();
}

export function openCount(): number {
  return liveSockets.size + liveRequests.size;
}

type Handler = (data: Buffer, isBinary: boolean, at: number) => void;

export class Socket {
  readonly ws: WebSocket;
  /** performance.now() when the socket opened */
  readonly openedAt: number;
  private handler: Handler | null = null;
  private closeHandler: ((code: number) => void) | null = null;
  private closedCode: number | null = null;

  private constructor(ws: WebSocket, openedAt: number) {
    this.ws = ws;
    this.openedAt = openedAt;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const at = performance.now();
      this.handler?.(data, isBinary, at);
    });
    ws.on('close', (code: number) => {
      liveSockets.delete(ws);
      this.closedCode = code;
      this.closeHandler?.(code);
    });
  }

  static open(url: string, headers: Record<string, string>, timeoutMs = 10_000): Promise<Socket> {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    liveSockets.add(ws);
    ws.on('error', () => {});
    return new Promise<Socket>((resolve, reject) => {
      const onRefused = (_req: unknown, res: http.IncomingMessage): void => fail(`upgrade refused: HTTP ${res.statusCode} ${url}`);
      const onClose = (code: number): void => fail(`closed (${code}) before open: ${url}`);
      const off = (): void => {
        clearTimeout(timer);
        ws.off('unexpected-response', onRefused);
        ws.off('close', onClose);
      };
      const fail = (why: string): void => {
        off();
        ws.off('open', onOpen);
        liveSockets.delete(ws);
        ws.terminate();
        reject(new Error(why));
      };
      const onOpen = (): void => {
        off();
        resolve(new Socket(ws, performance.now()));
      };
      const timer = setTimeout(() => fail(`no open in ${timeoutMs} ms: ${url}`), timeoutMs);
      ws.once('unexpected-response', onRefused);
      ws.once('close', onClose);
      ws.once('open', onOpen);
    });
  }

  get closed(): boolean {
    return this.closedCode !== null;
  }

  send(s: string): void {
    this.ws.send(s);
  }

  /**
   * Install `classify`, run `start` (which sends the text and stamps t0), and wait for the
   * generation's done. Rejects on an error message, a close, or after `timeoutMs`.
   */
  timed(classify: (data: Buffer, isBinary: boolean) => Kind, start: () => number, timeoutMs = 10_000): Promise<Timed> {
    return new Promise<Timed>((resolve, reject) => {
      let t0 = NaN;
      let first = NaN;
      const finish = (err: Error | null, at = NaN): void => {
        clearTimeout(timer);
        this.handler = null;
        this.closeHandler = null;
        if (err) reject(err);
        else if (!Number.isFinite(first)) reject(new Error('done without audio'));
        else resolve({ ttfaMs: first - t0, totalMs: at - t0 });
      };
      const timer = setTimeout(() => finish(new Error(`no done in ${timeoutMs} ms`)), timeoutMs);
      this.handler = (data, isBinary, at) => {
        let k: Kind;
        try {
          k = classify(data, isBinary);
        } catch (err) {
          finish(new Error(`unreadable message: ${String(err)}`));
          return;
        }
        if (k === 'ignore') return;
        if (typeof k === 'object') {
          finish(new Error(k.error));
          return;
        }
        if (k !== 'done' && !Number.isFinite(first)) first = at;
        if (k !== 'audio') finish(null, at);
      };
      this.closeHandler = (code) => finish(new Error(`socket closed (${code}) during the generation`));
      if (this.closed) {
        finish(new Error('socket already closed'));
        return;
      }
      t0 = start();
    });
  }

  /** Close frame, wait for the close (1 s), else cut. */
  async close(): Promise<void> {
    if (this.closed) return;
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.ws.terminate();
        resolve();
      }, 1000);
      this.ws.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.ws.close(1000);
    await done;
  }

  terminate(): void {
    this.ws.terminate();
  }
}

/** A gateway /v1/tts message: output_audio (checked by prefix, no parse), done, error. */
export function gatewayKind(data: Buffer, isBinary: boolean): Kind {
  if (isBinary) return { error: 'binary frame from the gateway' };
  const s = data.toString('utf8');
  if (s.startsWith('{"type":"output_audio"')) return 'audio';
  const msg = JSON.parse(s) as { type?: string; message?: string };
  switch (msg.type) {
    case 'done':
      return 'done';
    case 'error':
      return { error: `gateway error: ${msg.message ?? s.slice(0, 200)}` };
    case 'session.closed':
      return { error: 'gateway closed the session' };
    default:
      return 'ignore'; // session.created, heartbeat, output_alignment
  }
}

/** A provider frame decoded with the gateway's own adapter codec (the same bytes both ways). */
export function codecKind(codec: TtsWsCodec, gen: string): (data: Buffer, isBinary: boolean) => Kind {
  return (data, isBinary) => {
    let audio = false;
    let done = false;
    for (const ev of codec.decode(data, isBinary)) {
      if (ev.gen !== null && ev.gen !== gen) continue;
      if (ev.type === 'audio') audio = true;
      else if (ev.type === 'done') done = true;
      else if (ev.type === 'error') return { error: ev.error.message };
    }
    return audio ? (done ? 'audio+done' : 'audio') : done ? 'done' : 'ignore';
  };
}

/**
 * One streaming POST: t0 = request start, first body bytes, end of body. `agent: false` opens a
 * new TCP connection (and closes it after); a keep-alive Agent reuses one.
 */
export function httpTimed(spec: HttpRequestSpec, agent: http.Agent | false, timeoutMs = 10_000): Promise<Timed> {
  return new Promise<Timed>((resolve, reject) => {
    const t0 = performance.now();
    let first = NaN;
    let settled = false;
    const req = http.request(spec.url, { method: 'POST', headers: { ...spec.headers, 'Content-Length': Buffer.byteLength(spec.body) }, agent });
    liveRequests.add(req);
    const finish = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      liveRequests.delete(req);
      if (err) {
        req.destroy();
        reject(err);
      } else if (!Number.isFinite(first)) {
        reject(new Error('response without audio'));
      } else {
        resolve({ ttfaMs: first - t0, totalMs: performance.now() - t0 });
      }
    };
    const timer = setTimeout(() => finish(new Error(`no complete response in ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err) => finish(err));
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        finish(new Error(`HTTP ${res.statusCode}`));
        return;
      }
      res.on('data', (c: Buffer) => {
        if (c.length > 0 && !Number.isFinite(first)) first = performance.now();
      });
      res.on('end', () => finish(null));
      res.on('error', (err) => finish(err));
    });
    req.end(spec.body);
  });
}
