import { describe, expect, it } from 'vitest';
import { Budgets, budgetsSchema } from './budgets.ts';
import { CostMeter } from './cost.ts';
import { GatewayMetrics } from './metrics.ts';
import { PriceTable, pricingSchema } from './pricing.ts';
import { SttMeter } from './stt-meter.ts';

async function sample(m: GatewayMetrics, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = m.registry.getSingleMetric(name);
  if (!metric) return undefined;
  const data = await metric.get();
  const v = data.values.find((s) => Object.entries(labels).every(([k, val]) => s.labels[k] === val));
  return v?.value;
}

function setup(cfg: unknown, start = Date.UTC(2026, 10, 20, 12, 0, 0)) {
  let now = start;
  const metrics = new GatewayMetrics({ defaultMetrics: false });
  const budgets = new Budgets(budgetsSchema.parse(cfg), metrics, { now: () => now });
  return { metrics, budgets, advance: (ms: number) => (now += ms), setNow: (t: number) => (now = t) };
}

describe('budgets', () => {
  it('tracks spend per UTC day and month; warns at warnRatio; refuses with 429 at the hard limit', async () => {
    const { metrics, budgets } = setup({ keys: { k1: { dailyUsd: 10, monthlyUsd: 100 } } });
    expect(await sample(metrics, 'gateway_budget_used_ratio', { api_key: 'k1', period: 'daily' })).toBe(0);
    budgets.add('k1', 7.9);
    expect(budgets.check('k1', 'stt')).toBeNull();
    expect(await sample(metrics, 'gateway_budget_warning', { api_key: 'k1', period: 'daily' })).toBe(0);
    budgets.add('k1', 0.1);
    expect(await sample(metrics, 'gateway_budget_used_ratio', { api_key: 'k1', period: 'daily' })).toBeCloseTo(0.8, 12);
    expect(await sample(metrics, 'gateway_budget_warning', { api_key: 'k1', period: 'daily' })).toBe(1);
    expect(await sample(metrics, 'gateway_budget_warning', { api_key: 'k1', period: 'monthly' })).toBe(0);
    expect(budgets.check('k1', 'llm')).toBeNull();
    budgets.add('k1', 2);
    const err = budgets.check('k1', 'llm');
    expect(err?.status).toBe(429);
    expect(err?.message).toMatch(/^daily budget exceeded for API key k1: spent \$10\.0000 of \$10\.00; resets at 2026-11-21T00:00:00\.000Z/);
    expect(err?.fields).toMatchObject({ reason: 'budget_exceeded', period: 'daily', limit_usd: 10, spent_usd: 10, resets_at: '2026-11-21T00:00:00.000Z', retry_after_s: 12 * 3600 });
    expect(await sample(metrics, 'gateway_budget_rejections_total', { modality: 'llm', api_key: 'k1', period: 'daily' })).toBe(1);
  });

  it('a new day resets the daily spend (gauges too, without traffic), not the monthly one', async () => {
    const { metrics, budgets, advance } = setup({ keys: { k1: { dailyUsd: 10, monthlyUsd: 15 } } });
    budgets.add('k1', 10);
    expect(budgets.check('k1', 'tts')?.fields?.period).toBe('daily');
    advance(12 * 3600 * 1000);
    expect(await sample(metrics, 'gateway_budget_used_ratio', { api_key: 'k1', period: 'daily' })).toBe(0);
    expect(budgets.check('k1', 'tts')).toBeNull();
    budgets.add('k1', 5);
    const err = budgets.check('k1', 'tts');
    expect(err?.fields).toMatchObject({ period: 'monthly', resets_at: '2026-12-01T00:00:00.000Z' });
    advance(11 * 86_400_000); // December
    expect(budgets.check('k1', 'tts')).toBeNull();
    expect(budgets.status('k1')).toEqual([
      { period: 'daily', spentUsd: 0, limitUsd: 10, resetsAt: new Date('2026-12-03T00:00:00.000Z') },
      { period: 'monthly', spentUsd: 0, limitUsd: 15, resetsAt: new Date('2027-01-01T00:00:00.000Z') },
    ]);
  });

  it('default budget applies to keys without an entry; keys without any budget are not tracked; seed replaces spend', () => {
    const { budgets } = setup({ default: { monthlyUsd: 1 }, keys: { vip: { dailyUsd: 100 } } });
    budgets.add('anyone', 1);
    expect(budgets.check('anyone', 'stt')?.fields?.period).toBe('monthly');
    budgets.seed('vip', { dailyUsd: 99.5 });
    expect(budgets.check('vip', 'stt')).toBeNull();
    budgets.add('vip', 0.5);
    expect(budgets.check('vip', 'stt')?.fields?.period).toBe('daily');
    budgets.seed('anyone', { monthlyUsd: 0.25 });
    expect(budgets.check('anyone', 'stt')).toBeNull();
    const none = setup({ keys: { vip: { dailyUsd: 1 } } }).budgets;
    none.add('other', 1000);
    expect(none.check('other', 'llm')).toBeNull();
    expect(none.status('other')).toEqual([]);
  });
});

