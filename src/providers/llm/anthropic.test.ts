import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { LlmRequestContext, LlmStreamTranslator, SseEvent } from '../types.ts';
import { anthropicLlm } from './anthropic.ts';

const endpoint = { apiKey: 'sk-ant-secret', baseUrl: 'https://api.anthropic.com/', connectTimeoutMs: 1000 };
const ctx: LlmRequestContext = { model: 'claude-sonnet-4-5', label: 'anthropic/claude-sonnet-4-5', stream: true };
const ID = 'chatcmpl-1';
const CREATED = 1700000000;

function fixture(name: string): string {
  return readFileSync(new URL(`../../../test/fixtures/llm/${name}`, import.meta.url), 'utf8');
}

/** Minimal SSE framing for fixtures (the gateway's parser lives in providers/upstream). */
function sse(name: string): SseEvent[] {
  return fixture(name)
    .split(/\n\n+/)
    .filter((b) => b.trim())
    .map((block) => {
      const ev: SseEvent = { data: '' };
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) ev.event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      ev.data = data.join('\n');
      return ev;
    });
}

const ev = (data: Record<string, unknown>): SseEvent => ({ event: String(data.type), data: JSON.stringify(data) });

function run(events: SseEvent[], t: LlmStreamTranslator = anthropicLlm.createStreamTranslator(ctx, ID, CREATED)): unknown[] {
  return events.flatMap((e) => t.push(e)).map((s) => JSON.parse(s) as unknown);
}

const head = { id: ID, object: 'chat.completion.chunk', created: CREATED, model: 'anthropic/claude-sonnet-4-5' };
const chunk = (delta: Record<string, unknown>, finish_reason: string | null = null) => ({ ...head, choices: [{ index: 0, delta, finish_reason }] });
const usageChunk = (prompt: number, completion: number, cached: number) => ({
  ...head,
  choices: [],
  usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } },
});
const toolStart = (index: number, id: string, name: string) => chunk({ tool_calls: [{ index, id, type: 'function', function: { name, arguments: '' } }] });
const toolArgs = (index: number, args: string) => chunk({ tool_calls: [{ index, function: { arguments: args } }] });

function build(body: Record<string, unknown>, c: LlmRequestContext = ctx) {
  const spec = anthropicLlm.request(body, c, endpoint);
  return { ...spec, json: JSON.parse(spec.body) as Record<string, unknown> };
}

function rejects(body: Record<string, unknown>): GatewayError {
  try {
    anthropicLlm.request(body, ctx, endpoint);
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('bad_request');
    expect((err as GatewayError).status).toBe(400);
    return err as GatewayError;
  }
  throw new Error('expected request() to throw');
}

const hi = [{ role: 'user', content: 'Hi' }];

