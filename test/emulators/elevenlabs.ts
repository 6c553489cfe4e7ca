/**
 * Emulator of ElevenLabs' text-to-speech WebSocket APIs:
 * https://elevenlabs.io/docs/api-reference/text-to-speech/v-1-text-to-speech-voice-id-stream-input
 * https://elevenlabs.io/docs/api-reference/text-to-speech/v-1-text-to-speech-voice-id-multi-stream-input
 * plus the REST streaming endpoint `POST /v1/text-to-speech/{voice_id}/stream`.
 *
 * Written from ../../../shared/providers.md §5.1–5.3 and §9 "ElevenLabs TTS WS" (and the AsyncAPI
 * pages they summarise), never from the gateway adapter. Audio is the deterministic tone "speech"
 * of ./tts-audio.ts: every character lasts `msPerChar` (60 ms), so audio = characters × 60 ms.
 * Upgrades are routed by path (WS_ROUTES) so that Scribe realtime STT can be added beside it.
 *
 * Facts relied on (providers.md and the AsyncAPI pages):
 * - URL /v1/text-to-speech/{voice_id}/stream-input?model_id=…&output_format=…; query model_id,
 *   language_code, output_format, inactivity_timeout (default 20 s), sync_alignment, auto_mode,
 *   apply_text_normalization (auto|on|off), enable_ssml_parsing, enable_logging, seed,
 *   authorization. Key in the `xi-api-key` header, or `xi-api-key` / `authorization` in the first
 *   message ("can only be included in the first message").
 * - Client: BOS {"text":" ", voice_settings, generation_config:{chunk_length_schedule},
 *   pronunciation_dictionary_locators} (text must be a single space); then {"text":"… ",
 *   try_trigger_generation, flush}; EOS {"text":""}. voice_settings/generation_config may only be
 *   repeated unchanged ("voice_settings field must be provided in the first message and then
 *   either be not provided or not change.", pipecat#4541, close 1008).
 * - Server: {"audio": base64, "normalizedAlignment": {chars, charStartTimesMs, charDurationsMs},
 *   "alignment": {…}} with integer ms relative to THIS chunk; {"isFinal": true} after EOS, then
 *   close 1000. No greeting on open.
 * - Buffering: chunk_length_schedule default [120,160,250,290] (items 50–500): first audio after
 *   ≥ 120 buffered characters, then +160, +250, then every +290, unless flush, try_trigger_generation
 *   (only above a minimum number of characters), EOS or auto_mode=true.
 * - No text for inactivity_timeout → {"message":"Have not received a new text input within the
 *   timeout of 20 seconds. …","error":"input_timeout_exceeded","code":1008} then close 1008 with
 *   that text as reason (observed cut at 120 bytes, elevenlabs-docs#426). A text of a single
 *   space resets the timer without producing audio.
 * - Multi-context: context_id per message, {"context_id","text":"","flush":true} flush,
 *   {"context_id","close_context":true}, {"close_socket":true}, {"text":"","context_id"} keeps a
 *   context alive; responses carry camelCase `contextId`; not available for eleven_v3 (403 at the
 *   handshake, LiveKit community report).
 * - Errors: 429 {"detail":{"status":"too_many_concurrent_requests",…}} over the plan's concurrency;
 *   REST 401 {"detail":{"status":"invalid_api_key","message":"Invalid API key"}}; other WS
 *   failures (auth, quota "This request exceeds your quota…", generic "We are sorry, something
 *   went wrong. You are not charged for this request.") are 1008 closes after the upgrade.
 *
 * Deterministic rules (see README "ElevenLabs TTS"):
 * - Characters are Unicode code points. A text message is appended to the context's buffer, except
 *   a whitespace-only text (keep-alive: resets the timer, not buffered, not billed). Characters
 *   appended are the billing figure (`characters`).
 * - After each text message: auto_mode → the whole buffer is one segment; flush → the whole buffer;
 *   try_trigger_generation with ≥ tryTriggerMinChars buffered, or buffer ≥ schedule[k] (k = segments
 *   generated since the last flush/start, last item repeats) → the buffer up to and including its
 *   last whitespace (a trailing partial word stays buffered). EOS → the whole buffer, then isFinal
 *   and close 1000 once every segment was sent.
 * - A segment is sent in one message (chunkMs = 0, default, as providers.md §9 says) or in messages
 *   of ceil(chunkMs / msPerChar) whole characters. Segments of one context are generated in order:
 *   first message firstAudioDelayMs after the segment starts (trigger, or end of the previous
 *   segment), each next message (its audio ms) / speedFactor later.
 * - REST stream: `xi-api-key` header (else 401 invalid_api_key), JSON body with `text` (else 422),
 *   `model_id` in the body, `output_format` in the query; audio in HTTP chunks of chunkMs (or
 *   restChunkMs) whole characters, first after firstAudioDelayMs, then paced by speedFactor.
 *   Unknown voice 404 voice_not_found, quota 401 quota_exceeded, concurrency 429.
 * - Faults: base.ts switches apply; their "audio" thresholds (dropAfterAudioSec, closeAfterAudioSec,
 *   garbageAfterAudioSec) count audio seconds SENT. TTS switches (TtsFaults: firstAudioDelayMs,
 *   errorAfterChars, stallAfterChars, omitIsFinal) in `emu.ttsFaults`, `conn.ttsFaults`,
 *   `emu.ttsFaultNext()`.
 *
 * UNCERTAIN choices (not settled by the docs we have):
 * - Credentials are checked at the first message (the key may be in it): missing or invalid →
 *   error JSON `invalid_api_key` + close 1008 (pipecat#1006 saw 1008 for a wrong key);
 *   `authFailure: 401 | 403` rejects a bad header key at the upgrade instead. Unknown voices
 *   (when `voices` is set) → `voice_not_found` + 1008.
 * - Query problems are refused at the upgrade with 403 (FastAPI closes a socket before accept with
 *   403; 403 was observed for eleven_v3 on multi-stream-input); the JSON body (pydantic-style
 *   `detail` list, or `{"detail":{"status","message"}}`) is an emulator aid. inactivity_timeout
 *   must be an integer 1–180; model_id defaults to eleven_multilingual_v2.
 * - mp3_* and opus_* (and the default output_format mp3_44100_128) cannot be encoded here: 400
 *   `emulator_unsupported_output_format`. pcm_* is raw s16le mono, ulaw_8000/alaw_8000 G.711.
 * - Alignment (chars of the message, chunk-relative integer ms) is sent on every audio message by
 *   default (the AsyncAPI AudioOutput schema has it regardless of sync_alignment);
 *   `alignment: 'sync-only'` sends `null` alignment unless sync_alignment=true. normalizedAlignment
 *   equals alignment (no text normalization is emulated).
 * - The schedule index restarts after a flush. try_trigger_generation's minimum is 50 characters.
 * - Bad first message (text not " "), invalid JSON, binary frames, wrong field types, bad
 *   voice_settings ranges (stability/similarity_boost/style 0–1, speed 0.7–1.2) or schedule items
 *   → error JSON `invalid_request` + close 1008.
 * - Multi-context: inactivity is per socket (any message resets it); a message for an unknown
 *   context_id opens it (its voice_settings/generation_config apply to it only); close_context drops
 *   unsent buffered text and cancels segments not triggered by a flush, lets flushed ones finish,
 *   then sends {"isFinal":true,"contextId"}; close_socket does that for every context, then close
 *   1000. Without context_id the context id is "default". `isFinal` is only sent on close.
 * - maxConcurrent counts open sockets and REST streams of the whole emulator (one account), checked
 *   at the upgrade (429). Error JSON before a 1008 close is `{"message","error","code"}` for every
 *   post-upgrade failure.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  parseQuery,
  startEmulatorServer,
  type ConnectionRecord,
  type EmulatorServer,
  type FaultSwitches,
  type TlsOptions,
  type UpgradeContext,
  type UpgradeDecision,
  type WsHandler,
  type WsSession,
} from './base.ts';
import { DEFAULT_MS_PER_CHAR, TtsRenderer } from './tts-audio.ts';

export const DEFAULT_API_KEY = 'el-test-key';
export const DEFAULT_MODEL_ID = 'eleven_multilingual_v2';
export const DEFAULT_OUTPUT_FORMAT = 'mp3_44100_128';
export const DEFAULT_CHUNK_LENGTH_SCHEDULE: readonly number[] = Object.freeze([120, 160, 250, 290]);
export const DEFAULT_CONTEXT_ID = 'default';
/** Close reasons observed cut at this many bytes (elevenlabs-docs#426). */
export const CLOSE_REASON_MAX_BYTES = 120;

