/**
 * A gateway under test as a child process: `node src/main.ts` (the pinned Node that runs the
 * bench) with a clean environment, LOG_LEVEL as asked and an optional GATEWAY_CONFIG file.
 * At LOG_LEVEL=warn the gateway does not log its port, so the bench picks a free port, passes it
 * as PORT and polls GET /healthz.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export interface GatewayStart {
  /** shown in messages */
  label: string;
  repoRoot: string;
  /** variables on top of PATH/PORT/HOST (keys, base URLs, LOG_LEVEL, GATEWAY_CONFIG) */
  env: Record<string, string>;
}

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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class GatewayChild {
  readonly label: string;
  readonly port: number;
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  /** warn/error lines logged by the gateway (pino level >= 40), counted live */
  warnings = 0;
  lastWarnings: string[] = [];

  private constructor(label: string, child: ChildProcess, port: number, exited: Promise<void>) {
    this.label = label;
    this.child = child;
    this.port = port;
    this.exited = exited;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      let level = 0;
      try {
        level = (JSON.parse(line) as { level?: number }).level ?? 0;
      } catch {
        return;
      }
      if (level >= 40) {
        this.warnings++;
        this.lastWarnings = [...this.lastWarnings.slice(-4), line.slice(0, 400)];
      }
    });
  }

  static async start(o: GatewayStart): Promise<GatewayChild> {
    let lastErr: unknown;
    // A port picked free can be taken before the gateway binds it: try again with another.
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        return await GatewayChild.startOnce(o, await freePort());
      } catch (err) {
        lastErr = err;
      }
    }
    throw lastErr;
  }

  private static async startOnce(o: GatewayStart, port: number): Promise<GatewayChild> {
    const watchdog = fileURLToPath(new URL('./watchdog.ts', import.meta.url));
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      PORT: String(port),
      HOST: '127.0.0.1',
      SHUTDOWN_TIMEOUT_S: '3',
      ...o.env,
    };
    const child = spawn(process.execPath, ['--import', watchdog, 'src/main.ts'], {
      cwd: o.repoRoot,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-4000);
    });
    const gw = new GatewayChild(o.label, child, port, exited);
    const deadline = performance.now() + 15_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${o.label}: gateway exited (${child.exitCode ?? child.signalCode}) during startup\n${stderr}`);
      }
      try {
        const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.ok) return gw;
      } catch {
        /* not listening yet */
      }
      if (performance.now() > deadline) {
        gw.kill();
        throw new Error(`${o.label}: gateway did not answer /healthz in 15 s\n${stderr}`);
      }
      await sleep(50);
    }
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM (graceful, as in production), SIGKILL after 6 s. */
  async stop(): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.kill(), 6000);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    if (this.alive) this.child.kill('SIGKILL');
  }
}
