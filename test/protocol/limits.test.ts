/**
 * Limits at the edge (docs/limits.md; issue 6 item 5, protocol.md 1.6, 2.7, 4.2): concurrent
 * STT/TTS sessions per API key (429 at the upgrade, before the socket is accepted), open sessions
 * per process (503), LLM requests and tokens per minute (429 in OpenAI error format) with the
 * X-LiveKit-Inference-RPM/TPM quota headers on every completion response.
 */
import OpenAI from 'openai';
import type WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigFile, resolveConfig } from '../../src/config.ts';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../emulators/openai-chat.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { bearer, mintToken } from '../helpers/tokens.ts';
import { openWs, type UpgradeRejection } from '../helpers/ws.ts';

const OTHER_KEY = 'other-api-key';
const OTHER_SECRET = 'other-api-secret-with-enough-entropy';
const VIP_KEY = 'vip-api-key';
const VIP_SECRET = 'vip-api-secret-with-enough-entropy';
const SECRETS: Record<string, string> = { [TEST_KEY]: TEST_SECRET, [OTHER_KEY]: OTHER_SECRET, [VIP_KEY]: VIP_SECRET };

let emu: OpenAiChatEmulator;
const gateways: TestGateway[] = [];
const sockets: WebSocket[] = [];

beforeAll(async () => {
  emu = await startOpenAiChatEmulator();
});

afterEach(async () => {
  for (const ws of sockets.splice(0)) ws.terminate();
  for (const g of gateways.splice(0)) await g.close();
});

afterAll(async () => {
  await emu?.close();
});

