/**
 * Deepgram Flux (conversational STT with model-native turn detection): wss://api.deepgram.com/v2/listen
 * API reference: https://developers.deepgram.com/reference/speech-to-text/listen-flux
 * Notes: shared/providers.md sections 2.1, 2.3 and Appendix B; message and parameter shapes from
 * the @deepgram/sdk 5.13 types (listen/resources/v2/types/*, api/types/ListenV2*), and:
 * - turn state machine (StartOfTurn -> [EagerEndOfTurn <-> TurnResumed] -> EndOfTurn, Update
 *   ~every 0.25 s, EndOfTurn text == last EagerEndOfTurn text):
 *   https://developers.deepgram.com/docs/flux/state
 * - ForceEndTurn ends the current turn with an EndOfTurn `trigger: "manual"`:
 *   https://developers.deepgram.com/docs/flux/force-end-turn
 * - Configure updates keyterms, eot_threshold, eager_eot_threshold, eot_timeout_ms mid-stream:
 *   https://developers.deepgram.com/docs/flux/configure (changelog 2026-02-27)
 * - words[] carry start/end in seconds since https://developers.deepgram.com/changelog/2026/7/2
 * - model aliases: LiveKit Inference serves `deepgram/flux-general` and `deepgram/flux` as
 *   flux-general-en (https://docs.livekit.io/agents/integrations/stt/deepgram).
 *
 * Event mapping (one final per turn): StartOfTurn -> speech_started (+ interim with its text),
 * Update -> interim, EagerEndOfTurn -> preflight, TurnResumed -> interim (the eager text is
 * void), EndOfTurn -> final (even an empty one when a StartOfTurn opened the turn, so the
 * client's start_of_speech is always closed) + `finalized` when trigger is "manual" (our
 * ForceEndTurn). `Error` and `ConfigureFailure` -> error events.
 *
 * Decisions where the docs are silent:
 * - Words without start/end (servers before 2026-07, self-hosted) are spread evenly over
 *   [audio_window_start, audio_window_end]; wordTimings stays declared true.
 * - No keepAlive: KeepAlive is a v1 (Nova) message; the SDK's v2 socket has none and its
 *   CloseStream type says KeepAlive "was never valid on v2". Clients stream silence anyway.
 * - Configure cannot unset a threshold ("continues using the currently configured value"):
 *   dropping eot_threshold / eot_timeout_ms sends the documented defaults (0.7 / 5000);
 *   dropping eager_eot_threshold needs a reconnect. A keyterm list replaces the previous one
 *   ([] clears), as documented for the Nova Configure message.
 * - After `flush()` cut a turn short (finalize timeout, reconnect), later TurnInfo of that
 *   turn only carries the words not yet delivered, so no text is sent twice.
 * - No eager_eot_threshold by default (Deepgram's default): preflight needs the client to set it.
 */
import { parseJsonObject } from '../upstream/json.ts';
import { GatewayError } from '../../protocol/errors.ts';
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

export const DEEPGRAM_FLUX_MODELS = ['flux-general-en', 'flux-general-multi', 'flux-general', 'flux'] as const;

/** Model ids the API knows; the others are aliases. */
const ALIASES: Record<string, string> = { 'flux-general': 'flux-general-en', flux: 'flux-general-en' };

/** Languages of flux-general-multi (language_hint values). */
export const FLUX_MULTI_LANGUAGES = ['en', 'es', 'fr', 'de', 'hi', 'ru', 'pt', 'ja', 'it', 'nl'] as const;

/** Raw-audio sample rates Flux accepts (changelog 2025-10-16). */
const SAMPLE_RATES = [8000, 16000, 24000, 44100, 48000] as const;

const DEFAULT_EOT_THRESHOLD = 0.7;
const DEFAULT_EOT_TIMEOUT_MS = 5000;
const MAX_TERMS = 100;
const MAX_TERM_CHARS = 200;

const LABEL = 'deepgram flux';

