/**
 * The durable usage ledger (docs/metering.md "Usage ledger"): a UsageSink that writes one row
 * per STT/TTS session and LLM request to SQLite (default) or PostgreSQL.
 *
 * Writes never happen on a session's call: `record` / `checkpoint` only put the row in a queue
 * keyed by id (a newer checkpoint replaces a queued one; the final record replaces both), and the
 * queue is written as one batch at the end of the current event-loop turn. Every session that
 * ends in a turn shares one transaction; all checkpoints of a housekeeping tick share one. A
 * closed session's row is therefore committed before the gateway handles any further I/O. While
 * a write is in flight (PostgreSQL) new rows wait for the next batch. A failing database keeps
 * rows queued and retries with backoff; the queue is bounded (`ledger.maxQueue`: checkpoints are
 * shed before final records, and every shed row is counted).
 */
import type { LedgerTarget } from '../config.ts';
import type { Logger } from '../log.ts';
import type { GatewayMetrics } from './metrics.ts';
import type { LedgerRow, UsageQuery, UsageReport } from './ledger-report.ts';
import type { UsageRecord, UsageSink } from './usage.ts';

/** A database behind the ledger. */
export interface LedgerStore {
  readonly backend: 'sqlite' | 'postgres';
  /**
   * Upsert a batch (ids are unique within it) in one transaction. A closed row replaces an open
   * one with the same id; an open row never replaces a closed one.
   */
  write(rows: LedgerRow[]): void | Promise<void>;
  /** Synchronous write, when the store can (SQLite): used at process exit. */
  writeSync?(rows: LedgerRow[]): void;
  report(q: UsageQuery): Promise<UsageReport>;
  close(): Promise<void>;
}

/** What the reporting API needs. */
export interface UsageReader {
  report(q: UsageQuery): Promise<UsageReport>;
}

export function toLedgerRow(r: UsageRecord, status: 'open' | 'closed'): LedgerRow {
  const t = r.tokens;
  return {
    id: r.sessionId,
    status,
    modality: r.modality,
    api_key: r.apiKey,
    provider: r.provider,
    model: r.model,
    fallback_chain: r.fallbackChain && r.fallbackChain.length > 0 ? JSON.stringify(r.fallbackChain) : null,
    started_at: r.startedAt.getTime(),
    ended_at: r.endedAt.getTime(),
    room_id: r.meta.roomId ?? null,
    job_id: r.meta.jobId ?? null,
    agent_id: r.meta.agentId ?? null,
    client_session_id: r.meta.clientSessionId ?? null,
    audio_seconds: r.audioSeconds,
    characters: r.characters ?? null,
    generations: r.generations ?? null,
    prompt_tokens: t ? t.prompt : null,
    completion_tokens: t ? t.completion : null,
    cached_tokens: t ? t.cached : null,
    tokens_estimated: t ? t.estimated : null,
    cost_usd: r.costUsd ?? null,
    outcome: status === 'open' ? 'open' : r.outcome,
    error_code: r.errorCode ?? null,
    detail: r.detail ?? null,
  };
}

export interface LedgerOptions {
  log: Logger;
  metrics?: GatewayMetrics;
  /** Most rows kept waiting for the database. */
  maxQueue?: number;
  /** Most rows per write. */
  maxBatch?: number;
  /** First retry delay after a failed write (doubles up to 30 s). */
  retryMs?: number;
}

const MAX_RETRY_MS = 30_000;

export class Ledger implements UsageSink, UsageReader {
  readonly store: LedgerStore;
  private readonly log: Logger;
  private readonly metrics: GatewayMetrics | undefined;
  private readonly maxQueue: number;
  private readonly maxBatch: number;
  private readonly baseRetryMs: number;
  /** Rows waiting, by id, oldest first. */
  private readonly pending = new Map<string, LedgerRow>();
  private scheduled = false;
  private writing: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs: number;
  private closed = false;
  private dropped = 0;
  private lastDropLogAt = 0;

  constructor(store: LedgerStore, opts: LedgerOptions) {
    this.store = store;
    this.log = opts.log;
    this.metrics = opts.metrics;
    this.maxQueue = opts.maxQueue ?? 10_000;
    this.maxBatch = opts.maxBatch ?? 500;
    this.baseRetryMs = this.retryMs = opts.retryMs ?? 500;
  }

  /** Rows not yet written. */
  get queued(): number {
    return this.pending.size;
  }

  record(r: UsageRecord): void {
    this.enqueue(toLedgerRow(r, 'closed'));
  }

  checkpoint(r: UsageRecord): void {
    this.enqueue(toLedgerRow(r, 'open'));
  }

  report(q: UsageQuery): Promise<UsageReport> {
    return this.store.report(q);
  }

  private enqueue(row: LedgerRow): void {
    if (this.closed) {
      // After close (process exit): last chance, synchronously where the store can.
      this.writeNow([row]);
      return;
    }
    const prev = this.pending.get(row.id);
    if (prev !== undefined) {
      if (prev.status === 'closed' && row.status === 'open') return;
      this.pending.delete(row.id);
    }
    this.pending.set(row.id, row);
    if (this.pending.size > this.maxQueue) this.shed();
    this.schedule();
  }

  private shed(): void {
    let victim: LedgerRow | undefined;
    for (const row of this.pending.values()) {
      if (row.status === 'open') {
        victim = row;
        break;
      }
    }
    victim ??= this.pending.values().next().value as LedgerRow;
    this.pending.delete(victim.id);
    this.metrics?.ledgerDropped.inc({ backend: this.store.backend, status: victim.status });
    this.dropped++;
    const now = Date.now();
    if (now - this.lastDropLogAt >= 10_000) {
      this.lastDropLogAt = now;
      this.log.error({ dropped_total: this.dropped, status: victim.status, queued: this.pending.size }, 'usage ledger queue full: records dropped');
    }
  }

