/**
 * Cartesia Ink speech-to-text, two WebSocket endpoints and therefore two adapters:
 * - `cartesiaStt` (ink-whisper): wss://api.cartesia.ai/stt/websocket (no turn detection; the
 *   `finalize` command flushes, `max_silence_duration_secs` auto-finalizes)
 *   https://docs.cartesia.ai/api-reference/stt/stt
 * - `cartesiaTurnsStt` (ink-2): wss://api.cartesia.ai/stt/turns/websocket (turn events)
 *   https://docs.cartesia.ai/api-reference/stt/turns/websocket
 *
 * Sources: shared/providers.md 4.1-4.3 and 9; the types of @cartesia/cartesia-js 4.2.0
 * (src/resources/stt/{manual-finalize,auto-finalize}/*.ts, src/resources/stt/stt.ts: API
 * 2026-08-14); docs.cartesia.ai use-the-api/stt/migrate-from-deepgram-nova/{manual,auto} and
 * migrate-from-deepgram-flux (Bearer auth + Cartesia-Version, ink-2 English only, control
 * commands are bare text frames on /stt/websocket); providers.md 4.2 quoting the 2025-04-16
 * stt.yml for the 20 s idle rule;
 * LiveKit's Cartesia plugin (livekit-plugins-cartesia _recognize_streams/*.py) for how deltas,
 * word times and turn.resume behave in practice.
 *
 * Decisions:
 * - API version pinned to 2026-08-14 (what the v4 SDK sends), with `Authorization: Bearer`.
 *   The turns endpoint only exists in the 2026 API reference, so both adapters use it. In this
 *   version the end-of-stream command is `close` (text frame on /stt/websocket, JSON
 *   `{"type":"close"}` on the turns endpoint), and a transcript's `text` is the delta since
 *   the last `is_final: true` chunk.
 * - ink-whisper has no turn detection: every non-empty `is_final: true` transcript is one final
 *   (the API only finalizes on `finalize` or after `max_silence_duration_secs` of silence, i.e.
 *   at the end of an utterance). `is_final: false` chunks are interims of that utterance.
 *   `flush_done` -> `finalized`; if an interim is still pending it waits for the final (the
 *   2025 docs show flush_done before the final transcript, the 2026 SDK after it).
 * - Word times are on the connection's timeline (LiveKit's plugin adds only its reconnect
 *   offset). Without words a segment runs from the previous final's end for `duration` seconds
 *   (capped by the audio sent), the way LiveKit's plugin tracks it. Both shapes of `words` are
 *   read: `[{word,start,end}]` (docs) and `[{words[],start[],end[]}]` (SDK WordTimestamps).
 * - ink-2: turn.start -> speech_started, turn.update -> interim (cumulative), turn.eager_end ->
 *   preflight, turn.resume -> interim with the turn's text (cancels the preflight, as LiveKit
 *   does), turn.end -> final (also when empty, so the client leaves the speaking state). There
 *   are no timestamps: a turn's segment runs from the previous turn end to the audio sent when
 *   turn.end arrived (the LiveKit gateway reports the same billing-style duration).
 * - Keep-alive: Cartesia closes /stt/websocket after 20 s without a message ("resets with each
 *   message (audio data or text command)") and has no keep-alive message. The interface sends
 *   keep-alives as text, so after 10 s without audio we send a command that changes nothing:
 *   `finalize` (ink-whisper: flushes what little is buffered, answered by flush_done) and
 *   `{"type":"config"}` (ink-2: a config update without settings). Preferred: 100 ms of digital
 *   silence as a binary frame once `keepAlive.message` may be a Buffer (proposed change).
 * - Options are validated against the documented ranges (turn_* from the SDK/API reference,
 *   including the order end < eager_end < start with the defaults filled in); never clamped.
 *   `max_silence_duration_secs` has no documented range: 0.1-60 s is accepted.
 */
import { parseJsonObject } from '../upstream/json.ts';
import { GatewayError, codeForUpstreamStatus } from '../../protocol/errors.ts';
import { validateOptions, type OptionSpec } from '../options.ts';
import type {
  ProviderEndpoint,
  SttAdapter,
  SttCodec,
  SttEvent,
  SttOptions,
  SttSegment,
  SttWord,
  UpstreamRequest,
} from '../types.ts';

export const CARTESIA_STT_API_VERSION = '2026-08-14';
export const CARTESIA_WHISPER_MODELS = ['ink-whisper', 'ink-whisper-2025-06-04'] as const;
export const CARTESIA_TURNS_MODELS = ['ink-2'] as const;

