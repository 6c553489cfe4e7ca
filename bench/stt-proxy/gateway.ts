/**
 * The gateway under test as a child process (`node src/main.ts`, the pinned Node), so that its
 * CPU and memory are its own. CPU comes from its GET /metrics (`process_cpu_seconds_total`,
 * prom-client's process.cpuUsage) and, as a cross-check that costs the gateway nothing, from
 * /proc/<pid>/stat; RSS is sampled from /proc/<pid>/status (no work for the gateway) and
 * cross-checked with `process_resident_memory_bytes`.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CLK_TCK } from './machine.ts';

export interface GatewayStartOptions {
  /** directory holding src/ (a snapshot, see snapshotSource), package.json and node_modules */
  root: string;
  apiKey: string;
  apiSecret: string;
  deepgramKey: string;
  deepgramBaseUrl: string;
  logLevel: string;
  /** extra node flags (profiling) */
  nodeArgs?: string[];
}

/** A sample of Prometheus text by metric name and label subset (first match). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const kv of (m[2] ?? '').slice(1, -1).matchAll(/(\w+)="([^"]*)"/g)) got[kv[1] as string] = kv[2] as string;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

export interface MetricsSnapshot {
  cpuSeconds: number;
  rssBytes: number;
  heapUsedBytes: number;
  sessionsActive: number;
}

export interface LogCounts {
  warn: number;
  error: number;
  /** outcome of each finished STT session ('stt session ended' lines) */
  outcomes: Map<string, number>;
  last: string[];
}

const SNAPSHOT_PREFIX = 'stt-bench-gateway-';

/** Snapshots left by a bench that was killed (its pid is gone). */
function removeStaleSnapshots(): void {
  for (const name of readdirSync(tmpdir())) {
    const m = new RegExp(`^${SNAPSHOT_PREFIX}(\\d+)-`).exec(name);
    if (!m) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch {
      rmSync(join(tmpdir(), name), { recursive: true, force: true });
    }
  }
}

export interface SourceSnapshot {
  root: string;
  /** e.g. "HEAD 325e445, src 1a2b3c4d5e6f" */
  description: string;
  remove(): void;
}

/**
 * A private copy of the gateway's src/ (from the working tree or from git HEAD) with links to the
 * repository's package.json and node_modules. Every gateway process of a run starts from it, so a
 * run measures one version of the code even if the working tree changes meanwhile.
 */
export function snapshotSource(repoRoot: string, from: 'worktree' | 'head'): SourceSnapshot {
  removeStaleSnapshots();
  const root = mkdtempSync(join(tmpdir(), `${SNAPSHOT_PREFIX}${process.pid}-`));
  try {
    if (from === 'head') {
      const tar = execFileSync('git', ['archive', '--format=tar', 'HEAD', 'src'], { cwd: repoRoot, maxBuffer: 256 * 2 ** 20 });
      execFileSync('tar', ['-x', '-C', root], { input: tar });
    } else {
      cpSync(join(repoRoot, 'src'), join(root, 'src'), { recursive: true });
    }
    symlinkSync(join(repoRoot, 'package.json'), join(root, 'package.json'));
    symlinkSync(join(repoRoot, 'node_modules'), join(root, 'node_modules'), 'dir');
  } catch (err) {
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  const hash = createHash('sha256');
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) hash.update(p.slice(root.length)).update(readFileSync(p));
    }
  };
  walk(join(root, 'src'));
  let commit = 'no git';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    /* not a checkout */
  }
  const description = `${from === 'head' ? `HEAD ${commit}` : `working tree (HEAD ${commit})`}, src ${hash.digest('hex').slice(0, 12)}`;
  return { root, description, remove: () => rmSync(root, { recursive: true, force: true }) };
}

export class GatewayProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** counted from the gateway's log lines on stdout, live */
  readonly logs: LogCounts;
  private readonly exited: Promise<void>;

  private constructor(child: ChildProcess, port: number, exited: Promise<void>, logs: LogCounts) {
    this.child = child;
    this.port = port;
    this.exited = exited;
    this.logs = logs;
  }

  static async start(o: GatewayStartOptions): Promise<GatewayProcess> {
    const watchdog = fileURLToPath(new URL('./watchdog.ts', import.meta.url));
    // A clean environment: nothing from the caller's shell (no real provider keys) reaches it.
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: o.logLevel,
      LIVEKIT_API_KEY: o.apiKey,
      LIVEKIT_API_SECRET: o.apiSecret,
      DEEPGRAM_API_KEY: o.deepgramKey,
      DEEPGRAM_BASE_URL: o.deepgramBaseUrl,
      SHUTDOWN_TIMEOUT_S: '3',
    };
    const child = spawn(process.execPath, [...(o.nodeArgs ?? []), '--import', watchdog, 'src/main.ts'], {
      cwd: o.root,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const logs: LogCounts = { warn: 0, error: 0, outcomes: new Map(), last: [] };
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-4000);
    });
    let onListening: ((port: number) => void) | null = null;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      let rec: { level?: number; msg?: string; port?: number; outcome?: string };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        // not a log record (e.g. --trace-gc output from --gateway-node-args): show it
        process.stderr.write(`[gateway] ${line}\n`);
        return;
      }
      if (rec.msg === 'gateway listening' && typeof rec.port === 'number') onListening?.(rec.port);
      if (rec.msg === 'stt session ended' && rec.outcome) logs.outcomes.set(rec.outcome, (logs.outcomes.get(rec.outcome) ?? 0) + 1);
      if ((rec.level ?? 0) >= 50) logs.error++;
      else if ((rec.level ?? 0) >= 40) logs.warn++;
      if ((rec.level ?? 0) >= 40) logs.last = [...logs.last.slice(-4), line.slice(0, 300)];
    });
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`gateway did not start in 15 s\n${stderr}`));
      }, 15_000);
      onListening = (p) => {
        clearTimeout(timer);
        resolve(p);
      };
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`gateway exited (${code}) during startup\n${stderr}`));
      });
    });
    return new GatewayProcess(child, port, exited, logs);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  async scrape(): Promise<MetricsSnapshot> {
    const res = await fetch(`http://127.0.0.1:${this.port}/metrics`);
    const text = await res.text();
    return {
      cpuSeconds: metricValue(text, 'process_cpu_seconds_total') ?? NaN,
      rssBytes: metricValue(text, 'process_resident_memory_bytes') ?? NaN,
      heapUsedBytes: metricValue(text, 'nodejs_heap_size_used_bytes') ?? NaN,
      sessionsActive: metricValue(text, 'gateway_sessions_active', { modality: 'stt' }) ?? NaN,
    };
  }

  /** utime + stime of the gateway process from /proc, seconds (1/CLK_TCK resolution). */
  procCpuSeconds(): number {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
    } catch {
      return NaN;
    }
  }

  /** VmRSS from /proc, bytes. */
  procRssBytes(): number {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : NaN;
    } catch {
      return NaN;
    }
  }

  /** SIGTERM (graceful, as in production), SIGKILL after 6 s. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 6000);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
