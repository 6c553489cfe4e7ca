/**
 * Budgets survive restarts: at startup (and whenever called) the current day's and month's spend
 * per API key is summed from the usage ledger and seeded into the in-memory budgets.
 */
import type { Budgets } from './budgets.ts';
import type { UsageQuery, UsageReport } from './ledger-report.ts';

export interface SpendSource {
  report(q: UsageQuery): Promise<UsageReport>;
}

function spendByKey(r: UsageReport): Map<string, number> {
  const out = new Map<string, number>();
  for (const g of r.groups ?? []) {
    const key = g.key.api_key;
    if (typeof key === 'string') out.set(key, g.cost_usd);
  }
  return out;
}

/** Seed every key's daily and monthly spend (UTC periods, as Budgets uses) from the ledger. */
export async function seedBudgetsFromLedger(budgets: Budgets, ledger: SpendSource, now = Date.now()): Promise<number> {
  const d = new Date(now);
  const dayStart = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  const monthStart = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  const [daily, monthly] = await Promise.all([
    ledger.report({ from: dayStart, groupBy: ['api_key'], limit: 10_000 }),
    ledger.report({ from: monthStart, groupBy: ['api_key'], limit: 10_000 }),
  ]);
  const day = spendByKey(daily);
  const month = spendByKey(monthly);
  for (const key of new Set([...day.keys(), ...month.keys()])) {
    budgets.seed(key, { dailyUsd: day.get(key) ?? 0, monthlyUsd: month.get(key) ?? 0 });
  }
  return month.size;
}
