/**
 * The narrow provider seams. An adapter is mostly data (URL, headers, option mapping,
 * capabilities) plus one pure decoder; connection lifecycle lives in `upstream/`, and the
 * session layer (src/gateway) owns timing, metering, retries and client writes.
 * Providers never import gateway or metering code.
 */
import type { GatewayError } from '../protocol/errors.ts';

/** Every provider the gateway knows. Adding one here makes the compiler point at the registry. */
export type ProviderId =
  | 'deepgram'
  | 'assemblyai'
  | 'cartesia'
  | 'elevenlabs'
  | 'openai'
  | 'anthropic'
  | 'google'
  | 'xai'
  | 'deepseek-ai'
  | 'moonshotai'
  | 'groq'
  | 'cerebras';

/** Static facts about a provider account: where its key and base URL come from. */
export interface ProviderInfo {
  id: ProviderId;
  /** Environment variable holding the API key, e.g. DEEPGRAM_API_KEY. */
  keyEnv: string;
  /** Environment variable overriding the base URL, e.g. DEEPGRAM_BASE_URL. */
  baseUrlEnv: string;
  defaultBaseUrl: string;
  /** Vendor API reference. */
  docs: string;
}

/** Credentials and endpoint resolved from configuration for one provider. */
export interface ProviderEndpoint {
  apiKey: string;
  baseUrl: string;
  connectTimeoutMs: number;
}

/** Declared STT capabilities (data, not stub methods). */
export interface SttCapabilities {
  /** Word-level start/end times in transcripts. */
  wordTimings: boolean;
  /** Speaker ids on words (as strings) when diarization is requested. */
  diarization: boolean;
  /** Server-side speech onset events (-> start_of_speech). */
  startOfSpeech: boolean;
  /** Eager end-of-turn transcripts (-> preflight_transcript). */
  preflight: boolean;
  /** Options can change on a live upstream without reconnecting. */
  liveUpdate: boolean;
  /** The provider can be told to flush what it has (-> session.finalize). */
  finalize: boolean;
  /**
   * Input sample rates the provider accepts (absent: any rate 8000-48000). Client audio at
   * another rate is resampled by the session before `encodeAudio` (opts.sampleRate is then the
   * upstream rate).
   */
  sampleRates?: readonly number[];
}

/** Options for one STT upstream connection, already merged from session.create/update. */
export interface SttOptions {
  /** Provider-native model id (no `provider/` prefix). */
  model: string;
  language: string | undefined;
  sampleRate: number;
  /** Provider options from `settings.extra`, validated by the adapter. */
  extra: Record<string, unknown>;
}

export interface UpstreamRequest {
  url: string;
  headers: Record<string, string>;
  /** Response header carrying the provider's error text when the upgrade is refused (preferred over the body). */
  errorHeader?: string;
}

export interface SttWord {
  word: string;
  /** Seconds on the upstream connection's audio timeline. */
  start: number;
  end: number;
  confidence: number;
  speaker?: string;
}

/** A transcript segment on the upstream connection's audio timeline (seconds). */
export interface SttSegment {
  text: string;
  start: number;
  end: number;
  confidence: number;
  language?: string;
  words: SttWord[];
  speaker?: string;
  extra?: Record<string, unknown>;
}

/** Provider-neutral events produced by an adapter's decoder. */
export type SttEvent =
  | { type: 'speech_started' }
  | { type: 'interim'; segment: SttSegment }
  | { type: 'preflight'; segment: SttSegment }
  /** End of an utterance: exactly one per utterance. */
  | { type: 'final'; segment: SttSegment }
  /** The provider has answered a finalize request (its finals, if any, came before). */
  | { type: 'finalized' }
  /** Provider-reported usage, for reconciliation only (the gateway's own count bills). */
  | { type: 'provider_usage'; audioSeconds: number }
  /** A fatal provider error reported in-band. */
  | { type: 'error'; error: GatewayError };

