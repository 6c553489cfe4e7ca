/**
 * ElevenLabs TTS WebSocket (single context):
 * wss://api.elevenlabs.io/v1/text-to-speech/{voice_id}/stream-input
 * API reference: https://elevenlabs.io/docs/api-reference/text-to-speech/v-1-text-to-speech-voice-id-stream-input
 * Notes: shared/providers.md sections 5.1 (query, messages, errors) and 9 (timing).
 *
 * One socket per generation: the BOS (`{"text":" "}` + voice settings) is sent on open, so a
 * socket can be opened ahead of time; text chunks follow as `{"text":"..."}` and the end of
 * input is the EOS `{"text":""}`. The provider answers `{"isFinal":true}` and closes.
 *
 * Latency: by default ElevenLabs buffers 120 characters before generating. LiveKit clients send
 * whole sentences, which is exactly what `auto_mode=true` is for ("disables the chunk schedule
 * and all buffers", only recommended for full sentences), so we turn it on unless the client
 * set `auto_mode` or its own `chunk_length_schedule`. No per-chunk `flush`: it would cut prosody
 * at every chunk and buys nothing over auto_mode for sentence-sized input.
 *
 * Alignment (only with `sync_alignment: true`): ElevenLabs reports characters with times in ms
 * relative to the audio of the same message; we rebase them on the generation's audio (bytes
 * decoded so far) and group them into words, which is what clients prefer.
 */
import { parseJsonObject } from '../upstream/json.ts';
import { GatewayError, type ErrorCode } from '../../protocol/errors.ts';
import { validateOptions, type OptionSpec } from '../options.ts';
import { providerReason } from '../upstream/ws-upstream.ts';
import type { ProviderEndpoint, TtsEvent, TtsOptions, TtsWsAdapter, TtsWsCodec, UpstreamRequest } from '../types.ts';

const MODELS = [
  'eleven_flash_v2_5',
  'eleven_flash_v2',
  'eleven_turbo_v2_5',
  'eleven_turbo_v2',
  'eleven_multilingual_v2',
  'eleven_v3',
] as const;

/** English-only models: a language other than English is rejected, `en` is not sent. */
const ENGLISH_ONLY = new Set<string>(['eleven_flash_v2', 'eleven_turbo_v2']);

/** Options sent as query parameters, in this order. */
const QUERY_OPTIONS = ['sync_alignment', 'auto_mode', 'apply_text_normalization', 'enable_ssml_parsing', 'enable_logging'] as const;
/** Options sent in the BOS `voice_settings`. */
const VOICE_SETTINGS = ['stability', 'similarity_boost', 'style', 'use_speaker_boost', 'speed'] as const;

const OPTIONS: Record<string, OptionSpec> = {
  inactivity_timeout: { kind: 'number', min: 5, max: 180, integer: true },
  sync_alignment: { kind: 'bool' },
  auto_mode: { kind: 'bool' },
  apply_text_normalization: { kind: 'enum', values: ['auto', 'on', 'off'] },
  enable_ssml_parsing: { kind: 'bool' },
  enable_logging: { kind: 'bool' },
  language_code: { kind: 'string', maxLength: 35 },
  stability: { kind: 'number', min: 0, max: 1 },
  similarity_boost: { kind: 'number', min: 0, max: 1 },
  style: { kind: 'number', min: 0, max: 1 },
  use_speaker_boost: { kind: 'bool' },
  // ElevenLabs documents voice_settings.speed as 0.7-1.2 (LiveKit's client docstring says
  // 0.25-4, which the provider would refuse mid-stream): the provider's range decides.
  speed: { kind: 'number', min: 0.7, max: 1.2 },
  chunk_length_schedule: { kind: 'numbers', min: 50, max: 500, maxItems: 4 },
  // Which of the two alignments to report: `normalized` (what was spoken, e.g. "five dollars",
  // the default of LiveKit's ElevenLabs plugin) or `original` (the text as sent, e.g. "$5").
  preferred_alignment: { kind: 'enum', values: ['normalized', 'original'] },
};

