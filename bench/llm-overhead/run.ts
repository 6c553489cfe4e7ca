/**
 * bench/llm-overhead: what an LLM proxy adds to time to first token and to total time, against
 * the same requests sent directly to the OpenAI chat emulator, for our gateway and for Portkey's
 * open-source gateway (@portkey-ai/gateway), in one run.
 *
 *   npm run bench:llm [-- --seq 200 --plain 100 --conc 50,200 --n 1000 ...]   (--help)
 *
 * Processes: this one (the load generator), the emulator (child, fixed timing), our gateway
 * (`node src/main.ts`, child) and Portkey (child). Every target gets the same client code and
 * the same answer from the emulator, so a difference between targets is the proxy's doing.
 * breakdown.ts splits the gateway's own cost (JWT, upstream client, the hop, logging) by experiment.
 * Method and numbers: docs/perf.md. A script, not a test: it asserts nothing about time.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEFAULT_OPENAI_API_KEY } from '../../test/emulators/openai-speech.ts';
import { mintToken } from '../../test/helpers/tokens.ts';
import { plainOnce, runPool, streamOnce, type Target, type TargetName } from './client.ts';
import { startEmulatorChild, type EmulatorApi, type EmulatorTiming } from './emulator-child.ts';
import { describeMachine, machineBusySeconds } from './machine.ts';
import { newCell, report, rowsOf, type Cell, type Row, type Scenario } from './report.ts';
import { PORTKEY_SCRIPT, portkeyInstalled, startGateway, startPortkey, type ServerChild } from './servers.ts';
import { snapshotSource, type SourceSnapshot } from './source.ts';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const API_KEY = 'bench-key';
const API_SECRET = 'bench-secret-0123456789abcdef0123456789abcdef';
const MODEL = 'gpt-4o-mini';

// ---- options -----------------------------------------------------------------------------

const HELP = `usage: npm run bench:llm -- [options]
  --seq 200                sequential streaming requests per target (0: skip)
  --plain 100              sequential non-streaming requests per target (0: skip)
  --conc 50,200            concurrency levels of the streaming load scenarios (comma list; "" to skip)
  --n 1000                 requests per target in each concurrency scenario
  --rounds 2               each concurrency scenario runs the targets in this many alternating blocks
                           (A B C, then B C A, ...) so slow drift of the machine hits them alike
  --seq-rounds 10          the same for the sequential scenarios
  --warmup 100             unreported requests per target at start (concurrency 10); every block is
                           also preceded by max(3, concurrency) unreported requests
  --targets direct,gateway,portkey
  --first-token-ms 50      emulator: first chunk this long after the request
  --inter-token-ms 5       emulator: then one piece every this many ms
  --words 18               words in the user message; the answer is "You said: <words>" (words + 2 pieces)
  --log-level warn         our gateway's LOG_LEVEL
  --source worktree        our gateway's code: worktree (src/ as on disk) | head (git HEAD); copied once at start
  --portkey-node-env ""    NODE_ENV for Portkey (default unset, as \`npx @portkey-ai/gateway\` runs it)
  --portkey-shim on        on: preload portkey-shim.ts, the workaround without which Portkey 1.15.2 with
                           @hono/node-server > 1.14.2 answers 500 to every streaming request
                           (Portkey-AI/gateway#1389); off: run Portkey as installed
  --max-other-load 40      CPU used by other processes (% of one core, over 0.5 s) above which a block
                           waits for quiet first (bounded by --quiet-wait)
  --quiet-wait 20          at most this many seconds of waiting for quiet before a block
  --gateway-node-args=S    extra node flags for our gateway, e.g. --gateway-node-args="--cpu-prof --cpu-prof-dir=/tmp/p"
  --portkey-node-args=S    extra node flags for Portkey
  --json FILE              also write every measurement as JSON
`;

const { values: args } = parseArgs({
  options: {
    seq: { type: 'string', default: '200' },
    plain: { type: 'string', default: '100' },
    conc: { type: 'string', default: '50,200' },
    n: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '2' },
    'seq-rounds': { type: 'string', default: '10' },
    warmup: { type: 'string', default: '100' },
    targets: { type: 'string', default: 'direct,gateway,portkey' },
    'first-token-ms': { type: 'string', default: '50' },
    'inter-token-ms': { type: 'string', default: '5' },
    words: { type: 'string', default: '18' },
    'log-level': { type: 'string', default: 'warn' },
    source: { type: 'string', default: 'worktree' },
    'portkey-node-env': { type: 'string', default: '' },
    'portkey-shim': { type: 'string', default: 'on' },
    'max-other-load': { type: 'string', default: '40' },
    'quiet-wait': { type: 'string', default: '20' },
    'gateway-node-args': { type: 'string' },
    'portkey-node-args': { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});

if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

function int(s: string, what: string, min: number): number {
  const x = Number(s);
  if (!Number.isInteger(x) || x < min) throw new Error(`--${what}: expected an integer >= ${min}, got "${s}"`);
  return x;
}

const SEQ = int(args.seq, 'seq', 0);
const PLAIN = int(args.plain, 'plain', 0);
const CONC = args.conc.trim() === '' ? [] : args.conc.split(',').map((c) => int(c.trim(), 'conc', 1));
const N = int(args.n, 'n', 1);
const ROUNDS = int(args.rounds, 'rounds', 1);
const SEQ_ROUNDS = int(args['seq-rounds'], 'seq-rounds', 1);
const WARMUP = int(args.warmup, 'warmup', 0);
const FIRST_MS = int(args['first-token-ms'], 'first-token-ms', 0);
const INTER_MS = int(args['inter-token-ms'], 'inter-token-ms', 0);
const WORDS = int(args.words, 'words', 1);
const MAX_OTHER = Number(args['max-other-load']);
const QUIET_WAIT_S = Number(args['quiet-wait']);
const ALL_TARGETS: TargetName[] = ['direct', 'gateway', 'portkey'];
const TARGETS = args.targets.split(',').map((t) => t.trim()) as TargetName[];
if (TARGETS.length === 0 || TARGETS.some((t) => !ALL_TARGETS.includes(t))) throw new Error(`--targets: some of ${ALL_TARGETS.join(',')}`);
if (!TARGETS.includes('direct')) throw new Error('--targets: "direct" is the reference and must be included');
if (args.source !== 'worktree' && args.source !== 'head') throw new Error('--source: worktree or head');
if (args['portkey-shim'] !== 'on' && args['portkey-shim'] !== 'off') throw new Error('--portkey-shim: on or off');
const GATEWAY_NODE_ARGS = (args['gateway-node-args'] ?? '').split(/\s+/).filter(Boolean);
const PORTKEY_NODE_ARGS = (args['portkey-node-args'] ?? '').split(/\s+/).filter(Boolean);

// ---- lifecycle ---------------------------------------------------------------------------

let emulator: EmulatorApi | null = null;
let source: SourceSnapshot | null = null;
const servers = new Map<TargetName, ServerChild>();
let stopping = false;

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${line}\n`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function cleanup(): Promise<void> {
  await Promise.allSettled([...[...servers.values()].map((s) => s.stop()), emulator?.close()]);
  servers.clear();
  emulator = null;
  source?.remove();
  source = null;
}

function killAll(): void {
  for (const s of servers.values()) s.kill();
  emulator?.kill();
  source?.remove();
}

process.on('SIGINT', () => {
  if (stopping) {
    killAll();
    process.exit(130);
  }
  stopping = true;
  log('SIGINT: stopping the children (again to force)');
  void cleanup().finally(() => process.exit(130));
});
process.on('SIGTERM', () => {
  stopping = true;
  void cleanup().finally(() => process.exit(143));
});
// Last resort: whatever happens, no child outlives us (exit handlers must be synchronous).
process.on('exit', killAll);

// ---- targets -----------------------------------------------------------------------------

const userText = Array.from({ length: WORDS }, (_, i) => `word${i + 1}`).join(' ');
const EXPECTED = `You said: ${userText}`;
const MESSAGES = [
  { role: 'system', content: 'You are a helpful voice assistant. Answer briefly.' },
  { role: 'user', content: userText },
];

function bodies(model: string): { streamBody: string; plainBody: string } {
  return {
    streamBody: JSON.stringify({ model, messages: MESSAGES, stream: true, stream_options: { include_usage: true } }),
    plainBody: JSON.stringify({ model, messages: MESSAGES }),
  };
}

let jwt = '';
async function refreshToken(): Promise<void> {
  // A fresh client token before every block (ttl 600 s, like the LiveKit client's).
  jwt = await mintToken({ key: API_KEY, secret: API_SECRET });
}

function makeTargets(emu: EmulatorApi): Map<TargetName, Target> {
  const out = new Map<TargetName, Target>();
  const json = { 'Content-Type': 'application/json' };
  out.set('direct', {
    name: 'direct',
    url: `${emu.baseUrl}/chat/completions`,
    headers: () => ({ ...json, Authorization: `Bearer ${DEFAULT_OPENAI_API_KEY}` }),
    ...bodies(MODEL),
  });
  const gw = servers.get('gateway');
  if (gw) {
    out.set('gateway', {
      name: 'gateway',
      url: `${gw.url}/v1/chat/completions`,
      headers: () => ({ ...json, Authorization: `Bearer ${jwt}` }),
      ...bodies(`openai/${MODEL}`),
    });
  }
  const pk = servers.get('portkey');
  if (pk) {
    out.set('portkey', {
      name: 'portkey',
      url: `${pk.url}/v1/chat/completions`,
      headers: () => ({
        ...json,
        Authorization: `Bearer ${DEFAULT_OPENAI_API_KEY}`,
        'x-portkey-provider': 'openai',
        'x-portkey-custom-host': emu.baseUrl,
      }),
      ...bodies(MODEL),
    });
  }
  return out;
}

// ---- CPU accounting ----------------------------------------------------------------------

interface Marks {
  wall: number;
  proxyCpuS: number;
  emuCpuS: number;
  clientCpuS: number;
  machineBusyS: number;
}

async function marks(proxy: ServerChild | undefined): Promise<Marks> {
  const emuUs = await (emulator as EmulatorApi).cpuMicros();
  const c = process.cpuUsage();
  return {
    wall: performance.now(),
    proxyCpuS: proxy ? proxy.cpuSeconds() : 0,
    emuCpuS: emuUs / 1e6,
    clientCpuS: (c.user + c.system) / 1e6,
    machineBusyS: machineBusySeconds(),
  };
}

/** CPU-seconds used by processes other than ours between two marks (all children counted). */
function otherCpuS(a: Marks, b: Marks, idleChildrenS: number): number {
  const ours = b.proxyCpuS - a.proxyCpuS + b.emuCpuS - a.emuCpuS + b.clientCpuS - a.clientCpuS + idleChildrenS;
  return Math.max(0, b.machineBusyS - a.machineBusyS - ours);
}