/** Scalar options of `extra` (documented ranges: SDK ListenV2* types). */
const SCALAR_OPTIONS: Record<string, OptionSpec> = {
  eot_threshold: { kind: 'number', min: 0.5, max: 1 },
  eager_eot_threshold: { kind: 'number', min: 0.3, max: 0.9 },
  eot_timeout_ms: { kind: 'number', min: 500, max: 60000, integer: true },
  numerals: { kind: 'bool' },
  profanity_filter: { kind: 'bool' },
  mip_opt_out: { kind: 'bool' },
  /** not a Flux parameter: detection is built into flux-general-multi (TurnInfo.languages) */
  detect_language: { kind: 'bool' },
};

/** List options: a string or an array of strings (repeated query parameters). */
const LIST_OPTIONS: Record<string, { values?: readonly string[] }> = {
  keyterm: {},
  language_hint: { values: FLUX_MULTI_LANGUAGES },
  tag: {},
  redact: { values: ['numbers', 'aggressive_numbers'] },
};

const REFUSED: Record<string, string> = {
  model: 'set the model in the model string',
  language: 'set the language in settings.language',
  encoding: 'the gateway sends pcm_s16le',
  sample_rate: 'set settings.sample_rate',
  channels: 'the protocol carries mono audio',
  multichannel: 'the protocol carries mono audio',
  keywords: 'Flux supports keyterm only',
  endpointing: 'Flux detects turns itself; use eot_threshold and eot_timeout_ms',
  utterance_end_ms: 'Flux detects turns itself; use eot_threshold and eot_timeout_ms',
  interim_results: 'Flux always sends Update events',
  vad_events: 'Flux always sends StartOfTurn',
};

function bad(message: string): GatewayError {
  return new GatewayError('bad_request', `${LABEL}: ${message}`);
}

function checkList(key: string, v: unknown, values?: readonly string[]): string[] {
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length > MAX_TERMS) {
    throw bad(`option "${key}" must be a string or an array of at most ${MAX_TERMS} strings`);
  }
  return list.map((x) => {
    if (typeof x !== 'string' || x.length === 0 || x.length > MAX_TERM_CHARS) {
      throw bad(`option "${key}" entries must be non-empty strings of at most ${MAX_TERM_CHARS} characters`);
    }
    if (values && !values.includes(x)) throw bad(`option "${key}" entries must be one of ${values.join(', ')}`);
    return x;
  });
}

/** Everything the provider is told, split by whether Configure can change it live. */
interface FluxConfig {
  model: string;
  sampleRate: number;
  /** fixed for the life of a connection */
  fixed: { mip_opt_out?: boolean; profanity_filter?: boolean; tag: string[]; redact: string[] };
  /** Configure-able */
  live: {
    eot_threshold?: number;
    eager_eot_threshold?: number;
    eot_timeout_ms?: number;
    numerals?: boolean;
    keyterm: string[];
    language_hint: string[];
  };
}

const EN_RE = /^en(-[a-zA-Z0-9]{2,8})*$/;

