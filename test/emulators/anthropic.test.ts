import { afterEach, describe, expect, it } from 'vitest';
import {
  ANTHROPIC_VERSION,
  DEFAULT_ANTHROPIC_API_KEY,
  IMAGE_TOKENS,
  countInputTokens,
  parseMessagesBody,
  startAnthropicEmulator,
  wordPieces,
  type AnthropicEmulator,
  type AnthropicEmulatorOptions,
  type Message,
} from './anthropic.ts';

const KEY = DEFAULT_ANTHROPIC_API_KEY;
const MODEL = 'claude-sonnet-4-5';

const emulators: AnthropicEmulator[] = [];
const aborts: AbortController[] = [];

afterEach(async () => {
  for (const a of aborts.splice(0)) a.abort();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: AnthropicEmulatorOptions = {}): Promise<AnthropicEmulator> {
  const emu = await startAnthropicEmulator({ firstTokenDelayMs: 5, interTokenDelayMs: 1, ...opts });
  emulators.push(emu);
  return emu;
}

type Json = Record<string, unknown>;

function body(over: Json = {}): Json {
  return { model: MODEL, max_tokens: 256, messages: [{ role: 'user', content: 'hello world' }], ...over };
}

const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Get the current weather in a given location',
  input_schema: {
    type: 'object',
    properties: { location: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer' } },
    required: ['location'],
  },
};

function post(
  emu: AnthropicEmulator,
  json: unknown,
  o: { headers?: Record<string, string | null>; raw?: string; signal?: AbortSignal } = {},
): Promise<Response> {
  const ac = new AbortController();
  aborts.push(ac);
  const headers: Record<string, string> = {};
  const all: Record<string, string | null> = {
    'x-api-key': KEY,
    'anthropic-version': ANTHROPIC_VERSION,
    'content-type': 'application/json',
    ...(o.headers ?? {}),
  };
  for (const [k, v] of Object.entries(all)) if (v !== null) headers[k] = v;
  return fetch(emu.messagesUrl, { method: 'POST', headers, body: o.raw ?? JSON.stringify(json), signal: o.signal ?? ac.signal });
}

interface ErrorBody {
  type: string;
  error: { type: string; message: string };
  request_id: string;
}

async function errorOf(res: Response): Promise<ErrorBody['error']> {
  expect(res.headers.get('content-type')).toBe('application/json');
  const j = (await res.json()) as ErrorBody;
  expect(Object.keys(j)).toEqual(['type', 'error', 'request_id']);
  expect(j.type).toBe('error');
  expect(Object.keys(j.error)).toEqual(['type', 'message']);
  expect(j.request_id).toMatch(/^req_[A-Za-z0-9]{24}$/);
  expect(res.headers.get('request-id')).toBe(j.request_id);
  return j.error;
}

interface Sse {
  event: string;
  data: Json;
}

/** Read an SSE body: every event must have one `event:` and one `data:` line, the name equal to data.type. */
async function readSse(res: Response, o: { onEvent?: (e: Sse) => void } = {}): Promise<{ events: Sse[]; error: unknown }> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const events: Sse[] = [];
  let buf = '';
  const take = () => {
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const chunk = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const lines = chunk.split('\n');
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(/^event: [a-z_]+$/);
      expect(lines[1]!.startsWith('data: ')).toBe(true);
      const e = { event: lines[0]!.slice('event: '.length), data: JSON.parse(lines[1]!.slice('data: '.length)) as Json };
      expect(e.data['type']).toBe(e.event);
      events.push(e);
      o.onEvent?.(e);
    }
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      take();
    }
    expect(buf).toBe('');
    return { events, error: null };
  } catch (error) {
    return { events, error };
  }
}