/** Half of Cartesia's 20 s idle limit. */
const KEEPALIVE_IDLE_MS = 10_000;
const KEYTERM_MAX_TERMS = 100;
const KEYTERM_MAX_CHARS = 1200;

/** Documented defaults of the turn settings (used to check their order and to reset them). */
export const TURN_DEFAULTS = {
  turn_start_threshold: 0.8,
  turn_eager_end_threshold: 0.4,
  turn_end_threshold: 0.2,
  turn_end_timeout_ms: 5600,
} as const;

const WHISPER_OPTIONS: Record<string, OptionSpec> = {
  min_volume: { kind: 'number', min: 0, max: 1 },
  max_silence_duration_secs: { kind: 'number', min: 0.1, max: 60 },
};

const TURN_OPTIONS: Record<string, OptionSpec> = {
  turn_start_threshold: { kind: 'number', min: 0.5, max: 0.9 },
  turn_eager_end_threshold: { kind: 'number', min: 0.3, max: 0.6 },
  turn_end_threshold: { kind: 'number', min: 0.05, max: 0.5 },
  turn_end_timeout_ms: { kind: 'number', min: 640, max: 11200, integer: true },
};

const COMMON_REFUSED: Record<string, string> = {
  model: 'set the model in the model string',
  language: 'set the language in settings.language',
  encoding: 'the gateway sends pcm_s16le',
  sample_rate: 'set settings.sample_rate',
  cartesia_version: 'the gateway pins the API version',
  api_key: 'credentials come from the gateway configuration',
  access_token: 'credentials come from the gateway configuration',
};

const WHISPER_REFUSED: Record<string, string> = {
  ...COMMON_REFUSED,
  ...Object.fromEntries(Object.keys(TURN_OPTIONS).map((k) => [k, 'turn detection options need cartesia/ink-2'])),
};

const TURNS_REFUSED: Record<string, string> = {
  ...COMMON_REFUSED,
  min_volume: 'only for cartesia/ink-whisper',
  max_silence_duration_secs: 'only for cartesia/ink-whisper (ink-2 ends turns itself; see turn_end_timeout_ms)',
};

function bad(message: string): GatewayError {
  return new GatewayError('bad_request', `cartesia: ${message}`);
}

/** keyterm: a string or up to 100 strings, at most 1200 characters in all; [] is dropped. */
function checkKeyterm(v: unknown): string[] | undefined {
  if (v === null || v === undefined) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  const why = `option "keyterm" must be a string or an array of at most ${KEYTERM_MAX_TERMS} non-empty strings totaling at most ${KEYTERM_MAX_CHARS} characters`;
  if (!Array.isArray(list) || list.length > KEYTERM_MAX_TERMS) throw bad(why);
  let total = 0;
  for (const t of list) {
    if (typeof t !== 'string' || t.trim() === '') throw bad(why);
    total += t.length;
  }
  if (total > KEYTERM_MAX_CHARS) throw bad(why);
  return list.length > 0 ? (list as string[]) : undefined;
}

const LANGUAGE_RE = /^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{2,8}){0,3}$/;

/** The ISO-639-1 code Cartesia expects (no region), or undefined (Cartesia's default, en). */
function apiLanguage(language: string | undefined): string | undefined {
  if (language === undefined) return undefined;
  const m = LANGUAGE_RE.exec(language);
  if (!m || language === 'multi') {
    throw bad(`invalid language "${language.slice(0, 40)}": Cartesia takes one ISO-639-1 language (no automatic detection)`);
  }
  return (m[1] as string).toLowerCase();
}

function validateExtra(extra: Record<string, unknown>, specs: Record<string, OptionSpec>, refused: Record<string, string>): Record<string, unknown> {
  const { keyterm, ...rest } = extra;
  // keyterm (string | string[]) is checked by checkKeyterm; its spec here only names it in errors
  const out = validateOptions('cartesia', rest, { ...specs, keyterm: { kind: 'string', maxLength: KEYTERM_MAX_CHARS } }, refused);
  const terms = checkKeyterm(keyterm);
  if (terms) out.keyterm = terms;
  return out;
}

type TurnSettings = Record<keyof typeof TURN_DEFAULTS, number>;

/** Turn settings with the defaults filled in. */
function turnSettings(extra: Record<string, unknown>): TurnSettings {
  const t: TurnSettings = { ...TURN_DEFAULTS };
  for (const k of Object.keys(TURN_DEFAULTS) as (keyof TurnSettings)[]) {
    const v = extra[k];
    if (typeof v === 'number') t[k] = v;
  }
  return t;
}