/** Validate options into the provider configuration; throws bad_request naming the problem. */
function fluxConfig(opts: SttOptions): FluxConfig {
  const model = ALIASES[opts.model] ?? opts.model;
  if (model !== 'flux-general-en' && model !== 'flux-general-multi') throw bad(`unknown model "${opts.model.slice(0, 60)}"`);
  const multi = model === 'flux-general-multi';
  if (!(SAMPLE_RATES as readonly number[]).includes(opts.sampleRate)) {
    throw bad(`sample rate ${opts.sampleRate} is not supported; use one of ${SAMPLE_RATES.join(', ')}`);
  }
  const lists: Record<string, string[]> = {};
  const scalars: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(opts.extra)) {
    if (value === null || value === undefined) continue;
    const list = LIST_OPTIONS[key];
    if (list) {
      lists[key] = checkList(key, value, list.values);
    } else if (SCALAR_OPTIONS[key] || REFUSED[key] !== undefined) {
      scalars[key] = value;
    } else {
      throw bad(`unknown option "${key.slice(0, 60)}"; accepted: ${[...Object.keys(SCALAR_OPTIONS), ...Object.keys(LIST_OPTIONS)].join(', ')}`);
    }
  }
  const s = validateOptions(LABEL, scalars, SCALAR_OPTIONS, REFUSED);

  let hints = lists['language_hint'] ?? [];
  const lang = opts.language;
  if (multi) {
    if (lang !== undefined && lang !== 'multi') {
      const base = lang.split('-')[0]!.toLowerCase();
      if (!(FLUX_MULTI_LANGUAGES as readonly string[]).includes(base)) {
        throw bad(`language "${lang.slice(0, 40)}" is not supported by flux-general-multi (${FLUX_MULTI_LANGUAGES.join(', ')})`);
      }
      if (lists['language_hint'] === undefined) hints = [base];
    }
  } else {
    if (lang !== undefined && !EN_RE.test(lang)) {
      throw bad(`flux-general-en transcribes English only (got language "${lang.slice(0, 40)}"); use flux-general-multi`);
    }
    if (hints.length > 0) throw bad('option "language_hint" is only valid with flux-general-multi');
    if (s['detect_language'] === true) throw bad('language detection needs flux-general-multi');
  }
  return {
    model,
    sampleRate: opts.sampleRate,
    fixed: {
      ...(s['mip_opt_out'] !== undefined ? { mip_opt_out: s['mip_opt_out'] as boolean } : {}),
      ...(s['profanity_filter'] !== undefined ? { profanity_filter: s['profanity_filter'] as boolean } : {}),
      tag: lists['tag'] ?? [],
      redact: lists['redact'] ?? [],
    },
    live: {
      ...(s['eot_threshold'] !== undefined ? { eot_threshold: s['eot_threshold'] as number } : {}),
      ...(s['eager_eot_threshold'] !== undefined ? { eager_eot_threshold: s['eager_eot_threshold'] as number } : {}),
      ...(s['eot_timeout_ms'] !== undefined ? { eot_timeout_ms: s['eot_timeout_ms'] as number } : {}),
      ...(s['numerals'] !== undefined ? { numerals: s['numerals'] as boolean } : {}),
      keyterm: lists['keyterm'] ?? [], // the client always injects keyterm: []
      language_hint: hints,
    },
  };
}

function buildQuery(c: FluxConfig): URLSearchParams {
  const q = new URLSearchParams();
  q.set('model', c.model);
  q.set('encoding', 'linear16');
  q.set('sample_rate', String(c.sampleRate));
  const l = c.live;
  if (l.eot_threshold !== undefined) q.set('eot_threshold', String(l.eot_threshold));
  if (l.eager_eot_threshold !== undefined) q.set('eager_eot_threshold', String(l.eager_eot_threshold));
  if (l.eot_timeout_ms !== undefined) q.set('eot_timeout_ms', String(l.eot_timeout_ms));
  if (l.numerals !== undefined) q.set('numerals', String(l.numerals));
  for (const k of l.keyterm) q.append('keyterm', k);
  for (const h of l.language_hint) q.append('language_hint', h);
  const f = c.fixed;
  if (f.profanity_filter !== undefined) q.set('profanity_filter', String(f.profanity_filter));
  if (f.mip_opt_out !== undefined) q.set('mip_opt_out', String(f.mip_opt_out));
  for (const r of f.redact) q.append('redact', r);
  for (const t of f.tag) q.append('tag', t);
  return q;
}

const sameList = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Pure: the Configure message that turns `cur` into `next`, [] when nothing changes, or null
 * when the change needs a new connection.
 */
