/**
 * AssemblyAI Universal Streaming v3: wss://streaming.assemblyai.com/v3/ws
 * API reference: https://www.assemblyai.com/docs/api-reference/streaming-api/universal-streaming
 * Notes: shared/providers.md section 3; protocol.md 2.8/2.9 (model ids, `extra` names).
 * Docs relied on (AssemblyAI/assemblyai-api-spec, fern/pages/speech-to-text/universal-streaming/):
 * universal-streaming-messages.mdx (with format_turns an unformatted end-of-turn Turn is followed
 * by a formatted one with the same turn_order; `utterance` is set when an utterance ends, for
 * pre-emptive generation), u3-pro-message-sequence.mdx + universal-3-pro.mdx (u3: the end-of-turn
 * Turn is always formatted and unique; prompt and keyterms_prompt are exclusive; UpdateConfiguration
 * carries keyterms_prompt / prompt / silences), universal-streaming-keyterms.mdx (at most 100
 * keyterms of at most 50 characters; UpdateConfiguration replaces them, [] clears), turn-detection.mdx
 * (threshold 0..1, silences in ms), usm-streaming.yml (inactivity_timeout 5..3600 s, 50-1000 ms audio
 * messages), www.assemblyai.com/docs/streaming/message-sequence.md (KeepAlive only matters with
 * inactivity_timeout; Error precedes the close), the assemblyai SDK 4.41.5 types/close codes and
 * LiveKit's AssemblyAI plugin (agent_context cap 1750 chars, language_detection default, word times in
 * ms, interim text = every word so far).
 *
 * Decisions:
 * - One final per turn: the end-of-turn Turn is the final, except with format_turns on the
 *   universal-streaming models, where the unformatted end of turn becomes a preflight and the
 *   formatted copy (same turn_order) is the final. A turn whose formatted copy never comes is
 *   finalized unformatted when a later turn starts, at Termination, or by `flush()`. Late copies of
 *   a finished turn_order are dropped.
 * - `finalized` follows every end-of-turn final. AssemblyAI does not acknowledge ForceEndpoint;
 *   the end of turn it forces is its answer, and a natural end of turn just before it answers it
 *   too (the turn is over). The session ignores `finalized` when no finalize is pending. With no
 *   turn in progress AssemblyAI sends nothing and the session's ack timeout completes the finalize.
 * - Audio messages must hold 50-1000 ms: `encodeAudio` keeps audio until it has 50 ms, sends at most
 *   1000 ms per message (a longer input sends 1000 ms and keeps the rest for the next call, so
 *   clients' 50 ms frames pass through untouched). `flushAudio` (before ForceEndpoint / Terminate)
 *   pads what is held to 50 ms with silence and shifts later provider times back by the padding,
 *   keeping the session's timeline exact.
 * - No `sampleRates` capability: the docs do not restrict PCM rates (examples 8000-48000).
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

/** Gateway model id -> AssemblyAI `speech_model` (required by the API, no default). */
const SPEECH_MODEL: Record<string, string> = {
  'universal-streaming': 'universal-streaming-english',
  'universal-streaming-english': 'universal-streaming-english',
  'universal-streaming-multilingual': 'universal-streaming-multilingual',
  'u3-rt-pro': 'u3-rt-pro',
  'universal-3-5-pro': 'universal-3-5-pro',
};

export const ASSEMBLYAI_MODELS = Object.keys(SPEECH_MODEL);

/** The Universal-3 Pro family (prompting, agent_context, voice focus, modes). */
const U3_FAMILY = new Set(['u3-rt-pro', 'universal-3-5-pro']);
/** Languages of universal-streaming-multilingual and u3-rt-pro (with code switching). */
const SIX_LANGUAGES = new Set(['en', 'es', 'fr', 'de', 'it', 'pt']);
const LANGUAGE_RE = /^(multi|[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8}){0,3})$/;