function validateTurnOrder(extra: Record<string, unknown>): void {
  const t = turnSettings(extra);
  if (!(t.turn_end_threshold < t.turn_eager_end_threshold && t.turn_eager_end_threshold < t.turn_start_threshold)) {
    throw bad(
      `turn thresholds must keep turn_end_threshold < turn_eager_end_threshold < turn_start_threshold ` +
        `(got ${t.turn_end_threshold} / ${t.turn_eager_end_threshold} / ${t.turn_start_threshold}, defaults 0.2 / 0.4 / 0.8)`,
    );
  }
}

function baseQuery(opts: SttOptions): URLSearchParams {
  const q = new URLSearchParams();
  q.set('model', opts.model);
  q.set('encoding', 'pcm_s16le');
  q.set('sample_rate', String(opts.sampleRate));
  return q;
}

function appendKeyterms(q: URLSearchParams, extra: Record<string, unknown>): void {
  const terms = extra.keyterm;
  if (Array.isArray(terms)) for (const t of terms) q.append('keyterm', String(t));
}

function headers(endpoint: ProviderEndpoint): Record<string, string> {
  return { Authorization: `Bearer ${endpoint.apiKey}`, 'Cartesia-Version': CARTESIA_STT_API_VERSION };
}

function wsBase(endpoint: ProviderEndpoint): string {
  return endpoint.baseUrl.replace(/\/+$/, '');
}

// ---- decoding -------------------------------------------------------------------------

interface CartesiaWordObject {
  word?: unknown;
  start?: unknown;
  end?: unknown;
  probability?: unknown;
  /** SDK WordTimestamps: parallel arrays */
  words?: unknown;
}

interface CartesiaMessage {
  type?: unknown;
  text?: unknown;
  transcript?: unknown;
  is_final?: unknown;
  duration?: unknown;
  language?: unknown;
  probability?: unknown;
  words?: unknown;
  message?: unknown;
  title?: unknown;
  status_code?: unknown;
  code?: unknown;
  error_code?: unknown;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** Pure: words of a transcript message, in either documented shape. */
export function cartesiaWords(raw: unknown): SttWord[] {
  if (!Array.isArray(raw)) return [];
  const out: SttWord[] = [];
  for (const item of raw as CartesiaWordObject[]) {
    if (!item || typeof item !== 'object') continue;
    if (Array.isArray(item.words)) {
      const starts = Array.isArray(item.start) ? item.start : [];
      const ends = Array.isArray(item.end) ? item.end : [];
      item.words.forEach((w, i) => {
        const s = num(starts[i]);
        const e = num(ends[i]);
        if (typeof w === 'string' && s !== undefined && e !== undefined) out.push({ word: w.trim(), start: s, end: e, confidence: 1 });
      });
      continue;
    }
    const w = str(item.word);
    const s = num(item.start);
    const e = num(item.end);
    if (w !== undefined && s !== undefined && e !== undefined) out.push({ word: w.trim(), start: s, end: e, confidence: num(item.probability) ?? 1 });
  }
  return out;
}

/** Pure: an in-band `error` message -> a GatewayError event. */
export function cartesiaErrorEvent(msg: CartesiaMessage): SttEvent {
  const status = num(msg.status_code) ?? num(msg.code) ?? 500;
  const what = [str(msg.title), str(msg.message)].filter((s): s is string => !!s).join(': ') || 'unknown error';
  const errorCode = str(msg.error_code);
  return {
    type: 'error',
    error: new GatewayError(codeForUpstreamStatus(status), `cartesia: ${what.slice(0, 300)} (status ${status})`, {
      provider_status: status,
      ...(errorCode ? { provider_code: errorCode.slice(0, 80) } : {}),
    }),
  };
}

function parse(data: Buffer, isBinary: boolean): CartesiaMessage | null {
  return parseJsonObject<CartesiaMessage>(data, isBinary);
}

/** Audio position (seconds) of what this connection has sent, counted in `encodeAudio`. */
class AudioClock {
  private bytes = 0;
  private readonly bytesPerSecond: number;

  constructor(sampleRate: number) {
    this.bytesPerSecond = sampleRate * 2;
  }

  add(n: number): void {
    this.bytes += n;
  }

  get seconds(): number {
    return this.bytes / this.bytesPerSecond;
  }
}

/** ink-whisper on /stt/websocket. */
export class CartesiaWhisperCodec implements SttCodec {
  readonly finalizeMessage = 'finalize';
  readonly closeMessage = 'close';
  readonly keepAlive = { message: 'finalize', idleMs: KEEPALIVE_IDLE_MS };
  private readonly clock: AudioClock;
  private readonly language: string | undefined;
  /** Latest interim of the utterance in progress. */
  private pending: SttSegment | null = null;
  /** End of the previous final (start of a segment that has no word times). */
  private lastEnd = 0;
  /** flush_done arrived while an interim was pending: acknowledge after its final. */
  private ackAfterFinal = false;

