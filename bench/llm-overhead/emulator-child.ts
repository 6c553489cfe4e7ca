/**
 * The OpenAI chat emulator (test/emulators/openai-chat.ts) in its own process, driven by the
 * bench over the IPC channel of `fork`. Not meant to be run by hand.
 *
 * Why a separate process: the load generator parses every SSE chunk of up to 200 concurrent
 * streams; sharing its event loop with the emulator would delay the emulator's timers, and those
 * timers are the fixed part of every measurement (first token after `firstTokenDelayMs`, then a
 * piece every `interTokenDelayMs`).
 *
 * Besides the emulator, the child counts requests in flight (peak since the last reset), to show
 * that the concurrency asked of the client really reached the upstream through each proxy.
 */
import { fork } from 'node:child_process';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../../test/emulators/openai-chat.ts';
import { perfToMono } from './clock.ts';

export interface EmulatorChildOptions {
  firstTokenDelayMs: number;
  interTokenDelayMs: number;
}

/**
 * One completed chat request as the emulator saw it, on the machine-wide monotonic clock (ms):
 * arrival (entry of its handler), when it wrote the first content chunk, when it ended the
 * response (after [DONE]). NaN when not reached.
 */
export interface EmulatorTiming {
  arrive: number;
  firstToken: number;
  end: number;
}

/** What the emulator saw since the last reset. */
export interface EmulatorStats {
  /** chat completion requests received */
  requests: number;
  /** by outcome (completed, aborted, rejected...) */
  outcomes: Record<string, number>;
  /** most chat requests open at once */
  peakInFlight: number;
  inFlight: number;
}

export interface EmulatorApi {
  readonly port: number;
  readonly pid: number;
  /** `http://127.0.0.1:<port>/v1` */
  readonly baseUrl: string;
  stats(): Promise<EmulatorStats>;
  /** Completed chat requests since the last reset, in arrival order. */
  timeline(): Promise<EmulatorTiming[]>;
  /** Forget finished requests (the emulator records every chunk; this bounds its memory) and reset the peak. */
  reset(): Promise<void>;
  /** CPU time of the emulator process, microseconds (user + system). */
  cpuMicros(): Promise<number>;
  close(): Promise<void>;
  kill(): void;
}

type Request = { id: number; op: 'stats' | 'timeline' | 'reset' | 'cpu' | 'close' };
type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

async function serve(opts: EmulatorChildOptions): Promise<void> {
  const emu: OpenAiChatEmulator = await startOpenAiChatEmulator({
    host: '127.0.0.1',
    port: 0,
    firstTokenDelayMs: opts.firstTokenDelayMs,
    interTokenDelayMs: opts.interTokenDelayMs,
    // The default 5,000 RPM bucket would answer 429 well before the end of a 1,000-request burst.
    rateLimits: null,
  });
  let inFlight = 0;
  let peak = 0;
  // Arrival time per request, keyed by its headers object (the record keeps that same object).
  const arrivals = new WeakMap<object, number>();
  const handle = emu.handle.bind(emu);
  // Count at the entry point base.ts calls (`emu.handle`), without touching the emulator source.
  (emu as { handle: (req: IncomingMessage, res: ServerResponse) => Promise<void> }).handle = (req, res) => {
    if (req.url?.includes('/chat/completions')) {
      // The emulator's own t0 is taken synchronously after this, so the record's times are relative to it.
      arrivals.set(req.headers, perfToMono(performance.now()));
      inFlight++;
      if (inFlight > peak) peak = inFlight;
      res.once('close', () => inFlight--);
    }
    return handle(req, res);
  };
  const send = (m: unknown): void => {
    process.send?.(m);
  };
  process.on('message', (raw: unknown) => {
    const req = raw as Request;
    let value: unknown = null;
    try {
      switch (req.op) {
        case 'stats': {
          const outcomes: Record<string, number> = {};
          for (const r of emu.requests) outcomes[r.outcome] = (outcomes[r.outcome] ?? 0) + 1;
          value = { requests: emu.requests.length, outcomes, peakInFlight: peak, inFlight } satisfies EmulatorStats;
          break;
        }
        case 'timeline': {
          const out: EmulatorTiming[] = [];
          for (const r of emu.requests) {
            const arrive = arrivals.get(r.headers);
            if (r.outcome !== 'completed' || arrive === undefined) continue;
            out.push({ arrive, firstToken: arrive + (r.timing.firstTokenMs ?? NaN), end: arrive + (r.timing.endMs ?? NaN) });
          }
          value = out;
          break;
        }
        case 'reset': {
          const open = emu.requests.filter((r) => !r.finished);
          emu.requests.length = 0;
          emu.requests.push(...open);
          emu.modelRequests.length = 0;
          emu.server.httpRequests.length = 0;
          peak = inFlight;
          break;
        }
        case 'cpu': {
          const u = process.cpuUsage();
          value = u.user + u.system;
          break;
        }
        case 'close':
          void emu.close().finally(() => {
            send({ id: req.id, ok: true, value: null } satisfies Reply);
            process.disconnect?.();
            setTimeout(() => process.exit(0), 50).unref();
          });
          return;
      }
    } catch (err) {
      send({ id: req.id, ok: false, error: String(err) } satisfies Reply);
      return;
    }
    send({ id: req.id, ok: true, value } satisfies Reply);
  });
  // The bench went away (crash, SIGKILL): do not linger.
  process.on('disconnect', () => process.exit(0));
  send({ ready: true, port: emu.port, baseUrl: emu.baseUrl });
}