/** Per-connection protocol state: encodes what we send, decodes what the provider sends. */
export interface SttCodec {
  /** Frames to send as soon as the socket is open, before any audio (e.g. a session config). */
  readonly openMessages?: readonly string[];
  /**
   * Wrap raw PCM for the wire (binary frames pass through untouched). null: the codec keeps the
   * audio for now (e.g. a provider's minimum chunk duration); `flushAudio` releases it.
   */
  encodeAudio(pcm: Buffer): Buffer | string | null;
  /** Audio the codec still holds, sent before a finalize or the end of the stream. */
  flushAudio?(): Buffer | string | null;
  /** Text frame asking the provider to flush, or null when the provider cannot. */
  readonly finalizeMessage: string | null;
  /** Text frame for a graceful end of stream, or null (just close the socket). */
  readonly closeMessage: string | null;
  /** Keep-alive frame to send after `idleMs` without audio, or null. */
  readonly keepAlive: { message: string; idleMs: number } | null;
  /**
   * Apply changed options on the live connection: returns the frames to send, or null when
   * the change needs a new upstream connection (the session reconnects between utterances).
   */
  liveUpdate(next: SttOptions): string[] | null;
  /** Decode one provider frame. Pure apart from this codec's own utterance state. */
  decode(data: Buffer, isBinary: boolean): SttEvent[];
  /** Text heard but not yet finalized, emitted as a final (stream end or lost finalize ack). */
  flush(): SttEvent[];
  /** Whether an utterance is in progress (text heard but not finalized). */
  readonly midUtterance: boolean;
}

export interface SttAdapter {
  provider: ProviderId;
  /** Provider-native model ids served by this adapter. */
  models: readonly string[];
  /** The model used for a bare provider name (`deepgram`), when this adapter is the default. */
  defaultModel?: string;
  capabilities: SttCapabilities;
  /** Normalize and validate options; throws GatewayError('bad_request') naming the bad option. */
  validate(opts: SttOptions): SttOptions;
  /** Build the upgrade request for validated options. */
  request(opts: SttOptions, endpoint: ProviderEndpoint): UpstreamRequest;
  createCodec(opts: SttOptions): SttCodec;
  /** Map an upstream close (code, reason) that we did not ask for to an error. */
  closeError?(code: number, reason: string): GatewayError;
}

// ---- TTS --------------------------------------------------------------------------------

/** Options for one generation (voice/model/language/extra may change between generations). */
export interface TtsOptions {
  /** Provider-native model id (no `provider/` prefix). */
  model: string;
  /** Provider-native voice id. */
  voice: string;
  language: string | undefined;
  /** Rate asked from the provider (one of `capabilities.sampleRates`). */
  sampleRate: number;
  /** Provider options from `extra`, validated by the adapter. */
  extra: Record<string, unknown>;
}

export interface TtsCapabilities {
  /** Timestamps the provider can return, and the `extra` flag that turns them on. */
  alignment: { kind: 'words' | 'chars'; flag: string } | null;
  /** Output rates the provider can produce as raw PCM s16le (others are resampled). */
  sampleRates: readonly number[];
}

export interface TtsAlignment {
  /** Seconds from the start of the generation's audio (at any sample rate). */
  words?: { word: string; start: number; end: number }[];
  chars?: { char: string; start: number; end: number }[];
}

/**
 * Provider-neutral TTS events. `gen` is the generation the event belongs to when the provider
 * multiplexes generations on one socket (e.g. a context id), else null.
 */
export type TtsEvent =
  /** Raw PCM s16le mono at the generation's `sampleRate`. */
  | { type: 'audio'; gen: string | null; pcm: Buffer }
  | { type: 'alignment'; gen: string | null; alignment: TtsAlignment }
  /** Every output of the generation has been delivered. */
  | { type: 'done'; gen: string | null }
  | { type: 'error'; gen: string | null; error: GatewayError };

/** Per-socket protocol state of a WebSocket TTS provider. */
export interface TtsWsCodec {
  /** Frames to send as soon as the socket is open (e.g. an initial settings message). */
  readonly openMessages: readonly string[];
  /** Frames carrying one chunk of text of generation `gen` (the first chunk starts it). */
  text(gen: string, text: string, opts: TtsOptions): string[];
  /** Frames ending the input of generation `gen` (the provider then finishes and reports done). */
  end(gen: string, opts: TtsOptions): string[];
  /** Keep-alive frame to send after `idleMs` without any frame sent, or null. */
  readonly keepAlive: { message: string; idleMs: number } | null;
  /** Decode one provider frame. */
  decode(data: Buffer, isBinary: boolean): TtsEvent[];
}

interface TtsAdapterBase {
  provider: ProviderId;
  /** Provider-native model ids served. */
  models: readonly string[];
  /** Model used for a bare provider name (`cartesia`). */
  defaultModel: string;
  /** Voice used when the client names none. */
  defaultVoice: string;
  capabilities: TtsCapabilities;
  /** Normalize and validate options; throws GatewayError('bad_request') naming the bad option. */
  validate(opts: TtsOptions): TtsOptions;
}

