/**
 * Deepgram live STT v1 (nova family): wss://api.deepgram.com/v1/listen
 * API reference: https://developers.deepgram.com/reference/speech-to-text/listen-streaming
 * Notes: shared/providers.md section 2.2 (params, messages) and 9 (timing).
 *
 * One final_transcript per utterance: `is_final` fragments are concatenated until
 * `speech_final`, `from_finalize` or `UtteranceEnd` closes the utterance.
 */
import { parseJsonObject } from '../upstream/json.ts';
import { GatewayError } from '../../protocol/errors.ts';
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

export const DEEPGRAM_NOVA_MODELS = [
  'nova-3',
  'nova-3-general',
  'nova-3-medical',
  'nova-2',
  'nova-2-general',
  'nova-2-meeting',
  'nova-2-phonecall',
  'nova-2-finance',
  'nova-2-conversationalai',
  'nova-2-voicemail',
  'nova-2-video',
  'nova-2-medical',
  'nova-2-drivethru',
  'nova-2-automotive',
  'nova',
  'nova-general',
  'nova-phonecall',
] as const;

type OptionKind = 'bool' | 'ms' | 'string' | 'strings' | 'keyterm' | 'keywords' | 'bool_or_strings';

/** Options accepted in `settings.extra`, with the Deepgram query parameter they become. */
const OPTIONS: Record<string, { kind: OptionKind; param: string; min?: number; max?: number }> = {
  filler_words: { kind: 'bool', param: 'filler_words' },
  interim_results: { kind: 'bool', param: 'interim_results' },
  punctuate: { kind: 'bool', param: 'punctuate' },
  smart_format: { kind: 'bool', param: 'smart_format' },
  profanity_filter: { kind: 'bool', param: 'profanity_filter' },
  numerals: { kind: 'bool', param: 'numerals' },
  mip_opt_out: { kind: 'bool', param: 'mip_opt_out' },
  diarize: { kind: 'bool', param: 'diarize' },
  dictation: { kind: 'bool', param: 'dictation' },
  detect_language: { kind: 'bool', param: 'detect_language' },
  no_delay: { kind: 'bool', param: 'no_delay' },
  vad_events: { kind: 'bool', param: 'vad_events' },
  endpointing: { kind: 'ms', param: 'endpointing', min: 0, max: 60000 },
  utterance_end_ms: { kind: 'ms', param: 'utterance_end_ms', min: 1000, max: 60000 },
  utterance_end: { kind: 'ms', param: 'utterance_end_ms', min: 1000, max: 60000 },
  keyterm: { kind: 'keyterm', param: 'keyterm' },
  keywords: { kind: 'keywords', param: 'keywords' },
  redact: { kind: 'bool_or_strings', param: 'redact' },
  replace: { kind: 'strings', param: 'replace' },
  search: { kind: 'strings', param: 'search' },
  tag: { kind: 'strings', param: 'tag' },
  extra: { kind: 'strings', param: 'extra' },
  version: { kind: 'string', param: 'version' },
  diarize_model: { kind: 'string', param: 'diarize_model' },
};

/** Options the gateway owns or refuses, with the reason given to the client. */
const REFUSED: Record<string, string> = {
  model: 'set the model in the model string',
  language: 'set the language in settings.language',
  encoding: 'the gateway sends pcm_s16le',
  sample_rate: 'set settings.sample_rate',
  channels: 'the protocol carries mono audio',
  multichannel: 'the protocol carries mono audio',
  callback: 'callbacks would send transcripts outside the gateway',
  callback_method: 'callbacks would send transcripts outside the gateway',
};

/** Defaults close to LiveKit's Deepgram plugin; any of them can be overridden in extra. */
const DEFAULTS: Record<string, string> = {
  interim_results: 'true',
  punctuate: 'true',
  filler_words: 'true',
  no_delay: 'true',
  endpointing: '25',
  vad_events: 'true',
  utterance_end_ms: '1000',
};

const MAX_TERMS = 100;
const MAX_TERM_CHARS = 200;

function bad(message: string): GatewayError {
  return new GatewayError('bad_request', `deepgram: ${message}`);
}

function isNova3(model: string): boolean {
  return model.startsWith('nova-3');
}

function checkString(key: string, v: unknown): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_TERM_CHARS) {
    throw bad(`option "${key}" must be a non-empty string of at most ${MAX_TERM_CHARS} characters`);
  }
  return v;
}

function checkStrings(key: string, v: unknown): string[] {
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length > MAX_TERMS) {
    throw bad(`option "${key}" must be a string or an array of at most ${MAX_TERMS} strings`);
  }
  return list.map((x) => checkString(key, x));
}

