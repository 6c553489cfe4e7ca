/**
 * Emulator of ElevenLabs' text-to-speech WebSocket APIs:
 * https://elevenlabs.io/docs/api-reference/text-to-speech/v-1-text-to-speech-voice-id-stream-input
 * https://elevenlabs.io/docs/api-reference/text-to-speech/v-1-text-to-speech-voice-id-multi-stream-input
 * plus the REST streaming endpoint `POST /v1/text-to-speech/{voice_id}/stream`.
 *
 * Written from ../../../shared/providers.md §5.1–5.3 and §9 "ElevenLabs TTS WS" (and the AsyncAPI
 * pages they summarise), never from the gateway adapter. Audio is the deterministic tone "speech"
 * of ./tts-audio.ts: every character lasts `msPerChar` (60 ms), so audio = characters × 60 ms.
 * Upgrades are routed by path (WS_ROUTES); Scribe realtime STT (`/v1/speech-to-text/realtime`)
 * is the third route, with its own section below and its rules at the end of this comment.
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
 *   post-upgrade failure. *
 * Scribe realtime STT, written from providers.md §5.4 and §9 "ElevenLabs Scribe RT", the AsyncAPI
 * copy (AHGGG/nce-english-practices docs/voice/elevenlabs/speech-to-text/
 * v-1-speech-to-text-realtime.md), @elevenlabs/elevenlabs-js src/wrapper/realtime/{connection,
 * scribe}.ts, and the docs pages "Transcripts and commit strategies" and "Realtime event
 * reference" (elevenlabs.io/docs/.../speech-to-text/realtime/*):
 * - Query: model_id (scribe_v2_realtime), token, audio_format (pcm_8000|16000|22050|24000|44100|
 *   48000, ulaw_8000; default pcm_16000), language_code, commit_strategy (manual default | vad),
 *   vad_silence_threshold_secs (1.5), vad_threshold (0.4), min_speech_duration_ms (250),
 *   min_silence_duration_ms (2500), include_timestamps, include_language_detection,
 *   enable_logging, keyterms (repeated). Auth: `xi-api-key` header or a single-use `?token=`.
 * - Server: `session_started {session_id, config}` on open; `partial_transcript {text}` while
 *   speaking; on every commit `committed_transcript {text}` then, with include_timestamps,
 *   `committed_transcript_with_timestamps {text, language_code, words:[{text,start,end,
 *   type:"word"|"spacing",logprob}]}` (seconds). Errors are `{message_type, error}` with the
 *   documented types; "an error message will be returned before the WebSocket connection is
 *   closed".
 * - Client: `{"message_type":"input_audio_chunk","audio_base_64","commit","sample_rate",
 *   "previous_text"?}`; audio_base_64, commit and sample_rate are required; previous_text "can
 *   only be sent alongside the first audio chunk" (later: an error). A manual commit is a chunk
 *   with commit:true (the SDK sends it with empty audio).
 * - "By default the stream will be automatically committed every 90 seconds"; VAD commits after
 *   vad_silence_threshold_secs of silence; "transcript processing starts after the first 2
 *   seconds of audio are sent".
 * Deterministic Scribe rules (audio time; messages leave when the audio that triggers them
 * arrives, + scribe.latencyMs; only the idle timer is wall-clock):
 * - A word is a vocabulary tone (audio.ts SpeechDetector). partial_transcript = the uncommitted
 *   words joined by spaces, sent when a word completes, once processingStartSec (2) of audio
 *   was received (then at once for the words so far).
 * - Commits: manual (commit:true, after that chunk's audio; closes the word in progress), vad
 *   (silence >= vad_silence_threshold_secs after a voiced region >= min_speech_duration_ms),
 *   auto (manual strategy, autoCommitSec of audio since the last commit). Each sends
 *   committed_transcript (possibly "") and, with include_timestamps, the timestamped twin with
 *   `spacing` items between words.
 * - No input_audio_chunk for inactivityTimeoutMs -> insufficient_audio_activity + close; any
 *   valid chunk, even with empty audio, resets the timer.
 * - Faults (ScribeFaults: errorAfterAudioSec, timestampsFirst, omitTimestamps,
 *   omitSessionStarted) in `emu.scribeFaults`, `conn.scribeFaults`, `emu.scribeFaultNext()`.
 * UNCERTAIN Scribe choices:
 * - Credentials, then the query, are checked after the upgrade: auth_error / invalid_request +
 *   close (the SDK's invalid_request: "The connection parameters were rejected; the session is
 *   closed afterwards"); `scribe.authFailure: 401 | 403` refuses at the upgrade instead.
 *   model_id is required; ranges are the SDK's (0.3-3.0, 0.1-0.9, 50-2000, 50-2000);
 *   language_code must be 2-3 letters; booleans parse like the TTS query.
 * - Close codes after errors: SCRIBE_ERROR_CLOSE_CODES (1008 policy, 1009 chunk size, 1011
 *   server, 1013 try later, 1000 for session_time_limit_exceeded / insufficient_audio_activity).
 *   Idle limit 15 s (10-15 s reported by LiveKit and others).
 * - sample_rate must equal the audio_format's rate; binary frames, non-JSON and other
 *   message_types -> input_error; a chunk over maxChunkSec (10 s) -> chunk_size_exceeded;
 *   manual commits closer than minCommitIntervalMs (off by default) -> commit_throttled;
 *   sessions beyond maxConcurrent per credential -> rate_limited; quotaSeconds -> quota_exceeded.
 * - vad_threshold and min_silence_duration_ms are validated and echoed but not used. Word times
 *   count from the socket's first audio; language_code is the requested one or "en";
 *   final_transcript(+_with_timestamps) (newer SDK types) only with scribe.finalTranscripts.
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
import { SpeechDetector, mulawToLinear, type DetectorEvent, type TimedWord } from './audio.ts';
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
  /** Scribe realtime STT knobs (`/v1/speech-to-text/realtime`); keys are `apiKeys` */
  scribe?: ScribeOptions;
}