const MAX_KEYTERMS = 100;
const MAX_KEYTERM_CHARS = 50;
/** Server cap on agent_context (LiveKit plugin, "MAX_PROMPT_CHARS"); applied to prompt too (UNCERTAIN). */
const MAX_CONTEXT_CHARS = 1750;

const SILENCE_MS: OptionSpec = { kind: 'number', min: 0, max: 60000, integer: true };

/** Options checked by validateOptions (the string/array ones are checked below). */
const SPECS: Record<string, OptionSpec> = {
  format_turns: { kind: 'bool' },
  end_of_turn_confidence_threshold: { kind: 'number', min: 0, max: 1 },
  min_end_of_turn_silence_when_confident: SILENCE_MS,
  min_turn_silence: SILENCE_MS,
  max_turn_silence: SILENCE_MS,
  vad_threshold: { kind: 'number', min: 0, max: 1 },
  speaker_labels: { kind: 'bool' },
  max_speakers: { kind: 'number', min: 1, max: 10, integer: true },
  language_detection: { kind: 'bool' },
  inactivity_timeout: { kind: 'number', min: 5, max: 3600, integer: true },
  voice_focus: { kind: 'enum', values: ['near-field', 'far-field'] },
  voice_focus_threshold: { kind: 'number', min: 0, max: 1 },
  mode: { kind: 'enum', values: ['min_latency', 'balanced', 'max_accuracy'] },
  previous_context_n_turns: { kind: 'number', min: 0, max: 100, integer: true },
};
const CUSTOM = new Set(['keyterms_prompt', 'agent_context', 'prompt']);
const U3_ONLY = ['agent_context', 'prompt', 'voice_focus', 'voice_focus_threshold', 'mode', 'previous_context_n_turns'];

const REFUSED: Record<string, string> = {
  speech_model: 'set the model in the model string',
  sample_rate: 'set settings.sample_rate',
  encoding: 'the gateway sends pcm_s16le',
  language: 'set the language in settings.language',
  language_code: 'set the language in settings.language',
  language_codes: 'set the language in settings.language',
  token: 'the gateway authenticates upstream',
  webhook_url: 'webhooks would send transcripts outside the gateway',
  webhook_auth_header_name: 'webhooks would send transcripts outside the gateway',
  webhook_auth_header_value: 'webhooks would send transcripts outside the gateway',
  llm_gateway: 'not supported through the gateway',
};

/** Options AssemblyAI applies live with UpdateConfiguration (wire names). */
const LIVE_KEYS = new Set([
  'format_turns',
  'end_of_turn_confidence_threshold',
  'min_turn_silence',
  'max_turn_silence',
  'vad_threshold',
  'keyterms_prompt',
  'prompt',
  'agent_context',
]);

function bad(message: string): GatewayError {
  return new GatewayError('bad_request', `assemblyai: ${message}`);
}

function checkText(key: string, v: unknown, max: number): string {
  if (typeof v !== 'string' || v.length > max) throw bad(`option "${key}" must be a string of at most ${max} characters`);
  return v;
}

function checkKeyterms(v: unknown): string[] {
  if (!Array.isArray(v) || v.length > MAX_KEYTERMS) {
    throw bad(`option "keyterms_prompt" must be an array of at most ${MAX_KEYTERMS} strings`);
  }
  for (const t of v) {
    if (typeof t !== 'string' || t.trim() === '' || t.length > MAX_KEYTERM_CHARS) {
      throw bad(`option "keyterms_prompt" entries must be non-empty strings of at most ${MAX_KEYTERM_CHARS} characters`);
    }
  }
  return v as string[];
}

