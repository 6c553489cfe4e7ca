/**
 * Emulator of AssemblyAI's Universal Streaming API v3 (`wss://streaming.assemblyai.com/v3/ws`) and
 * its temporary-token endpoint (`GET /v3/token`):
 * https://www.assemblyai.com/docs/api-reference/streaming-api/streaming-api
 *
 * Written from ../../../shared/providers.md §3, §9 "AssemblyAI v3" and these public sources, never
 * from the gateway adapter:
 * - AssemblyAI/assemblyai-api-spec: `usm-streaming.yml` (AsyncAPI: query parameters, Begin / Turn /
 *   Termination payloads, words in ms), `streaming-token.yml` (GET /v3/token, 1-600 s,
 *   max_session_duration_seconds 60-10800, `{"error"}` bodies), and the pages
 *   `fern/pages/speech-to-text/universal-streaming/{universal-streaming-messages,
 *   u3-pro-message-sequence, universal-3-pro, turn-detection, common-errors, concurrency,
 *   temporary-token, universal-streaming-keyterms}.mdx`;
 * - https://www.assemblyai.com/docs/voice-agents/livekit-u3-rt-pro (u3-rt-pro API defaults
 *   min_turn_silence 100 ms, max_turn_silence 1000 ms);
 * - the `assemblyai@4.41.5` SDK sources (`src/services/streaming/service.ts`,
 *   `src/types/streaming/index.ts`, `src/utils/errors/streaming.ts`): query names, message types.
 *
 * Facts relied on:
 * - auth: `Authorization: <api key>` (raw key, no scheme) or `?token=<temporary token>`; a token
 *   is single-use, valid for `expires_in_seconds` and caps the session at
 *   `max_session_duration_seconds`. Auth problems close the socket 1008 "Unauthorized Connection:
 *   …" after the upgrade (documented as a close, not an HTTP status); exceeding the new-sessions
 *   rate closes 1008 "Unauthorized connection: Too many concurrent sessions"; 3009 is the
 *   concurrency-limit close.
 * - `Begin {id, expires_at}` first (the SDK gives up after 1 s); audio = binary frames of 50-1000 ms
 *   each, else close 3007 "Input duration violation: <n> ms. Expected between 50 and 1000 ms";
 *   faster than real time -> 3007 "Audio Transmission Rate Exceeded: …"; invalid JSON / message
 *   type / message -> 3006; max session (3 h) -> 3008; control messages ForceEndpoint,
 *   UpdateConfiguration, KeepAlive, Terminate -> last Turn(s), Termination, close 1000.
 * - universal-streaming: word-by-word partial Turns; a word first appears with word_is_final
 *   false and `transcript` holds only finalized words; end of turn when (semantic) confidence >
 *   end_of_turn_confidence_threshold and silence >= min_turn_silence (default 400 ms), or (acoustic)
 *   silence >= max_turn_silence (1280 ms); at least 80 ms of speech since the last end of turn;
 *   `utterance` is filled once the utterance is complete (on the end-of-turn message, or on a
 *   partial when the turn does not end yet); format_turns=true adds a second end-of-turn Turn
 *   with turn_is_formatted true and the same turn_order.
 * - u3-rt-pro family: no partials while speaking; when silence reaches min_turn_silence (100 ms)
 *   the turn ends if the text has terminal punctuation (end_of_turn_confidence 1,
 *   turn_is_formatted true, utterance == transcript), else one partial per silence period
 *   (confidence 0, all words non-final, transcript ending in "—"); max_turn_silence (1000 ms)
 *   forces the end of turn. SpeechStarted {timestamp ms} precedes the first Turn of a turn.
 *
 * Deterministic rules (AUDIO time, 10 ms analysis windows of ./audio.ts; messages leave as soon as
 * the audio that triggers them arrives, plus `latencyMs`):
 * - One word per voiced tone segment (the vocabulary of ./audio.ts). A word is reported when it
 *   ends; universal models then send a partial Turn in which the new word is non-final and all
 *   earlier words are final.
 * - The semantic end-of-turn confidence of a turn is `endOfTurnConfidence(words)` (default 0.75
 *   for every turn): with the default threshold 0.4 turns end min_turn_silence after the last
 *   word; with a threshold >= 0.75 they end at max_turn_silence. Partials carry
 *   `partialEndOfTurnConfidence` (0.01).
 * - u3 models: a turn "ends with terminal punctuation" when `sentenceComplete(words)` (default:
 *   always). Formatting = first word capitalised, "." after the last word (u3 partials: "—").
 * - ForceEndpoint: the word in progress is closed and, when the turn has words, its end-of-turn
 *   Turn(s) are sent at once; otherwise nothing. Terminate: the same, then Termination
 *   (audio_duration_seconds = audio received, session_duration_seconds = wall time, both rounded
 *   to integers as the spec types them) and close 1000.
 * - speaker_labels=true: words[].speaker and speaker_label are "A"/"B" alternating per turn.
 *   language_detection=true: language_code "en", language_confidence 0.99 on utterances and ends.
 *
 * UNCERTAIN choices (not settled by the docs we have):
 * - Invalid query parameters close 3006 "Invalid Query Parameter: <detail>" before Begin (the
 *   3006 family is "Input validation error" in the SDK); a missing sample_rate or speech_model is
 *   such an error (2026 docs: speech_model is required). A wrong key closes 1008 "Unauthorized
 *   Connection: Invalid API key"; a spent/expired/unknown token 1008 "Unauthorized Connection:
 *   Invalid temporary token".
 * - inactivity_timeout: no audio and no message for that many seconds -> Termination, then close
 *   1000 "Session Terminated: Inactivity timeout" (close code undocumented).
 * - The transmission-rate check is off by default (`maxRealtimeFactor: null`): test clients send
 *   recorded audio faster than real time. Heartbeat / Silence / SpeakerRevision / LLM gateway
 *   messages and the u3 "early partial" after 750 ms of speech are not emulated.
 * - ForceEndpoint without words in the turn sends nothing; a forced u3 end of turn (ForceEndpoint,
 *   max_turn_silence) without terminal punctuation has confidence 0 and no final ".".
 * - Keyterms longer than 50 characters are accepted (the docs say they are ignored); more than 100
 *   keyterms close 3006. `prompt` together with `keyterms_prompt` closes 3006.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
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
import { SpeechDetector, mulawToLinear, type DetectorEvent } from './audio.ts';

export const DEFAULT_API_KEY = 'aai-test-key';

export const CLOSE = {
  normal: 1000,
  unauthorized: 1008,
  serverError: 3005,
  invalidInput: 3006,
  inputDuration: 3007,
  sessionExpired: 3008,
  tooManySessions: 3009,
} as const;

export const REASONS = {
  missingAuth: 'Unauthorized Connection: Missing Authorization header',
  invalidKey: 'Unauthorized Connection: Invalid API key',
  invalidToken: 'Unauthorized Connection: Invalid temporary token',
  rateLimited: 'Unauthorized connection: Too many concurrent sessions',
  concurrency: 'Unauthorized Connection: Too many concurrent sessions',
  sessionExpired: 'Session Expired: Maximum session duration exceeded',
  inactivity: 'Session Terminated: Inactivity timeout',
  serverError: 'Session Cancelled: An error occurred',
} as const;

export const SPEECH_MODELS = [
  'universal-streaming-english',
  'universal-streaming-multilingual',
  'whisper-rt',
  'u3-rt-pro',
  'u3-rt-pro-beta-1',
  'u3-pro',
  'universal-3-5-pro',
  'universal-3-6',
  'universal-3-6-pro',
] as const;
export type SpeechModel = (typeof SPEECH_MODELS)[number];

/** Models with punctuation-based turn detection and partials only in silence. */
export const U3_MODELS: readonly string[] = ['u3-rt-pro', 'u3-rt-pro-beta-1', 'u3-pro', 'universal-3-5-pro', 'universal-3-6', 'universal-3-6-pro'];