function textOf(events: Sse[]): string {
  return events
    .filter((e) => e.event === 'content_block_delta' && (e.data['delta'] as Json)['type'] === 'text_delta')
    .map((e) => (e.data['delta'] as Json)['text'] as string)
    .join('');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------

describe('auth, version, routes', () => {
  it('401 without or with a wrong x-api-key, 400 without or with an unknown anthropic-version', async () => {
    const emu = await start();
    const a = await post(emu, body(), { headers: { 'x-api-key': null } });
    expect(a.status).toBe(401);
    expect(await errorOf(a)).toEqual({ type: 'authentication_error', message: 'x-api-key header is required' });
    const b = await post(emu, body(), { headers: { 'x-api-key': 'sk-ant-wrong' } });
    expect(b.status).toBe(401);
    expect(await errorOf(b)).toEqual({ type: 'authentication_error', message: 'invalid x-api-key' });
    const c = await post(emu, body(), { headers: { 'anthropic-version': null } });
    expect(c.status).toBe(400);
    expect(await errorOf(c)).toEqual({ type: 'invalid_request_error', message: 'anthropic-version: header is required' });
    const d = await post(emu, body(), { headers: { 'anthropic-version': '2024-01-01' } });
    expect(d.status).toBe(400);
    expect((await errorOf(d)).message).toBe('anthropic-version: "2024-01-01" is not a valid version');
    const ok = await post(emu, body(), { headers: { 'anthropic-version': '2023-01-01', 'anthropic-beta': 'prompt-caching-2024-07-31, context-1m-2025-08-07' } });
    expect(ok.status).toBe(200);
    await ok.json();
    expect(emu.requests.map((r) => [r.status, r.outcome, r.authorized, r.apiKey])).toEqual([
      [401, 'rejected', false, null],
      [401, 'rejected', false, 'sk-ant-wrong'],
      [400, 'rejected', true, KEY],
      [400, 'rejected', true, KEY],
      [200, 'completed', true, KEY],
    ]);
    expect(emu.requests[4]!.betas).toEqual(['prompt-caching-2024-07-31', 'context-1m-2025-08-07']);
    expect(emu.requests[4]!.anthropicVersion).toBe('2023-01-01');
  });

  it('404 not_found_error on other paths, 405 on another method, 403 for a key without the model', async () => {
    const emu = await start({ apiKeys: [KEY, 'sk-ant-small'], keyModels: { 'sk-ant-small': ['claude-haiku-4-5'] } });
    const a = await fetch(`${emu.url}/v1/complete`, { method: 'POST', body: '{}' });
    expect(a.status).toBe(404);
    expect((await errorOf(a)).type).toBe('not_found_error');
    const b = await fetch(emu.messagesUrl, { headers: { 'x-api-key': KEY } });
    expect(b.status).toBe(405);
    expect((await errorOf(b)).type).toBe('invalid_request_error');
    expect(emu.requests).toHaveLength(0);
    const c = await post(emu, body(), { headers: { 'x-api-key': 'sk-ant-small' } });
    expect(c.status).toBe(403);
    expect(await errorOf(c)).toEqual({ type: 'permission_error', message: 'Your API key does not have permission to use the specified resource.' });
    const d = await post(emu, body({ model: 'claude-haiku-4-5' }), { headers: { 'x-api-key': 'sk-ant-small' } });
    expect(d.status).toBe(200);
    await d.json();
  });
});

describe('request validation', () => {
  it('answers 400 invalid_request_error with the first problem', async () => {
    const emu = await start();
    const user = (content: unknown) => ({ role: 'user', content });
    const toolUse = { type: 'tool_use', id: 'toolu_01A', name: 'get_weather', input: { location: 'Paris' } };
    const cases: Array<[Json, string | RegExp]> = [
      [body({ max_tokens: undefined }), 'max_tokens: Field required'],
      [body({ max_tokens: 0 }), 'max_tokens: Input should be greater than or equal to 1'],
      [body({ max_tokens: 1.5 }), /^max_tokens: Input should be a valid integer/],
      [body({ max_tokens: 200000 }), `max_tokens: 200000 > 128000, which is the maximum allowed number of output tokens for ${MODEL}`],
      [body({ model: undefined }), 'model: Field required'],
      [body({ messages: undefined }), 'messages: Field required'],
      [body({ messages: [] }), 'messages: at least one message is required'],
      [body({ messages: [{ role: 'assistant', content: 'hi' }] }), 'messages: first message must use the "user" role'],
      [body({ messages: [{ role: 'bot', content: 'hi' }] }), "messages.0.role: Input should be 'user' or 'assistant'"],
      [body({ messages: [{ role: 'system', content: 'hi' }] }), /^messages: Unexpected role "system"/],
      [body({ messages: [user('')] }), 'messages.0: all messages must have non-empty content except for the optional final assistant message'],
      [body({ messages: [user([{ type: 'text', text: '' }])] }), 'messages: text content blocks must be non-empty'],
      [body({ messages: [user([{ type: 'video' }])] }), /^messages\.0\.content\.0: Input tag 'video' found using 'type' does not match any of the expected tags: 'text', 'image'/],
      [body({ messages: [user([{ type: 'image', source: { type: 'base64', media_type: 'image/bmp', data: 'AA' } }])] }), /^messages\.0\.content\.0\.source\.base64\.media_type: Input should be 'image\/jpeg'/],
      [body({ temperature: 1.5 }), 'temperature: Input should be less than or equal to 1'],
      [body({ top_p: 'x' }), 'top_p: Input should be a valid number'],
      [body({ stream: 'yes' }), 'stream: Input should be a valid boolean'],
      [body({ stop_sequences: 'END' }), 'stop_sequences: Input should be a valid list'],
      [body({ metadata: { user_id: 'u', email: 'x' } }), 'metadata.email: Extra inputs are not permitted'],
      [body({ frequency_penalty: 1 }), 'frequency_penalty: Extra inputs are not permitted'],
      [body({ system: [{ type: 'image' }] }), "system.0.type: Input should be 'text'"],
      [body({ tools: [{ name: 'bad name', input_schema: { type: 'object' } }] }), "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"],
      [body({ tools: [{ name: 'x' }] }), 'tools.0.custom.input_schema: Field required'],
      [body({ tools: [WEATHER_TOOL], tool_choice: { type: 'tool', name: 'nope' } }), "tool_choice: Tool 'nope' not found in provided tools"],
      [body({ tool_choice: { type: 'maybe' } }), /^tool_choice: Input tag 'maybe'/],
      [body({ system: [{ type: 'text', text: 'x', cache_control: { type: 'permanent' } }] }), "system.0.cache_control.type: Input should be 'ephemeral'"],
      // a tool_result whose tool_use is not in the previous assistant turn
      [
        body({ messages: [user('hi'), { role: 'assistant', content: 'hello' }, user([{ type: 'tool_result', tool_use_id: 'toolu_01X', content: 'r' }])] }),
        'messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_01X. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.',
      ],
      // a tool_use not answered in the next user turn
      [
        body({ messages: [user('hi'), { role: 'assistant', content: [toolUse] }, user('what now?')] }),
        'messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01A. Each `tool_use` block must have a corresponding `tool_result` block in the next message.',
      ],
      // text before the tool_result (documented: tool_result blocks must come first)
      [
        body({ messages: [user('hi'), { role: 'assistant', content: [toolUse] }, user([{ type: 'text', text: 'here:' }, { type: 'tool_result', tool_use_id: 'toolu_01A', content: 'r' }])] }),
        /^messages\.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01A\./,
      ],
      [
        body({ messages: [user('hi'), { role: 'assistant', content: [toolUse, toolUse] }, user([{ type: 'tool_result', tool_use_id: 'toolu_01A', content: 'r' }])] }),
        'messages.1.content.1: `tool_use` ids must be unique',
      ],
    ];
    for (const [b, msg] of cases) {
      const res = await post(emu, b);
      const what = JSON.stringify(b).slice(0, 200);
      expect(res.status, what).toBe(400);
      const err = await errorOf(res);
      expect(err.type, what).toBe('invalid_request_error');
      if (typeof msg === 'string') expect(err.message, what).toBe(msg);
      else expect(err.message, what).toMatch(msg);
    }
    expect(emu.requests.every((r) => r.outcome === 'rejected' && r.params === null && r.message === null)).toBe(true);
    // not JSON
    const nj = await post(emu, null, { raw: '{"model": ' });
    expect(nj.status).toBe(400);
    expect((await errorOf(nj)).message).toMatch(/^There was an error parsing the body: /);
    expect(emu.requests[emu.requests.length - 1]!.rawBody).toBe('{"model": ');
  });

  it('combines consecutive same-role turns (documented) instead of rejecting them', async () => {
    const emu = await start();
    const res = await post(emu, body({ messages: [{ role: 'user', content: 'hello' }, { role: 'user', content: [{ type: 'text', text: 'again' }] }] }));
    expect(res.status).toBe(200);
    const m = (await res.json()) as Message;
    expect(m.content).toEqual([{ type: 'text', text: 'You said: hello again' }]);
    const p = (await emu.waitForDone()).params!;
    expect(p.turns).toHaveLength(1);
    expect(p.turns[0]!.messages).toEqual([0, 1]);
    // requireUserFirst: false accepts an assistant opening
    const lax = await start({ requireUserFirst: false });
    const r2 = await post(lax, body({ messages: [{ role: 'assistant', content: 'Hi!' }, { role: 'user', content: 'yo' }] }));
    expect(r2.status).toBe(200);
    expect(((await r2.json()) as Message).content).toEqual([{ type: 'text', text: 'You said: yo' }]);
  });

  it('404 not_found_error "model: <name>" for a model outside a configured list; any model without one', async () => {
    const emu = await start({ models: ['claude-haiku-4-5'] });
    const res = await post(emu, body({ model: 'claude-nope' }));
    expect(res.status).toBe(404);
    expect(await errorOf(res)).toEqual({ type: 'not_found_error', message: 'model: claude-nope' });
    const any = await start();
    const ok = await post(any, body({ model: 'anything-goes' }));
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as Message).model).toBe('anything-goes');
  });

  it('parseMessagesBody and countInputTokens are usable on their own', () => {
    const check = parseMessagesBody(body({ system: 'Be brief.', tools: [WEATHER_TOOL] }));
    expect(check.ok).toBe(true);
    if (!check.ok) return;
    const toolChars = JSON.stringify(WEATHER_TOOL).length;
    expect(countInputTokens(check.params)).toEqual({
      total: Math.ceil((toolChars + 'Be brief.'.length + 'hello world'.length) / 4),
      prefix: 0,
      ttl: null,
      prefixKey: null,
      hasBreakpoint: false,
    });
    const img = parseMessagesBody(body({ messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'url', url: 'https://x/y.png' } }, { type: 'text', text: 'abcd' }] }] }));
    expect(img.ok && countInputTokens(img.params).total).toBe(IMAGE_TOKENS + 1);
    expect(wordPieces('You said:  hi there ')).toEqual(['You', ' said:', '  hi', ' there ']);
  });
});