describe('cost meter', () => {
  function costSetup(pricing: unknown = {}, budgets: unknown = {}) {
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const prices = new PriceTable(pricingSchema.parse(pricing));
    const b = new Budgets(budgetsSchema.parse(budgets), metrics);
    return { metrics, cost: new CostMeter(prices, metrics, b), budgets: b };
  }
  const BPS = 16000 * 2;

  it('STT: exactly 12.34 s of audio, flushed in pieces, bills 12.34 s and its exact cost', async () => {
    const { metrics, cost } = costSetup();
    const meter = new SttMeter(metrics.sttAudioSeconds, 16000, { provider: 'deepgram', model: 'nova-3', apiKey: 'k' }, cost);
    const total = Math.round(12.34 * BPS);
    for (const part of [100_000, 150_000, total - 250_000]) {
      meter.bytes += part;
      meter.flush();
    }
    meter.flush();
    const expected = (12.34 / 60) * 0.0077;
    expect(meter.seconds).toBe(12.34);
    expect(await sample(metrics, 'gateway_stt_audio_seconds_total', { provider: 'deepgram', model: 'nova-3', api_key: 'k' })).toBeCloseTo(12.34, 9);
    expect(meter.costUsd).toBeCloseTo(expected, 15);
    expect(await sample(metrics, 'gateway_cost_usd_total', { modality: 'stt', provider: 'deepgram', model: 'nova-3', api_key: 'k' })).toBeCloseTo(expected, 15);
  });

  it('STT with rounding: provider: each stream is rounded once (not per flush); a rebind starts a new stream', async () => {
    const { metrics, cost } = costSetup({ rounding: 'provider' });
    const meter = new SttMeter(metrics.sttAudioSeconds, 16000, { provider: 'deepgram', model: 'nova-3', apiKey: 'k' }, cost);
    for (let i = 0; i < 10; i++) {
      meter.bytes += Math.round(1.234 * BPS);
      meter.flush();
    }
    expect(meter.costUsd).toBeCloseTo((13 / 60) * 0.0077, 15); // 12.34 s -> 13 s, not 10 x 2 s
    meter.rebind('assemblyai', 'universal-streaming');
    meter.bytes += Math.round(0.5 * BPS);
    meter.flush();
    const aai = 0.15 / 3600; // 1 s increment
    expect(meter.costUsd).toBeCloseTo((13 / 60) * 0.0077 + aai, 15);
    expect(await sample(metrics, 'gateway_cost_usd_total', { modality: 'stt', provider: 'assemblyai', model: 'universal-streaming' })).toBeCloseTo(aai, 15);
    expect(meter.seconds).toBeCloseTo(12.84, 9);
  });

  it('TTS and LLM increments reach the counter and the budget; unpriced usage is counted, never silently $0', async () => {
    const { metrics, cost, budgets } = costSetup({}, { keys: { k: { dailyUsd: 0.001 } } });
    expect(cost.tts('openai', 'tts-1', 'k', 40)).toBeCloseTo(40 * 15e-6, 15);
    const usd = cost.llm('openai', 'gpt-4.1-mini', 'k', { prompt_tokens: 1000, completion_tokens: 500, cached_tokens: 0 }, 'gpt-4.1-mini');
    expect(usd).toBeCloseTo((1000 * 0.4 + 500 * 1.6) / 1e6, 15);
    expect(await sample(metrics, 'gateway_cost_usd_total', { modality: 'llm', provider: 'openai', model: 'gpt-4.1-mini', api_key: 'k' })).toBeCloseTo(usd, 15);
    expect(budgets.status('k')[0]?.spentUsd).toBeCloseTo(usd + 40 * 15e-6, 15);
    expect(budgets.check('k', 'llm')?.status).toBe(429);
    expect(cost.llm('nobody', 'x', 'k', { prompt_tokens: 1, completion_tokens: 1, cached_tokens: 0 }, 'x')).toBe(0);
    expect(await sample(metrics, 'gateway_cost_unpriced_total', { modality: 'llm', provider: 'nobody', model: 'x' })).toBe(1);
  });
});
