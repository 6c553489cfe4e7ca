/**
 * Emulator of Deepgram Flux, the conversational speech-to-text WebSocket API v2 (`/v2/listen`):
 * https://developers.deepgram.com/reference/speech-to-text/listen-flux
 *
 * Written from ../../../shared/providers.md §2.1, §2.3, §9 "Deepgram Flux v2", the SDK types of
 * @deepgram/sdk 5.13.0 (listen/resources/v2/types/ListenV2*.d.mts, api/types/ListenV2*.d.mts) and
 * these Deepgram pages (read through the search corpora):
 * - https://developers.deepgram.com/docs/flux/state — the turn state machine: `Update` for about
 *   every 0.25 s of transcribed audio "regardless of transcript updates, unless a state change has
 *   occurred" (the lifecycle example shows empty Updates before the first StartOfTurn);
 *   EagerEndOfTurn always has a non-empty transcript; TurnResumed only follows EagerEndOfTurn;
 *   EndOfTurn repeats the EagerEndOfTurn transcript (a change is announced by TurnResumed first);
 *   turn_index increments right after EndOfTurn; StartOfTurn always carries a non-empty transcript;
 *   flux-general-multi adds `languages` and `languages_hinted` to every TurnInfo.
 * - https://developers.deepgram.com/docs/flux/configuration — eot_threshold 0.5–1.0 (default 0.7;
 *   1.0 suppresses confidence-based end of turn), eager_eot_threshold 0.3–0.9 (unset by default),
 *   eot_timeout_ms 500–60000 (default 5000); language_hint only for flux-general-multi.
 * - https://developers.deepgram.com/docs/flux/force-end-turn — ForceEndTurn ends the current turn on
 *   the audio transcribed so far with a standard EndOfTurn, `trigger: "manual"`; a ForceEndTurn
 *   with no turn in progress is ignored (stated for the Voice Agent API, applied here).
 * - https://developers.deepgram.com/changelog/speech-to-text-changelog/2025/10/16 — raw audio sample
 *   rates 8000, 16000, 24000, 44100, 48000.
 * - SDK: `sendForceEndTurn` "requires server-side enablement. On deployments without the feature,
 *   the server returns UNPARSABLE_CLIENT_MESSAGE and closes the connection"; the SDK treats the
 *   no-status (1005) close after `sendCloseStream()` as terminal (README).
 * - Telnyx's copy of the Flux parameters: eager_eot_threshold "must be ≤ eot_threshold".
 *
 * Reuses the Deepgram v1 emulator's conventions (./deepgram.ts): default key, `{err_code, err_msg,
 * request_id}` upgrade errors with `dg-error` / `dg-request-id`, DATA-0000 / NET-0001 reasons.
 *
 * Deterministic rules (AUDIO time = bytes / (rate × bytes per sample); messages go out as soon as the
 * triggering audio arrives, plus `latencyMs`; only the idle timeout is wall-clock). Words come from
 * the tone "speech" of ./audio.ts (one word per voiced tone segment). Per 10 ms analysis window:
 *  - a turn starts (StartOfTurn) in the window where its first word is complete;
 *  - end_of_turn_confidence = 0 while voiced or between turns, else min(0.99, silence / confidenceRampMs)
 *    where silence is measured from the end of the last voiced window (confidenceRampMs = 500: the
 *    default eot_threshold 0.7 ends a turn 350 ms after speech; it never reaches 1.0, so
 *    eot_threshold=1.0 leaves only eot_timeout_ms and ForceEndTurn);
 *  - in silence during a turn: confidence ≥ eager_eot_threshold (when set) -> EagerEndOfTurn (once);
 *    confidence ≥ eot_threshold -> EndOfTurn `trigger: "model"`; else silence ≥ eot_timeout_ms ->
 *    EndOfTurn `trigger: "timeout"`;
 *  - voice onset after EagerEndOfTurn -> TurnResumed (the turn goes on);
 *  - no TurnInfo was sent for `updateIntervalMs` (240) of audio -> Update (between turns too, with an
 *    empty transcript, unless `idleUpdates: false`).
 * A turn's audio window starts where the previous EndOfTurn's window ended (0 for the first) and ends
 * at the current audio time. Words carry start/end in seconds; the first word of a turn is capitalised
 * (Flux words are "punctuated, properly-cased"); with numerals=true one..four become 1..4.
 *
 * Control messages: `ForceEndTurn` closes the word in progress and ends the turn (`manual`), nothing
 * without a turn. `Configure` {thresholds, keyterms, language_hints, numerals} is validated like the
 * query; a valid one applies at once and answers ConfigureSuccess (the effective thresholds and
 * keyterms), an invalid one ConfigureFailure (settings unchanged, stream goes on). `CloseStream` (or
 * an empty binary frame): remaining audio is analysed, an open turn gets its EndOfTurn, then the
 * socket closes with NO status code (the client sees 1005). `KeepAlive` resets the idle timer.
 *
 * UNCERTAIN choices (not settled by the docs we have):
 * - Fatal errors are an `Error` message {code, description} followed by a close: idle for
 *   `idleTimeoutMs` (10 s, the v1 rule) -> `NET-0001` + 1011; unknown/non-JSON text or a disabled
 *   ForceEndTurn -> `UNPARSABLE_CLIENT_MESSAGE` + 1008; JSON in a binary frame -> `DATA-0000` + 1008.
 * - The EndOfTurn of a turn still open at CloseStream has `trigger: "manual"` (ended on the client's
 *   request, like ForceEndTurn).
 * - ConfigureFailure for: out-of-range thresholds, eager > eot after the merge, language_hints on
 *   flux-general-en, empty keyterms/hints, wrongly typed fields. It carries only the SDK's fields.
 * - Auth: `Token <key>` / `Bearer <key|token>` header, subprotocol `token, <key>`, or `?token=<temp
 *   token>`; checked before the query. `sample_rate` is required with `encoding` and must be one of
 *   the documented raw rates; WAV (RIFF PCM16) is transcribed when `encoding` is omitted; opus and
 *   ogg-opus are accepted but produce no words and no audio time.
 */