/** CPU-seconds of all proxies now (those idle during a block are counted as ours, not as other load). */
function allProxiesCpuS(): number {
  let s = 0;
  for (const p of servers.values()) s += p.cpuSeconds();
  return s;
}

/** Wait (bounded) until other processes use at most MAX_OTHER % of a core over 0.5 s. */
async function waitQuiet(label: string): Promise<number> {
  const until = performance.now() + QUIET_WAIT_S * 1000;
  let said = false;
  for (;;) {
    const a = await marks(undefined);
    const p0 = allProxiesCpuS();
    await sleep(500);
    const b = await marks(undefined);
    const other = (100 * otherCpuS(a, b, allProxiesCpuS() - p0)) / ((b.wall - a.wall) / 1000);
    if (other <= MAX_OTHER || stopping) return other;
    if (performance.now() > until) {
      log(`${label}: machine still busy (other processes ${other.toFixed(0)}% of a core) after ${QUIET_WAIT_S} s; running anyway`);
      return other;
    }
    if (!said) log(`${label}: waiting for quiet (other processes use ${other.toFixed(0)}% of a core)`);
    said = true;
  }
}

// ---- scenarios ---------------------------------------------------------------------------

function split(n: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(n / parts) + (i < n % parts ? 1 : 0));
}

async function runBlock(s: Scenario, target: Target, n: number, cell: Cell): Promise<void> {
  const emu = emulator as EmulatorApi;
  const proxy = servers.get(target.name);
  const call = s.stream ? () => streamOnce(target, EXPECTED) : () => plainOnce(target, EXPECTED);
  await refreshToken();
  await waitQuiet(`${s.id} ${target.name}`);
  // Unreported: open (or re-open) every connection of the client and of the proxy's upstream pool.
  await runPool(Math.max(3, s.width), s.width, call, () => stopping);
  await emu.reset();
  const p0 = allProxiesCpuS();
  const m0 = await marks(proxy);
  const { results, wallMs } = await runPool(n, s.width, call, () => stopping);
  const m1 = await marks(proxy);
  const p1 = allProxiesCpuS();
  const stats = await emu.stats();
  const proxyCpu = m1.proxyCpuS - m0.proxyCpuS;
  cell.results.push(...results);
  cell.wallMs += wallMs;
  cell.proxyCpuS += proxyCpu;
  cell.emuCpuS += m1.emuCpuS - m0.emuCpuS;
  cell.clientCpuS += m1.clientCpuS - m0.clientCpuS;
  const other = (100 * otherCpuS(m0, m1, p1 - p0 - proxyCpu)) / ((m1.wall - m0.wall) / 1000);
  cell.otherPeakPct = Math.max(cell.otherPeakPct, other);
  cell.peakInFlight = Math.max(cell.peakInFlight, stats.peakInFlight);
  for (const [k, v] of Object.entries(stats.outcomes)) cell.emuOutcomes[k] = (cell.emuOutcomes[k] ?? 0) + v;
  for (const r of results) if (!r.ok) cell.errors.set(r.error ?? '?', (cell.errors.get(r.error ?? '?') ?? 0) + 1);
  if (s.width === 1) {
    // One request at a time: the i-th completed record at the emulator is the i-th request.
    const timeline = await emu.timeline();
    // A block with a failed request is left out of this table (the order could not be trusted).
    if (timeline.length !== results.length || results.some((r) => !r.ok)) return;
    results.forEach((r, i) => {
      const e = timeline[i] as EmulatorTiming;
      cell.reqLeg.push(e.arrive - r.startMono);
      if (s.stream) cell.firstLeg.push(r.startMono + r.ttftMs - e.firstToken);
      cell.endLeg.push(r.startMono + r.totalMs - e.end);
    });
  }
}