describe('streaming', () => {
  it('streams the documented event flow with word deltas and cumulative usage', async () => {
    const emu = await start();
    const res = await post(emu, body({ stream: true, system: 'Be brief.', metadata: { user_id: 'u-1' }, temperature: 0.2, top_k: 5, top_p: 0.9 }));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe('no-cache');
    const requestId = res.headers.get('request-id');
    expect(requestId).toMatch(/^req_/);
    const { events, error } = await readSse(res);
    expect(error).toBeNull();
    expect(events.map((e) => e.event)).toEqual([
      'message_start', 'content_block_start', 'ping',
      'content_block_delta', 'content_block_delta', 'content_block_delta', 'content_block_delta',
      'content_block_stop', 'message_delta', 'message_stop',
    ]);
    const inputTokens = Math.ceil(('Be brief.'.length + 'hello world'.length) / 4);
    const start0 = events[0]!.data['message'] as Json;
    expect(start0).toMatchObject({ type: 'message', role: 'assistant', content: [], model: MODEL, stop_reason: null, stop_sequence: null });
    expect(start0['id']).toMatch(/^msg_01[A-Za-z0-9]{22}$/);
    expect(start0['usage']).toMatchObject({ input_tokens: inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 });
    expect(events[1]!.data).toEqual({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
    expect(events.slice(3, 7).map((e) => e.data)).toEqual(
      ['You', ' said:', ' hello', ' world'].map((text) => ({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } })),
    );
    expect(textOf(events)).toBe('You said: hello world');
    expect(events[7]!.data).toEqual({ type: 'content_block_stop', index: 0 });
    expect(events[8]!.data).toEqual({
      type: 'message_delta',
      delta: { stop_reason: 'end_turn', stop_sequence: null },
      usage: { input_tokens: inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 4 },
    });
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ requestId, status: 200, outcome: 'completed', stream: true, source: 'default', eventsSent: 10, outputTokensSent: 4, aborted: false });
    expect(r.events.map((e) => e.event)).toEqual(events.map((e) => e.event));
    expect(r.message!.content).toEqual([{ type: 'text', text: 'You said: hello world' }]);
    expect(r.message!.id).toBe(start0['id']);
    expect(r.params).toMatchObject({ system: 'Be brief.', metadata: { user_id: 'u-1' }, temperature: 0.2, top_k: 5, top_p: 0.9 });
    expect(r.headers['x-api-key']).toBe(KEY);
    expect(JSON.parse(r.rawBody)).toMatchObject({ stream: true });
  });

  it('paces deltas: firstTokenDelayMs before the first, interTokenDelayMs between the rest', async () => {
    const emu = await start({ firstTokenDelayMs: 80, interTokenDelayMs: 30 });
    const t0 = performance.now();
    const seen: number[] = [];
    const res = await post(emu, body({ stream: true }));
    await readSse(res, { onEvent: (e) => { if (e.event === 'content_block_delta') seen.push(performance.now() - t0); } });
    expect(seen).toHaveLength(4);
    expect(seen[0]!).toBeGreaterThanOrEqual(75);
    expect(seen[3]!).toBeGreaterThanOrEqual(165); // 80 + 3 x 30
    const r = await emu.waitForDone();
    const deltas = r.events.filter((e) => e.event === 'content_block_delta').map((e) => e.t);
    expect(r.timing.firstDeltaMs).toBe(deltas[0]);
    // absolute schedule (no drift): delta i is never earlier than 80 + 30 i ms after the request
    deltas.forEach((t, i) => expect(t).toBeGreaterThanOrEqual(80 + 30 * i - 1));
    expect(deltas[3]!).toBeLessThan(80 + 90 + 150); // and not wildly late
  });

  it('tool_use: text, then a tool_use block whose input_json_delta fragments reassemble to the input', async () => {
    const emu = await start();
    const res = await post(emu, body({ stream: true, tools: [WEATHER_TOOL], messages: [{ role: 'user', content: 'Please call get_weather {"location": "San Francisco, CA", "unit": "celsius"} now' }] }));
    const { events, error } = await readSse(res);
    expect(error).toBeNull();
    expect(textOf(events)).toBe('Calling get_weather.');
    const starts = events.filter((e) => e.event === 'content_block_start').map((e) => e.data);
    expect(starts[0]).toEqual({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
    const toolStart = starts[1]!['content_block'] as Json;
    expect(toolStart).toMatchObject({ type: 'tool_use', name: 'get_weather', input: {} });
    expect(toolStart['id']).toMatch(/^toolu_01[A-Za-z0-9]{22}$/);
    const frags = events
      .filter((e) => e.event === 'content_block_delta' && e.data['index'] === 1)
      .map((e) => e.data['delta'] as Json);
    expect(frags.every((d) => d['type'] === 'input_json_delta')).toBe(true);
    const parts = frags.map((d) => d['partial_json'] as string);
    expect(parts[0]).toBe(''); // as in the documented example
    expect(parts.length).toBeGreaterThan(4);
    for (const p of parts.slice(1, -1)) expect(() => JSON.parse(p)).toThrow(); // genuinely partial
    expect(JSON.parse(parts.join(''))).toEqual({ location: 'San Francisco, CA', unit: 'celsius' });
    const md = events.find((e) => e.event === 'message_delta')!.data;
    expect(md['delta']).toEqual({ stop_reason: 'tool_use', stop_sequence: null });
    expect((md['usage'] as Json)['output_tokens']).toBe(2 + parts.length - 1); // 'Calling', ' get_weather.' + non-empty fragments
    expect(events.filter((e) => e.event === 'content_block_stop').map((e) => e.data['index'])).toEqual([0, 1]);
    const r = await emu.waitForDone();
    expect(r.message!.content[1]).toEqual({ type: 'tool_use', id: toolStart['id'], name: 'get_weather', input: { location: 'San Francisco, CA', unit: 'celsius' } });
  });

  it('tool input from the schema when no JSON follows; parallel calls; tool_choice any/tool/none', async () => {
    const emu = await start();
    const timeTool = { name: 'get_time', input_schema: { type: 'object', properties: { tz: { type: 'string' } } } };
    const tools = [WEATHER_TOOL, timeTool];
    const a = (await (await post(emu, body({ tools, messages: [{ role: 'user', content: 'call get_weather and call get_time' }] }))).json()) as Message;
    expect(a.stop_reason).toBe('tool_use');
    expect(a.content.map((b) => (b.type === 'text' ? b.text : [b.name, b.input]))).toEqual([
      'Calling get_weather and get_time.',
      ['get_weather', { location: 'test', unit: 'celsius', days: 1 }],
      ['get_time', { tz: 'test' }],
    ]);
    // tool_choice tool forces the named tool without text (the API prefills the turn)
    const b = (await (await post(emu, body({ tools, tool_choice: { type: 'tool', name: 'get_time' } }))).json()) as Message;
    expect(b.content.map((x) => x.type)).toEqual(['tool_use']);
    expect(b.content[0]).toMatchObject({ name: 'get_time', input: { tz: 'test' } });
    const c = (await (await post(emu, body({ tools, tool_choice: { type: 'any' } }))).json()) as Message;
    expect(c.content).toMatchObject([{ type: 'tool_use', name: 'get_weather' }]);
    const d = (await (await post(emu, body({ tools, tool_choice: { type: 'none' }, messages: [{ role: 'user', content: 'call get_time' }] }))).json()) as Message;
    expect(d.content).toEqual([{ type: 'text', text: 'You said: call get_time' }]);
    const e = (await (await post(emu, body({ tools, tool_choice: { type: 'auto', disable_parallel_tool_use: true }, messages: [{ role: 'user', content: 'call get_time, call get_weather' }] }))).json()) as Message;
    expect(e.content.filter((x) => x.type === 'tool_use').map((x) => x.type === 'tool_use' && x.name)).toEqual(['get_time']);
    // "call <unknown tool>" is just text
    const f = (await (await post(emu, body({ tools, messages: [{ role: 'user', content: 'call nobody' }] }))).json()) as Message;
    expect(f.content).toEqual([{ type: 'text', text: 'You said: call nobody' }]);
  });

  it('tool_result round trip: the reply quotes the result of the tool_use it answers', async () => {
    const emu = await start();
    const first = body({ tools: [WEATHER_TOOL], messages: [{ role: 'user', content: 'call get_weather {"location":"Paris"}' }] });
    const m1 = (await (await post(emu, first)).json()) as Message;
    const use = m1.content.find((b) => b.type === 'tool_use')!;
    expect(use.type).toBe('tool_use');
    const id = use.type === 'tool_use' ? use.id : '';
    const history = [
      ...(first['messages'] as Json[]),
      { role: 'assistant', content: m1.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: id, content: [{ type: 'text', text: 'Sunny, 21 C' }] }, { type: 'text', text: 'thanks' }] },
    ];
    const res = await post(emu, body({ tools: [WEATHER_TOOL], messages: history, stream: true }));
    const { events } = await readSse(res);
    expect(textOf(events)).toBe('Tool get_weather returned: Sunny, 21 C');
    expect(events.find((e) => e.event === 'message_delta')!.data['delta']).toEqual({ stop_reason: 'end_turn', stop_sequence: null });
    // is_error results are reported as failures
    history[2] = { role: 'user', content: [{ type: 'tool_result', tool_use_id: id, content: 'city not found', is_error: true }] };
    const m3 = (await (await post(emu, body({ tools: [WEATHER_TOOL], messages: history }))).json()) as Message;
    expect(m3.content).toEqual([{ type: 'text', text: 'Tool get_weather failed: city not found' }]);
    // input tokens count the tool_use and the tool_result
    const p = emu.requests[2]!.params!;
    expect(m3.usage.input_tokens).toBe(countInputTokens(p).total);
  });
});

