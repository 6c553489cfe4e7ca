/**
 * The proxies under test as child processes of the pinned Node (process.execPath), each with a
 * clean environment and the stdin watchdog preloaded:
 * - our gateway: `node src/main.ts`, LOG_LEVEL as asked (warn by default), OpenAI pointed at the
 *   emulator with OPENAI_BASE_URL;
 * - Portkey's open-source gateway: `node node_modules/@portkey-ai/gateway/build/start-server.js
 *   --port=P --headless` (what `npx @portkey-ai/gateway` runs; --headless only drops the local
 *   log console UI). It has no upstream configuration: each request names the provider and the
 *   base URL in headers (x-portkey-provider, x-portkey-custom-host).
 * At LOG_LEVEL=warn the gateway does not log its port, so the bench picks a free port and polls
 * until the server answers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { procCpuSeconds } from './machine.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

interface SpawnSpec {
  label: string;
  cwd: string;
  /** node flags (profiling), then the script and its arguments */
  nodeArgs: string[];
  script: string;
  args: (port: number) => string[];
  env: (port: number) => Record<string, string>;
  /** GET this path until it answers 200 */
  readyPath: string;
  /** a line on stdout that is a warning or an error */
  isWarning: (line: string) => boolean;
}

export class ServerChild {
  readonly label: string;
  readonly port: number;
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  /** warning/error lines seen on stdout (per isWarning) or stderr */
  warnings = 0;
  /** the first few such lines (the head of a stack trace names the error) and the last few */
  firstWarnings: string[] = [];
  lastWarnings: string[] = [];

  private constructor(label: string, child: ChildProcess, port: number, exited: Promise<void>, isWarning: (line: string) => boolean) {
    this.label = label;
    this.child = child;
    this.port = port;
    this.exited = exited;
    const note = (line: string): void => {
      this.warnings++;
      if (this.firstWarnings.length < 8) this.firstWarnings.push(line.slice(0, 400));
      this.lastWarnings = [...this.lastWarnings.slice(-4), line.slice(0, 400)];
    };
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      if (isWarning(line)) note(line);
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => {
      if (line.trim()) note(line);
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** utime + stime from /proc (costs the child nothing). */
  cpuSeconds(): number {
    return procCpuSeconds(this.pid);
  }

  static async start(spec: SpawnSpec): Promise<ServerChild> {
    let lastErr: unknown;
    // A port picked free can be taken before the child binds it: try again with another.
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        return await ServerChild.startOnce(spec, await freePort());
      } catch (err) {
        lastErr = err;
      }
    }
    throw lastErr;
  }

  private static async startOnce(spec: SpawnSpec, port: number): Promise<ServerChild> {
    const watchdog = fileURLToPath(new URL('./watchdog.ts', import.meta.url));
    const child = spawn(process.execPath, [...spec.nodeArgs, '--import', watchdog, spec.script, ...spec.args(port)], {
      cwd: spec.cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...spec.env(port) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    let output = '';
    const keep = (d: Buffer): void => {
      output = (output + d.toString('utf8')).slice(-4000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const deadline = performance.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${spec.label} exited (${child.exitCode ?? child.signalCode}) during startup\n${output}`);
      }
      try {
        const res = await fetch(`http://127.0.0.1:${port}${spec.readyPath}`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.ok) break;
      } catch {
        /* not listening yet */
      }
      if (performance.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`${spec.label} did not answer ${spec.readyPath} on port ${port} within 20 s\n${output}`);
      }
      await sleep(100);
    }
    child.stdout?.off('data', keep);
    child.stderr?.off('data', keep);
    return new ServerChild(spec.label, child, port, exited, spec.isWarning);
  }

  /** SIGTERM (graceful), SIGKILL after 6 s. */
  async stop(): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 6000);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    if (this.alive) this.child.kill('SIGKILL');
  }
}

function pinoWarning(line: string): boolean {
  try {
    return ((JSON.parse(line) as { level?: number }).level ?? 0) >= 40;
  } catch {
    return false;
  }
}

export interface GatewayChildOptions {
  /** directory holding src/ (a source snapshot, see source.ts) */
  root: string;
  apiKey: string;
  apiSecret: string;
  openAiKey: string;
  /** OPENAI_BASE_URL, with /v1 */
  openAiBaseUrl: string;
  logLevel: string;
  nodeArgs: string[];
}

export function startGateway(o: GatewayChildOptions): Promise<ServerChild> {
  return ServerChild.start({
    label: 'gateway',
    cwd: o.root,
    nodeArgs: o.nodeArgs,
    script: 'src/main.ts',
    args: () => [],
    env: (port) => ({
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: o.logLevel,
      LIVEKIT_API_KEY: o.apiKey,
      LIVEKIT_API_SECRET: o.apiSecret,
      OPENAI_API_KEY: o.openAiKey,
      OPENAI_BASE_URL: o.openAiBaseUrl,
      SHUTDOWN_TIMEOUT_S: '3',
    }),
    readyPath: '/healthz',
    isWarning: pinoWarning,
  });
}

export const PORTKEY_SCRIPT = 'node_modules/@portkey-ai/gateway/build/start-server.js';

export function portkeyInstalled(repoRoot: string): boolean {
  return existsSync(join(repoRoot, PORTKEY_SCRIPT));
}

/** `shim`: preload portkey-shim.ts (the workaround for Portkey-AI/gateway#1389, see that file). */
export function startPortkey(o: { repoRoot: string; nodeArgs: string[]; nodeEnv: string; shim: boolean }): Promise<ServerChild> {
  const shim = fileURLToPath(new URL('./portkey-shim.ts', import.meta.url));
  return ServerChild.start({
    label: 'portkey',
    cwd: o.repoRoot,
    nodeArgs: [...o.nodeArgs, ...(o.shim ? ['--import', shim] : [])],
    script: PORTKEY_SCRIPT,
    args: (port) => [`--port=${port}`, '--headless'],
    env: (): Record<string, string> => (o.nodeEnv ? { NODE_ENV: o.nodeEnv } : {}),
    // `GET /` answers "AI Gateway says hey!" once the server listens.
    readyPath: '/',
    // Its stdout is a startup banner and console.log lines; errors go to stderr.
    isWarning: (line) => /error|fail/i.test(line),
  });
}
