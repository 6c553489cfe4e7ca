/**
 * The one provider table. No switch on provider names anywhere else: the gateway looks
 * adapters up here. Adding a provider = its adapter files + a row here + docs.
 */
import type { ProviderId, ProviderInfo, SttAdapter } from './types.ts';
import { deepgramListenV1 } from './stt/deepgram.ts';

export const PROVIDERS: Record<ProviderId, ProviderInfo> = {
  deepgram: {
    id: 'deepgram',
    keyEnv: 'DEEPGRAM_API_KEY',
    baseUrlEnv: 'DEEPGRAM_BASE_URL',
    defaultBaseUrl: 'https://api.deepgram.com',
    docs: 'https://developers.deepgram.com/reference',
  },
};

export const STT_ADAPTERS: readonly SttAdapter[] = [deepgramListenV1];

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
