/**
 * Emulator of OpenAI's Realtime API in transcription mode (the protocol self-hosted Whisper servers
 * such as speaches imitate): `wss://api.openai.com/v1/realtime?intent=transcription`.
 *
 * Sources (never the gateway adapter):
 * - ../../../shared/providers.md §6.4.
 * - https://developers.openai.com/api/docs/guides/realtime-transcription (connect with
 *   `?intent=transcription` and no `model`: "That guide's model-based URL creates a conversation
 *   session and doesn't accept the transcription update"; session shape with
 *   `audio.input.{format,noise_reduction,transcription,turn_detection}`; audio/pcm is 24 kHz only,
 *   audio/pcmu and audio/pcma are G.711; `gpt-live-transcribe` sessions must omit turn_detection
 *   or set it null; deltas arrive while speech arrives for that model).
 * - https://developers.openai.com/api/reference/resources/realtime/client-events and
 *   …/server-events (session.update -> session.updated with the full effective configuration,
 *   "turn_detection: null" clears; errors `{type, code, message, param, event_id}` and "most
 *   errors are recoverable and the session will stay open").
 * - openai@6.49.0 types `resources/realtime/realtime.d.ts` + `client-secrets.d.ts` (field names of
 *   every event; ServerVad defaults threshold 0.5, prefix_padding_ms 300, silence_duration_ms 500;
 *   speech_started.audio_start_ms "includes the prefix_padding_ms", speech_stopped.audio_end_ms
 *   "corresponds to the end of audio sent to the model"; completed.usage is
 *   `{type:'tokens', input_tokens, output_tokens, total_tokens, input_token_details}` or
 *   `{type:'duration', seconds}`; `logprobs` only with `include: ['item.input_audio_transcription.logprobs']`;
 *   no word timings anywhere; the beta `transcription_session.update` / `.updated` events with
 *   `input_audio_format: pcm16|g711_ulaw|g711_alaw`, still declared in the GA namespace).
 * - Observed behaviour of the live API (third-party test notes, 2026-10; UNCERTAIN but specific):
 *   session.created defaults are `transcription: null, noise_reduction: null, turn_detection:
 *   {server_vad, 0.5, 300, 200}`; session.updated echoes `language: null, prompt: null` and never
 *   `delay`; `expires_at` = creation + 3600 s; a rejected session.update answers an `error` event
 *   instead of session.updated (`code: 'invalid_value'`, message "Invalid value: 'bogus'.
 *   Supported values are: 'minimal', 'low', …", param = the JSON path, event_id = the client's);
 *   commit of < 100 ms -> `input_audio_buffer_commit_empty` "Error committing input audio buffer:
 *   buffer too small. Expected at least 100ms of audio, but buffer only has 50.00ms of audio."
 *   (the session continues); a silence-only commit succeeds with `transcript: ""`; committed is
 *   followed by conversation.item.added + conversation.item.done (transcript null); live-model
 *   deltas carry the final item_id before the commit; usage for gpt-live-transcribe is
 *   `{type:'duration', seconds: ceil(buffer seconds)}`; whisper-1 sends one delta then completed;
 *   a bad rate gives `integer_below_min_value` on `session.audio.input.format.rate`; the 60-minute
 *   cap is an error `session_expired` "Your session hit the maximum duration of 60 minutes.";
 *   a missing Authorization header is HTTP 401 at the upgrade, while an invalid key is accepted and
 *   answered by an `invalid_api_key` error and close 3000 "invalid_request_error.invalid_api_key".
 *
 * Deterministic rules (AUDIO time = bytes / (rate x bytes per sample); messages go out as soon as
 * the audio that triggers them arrives, plus the wall-clock knobs; only timers are wall-clock):
 * - Words come from ./audio.ts (SpeechDetector at 24 kHz for audio/pcm, 8 kHz for G.711): one word
 *   per voiced tone segment. Transcripts: words joined by spaces, first word capitalised, "." after
 *   the last word (`punctuate`, default true). Deltas: "Hello", " world", " alpha." (whisper-1: one
 *   delta with the whole transcript; live models: each word as it is detected, "." at the commit).
 *   The concatenation of an item's deltas always equals its completed transcript.
 * - server_vad (and semantic_vad, same rules): per 10 ms analysis window, a voiced window while
 *   not speaking -> speech_started {audio_start_ms = max(buffer start, window start -
 *   prefix_padding_ms)}; an unvoiced window ending >= silence_duration_ms after the last voiced
 *   window -> speech_stopped {audio_end_ms = that window's end} and an automatic commit of the
 *   buffer up to that point (audio_start/end are ms on the session's audio timeline, i.e. all audio
 *   appended since the socket opened, cleared audio included). The VAD threshold is validated and
 *   echoed but does not change detection (tones vs digital silence).
 * - Commit (client or VAD): committed {item_id, previous_item_id} -> item events -> (if a
 *   transcription model is set) deltas -> completed, the first delta `transcriptionDelayMs` after
 *   the commit, then one every `deltaIntervalMs`. Without a transcription model only the commit
 *   and item events are sent (the API's default session has `transcription: null`).
 * - `input_audio_buffer.clear` drops the uncommitted audio and words -> cleared (also when empty).
 *
 * Decisions (UNCERTAIN, not settled by the docs):
 * - Dialects: GA (default) or beta (`OpenAI-Beta: realtime=v1` header or subprotocol
 *   `openai-beta.realtime-v1`, or option `dialect: 'beta'`). GA greets with session.created and
 *   sends conversation.item.added/.done; beta greets with transcription_session.created and sends
 *   conversation.item.created. Both accept `transcription_session.update` (beta shape) and answer
 *   `transcription_session.updated`; only GA accepts `session.update` (GA shape, `session.type`
 *   required, so speaches-style flat beta fields in session.update are rejected).
 * - `?model=X` without intent opens a conversation session (session.created type 'realtime'): a
 *   transcription session.update is refused (`invalid_value` on session.type), audio is accepted
 *   and ignored, anything else answers an `emulator_unsupported` error. No intent and no model ->
 *   HTTP 400 missing_required_parameter 'model'. `lenientUrl: true` makes every URL on the path a
 *   transcription session (self-hosted servers), with `?model=` as the initial transcription model.
 * - Unknown client event types -> invalid_value on 'type' listing the supported ones; non-JSON or
 *   binary frames -> `invalid_json`; bad base64 -> invalid_value on 'audio'; unknown session keys
 *   -> `unknown_parameter`. A live model (gpt-live-transcribe, gpt-realtime-whisper) with a
 *   turn_detection -> invalid_value on session.audio.input.turn_detection; `prompt` with
 *   gpt-realtime-whisper -> invalid_value; `delay` is accepted for the live models only.
 * - Rate: non-24000 audio/pcm -> integer_below_min_value / integer_above_max_value.
 * - semantic_vad ends a turn after a fixed silence per eagerness (high 400, medium/auto 800,
 *   low 1500 ms). idle_timeout_ms / create_response / interrupt_response are echoed, not acted on.
 * - Usage: whisper-1 and the live models `{type:'duration', seconds: ceil(s)}`; the gpt-4o models
 *   `{type:'tokens'}` with audio_tokens = ceil(s x 1000/60) (the documented $6/1M audio tokens ~
 *   $0.006/min), text_tokens = ceil(prompt chars / 4), output_tokens = ceil(transcript chars / 4).
 * - Session cap `maxSessionMs` (60 min) -> error session_expired then close 1000; `idleTimeoutMs`
 *   (off by default; no documented idle close) -> close 1000 "idle timeout".
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import {
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
import { SpeechDetector, alawToLinear, mulawToLinear, type DetectorEvent } from './audio.ts';
import {
  DEFAULT_OPENAI_API_KEY,
  OPENAI_MISSING_KEY_MESSAGE,
  maskApiKey,
  openAiError,
  openAiRequestId,
  openAiRouteError,
} from './openai-speech.ts';

export { DEFAULT_OPENAI_API_KEY };

export const REALTIME_PATH = '/v1/realtime';
export const REALTIME_PCM_RATE = 24000;
export const G711_RATE = 8000;
/** transcription models named by the docs and the openai@6 AudioTranscription type */
export const REALTIME_TRANSCRIPTION_MODELS: readonly string[] = [
  'whisper-1',
  'gpt-4o-transcribe',
  'gpt-4o-transcribe-latest',
  'gpt-4o-mini-transcribe',
  'gpt-4o-mini-transcribe-2025-12-15',
  'gpt-4o-transcribe-diarize',
  'gpt-realtime-whisper',
  'gpt-live-transcribe',
];
/** models that stream deltas while audio arrives and refuse turn detection */
export const LIVE_TRANSCRIPTION_MODELS: readonly string[] = ['gpt-live-transcribe', 'gpt-realtime-whisper'];
export const DELAY_VALUES = ['minimal', 'low', 'medium', 'high', 'xhigh'] as const;
export const LOGPROBS_INCLUDE = 'item.input_audio_transcription.logprobs';
export const MIN_COMMIT_MS = 100;
export const BAD_KEY_CLOSE_CODE = 3000;
export const BAD_KEY_CLOSE_REASON = 'invalid_request_error.invalid_api_key';
export const SESSION_EXPIRED_MESSAGE = 'Your session hit the maximum duration of 60 minutes.';

