/**
 * Emulator of Deepgram's live speech-to-text WebSocket API v1:
 * https://developers.deepgram.com/reference/speech-to-text/listen-streaming
 *
 * Written from ../../../shared/providers.md §2.1, §2.2, §9 "Deepgram v1 listen" and the SDK types of
 * @deepgram/sdk 5.13.0 (ListenV1Results / Metadata / UtteranceEnd / SpeechStarted), never from
 * the gateway adapter. Transcripts come from the deterministic tone "speech" of ./audio.ts.
 *
 * Facts relied on (providers.md):
 * - auth `Authorization: Token <key>` or `Bearer <token>`, browser subprotocol `token, <key>`;
 *   failed upgrades answer 4xx with `dg-request-id` (always, also on 101) and `dg-error` headers
 *   plus a JSON body `{err_code, err_msg, request_id}`; 401 bad key, 400 bad params (keywords with
 *   nova-3 rejected before upgrade), 429 over the 50-stream concurrency limit.
 * - query booleans are the strings true/false; `sample_rate` required when `encoding` is given;
 *   endpointing default 10 ms, `false` disables; utterance_end_ms needs interim_results=true;
 *   keyterm is repeated (`keyterm=a&keyterm=b`) and nova-3 only.
 * - nothing is sent on open; binary = audio; text = {"type":"KeepAlive"|"Finalize"|"CloseStream"};
 *   CloseStream -> final results, Metadata, close 1000; no audio/KeepAlive for 10 s ->
 *   close 1011 NET-0001; undecodable payload (JSON in a binary frame) -> close 1008 DATA-0000;
 *   an empty binary frame is the deprecated close signal.
 * - interims ~every 1 s of audio, cumulative within the unfinalized window (start fixed, duration
 *   grows); is_final+speech_final at an endpoint; is_final alone at a stable segment boundary;
 *   next window starts at previous start+duration; from_finalize on the result of a Finalize;
 *   UtteranceEnd once per gap >= utterance_end_ms after the last word; SpeechStarted at voice
 *   onset; empty Results during silence.
 *
 * Deterministic rules (all in AUDIO time = bytes / (rate * bytesPerSample * channels); results are
 * sent as soon as the triggering audio arrives, plus `latencyMs`; only the idle timeout uses
 * wall-clock time). Evaluated at the end of every 10 ms analysis window, first match wins:
 *  1. endpoint: speech was heard in the window, we are in silence, and silence >= endpointing ->
 *     is_final + speech_final for [window start, now];
 *  2. segment: the window is >= maxSegmentMs long and holds words -> is_final (speech_final false)
 *     ending at the end of its last complete word;
 *  3. silence: the window has no speech and is >= silenceResultEveryMs long -> empty is_final;
 *  4. interim (interim_results=true): the window holds >= 1 word and its length passed the next
 *     multiple of interimIntervalMs -> is_final false with the window's words so far.
 *  then UtteranceEnd: outside speech, >= utterance_end_ms after the end of the last detected word,
 *  once per word.
 * Finalize: the word in progress is closed; if any audio was analysed since the last final, one
 * is_final + from_finalize (speech_final false) result covers it (possibly empty); otherwise
 * nothing is sent. CloseStream: the same flush (without from_finalize, only if audio is left),
 * then Metadata, then close 1000. Punctuation (punctuate or smart_format): the first word of a
 * window is capitalized and the last word of a speech_final result gets a ".".
 * Diarization (diarize=true or diarize_model): speaker = index of the voiced region mod 2.
 *
 * UNCERTAIN choices (not settled by the docs we have):
 * - Unknown or non-JSON text frames close the socket 1008 with a reason starting `DATA-0000`.
 * - Close reasons are `NET-0001 …` / `DATA-0000 …` followed by the human text and the dpgr.am link
 *   the real service uses (observed reasons carry the link; the code prefix comes from the docs).
 * - Auth is checked before query parameters; `model` is required (SDK and AsyncAPI mark it so);
 *   unknown models get 400 "No such model/language/tier combination found."; a repeated
 *   non-list parameter keeps its last value; `endpointing=true` means the default 10 ms.
 * - Empty silence results are is_final:true, speech_final:false every silenceResultEveryMs.
 * - UtteranceEnd is measured from the last detected word (finalized or not).
 * - Metadata has exactly the 7 documented fields (`transaction_key` is "deprecated", sha256 of
 *   the received audio bytes); Results carry no `entities` unless detect_entities=true (then []).
 * - Transcribed encodings: linear16, linear32, mulaw, alaw, and WAV (RIFF) when `encoding` is
 *   omitted. Other documented encodings are accepted but produce no words and 0 s of duration.
 *   With channels > 1 only channel 0 is transcribed; channel_index is [0, channels] with
 *   multichannel=true, else [0, 1].
 */