/** Validated `extra` as AssemblyAI wire parameters (values typed; empty keyterms dropped). */
function wireParams(opts: SttOptions): Map<string, unknown> {
  const model = opts.model;
  const rest: Record<string, unknown> = {};
  const custom: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(opts.extra)) {
    if (v === null || v === undefined) continue;
    if (CUSTOM.has(k)) custom[k] = v;
    else rest[k] = v;
  }
  const extra = validateOptions('assemblyai', rest, SPECS, REFUSED);
  const out = new Map<string, unknown>();
  const u3 = U3_FAMILY.has(model);
  for (const k of U3_ONLY) {
    if ((extra[k] ?? custom[k]) !== undefined && !u3) throw bad(`option "${k}" is only supported by u3-rt-pro and universal-3-5-pro (got ${model})`);
  }
  if (extra['min_turn_silence'] !== undefined && extra['min_end_of_turn_silence_when_confident'] !== undefined) {
    throw bad('give either "min_turn_silence" or "min_end_of_turn_silence_when_confident" (same setting), not both');
  }
  if (extra['language_detection'] === true && SPEECH_MODEL[model] === 'universal-streaming-english') {
    throw bad('language_detection is only available with the multilingual and u3 models');
  }
  if (extra['max_speakers'] !== undefined && extra['speaker_labels'] !== true) {
    throw bad('option "max_speakers" needs speaker_labels: true');
  }
  const keyterms = custom['keyterms_prompt'] !== undefined ? checkKeyterms(custom['keyterms_prompt']) : [];
  const prompt = custom['prompt'] !== undefined ? checkText('prompt', custom['prompt'], MAX_CONTEXT_CHARS) : undefined;
  const agentContext = custom['agent_context'] !== undefined ? checkText('agent_context', custom['agent_context'], MAX_CONTEXT_CHARS) : undefined;
  if (prompt && keyterms.length > 0) throw bad('"prompt" and "keyterms_prompt" cannot be used together; put the terms in the prompt');
  const minSilence = extra['min_turn_silence'] ?? extra['min_end_of_turn_silence_when_confident'];
  const maxSilence = extra['max_turn_silence'];
  if (typeof minSilence === 'number' && typeof maxSilence === 'number' && minSilence > maxSilence) {
    throw bad('min_turn_silence must not exceed max_turn_silence');
  }
  for (const [k, v] of Object.entries(extra)) {
    if (k === 'min_end_of_turn_silence_when_confident') continue;
    out.set(k, v);
  }
  if (minSilence !== undefined) out.set('min_turn_silence', minSilence);
  if (keyterms.length > 0) out.set('keyterms_prompt', keyterms);
  if (prompt) out.set('prompt', prompt);
  if (agentContext) out.set('agent_context', agentContext);
  return out;
}

/** Whether end-of-turn finals wait for the formatted copy (universal-streaming with format_turns). */
function waitsForFormatting(opts: SttOptions, params: Map<string, unknown>): boolean {
  return !U3_FAMILY.has(opts.model) && params.get('format_turns') === true;
}

function checkLanguage(opts: SttOptions): void {
  const lang = opts.language;
  if (lang === undefined) return;
  if (!LANGUAGE_RE.test(lang)) throw bad(`invalid language "${lang.slice(0, 40)}"`);
  const base = lang.split('-')[0]!.toLowerCase();
  const speechModel = SPEECH_MODEL[opts.model];
  if (speechModel === 'universal-streaming-english' && base !== 'en') {
    throw bad(`${opts.model} transcribes English only (got "${lang}"); use universal-streaming-multilingual or u3-rt-pro`);
  }
  if ((speechModel === 'universal-streaming-multilingual' || speechModel === 'u3-rt-pro') && base !== 'multi' && !SIX_LANGUAGES.has(base)) {
    throw bad(`${opts.model} supports en, es, fr, de, it and pt (got "${lang}")`);
  }
}