import { randomUUID } from 'node:crypto';
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
import { DATA_0000_REASON, DEFAULT_API_KEY, NET_0001_REASON, deepgramError } from './deepgram.ts';

export { DEFAULT_API_KEY };

export const FLUX_MODELS: readonly string[] = ['flux-general-en', 'flux-general-multi'];
export const FLUX_ENCODINGS: readonly string[] = ['linear16', 'linear32', 'mulaw', 'alaw', 'opus', 'ogg-opus'];
export const FLUX_SAMPLE_RATES: readonly number[] = [8000, 16000, 24000, 44100, 48000];
export const UNPARSABLE_REASON = 'UNPARSABLE_CLIENT_MESSAGE';

export interface DeepgramFluxEmulatorOptions {
  /** keys accepted with `Token` (and `Bearer`); default ['dg-test-key'] */
  apiKeys?: string[];
  /** temporary tokens accepted with `Bearer` or `?token=` */
  accessTokens?: string[];
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** open sessions per key before 429 (default 50) */
  maxConcurrent?: number;
  /** no audio and no text message for this long -> Error NET-0001 + close 1011 (default 10000) */
  idleTimeoutMs?: number;
  /** an Update after this much audio without any TurnInfo (default 240) */
  updateIntervalMs?: number;
  /** silence after which end_of_turn_confidence would reach 1 (default 500; capped at 0.99) */
  confidenceRampMs?: number;
  /** send Updates between turns (empty transcript) too (default true, as in the docs' example) */
  idleUpdates?: boolean;
  /** ForceEndTurn enabled server-side (default true; false -> UNPARSABLE_CLIENT_MESSAGE + close) */
  forceEndTurn?: boolean;
  /** extra wall-clock delay before every message (default 0) */
  latencyMs?: number;
  /** keep binary payloads in the wire record */
  recordAudio?: boolean;
}

export type ResolvedFluxOptions = Required<Omit<DeepgramFluxEmulatorOptions, 'port' | 'host' | 'tls'>>;

/** Flux-specific fault switches (server-wide in `emu.fluxFaults`, per connection in `conn.fluxFaults`). */
export interface FluxFaultSwitches {
  /** once this much audio arrived: `Error` {code, description}, then close 1011 */
  errorAfterAudioSec: { seconds: number; code: string; description: string } | null;
  /** answer every Configure with ConfigureFailure */
  failConfigure: boolean;
}

export function defaultFluxFaults(): FluxFaultSwitches {
  return { errorAfterAudioSec: null, failConfigure: false };
}

// ---------------------------------------------------------------------------------------------
// Wire types (mirroring the SDK's ListenV2* types)

export interface FluxWord {
  word: string;
  confidence: number;
  start: number;
  end: number;
}

export type FluxEvent = 'StartOfTurn' | 'Update' | 'EagerEndOfTurn' | 'TurnResumed' | 'EndOfTurn';

export interface FluxConnected {
  type: 'Connected';
  request_id: string;
  sequence_id: number;
}

export interface FluxTurnInfo {
  type: 'TurnInfo';
  request_id: string;
  sequence_id: number;
  event: FluxEvent;
  turn_index: number;
  audio_window_start: number;
  audio_window_end: number;
  transcript: string;
  words: FluxWord[];
  end_of_turn_confidence: number;
  trigger?: 'model' | 'manual' | 'timeout';
  languages?: string[];
  languages_hinted?: string[];
}

export interface FluxThresholds {
  eager_eot_threshold?: number;
  eot_threshold?: number;
  eot_timeout_ms?: number;
}

export interface FluxConfigureSuccess {
  type: 'ConfigureSuccess';
  request_id: string;
  thresholds: FluxThresholds;
  keyterms: string[];
  language_hints?: string[];
  sequence_id: number;
}

export interface FluxConfigureFailure {
  type: 'ConfigureFailure';
  request_id: string;
  sequence_id: number;
}

export interface FluxError {
  type: 'Error';
  sequence_id: number;
  code: string;
  description: string;
}

export type FluxServerMessage = FluxConnected | FluxTurnInfo | FluxConfigureSuccess | FluxConfigureFailure | FluxError;

// ---------------------------------------------------------------------------------------------
// Query parameters