async function runScenario(s: Scenario, targets: Map<TargetName, Target>): Promise<Map<TargetName, Cell>> {
  const cells = new Map<TargetName, Cell>([...targets.keys()].map((t) => [t, newCell()]));
  const names = [...targets.keys()];
  const sizes = split(s.n, s.rounds);
  for (let r = 0; r < s.rounds && !stopping; r++) {
    const order = [...names.slice(r % names.length), ...names.slice(0, r % names.length)];
    for (const name of order) {
      if (stopping) break;
      await runBlock(s, targets.get(name) as Target, sizes[r] as number, cells.get(name) as Cell);
    }
    const done = sizes.slice(0, r + 1).reduce((a, b) => a + b, 0);
    if (s.rounds <= 4 || r === s.rounds - 1 || r % 5 === 4) log(`${s.id}: ${done}/${s.n} per target`);
  }
  return cells;
}

// ---- main --------------------------------------------------------------------------------

function depVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(`${REPO_ROOT}node_modules/${name}/package.json`, 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

const portkeyVersion = (): string => depVersion('@portkey-ai/gateway');

async function main(): Promise<void> {
  if (TARGETS.includes('portkey') && !portkeyInstalled(REPO_ROOT)) {
    throw new Error(`Portkey is not installed (${PORTKEY_SCRIPT} missing): run npm install, or pass --targets direct,gateway`);
  }
  log(`starting the emulator (first token ${FIRST_MS} ms, then a piece every ${INTER_MS} ms)`);
  emulator = await startEmulatorChild({ firstTokenDelayMs: FIRST_MS, interTokenDelayMs: INTER_MS });
  if (TARGETS.includes('gateway')) {
    source = snapshotSource(REPO_ROOT, args.source as 'worktree' | 'head');
    servers.set(
      'gateway',
      await startGateway({
        root: source.root,
        apiKey: API_KEY,
        apiSecret: API_SECRET,
        openAiKey: DEFAULT_OPENAI_API_KEY,
        openAiBaseUrl: emulator.baseUrl,
        logLevel: args['log-level'],
        nodeArgs: GATEWAY_NODE_ARGS,
      }),
    );
  }
  if (TARGETS.includes('portkey')) {
    servers.set('portkey', await startPortkey({ repoRoot: REPO_ROOT, nodeArgs: PORTKEY_NODE_ARGS, nodeEnv: args['portkey-node-env'], shim: args['portkey-shim'] === 'on' }));
  }
  log(`children: emulator pid ${emulator.pid}${[...servers].map(([n, s]) => `, ${n} pid ${s.pid} port ${s.port}`).join('')}`);
  const targets = makeTargets(emulator);

  // Every target must give the expected answer before anything is measured.
  await refreshToken();
  for (const t of targets.values()) {
    for (const r of [await streamOnce(t, EXPECTED), await plainOnce(t, EXPECTED)]) {
      if (!r.ok) {
        const logs = servers.get(t.name)?.firstWarnings.join('\n') ?? '';
        throw new Error(`${t.name}: the check request failed: ${r.error}${logs ? `\n${t.name} said:\n${logs}` : ''}`);
      }
    }
  }
  if (WARMUP > 0) {
    log(`warm-up: ${WARMUP} streaming requests per target`);
    for (const t of targets.values()) await runPool(WARMUP, 10, () => streamOnce(t, EXPECTED), () => stopping);
  }

  const scenarios: Scenario[] = [];
  if (SEQ > 0) scenarios.push({ id: 'seq', label: 'sequential, stream', stream: true, width: 1, n: SEQ, rounds: Math.min(SEQ_ROUNDS, SEQ) });
  if (PLAIN > 0) scenarios.push({ id: 'seq-plain', label: 'sequential, non-stream', stream: false, width: 1, n: PLAIN, rounds: Math.min(SEQ_ROUNDS, PLAIN) });
  for (const c of CONC) scenarios.push({ id: `c${c}`, label: `concurrency ${c}, stream`, stream: true, width: c, n: N, rounds: Math.min(ROUNDS, N) });

  const all: Row[][] = [];
  for (const s of scenarios) {
    if (stopping) break;
    log(`${s.id}: ${s.n} requests per target, ${s.width} in flight, ${s.rounds} block(s) per target`);
    all.push(rowsOf(s, await runScenario(s, targets)));
  }
  if (stopping) return;

  const warnings = [...servers].filter(([, s]) => s.warnings > 0).map(([n, s]) => `${n}: ${s.warnings} warning/error line(s), last: ${s.lastWarnings.join(' | ')}`);
  const header = [
    `machine: ${describeMachine()}`,
    `our gateway: ${source?.description ?? 'not run'}, LOG_LEVEL=${args['log-level']}`,
    `portkey: @portkey-ai/gateway ${portkeyVersion()} with @hono/node-server ${depVersion('@hono/node-server')}, --headless` +
      `${args['portkey-node-env'] ? `, NODE_ENV=${args['portkey-node-env']}` : ''}${args['portkey-shim'] === 'on' ? ', portkey-shim.ts preloaded (Portkey-AI/gateway#1389)' : ''}`,
    `emulator: OpenAI chat, first chunk ${FIRST_MS} ms after the request, then ${WORDS + 1} more pieces every ${INTER_MS} ms ` +
      `(${WORDS + 2} content chunks + role, finish and usage chunks, [DONE]; floor for total = ${FIRST_MS + (WORDS + 1) * INTER_MS} ms); no rate limit`,
    `client: Node fetch + minimal SSE reader; warm-up ${WARMUP}/target; blocks alternate the target order`,
    ...(warnings.length > 0 ? ['', 'Proxy log output:', ...warnings] : []),
  ];
  const text = report(all, header);
  process.stdout.write(`${text}\n`);

  if (args.json) {
    const json = {
      machine: describeMachine(),
      source: source?.description,
      portkey: portkeyVersion(),
      options: args,
      scenarios: all.map((rows) =>
        rows.map((r) => ({
          scenario: r.scenario,
          target: r.target,
          ok: r.ok,
          requests: r.cell.results.length,
          ttft: r.ttft,
          total: r.total,
          wallMs: r.cell.wallMs,
          cpuS: { proxy: r.cell.proxyCpuS, emulator: r.cell.emuCpuS, client: r.cell.clientCpuS },
          otherPeakPct: r.cell.otherPeakPct,
          peakInFlight: r.cell.peakInFlight,
          emulatorOutcomes: r.cell.emuOutcomes,
          errors: Object.fromEntries(r.cell.errors),
          ttftMs: r.cell.results.map((x) => x.ttftMs),
          totalMs: r.cell.results.map((x) => x.totalMs),
        })),
      ),
    };
    writeFileSync(args.json, JSON.stringify(json));
    log(`wrote ${args.json}`);
  }
}

main()
  .catch((err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await cleanup();
    process.exit(process.exitCode ?? 0);
  });
