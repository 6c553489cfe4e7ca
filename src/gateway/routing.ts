/**
 * Model string -> upstream route. The one owner of candidate selection (and, with failover,
 * of retries and fallback order). No provider names appear here: everything comes from the
 * registry and configuration.
 */
import type { GatewayConfig } from '../config.ts';
import { GatewayError } from '../protocol/errors.ts';
import { customLlmVendor } from '../providers/llm/vendors.ts';
import { LLM_ADAPTERS, STT_ADAPTERS, TTS_ADAPTERS, findLlmAdapter, findSttAdapter, findTtsAdapter, isProviderId, sttModelsOf } from '../providers/registry.ts';
import type { LlmAdapter, ProviderEndpoint, SttAdapter, TtsAdapter } from '../providers/types.ts';

export interface SttRoute {
  /** Provider id as clients name it (a built-in provider or a configured upstream): metric label. */
  provider: string;
  adapter: SttAdapter;
  /** Provider-native model id. */
  model: string;
  endpoint: ProviderEndpoint;
  /** `provider/model`, as shown to clients and in logs. */
  label: string;
}

export interface ParsedModel {
  provider: string | undefined;
  model: string | undefined;
  /** Language suffix (`deepgram/nova-3:en`), used when settings.language is absent. */
  language: string | undefined;
}

/** Parse `provider/model[:lang]`, a bare provider, `auto`, `auto:<lang>` or nothing. */
export function parseModelString(raw: string | null | undefined): ParsedModel {
  if (!raw) return { provider: undefined, model: undefined, language: undefined };
  let rest = raw.trim();
  let language: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    language = rest.slice(colon + 1) || undefined;
    rest = rest.slice(0, colon);
  }
  if (rest === 'auto' || rest === '') return { provider: undefined, model: undefined, language };
  const slash = rest.indexOf('/');
  if (slash < 0) return { provider: rest, model: undefined, language };
  return { provider: rest.slice(0, slash), model: rest.slice(slash + 1) || undefined, language };
}

export function resolveSttRoute(raw: string | null | undefined, cfg: GatewayConfig): { route: SttRoute; language: string | undefined } {
  const parsed = parseModelString(raw);
  if (parsed.provider === undefined) return { route: autoSttRoute(parsed.language, cfg), language: parsed.language };
  const provider = parsed.provider;
  const custom = cfg.sttUpstreams.get(provider);
  if (custom) {
    const model = parsed.model ?? custom.model;
    return {
      route: { provider, adapter: custom.adapter, model, endpoint: custom.endpoint, label: `${provider}/${model}` },
      language: parsed.language,
    };
  }
  if (!isProviderId(provider) || sttModelsOf(provider).length === 0) {
    const known = [...new Set([...STT_ADAPTERS.map((a) => a.provider), ...cfg.sttUpstreams.keys()])].join(', ');
    throw new GatewayError('not_found', `unknown STT provider "${provider.slice(0, 40)}"; available: ${known}`);
  }
  const match = findSttAdapter(provider, parsed.model);
  if (!match) {
    throw new GatewayError(
      'not_found',
      `unknown STT model "${provider}/${(parsed.model ?? '').slice(0, 60)}"; ${provider} models: ${sttModelsOf(provider).join(', ')}`,
    );
  }
  const endpoint = cfg.endpoints.get(provider);
  if (!endpoint) {
    const variable = cfg.missingCredentials.get(provider) ?? 'its API key';
    throw new GatewayError('bad_request', `provider ${provider} has no credentials configured on this gateway (set ${variable})`);
  }
  return {
    route: { provider, adapter: match.adapter, model: match.model, endpoint, label: `${provider}/${match.model}` },
    language: parsed.language,
  };
}

/**
 * `auto` / `auto:<lang>`: the first model of the language's list (`stt.auto`, docs/providers.md)
 * whose provider has credentials; languages without a list use the `default` list.
 */
export function autoSttRoute(language: string | undefined, cfg: GatewayConfig): SttRoute {
  const table = cfg.file.stt.auto;
  const lang = (language ?? '').toLowerCase();
  const base = lang.split('-')[0] ?? '';
  const candidates = table.languages[lang] ?? table.languages[base] ?? table.default;
  for (const candidate of candidates) {
    try {
      const { route } = resolveSttRoute(candidate, cfg);
      return route;
    } catch {
      // not configured on this gateway (no credentials, unknown model): try the next one
    }
  }
  throw new GatewayError(
    'bad_request',
    `no STT provider has credentials for language "${lang || 'default'}" (candidates: ${candidates.join(', ')}); set a provider API key or stt.auto (see docs/configuration.md)`,
  );
}