const BOOLEAN_PARAMS = ['mip_opt_out', 'numerals', 'profanity_filter'];
const LIST_PARAMS = ['keyterm', 'language_hint', 'tag', 'redact'];
const OTHER_PARAMS = ['model', 'encoding', 'sample_rate', 'eot_threshold', 'eager_eot_threshold', 'eot_timeout_ms', 'token'];
const KNOWN_PARAMS = new Set([...BOOLEAN_PARAMS, ...LIST_PARAMS, ...OTHER_PARAMS]);
const REDACT_VALUES = new Set(['numbers', 'aggressive_numbers']);
const LANGUAGE_RE = /^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$/;

export const THRESHOLD_RANGES = {
  eot_threshold: { min: 0.5, max: 1.0 },
  eager_eot_threshold: { min: 0.3, max: 0.9 },
  eot_timeout_ms: { min: 500, max: 60000 },
} as const;

export interface FluxParams {
  model: string;
  /** null: containerized audio (WAV is transcribed) */
  encoding: string | null;
  sampleRate: number | null;
  eotThreshold: number;
  eagerEotThreshold: number | null;
  eotTimeoutMs: number;
  keyterms: string[];
  languageHints: string[];
  numerals: boolean;
  profanityFilter: boolean;
  mipOptOut: boolean;
  redact: string[];
  tags: string[];
  /** query keys the emulator does not know (accepted) */
  unknown: string[];
  /** every query value as received */
  raw: Record<string, string[]>;
}

export type FluxParamCheck = { ok: true; params: FluxParams } | { ok: false; errCode: string; message: string };

/** A threshold problem, or null. Shared by the query and Configure. */
function thresholdProblem(eot: number, eager: number | null, timeoutMs: number): string | null {
  const r = THRESHOLD_RANGES;
  if (!(eot >= r.eot_threshold.min && eot <= r.eot_threshold.max)) {
    return `eot_threshold must be between ${r.eot_threshold.min} and ${r.eot_threshold.max}.`;
  }
  if (eager !== null && !(eager >= r.eager_eot_threshold.min && eager <= r.eager_eot_threshold.max)) {
    return `eager_eot_threshold must be between ${r.eager_eot_threshold.min} and ${r.eager_eot_threshold.max}.`;
  }
  if (eager !== null && eager > eot) return 'eager_eot_threshold must be less than or equal to eot_threshold.';
  if (!(Number.isInteger(timeoutMs) && timeoutMs >= r.eot_timeout_ms.min && timeoutMs <= r.eot_timeout_ms.max)) {
    return `eot_timeout_ms must be an integer between ${r.eot_timeout_ms.min} and ${r.eot_timeout_ms.max}.`;
  }
  return null;
}