export type ResolvedElevenLabsOptions = Required<Omit<ElevenLabsEmulatorOptions, 'port' | 'host' | 'tls' | 'scribe'>> & {
  scribe: ResolvedScribeOptions;
};

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
// Scribe realtime speech-to-text: /v1/speech-to-text/realtime (see README "ElevenLabs Scribe")

export const SCRIBE_PATH = '/v1/speech-to-text/realtime';
export const SCRIBE_MODELS: readonly string[] = ['scribe_v2_realtime'];
export const SCRIBE_AUDIO_FORMATS: readonly string[] = [
  'pcm_8000', 'pcm_16000', 'pcm_22050', 'pcm_24000', 'pcm_44100', 'pcm_48000', 'ulaw_8000',
];
export const SCRIBE_ERROR_TYPES = [
  'error', 'auth_error', 'quota_exceeded', 'commit_throttled', 'transcriber_error', 'unaccepted_terms', 'rate_limited',
  'input_error', 'invalid_request', 'queue_overflow', 'resource_exhausted', 'session_time_limit_exceeded',
  'chunk_size_exceeded', 'insufficient_audio_activity',
] as const;
export type ScribeErrorType = (typeof SCRIBE_ERROR_TYPES)[number];

/**
 * Close code sent after each error message. The docs only say "an error message will be returned
 * before the WebSocket connection is closed" (UNCERTAIN codes): policy problems 1008, too big
 * 1009, server trouble 1011, try-again-later 1013, and the two ways a session simply ends
 * (reported as normal closes in the field) 1000. Override with `scribe.errorCloseCodes`.
 */
export const SCRIBE_ERROR_CLOSE_CODES: Readonly<Record<ScribeErrorType, number>> = Object.freeze({
  error: 1011,
  transcriber_error: 1011,
  auth_error: 1008,
  quota_exceeded: 1008,
  unaccepted_terms: 1008,
  input_error: 1008,
  invalid_request: 1008,
  commit_throttled: 1008,
  chunk_size_exceeded: 1009,
  rate_limited: 1013,
  queue_overflow: 1013,
  resource_exhausted: 1013,
  session_time_limit_exceeded: 1000,
  insufficient_audio_activity: 1000,
});

/** Default error text per type (the documented descriptions). */
export const SCRIBE_ERROR_TEXT: Readonly<Record<ScribeErrorType, string>> = Object.freeze({
  error: 'A generic server error occurred.',
  auth_error: 'An error occurred while authenticating the request. Double check your API key.',
  quota_exceeded: 'You have exceeded your usage quota.',
  commit_throttled: 'The commit was throttled due to too many commit requests made in a short period of time.',
  transcriber_error: 'An error occurred while transcribing the audio.',
  unaccepted_terms: "You haven't accepted the terms of service to use Scribe. Please review and accept the terms & conditions in the ElevenLabs dashboard.",
  rate_limited: 'You are rate limited. Please reduce the amount of requests made in a short period of time.',
  input_error: 'An error occurred while processing the audio chunk.',
  invalid_request: 'The connection parameters were rejected.',
  queue_overflow: 'The processing queue is full. Please send fewer requests made in a short period of time.',
  resource_exhausted: 'Server resources are at capacity. Please try again later.',
  session_time_limit_exceeded: 'Maximum session time has been reached. Please start a new session or upgrade your subscription.',
  chunk_size_exceeded: 'The audio chunk size is too large. Please reduce the chunk size.',
  insufficient_audio_activity: "You haven't sent enough audio activity to maintain the connection.",
});

/** logprob of every emulated word (the tone "speech" is recognized with near certainty). */
export const SCRIBE_WORD_LOGPROB = -0.01;

