/**
 * ElevenLabs Scribe realtime STT: wss://api.elevenlabs.io/v1/speech-to-text/realtime
 * API reference: https://elevenlabs.io/docs/api-reference/speech-to-text/v-1-speech-to-text-realtime
 * Notes: shared/providers.md §5.4 (query, messages, errors), §9 "ElevenLabs Scribe RT", Appendix B.
 * Also used: the AsyncAPI copy of the reference (AHGGG/nce-english-practices
 * docs/voice/elevenlabs/speech-to-text/v-1-speech-to-text-realtime.md); the docs pages
 * "Transcripts and commit strategies" (committed transcripts, auto-commit every 90 s), "Event
 * reference" ("an error message will be returned before the WebSocket connection is closed") and
 * "Keyterm prompting" (realtime: at most 50 keyterms of at most 20 characters); the SDK's range
 * checks (elevenlabs-js realtime connect: vad_silence_threshold_secs 0.3-3.0, vad_threshold
 * 0.1-0.9, min_speech/min_silence_duration_ms 50-2000); elevenlabs/elevenlabs-python#849 (word
 * times are on the session's audio timeline, not per segment).
 *
 * Wire: query parameters configure the session (no config message); audio goes out as JSON text
 * `{"message_type":"input_audio_chunk","audio_base_64":…,"commit":false,"sample_rate":…}`
 * (built without JSON.stringify: the base64 alphabet needs no escaping). A finalize is an empty
 * chunk with `commit: true`; the provider answers with a committed transcript. The end of the
 * stream is a plain close (there is no end-of-stream message), so `closeMessage` is null and
 * pending partial text is flushed as the last final. No keep-alive: none is documented (LiveKit's
 * plugin sends an empty chunk every 10 s; the gateway's clients stream audio continuously).
 *
 * Mapping (one `final` per commit):
 * - partial_transcript -> interim (no word times; the segment spans the audio since the last commit);
 * - committed_transcript -> final + finalized, when include_timestamps is off;
 * - with include_timestamps (the default here, so word timings are real), the provider sends
 *   committed_transcript and then committed_transcript_with_timestamps for the same commit: the
 *   one WITH timestamps is the final (words, language) and the plain one is dropped. The plain
 *   text is kept until its twin arrives, so a lost twin still ends the utterance through flush()
 *   (the session's finalize-ack timeout or the end of the stream). Either arrival order works.
 * - `finalized` follows every commit answer (manual or VAD): the session ignores it when no
 *   session.finalize is pending. A VAD commit landing right after a finalize can therefore
 *   acknowledge it early; the commit's own final still follows ("acknowledgments may precede
 *   trailing transcripts", protocol.md §2.3).
 * - errors (auth_error, quota_exceeded, …) -> `error` events with our codes; the provider closes
 *   the socket after them, and `closeError` covers a close without an error message.
 * Defaults: commit_strategy=vad (the provider must endpoint, protocol.md §2.10),
 * include_timestamps=true, include_language_detection=true when no language is given.
 */
import { parseJsonObject } from '../upstream/json.ts';
import { GatewayError, type ErrorCode } from '../../protocol/errors.ts';
import { validateOptions, type OptionSpec } from '../options.ts';
import { providerReason } from '../upstream/ws-upstream.ts';
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

export const ELEVENLABS_STT_MODELS = ['scribe_v2_realtime'] as const;

/** `audio_format=pcm_<rate>` values (ulaw_8000 is not used: the gateway sends PCM). */
export const ELEVENLABS_STT_SAMPLE_RATES = [8000, 16000, 22050, 24000, 44100, 48000] as const;

export const MAX_KEYTERMS = 50;
export const MAX_KEYTERM_CHARS = 20;

/** Options accepted in `settings.extra` (names as in the API's query; protocol.md §2.9). */
const OPTION_SPECS: Record<string, OptionSpec> = {
  commit_strategy: { kind: 'enum', values: ['manual', 'vad'] },
  include_timestamps: { kind: 'bool' },
  include_language_detection: { kind: 'bool' },
  vad_silence_threshold_secs: { kind: 'number', min: 0.3, max: 3 },
  vad_threshold: { kind: 'number', min: 0.1, max: 0.9 },
  min_speech_duration_ms: { kind: 'number', min: 50, max: 2000, integer: true },
  min_silence_duration_ms: { kind: 'number', min: 50, max: 2000, integer: true },
  language_code: { kind: 'string', maxLength: 35 },
  no_verbatim: { kind: 'bool' },
  enable_logging: { kind: 'bool' },
};