/** Validate /v2/listen query parameters the way the API does at upgrade time. */
export function parseFluxQuery(query: Record<string, string[]>): FluxParamCheck {
  const bad = (message: string, errCode = 'INVALID_QUERY_PARAMETER'): FluxParamCheck => ({ ok: false, errCode, message });
  const last = (k: string): string | undefined => {
    const v = query[k];
    return v ? v[v.length - 1] : undefined;
  };
  const model = last('model');
  if (model === undefined || model === '') return bad(`Missing required query parameter 'model'.`);
  if (!FLUX_MODELS.includes(model)) return bad('No such model/language/tier combination found.', 'Bad Request');
  const bools: Record<string, boolean> = {};
  for (const k of BOOLEAN_PARAMS) {
    const v = last(k);
    if (v === undefined) continue;
    if (v !== 'true' && v !== 'false') return bad(`Invalid value '${v}' for query parameter '${k}': expected true or false.`);
    bools[k] = v === 'true';
  }
  const encoding = last('encoding') ?? null;
  if (encoding !== null && !FLUX_ENCODINGS.includes(encoding)) {
    return bad(`Invalid value '${encoding}' for query parameter 'encoding': expected one of ${FLUX_ENCODINGS.join(', ')}.`);
  }
  let sampleRate: number | null = null;
  const sr = last('sample_rate');
  if (sr !== undefined) {
    if (!/^\d+$/.test(sr) || !FLUX_SAMPLE_RATES.includes(Number(sr))) {
      return bad(`Invalid value '${sr}' for query parameter 'sample_rate': expected one of ${FLUX_SAMPLE_RATES.join(', ')}.`);
    }
    sampleRate = Number(sr);
  }
  if (encoding !== null && sampleRate === null) return bad(`Query parameter 'sample_rate' is required when 'encoding' is provided.`);
  const decimal = (k: string): number | null | FluxParamCheck => {
    const v = last(k);
    if (v === undefined) return null;
    if (!/^\d+(\.\d+)?$/.test(v)) return bad(`Invalid value '${v}' for query parameter '${k}': expected a number.`);
    return Number(v);
  };
  const eot = decimal('eot_threshold');
  if (eot !== null && typeof eot === 'object') return eot;
  const eager = decimal('eager_eot_threshold');
  if (eager !== null && typeof eager === 'object') return eager;
  const timeout = decimal('eot_timeout_ms');
  if (timeout !== null && typeof timeout === 'object') return timeout;
  const eotThreshold = eot ?? 0.7;
  const eotTimeoutMs = timeout ?? 5000;
  const problem = thresholdProblem(eotThreshold, eager, eotTimeoutMs);
  if (problem) return bad(problem);
  const hints = query['language_hint'] ?? [];
  if (hints.length > 0 && model !== 'flux-general-multi') {
    return bad(`Query parameter 'language_hint' is only valid with model 'flux-general-multi'.`);
  }
  for (const h of hints) {
    if (!LANGUAGE_RE.test(h)) return bad(`Invalid value '${h}' for query parameter 'language_hint'.`);
  }
  const keyterms = query['keyterm'] ?? [];
  if (keyterms.some((k) => k.trim() === '')) return bad(`Invalid value '' for query parameter 'keyterm'.`);
  for (const r of query['redact'] ?? []) {
    if (!REDACT_VALUES.has(r)) return bad(`Invalid value '${r}' for query parameter 'redact': Flux supports numbers and aggressive_numbers.`);
  }
  return {
    ok: true,
    params: {
      model,
      encoding,
      sampleRate,
      eotThreshold,
      eagerEotThreshold: eager,
      eotTimeoutMs,
      keyterms,
      languageHints: hints,
      numerals: bools['numerals'] ?? false,
      profanityFilter: bools['profanity_filter'] ?? false,
      mipOptOut: bools['mip_opt_out'] ?? false,
      redact: query['redact'] ?? [],
      tags: query['tag'] ?? [],
      unknown: Object.keys(query).filter((k) => !KNOWN_PARAMS.has(k)),
      raw: query,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Audio decoding: bytes -> seconds + s16 samples (mono)

interface Decoder {
  sampleRate: number | null;
  decode(chunk: Buffer): { seconds: number; samples: Int16Array | null };
}

type PcmKind = 'linear16' | 'linear32' | 'mulaw' | 'alaw';

function pcmDecoder(kind: PcmKind, sampleRate: number, channels = 1): Decoder {
  const bps = kind === 'linear16' ? 2 : kind === 'linear32' ? 4 : 1;
  const frame = bps * channels;
  let carry = Buffer.alloc(0);
  return {
    sampleRate,
    decode(chunk) {
      const seconds = chunk.length / (sampleRate * frame);
      const buf = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
      const n = Math.floor(buf.length / frame);
      const samples = new Int16Array(n);
      for (let i = 0; i < n; i++) {
        const off = i * frame;
        samples[i] =
          kind === 'linear16' ? buf.readInt16LE(off) : kind === 'linear32' ? buf.readInt32LE(off) >> 16 : kind === 'mulaw' ? mulawToLinear(buf[off]!) : alawToLinear(buf[off]!);
      }
      carry = Buffer.from(buf.subarray(n * frame));
      return { seconds, samples };
    },
  };
}

/** No encoding: RIFF/WAVE PCM16 is transcribed, anything else is opaque. */
function containerDecoder(): Decoder {
  let head = Buffer.alloc(0);
  let inner: Decoder | null = null;
  let opaque = false;
  const self: Decoder = {
    sampleRate: null,
    decode(chunk) {
      if (inner) return inner.decode(chunk);
      if (opaque) return { seconds: 0, samples: null };
      head = Buffer.concat([head, chunk]);
      if (head.length < 12) return { seconds: 0, samples: null };
      if (head.toString('latin1', 0, 4) !== 'RIFF' || head.toString('latin1', 8, 12) !== 'WAVE') {
        opaque = true;
        head = Buffer.alloc(0);
        return { seconds: 0, samples: null };
      }
      let off = 12;
      let fmt: { format: number; channels: number; rate: number; bits: number } | null = null;
      while (off + 8 <= head.length) {
        const id = head.toString('latin1', off, off + 4);
        const size = head.readUInt32LE(off + 4);
        if (id === 'data') {
          if (!fmt || fmt.format !== 1 || fmt.bits !== 16 || fmt.rate < 8000 || fmt.rate > 48000) {
            opaque = true;
            return { seconds: 0, samples: null };
          }
          inner = pcmDecoder('linear16', fmt.rate, fmt.channels);
          self.sampleRate = fmt.rate;
          const rest = Buffer.from(head.subarray(off + 8));
          head = Buffer.alloc(0);
          return inner.decode(rest);
        }
        if (off + 8 + size > head.length) break;
        if (id === 'fmt ' && size >= 16) {
          fmt = {
            format: head.readUInt16LE(off + 8),
            channels: Math.max(1, head.readUInt16LE(off + 10)),
            rate: head.readUInt32LE(off + 12),
            bits: head.readUInt16LE(off + 22),
          };
        }
        off += 8 + size + (size % 2);
      }
      if (head.length > 1 << 20) opaque = true;
      return { seconds: 0, samples: null };
    },
  };
  return self;
}

function makeDecoder(p: FluxParams): Decoder {
  if (p.encoding === null) return containerDecoder();
  const rate = p.sampleRate ?? 16000;
  if (p.encoding === 'linear16' || p.encoding === 'linear32' || p.encoding === 'mulaw' || p.encoding === 'alaw') {
    return pcmDecoder(p.encoding, rate);
  }
  return { sampleRate: null, decode: () => ({ seconds: 0, samples: null }) };
}

// ---------------------------------------------------------------------------------------------
// Helpers

function r6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

function looksLikeJson(data: Buffer): boolean {
  let i = 0;
  while (i < data.length && (data[i] === 0x20 || data[i] === 0x0a || data[i] === 0x0d || data[i] === 0x09)) i++;
  if (data[i] !== 0x7b) return false;
  try {
    JSON.parse(data.toString('utf8'));
    return true;
  } catch {
    return false;
  }
}

type AuthInfo = { scheme: 'token' | 'bearer'; key: string; via: 'header' | 'subprotocol' | 'query' };

/** Same conventions as /v1/listen, plus the `token` query parameter for temporary tokens. */
function parseAuth(req: IncomingMessage, query: Record<string, string[]>): AuthInfo | null {
  const h = req.headers.authorization;
  if (h) {
    const m = /^\s*(token|bearer)\s+(\S+)\s*$/i.exec(h);
    return m ? { scheme: m[1]!.toLowerCase() as 'token' | 'bearer', key: m[2]!, via: 'header' } : null;
  }
  const proto = req.headers['sec-websocket-protocol'];
  if (typeof proto === 'string') {
    const parts = proto.split(',').map((p) => p.trim());
    const scheme = parts[0]?.toLowerCase();
    if ((scheme === 'token' || scheme === 'bearer') && parts[1]) return { scheme, key: parts[1], via: 'subprotocol' };
  }
  const token = query['token']?.[0];
  if (token) return { scheme: 'bearer', key: token, via: 'query' };
  return null;
}

const NUMERALS: Record<string, string> = { one: '1', two: '2', three: '3', four: '4' };
const WORD_CONFIDENCE = 0.99;
const EPS = 1e-6;

// ---------------------------------------------------------------------------------------------
// One live session

export interface FluxConnection {
  /** wire record (frames, headers, close) */
  record: ConnectionRecord;
  /** base session: per-connection base fault overrides live in `session.faults` */
  session: WsSession;
  /** per-connection Flux fault overrides */
  fluxFaults: Partial<FluxFaultSwitches>;
  requestId: string;
  apiKey: string;
  auth: { scheme: 'token' | 'bearer'; via: 'header' | 'subprotocol' | 'query' };
  params: FluxParams;
  /** settings in effect (query, then Configure) */
  current: { eotThreshold: number; eagerEotThreshold: number | null; eotTimeoutMs: number; keyterms: string[]; languageHints: string[]; numerals: boolean };
  counts: {
    closeStream: number;
    forceEndTurn: number;
    configure: number;
    configureFailure: number;
    keepAlive: number;
    emptyBinary: number;
    invalidText: number;
    turnInfo: number;
  };
  /** every Configure received, parsed */
  configures: unknown[];
  /** audio seconds received (decoded duration) */
  audioSeconds: number;
  audioBytes: number;
  /** every message the emulator produced, in order (also those withheld by the deadAir fault) */
  sent: FluxServerMessage[];
}

interface TurnWord {
  word: string;
  start: number;
  end: number;
}

type TurnState = 'idle' | 'ongoing' | 'awaiting';

class FluxSession implements WsHandler {
  private readonly conn: FluxConnection;
  private readonly opts: ResolvedFluxOptions;
  private readonly serverFaults: () => FluxFaultSwitches;
  private readonly session: WsSession;
  private readonly decoder: Decoder;
  private detector: SpeechDetector | null = null;
  private readonly multi: boolean;
  private seq = 0;
  private ended = false;
  private idleTimer: NodeJS.Timeout | null = null;
  private errorFired = false;
  // audio-time state (seconds)
  private now = 0;
  private state: TurnState = 'idle';
  private turnIndex = 0;
  private windowStart = 0;
  private words: TurnWord[] = [];
  private startPending = false;
  private inSpeech = false;
  private silenceStart: number | null = null;
  private nextUpdateAt: number;

  constructor(conn: FluxConnection, opts: ResolvedFluxOptions, serverFaults: () => FluxFaultSwitches) {
    this.conn = conn;
    this.opts = opts;
    this.serverFaults = serverFaults;
    this.session = conn.session;
    this.decoder = makeDecoder(conn.params);
    this.multi = conn.params.model === 'flux-general-multi';
    this.nextUpdateAt = opts.updateIntervalMs / 1000;
    this.ensureDetector();
    this.send({ type: 'Connected', request_id: conn.requestId, sequence_id: 0 });
    this.touch();
  }

  private get faults(): FluxFaultSwitches {
    return { ...this.serverFaults(), ...this.conn.fluxFaults };
  }

  onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      if (this.ended) return;
      if (data.length === 0) {
        this.conn.counts.emptyBinary++;
        this.closeStream();
        return;
      }
      if (looksLikeJson(data)) {
        this.fatal('DATA-0000', 'The payload cannot be decoded as audio.', 1008, DATA_0000_REASON);
        return;
      }
      this.touch();
      this.audio(data);
      return;
    }
    let msg: Record<string, unknown> | null = null;
    try {
      const parsed: unknown = JSON.parse(data.toString('utf8'));
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) msg = parsed as Record<string, unknown>;
    } catch {
      msg = null;
    }
    switch (msg?.['type']) {
      case 'CloseStream':
        this.conn.counts.closeStream++;
        this.closeStream();
        return;
      case 'ForceEndTurn':
        this.conn.counts.forceEndTurn++;
        if (this.ended) return;
        this.touch();
        if (!this.opts.forceEndTurn) {
          this.fatal(UNPARSABLE_REASON, 'ForceEndTurn is not enabled for this deployment.', 1008, UNPARSABLE_REASON);
          return;
        }
        this.forceEndTurn();
        return;
      case 'Configure':
        this.conn.counts.configure++;
        this.conn.configures.push(msg);
        if (this.ended) return;
        this.touch();
        this.configure(msg as Record<string, unknown>);
        return;
      case 'KeepAlive':
        this.conn.counts.keepAlive++;
        if (!this.ended) this.touch();
        return;
      default:
        this.conn.counts.invalidText++;
        if (!this.ended) this.fatal(UNPARSABLE_REASON, 'The client message could not be parsed.', 1008, UNPARSABLE_REASON);
    }
  }

  onClose(): void {
    this.ended = true;
    this.clearIdle();
  }

  private ensureDetector(): void {
    const rate = this.decoder.sampleRate;
    if (!this.detector && rate !== null && rate >= 8000 && rate <= 48000) this.detector = new SpeechDetector({ sampleRate: rate });
  }

  private audio(data: Buffer): void {
    this.conn.audioBytes += data.length;
    const { seconds, samples } = this.decoder.decode(data);
    this.conn.audioSeconds += seconds;
    if (!this.session.reportAudio(seconds)) {
      if (!this.session.isOpen) {
        this.ended = true;
        this.clearIdle();
      }
      return;
    }
    const fault = this.faults.errorAfterAudioSec;
    if (fault && !this.errorFired && this.conn.audioSeconds + 1e-9 >= fault.seconds) {
      this.errorFired = true;
      this.fatal(fault.code, fault.description, 1011, fault.code);
      return;
    }
    this.ensureDetector();
    if (samples && this.detector) this.handle(this.detector.pushSamples(samples));
  }

  private handle(events: DetectorEvent[]): void {
    for (const ev of events) {
      if (this.ended) return;
      switch (ev.type) {
        case 'speech-start':
          this.inSpeech = true;
          this.silenceStart = null;
          if (this.state === 'awaiting') this.resume();
          break;
        case 'word':
          if (this.state === 'awaiting') this.resume(); // the transcript changes: TurnResumed first
          this.words.push({ word: ev.word, start: ev.start, end: ev.end });
          if (this.state === 'idle') this.startPending = true;
          break;
        case 'speech-end':
          this.inSpeech = false;
          this.silenceStart = ev.time;
          break;
        case 'window':
          this.onWindow(ev.end);
          break;
      }
    }
  }

  private resume(): void {
    this.state = 'ongoing';
    this.turnInfo('TurnResumed');
  }

  private onWindow(now: number): void {
    this.now = now;
    let sent = this.startTurnIfPending();
    if (this.state !== 'idle' && !this.inSpeech) {
      const silence = now - (this.silenceStart ?? now);
      const conf = this.confidence();
      const eager = this.conn.current.eagerEotThreshold;
      if (this.state === 'ongoing' && eager !== null && conf >= eager - EPS && this.words.length > 0) {
        this.state = 'awaiting';
        this.turnInfo('EagerEndOfTurn');
        sent = true;
      }
      if (conf >= this.conn.current.eotThreshold - EPS) {
        this.endTurn('model');
        sent = true;
      } else if (silence * 1000 >= this.conn.current.eotTimeoutMs - EPS) {
        this.endTurn('timeout');
        sent = true;
      }
    }
    const step = this.opts.updateIntervalMs / 1000;
    if (sent) {
      this.nextUpdateAt = now + step;
    } else if (now >= this.nextUpdateAt - EPS) {
      if (this.state !== 'idle' || this.opts.idleUpdates) this.turnInfo('Update');
      while (this.nextUpdateAt <= now + EPS) this.nextUpdateAt += step;
    }
  }

  private startTurnIfPending(): boolean {
    if (!this.startPending) return false;
    this.startPending = false;
    this.state = 'ongoing';
    this.turnInfo('StartOfTurn');
    return true;
  }

  private confidence(): number {
    if (this.state === 'idle' || this.inSpeech || this.silenceStart === null) return 0;
    const silenceMs = (this.now - this.silenceStart) * 1000;
    return Math.round(Math.min(0.99, Math.max(0, silenceMs / this.opts.confidenceRampMs)) * 1e4) / 1e4;
  }

  private endTurn(trigger: 'model' | 'manual' | 'timeout'): void {
    this.turnInfo('EndOfTurn', trigger);
    this.turnIndex++;
    this.words = [];
    this.windowStart = this.now;
    this.state = 'idle';
  }

  private forceEndTurn(): void {
    if (this.detector) this.handle(this.detector.flush());
    if (this.ended) return;
    this.startTurnIfPending();
    if (this.state !== 'idle') this.endTurn('manual');
    this.nextUpdateAt = this.now + this.opts.updateIntervalMs / 1000;
  }

  private configure(msg: Record<string, unknown>): void {
    const c = this.conn.current;
    const fail = () => {
      this.conn.counts.configureFailure++;
      this.send({ type: 'ConfigureFailure', request_id: this.conn.requestId, sequence_id: this.seq });
    };
    if (this.faults.failConfigure) return fail();
    let eot = c.eotThreshold;
    let eager = c.eagerEotThreshold;
    let timeout = c.eotTimeoutMs;
    const th = msg['thresholds'];
    if (th !== undefined && th !== null) {
      if (typeof th !== 'object' || Array.isArray(th)) return fail();
      const t = th as Record<string, unknown>;
      const num = (v: unknown): number | null | false => (v === undefined || v === null ? null : typeof v === 'number' && Number.isFinite(v) ? v : false);
      const e = num(t['eot_threshold']);
      const g = num(t['eager_eot_threshold']);
      const o = num(t['eot_timeout_ms']);
      if (e === false || g === false || o === false) return fail();
      if (e !== null) eot = e;
      if (g !== null) eager = g;
      if (o !== null) timeout = o;
      if (thresholdProblem(eot, eager, timeout)) return fail();
    }
    let keyterms = c.keyterms;
    const kt = msg['keyterms'];
    if (kt !== undefined && kt !== null) {
      const list = typeof kt === 'string' ? [kt] : kt;
      if (!Array.isArray(list) || !list.every((k): k is string => typeof k === 'string' && k.trim() !== '')) return fail();
      keyterms = [...list];
    }
    let hints = c.languageHints;
    const lh = msg['language_hints'];
    if (lh !== undefined && lh !== null) {
      if (!this.multi || !Array.isArray(lh) || !lh.every((h): h is string => typeof h === 'string' && LANGUAGE_RE.test(h))) return fail();
      hints = [...lh];
    }
    let numerals = c.numerals;
    const nu = msg['numerals'];
    if (nu !== undefined && nu !== null) {
      if (typeof nu !== 'boolean') return fail();
      numerals = nu;
    }
    Object.assign(c, { eotThreshold: eot, eagerEotThreshold: eager, eotTimeoutMs: timeout, keyterms, languageHints: hints, numerals });
    const thresholds: FluxThresholds = { eot_threshold: eot, eot_timeout_ms: timeout };
    if (eager !== null) thresholds.eager_eot_threshold = eager;
    const ok: FluxConfigureSuccess = { type: 'ConfigureSuccess', request_id: this.conn.requestId, thresholds, keyterms: [...keyterms], sequence_id: this.seq };
    if (this.multi) ok.language_hints = [...hints];
    this.send(ok);
  }

  private closeStream(): void {
    if (this.ended) return;
    if (this.detector) {
      this.handle(this.detector.end());
      this.now = Math.max(this.now, this.detector.processedSeconds);
    }
    if (this.ended) return;
    this.startTurnIfPending();
    if (this.state !== 'idle') this.endTurn('manual');
    this.ended = true;
    this.clearIdle();
    // Flux closes without a status code after CloseStream (the client sees 1005). WsSession.close
    // passes the code to ws.close(); `undefined` makes ws send a close frame with no payload.
    this.session.close(undefined as unknown as number, '', { delayMs: this.opts.latencyMs });
  }

  private fatal(code: string, description: string, closeCode: number, reason: string): void {
    if (this.ended) return;
    this.send({ type: 'Error', sequence_id: this.seq, code, description });
    this.ended = true;
    this.clearIdle();
    this.session.close(closeCode, reason, { delayMs: this.opts.latencyMs });
  }

  private touch(): void {
    this.clearIdle();
    if (this.ended) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.fatal('NET-0001', NET_0001_REASON.replace(/^NET-0001 /, ''), 1011, NET_0001_REASON);
    }, this.opts.idleTimeoutMs);
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  private turnInfo(event: FluxEvent, trigger?: 'model' | 'manual' | 'timeout'): void {
    const numerals = this.conn.current.numerals;
    const words: FluxWord[] = this.words.map((w, i) => {
      let text = numerals ? (NUMERALS[w.word] ?? w.word) : w.word;
      if (i === 0) text = text.charAt(0).toUpperCase() + text.slice(1);
      return { word: text, confidence: WORD_CONFIDENCE, start: r6(w.start), end: r6(w.end) };
    });
    const msg: FluxTurnInfo = {
      type: 'TurnInfo',
      request_id: this.conn.requestId,
      sequence_id: this.seq,
      event,
      turn_index: this.turnIndex,
      audio_window_start: r6(this.windowStart),
      audio_window_end: r6(Math.max(this.now, this.windowStart)),
      transcript: words.map((w) => w.word).join(' '),
      words,
      end_of_turn_confidence: this.confidence(),
    };
    if (trigger) msg.trigger = trigger;
    if (this.multi) {
      msg.languages = words.length > 0 ? ['en'] : [];
      msg.languages_hinted = [...this.conn.current.languageHints];
    }
    this.conn.counts.turnInfo++;
    this.send(msg);
  }

  private send(msg: FluxServerMessage): void {
    this.seq++;
    this.conn.sent.push(msg);
    this.session.send(JSON.stringify(msg), { delayMs: this.opts.latencyMs });
  }
}

