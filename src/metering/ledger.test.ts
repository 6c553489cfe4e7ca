/**
 * Usage ledger: queueing and batching (one transaction per event-loop turn), checkpoint ->
 * final upserts, retry and bounded queue with a failing store, SQLite WAL + crash recovery, and
 * reports (filters, group_by) on SQLite. The PostgreSQL store runs the same checks in
 * test/protocol/usage-postgres.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../log.ts';
import { Ledger, openLedger, type LedgerStore } from './ledger.ts';
import { T0, checkReports, rec, rowOf } from '../../test/helpers/ledger.ts';
import { UsageQueryError, parseUsageQuery, type LedgerRow, type UsageQuery, type UsageReport } from './ledger-report.ts';
import { SqliteLedgerStore } from './ledger-sqlite.ts';
import { GatewayMetrics } from './metrics.ts';

/** Resolves after the current turn's microtasks (the ledger writes then). */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

class FakeStore implements LedgerStore {
  readonly backend = 'sqlite' as const;
  batches: LedgerRow[][] = [];
  failures = 0;
  write(rows: LedgerRow[]): void {
    if (this.failures > 0) {
      this.failures--;
      throw new Error('disk I/O error');
    }
    this.batches.push(rows.map((r) => ({ ...r })));
  }
  report(): Promise<UsageReport> {
    throw new Error('not used');
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

describe('Ledger queue', () => {
  it('writes nothing synchronously; all records of one turn go in one batch', async () => {
    const store = new FakeStore();
    const ledger = new Ledger(store, { log: silentLogger });
    for (let i = 0; i < 5; i++) ledger.record(rec({ sessionId: `s${i}` }));
    expect(store.batches).toHaveLength(0);
    await turn();
    expect(store.batches).toHaveLength(1);
    expect(store.batches[0]?.map((r) => r.id)).toEqual(['s0', 's1', 's2', 's3', 's4']);
    ledger.record(rec({ sessionId: 's5' }));
    await turn();
    expect(store.batches).toHaveLength(2);
  });

  it('a queued checkpoint is replaced by a newer one and by the final record; never the reverse', async () => {
    const store = new FakeStore();
    const ledger = new Ledger(store, { log: silentLogger });
    ledger.checkpoint(rec({ sessionId: 'a', audioSeconds: 1 }));
    ledger.checkpoint(rec({ sessionId: 'a', audioSeconds: 2 }));
    ledger.record(rec({ sessionId: 'a', audioSeconds: 3 }));
    ledger.checkpoint(rec({ sessionId: 'a', audioSeconds: 4 }));
    await turn();
    expect(store.batches).toEqual([[expect.objectContaining({ id: 'a', status: 'closed', outcome: 'ok', audio_seconds: 3 })]]);
  });

  it('maps every field of a record to its column', () => {
    const store = new FakeStore();
    const ledger = new Ledger(store, { log: silentLogger });
    ledger.record(
      rec({
        sessionId: 'llm_1',
        modality: 'llm',
        provider: 'openai',
        model: 'gpt-4o-mini',
        fallbackChain: ['openai/gpt-4o-mini'],
        audioSeconds: 0,
        tokens: { prompt: 120, completion: 30, cached: 64, estimated: false },
        costUsd: 0.0012,
        outcome: 'provider_error',
        errorCode: 502,
        detail: 'all candidates failed',
        meta: { roomId: 'room-1', jobId: 'job-1', agentId: 'agent-1', clientSessionId: 'cs-1' },
      }),
    );
    return turn().then(() => {
      expect(store.batches[0]?.[0]).toEqual({
        id: 'llm_1',
        status: 'closed',
        modality: 'llm',
        api_key: 'key-a',
        provider: 'openai',
        model: 'gpt-4o-mini',
        fallback_chain: '["openai/gpt-4o-mini"]',
        started_at: T0,
        ended_at: T0 + 5000,
        room_id: 'room-1',
        job_id: 'job-1',
        agent_id: 'agent-1',
        client_session_id: 'cs-1',
        audio_seconds: 0,
        characters: null,
        generations: null,
        prompt_tokens: 120,
        completion_tokens: 30,
        cached_tokens: 64,
        tokens_estimated: false,
        cost_usd: 0.0012,
        outcome: 'provider_error',
        error_code: 502,
        detail: 'all candidates failed',
      });
    });
  });

  it('keeps rows queued while the store fails and writes them on retry', async () => {
    const store = new FakeStore();
    store.failures = 2;
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const ledger = new Ledger(store, { log: silentLogger, metrics, retryMs: 5 });
    ledger.checkpoint(rec({ sessionId: 'a', audioSeconds: 1 }));
    ledger.record(rec({ sessionId: 'b' }));
    await turn();
    expect(store.batches).toHaveLength(0);
    expect(ledger.queued).toBe(2);
    // Arrives during the outage: replaces the queued checkpoint of `a`.
    ledger.record(rec({ sessionId: 'a', audioSeconds: 7 }));
    const deadline = Date.now() + 2000;
    while (ledger.queued > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(store.batches.flat().map((r) => [r.id, r.status, r.audio_seconds])).toEqual([
      ['b', 'closed', 1],
      ['a', 'closed', 7],
    ]);
    expect((await metrics.ledgerWriteErrors.get()).values[0]?.value).toBe(2);
    expect((await metrics.ledgerRowsWritten.get()).values[0]?.value).toBe(2);
  });

  it('bounds the queue: sheds checkpoints before final records, and counts them', async () => {
    const store = new FakeStore();
    store.failures = 1_000_000;
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const ledger = new Ledger(store, { log: silentLogger, metrics, maxQueue: 3, retryMs: 60_000 });
    ledger.record(rec({ sessionId: 'c1' }));
    ledger.checkpoint(rec({ sessionId: 'o1' }));
    ledger.record(rec({ sessionId: 'c2' }));
    await turn();
    ledger.record(rec({ sessionId: 'c3' }));
    ledger.record(rec({ sessionId: 'c4' }));
    expect(ledger.queued).toBe(3);
    const dropped = (await metrics.ledgerDropped.get()).values;
    expect(dropped.find((v) => v.labels.status === 'open')?.value).toBe(1);
    expect(dropped.find((v) => v.labels.status === 'closed')?.value).toBe(1);
    store.failures = 0;
    await ledger.flush();
    expect(store.batches.flat().map((r) => r.id)).toEqual(['c2', 'c3', 'c4']);
  });

  it('close() drains the queue before closing the store', async () => {
    const store = new FakeStore();
    store.failures = 1;
    const ledger = new Ledger(store, { log: silentLogger, retryMs: 5 });
    ledger.record(rec({ sessionId: 'x' }));
    await ledger.close(2000);
    expect(store.batches.flat().map((r) => r.id)).toEqual(['x']);
  });

  it('close() gives up on a write that never returns at its deadline and still closes the store', async () => {
    let closed = false;
    const store: LedgerStore = {
      backend: 'postgres',
      write: () => new Promise<void>(() => undefined),
      report: () => Promise.reject(new Error('not used')),
      close: () => {
        closed = true;
        return Promise.resolve();
      },
    };
    const ledger = new Ledger(store, { log: silentLogger });
    ledger.record(rec({ sessionId: 'x' }));
    await turn();
    const t0 = Date.now();
    await ledger.close(200);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(closed).toBe(true);
  }, 3000);
});

describe('SQLite store', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ledger-test-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('creates the directory, uses WAL, and commits a closed record within the turn', async () => {
    const path = join(dir, 'nested', 'usage.db');
    const ledger = await openLedger({ kind: 'sqlite', path }, { log: silentLogger });
    expect(ledger).not.toBeNull();
    ledger?.record(rec({ sessionId: 'stt_1', audioSeconds: 12.34, meta: { roomId: 'room-1' } }));
    await turn();
    // A second connection (another process would see the same) reads the committed row.
    const db = new DatabaseSync(path, { readOnly: true });
    expect(db.prepare('PRAGMA journal_mode').get()).toEqual({ journal_mode: 'wal' });
    expect(db.prepare('SELECT id, status, audio_seconds, room_id FROM usage_records').all()).toEqual([
      { id: 'stt_1', status: 'closed', audio_seconds: 12.34, room_id: 'room-1' },
    ]);
    db.close();
    await ledger?.close();
  });

  it('an open checkpoint never overwrites a closed row already written', async () => {
    const store = new SqliteLedgerStore(join(dir, 'u.db'));
    const ledger = new Ledger(store, { log: silentLogger });
    ledger.checkpoint(rec({ sessionId: 'a', audioSeconds: 1 }));
    await turn();
    ledger.record(rec({ sessionId: 'a', audioSeconds: 2 }));
    await turn();
    ledger.checkpoint(rec({ sessionId: 'a', audioSeconds: 3 }));
    await turn();
    const r = await store.report(parseUsageQuery(() => null));
    expect(r.records?.map((x) => [x.id, x.status, x.outcome, x.audio_seconds])).toEqual([['a', 'closed', 'ok', 2]]);
    await ledger.close();
  });

  it('on reopen, rows left open by a dead process become interrupted with their checkpoint quantities', async () => {
    const path = join(dir, 'u.db');
    const first = new SqliteLedgerStore(path);
    first.write([
      { ...rowOf(rec({ sessionId: 'live', audioSeconds: 4.5 })), status: 'open', outcome: 'open' },
      rowOf(rec({ sessionId: 'done', audioSeconds: 2 })),
    ]);
    // No close(): the process "died".
    const ledger = await openLedger({ kind: 'sqlite', path }, { log: silentLogger });
    const r = await ledger?.report(parseUsageQuery(() => null));
    expect(r?.records?.map((x) => [x.id, x.status, x.outcome, x.audio_seconds]).sort()).toEqual([
      ['done', 'closed', 'ok', 2],
      ['live', 'closed', 'interrupted', 4.5],
    ]);
    await ledger?.close();
    await first.close();
  });

  it('reports totals, filters and groups', async () => {
    const store = new SqliteLedgerStore(join(dir, 'u.db'));
    await checkReports(store);
    await store.close();
  });
});

describe('parseUsageQuery', () => {
  const parse = (p: Record<string, string>): UsageQuery => parseUsageQuery((n) => p[n]);
  it('parses dates, epochs and group keys', () => {
    expect(parse({ from: '2025-03-01', to: '2025-03-02T12:00:00Z', group_by: 'day, model,day' })).toEqual({
      from: Date.parse('2025-03-01T00:00:00Z'),
      to: Date.parse('2025-03-02T12:00:00Z'),
      groupBy: ['day', 'model'],
      limit: 1000,
    });
    expect(parse({ from: '1740823200' }).from).toBe(1740823200_000);
    expect(parse({ from: '1740823200000' }).from).toBe(1740823200_000);
  });
  it.each([
    [{ from: 'yesterday' }, /from: not an ISO 8601/],
    [{ from: '2025-03-02', to: '2025-03-01' }, /to must be after from/],
    [{ group_by: 'user' }, /group_by: unknown key "user"/],
    [{ limit: '0' }, /limit/],
    [{ limit: '20000' }, /limit/],
  ])('rejects %j', (p, msg) => {
    expect(() => parse(p as Record<string, string>)).toThrow(UsageQueryError);
    expect(() => parse(p as Record<string, string>)).toThrow(msg);
  });
});