/**
 * A WebSocket provider. `reuse: 'many'` = one socket serves sequential generations (a warm
 * socket is kept per session and pooled across sessions); `'one'` = a socket per generation
 * (the next one is opened ahead of time).
 */
export interface TtsWsAdapter extends TtsAdapterBase {
  kind: 'ws';
  reuse: 'many' | 'one';
  /**
   * A provider limit on generations per socket per minute (e.g. Deepgram's 20 Flush per 60 s):
   * a socket at the limit is not reused; the next generation gets another socket.
   */
  maxGenerationsPerMinute?: number;
  /**
   * Options fixed for the life of a socket (in its URL): generations whose key differs need
   * another socket. '' when everything can change per generation.
   */
  connectionKey(opts: TtsOptions): string;
  request(opts: TtsOptions, endpoint: ProviderEndpoint): UpstreamRequest;
  createCodec(opts: TtsOptions): TtsWsCodec;
  /** Map an upstream close that we did not ask for to an error. */
  closeError?(code: number, reason: string): GatewayError;
}

export interface HttpRequestSpec {
  url: string;
  headers: Record<string, string>;
  body: string;
}

/** An HTTP provider: one streaming request per chunk of text, raw PCM s16le in the body. */
export interface TtsHttpAdapter extends TtsAdapterBase {
  kind: 'http';
  /** Longest text one request may carry. */
  maxChars: number;
  request(opts: TtsOptions, text: string, endpoint: ProviderEndpoint): HttpRequestSpec;
}

export type TtsAdapter = TtsWsAdapter | TtsHttpAdapter;

// ---- LLM --------------------------------------------------------------------------------

/** One server-sent event as parsed by the one SSE parser (providers/upstream/sse.ts). */
export interface SseEvent {
  /** `event:` field, when present. */
  event?: string;
  /** `data:` lines joined with "\n". */
  data: string;
}

/** Token usage in OpenAI terms. */
export interface LlmUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Prompt tokens served from the provider's cache (counted in prompt_tokens too). */
  cached_tokens: number;
}

/**
 * Turns one upstream stream into OpenAI `chat.completion.chunk` JSON strings, statefully.
 * `visible` tells the retry layer that text or a complete tool call reached the output.
 */
export interface LlmStreamTranslator {
  push(ev: SseEvent): string[];
  /** The upstream stream ended: anything still owed (a finish chunk, the usage chunk). */
  end(): string[];
  readonly usage: LlmUsage | null;
  readonly visible: boolean;
  /** A mid-stream error reported by the provider, or a stream that ended incomplete (the stream is over). */
  readonly error: GatewayError | null;
}

export interface LlmRequestContext {
  /** Provider-native model id. */
  model: string;
  /** `provider/model` as the client named it (echoed in chunks). */
  label: string;
  stream: boolean;
}

/** Parameters a model family rejects, dropped before forwarding. */
export interface ParamRule {
  /** Matches the provider-native model id. */
  model: RegExp;
  drop: readonly string[];
  /** Only when the request has tools. */
  withTools?: boolean;
}

/**
 * An OpenAI-compatible vendor: data only. The base URL (and its override variable) come from
 * the provider table and are written the way the vendor's SDK writes them; `chatPath` is what
 * that SDK appends.
 */
export interface OpenAiCompatibleVendor {
  kind: 'openai';
  provider: ProviderId;
  chatPath: string;
  /** `extra_content` on messages/tool calls: Gemini thought signatures are kept (as
   * `extra_content.google.thought_signature`), every other vendor gets them stripped. */
  extraContent: 'google' | 'strip';
  paramRules?: readonly ParamRule[];
  /** Model ids listed by GET /v1/models when the vendor has credentials. */
  models: readonly string[];
}

/** A vendor with its own API, translated to and from Chat Completions. */
export interface TranslatingLlmAdapter {
  kind: 'translate';
  provider: ProviderId;
  /** Model ids listed by GET /v1/models when the provider has credentials. */
  models?: readonly string[];
  /** Build the upstream request from the client's OpenAI body; throws GatewayError('bad_request'). */
  request(body: Record<string, unknown>, ctx: LlmRequestContext, endpoint: ProviderEndpoint): HttpRequestSpec;
  createStreamTranslator(ctx: LlmRequestContext, id: string, created: number): LlmStreamTranslator;
  /** Non-streaming: the provider's JSON answer -> an OpenAI `chat.completion` object. */
  translateResponse(json: unknown, ctx: LlmRequestContext, id: string, created: number): { body: Record<string, unknown>; usage: LlmUsage | null };
}

export type LlmAdapter = OpenAiCompatibleVendor | TranslatingLlmAdapter;
