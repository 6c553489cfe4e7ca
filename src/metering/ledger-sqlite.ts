/**
 * SQLite ledger store (`node:sqlite`, synchronous). WAL journal with synchronous=NORMAL: a
 * committed transaction is in the WAL file, so it survives the process being killed (only an OS
 * crash or power loss can lose the last commits). One batch = one transaction.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
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

export const SQLITE_SCHEMA = `
CREATE TABLE IF NOT EXISTS ${LEDGER_TABLE} (
  id TEXT PRIMARY KEY,
  status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
  modality TEXT NOT NULL,
  api_key TEXT NOT NULL,
  provider TEXT NOT NULL,
  model TEXT NOT NULL,
  fallback_chain TEXT,
  started_at INTEGER NOT NULL,
  ended_at INTEGER NOT NULL,
  room_id TEXT,
  job_id TEXT,
  agent_id TEXT,
  client_session_id TEXT,
  audio_seconds REAL NOT NULL DEFAULT 0,
  characters INTEGER,
  generations INTEGER,
  prompt_tokens INTEGER,
  completion_tokens INTEGER,
  cached_tokens INTEGER,
  tokens_estimated INTEGER,
  cost_usd REAL,
  outcome TEXT NOT NULL,
  error_code INTEGER,
  detail TEXT,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ${LEDGER_TABLE}_started_at ON ${LEDGER_TABLE} (started_at);
CREATE INDEX IF NOT EXISTS ${LEDGER_TABLE}_api_key_started_at ON ${LEDGER_TABLE} (api_key, started_at);
CREATE INDEX IF NOT EXISTS ${LEDGER_TABLE}_room_id ON ${LEDGER_TABLE} (room_id);
CREATE INDEX IF NOT EXISTS ${LEDGER_TABLE}_open ON ${LEDGER_TABLE} (status) WHERE status = 'open';
`;

const UPSERT = `INSERT INTO ${LEDGER_TABLE} (${LEDGER_COLUMNS.join(', ')}, updated_at)
VALUES (${LEDGER_COLUMNS.map(() => '?').join(', ')}, ?)
ON CONFLICT (id) DO UPDATE SET ${LEDGER_COLUMNS.filter((c) => c !== 'id')
  .map((c) => `${c} = excluded.${c}`)
  .join(', ')}, updated_at = excluded.updated_at
WHERE ${LEDGER_TABLE}.status = 'open'`;

const DIALECT: Dialect = {
  param: () => '?',
  day: `strftime('%Y-%m-%d', started_at / 1000, 'unixepoch')`,
  time: (ms) => ms,
};

function bind(row: LedgerRow, now: number): SQLInputValue[] {
  const out: SQLInputValue[] = [];
  for (const c of LEDGER_COLUMNS) {
    const v = row[c];
    out.push(typeof v === 'boolean' ? (v ? 1 : 0) : v);
  }
  out.push(now);
  return out;
}

export class SqliteLedgerStore implements LedgerStore {
  readonly backend = 'sqlite' as const;
  readonly path: string;
  private readonly db: DatabaseSync;
  private readonly upsert: StatementSync | null;

  constructor(path: string, opts: { readOnly?: boolean } = {}) {
    this.path = path;
    if (opts.readOnly) {
      this.db = new DatabaseSync(path, { readOnly: true });
      this.upsert = null;
      return;
    }
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new DatabaseSync(path);
    this.db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;');
    this.db.exec(SQLITE_SCHEMA);
    this.upsert = this.db.prepare(UPSERT);
  }

  write(rows: LedgerRow[]): void {
    this.writeSync(rows);
  }

  writeSync(rows: LedgerRow[]): void {
    const stmt = this.upsert;
    if (stmt === null) throw new Error('usage ledger opened read-only');
    const now = Date.now();
    this.db.exec('BEGIN IMMEDIATE');
    try {
      for (const row of rows) stmt.run(...bind(row, now));
      this.db.exec('COMMIT');
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  /** Close rows a dead process left open: outcome `interrupted`, quantities of the last checkpoint. */
  recoverOpen(): number {
    const r = this.db.prepare(`UPDATE ${LEDGER_TABLE} SET status = 'closed', outcome = 'interrupted', updated_at = ? WHERE status = 'open'`).run(Date.now());
    return Number(r.changes);
  }

  report(q: UsageQuery): Promise<UsageReport> {
    const all = (b: { sql: string; params: unknown[] }): Record<string, unknown>[] =>
      this.db.prepare(b.sql).all(...(b.params as SQLInputValue[])) as Record<string, unknown>[];
    const totals = all(totalsQuery(q, DIALECT))[0] ?? {};
    let groups: { rows: Record<string, unknown>[]; keys: string[] } | null = null;
    let records: Record<string, unknown>[] | null = null;
    if (q.groupBy.length > 0) {
      const g = groupsQuery(q, DIALECT);
      groups = { rows: all(g), keys: g.keys };
    } else records = all(recordsQuery(q, DIALECT));
    return Promise.resolve(buildReport(q, totals, groups, records));
  }

  close(): Promise<void> {
    if (this.db.isOpen) this.db.close();
    return Promise.resolve();
  }
}
