import { describe, expect, it } from 'vitest';
import { prepareOpenAiBody } from './hygiene.ts';
import { googleLlm, openAiLlm, xaiLlm } from './vendors.ts';

const msgs = [{ role: 'user', content: 'hi' }];

describe('prepareOpenAiBody', () => {
  it('uses the native model id, drops empty tools with their tool options, asks for usage when streaming', () => {
    const { body, clientWantsUsage } = prepareOpenAiBody(
      { model: 'openai/gpt-4.1-mini', messages: msgs, tools: [], tool_choice: 'auto', parallel_tool_calls: true, stream: true, temperature: 0.7 },
      openAiLlm,
      'gpt-4.1-mini',
    );
    expect(body).toEqual({ model: 'gpt-4.1-mini', messages: msgs, stream: true, temperature: 0.7, stream_options: { include_usage: true } });
    expect(clientWantsUsage).toBe(false);
  });

  it('keeps the client usage request and non-empty tools; removes stream_options when not streaming', () => {
    const tools = [{ type: 'function', function: { name: 'f', parameters: {} } }];
    const s = prepareOpenAiBody({ model: 'x', messages: msgs, tools, stream: true, stream_options: { include_usage: true } }, openAiLlm, 'gpt-4o');
    expect(s.clientWantsUsage).toBe(true);
    expect(s.body.tools).toBe(tools);
    const ns = prepareOpenAiBody({ model: 'x', messages: msgs, stream_options: { include_usage: true } }, openAiLlm, 'gpt-4o');
    expect(ns.body.stream_options).toBeUndefined();
  });

  it('drops parameters the model family rejects', () => {
    const src = { model: 'x', messages: msgs, temperature: 1, top_p: 0.9, n: 1, logprobs: true, max_completion_tokens: 50, reasoning_effort: 'low' };
    expect(prepareOpenAiBody(src, openAiLlm, 'gpt-5-mini').body).toEqual({ model: 'gpt-5-mini', messages: msgs, max_completion_tokens: 50, reasoning_effort: 'low' });
    expect(prepareOpenAiBody(src, openAiLlm, 'gpt-4.1').body.temperature).toBe(1);
    const withTools = { ...src, tools: [{ type: 'function', function: { name: 'f' } }] };
    expect(prepareOpenAiBody(withTools, openAiLlm, 'gpt-5.2').body.reasoning_effort).toBeUndefined();
    expect(prepareOpenAiBody(src, openAiLlm, 'gpt-5.2').body.reasoning_effort).toBe('low');
    const x = prepareOpenAiBody({ model: 'x', messages: msgs, stop: ['\n'], presence_penalty: 1, temperature: 0 }, xaiLlm, 'grok-4-1-fast-reasoning');
    expect(x.body).toEqual({ model: 'grok-4-1-fast-reasoning', messages: msgs, temperature: 0 });
  });

  it('translates Gemini thought signatures and strips extra_content for other vendors', () => {
    const messages = [
      { role: 'user', content: 'q' },
      {
        role: 'assistant',
        content: null,
        extra_content: { google: { thoughtSignature: 'sig-msg' }, livekit: { x: 1 } },
        tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' }, extra_content: { google: { thought_signature: 'sig-call' } } }],
      },
      { role: 'tool', tool_call_id: 'c1', content: 'ok', extra_content: { livekit: {} } },
    ];
    const g = prepareOpenAiBody({ model: 'x', messages }, googleLlm, 'gemini-2.5-flash').body.messages as Record<string, unknown>[];
    expect(g[1]?.extra_content).toEqual({ google: { thought_signature: 'sig-msg' } });
    expect((g[1]?.tool_calls as Record<string, unknown>[])[0]?.extra_content).toEqual({ google: { thought_signature: 'sig-call' } });
    expect(g[2]).toEqual({ role: 'tool', tool_call_id: 'c1', content: 'ok' });
    const o = prepareOpenAiBody({ model: 'x', messages }, openAiLlm, 'gpt-4o').body.messages as Record<string, unknown>[];
    expect(o[1]).not.toHaveProperty('extra_content');
    expect((o[1]?.tool_calls as Record<string, unknown>[])[0]).toEqual({ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } });
    // The input is not modified.
    expect(messages[1]?.extra_content).toBeDefined();
  });
});