/** Timing that resembles the real service (first delta ~0.5 s after a commit). */
export const OPENAI_REALTIME_REALISTIC_TIMING = { latencyMs: 40, transcriptionDelayMs: 350, deltaIntervalMs: 25 } as const;

export interface OpenAiRealtimeEmulatorOptions {
  /** accepted keys (Bearer header or `openai-insecure-api-key.<key>` subprotocol); default ['sk-test-key'] */
  apiKeys?: string[];
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** the WebSocket path (default '/v1/realtime'; e.g. '/openai/v1/realtime') */
  path?: string;
  /** accepted transcription models (default REALTIME_TRANSCRIPTION_MODELS) */
  models?: string[];
  /** models with live (during-speech) deltas and no VAD (default LIVE_TRANSCRIPTION_MODELS) */
  liveModels?: string[];
  /** 'auto' = beta iff the OpenAI-Beta realtime=v1 header/subprotocol is sent (default) */
  dialect?: 'auto' | 'ga' | 'beta';
  /** every URL on the path is a transcription session (self-hosted servers); default false */
  lenientUrl?: boolean;
  /** an unknown key: 'event' = accept, error invalid_api_key, close 3000 (default); 'http' = 401 */
  badKeyAnswer?: 'event' | 'http';
  /** capitalise + final "." (default true) */
  punctuate?: boolean;
  /** extra wall-clock delay before every message (default 0) */
  latencyMs?: number;
  /** wall ms from a commit to the first transcription delta (default 0; realistic ~350) */
  transcriptionDelayMs?: number;
  /** wall ms between deltas of one item (default 0; realistic ~25) */
  deltaIntervalMs?: number;
  /** session cap -> error session_expired + close (default 3_600_000; expires_at follows it) */
  maxSessionMs?: number;
  /** no client message for this long -> close 1000 "idle timeout" (default 0 = off) */
  idleTimeoutMs?: number;
  /** semantic_vad turn-end silence per eagerness (ms) */
  semanticSilenceMs?: { low: number; medium: number; high: number };
  /** keep binary payloads in the wire record (only binary frames; appends are text) */
  recordAudio?: boolean;
}

export type ResolvedOpenAiRealtimeOptions = Required<Omit<OpenAiRealtimeEmulatorOptions, 'port' | 'host' | 'tls'>>;

/** Provider-specific fault switches: `emu.realtimeFaults` (server-wide) and `conn.faults`. */
export interface RealtimeFaults {
  /** every transcription fails: conversation.item.input_audio_transcription.failed with this error */
  failTranscription: { type?: string; code?: string; message?: string } | null;
  /** commits are acknowledged, items are created, but no delta/completed/failed ever follows */
  stallTranscription: boolean;
  /** one `error` event once this much audio arrived (optionally followed by a close) */
  errorAfterAudioSec: { seconds: number; type?: string; code?: string | null; message?: string; close?: { code: number; reason: string } } | null;
}

export function defaultRealtimeFaults(): RealtimeFaults {
  return { failTranscription: null, stallTranscription: false, errorAfterAudioSec: null };
}

// ---------------------------------------------------------------------------------------------
// Wire types (GA names from openai@6 resources/realtime; nullable where the API sends null)

export interface RtErrorBody {
  type: string;
  code: string | null;
  message: string;
  param: string | null;
  event_id: string | null;
}

export interface RtErrorEvent {
  type: 'error';
  event_id: string;
  error: RtErrorBody;
}

export type RtAudioFormat = { type: 'audio/pcm'; rate: 24000 } | { type: 'audio/pcmu' } | { type: 'audio/pcma' };

export interface RtServerVad {
  type: 'server_vad';
  threshold: number;
  prefix_padding_ms: number;
  silence_duration_ms: number;
  idle_timeout_ms?: number | null;
  create_response?: boolean;
  interrupt_response?: boolean;
}

export interface RtSemanticVad {
  type: 'semantic_vad';
  eagerness: 'low' | 'medium' | 'high' | 'auto';
  create_response?: boolean;
  interrupt_response?: boolean;
}

export type RtTurnDetection = RtServerVad | RtSemanticVad;

export interface RtTranscription {
  model: string;
  language: string | null;
  prompt: string | null;
  /** only echoed when the client set it */
  languages?: string[];
}

/** GA transcription session object (session.created / session.updated) */
export interface RtTranscriptionSession {
  type: 'transcription';
  object: 'realtime.transcription_session';
  id: string;
  expires_at: number;
  audio: {
    input: {
      format: RtAudioFormat;
      noise_reduction: { type: 'near_field' | 'far_field' } | null;
      transcription: RtTranscription | null;
      turn_detection: RtTurnDetection | null;
    };
  };
  include: string[] | null;
}

/** beta transcription session object (transcription_session.created / .updated) */
export interface RtBetaTranscriptionSession {
  id: string;
  object: 'realtime.transcription_session';
  expires_at: number;
  modalities: Array<'audio' | 'text'>;
  input_audio_format: 'pcm16' | 'g711_ulaw' | 'g711_alaw';
  input_audio_transcription: RtTranscription | null;
  turn_detection: RtTurnDetection | null;
  input_audio_noise_reduction: { type: 'near_field' | 'far_field' } | null;
  include: string[] | null;
  client_secret: null;
}

/** conversation session (model URL) — only what the emulator needs */
export interface RtConversationSession {
  type: 'realtime';
  object: 'realtime.session';
  id: string;
  model: string;
  expires_at: number;
  output_modalities: ['audio'];
  audio: { input: { format: RtAudioFormat; transcription: null; noise_reduction: null; turn_detection: RtServerVad } };
  include: null;
}

export interface RtSessionCreated {
  type: 'session.created';
  event_id: string;
  session: RtTranscriptionSession | RtConversationSession;
}
export interface RtSessionUpdated {
  type: 'session.updated';
  event_id: string;
  session: RtTranscriptionSession;
}
export interface RtBetaSessionCreated {
  type: 'transcription_session.created';
  event_id: string;
  session: RtBetaTranscriptionSession;
}
export interface RtBetaSessionUpdated {
  type: 'transcription_session.updated';
  event_id: string;
  session: RtBetaTranscriptionSession;
}

export interface RtSpeechStarted {
  type: 'input_audio_buffer.speech_started';
  event_id: string;
  audio_start_ms: number;
  item_id: string;
}
export interface RtSpeechStopped {
  type: 'input_audio_buffer.speech_stopped';
  event_id: string;
  audio_end_ms: number;
  item_id: string;
}
export interface RtCommitted {
  type: 'input_audio_buffer.committed';
  event_id: string;
  item_id: string;
  previous_item_id: string | null;
}
export interface RtCleared {
  type: 'input_audio_buffer.cleared';
  event_id: string;
}

export interface RtUserAudioItem {
  id: string;
  object: 'realtime.item';
  type: 'message';
  status: 'completed';
  role: 'user';
  content: Array<{ type: 'input_audio'; transcript: null }>;
}
export interface RtItemAdded {
  type: 'conversation.item.added';
  event_id: string;
  previous_item_id: string | null;
  item: RtUserAudioItem;
}
export interface RtItemDone {
  type: 'conversation.item.done';
  event_id: string;
  previous_item_id: string | null;
  item: RtUserAudioItem;
}
export interface RtItemCreated {
  type: 'conversation.item.created';
  event_id: string;
  previous_item_id: string | null;
  item: RtUserAudioItem;
}

export interface RtLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface RtTranscriptionDelta {
  type: 'conversation.item.input_audio_transcription.delta';
  event_id: string;
  item_id: string;
  content_index: number;
  delta: string;
  logprobs?: RtLogprob[];
}