/** Validate `extra` and turn it into query parameter values (strings, repeated keys as arrays). */
function mapExtra(model: string, extra: Record<string, unknown>): Map<string, string[]> {
  const params = new Map<string, string[]>();
  for (const [key, value] of Object.entries(extra)) {
    if (value === null || value === undefined) continue;
    const refused = REFUSED[key];
    if (refused) throw bad(`option "${key}" is not accepted in extra: ${refused}`);
    const spec = OPTIONS[key];
    if (!spec) throw bad(`unknown option "${key}"; supported: ${Object.keys(OPTIONS).join(', ')}`);
    switch (spec.kind) {
      case 'bool':
        if (typeof value !== 'boolean') throw bad(`option "${key}" must be a boolean`);
        params.set(spec.param, [String(value)]);
        break;
      case 'ms': {
        if (value === false && key === 'endpointing') {
          params.set(spec.param, ['false']);
          break;
        }
        if (typeof value !== 'number' || !Number.isInteger(value) || value < (spec.min ?? 0) || value > (spec.max ?? Infinity)) {
          throw bad(`option "${key}" must be an integer number of milliseconds in ${spec.min}..${spec.max}`);
        }
        params.set(spec.param, [String(value)]);
        break;
      }
      case 'string':
        params.set(spec.param, [checkString(key, value)]);
        break;
      case 'strings':
        params.set(spec.param, checkStrings(key, value));
        break;
      case 'bool_or_strings':
        params.set(spec.param, typeof value === 'boolean' ? [String(value)] : checkStrings(key, value));
        break;
      case 'keyterm': {
        const terms = checkStrings(key, value);
        if (terms.length === 0) break; // clients always inject keyterm: []
        if (!isNova3(model)) throw bad(`keyterm prompting is only available for nova-3 models (got ${model}); use keywords`);
        params.set(spec.param, terms);
        break;
      }
      case 'keywords': {
        if (!Array.isArray(value)) throw bad('option "keywords" must be an array of [term, boost] pairs or "term:boost" strings');
        if (value.length === 0) break;
        if (isNova3(model)) throw bad('keywords are not supported for nova-3 models; use keyterm instead');
        if (value.length > MAX_TERMS) throw bad(`option "keywords" accepts at most ${MAX_TERMS} entries`);
        params.set(
          spec.param,
          value.map((entry) => {
            if (typeof entry === 'string') return checkString(key, entry);
            if (Array.isArray(entry) && entry.length === 2 && typeof entry[1] === 'number' && Number.isFinite(entry[1])) {
              return `${checkString(key, entry[0])}:${entry[1]}`;
            }
            throw bad('option "keywords" entries must be [term, boost] pairs or "term:boost" strings');
          }),
        );
        break;
      }
    }
  }
  if (params.get('interim_results')?.[0] === 'false' && params.has('utterance_end_ms')) {
    throw bad('utterance_end_ms requires interim_results=true');
  }
  return params;
}

const LANGUAGE_RE = /^(multi|[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8}){0,3})$/;

function buildQuery(opts: SttOptions): URLSearchParams {
  const q = new URLSearchParams();
  q.set('model', opts.model);
  q.set('encoding', 'linear16');
  q.set('sample_rate', String(opts.sampleRate));
  q.set('channels', '1');
  if (opts.language) q.set('language', opts.language);
  const mapped = mapExtra(opts.model, opts.extra);
  const interimOff = mapped.get('interim_results')?.[0] === 'false';
  for (const [k, v] of Object.entries(DEFAULTS)) {
    if (k === 'utterance_end_ms' && interimOff) continue;
    if (!mapped.has(k)) q.set(k, v);
  }
  for (const [k, values] of mapped) for (const v of values) q.append(k, v);
  return q;
}

// ---- decoding -------------------------------------------------------------------------

interface DgWord {
  word?: string;
  punctuated_word?: string;
  start?: number;
  end?: number;
  confidence?: number;
  speaker?: number;
  language?: string;
}

interface DgMessage {
  type?: string;
  start?: number;
  duration?: number;
  is_final?: boolean;
  speech_final?: boolean;
  from_finalize?: boolean;
  channel?: { alternatives?: Array<{ transcript?: string; confidence?: number; languages?: string[]; words?: DgWord[] }> };
  last_word_end?: number;
}

const num = (v: unknown, d = 0): number => (typeof v === 'number' && Number.isFinite(v) ? v : d);

/** Pure: one Deepgram `Results` message -> a segment on the connection's audio timeline. */
export function deepgramSegment(msg: DgMessage): SttSegment {
  const alt = msg.channel?.alternatives?.[0];
  const words: SttWord[] = (alt?.words ?? []).map((w) => ({
    word: w.punctuated_word ?? w.word ?? '',
    start: num(w.start),
    end: num(w.end),
    confidence: num(w.confidence, 1),
    ...(typeof w.speaker === 'number' ? { speaker: String(w.speaker) } : {}),
  }));
  const windowStart = num(msg.start);
  const first = words[0];
  const last = words[words.length - 1];
  return {
    text: (alt?.transcript ?? '').trim(),
    start: first ? first.start : windowStart,
    end: last ? last.end : windowStart + num(msg.duration),
    confidence: num(alt?.confidence, 1),
    ...(alt?.languages?.[0] ? { language: alt.languages[0] } : {}),
    words,
    ...(first?.speaker !== undefined ? { speaker: first.speaker } : {}),
  };
}

