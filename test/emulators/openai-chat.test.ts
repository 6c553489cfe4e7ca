import { afterEach, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import {
  DONE_EVENT,
  KEEP_ALIVE_COMMENT,
  countPromptTokens,
  formatResetDuration,
  splitArgumentFragments,
  splitTextPieces,
  startOpenAiChatEmulator,
  type ChatRequestRecord,
  type OpenAiChatEmulator,
  type OpenAiChatEmulatorOptions,
} from './openai-chat.ts';
import { DEFAULT_OPENAI_API_KEY, OPENAI_INVALID_JSON_MESSAGE, OPENAI_MISSING_KEY_MESSAGE, type OpenAiErrorObject } from './openai-speech.ts';

// Parsed JSON from the wire: tests read arbitrary nested fields.
type Json = any;

const KEY = DEFAULT_OPENAI_API_KEY;
const MODEL = 'gpt-4.1-mini';
const WEATHER_TOOL = {
  type: 'function' as const,
  function: { name: 'get_weather', description: 'Weather of a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
};
const TIME_TOOL = { type: 'function' as const, function: { name: 'get_time', parameters: { type: 'object', properties: {} } } };

const emulators: OpenAiChatEmulator[] = [];
const aborts: AbortController[] = [];

afterEach(async () => {
  for (const a of aborts.splice(0)) a.abort();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: OpenAiChatEmulatorOptions = {}): Promise<OpenAiChatEmulator> {
  const emu = await startOpenAiChatEmulator({ firstTokenDelayMs: 1, interTokenDelayMs: 0, ...opts });
  emulators.push(emu);
  return emu;
}

function sdk(emu: OpenAiChatEmulator, o: { maxRetries?: number; apiKey?: string; baseURL?: string } = {}): OpenAI {
  return new OpenAI({ apiKey: o.apiKey ?? KEY, baseURL: o.baseURL ?? emu.baseUrl, maxRetries: o.maxRetries ?? 0 });
}

function chatBody(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: MODEL, messages: [{ role: 'user', content: 'hello world' }], stream: true, stream_options: { include_usage: true }, ...over };
}

function post(emu: OpenAiChatEmulator, json: unknown, o: { headers?: Record<string, string>; raw?: string; url?: string; signal?: AbortSignal } = {}): Promise<Response> {
  const ac = new AbortController();
  aborts.push(ac);
  return fetch(o.url ?? emu.chatUrl, {
    method: 'POST',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json', ...(o.headers ?? {}) },
    body: o.raw ?? JSON.stringify(json),
    signal: o.signal ?? ac.signal,
  });
}

interface SseEvent {
  /** ms since readSse started */
  t: number;
  kind: 'data' | 'comment' | 'done';
  text: string;
  json?: Json;
}

/** Read an SSE body event by event; resolves with what arrived and the error that ended it, if any. */
async function readSse(res: Response): Promise<{ events: SseEvent[]; raw: string; error: unknown }> {
  const t0 = performance.now();
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  const events: SseEvent[] = [];
  let buf = '';
  let raw = '';
  let error: unknown = null;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const s = dec.decode(value, { stream: true });
      raw += s;
      buf += s;
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const t = performance.now() - t0;
        if (block.startsWith(':')) events.push({ t, kind: 'comment', text: block });
        else if (block === 'data: [DONE]') events.push({ t, kind: 'done', text: block });
        else {
          expect(block.startsWith('data: ')).toBe(true);
          events.push({ t, kind: 'data', text: block, json: JSON.parse(block.slice(6)) });
        }
      }
    }
  } catch (e) {
    error = e;
  }
  return { events, raw, error };
}

const dataOf = (events: SseEvent[]): Json[] => events.filter((e) => e.kind === 'data').map((e) => e.json);
const deltas = (events: SseEvent[]): Json[] => dataOf(events).filter((c) => c.choices?.length).map((c) => c.choices[0].delta);

async function errorOf(res: Response): Promise<OpenAiErrorObject> {
  expect(res.headers.get('content-type')).toBe('application/json');
  expect(res.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/);
  const j = (await res.json()) as { error: OpenAiErrorObject };
  expect(Object.keys(j)).toEqual(['error']);
  expect(Object.keys(j.error)).toEqual(['message', 'type', 'param', 'code']);
  return j.error;
}

async function caught(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => null,
    (e: unknown) => e,
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe('pure helpers', () => {
  it('splits text into word pieces and arguments into token-ish fragments, both lossless', () => {
    expect(splitTextPieces('You said: hello  world ')).toEqual(['You', ' said:', ' hello', '  world ']);
    expect(splitTextPieces('  ')).toEqual(['  ']);
    expect(splitTextPieces('')).toEqual([]);
    expect(splitArgumentFragments('{"city":"Paris"}')).toEqual(['{"', 'city', '":"', 'Paris', '"}']);
    expect(splitArgumentFragments('{"a": 1}').join('')).toBe('{"a": 1}');
  });

  it('counts prompt tokens as ceil(code points / 4) of texts, tool calls and the tools JSON', () => {
    expect(countPromptTokens([{ role: 'user', content: 'hello world' }])).toBe(3); // 11 chars
    expect(countPromptTokens([{ role: 'user', content: [{ type: 'text', text: 'abcd' }, { type: 'image_url', image_url: { url: 'x' } }] }])).toBe(1);
    const msgs = [
      { role: 'user', content: 'é'.repeat(8) }, // 8 code points
      { role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'ab', arguments: '{}' } }] }, // 4
    ];
    expect(countPromptTokens(msgs)).toBe(3);
    expect(countPromptTokens(msgs, [WEATHER_TOOL])).toBe(Math.ceil((12 + JSON.stringify([WEATHER_TOOL]).length) / 4));
  });

  it('formats x-ratelimit-reset durations like OpenAI', () => {
    expect([formatResetDuration(120), formatResetDuration(1000), formatResetDuration(8640), formatResetDuration(360_000), formatResetDuration(61_500)]).toEqual([
      '120ms', '1s', '8.64s', '6m0s', '1m1.5s',
    ]);
  });
});

