/**
 * Usage records: one per STT session, TTS session and LLM request. The session layer is the
 * single producer; sinks persist them. `LogUsageSink` writes a structured log line; the durable
 * ledger (`ledger.ts`: SQLite / PostgreSQL) plugs in behind the same interface.
 */
import type { Logger } from '../log.ts';

export interface RequestMeta {
  roomId?: string;
  jobId?: string;
  agentId?: string;
  clientSessionId?: string;
}

export interface UsageRecord {
  modality: 'stt' | 'tts' | 'llm';
  sessionId: string;
  apiKey: string;
  provider: string;
  model: string;
  /** Every `provider/model` that was tried for this unit of work, in order (failover); the last served. */
  fallbackChain?: string[];
  startedAt: Date;
  endedAt: Date;
  /** STT: client audio forwarded to the provider (the billing figure). TTS: audio delivered. Seconds. */
  audioSeconds: number;
  /** TTS: characters sent to the provider (the billing figure). */
  characters?: number;
  /** TTS: generations started on this socket. */
  generations?: number;
  /** LLM: tokens (from the vendor's usage, or estimated when it reported none). */
  tokens?: { prompt: number; completion: number; cached: number; estimated: boolean };
  /** Price of the quantities in USD (metering/pricing); absent when not priced. */
  costUsd?: number;
  outcome: string;
  errorCode?: number;
  /** Short reason for a non-ok outcome (e.g. which budget refused the session). No PII. */
  detail?: string;
  meta: RequestMeta;
}

export interface UsageSink {
  /** The final record of a session or request (exactly once). */
  record(r: UsageRecord): void;
  /**
   * In-progress quantities of a live session, called every `ledger.checkpointS` from the
   * session's tick (`outcome` is `open`). A durable sink upserts a row marked open that the
   * final `record` replaces, so a crash loses at most one checkpoint window.
   */
  checkpoint?(r: UsageRecord): void;
}

export class LogUsageSink implements UsageSink {
  private readonly log: Logger;
  constructor(log: Logger) {
    this.log = log;
  }
  record(r: UsageRecord): void {
    this.log.info({ usage: { ...r, startedAt: r.startedAt.toISOString(), endedAt: r.endedAt.toISOString() } }, 'usage');
  }
}

/** Keeps records in memory (tests). */
export class MemoryUsageSink implements UsageSink {
  readonly records: UsageRecord[] = [];
  readonly checkpoints: UsageRecord[] = [];
  record(r: UsageRecord): void {
    this.records.push(r);
  }
  checkpoint(r: UsageRecord): void {
    this.checkpoints.push(r);
  }
}