const REFUSED: Record<string, string> = {
  model_id: 'set the model in the model string',
  voice_id: 'set the voice in the model string or the voice field',
  output_format: 'the gateway always asks for raw pcm',
  authorization: 'credentials come from the gateway configuration',
  xi_api_key: 'credentials come from the gateway configuration',
  text: 'send text with input_transcript',
  flush: 'the gateway owns flushing',
  try_trigger_generation: 'the gateway owns flushing',
};

/** Default inactivity timeout: the maximum, so that a socket opened ahead of time survives. */
const DEFAULT_INACTIVITY_S = 180;

const VOICE_ID = /^[A-Za-z0-9_-]{1,64}$/;
const LANGUAGE = /^[a-z]{2,3}$/;

function bad(message: string): GatewayError {
  return new GatewayError('bad_request', `elevenlabs: ${message}`);
}

/**
 * The `language_code` to send: the `language_code` option, else the session language, as an
 * ISO 639 primary subtag (`en-US` -> `en`). English-only models get none.
 */
function languageCode(opts: TtsOptions): string | undefined {
  const explicit = opts.extra.language_code;
  const raw = typeof explicit === 'string' ? explicit : opts.language;
  if (raw === undefined || raw === '') return undefined;
  const lang = (raw.split(/[-_]/)[0] ?? '').toLowerCase();
  const what = typeof explicit === 'string' ? 'option "language_code"' : 'language';
  if (!LANGUAGE.test(lang)) throw bad(`${what} must be an ISO 639-1 code such as "en", got "${raw.slice(0, 35)}"`);
  if (ENGLISH_ONLY.has(opts.model)) {
    if (lang !== 'en') {
      throw bad(`model ${opts.model} is English only (${what} "${lang}"); use eleven_flash_v2_5 or eleven_multilingual_v2`);
    }
    return undefined;
  }
  return lang;
}

function validate(opts: TtsOptions): TtsOptions {
  if (!VOICE_ID.test(opts.voice)) {
    throw bad(`voice must be an ElevenLabs voice id, got "${opts.voice.slice(0, 60)}"`);
  }
  const extra = validateOptions('elevenlabs', opts.extra, OPTIONS, REFUSED);
  const next = { ...opts, extra };
  languageCode(next);
  return next;
}

/** An empty schedule means "not set" (the provider default applies). */
function hasSchedule(e: Record<string, unknown>): boolean {
  return Array.isArray(e.chunk_length_schedule) && e.chunk_length_schedule.length > 0;
}

function inactivitySeconds(opts: TtsOptions): number {
  const v = opts.extra.inactivity_timeout;
  return typeof v === 'number' ? v : DEFAULT_INACTIVITY_S;
}

/** Path and query of the socket (no credentials). */
function target(opts: TtsOptions): string {
  const e = opts.extra;
  const q = new URLSearchParams();
  q.set('model_id', opts.model);
  q.set('output_format', `pcm_${opts.sampleRate}`);
  const lang = languageCode(opts);
  if (lang) q.set('language_code', lang);
  q.set('inactivity_timeout', String(inactivitySeconds(opts)));
  for (const k of QUERY_OPTIONS) {
    if (e[k] !== undefined) q.set(k, String(e[k]));
  }
  if (e.auto_mode === undefined && !hasSchedule(e)) q.set('auto_mode', 'true');
  return `/v1/text-to-speech/${encodeURIComponent(opts.voice)}/stream-input?${q.toString()}`;
}

/** The BOS message: a single space plus the settings that were given. */
function beginMessage(opts: TtsOptions): string {
  const e = opts.extra;
  const msg: Record<string, unknown> = { text: ' ' };
  const vs: Record<string, unknown> = {};
  for (const k of VOICE_SETTINGS) {
    if (e[k] !== undefined) vs[k] = e[k];
  }
  if (Object.keys(vs).length > 0) msg.voice_settings = vs;
  if (hasSchedule(e)) msg.generation_config = { chunk_length_schedule: e.chunk_length_schedule };
  return JSON.stringify(msg);
}

// ---- decoding -------------------------------------------------------------------------

