/**
 * OpenAI-compatible LLM vendors: one entry each (id, chat path; base URL and key variable are
 * in the provider table). Request hygiene rules are data here; the gateway applies them.
 * References: shared/protocol.md 4.1 (client-side stripping rules), shared/providers.md 6.5.
 */
import type { OpenAiCompatibleVendor } from '../types.ts';

const REASONING_DROPS = ['temperature', 'top_p', 'presence_penalty', 'frequency_penalty', 'logit_bias', 'logprobs', 'top_logprobs', 'n'] as const;

export const openAiLlm: OpenAiCompatibleVendor = {
  kind: 'openai',
  provider: 'openai',
  chatPath: '/chat/completions',
  extraContent: 'strip',
  paramRules: [
    { model: /^(o1|o3|o4|gpt-5)/, drop: REASONING_DROPS },
    { model: /^gpt-5\.(2|4)/, drop: ['reasoning_effort'], withTools: true },
  ],
  models: [
    'gpt-5.5', 'gpt-5.4', 'gpt-5.4-mini', 'gpt-5.4-nano', 'gpt-5.3-chat-latest', 'gpt-5.2', 'gpt-5.2-chat-latest',
    'gpt-5.1', 'gpt-5.1-chat-latest', 'gpt-5', 'gpt-5-mini', 'gpt-5-nano', 'gpt-4.1', 'gpt-4.1-mini', 'gpt-4.1-nano',
    'gpt-4o', 'gpt-4o-mini', 'chat-latest', 'gpt-oss-120b',
  ],
};

export const googleLlm: OpenAiCompatibleVendor = {
  kind: 'openai',
  provider: 'google',
  chatPath: '/v1beta/openai/chat/completions',
  extraContent: 'google',
  models: ['gemini-3.1-pro', 'gemini-3-flash', 'gemini-3.1-flash-lite', 'gemini-3.5-flash', 'gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.5-flash-lite', 'gemma-4-31b-it'],
};

export const xaiLlm: OpenAiCompatibleVendor = {
  kind: 'openai',
  provider: 'xai',
  chatPath: '/chat/completions',
  extraContent: 'strip',
  paramRules: [{ model: /^(grok-4-1-fast-reasoning|grok-4\.20-0309-reasoning|grok-4\.20-multi-agent)/, drop: ['presence_penalty', 'frequency_penalty', 'stop'] }],
  models: ['grok-4-1-fast-non-reasoning', 'grok-4-1-fast-reasoning', 'grok-4.20-0309-non-reasoning', 'grok-4.20-0309-reasoning', 'grok-4.20-multi-agent-0309', 'grok-4.3', 'grok-4.5'],
};

export const deepseekLlm: OpenAiCompatibleVendor = {
  kind: 'openai',
  provider: 'deepseek-ai',
  chatPath: '/chat/completions',
  extraContent: 'strip',
  models: ['deepseek-v3', 'deepseek-v3.2'],
};

export const moonshotLlm: OpenAiCompatibleVendor = {
  kind: 'openai',
  provider: 'moonshotai',
  chatPath: '/chat/completions',
  extraContent: 'strip',
  models: ['kimi-k2.5', 'kimi-k2.6'],
};

export const groqLlm: OpenAiCompatibleVendor = {
  kind: 'openai',
  provider: 'groq',
  chatPath: '/openai/v1/chat/completions',
  extraContent: 'strip',
  models: ['llama-3.3-70b-versatile', 'llama-3.1-8b-instant', 'openai/gpt-oss-120b'],
};

export const cerebrasLlm: OpenAiCompatibleVendor = {
  kind: 'openai',
  provider: 'cerebras',
  chatPath: '/v1/chat/completions',
  extraContent: 'strip',
  models: ['llama-3.3-70b', 'gpt-oss-120b', 'qwen-3-32b'],
};

/**
 * A custom OpenAI-compatible upstream from configuration (`llm.upstreams`): its base URL is the
 * one clients of that server use (`http://host:8000/v1`). The provider id is a placeholder; the
 * route carries the configured id.
 */
export const customLlmVendor: OpenAiCompatibleVendor = {
  kind: 'openai',
  provider: 'openai',
  chatPath: '/chat/completions',
  extraContent: 'strip',
  models: [],
};