export interface ScribeOptions {
  /** single-use tokens accepted in `?token=` (each one works once); default [] */
  tokens?: string[];
  /** accepted model_id values (default SCRIBE_MODELS) */
  models?: string[];
  /** how a bad or missing credential is refused: 'message' (default: auth_error + close) or HTTP 401/403 at the upgrade */
  authFailure?: 'message' | 401 | 403;
  /** open Scribe sessions per credential before `rate_limited`; null (default) = unlimited */
  maxConcurrent?: number | null;
  /** audio seconds the account may transcribe (emulator-wide) before `quota_exceeded`; null = unlimited */
  quotaSeconds?: number | null;
  /** audio seconds per session before `session_time_limit_exceeded`; null (default) = no limit */
  maxSessionSec?: number | null;
  /** no input_audio_chunk for this long -> insufficient_audio_activity + close (default 15000; ~10-15 s observed) */
  inactivityTimeoutMs?: number;
  /** send the insufficient_audio_activity message before the idle close (default true; false = bare close 1000) */
  inactivityError?: boolean;
  /** partial transcripts start once this much audio was received ("processing starts after the first 2 seconds"; default 2) */
  processingStartSec?: number;
  /** manual strategy: the stream commits itself after this much uncommitted audio (default 90) */
  autoCommitSec?: number;
  /** a chunk holding more audio than this -> chunk_size_exceeded (default 10 s; the limit is not documented) */
  maxChunkSec?: number;
  /** manual commits closer together than this (wall ms) -> commit_throttled; null (default) = never */
  minCommitIntervalMs?: number | null;
  /** also send final_transcript (+ _with_timestamps) at each end of speech before the commit (default false) */
  finalTranscripts?: boolean;
  /** wall-clock delay before every message (default 0) */
  latencyMs?: number;
  /** close code per error type (defaults: SCRIBE_ERROR_CLOSE_CODES) */
  errorCloseCodes?: Partial<Record<ScribeErrorType, number>>;
}

export type ResolvedScribeOptions = Required<Omit<ScribeOptions, 'errorCloseCodes'>> & { errorCloseCodes: Record<ScribeErrorType, number> };

export function resolveScribeOptions(o: ScribeOptions = {}): ResolvedScribeOptions {
  return {
    tokens: o.tokens ?? [],
    models: o.models ?? [...SCRIBE_MODELS],
    authFailure: o.authFailure ?? 'message',
    maxConcurrent: o.maxConcurrent ?? null,
    quotaSeconds: o.quotaSeconds ?? null,
    maxSessionSec: o.maxSessionSec ?? null,
    inactivityTimeoutMs: o.inactivityTimeoutMs ?? 15_000,
    inactivityError: o.inactivityError ?? true,
    processingStartSec: o.processingStartSec ?? 2,
    autoCommitSec: o.autoCommitSec ?? 90,
    maxChunkSec: o.maxChunkSec ?? 10,
    minCommitIntervalMs: o.minCommitIntervalMs ?? null,
    finalTranscripts: o.finalTranscripts ?? false,
    latencyMs: o.latencyMs ?? 0,
    errorCloseCodes: { ...SCRIBE_ERROR_CLOSE_CODES, ...(o.errorCloseCodes ?? {}) },
  };
}

/** Scribe fault switches (server-wide `emu.scribeFaults`, per connection `conn.scribeFaults`). */
export interface ScribeFaults {
  /** once this much audio was received: this error message, then its close */
  errorAfterAudioSec: { seconds: number; messageType: ScribeErrorType; error?: string; closeCode?: number } | null;
  /** send committed_transcript_with_timestamps before committed_transcript (an order seen in the field) */
  timestampsFirst: boolean;
  /** never send committed_transcript_with_timestamps */
  omitTimestamps: boolean;
  /** no session_started on open */
  omitSessionStarted: boolean;
}

export function defaultScribeFaults(): ScribeFaults {
  return { errorAfterAudioSec: null, timestampsFirst: false, omitTimestamps: false, omitSessionStarted: false };
}

// ---- wire types (AsyncAPI V1SpeechToTextRealtimeSubscribe / Publish) ----

export interface ScribeConfig {
  sample_rate: number;
  audio_format: string;
  language_code: string | null;
  commit_strategy: 'manual' | 'vad';
  vad_silence_threshold_secs: number;
  vad_threshold: number;
  min_speech_duration_ms: number;
  min_silence_duration_ms: number;
  model_id: string;
  enable_logging: boolean;
  include_timestamps: boolean;
  include_language_detection: boolean;
  keyterms?: string[];
  no_verbatim?: boolean;
}

export interface ScribeSessionStarted {
  message_type: 'session_started';
  session_id: string;
  config: ScribeConfig;
}

export interface ScribeText {
  message_type: 'partial_transcript' | 'committed_transcript' | 'final_transcript';
  text: string;
}

export interface ScribeWord {
  text: string;
  /** seconds from the first audio of the socket */
  start: number;
  end: number;
  type: 'word' | 'spacing';
  logprob: number;
}

export interface ScribeTimestamped {
  message_type: 'committed_transcript_with_timestamps' | 'final_transcript_with_timestamps';
  text: string;
  language_code: string | null;
  words: ScribeWord[];
}

export interface ScribeErrorMessage {
  message_type: ScribeErrorType;
  error: string;
}

export type ScribeServerMessage = ScribeSessionStarted | ScribeText | ScribeTimestamped | ScribeErrorMessage;

// ---- query parameters ----

export interface ScribeParams {
  modelId: string;
  audioFormat: string;
  sampleRate: number;
  encoding: 'pcm' | 'ulaw';
  languageCode: string | null;
  commitStrategy: 'manual' | 'vad';
  vadSilenceThresholdSecs: number;
  vadThreshold: number;
  minSpeechDurationMs: number;
  minSilenceDurationMs: number;
  includeTimestamps: boolean;
  includeLanguageDetection: boolean;
  enableLogging: boolean;
  keyterms: string[];
  noVerbatim: boolean | null;
  token: string | null;
  /** query keys the emulator does not know (accepted) */
  unknown: string[];
}

