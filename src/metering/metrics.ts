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

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    this.sessionsActive.set({ modality: 'stt' }, 0);
    this.sessionsActive.set({ modality: 'tts' }, 0);
  }
}
