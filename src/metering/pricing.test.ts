import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, fileSchema, resolveConfig } from '../config.ts';
import { resolveLlmRoute, resolveSttRoute } from '../gateway/routing.ts';
import { GatewayError } from '../protocol/errors.ts';
import { LLM_ADAPTERS, STT_ADAPTERS, TTS_ADAPTERS } from '../providers/registry.ts';
import { DEFAULT_LLM_PRICES, DEFAULT_STT_PRICES, DEFAULT_TTS_PRICES } from './price-defaults.ts';
import { PriceTable, baseModelId, billedSeconds, llmCost, pricingSchema, sttCost, ttsCost } from './pricing.ts';

const offered = {
  stt: STT_ADAPTERS.flatMap((a) => a.models.map((m) => `${a.provider}/${m}`)),
  tts: TTS_ADAPTERS.flatMap((a) => a.models.map((m) => `${a.provider}/${m}`)),
  llm: LLM_ADAPTERS.flatMap((a) => (a.models ?? []).map((m) => `${a.provider}/${m}`)),
};
const defaults = { stt: DEFAULT_STT_PRICES, tts: DEFAULT_TTS_PRICES, llm: DEFAULT_LLM_PRICES };
const split = (id: string): [string, string] => {
  const i = id.indexOf('/');
  return [id.slice(0, i), id.slice(i + 1)];
};
const table = (pricing: unknown = {}): PriceTable => new PriceTable(pricingSchema.parse(pricing));

describe('default price table', () => {
  it('prices every model the adapters offer (STT, TTS, LLM), by its exact id', () => {
    const prices = table();
    for (const modality of ['stt', 'tts', 'llm'] as const) {
      expect(offered[modality].length).toBeGreaterThan(0);
      const missing = offered[modality].filter((id) => !Object.hasOwn(defaults[modality], id));
      expect(missing, `${modality} models without a default price`).toEqual([]);
      for (const id of offered[modality]) {
        const [p, m] = split(id);
        expect(prices.has(modality, p, m)).toBe(true);
      }
    }
  });

  it('has no stale entries: every default names an offered model, with a positive price or an explicit free', () => {
    for (const modality of ['stt', 'tts', 'llm'] as const) {
      for (const [id, e] of Object.entries(defaults[modality])) {
        expect(offered[modality], `${modality} default for a model no adapter offers`).toContain(id);
        const [p, m] = split(id);
        const rate = modality === 'stt' ? table().stt(p, m) : modality === 'tts' ? table().tts(p, m) : table().llm(p, m);
        if (e.free) expect(rate?.free).toBe(true);
        else if (modality === 'stt') expect(table().stt(p, m)?.usdPerSecond).toBeGreaterThan(0);
        else if (modality === 'tts') expect(table().tts(p, m)?.usdPerChar).toBeGreaterThan(0);
        else expect(table().llm(p, m)?.usdPerOutputToken).toBeGreaterThan(0);
        expect(e.source.length).toBeGreaterThan(0);
      }
    }
  });

  it('docs/pricing.md lists every default with its source tag', () => {
    const doc = readFileSync(new URL('../../docs/pricing.md', import.meta.url), 'utf8');
    for (const modality of ['stt', 'tts', 'llm'] as const) {
      for (const [id, e] of Object.entries(defaults[modality])) {
        const row = doc.split('\n').find((l) => l.startsWith(`| \`${id}\` |`));
        expect(row, `docs/pricing.md row for ${id}`).toBeDefined();
        expect(row).toContain(e.source);
        if (e.uncertain) expect(row).toContain('UNCERTAIN');
      }
    }
  });
});

