/**
 * The one provider table. No switch on provider names anywhere else: the gateway looks
 * adapters up here. Adding a provider = its adapter files + a row here + docs.
 */
import type { ProviderId, ProviderInfo, SttAdapter, TtsAdapter } from './types.ts';
import { deepgramListenV1 } from './stt/deepgram.ts';
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
};

export const STT_ADAPTERS: readonly SttAdapter[] = [deepgramListenV1];

/** One TTS adapter per provider; the first one with credentials serves a bare `auto`. */
export const TTS_ADAPTERS: readonly TtsAdapter[] = [cartesiaTts, deepgramTts, elevenLabsTts, openAiTts];

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
