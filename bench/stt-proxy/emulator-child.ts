/**
 * The emulator in its own process, driven by the bench over the IPC channel of `fork`
 * (serialization 'advanced', so typed arrays cross as they are). Not meant to be run by hand.
 *
 * Why a separate process: the bench client (N streams x 20 frames/s, plus their timers) would
 * otherwise share one event loop with the emulator, and the emulator's receive timestamps are one
 * end of the latency we measure. See docs/perf.md.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { EmulatorHost, type EmulatorApi, type EmulatorHostOptions } from './emulator.ts';

type Request =
  | { id: number; op: 'openTags'; prefix: string }
  | { id: number; op: 'collect'; prefix: string; frameBytes: number }
  | { id: number; op: 'reset' }
  | { id: number; op: 'cpu' }
  | { id: number; op: 'rejected' }
  | { id: number; op: 'close' };

type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

async function serve(opts: EmulatorHostOptions): Promise<void> {
  const host = await EmulatorHost.start(opts);
  const send = (m: unknown): void => {
    process.send?.(m);
  };
  process.on('message', (raw: unknown) => {
    const req = raw as Request;
    let value: unknown;
    try {
      switch (req.op) {
        case 'openTags':
          value = host.openTags(req.prefix);
          break;
        case 'collect':
          value = host.collect(req.prefix, req.frameBytes);
          break;
        case 'reset':
          host.reset();
          value = null;
          break;
        case 'cpu': {
          const u = process.cpuUsage();
          value = u.user + u.system;
          break;
        }
        case 'rejected':
          value = host.rejectedCount();
          break;
        case 'close':
          void host.close().finally(() => {
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
  send({ ready: true, port: host.port });
}

/** Start the emulator child and return its API. */
export async function startEmulatorChild(
  opts: EmulatorHostOptions,
  nodeArgs: string[] = [],
): Promise<EmulatorApi & { pid: number; kill(): void }> {
  const child = fork(fileURLToPath(import.meta.url), [JSON.stringify(opts)], {
    execPath: process.execPath,
    serialization: 'advanced',
    execArgv: nodeArgs,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let nextId = 1;
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  const port = await new Promise<number>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`emulator child exited (${code}) before it was ready`));
    child.once('exit', onExit);
    child.once('message', (m: unknown) => {
      child.off('exit', onExit);
      const r = m as { ready?: boolean; port?: number };
      if (r.ready && typeof r.port === 'number') resolve(r.port);
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
  const call = <T>(req: Record<string, unknown> & { op: Request['op'] }): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (!child.connected) {
        reject(new Error('emulator child is gone'));
        return;
      }
      const id = nextId++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ ...req, id });
    });
  return {
    port,
    pid: child.pid ?? -1,
    openTags: (prefix) => call<number>({ op: 'openTags', prefix }),
    collect: (prefix, frameBytes) => call({ op: 'collect', prefix, frameBytes }),
    reset: () => call<void>({ op: 'reset' }),
    cpuMicros: () => call<number>({ op: 'cpu' }),
    rejectedCount: () => call<number>({ op: 'rejected' }),
    close: async () => {
      if (child.exitCode === null && child.connected) {
        await Promise.race([call<void>({ op: 'close' }).catch(() => {}), new Promise((r) => setTimeout(r, 3000).unref())]);
      }
      const within = (ms: number): Promise<boolean> =>
        Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
      if (!(await within(1000))) {
        child.kill('SIGTERM');
        if (!(await within(2000))) child.kill('SIGKILL');
        await exited;
      }
    },
    kill: () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) {
  const opts = JSON.parse(process.argv[2] ?? '{}') as EmulatorHostOptions;
  process.on('SIGINT', () => {
    /* the bench owns shutdown; it closes us over IPC */
  });
  serve(opts).catch((err: unknown) => {
    process.stderr.write(`emulator child failed: ${String(err)}\n`);
    process.exit(1);
  });
}
