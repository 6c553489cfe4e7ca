/**
 * Price table: default list prices (price-defaults.ts) overlaid with the `pricing` section of
 * the configuration, and the pure functions that turn metered quantities into US dollars.
 * No silent $0: a model without a price is a configuration error (startup for every routed
 * model, a clear 400 for a client naming an unpriced model), unless declared `free: true`.
 * Documented in docs/pricing.md.
 */
import { z } from 'zod';
import { LLM_ADAPTERS, STT_ADAPTERS, TTS_ADAPTERS } from '../providers/registry.ts';
import type { LlmUsage } from '../providers/types.ts';
import { DEFAULT_LLM_PRICES, DEFAULT_STT_PRICES, DEFAULT_TTS_PRICES } from './price-defaults.ts';

export type Modality = 'stt' | 'tts' | 'llm';

/** `provider/model` or `provider/*` (the provider's every model). */
const priceKey = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,39}\/(\*|[\w.:@/+-]{1,200})$/, 'expected "provider/model" or "provider/*"');
const usd = z.number().min(0).max(1_000_000);

function oneOf(fields: readonly string[], label: string) {
  return (v: Record<string, unknown>, ctx: z.RefinementCtx) => {
    const set = fields.filter((f) => v[f] !== undefined);
    if (v.free === true) {
      if (set.length > 0) ctx.addIssue({ code: 'custom', message: `free: true cannot be combined with ${set.join(', ')}` });
    } else if (set.length !== 1) {
      ctx.addIssue({ code: 'custom', message: `set exactly one of ${fields.join(', ')} (${label}), or free: true` });
    }
  };
}

const sttPriceSchema = z
  .strictObject({
    free: z.literal(true).optional(),
    usdPerMinute: usd.optional(),
    usdPerHour: usd.optional(),
    /** Billing increment in seconds, applied with `rounding: provider` (each stream is rounded up). */
    incrementS: z.number().min(0).max(3600).optional(),
    /** Least billed per stream, in seconds, applied with `rounding: provider`. */
    minimumS: z.number().min(0).max(3600).optional(),
  })
  .superRefine(oneOf(['usdPerMinute', 'usdPerHour'], 'USD per minute or per hour of audio'));

const ttsPriceSchema = z
  .strictObject({
    free: z.literal(true).optional(),
    usdPer1kChars: usd.optional(),
    usdPer1MChars: usd.optional(),
  })
  .superRefine(oneOf(['usdPer1kChars', 'usdPer1MChars'], 'USD per 1k or per 1M characters'));

const llmPriceSchema = z
  .strictObject({
    free: z.literal(true).optional(),
    usdPer1MInput: usd.optional(),
    /** Prompt tokens served from the provider's cache; defaults to the input price. */
    usdPer1MCachedInput: usd.optional(),
    usdPer1MOutput: usd.optional(),
  })
  .superRefine((v, ctx) => {
    if (v.free === true) {
      if (v.usdPer1MInput !== undefined || v.usdPer1MOutput !== undefined || v.usdPer1MCachedInput !== undefined) {
        ctx.addIssue({ code: 'custom', message: 'free: true cannot be combined with prices' });
      }
    } else if (v.usdPer1MInput === undefined || v.usdPer1MOutput === undefined) {
      ctx.addIssue({ code: 'custom', message: 'set usdPer1MInput and usdPer1MOutput (USD per 1M tokens; usdPer1MCachedInput optional), or free: true' });
    }
  });

export const pricingSchema = z
  .strictObject({
    /**
     * `exact`: cost = exact quantity x unit price (default). `provider`: STT audio of each
     * stream is rounded up to the model's billing increment (and minimum), as providers invoice.
     */
    rounding: z.enum(['exact', 'provider']).default('exact'),
    stt: z.record(priceKey, sttPriceSchema).default({}),
    tts: z.record(priceKey, ttsPriceSchema).default({}),
    llm: z.record(priceKey, llmPriceSchema).default({}),
  })
  .prefault({});
export type PricingConfig = z.infer<typeof pricingSchema>;
export type Rounding = PricingConfig['rounding'];

/** Where a resolved price came from: `config` (an override) or `default` (price-defaults.ts). */
export type PriceOrigin = 'config' | 'default';

export interface SttRate {
  free: boolean;
  usdPerSecond: number;
  incrementS: number;
  minimumS: number;
  /** The table key that matched (`deepgram/nova-3`, `whisper/*`). */
  key: string;
  origin: PriceOrigin;
}

export interface TtsRate {
  free: boolean;
  usdPerChar: number;
  key: string;
  origin: PriceOrigin;
}

export interface LlmRate {
  free: boolean;
  usdPerInputToken: number;
  usdPerCachedInputToken: number;
  usdPerOutputToken: number;
  key: string;
  origin: PriceOrigin;
}

type SttEntry = z.input<typeof sttPriceSchema>;
type TtsEntry = z.input<typeof ttsPriceSchema>;
type LlmEntry = z.input<typeof llmPriceSchema>;

