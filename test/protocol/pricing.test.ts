/**
 * Cost end to end (docs/pricing.md): the real gateway in front of provider emulators prices
 * exactly what it meters (STT audio forwarded, TTS characters sent, LLM usage-chunk tokens),
 * refuses new work once an API key's budget is spent (429 JSON at the upgrade and the LLM
 * entry), and will not start with a routed model that has no price.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDeepgramEmulator, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../emulators/openai-chat.ts';
import { startOpenAiSpeechEmulator, type OpenAiSpeechEmulator } from '../emulators/openai-speech.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { BYTES_PER_SECOND, sendBinary, settle, startSession, waitUntil } from '../helpers/stt.ts';
import { bearer, mintToken } from '../helpers/tokens.ts';
import { closeAllTtsClients, startTts, transcript } from '../helpers/tts.ts';
import { openWs } from '../helpers/ws.ts';

let dg: DeepgramEmulator;
let speech: OpenAiSpeechEmulator;
let chat: OpenAiChatEmulator;
let env: Record<string, string>;

beforeAll(async () => {
  dg = await startDeepgramEmulator();
  // Real-time audio so an HTTP TTS request is still playing when the client leaves.
  speech = await startOpenAiSpeechEmulator({ realtimeFactor: 1 });
  chat = await startOpenAiChatEmulator({ cachedTokens: 4 });
  env = {
    DEEPGRAM_API_KEY: 'dg-test-key',
    DEEPGRAM_BASE_URL: dg.url,
    OPENAI_API_KEY: 'sk-test-key',
    OPENAI_BASE_URL: `${speech.url}/v1`,
  };
});

afterAll(async () => {
  await Promise.all([dg?.close(), speech?.close(), chat?.close()]);
});

const costOf = (m: string, modality: string, provider: string, model: string): number =>
  metricValue(m, 'gateway_cost_usd_total', { modality, provider, model, api_key: TEST_KEY }) ?? 0;

describe('exact cost from metered quantities', () => {
  let gw: TestGateway;
  let llmGw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ env });
    llmGw = await startTestGateway({ env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${chat.url}/v1` } });
  });
  afterAll(async () => {
    closeAllTtsClients();
    await gw?.close();
    await llmGw?.close();
  });

  it('STT: exactly 12.34 s of audio -> 12.34 s billed and 12.34/60 x the nova-3 price, on the metric and the usage record', async () => {
    const n = dg.connections.length;
    const { rec, id } = await startSession(gw, { model: 'deepgram/nova-3' });
    const conn = await dg.waitForConnection(n + 1);
    const bytes = Math.round(12.34 * BYTES_PER_SECOND);
    expect(bytes / BYTES_PER_SECOND).toBe(12.34);
    sendBinary(rec, Buffer.alloc(bytes));
    await waitUntil(() => conn.audioBytes === bytes, 'all audio forwarded');
    rec.send({ type: 'session.close' });
    await rec.closed();
    await settle(gw);
    const usage = gw.usage.records.find((r) => r.sessionId === id);
    const expected = (12.34 / 60) * 0.0077;
    expect(usage?.audioSeconds).toBe(12.34);
    expect(usage?.costUsd).toBeCloseTo(expected, 12);
    const m = await gw.metricsText();
    expect(metricValue(m, 'gateway_stt_audio_seconds_total', { provider: 'deepgram', model: 'nova-3', api_key: TEST_KEY })).toBeCloseTo(12.34, 9);
    expect(costOf(m, 'stt', 'deepgram', 'nova-3')).toBeCloseTo(expected, 12);
  });

  it('TTS: an interrupted generation bills only the characters sent to the provider', async () => {
    const before = costOf(await gw.metricsText(), 'tts', 'openai', 'tts-1');
    const n = speech.requests.length;
    const { rec, id } = await startTts(gw, { model: 'openai/tts-1:alloy' });
    const chunks = ['The first sentence is sent at once. ', 'The second one is fetched ahead. ', 'The third one waits its turn and never goes out. '];
    for (const c of chunks) rec.send(transcript(c));
    // Two requests in flight (one playing, one fetched ahead); the third is still queued.
    await speech.waitForRequest(n + 2);
    await rec.next('output_audio', 5000);
    rec.ws.terminate();
    await waitUntil(() => gw.usage.records.some((r) => r.sessionId === id), 'usage record');
    const sent = speech.requests.slice(n);
    const sentChars = sent.reduce((s, r) => s + r.chars, 0);
    expect(sent.map((r) => r.text)).toEqual(chunks.slice(0, 2));
    const usage = gw.usage.records.find((r) => r.sessionId === id);
    expect(usage).toMatchObject({ modality: 'tts', provider: 'openai', model: 'tts-1', characters: sentChars });
    expect(sentChars).toBeLessThan(chunks.join('').length);
    expect(usage?.costUsd).toBeCloseTo(sentChars * (15 / 1e6), 12);
    expect(costOf(await gw.metricsText(), 'tts', 'openai', 'tts-1') - before).toBeCloseTo(sentChars * (15 / 1e6), 12);
  });

  it('LLM: tokens from the usage chunk (cached at the cached rate) -> cost on the metric and the usage record', async () => {
    const client = new OpenAI({ apiKey: await mintToken({ key: TEST_KEY, secret: TEST_SECRET }), baseURL: llmGw.baseUrl, maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: 'openai/gpt-4.1-mini',
      messages: [{ role: 'user', content: 'price this please' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    if (!usage) throw new Error('no usage chunk');
    const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
    expect(cached).toBe(4);
    const expected = ((usage.prompt_tokens - cached) * 0.4 + cached * 0.1 + usage.completion_tokens * 1.6) / 1e6;
    await waitUntil(() => llmGw.usage.records.some((r) => r.modality === 'llm'), 'usage record');
    const record = llmGw.usage.records.find((r) => r.modality === 'llm');
    expect(record?.tokens).toEqual({ prompt: usage.prompt_tokens, completion: usage.completion_tokens, cached, estimated: false });
    expect(record?.costUsd).toBeCloseTo(expected, 15);
    expect(costOf(await llmGw.metricsText(), 'llm', 'openai', 'gpt-4.1-mini')).toBeCloseTo(expected, 15);
  });
});

describe('budgets', () => {
  it('at the hard limit, new LLM calls and STT/TTS sessions get 429 with a JSON body; the warning metric is up', async () => {
    const gw = await startTestGateway({
      env: { ...env, OPENAI_BASE_URL: `${chat.url}/v1` },
      file: { budgets: { keys: { [TEST_KEY]: { dailyUsd: 0.000001, monthlyUsd: 100 } } } },
    });
    try {
      const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
      const post = () =>
        fetch(`${gw.baseUrl}/chat/completions`, {
          method: 'POST',
          headers: { Authorization: bearer(token), 'Content-Type': 'application/json' },
          body: JSON.stringify({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'spend it all' }] }),
        });
      const first = await post();
      expect(first.status).toBe(200);
      await first.json();
      await waitUntil(() => gw.usage.records.length === 1, 'first usage record');
      expect(gw.usage.records[0]?.costUsd).toBeGreaterThan(0.000001);

      const refused = await post();
      expect(refused.status).toBe(429);
      expect(refused.headers.get('content-type')).toBe('application/json');
      const body = (await refused.json()) as { error: Record<string, unknown> };
      expect(body.error).toMatchObject({ type: 'rate_limit_error', code: 429, reason: 'budget_exceeded', period: 'daily', limit_usd: 0.000001 });
      expect(body.error.message).toMatch(new RegExp(`^daily budget exceeded for API key ${TEST_KEY}: spent \\$0\\.\\d{4} of \\$0\\.00; resets at \\d{4}-`));
      expect(chat.requests.filter((r) => r.path.endsWith('/chat/completions')).length).toBeGreaterThan(0);

      for (const path of ['/v1/stt', '/v1/tts']) {
        const res = await openWs(gw.wsUrl(path), { Authorization: bearer(token) });
        if (!('status' in res)) throw new Error(`${path}: upgrade accepted over budget`);
        expect(res.status).toBe(429);
        expect(res.headers['content-type']).toBe('application/json');
        expect(JSON.parse(res.body)).toMatchObject({ error: { code: 429, reason: 'budget_exceeded', period: 'daily' } });
      }
      const m = await gw.metricsText();
      expect(metricValue(m, 'gateway_budget_warning', { api_key: TEST_KEY, period: 'daily' })).toBe(1);
      expect(metricValue(m, 'gateway_budget_warning', { api_key: TEST_KEY, period: 'monthly' })).toBe(0);
      expect(metricValue(m, 'gateway_budget_used_ratio', { api_key: TEST_KEY, period: 'daily' })).toBeGreaterThan(1);
      for (const modality of ['llm', 'stt', 'tts']) {
        expect(metricValue(m, 'gateway_budget_rejections_total', { modality, api_key: TEST_KEY, period: 'daily' })).toBe(1);
      }
      // Seeding from a ledger replaces the period's spend: the key may work again.
      gw.gateway.budgets.seed(TEST_KEY, { dailyUsd: 0 });
      const again = await post();
      expect(again.status).toBe(200);
      await again.json();
    } finally {
      await gw.close();
    }
  });
});

describe('startup', () => {
  it('a routed model without a price stops the gateway with exit 1, naming the model and the key to set', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-pricing-'));
    const cfgPath = join(dir, 'gateway.yaml');
    writeFileSync(cfgPath, 'llm:\n  upstreams:\n    vllm:\n      baseUrl: http://127.0.0.1:9/v1\n      models: [llama-3-8b]\n');
    const child = spawn(process.execPath, [new URL('../../src/main.ts', import.meta.url).pathname], {
      env: { PATH: process.env.PATH ?? '', GATEWAY_CONFIG: cfgPath, PORT: '0', LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's', LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code).toBe(1);
    expect(stderr).toContain('LLM model "vllm/llama-3-8b" (routed by llm.upstreams.vllm) has no price: set pricing.llm."vllm/llama-3-8b"');
  }, 20_000);
});