export const ENCODINGS = ['pcm_s16le', 'pcm_mulaw', 'opus', 'ogg_opus', 'aac'] as const;

export interface AssemblyAiEmulatorOptions {
  /** keys accepted in the Authorization header and by GET /v3/token (default ['aai-test-key']) */
  apiKeys?: string[];
  port?: number;
  host?: string;
  /** TLS: the official SDK refuses anything but wss:// */
  tls?: TlsOptions;
  /** close 3006 when speech_model is missing (2026 docs); false = default universal-streaming-english */
  requireSpeechModel?: boolean;
  /** new sessions per rolling minute per key before 1008 (default Infinity) */
  maxSessionsPerMinute?: number;
  /** open sessions per key before 3009 (default Infinity: paid accounts have no cap) */
  maxConcurrent?: number;
  /** session cap in seconds (default 10800 = 3 h); a token's max_session_duration_seconds lowers it */
  maxSessionSeconds?: number;
  /** wall-clock ms per "second" of every second-based timeout (inactivity, session cap, token expiry); default 1000 */
  timeoutSecondMs?: number;
  /** enforce 50-1000 ms per audio message (default true) */
  enforceChunkDuration?: boolean;
  /** audio faster than this × wall time (+ realtimeBurstSec) closes 3007; null = unchecked (default) */
  maxRealtimeFactor?: number | null;
  /** audio seconds allowed ahead of real time before the rate check fires (default 2) */
  realtimeBurstSec?: number;
  /** semantic end-of-turn confidence of a turn (universal models; default 0.75) */
  endOfTurnConfidence?: number | ((words: readonly string[]) => number);
  /** end_of_turn_confidence of partial Turns (default 0.01) */
  partialEndOfTurnConfidence?: number;
  /** u3 models: does the turn end with terminal punctuation? (default: always) */
  sentenceComplete?: (words: readonly string[]) => boolean;
  /** SpeechStarted at the first speech of a turn: for u3 models only (default), always, or never */
  speechStarted?: 'u3' | 'always' | 'never';
  /** delay of Begin after the upgrade (default 0; the SDK times out after 1000 ms) */
  beginDelayMs?: number;
  /** extra wall-clock delay before every message (default 0) */
  latencyMs?: number;
  /** keep binary payloads in the wire record */
  recordAudio?: boolean;
}

export type ResolvedAssemblyAiOptions = Required<Omit<AssemblyAiEmulatorOptions, 'port' | 'host' | 'tls'>>;

// ---------------------------------------------------------------------------------------------
// Wire types (field names of the AsyncAPI spec and the SDK's TurnEvent / BeginEvent / ...)

export interface AaiWord {
  start: number;
  end: number;
  text: string;
  confidence: number;
  word_is_final: boolean;
  speaker?: string;
}

export interface AaiBegin {
  type: 'Begin';
  id: string;
  expires_at: number;
}

export interface AaiTurn {
  turn_order: number;
  turn_is_formatted: boolean;
  end_of_turn: boolean;
  transcript: string;
  end_of_turn_confidence: number;
  words: AaiWord[];
  utterance: string;
  language_code?: string;
  language_confidence?: number;
  speaker_label?: string;
  type: 'Turn';
}

export interface AaiSpeechStarted {
  type: 'SpeechStarted';
  timestamp: number;
}

export interface AaiTermination {
  type: 'Termination';
  audio_duration_seconds: number;
  session_duration_seconds: number;
}

export type AaiServerMessage = AaiBegin | AaiTurn | AaiSpeechStarted | AaiTermination;

