/**
 * The PostgreSQL ledger against a real server this test starts (initdb + pg_ctl into a temp
 * directory; test/helpers/postgres.ts; `.ci/run` installs Debian's postgresql). Missing server
 * binaries fail the file with instructions instead of skipping it.
 *
 * Proves: the same reports as SQLite; upserts never downgrade a closed row; two replicas creating
 * the schema and writing at once; rows queued through a database outage are written after it;
 * a write blocked on a lock or on a server that stopped answering fails at its timeout (retried);
 * the gateway (in process and `node src/main.ts` with USAGE_DATABASE_URL) writes checkpoints and
 * final records of real STT sessions and serves them on GET /v1/usage.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { silentLogger } from '../../src/log.ts';
import { Ledger, openLedger } from '../../src/metering/ledger.ts';
import { parseUsageQuery } from '../../src/metering/ledger-report.ts';
import { PostgresLedgerStore } from '../../src/metering/ledger-postgres.ts';
import { GatewayMetrics } from '../../src/metering/metrics.ts';
import { startDeepgramEmulator, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { connectChild, startChildGateway } from '../helpers/child-gateway.ts';
import { checkReports, rec, startLedgerGateway } from '../helpers/ledger.ts';
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts';
import { BYTES_PER_SECOND, FRAME_BYTES, createMessage, sendBinary, settle, startSession, waitUntil } from '../helpers/stt.ts';

const ADMIN_TOKEN = 'admin-token-for-postgres-tests';

let server: TestPostgres;
let emu: DeepgramEmulator;
let dbCount = 0;

beforeAll(async () => {
  server = await startPostgres();
  emu = await startDeepgramEmulator({ idleTimeoutMs: 60_000 });
}, 60_000);

afterAll(async () => {
  await emu?.close();
  await server?.stop();
});

/** A fresh database on the test server; its URL. */
async function freshDatabase(): Promise<string> {
  const name = `ledger_${++dbCount}`;
  const c = new pg.Client({ connectionString: server.url });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  return server.url.replace(/\/postgres$/, `/${name}`);
}

async function query<T extends Record<string, unknown>>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const pcm = (seconds: number): Buffer => Buffer.alloc(Math.round(seconds * BYTES_PER_SECOND), 1);