describe('non-streaming', () => {
  it('answers the message object with usage, request-id and rate-limit headers', async () => {
    const emu = await start({ firstTokenDelayMs: 30, interTokenDelayMs: 10 });
    const t0 = performance.now();
    const res = await post(emu, body());
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const m = (await res.json()) as Message & Json;
    expect(performance.now() - t0).toBeGreaterThanOrEqual(55); // 30 + 3 x 10: the simulated generation time
    expect(Object.keys(m)).toEqual(['id', 'type', 'role', 'content', 'model', 'stop_reason', 'stop_sequence', 'usage']);
    expect(m).toMatchObject({ type: 'message', role: 'assistant', model: MODEL, stop_reason: 'end_turn', stop_sequence: null });
    expect(m.content).toEqual([{ type: 'text', text: 'You said: hello world' }]);
    expect(m.usage).toEqual({
      input_tokens: 3,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
      output_tokens: 4,
      service_tier: 'standard',
    });
    expect(res.headers.get('request-id')).toBe(emu.requests[0]!.requestId);
    expect(res.headers.get('anthropic-ratelimit-requests-limit')).toBe('4000');
    expect(res.headers.get('anthropic-ratelimit-requests-remaining')).toBe('3999');
    expect(res.headers.get('anthropic-ratelimit-input-tokens-remaining')).toBe(String(2_000_000 - 3));
    expect(res.headers.get('anthropic-ratelimit-output-tokens-remaining')).toBe(String(400_000 - 4));
    expect(res.headers.get('anthropic-ratelimit-tokens-reset')).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ status: 200, outcome: 'completed', stream: false, events: [], outputTokensSent: 4 });
    expect(r.message).toEqual(m);
  });

  it('honours max_tokens (one token per word piece) and stop_sequences', async () => {
    const emu = await start();
    const a = (await (await post(emu, body({ max_tokens: 2 }))).json()) as Message;
    expect(a).toMatchObject({ content: [{ type: 'text', text: 'You said:' }], stop_reason: 'max_tokens', stop_sequence: null });
    expect(a.usage.output_tokens).toBe(2);
    const s = await post(emu, body({ max_tokens: 3, stream: true }));
    const { events } = await readSse(s);
    expect(textOf(events)).toBe('You said: hello');
    expect(events.find((e) => e.event === 'message_delta')!.data).toMatchObject({ delta: { stop_reason: 'max_tokens' }, usage: { output_tokens: 3 } });
    // exactly enough tokens is a normal end
    const full = (await (await post(emu, body({ max_tokens: 4 }))).json()) as Message;
    expect([full.stop_reason, full.usage.output_tokens]).toEqual(['end_turn', 4]);
    // stop sequences: earliest match wins, text before it is kept
    const b = (await (await post(emu, body({ stop_sequences: ['world', 'llo'] }))).json()) as Message;
    expect(b).toMatchObject({ content: [{ type: 'text', text: 'You said: he' }], stop_reason: 'stop_sequence', stop_sequence: 'llo' });
    expect(b.usage.output_tokens).toBe(3);
    // max_tokens cuts a tool_use: the final message keeps the block with an empty input
    const c = (await (await post(emu, body({ max_tokens: 5, tools: [WEATHER_TOOL], messages: [{ role: 'user', content: 'call get_weather' }] }))).json()) as Message;
    expect(c.stop_reason).toBe('max_tokens');
    expect(c.content).toMatchObject([{ type: 'text', text: 'Calling get_weather.' }, { type: 'tool_use', name: 'get_weather', input: {} }]);
    expect(c.usage.output_tokens).toBe(5);
  });
});