function sttRate(e: SttEntry, key: string, origin: PriceOrigin): SttRate {
  const perSecond = e.free ? 0 : e.usdPerMinute !== undefined ? e.usdPerMinute / 60 : (e.usdPerHour ?? 0) / 3600;
  return { free: e.free === true, usdPerSecond: perSecond, incrementS: e.incrementS ?? 0, minimumS: e.minimumS ?? 0, key, origin };
}

function ttsRate(e: TtsEntry, key: string, origin: PriceOrigin): TtsRate {
  const perChar = e.free ? 0 : e.usdPer1kChars !== undefined ? e.usdPer1kChars / 1000 : (e.usdPer1MChars ?? 0) / 1e6;
  return { free: e.free === true, usdPerChar: perChar, key, origin };
}

function llmRate(e: LlmEntry, key: string, origin: PriceOrigin): LlmRate {
  const input = e.free ? 0 : (e.usdPer1MInput ?? 0) / 1e6;
  return {
    free: e.free === true,
    usdPerInputToken: input,
    usdPerCachedInputToken: e.free ? 0 : e.usdPer1MCachedInput !== undefined ? e.usdPer1MCachedInput / 1e6 : input,
    usdPerOutputToken: e.free ? 0 : (e.usdPer1MOutput ?? 0) / 1e6,
    key,
    origin,
  };
}

/** A dated snapshot or alias of a model (`gpt-4o-2024-08-06`, `claude-x-20250929`, `sonic-latest`) -> its base id. */
export function baseModelId(model: string): string {
  return model.replace(/-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$/, '');
}

/**
 * Lookup order: configured `provider/model`, configured `provider/<base id>`, configured
 * `provider/*`, default `provider/model`, default `provider/<base id>`. Configuration always
 * beats the defaults.
 */
function lookup<E, R>(
  provider: string,
  model: string,
  configured: Record<string, E>,
  defaults: Record<string, E>,
  make: (e: E, key: string, origin: PriceOrigin) => R,
): R | undefined {
  const exact = `${provider}/${model}`;
  const base = `${provider}/${baseModelId(model)}`;
  for (const key of [exact, base, `${provider}/*`]) {
    const e = Object.hasOwn(configured, key) ? configured[key] : undefined;
    if (e !== undefined) return make(e, key, 'config');
  }
  for (const key of [exact, base]) {
    const e = Object.hasOwn(defaults, key) ? defaults[key] : undefined;
    if (e !== undefined) return make(e, key, 'default');
  }
  return undefined;
}

export class PriceTable {
  readonly rounding: Rounding;
  private readonly cfg: PricingConfig;
  private readonly cache = new Map<string, SttRate | TtsRate | LlmRate | null>();

  constructor(cfg: PricingConfig = pricingSchema.parse({})) {
    this.cfg = cfg;
    this.rounding = cfg.rounding;
  }

  private memo<R extends SttRate | TtsRate | LlmRate>(k: string, f: () => R | undefined): R | undefined {
    const hit = this.cache.get(k);
    if (hit !== undefined) return (hit ?? undefined) as R | undefined;
    const r = f();
    if (this.cache.size < 10_000) this.cache.set(k, r ?? null);
    return r;
  }

  stt(provider: string, model: string): SttRate | undefined {
    return this.memo(`stt\0${provider}/${model}`, () => lookup(provider, model, this.cfg.stt, DEFAULT_STT_PRICES, sttRate));
  }

  tts(provider: string, model: string): TtsRate | undefined {
    return this.memo(`tts\0${provider}/${model}`, () => lookup(provider, model, this.cfg.tts, DEFAULT_TTS_PRICES, ttsRate));
  }

  llm(provider: string, model: string): LlmRate | undefined {
    return this.memo(`llm\0${provider}/${model}`, () => lookup(provider, model, this.cfg.llm, DEFAULT_LLM_PRICES, llmRate));
  }

  has(modality: Modality, provider: string, model: string): boolean {
    return (modality === 'stt' ? this.stt(provider, model) : modality === 'tts' ? this.tts(provider, model) : this.llm(provider, model)) !== undefined;
  }
}

/** The configuration key to set for an unpriced model, as it would be written in YAML. */
export function priceConfigHint(modality: Modality, provider: string, model: string): string {
  const unit =
    modality === 'stt' ? 'usdPerMinute or usdPerHour' : modality === 'tts' ? 'usdPer1kChars or usdPer1MChars' : 'usdPer1MInput and usdPer1MOutput';
  return `set pricing.${modality}."${provider}/${model}" (or "${provider}/*") with ${unit}, or free: true (docs/pricing.md)`;
}

// ---- cost functions (pure) -------------------------------------------------------------

/** Seconds billed for one stream of `seconds` audio. */
export function billedSeconds(rate: SttRate, seconds: number, rounding: Rounding): number {
  if (seconds <= 0) return 0;
  if (rounding === 'exact') return seconds;
  let billed = seconds;
  // Tolerate float noise: 12.000000001 s at a 1 s increment is 12 s.
  if (rate.incrementS > 0) billed = Math.ceil(seconds / rate.incrementS - 1e-9) * rate.incrementS;
  return Math.max(billed, rate.minimumS);
}

