/**
 * Emulator of Deepgram's Aura text-to-speech WebSocket API v1 (`/v1/speak`), plus the REST
 * `POST /v1/speak` for raw PCM / G.711:
 * https://developers.deepgram.com/reference/text-to-speech/speak-streaming
 *
 * Written from ../../../shared/providers.md §2.1, §2.4, §2.5 and §9 "Deepgram Aura TTS WS", the
 * SDK types of @deepgram/sdk 5.13.0 (SpeakV1Metadata / Flushed / Cleared / Warning, SpeakV1Model,
 * SpeakV1SampleRate) and the vendor doc pages on Flush, Clear, Close and voice controls, never
 * from the gateway adapter. Audio is the deterministic tone "speech" of ./tts-audio.ts: every
 * character lasts `msPerChar / speed` ms, so a segment of N characters renders to exactly
 * round(N · msPerChar / speed · rate / 1000) samples.
 *
 * Facts relied on:
 * - auth as for every Deepgram endpoint: `Authorization: Token <key>` / `Bearer <token>`, browser
 *   subprotocol `token, <key>`; failed upgrades answer 4xx with `dg-request-id` (also on the 101)
 *   and `dg-error` headers and a JSON `{err_code, err_msg, request_id}` body; Aura TTS allows 15
 *   concurrent requests (REST and streaming) → 429.
 * - query: `model` (default `aura-asteria-en`), `encoding` linear16|mulaw|alaw (default linear16),
 *   `sample_rate` 8000|16000|24000|32000|48000 (default 24000 for linear16, 8000 for G.711, which
 *   only allows 8000|16000), `speed` 0.7–1.5 (default 1.0), `mip_opt_out` true|false (lower case;
 *   `False` is a 400). An unknown voice is a 400 "No such model/version combination found."
 * - on open the server sends `Metadata`; client messages are JSON text: `Speak {text}` appends to
 *   the buffer, `Flush` synthesizes the buffer → binary audio frames then `Flushed {sequence_id}`,
 *   `Clear` drops buffered text and pending audio → `Cleared {sequence_id}`, `Close` closes the
 *   socket immediately with 1000. At most 20 Flush per 60 s; past that a `Warning` and the Flush
 *   is not processed until the window has passed.
 * - errors after open are close frames `<code> <CODE-NNNN> <text>`; the TTS troubleshooting page
 *   lists 1003 MESSAGE-0000, 1008 DATA-0000/0001, 1009 BIG-0000/0001, 1011 NET-0000..0003.
 *
 * Deterministic rules (wall clock, every knob configurable, per connection in `conn.timing`):
 * - A Flush takes the whole buffer as one *flush segment*. Segments are generated one after
 *   another: the first audio frame of a segment goes out `firstAudioDelayMs` after its generation
 *   starts (its Flush, or the end of the previous segment), then one frame of `chunkMs` audio
 *   (the last one shorter) every `chunkMs / realtimeFactor` ms, then `Flushed`. A Flush of an
 *   empty buffer answers `Flushed` at once (after the segments before it), with no audio.
 * - `sequence_id` is one counter per connection, starting at 0, shared by Flushed and Cleared.
 * - Clear: drops the unflushed buffer, stops the segment being generated and every queued one
 *   (none of them gets a Flushed), answers Cleared at once. Audio already handed to the socket
 *   cannot be recalled.
 * - Nothing is synthesized without a Flush.
 *
 * UNCERTAIN choices (not settled by the docs we have):
 * - Close frames: binary frame → 1003 `MESSAGE-0000 …`; text that is not JSON → 1008
 *   `DATA-0000 …`; JSON that is not one of the four messages (unknown `type`, `Speak` without a
 *   string `text`) → 1008 `DATA-0001 …` (the STT emulator uses DATA-0000 for both; the TTS page
 *   lists DATA-0001 separately). A Speak longer than `maxSpeakChars` (2000 code points, "possibly
 *   2000") → 1009 `BIG-0000 …`, or with `speakTooLong: 'warning'` a Warning `TEXT_TOO_LONG` and the
 *   text is dropped. Idle: no client message for `idleTimeoutMs` (60 s; not documented) while no
 *   segment is pending → 1011 `NET-0001 …`.
 * - The Flush-limit Warning has code `FLUSH_LIMIT_EXCEEDED`; the window is sliding (a Flush is
 *   accepted when fewer than `flushLimit` Flushes were accepted in the last `flushWindowMs`);
 *   rejected Flushes do not count, and leave the buffer as it was.
 * - `Close` discards pending audio (the doc page says "immediately"; the AsyncAPI text says it
 *   flushes first: the doc page wins here).
 * - `speed` is accepted for every voice (docs: Aura-2 English/Spanish) and scales the duration.
 * - Metadata: `model_version` "2025-04-07.0", `model_uuid` derived from the model name,
 *   `additional_model_uuids: []`. Unknown query keys are accepted and listed in `params.unknown`.
 * - REST: only linear16/mulaw/alaw can be rendered (other documented encodings, including the
 *   default mp3, answer 400 saying the emulator cannot render them); `container` none|wav
 *   (default wav); body `{"text"}` longer than `maxSpeakChars` → 400; headers `dg-request-id`,
 *   `dg-model-name`, `dg-model-uuid`, `dg-char-count`.
 */
import { createHash, randomUUID } from 'node:crypto';
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
import { DEFAULT_API_KEY, deepgramError } from './deepgram.ts';
import { DEFAULT_MS_PER_CHAR, TtsRenderer } from './tts-audio.ts';

export { DEFAULT_API_KEY };

export const DEFAULT_SPEAK_MODEL = 'aura-asteria-en';

export const MESSAGE_0000_REASON = 'MESSAGE-0000 Binary messages are not supported: send JSON text messages.';
export const DATA_0000_REASON = 'DATA-0000 The payload cannot be decoded as JSON text. See https://dpgr.am/data0000';
export const DATA_0001_REASON = 'DATA-0001 The message is not a valid Speak, Flush, Clear or Close message.';
export const BIG_0000_REASON = 'BIG-0000 The Speak text exceeds the maximum number of characters.';
export const NET_0001_REASON =
  'NET-0001 Deepgram did not receive a text message within the timeout window. See https://dpgr.am/net0001';
export const EMULATED_ERROR_REASON = 'NET-0000 Emulated internal error while generating audio.';

