/**
 * The one provider table. No switch on provider names anywhere else: the gateway looks
 * adapters up here. Adding a provider = its adapter files + a row here + docs.
 */
import type { LlmAdapter, ProviderId, ProviderInfo, SttAdapter, TtsAdapter } from './types.ts';
import { anthropicLlm } from './llm/anthropic.ts';
import { cerebrasLlm, deepseekLlm, googleLlm, groqLlm, moonshotLlm, openAiLlm, xaiLlm } from './llm/vendors.ts';
import { deepgramListenV1 } from './stt/deepgram.ts';
import { deepgramFluxStt } from './stt/deepgram-flux.ts';
import { assemblyAiStt } from './stt/assemblyai.ts';
import { cartesiaStt, cartesiaTurnsStt } from './stt/cartesia.ts';
import { elevenLabsStt } from './stt/elevenlabs.ts';
import { openAiRealtimeStt } from './stt/openai-realtime.ts';
import { cartesiaTts } from './tts/cartesia.ts';
import { deepgramTts } from './tts/deepgram.ts';
import { elevenLabsTts } from './tts/elevenlabs.ts';
import { openAiTts } from './tts/openai.ts';

export const PROVIDERS: Record<ProviderId, ProviderInfo> = {
  deepgram: {
    id: 'deepgram',
    keyEnv: 'DEEPGRAM_API_KEY',
    baseUrlEnv: 'DEEPGRAM_BASE_URL',
    defaultBaseUrl: 'https://api.deepgram.com',
    docs: 'https://developers.deepgram.com/reference',
  },
  assemblyai: {
    id: 'assemblyai',
    keyEnv: 'ASSEMBLYAI_API_KEY',
    baseUrlEnv: 'ASSEMBLYAI_BASE_URL',
    defaultBaseUrl: 'wss://streaming.assemblyai.com',
    docs: 'https://www.assemblyai.com/docs/api-reference/streaming-api/streaming-api',
  },
  cartesia: {
    id: 'cartesia',
    keyEnv: 'CARTESIA_API_KEY',
    baseUrlEnv: 'CARTESIA_BASE_URL',
    defaultBaseUrl: 'https://api.cartesia.ai',
    docs: 'https://docs.cartesia.ai/api-reference',
  },
  elevenlabs: {
    id: 'elevenlabs',
    keyEnv: 'ELEVENLABS_API_KEY',
    baseUrlEnv: 'ELEVENLABS_BASE_URL',
    defaultBaseUrl: 'https://api.elevenlabs.io',
    docs: 'https://elevenlabs.io/docs/api-reference',
  },
  openai: {
    id: 'openai',
    keyEnv: 'OPENAI_API_KEY',
    baseUrlEnv: 'OPENAI_BASE_URL',
    defaultBaseUrl: 'https://api.openai.com/v1',
    docs: 'https://platform.openai.com/docs/api-reference',
  },
  anthropic: {
    id: 'anthropic',
    keyEnv: 'ANTHROPIC_API_KEY',
    baseUrlEnv: 'ANTHROPIC_BASE_URL',
    defaultBaseUrl: 'https://api.anthropic.com',
    docs: 'https://docs.anthropic.com/en/api/messages',
  },
  google: {
    id: 'google',
    keyEnv: 'GEMINI_API_KEY',
    baseUrlEnv: 'GOOGLE_GEMINI_BASE_URL',
    defaultBaseUrl: 'https://generativelanguage.googleapis.com',
    docs: 'https://ai.google.dev/gemini-api/docs/openai',
  },
  xai: {
    id: 'xai',
    keyEnv: 'XAI_API_KEY',
    baseUrlEnv: 'XAI_BASE_URL',
    defaultBaseUrl: 'https://api.x.ai/v1',
    docs: 'https://docs.x.ai/docs/api-reference',
  },
  'deepseek-ai': {
    id: 'deepseek-ai',
    keyEnv: 'DEEPSEEK_API_KEY',
    baseUrlEnv: 'DEEPSEEK_BASE_URL',
    defaultBaseUrl: 'https://api.deepseek.com',
    docs: 'https://api-docs.deepseek.com',
  },
  moonshotai: {
    id: 'moonshotai',
    keyEnv: 'MOONSHOT_API_KEY',
    baseUrlEnv: 'MOONSHOT_BASE_URL',
    defaultBaseUrl: 'https://api.moonshot.ai/v1',
    docs: 'https://platform.moonshot.ai/docs',
  },
  groq: {
    id: 'groq',
    keyEnv: 'GROQ_API_KEY',
    baseUrlEnv: 'GROQ_BASE_URL',
    defaultBaseUrl: 'https://api.groq.com',
    docs: 'https://console.groq.com/docs/openai',
  },
  cerebras: {
    id: 'cerebras',
    keyEnv: 'CEREBRAS_API_KEY',
    baseUrlEnv: 'CEREBRAS_BASE_URL',
    defaultBaseUrl: 'https://api.cerebras.ai',
    docs: 'https://inference-docs.cerebras.ai/api-reference/chat-completions',
  },
};

export const STT_ADAPTERS: readonly SttAdapter[] = [deepgramListenV1, deepgramFluxStt, assemblyAiStt, cartesiaStt, cartesiaTurnsStt, elevenLabsStt, openAiRealtimeStt];

/** Protocols a configured STT upstream (`stt.upstreams.<id>.protocol`) can speak. */
export const STT_PROTOCOLS = {
  'openai-realtime': openAiRealtimeStt,
} as const satisfies Record<string, SttAdapter>;

/** One TTS adapter per provider; the first one with credentials serves a bare `auto`. */
export const TTS_ADAPTERS: readonly TtsAdapter[] = [cartesiaTts, deepgramTts, elevenLabsTts, openAiTts];

/** One LLM adapter per provider: OpenAI-compatible vendors are data; Anthropic translates. */
export const LLM_ADAPTERS: readonly LlmAdapter[] = [openAiLlm, anthropicLlm, googleLlm, xaiLlm, deepseekLlm, moonshotLlm, groqLlm, cerebrasLlm];

export function isProviderId(id: string): id is ProviderId {
  return Object.hasOwn(PROVIDERS, id);
}

export interface SttModelMatch {
  adapter: SttAdapter;
  model: string;
}

/** Resolve `provider/model` (or a bare provider name) to an adapter. */
export function findSttAdapter(provider: ProviderId, model: string | undefined): SttModelMatch | undefined {
  for (const adapter of STT_ADAPTERS) {
    if (adapter.provider !== provider) continue;
    if (model === undefined) {
      if (adapter.defaultModel) return { adapter, model: adapter.defaultModel };
    } else if (adapter.models.includes(model)) {
      return { adapter, model };
    }
  }
  return undefined;
}

export function sttModelsOf(provider: ProviderId): string[] {
  return STT_ADAPTERS.filter((a) => a.provider === provider).flatMap((a) => [...a.models]);
}

export function findTtsAdapter(provider: string): TtsAdapter | undefined {
  return TTS_ADAPTERS.find((a) => a.provider === provider);
}

export function findLlmAdapter(provider: string): LlmAdapter | undefined {
  return LLM_ADAPTERS.find((a) => a.provider === provider);
}