describe('prompt caching usage', () => {
  it('simulates a cache write, then reads the same prefix', async () => {
    const emu = await start();
    const system = [{ type: 'text', text: 'S'.repeat(4000), cache_control: { type: 'ephemeral' } }];
    const m1 = (await (await post(emu, body({ system }))).json()) as Message;
    expect(m1.usage).toMatchObject({ input_tokens: 3, cache_creation_input_tokens: 1000, cache_read_input_tokens: 0, cache_creation: { ephemeral_5m_input_tokens: 1000, ephemeral_1h_input_tokens: 0 } });
    const m2 = (await (await post(emu, body({ system, messages: [{ role: 'user', content: 'something else entirely' }], stream: true }))).json().catch(() => null)) as null;
    expect(m2).toBeNull(); // a stream is not JSON; read the record instead
    const r2 = await emu.waitForDone();
    expect(r2.message!.usage).toMatchObject({ input_tokens: 6, cache_creation_input_tokens: 0, cache_read_input_tokens: 1000 });
    const startUsage = (r2.events[0]!.data['message'] as Json)['usage'];
    expect(startUsage).toMatchObject({ cache_read_input_tokens: 1000, output_tokens: 1 });
    // a 1h breakpoint on another prefix goes to the 1h bucket
    const other = [{ type: 'text', text: 'T'.repeat(400), cache_control: { type: 'ephemeral', ttl: '1h' } }];
    const m3 = (await (await post(emu, body({ system: other }))).json()) as Message;
    expect(m3.usage.cache_creation).toEqual({ ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 100 });
    // minCacheableTokens: short prefixes are not cached
    const strict = await start({ minCacheableTokens: 1024 });
    const m4 = (await (await post(strict, body({ system }))).json()) as Message;
    expect(m4.usage).toMatchObject({ input_tokens: 1003, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 });
  });

  it('reports configured numbers with cache: {readTokens}', async () => {
    const emu = await start({ cache: { readTokens: 900, creationTokens: 50 } });
    const system = [{ type: 'text', text: 'S'.repeat(4000), cache_control: { type: 'ephemeral' } }];
    const m = (await (await post(emu, body({ system }))).json()) as Message;
    expect(m.usage).toMatchObject({ input_tokens: 1003 - 950, cache_read_input_tokens: 900, cache_creation_input_tokens: 50 });
    const plain = (await (await post(emu, body())).json()) as Message;
    expect(plain.usage).toMatchObject({ input_tokens: 3, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 });
  });
});