export type RtUsage =
  | { type: 'tokens'; input_tokens: number; output_tokens: number; total_tokens: number; input_token_details: { audio_tokens: number; text_tokens: number } }
  | { type: 'duration'; seconds: number };

export interface RtTranscriptionCompleted {
  type: 'conversation.item.input_audio_transcription.completed';
  event_id: string;
  item_id: string;
  content_index: number;
  transcript: string;
  usage: RtUsage;
  logprobs?: RtLogprob[];
}

export interface RtTranscriptionFailed {
  type: 'conversation.item.input_audio_transcription.failed';
  event_id: string;
  item_id: string;
  content_index: number;
  error: { type: string; code: string; message: string; param: string };
}

export type RtServerEvent =
  | RtErrorEvent
  | RtSessionCreated
  | RtSessionUpdated
  | RtBetaSessionCreated
  | RtBetaSessionUpdated
  | RtSpeechStarted
  | RtSpeechStopped
  | RtCommitted
  | RtCleared
  | RtItemAdded
  | RtItemDone
  | RtItemCreated
  | RtTranscriptionDelta
  | RtTranscriptionCompleted
  | RtTranscriptionFailed;

// ---------------------------------------------------------------------------------------------
// Session configuration and its validation

export interface SessionConfig {
  format: RtAudioFormat;
  noiseReduction: { type: 'near_field' | 'far_field' } | null;
  transcription: (RtTranscription & { delay?: string }) | null;
  turnDetection: RtTurnDetection | null;
  include: string[] | null;
}

/** What the API starts a transcription session with (observed session.created). */
export function defaultSessionConfig(): SessionConfig {
  return {
    format: { type: 'audio/pcm', rate: REALTIME_PCM_RATE },
    noiseReduction: null,
    transcription: null,
    turnDetection: { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 200 },
    include: null,
  };
}

type Failure = { ok: false; error: Omit<RtErrorBody, 'event_id'> };
type Check<T> = { ok: true; value: T } | Failure;

function err(code: string, message: string, param: string | null, type = 'invalid_request_error'): Failure {
  return { ok: false, error: { type, code, message, param } };
}

function enumList(values: readonly string[]): string {
  const q = values.map((v) => `'${v}'`);
  return q.length <= 1 ? (q[0] ?? '') : q.length === 2 ? `${q[0]} and ${q[1]}` : `${q.slice(0, -1).join(', ')}, and ${q[q.length - 1]}`;
}

function invalidValue(value: unknown, supported: readonly string[], param: string) {
  const shown = typeof value === 'string' ? `'${value}'` : JSON.stringify(value);
  return err('invalid_value', `Invalid value: ${shown}. Supported values are: ${enumList(supported)}.`, param);
}

function jsonTypeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a decimal';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'boolean') return 'a boolean';
  return `a ${typeof v}`;
}

function invalidType(param: string, expected: string, got: unknown) {
  return err('invalid_type', `Invalid type for '${param}': expected ${expected}, but got ${jsonTypeName(got)} instead.`, param);
}

function unknownParam(param: string) {
  return err('unknown_parameter', `Unknown parameter: '${param}'.`, param);
}

function missingParam(param: string) {
  return err('missing_required_parameter', `Missing required parameter: '${param}'.`, param);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], path: string): Failure | null {
  for (const k of Object.keys(obj)) if (!allowed.includes(k)) return unknownParam(`${path}.${k}`);
  return null;
}

function checkNumber(v: unknown, param: string, o: { min: number; max?: number; integer: boolean }): Check<number> {
  if (typeof v !== 'number' || !Number.isFinite(v)) return invalidType(param, o.integer ? 'an integer' : 'a decimal', v);
  if (o.integer && !Number.isInteger(v)) return invalidType(param, 'an integer', v);
  const kind = o.integer ? 'integer' : 'decimal';
  if (v < o.min) {
    return err(`${kind}_below_min_value`, `Invalid '${param}': ${kind} below minimum value. Expected a value >= ${o.min}, but got ${v} instead.`, param);
  }
  if (o.max !== undefined && v > o.max) {
    return err(`${kind}_above_max_value`, `Invalid '${param}': ${kind} above maximum value. Expected a value <= ${o.max}, but got ${v} instead.`, param);
  }
  return { ok: true, value: v };
}

function checkString(v: unknown, param: string): Check<string> {
  return typeof v === 'string' ? { ok: true, value: v } : invalidType(param, 'a string', v);
}

interface ValidationContext {
  models: readonly string[];
  liveModels: readonly string[];
}

function parseFormat(v: unknown, path: string): Check<RtAudioFormat> {
  if (!isObject(v)) return invalidType(path, 'an object', v);
  const bad = checkKeys(v, ['type', 'rate'], path);
  if (bad) return bad;
  const type = v['type'] ?? 'audio/pcm';
  if (type !== 'audio/pcm' && type !== 'audio/pcmu' && type !== 'audio/pcma') {
    return invalidValue(type, ['audio/pcm', 'audio/pcmu', 'audio/pcma'], `${path}.type`);
  }
  if (type === 'audio/pcm') {
    if (v['rate'] !== undefined) {
      const r = checkNumber(v['rate'], `${path}.rate`, { min: REALTIME_PCM_RATE, max: REALTIME_PCM_RATE, integer: true });
      if (!r.ok) return r;
    }
    return { ok: true, value: { type, rate: REALTIME_PCM_RATE } };
  }
  if (v['rate'] !== undefined) return unknownParam(`${path}.rate`);
  return { ok: true, value: { type } };
}

function parseTranscription(v: unknown, path: string, ctx: ValidationContext): Check<SessionConfig['transcription']> {
  if (v === null) return { ok: true, value: null };
  if (!isObject(v)) return invalidType(path, 'an object', v);
  const bad = checkKeys(v, ['model', 'language', 'prompt', 'delay', 'languages'], path);
  if (bad) return bad;
  const model = v['model'] ?? 'whisper-1';
  if (typeof model !== 'string') return invalidType(`${path}.model`, 'a string', model);
  if (!ctx.models.includes(model)) return invalidValue(model, ctx.models, `${path}.model`);
  const out: RtTranscription & { delay?: string } = { model, language: null, prompt: null };
  if (v['language'] !== undefined && v['language'] !== null) {
    const l = checkString(v['language'], `${path}.language`);
    if (!l.ok) return l;
    out.language = l.value;
  }
  if (v['prompt'] !== undefined && v['prompt'] !== null) {
    const p = checkString(v['prompt'], `${path}.prompt`);
    if (!p.ok) return p;
    if (model === 'gpt-realtime-whisper') {
      return err('invalid_value', `Prompt is not supported with model '${model}'.`, `${path}.prompt`);
    }
    out.prompt = p.value;
  }
  if (v['languages'] !== undefined && v['languages'] !== null) {
    const ls = v['languages'];
    if (!Array.isArray(ls) || ls.some((x) => typeof x !== 'string')) return invalidType(`${path}.languages`, 'an array of strings', ls);
    out.languages = ls as string[];
  }
  if (v['delay'] !== undefined && v['delay'] !== null) {
    const d = v['delay'];
    if (typeof d !== 'string' || !(DELAY_VALUES as readonly string[]).includes(d)) return invalidValue(d, DELAY_VALUES, `${path}.delay`);
    if (!ctx.liveModels.includes(model)) {
      return err('invalid_value', `'delay' is only supported with ${enumList(ctx.liveModels)}.`, `${path}.delay`);
    }
    out.delay = d;
  }
  return { ok: true, value: out };
}

