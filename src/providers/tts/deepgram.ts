/**
 * Deepgram Aura TTS WebSocket v1: wss://api.deepgram.com/v1/speak
 * API reference: https://developers.deepgram.com/reference/text-to-speech/speak-streaming
 * (flush: https://developers.deepgram.com/docs/tts-ws-flush).
 * Notes: shared/providers.md sections 2.1 (auth, close codes), 2.4 (messages), 9 (timing).
 *
 * One socket serves many sequential generations: every text chunk is a `Speak`, the end of
 * input is a `Flush`, and `Flushed` closes the generation. Model, encoding, rate and options are
 * query parameters, so they are fixed per socket (`connectionKey`). Deepgram names a voice by a
 * model id: `aura-2-<voice>-<lang>` (Aura-2) or `aura-<voice>-en` (Aura, English only).
 */
import { parseJsonObject } from '../upstream/json.ts';
import { GatewayError } from '../../protocol/errors.ts';
import { validateOptions, type OptionSpec } from '../options.ts';
import type { ProviderEndpoint, TtsEvent, TtsOptions, TtsWsAdapter, TtsWsCodec, UpstreamRequest } from '../types.ts';

const MODELS = ['aura-2', 'aura'] as const;

/** Languages Aura-2 has voices for; Aura (v1) is English only. */
export const AURA2_LANGUAGES = ['en', 'es', 'de', 'nl', 'fr', 'it', 'ja'] as const;

const OPTIONS: Record<string, OptionSpec> = {
  mip_opt_out: { kind: 'bool' },
  // The v1 reference documents `speed` ("speaking rate multiplier ... not yet supported in all
  // languages") without a range; Flux /v2/speak publishes 0.5-1.5. We accept the conservative
  // 0.7-1.5 until Deepgram documents the v1 range.
  speed: { kind: 'number', min: 0.7, max: 1.5 },
};

const REFUSED: Record<string, string> = {
  model: 'set the model in the model string and the voice in the voice field',
  voice: 'set the voice in the model string or the voice field',
  encoding: 'the gateway always asks for linear16',
  sample_rate: 'set sample_rate in session.create',
  container: 'the gateway streams raw samples',
  bit_rate: 'the gateway streams raw samples',
  callback: 'callbacks would send audio outside the gateway',
  callback_method: 'callbacks would send audio outside the gateway',
};

/** A voice that already is a full model id: `aura-2-thalia-en`, `aura-asteria-en`. */
const FULL_ID = /^aura-(2-)?[a-z]+-[a-z]{2}$/;
const VOICE_NAME = /^[a-z]{1,40}$/;

/** Longest text we put in one `Speak` (Deepgram's cap is undocumented; 2000 is the reported one). */
const MAX_SPEAK_CHARS = 2000;

function bad(message: string): GatewayError {
  return new GatewayError('bad_request', `deepgram: ${message}`);
}

/** Primary subtag of a language code: `en-US` -> `en`. */
function primaryLanguage(language: string | undefined): string {
  return (language ?? 'en').split(/[-_]/)[0]?.toLowerCase() ?? '';
}

/**
 * Pure: the Deepgram model id for a model family, voice and language. A voice that is already a
 * full model id wins over `language` (clients send `en` by default).
 */
export function auraModelId(model: string, voice: string, language: string | undefined): string {
  const v = voice.toLowerCase();
  if (model !== 'aura' && model !== 'aura-2') throw bad(`unknown model "${model.slice(0, 60)}"; use aura-2 or aura`);
  if (FULL_ID.test(v)) {
    const isAura2 = v.startsWith('aura-2-');
    if (isAura2 !== (model === 'aura-2')) {
      throw bad(`voice "${v}" is an ${isAura2 ? 'aura-2' : 'aura'} model id but the model is ${model}`);
    }
    if (!isAura2 && !v.endsWith('-en')) throw bad(`aura (v1) voices are English only, got "${v}"`);
    if (isAura2 && !(AURA2_LANGUAGES as readonly string[]).includes(v.slice(-2))) {
      throw bad(`voice "${v}" has an unsupported language; aura-2 supports ${AURA2_LANGUAGES.join(', ')}`);
    }
    return v;
  }
  if (!VOICE_NAME.test(v)) {
    throw bad(`voice must be an Aura voice name (e.g. thalia) or a model id (e.g. aura-2-thalia-en), got "${voice.slice(0, 60)}"`);
  }
  const lang = primaryLanguage(language);
  if (model === 'aura') {
    if (lang !== 'en') throw bad(`model aura is English only (language "${lang}"); use aura-2 for other languages`);
    return `aura-${v}-en`;
  }
  if (!(AURA2_LANGUAGES as readonly string[]).includes(lang)) {
    throw bad(`language "${(language ?? '').slice(0, 35)}" is not available for aura-2; supported: ${AURA2_LANGUAGES.join(', ')}`);
  }
  return `aura-2-${v}-${lang}`;
}