export type ScribeQueryCheck = { ok: true; params: ScribeParams } | { ok: false; error: string };

const SCRIBE_KNOWN_QUERY = new Set([
  'model_id', 'token', 'include_timestamps', 'include_language_detection', 'audio_format', 'language_code', 'commit_strategy',
  'vad_silence_threshold_secs', 'vad_threshold', 'min_speech_duration_ms', 'min_silence_duration_ms', 'enable_logging',
  'keyterms', 'no_verbatim',
]);

/**
 * Validate the Scribe query the way the service does after the upgrade (`invalid_request`).
 * Ranges are the SDK's (vad_silence_threshold_secs 0.3-3.0, vad_threshold 0.1-0.9,
 * min_speech/min_silence_duration_ms 50-2000); defaults the AsyncAPI's (1.5, 0.4, 250, 2500).
 */
export function parseScribeQuery(query: Record<string, string[]>, models: readonly string[] = SCRIBE_MODELS): ScribeQueryCheck {
  const last = (k: string): string | undefined => {
    const v = query[k];
    return v ? v[v.length - 1] : undefined;
  };
  let error: string | null = null;
  const fail = (msg: string) => {
    error ??= msg;
  };
  const bool = (k: string, dflt: boolean): boolean => {
    const v = last(k);
    if (v === undefined) return dflt;
    const s = v.trim().toLowerCase();
    if (TRUE_STRINGS.has(s)) return true;
    if (FALSE_STRINGS.has(s)) return false;
    fail(`Invalid value '${v}' for '${k}': expected a boolean.`);
    return dflt;
  };
  const number = (k: string, dflt: number, min: number, max: number, integer: boolean): number => {
    const v = last(k);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
      fail(`Invalid value '${v}' for '${k}': expected ${integer ? 'an integer' : 'a number'}.`);
      return dflt;
    }
    if (n < min || n > max) {
      fail(`Invalid value '${v}' for '${k}': must be between ${min} and ${max}.`);
      return dflt;
    }
    return n;
  };
  const oneOf = <T extends string>(k: string, values: readonly T[], dflt: T): T => {
    const v = last(k);
    if (v === undefined) return dflt;
    if ((values as readonly string[]).includes(v)) return v as T;
    fail(`Invalid value '${v}' for '${k}': expected one of ${values.join(', ')}.`);
    return dflt;
  };
  const audioFormat = oneOf('audio_format', SCRIBE_AUDIO_FORMATS, 'pcm_16000');
  const commitStrategy = oneOf('commit_strategy', ['manual', 'vad'] as const, 'manual');
  const vadSilenceThresholdSecs = number('vad_silence_threshold_secs', 1.5, 0.3, 3, false);
  const vadThreshold = number('vad_threshold', 0.4, 0.1, 0.9, false);
  const minSpeechDurationMs = number('min_speech_duration_ms', 250, 50, 2000, true);
  const minSilenceDurationMs = number('min_silence_duration_ms', 2500, 50, 2000, true);
  const includeTimestamps = bool('include_timestamps', false);
  const includeLanguageDetection = bool('include_language_detection', false);
  const enableLogging = bool('enable_logging', true);
  const noVerbatim = last('no_verbatim') === undefined ? null : bool('no_verbatim', false);
  const languageCode = last('language_code') ?? null;
  if (languageCode !== null && !/^[A-Za-z]{2,3}$/.test(languageCode)) {
    fail(`Invalid value '${languageCode}' for 'language_code': expected an ISO 639-1 or ISO 639-3 code.`);
  }
  const modelId = last('model_id');
  if (modelId === undefined || modelId === '') fail("Missing required parameter 'model_id'.");
  else if (!models.includes(modelId)) fail(`Invalid model_id '${modelId}': expected one of ${models.join(', ')}.`);
  if (error !== null) return { ok: false, error };
  const [enc, rate] = audioFormat.split('_') as [string, string];
  return {
    ok: true,
    params: {
      modelId: modelId as string,
      audioFormat,
      sampleRate: Number(rate),
      encoding: enc === 'ulaw' ? 'ulaw' : 'pcm',
      languageCode: languageCode === null ? null : languageCode.toLowerCase(),
      commitStrategy,
      vadSilenceThresholdSecs,
      vadThreshold,
      minSpeechDurationMs,
      minSilenceDurationMs,
      includeTimestamps,
      includeLanguageDetection,
      enableLogging,
      keyterms: query['keyterms'] ?? [],
      noVerbatim,
      token: last('token') ?? null,
      unknown: Object.keys(query).filter((k) => !SCRIBE_KNOWN_QUERY.has(k)),
    },
  };
}

/** The config echoed in session_started. */
export function scribeConfig(p: ScribeParams): ScribeConfig {
  const c: ScribeConfig = {
    sample_rate: p.sampleRate,
    audio_format: p.audioFormat,
    language_code: p.languageCode,
    commit_strategy: p.commitStrategy,
    vad_silence_threshold_secs: p.vadSilenceThresholdSecs,
    vad_threshold: p.vadThreshold,
    min_speech_duration_ms: p.minSpeechDurationMs,
    min_silence_duration_ms: p.minSilenceDurationMs,
    model_id: p.modelId,
    enable_logging: p.enableLogging,
    include_timestamps: p.includeTimestamps,
    include_language_detection: p.includeLanguageDetection,
  };
  if (p.keyterms.length > 0) c.keyterms = [...p.keyterms];
  if (p.noVerbatim !== null) c.no_verbatim = p.noVerbatim;
  return c;
}