// ---------------------------------------------------------------------------------------------
// The emulator

interface AcceptState {
  requestId: string;
  apiKey: string;
  auth: AuthInfo;
  params: FluxParams;
}

export class DeepgramFluxEmulator {
  readonly server: EmulatorServer;
  /** live options: changes apply to connections opened afterwards */
  readonly options: ResolvedFluxOptions;
  readonly connections: FluxConnection[];
  /** server-wide Flux fault switches (mutable at run time) */
  fluxFaults: FluxFaultSwitches = defaultFluxFaults();

  constructor(server: EmulatorServer, options: ResolvedFluxOptions, connections: FluxConnection[]) {
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
  resetFaults(): void {
    this.server.resetFaults();
    this.fluxFaults = defaultFluxFaults();
  }
  get rejected() {
    return this.server.rejected;
  }
  /** wire records of every accepted connection */
  get records(): ConnectionRecord[] {
    return this.server.connections;
  }

  waitForConnection(n = 1, timeoutMs = 2000): Promise<FluxConnection> {
    return this.server.waitFor(() => this.connections[n - 1], timeoutMs, `deepgram-flux connection #${n}`);
  }

  waitForClose(conn?: FluxConnection, timeoutMs = 2000): Promise<FluxConnection> {
    return this.server.waitFor(() => {
      const c = conn ?? this.connections[this.connections.length - 1];
      return c && c.record.closed ? c : undefined;
    }, timeoutMs, 'deepgram-flux connection close');
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  close(): Promise<void> {
    return this.server.close();
  }
}

export async function startDeepgramFluxEmulator(opts: DeepgramFluxEmulatorOptions = {}): Promise<DeepgramFluxEmulator> {
  const options: ResolvedFluxOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_API_KEY],
    accessTokens: opts.accessTokens ?? [],
    maxConcurrent: opts.maxConcurrent ?? 50,
    idleTimeoutMs: opts.idleTimeoutMs ?? 10_000,
    updateIntervalMs: opts.updateIntervalMs ?? 240,
    confidenceRampMs: opts.confidenceRampMs ?? 500,
    idleUpdates: opts.idleUpdates ?? true,
    forceEndTurn: opts.forceEndTurn ?? true,
    latencyMs: opts.latencyMs ?? 0,
    recordAudio: opts.recordAudio ?? false,
  };
  const connections: FluxConnection[] = [];
  const openFor = (key: string) => connections.filter((c) => c.apiKey === key && !c.record.closed).length;
  let emulator: DeepgramFluxEmulator | null = null;