// ---------------------------------------------------------------------------------------------
// Query parameters

export interface StreamingParams {
  speechModel: SpeechModel;
  u3: boolean;
  sampleRate: number;
  encoding: (typeof ENCODINGS)[number];
  formatTurns: boolean;
  endOfTurnConfidenceThreshold: number;
  /** ms */
  minTurnSilence: number;
  /** ms */
  maxTurnSilence: number;
  vadThreshold: number;
  keytermsPrompt: string[];
  prompt: string | null;
  agentContext: string | null;
  /** seconds, or null when not set */
  inactivityTimeout: number | null;
  languageDetection: boolean;
  speakerLabels: boolean;
  maxSpeakers: number | null;
  /** query keys the emulator does not know (accepted) */
  unknown: string[];
  raw: Record<string, string[]>;
}

export type ParamCheck = { ok: true; params: StreamingParams } | { ok: false; reason: string };

const BOOLEAN_PARAMS = [
  'format_turns', 'language_detection', 'speaker_labels', 'session_heartbeat', 'acknowledge_silence', 'filter_profanity',
  'continuous_partials', 'include_partial_turns', 'redact_pii', '_customer_support_audio_capture', 'customer_support_audio_capture',
];
const KNOWN_PARAMS = new Set([
  ...BOOLEAN_PARAMS, 'token', 'sample_rate', 'encoding', 'speech_model', 'end_of_turn_confidence_threshold',
  'min_end_of_turn_silence_when_confident', 'min_turn_silence', 'max_turn_silence', 'vad_threshold', 'keyterms_prompt',
  'prompt', 'agent_context', 'inactivity_timeout', 'max_speakers', 'language', 'language_code', 'language_codes', 'domain',
  'voice_focus', 'voice_focus_threshold', 'interruption_delay', 'turn_left_pad_ms', 'redact_pii_policies', 'redact_pii_sub',
  'mode', 'llm_gateway', 'webhook_url', 'webhook_auth_header_name', 'webhook_auth_header_value',
  'speaker_labels_revision_interval_ms',
]);
const MAX_KEYTERMS = 100;

/** Validate /v3/ws query parameters; `reason` is the close reason after "Invalid Query Parameter: ". */
export function parseStreamingQuery(query: Record<string, string[]>, opts: { requireSpeechModel: boolean }): ParamCheck {
  const bad = (reason: string): ParamCheck => ({ ok: false, reason });
  const last = (k: string): string | undefined => {
    const v = query[k];
    return v ? v[v.length - 1] : undefined;
  };
  const bools: Record<string, boolean> = {};
  for (const k of BOOLEAN_PARAMS) {
    const v = last(k);
    if (v === undefined) continue;
    const lc = v.toLowerCase();
    if (lc !== 'true' && lc !== 'false') return bad(`${k} must be true or false, got '${v}'`);
    bools[k] = lc === 'true';
  }
  const num = (k: string, min: number, max: number, integer: boolean): number | null | string => {
    const v = last(k);
    if (v === undefined) return null;
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
      return `${k} must be ${integer ? 'an integer' : 'a number'} between ${min} and ${max}, got '${v}'`;
    }
    return n;
  };

  const modelRaw = last('speech_model');
  let speechModel: SpeechModel;
  if (modelRaw === undefined || modelRaw === '') {
    if (opts.requireSpeechModel) return bad('speech_model is required');
    speechModel = 'universal-streaming-english';
  } else if ((SPEECH_MODELS as readonly string[]).includes(modelRaw)) {
    speechModel = modelRaw as SpeechModel;
  } else {
    return bad(`speech_model must be one of ${SPEECH_MODELS.join(', ')}, got '${modelRaw}'`);
  }
  const u3 = U3_MODELS.includes(speechModel);

  const encoding = (last('encoding') ?? 'pcm_s16le') as StreamingParams['encoding'];
  if (!(ENCODINGS as readonly string[]).includes(encoding)) return bad(`encoding must be one of ${ENCODINGS.join(', ')}, got '${encoding}'`);
  const selfDescribing = encoding !== 'pcm_s16le' && encoding !== 'pcm_mulaw';
  const sr = num('sample_rate', 1, 1_000_000, true);
  if (typeof sr === 'string') return bad(sr);
  if (sr === null && !selfDescribing) return bad('sample_rate is required for PCM audio');

  const checks: Array<[string, number, number, boolean]> = [
    ['end_of_turn_confidence_threshold', 0, 1, false],
    ['min_end_of_turn_silence_when_confident', 0, 60_000, true],
    ['min_turn_silence', 0, 60_000, true],
    ['max_turn_silence', 0, 60_000, true],
    ['vad_threshold', 0, 1, false],
    ['inactivity_timeout', 5, 3600, true],
    ['max_speakers', 1, 10, true],
  ];
  const nums: Record<string, number> = {};
  for (const [k, min, max, integer] of checks) {
    const r = num(k, min, max, integer);
    if (typeof r === 'string') return bad(r);
    if (r !== null) nums[k] = r;
  }

  let keyterms: string[] = [];
  const kt = last('keyterms_prompt');
  if (kt !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(kt);
    } catch {
      return bad('keyterms_prompt must be a JSON array of strings');
    }
    if (!Array.isArray(parsed) || !parsed.every((t) => typeof t === 'string')) return bad('keyterms_prompt must be a JSON array of strings');
    if (parsed.length > MAX_KEYTERMS) return bad(`keyterms_prompt accepts at most ${MAX_KEYTERMS} terms, got ${parsed.length}`);
    keyterms = parsed as string[];
  }
  const prompt = last('prompt') ?? null;
  if (prompt !== null && keyterms.length > 0) return bad('prompt and keyterms_prompt cannot be used together');

  return {
    ok: true,
    params: {
      speechModel,
      u3,
      sampleRate: sr ?? 16000,
      encoding,
      formatTurns: bools['format_turns'] ?? false,
      endOfTurnConfidenceThreshold: nums['end_of_turn_confidence_threshold'] ?? 0.4,
      minTurnSilence: nums['min_turn_silence'] ?? nums['min_end_of_turn_silence_when_confident'] ?? (u3 ? 100 : 400),
      maxTurnSilence: nums['max_turn_silence'] ?? (u3 ? 1000 : 1280),
      vadThreshold: nums['vad_threshold'] ?? 0.4,
      keytermsPrompt: keyterms,
      prompt,
      agentContext: last('agent_context') ?? null,
      inactivityTimeout: nums['inactivity_timeout'] ?? null,
      languageDetection: bools['language_detection'] ?? false,
      speakerLabels: bools['speaker_labels'] ?? false,
      maxSpeakers: nums['max_speakers'] ?? null,
      unknown: Object.keys(query).filter((k) => !KNOWN_PARAMS.has(k)),
      raw: query,
    },
  };
}