const REFUSED: Record<string, string> = {
  model_id: 'set the model in the model string',
  audio_format: 'the gateway sends PCM at settings.sample_rate',
  sample_rate: 'set settings.sample_rate',
  token: 'the gateway authenticates with its own key',
};

const LANGUAGE = /^[a-z]{2,3}$/;

function bad(message: string): GatewayError {
  return new GatewayError('bad_request', `elevenlabs: ${message}`);
}

/** `keyterms`: a string or an array of 1..20-character strings, at most 50 (empty arrays dropped). */
function checkKeyterms(v: unknown): string[] {
  const list = typeof v === 'string' ? [v] : v;
  const ok =
    Array.isArray(list) &&
    list.length <= MAX_KEYTERMS &&
    list.every((t) => typeof t === 'string' && t.trim() !== '' && [...t].length <= MAX_KEYTERM_CHARS);
  if (!ok) throw bad(`option "keyterms" must be a string or an array of at most ${MAX_KEYTERMS} non-empty strings of at most ${MAX_KEYTERM_CHARS} characters`);
  return list as string[];
}

/** ISO 639 code from `extra.language_code` or the session language (`en-US` -> `en`); `multi` = detect. */
function languageCode(opts: SttOptions): string | undefined {
  const explicit = opts.extra['language_code'];
  const fromSession = opts.language === undefined || opts.language === 'multi' ? undefined : opts.language;
  const norm = (raw: string, what: string): string => {
    const lang = (raw.split(/[-_]/)[0] ?? '').toLowerCase();
    if (!LANGUAGE.test(lang)) throw bad(`${what} must be an ISO 639-1 or 639-3 code such as "en", got "${raw.slice(0, 35)}"`);
    return lang;
  };
  const session = fromSession !== undefined ? norm(fromSession, 'language') : undefined;
  if (typeof explicit !== 'string') return session;
  const lang = norm(explicit, 'option "language_code"');
  if (session !== undefined && session !== lang) {
    throw bad(`option "language_code" ("${lang}") contradicts settings.language ("${session}")`);
  }
  return lang;
}

interface Resolved {
  query: URLSearchParams;
  includeTimestamps: boolean;
}

/** Validate options and build the query (throws bad_request naming the option). */
function resolve(opts: SttOptions): Resolved {
  if (!(ELEVENLABS_STT_SAMPLE_RATES as readonly number[]).includes(opts.sampleRate)) {
    throw bad(`sample rate ${opts.sampleRate} is not supported; use one of ${ELEVENLABS_STT_SAMPLE_RATES.join(', ')}`);
  }
  const { keyterms: rawKeyterms, ...rest } = opts.extra;
  const extra = validateOptions('elevenlabs', rest, OPTION_SPECS, REFUSED);
  const keyterms = rawKeyterms === undefined || rawKeyterms === null ? [] : checkKeyterms(rawKeyterms);
  const language = languageCode(opts);
  const includeTimestamps = extra['include_timestamps'] !== false;
  const q = new URLSearchParams();
  q.set('model_id', opts.model);
  q.set('audio_format', `pcm_${opts.sampleRate}`);
  q.set('commit_strategy', typeof extra['commit_strategy'] === 'string' ? extra['commit_strategy'] : 'vad');
  q.set('include_timestamps', String(includeTimestamps));
  if (language !== undefined) q.set('language_code', language);
  const detect = extra['include_language_detection'];
  if (detect === true || (detect === undefined && language === undefined)) q.set('include_language_detection', 'true');
  for (const key of ['vad_silence_threshold_secs', 'vad_threshold', 'min_speech_duration_ms', 'min_silence_duration_ms', 'no_verbatim', 'enable_logging']) {
    const v = extra[key];
    if (v !== undefined) q.set(key, String(v));
  }
  for (const t of keyterms) q.append('keyterms', t);
  return { query: q, includeTimestamps };
}

// ---- decoding -------------------------------------------------------------------------

interface ScribeWord {
  text?: string;
  start?: number;
  end?: number;
  type?: string;
  speaker_id?: string | null;
  logprob?: number;
}

interface ScribeMessage {
  message_type?: string;
  text?: string;
  language_code?: string | null;
  words?: ScribeWord[] | null;
  error?: string;
  message?: string;
  details?: string;
}