/** `words` of a *_with_timestamps message: words with the spacing between them. */
export function scribeWords(words: readonly TimedWord[]): ScribeWord[] {
  const out: ScribeWord[] = [];
  words.forEach((w, i) => {
    const prev = words[i - 1];
    if (prev) out.push({ text: ' ', start: prev.end, end: w.start, type: 'spacing', logprob: 0 });
    out.push({ text: w.word, start: w.start, end: w.end, type: 'word', logprob: SCRIBE_WORD_LOGPROB });
  });
  return out;
}

// ---- records ----

export type ScribeCommitTrigger = 'manual' | 'vad' | 'auto';

export interface ScribeCommit {
  /** 0-based, per connection */
  index: number;
  trigger: ScribeCommitTrigger;
  /** ms since the socket opened */
  at: number;
  /** audio time (seconds analysed) of the commit */
  audioTime: number;
  text: string;
  words: TimedWord[];
}

export interface ScribeErrorRecord extends ScribeErrorMessage {
  at: number;
  closeCode: number;
}

export class ScribeConnection {
  readonly record: ConnectionRecord;
  /** base session: per-connection base faults live in `session.faults` */
  readonly session: WsSession;
  readonly sessionId: string;
  /** null when the query was refused */
  params: ScribeParams | null = null;
  auth: { via: 'header' | 'token' | null; credential: string | null; ok: boolean } = { via: null, credential: null, ok: false };
  /** session_started was sent */
  started = false;
  readonly counts = { chunks: 0, commitFlags: 0, emptyChunks: 0, invalid: 0, ignored: 0 };
  /** audio received (decoded duration) */
  audioSeconds = 0;
  audioBytes = 0;
  previousText: string | null = null;
  /** every message produced, in order (also those withheld by the deadAir fault) */
  readonly sent: ScribeServerMessage[] = [];
  readonly commits: ScribeCommit[] = [];
  readonly errors: ScribeErrorRecord[] = [];
  /** this connection's Scribe fault overrides (mutable) */
  scribeFaults: Partial<ScribeFaults>;

  constructor(record: ConnectionRecord, session: WsSession, scribeFaults: Partial<ScribeFaults>) {
    this.record = record;
    this.session = session;
    this.scribeFaults = scribeFaults;
    this.sessionId = randomUUID().replace(/-/g, '');
  }

  /** messages sent of one message_type */
  ofType(type: ScribeServerMessage['message_type']): ScribeServerMessage[] {
    return this.sent.filter((m) => m.message_type === type);
  }
  /** texts of the partial_transcript messages sent */
  get partials(): string[] {
    return this.sent.filter((m): m is ScribeText => m.message_type === 'partial_transcript').map((m) => m.text);
  }
  /** texts of the committed_transcript messages sent */
  get committed(): string[] {
    return this.sent.filter((m): m is ScribeText => m.message_type === 'committed_transcript').map((m) => m.text);
  }
  get closed(): boolean {
    return this.record.closed;
  }
  get closeCode(): number | undefined {
    return this.record.close?.code;
  }
}

interface ScribeEnv {
  opts: ResolvedElevenLabsOptions;
  s: ResolvedScribeOptions;
  serverFaults(): ScribeFaults;
  changed(): void;
  /** Scribe sessions already started with this credential (open) */
  openFor(credential: string): number;
  /** true once per token */
  consumeToken(token: string): boolean;
  quotaLeft(): number;
  useQuota(seconds: number): void;
}

const SCRIBE_EPS = 1e-6;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** One Scribe socket: auth, query, session_started, audio -> partial/committed transcripts. */
class ScribeSocket implements WsHandler {
  readonly conn: ScribeConnection;
  private readonly env: ScribeEnv;
  private readonly session: WsSession;
  private readonly headerKey: string | null;
  private p: ScribeParams | null = null;
  private detector: SpeechDetector | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private ended = false;
  private chunksSeen = 0;
  private lastManualCommitAt: number | null = null;
  private faultFired = false;
  // transcription state (audio seconds)
  private now = 0;
  private words: TimedWord[] = [];
  /** words[] already reported by final_transcript */
  private finalIdx = 0;
  private partialDirty = false;
  private inSpeech = false;
  private speechStart = 0;
  private silenceStart: number | null = null;
  /** speech of at least min_speech_duration_ms since the last commit (arms the VAD commit) */
  private vadArmed = false;
  private segmentStart = 0;

  constructor(conn: ScribeConnection, env: ScribeEnv, headerKey: string | null) {
    this.conn = conn;
    this.env = env;
    this.session = conn.session;
    this.headerKey = headerKey;
    this.start();
  }

  stop(): void {
    this.ended = true;
    this.clearIdle();
  }

  onClose(): void {
    this.stop();
    this.env.changed();
  }