/**
 * Apply an UpdateConfiguration message to live params. Returns an error text for an invalid
 * field (closes 3006), else null. Unknown fields are ignored (recorded by the caller).
 */
export function applyUpdateConfiguration(p: StreamingParams, msg: Record<string, unknown>): string | null {
  const numField = (k: string, min: number, max: number): number | undefined | string => {
    if (!(k in msg) || msg[k] === null) return undefined;
    const v = msg[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) return `${k} must be a number between ${min} and ${max}`;
    return v;
  };
  const next = { ...p };
  const thr = numField('end_of_turn_confidence_threshold', 0, 1);
  if (typeof thr === 'string') return thr;
  if (thr !== undefined) next.endOfTurnConfidenceThreshold = thr;
  const minOld = numField('min_end_of_turn_silence_when_confident', 0, 60_000);
  if (typeof minOld === 'string') return minOld;
  const minNew = numField('min_turn_silence', 0, 60_000);
  if (typeof minNew === 'string') return minNew;
  if (minNew !== undefined || minOld !== undefined) next.minTurnSilence = (minNew ?? minOld)!;
  const max = numField('max_turn_silence', 0, 60_000);
  if (typeof max === 'string') return max;
  if (max !== undefined) next.maxTurnSilence = max;
  const vad = numField('vad_threshold', 0, 1);
  if (typeof vad === 'string') return vad;
  if (vad !== undefined) next.vadThreshold = vad;
  if ('format_turns' in msg && msg['format_turns'] !== null) {
    if (typeof msg['format_turns'] !== 'boolean') return 'format_turns must be a boolean';
    next.formatTurns = msg['format_turns'];
  }
  if ('keyterms_prompt' in msg && msg['keyterms_prompt'] !== null) {
    const kt = msg['keyterms_prompt'];
    if (!Array.isArray(kt) || !kt.every((t) => typeof t === 'string')) return 'keyterms_prompt must be an array of strings';
    if (kt.length > MAX_KEYTERMS) return `keyterms_prompt accepts at most ${MAX_KEYTERMS} terms`;
    next.keytermsPrompt = kt as string[];
  }
  for (const k of ['prompt', 'agent_context'] as const) {
    if (k in msg && msg[k] !== null) {
      if (typeof msg[k] !== 'string') return `${k} must be a string`;
      if (k === 'prompt') next.prompt = msg[k] as string;
      else next.agentContext = msg[k] as string;
    }
  }
  Object.assign(p, next);
  return null;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/** Close reasons are limited to 123 bytes by RFC 6455. */
export function closeReason(text: string): string {
  let out = text;
  while (Buffer.byteLength(out) > 123) out = out.slice(0, -1);
  return out;
}

function formatMs(ms: number): string {
  return String(Math.round(ms * 100) / 100);
}

function capitalize(w: string): string {
  return w.charAt(0).toUpperCase() + w.slice(1);
}

/** `{"error": "..."}` (the token API's Error schema). */
export function aaiError(message: string): { headers: Record<string, string>; body: string } {
  return { headers: {}, body: JSON.stringify({ error: message }) };
}

// ---------------------------------------------------------------------------------------------
// One live session

export interface AssemblyAiConnection {
  /** wire record (frames, headers, close) */
  record: ConnectionRecord;
  /** base session: per-connection fault overrides live in `session.faults` */
  session: WsSession;
  /** the Begin id (also on refused sessions, which never send it) */
  sessionId: string;
  auth: { via: 'header' | 'token' | 'none'; key: string | null };
  /** null when the session was refused after the upgrade (see `refused`) */
  params: StreamingParams | null;
  /** live configuration (UpdateConfiguration applied) */
  config: StreamingParams | null;
  /** close code/reason when the session was refused after the upgrade */
  refused: { code: number; reason: string } | null;
  counts: { audio: number; keepAlive: number; forceEndpoint: number; updateConfiguration: number; terminate: number; invalid: number; turns: number };
  /** every UpdateConfiguration message as received */
  updates: Array<Record<string, unknown>>;
  /** audio seconds received (decoded duration) */
  audioSeconds: number;
  audioBytes: number;
  /** every message the emulator produced, in order (also those withheld by the deadAir fault) */
  sent: AaiServerMessage[];
}

interface TurnWord {
  text: string;
  start: number;
  end: number;
  final: boolean;
}

const EPS = 1e-6;
const WORD_CONFIDENCE = 0.95;

class StreamingSession implements WsHandler {
  readonly conn: AssemblyAiConnection;
  private readonly opts: ResolvedAssemblyAiOptions;
  private readonly p: StreamingParams;
  private readonly session: WsSession;
  private readonly bytesPerSample: number;
  private readonly detector: SpeechDetector | null;
  private readonly openedAt = performance.now();
  private readonly maxSessionMs: number;
  private ended = false;
  private idleTimer: NodeJS.Timeout | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private carry: Buffer = Buffer.alloc(0);
  // turn state (audio seconds)
  private turnOrder = 0;
  private words: TurnWord[] = [];
  private inSpeech = false;
  private silenceStart: number | null = null;
  private speechSinceEot = 0;
  private utteranceSent = false;
  private u3Checked = false;

  constructor(conn: AssemblyAiConnection, opts: ResolvedAssemblyAiOptions, maxSessionSeconds: number) {
    this.conn = conn;
    this.opts = opts;
    this.p = conn.config!;
    this.session = conn.session;
    this.bytesPerSample = this.p.encoding === 'pcm_mulaw' ? 1 : 2;
    const pcm = this.p.encoding === 'pcm_s16le' || this.p.encoding === 'pcm_mulaw';
    this.detector = pcm && this.p.sampleRate >= 8000 && this.p.sampleRate <= 48000 ? new SpeechDetector({ sampleRate: this.p.sampleRate }) : null;
    this.maxSessionMs = maxSessionSeconds * opts.timeoutSecondMs;
    const expiresAt = Math.floor(Date.now() / 1000 + maxSessionSeconds);
    this.send({ type: 'Begin', id: conn.sessionId, expires_at: expiresAt }, opts.beginDelayMs);
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = null;
      this.fatal(CLOSE.sessionExpired, REASONS.sessionExpired);
    }, this.maxSessionMs);
    this.touch();
  }

  onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      this.conn.counts.audio++;
      if (this.ended) return;
      this.audio(data);
      return;
    }
    const text = data.toString('utf8');
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      this.conn.counts.invalid++;
      this.fatal(CLOSE.invalidInput, closeReason(`Invalid JSON: ${text}`));
      return;
    }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) {
      this.conn.counts.invalid++;
      this.fatal(CLOSE.invalidInput, closeReason(`Invalid Message: ${text}`));
      return;
    }
    const obj = msg as Record<string, unknown>;
    switch (obj['type']) {
      case 'KeepAlive':
        this.conn.counts.keepAlive++;
        this.touch();
        return;
      case 'ForceEndpoint':
        this.conn.counts.forceEndpoint++;
        if (this.ended) return;
        this.touch();
        if (this.detector) this.handle(this.detector.flush());
        if (this.words.length > 0) this.endOfTurn('force');
        return;
      case 'UpdateConfiguration': {
        this.conn.counts.updateConfiguration++;
        this.conn.updates.push(obj);
        if (this.ended) return;
        this.touch();
        const err = applyUpdateConfiguration(this.p, obj);
        if (err) this.fatal(CLOSE.invalidInput, closeReason(`Invalid Message: ${err}`));
        return;
      }
      case 'Terminate':
        this.conn.counts.terminate++;
        this.terminate();
        return;
      default:
        this.conn.counts.invalid++;
        this.fatal(CLOSE.invalidInput, closeReason(`Invalid Message Type: ${typeof obj['type'] === 'string' ? obj['type'] : text}`));
    }
  }

  onClose(): void {
    this.ended = true;
    this.clearTimers();
  }

  private audio(data: Buffer): void {
    const selfDescribing = this.p.encoding !== 'pcm_s16le' && this.p.encoding !== 'pcm_mulaw';
    const seconds = selfDescribing ? 0 : data.length / (this.p.sampleRate * this.bytesPerSample);
    if (!selfDescribing && this.opts.enforceChunkDuration) {
      const ms = seconds * 1000;
      if (ms < 50 - 1e-6 || ms > 1000 + 1e-6) {
        this.fatal(CLOSE.inputDuration, `Input duration violation: ${formatMs(ms)} ms. Expected between 50 and 1000 ms`);
        return;
      }
    }
    this.conn.audioBytes += data.length;
    this.conn.audioSeconds += seconds;
    const factor = this.opts.maxRealtimeFactor;
    if (factor !== null) {
      const wall = (performance.now() - this.openedAt) / 1000;
      if (this.conn.audioSeconds > factor * wall + this.opts.realtimeBurstSec) {
        this.fatal(
          CLOSE.inputDuration,
          `Audio Transmission Rate Exceeded: Received ${this.conn.audioSeconds.toFixed(1)} sec. audio in ${wall.toFixed(1)} sec`,
        );
        return;
      }
    }
    if (!this.session.reportAudio(seconds)) {
      this.ended = !this.session.isOpen;
      if (this.ended) this.clearTimers();
      return;
    }
    this.touch();
    if (this.detector) this.handle(this.detector.pushSamples(this.decode(data)));
  }

  private decode(chunk: Buffer): Int16Array {
    if (this.bytesPerSample === 1) return Int16Array.from(chunk, (b) => mulawToLinear(b));
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    const n = Math.floor(buf.length / 2);
    const out = new Int16Array(n);
    for (let i = 0; i < n; i++) out[i] = buf.readInt16LE(i * 2);
    this.carry = Buffer.from(buf.subarray(n * 2));
    return out;
  }

  private handle(events: DetectorEvent[]): void {
    for (const ev of events) {
      if (this.ended) return;
      switch (ev.type) {
        case 'speech-start':
          this.inSpeech = true;
          this.silenceStart = null;
          this.utteranceSent = false;
          this.u3Checked = false;
          if (this.words.length === 0 && this.wantsSpeechStarted()) {
            this.send({ type: 'SpeechStarted', timestamp: Math.round(ev.time * 1000) });
          }
          break;
        case 'word':
          for (const w of this.words) w.final = true;
          this.words.push({ text: ev.word, start: ev.start, end: ev.end, final: false });
          if (!this.p.u3) this.sendTurn(this.partial());
          break;
        case 'speech-end':
          this.inSpeech = false;
          this.silenceStart = ev.time;
          break;
        case 'window':
          if (ev.voiced) this.speechSinceEot += ev.end - ev.start;
          this.onWindow(ev.end);
          break;
      }
    }
  }

  private wantsSpeechStarted(): boolean {
    const mode = this.opts.speechStarted;
    return mode === 'always' || (mode === 'u3' && this.p.u3);
  }

  /** Turn detection after every analysis window. */
  private onWindow(now: number): void {
    if (this.inSpeech || this.silenceStart === null || this.words.length === 0) return;
    const silence = now - this.silenceStart;
    const min = this.p.minTurnSilence / 1000;
    const max = this.p.maxTurnSilence / 1000;
    if (this.p.u3) {
      if (!this.u3Checked && silence >= min - EPS) {
        this.u3Checked = true;
        if (this.sentenceComplete()) {
          this.endOfTurn('punctuation');
          return;
        }
        this.sendTurn(this.u3Partial());
      }
      if (silence >= max - EPS) this.endOfTurn('max_silence');
      return;
    }
    if (this.speechSinceEot < 0.08 - EPS) return;
    const conf = this.semanticConfidence();
    if ((conf > this.p.endOfTurnConfidenceThreshold && silence >= min - EPS) || silence >= max - EPS) {
      this.endOfTurn('silence');
      return;
    }
    if (silence >= min - EPS && !this.utteranceSent) {
      // end of utterance without end of turn: words finalized, utterance pushed for eager use
      this.utteranceSent = true;
      for (const w of this.words) w.final = true;
      const t = this.partial();
      t.utterance = this.formatted();
      this.addLanguage(t);
      this.sendTurn(t);
    }
  }

  private endOfTurn(why: 'silence' | 'force' | 'punctuation' | 'max_silence' | 'terminate'): void {
    for (const w of this.words) w.final = true;
    if (this.p.u3) {
      const complete = why === 'punctuation' || this.sentenceComplete();
      const text = this.formatted(complete ? '.' : '');
      const t = this.turn({ formatted: true, end: true, confidence: complete ? 1 : 0, transcript: text, punct: complete ? '.' : '' });
      t.utterance = text;
      this.addLanguage(t);
      this.sendTurn(t);
    } else {
      const conf = this.semanticConfidence();
      const t = this.turn({ formatted: false, end: true, confidence: conf, transcript: this.plain() });
      t.utterance = this.utteranceSent ? '' : this.formatted();
      this.addLanguage(t);
      this.sendTurn(t);
      if (this.p.formatTurns) {
        const f = this.turn({ formatted: true, end: true, confidence: conf, transcript: this.formatted(), punct: '.' });
        this.addLanguage(f);
        this.sendTurn(f);
      }
    }
    this.turnOrder++;
    this.words = [];
    this.speechSinceEot = 0;
    this.utteranceSent = false;
  }

  private partial(): AaiTurn {
    const finals = this.words.filter((w) => w.final).map((w) => w.text);
    return this.turn({ formatted: false, end: false, confidence: this.opts.partialEndOfTurnConfidence, transcript: finals.join(' ') });
  }

  private u3Partial(): AaiTurn {
    for (const w of this.words) w.final = false;
    return this.turn({ formatted: false, end: false, confidence: 0, transcript: this.formatted('—'), punct: '—' });
  }

  private turn(o: { formatted: boolean; end: boolean; confidence: number; transcript: string; punct?: string }): AaiTurn {
    const speaker = this.turnOrder % 2 === 0 ? 'A' : 'B';
    const capitalise = o.formatted || this.p.u3;
    const words: AaiWord[] = this.words.map((w, i) => {
      let text = w.text;
      if (capitalise && i === 0) text = capitalize(text);
      if (o.punct && i === this.words.length - 1) text += o.punct;
      const out: AaiWord = {
        start: Math.round(w.start * 1000),
        end: Math.round(w.end * 1000),
        text,
        confidence: WORD_CONFIDENCE,
        word_is_final: w.final,
      };
      if (this.p.speakerLabels) out.speaker = speaker;
      return out;
    });
    const t: AaiTurn = {
      turn_order: this.turnOrder,
      turn_is_formatted: o.formatted,
      end_of_turn: o.end,
      transcript: o.transcript,
      end_of_turn_confidence: round6(o.confidence),
      words,
      utterance: '',
      type: 'Turn',
    };
    if (this.p.speakerLabels) t.speaker_label = speaker;
    return t;
  }

  private addLanguage(t: AaiTurn): void {
    if (!this.p.languageDetection) return;
    t.language_code = 'en';
    t.language_confidence = 0.99;
  }

  private plain(): string {
    return this.words.map((w) => w.text).join(' ');
  }

  private formatted(punct = '.'): string {
    const text = this.words.map((w, i) => (i === 0 ? capitalize(w.text) : w.text)).join(' ');
    return text + punct;
  }

  private semanticConfidence(): number {
    const c = this.opts.endOfTurnConfidence;
    return typeof c === 'number' ? c : c(this.words.map((w) => w.text));
  }

  private sentenceComplete(): boolean {
    return this.opts.sentenceComplete(this.words.map((w) => w.text));
  }

  private terminate(): void {
    if (this.ended) return;
    if (this.detector) {
      this.handle(this.detector.end());
      if (this.ended) return;
    }
    if (this.words.length > 0) this.endOfTurn('terminate');
    this.finish(CLOSE.normal, '');
  }

  /** Termination, then close. */
  private finish(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.clearTimers();
    this.send({
      type: 'Termination',
      audio_duration_seconds: Math.round(this.conn.audioSeconds),
      session_duration_seconds: Math.round((performance.now() - this.openedAt) / 1000),
    });
    this.session.close(code, reason, { delayMs: this.opts.latencyMs });
  }

  private fatal(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.clearTimers();
    this.session.close(code, reason, { delayMs: this.opts.latencyMs });
  }

  private touch(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const secs = this.p.inactivityTimeout;
    if (this.ended || secs === null) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.finish(CLOSE.normal, REASONS.inactivity);
    }, secs * this.opts.timeoutSecondMs);
  }

  private clearTimers(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.idleTimer = null;
    this.expiryTimer = null;
  }

  private sendTurn(t: AaiTurn): void {
    this.conn.counts.turns++;
    this.send(t);
  }

  private send(msg: AaiServerMessage, extraDelayMs = 0): void {
    this.conn.sent.push(msg);
    this.session.send(JSON.stringify(msg), { delayMs: this.opts.latencyMs + extraDelayMs });
  }
}