export function sttCost(rate: SttRate, seconds: number, rounding: Rounding): number {
  return billedSeconds(rate, seconds, rounding) * rate.usdPerSecond;
}

export function ttsCost(rate: TtsRate, characters: number): number {
  return characters > 0 ? characters * rate.usdPerChar : 0;
}

/** `cached_tokens` are part of `prompt_tokens` (OpenAI semantics): they are billed at the cached rate instead. */
export function llmCost(rate: LlmRate, usage: Pick<LlmUsage, 'prompt_tokens' | 'completion_tokens' | 'cached_tokens'>): number {
  const cached = Math.min(Math.max(usage.cached_tokens, 0), Math.max(usage.prompt_tokens, 0));
  const uncached = Math.max(usage.prompt_tokens, 0) - cached;
  return uncached * rate.usdPerInputToken + cached * rate.usdPerCachedInputToken + Math.max(usage.completion_tokens, 0) * rate.usdPerOutputToken;
}

// ---- startup validation ----------------------------------------------------------------

export interface RoutedModel {
  modality: Modality;
  provider: string;
  /** A model id, or `*` for "any model of this provider" (a custom upstream without a model list). */
  model: string;
  /** The configuration that routes it, for the error message (`stt.upstreams.whisper`). */
  via: string;
}

/** Every routed model without a price, as one error line each. */
export function unpricedRoutes(prices: PriceTable, routed: readonly RoutedModel[]): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (const r of routed) {
    const id = `${r.modality}\0${r.provider}/${r.model}`;
    if (seen.has(id)) continue;
    seen.add(id);
    if (prices.has(r.modality, r.provider, r.model)) continue;
    const what = r.model === '*' ? `any model of "${r.provider}"` : `"${r.provider}/${r.model}"`;
    const hint =
      r.model === '*'
        ? `set pricing.${r.modality}."${r.provider}/*" (or list its models and price each), or declare it free: true (docs/pricing.md)`
        : priceConfigHint(r.modality, r.provider, r.model);
    out.push(`pricing: ${r.modality.toUpperCase()} model ${what} (routed by ${r.via}) has no price: ${hint}`);
  }
  return out;
}

export interface RoutingSources {
  /** Built-in providers with credentials. */
  providersWithCredentials: Iterable<string>;
  /** STT candidate lists (`provider/model`) with the config path that holds each (`stt.auto.default`, `routes.stt.x`). */
  sttCandidates: Iterable<[via: string, list: readonly string[]]>;
  /** `stt.upstreams`: id -> default model. */
  sttUpstreams: Iterable<[string, { model: string }]>;
  /** `llm.upstreams`: id -> listed models (empty: any model id is forwarded). */
  llmUpstreams: Iterable<[string, { models: readonly string[] }]>;
}

/**
 * The models this gateway can route to: every model of every built-in provider with
 * credentials, the STT candidates (`stt.auto`, routes) that can serve, and each custom upstream (its listed
 * or default models, or `*` when it forwards any model id).
 */
export function routedModels(src: RoutingSources): RoutedModel[] {
  const out: RoutedModel[] = [];
  const enabled = new Set(src.providersWithCredentials);
  const sttUp = new Map(src.sttUpstreams);
  for (const a of STT_ADAPTERS) {
    if (enabled.has(a.provider)) for (const m of a.models) out.push({ modality: 'stt', provider: a.provider, model: m, via: `the ${a.provider} credentials` });
  }
  for (const a of TTS_ADAPTERS) {
    if (enabled.has(a.provider)) for (const m of a.models) out.push({ modality: 'tts', provider: a.provider, model: m, via: `the ${a.provider} credentials` });
  }
  for (const a of LLM_ADAPTERS) {
    if (enabled.has(a.provider)) for (const m of a.models ?? []) out.push({ modality: 'llm', provider: a.provider, model: m, via: `the ${a.provider} credentials` });
  }
  for (const [via, list] of src.sttCandidates) {
    for (const candidate of list) {
      const raw = candidate.split(':', 1)[0] ?? '';
      const slash = raw.indexOf('/');
      const provider = slash < 0 ? raw : raw.slice(0, slash);
      const model = slash < 0 ? undefined : raw.slice(slash + 1);
      const up = sttUp.get(provider);
      if (up) out.push({ modality: 'stt', provider, model: model ?? up.model, via });
      else if (enabled.has(provider) && model !== undefined && STT_ADAPTERS.some((a) => a.provider === provider && a.models.includes(model))) {
        out.push({ modality: 'stt', provider, model, via });
      }
    }
  }
  for (const [id, u] of sttUp) out.push({ modality: 'stt', provider: id, model: u.model, via: `stt.upstreams.${id}` });
  for (const [id, u] of src.llmUpstreams) {
    if (u.models.length === 0) out.push({ modality: 'llm', provider: id, model: '*', via: `llm.upstreams.${id}` });
    for (const m of u.models) out.push({ modality: 'llm', provider: id, model: m, via: `llm.upstreams.${id}` });
  }
  return out;
}