import { createHash, randomUUID } from 'node:crypto';
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

export const DEFAULT_API_KEY = 'dg-test-key';

export const DATA_0000_REASON =
  'DATA-0000 The payload cannot be decoded as audio. It is either not audio data or a codec unsupported by Deepgram.';
export const DATA_0000_TEXT_REASON = 'DATA-0000 Unrecognized text message. See https://dpgr.am/data0000';
export const NET_0001_REASON =
  'NET-0001 Deepgram did not receive audio data or a text message within the timeout window. See https://dpgr.am/net0001';

export interface DeepgramEmulatorOptions {
  /** keys accepted with `Token` (and `Bearer`); default ['dg-test-key'] */
  apiKeys?: string[];
  /** temporary tokens accepted with `Bearer` only */
  accessTokens?: string[];
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** open sessions per key before 429 (default 50) */
  maxConcurrent?: number;
  /** no audio and no text message for this long -> 1011 NET-0001 (default 10000) */
  idleTimeoutMs?: number;
  /** interim cadence in audio ms (default 1000) */
  interimIntervalMs?: number;
  /** continuous speech longer than this gets is_final without speech_final (default 5000) */
  maxSegmentMs?: number;
  /** empty is_final results during silence every this many audio ms (default 3000; 0 = never) */
  silenceResultEveryMs?: number;
  /** extra wall-clock delay before every message (default 0) */
  latencyMs?: number;
  /** keep binary payloads in the wire record */
  recordAudio?: boolean;
}

export type ResolvedDeepgramOptions = Required<Omit<DeepgramEmulatorOptions, 'port' | 'host' | 'tls'>>;

// ---------------------------------------------------------------------------------------------
// Wire types (mirroring the SDK's ListenV1* types)

export interface DgWord {
  word: string;
  start: number;
  end: number;
  confidence: number;
  punctuated_word: string;
  speaker?: number;
  language?: string;
}

export interface DgResults {
  type: 'Results';
  channel_index: number[];
  duration: number;
  start: number;
  is_final: boolean;
  speech_final: boolean;
  channel: { alternatives: Array<{ transcript: string; confidence: number; words: DgWord[]; languages?: string[] }> };
  metadata: {
    request_id: string;
    model_uuid: string;
    model_info: { name: string; version: string; arch: string };
    diarize_info?: { model_uuid: string; arch: string };
  };
  from_finalize: boolean;
  entities?: Array<{ label: string; value: string; raw_value: string; confidence: number; start_word: number; end_word: number }>;
}

export interface DgMetadata {
  type: 'Metadata';
  transaction_key: string;
  request_id: string;
  sha256: string;
  created: string;
  duration: number;
  channels: number;
}

export interface DgUtteranceEnd {
  type: 'UtteranceEnd';
  channel: number[];
  last_word_end: number;
}

export interface DgSpeechStarted {
  type: 'SpeechStarted';
  channel: number[];
  timestamp: number;
}

export type DgServerMessage = DgResults | DgMetadata | DgUtteranceEnd | DgSpeechStarted;

// ---------------------------------------------------------------------------------------------
// Query parameters

export const ENCODINGS = ['linear16', 'linear32', 'flac', 'alaw', 'mulaw', 'amr-nb', 'amr-wb', 'opus', 'ogg-opus', 'speex', 'g729'] as const;