function parseTurnDetection(v: unknown, path: string): Check<RtTurnDetection | null> {
  if (v === null) return { ok: true, value: null };
  if (!isObject(v)) return invalidType(path, 'an object', v);
  const type = v['type'];
  if (type === undefined) return missingParam(`${path}.type`);
  if (type === 'semantic_vad') {
    const bad = checkKeys(v, ['type', 'eagerness', 'create_response', 'interrupt_response'], path);
    if (bad) return bad;
    const e = v['eagerness'] ?? 'auto';
    if (e !== 'low' && e !== 'medium' && e !== 'high' && e !== 'auto') return invalidValue(e, ['low', 'medium', 'high', 'auto'], `${path}.eagerness`);
    const out: RtSemanticVad = { type: 'semantic_vad', eagerness: e };
    for (const k of ['create_response', 'interrupt_response'] as const) {
      if (v[k] === undefined) continue;
      if (typeof v[k] !== 'boolean') return invalidType(`${path}.${k}`, 'a boolean', v[k]);
      out[k] = v[k];
    }
    return { ok: true, value: out };
  }
  if (type !== 'server_vad') return invalidValue(type, ['server_vad', 'semantic_vad'], `${path}.type`);
  const bad = checkKeys(v, ['type', 'threshold', 'prefix_padding_ms', 'silence_duration_ms', 'idle_timeout_ms', 'create_response', 'interrupt_response'], path);
  if (bad) return bad;
  const out: RtServerVad = { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 };
  if (v['threshold'] !== undefined) {
    const t = checkNumber(v['threshold'], `${path}.threshold`, { min: 0, max: 1, integer: false });
    if (!t.ok) return t;
    out.threshold = t.value;
  }
  for (const k of ['prefix_padding_ms', 'silence_duration_ms'] as const) {
    if (v[k] === undefined) continue;
    const n = checkNumber(v[k], `${path}.${k}`, { min: 0, integer: true });
    if (!n.ok) return n;
    out[k] = n.value;
  }
  if (v['idle_timeout_ms'] !== undefined) {
    if (v['idle_timeout_ms'] === null) out.idle_timeout_ms = null;
    else {
      const n = checkNumber(v['idle_timeout_ms'], `${path}.idle_timeout_ms`, { min: 5000, max: 30000, integer: true });
      if (!n.ok) return n;
      out.idle_timeout_ms = n.value;
    }
  }
  for (const k of ['create_response', 'interrupt_response'] as const) {
    if (v[k] === undefined) continue;
    if (typeof v[k] !== 'boolean') return invalidType(`${path}.${k}`, 'a boolean', v[k]);
    out[k] = v[k];
  }
  return { ok: true, value: out };
}

function parseNoiseReduction(v: unknown, path: string): Check<SessionConfig['noiseReduction']> {
  if (v === null) return { ok: true, value: null };
  if (!isObject(v)) return invalidType(path, 'an object', v);
  const bad = checkKeys(v, ['type'], path);
  if (bad) return bad;
  const t = v['type'];
  if (t !== 'near_field' && t !== 'far_field') return invalidValue(t, ['near_field', 'far_field'], `${path}.type`);
  return { ok: true, value: { type: t } };
}

function parseInclude(v: unknown, path: string): Check<string[] | null> {
  if (v === null) return { ok: true, value: null };
  if (!Array.isArray(v)) return invalidType(path, 'an array', v);
  for (const x of v) if (x !== LOGPROBS_INCLUDE) return invalidValue(x, [LOGPROBS_INCLUDE], path);
  return { ok: true, value: [...(v as string[])] };
}

/** Cross-field rule: the live models refuse turn detection. */
function checkCombination(c: SessionConfig, ctx: ValidationContext, tdPath: string): Check<SessionConfig> {
  if (c.transcription && ctx.liveModels.includes(c.transcription.model) && c.turnDetection !== null) {
    return err(
      'invalid_value',
      `Turn detection is not supported with model '${c.transcription.model}'. Set '${tdPath}' to null.`,
      tdPath,
    );
  }
  return { ok: true, value: c };
}

/** Apply a GA `session.update` payload (only the fields present change). */
export function applyGaUpdate(current: SessionConfig, session: unknown, ctx: ValidationContext): Check<SessionConfig> {
  if (session === undefined) return missingParam('session');
  if (!isObject(session)) return invalidType('session', 'an object', session);
  if (session['type'] === undefined) return missingParam('session.type');
  if (session['type'] !== 'transcription') return invalidValue(session['type'], ['transcription'], 'session.type');
  const bad = checkKeys(session, ['type', 'audio', 'include'], 'session');
  if (bad) return bad;
  const next: SessionConfig = { ...current };
  const audio = session['audio'];
  if (audio !== undefined) {
    if (!isObject(audio)) return invalidType('session.audio', 'an object', audio);
    const b = checkKeys(audio, ['input'], 'session.audio');
    if (b) return b;
    const input = audio['input'];
    if (input !== undefined) {
      const p = 'session.audio.input';
      if (!isObject(input)) return invalidType(p, 'an object', input);
      const b2 = checkKeys(input, ['format', 'noise_reduction', 'transcription', 'turn_detection'], p);
      if (b2) return b2;
      if (input['format'] !== undefined) {
        const f = parseFormat(input['format'], `${p}.format`);
        if (!f.ok) return f;
        next.format = f.value;
      }
      if (input['noise_reduction'] !== undefined) {
        const n = parseNoiseReduction(input['noise_reduction'], `${p}.noise_reduction`);
        if (!n.ok) return n;
        next.noiseReduction = n.value;
      }
      if (input['transcription'] !== undefined) {
        const t = parseTranscription(input['transcription'], `${p}.transcription`, ctx);
        if (!t.ok) return t;
        next.transcription = t.value;
      }
      if (input['turn_detection'] !== undefined) {
        const t = parseTurnDetection(input['turn_detection'], `${p}.turn_detection`);
        if (!t.ok) return t;
        next.turnDetection = t.value;
      }
    }
  }
  if (session['include'] !== undefined) {
    const i = parseInclude(session['include'], 'session.include');
    if (!i.ok) return i;
    next.include = i.value;
  }
  return checkCombination(next, ctx, 'session.audio.input.turn_detection');
}

const BETA_FORMATS: Record<string, RtAudioFormat> = {
  pcm16: { type: 'audio/pcm', rate: REALTIME_PCM_RATE },
  g711_ulaw: { type: 'audio/pcmu' },
  g711_alaw: { type: 'audio/pcma' },
};

/** Apply a beta `transcription_session.update` payload. */
export function applyBetaUpdate(current: SessionConfig, session: unknown, ctx: ValidationContext): Check<SessionConfig> {
  if (session === undefined) return missingParam('session');
  if (!isObject(session)) return invalidType('session', 'an object', session);
  const bad = checkKeys(
    session,
    ['input_audio_format', 'input_audio_transcription', 'turn_detection', 'input_audio_noise_reduction', 'include', 'modalities', 'client_secret'],
    'session',
  );
  if (bad) return bad;
  const next: SessionConfig = { ...current };
  if (session['input_audio_format'] !== undefined) {
    const f = session['input_audio_format'];
    const fmt = typeof f === 'string' ? BETA_FORMATS[f] : undefined;
    if (!fmt) return invalidValue(f, Object.keys(BETA_FORMATS), 'session.input_audio_format');
    next.format = fmt;
  }
  if (session['input_audio_transcription'] !== undefined) {
    const t = parseTranscription(session['input_audio_transcription'], 'session.input_audio_transcription', ctx);
    if (!t.ok) return t;
    next.transcription = t.value;
  }
  if (session['turn_detection'] !== undefined) {
    const t = parseTurnDetection(session['turn_detection'], 'session.turn_detection');
    if (!t.ok) return t;
    next.turnDetection = t.value;
  }
  if (session['input_audio_noise_reduction'] !== undefined) {
    const n = parseNoiseReduction(session['input_audio_noise_reduction'], 'session.input_audio_noise_reduction');
    if (!n.ok) return n;
    next.noiseReduction = n.value;
  }
  if (session['include'] !== undefined) {
    const i = parseInclude(session['include'], 'session.include');
    if (!i.ok) return i;
    next.include = i.value;
  }
  if (session['modalities'] !== undefined) {
    const m = session['modalities'];
    if (!Array.isArray(m) || m.some((x) => x !== 'audio' && x !== 'text')) return invalidValue(m, ['audio', 'text'], 'session.modalities');
  }
  return checkCombination(next, ctx, 'session.turn_detection');
}

function transcriptionView(t: SessionConfig['transcription']): RtTranscription | null {
  if (!t) return null;
  const out: RtTranscription = { model: t.model, language: t.language, prompt: t.prompt };
  if (t.languages) out.languages = [...t.languages];
  return out;
}

export function gaSessionObject(id: string, expiresAt: number, c: SessionConfig): RtTranscriptionSession {
  return {
    type: 'transcription',
    object: 'realtime.transcription_session',
    id,
    expires_at: expiresAt,
    audio: {
      input: {
        format: { ...c.format },
        noise_reduction: c.noiseReduction ? { ...c.noiseReduction } : null,
        transcription: transcriptionView(c.transcription),
        turn_detection: c.turnDetection ? { ...c.turnDetection } : null,
      },
    },
    include: c.include ? [...c.include] : null,
  };
}