/** A session refused after the upgrade: close at once with the documented code, no Begin. */
class RefusedSession implements WsHandler {
  constructor(session: WsSession, code: number, reason: string, delayMs: number) {
    session.close(code, reason, { delayMs });
  }
  onMessage(): void {}
  onClose(): void {}
}

// ---------------------------------------------------------------------------------------------
// Temporary tokens

export interface TemporaryToken {
  token: string;
  apiKey: string;
  /** wall-clock ms (performance.now) after which the token cannot start a session */
  expiresAt: number;
  expiresInSeconds: number;
  maxSessionDurationSeconds: number;
  used: boolean;
}

// ---------------------------------------------------------------------------------------------
// The emulator

interface AcceptState {
  sessionId: string;
  auth: AssemblyAiConnection['auth'];
  params: StreamingParams | null;
  refused: { code: number; reason: string } | null;
  maxSessionSeconds: number;
}

export class AssemblyAiEmulator {
  readonly server: EmulatorServer;
  /** live options: changes apply to connections opened afterwards */
  readonly options: ResolvedAssemblyAiOptions;
  readonly connections: AssemblyAiConnection[];
  /** every temporary token issued by GET /v3/token */
  readonly tokens: TemporaryToken[];

  constructor(server: EmulatorServer, options: ResolvedAssemblyAiOptions, connections: AssemblyAiConnection[], tokens: TemporaryToken[]) {
    this.server = server;
    this.options = options;
    this.connections = connections;
    this.tokens = tokens;
  }

