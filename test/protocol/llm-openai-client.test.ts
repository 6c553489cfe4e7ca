/**
 * /v1/chat/completions and /v1/models with the official `openai` npm client (v6) through the
 * gateway to the OpenAI chat emulator: stream and non-stream, tools, usage, errors, retries,
 * vendor routing and hygiene, client abort, metering.
 */
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../emulators/openai-chat.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { mintToken } from '../helpers/tokens.ts';

let emu: OpenAiChatEmulator;
let gemini: OpenAiChatEmulator;
let local: OpenAiChatEmulator;
let gw: TestGateway;
let client: OpenAI;

const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
];

beforeAll(async () => {
  emu = await startOpenAiChatEmulator();
  gemini = await startOpenAiChatEmulator({ vendor: 'gemini', apiKeys: ['gemini-key'] });
  local = await startOpenAiChatEmulator({ apiKeys: ['local-key'] });
  gw = await startTestGateway({
    env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${emu.url}/v1`, GEMINI_API_KEY: 'gemini-key', GOOGLE_GEMINI_BASE_URL: gemini.url, LOCAL_LLM_KEY: 'local-key' },
    file: {
      llm: { keepAliveS: 0.5, upstreams: { local: { baseUrl: `${local.url}/v1`, apiKey: 'env:LOCAL_LLM_KEY', models: ['llama3'] } } },
      pricing: { llm: { 'local/*': { free: true } } },
    },
  });
  client = new OpenAI({ apiKey: await mintToken({ key: TEST_KEY, secret: TEST_SECRET }), baseURL: gw.baseUrl, maxRetries: 0 });
});

afterAll(async () => {
  await gw?.close();
  await Promise.all([emu?.close(), gemini?.close(), local?.close()]);
});

afterEach(() => {
  emu.resetFaults();
});

describe('chat completions with the openai client', () => {
  it('streams text with a usage chunk and never forwards the client JWT', async () => {
    const stream = await client.chat.completions.create({
      model: 'openai/gpt-4.1-mini',
      messages: [{ role: 'user', content: 'hello there' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      expect(Array.isArray(chunk.choices)).toBe(true);
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('You said: hello there');
    expect(finish).toBe('stop');
    const rec = emu.requests.at(-1);
    expect(rec?.headers.authorization).toBe('Bearer sk-test-key');
    expect((rec?.body as { model: string }).model).toBe('gpt-4.1-mini');
    expect(usage?.completion_tokens).toBe(rec?.expectedUsage?.completion_tokens);
    expect(usage?.prompt_tokens).toBe(rec?.expectedUsage?.prompt_tokens);
    const m = await gw.metricsText();
    expect(metricValue(m, 'gateway_llm_tokens_total', { provider: 'openai', model: 'gpt-4.1-mini', kind: 'completion', api_key: TEST_KEY, estimated: 'false' })).toBe(usage?.completion_tokens);
    expect(metricValue(m, 'gateway_requests_total', { modality: 'llm', provider: 'openai', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
  });

  it('answers non-stream requests with the vendor body', async () => {
    const r = await client.chat.completions.create({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'abc' }] });
    expect(r.choices[0]?.message.content).toBe('You said: abc');
    expect(r.usage?.total_tokens).toBeGreaterThan(0);
  });

  it('streams a tool call round trip with fragmented arguments', async () => {
    const stream = await client.chat.completions.create({
      model: 'openai/gpt-4.1-mini',
      messages: [{ role: 'user', content: 'please call get_weather {"city":"Paris"}' }],
      tools,
      stream: true,
    });
    const calls: { id: string; name: string; args: string }[] = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const tc of chunk.choices[0]?.delta.tool_calls ?? []) {
        if (tc.id) calls[tc.index] = { id: tc.id, name: tc.function?.name ?? '', args: '' };
        const c = calls[tc.index];
        if (c) c.args += tc.function?.arguments ?? '';
      }
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('tool_calls');
    expect(calls).toHaveLength(1);
    expect(calls[0]?.name).toBe('get_weather');
    expect(JSON.parse(calls[0]?.args ?? '')).toEqual({ city: 'Paris' });
    const followUp = await client.chat.completions.create({
      model: 'openai/gpt-4.1-mini',
      messages: [
        { role: 'user', content: 'please call get_weather {"city":"Paris"}' },
        { role: 'assistant', content: null, tool_calls: [{ id: calls[0]?.id ?? '', type: 'function', function: { name: 'get_weather', arguments: calls[0]?.args ?? '' } }] },
        { role: 'tool', tool_call_id: calls[0]?.id ?? '', content: 'sunny, 21 C' },
      ],
      tools,
    });
    expect(followUp.choices[0]?.message.content).toBe('Tool get_weather returned: sunny, 21 C.');
  });

  it('drops an empty tools array (which vendors reject) with its tool_choice', async () => {
    const r = await client.chat.completions.create({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'x' }], tools: [], tool_choice: 'auto' });
    expect(r.choices[0]?.message.content).toBe('You said: x');
    const body = emu.requests.at(-1)?.body as Record<string, unknown>;
    expect(body).not.toHaveProperty('tools');
    expect(body).not.toHaveProperty('tool_choice');
  });

  it('maps provider errors to OpenAI-format errors with the status', async () => {
    emu.faultNext({ status: 401 });
    await expect(client.chat.completions.create({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({
      status: 401,
      error: { type: 'authentication_error' },
    });
    emu.faultNext({ status: 400, error: { message: 'bad thing', type: 'invalid_request_error' } });
    await expect(client.chat.completions.create({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'x' }], stream: true })).rejects.toMatchObject({
      status: 400,
    });
  });

  it('retries once on 5xx/429 before any output, and not after', async () => {
    const before = emu.requests.length;
    emu.faultNext({ status: 503 });
    const r = await client.chat.completions.create({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'retry me' }] });
    expect(r.choices[0]?.message.content).toBe('You said: retry me');
    expect(emu.requests.length - before).toBe(2);
    emu.faultNext({ status: 429 });
    emu.faultNext({ status: 429 });
    await expect(client.chat.completions.create({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({ status: 429 });
  });

  it('sends a mid-stream vendor error as an SSE error event the SDK raises', async () => {
    emu.faultNext({ errorAfterChunks: 2 });
    const stream = await client.chat.completions.create({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'one two three four five' }], stream: true });
    let text = '';
    await expect(
      (async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      })(),
    ).rejects.toThrow();
    expect(text.length).toBeGreaterThan(0);
  });

  it('guarantees finish_reason and an estimated usage chunk when the vendor sends neither', async () => {
    emu.script({ text: 'partial answer here', finishReason: null, usage: null });
    const stream = await client.chat.completions.create({
      model: 'openai/gpt-4.1-mini',
      messages: [{ role: 'user', content: 'count my tokens please' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    let text = '';
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('partial answer here');
    expect(finish).toBe('stop');
    expect(usage?.completion_tokens).toBe(3);
    expect(usage?.prompt_tokens).toBeGreaterThan(4);
    const m = await gw.metricsText();
    expect(metricValue(m, 'gateway_llm_tokens_total', { provider: 'openai', kind: 'completion', estimated: 'true' })).toBeGreaterThanOrEqual(3);
  });

  it('keeps the stream alive with SSE comments before a slow first token', async () => {
    emu.faultNext({ firstTokenDelayMs: 1600 });
    const res = await fetch(`${gw.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${await mintToken({ key: TEST_KEY, secret: TEST_SECRET })}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'slow' }], stream: true }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const body = await res.text();
    expect(body.indexOf(': keep-alive')).toBeGreaterThanOrEqual(0);
    expect(body.indexOf(': keep-alive')).toBeLessThan(body.indexOf('data: '));
    expect(body.trimEnd().endsWith('data: [DONE]')).toBe(true);
  });

  it('cancels the upstream request when the client aborts', async () => {
    emu.script({ text: 'a b c d e f g h i j k l', interTokenDelayMs: 200 });
    const ac = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'a b c d e f g h i j k l' }], stream: true },
      { signal: ac.signal },
    );
    let chunks = 0;
    // openai v6 ends the iteration quietly on abort.
    for await (const _ of stream) {
      chunks++;
      if (chunks === 2) ac.abort();
    }
    expect(chunks).toBe(2);
    await emu.waitFor(() => emu.requests.at(-1)?.aborted, 3000, 'upstream aborted');
    await expect.poll(async () => metricValue(await gw.metricsText(), 'gateway_requests_total', { modality: 'llm', outcome: 'cancelled' })).toBeGreaterThanOrEqual(1);
  });
});