describe('anthropic request', () => {
  it('builds the Messages request: URL, headers, model, stream, default max_tokens, system prompt', () => {
    const r = build({
      model: 'anthropic/claude-sonnet-4-5',
      stream: true,
      stream_options: { include_usage: true },
      messages: [
        { role: 'system', content: [{ type: 'text', text: 'You are a voice assistant.' }, { type: 'text', text: '' }, { type: 'text', text: 'Be brief.' }] },
        { role: 'user', content: 'Hello', extra_content: { livekit: { x: 1 } }, name: 'alice' },
        { role: 'assistant', content: 'Hi! How can I help?' },
        { role: 'user', content: 'Weather?' },
      ],
    });
    expect(r.url).toBe('https://api.anthropic.com/v1/messages');
    expect(r.headers).toEqual({ 'x-api-key': 'sk-ant-secret', 'anthropic-version': '2023-06-01', 'content-type': 'application/json' });
    expect(r.json).toEqual({
      model: 'claude-sonnet-4-5',
      max_tokens: 4096,
      system: [
        { type: 'text', text: 'You are a voice assistant.' },
        { type: 'text', text: 'Be brief.' },
      ],
      messages: [
        { role: 'user', content: [{ type: 'text', text: 'Hello' }] },
        { role: 'assistant', content: [{ type: 'text', text: 'Hi! How can I help?' }] },
        { role: 'user', content: [{ type: 'text', text: 'Weather?' }] },
      ],
      stream: true,
    });
    expect(build({ messages: hi }, { ...ctx, stream: false }).json.stream).toBe(false);
    expect(build({ messages: hi }).json.system).toBeUndefined();
  });

  it('keeps later system/developer messages in place as <instructions> and starts with a user turn', () => {
    // an agent that greets first, then gets mid-conversation instructions
    const r = build({
      messages: [
        { role: 'system', content: 'You are a voice assistant.' },
        { role: 'assistant', content: 'Hi! How can I help?' },
        { role: 'user', content: 'Hello' },
        { role: 'developer', content: [{ type: 'text', text: 'The user is in Paris.' }, { type: 'text', text: 'Use Celsius.' }] },
        { role: 'user', content: 'Weather?' },
      ],
    });
    expect(r.json.system).toEqual([{ type: 'text', text: 'You are a voice assistant.' }]);
    expect(r.json.messages).toEqual([
      { role: 'user', content: [{ type: 'text', text: '(empty)' }] },
      { role: 'assistant', content: [{ type: 'text', text: 'Hi! How can I help?' }] },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Hello' },
          { type: 'text', text: '<instructions>\nThe user is in Paris.\nUse Celsius.\n</instructions>' },
          { type: 'text', text: 'Weather?' },
        ],
      },
    ]);
    // generate_reply(instructions) on the first turn: the instructions are the user turn
    const first = build({ messages: [{ role: 'system', content: 'Preamble.' }, { role: 'system', content: 'Greet the user.' }] }).json;
    expect(first.system).toEqual([{ type: 'text', text: 'Preamble.' }]);
    expect(first.messages).toEqual([{ role: 'user', content: [{ type: 'text', text: '<instructions>\nGreet the user.\n</instructions>' }] }]);
    expect(build({ messages: [{ role: 'system', content: 'Only a prompt.' }] }).json.messages).toEqual([{ role: 'user', content: [{ type: 'text', text: '(empty)' }] }]);
  });

  it('translates multi-part user content: text, base64 data URLs and http(s) image URLs', () => {
    const r = build({
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is in these pictures?' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=', detail: 'high' } },
            { type: 'text', text: '' },
            { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
          ],
        },
      ],
    });
    expect(r.json.messages).toEqual([
      {
        role: 'user',
        content: [
          { type: 'text', text: 'What is in these pictures?' },
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
          { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
        ],
      },
    ]);
    const img = (url: string) => ({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }] }] });
    expect(rejects(img('data:image/bmp;base64,Qk0=')).message).toMatch(/messages\[0\]\.content\[0\]: image type "image\/bmp" is not supported/);
    expect(rejects(img('data:image/png,rawbytes')).message).toMatch(/must be base64-encoded/);
    expect(rejects(img('ftp://example.com/a.png')).message).toMatch(/data: \(base64\) or http\(s\) URLs/);
    expect(rejects({ messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: {} }] }] }).message).toMatch(
      /messages\[0\]\.content\[0\]: part type "input_audio" is not supported/,
    );
  });

  it('turns a tool round trip into tool_use / tool_result blocks, merging tool results with the next user message', () => {
    const r = build({
      messages: [
        { role: 'user', content: 'Weather in Paris and the time in Tokyo?' },
        {
          role: 'assistant',
          content: 'Let me check.',
          extra_content: { google: { thought_signature: 'sig' } },
          tool_calls: [
            {
              id: 'call_1',
              type: 'function',
              function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
              extra_content: { google: { thought_signature: 'sig' } },
            },
            { id: 'call_2', type: 'function', function: { name: 'get_time', arguments: '' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '18°C, sunny' },
        { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: '09:30' }] },
        { role: 'user', content: 'Thanks! And tomorrow?' },
      ],
    });
    expect(r.json.messages).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'Weather in Paris and the time in Tokyo?' }] },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Let me check.' },
          { type: 'tool_use', id: 'call_1', name: 'get_weather', input: { city: 'Paris' } },
          { type: 'tool_use', id: 'call_2', name: 'get_time', input: {} },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'call_1', content: '18°C, sunny' },
          { type: 'tool_result', tool_use_id: 'call_2', content: [{ type: 'text', text: '09:30' }] },
          { type: 'text', text: 'Thanks! And tomorrow?' },
        ],
      },
    ]);
    expect(r.body).not.toContain('extra_content');
  });

  it('merges consecutive same-role turns and skips empty ones (assistant without text but with tool calls)', () => {
    const r = build({
      messages: [
        { role: 'user', content: 'one' },
        { role: 'user', content: [{ type: 'text', text: 'two' }] },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'a', arguments: '{}' } }] },
        { role: 'assistant', content: '', tool_calls: [{ id: 'c2', type: 'function', function: { name: 'b', arguments: '{"x":[1,2]}' } }] },
        { role: 'tool', tool_call_id: 'c1', content: '' },
        { role: 'tool', tool_call_id: 'c2', content: 'ok' },
      ],
    });
    expect(r.json.messages).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'one' }, { type: 'text', text: 'two' }] },
      {
        role: 'assistant',
        content: [
          { type: 'tool_use', id: 'c1', name: 'a', input: {} },
          { type: 'tool_use', id: 'c2', name: 'b', input: { x: [1, 2] } },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'c1' },
          { type: 'tool_result', tool_use_id: 'c2', content: 'ok' },
        ],
      },
    ]);
  });

  it('puts tool results first in their user turn, as Anthropic requires', () => {
    const r = build({
      messages: [
        ...hi,
        { role: 'assistant', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'slow', arguments: '{}' } }] },
        { role: 'user', content: 'hello?' },
        { role: 'tool', tool_call_id: 'c1', content: 'done' },
      ],
    });
    expect((r.json.messages as unknown[])[2]).toEqual({
      role: 'user',
      content: [
        { type: 'tool_result', tool_use_id: 'c1', content: 'done' },
        { type: 'text', text: 'hello?' },
      ],
    });
  });

  it('rejects invalid tool call arguments naming the call, and malformed messages', () => {
    const call = (args: unknown) => ({
      messages: [...hi, { role: 'assistant', tool_calls: [{ id: 'call_9', type: 'function', function: { name: 'lookup', arguments: args } }] }],
    });
    expect(rejects(call('{"q": "x"')).message).toBe(
      'anthropic: messages[1].tool_calls[0] (id "call_9", function "lookup"): arguments are not valid JSON',
    );
    expect(rejects(call('[1]')).message).toMatch(/\(id "call_9", function "lookup"\): arguments must be a JSON object/);
    expect(rejects({ messages: [] }).message).toMatch(/messages must be a non-empty array/);
    expect(rejects({ messages: [{ role: 'function', name: 'f', content: 'x' }] }).message).toMatch(/messages\[0\]\.role must be/);
    expect(rejects({ messages: [{ role: 'tool', content: 'x' }] }).message).toMatch(/messages\[0\]\.tool_call_id/);
  });

  it('translates tools (strict and $schema-free parameters as input_schema) and every tool_choice', () => {
    const tools = [
      { type: 'function', function: { name: 'get_time', description: 'Current time', parameters: { type: 'object', properties: { tz: { type: 'string' } }, required: ['tz'] }, strict: true } },
      { type: 'function', function: { name: 'hang_up' } },
    ];
    const r = build({ messages: hi, tools, tool_choice: 'auto', parallel_tool_calls: true });
    expect(r.json.tools).toEqual([
      { name: 'get_time', description: 'Current time', input_schema: { type: 'object', properties: { tz: { type: 'string' } }, required: ['tz'] } },
      { name: 'hang_up', input_schema: { type: 'object', properties: {} } },
    ]);
    expect(r.json.tool_choice).toEqual({ type: 'auto' });
    const choice = (tool_choice: unknown, parallel_tool_calls?: boolean) => build({ messages: hi, tools, tool_choice, parallel_tool_calls }).json.tool_choice;
    expect(choice(undefined)).toBeUndefined();
    expect(choice('none')).toEqual({ type: 'none' });
    expect(choice('none', false)).toEqual({ type: 'none' });
    expect(choice('required')).toEqual({ type: 'any' });
    expect(choice({ type: 'function', function: { name: 'hang_up' } })).toEqual({ type: 'tool', name: 'hang_up' });
    expect(choice(undefined, false)).toEqual({ type: 'auto', disable_parallel_tool_use: true });
    expect(choice('required', false)).toEqual({ type: 'any', disable_parallel_tool_use: true });
    expect(choice({ type: 'function', function: { name: 'get_time' } }, false)).toEqual({ type: 'tool', name: 'get_time', disable_parallel_tool_use: true });

    // Node sends `tools: []` with a configured tool_choice: neither is forwarded
    const empty = build({ messages: hi, tools: [], tool_choice: 'required', parallel_tool_calls: false }).json;
    expect('tools' in empty || 'tool_choice' in empty).toBe(false);

    expect(rejects({ messages: hi, tools, tool_choice: { type: 'function', function: { name: 'nope' } } }).message).toMatch(
      /tool_choice names "nope", which is not in tools/,
    );
    expect(rejects({ messages: hi, tools, tool_choice: 'sometimes' }).fields).toEqual({ param: 'tool_choice' });
    expect(rejects({ messages: hi, tools: [{ type: 'custom', custom: { name: 'x' } }] }).message).toMatch(/tools\[0\]: only \{type:"function"/);
  });

  it('maps sampling and limit parameters; temperature and top_p outside 0..1 are rejected, not clamped', () => {
    const r = build({
      messages: hi,
      max_completion_tokens: 300,
      max_tokens: 999,
      temperature: 0.7,
      top_p: 0.9,
      top_k: 40,
      stop: ['\n\nUser:', 'END'],
      user: 'user-123',
    });
    expect(r.json).toMatchObject({ max_tokens: 300, temperature: 0.7, top_p: 0.9, top_k: 40, stop_sequences: ['\n\nUser:', 'END'], metadata: { user_id: 'user-123' } });
    expect(build({ messages: hi, max_tokens: 64, stop: 'END' }).json).toMatchObject({ max_tokens: 64, stop_sequences: ['END'] });
    expect(build({ messages: hi, user: 'u', safety_identifier: 'hash-1' }).json.metadata).toEqual({ user_id: 'hash-1' });
    expect(build({ messages: hi, temperature: 0 }).json.temperature).toBe(0);
    expect(build({ messages: hi, temperature: 1 }).json.temperature).toBe(1);

    const t = rejects({ messages: hi, temperature: 1.3 });
    expect(t.message).toBe("anthropic: temperature must be a number from 0 to 1 (Anthropic's range), got 1.3");
    expect(t.fields).toEqual({ param: 'temperature' });
    expect(rejects({ messages: hi, top_p: 1.5 }).fields).toEqual({ param: 'top_p' });
    expect(rejects({ messages: hi, max_tokens: 0 }).message).toMatch(/max_tokens must be an integer >= 1/);
    expect(rejects({ messages: hi, max_completion_tokens: 10.5 }).message).toMatch(/max_completion_tokens must be an integer/);
    expect(rejects({ messages: hi, stop: ['ok', 3] }).message).toMatch(/stop must be/);
  });

  it('drops OpenAI-only bookkeeping and neutral values', () => {
    const r = build({
      model: 'anthropic/claude-sonnet-4-5',
      messages: hi,
      stream: true,
      stream_options: { include_usage: true },
      n: 1,
      logprobs: false,
      top_logprobs: 0,
      frequency_penalty: 0,
      presence_penalty: 0,
      logit_bias: {},
      seed: 42,
      store: false,
      metadata: { session: 'abc' },
      service_tier: 'auto',
      prompt_cache_key: 'k',
      prompt_cache_retention: '24h',
      response_format: { type: 'text' },
      modalities: ['text'],
      reasoning_effort: 'none',
      verbosity: 'medium',
      temperature: null,
      parallel_tool_calls: true,
    });
    expect(r.json).toEqual({ model: 'claude-sonnet-4-5', max_tokens: 4096, messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi' }] }], stream: true });
  });

  it('rejects parameters that would change what the client gets', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ n: 2 }, 'n'],
      [{ logprobs: true }, 'logprobs'],
      [{ frequency_penalty: 0.5 }, 'frequency_penalty'],
      [{ presence_penalty: -1 }, 'presence_penalty'],
      [{ logit_bias: { '50256': -100 } }, 'logit_bias'],
      [{ response_format: { type: 'json_object' } }, 'response_format'],
      [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } } }, 'response_format'],
      [{ modalities: ['text', 'audio'] }, 'modalities'],
      [{ reasoning_effort: 'high' }, 'reasoning_effort'],
      [{ verbosity: 'low' }, 'verbosity'],
      [{ audio: { voice: 'alloy', format: 'pcm16' } }, 'audio'],
      [{ prediction: { type: 'content', content: 'x' } }, 'prediction'],
      [{ web_search_options: {} }, 'web_search_options'],
      [{ functions: [] }, 'functions'],
      [{ thinking: { type: 'enabled', budget_tokens: 1024 } }, 'thinking'],
    ];
    for (const [extra, param] of cases) {
      const err = rejects({ messages: hi, ...extra });
      expect(err.message).toContain(`parameter "${param}"`);
      expect(err.fields).toEqual({ param });
    }
  });
});