/** ListenV1Model of @deepgram/sdk 5.13.0 */
export const MODELS: readonly string[] = [
  'nova-3', 'nova-3-general', 'nova-3-medical',
  'nova-2', 'nova-2-general', 'nova-2-meeting', 'nova-2-finance', 'nova-2-conversationalai', 'nova-2-voicemail',
  'nova-2-video', 'nova-2-medical', 'nova-2-drivethru', 'nova-2-automotive',
  'nova', 'nova-general', 'nova-phonecall', 'nova-medical',
  'enhanced', 'enhanced-general', 'enhanced-meeting', 'enhanced-phonecall', 'enhanced-finance',
  'base', 'meeting', 'phonecall', 'finance', 'conversationalai', 'voicemail', 'video', 'custom',
];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const BOOLEAN_PARAMS = [
  'detect_entities', 'diarize', 'dictation', 'filler_words', 'interim_results', 'mip_opt_out', 'multichannel',
  'numerals', 'profanity_filter', 'punctuate', 'smart_format', 'vad_events',
];
const LIST_PARAMS = ['keyterm', 'keywords', 'redact', 'replace', 'search', 'tag', 'extra'];
const OTHER_PARAMS = [
  'model', 'language', 'encoding', 'sample_rate', 'channels', 'endpointing', 'utterance_end_ms', 'diarize_model',
  'callback', 'callback_method', 'version',
];
const KNOWN_PARAMS = new Set([...BOOLEAN_PARAMS, ...LIST_PARAMS, ...OTHER_PARAMS]);
const REDACT_VALUES = new Set(['true', 'false', 'pci', 'numbers', 'aggressive_numbers', 'ssn']);

export interface ListenParams {
  model: string;
  language: string;
  encoding: string | null;
  sampleRate: number | null;
  channels: number;
  multichannel: boolean;
  interimResults: boolean;
  /** ms, or false when disabled */
  endpointing: number | false;
  utteranceEndMs: number | null;
  vadEvents: boolean;
  punctuate: boolean;
  smartFormat: boolean;
  diarize: boolean;
  detectEntities: boolean;
  keyterms: string[];
  keywords: string[];
  /** query keys the emulator does not know (accepted) */
  unknown: string[];
  /** every query value as received */
  raw: Record<string, string[]>;
}

export type ParamCheck = { ok: true; params: ListenParams } | { ok: false; errCode: string; message: string };

function isNova3(model: string): boolean {
  return model === 'nova-3' || model.startsWith('nova-3-');
}