export function configureFrames(cur: FluxConfig, next: FluxConfig): string[] | null {
  if (cur.model !== next.model || cur.sampleRate !== next.sampleRate) return null;
  if (JSON.stringify(cur.fixed) !== JSON.stringify(next.fixed)) return null;
  const a = cur.live;
  const b = next.live;
  if (a.eager_eot_threshold !== undefined && b.eager_eot_threshold === undefined) return null; // cannot switch eager off live
  const thresholds: Record<string, number> = {};
  if (a.eot_threshold !== b.eot_threshold) thresholds['eot_threshold'] = b.eot_threshold ?? DEFAULT_EOT_THRESHOLD;
  if (a.eager_eot_threshold !== b.eager_eot_threshold) thresholds['eager_eot_threshold'] = b.eager_eot_threshold!;
  if (a.eot_timeout_ms !== b.eot_timeout_ms) thresholds['eot_timeout_ms'] = b.eot_timeout_ms ?? DEFAULT_EOT_TIMEOUT_MS;
  const msg: Record<string, unknown> = { type: 'Configure' };
  if (Object.keys(thresholds).length > 0) msg['thresholds'] = thresholds;
  if (!sameList(a.keyterm, b.keyterm)) msg['keyterms'] = b.keyterm;
  if (!sameList(a.language_hint, b.language_hint)) msg['language_hints'] = b.language_hint;
  if ((a.numerals ?? false) !== (b.numerals ?? false)) msg['numerals'] = b.numerals ?? false;
  return Object.keys(msg).length > 1 ? [JSON.stringify(msg)] : [];
}

// ---- decoding -------------------------------------------------------------------------

interface FluxWord {
  word?: string;
  confidence?: number;
  start?: number;
  end?: number;
}

interface FluxMessage {
  type?: string;
  event?: string;
  turn_index?: number;
  audio_window_start?: number;
  audio_window_end?: number;
  transcript?: string;
  words?: FluxWord[];
  end_of_turn_confidence?: number;
  trigger?: string;
  languages?: string[];
  code?: string;
  description?: string;
}