describe('PostgreSQL ledger store', () => {
  it('gives the same reports as SQLite for the same rows', async () => {
    const store = new PostgresLedgerStore(await freshDatabase());
    await checkReports(store);
    await store.close();
  });

  it('upserts: checkpoints update an open row, the final record closes it, a late checkpoint never reopens it', async () => {
    const url = await freshDatabase();
    const ledger = new Ledger(new PostgresLedgerStore(url), { log: silentLogger });
    ledger.checkpoint(rec({ sessionId: 's', audioSeconds: 1 }));
    await ledger.flush();
    ledger.checkpoint(rec({ sessionId: 's', audioSeconds: 2 }));
    await ledger.flush();
    expect(await query(url, 'SELECT status, outcome, audio_seconds FROM usage_records')).toEqual([{ status: 'open', outcome: 'open', audio_seconds: 2 }]);
    ledger.record(rec({ sessionId: 's', audioSeconds: 3, tokens: { prompt: 5, completion: 6, cached: 0, estimated: false }, fallbackChain: ['a/b', 'c/d'] }));
    await ledger.flush();
    ledger.checkpoint(rec({ sessionId: 's', audioSeconds: 9 }));
    await ledger.flush();
    const [row] = await query(url, 'SELECT status, outcome, audio_seconds, prompt_tokens, tokens_estimated, fallback_chain, started_at FROM usage_records');
    expect(row).toEqual({
      status: 'closed',
      outcome: 'ok',
      audio_seconds: 3,
      prompt_tokens: '5',
      tokens_estimated: false,
      fallback_chain: '["a/b","c/d"]',
      started_at: new Date('2025-03-01T10:00:00Z'),
    });
    await ledger.close();
  });

  it('two replicas create the schema and write concurrently without losing a row', async () => {
    const url = await freshDatabase();
    const a = new Ledger(new PostgresLedgerStore(url), { log: silentLogger, maxBatch: 50 });
    const b = new Ledger(new PostgresLedgerStore(url), { log: silentLogger, maxBatch: 50 });
    for (let i = 0; i < 300; i++) {
      a.record(rec({ sessionId: `a${i}`, audioSeconds: 1 }));
      b.record(rec({ sessionId: `b${i}`, audioSeconds: 0.5, apiKey: 'key-b' }));
    }
    await Promise.all([a.close(), b.close()]);
    const report = await new PostgresLedgerStore(url).report(parseUsageQuery((n) => (n === 'group_by' ? 'api_key' : null)));
    expect(report.groups?.map((g) => [g.key.api_key, g.records, g.stt_audio_seconds])).toEqual([
      ['key-a', 300, 300],
      ['key-b', 300, 150],
    ]);
  });

  it('keeps rows queued through a database outage and writes them when it is back', async () => {
    const url = await freshDatabase();
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const ledger = new Ledger(new PostgresLedgerStore(url), { log: silentLogger, metrics, retryMs: 100 });
    ledger.record(rec({ sessionId: 'before' }));
    await ledger.flush();
    await server.pause();
    try {
      ledger.record(rec({ sessionId: 'during-1' }));
      ledger.checkpoint(rec({ sessionId: 'during-2', audioSeconds: 1 }));
      await waitUntil(() => ledger.queued === 2, 'rows queued');
      await turn();
      await new Promise((r) => setTimeout(r, 300));
      expect(ledger.queued).toBe(2);
      ledger.record(rec({ sessionId: 'during-2', audioSeconds: 2 }));
    } finally {
      await server.resume();
    }
    await waitUntil(() => ledger.queued === 0, 'the queue to drain after the outage', 15_000);
    await ledger.close();
    expect(await query(url, 'SELECT id, status, audio_seconds FROM usage_records ORDER BY id')).toEqual([
      { id: 'before', status: 'closed', audio_seconds: 1 },
      { id: 'during-1', status: 'closed', audio_seconds: 1 },
      { id: 'during-2', status: 'closed', audio_seconds: 2 },
    ]);
    expect((await metrics.ledgerWriteErrors.get()).values[0]?.value).toBeGreaterThan(0);
  }, 30_000);

  it('a write blocked on a lock fails at the statement timeout; its rows stay queued and are written later', async () => {
    const url = await freshDatabase();
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const store = new PostgresLedgerStore(url, undefined, 300);
    await store.ensureSchema();
    const ledger = new Ledger(store, { log: silentLogger, metrics, retryMs: 60_000 });
    const locker = new pg.Client({ connectionString: url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE usage_records IN ACCESS EXCLUSIVE MODE');
      ledger.record(rec({ sessionId: 'blocked' }));
      const t0 = Date.now();
      await ledger.flush();
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(ledger.queued).toBe(1);
      expect((await metrics.ledgerWriteErrors.get()).values[0]?.value).toBe(1);
      await locker.query('ROLLBACK');
    } finally {
      await locker.end();
    }
    await ledger.flush();
    expect(ledger.queued).toBe(0);
    await ledger.close();
    expect(await query(url, 'SELECT id, status FROM usage_records')).toEqual([{ id: 'blocked', status: 'closed' }]);
  }, 10_000);

  it('a server that stops answering fails the write at the client-side query timeout', async () => {
    const url = await freshDatabase();
    const ledger = new Ledger(new PostgresLedgerStore(url, undefined, 300), { log: silentLogger, retryMs: 60_000 });
    ledger.record(rec({ sessionId: 'first' }));
    await ledger.flush();
    // The pool's one connection: its backend process is frozen, so it never answers (nor runs its statement_timeout).
    const backends = await query<{ pid: number }>(
      url,
      `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()`,
    );
    expect(backends).toHaveLength(1);
    const thaw = (): void => {
      for (const b of backends) {
        try {
          process.kill(b.pid, 'SIGCONT');
        } catch {
          // Already gone: thawed once, it saw its client's connection closed and exited.
        }
      }
    };
    // Also when the test times out: a frozen backend would block the server's shutdown.
    onTestFinished(thaw);
    for (const b of backends) process.kill(b.pid, 'SIGSTOP');
    try {
      ledger.record(rec({ sessionId: 'second' }));
      const t0 = Date.now();
      await ledger.flush();
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(ledger.queued).toBe(1);
    } finally {
      thaw();
    }
    await ledger.flush();
    expect(ledger.queued).toBe(0);
    await ledger.close();
    expect(await query(url, 'SELECT id FROM usage_records ORDER BY id')).toEqual([{ id: 'first' }, { id: 'second' }]);
  }, 15_000);
});

describe('gateway with USAGE_DATABASE_URL', () => {
  it('records checkpoints and final records of STT sessions, reported by GET /v1/usage', async () => {
    const url = await freshDatabase();
    const ledger = await openLedger({ kind: 'postgres', url }, { log: silentLogger });
    if (!ledger) throw new Error('no ledger');
    const gw = await startLedgerGateway(ledger, {
      env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: emu.url, ADMIN_TOKEN },
      file: { ledger: { checkpointS: 1 } },
    });
    try {
      const n = emu.connections.length;
      const live = await startSession(gw);
      const conn = await emu.waitForConnection(n + 1);
      sendBinary(live.rec, pcm(1.25), FRAME_BYTES);
      await waitUntil(() => conn.audioBytes === 1.25 * BYTES_PER_SECOND, 'audio upstream');
      // The 1 s housekeeping tick checkpoints the live session.
      let open: Record<string, unknown>[] = [];
      const deadline = Date.now() + 8000;
      while (Date.now() < deadline) {
        open = await query(url, 'SELECT status, audio_seconds FROM usage_records WHERE id = $1', [live.id]);
        if (open[0]?.audio_seconds === 1.25) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(open).toEqual([{ status: 'open', audio_seconds: 1.25 }]);
      live.rec.send({ type: 'session.close' });
      await live.rec.closed();
      await settle(gw);
      await ledger.flush();
      const res = await fetch(`${gw.baseUrl}/usage?group_by=model`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { groups: { key: Record<string, string>; records: number; open: number; stt_audio_seconds: number }[] };
      expect(body.groups).toEqual([expect.objectContaining({ key: { provider: 'deepgram', model: 'nova-3' }, records: 1, open: 0, stt_audio_seconds: 1.25 })]);
    } finally {
      await gw.close();
      await ledger.close();
    }
  });

  it('node src/main.ts writes to PostgreSQL and drains its queue on SIGTERM', async () => {
    const url = await freshDatabase();
    const g = await startChildGateway({ DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: emu.url, USAGE_DATABASE_URL: url });
    try {
      const rec = await connectChild(g, '/v1/stt', { 'X-LiveKit-Room-Id': 'pg-room' });
      const n = emu.connections.length;
      rec.send(createMessage());
      const id = (await rec.first('session.created')).session_id as string;
      const conn = await emu.waitForConnection(n + 1);
      sendBinary(rec, pcm(0.75));
      await waitUntil(() => conn.audioBytes === 0.75 * BYTES_PER_SECOND, 'audio upstream');
      g.proc.kill('SIGTERM');
      expect(await g.exited).toBe(0);
      expect(await query(url, 'SELECT id, status, outcome, audio_seconds, room_id FROM usage_records')).toEqual([
        { id, status: 'closed', outcome: 'ok', audio_seconds: 0.75, room_id: 'pg-room' },
      ]);
    } finally {
      if (g.proc.exitCode === null && g.proc.signalCode === null) g.proc.kill('SIGKILL');
    }
  });
});