/** Validate /v1/listen query parameters the way the API does at upgrade time. */
export function parseListenQuery(query: Record<string, string[]>): ParamCheck {
  const bad = (message: string, errCode = 'INVALID_QUERY_PARAMETER'): ParamCheck => ({ ok: false, errCode, message });
  const last = (k: string): string | undefined => {
    const v = query[k];
    return v ? v[v.length - 1] : undefined;
  };
  const bools: Record<string, boolean> = {};
  for (const k of BOOLEAN_PARAMS) {
    const v = last(k);
    if (v === undefined) continue;
    if (v !== 'true' && v !== 'false') return bad(`Invalid value '${v}' for query parameter '${k}': expected true or false.`);
    bools[k] = v === 'true';
  }
  const int = (k: string, min: number): number | null | ParamCheck => {
    const v = last(k);
    if (v === undefined) return null;
    if (!/^\d+$/.test(v) || Number(v) < min) return bad(`Invalid value '${v}' for query parameter '${k}': expected an integer >= ${min}.`);
    return Number(v);
  };
  const sampleRate = int('sample_rate', 1);
  if (typeof sampleRate === 'object' && sampleRate !== null) return sampleRate;
  const channels = int('channels', 1);
  if (typeof channels === 'object' && channels !== null) return channels;
  const utteranceEndMs = int('utterance_end_ms', 0);
  if (typeof utteranceEndMs === 'object' && utteranceEndMs !== null) return utteranceEndMs;

  let endpointing: number | false = 10;
  const ep = last('endpointing');
  if (ep !== undefined) {
    if (ep === 'false') endpointing = false;
    else if (ep === 'true') endpointing = 10;
    else if (/^\d+$/.test(ep)) endpointing = Number(ep);
    else return bad(`Invalid value '${ep}' for query parameter 'endpointing': expected an integer number of milliseconds or false.`);
  }

  const encoding = last('encoding') ?? null;
  if (encoding !== null && !(ENCODINGS as readonly string[]).includes(encoding)) {
    return bad(`Invalid value '${encoding}' for query parameter 'encoding': expected one of ${ENCODINGS.join(', ')}.`);
  }
  if (encoding !== null && sampleRate === null) {
    return bad(`Query parameter 'sample_rate' is required when 'encoding' is provided.`);
  }
  for (const r of query['redact'] ?? []) {
    if (!REDACT_VALUES.has(r)) return bad(`Invalid value '${r}' for query parameter 'redact'.`);
  }
  const dm = last('diarize_model');
  if (dm !== undefined && dm !== 'latest' && dm !== 'v1') return bad(`Invalid value '${dm}' for query parameter 'diarize_model'.`);
  const cm = last('callback_method');
  if (cm !== undefined && cm !== 'POST' && cm !== 'PUT') return bad(`Invalid value '${cm}' for query parameter 'callback_method'.`);

  const model = last('model');
  if (model === undefined || model === '') return bad(`Missing required query parameter 'model'.`);
  if (!MODELS.includes(model) && !UUID_RE.test(model)) {
    return bad('No such model/language/tier combination found.', 'Bad Request');
  }
  const keywords = (query['keywords'] ?? []).filter((k) => k.trim() !== '');
  if (isNova3(model) && keywords.length > 0) {
    return bad('Keywords are not supported for Nova-3. Please use `keyterm` instead.');
  }
  const keyterms = query['keyterm'] ?? [];
  if (!isNova3(model) && keyterms.length > 0) {
    return bad('Keyterm prompting is only supported for Nova-3 models. Please use `keywords` instead.');
  }
  const interimResults = bools['interim_results'] ?? false;
  if (utteranceEndMs !== null && !interimResults) {
    return bad(`Query parameter 'utterance_end_ms' requires 'interim_results=true'.`);
  }
  return {
    ok: true,
    params: {
      model,
      language: last('language') ?? 'en',
      encoding,
      sampleRate,
      channels: channels ?? 1,
      multichannel: bools['multichannel'] ?? false,
      interimResults,
      endpointing,
      utteranceEndMs,
      vadEvents: bools['vad_events'] ?? false,
      punctuate: bools['punctuate'] ?? false,
      smartFormat: bools['smart_format'] ?? false,
      diarize: (bools['diarize'] ?? false) || dm !== undefined,
      detectEntities: bools['detect_entities'] ?? false,
      keyterms,
      keywords,
      unknown: Object.keys(query).filter((k) => !KNOWN_PARAMS.has(k)),
      raw: query,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Audio decoding: bytes -> seconds + channel-0 samples

interface AudioDecoder {
  sampleRate: number | null;
  decode(chunk: Buffer): { seconds: number; samples: Int16Array | null };
}

class PcmDecoder implements AudioDecoder {
  readonly sampleRate: number;
  private readonly bps: number;
  private readonly channels: number;
  private readonly kind: 'linear16' | 'linear32' | 'mulaw' | 'alaw';
  private carry: Buffer = Buffer.alloc(0);

  constructor(kind: 'linear16' | 'linear32' | 'mulaw' | 'alaw', sampleRate: number, channels: number) {
    this.kind = kind;
    this.sampleRate = sampleRate;
    this.channels = channels;
    this.bps = kind === 'linear16' ? 2 : kind === 'linear32' ? 4 : 1;
  }

  decode(chunk: Buffer): { seconds: number; samples: Int16Array } {
    const seconds = chunk.length / (this.sampleRate * this.bps * this.channels);
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    const frame = this.bps * this.channels;
    const frames = Math.floor(buf.length / frame);
    const samples = new Int16Array(frames);
    for (let i = 0; i < frames; i++) {
      const off = i * frame;
      switch (this.kind) {
        case 'linear16':
          samples[i] = buf.readInt16LE(off);
          break;
        case 'linear32':
          samples[i] = buf.readInt32LE(off) >> 16;
          break;
        case 'mulaw':
          samples[i] = mulawToLinear(buf[off]!);
          break;
        case 'alaw':
          samples[i] = alawToLinear(buf[off]!);
          break;
      }
    }
    this.carry = Buffer.from(buf.subarray(frames * frame));
    return { seconds, samples };
  }
}

/** Containerized audio: RIFF/WAVE PCM16 is transcribed; anything else is opaque. */
class ContainerDecoder implements AudioDecoder {
  sampleRate: number | null = null;
  channels = 1;
  private head: Buffer = Buffer.alloc(0);
  private inner: PcmDecoder | null = null;
  private opaque = false;

  decode(chunk: Buffer): { seconds: number; samples: Int16Array | null } {
    if (this.inner) return this.inner.decode(chunk);
    if (this.opaque) return { seconds: 0, samples: null };
    this.head = Buffer.concat([this.head, chunk]);
    const h = this.head;
    if (h.length < 12) return { seconds: 0, samples: null };
    if (h.toString('latin1', 0, 4) !== 'RIFF' || h.toString('latin1', 8, 12) !== 'WAVE') {
      this.opaque = true;
      this.head = Buffer.alloc(0);
      return { seconds: 0, samples: null };
    }
    let off = 12;
    let fmt: { format: number; channels: number; rate: number; bits: number } | null = null;
    while (off + 8 <= h.length) {
      const id = h.toString('latin1', off, off + 4);
      const size = h.readUInt32LE(off + 4);
      if (id === 'data') {
        if (!fmt || fmt.format !== 1 || fmt.bits !== 16 || fmt.rate < 1) {
          this.opaque = true;
          return { seconds: 0, samples: null };
        }
        this.sampleRate = fmt.rate;
        this.channels = fmt.channels;
        this.inner = new PcmDecoder('linear16', fmt.rate, fmt.channels);
        const rest = h.subarray(off + 8);
        this.head = Buffer.alloc(0);
        return this.inner.decode(Buffer.from(rest));
      }
      if (off + 8 + size > h.length) break;
      if (id === 'fmt ' && size >= 16) {
        fmt = {
          format: h.readUInt16LE(off + 8),
          channels: Math.max(1, h.readUInt16LE(off + 10)),
          rate: h.readUInt32LE(off + 12),
          bits: h.readUInt16LE(off + 22),
        };
      }
      off += 8 + size + (size % 2);
    }
    if (h.length > 1 << 20) this.opaque = true;
    return { seconds: 0, samples: null };
  }
}

class OpaqueDecoder implements AudioDecoder {
  sampleRate: number | null = null;
  decode(): { seconds: number; samples: null } {
    return { seconds: 0, samples: null };
  }
}

function makeDecoder(p: ListenParams): AudioDecoder {
  if (p.encoding === null) return new ContainerDecoder();
  const rate = p.sampleRate ?? 16000;
  switch (p.encoding) {
    case 'linear16':
    case 'linear32':
    case 'mulaw':
    case 'alaw':
      return new PcmDecoder(p.encoding, rate, p.channels);
    default:
      return new OpaqueDecoder();
  }
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

export function modelInfo(model: string): { name: string; version: string; arch: string } {
  const m = /^(nova-3|nova-2|nova|enhanced)(?:-(.+))?$/.exec(model);
  if (m) return { name: `${m[2] ?? 'general'}-${m[1]}`, version: '2025-01-01.0', arch: m[1]! };
  return { name: model, version: '2025-01-01.0', arch: 'base' };
}

function headerSafe(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

/** `{"err_code","err_msg","request_id"}` with dg-error / dg-request-id headers. */
export function deepgramError(status: number, errCode: string, message: string, requestId: string): {
  headers: Record<string, string>;
  body: string;
} {
  return {
    headers: { 'dg-request-id': requestId, 'dg-error': headerSafe(message) },
    body: JSON.stringify({ err_code: errCode, err_msg: message, request_id: requestId }),
  };
}

function parseAuth(req: IncomingMessage): { scheme: 'token' | 'bearer'; key: string; via: 'header' | 'subprotocol' } | null {
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
  return null;
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

// ---------------------------------------------------------------------------------------------
// One live session

export interface DeepgramConnection {
  /** wire record (frames, headers, close) */
  record: ConnectionRecord;
  /** base session: per-connection fault overrides live in `session.faults` */
  session: WsSession;
  requestId: string;
  apiKey: string;
  auth: { scheme: 'token' | 'bearer'; via: 'header' | 'subprotocol' };
  params: ListenParams;
  counts: { keepAlive: number; finalize: number; closeStream: number; emptyBinary: number; invalidText: number; results: number };
  /** audio seconds received (decoded duration) */
  audioSeconds: number;
  audioBytes: number;
  /** every message the emulator produced, in order (also those withheld by the deadAir fault) */
  sent: DgServerMessage[];
}

interface WindowWord {
  word: string;
  start: number;
  end: number;
  speaker: number;
}

const EPS = 1e-6;
const WORD_CONFIDENCE = 0.99;

class ListenSession implements WsHandler {
  readonly conn: DeepgramConnection;
  private readonly opts: ResolvedDeepgramOptions;
  private readonly p: ListenParams;
  private readonly session: WsSession;
  private readonly decoder: AudioDecoder;
  private detector: SpeechDetector | null = null;
  private readonly sha = createHash('sha256');
  private readonly modelUuid: string;
  private readonly info: { name: string; version: string; arch: string };
  private idleTimer: NodeJS.Timeout | null = null;
  private ended = false;
  // window state (audio seconds)
  private now = 0;
  private windowStart = 0;
  private windowWords: WindowWord[] = [];
  private windowHasSpeech = false;
  private nextInterimAt: number;
  private inSpeech = false;
  private silenceStart: number | null = null;
  private speechRegions = 0;
  private lastWordEnd: number | null = null;
  private utteranceEndPending = false;

  constructor(conn: DeepgramConnection, opts: ResolvedDeepgramOptions) {
    this.conn = conn;
    this.opts = opts;
    this.p = conn.params;
    this.session = conn.session;
    this.decoder = makeDecoder(this.p);
    this.ensureDetector();
    this.modelUuid = UUID_RE.test(this.p.model) ? this.p.model : uuidFrom(`model:${this.p.model}`);
    this.info = modelInfo(this.p.model);
    this.nextInterimAt = opts.interimIntervalMs / 1000;
    this.touch();
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
        this.fatal(1008, DATA_0000_REASON);
        return;
      }
      this.touch();
      this.audio(data);
      return;
    }
    let type: unknown;
    try {
      const msg: unknown = JSON.parse(data.toString('utf8'));
      type = msg && typeof msg === 'object' ? (msg as { type?: unknown }).type : undefined;
    } catch {
      type = undefined;
    }
    // counted even after the stream ended, so tests see everything the client sent
    switch (type) {
      case 'KeepAlive':
        this.conn.counts.keepAlive++;
        if (!this.ended) this.touch();
        return;
      case 'Finalize':
        this.conn.counts.finalize++;
        if (this.ended) return;
        this.touch();
        this.finalize();
        return;
      case 'CloseStream':
        this.conn.counts.closeStream++;
        this.closeStream();
        return;
      default:
        this.conn.counts.invalidText++;
        if (!this.ended) this.fatal(1008, DATA_0000_TEXT_REASON);
    }
  }

  onClose(): void {
    this.ended = true;
    this.clearIdle();
  }

  private ensureDetector(): void {
    const rate = this.decoder.sampleRate;
    if (!this.detector && rate !== null && rate >= 8000 && rate <= 48000) {
      this.detector = new SpeechDetector({ sampleRate: rate });
    }
  }

  private audio(data: Buffer): void {
    this.conn.audioBytes += data.length;
    this.sha.update(data);
    const { seconds, samples } = this.decoder.decode(data);
    this.conn.audioSeconds += seconds;
    if (!this.session.reportAudio(seconds)) {
      this.ended = !this.session.isOpen;
      if (this.ended) this.clearIdle();
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
          this.speechRegions++;
          if (this.p.vadEvents) this.send({ type: 'SpeechStarted', channel: this.channel(), timestamp: ev.time });
          break;
        case 'word':
          this.windowWords.push({ word: ev.word, start: ev.start, end: ev.end, speaker: Math.max(0, this.speechRegions - 1) % 2 });
          this.lastWordEnd = ev.end;
          this.utteranceEndPending = true;
          break;
        case 'speech-end':
          this.inSpeech = false;
          this.silenceStart = ev.time;
          break;
        case 'window':
          this.onWindow(ev.end, ev.voiced);
          break;
      }
    }
  }

  private onWindow(now: number, voiced: boolean): void {
    this.now = now;
    if (voiced) this.windowHasSpeech = true;
    const age = now - this.windowStart;
    const ep = this.p.endpointing;
    const lastWord = this.windowWords[this.windowWords.length - 1];
    if (ep !== false && this.windowHasSpeech && !this.inSpeech && this.silenceStart !== null && now - this.silenceStart >= ep / 1000 - EPS) {
      this.emitFinal(now, { speechFinal: true });
    } else if (lastWord && age >= this.opts.maxSegmentMs / 1000 - EPS) {
      this.emitFinal(lastWord.end, { speechFinal: false });
    } else if (!this.windowHasSpeech && this.windowWords.length === 0 && this.opts.silenceResultEveryMs > 0 && age >= this.opts.silenceResultEveryMs / 1000 - EPS) {
      this.emitFinal(now, { speechFinal: false });
    } else if (this.p.interimResults && this.windowWords.length > 0 && now >= this.nextInterimAt - EPS) {
      this.send(this.results(this.windowStart, now, this.windowWords, { isFinal: false, speechFinal: false, fromFinalize: false }));
      const step = this.opts.interimIntervalMs / 1000;
      while (this.nextInterimAt <= now + EPS) this.nextInterimAt += step;
    }
    const ue = this.p.utteranceEndMs;
    if (ue !== null && this.utteranceEndPending && !this.inSpeech && this.lastWordEnd !== null && now - this.lastWordEnd >= ue / 1000 - EPS) {
      this.utteranceEndPending = false;
      this.send({ type: 'UtteranceEnd', channel: this.channel(), last_word_end: this.lastWordEnd });
    }
  }

  private emitFinal(end: number, o: { speechFinal: boolean; fromFinalize?: boolean }): void {
    const words = this.windowWords.filter((w) => w.end <= end + EPS);
    this.windowWords = this.windowWords.filter((w) => w.end > end + EPS);
    this.send(this.results(this.windowStart, end, words, { isFinal: true, speechFinal: o.speechFinal, fromFinalize: o.fromFinalize ?? false }));
    this.windowStart = end;
    this.windowHasSpeech = this.inSpeech;
    this.nextInterimAt = end + this.opts.interimIntervalMs / 1000;
  }

  private finalize(): void {
    if (this.detector) this.handle(this.detector.flush());
    if (this.ended) return;
    if (this.now > this.windowStart + EPS) this.emitFinal(this.now, { speechFinal: false, fromFinalize: true });
  }

  private closeStream(): void {
    if (this.ended) return;
    if (this.detector) this.handle(this.detector.end());
    if (this.ended) return;
    this.ended = true;
    this.clearIdle();
    if (this.detector) this.now = Math.max(this.now, this.detector.processedSeconds);
    if (this.now > this.windowStart + EPS) this.emitFinal(this.now, { speechFinal: false });
    this.send({
      type: 'Metadata',
      transaction_key: 'deprecated',
      request_id: this.conn.requestId,
      sha256: this.sha.copy().digest('hex'),
      created: this.conn.record.openedAt.toISOString(),
      duration: r6(this.conn.audioSeconds),
      channels: this.p.channels,
    });
    this.session.close(1000, '', { delayMs: this.opts.latencyMs });
  }

  private fatal(code: number, reason: string): void {
    this.ended = true;
    this.clearIdle();
    this.session.close(code, reason, { delayMs: this.opts.latencyMs });
  }

  private touch(): void {
    this.clearIdle();
    if (this.ended) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.fatal(1011, NET_0001_REASON);
    }, this.opts.idleTimeoutMs);
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  private channel(): number[] {
    return [0, this.p.multichannel ? this.p.channels : 1];
  }

  private results(start: number, end: number, words: WindowWord[], f: { isFinal: boolean; speechFinal: boolean; fromFinalize: boolean }): DgResults {
    const punct = this.p.punctuate || this.p.smartFormat;
    const multi = this.p.language === 'multi';
    const out: DgWord[] = words.map((w, i) => {
      let pw = w.word;
      if (punct && i === 0) pw = pw.charAt(0).toUpperCase() + pw.slice(1);
      if (punct && f.speechFinal && i === words.length - 1) pw += '.';
      const dw: DgWord = { word: w.word, start: w.start, end: w.end, confidence: WORD_CONFIDENCE, punctuated_word: pw };
      if (this.p.diarize) dw.speaker = w.speaker;
      if (multi) dw.language = 'en';
      return dw;
    });
    const alt: DgResults['channel']['alternatives'][number] = {
      transcript: out.map((w) => (punct ? w.punctuated_word : w.word)).join(' '),
      confidence: out.length > 0 ? WORD_CONFIDENCE : 0,
      words: out,
    };
    if (multi) alt.languages = out.length > 0 ? ['en'] : [];
    const s = r6(start);
    const msg: DgResults = {
      type: 'Results',
      channel_index: this.channel(),
      duration: r6(r6(end) - s),
      start: s,
      is_final: f.isFinal,
      speech_final: f.speechFinal,
      channel: { alternatives: [alt] },
      metadata: { request_id: this.conn.requestId, model_uuid: this.modelUuid, model_info: this.info },
      from_finalize: f.fromFinalize,
    };
    if (this.p.diarize) msg.metadata.diarize_info = { model_uuid: uuidFrom('diarizer'), arch: 'v1' };
    if (this.p.detectEntities && f.isFinal) msg.entities = [];
    return msg;
  }

  private send(msg: DgServerMessage): void {
    if (msg.type === 'Results') this.conn.counts.results++;
    this.conn.sent.push(msg);
    this.session.send(JSON.stringify(msg), { delayMs: this.opts.latencyMs });
  }
}

// ---------------------------------------------------------------------------------------------
// The emulator

interface AcceptState {
  requestId: string;
  apiKey: string;
  auth: { scheme: 'token' | 'bearer'; via: 'header' | 'subprotocol' };
  params: ListenParams;
}

export class DeepgramEmulator {
  readonly server: EmulatorServer;
  /** live options: changes apply to connections opened afterwards */
  readonly options: ResolvedDeepgramOptions;
  readonly connections: DeepgramConnection[];

  constructor(server: EmulatorServer, options: ResolvedDeepgramOptions, connections: DeepgramConnection[]) {
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

  waitForConnection(n = 1, timeoutMs = 2000): Promise<DeepgramConnection> {
    return this.server.waitFor(() => this.connections[n - 1], timeoutMs, `deepgram connection #${n}`);
  }

  waitForClose(conn?: DeepgramConnection, timeoutMs = 2000): Promise<DeepgramConnection> {
    return this.server.waitFor(() => {
      const c = conn ?? this.connections[this.connections.length - 1];
      return c && c.record.closed ? c : undefined;
    }, timeoutMs, 'deepgram connection close');
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  close(): Promise<void> {
    return this.server.close();
  }
}

export async function startDeepgramEmulator(opts: DeepgramEmulatorOptions = {}): Promise<DeepgramEmulator> {
  const options: ResolvedDeepgramOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_API_KEY],
    accessTokens: opts.accessTokens ?? [],
    maxConcurrent: opts.maxConcurrent ?? 50,
    idleTimeoutMs: opts.idleTimeoutMs ?? 10_000,
    interimIntervalMs: opts.interimIntervalMs ?? 1000,
    maxSegmentMs: opts.maxSegmentMs ?? 5000,
    silenceResultEveryMs: opts.silenceResultEveryMs ?? 3000,
    latencyMs: opts.latencyMs ?? 0,
    recordAudio: opts.recordAudio ?? false,
  };
  const connections: DeepgramConnection[] = [];
  const openFor = (key: string) => connections.filter((c) => c.apiKey === key && !c.record.closed).length;

  const onUpgrade = (ctx: UpgradeContext): UpgradeDecision<AcceptState> => {
    const requestId = randomUUID();
    const reject = (status: number, errCode: string, message: string): UpgradeDecision<AcceptState> => ({
      accept: false,
      status,
      ...deepgramError(status, errCode, message, requestId),
    });
    const path = ctx.url.pathname.replace(/\/+$/, '');
    if (path !== '/v1/listen') return reject(404, 'NOT_FOUND', `No route for ${ctx.url.pathname}.`);
    const auth = parseAuth(ctx.req);
    const valid = auth !== null && (options.apiKeys.includes(auth.key) || (auth.scheme === 'bearer' && options.accessTokens.includes(auth.key)));
    if (!auth || !valid) return reject(401, 'INVALID_AUTH', 'Invalid credentials.');
    const check = parseListenQuery(ctx.query);
    if (!check.ok) return reject(400, check.errCode, check.message);
    if (openFor(auth.key) >= options.maxConcurrent) {
      return reject(429, 'TOO_MANY_REQUESTS', 'Too many requests. Please try again later');
    }
    return {
      accept: true,
      headers: { 'dg-request-id': requestId },
      state: { requestId, apiKey: auth.key, auth: { scheme: auth.scheme, via: auth.via }, params: check.params },
    };
  };

  const server = await startEmulatorServer<AcceptState>({
    name: 'deepgram',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    recordAudio: options.recordAudio,
    onUpgrade,
    onConnection: (session, _ctx, state) => {
      const conn: DeepgramConnection = {
        record: session.record,
        session,
        requestId: state.requestId,
        apiKey: state.apiKey,
        auth: state.auth,
        params: state.params,
        counts: { keepAlive: 0, finalize: 0, closeStream: 0, emptyBinary: 0, invalidText: 0, results: 0 },
        audioSeconds: 0,
        audioBytes: 0,
        sent: [],
      };
      connections.push(conn);
      return new ListenSession(conn, { ...options });
    },
    formatError: (status, message) => deepgramError(status, status === 429 ? 'TOO_MANY_REQUESTS' : 'EMULATED_FAULT', message, randomUUID()),
  });
  return new DeepgramEmulator(server, options, connections);
}
