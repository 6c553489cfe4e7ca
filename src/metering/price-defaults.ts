/**
 * Default list prices (USD) for every model the provider adapters offer, in the units of the
 * `pricing` configuration section. Sources, dates and confidence are documented in
 * docs/pricing.md (a unit test checks that every key here appears there). `uncertain: true`
 * marks a figure from memory or conflicting third-party pages: verify it on the vendor's
 * pricing page and override it in configuration (`pricing.<modality>."provider/model"`).
 *
 * Checked: 2026-11 (see docs/pricing.md for each source's own date).
 */

export interface DefaultMeta {
  /** Short source tag, expanded in docs/pricing.md. */
  source: string;
  uncertain?: boolean;
}

export interface DefaultSttPrice extends DefaultMeta {
  usdPerMinute?: number;
  usdPerHour?: number;
  /** Provider billing increment in seconds (used with `pricing.rounding: provider`). */
  incrementS?: number;
  /** Least a provider bills per stream, in seconds (used with `pricing.rounding: provider`). */
  minimumS?: number;
  free?: true;
}

export interface DefaultTtsPrice extends DefaultMeta {
  usdPer1kChars?: number;
  usdPer1MChars?: number;
  free?: true;
}

export interface DefaultLlmPrice extends DefaultMeta {
  usdPer1MInput?: number;
  usdPer1MCachedInput?: number;
  usdPer1MOutput?: number;
  free?: true;
}

// ---- STT --------------------------------------------------------------------------------

/** Deepgram streaming (WebSocket) pay-as-you-go; billed per second, at least 1 s per stream. */
const dgNova3: DefaultSttPrice = { usdPerMinute: 0.0077, incrementS: 1, minimumS: 1, source: 'deepgram-memory', uncertain: true };
const dgNova2: DefaultSttPrice = { usdPerMinute: 0.0058, incrementS: 1, minimumS: 1, source: 'deepgram-memory', uncertain: true };
const dgFlux: DefaultSttPrice = { usdPerMinute: 0.0077, incrementS: 1, minimumS: 1, source: 'cloudflare-flux' };
/** AssemblyAI bills the session (socket-open) time per hour; we bill audio forwarded at that rate. */
const aaiUniversal: DefaultSttPrice = { usdPerHour: 0.15, incrementS: 1, source: 'assemblyai-models' };
const aaiU3: DefaultSttPrice = { usdPerHour: 0.45, incrementS: 1, source: 'assemblyai-models' };
/** Cartesia: ink-whisper 1 credit/s, ink-2 3 credits/s; dollars per credit depend on the plan. */
const cartesiaWhisper: DefaultSttPrice = { usdPerHour: 0.13, incrementS: 1, source: 'cartesia-credits', uncertain: true };
const cartesiaInk2: DefaultSttPrice = { usdPerHour: 0.39, incrementS: 1, source: 'cartesia-credits', uncertain: true };

export const DEFAULT_STT_PRICES: Record<string, DefaultSttPrice> = {
  'deepgram/nova-3': dgNova3,
  'deepgram/nova-3-general': dgNova3,
  'deepgram/nova-3-medical': dgNova3,
  'deepgram/nova-2': dgNova2,
  'deepgram/nova-2-general': dgNova2,
  'deepgram/nova-2-meeting': dgNova2,
  'deepgram/nova-2-phonecall': dgNova2,
  'deepgram/nova-2-finance': dgNova2,
  'deepgram/nova-2-conversationalai': dgNova2,
  'deepgram/nova-2-voicemail': dgNova2,
  'deepgram/nova-2-video': dgNova2,
  'deepgram/nova-2-medical': dgNova2,
  'deepgram/nova-2-drivethru': dgNova2,
  'deepgram/nova-2-automotive': dgNova2,
  'deepgram/nova': dgNova2,
  'deepgram/nova-general': dgNova2,
  'deepgram/nova-phonecall': dgNova2,
  'deepgram/flux-general-en': dgFlux,
  'deepgram/flux-general': dgFlux,
  'deepgram/flux': dgFlux,
  'deepgram/flux-general-multi': { usdPerMinute: 0.0078, incrementS: 1, minimumS: 1, source: 'llmreference', uncertain: true },
  'assemblyai/universal-streaming': aaiUniversal,
  'assemblyai/universal-streaming-english': aaiUniversal,
  'assemblyai/universal-streaming-multilingual': aaiUniversal,
  'assemblyai/u3-rt-pro': aaiU3,
  'assemblyai/universal-3-5-pro': { ...aaiU3, uncertain: true },
  'cartesia/ink-whisper': cartesiaWhisper,
  'cartesia/ink-whisper-2025-06-04': cartesiaWhisper,
  'cartesia/ink-2': cartesiaInk2,
  'elevenlabs/scribe_v2_realtime': { usdPerHour: 0.39, incrementS: 1, source: 'puter-elevenlabs', uncertain: true },
  // OpenAI bills these in audio tokens; the per-minute figures are OpenAI's published estimates.
  'openai/gpt-4o-transcribe': { usdPerMinute: 0.006, source: 'openai-memory', uncertain: true },
  'openai/gpt-4o-mini-transcribe': { usdPerMinute: 0.003, source: 'openai-memory', uncertain: true },
  'openai/whisper-1': { usdPerMinute: 0.006, source: 'openai-memory', uncertain: true },
};