/** In-band error message types -> our codes (the provider closes the socket after each). */
const ERROR_CODES: Record<string, ErrorCode> = {
  auth_error: 'unauthorized',
  quota_exceeded: 'rate_limited',
  rate_limited: 'rate_limited',
  commit_throttled: 'rate_limited',
  queue_overflow: 'rate_limited',
  resource_exhausted: 'unavailable',
  unaccepted_terms: 'forbidden',
  input_error: 'bad_request',
  invalid_request: 'bad_request',
  chunk_size_exceeded: 'bad_request',
  // retryable on purpose: a fresh session helps, and it must not end a live agent for good
  insufficient_audio_activity: 'provider_error',
  session_time_limit_exceeded: 'provider_error',
  transcriber_error: 'provider_error',
  error: 'provider_error',
};

const num = (v: unknown, d = 0): number => (typeof v === 'number' && Number.isFinite(v) ? v : d);

/** Pure: an in-band error message -> GatewayError with the provider's words. */
export function elevenLabsSttError(msg: ScribeMessage): GatewayError {
  const type = msg.message_type ?? 'error';
  const code: ErrorCode = (Object.hasOwn(ERROR_CODES, type) ? ERROR_CODES[type] : undefined) ?? 'provider_error';
  const text = [msg.error ?? msg.message, msg.details].filter((s) => typeof s === 'string' && s !== '').join(' - ');
  const why = providerReason(text || 'unknown error');
  return new GatewayError(code, `elevenlabs: ${why} (${type.slice(0, 60)})`, { provider_error: type.slice(0, 60) });
}

/** Pure: the words of a committed_transcript_with_timestamps (spacing entries dropped; seconds). */
export function scribeWords(words: readonly ScribeWord[] | null | undefined): SttWord[] {
  const out: SttWord[] = [];
  for (const w of words ?? []) {
    if (w.type !== undefined && w.type !== 'word') continue;
    const text = (w.text ?? '').trim();
    if (text === '') continue;
    const logprob = num(w.logprob, Number.NaN);
    out.push({
      word: text,
      start: num(w.start),
      end: num(w.end),
      confidence: Number.isFinite(logprob) ? Math.min(1, Math.max(0, Math.exp(logprob))) : 1,
      ...(typeof w.speaker_id === 'string' && w.speaker_id !== '' ? { speaker: w.speaker_id } : {}),
    });
  }
  return out;
}

export class ElevenLabsSttCodec implements SttCodec {
  readonly finalizeMessage: string;
  readonly closeMessage = null;
  readonly keepAlive = null;
  private readonly chunkSuffix: string;
  private readonly bytesPerSecond: number;
  private readonly includeTimestamps: boolean;
  /** Audio seconds encoded so far (the approximate time base of segments without word times). */
  private sent = 0;
  /** Where the utterance in progress starts (the end of the previous commit). */
  private segStart = 0;
  private partial = '';
  /** Timestamps mode: committed text waiting for its _with_timestamps twin. */
  private pending: string | null = null;
  /** Timestamps mode: twins that arrived before their plain committed_transcript. */
  private earlyTwins = 0;

  constructor(opts: { sampleRate: number; includeTimestamps: boolean }) {
    this.bytesPerSecond = opts.sampleRate * 2;
    this.includeTimestamps = opts.includeTimestamps;
    this.chunkSuffix = `","commit":false,"sample_rate":${opts.sampleRate}}`;
    this.finalizeMessage = `{"message_type":"input_audio_chunk","audio_base_64":"","commit":true,"sample_rate":${opts.sampleRate}}`;
  }

  get midUtterance(): boolean {
    return this.partial !== '' || (this.pending !== null && this.pending !== '');
  }

  encodeAudio(pcm: Buffer): string {
    this.sent += pcm.length / this.bytesPerSecond;
    return `{"message_type":"input_audio_chunk","audio_base_64":"${pcm.toString('base64')}${this.chunkSuffix}`;
  }

  liveUpdate(): null {
    return null; // options live in the URL: reconnect between utterances
  }

  decode(data: Buffer, isBinary: boolean): SttEvent[] {
    const msg = parseJsonObject<ScribeMessage>(data, isBinary);
    if (msg === null || typeof msg.message_type !== 'string') return [];
    switch (msg.message_type) {
      case 'session_started':
        return [];
      case 'partial_transcript':
        return this.onPartial(msg);
      case 'committed_transcript':
        return this.onCommitted(msg);
      case 'committed_transcript_with_timestamps':
        return this.onCommittedWithTimestamps(msg);
      default:
        return Object.hasOwn(ERROR_CODES, msg.message_type) ? [{ type: 'error', error: elevenLabsSttError(msg) }] : [];
    }
  }

