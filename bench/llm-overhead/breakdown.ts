/**
 * bench/llm-overhead/breakdown.ts: where our gateway's per-request cost goes, by experiment (a
 * CPU profile on a 2-core machine shared by four busy processes charges descheduled time to
 * whatever was running, so its shares are only a hint). Against the same emulator child as run.ts
 * (first token 50 ms, then a piece every 5 ms):
 *
 * 1. Gateway CPU per request (from /proc) at concurrency 50, by request kind: GET /healthz (HTTP
 *    only), GET /v1/models (+ LiveKit JWT verification), chat non-stream, chat stream, and chat
 *    stream with LOG_LEVEL=info (the default; one usage log line per request) on a second gateway.
 * 2. Upstream HTTP client cost: this process POSTs the same chat requests to the emulator with
 *    Node's fetch (what the gateway's http-upstream.ts uses) and with node:http + a keep-alive
 *    Agent, and reports its own CPU per request.
 * 3. The hop itself: sequential TTFT direct, through minimal pass-through proxies (passthrough.ts:
 *    no auth, no parsing; node:http or fetch upstream) and through the gateway.
 *
 * Each measurement runs twice (a / b) so the noise shows. Prints; asserts nothing.
 *
 *   npx node bench/llm-overhead/breakdown.ts [--source worktree|head] [--n 3000] [--seq 200]
 */
import { fork, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEFAULT_OPENAI_API_KEY } from '../../test/emulators/openai-speech.ts';
import { mintToken } from '../../test/helpers/tokens.ts';
import { runPool, streamOnce, type Result, type Target } from './client.ts';
import { startEmulatorChild, type EmulatorApi } from './emulator-child.ts';
import { describeMachine } from './machine.ts';
import { startGateway, type ServerChild } from './servers.ts';
import { snapshotSource, type SourceSnapshot } from './source.ts';
import { dist, fmt, fmtSigned, table } from './stats.ts';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const API_KEY = 'bench-key';
const API_SECRET = 'bench-secret-0123456789abcdef0123456789abcdef';
const MODEL = 'gpt-4o-mini';
const WIDTH = 50;

const { values: args } = parseArgs({
  options: {
    source: { type: 'string', default: 'worktree' },
    n: { type: 'string', default: '3000' },
    seq: { type: 'string', default: '200' },
  },
});
if (args.source !== 'worktree' && args.source !== 'head') throw new Error('--source: worktree or head');
const N = Number(args.n);
const SEQ = Number(args.seq);

let emulator: EmulatorApi | null = null;
let source: SourceSnapshot | null = null;
const gateways: ServerChild[] = [];
const children: ChildProcess[] = [];

function killAll(): void {
  for (const g of gateways) g.kill();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  emulator?.kill();
  source?.remove();
}
process.on('exit', killAll);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${line}\n`);
}

const words = Array.from({ length: 18 }, (_, i) => `word${i + 1}`).join(' ');
const EXPECTED = `You said: ${words}`;
const messages = [
  { role: 'system', content: 'You are a helpful voice assistant. Answer briefly.' },
  { role: 'user', content: words },
];
const body = (model: string, stream: boolean): string =>
  JSON.stringify(stream ? { model, messages, stream: true, stream_options: { include_usage: true } } : { model, messages });

async function pool(n: number, fn: () => Promise<unknown>): Promise<void> {
  let started = 0;
  await Promise.all(
    Array.from({ length: WIDTH }, async () => {
      while (started < n) {
        started++;
        await fn();
      }
    }),
  );
}

/** Read a whole fetch answer; throw unless 200 and `must` occurs in it. */
async function drain(res: Response, must: string): Promise<void> {
  const text = await res.text();
  if (res.status !== 200 || !text.includes(must)) throw new Error(`unexpected answer ${res.status}: ${text.slice(0, 200)}`);
}

function httpPost(url: URL, agent: http.Agent, payload: string, must: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: 'POST', agent, headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${DEFAULT_OPENAI_API_KEY}`, 'Content-Length': String(Buffer.byteLength(payload)) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => (res.statusCode === 200 && text.includes(must) ? resolve() : reject(new Error(`unexpected answer ${res.statusCode}`))));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function startPassthrough(mode: 'http' | 'fetch', emu: EmulatorApi): Promise<string> {
  const child = fork(fileURLToPath(new URL('./passthrough.ts', import.meta.url)), [mode, emu.baseUrl, DEFAULT_OPENAI_API_KEY], {
    execPath: process.execPath,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.push(child);
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve(m as number));
    child.once('exit', (code) => reject(new Error(`passthrough ${mode} exited (${code})`)));
  });
  return `http://127.0.0.1:${port}/v1/chat/completions`;
}