export interface TtsRoute {
  adapter: TtsAdapter;
  /** Provider-native model id. */
  model: string;
  /** Voice from the model string suffix (`cartesia/sonic-3:<voice>`), if any. */
  voice: string | undefined;
  endpoint: ProviderEndpoint;
  /** `provider/model`, as shown in logs and metrics. */
  label: string;
}

/**
 * `provider/model[:voice]` (split on the last `:`; `cartesia/sonic:` = empty voice), a bare
 * provider, or `auto`. An explicit `voice` field beats the suffix (the session decides).
 */
export function parseTtsModel(raw: string | null | undefined): { provider: string; model: string | undefined; voice: string | undefined } {
  let rest = (raw ?? '').trim();
  let voice: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    voice = rest.slice(colon + 1) || undefined;
    rest = rest.slice(0, colon);
  }
  const slash = rest.indexOf('/');
  const provider = slash < 0 ? rest : rest.slice(0, slash);
  const model = slash < 0 ? undefined : rest.slice(slash + 1) || undefined;
  return { provider, model, voice };
}

export function resolveTtsRoute(raw: string | null | undefined, cfg: GatewayConfig): TtsRoute {
  const { provider, model, voice } = parseTtsModel(raw);
  if (provider === '' || provider === 'auto') {
    for (const adapter of TTS_ADAPTERS) {
      const endpoint = cfg.endpoints.get(adapter.provider);
      if (endpoint) return { adapter, model: adapter.defaultModel, voice, endpoint, label: `${adapter.provider}/${adapter.defaultModel}` };
    }
    throw new GatewayError('bad_request', 'no TTS provider has credentials configured; set a provider API key (see docs/configuration.md)');
  }
  const adapter = findTtsAdapter(provider);
  if (!adapter) {
    throw new GatewayError('not_found', `unknown TTS provider "${provider.slice(0, 40)}"; available: ${TTS_ADAPTERS.map((a) => a.provider).join(', ')}`);
  }
  const m = model ?? adapter.defaultModel;
  if (!adapter.models.includes(m)) {
    throw new GatewayError('not_found', `unknown TTS model "${provider}/${m.slice(0, 60)}"; ${provider} models: ${adapter.models.join(', ')}`);
  }
  const endpoint = cfg.endpoints.get(adapter.provider);
  if (!endpoint) {
    const variable = cfg.missingCredentials.get(adapter.provider) ?? 'its API key';
    throw new GatewayError('bad_request', `provider ${provider} has no credentials configured on this gateway (set ${variable})`);
  }
  return { adapter, model: m, voice, endpoint, label: `${provider}/${m}` };
}

export interface LlmRoute {
  /** Provider id as in the model string (a built-in provider or a configured upstream). */
  provider: string;
  adapter: LlmAdapter;
  /** Provider-native model id (everything after the first `/`). */
  model: string;
  endpoint: ProviderEndpoint;
  label: string;
}

const MODEL_ID = /^[\w.:@/+-]{1,200}$/;

/** `provider/model` (the model id may itself contain `/`, e.g. `groq/openai/gpt-oss-120b`). */
export function resolveLlmRoute(raw: unknown, cfg: GatewayConfig): LlmRoute {
  if (typeof raw !== 'string' || raw.length === 0) throw new GatewayError('bad_request', '"model" must be a string "provider/model"');
  const slash = raw.indexOf('/');
  const provider = slash < 0 ? raw : raw.slice(0, slash);
  const model = slash < 0 ? '' : raw.slice(slash + 1);
  const custom = cfg.llmUpstreams.get(provider);
  if (custom) {
    if (!MODEL_ID.test(model)) throw new GatewayError('bad_request', `invalid model "${raw.slice(0, 100)}"; expected "${provider}/<model>"`);
    return { provider, adapter: customLlmVendor, model, endpoint: custom.endpoint, label: `${provider}/${model}` };
  }
  const adapter = findLlmAdapter(provider);
  if (!adapter) {
    const known = [...LLM_ADAPTERS.map((a) => a.provider), ...cfg.llmUpstreams.keys()].join(', ');
    throw new GatewayError('not_found', `unknown LLM provider "${provider.slice(0, 40)}"; available: ${known}`, { param: 'model' });
  }
  if (!MODEL_ID.test(model)) throw new GatewayError('bad_request', `invalid model "${raw.slice(0, 100)}"; expected "${provider}/<model>"`, { param: 'model' });
  const endpoint = cfg.endpoints.get(adapter.provider);
  if (!endpoint) {
    const variable = cfg.missingCredentials.get(adapter.provider) ?? 'its API key';
    throw new GatewayError('bad_request', `provider ${provider} has no credentials configured on this gateway (set ${variable})`);
  }
  return { provider, adapter, model, endpoint, label: `${provider}/${model}` };
}
