/**
 * Model string -> upstream route. The one owner of candidate selection (and, with failover,
 * of retries and fallback order). No provider names appear here: everything comes from the
 * registry and configuration.
 */
import type { GatewayConfig } from '../config.ts';
import { GatewayError } from '../protocol/errors.ts';
import { priceConfigHint, type Modality } from '../metering/pricing.ts';
import { customLlmVendor } from '../providers/llm/vendors.ts';
import { LLM_ADAPTERS, STT_ADAPTERS, TTS_ADAPTERS, findLlmAdapter, findSttAdapter, findTtsAdapter, isProviderId, sttModelsOf } from '../providers/registry.ts';
import { pickSampleRate } from '../providers/options.ts';
import type { LlmAdapter, ProviderEndpoint, SttAdapter, SttOptions, TtsAdapter, TtsOptions } from '../providers/types.ts';

export interface SttRoute {
  /** Provider id as clients name it (a built-in provider or a configured upstream): metric label. */
  provider: string;
  adapter: SttAdapter;
  /** Provider-native model id. */
  model: string;
  /** `model` as a bounded metric label (`metricModel`); the exact model goes to the ledger and logs. */
  metricModel: string;
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
    requirePrice(cfg, 'stt', provider, model);
    return {
      route: {
        provider,
        adapter: custom.adapter,
        model,
        metricModel: metricModel(cfg, 'stt', provider, model, [custom.model]),
        endpoint: custom.endpoint,
        label: `${provider}/${model}`,
      },
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
  requirePrice(cfg, 'stt', provider, match.model);
  return {
    route: { provider, adapter: match.adapter, model: match.model, metricModel: match.model, endpoint, label: `${provider}/${match.model}` },
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

/** One STT candidate: a route and its validated options. */
export interface SttCandidate {
  route: SttRoute;
  opts: SttOptions;
  /** Its options follow the client's `settings` (session.update patches apply to it). */
  clientOptions: boolean;
}

/** Ordered STT candidates for one session, and the failover timeouts that apply to them. */
export interface SttPlan {
  candidates: SttCandidate[];
  /** Candidates left out (no credentials, unknown model, options refused), for logs. */
  skipped: Array<{ model: string; reason: string }>;
  /** Per-attempt connect timeout of the route, when configured. */
  connectTimeoutMs: number | undefined;
  /** Speech sent and no transcript from a candidate for this long -> next candidate (0 = off). */
  firstResultMs: number;
  /** Speech going in and no provider message at all for this long -> next candidate (0 = off). */
  deadAirMs: number;
}

export interface SttPlanInput {
  /** The client's model string (`provider/model[:lang]`, a bare provider, an alias, `auto`, or none). */
  model: string | null | undefined;
  /** `settings.language`. */
  language: string | null | undefined;
  /** `settings.extra`: applies to candidates of the client's provider (all of them for `auto` / an alias). */
  extra: Record<string, unknown>;
  /** The client's audio sample rate. */
  sampleRate: number;
  /** `fallback.models` from session.create, in order, after the route's candidates. */
  fallback?: ReadonlyArray<{ model: string; extra?: Record<string, unknown> | null }> | null;
}

type RouteEntry = FileRoutes[string];
type FileRoutes = GatewayConfig['file']['routes']['stt'];

/** A configured route by exact model string, then without its `:lang` suffix. */
function findSttRouteEntry(raw: string | null | undefined, cfg: GatewayConfig): RouteEntry | undefined {
  if (!raw) return undefined;
  const routes = cfg.file.routes.stt;
  const key = raw.trim();
  if (Object.hasOwn(routes, key)) return routes[key];
  const colon = key.lastIndexOf(':');
  if (colon > 0 && Object.hasOwn(routes, key.slice(0, colon))) return routes[key.slice(0, colon)];
  return undefined;
}

/**
 * The ordered STT candidates for a session: the configured route of the client's model (or the
 * `auto` list of its language, or the model itself), then the client's `fallback.models` (each
 * expanded through routes too), without duplicates. Candidates whose provider has no credentials
 * or whose model is unknown are skipped; an unknown model named by the client as its primary
 * model is an error (404), and so are options the first usable candidate refuses (400). Nothing
 * usable at all -> the first candidate's error. Circuit breakers are not consulted here: the
 * session asks `health` at each attempt.
 */
export function sttPlan(input: SttPlanInput, cfg: GatewayConfig): SttPlan {
  const defaults = cfg.file.failover.stt;
  const parsed = parseModelString(input.model);
  const language = input.language ?? parsed.language;
  const route = findSttRouteEntry(input.model, cfg);
  const alias = route !== undefined && (parsed.provider === undefined || !isSttProvider(parsed.provider, cfg));
  const entries: Array<{ model: string; extra: Record<string, unknown>; client: boolean; strict: boolean }> = [];
  const expand = (r: RouteEntry, extra: Record<string, unknown>, clientProvider: string | undefined, anyProvider: boolean): void => {
    for (const c of r.candidates) {
      const model = typeof c === 'string' ? c : c.model;
      const own = typeof c === 'string' ? {} : (c.extra ?? {});
      const client = anyProvider || parseModelString(model).provider === clientProvider;
      entries.push({ model, extra: client ? { ...own, ...extra } : own, client, strict: false });
    }
  };
  if (route) expand(route, input.extra, parsed.provider, alias);
  else if (parsed.provider === undefined) {
    const table = cfg.file.stt.auto;
    const lang = (language ?? '').toLowerCase();
    const list = table.languages[lang] ?? table.languages[lang.split('-')[0] ?? ''] ?? table.default;
    for (const model of list) entries.push({ model, extra: input.extra, client: true, strict: false });
  } else entries.push({ model: input.model as string, extra: input.extra, client: true, strict: true });
  for (const f of input.fallback ?? []) {
    const fr = findSttRouteEntry(f.model, cfg);
    if (fr) expand(fr, f.extra ?? {}, parseModelString(f.model).provider, !isSttProvider(parseModelString(f.model).provider, cfg));
    else entries.push({ model: f.model, extra: f.extra ?? {}, client: false, strict: false });
  }

  const candidates: SttCandidate[] = [];
  const skipped: SttPlan['skipped'] = [];
  const seen = new Set<string>();
  let firstError: GatewayError | undefined;
  for (const e of entries) {
    let resolved: { route: SttRoute; language: string | undefined };
    try {
      resolved = resolveSttRoute(e.model, cfg);
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err;
      if (e.strict && err.code === 'not_found') throw err;
      firstError ??= err;
      skipped.push({ model: e.model, reason: err.message });
      continue;
    }
    const r = resolved.route;
    if (seen.has(r.label)) continue;
    let opts: SttOptions;
    try {
      opts = r.adapter.validate({
        model: r.model,
        language: language ?? resolved.language,
        sampleRate: upstreamSampleRate(r, input.sampleRate),
        extra: e.extra,
      });
    } catch (err) {
      // The options of the candidate that would serve first are the client's request: report them.
      if (candidates.length === 0 || !(err instanceof GatewayError)) throw err;
      skipped.push({ model: r.label, reason: err.message });
      continue;
    }
    seen.add(r.label);
    candidates.push({ route: r, opts, clientOptions: e.client });
  }
  if (candidates.length === 0) {
    if (parsed.provider === undefined && !route) autoSttRoute(parsed.language, cfg); // throws its own message
    throw firstError ?? new GatewayError('bad_request', 'no STT candidate is configured for this model');
  }
  return {
    candidates,
    skipped,
    connectTimeoutMs: route?.connectTimeoutS !== undefined ? Math.round(route.connectTimeoutS * 1000) : undefined,
    firstResultMs: Math.round((route?.firstResultS ?? defaults.firstResultS) * 1000),
    deadAirMs: Math.round((route?.deadAirS ?? defaults.deadAirS) * 1000),
  };
}

function isSttProvider(provider: string | undefined, cfg: GatewayConfig): boolean {
  if (provider === undefined) return false;
  return cfg.sttUpstreams.has(provider) || (isProviderId(provider) && sttModelsOf(provider).length > 0);
}

/** The rate audio is sent upstream at: the client's when the provider accepts it. */
export function upstreamSampleRate(route: SttRoute, clientRate: number): number {
  const rates = route.adapter.capabilities.sampleRates;
  return rates ? pickSampleRate(clientRate, rates) : clientRate;
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
  requirePrice(cfg, 'tts', provider, m);
  return { adapter, model: m, voice, endpoint, label: `${provider}/${m}` };
}

export interface LlmRoute {
  /** Provider id as in the model string (a built-in provider or a configured upstream). */
  provider: string;
  adapter: LlmAdapter;
  /** Provider-native model id (everything after the first `/`). */
  model: string;
  /** `model` as a bounded metric label (`metricModel`); the exact model goes to the ledger and logs. */
  metricModel: string;
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
    requirePrice(cfg, 'llm', provider, model);
    return {
      provider,
      adapter: customLlmVendor,
      model,
      metricModel: metricModel(cfg, 'llm', provider, model, custom.models),
      endpoint: custom.endpoint,
      label: `${provider}/${model}`,
    };
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
  requirePrice(cfg, 'llm', provider, model);
  return { provider, adapter, model, metricModel: metricModel(cfg, 'llm', provider, model, adapter.models ?? []), endpoint, label: `${provider}/${model}` };
}

/**
 * A model id as a metric label: clients choose model ids (dated snapshots, any id of a
 * `provider/*` price), and each distinct label value is a new Prometheus series. The model when
 * it is one of the provider's known models, else the model part of the price key that matched
 * (`gpt-4o` for `gpt-4o-2024-08-06`, `*`), else `other`.
 */
function metricModel(cfg: GatewayConfig, modality: 'stt' | 'llm', provider: string, model: string, known: readonly string[]): string {
  if (known.includes(model)) return model;
  const key = (modality === 'stt' ? cfg.prices.stt(provider, model) : cfg.prices.llm(provider, model))?.key;
  return key ? key.slice(key.indexOf('/') + 1) : 'other';
}

/** No silent $0 (docs/pricing.md): a model without a price (or `free: true`) is refused. */
function requirePrice(cfg: GatewayConfig, modality: Modality, provider: string, model: string): void {
  if (cfg.prices.has(modality, provider, model)) return;
  throw new GatewayError('bad_request', `model "${provider}/${model.slice(0, 100)}" has no price on this gateway: ${priceConfigHint(modality, provider, model.slice(0, 100))}`, {
    param: 'model',
  });
}

// ---- TTS candidates -----------------------------------------------------------------------

/** One TTS candidate: a route and the voice and validated options it speaks with. */
export interface TtsCandidate {
  route: TtsRoute;
  opts: TtsOptions;
}

export interface TtsPlanInput {
  /** The client's model string (`provider/model[:voice]`, a bare provider, an alias, `auto`, or none). */
  model: string | null | undefined;
  /** The client's explicit voice (session.create `voice`, generation_config); beats the model's `:voice`. */
  voice: string | null | undefined;
  language: string | null | undefined;
  /** The client's `extra`: applies to candidates of the client's provider (all of an alias's first provider). */
  extra: Record<string, unknown>;
  /** The client's sample rate (each candidate asks its provider for the nearest rate it has). */
  sampleRate: number;
  /** `fallback.models` from session.create, after the route's candidates. */
  fallback?: ReadonlyArray<{ model: string; voice?: string | null; extra?: Record<string, unknown> | null }> | null;
}

export interface TtsPlan {
  candidates: TtsCandidate[];
  /** Candidates left out (no credentials, unknown model, options or voice refused), for logs. */
  skipped: Array<{ model: string; reason: string }>;
  /** Per-attempt connect timeout of the route, when configured. */
  connectTimeoutMs: number | undefined;
  /** After session.flush, no audio from a candidate for this long -> next candidate (0 = off). */
  firstAudioMs: number;
  /** After audio and session.flush, no provider message for this long -> next candidate (0 = off). */
  deadAirMs: number;
}

type TtsRouteEntry = GatewayConfig['file']['routes']['tts'][string];

/** A configured TTS route by exact model string, then without its `:voice` suffix. */
function findTtsRouteEntry(raw: string | null | undefined, cfg: GatewayConfig): TtsRouteEntry | undefined {
  if (!raw) return undefined;
  const routes = cfg.file.routes.tts;
  const key = raw.trim();
  if (Object.hasOwn(routes, key)) return routes[key];
  const colon = key.lastIndexOf(':');
  if (colon > 0 && Object.hasOwn(routes, key.slice(0, colon))) return routes[key.slice(0, colon)];
  return undefined;
}

/**
 * The ordered TTS candidates for a session: the configured route of the client's model (or the
 * model itself), then the client's `fallback.models` (each expanded through routes too), without
 * duplicates. Voice of a candidate (docs/failover.md "Voices"): for the client's own provider,
 * the client's voice (explicit, else its model's `:voice`); else the candidate's configured
 * voice, its model's `:voice`, the provider's default voice. A `fallback.models` entry speaks
 * with its own `voice`. Voices are never translated between providers. The client's model is
 * strict (unknown -> 404, no credentials -> 400, bad options -> 400); other candidates that
 * cannot serve are skipped.
 */
export function ttsPlan(input: TtsPlanInput, cfg: GatewayConfig): TtsPlan {
  const defaults = cfg.file.failover.tts;
  const client = parseTtsModel(input.model);
  const clientVoice = input.voice || client.voice;
  const route = findTtsRouteEntry(input.model, cfg);
  const alias = route !== undefined && findTtsAdapter(client.provider) === undefined;
  const entries: Array<{ model: string; voice: string | undefined; extra: Record<string, unknown>; strict: boolean }> = [];
  const expand = (r: TtsRouteEntry, voice: string | undefined, extra: Record<string, unknown>, provider: string | undefined): void => {
    for (const c of r.candidates) {
      const model = typeof c === 'string' ? c : c.model;
      const own = typeof c === 'string' ? { voice: undefined, extra: {} } : { voice: c.voice, extra: c.extra ?? {} };
      const p = parseTtsModel(model).provider;
      // An alias hands the client's voice and options to the candidates of its first provider.
      const mine = p === (provider ?? parseTtsModel(typeof r.candidates[0] === 'string' ? r.candidates[0] : r.candidates[0]?.model).provider);
      entries.push({ model, voice: mine ? (voice ?? own.voice) : own.voice, extra: mine ? { ...own.extra, ...extra } : own.extra, strict: false });
    }
  };
  if (route) expand(route, clientVoice, input.extra, alias ? undefined : client.provider);
  else entries.push({ model: input.model ?? '', voice: clientVoice, extra: input.extra, strict: true });
  for (const f of input.fallback ?? []) {
    const fr = findTtsRouteEntry(f.model, cfg);
    const fp = parseTtsModel(f.model);
    if (fr) expand(fr, f.voice || fp.voice, f.extra ?? {}, findTtsAdapter(fp.provider) ? fp.provider : undefined);
    else entries.push({ model: f.model, voice: f.voice || undefined, extra: f.extra ?? {}, strict: false });
  }

  const candidates: TtsCandidate[] = [];
  const skipped: TtsPlan['skipped'] = [];
  const seen = new Set<string>();
  let firstError: GatewayError | undefined;
  for (const e of entries) {
    let r: TtsRoute;
    let opts: TtsOptions;
    try {
      r = resolveTtsRoute(e.model, cfg);
      const adapter = r.adapter;
      opts = adapter.validate({
        model: r.model,
        voice: e.voice || r.voice || adapter.defaultVoice,
        language: input.language || undefined,
        sampleRate: pickSampleRate(input.sampleRate, adapter.capabilities.sampleRates),
        extra: e.extra,
      });
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err;
      // The client's own model, and the options of the candidate that would serve first, are the client's request.
      if (e.strict || (candidates.length === 0 && err.code === 'bad_request' && !isCredentialError(err, e.model, cfg))) throw err;
      firstError ??= err;
      skipped.push({ model: e.model, reason: err.message });
      continue;
    }
    const key = `${r.label}|${opts.voice}`;
    if (seen.has(key)) continue;
    seen.add(key);
    candidates.push({ route: r, opts });
  }
  if (candidates.length === 0) throw firstError ?? new GatewayError('bad_request', 'no TTS candidate is configured for this model');
  return {
    candidates,
    skipped,
    connectTimeoutMs: route?.connectTimeoutS !== undefined ? Math.round(route.connectTimeoutS * 1000) : undefined,
    firstAudioMs: Math.round((route?.firstAudioS ?? defaults.firstAudioS) * 1000),
    deadAirMs: Math.round((route?.deadAirS ?? defaults.deadAirS) * 1000),
  };
}

/** A route's provider lacks credentials (a gateway configuration gap, not the client's request). */
function isCredentialError(err: GatewayError, model: string, cfg: GatewayConfig): boolean {
  const adapter = findTtsAdapter(parseTtsModel(model).provider);
  return err.code === 'bad_request' && adapter !== undefined && !cfg.endpoints.has(adapter.provider);
}

// ---- LLM candidates -----------------------------------------------------------------------

export interface LlmPlan {
  candidates: LlmRoute[];
  /** Candidates left out (no credentials, unknown provider), for logs. */
  skipped: Array<{ model: string; reason: string }>;
  /** Streaming: no response body byte for this long after the request -> next candidate (0 = off). */
  firstEventMs: number;
}

/**
 * The ordered LLM candidates for a request: `routes.llm[model]` (a model string or an alias)
 * or the model itself (strict: unknown provider 404, no credentials 400). Route candidates that
 * cannot serve on this gateway are skipped; none left -> the first one's error.
 */
export function llmPlan(raw: unknown, cfg: GatewayConfig): LlmPlan {
  const route = typeof raw === 'string' && Object.hasOwn(cfg.file.routes.llm, raw) ? cfg.file.routes.llm[raw] : undefined;
  const firstEventMs = Math.round((route?.firstTokenS ?? cfg.file.failover.llm.firstTokenS) * 1000);
  if (!route) return { candidates: [resolveLlmRoute(raw, cfg)], skipped: [], firstEventMs };
  const candidates: LlmRoute[] = [];
  const skipped: LlmPlan['skipped'] = [];
  let firstError: GatewayError | undefined;
  for (const model of route.candidates) {
    try {
      const r = resolveLlmRoute(model, cfg);
      if (!candidates.some((c) => c.label === r.label)) candidates.push(r);
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err;
      firstError ??= err;
      skipped.push({ model, reason: err.message });
    }
  }
  if (candidates.length === 0) throw firstError ?? new GatewayError('bad_request', 'no LLM candidate is configured for this model');
  return { candidates, skipped, firstEventMs };
}

// ---- every candidate failed -----------------------------------------------------------------

/** One failed attempt of a failover: which candidate, and why. */
export interface AttemptFailure {
  label: string;
  error: GatewayError;
}

/**
 * The error for a unit of work (STT session, TTS generation, LLM request) whose every candidate failed: a single
 * attempt keeps its own error; several give the attempts' common code, else 502 when any was
 * retryable (so LiveKit clients retry), else the last one's, with every cause in order in the
 * message and as structured `attempts` (error event / JSON body).
 */
export function allCandidatesFailed(what: 'STT' | 'TTS' | 'LLM', attempts: readonly AttemptFailure[], skipped: readonly string[] = []): GatewayError {
  const last = attempts.at(-1);
  if (last === undefined) {
    return new GatewayError('unavailable', `no ${what} candidate available${skipped.length > 0 ? ` (circuit open: ${skipped.join(', ')})` : ''}`);
  }
  if (attempts.length === 1 && skipped.length === 0) return last.error;
  const codes = new Set(attempts.map((a) => a.error.code));
  const code = codes.size === 1 ? last.error.code : attempts.some((a) => a.error.retryable) ? 'provider_error' : last.error.code;
  let message = `every ${what} candidate failed (${attempts.length} attempts): ${attempts.map((a) => a.error.message).join('; ')}`;
  if (skipped.length > 0) message += `; skipped (circuit open): ${skipped.join(', ')}`;
  return new GatewayError(code, message.length > 2000 ? `${message.slice(0, 2000)}...` : message, {
    attempts: attempts.map((a) => ({ model: a.label, code: a.error.status, message: a.error.message })),
  });
}