/** Pure: join the is_final fragments of one utterance. */
export function joinSegments(parts: readonly SttSegment[]): SttSegment | null {
  const first = parts[0];
  const last = parts[parts.length - 1];
  if (!first || !last) return null;
  const text = parts.map((p) => p.text).filter(Boolean).join(' ');
  const language = parts.find((p) => p.language)?.language;
  return {
    text,
    start: first.start,
    end: last.end,
    confidence: parts.reduce((s, p) => s + p.confidence, 0) / parts.length,
    ...(language ? { language } : {}),
    words: parts.flatMap((p) => p.words),
    ...(first.speaker !== undefined ? { speaker: first.speaker } : {}),
  };
}

export class DeepgramCodec implements SttCodec {
  readonly finalizeMessage = '{"type":"Finalize"}';
  readonly closeMessage = '{"type":"CloseStream"}';
  /** Deepgram closes with 1011 NET-0001 after 10 s without audio or KeepAlive. */
  readonly keepAlive = { message: '{"type":"KeepAlive"}', idleMs: 4000 };
  /** Finalized fragments of the utterance in progress. */
  private parts: SttSegment[] = [];
  private interim: SttSegment | null = null;

  get midUtterance(): boolean {
    return this.parts.length > 0 || (this.interim !== null && this.interim.text !== '');
  }

  encodeAudio(pcm: Buffer): Buffer {
    return pcm;
  }

  liveUpdate(): null {
    return null; // v1 listen has no live configuration message: reconnect between utterances.
  }

  decode(data: Buffer, isBinary: boolean): SttEvent[] {
    const msg = parseJsonObject<DgMessage>(data, isBinary);
    if (msg === null) return [];
    switch (msg.type) {
      case 'Results':
        return this.onResults(msg);
      case 'SpeechStarted':
        return [{ type: 'speech_started' }];
      case 'UtteranceEnd':
        return this.endUtterance(false);
      case 'Metadata':
        return typeof (msg as { duration?: unknown }).duration === 'number'
          ? [{ type: 'provider_usage', audioSeconds: (msg as { duration: number }).duration }]
          : [];
      default:
        return [];
    }
  }

  flush(): SttEvent[] {
    if (this.interim && this.interim.text) this.parts.push(this.interim);
    return this.endUtterance(false);
  }

  private onResults(msg: DgMessage): SttEvent[] {
    const seg = deepgramSegment(msg);
    if (!msg.is_final) {
      this.interim = seg;
      const joined = joinSegments(seg.text ? [...this.parts, seg] : this.parts);
      return joined && joined.text ? [{ type: 'interim', segment: joined }] : [];
    }
    this.interim = null;
    if (seg.text) this.parts.push(seg);
    if (msg.speech_final || msg.from_finalize) return this.endUtterance(msg.from_finalize === true);
    const joined = joinSegments(this.parts);
    return joined && joined.text && seg.text ? [{ type: 'interim', segment: joined }] : [];
  }

  private endUtterance(finalized: boolean): SttEvent[] {
    const joined = joinSegments(this.parts);
    this.parts = [];
    this.interim = null;
    const out: SttEvent[] = joined && joined.text ? [{ type: 'final', segment: joined }] : [];
    if (finalized) out.push({ type: 'finalized' });
    return out;
  }
}

export const deepgramListenV1: SttAdapter = {
  provider: 'deepgram',
  models: DEEPGRAM_NOVA_MODELS,
  defaultModel: 'nova-3',
  capabilities: {
    wordTimings: true,
    diarization: true,
    startOfSpeech: true,
    preflight: false, // nova has no eager end-of-turn; Flux does
    liveUpdate: false, // no Configure message on v1: reconnects between utterances
    finalize: true,
  },
  validate(opts: SttOptions): SttOptions {
    if (opts.language !== undefined && !LANGUAGE_RE.test(opts.language)) {
      throw bad(`invalid language "${opts.language.slice(0, 40)}"`);
    }
    if (opts.language === 'multi' && !isNova3(opts.model) && opts.model !== 'nova-2' && opts.model !== 'nova-2-general') {
      throw bad(`language "multi" is only available for nova-3 and nova-2 (got ${opts.model})`);
    }
    buildQuery(opts); // throws on invalid extra
    return opts;
  },
  request(opts: SttOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    const base = endpoint.baseUrl.replace(/\/+$/, '');
    return {
      url: `${base}/v1/listen?${buildQuery(opts).toString()}`,
      headers: { Authorization: `Token ${endpoint.apiKey}` },
      errorHeader: 'dg-error',
    };
  },
  createCodec(): SttCodec {
    return new DeepgramCodec();
  },
};