  onMessage(data: Buffer, isBinary: boolean): void {
    if (this.ended) {
      this.conn.counts.ignored++;
      this.env.changed();
      return;
    }
    if (isBinary) return this.inputError('Binary frames are not supported; send input_audio_chunk messages as JSON text.');
    let msg: unknown;
    try {
      msg = JSON.parse(data.toString('utf8'));
    } catch {
      msg = undefined;
    }
    if (!isObject(msg)) return this.inputError('Invalid message: expected a JSON object.');
    if (msg['message_type'] !== 'input_audio_chunk') {
      return this.inputError(`Unsupported message_type ${JSON.stringify(msg['message_type'] ?? null)}: expected "input_audio_chunk".`);
    }
    this.chunk(msg);
    this.env.changed();
  }

  private start(): void {
    const { opts, s } = this.env;
    const q = this.conn.record.query;
    const token = q['token']?.[q['token'].length - 1] ?? null;
    if (this.headerKey !== null) {
      this.conn.auth = { via: 'header', credential: this.headerKey, ok: opts.apiKeys.includes(this.headerKey) };
    } else if (token !== null) {
      this.conn.auth = { via: 'token', credential: token, ok: s.tokens.includes(token) && this.env.consumeToken(token) };
    }
    if (!this.conn.auth.ok) return this.fail('auth_error', this.conn.auth.via === 'token' ? 'Invalid or expired token.' : INVALID_API_KEY);
    const check = parseScribeQuery(q, s.models);
    if (!check.ok) return this.fail('invalid_request', check.error);
    if (s.maxConcurrent !== null && this.env.openFor(this.conn.auth.credential as string) >= s.maxConcurrent) {
      return this.fail('rate_limited', `Too many concurrent sessions: your plan allows ${s.maxConcurrent}.`);
    }
    this.p = check.params;
    this.conn.params = check.params;
    this.detector = new SpeechDetector({ sampleRate: check.params.sampleRate });
    this.conn.started = true;
    if (!this.faults().omitSessionStarted) {
      this.send({ message_type: 'session_started', session_id: this.conn.sessionId, config: scribeConfig(check.params) });
    }
    this.touch();
    this.env.changed();
  }

  private faults(): ScribeFaults {
    return { ...this.env.serverFaults(), ...this.conn.scribeFaults };
  }

  private send(msg: ScribeServerMessage): void {
    this.conn.sent.push(msg);
    this.session.send(JSON.stringify(msg), { delayMs: this.env.s.latencyMs });
    this.env.changed();
  }

  /** Error message, then close with its code. */
  private fail(type: ScribeErrorType, error: string = SCRIBE_ERROR_TEXT[type], closeCode?: number): void {
    if (this.ended) return;
    const code = closeCode ?? this.env.s.errorCloseCodes[type];
    this.conn.errors.push({ message_type: type, error, at: this.session.elapsed(), closeCode: code });
    this.send({ message_type: type, error });
    this.session.close(code, code === 1000 ? '' : closeReason(error), { delayMs: this.env.s.latencyMs });
    this.stop();
    this.env.changed();
  }

  private inputError(message: string): void {
    this.conn.counts.invalid++;
    this.fail('input_error', message);
  }

  private chunk(msg: Record<string, unknown>): void {
    const p = this.p as ScribeParams;
    const audio = msg['audio_base_64'];
    const commit = msg['commit'];
    const rate = msg['sample_rate'];
    const previous = msg['previous_text'];
    if (typeof audio !== 'string' || audio.length % 4 !== 0 || !BASE64_RE.test(audio)) {
      return this.inputError('Field "audio_base_64" is required and must be a base64 string.');
    }
    if (typeof commit !== 'boolean') return this.inputError('Field "commit" is required and must be a boolean.');
    if (typeof rate !== 'number' || !Number.isInteger(rate)) return this.inputError('Field "sample_rate" is required and must be an integer.');
    if (rate !== p.sampleRate) {
      return this.inputError(`sample_rate ${rate} does not match audio_format ${p.audioFormat} (${p.sampleRate} Hz).`);
    }
    const first = this.chunksSeen === 0;
    this.chunksSeen++;
    if (previous !== undefined && previous !== null) {
      if (typeof previous !== 'string') return this.inputError('Field "previous_text" must be a string.');
      if (!first) return this.inputError('previous_text can only be sent alongside the first audio chunk.');
      this.conn.previousText = previous;
    }
    this.conn.counts.chunks++;
    if (commit) this.conn.counts.commitFlags++;
    this.touch();
    const bytes = Buffer.from(audio, 'base64');
    if (bytes.length === 0) this.conn.counts.emptyChunks++;
    else if (!this.audio(bytes)) return;
    if (commit && !this.ended) {
      const min = this.env.s.minCommitIntervalMs;
      const t = performance.now();
      if (min !== null && this.lastManualCommitAt !== null && t - this.lastManualCommitAt < min) return this.fail('commit_throttled');
      this.lastManualCommitAt = t;
      this.commit('manual');
    }
  }

