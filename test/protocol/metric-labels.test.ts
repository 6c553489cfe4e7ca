/**
 * Metric labels stay bounded when clients choose model ids (STYLE.md section 5): a dated LLM
 * snapshot or any id of a `provider/*` price, and any model id sent to a custom STT upstream,
 * are counted under a known model or the price key that matched; the ledger keeps the exact id.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../emulators/openai-chat.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { settle, startSession, waitUntil } from '../helpers/stt.ts';
import { bearer, mintToken } from '../helpers/tokens.ts';

describe('LLM', () => {
  let chat: OpenAiChatEmulator;
  let gw: TestGateway;
  beforeAll(async () => {
    chat = await startOpenAiChatEmulator();
    gw = await startTestGateway({ env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${chat.url}/v1` } });
  });
  afterAll(async () => {
    await gw?.close();
    await chat?.close();
  });

  it('a dated snapshot chosen by the client is counted under its price key; the ledger keeps the exact model', async () => {
    const res = await fetch(`${gw.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { Authorization: bearer(await mintToken({ key: TEST_KEY, secret: TEST_SECRET })), 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4.1-mini-20991231', messages: [{ role: 'user', content: 'dated model' }], stream: true }),
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('data: [DONE]');
    await expect.poll(() => gw.usage.records.filter((r) => r.modality === 'llm').at(-1)?.model).toBe('gpt-4.1-mini-20991231');
    const m = await gw.metricsText();
    expect(m).not.toContain('20991231');
    expect(metricValue(m, 'gateway_requests_total', { modality: 'llm', provider: 'openai', model: 'gpt-4.1-mini', outcome: 'ok' })).toBe(1);
    expect(metricValue(m, 'gateway_cost_usd_total', { modality: 'llm', provider: 'openai', model: 'gpt-4.1-mini' })).toBeGreaterThan(0);
    expect(metricValue(m, 'gateway_llm_tokens_total', { provider: 'openai', model: 'gpt-4.1-mini', kind: 'completion' })).toBeGreaterThan(0);
  });
});

describe('STT custom upstream', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({
      file: {
        // Nothing listens there: the session fails at connect, which is enough to be counted.
        stt: { upstreams: { whisper: { protocol: 'openai-realtime', baseUrl: 'http://127.0.0.1:9/v1', model: 'large-v3' } } },
        pricing: { stt: { 'whisper/*': { usdPerMinute: 0.001 } } },
      },
    });
  });
  afterAll(async () => {
    await settle(gw);
    await gw?.close();
  });

  it('any model id sent to it is counted as "*" (its price key); the ledger keeps the exact model', async () => {
    const { id } = await startSession(gw, { model: 'whisper/client-chosen-0001', extra: {} });
    await waitUntil(() => gw.usage.records.some((r) => r.sessionId === id), 'the session record');
    expect(gw.usage.records.find((r) => r.sessionId === id)?.model).toBe('client-chosen-0001');
    const m = await gw.metricsText();
    expect(m).not.toContain('client-chosen-0001');
    expect(metricValue(m, 'gateway_requests_total', { modality: 'stt', provider: 'whisper', model: '*' })).toBe(1);
  });
});