  const onUpgrade = (ctx: UpgradeContext): UpgradeDecision<AcceptState> => {
    const requestId = randomUUID();
    const reject = (status: number, errCode: string, message: string): UpgradeDecision<AcceptState> => ({
      accept: false,
      status,
      ...deepgramError(status, errCode, message, requestId),
    });
    const path = ctx.url.pathname.replace(/\/+$/, '');
    if (path !== '/v2/listen') return reject(404, 'NOT_FOUND', `No route for ${ctx.url.pathname}.`);
    const auth = parseAuth(ctx.req, ctx.query);
    const valid =
      auth !== null &&
      ((auth.scheme === 'token' && auth.via !== 'query' && options.apiKeys.includes(auth.key)) ||
        (auth.scheme === 'bearer' && (options.accessTokens.includes(auth.key) || (auth.via !== 'query' && options.apiKeys.includes(auth.key)))));
    if (!auth || !valid) return reject(401, 'INVALID_AUTH', 'Invalid credentials.');
    const check = parseFluxQuery(ctx.query);
    if (!check.ok) return reject(400, check.errCode, check.message);
    if (openFor(auth.key) >= options.maxConcurrent) return reject(429, 'TOO_MANY_REQUESTS', 'Too many requests. Please try again later');
    return {
      accept: true,
      headers: { 'dg-request-id': requestId },
      state: { requestId, apiKey: auth.key, auth, params: check.params },
    };
  };