// ---- TTS --------------------------------------------------------------------------------

/** Cartesia Sonic: 1 credit per character; ~$0.03 per 1k credits on the Scale plan. */
const sonic: DefaultTtsPrice = { usdPer1kChars: 0.03, source: 'cartesia-credits', uncertain: true };
const elFlash: DefaultTtsPrice = { usdPer1kChars: 0.05, source: 'puter-elevenlabs', uncertain: true };
const elMultilingual: DefaultTtsPrice = { usdPer1kChars: 0.1, source: 'puter-elevenlabs', uncertain: true };
/** gpt-4o-mini-tts bills text and audio tokens; ~$0.015 per minute of speech ~ 900 characters. */
const oaiMiniTts: DefaultTtsPrice = { usdPer1kChars: 0.015, source: 'openai-community', uncertain: true };

export const DEFAULT_TTS_PRICES: Record<string, DefaultTtsPrice> = {
  'cartesia/sonic-3.5': sonic,
  'cartesia/sonic-3': sonic,
  'cartesia/sonic-2': sonic,
  'cartesia/sonic-turbo': sonic,
  'cartesia/sonic': sonic,
  'cartesia/sonic-3-latest': sonic,
  'cartesia/sonic-latest': sonic,
  'cartesia/sonic-3-2025-10-27': sonic,
  'cartesia/sonic-3-2026-01-12': sonic,
  'cartesia/sonic-3.5-2026-05-04': sonic,
  'deepgram/aura-2': { usdPer1kChars: 0.03, source: 'deepgram-memory', uncertain: true },
  'deepgram/aura': { usdPer1kChars: 0.015, source: 'deepgram-memory', uncertain: true },
  'elevenlabs/eleven_flash_v2_5': elFlash,
  'elevenlabs/eleven_flash_v2': elFlash,
  'elevenlabs/eleven_turbo_v2_5': elFlash,
  'elevenlabs/eleven_turbo_v2': elFlash,
  'elevenlabs/eleven_multilingual_v2': elMultilingual,
  'elevenlabs/eleven_v3': elMultilingual,
  'openai/gpt-4o-mini-tts': oaiMiniTts,
  'openai/gpt-4o-mini-tts-2025-12-15': oaiMiniTts,
  'openai/tts-1': { usdPer1MChars: 15, source: 'openai-memory', uncertain: true },
  'openai/tts-1-hd': { usdPer1MChars: 30, source: 'openai-memory', uncertain: true },
};

// ---- LLM (USD per 1M tokens: input / cached input / output) ----------------------------

function llm(input: number, cached: number, output: number, source: string, uncertain?: boolean): DefaultLlmPrice {
  return { usdPer1MInput: input, usdPer1MCachedInput: cached, usdPer1MOutput: output, source, ...(uncertain ? { uncertain } : {}) };
}