describe('streaming wire (raw fetch)', () => {
  it('streams role chunk, word pieces, finish chunk, usage chunk with choices [] and [DONE]', async () => {
    const emu = await start();
    const res = await post(emu, chatBody());
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(res.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/);
    expect(res.headers.get('openai-version')).toBe('2020-10-01');
    expect(res.headers.get('x-ratelimit-limit-requests')).toBe('5000');
    expect(res.headers.get('x-ratelimit-remaining-requests')).toMatch(/^(4999|5000)$/); // refills 1 per 12 ms
    expect(res.headers.get('x-ratelimit-reset-requests')).toMatch(/^\d+ms$/);
    const { events, raw, error } = await readSse(res);
    expect(error).toBeNull();
    expect(raw.endsWith(DONE_EVENT)).toBe(true);
    expect(events.map((e) => e.kind)).toEqual(['data', 'data', 'data', 'data', 'data', 'data', 'data', 'done']);
    const chunks = dataOf(events);
    expect(chunks.map((c) => c.choices[0]?.delta ?? null)).toEqual([
      { role: 'assistant', content: '', refusal: null },
      { content: 'You' },
      { content: ' said:' },
      { content: ' hello' },
      { content: ' world' },
      {},
      null,
    ]);
    expect(chunks.map((c) => (c.choices.length ? c.choices[0].finish_reason : 'none'))).toEqual([null, null, null, null, null, 'stop', 'none']);
    for (const c of chunks) {
      expect(Object.keys(c)).toEqual(['id', 'object', 'created', 'model', 'service_tier', 'system_fingerprint', 'choices', 'usage', 'obfuscation']);
      expect(c).toMatchObject({ id: chunks[0].id, object: 'chat.completion.chunk', created: chunks[0].created, model: MODEL, service_tier: 'default' });
      expect(c.obfuscation).toMatch(/^[A-Za-z0-9]{0,15}$/);
    }
    expect(chunks[0].id).toMatch(/^chatcmpl-[A-Za-z0-9]{29}$/);
    expect(chunks.slice(0, 6).every((c) => c.usage === null && c.choices[0].logprobs === null && c.choices[0].index === 0)).toBe(true);
    const usage = {
      prompt_tokens: 3,
      completion_tokens: 4,
      total_tokens: 7,
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    };
    expect(chunks[6]).toMatchObject({ choices: [], usage });

    const r = await emu.waitForDone();
    expect(r).toMatchObject({
      status: 200, outcome: 'completed', stream: true, model: MODEL, chunks: 7, pieces: 4, text: 'You said: hello world',
      finishReason: 'stop', usage, expectedUsage: usage, replySource: 'default', authorized: true, apiKey: KEY, aborted: false,
    });
    expect(r.headers['authorization']).toBe(`Bearer ${KEY}`);
    expect(r.body).toEqual(chatBody());
    expect(r.events.map((e) => e.kind)).toEqual(['chunk', 'chunk', 'chunk', 'chunk', 'chunk', 'chunk', 'usage', 'done']);
    expect(r.events.map((e) => e.data).join('')).toBe(raw);
    expect(r.requestId).toBe(res.headers.get('x-request-id'));
  });

  it('include_obfuscation:false and no include_usage: no obfuscation, no usage key, no usage chunk', async () => {
    const emu = await start();
    const res = await post(emu, chatBody({ stream_options: { include_obfuscation: false } }));
    const { events } = await readSse(res);
    const chunks = dataOf(events);
    expect(chunks).toHaveLength(6);
    for (const c of chunks) {
      expect('obfuscation' in c).toBe(false);
      expect('usage' in c).toBe(false);
    }
    const r = await emu.waitForDone();
    expect(r.usage).toBeNull();
    expect(r.expectedUsage).toMatchObject({ prompt_tokens: 3, completion_tokens: 4 });
  });

  it('tool calls: role on the first call delta, header then fragments, parallel calls by index, finish tool_calls', async () => {
    const emu = await start();
    const res = await post(emu, chatBody({
      messages: [{ role: 'user', content: 'please call get_weather {"city":"Paris"} and then call get_time' }],
      tools: [WEATHER_TOOL, TIME_TOOL],
    }));
    const { events } = await readSse(res);
    const d = deltas(events);
    expect(d[0]).toEqual({
      role: 'assistant', content: null,
      tool_calls: [{ index: 0, id: expect.stringMatching(/^call_[A-Za-z0-9]{24}$/), type: 'function', function: { name: 'get_weather', arguments: '' } }],
      refusal: null,
    });
    expect(d.slice(1, 6)).toEqual(['{"', 'city', '":"', 'Paris', '"}'].map((a) => ({ tool_calls: [{ index: 0, function: { arguments: a } }] })));
    expect(d[6]).toEqual({ tool_calls: [{ index: 1, id: expect.stringMatching(/^call_/), type: 'function', function: { name: 'get_time', arguments: '' } }] });
    expect(d[6].tool_calls[0].id).not.toBe(d[0].tool_calls[0].id);
    expect(d[7]).toEqual({ tool_calls: [{ index: 1, function: { arguments: '{}' } }] });
    expect(d[8]).toEqual({});
    expect(d).toHaveLength(9);
    expect(dataOf(events)[8].choices[0].finish_reason).toBe('tool_calls');
    const r = await emu.waitForDone();
    expect(r.toolCalls).toEqual([
      { index: 0, id: d[0].tool_calls[0].id, name: 'get_weather', arguments: '{"city":"Paris"}' },
      { index: 1, id: d[6].tool_calls[0].id, name: 'get_time', arguments: '{}' },
    ]);
    expect(r.usage!.completion_tokens).toBe(8); // 1 + 5 fragments, 1 + 1 fragment
    expect(r.text).toBe('');
  });

  it('tool_choice: none answers text, required calls the first tool, a named function is called and finishes with stop; parallel_tool_calls:false keeps one', async () => {
    const emu = await start();
    const tools = [WEATHER_TOOL, TIME_TOOL];
    const run = async (over: Record<string, unknown>) => {
      const { events } = await readSse(await post(emu, chatBody({ tools, ...over })));
      const calls = deltas(events).flatMap((x) => x.tool_calls ?? []).filter((c: Json) => c.id);
      return { names: calls.map((c: Json) => c.function.name), text: deltas(events).map((x) => x.content ?? '').join(''), finish: dataOf(events).find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason };
    };
    const msg = (content: string) => ({ messages: [{ role: 'user', content }] });
    expect(await run({ ...msg('call get_weather'), tool_choice: 'none' })).toEqual({ names: [], text: 'You said: call get_weather', finish: 'stop' });
    expect(await run({ ...msg('nothing to call'), tool_choice: 'required' })).toEqual({ names: ['get_weather'], text: '', finish: 'tool_calls' });
    expect(await run({ ...msg('hi'), tool_choice: { type: 'function', function: { name: 'get_time' } } })).toEqual({ names: ['get_time'], text: '', finish: 'stop' });
    expect(await run({ ...msg('call get_time, call get_weather'), parallel_tool_calls: false })).toEqual({ names: ['get_time'], text: '', finish: 'tool_calls' });
    expect(await run(msg('call unknown_tool now'))).toEqual({ names: [], text: 'You said: call unknown_tool now', finish: 'stop' });
  });

  it('answers a tool result with text naming the tool and its result', async () => {
    const emu = await start();
    const messages = [
      { role: 'user', content: 'call get_weather {"city":"Oslo"} and call get_time' },
      { role: 'assistant', content: null, tool_calls: [
        { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
        { id: 'call_2', type: 'function', function: { name: 'get_time', arguments: '{}' } },
      ] },
      { role: 'tool', tool_call_id: 'call_1', content: '{"temp":3}' },
      { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: '12:00' }] },
    ];
    const { events } = await readSse(await post(emu, chatBody({ messages, tools: [WEATHER_TOOL, TIME_TOOL] })));
    expect(deltas(events).map((x) => x.content ?? '').join('')).toBe('Tool get_weather returned: {"temp":3}. Tool get_time returned: 12:00.');
  });
});