  const server = await startEmulatorServer<AcceptState>({
    name: 'deepgram-flux',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    recordAudio: options.recordAudio,
    onUpgrade,
    onConnection: (session, _ctx, state) => {
      const p = state.params;
      const conn: FluxConnection = {
        record: session.record,
        session,
        fluxFaults: {},
        requestId: state.requestId,
        apiKey: state.apiKey,
        auth: { scheme: state.auth.scheme, via: state.auth.via },
        params: p,
        current: {
          eotThreshold: p.eotThreshold,
          eagerEotThreshold: p.eagerEotThreshold,
          eotTimeoutMs: p.eotTimeoutMs,
          keyterms: [...p.keyterms],
          languageHints: [...p.languageHints],
          numerals: p.numerals,
        },
        counts: { closeStream: 0, forceEndTurn: 0, configure: 0, configureFailure: 0, keepAlive: 0, emptyBinary: 0, invalidText: 0, turnInfo: 0 },
        configures: [],
        audioSeconds: 0,
        audioBytes: 0,
        sent: [],
      };
      connections.push(conn);
      return new FluxSession(conn, { ...options }, () => emulator?.fluxFaults ?? defaultFluxFaults());
    },
    formatError: (status, message) => deepgramError(status, status === 429 ? 'TOO_MANY_REQUESTS' : 'EMULATED_FAULT', message, randomUUID()),
  });
  emulator = new DeepgramFluxEmulator(server, options, connections);
  return emulator;
}
