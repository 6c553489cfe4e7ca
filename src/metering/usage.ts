/**
 * Usage records: one per STT session (later TTS session and LLM request). The session layer
 * is the single producer; sinks persist them. The default sink writes a structured log line;
 * the durable ledger (SQLite/PostgreSQL) plugs in behind the same interface.
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
  outcome: string;
  errorCode?: number;
  meta: RequestMeta;
}

export interface UsageSink {
  record(r: UsageRecord): void;
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
  record(r: UsageRecord): void {
    this.records.push(r);
  }
}