function buildQuery(opts: SttOptions): URLSearchParams {
  const params = wireParams(opts);
  const model = opts.model;
  const q = new URLSearchParams();
  q.set('speech_model', SPEECH_MODEL[model] as string);
  q.set('sample_rate', String(opts.sampleRate));
  q.set('encoding', 'pcm_s16le');
  if (!U3_FAMILY.has(model) && !params.has('format_turns')) q.set('format_turns', 'false');
  // LiveKit's plugin default: language metadata on for the multilingual and u3 models.
  if (!params.has('language_detection') && SPEECH_MODEL[model] !== 'universal-streaming-english') q.set('language_detection', 'true');
  if (model === 'universal-3-5-pro' && opts.language && opts.language !== 'multi') {
    q.set('language_codes', JSON.stringify([opts.language.split('-')[0]!.toLowerCase()]));
  }
  for (const [k, v] of params) q.set(k, Array.isArray(v) ? JSON.stringify(v) : String(v));
  return q;
}

// ---- errors -----------------------------------------------------------------------------

const CODE_LABELS: Record<number, string> = {
  1008: 'provider refused the connection',
  3005: 'provider cancelled the session (server error)',
  3006: 'provider rejected a message',
  3007: 'audio chunk duration or rate violation',
  3008: 'session expired (maximum session duration)',
  3009: 'too many concurrent sessions',
  4000: 'bad sample rate',
  4001: 'provider rejected credentials',
  4002: 'insufficient funds',
  4003: 'feature requires a paid account',
  4008: 'session expired',
  4029: 'rate limited',
  4031: 'session timeout',
  4101: 'bad schema',
  4102: 'too many streams',
};

function errorCodeFor(code: number, reason: string): ErrorCode {
  switch (code) {
    case 1008:
      // 1008 covers both auth failures and the new-session rate limit; only the documented
      // reason tells them apart ("Unauthorized connection: Too many concurrent sessions").
      return /too many concurrent sessions/i.test(reason) ? 'rate_limited' : 'unauthorized';
    case 3009:
    case 4029:
    case 4102:
      return 'rate_limited';
    case 4001:
      return 'unauthorized';
    case 4002:
    case 4003:
      return 'forbidden';
    case 3006:
    case 4000:
    case 4101:
      return 'bad_request';
    default:
      return 'provider_error';
  }
}

/** A provider close (or in-band Error) as a GatewayError carrying the provider's reason. */
export function assemblyAiError(code: number | null, reason: string, kind: 'close' | 'error'): GatewayError {
  const why = providerReason(reason);
  const label = (code !== null ? CODE_LABELS[code] : undefined) ?? (kind === 'close' ? 'provider closed the stream' : 'provider reported an error');
  const detail = [code !== null ? `${kind} ${code}` : kind, why].filter(Boolean).join(': ');
  return new GatewayError(code !== null ? errorCodeFor(code, reason) : 'provider_error', `assemblyai: ${label} (${detail})`, code !== null ? {
    [kind === 'close' ? 'provider_close' : 'provider_code']: code,
  } : undefined);
}

// ---- decoding ---------------------------------------------------------------------------

interface AaiWord {
  text?: string;
  start?: number;
  end?: number;
  confidence?: number;
  word_is_final?: boolean;
  speaker?: string;
}

interface AaiMessage {
  type?: string;
  turn_order?: number;
  turn_is_formatted?: boolean;
  end_of_turn?: boolean;
  transcript?: string;
  utterance?: string;
  end_of_turn_confidence?: number;
  words?: AaiWord[];
  language_code?: string;
  language_confidence?: number;
  speaker_label?: string;
  audio_duration_seconds?: number;
  error?: unknown;
  error_code?: number;
}

const num = (v: unknown, d = 0): number => (typeof v === 'number' && Number.isFinite(v) ? v : d);
const speakerOf = (s: unknown): string | undefined => (typeof s === 'string' && s !== '' && s !== 'UNKNOWN' ? s : undefined);
const EMPTY = Buffer.alloc(0);

