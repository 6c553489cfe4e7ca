/**
 * Conformance with the real client: `inference.LLM` from @livekit/agents@1.9, configured only
 * through LIVEKIT_INFERENCE_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET, through the gateway to the
 * OpenAI chat emulator and to the Anthropic Messages emulator (translated).
 */
import { inference, initializeLogger, llm } from '@livekit/agents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAnthropicEmulator, type AnthropicEmulator } from '../emulators/anthropic.ts';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../emulators/openai-chat.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';

let oai: OpenAiChatEmulator;
let ant: AnthropicEmulator;
let gw: TestGateway;

beforeAll(async () => {
  initializeLogger({ pretty: false, level: 'silent' });
  oai = await startOpenAiChatEmulator();
  ant = await startAnthropicEmulator();
  gw = await startTestGateway({
    env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${oai.url}/v1`, ANTHROPIC_API_KEY: ant.options.apiKeys[0] ?? '', ANTHROPIC_BASE_URL: ant.url },
  });
  process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
  process.env.LIVEKIT_API_KEY = TEST_KEY;
  process.env.LIVEKIT_API_SECRET = TEST_SECRET;
});

afterAll(async () => {
  await gw?.close();
  await Promise.all([oai?.close(), ant?.close()]);
});

interface Collected {
  text: string;
  calls: llm.FunctionCall[];
  usage: { promptTokens: number; completionTokens: number } | undefined;
}

async function run(model: inference.LLM, chatCtx: llm.ChatContext, toolCtx?: llm.ToolContext): Promise<Collected> {
  const out: Collected = { text: '', calls: [], usage: undefined };
  const stream = model.chat({ chatCtx, ...(toolCtx ? { toolCtx } : {}), connOptions: { maxRetry: 0, retryIntervalMs: 100, timeoutMs: 10_000 } });
  for await (const chunk of stream) {
    out.text += chunk.delta?.content ?? '';
    out.calls.push(...(chunk.delta?.toolCalls ?? []));
    if (chunk.usage) out.usage = chunk.usage;
  }
  return out;
}

const weather = llm.tool({
  description: 'Weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  execute: async () => 'sunny',
});

describe.each([
  { provider: 'openai', model: 'openai/gpt-4.1-mini' },
  { provider: 'anthropic', model: 'anthropic/claude-sonnet-4-5' },
])('@livekit/agents inference.LLM through the gateway ($provider)', ({ provider, model }) => {
  it('chats and reports usage', async () => {
    const m = new inference.LLM({ model }) as inference.LLM;
    const ctx = llm.ChatContext.empty();
    ctx.addMessage({ role: 'system', content: 'You are terse.' });
    ctx.addMessage({ role: 'user', content: 'good morning' });
    const r = await run(m, ctx);
    expect(r.text).toBe('You said: good morning');
    expect(r.usage?.completionTokens).toBeGreaterThan(0);
    expect(r.usage?.promptTokens).toBeGreaterThan(0);
    await m.aclose();
    const text = await gw.metricsText();
    expect(metricValue(text, 'gateway_llm_tokens_total', { provider, kind: 'completion', api_key: TEST_KEY })).toBeGreaterThanOrEqual(r.usage?.completionTokens ?? 1);
    expect(metricValue(text, 'gateway_llm_ttft_seconds_count', { provider })).toBeGreaterThanOrEqual(1);
  });

  it('runs a tool call round trip', async () => {
    const m = new inference.LLM({ model }) as inference.LLM;
    const toolCtx = new llm.ToolContext({ get_weather: weather } as never);
    const ctx = llm.ChatContext.empty();
    ctx.addMessage({ role: 'user', content: 'please call get_weather {"city":"Paris"}' });
    const first = await run(m, ctx, toolCtx);
    expect(first.calls).toHaveLength(1);
    const call = first.calls[0] as llm.FunctionCall;
    expect(call.name).toBe('get_weather');
    expect(JSON.parse(call.args)).toEqual({ city: 'Paris' });
    ctx.insert([call, llm.FunctionCallOutput.create({ callId: call.callId, name: call.name, output: 'sunny, 21 C', isError: false })]);
    const second = await run(m, ctx, toolCtx);
    expect(second.text).toContain('sunny, 21 C');
    await m.aclose();
  });
});