  /** Decode and analyse one chunk; false when the socket is (being) closed. */
  private audio(bytes: Buffer): boolean {
    const p = this.p as ScribeParams;
    const { s } = this.env;
    const seconds = bytes.length / (p.sampleRate * (p.encoding === 'pcm' ? 2 : 1));
    if (seconds > s.maxChunkSec + SCRIBE_EPS) {
      this.fail('chunk_size_exceeded', `The audio chunk size is too large (${seconds.toFixed(2)} s). Please reduce the chunk size.`);
      return false;
    }
    if (seconds > this.env.quotaLeft() + SCRIBE_EPS) {
      this.fail('quota_exceeded');
      return false;
    }
    this.env.useQuota(seconds);
    this.conn.audioBytes += bytes.length;
    this.conn.audioSeconds += seconds;
    if (!this.session.reportAudio(seconds)) {
      if (!this.session.isOpen) this.stop();
      return false;
    }
    const total = this.conn.audioSeconds + SCRIBE_EPS;
    const f = this.faults().errorAfterAudioSec;
    if (f && !this.faultFired && total >= f.seconds) {
      this.faultFired = true;
      this.fail(f.messageType, f.error ?? SCRIBE_ERROR_TEXT[f.messageType], f.closeCode);
      return false;
    }
    const detector = this.detector as SpeechDetector;
    if (p.encoding === 'pcm') {
      this.handle(detector.push(bytes));
    } else {
      const samples = new Int16Array(bytes.length);
      for (let i = 0; i < bytes.length; i++) samples[i] = mulawToLinear(bytes[i]!);
      this.handle(detector.pushSamples(samples));
    }
    if (this.ended) return false;
    if (s.maxSessionSec !== null && total >= s.maxSessionSec) {
      this.fail('session_time_limit_exceeded');
      return false;
    }
    return true;
  }

  private handle(events: DetectorEvent[]): void {
    const p = this.p as ScribeParams;
    for (const ev of events) {
      if (this.ended) return;
      switch (ev.type) {
        case 'speech-start':
          this.inSpeech = true;
          this.speechStart = ev.time;
          this.silenceStart = null;
          break;
        case 'word':
          this.words.push({ word: ev.word, start: ev.start, end: ev.end });
          this.partialDirty = true;
          break;
        case 'speech-end':
          this.inSpeech = false;
          this.silenceStart = ev.time;
          if (ev.time - this.speechStart >= p.minSpeechDurationMs / 1000 - SCRIBE_EPS) this.vadArmed = true;
          if (this.env.s.finalTranscripts) this.sendFinal();
          break;
        case 'window':
          this.onWindow(ev.end);
          break;
      }
    }
  }

  private onWindow(now: number): void {
    const p = this.p as ScribeParams;
    const { s } = this.env;
    this.now = now;
    if (this.partialDirty && this.words.length > 0 && this.conn.audioSeconds >= s.processingStartSec - SCRIBE_EPS) {
      this.partialDirty = false;
      this.send({ message_type: 'partial_transcript', text: this.text(this.words) });
    }
    if (
      p.commitStrategy === 'vad' && this.vadArmed && !this.inSpeech && this.silenceStart !== null &&
      now - this.silenceStart >= p.vadSilenceThresholdSecs - SCRIBE_EPS
    ) {
      this.commit('vad');
    } else if (p.commitStrategy === 'manual' && now - this.segmentStart >= s.autoCommitSec - SCRIBE_EPS) {
      this.commit('auto');
    }
  }

  private text(words: readonly TimedWord[]): string {
    return words.map((w) => w.word).join(' ');
  }

  private languageCode(): string {
    return (this.p as ScribeParams).languageCode ?? 'en';
  }

  private sendFinal(): void {
    const words = this.words.slice(this.finalIdx);
    if (words.length === 0) return;
    this.finalIdx = this.words.length;
    const text = this.text(words);
    this.send({ message_type: 'final_transcript', text });
    if ((this.p as ScribeParams).includeTimestamps) {
      this.send({ message_type: 'final_transcript_with_timestamps', text, language_code: this.languageCode(), words: scribeWords(words) });
    }
  }

  private commit(trigger: ScribeCommitTrigger): void {
    const p = this.p as ScribeParams;
    const detector = this.detector as SpeechDetector;
    // a manual commit closes the word in progress (a VAD commit happens in silence)
    if (trigger !== 'vad') this.handle(detector.flush());
    if (this.ended) return;
    const words = this.words;
    const text = this.text(words);
    this.words = [];
    this.finalIdx = 0;
    this.partialDirty = false;
    this.vadArmed = false;
    this.segmentStart = Math.max(this.now, detector.processedSeconds);
    this.conn.commits.push({ index: this.conn.commits.length, trigger, at: this.session.elapsed(), audioTime: this.segmentStart, text, words });
    const plain: ScribeText = { message_type: 'committed_transcript', text };
    const f = this.faults();
    const timed: ScribeTimestamped | null =
      p.includeTimestamps && !f.omitTimestamps
        ? { message_type: 'committed_transcript_with_timestamps', text, language_code: this.languageCode(), words: scribeWords(words) }
        : null;
    if (timed && f.timestampsFirst) this.send(timed);
    this.send(plain);
    if (timed && !f.timestampsFirst) this.send(timed);
  }

  private touch(): void {
    this.clearIdle();
    if (this.ended) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.env.s.inactivityError) {
        this.fail('insufficient_audio_activity');
      } else {
        this.session.close(1000, '', { delayMs: this.env.s.latencyMs });
        this.stop();
      }
    }, this.env.s.inactivityTimeoutMs);
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}

// ---------------------------------------------------------------------------------------------
// The emulator

export type ElevenLabsRouteKind = TtsRouteKind | 'speech-to-text-realtime';

