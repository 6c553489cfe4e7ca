/**
 * LLM fallback across configured models (`routes.llm`, docs/failover.md "LLM") with the official
 * `openai` client and the real `@livekit/agents` inference.LLM: the next candidate answers when
 * the first fails before any visible output (refused request, in-band error, nothing at all),
 * never after visible output; every candidate failing gives one error listing each attempt.
 * Two OpenAI chat emulators stand for OpenAI and Groq.
 */
import { inference, initializeLogger, llm } from '@livekit/agents';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../emulators/openai-chat.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { mintToken } from '../helpers/tokens.ts';

const PRIMARY = 'openai/gpt-4.1-mini';
const BACKUP = 'groq/llama-3.3-70b-versatile';

let openai: OpenAiChatEmulator;
let groq: OpenAiChatEmulator;
let gw: TestGateway;
let client: OpenAI;

beforeAll(async () => {
  initializeLogger({ pretty: false, level: 'silent' });
  openai = await startOpenAiChatEmulator();
  groq = await startOpenAiChatEmulator({ vendor: 'groq', apiKeys: ['groq-key'] });
  gw = await startTestGateway({
    env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${openai.url}/v1`, GROQ_API_KEY: 'groq-key', GROQ_BASE_URL: groq.url },
    file: {
      llm: { keepAliveS: 0.5 },
      routes: {
        llm: {
          [PRIMARY]: { candidates: [PRIMARY, BACKUP], firstTokenS: 1 },
          fast: { candidates: [BACKUP, PRIMARY] },
        },
      },
      // A high threshold: these tests fail the primary many times and must keep trying it.
      failover: { breaker: { failures: 1000 } },
    },
  });
  client = new OpenAI({ apiKey: await mintToken({ key: TEST_KEY, secret: TEST_SECRET }), baseURL: gw.baseUrl, maxRetries: 0 });
  process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
  process.env.LIVEKIT_API_KEY = TEST_KEY;
  process.env.LIVEKIT_API_SECRET = TEST_SECRET;
});

afterAll(async () => {
  await gw?.close();
  await Promise.all([openai?.close(), groq?.close()]);
});

afterEach(() => {
  openai.resetFaults();
  groq.resetFaults();
});

async function streamText(model: string, user: string): Promise<{ text: string; usage: OpenAI.CompletionUsage | undefined }> {
  const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: user }], stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, usage };
}

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  return metricValue(await gw.metricsText(), name, labels) ?? 0;
}

describe('fallback before visible output', () => {
  it('the primary refuses the request (503): the backup answers the same request', async () => {
    const before = await metric('gateway_fallbacks_total', { modality: 'llm', from: 'openai', to: 'groq', reason: 'connect_failed' });
    const groqReqs = groq.requests.length;
    openai.faultNext({ status: 503 });
    const r = await streamText(PRIMARY, 'refused first');
    expect(r.text).toBe('You said: refused first');
    expect(r.usage?.completion_tokens).toBeGreaterThan(0);
    const req = groq.requests[groqReqs];
    expect(req?.model).toBe('llama-3.3-70b-versatile');
    expect(req?.path).toBe('/openai/v1/chat/completions');
    expect(await metric('gateway_fallbacks_total', { modality: 'llm', from: 'openai', to: 'groq', reason: 'connect_failed' })).toBe(before + 1);
    expect(await metric('gateway_provider_errors_total', { provider: 'openai', code: '502' })).toBeGreaterThanOrEqual(1);
    await expect.poll(() => gw.usage.records.filter((u) => u.modality === 'llm').at(-1)?.fallbackChain).toEqual([PRIMARY, BACKUP]);
    const rec = gw.usage.records.filter((u) => u.modality === 'llm').at(-1);
    expect(rec).toMatchObject({ provider: 'groq', model: 'llama-3.3-70b-versatile', outcome: 'ok' });
  });

  it('an in-band error before any text: the backup answers; the client never sees the error', async () => {
    const groqReqs = groq.requests.length;
    openai.faultNext({ errorAfterChunks: 1 }); // the role chunk, then data: {"error"}
    const r = await streamText(PRIMARY, 'error before text');
    expect(r.text).toBe('You said: error before text');
    expect(groq.requests.length).toBe(groqReqs + 1);
  });

  it('the primary sends headers and then nothing: after firstTokenS the backup answers', async () => {
    const before = await metric('gateway_fallbacks_total', { modality: 'llm', from: 'openai', to: 'groq', reason: 'no_result' });
    openai.faultNext({ deadAir: true });
    const t0 = performance.now();
    const r = await streamText(PRIMARY, 'nothing came');
    expect(r.text).toBe('You said: nothing came');
    expect(performance.now() - t0).toBeGreaterThan(900);
    expect(await metric('gateway_fallbacks_total', { modality: 'llm', from: 'openai', to: 'groq', reason: 'no_result' })).toBe(before + 1);
  });

  it('an alias routes to its candidates in order (non-streaming too)', async () => {
    groq.faultNext({ status: 500 });
    const r = await client.chat.completions.create({ model: 'fast', messages: [{ role: 'user', content: 'alias please' }] });
    expect(r.choices[0]?.message.content).toBe('You said: alias please');
    expect(openai.requests.at(-1)?.model).toBe('gpt-4.1-mini');
  });

  it('a refusal of the request itself (400) is not retried elsewhere', async () => {
    const groqReqs = groq.requests.length;
    openai.faultNext({ status: 400, error: { message: 'bad parameter' } });
    await expect(streamText(PRIMARY, 'bad')).rejects.toMatchObject({ status: 400 });
    expect(groq.requests.length).toBe(groqReqs);
  });
});

describe('no fallback after visible output', () => {
  it('an error after text reached the client goes to the client; the backup is not asked', async () => {
    const groqReqs = groq.requests.length;
    openai.faultNext({ errorAfterChunks: 3 }); // role, "You", " said:" then the error
    let text = '';
    await expect(
      (async () => {
        const stream = await client.chat.completions.create({ model: PRIMARY, messages: [{ role: 'user', content: 'cut off after text' }], stream: true });
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      })(),
    ).rejects.toThrow();
    expect(text.length).toBeGreaterThan(0);
    expect('You said: cut off after text'.startsWith(text)).toBe(true);
    expect(groq.requests.length).toBe(groqReqs);
  });
});

describe('every candidate fails', () => {
  it('one error that lists each attempt', async () => {
    openai.faultNext({ status: 500 });
    groq.faultNext({ status: 503 });
    const err = await client.chat.completions
      .create({ model: PRIMARY, messages: [{ role: 'user', content: 'all down' }], stream: true })
      .then(() => null, (e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
    expect(err?.status).toBe(502);
    expect(err?.message).toMatch(/every LLM candidate failed \(2 attempts\): openai: .*HTTP 500.*; groq: .*HTTP 503/);
  });
});

describe('@livekit/agents inference.LLM', () => {
  it('gets the backup answer when the primary fails before output, with no error and no client retry', async () => {
    openai.faultNext({ status: 503 });
    const groqReqs = groq.requests.length;
    const m = new inference.LLM({ model: PRIMARY }) as inference.LLM;
    const ctx = llm.ChatContext.empty();
    ctx.addMessage({ role: 'user', content: 'agents client' });
    let text = '';
    const stream = m.chat({ chatCtx: ctx, connOptions: { maxRetry: 0, retryIntervalMs: 100, timeoutMs: 10_000 } });
    for await (const chunk of stream) text += chunk.delta?.content ?? '';
    await m.aclose();
    expect(text).toBe('You said: agents client');
    expect(groq.requests.length).toBe(groqReqs + 1);
  });
});
