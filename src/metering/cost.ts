/**
 * Cost meter: turns the quantities the sessions already meter into `gateway_cost_usd_total`
 * and budget spend, at the same flush points (STT meter flushes, TTS generation ends, LLM
 * request ends): never on the audio hot path.
 */
import type { LlmUsage } from '../providers/types.ts';
import type { Budgets } from './budgets.ts';
import type { GatewayMetrics } from './metrics.ts';
import { llmCost, sttCost, ttsCost, type Modality, type PriceTable, type Rounding, type SttRate } from './pricing.ts';

export class CostMeter {
  readonly prices: PriceTable;
  readonly rounding: Rounding;
  readonly budgets: Budgets;
  private readonly metrics: GatewayMetrics;

  constructor(prices: PriceTable, metrics: GatewayMetrics, budgets: Budgets) {
    this.prices = prices;
    this.rounding = prices.rounding;
    this.metrics = metrics;
    this.budgets = budgets;
  }

  /** Count `usd` against the cost counter and the key's budget. */
  add(modality: Modality, provider: string, model: string, apiKey: string, usd: number): void {
    if (!(usd > 0)) return;
    this.metrics.costUsd.inc({ modality, provider, model, api_key: apiKey }, usd);
    this.budgets.add(apiKey, usd);
  }

  private unpriced(modality: Modality, provider: string, model: string): void {
    this.metrics.costUnpriced.inc({ modality, provider, model });
  }

  /** An STT stream's cost tracker (one per provider connection segment of a session). */
  sttStream(provider: string, model: string, apiKey: string): SttCostStream {
    const rate = this.prices.stt(provider, model);
    if (!rate) this.unpriced('stt', provider, model);
    return new SttCostStream(this, rate ?? null, { provider, model, apiKey });
  }

  /** Cost of one TTS generation's characters sent to the provider; counted, and returned. */
  tts(provider: string, model: string, apiKey: string, characters: number): number {
    if (characters <= 0) return 0;
    const rate = this.prices.tts(provider, model);
    if (!rate) {
      this.unpriced('tts', provider, model);
      return 0;
    }
    const usd = ttsCost(rate, characters);
    this.add('tts', provider, model, apiKey, usd);
    return usd;
  }

  /**
   * Cost of one LLM request's tokens; counted, and returned. Priced by the exact `model`;
   * counted under `label` (the route's bounded metric label: clients choose model ids).
   */
  llm(
    provider: string,
    model: string,
    apiKey: string,
    usage: Pick<LlmUsage, 'prompt_tokens' | 'completion_tokens' | 'cached_tokens'>,
    label: string,
  ): number {
    const rate = this.prices.llm(provider, model);
    if (!rate) {
      this.unpriced('llm', provider, label);
      return 0;
    }
    const usd = llmCost(rate, usage);
    this.add('llm', provider, label, apiKey, usd);
    return usd;
  }
}

/**
 * Cost of one STT stream. `update(totalSeconds)` is called at each meter flush with the
 * stream's total audio so far: the cost of the (rounded) total minus what was already counted
 * is added, so rounding applies once per stream, not per flush.
 */
export class SttCostStream {
  /** USD counted so far for this stream. */
  usd = 0;
  private readonly meter: CostMeter;
  private readonly rate: SttRate | null;
  private readonly labels: { provider: string; model: string; apiKey: string };

  constructor(meter: CostMeter, rate: SttRate | null, labels: { provider: string; model: string; apiKey: string }) {
    this.meter = meter;
    this.rate = rate;
    this.labels = labels;
  }

  update(totalSeconds: number): void {
    if (!this.rate) return;
    const total = sttCost(this.rate, totalSeconds, this.meter.rounding);
    const delta = total - this.usd;
    if (delta <= 0) return;
    this.usd = total;
    this.meter.add('stt', this.labels.provider, this.labels.model, this.labels.apiKey, delta);
  }
}