describe('OpenAI SDK (openai@6)', () => {
  it('streams text and the usage chunk; headers reach the SDK', async () => {
    const emu = await start();
    const client = sdk(emu);
    const { data: stream, request_id } = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hi' }], stream: true, stream_options: { include_usage: true } })
      .withResponse();
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined = null;
    const finishes: Array<string | null> = [];
    for await (const chunk of stream) {
      for (const ch of chunk.choices) {
        text += ch.delta.content ?? '';
        finishes.push(ch.finish_reason);
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('You said: Say hi');
    expect(finishes.at(-1)).toBe('stop');
    expect(usage).toMatchObject({ prompt_tokens: Math.ceil(15 / 4), completion_tokens: 4, total_tokens: 8 });
    const r = await emu.waitForDone();
    expect(request_id).toBe(r.requestId);
    expect(r.headers['x-stainless-lang']).toBe('js');
  });

  it('non-stream: a chat.completion object with message, finish_reason and usage; tool calls whole', async () => {
    const emu = await start({ firstTokenDelayMs: 5, interTokenDelayMs: 5 });
    const client = sdk(emu);
    const t0 = performance.now();
    const done = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'one two three' }] });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(5 + 4 * 5 - 2); // 5 pieces
    expect(done).toMatchObject({
      object: 'chat.completion', model: MODEL, service_tier: 'default',
      choices: [{ index: 0, message: { role: 'assistant', content: 'You said: one two three', refusal: null, annotations: [] }, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: 4, completion_tokens: 5, total_tokens: 9 },
    });
    const call = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'call get_weather {"city": "Rome"}' }], tools: [WEATHER_TOOL] });
    const msg = call.choices[0]!.message;
    expect(msg.content).toBeNull();
    expect(msg.tool_calls).toEqual([{ id: expect.stringMatching(/^call_/), type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome"}' } }]);
    expect(call.choices[0]!.finish_reason).toBe('tool_calls');
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ stream: false, outcome: 'completed', chunks: 0, finishReason: 'tool_calls' });
    expect(r.events.map((e) => e.kind)).toEqual(['body']);
    expect(r.responseBody).toEqual(JSON.parse(JSON.stringify(call)));
  });

  it('tool-call round trip: runTools reassembles fragmented arguments, runs the tool, the emulator answers with its result', async () => {
    const emu = await start();
    const client = sdk(emu);
    const seen: unknown[] = [];
    const runner = client.chat.completions.runTools({
      model: MODEL,
      stream: true,
      messages: [{ role: 'user', content: 'Weather? call get_weather {"city":"Paris, France"}' }],
      tools: [{
        type: 'function',
        function: {
          name: 'get_weather',
          description: 'Weather of a city',
          parameters: WEATHER_TOOL.function.parameters,
          parse: (s: string) => JSON.parse(s) as { city: string },
          function: (args: { city: string }) => {
            seen.push(args);
            return { city: args.city, tempC: 18 };
          },
        },
      }],
    });
    expect(await runner.finalContent()).toBe('Tool get_weather returned: {"city":"Paris, France","tempC":18}.');
    expect(seen).toEqual([{ city: 'Paris, France' }]);
    const [first, second] = emu.requests;
    expect(first!.toolCalls).toHaveLength(1);
    const fragments = first!.events.filter((e) => { const j: Json = e.json; return j?.choices?.[0]?.delta?.tool_calls && !j.choices[0].delta.tool_calls[0].id; });
    expect(fragments.length).toBeGreaterThanOrEqual(5);
    const sent = second!.params!.messages;
    expect(sent.map((m) => m.role)).toEqual(['user', 'assistant', 'tool']);
    expect(sent[1]!.tool_calls![0]).toEqual({ id: first!.toolCalls[0]!.id, type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris, France"}' } });
    expect(sent[2]).toEqual({ role: 'tool', tool_call_id: first!.toolCalls[0]!.id, content: '{"city":"Paris, France","tempC":18}' });
  });

  it('the stream helper accumulates tool-call fragments into the final message', async () => {
    const emu = await start();
    emu.script({ toolCalls: [{ name: 'get_weather', arguments: { city: 'Lyon', days: 3 }, id: 'call_fixed', fragments: 3 }] });
    const stream = sdk(emu).chat.completions.stream({ model: MODEL, messages: [{ role: 'user', content: 'x' }], tools: [WEATHER_TOOL] });
    const final = await stream.finalChatCompletion();
    expect(final.choices[0]!.message.tool_calls).toEqual([{ id: 'call_fixed', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Lyon","days":3}' } }]);
    const r = await emu.waitForDone();
    expect(r.pieces).toBe(1 + Math.ceil('{"city":"Lyon","days":3}'.length / 3));
    expect(r.replySource).toBe('script');
  });

  it('maps HTTP errors to the SDK error classes with status, code and request id; 429 is retried after retry-after-ms', async () => {
    const emu = await start({ models: [MODEL] });
    const body = { model: MODEL, messages: [{ role: 'user' as const, content: 'hi' }] };
    const auth = await caught(sdk(emu, { apiKey: 'sk-wrong-key-0000' }).chat.completions.create(body));
    expect(auth).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(auth).toMatchObject({ status: 401, code: 'invalid_api_key', requestID: emu.requests[0]!.requestId });

    const client = sdk(emu);
    const empty = await caught(client.chat.completions.create({ ...body, tools: [] }));
    expect(empty).toBeInstanceOf(OpenAI.BadRequestError);
    expect(empty).toMatchObject({ status: 400, message: "400 [] is too short - 'tools'", type: 'invalid_request_error', param: null, code: null });

    const unknown = await caught(client.chat.completions.create({ ...body, model: 'gpt-9' }));
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect(unknown).toMatchObject({ status: 404, code: 'model_not_found', message: '404 The model `gpt-9` does not exist or you do not have access to it.' });

    emu.faultNext({ status: 429 });
    const limited = await caught(client.chat.completions.create(body));
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    expect((limited as InstanceType<typeof OpenAI.APIError>).headers?.get('retry-after')).toBe('1');

    emu.faultNext({ status: 500 });
    expect(await caught(client.chat.completions.create(body))).toBeInstanceOf(OpenAI.InternalServerError);
    emu.faultNext({ status: 503, headers: { 'x-should-retry': 'false' } });
    const overloaded = await caught(sdk(emu, { maxRetries: 2 }).chat.completions.create(body));
    expect(overloaded).toMatchObject({ status: 503, type: 'server_error' }); // x-should-retry:false: no retry

    emu.faultNext({ status: 429, retryAfterMs: 10, error: { code: 'insufficient_quota' } });
    const ok = await sdk(emu, { maxRetries: 1 }).chat.completions.create(body);
    expect(ok.choices[0]!.message.content).toBe('You said: hi');
    expect(emu.requests.map((r) => r.status)).toEqual([401, 400, 404, 429, 500, 503, 429, 200]);
    expect(emu.requests[6]!.error).toMatchObject({ type: 'insufficient_quota', code: 'insufficient_quota' });
  });

  it('a mid-stream data: {"error"} makes the SDK throw an APIError without status', async () => {
    const emu = await start();
    emu.faultNext({ errorAfterChunks: 3, streamError: { message: 'The model crashed.', type: 'server_error', code: 'model_error' } });
    const stream = await sdk(emu).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'a b c d e' }], stream: true });
    const got: string[] = [];
    const err = await caught((async () => {
      for await (const c of stream) got.push(c.choices[0]?.delta.content ?? '');
    })());
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err).toMatchObject({ status: undefined, message: 'The model crashed.', code: 'model_error', type: 'server_error' });
    expect(got).toEqual(['', 'You', ' said:']);
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ outcome: 'failed', chunks: 3, error: { message: 'The model crashed.', code: 'model_error' } });
    expect(r.events.at(-1)!.kind).toBe('error');
  });

  it('a client abort mid-stream is recorded with its time and stops the stream', async () => {
    const emu = await start({ interTokenDelayMs: 20 });
    const stream = await sdk(emu).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'w '.repeat(40) }], stream: true });
    let n = 0;
    for await (const _ of stream) {
      if (++n === 3) stream.controller.abort();
    }
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ outcome: 'aborted', aborted: true, finished: true });
    expect(r.abortedAtMs).toBeGreaterThan(0);
    const chunks = r.chunks;
    expect(chunks).toBeGreaterThanOrEqual(3);
    expect(chunks).toBeLessThan(10);
    await sleep(60);
    expect(r.chunks).toBe(chunks);
  });

  it('models.list and models.retrieve', async () => {
    const emu = await start({ models: ['gpt-4o-mini', 'gpt-4.1-mini'] });
    const client = sdk(emu);
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toEqual(['gpt-4o-mini', 'gpt-4.1-mini']);
    expect(await client.models.retrieve('gpt-4o-mini')).toMatchObject({ id: 'gpt-4o-mini', object: 'model', owned_by: 'system' });
    expect(await caught(client.models.retrieve('nope'))).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await caught(sdk(emu, { apiKey: 'bad-key-123456789' }).models.list())).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(emu.modelRequests.map((r) => r.status)).toEqual([200, 200, 404, 401]);
    expect(emu.requests).toHaveLength(0);
  });
});

