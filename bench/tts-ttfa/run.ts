/**
 * bench/tts-ttfa: time to first audio (TTFA) of /v1/tts through the gateway against the same
 * provider protocol spoken directly to the emulator, with cold and warm upstreams, in one run.
 *
 *   npm run bench:tts [-- --providers cartesia,deepgram --n 20 --connect-delay-ms 75 ...]  (--help)
 *
 * Processes: this one (all clients), the four emulators (one child process, realistic first-audio
 * delays), and two gateways (`node src/main.ts` children, LOG_LEVEL=warn): "pooled" with the
 * default config and "no-pool" with `tts.poolMaxPerKey: 0`. Scenarios run one after another,
 * one generation at a time, so nothing competes with the generation being timed.
 *
 * TTFA = first audio bytes received - t0, all in this process's clock. t0 is the moment the text
 * is sent, except for direct-cold where it is the connect (the client has its text ready and
 * pays the connection first). A script, not a test: it prints what it measured; method and
 * numbers go to docs/perf.md.
 */
import type http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { mintToken } from '../../test/helpers/tokens.ts';
import { openCount, terminateAll } from './clients.ts';
import { EMULATOR_KEYS, startEmulators, type EmulatorsApi, type ProviderName } from './emulators.ts';
import { GatewayChild } from './gateway.ts';
import { loadMark, otherLoadPct } from './load.ts';
import { ALL_PROVIDERS, Ctx, REFERENCE, SCENARIOS, scenario, type ScenarioName } from './scenarios.ts';
import { fmt, fmtSigned, percentile, table } from './stats.ts';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const API_KEY = 'bench-key';
const API_SECRET = 'bench-secret-0123456789abcdef0123456789abcdef';
const SAMPLE_RATE = 24000;

// ---- options -----------------------------------------------------------------------------

const HELP = `usage: npm run bench:tts -- [options]
  --providers cartesia,deepgram,elevenlabs,openai
  --n 20                 measured generations per scenario
  --warmup 3             unreported generations before each scenario's measured ones
  --gap-ms 250           pause between generations (a reused socket sits idle this long)
  --prewarm-ms 200       gateway-prewarmed: wait between session.create and the text
  --connect-delay-ms 0   emulated handshake time of every provider WebSocket upgrade (TCP + TLS
                         round trips that loopback does not have); 0 = plain loopback. OpenAI
                         (HTTP) has no such knob.
  --first-audio cartesia=150,deepgram=200,elevenlabs=75,openai=300
                         provider model latency (emulator firstAudioDelayMs), ms
  --speed 10             emulator generation speed, x real time (OpenAI: 5, its realistic pace)
  --text "..."           the one sentence every generation speaks
  --json FILE            also write every sample as JSON
  --log-level warn       gateway LOG_LEVEL
`;

const { values: args } = parseArgs({
  options: {
    providers: { type: 'string', default: 'cartesia,deepgram,elevenlabs,openai' },
    n: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    'gap-ms': { type: 'string', default: '250' },
    'prewarm-ms': { type: 'string', default: '200' },
    'connect-delay-ms': { type: 'string', default: '0' },
    'first-audio': { type: 'string', default: 'cartesia=150,deepgram=200,elevenlabs=75,openai=300' },
    speed: { type: 'string', default: '10' },
    text: { type: 'string', default: 'Hello! How can I help you today? ' },
    json: { type: 'string' },
    'log-level': { type: 'string', default: 'warn' },
    help: { type: 'boolean', default: false },
  },
});

if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

function num(s: string, what: string, min: number, integer = false): number {
  const x = Number(s);
  if (!Number.isFinite(x) || x < min || (integer && !Number.isInteger(x))) throw new Error(`--${what}: expected ${integer ? 'an integer' : 'a number'} >= ${min}, got "${s}"`);
  return x;
}