export class AssemblyAiCodec implements SttCodec {
  readonly finalizeMessage = '{"type":"ForceEndpoint"}';
  readonly closeMessage = '{"type":"Terminate"}';
  readonly keepAlive: { message: string; idleMs: number } | null;
  private opts: SttOptions;
  private formatTurns: boolean;
  // audio framing
  private readonly bytesPerSecond: number;
  private readonly minBytes: number;
  private readonly maxBytes: number;
  private held: Buffer = EMPTY;
  private sentBytes = 0;
  /** silence we added (upstream seconds), to map provider times back to the client's audio */
  private readonly pads: Array<{ at: number; dur: number }> = [];
  // turn state
  private partial: SttSegment | null = null;
  private turnOrder: number | null = null;
  /** A SpeechStarted already announced the turn being opened. */
  private speechSignalled = false;
  private utterances: string[] = [];
  private heldFinal: { order: number | null; segment: SttSegment } | null = null;
  private lastFinalOrder: number | null = null;

  constructor(opts: SttOptions) {
    this.opts = opts;
    const params = wireParams(opts);
    this.formatTurns = waitsForFormatting(opts, params);
    const inactivity = params.get('inactivity_timeout');
    // KeepAlive only matters with inactivity_timeout (docs); send it well inside the window.
    this.keepAlive = typeof inactivity === 'number' ? { message: '{"type":"KeepAlive"}', idleMs: Math.max(1000, (inactivity * 1000) / 2) } : null;
    this.bytesPerSecond = opts.sampleRate * 2;
    this.minBytes = Math.ceil(opts.sampleRate * 0.05) * 2;
    this.maxBytes = opts.sampleRate * 2;
  }

  get midUtterance(): boolean {
    return this.heldFinal !== null || (this.partial !== null && this.partial.text !== '');
  }

  /** 50-1000 ms per message: hold short input, cut long input (the rest goes with the next call). */
  encodeAudio(pcm: Buffer): Buffer | null {
    const buf = this.held.length > 0 ? Buffer.concat([this.held, pcm]) : pcm;
    if (buf.length < this.minBytes) {
      this.held = buf === pcm ? Buffer.from(pcm) : buf;
      return null;
    }
    const n = Math.min(buf.length - (buf.length & 1), this.maxBytes);
    this.held = n < buf.length ? Buffer.from(buf.subarray(n)) : EMPTY;
    this.sentBytes += n;
    return n === buf.length ? buf : buf.subarray(0, n);
  }

  /** What is held, as one message padded to 50 ms with silence (an odd trailing byte stays held). */
  flushAudio(): Buffer | null {
    const n = Math.min(this.held.length - (this.held.length & 1), this.maxBytes);
    if (n === 0) return null;
    let frame = this.held.subarray(0, n);
    this.held = n < this.held.length ? Buffer.from(this.held.subarray(n)) : EMPTY;
    if (n < this.minBytes) {
      const pad = this.minBytes - n;
      this.pads.push({ at: (this.sentBytes + n) / this.bytesPerSecond, dur: pad / this.bytesPerSecond });
      frame = Buffer.concat([frame, Buffer.alloc(pad)]);
    }
    this.sentBytes += frame.length;
    return frame;
  }

  liveUpdate(next: SttOptions): string[] | null {
    const cur = this.opts;
    if (next.model !== cur.model || next.language !== cur.language || next.sampleRate !== cur.sampleRate) return null;
    const a = wireParams(cur);
    const b = wireParams(next);
    const msg: Record<string, unknown> = { type: 'UpdateConfiguration' };
    for (const key of new Set([...a.keys(), ...b.keys()])) {
      const before = a.get(key);
      const after = b.get(key);
      if (JSON.stringify(before) === JSON.stringify(after)) continue;
      if (!LIVE_KEYS.has(key)) return null;
      if (after !== undefined) msg[key] = after;
      else if (key === 'keyterms_prompt') msg[key] = []; // documented: [] clears the keyterms
      else if (key === 'format_turns') msg[key] = false;
      else return null; // no documented way to restore a default: reconnect
    }
    this.opts = next;
    this.formatTurns = waitsForFormatting(next, b);
    return Object.keys(msg).length > 1 ? [JSON.stringify(msg)] : [];
  }

