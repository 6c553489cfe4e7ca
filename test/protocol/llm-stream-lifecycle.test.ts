/**
 * How a streamed completion ends when the provider misbehaves or the gateway stops, with the
 * real gateway in front of the OpenAI chat emulator: a stream that goes quiet is given up
 * (`llm.streamIdleS`) instead of being kept alive forever; a stream that fails after output is
 * billed (vendor usage, else an estimate), never $0; shutdown lets completions in flight finish
 * and records the usage of those it cuts before it resolves.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../emulators/openai-chat.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { bearer, mintToken } from '../helpers/tokens.ts';

const MODEL = 'openai/gpt-4.1-mini';

let chat: OpenAiChatEmulator;

beforeAll(async () => {
  chat = await startOpenAiChatEmulator();
});

afterAll(async () => {
  await chat?.close();
});

afterEach(() => {
  chat.resetFaults();
});

const startGateway = (file: Record<string, unknown> = {}): Promise<TestGateway> =>
  startTestGateway({
    env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${chat.url}/v1` },
    file: { failover: { breaker: { failures: 1000 } }, ...file },
  });

/** POST a streaming completion; resolves with the raw SSE body once the gateway ends it. */
async function streamRaw(gw: TestGateway, user: string, model = MODEL, onChunk?: (text: string) => void): Promise<string> {
  const res = await fetch(`${gw.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { Authorization: bearer(await mintToken({ key: TEST_KEY, secret: TEST_SECRET })), 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: user }], stream: true }),
  });
  expect(res.status).toBe(200);
  let body = '';
  const decoder = new TextDecoder();
  try {
    for await (const chunk of res.body as ReadableStream<Uint8Array>) {
      const text = decoder.decode(chunk, { stream: true });
      body += text;
      onChunk?.(text);
    }
  } catch {
    // cut by the gateway: the body so far is the answer
  }
  return body;
}

/** The concatenated `delta.content` of an SSE body. */
function textOf(body: string): string {
  let text = '';
  for (const line of body.split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const obj = JSON.parse(line.slice(6)) as { choices?: Array<{ delta?: { content?: string } }> };
    text += obj.choices?.[0]?.delta?.content ?? '';
  }
  return text;
}

const llmRecords = (gw: TestGateway) => gw.usage.records.filter((r) => r.modality === 'llm');

describe('shutdown with completions in flight', () => {
  // First in this file: the tokenizer is not loaded yet, so the estimate of a cut request takes real time.
  it('a completion still running at the deadline is cut, and its estimated usage is recorded before shutdown resolves', async () => {
    const gw = await startGateway({ server: { shutdownTimeoutS: 0.5 }, llm: { streamIdleS: 30 } });
    chat.faultNext({ stallAfterChunks: 3 });
    let sawText!: () => void;
    const textSeen = new Promise<void>((resolve) => (sawText = resolve));
    const body = streamRaw(gw, 'cut at shutdown', MODEL, (t) => {
      if (t.includes('You')) sawText();
    });
    await textSeen;
    await gw.close();
    const recs = llmRecords(gw);
    expect(recs).toHaveLength(1);
    expect(recs[0]).toMatchObject({ outcome: 'cancelled', tokens: { estimated: true } });
    expect(recs[0]?.tokens?.completion).toBeGreaterThan(0);
    expect(recs[0]?.costUsd).toBeGreaterThan(0);
    await body;
  });

  it('shutdown waits for a streaming completion to finish, which the client gets whole', async () => {
    const gw = await startGateway({ server: { shutdownTimeoutS: 10 } });
    chat.faultNext({ interTokenDelayMs: 100 });
    let sawText!: () => void;
    const textSeen = new Promise<void>((resolve) => (sawText = resolve));
    const body = streamRaw(gw, 'let me finish please', MODEL, (t) => {
      if (t.includes('You')) sawText();
    });
    await textSeen;
    await gw.close();
    // Recorded before shutdown resolved (the ledger closes right after it in main.ts).
    expect(llmRecords(gw)).toMatchObject([{ outcome: 'ok', tokens: { estimated: false } }]);
    const raw = await body;
    expect(textOf(raw)).toBe('You said: let me finish please');
    expect(raw).toContain('data: [DONE]');
  });
});

describe('a stream that stalls', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ llm: { keepAliveS: 0.2, streamIdleS: 1 } });
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('after its first chunk, before any text: given up after streamIdleS and retried; the retry answers', async () => {
    const before = metricValue(await gw.metricsText(), 'gateway_provider_errors_total', { provider: 'openai', code: '504' }) ?? 0;
    chat.faultNext({ stallAfterChunks: 1 }); // the role chunk, then nothing (the connection stays open)
    const t0 = performance.now();
    const raw = await streamRaw(gw, 'stalled then retried');
    expect(textOf(raw)).toBe('You said: stalled then retried');
    expect(performance.now() - t0).toBeGreaterThan(900);
    expect(metricValue(await gw.metricsText(), 'gateway_provider_errors_total', { provider: 'openai', code: '504' })).toBe(before + 1);
  });

  it('on every attempt: the client gets an error, and keep-alive comments stop with the provider', async () => {
    chat.faults.stallAfterChunks = 1;
    const t0 = performance.now();
    const raw = await streamRaw(gw, 'never answered');
    const elapsed = performance.now() - t0;
    expect(raw).toContain('"error"');
    expect(raw).toMatch(/stalled for 1 s/);
    // Two attempts of ~1 s each, not forever; at most ~1 s of keep-alives (0.2 s apart) per attempt.
    expect(elapsed).toBeLessThan(10_000);
    expect(raw.split(': keep-alive').length - 1).toBeLessThanOrEqual(12);
  });

  it('after visible text: an SSE error event ends the stream; the usage is estimated and billed', async () => {
    chat.faultNext({ stallAfterChunks: 3 }); // role, "You", " said:" then nothing
    const n = llmRecords(gw).length;
    const raw = await streamRaw(gw, 'stalled after text');
    expect(textOf(raw)).toBe('You said:');
    expect(raw).toMatch(/"error":\{"message":"openai: provider stream stalled/);
    await expect.poll(() => llmRecords(gw).length).toBe(n + 1);
    const rec = llmRecords(gw).at(-1);
    expect(rec).toMatchObject({ outcome: 'provider_timeout', errorCode: 504, tokens: { estimated: true } });
    expect(rec?.tokens?.completion).toBeGreaterThan(0);
    expect(rec?.costUsd).toBeGreaterThan(0);
  });
});

describe('a stream that fails after visible output is billed', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway();
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('an in-band error after text: the record carries estimated tokens and a cost', async () => {
    chat.faultNext({ errorAfterChunks: 3 });
    const n = llmRecords(gw).length;
    const raw = await streamRaw(gw, 'in-band error after text');
    expect(textOf(raw)).toBe('You said:');
    await expect.poll(() => llmRecords(gw).length).toBe(n + 1);
    const rec = llmRecords(gw).at(-1);
    expect(rec).toMatchObject({ outcome: 'provider_error', errorCode: 502, tokens: { estimated: true } });
    expect(rec?.tokens?.prompt).toBeGreaterThan(0);
    expect(rec?.tokens?.completion).toBeGreaterThan(0);
    expect(rec?.costUsd).toBeGreaterThan(0);
  });

  it('the provider connection breaks after text: the record carries estimated tokens and a cost', async () => {
    chat.faultNext({ dropAfterChunks: 3 });
    const n = llmRecords(gw).length;
    const raw = await streamRaw(gw, 'dropped after text');
    expect(textOf(raw)).toBe('You said:');
    await expect.poll(() => llmRecords(gw).length).toBe(n + 1);
    const rec = llmRecords(gw).at(-1);
    expect(rec).toMatchObject({ outcome: 'provider_error', tokens: { estimated: true } });
    expect(rec?.tokens?.completion).toBeGreaterThan(0);
    expect(rec?.costUsd).toBeGreaterThan(0);
  });
});

describe('a non-streamed answer that stalls after its headers', () => {
  it('is given up after streamIdleS with an error instead of hanging', async () => {
    // A server that answers 200 with headers and then never sends the body.
    const held: import('node:http').ServerResponse[] = [];
    const upstream = createServer((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.flushHeaders();
      held.push(res);
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    const port = (upstream.address() as AddressInfo).port;
    const gw = await startTestGateway({
      env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${chat.url}/v1` },
      file: {
        llm: { streamIdleS: 1, upstreams: { stuck: { baseUrl: `http://127.0.0.1:${port}/v1`, models: ['m'] } } },
        pricing: { llm: { 'stuck/*': { free: true } } },
        failover: { breaker: { failures: 1000 } },
      },
    });
    try {
      const t0 = performance.now();
      const res = await fetch(`${gw.baseUrl}/chat/completions`, {
        method: 'POST',
        headers: { Authorization: bearer(await mintToken({ key: TEST_KEY, secret: TEST_SECRET })), 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: 'stuck/m', messages: [{ role: 'user', content: 'x' }] }),
      });
      expect(res.status).toBe(504);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/stalled for 1 s/);
      expect(performance.now() - t0).toBeLessThan(10_000);
    } finally {
      for (const r of held) r.destroy();
      await gw.close();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });
});