export function betaSessionObject(id: string, expiresAt: number, c: SessionConfig): RtBetaTranscriptionSession {
  const fmt = c.format.type === 'audio/pcm' ? 'pcm16' : c.format.type === 'audio/pcmu' ? 'g711_ulaw' : 'g711_alaw';
  return {
    id,
    object: 'realtime.transcription_session',
    expires_at: expiresAt,
    modalities: ['audio', 'text'],
    input_audio_format: fmt,
    input_audio_transcription: transcriptionView(c.transcription),
    turn_detection: c.turnDetection ? { ...c.turnDetection } : null,
    input_audio_noise_reduction: c.noiseReduction ? { ...c.noiseReduction } : null,
    include: c.include ? [...c.include] : null,
    client_secret: null,
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers

const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function randomId(prefix: string, n = 21): string {
  const bytes = randomBytes(n);
  let s = '';
  for (let i = 0; i < n; i++) s += ID_ALPHABET[bytes[i]! % ID_ALPHABET.length];
  return `${prefix}_${s}`;
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeBase64(s: string): Buffer | null {
  const t = s.replace(/\s+/g, '');
  if (t.length % 4 === 1 || !BASE64_RE.test(t)) return null;
  return Buffer.from(t, 'base64');
}

function rateOf(f: RtAudioFormat): number {
  return f.type === 'audio/pcm' ? REALTIME_PCM_RATE : G711_RATE;
}

function bytesPerSample(f: RtAudioFormat): number {
  return f.type === 'audio/pcm' ? 2 : 1;
}

function sameFormat(a: RtAudioFormat, b: RtAudioFormat): boolean {
  return a.type === b.type;
}

const EPS = 1e-6;
const WORD_LOGPROB = Math.log(0.99);

function logprobsFor(text: string): RtLogprob[] {
  return [{ token: text, logprob: WORD_LOGPROB, bytes: [...Buffer.from(text, 'utf8')] }];
}

/** Deltas of an item (their concatenation is the transcript). */
export function formatPieces(words: readonly string[], punctuate: boolean): string[] {
  return words.map((w, i) => {
    let p = punctuate && i === 0 ? w.charAt(0).toUpperCase() + w.slice(1) : w;
    if (i > 0) p = ' ' + p;
    if (punctuate && i === words.length - 1) p += '.';
    return p;
  });
}

// ---------------------------------------------------------------------------------------------
// Records

export interface RealtimeItemRecord {
  id: string;
  previousItemId: string | null;
  /** who committed: the client or the VAD */
  committedBy: 'client' | 'server_vad';
  /** ms on the session audio timeline */
  startMs: number;
  endMs: number;
  words: Array<{ word: string; start: number; end: number }>;
  /** model at commit time (null: transcription off) */
  model: string | null;
  transcript: string | null;
  outcome: 'pending' | 'completed' | 'failed' | 'stalled' | 'untranscribed';
}

export interface OpenAiRealtimeConnection {
  record: ConnectionRecord;
  session: WsSession;
  /** the realtime session id (sess_…) */
  sessionId: string;
  apiKey: string;
  authVia: 'header' | 'subprotocol';
  /** 'transcription' or 'conversation' (model URL) */
  kind: 'transcription' | 'conversation';
  dialect: 'ga' | 'beta';
  /** model from the URL, if any */
  urlModel: string | null;
  /** effective configuration (changes with every accepted update) */
  config: SessionConfig;
  /** per-connection provider faults (merged over emu.realtimeFaults) */
  faults: Partial<RealtimeFaults>;
  counts: { append: number; commit: number; clear: number; sessionUpdate: number; betaUpdate: number; errors: number };
  /** audio seconds received (decoded) */
  audioSeconds: number;
  audioBytes: number;
  items: RealtimeItemRecord[];
  /** every event the emulator produced, in order (also those withheld by deadAir) */
  sent: RtServerEvent[];
}

interface Word {
  word: string;
  start: number;
  end: number;
}

// ---------------------------------------------------------------------------------------------
// One transcription (or conversation) socket

class RealtimeSession implements WsHandler {
  private readonly conn: OpenAiRealtimeConnection;
  private readonly opts: ResolvedOpenAiRealtimeOptions;
  private readonly ws: WsSession;
  private readonly getFaults: () => RealtimeFaults;
  /** wake the emulator's waiters (records changed) */
  private readonly notify: () => void;
  private readonly expiresAt: number;
  private readonly timers = new Set<NodeJS.Timeout>();
  private idleTimer: NodeJS.Timeout | null = null;
  private ended = false;
  // audio
  private detector: SpeechDetector | null = null;
  private detectorFormat: RtAudioFormat | null = null;
  private detectorOffsetMs = 0;
  /** ms of audio appended since the socket opened */
  private audioMs = 0;
  /** start of the uncommitted buffer on that timeline */
  private bufferStartMs = 0;
  private pendingWords: Word[] = [];
  // VAD
  private speaking = false;
  private speechItemId: string | null = null;
  private lastVoicedEndMs = 0;
  // live models
  private liveItemId: string | null = null;
  private liveSent = 0;
  private lastItemId: string | null = null;
  private errorFaultFired = false;

  constructor(
    conn: OpenAiRealtimeConnection,
    opts: ResolvedOpenAiRealtimeOptions,
    getFaults: () => RealtimeFaults,
    notify: () => void,
    badKey: string | null,
  ) {
    this.conn = conn;
    this.notify = notify;
    this.opts = opts;
    this.ws = conn.session;
    this.getFaults = getFaults;
    this.expiresAt = Math.floor((conn.record.openedAt.getTime() + opts.maxSessionMs) / 1000);
    if (badKey !== null) {
      this.ended = true;
      const message = `Incorrect API key provided: ${maskApiKey(badKey)}. You can find your API key at https://platform.openai.com/account/api-keys.`;
      this.sendError({ type: 'invalid_request_error', code: 'invalid_api_key', message, param: null }, null);
      this.ws.close(BAD_KEY_CLOSE_CODE, BAD_KEY_CLOSE_REASON, { delayMs: opts.latencyMs });
      return;
    }
    this.greet();
    if (opts.maxSessionMs > 0) {
      this.later(opts.maxSessionMs, () => {
        if (this.ended) return;
        this.sendError({ type: 'invalid_request_error', code: 'session_expired', message: SESSION_EXPIRED_MESSAGE, param: null }, null);
        this.finish(1000, '');
      });
    }
    this.touch();
  }

  onMessage(data: Buffer, isBinary: boolean): void {
    if (this.ended) return;
    this.touch();
    if (isBinary) {
      this.sendError({ type: 'invalid_request_error', code: 'invalid_json', message: 'Binary frames are not supported: send JSON text events.', param: null }, null);
      return;
    }
    let msg: unknown;
    try {
      msg = JSON.parse(data.toString('utf8'));
    } catch {
      msg = undefined;
    }
    if (!isObject(msg)) {
      this.sendError({ type: 'invalid_request_error', code: 'invalid_json', message: "We could not parse the JSON body of your request. Expected a JSON object with a 'type'.", param: null }, null);
      return;
    }
    const eventId = typeof msg['event_id'] === 'string' ? msg['event_id'] : null;
    const type = msg['type'];
    if (this.conn.kind === 'conversation') {
      this.onConversationEvent(type, msg, eventId);
      return;
    }
    const supported = this.supportedTypes();
    if (typeof type !== 'string' || !supported.includes(type)) {
      if (type === undefined) this.sendError(missingParam('type').error, eventId);
      else this.sendError(invalidValue(type, supported, 'type').error, eventId);
      return;
    }
    switch (type) {
      case 'session.update':
        this.conn.counts.sessionUpdate++;
        this.update(applyGaUpdate(this.conn.config, msg['session'], this.ctx()), 'ga', eventId);
        return;
      case 'transcription_session.update':
        this.conn.counts.betaUpdate++;
        this.update(applyBetaUpdate(this.conn.config, msg['session'], this.ctx()), 'beta', eventId);
        return;
      case 'input_audio_buffer.append':
        this.append(msg['audio'], eventId);
        return;
      case 'input_audio_buffer.commit':
        this.conn.counts.commit++;
        this.clientCommit(eventId);
        return;
      case 'input_audio_buffer.clear':
        this.conn.counts.clear++;
        this.clear();
        return;
    }
  }

  onClose(): void {
    this.ended = true;
    this.clearTimers();
  }

  // -------------------------------------------------------------------------------------------

  private ctx(): ValidationContext {
    return { models: this.opts.models, liveModels: this.opts.liveModels };
  }

  private supportedTypes(): string[] {
    const audio = ['input_audio_buffer.append', 'input_audio_buffer.commit', 'input_audio_buffer.clear'];
    return this.conn.dialect === 'ga' ? ['session.update', 'transcription_session.update', ...audio] : ['transcription_session.update', ...audio];
  }

  private greet(): void {
    const id = this.conn.sessionId;
    if (this.conn.kind === 'conversation') {
      this.send({
        type: 'session.created',
        event_id: randomId('event'),
        session: {
          type: 'realtime',
          object: 'realtime.session',
          id,
          model: this.conn.urlModel ?? '',
          expires_at: this.expiresAt,
          output_modalities: ['audio'],
          audio: {
            input: {
              format: { type: 'audio/pcm', rate: REALTIME_PCM_RATE },
              transcription: null,
              noise_reduction: null,
              turn_detection: { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 200 },
            },
          },
          include: null,
        },
      });
      return;
    }
    if (this.conn.dialect === 'beta') {
      this.send({ type: 'transcription_session.created', event_id: randomId('event'), session: betaSessionObject(id, this.expiresAt, this.conn.config) });
    } else {
      this.send({ type: 'session.created', event_id: randomId('event'), session: gaSessionObject(id, this.expiresAt, this.conn.config) });
    }
  }

  private onConversationEvent(type: unknown, msg: Record<string, unknown>, eventId: string | null): void {
    if (type === 'input_audio_buffer.append') {
      this.conn.counts.append++;
      const bytes = typeof msg['audio'] === 'string' ? decodeBase64(msg['audio']) : null;
      if (bytes) this.countAudio(bytes.length);
      return;
    }
    if (type === 'session.update' && isObject(msg['session']) && msg['session']['type'] === 'transcription') {
      this.conn.counts.sessionUpdate++;
      this.sendError(invalidValue('transcription', ['realtime'], 'session.type').error, eventId);
      return;
    }
    this.sendError(
      {
        type: 'invalid_request_error',
        code: 'emulator_unsupported',
        message: 'The emulator implements transcription sessions only: connect with ?intent=transcription (conversation sessions accept audio and answer nothing else).',
        param: null,
      },
      eventId,
    );
  }

  private update(result: Check<SessionConfig>, form: 'ga' | 'beta', eventId: string | null): void {
    if (!result.ok) {
      this.sendError(result.error, eventId);
      return;
    }
    const before = this.conn.config;
    const next = result.value;
    if (!sameFormat(before.format, next.format)) this.retireDetector();
    if (before.turnDetection && !next.turnDetection) {
      this.speaking = false;
      this.speechItemId = null;
    }
    this.conn.config = next;
    const id = this.conn.sessionId;
    if (form === 'ga') this.send({ type: 'session.updated', event_id: randomId('event'), session: gaSessionObject(id, this.expiresAt, next) });
    else this.send({ type: 'transcription_session.updated', event_id: randomId('event'), session: betaSessionObject(id, this.expiresAt, next) });
  }

  // ---- audio --------------------------------------------------------------------------------

  private append(audio: unknown, eventId: string | null): void {
    this.conn.counts.append++;
    if (audio === undefined) {
      this.sendError(missingParam('audio').error, eventId);
      return;
    }
    if (typeof audio !== 'string') {
      this.sendError(invalidType('audio', 'a string', audio).error, eventId);
      return;
    }
    const bytes = decodeBase64(audio);
    if (!bytes) {
      this.sendError({ type: 'invalid_request_error', code: 'invalid_value', message: "Invalid value for 'audio': expected base64-encoded audio bytes.", param: 'audio' }, eventId);
      return;
    }
    if (bytes.length === 0) return;
    const seconds = this.countAudio(bytes.length);
    if (!this.ws.reportAudio(seconds)) {
      if (!this.ws.isOpen) this.stop();
      return;
    }
    this.ensureDetector();
    this.audioMs += seconds * 1000;
    this.handle(this.feed(bytes));
    this.errorFault();
  }

  private countAudio(bytes: number): number {
    const f = this.conn.config.format;
    const seconds = bytes / (rateOf(f) * bytesPerSample(f));
    this.conn.audioBytes += bytes;
    this.conn.audioSeconds += seconds;
    return seconds;
  }

  private ensureDetector(): void {
    const f = this.conn.config.format;
    if (this.detector && this.detectorFormat && sameFormat(this.detectorFormat, f)) return;
    this.retireDetector();
    this.detector = new SpeechDetector({ sampleRate: rateOf(f) });
    this.detectorFormat = f;
    this.detectorOffsetMs = this.audioMs;
  }

  /** The format changed: close what the old detector holds and start afresh on the next audio. */
  private retireDetector(): void {
    if (!this.detector) return;
    const d = this.detector;
    this.handle(d.end());
    this.detector = null;
    this.detectorFormat = null;
  }

  private feed(bytes: Buffer): DetectorEvent[] {
    const d = this.detector!;
    const f = this.detectorFormat!;
    if (f.type === 'audio/pcm') return d.push(bytes);
    const samples = new Int16Array(bytes.length);
    const dec = f.type === 'audio/pcmu' ? mulawToLinear : alawToLinear;
    for (let i = 0; i < bytes.length; i++) samples[i] = dec(bytes[i]!);
    return d.pushSamples(samples);
  }

  private handle(events: DetectorEvent[]): void {
    const off = this.detectorOffsetMs;
    for (const ev of events) {
      if (this.ended) return;
      switch (ev.type) {
        case 'word':
          this.onWord({ word: ev.word, start: (off + ev.start * 1000) / 1000, end: (off + ev.end * 1000) / 1000 });
          break;
        case 'window':
          this.onWindow(off + ev.start * 1000, off + ev.end * 1000, ev.voiced);
          break;
        default:
          break;
      }
    }
  }

  private onWord(w: Word): void {
    this.pendingWords.push(w);
    const t = this.conn.config.transcription;
    if (!t || !this.opts.liveModels.includes(t.model) || this.itemFaultBlocks()) return;
    // live model: each word goes out as soon as it is recognised, under the item's final id;
    // the final "." waits for the commit
    this.liveItemId ??= randomId('item');
    const pieces = formatPieces(this.pendingWords.map((x) => x.word), this.opts.punctuate);
    for (let i = this.liveSent; i < pieces.length; i++) {
      const p = pieces[i]!;
      this.sendDelta(this.liveItemId, this.opts.punctuate && i === pieces.length - 1 ? p.replace(/\.$/, '') : p);
    }
    this.liveSent = pieces.length;
  }

  private onWindow(startMs: number, endMs: number, voiced: boolean): void {
    const td = this.conn.config.turnDetection;
    if (!td) return;
    if (voiced) {
      this.lastVoicedEndMs = endMs;
      if (!this.speaking) {
        this.speaking = true;
        this.speechItemId = randomId('item');
        const prefix = td.type === 'server_vad' ? td.prefix_padding_ms : 300;
        this.send({
          type: 'input_audio_buffer.speech_started',
          event_id: randomId('event'),
          audio_start_ms: Math.round(Math.max(this.bufferStartMs, startMs - prefix)),
          item_id: this.speechItemId,
        });
      }
      return;
    }
    if (!this.speaking) return;
    const silence = td.type === 'server_vad' ? td.silence_duration_ms : this.semanticSilence(td.eagerness);
    if (endMs - this.lastVoicedEndMs + EPS < silence) return;
    const itemId = this.speechItemId ?? randomId('item');
    this.speaking = false;
    this.speechItemId = null;
    this.send({ type: 'input_audio_buffer.speech_stopped', event_id: randomId('event'), audio_end_ms: Math.round(endMs), item_id: itemId });
    this.commit(endMs, itemId, 'server_vad');
  }

  private semanticSilence(e: RtSemanticVad['eagerness']): number {
    const s = this.opts.semanticSilenceMs;
    return e === 'low' ? s.low : e === 'high' ? s.high : s.medium;
  }

  // ---- buffer commands ----------------------------------------------------------------------

  private clientCommit(eventId: string | null): void {
    if (this.detector) this.handle(this.detector.flush());
    if (this.ended) return;
    const bufferMs = this.audioMs - this.bufferStartMs;
    if (bufferMs + EPS < MIN_COMMIT_MS) {
      const shown = Math.max(0, bufferMs).toFixed(2);
      this.sendError(
        {
          type: 'invalid_request_error',
          code: 'input_audio_buffer_commit_empty',
          message: `Error committing input audio buffer: buffer too small. Expected at least ${MIN_COMMIT_MS}ms of audio, but buffer only has ${shown}ms of audio.`,
          param: null,
        },
        eventId,
      );
      return;
    }
    const itemId = (this.speaking ? this.speechItemId : null) ?? this.liveItemId ?? randomId('item');
    this.speaking = false;
    this.speechItemId = null;
    this.commit(this.audioMs, itemId, 'client');
  }

  private clear(): void {
    if (this.detector) this.detector.flush();
    this.pendingWords = [];
    this.liveItemId = null;
    this.liveSent = 0;
    this.speaking = false;
    this.speechItemId = null;
    this.bufferStartMs = this.audioMs;
    this.send({ type: 'input_audio_buffer.cleared', event_id: randomId('event') });
  }

  private commit(endMs: number, itemId: string, by: 'client' | 'server_vad'): void {
    const words = this.pendingWords;
    const liveSent = this.liveItemId === itemId ? this.liveSent : 0;
    this.pendingWords = [];
    this.liveItemId = null;
    this.liveSent = 0;
    const startMs = this.bufferStartMs;
    this.bufferStartMs = endMs;
    const previous = this.lastItemId;
    this.lastItemId = itemId;
    const t = this.conn.config.transcription;
    const item: RealtimeItemRecord = {
      id: itemId,
      previousItemId: previous,
      committedBy: by,
      startMs,
      endMs,
      words: words.map((w) => ({ ...w })),
      model: t ? t.model : null,
      transcript: null,
      outcome: t ? 'pending' : 'untranscribed',
    };
    this.conn.items.push(item);
    this.send({ type: 'input_audio_buffer.committed', event_id: randomId('event'), item_id: itemId, previous_item_id: previous });
    const userItem = (): RtUserAudioItem => ({
      id: itemId,
      object: 'realtime.item',
      type: 'message',
      status: 'completed',
      role: 'user',
      content: [{ type: 'input_audio', transcript: null }],
    });
    if (this.conn.dialect === 'ga') {
      this.send({ type: 'conversation.item.added', event_id: randomId('event'), previous_item_id: previous, item: userItem() });
      this.send({ type: 'conversation.item.done', event_id: randomId('event'), previous_item_id: previous, item: userItem() });
    } else {
      this.send({ type: 'conversation.item.created', event_id: randomId('event'), previous_item_id: previous, item: userItem() });
    }
    if (t) this.transcribe(item, t, liveSent);
  }

  private itemFaultBlocks(): boolean {
    const f = this.getFaults();
    return f.stallTranscription || f.failTranscription !== null;
  }

  private transcribe(item: RealtimeItemRecord, t: NonNullable<SessionConfig['transcription']>, liveSent: number): void {
    const faults = this.getFaults();
    if (faults.stallTranscription) {
      item.outcome = 'stalled';
      return;
    }
    const base = this.opts.transcriptionDelayMs;
    if (faults.failTranscription) {
      const f = faults.failTranscription;
      item.outcome = 'failed';
      this.later(base, () =>
        this.send({
          type: 'conversation.item.input_audio_transcription.failed',
          event_id: randomId('event'),
          item_id: item.id,
          content_index: 0,
          error: {
            type: f.type ?? 'server_error',
            code: f.code ?? 'transcription_failed',
            message: f.message ?? 'Input transcription failed.',
            param: '',
          },
        }),
      );
      return;
    }
    const words = item.words.map((w) => w.word);
    const pieces = formatPieces(words, this.opts.punctuate);
    const transcript = pieces.join('');
    item.transcript = transcript;
    let deltas: string[];
    if (this.opts.liveModels.includes(t.model)) {
      // words streamed before the commit are not repeated; the rest (or the held-back ".") now
      if (liveSent < pieces.length) deltas = pieces.slice(liveSent);
      else deltas = liveSent > 0 && this.opts.punctuate ? ['.'] : [];
    } else if (t.model === 'whisper-1') {
      deltas = transcript ? [transcript] : [];
    } else {
      deltas = pieces;
    }
    const interval = this.opts.deltaIntervalMs;
    deltas.forEach((d, i) => this.later(base + i * interval, () => this.sendDelta(item.id, d)));
    const usage = this.usage(item, t, transcript);
    this.later(base + deltas.length * interval, () => {
      const ev: RtTranscriptionCompleted = {
        type: 'conversation.item.input_audio_transcription.completed',
        event_id: randomId('event'),
        item_id: item.id,
        content_index: 0,
        transcript,
        usage,
      };
      if (this.wantsLogprobs()) ev.logprobs = transcript ? logprobsFor(transcript) : [];
      item.outcome = 'completed';
      this.send(ev);
    });
  }

  private usage(item: RealtimeItemRecord, t: NonNullable<SessionConfig['transcription']>, transcript: string): RtUsage {
    const seconds = Math.max(0, (item.endMs - item.startMs) / 1000);
    if (t.model === 'whisper-1' || this.opts.liveModels.includes(t.model)) {
      return { type: 'duration', seconds: Math.ceil(seconds - EPS) };
    }
    const audioTokens = Math.ceil((seconds * 1000) / 60 - EPS);
    const textTokens = t.prompt ? Math.ceil(t.prompt.length / 4) : 0;
    const output = Math.ceil(transcript.length / 4);
    const input = audioTokens + textTokens;
    return { type: 'tokens', input_tokens: input, output_tokens: output, total_tokens: input + output, input_token_details: { audio_tokens: audioTokens, text_tokens: textTokens } };
  }

  private wantsLogprobs(): boolean {
    return this.conn.config.include?.includes(LOGPROBS_INCLUDE) ?? false;
  }

  private sendDelta(itemId: string, delta: string): void {
    const ev: RtTranscriptionDelta = {
      type: 'conversation.item.input_audio_transcription.delta',
      event_id: randomId('event'),
      item_id: itemId,
      content_index: 0,
      delta,
    };
    if (this.wantsLogprobs()) ev.logprobs = logprobsFor(delta);
    this.send(ev);
  }

  // ---- faults, timers, output ---------------------------------------------------------------

  private errorFault(): void {
    const f = this.getFaults().errorAfterAudioSec;
    if (!f || this.errorFaultFired || this.conn.audioSeconds + EPS < f.seconds) return;
    this.errorFaultFired = true;
    this.sendError(
      {
        type: f.type ?? 'server_error',
        code: f.code === undefined ? null : f.code,
        message: f.message ?? 'The server had an error while processing your request. Sorry about that!',
        param: null,
      },
      null,
    );
    if (f.close) this.finish(f.close.code, f.close.reason);
  }

  private sendError(e: Omit<RtErrorBody, 'event_id'>, eventId: string | null): void {
    this.conn.counts.errors++;
    this.send({ type: 'error', event_id: randomId('event'), error: { ...e, event_id: eventId } });
  }

  private send(ev: RtServerEvent): void {
    if (this.ws.record.closed) return;
    this.conn.sent.push(ev);
    this.ws.send(JSON.stringify(ev), { delayMs: this.opts.latencyMs });
    this.notify();
  }

  /** Run now (0 ms) or after a tracked timer. */
  private later(ms: number, fn: () => void): void {
    if (ms <= 0) {
      fn();
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.ws.record.closed) fn();
    }, ms);
    this.timers.add(t);
  }

  private finish(code: number, reason: string): void {
    this.stop();
    this.ws.close(code, reason, { delayMs: this.opts.latencyMs });
  }

  private stop(): void {
    this.ended = true;
    this.clearTimers();
  }

  private touch(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (this.ended || this.opts.idleTimeoutMs <= 0) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (!this.ended) this.finish(1000, 'idle timeout');
    }, this.opts.idleTimeoutMs);
  }

  private clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}