describe('lookup', () => {
  it('configuration beats defaults: exact, dated snapshot, provider wildcard; free is explicit', () => {
    const t = table({
      llm: { 'openai/gpt-4o': { usdPer1MInput: 1, usdPer1MOutput: 2 }, 'local/*': { free: true } },
      stt: { 'deepgram/nova-3': { usdPerHour: 0.6 } },
    });
    expect(t.llm('openai', 'gpt-4o')).toMatchObject({ usdPerInputToken: 1e-6, usdPerCachedInputToken: 1e-6, usdPerOutputToken: 2e-6, origin: 'config' });
    expect(t.llm('openai', 'gpt-4o-2024-08-06')).toMatchObject({ key: 'openai/gpt-4o', origin: 'config' });
    expect(t.llm('openai', 'gpt-4o-mini')).toMatchObject({ key: 'openai/gpt-4o-mini', origin: 'default' });
    expect(t.llm('anthropic', 'claude-sonnet-4-5-20250929')).toMatchObject({ key: 'anthropic/claude-sonnet-4-5', origin: 'default' });
    expect(t.llm('local', 'anything')).toMatchObject({ free: true, usdPerInputToken: 0, key: 'local/*' });
    expect(t.stt('deepgram', 'nova-3')?.usdPerSecond).toBeCloseTo(0.6 / 3600, 15);
    expect(t.llm('openai', 'o3')).toBeUndefined();
    expect(t.stt('whisper', 'large-v3')).toBeUndefined();
    expect(baseModelId('sonic-latest')).toBe('sonic');
    expect(baseModelId('gpt-4o-mini')).toBe('gpt-4o-mini');
  });

  it('rejects ambiguous or incomplete entries', () => {
    const bad = [
      { stt: { 'x/y': { usdPerMinute: 1, usdPerHour: 60 } } },
      { stt: { 'x/y': {} } },
      { tts: { 'x/y': { free: true, usdPer1kChars: 1 } } },
      { llm: { 'x/y': { usdPer1MInput: 1 } } },
      { llm: { 'no-slash': { free: true } } },
      { llm: { 'x/y': { free: true, extra: 1 } } },
      { rounding: 'nearest' },
    ];
    for (const b of bad) expect(() => pricingSchema.parse(b), JSON.stringify(b)).toThrow();
  });
});

describe('cost functions', () => {
  const nova = table().stt('deepgram', 'nova-3');
  if (!nova) throw new Error('nova-3 has no default price');

  it('exact: 12.34 s of audio costs exactly 12.34 s at the per-minute price', () => {
    expect(billedSeconds(nova, 12.34, 'exact')).toBe(12.34);
    expect(sttCost(nova, 12.34, 'exact')).toBeCloseTo((12.34 / 60) * 0.0077, 15);
  });

  it('provider rounding: each stream rounds up to the increment, at least the minimum', () => {
    expect(billedSeconds(nova, 12.34, 'provider')).toBe(13);
    expect(billedSeconds(nova, 12, 'provider')).toBe(12);
    expect(billedSeconds(nova, 12.000000000001, 'provider')).toBe(12);
    expect(billedSeconds(nova, 0.2, 'provider')).toBe(1);
    expect(billedSeconds(nova, 0, 'provider')).toBe(0);
    const oai = table().stt('openai', 'gpt-4o-transcribe');
    if (!oai) throw new Error('no price');
    expect(billedSeconds(oai, 12.34, 'provider')).toBe(12.34); // no increment declared: exact
  });

  it('TTS per character; LLM with cached prompt tokens at the cached rate', () => {
    const tts1 = table().tts('openai', 'tts-1');
    if (!tts1) throw new Error('no price');
    expect(ttsCost(tts1, 1000)).toBeCloseTo(0.015, 12);
    expect(ttsCost(tts1, 0)).toBe(0);
    const mini = table().llm('openai', 'gpt-4.1-mini');
    if (!mini) throw new Error('no price');
    // 1000 prompt tokens of which 400 cached, 200 completion: 600 x 0.40 + 400 x 0.10 + 200 x 1.60 per 1M.
    expect(llmCost(mini, { prompt_tokens: 1000, cached_tokens: 400, completion_tokens: 200 })).toBeCloseTo((600 * 0.4 + 400 * 0.1 + 200 * 1.6) / 1e6, 15);
    expect(llmCost(mini, { prompt_tokens: 10, cached_tokens: 50, completion_tokens: 0 })).toBeCloseTo((10 * 0.1) / 1e6, 15);
  });
});