  constructor(opts: SttOptions) {
    this.clock = new AudioClock(opts.sampleRate);
    this.language = opts.language;
  }

  get midUtterance(): boolean {
    return this.pending !== null;
  }

  encodeAudio(pcm: Buffer): Buffer {
    this.clock.add(pcm.length);
    return pcm;
  }

  liveUpdate(): null {
    return null; // options live in the URL: reconnect between utterances
  }

  decode(data: Buffer, isBinary: boolean): SttEvent[] {
    const msg = parse(data, isBinary);
    if (!msg) return [];
    switch (msg.type) {
      case 'transcript':
        return msg.is_final === true ? this.onFinal(msg) : this.onInterim(msg);
      case 'flush_done':
        if (this.pending) {
          this.ackAfterFinal = true;
          return [];
        }
        return [{ type: 'finalized' }];
      case 'error':
        return [cartesiaErrorEvent(msg)];
      default:
        return []; // done (answer to close) and anything newer
    }
  }

  flush(): SttEvent[] {
    const seg = this.pending;
    this.pending = null;
    this.ackAfterFinal = false;
    if (!seg) return [];
    this.lastEnd = Math.max(this.lastEnd, seg.end);
    return [{ type: 'final', segment: seg }];
  }

  private segment(msg: CartesiaMessage): SttSegment {
    const words = cartesiaWords(msg.words);
    const now = this.clock.seconds;
    let start: number;
    let end: number;
    const first = words[0];
    const last = words[words.length - 1];
    if (first && last) {
      start = first.start;
      end = last.end;
    } else {
      start = Math.min(this.lastEnd, now);
      const d = num(msg.duration);
      end = d !== undefined && d > 0 ? Math.min(start + d, now) : now;
    }
    const language = str(msg.language) ?? this.language;
    return {
      text: (str(msg.text) ?? '').trim(),
      start,
      end: Math.max(start, end),
      confidence: num(msg.probability) ?? 1,
      ...(language ? { language } : {}),
      words,
    };
  }

  private onInterim(msg: CartesiaMessage): SttEvent[] {
    const seg = this.segment(msg);
    if (!seg.text) return []; // "may be empty initially while the system accumulates audio"
    this.pending = seg;
    return [{ type: 'interim', segment: seg }];
  }

  private onFinal(msg: CartesiaMessage): SttEvent[] {
    const seg = this.segment(msg);
    this.pending = null;
    const out: SttEvent[] = [];
    if (seg.text) {
      this.lastEnd = seg.end;
      out.push({ type: 'final', segment: seg });
    }
    if (this.ackAfterFinal) {
      this.ackAfterFinal = false;
      out.push({ type: 'finalized' });
    }
    return out;
  }
}

/** The live-update frame for ink-2's turn settings (every value, so removed ones reset). */
function turnConfigFrame(extra: Record<string, unknown>): string {
  const t = turnSettings(extra);
  return JSON.stringify({
    type: 'config',
    turn: {
      start_threshold: t.turn_start_threshold,
      eager_end_threshold: t.turn_eager_end_threshold,
      end_threshold: t.turn_end_threshold,
      end_timeout_ms: t.turn_end_timeout_ms,
    },
  });
}

/** What must stay equal for a live update (everything in the URL except the turn settings). */
function connectionKey(opts: SttOptions): string {
  return JSON.stringify([opts.model, opts.language, opts.sampleRate, opts.extra.keyterm ?? null]);
}

/** ink-2 on /stt/turns/websocket. */
export class CartesiaTurnsCodec implements SttCodec {
  readonly finalizeMessage = null; // no flush command: the session finalizes with flush()
  readonly closeMessage = '{"type":"close"}';
  readonly keepAlive = { message: '{"type":"config"}', idleMs: KEEPALIVE_IDLE_MS };
  private readonly clock: AudioClock;
  private opts: SttOptions;
  private inTurn = false;
  /** Cumulative text of the turn in progress. */
  private transcript = '';
  private lastEnd = 0;

  constructor(opts: SttOptions) {
    this.clock = new AudioClock(opts.sampleRate);
    this.opts = opts;
  }

  get midUtterance(): boolean {
    return this.inTurn;
  }

  encodeAudio(pcm: Buffer): Buffer {
    this.clock.add(pcm.length);
    return pcm;
  }

