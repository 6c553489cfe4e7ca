import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { rec } from '../../test/helpers/ledger.ts';
import { seedBudgetsFromLedger } from './budget-seed.ts';
import { Budgets, budgetsSchema } from './budgets.ts';
import { openLedger } from './ledger.ts';
import { GatewayMetrics } from './metrics.ts';
import { silentLogger } from '../log.ts';

describe('budgets seeded from the usage ledger', () => {
  it('a restarted gateway refuses a key whose spend today already reached its budget', async () => {
    const now = Date.UTC(2026, 10, 21, 15, 0, 0);
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const ledger = await openLedger({ kind: 'sqlite', path: join(mkdtempSync(join(tmpdir(), 'seed-')), 'usage.db') }, { metrics, log: silentLogger });
    if (!ledger) throw new Error('ledger not opened');
    const at = (t: number) => ({ startedAt: new Date(t), endedAt: new Date(t + 1000) });
    ledger.record(rec({ sessionId: 'a', apiKey: 'k1', costUsd: 3, ...at(now - 3_600_000) })); // today
    ledger.record(rec({ sessionId: 'b', apiKey: 'k1', costUsd: 4, ...at(Date.UTC(2026, 10, 2)) })); // this month
    ledger.record(rec({ sessionId: 'c', apiKey: 'k1', costUsd: 50, ...at(Date.UTC(2026, 9, 30)) })); // last month
    ledger.record(rec({ sessionId: 'd', apiKey: 'k2', costUsd: 1, ...at(now - 60_000) }));
    await new Promise((r) => setTimeout(r, 50));
    const budgets = new Budgets(budgetsSchema.parse({ keys: { k1: { dailyUsd: 3, monthlyUsd: 100 }, k2: { dailyUsd: 10 } } }), metrics, { now: () => now });
    expect(budgets.check('k1', 'stt')).toBeNull();
    await seedBudgetsFromLedger(budgets, ledger, now);
    const k1 = budgets.status('k1');
    expect(k1.find((s) => s.period === 'daily')?.spentUsd).toBeCloseTo(3, 9);
    expect(k1.find((s) => s.period === 'monthly')?.spentUsd).toBeCloseTo(7, 9);
    expect(budgets.check('k1', 'stt')?.status).toBe(429);
    expect(budgets.status('k2').find((s) => s.period === 'daily')?.spentUsd).toBeCloseTo(1, 9);
    expect(budgets.check('k2', 'llm')).toBeNull();
    await ledger.close();
  });
});