export const MODELS: readonly string[] = [
  'eleven_flash_v2_5', 'eleven_flash_v2', 'eleven_turbo_v2_5', 'eleven_turbo_v2', 'eleven_multilingual_v2', 'eleven_v3',
];

export const OUTPUT_FORMATS: readonly string[] = [
  'mp3_22050_32', 'mp3_44100_32', 'mp3_44100_64', 'mp3_44100_96', 'mp3_44100_128', 'mp3_44100_192',
  'pcm_8000', 'pcm_16000', 'pcm_22050', 'pcm_24000', 'pcm_44100', 'ulaw_8000', 'alaw_8000',
  'opus_48000_32', 'opus_48000_64', 'opus_48000_96', 'opus_48000_128', 'opus_48000_192',
];

/**
 * Model latency (time to first audio, network excluded) for benchmarks, providers.md §9:
 * Flash v2.5 ~75 ms, Turbo 250–300 ms. Others are not documented there.
 */
export const REALISTIC_FIRST_AUDIO_MS: Readonly<Record<string, number>> = Object.freeze({
  eleven_flash_v2_5: 75,
  eleven_flash_v2: 75,
  eleven_turbo_v2_5: 275,
  eleven_turbo_v2: 275,
});

export const SOMETHING_WENT_WRONG = 'We are sorry, something went wrong. You are not charged for this request.';
export const INVALID_API_KEY = 'Invalid API key';
export const VOICE_SETTINGS_CHANGED =
  'voice_settings field must be provided in the first message and then either be not provided or not change.';
export const GENERATION_CONFIG_CHANGED =
  'generation_config field must be provided in the first message and then either be not provided or not change.';

export function inputTimeoutMessage(seconds: number): string {
  return `Have not received a new text input within the timeout of ${seconds} seconds. Streaming input terminated. Please make sure to either feed the input in the timely manner, or to send the end of input text (empty string "") when done.`;
}

export function quotaExceededMessage(quota: number, remaining: number, required: number): string {
  return `This request exceeds your quota of ${quota}. You have ${remaining} credits remaining, while ${required} credits are required for this request.`;
}