interface ElevenLabsAlignment {
  chars?: unknown;
  charStartTimesMs?: unknown;
  charDurationsMs?: unknown;
}

interface ElevenLabsMessage {
  audio?: string | null;
  isFinal?: boolean | null;
  alignment?: ElevenLabsAlignment | null;
  normalizedAlignment?: ElevenLabsAlignment | null;
  error?: string;
  message?: string;
  code?: number;
}

type Word = { word: string; start: number; end: number };

/** Machine-readable `error` values -> our codes; anything else is a provider error. */
const ERROR_CODES: Record<string, ErrorCode> = {
  input_timeout_exceeded: 'provider_timeout',
  quota_exceeded: 'rate_limited',
  too_many_concurrent_requests: 'rate_limited',
  system_busy: 'rate_limited',
  rate_limited: 'rate_limited',
  invalid_api_key: 'unauthorized',
  auth_error: 'unauthorized',
  unauthorized: 'unauthorized',
  invalid_request: 'bad_request',
  invalid_parameters: 'bad_request',
  unsupported_language: 'bad_request',
  voice_not_found: 'bad_request',
  max_character_limit_exceeded: 'bad_request',
};

/** Pure: an in-band error message -> GatewayError with the provider's words. */
export function elevenLabsError(error: string | undefined, message: string | undefined): GatewayError {
  const code: ErrorCode = (error !== undefined && Object.hasOwn(ERROR_CODES, error) ? ERROR_CODES[error] : undefined) ?? 'provider_error';
  const why = providerReason(message ?? error ?? 'unknown error');
  if (error === undefined) return new GatewayError(code, `elevenlabs: ${why}`);
  const id = error.slice(0, 60);
  return new GatewayError(code, `elevenlabs: ${why} (${id})`, { provider_error: id });
}

/**
 * Unrequested close. ElevenLabs closes with 1008 for timeouts, auth, quota and its own failures
 * alike, so the close code alone says nothing: the reason text is the only signal. The in-band
 * error message (mapped by its `error` code above) normally arrives first; this is the fallback.
 */
export function elevenLabsCloseError(code: number, reason: string): GatewayError {
  const why = providerReason(reason);
  const suffix = `(close ${code}${why ? `: ${why}` : ''})`;
  const fields = { provider_close: code };
  if (code === 1008) {
    if (/quota|concurren|rate limit|too many/i.test(reason)) {
      return new GatewayError('rate_limited', `elevenlabs: provider quota or rate limit reached ${suffix}`, fields);
    }
    if (/api[ _-]?key|unauthori[sz]ed|authenticat|permission/i.test(reason)) {
      return new GatewayError('unauthorized', `elevenlabs: provider rejected credentials ${suffix}`, fields);
    }
    if (/timeout/i.test(reason)) return new GatewayError('provider_timeout', `elevenlabs: provider timed out ${suffix}`, fields);
    if (/invalid|not found|unsupported|not allowed|exceed/i.test(reason)) {
      return new GatewayError('bad_request', `elevenlabs: provider rejected the stream ${suffix}`, fields);
    }
  }
  return new GatewayError('provider_error', `elevenlabs: provider closed the stream before the generation finished ${suffix}`, fields);
}

export class ElevenLabsCodec implements TtsWsCodec {
  readonly openMessages: readonly string[];
  readonly keepAlive: { message: string; idleMs: number };
  private readonly bytesPerSecond: number;
  private readonly alignment: 'alignment' | 'normalizedAlignment' | null;
  /** PCM bytes of the generation decoded so far: the time base of the next message's alignment. */
  private audioBytes = 0;
  /** A word still open at the end of the previous message (it may continue in the next one). */
  private pending: Word | null = null;

  constructor(opts: TtsOptions) {
    this.openMessages = [beginMessage(opts)];
    // `{"text":" "}` resets the inactivity timer without producing audio; a third of the
    // timeout leaves room for a late timer.
    this.keepAlive = { message: '{"text":" "}', idleMs: Math.floor((inactivitySeconds(opts) * 1000) / 3) };
    this.bytesPerSecond = opts.sampleRate * 2;
    this.alignment =
      opts.extra.sync_alignment !== true ? null : opts.extra.preferred_alignment === 'original' ? 'alignment' : 'normalizedAlignment';
  }