export const WS_ROUTES: ReadonlyArray<{ kind: ElevenLabsRouteKind; re: RegExp }> = [
  { kind: 'stream-input', re: /^\/v1\/text-to-speech\/([^/]+)\/stream-input\/?$/ },
  { kind: 'multi-stream-input', re: /^\/v1\/text-to-speech\/([^/]+)\/multi-stream-input\/?$/ },
  { kind: 'speech-to-text-realtime', re: /^\/v1\/speech-to-text\/realtime\/?$/ },
];
const REST_STREAM_RE = /^\/v1\/text-to-speech\/([^/]+)\/stream\/?$/;

interface ScribeAcceptState {
  kind: 'speech-to-text-realtime';
  headerKey: string | null;
}

type AcceptState = TtsAcceptState | ScribeAcceptState;

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
  /** Scribe realtime STT sockets, in order */
  readonly scribeConnections: ScribeConnection[] = [];
  /** server-wide Scribe fault switches (mutable) */
  scribeFaults: ScribeFaults = defaultScribeFaults();
  /** Scribe audio seconds used against scribe.quotaSeconds */
  usedScribeSeconds = 0;
  /** single-use Scribe tokens already used */
  readonly usedScribeTokens = new Set<string>();
  /** @internal */
  readonly nextScribeFaults: Partial<ScribeFaults>[] = [];

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
  /** apply Scribe faults to the next accepted Scribe connection only */
  scribeFaultNext(f: Partial<ScribeFaults>): void {
    this.nextScribeFaults.push(f);
  }
  resetFaults(): void {
    this.server.resetFaults();
    this.ttsFaults = defaultTtsFaults();
    this.nextTtsFaults.length = 0;
    this.scribeFaults = defaultScribeFaults();
    this.nextScribeFaults.length = 0;
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

  /** `${wsUrl}/v1/speech-to-text/realtime?…` (repeated values as arrays) */
  scribeUrl(query: Record<string, string | string[]> = {}): string {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) for (const x of Array.isArray(v) ? v : [v]) qs.append(k, x);
    const s = qs.toString();
    return `${this.wsUrl}${SCRIBE_PATH}${s ? `?${s}` : ''}`;
  }

  waitForScribeConnection(n = 1, timeoutMs = 2000): Promise<ScribeConnection> {
    return this.server.waitFor(() => this.scribeConnections[n - 1], timeoutMs, `scribe connection #${n}`);
  }

  waitForScribeClose(conn?: ScribeConnection, timeoutMs = 2000): Promise<ScribeConnection> {
    return this.server.waitFor(() => {
      const c = conn ?? this.scribeConnections[this.scribeConnections.length - 1];
      return c && c.record.closed ? c : undefined;
    }, timeoutMs, 'scribe connection close');
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
    scribe: resolveScribeOptions(opts.scribe),
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
    const h = ctx.req.headers['xi-api-key'];
    const headerKey = typeof h === 'string' ? h : Array.isArray(h) ? (h[0] ?? null) : null;
    if (route.kind === 'speech-to-text-realtime') {
      // Scribe reports credentials and parameters in-band (auth_error / invalid_request), unless
      // scribe.authFailure asks for an HTTP refusal.
      const s = options.scribe;
      if (s.authFailure !== 'message') {
        const token = ctx.query['token']?.[ctx.query['token'].length - 1] ?? null;
        const ok = headerKey !== null ? options.apiKeys.includes(headerKey) : token !== null && s.tokens.includes(token) && !emu!.usedScribeTokens.has(token);
        if (!ok) return reject(s.authFailure, elDetail('invalid_api_key', INVALID_API_KEY));
      }
      return { accept: true, state: { kind: 'speech-to-text-realtime', headerKey } };
    }
    const voiceId = decodeURIComponent(route.m[1]!);
    const check = parseStreamInputQuery(ctx.query, route.kind);
    if (!check.ok) return reject(check.status, JSON.stringify(check.body));
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
      if (state.kind === 'speech-to-text-realtime') return scribeHandler(e, session, state.headerKey);
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

function scribeHandler(e: ElevenLabsEmulator, session: WsSession, headerKey: string | null): WsHandler {
  const conn = new ScribeConnection(session.record, session, e.nextScribeFaults.shift() ?? {});
  e.scribeConnections.push(conn);
  const s = e.options.scribe;
  const env: ScribeEnv = {
    opts: e.options,
    s,
    serverFaults: () => e.scribeFaults,
    changed: () => e.server.changed(),
    openFor: (credential) => e.scribeConnections.filter((c) => c !== conn && c.started && !c.closed && c.auth.credential === credential).length,
    consumeToken: (token) => {
      if (e.usedScribeTokens.has(token)) return false;
      e.usedScribeTokens.add(token);
      return true;
    },
    quotaLeft: () => (s.quotaSeconds === null ? Infinity : s.quotaSeconds - e.usedScribeSeconds),
    useQuota: (seconds) => {
      e.usedScribeSeconds += seconds;
    },
  };
  const sock = new ScribeSocket(conn, env, headerKey);
  const dispose = () => sock.stop();
  e.disposers.add(dispose);
  return {
    onMessage: (data, isBinary) => sock.onMessage(data, isBinary),
    onClose: () => {
      e.disposers.delete(dispose);
      sock.onClose();
    },
  };
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