/** A close reason as the service sends it: the message cut to CLOSE_REASON_MAX_BYTES bytes. */
export function closeReason(message: string): string {
  const buf = Buffer.from(message, 'utf8');
  if (buf.length <= CLOSE_REASON_MAX_BYTES) return message;
  let end = CLOSE_REASON_MAX_BYTES;
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--; // never split a UTF-8 sequence
  return buf.subarray(0, end).toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// Options

export interface ElevenLabsEmulatorOptions {
  /** accepted `xi-api-key` values; default ['el-test-key'] */
  apiKeys?: string[];
  /** bearer / single-use tokens accepted in `authorization` (query or first message) */
  tokens?: string[];
  /** known voice ids; null (default) accepts any */
  voices?: string[] | null;
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** open sockets + REST streams before 429; null (default) = unlimited */
  maxConcurrent?: number | null;
  /** characters the account may still synthesize (emulator-wide); null = unlimited */
  quotaCharacters?: number | null;
  /** wall ms from a segment's start to its first audio message (default 20; realistic: REALISTIC_FIRST_AUDIO_MS) */
  firstAudioDelayMs?: number;
  /** generation speed in × real time: a message of D ms audio follows the previous one by D / speedFactor (default 10) */
  speedFactor?: number;
  /** audio per message, rounded up to whole characters; 0 (default) = one message per segment */
  chunkMs?: number;
  /** audio per character (default 60, tts-audio.ts) */
  msPerChar?: number;
  /** wall ms that one second of `inactivity_timeout` lasts (default 1000; tests use e.g. 10) */
  timeoutSecondMs?: number;
  /** try_trigger_generation generates only with at least this many buffered characters (default 50) */
  tryTriggerMinChars?: number;
  /** 'always' (default): alignment on every audio message; 'sync-only': null unless sync_alignment=true */
  alignment?: 'always' | 'sync-only';
  /** how a bad `xi-api-key` header is refused: 'close' (default: 1008 at the first message), or HTTP 401/403 at the upgrade */
  authFailure?: 'close' | 401 | 403;
  /** REST stream: audio per HTTP chunk when chunkMs is 0 (default 500) */
  restChunkMs?: number;
  /** keep binary payloads in the wire record (there are none on this API; kept for symmetry) */
  recordAudio?: boolean;
}

export type ResolvedElevenLabsOptions = Required<Omit<ElevenLabsEmulatorOptions, 'port' | 'host' | 'tls'>>;

/** TTS-specific fault switches (server-wide `emu.ttsFaults`, per connection `conn.ttsFaults`). */
export interface TtsFaults {
  /** override firstAudioDelayMs (e.g. 11000 to test a gateway keepalive) */
  firstAudioDelayMs: number | null;
  /** before an audio message, once this many characters were sent: error JSON + close */
  errorAfterChars: { chars: number; error?: string; message?: string; code?: number } | null;
  /** before an audio message, once this many characters were sent: send nothing more (socket stays open) */
  stallAfterChars: number | null;
  /** after EOS: close 1000 without the isFinal message */
  omitIsFinal: boolean;
}

export function defaultTtsFaults(): TtsFaults {
  return { firstAudioDelayMs: null, errorAfterChars: null, stallAfterChars: null, omitIsFinal: false };
}

// ---------------------------------------------------------------------------------------------
// Wire types

export interface ElAlignment {
  chars: string[];
  charStartTimesMs: number[];
  charDurationsMs: number[];
}

export interface ElAudioOutput {
  audio: string;
  normalizedAlignment: ElAlignment | null;
  alignment: ElAlignment | null;
  /** multi-stream-input only */
  contextId?: string;
}

export interface ElFinalOutput {
  isFinal: true;
  contextId?: string;
}

export interface ElErrorOutput {
  message: string;
  error: string;
  code: number;
}

export type ElServerMessage = ElAudioOutput | ElFinalOutput | ElErrorOutput;

// ---------------------------------------------------------------------------------------------
// Query parameters

export interface StreamInputParams {
  modelId: string;
  languageCode: string | null;
  outputFormat: string;
  /** seconds */
  inactivityTimeout: number;
  syncAlignment: boolean;
  autoMode: boolean;
  applyTextNormalization: 'auto' | 'on' | 'off';
  enableSsmlParsing: boolean;
  enableLogging: boolean;
  seed: number | null;
  authorization: string | null;
  /** query keys the emulator does not know (accepted) */
  unknown: string[];
}

export interface PydanticError {
  type: string;
  loc: [string, string];
  msg: string;
  input: string;
  ctx?: Record<string, unknown>;
}

export type QueryCheck =
  | { ok: true; params: StreamInputParams }
  | { ok: false; status: number; body: { detail: PydanticError[] | { status: string; message: string } } };

const TRUE_STRINGS = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE_STRINGS = new Set(['0', 'off', 'f', 'false', 'n', 'no']);
const KNOWN_QUERY = new Set([
  'model_id', 'language_code', 'output_format', 'inactivity_timeout', 'sync_alignment', 'auto_mode',
  'apply_text_normalization', 'enable_ssml_parsing', 'enable_logging', 'seed', 'authorization',
]);

function enumMessage(values: readonly string[]): string {
  const q = values.map((v) => `'${v}'`);
  return `Input should be ${q.slice(0, -1).join(', ')} or ${q[q.length - 1]}`;
}

/** Validate stream-input / multi-stream-input query parameters the way the upgrade does. */
export function parseStreamInputQuery(query: Record<string, string[]>, kind: 'stream-input' | 'multi-stream-input' = 'stream-input'): QueryCheck {
  const last = (k: string): string | undefined => {
    const v = query[k];
    return v ? v[v.length - 1] : undefined;
  };
  const errors: PydanticError[] = [];
  const bool = (k: string, dflt: boolean): boolean => {
    const v = last(k);
    if (v === undefined) return dflt;
    const s = v.trim().toLowerCase();
    if (TRUE_STRINGS.has(s)) return true;
    if (FALSE_STRINGS.has(s)) return false;
    errors.push({ type: 'bool_parsing', loc: ['query', k], msg: 'Input should be a valid boolean, unable to interpret input', input: v });
    return dflt;
  };
  const int = (k: string, min: number, max: number): number | null => {
    const v = last(k);
    if (v === undefined) return null;
    if (!/^\s*[+-]?\d+\s*$/.test(v)) {
      errors.push({ type: 'int_parsing', loc: ['query', k], msg: 'Input should be a valid integer, unable to parse string as an integer', input: v });
      return null;
    }
    const n = Number(v);
    if (n < min) {
      errors.push({ type: 'greater_than_equal', loc: ['query', k], msg: `Input should be greater than or equal to ${min}`, input: v, ctx: { ge: min } });
      return null;
    }
    if (n > max) {
      errors.push({ type: 'less_than_equal', loc: ['query', k], msg: `Input should be less than or equal to ${max}`, input: v, ctx: { le: max } });
      return null;
    }
    return n;
  };
  const oneOf = <T extends string>(k: string, values: readonly T[], dflt: T): T => {
    const v = last(k);
    if (v === undefined) return dflt;
    if ((values as readonly string[]).includes(v)) return v as T;
    errors.push({ type: 'enum', loc: ['query', k], msg: enumMessage(values), input: v, ctx: { expected: enumMessage(values).slice('Input should be '.length) } });
    return dflt;
  };
  const outputFormat = oneOf('output_format', OUTPUT_FORMATS, DEFAULT_OUTPUT_FORMAT);
  const inactivityTimeout = int('inactivity_timeout', 1, 180) ?? 20;
  const syncAlignment = bool('sync_alignment', false);
  const autoMode = bool('auto_mode', false);
  const applyTextNormalization = oneOf('apply_text_normalization', ['auto', 'on', 'off'] as const, 'auto');
  const enableSsmlParsing = bool('enable_ssml_parsing', false);
  const enableLogging = bool('enable_logging', true);
  const seed = int('seed', 0, 4294967295);
  if (errors.length > 0) return { ok: false, status: 403, body: { detail: errors } };
  const modelId = last('model_id') || DEFAULT_MODEL_ID;
  if (!MODELS.includes(modelId)) {
    return { ok: false, status: 403, body: { detail: { status: 'model_not_found', message: `A model with model ID ${modelId} does not exist.` } } };
  }
  if (kind === 'multi-stream-input' && modelId === 'eleven_v3') {
    return { ok: false, status: 403, body: { detail: { status: 'unsupported_model', message: 'Multi-context WebSockets are not available for eleven_v3.' } } };
  }
  if (!audioFormat(outputFormat)) {
    return {
      ok: false,
      status: 400,
      body: {
        detail: {
          status: 'emulator_unsupported_output_format',
          message: `The emulator cannot encode ${outputFormat}; use pcm_8000|16000|22050|24000|44100, ulaw_8000 or alaw_8000 (the real default is ${DEFAULT_OUTPUT_FORMAT}).`,
        },
      },
    };
  }
  return {
    ok: true,
    params: {
      modelId,
      languageCode: last('language_code') ?? null,
      outputFormat,
      inactivityTimeout,
      syncAlignment,
      autoMode,
      applyTextNormalization,
      enableSsmlParsing,
      enableLogging,
      seed,
      authorization: last('authorization') ?? null,
      unknown: Object.keys(query).filter((k) => !KNOWN_QUERY.has(k)),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Audio: formats, G.711 encoders, byte math

export interface AudioFormat {
  encoding: 'pcm' | 'ulaw' | 'alaw';
  sampleRate: number;
  bytesPerSample: 1 | 2;
}

/** Emulated output formats; null for mp3/opus/unknown. */
export function audioFormat(outputFormat: string): AudioFormat | null {
  const m = /^(pcm|ulaw|alaw)_(\d+)$/.exec(outputFormat);
  if (!m || !OUTPUT_FORMATS.includes(outputFormat)) return null;
  const encoding = m[1] as AudioFormat['encoding'];
  return { encoding, sampleRate: Number(m[2]), bytesPerSample: encoding === 'pcm' ? 2 : 1 };
}

/** Exact audio bytes the emulator sends for `chars` characters (whole segments). */
export function expectedAudioBytes(chars: number, outputFormat: string, msPerChar = DEFAULT_MS_PER_CHAR): number {
  const f = audioFormat(outputFormat);
  if (!f) throw new Error(`not an emulated output format: ${outputFormat}`);
  return Math.round((chars * msPerChar * f.sampleRate) / 1000) * f.bytesPerSample;
}

/** ITU-T G.711 mu-law encoder (s16 -> byte). */
export function linearToMulaw(sample: number): number {
  const BIAS = 0x84;
  const CLIP = 32635;
  let s = sample;
  const sign = s < 0 ? 0x80 : 0;
  if (sign) s = -s;
  if (s > CLIP) s = CLIP;
  s += BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

const ALAW_SEG_END = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

/** ITU-T G.711 A-law encoder (s16 -> byte). */
export function linearToAlaw(sample: number): number {
  let pcm = sample >> 3;
  let mask: number;
  if (pcm >= 0) {
    mask = 0xd5;
  } else {
    mask = 0x55;
    pcm = -pcm - 1;
  }
  let seg = 0;
  while (seg < 8 && pcm > ALAW_SEG_END[seg]!) seg++;
  if (seg >= 8) return 0x7f ^ mask;
  let aval = seg << 4;
  aval |= seg < 2 ? (pcm >> 1) & 0x0f : (pcm >> seg) & 0x0f;
  return aval ^ mask;
}

function encodeAudio(pcm: Buffer, f: AudioFormat): Buffer {
  if (f.encoding === 'pcm') return pcm;
  const out = Buffer.alloc(pcm.length / 2);
  const enc = f.encoding === 'ulaw' ? linearToMulaw : linearToAlaw;
  for (let i = 0; i < out.length; i++) out[i] = enc(pcm.readInt16LE(i * 2));
  return out;
}

function codePoints(s: string): string[] {
  return [...s];
}

function alignmentFor(chars: string[], msPerChar: number): ElAlignment {
  const starts = chars.map((_, i) => Math.round(i * msPerChar));
  return {
    chars,
    charStartTimesMs: starts,
    charDurationsMs: chars.map((_, i) => Math.round((i + 1) * msPerChar) - starts[i]!),
  };
}

// ---------------------------------------------------------------------------------------------
// Records

export type SegmentTrigger = 'schedule' | 'try_trigger' | 'flush' | 'eos' | 'auto_mode';

export interface ElevenLabsSegment {
  /** 0-based, per connection */
  index: number;
  contextId: string | null;
  /** exactly the characters synthesized */
  text: string;
  chars: number;
  trigger: SegmentTrigger;
  /** ms since the socket opened */
  triggeredAt: number;
  firstAudioAt: number | null;
  doneAt: number | null;
  status: 'queued' | 'generating' | 'done' | 'cancelled' | 'stalled';
  cancelledAt: number | null;
  /** audio messages sent for it */
  messages: number;
  charsSent: number;
  audioBytes: number;
  audioSeconds: number;
}

export interface ElevenLabsContext {
  /** null on stream-input */
  id: string | null;
  openedAt: number;
  voiceSettings: Record<string, unknown> | null;
  generationConfig: Record<string, unknown> | null;
  chunkLengthSchedule: number[];
  /** every text appended to the buffer, in order */
  inputs: string[];
  /** concatenation of inputs: what the client asked to speak */
  text: string;
  /** characters appended (billing figure) */
  characters: number;
  /** appended but not (yet) in a segment */
  buffered: string;
  /** buffered text dropped without generation (close_context, close_socket, socket end) */
  discarded: string;
  segments: ElevenLabsSegment[];
  flushes: number;
  keepAlives: number;
  ended: { by: 'eos' | 'close_context' | 'close_socket' | 'socket'; at: number } | null;
  isFinalAt: number | null;
  charsSent: number;
  audioBytes: number;
  audioSeconds: number;
}

export interface ElevenLabsErrorRecord extends ElErrorOutput {
  at: number;
}

export type TtsRouteKind = 'stream-input' | 'multi-stream-input';

export class ElevenLabsConnection {
  readonly record: ConnectionRecord;
  /** base session: per-connection base faults live in `session.faults` */
  readonly session: WsSession;
  readonly kind: TtsRouteKind;
  readonly voiceId: string;
  readonly params: StreamInputParams;
  readonly format: AudioFormat;
  auth: { via: 'header' | 'query' | 'message' | null; kind: 'api-key' | 'token' | null; ok: boolean | null } = { via: null, kind: null, ok: null };
  /** the first message as parsed */
  bos: Record<string, unknown> | null = null;
  readonly contexts: ElevenLabsContext[] = [];
  /** error JSON messages sent */
  readonly errors: ElevenLabsErrorRecord[] = [];
  readonly counts = { messages: 0, text: 0, keepAlive: 0, flush: 0, tryTrigger: 0, eos: 0, closeContext: 0, closeSocket: 0, invalid: 0, ignored: 0 };
  /** isFinal messages sent */
  isFinal = 0;
  /** this connection's TTS fault overrides (mutable) */
  ttsFaults: Partial<TtsFaults>;

  constructor(record: ConnectionRecord, session: WsSession, kind: TtsRouteKind, voiceId: string, params: StreamInputParams, ttsFaults: Partial<TtsFaults>) {
    this.record = record;
    this.session = session;
    this.kind = kind;
    this.voiceId = voiceId;
    this.params = params;
    this.format = audioFormat(params.outputFormat)!;
    this.ttsFaults = ttsFaults;
  }

  /** stream-input's only context */
  get context(): ElevenLabsContext | undefined {
    return this.contexts[0];
  }
  get text(): string {
    return this.contexts.map((c) => c.text).join('');
  }
  /** characters appended on every context: the billing figure */
  get characters(): number {
    return this.contexts.reduce((n, c) => n + c.characters, 0);
  }
  get segments(): ElevenLabsSegment[] {
    return this.contexts.flatMap((c) => c.segments).sort((a, b) => a.index - b.index);
  }
  get charsSent(): number {
    return this.contexts.reduce((n, c) => n + c.charsSent, 0);
  }
  get audioBytes(): number {
    return this.contexts.reduce((n, c) => n + c.audioBytes, 0);
  }
  /** audio seconds sent */
  get audioSeconds(): number {
    return this.contexts.reduce((n, c) => n + c.audioSeconds, 0);
  }
  get closed(): boolean {
    return this.record.closed;
  }
  get closeCode(): number | undefined {
    return this.record.close?.code;
  }
}

// ---------------------------------------------------------------------------------------------
// Per-connection environment shared by the socket handler and its context engines

interface Env {
  opts: ResolvedElevenLabsOptions;
  serverFaults(): TtsFaults;
  changed(): void;
  /** characters the account may still use (Infinity when unlimited) */
  quotaLeft(): number;
  useQuota(n: number): void;
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function sameJson(a: unknown, b: unknown): boolean {
  const norm = (x: unknown): unknown =>
    isObject(x) ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, norm(x[k])])) : Array.isArray(x) ? x.map(norm) : x;
  return JSON.stringify(norm(a)) === JSON.stringify(norm(b));
}

const VOICE_RANGES: Record<string, [number, number]> = { stability: [0, 1], similarity_boost: [0, 1], style: [0, 1], speed: [0.7, 1.2] };

function checkVoiceSettings(v: unknown): string | null {
  if (v === undefined || v === null) return null;
  if (!isObject(v)) return 'voice_settings must be an object.';
  for (const [k, [lo, hi]] of Object.entries(VOICE_RANGES)) {
    const x = v[k];
    if (x === undefined || x === null) continue;
    if (typeof x !== 'number' || !Number.isFinite(x)) return `voice_settings.${k} must be a number.`;
    if (x < lo || x > hi) return `voice_settings.${k} must be between ${lo} and ${hi}, got ${x}.`;
  }
  const b = v['use_speaker_boost'];
  if (b !== undefined && b !== null && typeof b !== 'boolean') return 'voice_settings.use_speaker_boost must be a boolean.';
  return null;
}

function checkGenerationConfig(g: unknown): { schedule: number[] | null; error: string | null } {
  if (g === undefined || g === null) return { schedule: null, error: null };
  if (!isObject(g)) return { schedule: null, error: 'generation_config must be an object.' };
  const s = g['chunk_length_schedule'];
  if (s === undefined || s === null) return { schedule: null, error: null };
  if (!Array.isArray(s) || s.length === 0) return { schedule: null, error: 'chunk_length_schedule must be a non-empty list of numbers.' };
  for (const x of s) {
    if (typeof x !== 'number' || !Number.isFinite(x)) return { schedule: null, error: 'chunk_length_schedule must be a list of numbers.' };
    if (x < 50 || x > 500) return { schedule: null, error: `chunk_length_schedule items must be in the range 50-500, got ${x}.` };
  }
  return { schedule: s as number[], error: null };
}

// ---------------------------------------------------------------------------------------------
// One context: buffer, chunk schedule, ordered generation with timers

class ContextEngine {
  readonly ctx: ElevenLabsContext;
  private readonly sock: TtsSocket;
  private readonly renderer: TtsRenderer;
  private scheduleIdx = 0;
  private pending: ElevenLabsSegment[] = [];
  private current: { seg: ElevenLabsSegment; chunks: string[][]; next: number } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private finishing = false;
  private onFinished: (() => void) | null = null;
  private dead = false;

  constructor(ctx: ElevenLabsContext, sock: TtsSocket) {
    this.ctx = ctx;
    this.sock = sock;
    this.renderer = new TtsRenderer(sock.conn.format.sampleRate, { msPerChar: sock.env.opts.msPerChar });
  }

  /** false when the quota refused it (the socket is then closing) */
  append(text: string): boolean {
    const n = codePoints(text).length;
    if (n > this.sock.env.quotaLeft()) {
      const q = this.sock.env.opts.quotaCharacters ?? 0;
      this.sock.fail('quota_exceeded', quotaExceededMessage(q, Math.max(0, this.sock.env.quotaLeft()), n));
      return false;
    }
    this.sock.env.useQuota(n);
    this.ctx.inputs.push(text);
    this.ctx.text += text;
    this.ctx.characters += n;
    this.ctx.buffered += text;
    return true;
  }

  /** Apply the generation rules after a text message. */
  afterText(o: { flush: boolean; tryTrigger: boolean; autoMode: boolean }): void {
    if (this.ctx.buffered === '') {
      if (o.flush) this.resetSchedule();
      return;
    }
    if (o.autoMode) {
      this.generate(this.ctx.buffered.length, 'auto_mode');
      return;
    }
    if (o.flush) {
      this.generate(this.ctx.buffered.length, 'flush');
      this.resetSchedule();
      return;
    }
    const buffered = codePoints(this.ctx.buffered).length;
    const sched = this.ctx.chunkLengthSchedule;
    const threshold = sched[Math.min(this.scheduleIdx, sched.length - 1)]!;
    const trigger: SegmentTrigger | null =
      buffered >= threshold ? 'schedule' : o.tryTrigger && buffered >= this.sock.env.opts.tryTriggerMinChars ? 'try_trigger' : null;
    if (!trigger) return;
    const cut = lastWhitespaceEnd(this.ctx.buffered);
    if (cut === 0) return; // a single unfinished word: wait for its end
    this.generate(cut, trigger);
    this.scheduleIdx++;
  }

  flushForEos(): void {
    if (this.ctx.buffered !== '') this.generate(this.ctx.buffered.length, 'eos');
  }

  /** Finish after every queued segment was sent, then call `done`. */
  finish(done: () => void): void {
    this.finishing = true;
    this.onFinished = done;
    this.maybeFinished();
  }

  /** Drop unsent text and segments (keeping those `keep` accepts), e.g. close_context. */
  cancel(keep: (s: ElevenLabsSegment) => boolean): void {
    this.discardBuffer();
    const now = this.sock.now();
    const drop = (s: ElevenLabsSegment) => {
      s.status = 'cancelled';
      s.cancelledAt = now;
    };
    this.pending = this.pending.filter((s) => (keep(s) ? true : (drop(s), false)));
    if (this.current && !keep(this.current.seg)) {
      drop(this.current.seg);
      this.current = null;
      this.clearTimer();
      this.startNext();
    }
  }

  /** Socket gone: stop timers, unfinished segments are cancelled. */
  dispose(): void {
    if (this.dead) return;
    this.dead = true;
    this.clearTimer();
    const now = this.sock.now();
    for (const s of [...(this.current ? [this.current.seg] : []), ...this.pending]) {
      if (s.status === 'queued' || s.status === 'generating' || s.status === 'stalled') {
        s.status = 'cancelled';
        s.cancelledAt = now;
      }
    }
    this.current = null;
    this.pending = [];
    this.discardBuffer();
    if (!this.ctx.ended) this.ctx.ended = { by: 'socket', at: now };
  }

  private discardBuffer(): void {
    this.ctx.discarded += this.ctx.buffered;
    this.ctx.buffered = '';
  }

  private resetSchedule(): void {
    this.scheduleIdx = 0;
  }

  /** Move the first `len` UTF-16 units of the buffer into a new segment. */
  private generate(len: number, trigger: SegmentTrigger): void {
    const text = this.ctx.buffered.slice(0, len);
    this.ctx.buffered = this.ctx.buffered.slice(len);
    const seg: ElevenLabsSegment = {
      index: this.sock.nextSegmentIndex++,
      contextId: this.ctx.id,
      text,
      chars: codePoints(text).length,
      trigger,
      triggeredAt: this.sock.now(),
      firstAudioAt: null,
      doneAt: null,
      status: 'queued',
      cancelledAt: null,
      messages: 0,
      charsSent: 0,
      audioBytes: 0,
      audioSeconds: 0,
    };
    this.ctx.segments.push(seg);
    this.pending.push(seg);
    this.sock.env.changed();
    this.startNext();
  }

  private startNext(): void {
    if (this.dead || this.current) return;
    const seg = this.pending.shift();
    if (!seg) {
      this.maybeFinished();
      return;
    }
    seg.status = 'generating';
    const chars = codePoints(seg.text);
    const per = this.charsPerMessage(chars.length);
    const chunks: string[][] = [];
    for (let i = 0; i < chars.length; i += per) chunks.push(chars.slice(i, i + per));
    this.current = { seg, chunks, next: 0 };
    this.arm(this.sock.faults().firstAudioDelayMs ?? this.sock.env.opts.firstAudioDelayMs);
  }

  private charsPerMessage(total: number): number {
    const { chunkMs, msPerChar } = this.sock.env.opts;
    return chunkMs > 0 ? Math.max(1, Math.ceil(chunkMs / msPerChar - 1e-9)) : Math.max(1, total);
  }

  private arm(ms: number): void {
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = null;
      this.emit();
    }, Math.max(0, ms));
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private emit(): void {
    const cur = this.current;
    if (!cur || this.dead) return;
    const f = this.sock.faults();
    const sent = this.sock.conn.charsSent;
    if (f.errorAfterChars && sent >= f.errorAfterChars.chars) {
      const e = f.errorAfterChars;
      this.sock.fail(e.error ?? 'internal_error', e.message ?? SOMETHING_WENT_WRONG, e.code ?? 1008);
      return;
    }
    if (f.stallAfterChars != null && sent >= f.stallAfterChars) {
      cur.seg.status = 'stalled';
      this.sock.env.changed();
      return;
    }
    const chars = cur.chunks[cur.next++]!;
    const { opts } = this.sock.env;
    const pcm = this.renderer.push(chars.join(''));
    const audio = encodeAudio(pcm, this.sock.conn.format);
    const seconds = pcm.length / 2 / this.sock.conn.format.sampleRate;
    const withAlignment = opts.alignment === 'always' || this.sock.conn.params.syncAlignment;
    const al = withAlignment ? alignmentFor(chars, opts.msPerChar) : null;
    const msg: ElAudioOutput = { audio: audio.toString('base64'), normalizedAlignment: al, alignment: al };
    if (this.ctx.id !== null) msg.contextId = this.ctx.id;
    const seg = cur.seg;
    if (seg.firstAudioAt === null) seg.firstAudioAt = this.sock.now();
    seg.messages++;
    seg.charsSent += chars.length;
    seg.audioBytes += audio.length;
    seg.audioSeconds += seconds;
    this.ctx.charsSent += chars.length;
    this.ctx.audioBytes += audio.length;
    this.ctx.audioSeconds += seconds;
    this.sock.send(msg);
    if (!this.sock.session.reportAudio(seconds)) {
      this.sock.stop(); // a base fault is closing/dropping the socket
      return;
    }
    if (cur.next < cur.chunks.length) {
      const nextMs = cur.chunks[cur.next]!.length * opts.msPerChar;
      this.arm(nextMs / opts.speedFactor);
      return;
    }
    seg.status = 'done';
    seg.doneAt = this.sock.now();
    this.current = null;
    this.sock.env.changed();
    this.startNext();
  }

  private maybeFinished(): void {
    if (!this.finishing || this.dead || this.current || this.pending.length > 0) return;
    const done = this.onFinished;
    this.onFinished = null;
    this.finishing = false;
    done?.();
  }
}

/** Length (UTF-16 units) of the prefix ending with the last whitespace character; 0 if none. */
function lastWhitespaceEnd(s: string): number {
  for (let i = s.length - 1; i >= 0; i--) if (/\s/u.test(s[i]!)) return i + 1;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// One socket (stream-input or multi-stream-input)

interface TtsAcceptState {
  kind: TtsRouteKind;
  voiceId: string;
  params: StreamInputParams;
  headerKey: string | null;
}

class TtsSocket implements WsHandler {
  readonly conn: ElevenLabsConnection;
  readonly env: Env;
  readonly session: WsSession;
  nextSegmentIndex = 0;
  private readonly headerKey: string | null;
  private readonly engines = new Map<string, ContextEngine>(); // open contexts by id ('' on stream-input)
  private readonly allEngines: ContextEngine[] = [];
  private idleTimer: NodeJS.Timeout | null = null;
  private started = false;
  /** EOS / close_socket received: later messages are ignored */
  private inputClosed = false;
  /** nothing more will be sent (failed, finished or gone) */
  private ended = false;

  constructor(conn: ElevenLabsConnection, env: Env, headerKey: string | null) {
    this.conn = conn;
    this.env = env;
    this.session = conn.session;
    this.headerKey = headerKey;
    this.touch();
  }

  now(): number {
    return this.session.elapsed();
  }

  faults(): TtsFaults {
    return { ...this.env.serverFaults(), ...this.conn.ttsFaults };
  }

  send(msg: ElServerMessage): void {
    this.session.send(JSON.stringify(msg));
    this.env.changed();
  }

  onMessage(data: Buffer, isBinary: boolean): void {
    this.conn.counts.messages++;
    if (this.ended || this.inputClosed) {
      this.conn.counts.ignored++;
      this.env.changed();
      return;
    }
    this.touch();
    if (isBinary) {
      this.invalid('Binary frames are not supported; send JSON text messages.');
      return;
    }
    let msg: unknown;
    try {
      msg = JSON.parse(data.toString('utf8'));
    } catch {
      msg = undefined;
    }
    if (!isObject(msg)) {
      this.invalid('Invalid message: expected a JSON object.');
      return;
    }
    if (!this.started) {
      this.started = true;
      this.conn.bos = msg;
      if (!this.authenticate(msg)) return;
    }
    if (this.conn.kind === 'stream-input') this.singleMessage(msg);
    else this.multiMessage(msg);
    this.env.changed();
  }

  onClose(): void {
    this.stop();
    this.env.changed();
  }

  /** Error JSON, then close (default 1008) with the message as reason. */
  fail(error: string, message: string, code = 1008): void {
    if (this.ended) return;
    this.conn.errors.push({ message, error, code, at: this.now() });
    this.send({ message, error, code });
    this.session.close(code, closeReason(message));
    this.stop();
    this.env.changed();
  }

  /** Stop every timer (socket closing or gone). */
  stop(): void {
    this.ended = true;
    this.clearIdle();
    for (const e of this.allEngines) e.dispose();
  }

  private invalid(message: string): void {
    this.conn.counts.invalid++;
    this.fail('invalid_request', message);
  }

  private authenticate(msg: Record<string, unknown>): boolean {
    const { opts } = this.env;
    const isToken = (t: string) => opts.tokens.includes(t.replace(/^bearer\s+/i, '').trim());
    const msgKey = msg['xi-api-key'] ?? msg['xi_api_key'];
    const msgAuth = msg['authorization'];
    let ok = false;
    if (this.headerKey !== null) {
      this.conn.auth = { via: 'header', kind: 'api-key', ok: (ok = opts.apiKeys.includes(this.headerKey)) };
    } else if (this.conn.params.authorization !== null) {
      this.conn.auth = { via: 'query', kind: 'token', ok: (ok = isToken(this.conn.params.authorization)) };
    } else if (typeof msgKey === 'string') {
      this.conn.auth = { via: 'message', kind: 'api-key', ok: (ok = opts.apiKeys.includes(msgKey)) };
    } else if (typeof msgAuth === 'string') {
      this.conn.auth = { via: 'message', kind: 'token', ok: (ok = isToken(msgAuth)) };
    } else {
      this.conn.auth = { via: null, kind: null, ok: false };
    }
    if (!ok) {
      this.fail('invalid_api_key', INVALID_API_KEY);
      return false;
    }
    if (opts.voices && !opts.voices.includes(this.conn.voiceId)) {
      this.fail('voice_not_found', `A voice with voice_id ${this.conn.voiceId} does not exist.`);
      return false;
    }
    return true;
  }

  /** Create a context from its first message; null when the message was refused (socket closing). */
  private openContext(id: string | null, msg: Record<string, unknown>): ContextEngine | null {
    const vsErr = checkVoiceSettings(msg['voice_settings']);
    if (vsErr) {
      this.invalid(vsErr);
      return null;
    }
    const genConfig = msg['generation_config'] ?? msg['generator_config'];
    const g = checkGenerationConfig(genConfig);
    if (g.error) {
      this.invalid(g.error);
      return null;
    }
    const ctx: ElevenLabsContext = {
      id,
      openedAt: this.now(),
      voiceSettings: isObject(msg['voice_settings']) ? msg['voice_settings'] : null,
      generationConfig: isObject(genConfig) ? genConfig : null,
      chunkLengthSchedule: g.schedule ?? [...DEFAULT_CHUNK_LENGTH_SCHEDULE],
      inputs: [],
      text: '',
      characters: 0,
      buffered: '',
      discarded: '',
      segments: [],
      flushes: 0,
      keepAlives: 0,
      ended: null,
      isFinalAt: null,
      charsSent: 0,
      audioBytes: 0,
      audioSeconds: 0,
    };
    this.conn.contexts.push(ctx);
    const engine = new ContextEngine(ctx, this);
    this.engines.set(id ?? '', engine);
    this.allEngines.push(engine);
    return engine;
  }

  /** voice_settings / generation_config may be repeated only unchanged. */
  private unchangedSettings(ctx: ElevenLabsContext, msg: Record<string, unknown>): boolean {
    const vs = msg['voice_settings'];
    if (vs !== undefined && vs !== null && !sameJson(vs, ctx.voiceSettings)) {
      this.fail('invalid_request', VOICE_SETTINGS_CHANGED);
      return false;
    }
    const gc = msg['generation_config'] ?? msg['generator_config'];
    if (gc !== undefined && gc !== null && !sameJson(gc, ctx.generationConfig)) {
      this.fail('invalid_request', GENERATION_CONFIG_CHANGED);
      return false;
    }
    return true;
  }

  private flags(msg: Record<string, unknown>): { flush: boolean; tryTrigger: boolean } | null {
    for (const k of ['flush', 'try_trigger_generation']) {
      const v = msg[k];
      if (v !== undefined && v !== null && typeof v !== 'boolean') {
        this.invalid(`${k} must be a boolean.`);
        return null;
      }
    }
    return { flush: msg['flush'] === true, tryTrigger: msg['try_trigger_generation'] === true };
  }

  private singleMessage(msg: Record<string, unknown>): void {
    const text = msg['text'];
    if (typeof text !== 'string') {
      this.invalid('Field "text" is required and must be a string.');
      return;
    }
    let engine = this.engines.get('');
    if (!engine) {
      if (text !== ' ') {
        this.invalid('The first message must be {"text": " "}: the text of the initial message must be a single space.');
        return;
      }
      engine = this.openContext(null, msg) ?? undefined;
      return;
    }
    if (!this.unchangedSettings(engine.ctx, msg)) return;
    const f = this.flags(msg);
    if (!f) return;
    if (text === '') {
      this.conn.counts.eos++;
      this.inputClosed = true;
      this.clearIdle();
      engine.ctx.ended = { by: 'eos', at: this.now() };
      engine.flushForEos();
      const eng = engine;
      engine.finish(() => {
        eng.ctx.isFinalAt = this.now();
        if (!this.faults().omitIsFinal) {
          this.conn.isFinal++;
          this.send({ isFinal: true });
        }
        this.ended = true;
        this.clearIdle();
        this.session.close(1000, '');
        this.env.changed();
      });
      return;
    }
    this.textInto(engine, text, f);
  }

  private textInto(engine: ContextEngine, text: string, f: { flush: boolean; tryTrigger: boolean }): void {
    if (f.flush) {
      this.conn.counts.flush++;
      engine.ctx.flushes++;
    }
    if (f.tryTrigger) this.conn.counts.tryTrigger++;
    if (text.trim() === '') {
      if (!f.flush && !f.tryTrigger) {
        this.conn.counts.keepAlive++;
        engine.ctx.keepAlives++;
      }
    } else {
      this.conn.counts.text++;
      if (!engine.append(text)) return;
    }
    engine.afterText({ ...f, autoMode: this.conn.params.autoMode });
  }

  private multiMessage(msg: Record<string, unknown>): void {
    if (msg['close_socket'] === true) {
      this.conn.counts.closeSocket++;
      this.inputClosed = true;
      this.clearIdle();
      const open = [...this.engines.values()];
      this.engines.clear();
      let left = open.length;
      const closeWhenDone = () => {
        if (--left <= 0) this.session.close(1000, '');
      };
      if (open.length === 0) this.session.close(1000, '');
      for (const e of open) this.closeContextEngine(e, 'close_socket', closeWhenDone);
      return;
    }
    const rawId = msg['context_id'];
    if (rawId !== undefined && typeof rawId !== 'string') {
      this.invalid('context_id must be a string.');
      return;
    }
    const id = rawId ?? DEFAULT_CONTEXT_ID;
    if (msg['close_context'] === true) {
      this.conn.counts.closeContext++;
      const e = this.engines.get(id);
      if (e) {
        this.engines.delete(id);
        this.closeContextEngine(e, 'close_context', () => undefined);
      }
      return;
    }
    const text = msg['text'];
    if (text !== undefined && typeof text !== 'string') {
      this.invalid('Field "text" must be a string.');
      return;
    }
    const f = this.flags(msg);
    if (!f) return;
    if (text === undefined && !f.flush) {
      this.invalid('Field "text" is required.');
      return;
    }
    let engine = this.engines.get(id);
    if (!engine) {
      engine = this.openContext(id, msg) ?? undefined;
      if (!engine) return;
      if ((text ?? '').trim() === '' && !f.flush) return; // initialisation only
    } else if (!this.unchangedSettings(engine.ctx, msg)) {
      return;
    }
    if ((text ?? '') === '' && !f.flush) {
      this.conn.counts.keepAlive++;
      engine.ctx.keepAlives++;
      return;
    }
    this.textInto(engine, text ?? '', f);
  }

  private closeContextEngine(e: ContextEngine, by: 'close_context' | 'close_socket', then: () => void): void {
    e.ctx.ended = { by, at: this.now() };
    e.cancel((s) => s.trigger === 'flush');
    e.finish(() => {
      e.ctx.isFinalAt = this.now();
      this.conn.isFinal++;
      this.send({ isFinal: true, contextId: e.ctx.id ?? DEFAULT_CONTEXT_ID });
      then();
    });
  }

  private touch(): void {
    this.clearIdle();
    if (this.ended) return;
    const seconds = this.conn.params.inactivityTimeout;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.fail('input_timeout_exceeded', inputTimeoutMessage(seconds));
    }, seconds * this.env.opts.timeoutSecondMs);
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}

// ---------------------------------------------------------------------------------------------
// REST streaming: POST /v1/text-to-speech/{voice_id}/stream

export interface ElevenLabsRestRequest {
  at: Date;
  voiceId: string;
  status: number;
  body: Record<string, unknown> | null;
  outputFormat: string;
  modelId: string;
  text: string;
  /** billing figure */
  characters: number;
  audioBytes: number;
  audioSeconds: number;
  /** the client went away before the end */
  aborted: boolean;
  done: boolean;
}

function elDetail(status: string, message: string): string {
  return JSON.stringify({ detail: { status, message } });
}

// ---------------------------------------------------------------------------------------------
// The emulator

export const WS_ROUTES: ReadonlyArray<{ kind: TtsRouteKind; re: RegExp }> = [
  { kind: 'stream-input', re: /^\/v1\/text-to-speech\/([^/]+)\/stream-input\/?$/ },
  { kind: 'multi-stream-input', re: /^\/v1\/text-to-speech\/([^/]+)\/multi-stream-input\/?$/ },
];
const REST_STREAM_RE = /^\/v1\/text-to-speech\/([^/]+)\/stream\/?$/;

type AcceptState = TtsAcceptState;

export class ElevenLabsEmulator {
  readonly server: EmulatorServer;
  /** live options: changes apply to what happens afterwards */
  readonly options: ResolvedElevenLabsOptions;
  readonly connections: ElevenLabsConnection[];
  readonly restRequests: ElevenLabsRestRequest[];
  /** server-wide TTS fault switches (mutable) */
  ttsFaults: TtsFaults = defaultTtsFaults();
  /** characters used against quotaCharacters */
  usedCharacters = 0;
  /** @internal */
  readonly nextTtsFaults: Partial<TtsFaults>[] = [];
  /** @internal */
  readonly disposers = new Set<() => void>();

  constructor(server: EmulatorServer, options: ResolvedElevenLabsOptions, connections: ElevenLabsConnection[], restRequests: ElevenLabsRestRequest[]) {
    this.server = server;
    this.options = options;
    this.connections = connections;
    this.restRequests = restRequests;
  }

  get url(): string {
    return this.server.url;
  }
  get wsUrl(): string {
    return this.server.wsUrl;
  }
  get port(): number {
    return this.server.port;
  }
  /** server-wide base fault switches (mutable) */
  get faults(): FaultSwitches {
    return this.server.faults;
  }
  set faults(f: FaultSwitches) {
    this.server.faults = f;
  }
  /** apply base faults to the next upgrade attempt only */
  faultNext(f: Partial<FaultSwitches>): void {
    this.server.faultNext(f);
  }
  /** apply TTS faults to the next accepted connection only */
  ttsFaultNext(f: Partial<TtsFaults>): void {
    this.nextTtsFaults.push(f);
  }
  resetFaults(): void {
    this.server.resetFaults();
    this.ttsFaults = defaultTtsFaults();
    this.nextTtsFaults.length = 0;
  }
  get rejected() {
    return this.server.rejected;
  }
  /** wire records of every accepted connection */
  get records(): ConnectionRecord[] {
    return this.server.connections;
  }

  /** `${wsUrl}/v1/text-to-speech/${voiceId}/stream-input?…` */
  streamInputUrl(voiceId: string, query: Record<string, string> = {}, kind: TtsRouteKind = 'stream-input'): string {
    const qs = new URLSearchParams(query).toString();
    return `${this.wsUrl}/v1/text-to-speech/${encodeURIComponent(voiceId)}/${kind}${qs ? `?${qs}` : ''}`;
  }

  waitForConnection(n = 1, timeoutMs = 2000): Promise<ElevenLabsConnection> {
    return this.server.waitFor(() => this.connections[n - 1], timeoutMs, `elevenlabs connection #${n}`);
  }

  waitForClose(conn?: ElevenLabsConnection, timeoutMs = 2000): Promise<ElevenLabsConnection> {
    return this.server.waitFor(() => {
      const c = conn ?? this.connections[this.connections.length - 1];
      return c && c.record.closed ? c : undefined;
    }, timeoutMs, 'elevenlabs connection close');
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  /** Stop every generation/inactivity/REST timer, terminate sockets, stop listening. */
  async close(): Promise<void> {
    for (const d of [...this.disposers]) d();
    this.disposers.clear();
    await this.server.close();
  }
}

export async function startElevenLabsEmulator(opts: ElevenLabsEmulatorOptions = {}): Promise<ElevenLabsEmulator> {
  const options: ResolvedElevenLabsOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_API_KEY],
    tokens: opts.tokens ?? [],
    voices: opts.voices ?? null,
    maxConcurrent: opts.maxConcurrent ?? null,
    quotaCharacters: opts.quotaCharacters ?? null,
    firstAudioDelayMs: opts.firstAudioDelayMs ?? 20,
    speedFactor: opts.speedFactor ?? 10,
    chunkMs: opts.chunkMs ?? 0,
    msPerChar: opts.msPerChar ?? DEFAULT_MS_PER_CHAR,
    timeoutSecondMs: opts.timeoutSecondMs ?? 1000,
    tryTriggerMinChars: opts.tryTriggerMinChars ?? 50,
    alignment: opts.alignment ?? 'always',
    authFailure: opts.authFailure ?? 'close',
    restChunkMs: opts.restChunkMs ?? 500,
    recordAudio: opts.recordAudio ?? false,
  };
  if (!(options.speedFactor > 0)) throw new Error('speedFactor must be > 0');
  const connections: ElevenLabsConnection[] = [];
  const restRequests: ElevenLabsRestRequest[] = [];
  let emu: ElevenLabsEmulator | null = null;
  const inFlight = () => connections.filter((c) => !c.record.closed).length + restRequests.filter((r) => !r.done).length;
  const tooMany = () => options.maxConcurrent !== null && inFlight() >= options.maxConcurrent;
  const tooManyBody = () =>
    elDetail(
      'too_many_concurrent_requests',
      `Too many concurrent requests. Your current subscription is associated with a maximum of ${options.maxConcurrent} concurrent requests.`,
    );
  const env = (): Env => ({
    opts: options,
    serverFaults: () => emu!.ttsFaults,
    changed: () => emu!.server.changed(),
    quotaLeft: () => (options.quotaCharacters === null ? Infinity : options.quotaCharacters - emu!.usedCharacters),
    useQuota: (n) => {
      emu!.usedCharacters += n;
    },
  });

  const onUpgrade = (ctx: UpgradeContext): UpgradeDecision<AcceptState> => {
    const reject = (status: number, body: string): UpgradeDecision<AcceptState> => ({ accept: false, status, body });
    const route = WS_ROUTES.map((r) => ({ kind: r.kind, m: r.re.exec(ctx.url.pathname) })).find((r) => r.m);
    if (!route || !route.m) return reject(404, JSON.stringify({ detail: 'Not Found' }));
    const voiceId = decodeURIComponent(route.m[1]!);
    const check = parseStreamInputQuery(ctx.query, route.kind);
    if (!check.ok) return reject(check.status, JSON.stringify(check.body));
    const h = ctx.req.headers['xi-api-key'];
    const headerKey = typeof h === 'string' ? h : Array.isArray(h) ? (h[0] ?? null) : null;
    if (headerKey !== null && options.authFailure !== 'close' && !options.apiKeys.includes(headerKey)) {
      return reject(options.authFailure, elDetail('invalid_api_key', INVALID_API_KEY));
    }
    if (tooMany()) return reject(429, tooManyBody());
    return { accept: true, state: { kind: route.kind, voiceId, params: check.params, headerKey } };
  };

  const onHttpRequest = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://emulator');
    const m = REST_STREAM_RE.exec(url.pathname);
    const send = (status: number, body: string) => {
      res.writeHead(status, { 'Content-Type': 'application/json', 'request-id': randomUUID() }).end(body);
    };
    if (!m) return send(404, JSON.stringify({ detail: 'Not Found' }));
    if (req.method !== 'POST') return send(405, JSON.stringify({ detail: 'Method Not Allowed' }));
    const raw = await readBody(req);
    const voiceId = decodeURIComponent(m[1]!);
    const rec: ElevenLabsRestRequest = {
      at: new Date(), voiceId, status: 0, body: null, outputFormat: '', modelId: '', text: '', characters: 0,
      audioBytes: 0, audioSeconds: 0, aborted: false, done: true,
    };
    restRequests.push(rec);
    const fail = (status: number, body: string) => {
      rec.status = status;
      send(status, body);
      emu!.server.changed();
    };
    const key = req.headers['xi-api-key'];
    if (typeof key !== 'string' || !options.apiKeys.includes(key)) return fail(401, elDetail('invalid_api_key', INVALID_API_KEY));
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      body = undefined;
    }
    if (!isObject(body)) {
      return fail(422, JSON.stringify({ detail: [{ type: 'json_invalid', loc: ['body'], msg: 'JSON decode error', input: raw.toString('utf8') }] }));
    }
    rec.body = body;
    if (typeof body['text'] !== 'string') {
      return fail(422, JSON.stringify({ detail: [{ type: 'missing', loc: ['body', 'text'], msg: 'Field required', input: body }] }));
    }
    const q = parseStreamInputQuery({ ...parseQuery(url.searchParams), ...(typeof body['model_id'] === 'string' ? { model_id: [body['model_id']] } : {}) });
    if (!q.ok) return fail(q.status === 403 ? (Array.isArray(q.body.detail) ? 422 : 400) : q.status, JSON.stringify(q.body));
    const vsErr = checkVoiceSettings(body['voice_settings']);
    if (vsErr) return fail(400, elDetail('invalid_voice_settings', vsErr));
    if (options.voices && !options.voices.includes(voiceId)) return fail(404, elDetail('voice_not_found', `A voice with voice_id ${voiceId} does not exist.`));
    rec.done = false;
    if (inFlight() > (options.maxConcurrent ?? Infinity)) {
      rec.done = true;
      return fail(429, tooManyBody());
    }
    const text = body['text'];
    const n = codePoints(text).length;
    const left = options.quotaCharacters === null ? Infinity : options.quotaCharacters - emu!.usedCharacters;
    if (n > left) {
      rec.done = true;
      return fail(401, elDetail('quota_exceeded', quotaExceededMessage(options.quotaCharacters ?? 0, Math.max(0, left), n)));
    }
    emu!.usedCharacters += n;
    Object.assign(rec, { outputFormat: q.params.outputFormat, modelId: q.params.modelId, text, characters: n, status: 200 });
    const format = audioFormat(q.params.outputFormat)!;
    const renderer = new TtsRenderer(format.sampleRate, { msPerChar: options.msPerChar });
    const chars = codePoints(text);
    const per = Math.max(1, Math.ceil((options.chunkMs > 0 ? options.chunkMs : options.restChunkMs) / options.msPerChar - 1e-9));
    const contentType = { pcm: 'audio/pcm', ulaw: 'audio/basic', alaw: 'audio/x-alaw-basic' }[format.encoding];
    res.writeHead(200, { 'Content-Type': contentType, 'request-id': randomUUID() });
    let i = 0;
    let timer: NodeJS.Timeout | null = null;
    const finish = (aborted: boolean) => {
      if (timer) clearTimeout(timer);
      timer = null;
      if (rec.done) return;
      rec.done = true;
      rec.aborted = aborted;
      emu!.disposers.delete(dispose);
      emu!.server.changed();
    };
    const dispose = () => {
      finish(true);
      res.destroy();
    };
    emu!.disposers.add(dispose);
    res.on('close', () => finish(!res.writableFinished));
    const step = () => {
      timer = null;
      if (rec.done) return;
      const part = chars.slice(i, i + per);
      i += part.length;
      const pcm = renderer.push(part.join(''));
      const audio = encodeAudio(pcm, format);
      rec.audioBytes += audio.length;
      rec.audioSeconds += pcm.length / 2 / format.sampleRate;
      res.write(audio);
      emu!.server.changed();
      if (i >= chars.length) {
        res.end(() => finish(false));
        return;
      }
      timer = setTimeout(step, (Math.min(per, chars.length - i) * options.msPerChar) / options.speedFactor);
    };
    if (chars.length === 0) {
      res.end(() => finish(false));
      return;
    }
    timer = setTimeout(step, options.firstAudioDelayMs);
  };

  const server = await startEmulatorServer<AcceptState>({
    name: 'elevenlabs',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    recordAudio: options.recordAudio,
    onUpgrade,
    onConnection: (session, _ctx, state) => {
      const e = emu!;
      const conn = new ElevenLabsConnection(session.record, session, state.kind, state.voiceId, state.params, e.nextTtsFaults.shift() ?? {});
      connections.push(conn);
      const sock = new TtsSocket(conn, env(), state.headerKey);
      const dispose = () => sock.stop();
      e.disposers.add(dispose);
      return {
        onMessage: (data, isBinary) => sock.onMessage(data, isBinary),
        onClose: () => {
          e.disposers.delete(dispose);
          sock.onClose();
        },
      };
    },
    onHttpRequest,
    formatError: (status, message) => ({
      body: elDetail(status === 429 ? 'too_many_concurrent_requests' : status === 401 ? 'invalid_api_key' : 'emulated_fault', message),
    }),
  });
  emu = new ElevenLabsEmulator(server, options, connections, restRequests);
  return emu;
}

function readBody(req: IncomingMessage, limit = 1 << 20): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      parts.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}
