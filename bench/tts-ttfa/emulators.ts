/**
 * The four TTS provider emulators (Cartesia, Deepgram Aura, ElevenLabs, OpenAI speech) in ONE
 * child process, driven by the bench over the IPC channel of `fork`. Not meant to be run by hand.
 *
 * Why a child: the emulators' timers decide when the first audio leaves; sharing an event loop
 * with the bench client (which timestamps every message) would let one delay the other.
 *
 * The bench asks for one thing besides start/stop: how many upstream connections each emulator
 * has accepted so far (WebSocket upgrades for the WS providers, TCP connections for OpenAI),
 * which is how the report shows whether a scenario really ran on a warm socket.
 */
import { fork } from 'node:child_process';
import type { Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { EmulatorServer } from '../../test/emulators/base.ts';
import { DEFAULT_API_KEY as CARTESIA_KEY, startCartesiaEmulator } from '../../test/emulators/cartesia.ts';
import { DEFAULT_API_KEY as DEEPGRAM_KEY, startDeepgramSpeakEmulator } from '../../test/emulators/deepgram-speak.ts';
import { DEFAULT_API_KEY as ELEVENLABS_KEY, startElevenLabsEmulator } from '../../test/emulators/elevenlabs.ts';
import { DEFAULT_OPENAI_API_KEY as OPENAI_KEY, startOpenAiSpeechEmulator } from '../../test/emulators/openai-speech.ts';

export type ProviderName = 'cartesia' | 'deepgram' | 'elevenlabs' | 'openai';

export const EMULATOR_KEYS: Record<ProviderName, string> = {
  cartesia: CARTESIA_KEY,
  deepgram: DEEPGRAM_KEY,
  elevenlabs: ELEVENLABS_KEY,
  openai: OPENAI_KEY,
};

export interface EmulatorTiming {
  /** ms from the start of a generation to its first audio (the provider's model latency) */
  firstAudioMs: Record<ProviderName, number>;
  /** generation speed, x real time */
  speed: number;
  /** OpenAI's realistic pace (OPENAI_SPEECH_REALISTIC_TIMING) */
  openAiRealtimeFactor: number;
  /** delay before answering each WebSocket upgrade (models TCP + TLS + upgrade round trips); 0 = loopback */
  connectDelayMs: number;
}

export interface EmulatorsApi {
  readonly ports: Record<ProviderName, number>;
  readonly pid: number;
  /** Upstream connections accepted so far, per provider (OpenAI: TCP connections, null if unknown). */
  counts(): Promise<Record<ProviderName, number | null>>;
  close(): Promise<void>;
  /** SIGKILL (last resort). */
  kill(): void;
}

type Request = { id: number; op: 'counts' } | { id: number; op: 'close' };
type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

async function serve(t: EmulatorTiming): Promise<void> {
  const cartesia = await startCartesiaEmulator({ firstAudioDelayMs: t.firstAudioMs.cartesia, speedFactor: t.speed });
  const deepgram = await startDeepgramSpeakEmulator({
    firstAudioDelayMs: t.firstAudioMs.deepgram,
    realtimeFactor: t.speed,
    // The bench runs more generations per socket than Deepgram's 20 Flush per 60 s and more
    // sockets than its 15 per key; both limits are real (see the report) but not what we measure.
    flushLimit: 1_000_000,
    maxConcurrent: 1000,
  });
  const elevenlabs = await startElevenLabsEmulator({ firstAudioDelayMs: t.firstAudioMs.elevenlabs, speedFactor: t.speed });
  const openai = await startOpenAiSpeechEmulator({
    firstAudioDelayMs: t.firstAudioMs.openai,
    realtimeFactor: t.openAiRealtimeFactor,
    chunkMs: 100,
  });
  const counts: Record<ProviderName, number | null> = { cartesia: 0, deepgram: 0, elevenlabs: 0, openai: null };
  const ws: Array<[ProviderName, EmulatorServer]> = [
    ['cartesia', cartesia.server],
    ['deepgram', deepgram.server],
    ['elevenlabs', elevenlabs.server],
  ];
  for (const [name, server] of ws) {
    server.faults.upgradeDelayMs = t.connectDelayMs;
    server.on('connection', () => {
      counts[name] = (counts[name] ?? 0) + 1;
    });
  }
  // The OpenAI emulator is plain HTTP: count TCP connections on its http server. The field is
  // private to EmulatorServer; this only observes it, and the count reads "-" if it moves.
  const httpServer = (openai.server as unknown as { server?: Server }).server;
  if (httpServer && typeof httpServer.on === 'function') {
    counts.openai = 0;
    httpServer.on('connection', () => {
      counts.openai = (counts.openai ?? 0) + 1;
    });
  }

  const send = (m: unknown): void => {
    process.send?.(m);
  };
  const closeAll = (): Promise<unknown> =>
    Promise.allSettled([cartesia.close(), deepgram.close(), elevenlabs.close(), openai.close()]);
  process.on('message', (raw: unknown) => {
    const req = raw as Request;
    if (req.op === 'counts') {
      send({ id: req.id, ok: true, value: { ...counts } } satisfies Reply);
    } else if (req.op === 'close') {
      void closeAll().finally(() => {
        send({ id: req.id, ok: true, value: null } satisfies Reply);
        process.disconnect?.();
        setTimeout(() => process.exit(0), 50).unref();
      });
    } else {
      send({ id: (req as { id: number }).id, ok: false, error: 'unknown op' } satisfies Reply);
    }
  });
  // The bench went away (crash, SIGKILL): do not linger.
  process.on('disconnect', () => process.exit(0));
  send({
    ready: true,
    ports: { cartesia: cartesia.port, deepgram: deepgram.port, elevenlabs: elevenlabs.port, openai: openai.port } satisfies Record<ProviderName, number>,
  });
}

/** Fork the emulator child and wait until every emulator listens. */
export async function startEmulators(t: EmulatorTiming): Promise<EmulatorsApi> {
  const child = fork(fileURLToPath(import.meta.url), [JSON.stringify(t)], {
    execPath: process.execPath,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ports = await new Promise<Record<ProviderName, number>>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('emulator child did not start in 15 s'));
    }, 15_000);
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`emulator child exited (${code}) before it was ready`));
    };
    child.once('exit', onExit);
    child.once('message', (m: unknown) => {
      clearTimeout(timer);
      child.off('exit', onExit);
      const r = m as { ready?: boolean; ports?: Record<ProviderName, number> };
      if (r.ready && r.ports) resolve(r.ports);
      else reject(new Error('emulator child: unexpected first message'));
    });
  });
  let nextId = 1;
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  child.on('message', (m: unknown) => {
    const r = m as Reply;
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    clearTimeout(p.timer);
    if (r.ok) p.resolve(r.value);
    else p.reject(new Error(`emulator child: ${r.error}`));
  });
  child.on('exit', () => {
    for (const p of pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error('emulator child exited'));
    }
    pending.clear();
  });
  const call = <T>(op: Request['op'], timeoutMs = 5000): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (!child.connected) {
        reject(new Error('emulator child is gone'));
        return;
      }
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`emulator child: no answer to ${op} in ${timeoutMs} ms`));
      }, timeoutMs);
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      child.send({ op, id });
    });
  const within = (ms: number): Promise<boolean> =>
    Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
  return {
    ports,
    pid: child.pid ?? -1,
    counts: () => call('counts'),
    close: async () => {
      if (child.exitCode === null && child.signalCode === null && child.connected) await call('close', 3000).catch(() => {});
      if (!(await within(1000))) {
        child.kill('SIGTERM');
        if (!(await within(2000))) child.kill('SIGKILL');
        await exited;
      }
    },
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) {
  // Ctrl-C reaches the whole process group; the bench owns shutdown and closes us over IPC.
  process.on('SIGINT', () => {});
  serve(JSON.parse(process.argv[2] ?? '{}') as EmulatorTiming).catch((err: unknown) => {
    process.stderr.write(`emulator child failed: ${String(err)}\n`);
    process.exit(1);
  });
}