export const DEFAULT_LLM_PRICES: Record<string, DefaultLlmPrice> = {
  'openai/gpt-5.5': llm(5, 0.5, 30, 'openai-3rd-2026'),
  'openai/gpt-5.4': llm(2.5, 0.25, 15, 'openai-3rd-2026'),
  'openai/gpt-5.4-mini': llm(0.75, 0.075, 4.5, 'openai-3rd-2026'),
  'openai/gpt-5.4-nano': llm(0.2, 0.02, 1.25, 'openai-3rd-2026'),
  'openai/gpt-5.3-chat-latest': llm(1.75, 0.175, 14, 'assumed-family', true),
  'openai/gpt-5.2': llm(1.75, 0.175, 14, 'openai-3rd-2026'),
  'openai/gpt-5.2-chat-latest': llm(1.75, 0.175, 14, 'assumed-family', true),
  'openai/gpt-5.1': llm(1.25, 0.125, 10, 'openai-3rd-2026'),
  'openai/gpt-5.1-chat-latest': llm(1.25, 0.125, 10, 'assumed-family', true),
  'openai/gpt-5': llm(1.25, 0.125, 10, 'openai-memory', true),
  'openai/gpt-5-mini': llm(0.25, 0.025, 2, 'providers-md'),
  'openai/gpt-5-nano': llm(0.05, 0.005, 0.4, 'openai-memory', true),
  'openai/gpt-4.1': llm(2, 0.5, 8, 'openai-memory', true),
  'openai/gpt-4.1-mini': llm(0.4, 0.1, 1.6, 'providers-md'),
  'openai/gpt-4.1-nano': llm(0.1, 0.025, 0.4, 'openai-memory', true),
  'openai/gpt-4o': llm(2.5, 1.25, 10, 'openai-memory', true),
  'openai/gpt-4o-mini': llm(0.15, 0.075, 0.6, 'providers-md'),
  'openai/chat-latest': llm(1.75, 0.175, 14, 'assumed-family', true),
  'openai/gpt-oss-120b': llm(0.15, 0.15, 0.6, 'assumed-family', true),
  // Anthropic: cached = cache reads (0.1x input). Cache writes (1.25x / 2x input) are billed here at the input rate.
  'anthropic/claude-opus-4-6': llm(5, 0.5, 25, 'anthropic-3rd-2026'),
  'anthropic/claude-sonnet-4-6': llm(3, 0.3, 15, 'anthropic-3rd-2026'),
  'anthropic/claude-opus-4-5': llm(5, 0.5, 25, 'anthropic-3rd-2026'),
  'anthropic/claude-sonnet-4-5': llm(3, 0.3, 15, 'anthropic-3rd-2026'),
  'anthropic/claude-haiku-4-5': llm(1, 0.1, 5, 'anthropic-3rd-2026'),
  'anthropic/claude-opus-4-1': llm(15, 1.5, 75, 'anthropic-docs'),
  // Google: prompts up to 200k tokens (longer prompts cost more on the Pro models).
  'google/gemini-3.1-pro': llm(2, 0.2, 12, 'google-3rd-2026'),
  'google/gemini-3-flash': llm(0.5, 0.05, 3, 'google-3rd-2026'),
  'google/gemini-3.1-flash-lite': llm(0.25, 0.025, 1.5, 'google-3rd-2026'),
  'google/gemini-3.5-flash': llm(0.5, 0.05, 3, 'assumed-family', true),
  'google/gemini-2.5-pro': llm(1.25, 0.125, 10, 'google-memory', true),
  'google/gemini-2.5-flash': llm(0.3, 0.03, 2.5, 'google-memory', true),
  'google/gemini-2.5-flash-lite': llm(0.1, 0.01, 0.4, 'google-memory', true),
  'google/gemma-4-31b-it': { free: true, source: 'google-memory', uncertain: true },
  'xai/grok-4-1-fast-non-reasoning': llm(0.2, 0.05, 0.5, 'xai-3rd-2026'),
  'xai/grok-4-1-fast-reasoning': llm(0.2, 0.05, 0.5, 'xai-3rd-2026'),
  'xai/grok-4.20-0309-non-reasoning': llm(2, 0.2, 6, 'xai-3rd-2026', true),
  'xai/grok-4.20-0309-reasoning': llm(2, 0.2, 6, 'xai-3rd-2026', true),
  'xai/grok-4.20-multi-agent-0309': llm(2, 0.2, 6, 'xai-3rd-2026', true),
  'xai/grok-4.3': llm(1.25, 0.2, 2.5, 'xai-docs'),
  'xai/grok-4.5': llm(1.25, 0.2, 2.5, 'assumed-family', true),
  'deepseek-ai/deepseek-v3': llm(0.27, 0.07, 1.1, 'deepseek-memory', true),
  'deepseek-ai/deepseek-v3.2': llm(0.28, 0.028, 0.42, 'deepseek-memory', true),
  'moonshotai/kimi-k2.5': llm(0.6, 0.1, 3, 'moonshot-3rd', true),
  'moonshotai/kimi-k2.6': llm(0.6, 0.1, 3, 'assumed-family', true),
  'groq/llama-3.3-70b-versatile': llm(0.59, 0.59, 0.79, 'groq-memory', true),
  'groq/llama-3.1-8b-instant': llm(0.05, 0.05, 0.08, 'groq-memory', true),
  'groq/openai/gpt-oss-120b': llm(0.15, 0.15, 0.75, 'groq-memory', true),
  'cerebras/llama-3.3-70b': llm(0.85, 0.85, 1.2, 'cerebras-memory', true),
  'cerebras/gpt-oss-120b': llm(0.35, 0.35, 0.75, 'cerebras-memory', true),
  'cerebras/qwen-3-32b': llm(0.4, 0.4, 0.8, 'cerebras-memory', true),
};