// ---------------------------------------------------------------------------------------------
// The emulator

interface AcceptState {
  apiKey: string;
  badKey: boolean;
  authVia: 'header' | 'subprotocol';
  kind: 'transcription' | 'conversation';
  dialect: 'ga' | 'beta';
  urlModel: string | null;
  requestId: string;
}

export class OpenAiRealtimeEmulator {
  readonly server: EmulatorServer;
  /** live options: changes apply to connections opened afterwards */
  readonly options: ResolvedOpenAiRealtimeOptions;
  readonly connections: OpenAiRealtimeConnection[];
  /** provider fault switches, server-wide (mutable; merged under each conn.faults) */
  realtimeFaults: RealtimeFaults = defaultRealtimeFaults();

  constructor(server: EmulatorServer, options: ResolvedOpenAiRealtimeOptions, connections: OpenAiRealtimeConnection[]) {
    this.server = server;
    this.options = options;
    this.connections = connections;
  }

  get url(): string {
    return this.server.url;
  }
  get wsUrl(): string {
    return this.server.wsUrl;
  }
  /** `ws://127.0.0.1:PORT/v1/realtime?intent=transcription` */
  get transcriptionUrl(): string {
    return `${this.server.wsUrl}${this.options.path}?intent=transcription`;
  }
  /** what an OpenAI SDK takes as baseURL: `${url}/v1` */
  get baseUrl(): string {
    return `${this.server.url}/v1`;
  }
  get port(): number {
    return this.server.port;
  }
  /** base fault switches, server-wide (mutable) */
  get faults(): FaultSwitches {
    return this.server.faults;
  }
  set faults(f: FaultSwitches) {
    this.server.faults = f;
  }
  faultNext(f: Partial<FaultSwitches>): void {
    this.server.faultNext(f);
  }
  resetFaults(): void {
    this.server.resetFaults();
    this.realtimeFaults = defaultRealtimeFaults();
  }
  get rejected() {
    return this.server.rejected;
  }
  get records(): ConnectionRecord[] {
    return this.server.connections;
  }