describe('errors and faults', () => {
  it('injected statuses: vendor bodies, retry-after on 429/529, rate-limit headers on 429', async () => {
    const emu = await start();
    emu.faultNext({ status: 529 });
    emu.faultNext({ status: 429, retryAfterMs: 7000 });
    emu.faultNext({ status: 500 });
    emu.faultNext({ status: 401, error: { message: 'custom' } });
    const a = await post(emu, body());
    expect(a.status).toBe(529);
    expect(a.headers.get('retry-after')).toBe('1');
    expect(await errorOf(a)).toEqual({ type: 'overloaded_error', message: 'Overloaded' });
    const b = await post(emu, body());
    expect(b.status).toBe(429);
    expect(b.headers.get('retry-after')).toBe('7');
    expect(b.headers.get('anthropic-ratelimit-requests-remaining')).toBe('0');
    expect(b.headers.get('anthropic-ratelimit-tokens-limit')).not.toBeNull();
    expect((await errorOf(b)).type).toBe('rate_limit_error');
    const c = await post(emu, body());
    expect(c.status).toBe(500);
    expect(c.headers.get('retry-after')).toBeNull();
    expect(await errorOf(c)).toEqual({ type: 'api_error', message: 'Internal server error' });
    const d = await post(emu, body({ stream: true }));
    expect(d.status).toBe(401);
    expect(await errorOf(d)).toEqual({ type: 'authentication_error', message: 'custom' });
    const e = await post(emu, body());
    expect(e.status).toBe(200);
    await e.json();
    expect(emu.requests.map((r) => r.status)).toEqual([529, 429, 500, 401, 200]);
  });

  it('enforces rate limits in a fixed window with 429 rate_limit_error and retry-after', async () => {
    const emu = await start({ rateLimits: { requestsPerMinute: 2 } });
    for (let i = 0; i < 2; i++) {
      const ok = await post(emu, body());
      expect(ok.status).toBe(200);
      await ok.json();
    }
    const res = await post(emu, body());
    expect(res.status).toBe(429);
    const ra = Number(res.headers.get('retry-after'));
    expect(ra).toBeGreaterThan(55);
    expect(ra).toBeLessThanOrEqual(60);
    expect(res.headers.get('anthropic-ratelimit-requests-remaining')).toBe('0');
    const err = await errorOf(res);
    expect(err.type).toBe('rate_limit_error');
    expect(err.message).toMatch(/rate limit for your organization of 2 requests per minute/);
    const tokens = await start({ rateLimits: { inputTokensPerMinute: 5 } });
    const t = await post(tokens, body({ messages: [{ role: 'user', content: 'x'.repeat(40) }] }));
    expect(t.status).toBe(429);
    expect((await errorOf(t)).message).toMatch(/of 5 input tokens per minute/);
  });

  it('mid-stream error event after N events, then the body ends', async () => {
    const emu = await start();
    emu.faultNext({ errorAfterEvents: { events: 4 } });
    const res = await post(emu, body({ stream: true }));
    expect(res.status).toBe(200);
    const { events, error } = await readSse(res);
    expect(error).toBeNull();
    expect(events.map((e) => e.event)).toEqual(['message_start', 'content_block_start', 'ping', 'content_block_delta', 'error']);
    expect(events[4]!.data).toEqual({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ outcome: 'failed', eventsSent: 4, outputTokensSent: 1, streamError: { type: 'overloaded_error' } });
    // non-stream: the same fault answers the error as an HTTP status
    emu.faultNext({ errorAfterEvents: { events: 2, type: 'api_error', message: 'boom' } });
    const j = await post(emu, body());
    expect(j.status).toBe(500);
    expect(await errorOf(j)).toEqual({ type: 'api_error', message: 'boom' });
  });

  it('drops the TCP connection after N events (client sees a network error)', async () => {
    const emu = await start();
    emu.faultNext({ dropAfterEvents: 5 });
    const res = await post(emu, body({ stream: true }));
    const { events, error } = await readSse(res);
    expect(error).not.toBeNull();
    expect(events).toHaveLength(5);
    expect(textOf(events)).toBe('You said:');
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ outcome: 'dropped', eventsSent: 5, aborted: false });
    emu.faultNext({ dropAfterEvents: 0 });
    await expect(post(emu, body())).rejects.toThrow();
    expect((await emu.waitForDone()).outcome).toBe('dropped');
  });

  it('dead air: headers, then nothing; the client abort is recorded', async () => {
    const emu = await start({ pingIntervalMs: 10 });
    emu.faultNext({ deadAir: true });
    const ac = new AbortController();
    const res = await post(emu, body({ stream: true }), { signal: ac.signal });
    expect(res.status).toBe(200);
    const reading = readSse(res);
    await sleep(80);
    expect(emu.requests[0]!.events).toHaveLength(0); // not even pings
    ac.abort();
    const { error } = await reading;
    expect(error).not.toBeNull();
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ outcome: 'aborted', aborted: true, stalled: true, eventsSent: 0 });
    expect(r.abortedAtMs!).toBeGreaterThanOrEqual(75);
  });

  it('stall after N events keeps the stream open with keep-alive pings only', async () => {
    const emu = await start({ pingIntervalMs: 15 });
    emu.faultNext({ stallAfterEvents: 3 });
    const ac = new AbortController();
    const res = await post(emu, body({ stream: true }), { signal: ac.signal });
    const got: string[] = [];
    const reading = readSse(res, { onEvent: (e) => got.push(e.event) });
    await emu.waitFor(() => emu.requests[0]!.events.filter((e) => e.keepalive).length >= 3, 2000, 'three keep-alive pings');
    ac.abort();
    await reading;
    const r = await emu.waitForDone();
    expect(r.outcome).toBe('aborted');
    expect(r.eventsSent).toBe(3);
    expect(r.events.filter((e) => !e.keepalive).map((e) => e.event)).toEqual(['message_start', 'content_block_start', 'ping']);
    expect(got.slice(3).every((e) => e === 'ping')).toBe(true);
    expect(r.stalled).toBe(true);
  });

  it('responseDelayMs holds the whole answer', async () => {
    const emu = await start();
    emu.faultNext({ responseDelayMs: 60 });
    const t0 = performance.now();
    const res = await post(emu, body());
    expect(performance.now() - t0).toBeGreaterThanOrEqual(55);
    await res.json();
  });

  it('records a client abort mid-stream and stops writing', async () => {
    const emu = await start({ firstTokenDelayMs: 5, interTokenDelayMs: 40 });
    const ac = new AbortController();
    const res = await post(emu, body({ stream: true, messages: [{ role: 'user', content: 'one two three four five six seven eight' }] }), { signal: ac.signal });
    const reading = readSse(res, { onEvent: (e) => { if (e.event === 'content_block_delta') ac.abort(); } });
    const { error } = await reading;
    expect(error).not.toBeNull();
    const r = await emu.waitForDone();
    expect(r.outcome).toBe('aborted');
    expect(r.aborted).toBe(true);
    const sent = r.eventsSent;
    expect(r.outputTokensSent).toBeLessThan(10);
    await sleep(100);
    expect(r.eventsSent).toBe(sent); // nothing written after the abort
    expect(r.message!.content).toEqual([{ type: 'text', text: 'You said: one two three four five six seven eight' }]);
  });

  it('close() ends held responses and clears timers', async () => {
    const emu = await startAnthropicEmulator();
    emu.faultNext({ deadAir: true });
    emu.faultNext({ responseDelayMs: 60_000 });
    const a = post(emu, body({ stream: true }));
    const b = post(emu, body()).catch((e: unknown) => e);
    const resA = await a;
    await emu.waitForRequest(2);
    const t0 = performance.now();
    await emu.close();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(emu.requests.map((r) => [r.outcome, r.finished])).toEqual([['shutdown', true], ['shutdown', true]]);
    expect(await readSse(resA).then((x) => x.error)).not.toBeNull();
    expect(await b).toBeInstanceOf(Error);
  });
});

