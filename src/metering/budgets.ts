/**
 * Budgets per API key (daily and monthly USD, UTC calendar periods). Spend is tracked in memory
 * from the cost increments (cost.ts); a key at `warnRatio` of a budget raises
 * `gateway_budget_warning`, a key at its hard limit gets 429 for new STT/TTS sessions and LLM
 * calls (sessions already running finish). The ledger can seed the current periods' spend at
 * startup (and refresh it from a shared database) with `seed()`. Documented in docs/pricing.md.
 */
import { z } from 'zod';
import type { Logger } from '../log.ts';
import { GatewayError } from '../protocol/errors.ts';
import type { GatewayMetrics } from './metrics.ts';

const limitsSchema = z
  .strictObject({
    dailyUsd: z.number().positive().max(1e9).optional(),
    monthlyUsd: z.number().positive().max(1e9).optional(),
    /** Soft threshold for this key (overrides budgets.warnRatio). */
    warnRatio: z.number().gt(0).max(1).optional(),
  })
  .refine((v) => v.dailyUsd !== undefined || v.monthlyUsd !== undefined, 'set dailyUsd and/or monthlyUsd');

export const budgetsSchema = z
  .strictObject({
    /** Fraction of a budget at which gateway_budget_warning turns 1 (and a warning is logged). */
    warnRatio: z.number().gt(0).max(1).default(0.8),
    /** Budget for every API key without its own entry. */
    default: limitsSchema.optional(),
    /** Budgets by LiveKit API key. */
    keys: z.record(z.string().min(1).max(256), limitsSchema).default({}),
  })
  .prefault({});
export type BudgetsConfig = z.infer<typeof budgetsSchema>;

export type BudgetPeriod = 'daily' | 'monthly';

interface Spend {
  dayStart: number;
  daily: number;
  monthStart: number;
  monthly: number;
  warned: { daily: boolean; monthly: boolean };
}

export interface BudgetStatus {
  period: BudgetPeriod;
  spentUsd: number;
  limitUsd: number;
  /** Start of the next period (UTC). */
  resetsAt: Date;
}

function dayStart(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
}