const num = (v: unknown, d = 0): number => (typeof v === 'number' && Number.isFinite(v) ? v : d);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * Pure: one TurnInfo -> a segment (seconds on the connection's audio timeline). `skipWords`
 * leaves out words already delivered by a flush. Words without times are spread evenly over
 * the audio window.
 */
export function fluxSegment(msg: FluxMessage, skipWords = 0): SttSegment {
  const raw = Array.isArray(msg.words) ? msg.words : [];
  const w0 = num(msg.audio_window_start);
  const w1 = Math.max(w0, num(msg.audio_window_end, w0));
  const timed = raw.every((w) => isNum(w.start) && isNum(w.end));
  const step = raw.length > 0 ? (w1 - w0) / raw.length : 0;
  const all: SttWord[] = raw.map((w, i) => ({
    word: w.word ?? '',
    start: timed ? (w.start as number) : w0 + i * step,
    end: timed ? (w.end as number) : w0 + (i + 1) * step,
    confidence: num(w.confidence, 1),
  }));
  const words = skipWords > 0 ? all.slice(skipWords) : all;
  const text = skipWords > 0 ? words.map((w) => w.word).join(' ') : (msg.transcript ?? '').trim();
  const first = words[0];
  const last = words[words.length - 1];
  const language = Array.isArray(msg.languages) && typeof msg.languages[0] === 'string' ? msg.languages[0] : undefined;
  return {
    text,
    start: first ? first.start : w0,
    end: last ? last.end : w1,
    confidence: words.length > 0 ? words.reduce((s, w) => s + w.confidence, 0) / words.length : 1,
    ...(language ? { language } : {}),
    words,
  };
}

export class DeepgramFluxCodec implements SttCodec {
  readonly finalizeMessage = '{"type":"ForceEndTurn"}';
  readonly closeMessage = '{"type":"CloseStream"}';
  readonly keepAlive = null;
  private config: FluxConfig;
  /** a StartOfTurn opened the current turn */
  private turnOpen = false;
  /** latest segment of the current turn */
  private current: SttSegment | null = null;
  private turnIndex = -1;
  /** words of `turnIndex` already delivered by flush() */
  private delivered = 0;

  constructor(opts: SttOptions) {
    this.config = fluxConfig(opts);
  }

  get midUtterance(): boolean {
    return this.current !== null && this.current.text !== '';
  }

  encodeAudio(pcm: Buffer): Buffer {
    return pcm;
  }

  liveUpdate(next: SttOptions): string[] | null {
    const nextConfig = fluxConfig(next);
    const frames = configureFrames(this.config, nextConfig);
    if (frames !== null) this.config = nextConfig;
    return frames;
  }

  decode(data: Buffer, isBinary: boolean): SttEvent[] {
    const msg = parseJsonObject<FluxMessage>(data, isBinary);
    if (msg === null) return [];
    switch (msg.type) {
      case 'TurnInfo':
        return this.onTurnInfo(msg);
      case 'Error':
        return [
          {
            type: 'error',
            error: new GatewayError('provider_error', `${LABEL}: provider error ${String(msg.code ?? 'unknown').slice(0, 60)}: ${String(msg.description ?? '').slice(0, 200)}`, {
              provider_code: typeof msg.code === 'string' ? msg.code.slice(0, 60) : null,
            }),
          },
        ];
      case 'ConfigureFailure':
        return [{ type: 'error', error: new GatewayError('provider_error', `${LABEL}: provider refused the live configuration update`) }];
      default:
        return []; // Connected, ConfigureSuccess, unknown types
    }
  }

  flush(): SttEvent[] {
    const seg = this.current;
    const open = this.turnOpen;
    this.turnOpen = false;
    this.current = null;
    if (!seg || (seg.text === '' && !open)) return [];
    this.delivered += seg.words.length;
    return [{ type: 'final', segment: seg }];
  }

  private onTurnInfo(msg: FluxMessage): SttEvent[] {
    const index = num(msg.turn_index, this.turnIndex);
    if (index !== this.turnIndex) {
      this.turnIndex = index;
      this.delivered = 0;
    }
    const seg = fluxSegment(msg, this.delivered);
    const out: SttEvent[] = [];
    switch (msg.event) {
      case 'StartOfTurn':
        this.turnOpen = true;
        this.current = seg;
        out.push({ type: 'speech_started' });
        if (seg.text) out.push({ type: 'interim', segment: seg });
        break;
      case 'Update':
      case 'TurnResumed':
        if (seg.text) {
          this.current = seg;
          out.push({ type: 'interim', segment: seg });
        }
        break;
      case 'EagerEndOfTurn':
        if (seg.text) {
          this.current = seg;
          out.push({ type: 'preflight', segment: seg });
        }
        break;
      case 'EndOfTurn':
        if (seg.text || this.turnOpen) out.push({ type: 'final', segment: seg });
        this.turnOpen = false;
        this.current = null;
        this.delivered = 0;
        this.turnIndex = index + 1; // "turn_index increments immediately following an EndOfTurn"
        if (msg.trigger === 'manual') out.push({ type: 'finalized' });
        break;
      default:
        break; // open enum: tolerate events we do not know
    }
    return out;
  }
}

export const deepgramFluxStt: SttAdapter = {
  provider: 'deepgram',
  models: DEEPGRAM_FLUX_MODELS,
  // no defaultModel: the nova adapter serves a bare `deepgram`
  capabilities: {
    wordTimings: true, // words[].start/end (s); spread over the audio window when a server omits them
    diarization: false, // Flux has no diarization
    startOfSpeech: true, // StartOfTurn
    preflight: true, // EagerEndOfTurn, when eager_eot_threshold is set
    liveUpdate: true, // Configure: thresholds, keyterms, language hints, numerals
    finalize: true, // ForceEndTurn -> EndOfTurn trigger "manual"
    sampleRates: SAMPLE_RATES,
  },
  validate(opts: SttOptions): SttOptions {
    const c = fluxConfig(opts); // throws bad_request
    return { ...opts, model: c.model };
  },
  request(opts: SttOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    const base = endpoint.baseUrl.replace(/\/+$/, '');
    return {
      url: `${base}/v2/listen?${buildQuery(fluxConfig(opts)).toString()}`,
      headers: { Authorization: `Token ${endpoint.apiKey}` },
      errorHeader: 'dg-error',
    };
  },
  createCodec(opts: SttOptions): SttCodec {
    return new DeepgramFluxCodec(opts);
  },
};