  text(_gen: string, text: string): string[] {
    // An empty text would be the EOS: never send one for an empty chunk.
    return text.length > 0 ? [`{"text":${JSON.stringify(text)}}`] : [];
  }

  end(): string[] {
    return ['{"text":""}'];
  }

  decode(data: Buffer, isBinary: boolean): TtsEvent[] {
    if (isBinary) return [];
    const msg = parseJsonObject<ElevenLabsMessage>(data, isBinary);
    if (msg === null) return [{ type: 'error', gen: null, error: new GatewayError('provider_error', 'elevenlabs: provider sent a frame that is not a JSON object') }];
    const out: TtsEvent[] = [];
    if (typeof msg.audio === 'string' && msg.audio.length > 0) {
      const pcm = Buffer.from(msg.audio, 'base64');
      const offset = this.audioBytes / this.bytesPerSecond;
      this.audioBytes += pcm.length;
      out.push({ type: 'audio', gen: null, pcm });
      if (this.alignment) {
        const a = msg[this.alignment] ?? msg[this.alignment === 'alignment' ? 'normalizedAlignment' : 'alignment'];
        const words = a ? this.words(a, offset) : [];
        if (words.length > 0) out.push({ type: 'alignment', gen: null, alignment: { words } });
      }
    } else if (typeof msg.error === 'string' || (typeof msg.message === 'string' && msg.isFinal !== true)) {
      out.push({ type: 'error', gen: null, error: elevenLabsError(msg.error, msg.message) });
      return out;
    }
    if (msg.isFinal === true) {
      if (this.pending) out.push({ type: 'alignment', gen: null, alignment: { words: [this.pending] } });
      this.pending = null;
      this.audioBytes = 0;
      out.push({ type: 'done', gen: null });
    }
    return out;
  }

  /** Characters of one message -> words on the generation's timeline; the last one stays open. */
  private words(a: ElevenLabsAlignment, offset: number): Word[] {
    const { chars, charStartTimesMs: starts, charDurationsMs: durs } = a;
    if (!Array.isArray(chars) || !Array.isArray(starts) || !Array.isArray(durs)) return [];
    const out: Word[] = [];
    let cur = this.pending;
    for (let i = 0; i < chars.length; i++) {
      const ch = chars[i];
      const s = starts[i];
      const d = durs[i];
      if (typeof ch !== 'string' || typeof s !== 'number' || typeof d !== 'number') continue;
      if (ch.trim() === '') {
        if (cur) out.push(cur);
        cur = null;
        continue;
      }
      const start = offset + s / 1000;
      const end = start + d / 1000;
      if (cur) {
        cur.word += ch;
        cur.end = end;
      } else {
        cur = { word: ch, start, end };
      }
    }
    this.pending = cur;
    return out;
  }
}

export const elevenLabsTts: TtsWsAdapter = {
  kind: 'ws',
  provider: 'elevenlabs',
  models: MODELS,
  defaultModel: 'eleven_flash_v2_5',
  defaultVoice: 'Xb7hH8MSUJpSbSDYk0k2',
  capabilities: {
    alignment: { kind: 'words', flag: 'sync_alignment' },
    sampleRates: [8000, 16000, 22050, 24000, 44100],
  },
  reuse: 'one',
  validate,
  // The URL, the BOS settings and the alignment choice are all fixed for the socket.
  connectionKey: (opts) => `${target(opts)} ${beginMessage(opts)} ${String(opts.extra.preferred_alignment ?? '')}`,
  request(opts: TtsOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    return {
      url: `${endpoint.baseUrl.replace(/\/+$/, '')}${target(opts)}`,
      headers: { 'xi-api-key': endpoint.apiKey },
    };
  },
  createCodec: (opts) => new ElevenLabsCodec(opts),
  closeError: elevenLabsCloseError,
};