  liveUpdate(next: SttOptions): string[] | null {
    if (connectionKey(next) !== connectionKey(this.opts)) return null;
    this.opts = next;
    return [turnConfigFrame(next.extra)];
  }

  decode(data: Buffer, isBinary: boolean): SttEvent[] {
    const msg = parse(data, isBinary);
    if (!msg) return [];
    switch (msg.type) {
      case 'turn.start':
        return this.start();
      case 'turn.update': {
        const text = str(msg.transcript) ?? '';
        const out = this.inTurn ? [] : this.start();
        if (text.trim() === '' || text === this.transcript) return out;
        this.transcript = text;
        out.push({ type: 'interim', segment: this.segment() });
        return out;
      }
      case 'turn.eager_end': {
        if (!this.inTurn) return [];
        const text = str(msg.transcript);
        if (text) this.transcript = text;
        return this.transcript.trim() ? [{ type: 'preflight', segment: this.segment() }] : [];
      }
      case 'turn.resume':
        return this.inTurn && this.transcript.trim() ? [{ type: 'interim', segment: this.segment() }] : [];
      case 'turn.end': {
        const text = str(msg.transcript);
        if (text) this.transcript = text;
        if (!this.inTurn && !this.transcript.trim()) return [];
        return this.end();
      }
      case 'error':
        return [cartesiaErrorEvent(msg)];
      default:
        return []; // connected, and anything newer
    }
  }

  flush(): SttEvent[] {
    return this.inTurn ? this.end() : [];
  }

  private start(): SttEvent[] {
    if (this.inTurn) return [];
    this.inTurn = true;
    this.transcript = '';
    return [{ type: 'speech_started' }];
  }

  private end(): SttEvent[] {
    const seg = this.segment();
    this.inTurn = false;
    this.transcript = '';
    this.lastEnd = seg.end;
    return [{ type: 'final', segment: seg }];
  }

  private segment(): SttSegment {
    const end = this.clock.seconds;
    return { text: this.transcript.trim(), start: Math.min(this.lastEnd, end), end, confidence: 1, language: 'en', words: [] };
  }
}

export const cartesiaStt: SttAdapter = {
  provider: 'cartesia',
  models: CARTESIA_WHISPER_MODELS,
  capabilities: {
    wordTimings: true,
    diarization: false,
    startOfSpeech: false,
    preflight: false,
    liveUpdate: false,
    finalize: true,
  },
  validate(opts: SttOptions): SttOptions {
    apiLanguage(opts.language);
    return { ...opts, extra: validateExtra(opts.extra, WHISPER_OPTIONS, WHISPER_REFUSED) };
  },
  request(opts: SttOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    const q = baseQuery(opts);
    const language = apiLanguage(opts.language);
    if (language) q.set('language', language);
    for (const k of Object.keys(WHISPER_OPTIONS)) {
      const v = opts.extra[k];
      if (typeof v === 'number') q.set(k, String(v));
    }
    appendKeyterms(q, opts.extra);
    return { url: `${wsBase(endpoint)}/stt/websocket?${q.toString()}`, headers: headers(endpoint) };
  },
  createCodec(opts: SttOptions): SttCodec {
    return new CartesiaWhisperCodec(opts);
  },
};

export const cartesiaTurnsStt: SttAdapter = {
  provider: 'cartesia',
  models: CARTESIA_TURNS_MODELS,
  defaultModel: 'ink-2',
  capabilities: {
    wordTimings: false,
    diarization: false,
    startOfSpeech: true,
    preflight: true,
    liveUpdate: true,
    finalize: false,
  },
  validate(opts: SttOptions): SttOptions {
    const language = apiLanguage(opts.language);
    if (language !== undefined && language !== 'en') {
      throw bad(`ink-2 only supports English (got "${opts.language}"); use cartesia/ink-whisper for other languages`);
    }
    const extra = validateExtra(opts.extra, TURN_OPTIONS, TURNS_REFUSED);
    validateTurnOrder(extra);
    return { ...opts, extra };
  },
  request(opts: SttOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    const q = baseQuery(opts);
    for (const k of Object.keys(TURN_OPTIONS)) {
      const v = opts.extra[k];
      if (typeof v === 'number') q.set(k, String(v));
    }
    appendKeyterms(q, opts.extra);
    return { url: `${wsBase(endpoint)}/stt/turns/websocket?${q.toString()}`, headers: headers(endpoint) };
  },
  createCodec(opts: SttOptions): SttCodec {
    return new CartesiaTurnsCodec(opts);
  },
};
