/**
 * The real gateway as a child process (`node src/main.ts`), for tests that kill or signal it:
 * waits for the "gateway listening" log line and gives its port; keeps stdout/stderr for
 * diagnostics.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { TEST_KEY, TEST_SECRET } from './gateway.ts';
import { bearer, mintToken } from './tokens.ts';
import { WsRecorder, openWs } from './ws.ts';

const ROOT = join(import.meta.dirname, '..', '..');
/** The pinned Node (devDependency `node`), as the README's `npm start` uses it. */
const NODE = join(ROOT, 'node_modules', '.bin', 'node');

export interface ChildGateway {
  proc: ChildProcess;
  port: number;
  url: string;
  wsUrl(path: string): string;
  output(): string;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  exited: Promise<number | string>;
}

export async function startChildGateway(env: Record<string, string>, timeoutMs = 20_000): Promise<ChildGateway> {
  const proc = spawn(NODE, ['src/main.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', LIVEKIT_API_KEY: TEST_KEY, LIVEKIT_API_SECRET: TEST_SECRET, PORT: '0', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const onData = (): void => {
      for (const line of out.split('\n')) {
        if (!line.includes('"gateway listening"')) continue;
        try {
          const port = (JSON.parse(line) as { port: number }).port;
          clearTimeout(timer);
          proc.stdout?.off('data', onData);
          resolve(port);
          return;
        } catch {
          // partial line
        }
      }
    };
    proc.stdout?.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited (${code}) before listening:\n${out}`));
    });
  });
  return {
    proc,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: (path) => `ws://127.0.0.1:${port}${path}`,
    output: () => out,
    exited,
  };
}

/** Open an authenticated WebSocket to the child gateway. */
export async function connectChild(gw: ChildGateway, path: string, headers: Record<string, string> = {}): Promise<WsRecorder> {
  const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
  const res = await openWs(gw.wsUrl(path), { Authorization: bearer(token), ...headers });
  if ('status' in res) throw new Error(`upgrade rejected: ${res.status} ${res.body}`);
  return new WsRecorder(res);
}