function validate(opts: TtsOptions): TtsOptions {
  auraModelId(opts.model, opts.voice, opts.language);
  const extra = validateOptions('deepgram', opts.extra, OPTIONS, REFUSED);
  return { ...opts, extra };
}

function query(opts: TtsOptions): string {
  const q = new URLSearchParams();
  q.set('model', auraModelId(opts.model, opts.voice, opts.language));
  q.set('encoding', 'linear16');
  q.set('sample_rate', String(opts.sampleRate));
  for (const k of Object.keys(OPTIONS)) {
    const v = opts.extra[k];
    if (v !== undefined) q.set(k, String(v));
  }
  return q.toString();
}

/** Pure: split text into `Speak`-sized pieces, at whitespace when possible. */
export function speakPieces(text: string, max = MAX_SPEAK_CHARS): string[] {
  const out: string[] = [];
  let rest = text;
  while (rest.length > max) {
    let cut = rest.lastIndexOf(' ', max - 1) + 1;
    if (cut <= 0) cut = max;
    // Never split a surrogate pair.
    const code = rest.charCodeAt(cut - 1);
    if (code >= 0xd800 && code <= 0xdbff) cut -= 1;
    out.push(rest.slice(0, cut));
    rest = rest.slice(cut);
  }
  if (rest.length > 0) out.push(rest);
  return out;
}

interface DeepgramMessage {
  type?: string;
  description?: string;
  code?: string;
}

const FLUSH = '{"type":"Flush"}';

/** Pure decode of one Deepgram speak frame (generations are sequential: `gen` is null). */
export function decodeDeepgramSpeak(data: Buffer, isBinary: boolean): TtsEvent[] {
  if (isBinary) return data.length > 0 ? [{ type: 'audio', gen: null, pcm: data }] : [];
  const msg = parseJsonObject<DeepgramMessage>(data, isBinary);
  if (msg === null) return [{ type: 'error', gen: null, error: new GatewayError('provider_error', 'deepgram: provider sent a frame that is not a JSON object') }];
  switch (msg.type) {
    case 'Flushed':
      return [{ type: 'done', gen: null }];
    default:
      // Metadata (on connect), Cleared (we never Clear: cancellation drops the socket) and
      // Warning: a Warning reports a limit or an oddity (e.g. more than 20 Flush per minute)
      // while the socket keeps working, so it does not fail the generation.
      return [];
  }
}

class DeepgramSpeakCodec implements TtsWsCodec {
  readonly openMessages: readonly string[] = [];
  /** speak v1 has no KeepAlive message. */
  readonly keepAlive = null;

  text(_gen: string, text: string): string[] {
    return speakPieces(text).map((t) => `{"type":"Speak","text":${JSON.stringify(t)}}`);
  }

  end(): string[] {
    return [FLUSH];
  }

  decode(data: Buffer, isBinary: boolean): TtsEvent[] {
    return decodeDeepgramSpeak(data, isBinary);
  }
}

export const deepgramTts: TtsWsAdapter = {
  kind: 'ws',
  provider: 'deepgram',
  models: MODELS,
  defaultModel: 'aura-2',
  defaultVoice: 'thalia',
  capabilities: {
    alignment: null,
    sampleRates: [8000, 16000, 24000, 32000, 48000],
  },
  reuse: 'many',
  // "20 Flush per 60 s, then a Warning" (providers.md 2.4): one Flush per generation.
  maxGenerationsPerMinute: 20,
  validate,
  // Everything (model id, rate, options) is in the URL.
  connectionKey: query,
  request(opts: TtsOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    return {
      url: `${endpoint.baseUrl.replace(/\/+$/, '')}/v1/speak?${query(opts)}`,
      headers: { Authorization: `Token ${endpoint.apiKey}` },
      errorHeader: 'dg-error',
    };
  },
  createCodec: () => new DeepgramSpeakCodec(),
};