async function main(): Promise<void> {
  const emu = await startEmulatorChild({ firstTokenDelayMs: 50, interTokenDelayMs: 5 });
  emulator = emu;
  source = snapshotSource(REPO_ROOT, args.source as 'worktree' | 'head');
  const gwOptions = { root: source.root, apiKey: API_KEY, apiSecret: API_SECRET, openAiKey: DEFAULT_OPENAI_API_KEY, openAiBaseUrl: emu.baseUrl, nodeArgs: [] };
  const gw = await startGateway({ ...gwOptions, logLevel: 'warn' });
  const gwInfo = await startGateway({ ...gwOptions, logLevel: 'info' });
  gateways.push(gw, gwInfo);
  const jwt = await mintToken({ key: API_KEY, secret: API_SECRET });
  const auth = { Authorization: `Bearer ${jwt}`, 'Content-Type': 'application/json' };
  const out: string[] = [`machine: ${describeMachine()}`, `our gateway: ${source.description}`, ''];

  // ---- 1. gateway CPU per request by kind
  const kinds: Array<[string, ServerChild, () => Promise<void>]> = [
    ['GET /healthz (no auth)', gw, async () => drain(await fetch(`${gw.url}/healthz`), 'ok')],
    ['GET /v1/models (JWT verified)', gw, async () => drain(await fetch(`${gw.url}/v1/models`, { headers: auth }), 'list')],
    ['chat, non-stream', gw, async () => drain(await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: auth, body: body(`openai/${MODEL}`, false) }), EXPECTED)],
    ['chat, stream', gw, async () => drain(await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: auth, body: body(`openai/${MODEL}`, true) }), '[DONE]')],
    ['chat, stream, LOG_LEVEL=info', gwInfo, async () => drain(await fetch(`${gwInfo.url}/v1/chat/completions`, { method: 'POST', headers: auth, body: body(`openai/${MODEL}`, true) }), '[DONE]')],
  ];
  const cpu = new Map<string, number[]>(kinds.map(([k]) => [k, []]));
  for (let rep = 0; rep < 2; rep++) {
    for (const [name, server, fn] of kinds) {
      log(`1/${rep + 1}: ${name}`);
      await pool(300, fn);
      await emu.reset();
      const c0 = server.cpuSeconds();
      await pool(N, fn);
      cpu.get(name)?.push((1e6 * (server.cpuSeconds() - c0)) / N);
    }
  }
  out.push(
    `1. Gateway CPU per request, µs (/proc, ${N} requests at concurrency ${WIDTH}, two runs a / b):`,
    '',
    table(['request', 'a', 'b'], kinds.map(([k]) => [k, ...(cpu.get(k) ?? []).map((v) => fmt(v, 0))])),
    '',
  );

  // ---- 2. upstream client: fetch vs node:http
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const chatUrl = new URL(`${emu.baseUrl}/chat/completions`);
  const upstream = { Authorization: `Bearer ${DEFAULT_OPENAI_API_KEY}`, 'Content-Type': 'application/json' };
  const clients: Array<[string, () => Promise<void>]> = [
    ['fetch, non-stream', async () => drain(await fetch(chatUrl, { method: 'POST', headers: upstream, body: body(MODEL, false) }), EXPECTED)],
    ['node:http, non-stream', () => httpPost(chatUrl, agent, body(MODEL, false), EXPECTED)],
    ['fetch, stream', async () => drain(await fetch(chatUrl, { method: 'POST', headers: upstream, body: body(MODEL, true) }), '[DONE]')],
    ['node:http, stream', () => httpPost(chatUrl, agent, body(MODEL, true), '[DONE]')],
  ];
  const own = new Map<string, number[]>(clients.map(([k]) => [k, []]));
  for (let rep = 0; rep < 2; rep++) {
    for (const [name, fn] of clients) {
      log(`2/${rep + 1}: ${name}`);
      await pool(300, fn);
      await emu.reset();
      const c0 = process.cpuUsage();
      await pool(N, fn);
      const c = process.cpuUsage(c0);
      own.get(name)?.push((c.user + c.system) / N);
    }
  }
  agent.destroy();
  out.push(
    `2. Upstream HTTP client CPU per request, µs (this process, ${N} requests to the emulator at concurrency ${WIDTH}, a / b):`,
    '',
    table(['client', 'a', 'b'], clients.map(([k]) => [k, ...(own.get(k) ?? []).map((v) => fmt(v, 0))])),
    '',
  );

  // ---- 3. the hop: sequential TTFT through minimal proxies and the gateway
  const target = (name: string, url: string, headers: Record<string, string>, model: string): Target => ({
    name: 'direct',
    url,
    headers: () => headers,
    streamBody: body(model, true),
    plainBody: body(model, false),
  });
  const hops: Array<[string, Target]> = [
    ['direct', target('direct', chatUrl.href, upstream, MODEL)],
    ['pass-through, node:http upstream', target('http', await startPassthrough('http', emu), upstream, MODEL)],
    ['pass-through, fetch upstream', target('fetch', await startPassthrough('fetch', emu), upstream, MODEL)],
    ['our gateway', target('gateway', `${gw.url}/v1/chat/completions`, auth, `openai/${MODEL}`)],
  ];
  const ttft = new Map<string, number[]>(hops.map(([k]) => [k, []]));
  for (const [, t] of hops) await runPool(20, 1, () => streamOnce(t, EXPECTED), () => false);
  log(`3: ${SEQ} sequential requests per target, blocks of 10`);
  for (let done = 0; done < SEQ; done += 10) {
    for (const [name, t] of hops) {
      const { results } = await runPool(Math.min(10, SEQ - done), 1, () => streamOnce(t, EXPECTED), () => false);
      const bad = results.find((r: Result) => !r.ok);
      if (bad) throw new Error(`${name}: ${bad.error}`);
      ttft.get(name)?.push(...results.map((r) => r.ttftMs));
    }
  }
  const base = dist(ttft.get('direct') ?? []);
  out.push(
    `3. Sequential TTFT, ms (${SEQ} streaming requests per target, interleaved in blocks of 10):`,
    '',
    table(
      ['path', 'TTFT p50', 'TTFT p99', 'added p50', 'added p99'],
      hops.map(([k]) => {
        const d = dist(ttft.get(k) ?? []);
        return [k, fmt(d.p50, 2), fmt(d.p99, 2), k === 'direct' ? '-' : fmtSigned(d.p50 - base.p50, 2), k === 'direct' ? '-' : fmtSigned(d.p99 - base.p99, 2)];
      }),
    ),
  );
  process.stdout.write(`${out.join('\n')}\n`);
}

main()
  .catch((err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await Promise.allSettled([...gateways.map((g) => g.stop()), emulator?.close()]);
    for (const c of children) c.kill();
    source?.remove();
    process.exit(process.exitCode ?? 0);
  });
