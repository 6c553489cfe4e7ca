/**
 * Cartesia TTS WebSocket: wss://api.cartesia.ai/tts/websocket
 * API reference: https://docs.cartesia.ai/api-reference/tts/websocket (contexts:
 * https://docs.cartesia.ai/api-reference/tts/working-with-web-sockets/contexts).
 * Notes: shared/providers.md sections 4.1 (version, auth), 4.4 (messages), 9 (timing).
 *
 * One socket serves many generations: each generation is a context (`context_id` = our
 * generation id), every text chunk is a request with `continue: true`, and the end of input is
 * an empty transcript with `continue: false`. The API version is pinned (2025-04-16) so that
 * message shapes and defaults (max_buffer_delay_ms 0) do not drift.
 */
import { parseJsonObject } from '../upstream/json.ts';
import { GatewayError, codeForUpstreamStatus } from '../../protocol/errors.ts';
import { validateOptions, type OptionSpec } from '../options.ts';
import type { ProviderEndpoint, TtsEvent, TtsOptions, TtsWsAdapter, TtsWsCodec, UpstreamRequest } from '../types.ts';

export const CARTESIA_API_VERSION = '2025-04-16';

const MODELS = [
  'sonic-3.5',
  'sonic-3',
  'sonic-2',
  'sonic-turbo',
  'sonic',
  'sonic-3-latest',
  'sonic-latest',
  'sonic-3-2025-10-27',
  'sonic-3-2026-01-12',
  'sonic-3.5-2026-05-04',
] as const;

const SPEED_WORDS = ['slow', 'normal', 'fast'] as const;

const OPTIONS: Record<string, OptionSpec> = {
  speed: { kind: 'number_or_enum', min: 0.6, max: 1.5, values: SPEED_WORDS },
  volume: { kind: 'number', min: 0.5, max: 2 },
  emotion: { kind: 'string', maxLength: 64 },
  duration: { kind: 'number', min: 0.1, max: 600 },
  max_buffer_delay_ms: { kind: 'number', min: 0, max: 5000, integer: true },
  add_timestamps: { kind: 'bool' },
  add_phoneme_timestamps: { kind: 'bool' },
  use_normalized_timestamps: { kind: 'bool' },
};

const REFUSED: Record<string, string> = {
  model_id: 'set the model in the model string',
  voice: 'set the voice in the model string or the voice field',
  output_format: 'the gateway always asks for raw pcm_s16le',
  context_id: 'the gateway owns contexts',
  transcript: 'send text with input_transcript',
};

const VOICE_ID = /^[A-Za-z0-9_-]{1,100}$/;

function isSonic3(model: string): boolean {
  return model.startsWith('sonic-3');
}

function validate(opts: TtsOptions): TtsOptions {
  if (!VOICE_ID.test(opts.voice)) {
    throw new GatewayError('bad_request', `cartesia: voice must be a Cartesia voice id (UUID), got "${opts.voice.slice(0, 60)}"`);
  }
  const extra = validateOptions('cartesia', opts.extra, OPTIONS, REFUSED);
  if (!isSonic3(opts.model)) {
    for (const key of ['volume', 'emotion'] as const) {
      if (extra[key] !== undefined) throw new GatewayError('bad_request', `cartesia: option "${key}" needs a sonic-3 model`);
    }
  }
  return { ...opts, extra };
}

/** Everything of a request except transcript/continue, which are the same for a whole context. */
function fixedFields(gen: string, opts: TtsOptions): string {
  const e = opts.extra;
  const req: Record<string, unknown> = {
    model_id: opts.model,
    voice: { mode: 'id', id: opts.voice },
    output_format: { container: 'raw', encoding: 'pcm_s16le', sample_rate: opts.sampleRate },
    context_id: gen,
  };
  if (opts.language) req.language = opts.language;
  if (typeof e.speed === 'string') req.speed = e.speed;
  const gc: Record<string, unknown> = {};
  if (typeof e.speed === 'number') gc.speed = e.speed;
  if (e.volume !== undefined) gc.volume = e.volume;
  if (e.emotion !== undefined) gc.emotion = e.emotion;
  if (Object.keys(gc).length > 0) req.generation_config = gc;
  for (const k of ['duration', 'max_buffer_delay_ms', 'add_timestamps', 'add_phoneme_timestamps', 'use_normalized_timestamps']) {
    if (e[k] !== undefined) req[k] = e[k];
  }
  // `{...fields,` without the closing brace: transcript and continue are appended per message.
  return JSON.stringify(req).slice(0, -1);
}

interface CartesiaMessage {
  type?: string;
  context_id?: string;
  data?: string;
  done?: boolean;
  status_code?: number;
  error?: string;
  message?: string;
  title?: string;
  word_timestamps?: { words?: unknown; start?: unknown; end?: unknown };
}

function parseWords(wt: CartesiaMessage['word_timestamps']): { word: string; start: number; end: number }[] | null {
  if (!wt || !Array.isArray(wt.words) || !Array.isArray(wt.start) || !Array.isArray(wt.end)) return null;
  const out: { word: string; start: number; end: number }[] = [];
  for (let i = 0; i < wt.words.length; i++) {
    const word = wt.words[i];
    const start = wt.start[i];
    const end = wt.end[i];
    if (typeof word === 'string' && typeof start === 'number' && typeof end === 'number') out.push({ word, start, end });
  }
  return out;
}