  /** http(s)://host:port — the SDK's `streamingBaseUrl` (token endpoint) */
  get url(): string {
    return this.server.url;
  }
  /** ws(s)://host:port */
  get wsUrl(): string {
    return this.server.wsUrl;
  }
  /** ws(s)://host:port/v3/ws — the SDK's `websocketBaseUrl` */
  get streamingUrl(): string {
    return `${this.server.wsUrl}/v3/ws`;
  }
  get port(): number {
    return this.server.port;
  }
  /** server-wide fault switches (mutable) */
  get faults(): FaultSwitches {
    return this.server.faults;
  }
  set faults(f: FaultSwitches) {
    this.server.faults = f;
  }
  /** apply faults to the next upgrade attempt only */
  faultNext(f: Partial<FaultSwitches>): void {
    this.server.faultNext(f);
  }
  resetFaults(): void {
    this.server.resetFaults();
  }
  get rejected() {
    return this.server.rejected;
  }
  /** wire records of every accepted connection */
  get records(): ConnectionRecord[] {
    return this.server.connections;
  }

  /** Issue a temporary token without HTTP (same rules as GET /v3/token). */
  createToken(opts: { expiresInSeconds?: number; maxSessionDurationSeconds?: number; apiKey?: string } = {}): string {
    return issueToken(this.tokens, this.options, opts.apiKey ?? this.options.apiKeys[0] ?? DEFAULT_API_KEY, opts.expiresInSeconds ?? 60, opts.maxSessionDurationSeconds ?? 10800);
  }