  waitForConnection(n = 1, timeoutMs = 2000): Promise<OpenAiRealtimeConnection> {
    return this.server.waitFor(() => this.connections[n - 1], timeoutMs, `openai-realtime connection #${n}`);
  }

  waitForClose(conn?: OpenAiRealtimeConnection, timeoutMs = 2000): Promise<OpenAiRealtimeConnection> {
    return this.server.waitFor(() => {
      const c = conn ?? this.connections[this.connections.length - 1];
      return c && c.record.closed ? c : undefined;
    }, timeoutMs, 'openai-realtime connection close');
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  close(): Promise<void> {
    return this.server.close();
  }
}

function parseAuth(req: IncomingMessage): { key: string; via: 'header' | 'subprotocol' } | null {
  const h = req.headers.authorization;
  if (typeof h === 'string') {
    const m = /^\s*bearer\s+(\S+)\s*$/i.exec(h);
    return m ? { key: m[1]!, via: 'header' } : null;
  }
  const proto = req.headers['sec-websocket-protocol'];
  if (typeof proto === 'string') {
    for (const p of proto.split(',').map((s) => s.trim())) {
      if (p.startsWith('openai-insecure-api-key.')) return { key: p.slice('openai-insecure-api-key.'.length), via: 'subprotocol' };
    }
  }
  return null;
}

function wantsBeta(req: IncomingMessage): boolean {
  const h = req.headers['openai-beta'];
  const values = Array.isArray(h) ? h : typeof h === 'string' ? [h] : [];
  if (values.some((v) => /realtime=v1/.test(v))) return true;
  const proto = req.headers['sec-websocket-protocol'];
  return typeof proto === 'string' && proto.split(',').some((p) => p.trim() === 'openai-beta.realtime-v1');
}

export async function startOpenAiRealtimeEmulator(opts: OpenAiRealtimeEmulatorOptions = {}): Promise<OpenAiRealtimeEmulator> {
  const path = (opts.path ?? REALTIME_PATH).replace(/\/+$/, '') || '/';
  const options: ResolvedOpenAiRealtimeOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_OPENAI_API_KEY],
    path,
    models: opts.models ?? [...REALTIME_TRANSCRIPTION_MODELS],
    liveModels: opts.liveModels ?? [...LIVE_TRANSCRIPTION_MODELS],
    dialect: opts.dialect ?? 'auto',
    lenientUrl: opts.lenientUrl ?? false,
    badKeyAnswer: opts.badKeyAnswer ?? 'event',
    punctuate: opts.punctuate ?? true,
    latencyMs: opts.latencyMs ?? 0,
    transcriptionDelayMs: opts.transcriptionDelayMs ?? 0,
    deltaIntervalMs: opts.deltaIntervalMs ?? 0,
    maxSessionMs: opts.maxSessionMs ?? 3_600_000,
    idleTimeoutMs: opts.idleTimeoutMs ?? 0,
    semanticSilenceMs: opts.semanticSilenceMs ?? { low: 1500, medium: 800, high: 400 },
    recordAudio: opts.recordAudio ?? false,
  };
  const connections: OpenAiRealtimeConnection[] = [];
  let emu: OpenAiRealtimeEmulator | null = null;

  const onUpgrade = (ctx: UpgradeContext): UpgradeDecision<AcceptState> => {
    const requestId = openAiRequestId();
    const reject = (e: ReturnType<typeof openAiError>): UpgradeDecision<AcceptState> => ({
      accept: false,
      status: e.status,
      headers: { 'x-request-id': requestId },
      body: e.body,
    });
    const p = ctx.url.pathname.replace(/\/+$/, '') || '/';
    if (p !== options.path) return reject(openAiRouteError('GET', ctx.url.pathname, 'url', requestId));
    const auth = parseAuth(ctx.req);
    if (!auth) return reject(openAiError(401, { requestId, message: OPENAI_MISSING_KEY_MESSAGE, code: null }));
    const valid = options.apiKeys.includes(auth.key);
    if (!valid && options.badKeyAnswer === 'http') {
      const message = `Incorrect API key provided: ${maskApiKey(auth.key)}. You can find your API key at https://platform.openai.com/account/api-keys.`;
      return reject(openAiError(401, { requestId, message, code: 'invalid_api_key' }));
    }
    const intent = ctx.query['intent']?.at(-1);
    const model = ctx.query['model']?.at(-1) ?? null;
    let kind: AcceptState['kind'];
    if (options.lenientUrl) kind = 'transcription';
    else if (intent !== undefined) {
      if (intent !== 'transcription') {
        return reject(openAiError(400, { requestId, message: `Invalid value: '${intent}'. Supported values are: 'transcription'.`, param: 'intent', code: 'invalid_value' }));
      }
      kind = 'transcription';
    } else if (model !== null && model !== '') kind = 'conversation';
    else return reject(openAiError(400, { requestId, message: "Missing required parameter: 'model'.", param: 'model', code: 'missing_required_parameter' }));
    const dialect = options.dialect === 'auto' ? (wantsBeta(ctx.req) ? 'beta' : 'ga') : options.dialect;
    return {
      accept: true,
      headers: { 'x-request-id': requestId },
      state: { apiKey: auth.key, badKey: !valid, authVia: auth.via, kind, dialect, urlModel: model, requestId },
    };
  };

  const server = await startEmulatorServer<AcceptState>({
    name: 'openai-realtime',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    recordAudio: options.recordAudio,
    onUpgrade,
    onConnection: (session, _ctx, state) => {
      const config = defaultSessionConfig();
      if (options.lenientUrl && state.urlModel && options.models.includes(state.urlModel)) {
        config.transcription = { model: state.urlModel, language: null, prompt: null };
        if (options.liveModels.includes(state.urlModel)) config.turnDetection = null;
      }
      const conn: OpenAiRealtimeConnection = {
        record: session.record,
        session,
        sessionId: randomId('sess'),
        apiKey: state.apiKey,
        authVia: state.authVia,
        kind: state.kind,
        dialect: state.dialect,
        urlModel: state.urlModel,
        config,
        faults: {},
        counts: { append: 0, commit: 0, clear: 0, sessionUpdate: 0, betaUpdate: 0, errors: 0 },
        audioSeconds: 0,
        audioBytes: 0,
        items: [],
        sent: [],
      };
      connections.push(conn);
      const getFaults = (): RealtimeFaults => ({ ...(emu?.realtimeFaults ?? defaultRealtimeFaults()), ...conn.faults });
      return new RealtimeSession(conn, { ...options }, getFaults, () => emu?.server.changed(), state.badKey ? state.apiKey : null);
    },
    formatError: (status, message) => {
      const e = openAiError(status, { message });
      return { headers: { 'x-request-id': e.headers['x-request-id']! }, body: e.body };
    },
  });
  emu = new OpenAiRealtimeEmulator(server, options, connections);
  return emu;
}