export const FLUSH_LIMIT_WARNING_CODE = 'FLUSH_LIMIT_EXCEEDED';
export const TEXT_TOO_LONG_WARNING_CODE = 'TEXT_TOO_LONG';

export const SPEAK_ENCODINGS = ['linear16', 'mulaw', 'alaw'] as const;
export type SpeakEncoding = (typeof SPEAK_ENCODINGS)[number];
export const LINEAR16_RATES: readonly number[] = [8000, 16000, 24000, 32000, 48000];
export const G711_RATES: readonly number[] = [8000, 16000];
export const SPEED_MIN = 0.7;
export const SPEED_MAX = 1.5;

const AURA1 = ['angus', 'arcas', 'asteria', 'athena', 'helios', 'hera', 'luna', 'orion', 'orpheus', 'perseus', 'stella', 'zeus'];
const AURA2: Record<string, string[]> = {
  en: [
    'amalthea', 'andromeda', 'apollo', 'arcas', 'aries', 'asteria', 'athena', 'atlas', 'aurora', 'callista', 'cora',
    'cordelia', 'delia', 'draco', 'electra', 'harmonia', 'helena', 'hera', 'hermes', 'hyperion', 'iris', 'janus', 'juno',
    'jupiter', 'luna', 'mars', 'minerva', 'neptune', 'odysseus', 'ophelia', 'orion', 'orpheus', 'pandora', 'phoebe',
    'pluto', 'saturn', 'selene', 'thalia', 'theia', 'vesta', 'zeus',
  ],
  es: [
    'agustina', 'alvaro', 'antonia', 'aquila', 'carina', 'celeste', 'diana', 'estrella', 'gloria', 'javier', 'luciano',
    'nestor', 'olivia', 'selena', 'silvia', 'sirio', 'valerio',
  ],
  de: ['aurelia', 'elara', 'fabian', 'julius', 'kara', 'lara', 'viktoria'],
  nl: ['beatrix', 'cornelia', 'daphne', 'hestia', 'lars', 'leda', 'rhea', 'roman', 'sander'],
  fr: ['agathe', 'hector'],
  it: ['cesare', 'cinzia', 'demetra', 'dionisio', 'elio', 'flavio', 'livia', 'maia', 'melia'],
  ja: ['ama', 'ebisu', 'fujin', 'izanami', 'uzume'],
};

/** SpeakV1Model of @deepgram/sdk 5.13.0 (without aura-2-perseo-it, which "was never served and returns 400"). */
export const SPEAK_MODELS: readonly string[] = Object.freeze([
  ...AURA1.map((v) => `aura-${v}-en`),
  ...Object.entries(AURA2).flatMap(([lang, voices]) => voices.map((v) => `aura-2-${v}-${lang}`)),
]);

// ---------------------------------------------------------------------------------------------
// Wire types (mirroring the SDK's SpeakV1* types)

export interface SpeakMetadata {
  type: 'Metadata';
  request_id: string;
  model_name: string;
  model_version: string;
  model_uuid: string;
  additional_model_uuids: string[];
}
export interface SpeakFlushed {
  type: 'Flushed';
  sequence_id: number;
}
export interface SpeakCleared {
  type: 'Cleared';
  sequence_id: number;
}
export interface SpeakWarning {
  type: 'Warning';
  description: string;
  code: string;
}
export type SpeakServerMessage = SpeakMetadata | SpeakFlushed | SpeakCleared | SpeakWarning;

// ---------------------------------------------------------------------------------------------
// Query parameters

export interface SpeakParams {
  model: string;
  encoding: SpeakEncoding;
  sampleRate: number;
  speed: number;
  mipOptOut: boolean | null;
  /** REST only: none | wav */
  container: 'none' | 'wav' | null;
  /** query keys the emulator does not know (accepted) */
  unknown: string[];
  raw: Record<string, string[]>;
}

export type SpeakParamCheck = { ok: true; params: SpeakParams } | { ok: false; errCode: string; message: string };

const WS_KNOWN = new Set(['model', 'encoding', 'sample_rate', 'speed', 'mip_opt_out']);
const REST_KNOWN = new Set([...WS_KNOWN, 'container', 'bit_rate', 'callback', 'callback_method', 'tag']);
const REST_ONLY_ENCODINGS = ['flac', 'mp3', 'opus', 'aac'];