describe('routing', () => {
  it('routes google/* to the Gemini OpenAI-compatible path with its key and thought signatures', async () => {
    const r = await client.chat.completions.create({
      model: 'google/gemini-2.5-flash',
      messages: [
        { role: 'user', content: 'q' },
        { role: 'assistant', content: 'a', extra_content: { google: { thoughtSignature: 'sig' }, livekit: { x: 1 } } } as never,
        { role: 'user', content: 'again' },
      ],
    });
    expect(r.choices[0]?.message.content).toBe('You said: again');
    const rec = gemini.requests.at(-1);
    expect(rec?.path).toBe('/v1beta/openai/chat/completions');
    expect(rec?.headers.authorization).toBe('Bearer gemini-key');
    expect((rec?.body as { messages: { extra_content?: unknown }[] }).messages[1]?.extra_content).toEqual({ google: { thought_signature: 'sig' } });
  });

  it('routes a configured custom upstream and lists models', async () => {
    const r = await client.chat.completions.create({ model: 'local/llama3', messages: [{ role: 'user', content: 'local' }] });
    expect(r.choices[0]?.message.content).toBe('You said: local');
    expect(local.requests.at(-1)?.headers.authorization).toBe('Bearer local-key');
    const list = await client.models.list();
    const ids = list.data.map((m) => m.id);
    expect(ids).toContain('openai/gpt-4.1-mini');
    expect(ids).toContain('google/gemini-2.5-flash');
    expect(ids).toContain('local/llama3');
    expect(ids.some((id) => id.startsWith('anthropic/'))).toBe(false);
  });

  it('rejects unknown providers (404), providers without credentials (400) and bad bodies (400)', async () => {
    await expect(client.chat.completions.create({ model: 'nope/x', messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({ status: 404 });
    await expect(client.chat.completions.create({ model: 'groq/llama-3.3-70b-versatile', messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({
      status: 400,
      message: expect.stringContaining('GROQ_API_KEY'),
    });
    await expect(client.chat.completions.create({ model: 'openai/gpt-4o', messages: [] })).rejects.toMatchObject({ status: 400 });
    const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
    const res = await fetch(`${gw.baseUrl}/chat/completions`, { method: 'POST', headers: { Authorization: `Bearer ${token}` }, body: '{not json' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/JSON/);
  });

  it('requires a valid LiveKit JWT', async () => {
    const bad = new OpenAI({ apiKey: 'not-a-jwt', baseURL: gw.baseUrl, maxRetries: 0 });
    await expect(bad.chat.completions.create({ model: 'openai/gpt-4o', messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({ status: 401 });
    await expect(bad.models.list()).rejects.toMatchObject({ status: 401 });
  });
});