  flush(): SttEvent[] {
    const text = this.pending !== null && this.pending !== '' ? this.pending : this.partial;
    this.pending = null;
    return this.endUtterance(this.segment(text, []), false);
  }

  private onPartial(msg: ScribeMessage): SttEvent[] {
    this.partial = (msg.text ?? '').trim();
    return this.partial ? [{ type: 'interim', segment: this.segment(this.partial, []) }] : [];
  }

  private onCommitted(msg: ScribeMessage): SttEvent[] {
    const text = (msg.text ?? '').trim();
    if (!this.includeTimestamps) return this.endUtterance(this.segment(text, []), true);
    if (this.earlyTwins > 0) {
      this.earlyTwins--; // its twin already ended the utterance
      return [];
    }
    // an older commit whose twin never came: its text is not lost
    const lost = this.pending !== null && this.pending !== '' ? this.endUtterance(this.segment(this.pending, []), false) : [];
    this.pending = text;
    return lost;
  }

  private onCommittedWithTimestamps(msg: ScribeMessage): SttEvent[] {
    if (!this.includeTimestamps) return []; // not asked for: committed_transcript already ended it
    if (this.pending !== null) this.pending = null;
    else this.earlyTwins++;
    const seg = this.segment((msg.text ?? '').trim(), scribeWords(msg.words));
    if (typeof msg.language_code === 'string' && msg.language_code !== '') seg.language = msg.language_code;
    return this.endUtterance(seg, true);
  }

  /** A segment: word times when there are words, else the audio since the last commit. */
  private segment(text: string, words: SttWord[]): SttSegment {
    const first = words[0];
    const last = words[words.length - 1];
    const seg: SttSegment = {
      text,
      start: first ? first.start : this.segStart,
      end: last ? last.end : Math.max(this.segStart, this.sent),
      confidence: words.length > 0 ? words.reduce((s, w) => s + w.confidence, 0) / words.length : 1,
      words,
    };
    if (first?.speaker !== undefined) seg.speaker = first.speaker;
    return seg;
  }

  private endUtterance(seg: SttSegment, answered: boolean): SttEvent[] {
    this.partial = '';
    this.segStart = Math.max(seg.end, this.segStart);
    const out: SttEvent[] = seg.text ? [{ type: 'final', segment: seg }] : [];
    if (answered) out.push({ type: 'finalized' });
    return out;
  }
}

/**
 * Unrequested close. The provider sends an in-band error before closing (mapped above), so this
 * only covers a close without one; Scribe documents no close codes, so the code decides alone.
 */
export function elevenLabsSttCloseError(code: number, reason: string): GatewayError {
  const why = providerReason(reason);
  const suffix = `(close ${code}${why ? `: ${why}` : ''})`;
  const fields = { provider_close: code };
  if (code === 1008 || code === 1003 || code === 1007) {
    return new GatewayError('bad_request', `elevenlabs: provider rejected the stream ${suffix}`, fields);
  }
  if (code === 1013) return new GatewayError('unavailable', `elevenlabs: provider asked to try again later ${suffix}`, fields);
  return new GatewayError('provider_error', `elevenlabs: provider ended the session ${suffix}`, fields);
}

export const elevenLabsStt: SttAdapter = {
  provider: 'elevenlabs',
  models: ELEVENLABS_STT_MODELS,
  defaultModel: 'scribe_v2_realtime',
  capabilities: {
    wordTimings: true, // include_timestamps defaults to true
    diarization: false, // no diarization option on the realtime API
    startOfSpeech: false, // no speech-start event: the first interim stands in for onset
    preflight: false,
    liveUpdate: false,
    finalize: true,
    sampleRates: ELEVENLABS_STT_SAMPLE_RATES,
  },
  validate(opts: SttOptions): SttOptions {
    resolve(opts);
    return opts;
  },
  request(opts: SttOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    const base = endpoint.baseUrl.replace(/\/+$/, '');
    return {
      url: `${base}/v1/speech-to-text/realtime?${resolve(opts).query.toString()}`,
      headers: { 'xi-api-key': endpoint.apiKey },
    };
  },
  createCodec(opts: SttOptions): SttCodec {
    return new ElevenLabsSttCodec({ sampleRate: opts.sampleRate, includeTimestamps: resolve(opts).includeTimestamps });
  },
  closeError: elevenLabsSttCloseError,
};