describe('startup validation: no routed model without a price', () => {
  const base = { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's' };
  const resolve = (file: unknown, env: Record<string, string> = {}) => resolveConfig(fileSchema.parse(file), { ...base, ...env });

  it('an unpriced custom LLM upstream is a startup error naming the model and the key to set', () => {
    const file = { llm: { upstreams: { vllm: { baseUrl: 'http://127.0.0.1:8000/v1', models: ['llama-3-8b', 'qwen'] } } } };
    let err: unknown;
    try {
      resolve(file);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toContain('LLM model "vllm/llama-3-8b" (routed by llm.upstreams.vllm) has no price');
    expect(msg).toContain('set pricing.llm."vllm/llama-3-8b" (or "vllm/*")');
    expect(msg).toContain('"vllm/qwen"');
    // Declared free, or priced: starts.
    expect(() => resolve({ ...file, pricing: { llm: { 'vllm/*': { free: true } } } })).not.toThrow();
    expect(() =>
      resolve({ ...file, pricing: { llm: { 'vllm/llama-3-8b': { usdPer1MInput: 0.1, usdPer1MOutput: 0.2 }, 'vllm/qwen': { free: true } } } }),
    ).not.toThrow();
  });

  it('an upstream without a model list needs a wildcard price', () => {
    expect(() => resolve({ llm: { upstreams: { ollama: { baseUrl: 'http://127.0.0.1:11434/v1' } } } })).toThrow(/any model of "ollama".*pricing\.llm\."ollama\/\*"/);
  });

  it('STT upstreams, stt.auto and routes candidates that name them must be priced', () => {
    const up = { whisper: { protocol: 'openai-realtime', baseUrl: 'http://127.0.0.1:9000/v1', model: 'large-v3' } };
    expect(() => resolve({ stt: { upstreams: up } })).toThrow(/STT model "whisper\/large-v3" \(routed by stt\.upstreams\.whisper\)/);
    const priced = { 'whisper/large-v3': { usdPerHour: 0.1 } };
    expect(() => resolve({ stt: { upstreams: up }, pricing: { stt: priced } })).not.toThrow();
    expect(() => resolve({ stt: { upstreams: up, auto: { default: ['whisper/distil'] } }, pricing: { stt: priced } })).toThrow(
      /"whisper\/distil" \(routed by stt\.auto\.default\)/,
    );
    expect(() => resolve({ stt: { upstreams: up }, routes: { stt: { fast: { candidates: ['whisper/turbo'] } } }, pricing: { stt: priced } })).toThrow(
      /"whisper\/turbo" \(routed by routes\.stt\.fast\)/,
    );
  });

  it('built-in providers with credentials start with the defaults alone', () => {
    const env = Object.fromEntries(['DEEPGRAM', 'ASSEMBLYAI', 'CARTESIA', 'ELEVENLABS', 'OPENAI', 'ANTHROPIC', 'XAI', 'GROQ', 'CEREBRAS'].map((p) => [`${p}_API_KEY`, 'x']));
    expect(() => resolve({}, { ...env, GEMINI_API_KEY: 'x', DEEPSEEK_API_KEY: 'x', MOONSHOT_API_KEY: 'x' })).not.toThrow();
  });

  it('a budget for an unknown API key is a startup error', () => {
    expect(() => resolve({ budgets: { keys: { nope: { dailyUsd: 1 } } } })).toThrow(/budgets\.keys\.nope: no such API key/);
    expect(() => resolve({ budgets: { keys: { k: { dailyUsd: 1 } } } })).not.toThrow();
    expect(() => fileSchema.parse({ budgets: { keys: { k: {} } } })).toThrow();
  });
});

describe('routing refuses an unpriced model at request time', () => {
  const cfg = resolveConfig(
    fileSchema.parse({
      stt: { upstreams: { whisper: { protocol: 'openai-realtime', baseUrl: 'http://127.0.0.1:9000/v1', model: 'large-v3' } } },
      pricing: { stt: { 'whisper/large-v3': { usdPerHour: 0.1 } } },
    }),
    { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's', OPENAI_API_KEY: 'sk' },
  );

  it('LLM: a dated snapshot of a priced model routes; an unknown model is a 400 naming the config key', () => {
    expect(resolveLlmRoute('openai/gpt-4o-2024-08-06', cfg).model).toBe('gpt-4o-2024-08-06');
    let err: unknown;
    try {
      resolveLlmRoute('openai/o9-preview', cfg);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).status).toBe(400);
    expect((err as GatewayError).message).toMatch(/"openai\/o9-preview" has no price on this gateway: set pricing\.llm\."openai\/o9-preview"/);
  });

  it('STT: another model of a custom upstream without a wildcard price is refused', () => {
    expect(resolveSttRoute('whisper', cfg).route.label).toBe('whisper/large-v3');
    expect(() => resolveSttRoute('whisper/distil', cfg)).toThrow(/"whisper\/distil" has no price/);
  });
});