const N = num(args.n, 'n', 1, true);
const WARMUP = num(args.warmup, 'warmup', 0, true);
const GAP_MS = num(args['gap-ms'], 'gap-ms', 0);
const PREWARM_MS = num(args['prewarm-ms'], 'prewarm-ms', 0);
const CONNECT_DELAY_MS = num(args['connect-delay-ms'], 'connect-delay-ms', 0);
const SPEED = num(args.speed, 'speed', 0.1);
const TEXT = args.text;
if (TEXT.trim() === '') throw new Error('--text: must not be blank');

const FIRST_AUDIO: Record<ProviderName, number> = { cartesia: 150, deepgram: 200, elevenlabs: 75, openai: 300 };
for (const part of args['first-audio'].split(',')) {
  const [k, v] = part.split('=');
  if (!k || !(k in FIRST_AUDIO) || v === undefined) throw new Error(`--first-audio: expected provider=ms, got "${part}"`);
  FIRST_AUDIO[k as ProviderName] = num(v, 'first-audio', 0);
}

const PROVIDERS = args.providers.split(',').map((p) => {
  const spec = ALL_PROVIDERS.find((x) => x.name === p.trim());
  if (!spec) throw new Error(`--providers: unknown "${p}"; known: ${ALL_PROVIDERS.map((x) => x.name).join(', ')}`);
  return spec;
});

// ---- lifecycle ---------------------------------------------------------------------------