describe('anthropic stream translation', () => {
  it('translates text and two tool calls with usage, exactly', () => {
    const t = anthropicLlm.createStreamTranslator(ctx, ID, CREATED);
    const events = sse('anthropic-text-two-tools.sse');
    const raw = events.flatMap((e) => t.push(e));
    expect(raw[0]).toBe(
      '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"anthropic/claude-sonnet-4-5","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
    );
    expect(raw.map((s) => JSON.parse(s) as unknown)).toEqual([
      chunk({ role: 'assistant', content: '' }),
      chunk({ content: 'Let me check the wea' }),
      chunk({ content: 'ther in Paris and the time in Tōkyō ' }),
      chunk({ content: 'for you: "now"\n' }),
      toolStart(0, 'toolu_01A09q90qw90lq917835lq9', 'get_weather'),
      toolArgs(0, '{"city": "Pa'),
      toolArgs(0, 'ris", "unit": "c'),
      toolArgs(0, 'elsius"}'),
      toolStart(1, 'toolu_01Bx7gYp4uWm2c3QeR8sT5vZ', 'get_time'),
      toolArgs(1, '{"timezone"'),
      toolArgs(1, ': "Asia/Tokyo"}'),
      chunk({}, 'tool_calls'),
      usageChunk(472 + 1830, 118, 1830),
    ]);
    expect(t.usage).toEqual({ prompt_tokens: 2302, completion_tokens: 118, total_tokens: 2420, cached_tokens: 1830 });
    expect(t.visible).toBe(true);
    expect(t.error).toBeNull();
    expect(t.end()).toEqual([]);
  });

  it('gives the same content and arguments however the deltas are split', () => {
    const original = sse('anthropic-text-two-tools.sse');
    for (const size of [1, 2, 3, 7, 1000]) {
      const events = original.flatMap((e) => {
        const m = JSON.parse(e.data) as { type: string; index: number; delta?: { type: string; text?: string; partial_json?: string } };
        const d = m.delta;
        if (m.type !== 'content_block_delta' || !d) return [e];
        const whole = d.text ?? d.partial_json ?? '';
        const key = d.type === 'text_delta' ? 'text' : 'partial_json';
        const parts: SseEvent[] = [];
        for (let i = 0; i < whole.length; i += size) parts.push(ev({ ...m, delta: { type: d.type, [key]: whole.slice(i, i + size) } }));
        return parts;
      });
      const chunks = run(events) as { choices: { delta: { content?: string; tool_calls?: { index: number; function: { arguments: string } }[] }; finish_reason: string | null }[] }[];
      let content = '';
      const args = ['', ''];
      for (const c of chunks) {
        const delta = c.choices[0]?.delta;
        content += delta?.content ?? '';
        for (const tc of delta?.tool_calls ?? []) args[tc.index] += tc.function.arguments;
      }
      expect(content).toBe('Let me check the weather in Paris and the time in Tōkyō for you: "now"\n');
      expect(args.map((a) => JSON.parse(a) as unknown)).toEqual([{ city: 'Paris', unit: 'celsius' }, { timezone: 'Asia/Tokyo' }]);
      expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe('tool_calls');
    }
  });

  it('becomes visible on the first text, or when a tool call is complete', () => {
    const t = anthropicLlm.createStreamTranslator(ctx, ID, CREATED);
    const toolOnly = sse('anthropic-text-two-tools.sse').filter((e) => (JSON.parse(e.data) as { index?: number }).index !== 0);
    const seen = toolOnly.map((e) => (t.push(e), `${JSON.parse(e.data).type}:${t.visible}`));
    expect(seen.slice(0, 8)).toEqual([
      'message_start:false',
      'ping:false',
      'content_block_start:false',
      'content_block_delta:false',
      'content_block_delta:false',
      'ping:false',
      'content_block_delta:false',
      'content_block_delta:false',
    ]);
    expect(seen[8]).toBe('content_block_stop:true');

    const empty = anthropicLlm.createStreamTranslator(ctx, ID, CREATED);
    run([ev({ type: 'message_start', message: { usage: { input_tokens: 3, output_tokens: 1 } } }), ev({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } })], empty);
    expect(empty.visible).toBe(false);
  });

  it('sends "{}" for a tool call whose input came without fragments', () => {
    const out = run([
      ev({ type: 'message_start', message: { usage: { input_tokens: 5, output_tokens: 1 } } }),
      ev({ type: 'content_block_start', index: 0, content_block: { type: 'tool_use', id: 'toolu_x', name: 'hang_up', input: {} } }),
      ev({ type: 'content_block_delta', index: 0, delta: { type: 'input_json_delta', partial_json: '' } }),
      ev({ type: 'content_block_stop', index: 0 }),
    ]);
    expect(out.slice(1)).toEqual([toolStart(0, 'toolu_x', 'hang_up'), toolArgs(0, '{}')]);
  });

  it('does not forward thinking; keeps message_start input/cache counts when message_delta only has output_tokens', () => {
    const t = anthropicLlm.createStreamTranslator(ctx, ID, CREATED);
    expect(run(sse('anthropic-thinking-text.sse'), t)).toEqual([
      chunk({ role: 'assistant', content: '' }),
      chunk({ content: 'Hello!' }),
      chunk({ content: ' How can I help?' }),
      chunk({}, 'stop'),
      usageChunk(25 + 1200, 42, 0),
    ]);
    expect(t.usage).toEqual({ prompt_tokens: 1225, completion_tokens: 42, total_tokens: 1267, cached_tokens: 0 });
  });

  it('maps every stop_reason to a finish_reason', () => {
    const cases: [string, string][] = [
      ['end_turn', 'stop'],
      ['stop_sequence', 'stop'],
      ['max_tokens', 'length'],
      ['model_context_window_exceeded', 'length'],
      ['tool_use', 'tool_calls'],
      ['refusal', 'content_filter'],
      ['pause_turn', 'stop'],
      ['some_future_reason', 'stop'],
    ];
    for (const [stop, finish] of cases) {
      const out = run([ev({ type: 'message_start', message: { usage: { input_tokens: 1, output_tokens: 1 } } }), ev({ type: 'message_delta', delta: { stop_reason: stop }, usage: { output_tokens: 9 } })]);
      expect(out.at(-1)).toEqual(chunk({}, finish));
    }
  });

  it('emits the usage chunk at end() when message_stop never came', () => {
    const events = sse('anthropic-thinking-text.sse');
    const t = anthropicLlm.createStreamTranslator(ctx, ID, CREATED);
    const out = run(events.slice(0, -1), t);
    expect(out.at(-1)).toEqual(chunk({}, 'stop'));
    expect(t.end().map((s) => JSON.parse(s) as unknown)).toEqual([usageChunk(1225, 42, 0)]);
    expect(t.error).toBeNull();
    expect(t.end()).toEqual([]);
  });

  it('reports a stream that ends before any stop_reason as a retryable provider error', () => {
    const t = anthropicLlm.createStreamTranslator(ctx, ID, CREATED);
    run(sse('anthropic-text-two-tools.sse').slice(0, 9), t);
    expect(t.end()).toEqual([]);
    expect(t.error?.code).toBe('provider_error');
    expect(t.error?.retryable).toBe(true);
    expect(t.usage).toEqual({ prompt_tokens: 2302, completion_tokens: 2, total_tokens: 2304, cached_tokens: 1830 });
  });

  it('turns an error event into a GatewayError and stops', () => {
    const t = anthropicLlm.createStreamTranslator(ctx, ID, CREATED);
    expect(run(sse('anthropic-overloaded.sse'), t)).toEqual([chunk({ role: 'assistant', content: '' }), chunk({ content: 'Sure' })]);
    expect(t.error).toBeInstanceOf(GatewayError);
    expect(t.error?.code).toBe('unavailable');
    expect(t.error?.message).toBe('anthropic: provider reported overloaded_error: Overloaded');
    expect(t.visible).toBe(true);
    expect(t.push(ev({ type: 'message_stop' }))).toEqual([]);
    expect(t.end()).toEqual([]);

    const codes: [string, string][] = [
      ['overloaded_error', 'unavailable'],
      ['rate_limit_error', 'rate_limited'],
      ['api_error', 'provider_error'],
      ['invalid_request_error', 'bad_request'],
      ['authentication_error', 'unauthorized'],
      ['permission_error', 'forbidden'],
      ['not_found_error', 'not_found'],
      ['request_too_large', 'payload_too_large'],
      ['timeout_error', 'provider_timeout'],
      ['brand_new_error', 'provider_error'],
    ];
    for (const [type, code] of codes) {
      const tr = anthropicLlm.createStreamTranslator(ctx, ID, CREATED);
      expect(tr.push(ev({ type: 'error', error: { type, message: 'm' } }))).toEqual([]);
      expect(tr.error?.code).toBe(code);
      expect(tr.visible).toBe(false);
    }
    const broken = anthropicLlm.createStreamTranslator(ctx, ID, CREATED);
    expect(broken.push({ event: 'content_block_delta', data: '{"type":"content_bl' })).toEqual([]);
    expect(broken.error?.code).toBe('provider_error');
  });
});