  decode(data: Buffer, isBinary: boolean): SttEvent[] {
    const msg = parseJsonObject<AaiMessage>(data, isBinary);
    if (msg === null) return [];
    if (msg.type === 'Error' || typeof msg.error === 'string') {
      const code = typeof msg.error_code === 'number' ? msg.error_code : null;
      return [{ type: 'error', error: assemblyAiError(code, typeof msg.error === 'string' ? msg.error : '', 'error') }];
    }
    switch (msg.type) {
      case 'SpeechStarted':
        this.speechSignalled = true;
        return [{ type: 'speech_started' }];
      case 'Turn':
        return this.onTurn(msg);
      case 'Termination': {
        const out = this.releaseHeld();
        if (typeof msg.audio_duration_seconds === 'number') out.push({ type: 'provider_usage', audioSeconds: msg.audio_duration_seconds });
        return out;
      }
      default:
        return []; // Begin, Warning, Heartbeat, Silence, SpeakerRevision, LLMGatewayResponse
    }
  }

  flush(): SttEvent[] {
    const seg = this.heldFinal?.segment ?? this.partial;
    const order = this.heldFinal ? this.heldFinal.order : this.turnOrder;
    this.resetTurn();
    if (!seg || !seg.text) return [];
    // the turn is final now: a late end of turn (or formatted copy) for it is dropped
    if (order !== null) this.lastFinalOrder = order;
    return [{ type: 'final', segment: seg }];
  }

  private onTurn(msg: AaiMessage): SttEvent[] {
    const order = typeof msg.turn_order === 'number' ? msg.turn_order : null;
    const out: SttEvent[] = [];
    // a new turn started: the formatted copy of the held one is not coming
    if (this.heldFinal && order !== this.heldFinal.order) out.push(...this.releaseHeld());
    if (order !== null && order === this.lastFinalOrder) return out; // late copy of a finished turn
    if (order !== this.turnOrder) {
      this.turnOrder = order;
      this.utterances = [];
      // Models without SpeechStarted (universal-streaming): the first words of a turn are its start.
      if (!this.speechSignalled && msg.end_of_turn !== true) out.push({ type: 'speech_started' });
      this.speechSignalled = false;
    }
    if (msg.end_of_turn !== true) {
      const seg = this.segment(msg, false);
      this.partial = seg;
      if (typeof msg.utterance === 'string' && msg.utterance.trim() !== '') {
        this.utterances.push(msg.utterance.trim());
        out.push({ type: 'preflight', segment: this.utteranceSegment(msg) });
      }
      if (seg.text) out.push({ type: 'interim', segment: seg });
      return out;
    }
    const seg = this.segment(msg, true);
    if (this.formatTurns && msg.turn_is_formatted !== true) {
      this.heldFinal = { order, segment: seg };
      this.partial = null;
      if (seg.text) out.push({ type: 'preflight', segment: seg });
      return out;
    }
    out.push(...this.finish(order, seg));
    return out;
  }

  private finish(order: number | null, seg: SttSegment): SttEvent[] {
    this.resetTurn();
    this.lastFinalOrder = order;
    const out: SttEvent[] = seg.text ? [{ type: 'final', segment: seg }] : [];
    out.push({ type: 'finalized' });
    return out;
  }

  private releaseHeld(): SttEvent[] {
    const h = this.heldFinal;
    return h ? this.finish(h.order, h.segment) : [];
  }

  private resetTurn(): void {
    this.heldFinal = null;
    this.partial = null;
    this.utterances = [];
    this.turnOrder = null;
  }

  /** Provider ms -> seconds on the client's audio (minus the silence flushAudio added). */
  private seconds(ms: number): number {
    const t = ms / 1000;
    let shift = 0;
    for (const p of this.pads) {
      if (t >= p.at + p.dur) shift += p.dur;
      else if (t > p.at) shift += t - p.at;
      else break;
    }
    return t - shift;
  }