let emulators: EmulatorsApi | null = null;
let gwPooled: GatewayChild | null = null;
let gwNoPool: GatewayChild | null = null;
const agents = new Set<http.Agent>();
let tmpDir: string | null = null;
let stopping = false;

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${line}\n`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function cleanup(): Promise<void> {
  terminateAll();
  for (const a of agents) a.destroy();
  agents.clear();
  await Promise.allSettled([gwPooled?.stop(), gwNoPool?.stop(), emulators?.close()]);
  gwPooled = null;
  gwNoPool = null;
  emulators = null;
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
  tmpDir = null;
}

function killAll(): void {
  terminateAll();
  gwPooled?.kill();
  gwNoPool?.kill();
  emulators?.kill();
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
}

process.on('SIGINT', () => {
  if (stopping) {
    killAll();
    process.exit(130);
  }
  stopping = true;
  log('SIGINT: closing sockets, gateways and emulators (again to force)');
  void cleanup().finally(() => process.exit(130));
});
// Last resort: whatever way this process ends, no child outlives it.
process.on('exit', () => killAll());

// ---- running -----------------------------------------------------------------------------

interface Result {
  provider: ProviderName;
  scenario: ScenarioName;
  ttfaMs: number[];
  totalMs: number[];
  connectMs: number[];
  /** upstream connections the emulator accepted during the measured generations (null: unknown) */
  upstreamConns: number | null;
  errors: string[];
  gatewayWarnings: number;
  /** CPU used by processes outside the bench while the scenario ran, % of one core */
  otherLoadPct: number;
}

async function runScenario(c: Ctx, name: ScenarioName): Promise<Result> {
  const emu = emulators as EmulatorsApi;
  const res: Result = { provider: c.spec.name, scenario: name, ttfaMs: [], totalMs: [], connectMs: [], upstreamConns: null, errors: [], gatewayWarnings: 0, otherLoadPct: NaN };
  const pids = [emu.pid, gwPooled?.pid ?? -1, gwNoPool?.pid ?? -1];
  const load0 = loadMark(pids);
  const warnBefore = (gwPooled?.warnings ?? 0) + (gwNoPool?.warnings ?? 0);
  const s = scenario(name, c, {
    pooled: gwPooled as GatewayChild,
    noPool: gwNoPool as GatewayChild,
    gapMs: GAP_MS,
    prewarmMs: PREWARM_MS,
    agents,
  });
  try {
    await s.setup();
    await sleep(GAP_MS);
    let before: number | null = null;
    for (let i = 0; i < WARMUP + N && !stopping; i++) {
      if (i === WARMUP) before = (await emu.counts())[c.spec.name];
      try {
        const r = await s.rep();
        if (i >= WARMUP) {
          res.ttfaMs.push(r.ttfaMs);
          res.totalMs.push(r.totalMs);
          res.connectMs.push(r.connectMs);
        }
      } catch (err) {
        res.errors.push(err instanceof Error ? err.message : String(err));
        if (res.errors.length >= 5) throw new Error('too many errors; scenario abandoned');
      }
      await sleep(GAP_MS);
    }
    const after = (await emu.counts())[c.spec.name];
    res.upstreamConns = before === null || after === null ? null : after - before;
  } catch (err) {
    res.errors.push(err instanceof Error ? err.message : String(err));
  } finally {
    await s.teardown().catch(() => {});
  }
  res.gatewayWarnings = (gwPooled?.warnings ?? 0) + (gwNoPool?.warnings ?? 0) - warnBefore;
  res.otherLoadPct = otherLoadPct(load0, loadMark(pids));
  log(
    `${c.spec.name} ${name}: n ${res.ttfaMs.length}, TTFA p50 ${fmt(percentile(res.ttfaMs, 0.5))} p90 ${fmt(percentile(res.ttfaMs, 0.9))} ms, ` +
      `upstream conns ${res.upstreamConns ?? '-'}, other load ${fmt(res.otherLoadPct, 0)}%${res.errors.length ? `, errors: ${res.errors.slice(0, 2).join('; ')}` : ''}`,
  );
  return res;
}

// ---- report ------------------------------------------------------------------------------

function report(results: Result[]): string {
  const find = (p: ProviderName, s: ScenarioName | undefined): Result | undefined => results.find((r) => r.provider === p && r.scenario === s);
  const rows = results.map((r) => {
    const ref = find(r.provider, REFERENCE[r.scenario]);
    const p50 = percentile(r.ttfaMs, 0.5);
    const p90 = percentile(r.ttfaMs, 0.9);
    return [
      r.provider,
      r.scenario,
      String(r.ttfaMs.length),
      fmt(p50),
      fmt(p90),
      ref ? ref.scenario : '',
      ref ? fmtSigned(p50 - percentile(ref.ttfaMs, 0.5)) : '',
      ref ? fmtSigned(p90 - percentile(ref.ttfaMs, 0.9)) : '',
      fmt(percentile(r.connectMs, 0.5)),
      r.upstreamConns === null ? '-' : String(r.upstreamConns),
      String(r.errors.length + r.gatewayWarnings),
      fmt(r.otherLoadPct, 0),
    ];
  });
  return table(
    ['provider', 'scenario', 'n', 'TTFA p50', 'p90', 'vs', 'added p50', 'added p90', 'connect p50', 'upstream conns', 'errors', 'other load %'],
    rows,
  );
}

function describeMachine(): string {
  const cpus = os.cpus();
  return `${cpus.length} x ${cpus[0]?.model.trim() ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, node ${process.version}`;
}

async function main(): Promise<void> {
  const started = performance.now();
  log(`machine: ${describeMachine()}`);
  emulators = await startEmulators({ firstAudioMs: FIRST_AUDIO, speed: SPEED, openAiRealtimeFactor: 5, connectDelayMs: CONNECT_DELAY_MS });
  const ports = emulators.ports;
  tmpDir = mkdtempSync(join(os.tmpdir(), 'tts-ttfa-'));
  const noPoolConfig = join(tmpDir, 'no-pool.json');
  writeFileSync(noPoolConfig, JSON.stringify({ tts: { poolMaxPerKey: 0 } }));
  // A clean environment: nothing from the caller's shell (no real provider keys) reaches it.
  const env: Record<string, string> = {
    LOG_LEVEL: args['log-level'],
    LIVEKIT_API_KEY: API_KEY,
    LIVEKIT_API_SECRET: API_SECRET,
    CARTESIA_API_KEY: EMULATOR_KEYS.cartesia,
    CARTESIA_BASE_URL: `http://127.0.0.1:${ports.cartesia}`,
    DEEPGRAM_API_KEY: EMULATOR_KEYS.deepgram,
    DEEPGRAM_BASE_URL: `http://127.0.0.1:${ports.deepgram}`,
    ELEVENLABS_API_KEY: EMULATOR_KEYS.elevenlabs,
    ELEVENLABS_BASE_URL: `http://127.0.0.1:${ports.elevenlabs}`,
    OPENAI_API_KEY: EMULATOR_KEYS.openai,
    OPENAI_BASE_URL: `http://127.0.0.1:${ports.openai}/v1`,
  };
  [gwPooled, gwNoPool] = await Promise.all([
    GatewayChild.start({ label: 'gateway (pooled)', repoRoot: REPO_ROOT, env }),
    GatewayChild.start({ label: 'gateway (no pool)', repoRoot: REPO_ROOT, env: { ...env, GATEWAY_CONFIG: noPoolConfig } }),
  ]);
  log(`emulators pid ${emulators.pid} (ports ${JSON.stringify(ports)}); gateway pooled pid ${gwPooled.pid} :${gwPooled.port}, no-pool pid ${gwNoPool.pid} :${gwNoPool.port}`);
  const token = await mintToken({ key: API_KEY, secret: API_SECRET, ttlS: 3600 });

  const results: Result[] = [];
  for (const spec of PROVIDERS) {
    const c = new Ctx(spec, { token, port: ports[spec.name], text: TEXT, sampleRate: SAMPLE_RATE });
    for (const name of SCENARIOS) {
      if (stopping) return;
      results.push(await runScenario(c, name));
    }
  }
  const runtimeS = (performance.now() - started) / 1000;
  const warnings = [...(gwPooled?.lastWarnings ?? []), ...(gwNoPool?.lastWarnings ?? [])];
  const leftover = openCount();
  await cleanup();

  const header = [
    `bench/tts-ttfa: n = ${N} per scenario (+${WARMUP} warm-up), gap ${GAP_MS} ms, prewarm ${PREWARM_MS} ms, connect delay ${CONNECT_DELAY_MS} ms,`,
    `first audio ${Object.entries(FIRST_AUDIO).map(([k, v]) => `${k} ${v}`).join(', ')} ms, speed ${SPEED}x (openai 5x), ${SAMPLE_RATE} Hz, text ${JSON.stringify(TEXT)}`,
    `machine: ${describeMachine()}`,
    `run time: ${runtimeS.toFixed(0)} s`,
  ].join('\n');
  process.stdout.write(`\n${header}\n\nTTFA in ms; added = scenario - "vs" scenario (same percentile). connect: the client's own socket\n(to the gateway, or to the emulator for direct-cold). upstream conns: connections the emulator accepted\nduring the measured generations (OpenAI: TCP). other load: CPU of processes outside the bench, % of a core.\n\n${report(results)}\n`);
  const failed = results.filter((r) => r.errors.length > 0);
  if (failed.length > 0) {
    process.stdout.write(`\nerrors:\n${failed.map((r) => `  ${r.provider} ${r.scenario}: ${r.errors.slice(0, 3).join('; ')}`).join('\n')}\n`);
  }
  if (warnings.length > 0) process.stdout.write(`\nlast gateway warnings:\n${warnings.map((w) => `  ${w}`).join('\n')}\n`);
  if (args.json) {
    writeFileSync(args.json, `${JSON.stringify({ args, machine: describeMachine(), runtimeS, results }, null, 2)}\n`);
    log(`wrote ${args.json}`);
  }
  if (leftover > 0) log(`warning: ${leftover} client socket(s) were still open at the end (cut)`);
}

main().then(
  () => {
    if (!stopping) process.exit(0); // else the SIGINT handler is cleaning up and exits
  },
  async (err: unknown) => {
    if (stopping) return;
    log(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    await cleanup();
    process.exit(1);
  },
);