describe('routes, auth and request validation', () => {
  it('401 without a Bearer key (code null) and with a wrong key (invalid_api_key); 404/405 on routes', async () => {
    const emu = await start();
    const a = await post(emu, chatBody(), { headers: { Authorization: '' } });
    expect(a.status).toBe(401);
    expect(await errorOf(a)).toEqual({ message: OPENAI_MISSING_KEY_MESSAGE, type: 'invalid_request_error', param: null, code: null });
    const b = await post(emu, chatBody(), { headers: { Authorization: 'Bearer sk-wrong-key-123456' } });
    expect(b.status).toBe(401);
    expect(b.headers.get('x-ratelimit-limit-requests')).toBeNull();
    expect((await errorOf(b)).code).toBe('invalid_api_key');
    const c = await post(emu, chatBody(), { url: `${emu.url}/v1/chat/complete` });
    expect(c.status).toBe(404);
    expect((await errorOf(c)).message).toBe('Invalid URL (POST /v1/chat/complete)');
    const d = await fetch(emu.chatUrl, { headers: { Authorization: `Bearer ${KEY}` } });
    expect(d.status).toBe(405);
    expect((await errorOf(d)).message).toBe('Invalid method for URL (GET /v1/chat/completions)');
    expect(emu.requests.map((r) => [r.status, r.outcome, r.authorized, r.apiKey])).toEqual([
      [401, 'rejected', false, null],
      [401, 'rejected', false, 'sk-wrong-key-123456'],
    ]);
  });

  it('400s with the vendor messages, first problem only; rate-limit headers on authorized rejections', async () => {
    const emu = await start({ models: [MODEL] });
    const user = { role: 'user', content: 'hi' };
    const call = { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{}' } };
    const cases: Array<[unknown, number, string, string | null, string | null]> = [
      [{ messages: [user] }, 400, 'you must provide a model parameter', null, null],
      [{ model: MODEL }, 400, "Missing required parameter: 'messages'.", 'messages', 'missing_required_parameter'],
      [{ model: MODEL, messages: 'hi' }, 400, "Invalid type for 'messages': expected an array of objects, but got a string instead.", 'messages', 'invalid_type'],
      [{ model: MODEL, messages: [] }, 400, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", 'messages', 'empty_array'],
      [{ model: MODEL, messages: [{ role: 'bot', content: 'x' }] }, 400, "Invalid value: \"bot\". Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.", 'messages[0].role', 'invalid_value'],
      [{ model: MODEL, messages: [{ role: 'user' }] }, 400, "Missing required parameter: 'messages[0].content'.", 'messages[0].content', 'missing_required_parameter'],
      [{ model: MODEL, messages: [user], temperature_x: 1 }, 400, 'Unrecognized request argument supplied: temperature_x', null, null],
      [{ model: MODEL, messages: [{ ...user, extra_content: { livekit: {} } }] }, 400, "Unknown parameter: 'messages[0].extra_content'.", 'messages[0].extra_content', 'unknown_parameter'],
      [{ model: MODEL, messages: [user, { role: 'assistant', content: null, tool_calls: [{ ...call, extra_content: {} }] }, { role: 'tool', tool_call_id: 'call_1', content: 'x' }] }, 400, "Unknown parameter: 'messages[1].tool_calls[0].extra_content'.", 'messages[1].tool_calls[0].extra_content', 'unknown_parameter'],
      [{ model: MODEL, messages: [user, { role: 'tool', tool_call_id: 'call_1', content: 'x' }] }, 400, "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.", 'messages.[1].role', null],
      [{ model: MODEL, messages: [user, { role: 'assistant', content: null, tool_calls: [call] }, user] }, 400, "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: call_1", 'messages.[1].role', null],
      [{ model: MODEL, messages: [{ role: 'tool', content: 'x' }] }, 400, "Missing required parameter: 'messages[0].tool_call_id'.", 'messages[0].tool_call_id', 'missing_required_parameter'],
      [{ model: MODEL, messages: [user], tools: [] }, 400, "[] is too short - 'tools'", null, null],
      [{ model: MODEL, messages: [user], tools: Array.from({ length: 129 }, (_, i) => ({ type: 'function', function: { name: `t${i}` } })) }, 400, "Invalid 'tools': array too long. Expected an array with maximum length 128, but got an array with length 129 instead.", 'tools', 'array_above_max_length'],
      [{ model: MODEL, messages: [user], tools: [{ type: 'function', function: { name: 'bad name' } }] }, 400, "Invalid 'tools[0].function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.", 'tools[0].function.name', 'invalid_value'],
      [{ model: MODEL, messages: [user], tool_choice: 'auto' }, 400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", 'tool_choice', null],
      [{ model: MODEL, messages: [user], stream_options: { include_usage: true } }, 400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options', null],
      [{ model: MODEL, messages: [user], max_tokens: 0 }, 400, "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.", 'max_tokens', 'integer_below_min_value'],
      [{ model: 'gpt-unknown', messages: [user] }, 404, 'The model `gpt-unknown` does not exist or you do not have access to it.', null, 'model_not_found'],
    ];
    for (const [json, status, message, param, code] of cases) {
      const res = await post(emu, json);
      expect([res.status, await errorOf(res)]).toEqual([status, { message, type: 'invalid_request_error', param, code }]);
      expect(res.headers.get('x-ratelimit-limit-requests')).toBe('5000');
    }
    const bad = await post(emu, null, { raw: '{"model": ' });
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).message).toBe(OPENAI_INVALID_JSON_MESSAGE);
    expect(emu.requests.every((r) => r.outcome === 'rejected' && r.authorized && r.params === null)).toBe(true);
    expect(emu.requests[0]!.body).toEqual(cases[0]![0]);
  });

  it('a compatible vendor (not strict) accepts unknown keys such as extra_content and records them', async () => {
    const emu = await start({ vendor: 'generic' });
    const res = await post(emu, chatBody({ messages: [{ role: 'user', content: 'hi', extra_content: { google: { thought_signature: 'x' } } }], top_k: 5 }));
    expect(res.status).toBe(200);
    await readSse(res);
    expect((await emu.waitForDone()).params!.unknown).toEqual(['top_k']);
  });
});

describe('scripts and responders', () => {
  it('scripted replies answer the next accepted requests in order, then the default rules resume', async () => {
    const emu = await start();
    emu.script(
      { text: ['Hel', 'lo', ' there'], finishReason: 'length', usage: { prompt_tokens: 100, cached_tokens: 64 } },
      { text: 'Second answer.', usage: null, model: 'gpt-4.1-mini-2025-04-14' },
    );
    expect(emu.pendingScripts).toBe(2);
    const bad = await post(emu, chatBody({ tools: [] })); // rejected: does not consume a script
    expect(bad.status).toBe(400);
    const a = await readSse(await post(emu, chatBody()));
    expect(deltas(a.events).map((x) => x.content)).toEqual(['', 'Hel', 'lo', ' there', undefined]);
    expect(dataOf(a.events).at(-2).choices[0].finish_reason).toBe('length');
    expect(dataOf(a.events).at(-1).usage).toMatchObject({ prompt_tokens: 100, completion_tokens: 3, total_tokens: 103, prompt_tokens_details: { cached_tokens: 64 } });
    const b = await readSse(await post(emu, chatBody()));
    expect(dataOf(b.events).every((c) => c.choices.length === 1 && !('usage' in c) && c.model === 'gpt-4.1-mini-2025-04-14')).toBe(true);
    expect(b.events.at(-1)!.kind).toBe('done');
    const c = await readSse(await post(emu, chatBody()));
    expect(deltas(c.events).map((x) => x.content ?? '').join('')).toBe('You said: hello world');
    expect(emu.requests.map((r) => r.replySource)).toEqual([null, 'script', 'script', 'default']);
    expect(emu.requests[2]!.expectedUsage).toBeNull();
  });

  it('scripted steps: comments, delays, verbatim pieces, a tool call with exact fragments, then a mid-stream error', async () => {
    const emu = await start();
    emu.script({
      steps: [
        { comment: 'processing' },
        { text: 'Let me check.' },
        { delayMs: 40 },
        { toolCall: { name: 'get_weather', arguments: '{"city":"Nice"}', id: 'call_abc', fragments: ['{"city"', ':"Nice"}'] } },
        { error: { message: 'Upstream overloaded', type: 'server_error', code: null } },
      ],
    });
    const { events, raw } = await readSse(await post(emu, chatBody({ tools: [WEATHER_TOOL] })));
    expect(events.map((e) => e.kind)).toEqual(['comment', 'data', 'data', 'data', 'data', 'data', 'data']);
    expect(events[0]!.text).toBe(': processing');
    const d = deltas(events);
    expect(d.slice(0, 2)).toEqual([{ role: 'assistant', content: '', refusal: null }, { content: 'Let me check.' }]);
    expect(d[2]).toEqual({ tool_calls: [{ index: 0, id: 'call_abc', type: 'function', function: { name: 'get_weather', arguments: '' } }] });
    expect(d[3]!.tool_calls[0].function.arguments).toBe('{"city"');
    expect(events[3]!.t - events[2]!.t).toBeGreaterThanOrEqual(30);
    expect(events.at(-1)!.json).toEqual({ error: { message: 'Upstream overloaded', type: 'server_error', param: null, code: null } });
    expect(raw.includes('[DONE]')).toBe(false);
    expect(await emu.waitForDone()).toMatchObject({ outcome: 'failed', pieces: 4, finishReason: null, usage: null });
    expect(() => emu.script({ toolCalls: [{ name: 'x', arguments: '{}', fragments: ['{'] }] })).not.toThrow();
    const res = await post(emu, chatBody());
    expect(res.status).toBe(500); // fragments that do not join to the arguments: an emulator failure, reported
    expect((await errorOf(res)).message).toMatch(/fragments do not join/);
  });

  it('a responder function sees the request; undefined falls back to the default; httpError answers an error', async () => {
    const emu = await start();
    emu.setResponder((ctx) => {
      if (ctx.lastUserText === 'fail') return { httpError: { status: 429, retryAfterMs: 2500, error: { code: 'insufficient_quota' } } };
      if (ctx.lastUserText.startsWith('upper')) return { text: ctx.lastUserText.toUpperCase() };
      expect(ctx.defaultReply()).toEqual({ text: `You said: ${ctx.lastUserText}` });
      return undefined;
    });
    const ask = async (content: string) => readSse(await post(emu, chatBody({ messages: [{ role: 'user', content }] })));
    expect(deltas((await ask('upper case')).events).map((x) => x.content ?? '').join('')).toBe('UPPER CASE');
    expect(deltas((await ask('plain')).events).map((x) => x.content ?? '').join('')).toBe('You said: plain');
    const res = await post(emu, chatBody({ messages: [{ role: 'user', content: 'fail' }] }));
    expect([res.status, res.headers.get('retry-after'), res.headers.get('retry-after-ms')]).toEqual([429, '3', '2500']);
    expect(await errorOf(res)).toMatchObject({ type: 'insufficient_quota', code: 'insufficient_quota' });
    expect(emu.requests.map((r) => r.replySource)).toEqual(['responder', 'default', 'responder']);
    emu.setResponder(() => {
      throw new Error('boom');
    });
    const broken = await post(emu, chatBody());
    expect(broken.status).toBe(500);
    expect((await errorOf(broken)).message).toBe('emulator responder failed: boom');
    emu.setResponder(null);
    expect((await post(emu, chatBody())).status).toBe(200);
  });

  it('max_completion_tokens cuts the pieces (finish length); cachedTokens and modelAliases shape the answer', async () => {
    const emu = await start({ cachedTokens: (_p, prompt) => prompt - 1, modelAliases: { [MODEL]: 'gpt-4.1-mini-2025-04-14' } });
    const { events } = await readSse(await post(emu, chatBody({ messages: [{ role: 'user', content: 'one two three four five six' }], max_completion_tokens: 3 })));
    expect(deltas(events).map((x) => x.content ?? '').join('')).toBe('You said: one');
    const chunks = dataOf(events);
    expect(chunks.at(-2).choices[0].finish_reason).toBe('length');
    expect(chunks.at(-1).usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 3, prompt_tokens_details: { cached_tokens: 6 } });
    expect(chunks.every((c) => c.model === 'gpt-4.1-mini-2025-04-14')).toBe(true);
  });
});

describe('timing and faults', () => {
  it('headers at once, first chunk after firstTokenDelayMs, pieces interTokenDelayMs apart', async () => {
    const emu = await start({ firstTokenDelayMs: 80, interTokenDelayMs: 25 });
    const t0 = performance.now();
    const res = await post(emu, chatBody({ messages: [{ role: 'user', content: 'a b' }] }));
    expect(performance.now() - t0).toBeLessThan(70);
    const { events } = await readSse(res);
    const data = events.filter((e) => e.kind === 'data');
    const r = await emu.waitForDone();
    expect(r.timing.headersMs!).toBeLessThan(40);
    expect(r.timing.firstTokenMs! - r.timing.headersMs!).toBeGreaterThanOrEqual(78);
    expect(r.events[1]!.t - r.events[0]!.t).toBeLessThan(5); // role chunk and first piece together
    const pieceTimes = r.events.filter((e) => (e.json as Json)?.choices?.[0]?.delta?.content).map((e) => e.t);
    expect(pieceTimes).toHaveLength(4);
    // absolute schedule: piece i is due 80 + 25 i ms after the headers (a late piece does not shift the next ones)
    pieceTimes.forEach((t, i) => expect(t).toBeGreaterThanOrEqual(r.timing.headersMs! + 80 + 25 * i - 2));
    expect(data).toHaveLength(7);
  });

  it('responseDelayMs holds even the headers; faultNext applies once; server-wide faults until resetFaults', async () => {
    const emu = await start();
    emu.faultNext({ responseDelayMs: 120 });
    const t0 = performance.now();
    const res = await post(emu, chatBody());
    expect(performance.now() - t0).toBeGreaterThanOrEqual(110);
    await readSse(res);
    emu.faults.status = 502;
    for (let i = 0; i < 2; i++) {
      const r = await post(emu, chatBody());
      expect(r.status).toBe(502);
      expect((await errorOf(r)).type).toBe('server_error');
    }
    emu.resetFaults();
    const ok = await post(emu, chatBody());
    expect(ok.status).toBe(200);
    await readSse(ok);
    expect(emu.requests.map((r) => [r.status, r.faults.responseDelayMs])).toEqual([[200, 120], [502, 0], [502, 0], [200, 0]]);
  });

  it('keepAliveEveryMs: `: keep-alive` comments while the first token is slow; the SDK ignores them', async () => {
    const emu = await start();
    emu.faultNext({ firstTokenDelayMs: 230, keepAliveEveryMs: 50 });
    const res = await post(emu, chatBody());
    const { events } = await readSse(res);
    const firstData = events.findIndex((e) => e.kind === 'data');
    expect(firstData).toBe(4);
    expect(events.slice(0, 4).every((e) => e.kind === 'comment' && e.text + '\n\n' === KEEP_ALIVE_COMMENT)).toBe(true);
    expect(events.slice(firstData).some((e) => e.kind === 'comment')).toBe(false);

    emu.faultNext({ firstTokenDelayMs: 120, keepAliveEveryMs: 30 });
    const stream = await sdk(emu).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'slow' }], stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
    expect(text).toBe('You said: slow');
    expect(emu.requests[1]!.events.filter((e) => e.kind === 'comment').length).toBe(3);
  });

  it('dropAfterChunks: exactly N chunks, then the socket is destroyed without [DONE]; the SDK throws', async () => {
    const emu = await start();
    emu.faultNext({ dropAfterChunks: 3 });
    const { events, raw, error } = await readSse(await post(emu, chatBody()));
    expect(error).toBeInstanceOf(Error);
    expect(events.filter((e) => e.kind === 'data')).toHaveLength(3);
    expect(raw.includes('[DONE]')).toBe(false);
    expect(await emu.waitForDone()).toMatchObject({ outcome: 'dropped', chunks: 3, text: 'You said:', aborted: false });

    emu.faultNext({ dropAfterChunks: 7 }); // role + 5 pieces + finish: everything but the usage chunk
    const stream = await sdk(emu).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x y z' }], stream: true, stream_options: { include_usage: true } });
    const err = await caught((async () => {
      for await (const _ of stream) { /* drain */ }
    })());
    expect(err).toBeInstanceOf(Error);
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ outcome: 'dropped', chunks: 7, finishReason: 'stop', usage: null, expectedUsage: { completion_tokens: 5 } });
  });

  it('stallAfterChunks / deadAir: silence on an open response; the client abort is recorded', async () => {
    const emu = await start();
    for (const fault of [{ stallAfterChunks: 2 }, { deadAir: true }]) {
      emu.faultNext(fault);
      const ac = new AbortController();
      const res = await post(emu, chatBody(), { signal: ac.signal });
      expect(res.status).toBe(200);
      const reading = readSse(res);
      const r = await emu.waitFor(() => emu.requests.at(-1)?.stalled && emu.requests.at(-1));
      await sleep(60);
      expect([r.finished, r.outcome]).toEqual([false, 'pending']);
      ac.abort();
      const got = await reading;
      expect(got.error).toBeTruthy();
      expect(got.events.filter((e) => e.kind === 'data')).toHaveLength('deadAir' in fault ? 0 : 2);
      await emu.waitForDone(r);
      expect(r).toMatchObject({ outcome: 'aborted', aborted: true, stalled: true, chunks: 'deadAir' in fault ? 0 : 2 });
      expect(r.abortedAtMs!).toBeGreaterThanOrEqual(50);
    }
  });

  it('omitDone: the body ends after the last chunk; the SDK still finishes normally', async () => {
    const emu = await start();
    emu.faultNext({ omitDone: true });
    const { raw, error } = await readSse(await post(emu, chatBody()));
    expect([error, raw.includes('[DONE]'), raw.endsWith('\n\n')]).toEqual([null, false, true]);
    emu.faultNext({ omitDone: true });
    const stream = await sdk(emu).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'fine' }], stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
    expect(text).toBe('You said: fine');
    expect(emu.requests.map((r) => r.outcome)).toEqual(['completed', 'completed']);
  });

  it('non-stream faults: drop = reset without answer, errorAfterChunks = 500, keep-alive = blank lines before the JSON', async () => {
    const emu = await start();
    const body = chatBody({ stream: undefined, stream_options: undefined });
    emu.faultNext({ dropAfterChunks: 0 });
    expect(await caught(post(emu, body))).toBeInstanceOf(Error);
    expect(await emu.waitForDone()).toMatchObject({ outcome: 'dropped', status: null });
    emu.faultNext({ errorAfterChunks: 0 });
    const e = await post(emu, body);
    expect(e.status).toBe(500);
    expect((await errorOf(e)).type).toBe('server_error');
    emu.faultNext({ keepAliveEveryMs: 20, firstTokenDelayMs: 90 });
    const res = await post(emu, body);
    const text = await res.text();
    expect(text.startsWith('\n\n\n\n{')).toBe(true);
    expect(JSON.parse(text).choices[0].message.content).toBe('You said: hello world');
    emu.faultNext({ keepAliveEveryMs: 20, firstTokenDelayMs: 50 });
    const viaSdk = await sdk(emu).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'ok' }] });
    expect(viaSdk.choices[0]!.message.content).toBe('You said: ok');
    expect(emu.requests.map((r) => r.outcome)).toEqual(['dropped', 'failed', 'completed', 'completed']);
  });

  it('rate limits: requests and tokens buckets answer 429 with retry-after and x-ratelimit headers', async () => {
    const emu = await start({ rateLimits: { requestsPerMinute: 2, tokensPerMinute: 1000 } });
    const remaining: Array<string | null> = [];
    for (let i = 0; i < 2; i++) {
      const r = await post(emu, chatBody());
      remaining.push(r.headers.get('x-ratelimit-remaining-requests'));
      await readSse(r);
    }
    expect(remaining).toEqual(['1', '0']);
    const limited = await post(emu, chatBody());
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('30');
    expect(Number(limited.headers.get('retry-after-ms'))).toBeGreaterThan(29_000);
    expect(limited.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    expect(limited.headers.get('x-ratelimit-reset-requests')).toMatch(/^(59\.\d+s|1m0s)$/);
    const err = await errorOf(limited);
    expect(err).toMatchObject({ type: 'requests', code: 'rate_limit_exceeded', param: null });
    expect(err.message).toMatch(/^Rate limit reached for gpt-4.1-mini in organization org-emulator on requests per min \(RPM\): Limit 2, Used 2, Requested 1\. Please try again in \d+(\.\d+)?s\./);

    const other = await start({ rateLimits: { requestsPerMinute: 100, tokensPerMinute: 10 } });
    const big = await post(other, chatBody({ messages: [{ role: 'user', content: 'x'.repeat(60) }] }));
    expect(big.status).toBe(429);
    expect((await errorOf(big)).message).toMatch(/on tokens per min \(TPM\): Limit 10, Used 0, Requested 15\./);
    const none = await start({ rateLimits: null });
    const free = await post(none, chatBody());
    expect(free.headers.get('x-ratelimit-limit-requests')).toBeNull();
    await readSse(free);
  });

  it('close() ends streams in progress and clears their timers', async () => {
    const emu = await startOpenAiChatEmulator({ firstTokenDelayMs: 0, interTokenDelayMs: 50 });
    const res = await post(emu, chatBody({ messages: [{ role: 'user', content: 'w '.repeat(100) }] }));
    const reading = readSse(res);
    await emu.waitFor(() => (emu.requests[0]!.chunks >= 2 ? true : undefined));
    emu.faultNext({ responseDelayMs: 60_000 });
    void post(emu, chatBody()).catch(() => undefined);
    await emu.waitForRequest(2);
    const t0 = performance.now();
    await emu.close();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect((await reading).error).toBeTruthy();
    expect(emu.requests.map((r: ChatRequestRecord) => [r.outcome, r.finished])).toEqual([['shutdown', true], ['shutdown', true]]);
    const n = emu.requests[0]!.chunks;
    await sleep(120);
    expect(emu.requests[0]!.chunks).toBe(n);
  });
});

