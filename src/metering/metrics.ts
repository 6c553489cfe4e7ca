/**
 * Prometheus metrics (prom-client), one registry per gateway instance. Labels are bounded:
 * modality, provider, model, api_key (the LiveKit API key, never its secret), outcome, reason.
 * Session, room and user ids never become labels.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10];

export class GatewayMetrics {
  readonly registry = new Registry();

  readonly sttAudioSeconds = new Counter({
    name: 'gateway_stt_audio_seconds_total',
    help: 'Seconds of client audio forwarded to STT providers (the billing figure).',
    labelNames: ['provider', 'model', 'api_key'] as const,
    registers: [this.registry],
  });

  readonly sttProviderAudioSeconds = new Counter({
    name: 'gateway_stt_provider_reported_audio_seconds_total',
    help: 'Audio seconds as reported by the provider (reconciliation only).',
    labelNames: ['provider', 'model'] as const,
    registers: [this.registry],
  });

  readonly sttAudioDroppedSeconds = new Counter({
    name: 'gateway_stt_audio_dropped_seconds_total',
    help: 'Client audio dropped because the upstream was not open and the buffer was full.',
    labelNames: ['provider', 'model'] as const,
    registers: [this.registry],
  });

  readonly sessionsActive = new Gauge({
    name: 'gateway_sessions_active',
    help: 'Open client sessions.',
    labelNames: ['modality'] as const,
    registers: [this.registry],
  });

  readonly requests = new Counter({
    name: 'gateway_requests_total',
    help: 'Finished sessions/requests by outcome.',
    labelNames: ['modality', 'provider', 'model', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly authFailures = new Counter({
    name: 'gateway_auth_failures_total',
    help: 'Rejected authentications by reason.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly upstreamConnectSeconds = new Histogram({
    name: 'gateway_upstream_connect_seconds',
    help: 'Time to open an upstream provider connection.',
    labelNames: ['provider'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly sttFirstResultSeconds = new Histogram({
    name: 'gateway_stt_first_result_seconds',
    help: 'Time from the first audio frame of a session to its first non-empty transcript.',
    labelNames: ['provider', 'model'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly ttsCharacters = new Counter({
    name: 'gateway_tts_characters_total',
    help: 'Characters of text sent to TTS providers (the billing figure).',
    labelNames: ['provider', 'model', 'api_key'] as const,
    registers: [this.registry],
  });

  readonly ttsAudioSeconds = new Counter({
    name: 'gateway_tts_audio_seconds_total',
    help: 'Seconds of synthesized audio delivered to clients.',
    labelNames: ['provider', 'model', 'api_key'] as const,
    registers: [this.registry],
  });

  readonly ttsFirstAudioSeconds = new Histogram({
    name: 'gateway_tts_first_audio_seconds',
    help: 'Time from the first text of a generation to its first audio sent to the client.',
    labelNames: ['provider', 'model'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly llmTokens = new Counter({
    name: 'gateway_llm_tokens_total',
    help: 'LLM tokens by kind (prompt, completion, cached); estimated="true" when the vendor reported no usage.',
    labelNames: ['provider', 'model', 'api_key', 'kind', 'estimated'] as const,
    registers: [this.registry],
  });

  readonly llmTtftSeconds = new Histogram({
    name: 'gateway_llm_ttft_seconds',
    help: 'Time from the request to the first visible output (text or tool call) sent to the client.',
    labelNames: ['provider', 'model'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly limitRejections = new Counter({
    name: 'gateway_limit_rejections_total',
    help: 'Requests and sessions refused by a limit (docs/limits.md): limit = concurrent_sessions, process_sessions, requests_per_minute, tokens_per_minute.',
    labelNames: ['modality', 'limit', 'api_key'] as const,
    registers: [this.registry],
  });

  readonly costUsd = new Counter({
    name: 'gateway_cost_usd_total',
    help: 'Cost in USD of metered usage at the configured prices (docs/pricing.md), added where quantities are flushed.',
    labelNames: ['modality', 'provider', 'model', 'api_key'] as const,
    registers: [this.registry],
  });

  readonly costUnpriced = new Counter({
    name: 'gateway_cost_unpriced_total',
    help: 'Metered usage that found no price (should stay 0: routing refuses unpriced models).',
    labelNames: ['modality', 'provider', 'model'] as const,
    registers: [this.registry],
  });

  /** Called before the budget gauges are scraped (periods roll over without traffic). */
  onBudgetCollect: (() => void) | null = null;

  readonly budgetUsedRatio = new Gauge({
    name: 'gateway_budget_used_ratio',
    help: 'Spend of the current period / budget, per API key with a budget (period = daily, monthly; UTC).',
    labelNames: ['api_key', 'period'] as const,
    registers: [this.registry],
    collect: () => this.onBudgetCollect?.(),
  });

  readonly budgetWarning = new Gauge({
    name: 'gateway_budget_warning',
    help: '1 when an API key has used at least budgets.warnRatio of its budget for the period, else 0.',
    labelNames: ['api_key', 'period'] as const,
    registers: [this.registry],
  });

  readonly budgetRejections = new Counter({
    name: 'gateway_budget_rejections_total',
    help: 'Sessions and LLM calls refused with 429 because the API key reached its budget.',
    labelNames: ['modality', 'api_key', 'period'] as const,
    registers: [this.registry],
  });

  readonly ledgerRowsWritten = new Counter({
    name: 'gateway_ledger_rows_written_total',
    help: 'Usage ledger rows written (final records and checkpoints).',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });

  readonly ledgerWriteErrors = new Counter({
    name: 'gateway_ledger_write_errors_total',
    help: 'Failed usage ledger writes (the rows stay queued and are retried).',
    labelNames: ['backend'] as const,
    registers: [this.registry],
  });

  readonly ledgerDropped = new Counter({
    name: 'gateway_ledger_dropped_records_total',
    help: 'Usage ledger rows dropped because the queue was full or the ledger closed with the database unreachable.',
    labelNames: ['backend', 'status'] as const,
    registers: [this.registry],
  });

  readonly fallbacks = new Counter({
    name: 'gateway_fallbacks_total',
    help: 'Moves of a unit of work to the next candidate (docs/failover.md); from/to are provider ids; reason = connect_failed, closed, error, dead_air, no_result, backpressure.',
    labelNames: ['modality', 'from', 'to', 'reason'] as const,
    registers: [this.registry],
  });

  readonly providerErrors = new Counter({
    name: 'gateway_provider_errors_total',
    help: 'Failed provider attempts by provider id and HTTP-like code (each attempt of a failover counts).',
    labelNames: ['provider', 'code'] as const,
    registers: [this.registry],
  });

  readonly candidatesSkipped = new Counter({
    name: 'gateway_candidates_skipped_total',
    help: 'Candidates passed over without an attempt; reason = circuit_open.',
    labelNames: ['modality', 'provider', 'reason'] as const,
    registers: [this.registry],
  });

  readonly sttReplayedAudioSeconds = new Counter({
    name: 'gateway_stt_replayed_audio_seconds_total',
    help: 'Client audio sent again to a fallback STT provider after a failover (provider cost, never billed to the client again).',
    labelNames: ['provider', 'model', 'api_key'] as const,
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    this.sessionsActive.set({ modality: 'stt' }, 0);
    this.sessionsActive.set({ modality: 'tts' }, 0);
  }
}
