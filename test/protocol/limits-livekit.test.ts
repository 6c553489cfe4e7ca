/**
 * What the real client (@livekit/agents@1.9 `inference.STT` / `TTS` / `LLM`) makes of a limit
 * refusal (docs/limits.md): a retryable status error 429 that it retries, each attempt refused
 * by the gateway before any provider is called.
 */
import { AudioFrame } from '@livekit/rtc-node';
import { inference, initializeLogger, llm } from '@livekit/agents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDeepgramEmulator, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../emulators/openai-chat.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { waitUntil } from '../helpers/stt.ts';

let dg: DeepgramEmulator;
let oai: OpenAiChatEmulator;
let gw: TestGateway;

type ClientError = Error & { statusCode?: number; retryable?: boolean };

beforeAll(async () => {
  initializeLogger({ pretty: false, level: 'silent' });
  dg = await startDeepgramEmulator();
  oai = await startOpenAiChatEmulator();
  gw = await startTestGateway({
    env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: dg.url, OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${oai.url}/v1`, CARTESIA_API_KEY: 'cartesia-test-key' },
    // 0: this key may open no session and make no LLM request at all.
    file: { limits: { perKey: { '*': { maxSttSessions: 0, maxTtsSessions: 0, llmRequestsPerMinute: 0 } } } },
  });
  process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
  process.env.LIVEKIT_API_KEY = TEST_KEY;
  process.env.LIVEKIT_API_SECRET = TEST_SECRET;
});

afterAll(async () => {
  await gw?.close();
  await Promise.all([dg?.close(), oai?.close()]);
});

async function rejections(modality: string, limit: string): Promise<number> {
  return metricValue(await gw.metricsText(), 'gateway_limit_rejections_total', { modality, limit, api_key: TEST_KEY }) ?? 0;
}

describe('@livekit/agents against the gateway limits', () => {
  it('STT: the upgrade refused with 429 is a retryable APIStatusError; the client retries, the provider is never called', async () => {
    const model = new inference.STT({ model: 'deepgram/nova-3', sampleRate: 16000 });
    const errors: Array<{ error: ClientError; recoverable: boolean }> = [];
    model.on('error' as never, ((e: { error: ClientError; recoverable: boolean }) => errors.push(e)) as never);
    const stream = model.stream({ connOptions: { maxRetry: 1, retryIntervalMs: 50, timeoutMs: 5000 } });
    stream.pushFrame(new AudioFrame(new Int16Array(1600), 16000, 1, 1600));
    await waitUntil(() => errors.length > 0, 'the client error', 10_000);
    expect(errors[0]?.error.statusCode).toBe(429);
    expect(errors[0]?.error.retryable).toBe(true);
    // maxRetry 1: two attempts, both refused at the upgrade.
    expect(await rejections('stt', 'concurrent_sessions')).toBe(2);
    expect(dg.records).toHaveLength(0);
    stream.close();
    await model.close();
  });

  it('TTS: the same 429 at the upgrade, retried by the client', async () => {
    const tts = new inference.TTS({
      model: 'cartesia/sonic-3:9626c31c-bec5-4cca-baa8-f8ba9e84c8bc',
      sampleRate: 24000,
      connOptions: { maxRetry: 1, retryIntervalMs: 50, timeoutMs: 5000 },
    } as never) as inference.TTS<string>;
    const errors: Array<{ error: ClientError; recoverable: boolean }> = [];
    tts.on('error' as never, ((e: { error: ClientError; recoverable: boolean }) => errors.push(e)) as never);
    const stream = tts.stream();
    stream.pushText('Hello there.');
    stream.endInput();
    const read = (async () => {
      try {
        for await (const ev of stream as AsyncIterable<unknown>) if (typeof ev === 'symbol') break;
      } catch {
        // the failure is reported through the 'error' event
      }
    })();
    await waitUntil(() => errors.length > 0, 'the client error', 10_000);
    expect(errors[0]?.error.statusCode).toBe(429);
    expect(errors[0]?.error.retryable).toBe(true);
    expect(await rejections('tts', 'concurrent_sessions')).toBe(2);
    stream.close();
    await read;
    await tts.close();
  });

  it('LLM: the 429 with quota headers is a retryable APIStatusError; the provider is never called', async () => {
    const model = new inference.LLM({ model: 'openai/gpt-4.1-mini' }) as inference.LLM;
    const errors: Array<{ error: ClientError; recoverable: boolean }> = [];
    model.on('error' as never, ((e: { error: ClientError; recoverable: boolean }) => errors.push(e)) as never);
    const chatCtx = llm.ChatContext.empty();
    chatCtx.addMessage({ role: 'user', content: 'hello' });
    const stream = model.chat({ chatCtx, connOptions: { maxRetry: 1, retryIntervalMs: 50, timeoutMs: 5000 } });
    const thrown = await (async () => {
      try {
        for await (const _ of stream) {
          // no chunk expected
        }
        return null;
      } catch (err) {
        return err as ClientError;
      }
    })();
    const err = thrown ?? errors.at(-1)?.error;
    expect(err?.statusCode).toBe(429);
    expect(err?.message).toMatch(/LLM request limit exceeded/);
    expect(err?.retryable).toBe(true);
    expect(await rejections('llm', 'requests_per_minute')).toBe(2);
    expect(oai.requests).toHaveLength(0);
  });
});