  private schedule(): void {
    if (this.scheduled || this.retryTimer !== null) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      void this.pump();
    });
  }

  /** Write batches until the queue is empty or a write fails. */
  private pump(): Promise<void> {
    if (this.writing) return this.writing;
    if (this.pending.size === 0) return Promise.resolve();
    const p = this.run().finally(() => {
      this.writing = null;
      // Rows that arrived while the last batch was being acknowledged.
      if (this.pending.size > 0 && this.retryTimer === null) this.schedule();
    });
    this.writing = p;
    return p;
  }

  private async run(): Promise<void> {
    while (this.pending.size > 0) {
      const batch = this.take();
      try {
        await this.store.write(batch);
        this.metrics?.ledgerRowsWritten.inc({ backend: this.store.backend }, batch.length);
        this.retryMs = this.baseRetryMs;
      } catch (err) {
        this.requeue(batch);
        this.metrics?.ledgerWriteErrors.inc({ backend: this.store.backend });
        this.log.error({ err, backend: this.store.backend, rows: batch.length, retry_ms: this.retryMs }, 'usage ledger write failed');
        this.armRetry();
        return;
      }
    }
  }

  private take(): LedgerRow[] {
    const batch: LedgerRow[] = [];
    for (const [id, row] of this.pending) {
      batch.push(row);
      this.pending.delete(id);
      if (batch.length >= this.maxBatch) break;
    }
    return batch;
  }

  /** Put a failed batch back in front of what arrived meanwhile (newer rows for an id win). */
  private requeue(batch: LedgerRow[]): void {
    const newer = [...this.pending.values()];
    this.pending.clear();
    for (const row of batch) this.pending.set(row.id, row);
    for (const row of newer) {
      const prev = this.pending.get(row.id);
      if (prev?.status === 'closed' && row.status === 'open') continue;
      this.pending.delete(row.id);
      this.pending.set(row.id, row);
    }
    while (this.pending.size > this.maxQueue) this.shed();
  }

  private armRetry(): void {
    if (this.retryTimer !== null || this.closed) return;
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.pump();
    }, delay);
    this.retryTimer.unref();
  }

  private writeNow(rows: LedgerRow[]): void {
    if (!this.store.writeSync) {
      this.log.error({ rows: rows.length }, 'usage ledger closed: record not written');
      return;
    }
    try {
      this.store.writeSync(rows);
    } catch (err) {
      this.log.error({ err, rows: rows.length }, 'usage ledger write failed');
    }
  }

  /** Write everything queued now (waits for a write in flight). */
  async flush(): Promise<void> {
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    await this.pump();
    if (this.pending.size > 0 && this.retryTimer === null) await this.pump();
  }

  /** Process exit: write what is queued synchronously (SQLite), without waiting for anything. */
  flushSync(): void {
    if (this.pending.size === 0 || this.writing) return;
    const rows = [...this.pending.values()];
    this.pending.clear();
    this.writeNow(rows);
  }

  /** Drain the queue (retrying until `deadlineMs`, even when a write hangs), then close the database. */
  async close(deadlineMs = 10_000): Promise<void> {
    const until = Date.now() + deadlineMs;
    const flushBeforeDeadline = async (): Promise<void> => {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, until - Date.now()))));
      await Promise.race([this.flush(), deadline]);
      clearTimeout(timer);
    };
    await flushBeforeDeadline();
    while (this.pending.size > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, Math.min(500, Math.max(0, until - Date.now()))));
      await flushBeforeDeadline();
    }
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.closed = true;
    if (this.writing !== null) this.log.error({ deadline_ms: deadlineMs }, 'usage ledger closed with a write still in flight');
    if (this.pending.size > 0) {
      this.metrics?.ledgerDropped.inc({ backend: this.store.backend, status: 'closed' }, this.pending.size);
      this.log.error({ rows: this.pending.size }, 'usage ledger closed with unwritten records');
      this.pending.clear();
    }
    await this.store.close();
  }
}

/**
 * Open the configured store. `recover`: mark rows left open by a previous process (it crashed)
 * as `interrupted` — SQLite only, where one gateway owns the file; on PostgreSQL other replicas'
 * open rows are live.
 */
export async function openLedgerStore(target: Exclude<LedgerTarget, { kind: 'none' }>, opts: { recover?: boolean; readOnly?: boolean; log?: Logger } = {}): Promise<LedgerStore> {
  if (target.kind === 'sqlite') {
    const { SqliteLedgerStore } = await import('./ledger-sqlite.ts');
    const store = new SqliteLedgerStore(target.path, { readOnly: opts.readOnly ?? false });
    if (opts.recover) {
      const n = store.recoverOpen();
      if (n > 0) opts.log?.warn({ rows: n }, 'usage ledger: sessions left open by a previous process marked interrupted');
    }
    return store;
  }
  const { PostgresLedgerStore } = await import('./ledger-postgres.ts');
  const store = new PostgresLedgerStore(target.url, opts.log);
  if (!opts.readOnly) {
    // Fail soft: the gateway serves while the database is down; writes retry (and create the schema).
    await store.ensureSchema().catch((err: unknown) => opts.log?.error({ err: (err as Error).message }, 'usage ledger: postgres unreachable; records are queued and retried'));
  }
  return store;
}

/** The gateway's ledger for `target`, or null when the ledger is disabled. */
export async function openLedger(
  target: LedgerTarget,
  opts: LedgerOptions,
): Promise<Ledger | null> {
  if (target.kind === 'none') return null;
  const store = await openLedgerStore(target, { recover: true, log: opts.log });
  return new Ledger(store, opts);
}