/** Validate /v1/speak query parameters (WebSocket, or REST with `rest: true`). */
export function parseSpeakQuery(query: Record<string, string[]>, models: readonly string[], rest = false): SpeakParamCheck {
  const bad = (message: string, errCode = 'INVALID_QUERY_PARAMETER'): SpeakParamCheck => ({ ok: false, errCode, message });
  const last = (k: string): string | undefined => {
    const v = query[k];
    return v ? v[v.length - 1] : undefined;
  };
  const model = last('model') ?? DEFAULT_SPEAK_MODEL;
  if (!models.includes(model)) return bad('No such model/version combination found.', 'Bad Request');

  const defaultEncoding = rest ? 'mp3' : 'linear16';
  const enc = last('encoding') ?? defaultEncoding;
  if (rest && REST_ONLY_ENCODINGS.includes(enc)) {
    return bad(`Encoding '${enc}' is valid for the API but this emulator only renders linear16, mulaw and alaw.`, 'UNSUPPORTED_BY_EMULATOR');
  }
  if (!(SPEAK_ENCODINGS as readonly string[]).includes(enc)) {
    return bad(`Invalid value '${enc}' for query parameter 'encoding': expected one of ${(rest ? [...SPEAK_ENCODINGS, ...REST_ONLY_ENCODINGS] : SPEAK_ENCODINGS).join(', ')}.`);
  }
  const encoding = enc as SpeakEncoding;
  const rates = encoding === 'linear16' ? LINEAR16_RATES : G711_RATES;
  const sr = last('sample_rate');
  let sampleRate = encoding === 'linear16' ? 24000 : 8000;
  if (sr !== undefined) {
    if (!/^\d+$/.test(sr) || !rates.includes(Number(sr))) {
      return bad(`Invalid value '${sr}' for query parameter 'sample_rate' with encoding '${encoding}': expected one of ${rates.join(', ')}.`);
    }
    sampleRate = Number(sr);
  }
  const sp = last('speed');
  let speed = 1;
  if (sp !== undefined) {
    const n = Number(sp);
    if (sp.trim() === '' || !Number.isFinite(n) || n < SPEED_MIN || n > SPEED_MAX) {
      return bad(`Invalid value '${sp}' for query parameter 'speed': expected a number between ${SPEED_MIN} and ${SPEED_MAX}.`);
    }
    speed = n;
  }
  const mip = last('mip_opt_out');
  if (mip !== undefined && mip !== 'true' && mip !== 'false') {
    return bad(`Invalid value '${mip}' for query parameter 'mip_opt_out': expected true or false.`);
  }
  let container: SpeakParams['container'] = null;
  if (rest) {
    const c = last('container') ?? 'wav';
    if (c !== 'none' && c !== 'wav') return bad(`Invalid value '${c}' for query parameter 'container' with encoding '${encoding}': expected none or wav.`);
    container = c;
  }
  const known = rest ? REST_KNOWN : WS_KNOWN;
  return {
    ok: true,
    params: {
      model,
      encoding,
      sampleRate,
      speed,
      mipOptOut: mip === undefined ? null : mip === 'true',
      container,
      unknown: Object.keys(query).filter((k) => !known.has(k)),
      raw: query,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Audio: G.711 encoders (ITU-T G.711, the classic Sun reference algorithm)

const SEG_UEND = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
const SEG_AEND = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

function segment(v: number, table: readonly number[]): number {
  for (let i = 0; i < table.length; i++) if (v <= table[i]!) return i;
  return table.length;
}

/** s16 sample -> G.711 mu-law byte. */
export function linearToMulaw(sample: number): number {
  let v = sample >> 2;
  let mask: number;
  if (v < 0) {
    v = -v;
    mask = 0x7f;
  } else {
    mask = 0xff;
  }
  if (v > 8159) v = 8159;
  v += 0x84 >> 2;
  const seg = segment(v, SEG_UEND);
  if (seg >= 8) return 0x7f ^ mask;
  return (((seg << 4) | ((v >> (seg + 1)) & 0x0f)) ^ mask) & 0xff;
}

/** s16 sample -> G.711 A-law byte. */
export function linearToAlaw(sample: number): number {
  let v = sample >> 3;
  let mask: number;
  if (v >= 0) {
    mask = 0xd5;
  } else {
    mask = 0x55;
    v = -v - 1;
  }
  const seg = segment(v, SEG_AEND);
  if (seg >= 8) return (0x7f ^ mask) & 0xff;
  let a = seg << 4;
  a |= seg < 2 ? (v >> 1) & 0x0f : (v >> seg) & 0x0f;
  return (a ^ mask) & 0xff;
}

/** PCM s16le -> the requested encoding (linear16 is returned as is). */
export function encodePcm(pcm: Buffer, encoding: SpeakEncoding): Buffer {
  if (encoding === 'linear16') return pcm;
  const n = pcm.length >> 1;
  const out = Buffer.alloc(n);
  const f = encoding === 'mulaw' ? linearToMulaw : linearToAlaw;
  for (let i = 0; i < n; i++) out[i] = f(pcm.readInt16LE(i * 2));
  return out;
}

export function bytesPerSample(encoding: SpeakEncoding): number {
  return encoding === 'linear16' ? 2 : 1;
}

/** Exact number of samples a text renders to (characters × msPerChar / speed). */
export function speakSamples(text: string, sampleRate: number, msPerChar = DEFAULT_MS_PER_CHAR, speed = 1): number {
  return Math.round(([...text].length * (msPerChar / speed) * sampleRate) / 1000);
}

/** Exact number of bytes a text renders to for an encoding. */
export function speakBytes(text: string, params: { encoding: SpeakEncoding; sampleRate: number; speed?: number }, msPerChar = DEFAULT_MS_PER_CHAR): number {
  return speakSamples(text, params.sampleRate, msPerChar, params.speed ?? 1) * bytesPerSample(params.encoding);
}

/** Mono WAV header for `dataBytes` of audio (PCM 16-bit, or G.711 with format 7/6). */
export function wavHeader(encoding: SpeakEncoding, sampleRate: number, dataBytes: number): Buffer {
  const bps = bytesPerSample(encoding);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'latin1');
  h.writeUInt32LE(36 + dataBytes, 4);
  h.write('WAVE', 8, 'latin1');
  h.write('fmt ', 12, 'latin1');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(encoding === 'linear16' ? 1 : encoding === 'alaw' ? 6 : 7, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(sampleRate, 24);
  h.writeUInt32LE(sampleRate * bps, 28);
  h.writeUInt16LE(bps, 32);
  h.writeUInt16LE(bps * 8, 34);
  h.write('data', 36, 'latin1');
  h.writeUInt32LE(dataBytes, 40);
  return h;
}

/**
 * One text rendered incrementally in chunks: characters are rendered only when a chunk needs
 * them, so a long segment costs memory per chunk, not per segment.
 */
class SegmentAudio {
  readonly totalSamples: number;
  sentSamples = 0;
  charsDone = 0;
  private readonly chars: string[];
  private readonly renderer: TtsRenderer;
  private readonly encoding: SpeakEncoding;
  private readonly samplesPerCharExact: number;
  private next = 0;
  private pending: Buffer = Buffer.alloc(0);

  constructor(text: string, sampleRate: number, msPerChar: number, speed: number, encoding: SpeakEncoding) {
    this.chars = [...text];
    this.renderer = new TtsRenderer(sampleRate, { msPerChar: msPerChar / speed });
    this.encoding = encoding;
    this.samplesPerCharExact = ((msPerChar / speed) * sampleRate) / 1000;
    this.totalSamples = Math.round(this.chars.length * this.samplesPerCharExact);
  }

  get done(): boolean {
    return this.sentSamples >= this.totalSamples;
  }

  /** Next chunk of at most `samples` samples, encoded; empty when done. */
  take(samples: number): Buffer {
    const want = Math.max(1, samples) * 2;
    while (this.pending.length < want && this.next < this.chars.length) {
      this.pending = Buffer.concat([this.pending, this.renderer.push(this.chars[this.next++]!)]);
    }
    const pcm = this.pending.subarray(0, Math.min(want, this.pending.length));
    this.pending = Buffer.from(this.pending.subarray(pcm.length));
    this.sentSamples += pcm.length >> 1;
    while (this.charsDone < this.chars.length && Math.round((this.charsDone + 1) * this.samplesPerCharExact) <= this.sentSamples) this.charsDone++;
    return encodePcm(Buffer.from(pcm), this.encoding);
  }
}

// ---------------------------------------------------------------------------------------------
// Options, faults, records

export interface SpeakTiming {
  /** wall-clock ms from the start of a segment's generation to its first audio frame */
  firstAudioDelayMs: number;
  /** audio seconds produced per wall-clock second (Infinity = no pacing) */
  realtimeFactor: number;
  /** audio per binary frame */
  chunkMs: number;
}

/** TTS faults, by characters whose audio was sent on the connection (all segments). */
export interface SpeakFaults {
  /** close with code/reason mid-generation once this many characters were sent */
  closeAfterChars: { chars: number; code?: number; reason?: string } | null;
  /** destroy the TCP socket (no close frame) once this many characters were sent */
  dropAfterChars: number | null;
  /** stop generating (no more audio, no Flushed; Clear still answers) once this many characters were sent */
  stallAfterChars: number | null;
  /** never answer Clear with Cleared (the clear itself still happens) */
  swallowCleared: boolean;
}

export function defaultSpeakFaults(): SpeakFaults {
  return { closeAfterChars: null, dropAfterChars: null, stallAfterChars: null, swallowCleared: false };
}

export interface DeepgramSpeakEmulatorOptions {
  /** keys accepted with `Token` (and `Bearer`); default ['dg-test-key'] */
  apiKeys?: string[];
  /** temporary tokens accepted with `Bearer` only */
  accessTokens?: string[];
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** open sockets + REST requests in flight per key before 429 (default 15, the Aura limit) */
  maxConcurrent?: number;
  /** no client message for this long while nothing is being generated -> 1011 NET-0001 (default 60000) */
  idleTimeoutMs?: number;
  /** default 20 ms; realistic ≈ 150–250 ms ("sub-200 ms" TTFB) */
  firstAudioDelayMs?: number;
  /** generation speed vs real time (default 10: a 1 s frame every 100 ms) */
  realtimeFactor?: number;
  /** audio per binary frame (default 50 ms; docs/§9: 20–100 ms) */
  chunkMs?: number;
  /** audio per character at speed 1 (default 60 ms, see tts-audio.ts) */
  msPerChar?: number;
  /** longest accepted Speak text in code points (default 2000) */
  maxSpeakChars?: number;
  /** what a too-long Speak does: close 1009 BIG-0000 (default) or a Warning and the text is dropped */
  speakTooLong?: 'close' | 'warning';
  /** accepted Flushes per window before a Warning (default 20) */
  flushLimit?: number;
  /** Flush window (default 60000 ms, sliding) */
  flushWindowMs?: number;
  /** accepted voices (default SPEAK_MODELS) */
  models?: readonly string[];
  /** keep binary payloads in the wire record */
  recordAudio?: boolean;
}

export type ResolvedSpeakOptions = Required<Omit<DeepgramSpeakEmulatorOptions, 'port' | 'host' | 'tls'>>;

export interface SpeakRecord {
  /** ms since open */
  t: number;
  text: string;
  /** code points */
  chars: number;
  /** false when dropped (too long, with speakTooLong 'warning') */
  accepted: boolean;
}

export type SegmentStatus = 'queued' | 'generating' | 'done' | 'cleared' | 'aborted';

/** The text synthesized by one accepted Flush. */
export interface FlushSegment {
  /** 0-based order of accepted Flushes */
  index: number;
  text: string;
  chars: number;
  status: SegmentStatus;
  /** ms since open: Flush received, generation started, first audio, Flushed sent, cleared */
  flushAt: number;
  startedAt: number | null;
  firstAudioAt: number | null;
  doneAt: number | null;
  clearedAt: number | null;
  /** sequence_id of its Flushed (null when none was sent) */
  sequenceId: number | null;
  /** full rendered duration */
  totalAudioSeconds: number;
  audioSeconds: number;
  audioBytes: number;
  frames: number;
  /** characters whose audio was completely sent */
  charsSent: number;
  /** audio never sent because of Clear or the socket ending */
  droppedAudioSeconds: number;
  /** frozen by the stallAfterChars fault */
  stalled: boolean;
}

export interface ClearRecord {
  /** ms since open */
  at: number;
  /** sequence_id of its Cleared (null if swallowed by a fault) */
  sequenceId: number | null;
  /** unflushed text that was dropped */
  droppedText: string;
  droppedChars: number;
  /** indexes of segments stopped (generating or queued) */
  segments: number[];
  /** pending audio of those segments that was never sent */
  droppedAudioSeconds: number;
}

export interface DeepgramSpeakConnection {
  /** wire record (frames, headers, close) */
  record: ConnectionRecord;
  /** base session: per-connection base fault overrides live in `session.faults` */
  session: WsSession;
  requestId: string;
  apiKey: string;
  auth: { scheme: 'token' | 'bearer'; via: 'header' | 'subprotocol' };
  params: SpeakParams;
  /** this connection's live timing (mutable: changes apply to the next scheduled frame/segment) */
  timing: SpeakTiming;
  /** this connection's TTS fault overrides (merged over emu.speakFaults) */
  speakFaults: Partial<SpeakFaults>;
  /** every Speak received, in order */
  speaks: SpeakRecord[];
  /** text received and not yet flushed */
  buffer: string;
  segments: FlushSegment[];
  clears: ClearRecord[];
  counts: { speak: number; flush: number; flushRejected: number; clear: number; close: number; invalid: number; warnings: number };
  /** characters of accepted Speak texts */
  charsReceived: number;
  /** characters of every accepted flush segment (submitted for synthesis, even if later cleared) */
  chars: number;
  /** characters whose audio was completely sent */
  charsSent: number;
  /** audio handed to the socket (not counting frames withheld by deadAir) */
  audioSeconds: number;
  audioBytes: number;
  /** every JSON message the emulator produced, in order (also those withheld by deadAir) */
  sent: SpeakServerMessage[];
}

export interface RestSpeakRecord {
  at: Date;
  requestId: string;
  url: string;
  status: number;
  params: SpeakParams | null;
  text: string | null;
  chars: number;
  audioBytes: number;
  audioSeconds: number;
  /** the client went away before the end */
  aborted: boolean;
  done: boolean;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function r6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

function uuidFrom(text: string): string {
  const h = createHash('sha1').update(text).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export const MODEL_VERSION = '2025-04-07.0';

export function speakModelUuid(model: string): string {
  return uuidFrom(`speak-model:${model}`);
}

/** Same conventions as the STT emulator: Token/Bearer header, else subprotocol `token, <key>`. */
function parseAuth(req: IncomingMessage, allowSubprotocol: boolean): { scheme: 'token' | 'bearer'; key: string; via: 'header' | 'subprotocol' } | null {
  const h = req.headers.authorization;
  if (h) {
    const m = /^\s*(token|bearer)\s+(\S+)\s*$/i.exec(h);
    return m ? { scheme: m[1]!.toLowerCase() as 'token' | 'bearer', key: m[2]!, via: 'header' } : null;
  }
  const proto = req.headers['sec-websocket-protocol'];
  if (allowSubprotocol && typeof proto === 'string') {
    const parts = proto.split(',').map((p) => p.trim());
    const scheme = parts[0]?.toLowerCase();
    if ((scheme === 'token' || scheme === 'bearer') && parts[1]) return { scheme, key: parts[1], via: 'subprotocol' };
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// One WebSocket session

interface Generation {
  seg: FlushSegment;
  audio: SegmentAudio;
  /** performance.now() when its first frame is due */
  t0: number;
  /** frames sent so far */
  k: number;
}

class SpeakSession implements WsHandler {
  readonly conn: DeepgramSpeakConnection;
  private readonly opts: ResolvedSpeakOptions;
  private readonly emu: () => SpeakFaults;
  private readonly session: WsSession;
  private readonly changed: () => void;
  private readonly queue: FlushSegment[] = [];
  private gen: Generation | null = null;
  private genTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private ended = false;
  private seq = 0;
  private acceptedFlushes: number[] = [];
  private fired = { close: false, drop: false, stall: false };

  constructor(conn: DeepgramSpeakConnection, opts: ResolvedSpeakOptions, serverFaults: () => SpeakFaults, changed: () => void) {
    this.conn = conn;
    this.opts = opts;
    this.emu = serverFaults;
    this.session = conn.session;
    this.changed = changed;
    const p = conn.params;
    this.sendJson({
      type: 'Metadata',
      request_id: conn.requestId,
      model_name: p.model,
      model_version: MODEL_VERSION,
      model_uuid: speakModelUuid(p.model),
      additional_model_uuids: [],
    });
    this.armIdle();
  }

  onMessage(data: Buffer, isBinary: boolean): void {
    if (this.ended) return;
    this.armIdle();
    if (isBinary) {
      this.conn.counts.invalid++;
      this.fatal(1003, MESSAGE_0000_REASON);
      return;
    }
    let msg: unknown;
    try {
      msg = JSON.parse(data.toString('utf8'));
    } catch {
      this.conn.counts.invalid++;
      this.fatal(1008, DATA_0000_REASON);
      return;
    }
    const m = msg && typeof msg === 'object' && !Array.isArray(msg) ? (msg as { type?: unknown; text?: unknown }) : {};
    switch (m.type) {
      case 'Speak':
        if (typeof m.text !== 'string') break;
        this.speak(m.text);
        return;
      case 'Flush':
        this.flush();
        return;
      case 'Clear':
        this.clear();
        return;
      case 'Close':
        this.conn.counts.close++;
        this.stopAll('aborted');
        this.ended = true;
        this.clearIdle();
        this.session.close(1000, '');
        return;
    }
    this.conn.counts.invalid++;
    this.fatal(1008, DATA_0001_REASON);
  }

  onClose(): void {
    this.ended = true;
    this.clearIdle();
    this.stopAll('aborted');
  }

  /** Cancel every timer (emulator shutdown). */
  dispose(): void {
    this.ended = true;
    this.clearIdle();
    this.stopAll('aborted');
  }

  private get faults(): SpeakFaults {
    return { ...this.emu(), ...this.conn.speakFaults };
  }

  private speak(text: string): void {
    const chars = [...text].length;
    const rec: SpeakRecord = { t: this.session.elapsed(), text, chars, accepted: true };
    this.conn.speaks.push(rec);
    this.conn.counts.speak++;
    if (chars > this.opts.maxSpeakChars) {
      rec.accepted = false;
      if (this.opts.speakTooLong === 'close') {
        this.fatal(1009, BIG_0000_REASON);
      } else {
        this.warn(TEXT_TOO_LONG_WARNING_CODE, `Speak text of ${chars} characters exceeds the limit of ${this.opts.maxSpeakChars}; it was dropped.`);
      }
      this.changed();
      return;
    }
    this.conn.buffer += text;
    this.conn.charsReceived += chars;
    this.changed();
  }

  private flush(): void {
    this.conn.counts.flush++;
    const now = performance.now();
    this.acceptedFlushes = this.acceptedFlushes.filter((t) => now - t < this.opts.flushWindowMs);
    if (this.acceptedFlushes.length >= this.opts.flushLimit) {
      this.conn.counts.flushRejected++;
      this.warn(
        FLUSH_LIMIT_WARNING_CODE,
        `Flush limit reached: at most ${this.opts.flushLimit} Flush messages every ${Math.round(this.opts.flushWindowMs / 1000)} seconds. This Flush was not processed; wait for the window to pass.`,
      );
      return;
    }
    this.acceptedFlushes.push(now);
    const text = this.conn.buffer;
    this.conn.buffer = '';
    const chars = [...text].length;
    const p = this.conn.params;
    const seg: FlushSegment = {
      index: this.conn.segments.length,
      text,
      chars,
      status: 'queued',
      flushAt: this.session.elapsed(),
      startedAt: null,
      firstAudioAt: null,
      doneAt: null,
      clearedAt: null,
      sequenceId: null,
      totalAudioSeconds: r6(speakSamples(text, p.sampleRate, this.opts.msPerChar, p.speed) / p.sampleRate),
      audioSeconds: 0,
      audioBytes: 0,
      frames: 0,
      charsSent: 0,
      droppedAudioSeconds: 0,
      stalled: false,
    };
    this.conn.segments.push(seg);
    this.conn.chars += chars;
    this.queue.push(seg);
    this.changed();
    this.startNext();
  }

  private clear(): void {
    this.conn.counts.clear++;
    const droppedText = this.conn.buffer;
    this.conn.buffer = '';
    const before = this.stopAll('cleared');
    const rec: ClearRecord = {
      at: this.session.elapsed(),
      sequenceId: null,
      droppedText,
      droppedChars: [...droppedText].length,
      segments: before.map((s) => s.index),
      droppedAudioSeconds: r6(before.reduce((a, s) => a + s.droppedAudioSeconds, 0)),
    };
    this.conn.clears.push(rec);
    if (!this.faults.swallowCleared) {
      rec.sequenceId = this.seq++;
      this.sendJson({ type: 'Cleared', sequence_id: rec.sequenceId });
    }
    this.changed();
    this.armIdle();
  }

  /** Stop the generating segment and drop the queued ones; returns them. */
  private stopAll(status: 'cleared' | 'aborted'): FlushSegment[] {
    if (this.genTimer) clearTimeout(this.genTimer);
    this.genTimer = null;
    const stopped: FlushSegment[] = [];
    const at = this.session.elapsed();
    if (this.gen) {
      const { seg, audio } = this.gen;
      seg.status = status;
      seg.droppedAudioSeconds = r6((audio.totalSamples - audio.sentSamples) / this.conn.params.sampleRate);
      if (status === 'cleared') seg.clearedAt = at;
      stopped.push(seg);
      this.gen = null;
    }
    for (const seg of this.queue.splice(0)) {
      seg.status = status;
      seg.droppedAudioSeconds = seg.totalAudioSeconds;
      if (status === 'cleared') seg.clearedAt = at;
      stopped.push(seg);
    }
    if (stopped.length > 0) this.changed();
    return stopped;
  }

  private startNext(): void {
    if (this.ended || this.gen || this.queue.length === 0) return;
    this.clearIdle();
    const seg = this.queue.shift()!;
    const p = this.conn.params;
    seg.status = 'generating';
    seg.startedAt = this.session.elapsed();
    const audio = new SegmentAudio(seg.text, p.sampleRate, this.opts.msPerChar, p.speed, p.encoding);
    this.gen = { seg, audio, t0: performance.now() + (audio.totalSamples > 0 ? this.conn.timing.firstAudioDelayMs : 0), k: 0 };
    this.changed();
    this.schedule();
  }

  private schedule(): void {
    const g = this.gen;
    if (!g || this.ended) return;
    const { chunkMs, realtimeFactor } = this.conn.timing;
    const interval = realtimeFactor > 0 && Number.isFinite(realtimeFactor) ? chunkMs / realtimeFactor : 0;
    const due = g.t0 + g.k * interval;
    this.genTimer = setTimeout(() => {
      this.genTimer = null;
      this.tick(interval <= 0);
    }, Math.max(0, due - performance.now()));
  }

  /** Send the next frame (or every frame when unpaced); Flushed after the last. */
  private tick(burst: boolean): void {
    const g = this.gen;
    if (!g || this.ended) return;
    const p = this.conn.params;
    const chunkSamples = Math.max(1, Math.round((p.sampleRate * this.conn.timing.chunkMs) / 1000));
    do {
      if (g.audio.done) {
        this.finish(g);
        return;
      }
      if (!this.frame(g, chunkSamples)) return;
    } while (burst);
    if (g.audio.done) this.finish(g);
    else this.schedule();
  }

  /** One audio frame; false when the generation must stop (closed, dropped, stalled). */
  private frame(g: Generation, chunkSamples: number): boolean {
    const p = this.conn.params;
    const { seg, audio } = g;
    const beforeSamples = audio.sentSamples;
    const beforeChars = audio.charsDone;
    const bytes = audio.take(chunkSamples);
    const seconds = (audio.sentSamples - beforeSamples) / p.sampleRate;
    g.k++;
    if (seg.firstAudioAt === null) seg.firstAudioAt = this.session.elapsed();
    const dead = this.session.effectiveFaults.deadAir;
    this.session.send(bytes);
    seg.frames++;
    seg.charsSent = audio.charsDone;
    this.conn.charsSent += audio.charsDone - beforeChars;
    if (!dead) {
      seg.audioBytes += bytes.length;
      seg.audioSeconds = r6(seg.audioSeconds + seconds);
      this.conn.audioBytes += bytes.length;
      this.conn.audioSeconds = r6(this.conn.audioSeconds + seconds);
    }
    if (!this.session.reportAudio(seconds)) {
      this.ended = !this.session.isOpen;
      if (this.ended) this.stopAll('aborted');
      return false;
    }
    const f = this.faults;
    const sent = this.conn.charsSent;
    if (f.dropAfterChars != null && !this.fired.drop && sent >= f.dropAfterChars) {
      this.fired.drop = true;
      this.stopAll('aborted');
      this.ended = true;
      this.session.drop();
      return false;
    }
    if (f.closeAfterChars && !this.fired.close && sent >= f.closeAfterChars.chars) {
      this.fired.close = true;
      this.fatal(f.closeAfterChars.code ?? 1011, f.closeAfterChars.reason ?? EMULATED_ERROR_REASON);
      return false;
    }
    if (f.stallAfterChars != null && !this.fired.stall && sent >= f.stallAfterChars) {
      this.fired.stall = true;
      seg.stalled = true;
      this.changed();
      return false;
    }
    return true;
  }

  private finish(g: Generation): void {
    const seg = g.seg;
    seg.status = 'done';
    seg.doneAt = this.session.elapsed();
    seg.sequenceId = this.seq++;
    this.gen = null;
    this.sendJson({ type: 'Flushed', sequence_id: seg.sequenceId });
    this.changed();
    if (this.queue.length > 0) this.startNext();
    else this.armIdle();
  }

  private warn(code: string, description: string): void {
    this.conn.counts.warnings++;
    this.sendJson({ type: 'Warning', description, code });
  }

  private fatal(code: number, reason: string): void {
    this.stopAll('aborted');
    this.ended = true;
    this.clearIdle();
    this.session.close(code, reason);
  }

  private sendJson(msg: SpeakServerMessage): void {
    this.conn.sent.push(msg);
    this.session.send(JSON.stringify(msg));
  }

  /** (Re)start the idle timer unless a segment is pending. */
  private armIdle(): void {
    this.clearIdle();
    if (this.ended || this.gen || this.queue.length > 0) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.fatal(1011, NET_0001_REASON);
    }, this.opts.idleTimeoutMs);
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}

// ---------------------------------------------------------------------------------------------
// The emulator

interface AcceptState {
  requestId: string;
  apiKey: string;
  auth: { scheme: 'token' | 'bearer'; via: 'header' | 'subprotocol' };
  params: SpeakParams;
}

export class DeepgramSpeakEmulator {
  readonly server: EmulatorServer;
  /** live options: changes apply to connections opened afterwards */
  readonly options: ResolvedSpeakOptions;
  readonly connections: DeepgramSpeakConnection[];
  /** REST POST /v1/speak requests */
  readonly restRequests: RestSpeakRecord[];
  /** server-wide TTS faults (mutable at run time) */
  speakFaults: SpeakFaults = defaultSpeakFaults();
  private readonly handlers: SpeakSession[];
  private readonly restTimers: Set<NodeJS.Timeout>;
  private readonly nextSpeakFaults: Partial<SpeakFaults>[];

  constructor(
    server: EmulatorServer,
    options: ResolvedSpeakOptions,
    state: { connections: DeepgramSpeakConnection[]; handlers: SpeakSession[]; restRequests: RestSpeakRecord[]; restTimers: Set<NodeJS.Timeout>; nextSpeakFaults: Partial<SpeakFaults>[] },
  ) {
    this.server = server;
    this.options = options;
    this.connections = state.connections;
    this.handlers = state.handlers;
    this.restRequests = state.restRequests;
    this.restTimers = state.restTimers;
    this.nextSpeakFaults = state.nextSpeakFaults;
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
  speakFaultNext(f: Partial<SpeakFaults>): void {
    this.nextSpeakFaults.push(f);
  }
  resetFaults(): void {
    this.server.resetFaults();
    this.speakFaults = defaultSpeakFaults();
    this.nextSpeakFaults.length = 0;
  }
  get rejected() {
    return this.server.rejected;
  }
  /** wire records of every accepted connection */
  get records(): ConnectionRecord[] {
    return this.server.connections;
  }

  /** ws URL of /v1/speak with these query parameters */
  speakUrl(query: Record<string, string> = {}): string {
    const qs = new URLSearchParams(query).toString();
    return `${this.wsUrl}/v1/speak${qs ? `?${qs}` : ''}`;
  }

  waitForConnection(n = 1, timeoutMs = 2000): Promise<DeepgramSpeakConnection> {
    return this.server.waitFor(() => this.connections[n - 1], timeoutMs, `deepgram speak connection #${n}`);
  }

  waitForClose(conn?: DeepgramSpeakConnection, timeoutMs = 2000): Promise<DeepgramSpeakConnection> {
    return this.server.waitFor(() => {
      const c = conn ?? this.connections[this.connections.length - 1];
      return c && c.record.closed ? c : undefined;
    }, timeoutMs, 'deepgram speak connection close');
  }

  /** Wait until segment `index` of a connection reaches one of these statuses. */
  waitForSegment(conn: DeepgramSpeakConnection, index: number, statuses: SegmentStatus[] = ['done'], timeoutMs = 2000): Promise<FlushSegment> {
    return this.server.waitFor(() => {
      const s = conn.segments[index];
      return s && statuses.includes(s.status) ? s : undefined;
    }, timeoutMs, `segment #${index} ${statuses.join('|')}`);
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  async close(): Promise<void> {
    for (const h of this.handlers) h.dispose();
    for (const t of this.restTimers) clearTimeout(t);
    this.restTimers.clear();
    await this.server.close();
  }
}

export async function startDeepgramSpeakEmulator(opts: DeepgramSpeakEmulatorOptions = {}): Promise<DeepgramSpeakEmulator> {
  const options: ResolvedSpeakOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_API_KEY],
    accessTokens: opts.accessTokens ?? [],
    maxConcurrent: opts.maxConcurrent ?? 15,
    idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
    firstAudioDelayMs: opts.firstAudioDelayMs ?? 20,
    realtimeFactor: opts.realtimeFactor ?? 10,
    chunkMs: opts.chunkMs ?? 50,
    msPerChar: opts.msPerChar ?? DEFAULT_MS_PER_CHAR,
    maxSpeakChars: opts.maxSpeakChars ?? 2000,
    speakTooLong: opts.speakTooLong ?? 'close',
    flushLimit: opts.flushLimit ?? 20,
    flushWindowMs: opts.flushWindowMs ?? 60_000,
    models: opts.models ?? SPEAK_MODELS,
    recordAudio: opts.recordAudio ?? false,
  };
  const connections: DeepgramSpeakConnection[] = [];
  const handlers: SpeakSession[] = [];
  const restRequests: RestSpeakRecord[] = [];
  const restTimers = new Set<NodeJS.Timeout>();
  const nextSpeakFaults: Partial<SpeakFaults>[] = [];
  const restInFlight = new Map<string, number>();
  let emu: DeepgramSpeakEmulator | null = null;

  const busy = (key: string) => connections.filter((c) => c.apiKey === key && !c.record.closed).length + (restInFlight.get(key) ?? 0);
  const authOk = (auth: ReturnType<typeof parseAuth>): auth is NonNullable<ReturnType<typeof parseAuth>> =>
    auth !== null && (options.apiKeys.includes(auth.key) || (auth.scheme === 'bearer' && options.accessTokens.includes(auth.key)));

  const onUpgrade = (ctx: UpgradeContext): UpgradeDecision<AcceptState> => {
    const requestId = randomUUID();
    const reject = (status: number, errCode: string, message: string): UpgradeDecision<AcceptState> => ({
      accept: false,
      status,
      ...deepgramError(status, errCode, message, requestId),
    });
    const path = ctx.url.pathname.replace(/\/+$/, '');
    if (path !== '/v1/speak') return reject(404, 'NOT_FOUND', `No route for ${ctx.url.pathname}.`);
    const auth = parseAuth(ctx.req, true);
    if (!authOk(auth)) return reject(401, 'INVALID_AUTH', 'Invalid credentials.');
    const check = parseSpeakQuery(ctx.query, options.models);
    if (!check.ok) return reject(400, check.errCode, check.message);
    if (busy(auth.key) >= options.maxConcurrent) return reject(429, 'TOO_MANY_REQUESTS', 'Too many requests. Please try again later');
    return {
      accept: true,
      headers: { 'dg-request-id': requestId },
      state: { requestId, apiKey: auth.key, auth: { scheme: auth.scheme, via: auth.via }, params: check.params },
    };
  };

  const onHttpRequest = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const requestId = randomUUID();
    const url = new URL(req.url ?? '/', 'http://emulator');
    const rec: RestSpeakRecord = {
      at: new Date(), requestId, url: req.url ?? '/', status: 0, params: null, text: null, chars: 0, audioBytes: 0, audioSeconds: 0, aborted: false, done: false,
    };
    const fail = (status: number, errCode: string, message: string) => {
      const e = deepgramError(status, errCode, message, requestId);
      rec.status = status;
      rec.done = true;
      restRequests.push(rec);
      res.writeHead(status, { 'Content-Type': 'application/json', ...e.headers }).end(e.body);
    };
    if (url.pathname.replace(/\/+$/, '') !== '/v1/speak') return fail(404, 'NOT_FOUND', `No route for ${url.pathname}.`);
    if (req.method !== 'POST') return fail(405, 'METHOD_NOT_ALLOWED', `Method ${req.method ?? ''} is not allowed.`);
    const body = await new Promise<string>((resolve, reject) => {
      let s = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (s += c));
      req.on('end', () => resolve(s));
      req.on('error', reject);
    });
    const auth = parseAuth(req, false);
    if (!authOk(auth)) return fail(401, 'INVALID_AUTH', 'Invalid credentials.');
    const check = parseSpeakQuery(parseQuery(url.searchParams), options.models, true);
    if (!check.ok) return fail(400, check.errCode, check.message);
    rec.params = check.params;
    let text: unknown;
    try {
      text = (JSON.parse(body) as { text?: unknown }).text;
    } catch {
      text = undefined;
    }
    if (typeof text !== 'string' || text.length === 0) return fail(400, 'INVALID_BODY', 'Request body must be JSON with a non-empty "text" string.');
    rec.text = text;
    rec.chars = [...text].length;
    if (rec.chars > options.maxSpeakChars) {
      return fail(400, 'INVALID_BODY', `Text of ${rec.chars} characters exceeds the limit of ${options.maxSpeakChars} characters.`);
    }
    if (busy(auth.key) >= options.maxConcurrent) return fail(429, 'TOO_MANY_REQUESTS', 'Too many requests. Please try again later');
    restRequests.push(rec);
    restInFlight.set(auth.key, (restInFlight.get(auth.key) ?? 0) + 1);
    const p = check.params;
    const audio = new SegmentAudio(text, p.sampleRate, options.msPerChar, p.speed, p.encoding);
    const dataBytes = audio.totalSamples * bytesPerSample(p.encoding);
    const timing = { firstAudioDelayMs: options.firstAudioDelayMs, chunkMs: options.chunkMs, realtimeFactor: options.realtimeFactor };
    const interval = timing.realtimeFactor > 0 && Number.isFinite(timing.realtimeFactor) ? timing.chunkMs / timing.realtimeFactor : 0;
    const chunkSamples = Math.max(1, Math.round((p.sampleRate * timing.chunkMs) / 1000));
    let timer: NodeJS.Timeout | null = null;
    let finished = false;
    const release = () => {
      if (finished) return;
      finished = true;
      if (timer) {
        clearTimeout(timer);
        restTimers.delete(timer);
      }
      restInFlight.set(auth.key, (restInFlight.get(auth.key) ?? 1) - 1);
      rec.done = true;
      emu?.server.changed();
    };
    res.on('close', () => {
      if (!res.writableFinished) rec.aborted = true;
      release();
    });
    const t0 = performance.now() + timing.firstAudioDelayMs;
    let k = 0;
    const step = () => {
      if (timer) restTimers.delete(timer);
      timer = null;
      if (finished) return;
      if (k === 0) {
        rec.status = 200;
        res.writeHead(200, {
          'Content-Type': p.container === 'wav' ? 'audio/wav' : 'application/octet-stream',
          'dg-request-id': requestId,
          'dg-model-name': p.model,
          'dg-model-uuid': speakModelUuid(p.model),
          'dg-char-count': String(rec.chars),
        });
        if (p.container === 'wav') res.write(wavHeader(p.encoding, p.sampleRate, dataBytes));
      }
      do {
        if (audio.done) {
          res.end();
          release();
          return;
        }
        const before = audio.sentSamples;
        const chunk = audio.take(chunkSamples);
        k++;
        rec.audioBytes += chunk.length;
        rec.audioSeconds = r6(rec.audioSeconds + (audio.sentSamples - before) / p.sampleRate);
        res.write(chunk);
      } while (interval <= 0);
      emu?.server.changed();
      timer = setTimeout(step, Math.max(0, t0 + k * interval - performance.now()));
      restTimers.add(timer);
    };
    timer = setTimeout(step, Math.max(0, t0 - performance.now()));
    restTimers.add(timer);
  };

  const server = await startEmulatorServer<AcceptState>({
    name: 'deepgram-speak',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    recordAudio: options.recordAudio,
    onUpgrade,
    onHttpRequest,
    onConnection: (session, _ctx, state) => {
      const conn: DeepgramSpeakConnection = {
        record: session.record,
        session,
        requestId: state.requestId,
        apiKey: state.apiKey,
        auth: state.auth,
        params: state.params,
        timing: { firstAudioDelayMs: options.firstAudioDelayMs, realtimeFactor: options.realtimeFactor, chunkMs: options.chunkMs },
        speakFaults: nextSpeakFaults.shift() ?? {},
        speaks: [],
        buffer: '',
        segments: [],
        clears: [],
        counts: { speak: 0, flush: 0, flushRejected: 0, clear: 0, close: 0, invalid: 0, warnings: 0 },
        charsReceived: 0,
        chars: 0,
        charsSent: 0,
        audioSeconds: 0,
        audioBytes: 0,
        sent: [],
      };
      connections.push(conn);
      const handler = new SpeakSession(conn, { ...options }, () => emu?.speakFaults ?? defaultSpeakFaults(), () => server.changed());
      handlers.push(handler);
      return handler;
    },
    formatError: (status, message) => deepgramError(status, status === 429 ? 'TOO_MANY_REQUESTS' : 'EMULATED_FAULT', message, randomUUID()),
  });
  emu = new DeepgramSpeakEmulator(server, options, { connections, handlers, restRequests, restTimers, nextSpeakFaults });
  return emu;
}