describe('scripts', () => {
  it('queued replies: exact text deltas, tool_use fragments, usage override, stop reason', async () => {
    const emu = await start();
    emu.enqueue(
      {
        content: [
          { type: 'text', text: 'Hel lo', pieces: ['Hel', ' lo'] },
          { type: 'tool_use', id: 'toolu_01FIXED', name: 'lookup', input: { q: 'x' }, fragments: ['{"q"', ': "x"}'] },
        ],
        usage: { input_tokens: 1234, cache_read_input_tokens: 99 },
      },
      { content: [{ type: 'text', text: 'done' }], stopReason: 'refusal' },
      { error: { status: 529 } },
    );
    expect(emu.pendingScripts).toBe(3);
    const res = await post(emu, body({ stream: true }));
    const { events } = await readSse(res);
    expect(textOf(events)).toBe('Hel lo');
    expect(events.filter((e) => e.event === 'content_block_delta').map((e) => e.data['delta'])).toEqual([
      { type: 'text_delta', text: 'Hel' },
      { type: 'text_delta', text: ' lo' },
      { type: 'input_json_delta', partial_json: '' },
      { type: 'input_json_delta', partial_json: '{"q"' },
      { type: 'input_json_delta', partial_json: ': "x"}' },
    ]);
    expect(events.find((e) => e.event === 'message_delta')!.data).toMatchObject({
      delta: { stop_reason: 'tool_use' },
      usage: { input_tokens: 1234, cache_read_input_tokens: 99, output_tokens: 4 },
    });
    expect((await emu.waitForDone()).source).toBe('script');
    const m2 = (await (await post(emu, body())).json()) as Message;
    expect([m2.content, m2.stop_reason]).toEqual([[{ type: 'text', text: 'done' }], 'refusal']);
    const e3 = await post(emu, body());
    expect(e3.status).toBe(529);
    expect((await errorOf(e3)).type).toBe('overloaded_error');
    // queue empty: default behaviour again; invalid requests do not consume scripts
    emu.enqueue({ content: [{ type: 'text', text: 'kept' }] });
    const bad = await post(emu, body({ max_tokens: undefined }));
    expect(bad.status).toBe(400);
    await bad.json();
    expect(emu.pendingScripts).toBe(1);
    expect(((await (await post(emu, body())).json()) as Message).content).toEqual([{ type: 'text', text: 'kept' }]);
    expect(((await (await post(emu, body())).json()) as Message).content).toEqual([{ type: 'text', text: 'You said: hello world' }]);
  });

  it('scripted delays and per-reply faults', async () => {
    const emu = await start();
    emu.enqueue({ content: [{ type: 'text', text: 'a b' }, { type: 'text', text: 'c', delayMs: 60 }], firstTokenDelayMs: 0, interTokenDelayMs: 0 });
    emu.enqueue({ faults: { errorAfterEvents: { events: 1, type: 'api_error' } } });
    const res = await post(emu, body({ stream: true }));
    const { events } = await readSse(res);
    expect(textOf(events)).toBe('a bc');
    const r = await emu.waitForDone();
    const t = (ev: string, index: number) => r.events.find((e) => e.event === ev && e.data['index'] === index)!.t;
    expect(t('content_block_start', 1) - t('content_block_stop', 0)).toBeGreaterThanOrEqual(55);
    const res2 = await post(emu, body({ stream: true }));
    const second = await readSse(res2);
    expect(second.events.map((e) => e.event)).toEqual(['message_start', 'error']);
    expect(second.events[1]!.data['error']).toMatchObject({ type: 'api_error', message: 'Internal server error' });
  });

  it('responder function sees the parsed request and can fall back to the default', async () => {
    const emu = await start();
    const seen: string[] = [];
    emu.responder = (p, ctx) => {
      seen.push(p.model);
      if (p.model === 'default-please') return undefined;
      const def = ctx.defaultReply();
      return { content: [{ type: 'text', text: `[${p.max_tokens}] ${def[0]!.type === 'text' ? def[0]!.text : ''}` }] };
    };
    const a = (await (await post(emu, body())).json()) as Message;
    expect(a.content).toEqual([{ type: 'text', text: '[256] You said: hello world' }]);
    const b = (await (await post(emu, body({ model: 'default-please' }))).json()) as Message;
    expect(b.content).toEqual([{ type: 'text', text: 'You said: hello world' }]);
    expect(seen).toEqual([MODEL, 'default-please']);
    expect(emu.requests.map((r) => r.source)).toEqual(['responder', 'default']);
  });
});