function monthStart(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

function nextMonth(start: number): number {
  const d = new Date(start);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

export class Budgets {
  private readonly cfg: BudgetsConfig;
  private readonly metrics: GatewayMetrics;
  private readonly log: Logger | null;
  private readonly now: () => number;
  private readonly spend = new Map<string, Spend>();

  constructor(cfg: BudgetsConfig, metrics: GatewayMetrics, opts: { log?: Logger; now?: () => number } = {}) {
    this.cfg = cfg;
    this.metrics = metrics;
    this.log = opts.log ?? null;
    this.now = opts.now ?? Date.now;
    metrics.onBudgetCollect = () => this.refreshGauges();
    for (const key of Object.keys(cfg.keys)) this.refresh(key, this.current(key));
  }

  /** The budget of an API key, or undefined when it has none. */
  limitsOf(apiKey: string): BudgetsConfig['default'] {
    return Object.hasOwn(this.cfg.keys, apiKey) ? this.cfg.keys[apiKey] : this.cfg.default;
  }

  /** Spend record rolled over to the current periods. */
  private current(apiKey: string): Spend {
    const t = this.now();
    const d = dayStart(t);
    const m = monthStart(t);
    let s = this.spend.get(apiKey);
    if (!s) {
      s = { dayStart: d, daily: 0, monthStart: m, monthly: 0, warned: { daily: false, monthly: false } };
      this.spend.set(apiKey, s);
    }
    if (s.dayStart !== d) {
      s.dayStart = d;
      s.daily = 0;
      s.warned.daily = false;
    }
    if (s.monthStart !== m) {
      s.monthStart = m;
      s.monthly = 0;
      s.warned.monthly = false;
    }
    return s;
  }

  /** Add spend (called with every cost increment). Keys without a budget are not tracked. */
  add(apiKey: string, usd: number): void {
    if (!(usd > 0) || this.limitsOf(apiKey) === undefined) return;
    const s = this.current(apiKey);
    s.daily += usd;
    s.monthly += usd;
    this.refresh(apiKey, s);
  }

  /**
   * Replace the spend of the current day and month for a key (e.g. sums from the usage ledger
   * at startup, or a periodic refresh from a database shared by several replicas).
   */
  seed(apiKey: string, spent: { dailyUsd?: number; monthlyUsd?: number }): void {
    if (this.limitsOf(apiKey) === undefined) return;
    const s = this.current(apiKey);
    if (spent.dailyUsd !== undefined) s.daily = Math.max(0, spent.dailyUsd);
    if (spent.monthlyUsd !== undefined) s.monthly = Math.max(0, spent.monthlyUsd);
    this.refresh(apiKey, s);
  }

  /** Current spend against each configured budget of a key. */
  status(apiKey: string): BudgetStatus[] {
    const limits = this.limitsOf(apiKey);
    if (!limits) return [];
    const s = this.current(apiKey);
    const out: BudgetStatus[] = [];
    if (limits.dailyUsd !== undefined) out.push({ period: 'daily', spentUsd: s.daily, limitUsd: limits.dailyUsd, resetsAt: new Date(s.dayStart + 86_400_000) });
    if (limits.monthlyUsd !== undefined) out.push({ period: 'monthly', spentUsd: s.monthly, limitUsd: limits.monthlyUsd, resetsAt: new Date(nextMonth(s.monthStart)) });
    return out;
  }

  /**
   * Null when the key may start a session / LLM call, else the 429 to answer with (fields:
   * reason, period, limit_usd, spent_usd, resets_at, retry_after_s). Counts the rejection.
   * Plugged into the limits' admission checks (server.ts), so it runs where they run.
   */
  check(apiKey: string, modality: 'stt' | 'tts' | 'llm'): GatewayError | null {
    if (this.limitsOf(apiKey) === undefined) return null;
    for (const st of this.status(apiKey)) {
      if (st.spentUsd < st.limitUsd) continue;
      this.metrics.budgetRejections.inc({ modality, api_key: apiKey, period: st.period });
      const retryAfterS = Math.max(1, Math.ceil((st.resetsAt.getTime() - this.now()) / 1000));
      return new GatewayError(
        'rate_limited',
        `${st.period} budget exceeded for API key ${apiKey}: spent $${st.spentUsd.toFixed(4)} of $${st.limitUsd.toFixed(2)}; resets at ${st.resetsAt.toISOString()} (budgets in docs/pricing.md)`,
        {
          reason: 'budget_exceeded',
          period: st.period,
          limit_usd: st.limitUsd,
          spent_usd: Number(st.spentUsd.toFixed(6)),
          resets_at: st.resetsAt.toISOString(),
          retry_after_s: retryAfterS,
        },
      );
    }
    return null;
  }

  private refresh(apiKey: string, s: Spend): void {
    const limits = this.limitsOf(apiKey);
    if (!limits) return;
    const warnRatio = limits.warnRatio ?? this.cfg.warnRatio;
    for (const [period, spent, limit] of [
      ['daily', s.daily, limits.dailyUsd],
      ['monthly', s.monthly, limits.monthlyUsd],
    ] as const) {
      if (limit === undefined) continue;
      const ratio = spent / limit;
      this.metrics.budgetUsedRatio.set({ api_key: apiKey, period }, ratio);
      const warn = ratio >= warnRatio;
      this.metrics.budgetWarning.set({ api_key: apiKey, period }, warn ? 1 : 0);
      if (warn && !s.warned[period]) {
        s.warned[period] = true;
        this.log?.warn({ api_key: apiKey, period, spent_usd: spent, limit_usd: limit }, ratio >= 1 ? 'budget exhausted' : 'budget warning threshold reached');
      }
    }
  }

  /** Recompute every tracked key's gauges (at scrape time: periods roll over without traffic). */
  refreshGauges(): void {
    for (const key of this.spend.keys()) this.refresh(key, this.current(key));
  }
}