  private words(msg: AaiMessage, onlyFinal: boolean): SttWord[] {
    const out: SttWord[] = [];
    for (const w of Array.isArray(msg.words) ? msg.words : []) {
      if (!w || typeof w.text !== 'string' || w.text === '' || (onlyFinal && w.word_is_final === false)) continue;
      const speaker = speakerOf(w.speaker);
      out.push({
        word: w.text,
        start: this.seconds(num(w.start)),
        end: this.seconds(num(w.end)),
        confidence: num(w.confidence, 1),
        ...(speaker !== undefined ? { speaker } : {}),
      });
    }
    return out;
  }

  private segment(msg: AaiMessage, final: boolean): SttSegment {
    const words = this.words(msg, false);
    const joined = words.map((w) => w.word).join(' ');
    const transcript = typeof msg.transcript === 'string' ? msg.transcript.trim() : '';
    // interims show every word so far (finalized or not); finals are the turn's transcript
    const text = final ? transcript || joined : joined || transcript;
    return this.build(text, words, msg);
  }

  /** The turn's completed utterances so far (each `utterance` covers only its own words). */
  private utteranceSegment(msg: AaiMessage): SttSegment {
    return this.build(this.utterances.join(' '), this.words(msg, true), msg);
  }

  private build(text: string, words: SttWord[], msg: AaiMessage): SttSegment {
    const first = words[0];
    const last = words[words.length - 1];
    const extra: Record<string, unknown> = {};
    if (typeof msg.end_of_turn_confidence === 'number') extra['end_of_turn_confidence'] = msg.end_of_turn_confidence;
    if (typeof msg.language_confidence === 'number') extra['language_confidence'] = msg.language_confidence;
    const speaker = speakerOf(msg.speaker_label) ?? first?.speaker;
    return {
      text,
      start: first ? first.start : 0,
      end: last ? last.end : 0,
      confidence: words.length > 0 ? words.reduce((s, w) => s + w.confidence, 0) / words.length : 1,
      ...(typeof msg.language_code === 'string' && msg.language_code ? { language: msg.language_code } : {}),
      words,
      ...(speaker !== undefined ? { speaker } : {}),
      ...(Object.keys(extra).length > 0 ? { extra } : {}),
    };
  }
}

export const assemblyAiStt: SttAdapter = {
  provider: 'assemblyai',
  models: ASSEMBLYAI_MODELS,
  // LiveKit Inference's default AssemblyAI model (protocol.md 2.8; gateway auto lists).
  defaultModel: 'universal-streaming',
  capabilities: {
    wordTimings: true,
    diarization: true, // speaker_labels
    startOfSpeech: true, // SpeechStarted (u3 models); the first partial of a turn otherwise
    preflight: true, // `utterance` ends and the unformatted end of turn
    liveUpdate: true, // UpdateConfiguration
    finalize: true, // ForceEndpoint
  },
  validate(opts: SttOptions): SttOptions {
    if (SPEECH_MODEL[opts.model] === undefined) throw bad(`unknown model "${opts.model.slice(0, 60)}"; supported: ${ASSEMBLYAI_MODELS.join(', ')}`);
    checkLanguage(opts);
    wireParams(opts); // throws on invalid extra
    return opts;
  },
  request(opts: SttOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    // ASSEMBLYAI_BASE_URL may be a host (wss://streaming.eu.assemblyai.com, http(s)://...) or the
    // full endpoint the SDK takes (…/v3/ws).
    const base = endpoint.baseUrl.replace(/\/+$/, '');
    const url = /\/v3\/ws$/.test(base) ? base : `${base}/v3/ws`;
    return {
      url: `${url}?${buildQuery(opts).toString()}`,
      headers: { Authorization: endpoint.apiKey },
    };
  },
  createCodec(opts: SttOptions): SttCodec {
    return new AssemblyAiCodec(opts);
  },
  closeError(code: number, reason: string): GatewayError {
    return assemblyAiError(code, reason, 'close');
  },
};