  waitForConnection(n = 1, timeoutMs = 2000): Promise<AssemblyAiConnection> {
    return this.server.waitFor(() => this.connections[n - 1], timeoutMs, `assemblyai connection #${n}`);
  }

  waitForClose(conn?: AssemblyAiConnection, timeoutMs = 2000): Promise<AssemblyAiConnection> {
    return this.server.waitFor(() => {
      const c = conn ?? this.connections[this.connections.length - 1];
      return c && c.record.closed ? c : undefined;
    }, timeoutMs, 'assemblyai connection close');
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  close(): Promise<void> {
    return this.server.close();
  }
}

function issueToken(tokens: TemporaryToken[], options: ResolvedAssemblyAiOptions, apiKey: string, expiresIn: number, maxSession: number): string {
  const token = randomBytes(24).toString('base64url');
  tokens.push({
    token,
    apiKey,
    expiresAt: performance.now() + expiresIn * options.timeoutSecondMs,
    expiresInSeconds: expiresIn,
    maxSessionDurationSeconds: maxSession,
    used: false,
  });
  return token;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(text)) }).end(text);
}

export async function startAssemblyAiEmulator(opts: AssemblyAiEmulatorOptions = {}): Promise<AssemblyAiEmulator> {
  const options: ResolvedAssemblyAiOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_API_KEY],
    requireSpeechModel: opts.requireSpeechModel ?? true,
    maxSessionsPerMinute: opts.maxSessionsPerMinute ?? Infinity,
    maxConcurrent: opts.maxConcurrent ?? Infinity,
    maxSessionSeconds: opts.maxSessionSeconds ?? 10800,
    timeoutSecondMs: opts.timeoutSecondMs ?? 1000,
    enforceChunkDuration: opts.enforceChunkDuration ?? true,
    maxRealtimeFactor: opts.maxRealtimeFactor ?? null,
    realtimeBurstSec: opts.realtimeBurstSec ?? 2,
    endOfTurnConfidence: opts.endOfTurnConfidence ?? 0.75,
    partialEndOfTurnConfidence: opts.partialEndOfTurnConfidence ?? 0.01,
    sentenceComplete: opts.sentenceComplete ?? (() => true),
    speechStarted: opts.speechStarted ?? 'u3',
    beginDelayMs: opts.beginDelayMs ?? 0,
    latencyMs: opts.latencyMs ?? 0,
    recordAudio: opts.recordAudio ?? false,
  };
  const connections: AssemblyAiConnection[] = [];
  const tokens: TemporaryToken[] = [];
  const starts: Array<{ key: string; at: number }> = [];

  const onUpgrade = (ctx: UpgradeContext): UpgradeDecision<AcceptState> => {
    const path = ctx.url.pathname.replace(/\/+$/, '');
    if (path !== '/v3/ws') return { accept: false, status: 404, ...aaiError('Not found') };
    const sessionId = randomUUID();
    const refuse = (code: number, reason: string, auth: AssemblyAiConnection['auth'] = { via: 'none', key: null }): UpgradeDecision<AcceptState> => ({
      accept: true,
      state: { sessionId, auth, params: null, refused: { code, reason }, maxSessionSeconds: options.maxSessionSeconds },
    });
    // auth: Authorization header (raw key) or ?token=
    const header = ctx.req.headers.authorization;
    const tokenValue = ctx.query['token']?.[ctx.query['token'].length - 1];
    let auth: AssemblyAiConnection['auth'];
    let maxSession = options.maxSessionSeconds;
    if (header !== undefined && header !== '') {
      if (!options.apiKeys.includes(header)) return refuse(CLOSE.unauthorized, REASONS.invalidKey);
      auth = { via: 'header', key: header };
    } else if (tokenValue !== undefined) {
      const t = tokens.find((x) => x.token === tokenValue);
      if (!t || t.used || performance.now() > t.expiresAt) return refuse(CLOSE.unauthorized, REASONS.invalidToken);
      t.used = true;
      auth = { via: 'token', key: t.apiKey };
      maxSession = Math.min(maxSession, t.maxSessionDurationSeconds);
    } else {
      return refuse(CLOSE.unauthorized, REASONS.missingAuth);
    }
    const check = parseStreamingQuery(ctx.query, { requireSpeechModel: options.requireSpeechModel });
    if (!check.ok) return refuse(CLOSE.invalidInput, closeReason(`Invalid Query Parameter: ${check.reason}`), auth);
    const key = auth.key!;
    const now = performance.now();
    while (starts.length > 0 && now - starts[0]!.at > 60 * options.timeoutSecondMs) starts.shift();
    if (starts.filter((s) => s.key === key).length >= options.maxSessionsPerMinute) return refuse(CLOSE.unauthorized, REASONS.rateLimited, auth);
    const open = connections.filter((c) => c.auth.key === key && c.refused === null && !c.record.closed).length;
    if (open >= options.maxConcurrent) return refuse(CLOSE.tooManySessions, REASONS.concurrency, auth);
    starts.push({ key, at: now });
    return { accept: true, state: { sessionId, auth, params: check.params, refused: null, maxSessionSeconds: maxSession } };
  };

  const onHttpRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://emulator');
    if (url.pathname.replace(/\/+$/, '') !== '/v3/token') {
      sendJson(res, 404, { error: 'Not found' });
      return;
    }
    if (req.method !== 'GET') {
      sendJson(res, 405, { error: 'Method not allowed' });
      return;
    }
    const key = req.headers.authorization;
    if (!key || !options.apiKeys.includes(key)) {
      sendJson(res, 401, { error: 'Invalid API key' });
      return;
    }
    const intParam = (name: string, min: number, max: number, required: boolean, dflt: number): number | string => {
      const v = url.searchParams.get(name);
      if (v === null) return required ? `${name} is required` : dflt;
      const n = Number(v);
      if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max) return `${name} must be an integer between ${min} and ${max}`;
      return n;
    };
    const expiresIn = intParam('expires_in_seconds', 1, 600, true, 0);
    if (typeof expiresIn === 'string') {
      sendJson(res, 400, { error: expiresIn });
      return;
    }
    const maxSession = intParam('max_session_duration_seconds', 60, 10800, false, 10800);
    if (typeof maxSession === 'string') {
      sendJson(res, 400, { error: maxSession });
      return;
    }
    const token = issueToken(tokens, options, key, expiresIn, maxSession);
    sendJson(res, 200, { token, expires_in_seconds: expiresIn });
  };

  const server = await startEmulatorServer<AcceptState>({
    name: 'assemblyai',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    recordAudio: options.recordAudio,
    onUpgrade,
    onHttpRequest,
    onConnection: (session, _ctx, state) => {
      const conn: AssemblyAiConnection = {
        record: session.record,
        session,
        sessionId: state.sessionId,
        auth: state.auth,
        params: state.params,
        config: state.params ? { ...state.params, keytermsPrompt: [...state.params.keytermsPrompt] } : null,
        refused: state.refused,
        counts: { audio: 0, keepAlive: 0, forceEndpoint: 0, updateConfiguration: 0, terminate: 0, invalid: 0, turns: 0 },
        updates: [],
        audioSeconds: 0,
        audioBytes: 0,
        sent: [],
      };
      connections.push(conn);
      if (state.refused) return new RefusedSession(session, state.refused.code, state.refused.reason, options.latencyMs);
      return new StreamingSession(conn, { ...options }, state.maxSessionSeconds);
    },
    formatError: (_status, message) => aaiError(message),
  });
  return new AssemblyAiEmulator(server, options, connections, tokens);
}