describe('anthropic non-stream translation', () => {
  it('translates a tool_use message with usage', () => {
    const json: unknown = JSON.parse(fixture('anthropic-message-tool-use.json'));
    const { body, usage } = anthropicLlm.translateResponse(json, { ...ctx, stream: false }, ID, CREATED);
    expect(body).toEqual({
      id: ID,
      object: 'chat.completion',
      created: CREATED,
      model: 'anthropic/claude-sonnet-4-5',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: "I'll look that up for you.",
            tool_calls: [
              { id: 'toolu_01A09q90qw90lq917835lq9', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris","unit":"celsius"}' } },
              { id: 'toolu_01Bx7gYp4uWm2c3QeR8sT5vZ', type: 'function', function: { name: 'get_time', arguments: '{}' } },
            ],
          },
          finish_reason: 'tool_calls',
        },
      ],
      usage: { prompt_tokens: 3105, completion_tokens: 503, total_tokens: 3608, prompt_tokens_details: { cached_tokens: 1000 } },
    });
    expect(usage).toEqual({ prompt_tokens: 3105, completion_tokens: 503, total_tokens: 3608, cached_tokens: 1000 });
  });

  it('translates a text answer, a tool-only answer and an error body', () => {
    const text = anthropicLlm.translateResponse(
      { id: 'msg_1', type: 'message', role: 'assistant', content: [{ type: 'text', text: 'Hi there.' }], stop_reason: 'max_tokens', usage: { input_tokens: 9, output_tokens: 4 } },
      ctx,
      ID,
      CREATED,
    );
    expect(text.body.choices).toEqual([{ index: 0, message: { role: 'assistant', content: 'Hi there.' }, finish_reason: 'length' }]);
    expect(text.usage).toEqual({ prompt_tokens: 9, completion_tokens: 4, total_tokens: 13, cached_tokens: 0 });

    const tools = anthropicLlm.translateResponse(
      { type: 'message', content: [{ type: 'tool_use', id: 't1', name: 'hang_up', input: {} }], stop_reason: 'tool_use', usage: { input_tokens: 1, output_tokens: 2 } },
      ctx,
      ID,
      CREATED,
    );
    expect((tools.body.choices as { message: { content: unknown } }[])[0]?.message.content).toBeNull();

    expect(() => anthropicLlm.translateResponse({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }, ctx, ID, CREATED)).toThrow(
      expect.objectContaining({ code: 'unavailable' }),
    );
    expect(() => anthropicLlm.translateResponse({ nope: true }, ctx, ID, CREATED)).toThrow(expect.objectContaining({ code: 'provider_error' }));
  });
});