/** Start the emulator child and return its API. */
export async function startEmulatorChild(opts: EmulatorChildOptions, nodeArgs: string[] = []): Promise<EmulatorApi> {
  const child = fork(fileURLToPath(import.meta.url), [JSON.stringify(opts)], {
    execPath: process.execPath,
    execArgv: nodeArgs,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let nextId = 1;
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  const ready = await new Promise<{ port: number; baseUrl: string }>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`emulator child exited (${code}) before it was ready`));
    child.once('exit', onExit);
    child.once('message', (m: unknown) => {
      child.off('exit', onExit);
      const r = m as { ready?: boolean; port?: number; baseUrl?: string };
      if (r.ready && typeof r.port === 'number' && typeof r.baseUrl === 'string') resolve({ port: r.port, baseUrl: r.baseUrl });
      else reject(new Error('emulator child: unexpected first message'));
    });
  });
  child.on('message', (m: unknown) => {
    const r = m as Reply;
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    if (r.ok) p.resolve(r.value);
    else p.reject(new Error(`emulator child: ${r.error}`));
  });
  child.on('exit', () => {
    for (const p of pending.values()) p.reject(new Error('emulator child exited'));
    pending.clear();
  });
  const call = <T>(op: Request['op']): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (!child.connected) {
        reject(new Error('emulator child is gone'));
        return;
      }
      const id = nextId++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ op, id } satisfies Request);
    });
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return {
    port: ready.port,
    pid: child.pid ?? -1,
    baseUrl: ready.baseUrl,
    stats: () => call<EmulatorStats>('stats'),
    timeline: () => call<EmulatorTiming[]>('timeline'),
    reset: () => call<void>('reset'),
    cpuMicros: () => call<number>('cpu'),
    close: async () => {
      if (child.exitCode === null && child.connected) {
        await Promise.race([call<void>('close').catch(() => {}), new Promise((r) => setTimeout(r, 3000).unref())]);
      }
      const within = (ms: number): Promise<boolean> =>
        Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
      if (!(await within(1000))) {
        child.kill('SIGTERM');
        if (!(await within(2000))) kill();
        await exited;
      }
    },
    kill,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) {
  const opts = JSON.parse(process.argv[2] ?? '{}') as EmulatorChildOptions;
  process.on('SIGINT', () => {
    /* the bench owns shutdown; it closes us over IPC */
  });
  serve(opts).catch((err: unknown) => {
    process.stderr.write(`emulator child failed: ${String(err)}\n`);
    process.exit(1);
  });
}
