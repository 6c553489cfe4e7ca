/**
 * PostgreSQL ledger store (`pg`), for several gateway replicas writing one ledger. Same table and
 * columns as SQLite (times are timestamptz, flags boolean); one batch = one multi-row upsert.
 * The schema is created on first use under an advisory lock (replicas may start together); until
 * the database answers, the ledger keeps rows queued and retries.
 */
import pg from 'pg';
import type { Logger } from '../log.ts';
import type { LedgerStore } from './ledger.ts';
import {
  LEDGER_COLUMNS,
  LEDGER_TABLE,
  buildReport,
  groupsQuery,
  recordsQuery,
  totalsQuery,
  type Dialect,
  type LedgerRow,
  type UsageQuery,
  type UsageReport,
} from './ledger-report.ts';

export const POSTGRES_SCHEMA = `
CREATE TABLE IF NOT EXISTS ${LEDGER_TABLE} (
  id TEXT PRIMARY KEY,
  status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
  modality TEXT NOT NULL,
  api_key TEXT NOT NULL,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  fallback_chain TEXT,
  started_at TIMESTAMPTZ NOT NULL,
  ended_at TIMESTAMPTZ NOT NULL,
  room_id TEXT,
  job_id TEXT,
  agent_id TEXT,
  client_session_id TEXT,
  audio_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
  characters BIGINT,
  generations INTEGER,
  prompt_tokens BIGINT,
  completion_tokens BIGINT,
  cached_tokens BIGINT,
  tokens_estimated BOOLEAN,
  cost_usd DOUBLE PRECISION,
  outcome TEXT NOT NULL,
  error_code INTEGER,
  detail TEXT,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ${LEDGER_TABLE}_started_at ON ${LEDGER_TABLE} (started_at);
CREATE INDEX IF NOT EXISTS ${LEDGER_TABLE}_api_key_started_at ON ${LEDGER_TABLE} (api_key, started_at);
CREATE INDEX IF NOT EXISTS ${LEDGER_TABLE}_room_id ON ${LEDGER_TABLE} (room_id);
CREATE INDEX IF NOT EXISTS ${LEDGER_TABLE}_open ON ${LEDGER_TABLE} (status) WHERE status = 'open';
`;

const TIME_COLUMNS = new Set<string>(['started_at', 'ended_at']);
const UPDATE_SET = LEDGER_COLUMNS.filter((c) => c !== 'id')
  .map((c) => `${c} = EXCLUDED.${c}`)
  .join(', ');

const DIALECT: Dialect = {
  param: (i) => `$${i}`,
  day: `to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')`,
  time: (ms) => new Date(ms),
};

/** Arbitrary constant: serializes schema creation across replicas. */
const SCHEMA_LOCK = 7_420_191;

/** Longest a statement may run (server side: e.g. waiting on a lock) before it fails and is retried. */
const QUERY_TIMEOUT_MS = 10_000;

export class PostgresLedgerStore implements LedgerStore {
  readonly backend = 'postgres' as const;
  private readonly pool: pg.Pool;
  private ready: Promise<void> | null = null;

  constructor(url: string, log?: Logger, queryTimeoutMs = QUERY_TIMEOUT_MS) {
    this.pool = new pg.Pool({
      connectionString: url,
      max: 4,
      connectionTimeoutMillis: 5000,
      idleTimeoutMillis: 30_000,
      statement_timeout: queryTimeoutMs,
      // Client side, a little later: the server's cancel comes first while it answers; this one
      // covers a server or network that stopped answering (the connection is then discarded).
      query_timeout: queryTimeoutMs + 2000,
    });
    // An idle client losing its connection must not crash the process; the next query reconnects.
    this.pool.on('error', (err) => log?.warn({ err: err.message }, 'usage ledger: postgres connection lost'));
  }

  /** Create the table and indexes once (retried after a failure). */
  ensureSchema(): Promise<void> {
    this.ready ??= (async () => {
      const client = await this.pool.connect();
      try {
        await client.query('BEGIN');
        await client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
        await client.query(POSTGRES_SCHEMA);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    })().catch((err: unknown) => {
      this.ready = null;
      throw err;
    });
    return this.ready;
  }

  async write(rows: LedgerRow[]): Promise<void> {
    if (rows.length === 0) return;
    await this.ensureSchema();
    const params: unknown[] = [];
    const tuples: string[] = [];
    for (const row of rows) {
      const ph: string[] = [];
      for (const c of LEDGER_COLUMNS) {
        const v = row[c];
        params.push(TIME_COLUMNS.has(c) ? new Date(v as number) : v);
        ph.push(`$${params.length}`);
      }
      tuples.push(`(${ph.join(', ')}, now())`);
    }
    await this.pool.query(
      `INSERT INTO ${LEDGER_TABLE} (${LEDGER_COLUMNS.join(', ')}, updated_at) VALUES ${tuples.join(', ')}
       ON CONFLICT (id) DO UPDATE SET ${UPDATE_SET}, updated_at = now() WHERE ${LEDGER_TABLE}.status = 'open'`,
      params,
    );
  }

  async report(q: UsageQuery): Promise<UsageReport> {
    await this.ensureSchema();
    const all = async (b: { sql: string; params: unknown[] }): Promise<Record<string, unknown>[]> =>
      (await this.pool.query<Record<string, unknown>>(b.sql, b.params)).rows;
    const totals = (await all(totalsQuery(q, DIALECT)))[0] ?? {};
    let groups: { rows: Record<string, unknown>[]; keys: string[] } | null = null;
    let records: Record<string, unknown>[] | null = null;
    if (q.groupBy.length > 0) {
      const g = groupsQuery(q, DIALECT);
      groups = { rows: await all(g), keys: g.keys };
    } else records = await all(recordsQuery(q, DIALECT));
    return buildReport(q, totals, groups, records);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