async function gateway(limits: unknown): Promise<TestGateway> {
  const gw = await startTestGateway({
    env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${emu.url}/v1` },
    file: {
      limits,
      auth: {
        keys: [
          { key: OTHER_KEY, secret: OTHER_SECRET },
          { key: VIP_KEY, secret: VIP_SECRET },
        ],
      },
    },
  });
  gateways.push(gw);
  return gw;
}

async function auth(key = TEST_KEY): Promise<string> {
  return bearer(await mintToken({ key, secret: SECRETS[key] as string }));
}

async function upgrade(gw: TestGateway, path: '/v1/stt' | '/v1/tts', key = TEST_KEY): Promise<WebSocket | UpgradeRejection> {
  const res = await openWs(gw.wsUrl(path), { Authorization: await auth(key) });
  if (!('status' in res)) sockets.push(res);
  return res;
}

async function accepted(gw: TestGateway, path: '/v1/stt' | '/v1/tts', key = TEST_KEY): Promise<WebSocket> {
  const res = await upgrade(gw, path, key);
  if ('status' in res) throw new Error(`expected an open socket, got ${res.status} ${res.body}`);
  return res;
}

async function refused(gw: TestGateway, path: '/v1/stt' | '/v1/tts', key = TEST_KEY): Promise<UpgradeRejection> {
  const res = await upgrade(gw, path, key);
  if (!('status' in res)) throw new Error('expected the upgrade to be refused, the socket opened');
  return res;
}

async function closeAndWait(gw: TestGateway, ws: WebSocket, mode: 'close' | 'terminate'): Promise<void> {
  const before = gw.gateway.limits.openSessions;
  if (mode === 'close') ws.close(1000);
  else ws.terminate();
  const deadline = Date.now() + 5000;
  while (gw.gateway.limits.openSessions >= before) {
    if (Date.now() > deadline) throw new Error('session slot was not released');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('concurrent sessions per API key', () => {
  it('the STT session over the limit gets 429 at the upgrade with category and remaining_limit; a closed session frees its slot', async () => {
    const gw = await gateway({ perKey: { '*': { maxSttSessions: 2 } } });
    const a = await accepted(gw, '/v1/stt');
    await accepted(gw, '/v1/stt');
    const r = await refused(gw, '/v1/stt');
    expect(r.status).toBe(429);
    expect(r.headers['content-type']).toBe('application/json');
    expect(JSON.parse(r.body)).toEqual({
      error: {
        message: expect.stringMatching(/STT connection limit exceeded/),
        type: 'rate_limit_error',
        code: 429,
        category: 'MaxConcurrentGatewaySTT',
        remaining_limit: 0,
      },
    });
    // Refused before the socket was accepted: no session was created for it.
    expect(gw.gateway.sessions.size).toBe(2);
    expect(gw.gateway.limits.activeSessions(TEST_KEY, 'stt')).toBe(2);
    // TTS is counted separately (no TTS limit here).
    await accepted(gw, '/v1/tts');

    await closeAndWait(gw, a, 'close');
    await accepted(gw, '/v1/stt');
    expect(metricValue(await gw.metricsText(), 'gateway_limit_rejections_total', { modality: 'stt', limit: 'concurrent_sessions', api_key: TEST_KEY })).toBe(1);
  });

  it('TTS has its own limit; a client that drops the TCP connection without a close frees its slot', async () => {
    const gw = await gateway({ perKey: { '*': { maxTtsSessions: 1 } } });
    const a = await accepted(gw, '/v1/tts');
    const r = await refused(gw, '/v1/tts');
    expect(r.status).toBe(429);
    expect(JSON.parse(r.body).error).toMatchObject({ code: 429, category: 'MaxConcurrentGatewayTTS', remaining_limit: 0 });
    await accepted(gw, '/v1/stt');
    await closeAndWait(gw, a, 'terminate');
    await accepted(gw, '/v1/tts');
    expect(metricValue(await gw.metricsText(), 'gateway_limit_rejections_total', { modality: 'tts', limit: 'concurrent_sessions', api_key: TEST_KEY })).toBe(1);
  });

  it('"*" gives each key its own counters; a key entry overrides "*" field by field, null lifts a limit, 0 forbids', async () => {
    const gw = await gateway({
      perKey: {
        '*': { maxSttSessions: 1, maxTtsSessions: 1 },
        [VIP_KEY]: { maxSttSessions: null },
        [OTHER_KEY]: { maxTtsSessions: 0 },
      },
    });
    await accepted(gw, '/v1/stt', TEST_KEY);
    // Another key is not affected by TEST_KEY's session.
    await accepted(gw, '/v1/stt', OTHER_KEY);
    expect((await refused(gw, '/v1/stt', OTHER_KEY)).status).toBe(429);
    expect((await refused(gw, '/v1/tts', OTHER_KEY)).status).toBe(429);
    for (let i = 0; i < 3; i++) await accepted(gw, '/v1/stt', VIP_KEY);
    // The VIP key keeps the "*" TTS limit.
    await accepted(gw, '/v1/tts', VIP_KEY);
    expect((await refused(gw, '/v1/tts', VIP_KEY)).status).toBe(429);
  });

  it('a limit for an API key that does not exist stops startup', () => {
    const file = parseConfigFile(`limits:\n  perKey:\n    typo-key:\n      maxSttSessions: 1\n`, 'gw.yaml');
    expect(() => resolveConfig(file, { LIVEKIT_API_KEY: TEST_KEY, LIVEKIT_API_SECRET: TEST_SECRET })).toThrow(/limits\.perKey\.typo-key: no such API key/);
    expect(() => parseConfigFile(`limits:\n  perKey:\n    "*":\n      maxSttSesions: 1\n`, 'gw.yaml')).toThrow(/maxSttSesions/);
  });
});

describe('sessions per process', () => {
  it('past maxSessionsPerProcess (STT + TTS together) an upgrade gets 503 with Retry-After; defaults to 1000', async () => {
    const gw = await gateway({ maxSessionsPerProcess: 2 });
    await accepted(gw, '/v1/stt');
    const b = await accepted(gw, '/v1/tts', OTHER_KEY);
    for (const path of ['/v1/stt', '/v1/tts'] as const) {
      const r = await refused(gw, path, VIP_KEY);
      expect(r.status).toBe(503);
      expect(r.headers['retry-after']).toBe('1');
      expect(JSON.parse(r.body).error).toMatchObject({ code: 503, type: 'api_error', category: 'MaxSessionsPerProcess', message: expect.stringMatching(/at capacity/) });
    }
    await closeAndWait(gw, b, 'close');
    await accepted(gw, '/v1/tts', VIP_KEY);
    const text = await gw.metricsText();
    expect(metricValue(text, 'gateway_limit_rejections_total', { modality: 'stt', limit: 'process_sessions' })).toBe(1);
    expect(metricValue(text, 'gateway_limit_rejections_total', { modality: 'tts', limit: 'process_sessions' })).toBe(1);

    const plain = await gateway({});
    expect(plain.cfg.file.limits.maxSessionsPerProcess).toBe(1000);
  });
});

describe('LLM requests and tokens per minute', () => {
  async function post(gw: TestGateway, body: Record<string, unknown>, key = TEST_KEY): Promise<Response> {
    return fetch(`${gw.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { Authorization: await auth(key), 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'hello there' }], ...body }),
    });
  }

  it('RPM: admitted responses carry RPM-Limit/-Used, the next one is a 429 OpenAI error with the same headers and Retry-After', async () => {
    const gw = await gateway({ perKey: { '*': { llmRequestsPerMinute: 2 } } });
    const r1 = await post(gw, { stream: true });
    expect(r1.status).toBe(200);
    expect(r1.headers.get('x-livekit-inference-rpm-limit')).toBe('2');
    expect(r1.headers.get('x-livekit-inference-rpm-used')).toBe('1');
    // TPM is not enforced: its headers are absent.
    expect(r1.headers.get('x-livekit-inference-tpm-limit')).toBeNull();
    await r1.text();
    const r2 = await post(gw, { stream: false });
    expect(r2.status).toBe(200);
    expect(r2.headers.get('x-livekit-inference-rpm-used')).toBe('2');
    const completion = (await r2.json()) as { choices: Array<{ message: { content: string } }> };
    expect(completion.choices[0]?.message.content).toBe('You said: hello there');

    const before = emu.requests.length;
    const r3 = await post(gw, { stream: true });
    expect(r3.status).toBe(429);
    expect(r3.headers.get('x-livekit-inference-rpm-limit')).toBe('2');
    expect(r3.headers.get('x-livekit-inference-rpm-used')).toBe('2');
    const retryAfter = Number(r3.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(await r3.json()).toEqual({
      error: { message: expect.stringMatching(/request limit exceeded \(2 requests per minute/), type: 'rate_limit_error', code: 429, category: 'LLMRequestsPerMinute', remaining_limit: 0 },
    });
    // Refused at the entry: the provider never saw it.
    expect(emu.requests.length).toBe(before);

    // Another key has its own window; a key without limits gets no quota headers.
    const other = await post(gw, {}, OTHER_KEY);
    expect(other.status).toBe(200);
    expect(other.headers.get('x-livekit-inference-rpm-used')).toBe('1');
    await other.text();
    const open = await gateway({});
    const plain = await post(open, {});
    expect(plain.status).toBe(200);
    expect(plain.headers.get('x-livekit-inference-rpm-limit')).toBeNull();
    await plain.text();
    expect(metricValue(await gw.metricsText(), 'gateway_limit_rejections_total', { modality: 'llm', limit: 'requests_per_minute', api_key: TEST_KEY })).toBe(1);
  });

  it('TPM: counted from the metered usage of finished completions; over it the openai client gets a RateLimitError (429) with the headers', async () => {
    const gw = await gateway({ perKey: { '*': { llmTokensPerMinute: 20, llmRequestsPerMinute: 100 } } });
    const client = new OpenAI({ apiKey: await mintToken({ key: TEST_KEY, secret: TEST_SECRET }), baseURL: gw.baseUrl, maxRetries: 0 });
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'please repeat this sentence back to me word for word' }], stream: true, stream_options: { include_usage: true } })
      .withResponse();
    expect(response.headers.get('x-livekit-inference-tpm-limit')).toBe('20');
    expect(response.headers.get('x-livekit-inference-tpm-used')).toBe('0');
    expect(response.headers.get('x-livekit-inference-rpm-used')).toBe('1');
    let total = 0;
    for await (const chunk of stream) if (chunk.usage) total = chunk.usage.total_tokens;
    expect(total).toBeGreaterThan(20);

    const err = await client.chat.completions.create({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.status).toBe(429);
    expect(e.headers.get('x-livekit-inference-tpm-limit')).toBe('20');
    expect(e.headers.get('x-livekit-inference-tpm-used')).toBe(String(total));
    // A refused request does not count as a request.
    expect(e.headers.get('x-livekit-inference-rpm-used')).toBe('1');
    expect(e.error).toMatchObject({ category: 'LLMTokensPerMinute', code: 429 });
    expect(metricValue(await gw.metricsText(), 'gateway_limit_rejections_total', { modality: 'llm', limit: 'tokens_per_minute', api_key: TEST_KEY })).toBe(1);
  });
});