/** Pure decode of one Cartesia server message. */
export function decodeCartesia(data: Buffer, isBinary: boolean): TtsEvent[] {
  if (isBinary) return [];
  const msg = parseJsonObject<CartesiaMessage>(data, isBinary);
  if (msg === null) return [{ type: 'error', gen: null, error: new GatewayError('provider_error', 'cartesia: provider sent a frame that is not JSON') }];
  const gen = typeof msg.context_id === 'string' ? msg.context_id : null;
  switch (msg.type) {
    case 'chunk':
      return typeof msg.data === 'string' && msg.data.length > 0 ? [{ type: 'audio', gen, pcm: Buffer.from(msg.data, 'base64') }] : [];
    case 'timestamps': {
      const words = parseWords(msg.word_timestamps);
      return words && words.length > 0 ? [{ type: 'alignment', gen, alignment: { words } }] : [];
    }
    case 'done':
      return [{ type: 'done', gen }];
    case 'error': {
      const status = typeof msg.status_code === 'number' ? msg.status_code : 500;
      const why = String(msg.error ?? msg.message ?? msg.title ?? 'unknown error').slice(0, 300);
      return [{ type: 'error', gen, error: new GatewayError(codeForUpstreamStatus(status), `cartesia: ${why} (status ${status})`, { provider_status: status }) }];
    }
    default:
      // flush_done, phoneme_timestamps and anything newer: nothing to forward.
      return [];
  }
}

/**
 * Cartesia expires a context 1 s after its last audio output. When a client pauses longer than
 * that mid-generation (a slow LLM between sentences), the rest of the generation goes to a
 * continuation context `<gen>-c<n>`; its audio and timestamps continue the generation's
 * timeline. Done and errors count only from the current context.
 */
const CONTEXT_REFRESH_MS = 700;
const CONTINUATION = /-c\d+$/;

class CartesiaCodec implements TtsWsCodec {
  readonly openMessages: readonly string[] = [];
  readonly keepAlive = null;
  private gen = '';
  /** Current context id and its serialized fixed fields. */
  private ctx = '';
  private seq = 0;
  private head = '';
  private bytesPerSecond = 48000;
  /** Audio of the generation so far, and where the current context started in it. */
  private genBytes = 0;
  private ctxStartBytes = 0;
  private lastAudioAt = 0;

  private headFor(gen: string, opts: TtsOptions): string {
    if (gen !== this.gen) {
      this.gen = gen;
      this.seq = 0;
      this.ctx = gen;
      this.genBytes = 0;
      this.ctxStartBytes = 0;
      this.lastAudioAt = 0;
      this.bytesPerSecond = opts.sampleRate * 2;
      this.head = fixedFields(gen, opts);
    } else if (this.lastAudioAt > 0 && Date.now() - this.lastAudioAt > CONTEXT_REFRESH_MS) {
      this.seq += 1;
      this.ctx = `${gen}-c${this.seq}`;
      this.ctxStartBytes = this.genBytes;
      this.lastAudioAt = 0;
      this.head = fixedFields(this.ctx, opts);
    }
    return this.head;
  }

  text(gen: string, text: string, opts: TtsOptions): string[] {
    return [`${this.headFor(gen, opts)},"transcript":${JSON.stringify(text)},"continue":true}`];
  }

  end(gen: string, opts: TtsOptions): string[] {
    return [`${this.headFor(gen, opts)},"transcript":"","continue":false}`];
  }

  decode(data: Buffer, isBinary: boolean): TtsEvent[] {
    const out: TtsEvent[] = [];
    for (const ev of decodeCartesia(data, isBinary)) {
      if (ev.gen === null) {
        out.push(ev);
        continue;
      }
      const current = ev.gen === this.ctx;
      const gen = ev.gen.replace(CONTINUATION, '');
      if (ev.type === 'audio') {
        // Late audio of an earlier context of this generation is still its audio.
        if (gen === this.gen) {
          this.genBytes += ev.pcm.length;
          this.lastAudioAt = Date.now();
        }
        out.push({ ...ev, gen });
      } else if (current) {
        if (ev.type === 'alignment' && this.ctxStartBytes > 0 && ev.alignment.words) {
          const off = this.ctxStartBytes / this.bytesPerSecond;
          out.push({ ...ev, gen, alignment: { words: ev.alignment.words.map((w) => ({ word: w.word, start: w.start + off, end: w.end + off })) } });
        } else {
          out.push({ ...ev, gen });
        }
      }
    }
    return out;
  }
}

export const cartesiaTts: TtsWsAdapter = {
  kind: 'ws',
  provider: 'cartesia',
  models: MODELS,
  defaultModel: 'sonic-3',
  defaultVoice: '9626c31c-bec5-4cca-baa8-f8ba9e84c8bc',
  capabilities: {
    alignment: { kind: 'words', flag: 'add_timestamps' },
    sampleRates: [8000, 16000, 22050, 24000, 44100, 48000],
  },
  reuse: 'many',
  validate,
  connectionKey: () => '',
  request(_opts: TtsOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    return {
      url: `${endpoint.baseUrl.replace(/\/+$/, '')}/tts/websocket`,
      headers: { 'X-API-Key': endpoint.apiKey, 'Cartesia-Version': CARTESIA_API_VERSION },
    };
  },
  createCodec: () => new CartesiaCodec(),
};