describe('OpenAI-compatible vendor presets', () => {
  it('gemini: /v1beta/openai base path, role on the first content delta, whole tool calls with thought signatures', async () => {
    const emu = await start({ vendor: 'gemini' });
    expect(emu.baseUrl).toBe(`${emu.url}/v1beta/openai`);
    const client = sdk(emu, { baseURL: `${emu.url}/v1beta/openai/` });
    const stream = await client.chat.completions.create({ model: 'gemini-2.5-flash', messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true } });
    const chunks: Json[] = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: 'You' });
    expect(chunks.every((c) => !('obfuscation' in c) && !('service_tier' in c))).toBe(true);
    expect(chunks.at(-1).usage).toMatchObject({ completion_tokens: 3 });
    const { events } = await readSse(await post(emu, chatBody({ model: 'gemini-2.5-flash', messages: [{ role: 'user', content: 'call get_weather {"city":"Turin"}' }], tools: [WEATHER_TOOL] })));
    const d = deltas(events);
    expect(d[0]).toEqual({
      role: 'assistant',
      tool_calls: [{ index: 0, id: expect.stringMatching(/^call_/), type: 'function', function: { name: 'get_weather', arguments: '{"city":"Turin"}' }, extra_content: { google: { thought_signature: expect.any(String) } } }],
    });
    expect(d[1]).toEqual({});
    const wrong = await post(emu, chatBody(), { url: `${emu.url}/v1/chat/completions` });
    expect(wrong.status).toBe(404);
    await wrong.text();
  });

  it('groq: /openai/v1, x_groq id on the first chunk and usage on the finish chunk', async () => {
    const emu = await start({ vendor: 'groq' });
    expect(emu.chatUrl).toBe(`${emu.url}/openai/v1/chat/completions`);
    const { events } = await readSse(await post(emu, chatBody({ model: 'llama-3.3-70b-versatile', stream_options: undefined })));
    const chunks = dataOf(events);
    expect(chunks[0].x_groq).toEqual({ id: expect.stringMatching(/^req_[a-z0-9]{26}$/) });
    const fin = chunks.at(-1);
    expect(fin.choices[0].finish_reason).toBe('stop');
    expect(fin.x_groq).toMatchObject({ id: chunks[0].x_groq.id, usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } });
    expect(chunks.slice(1, -1).every((c) => !('x_groq' in c))).toBe(true);
  });

  it('deepseek: served at the root and under /v1; mistral: usage on the finish chunk; quirks and base paths override presets', async () => {
    const ds = await start({ vendor: 'deepseek' });
    for (const url of [`${ds.url}/chat/completions`, `${ds.url}/v1/chat/completions`]) {
      const res = await post(ds, chatBody({ model: 'deepseek-chat' }), { url });
      expect(res.status).toBe(200);
      await readSse(res);
    }
    const mi = await start({ vendor: 'mistral' });
    const chunks = dataOf((await readSse(await post(mi, chatBody({ model: 'mistral-small-latest' })))).events);
    expect(chunks.at(-1)).toMatchObject({ choices: [{ finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 4 } });
    expect(chunks.every((c) => c.choices.length === 1)).toBe(true);
    const custom = await start({ quirks: { basePaths: ['/custom/v2/'], usageChunk: 'never', role: 'none' } });
    expect(custom.chatUrl).toBe(`${custom.url}/custom/v2/chat/completions`);
    const c = dataOf((await readSse(await post(custom, chatBody()))).events);
    expect(c.map((x) => x.choices[0].delta)).toEqual([{ content: 'You' }, { content: ' said:' }, { content: ' hello' }, { content: ' world' }, {}]);
    expect(c.every((x) => !('usage' in x))).toBe(true);
    const viaSdk = await sdk(custom).chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'no role' }], stream: true });
    let text = '';
    for await (const x of viaSdk) text += x.choices[0]?.delta.content ?? '';
    expect(text).toBe('You said: no role');
  });
});
