/**
 * OpenAI Realtime transcription sessions: wss://api.openai.com/v1/realtime?intent=transcription
 * API reference: https://platform.openai.com/docs/guides/realtime-transcription and the client /
 * server events of https://platform.openai.com/docs/api-reference/realtime (GA shapes).
 * Notes: shared/providers.md 6.4. The same protocol is spoken by self-hosted servers (speaches,
 * vLLM `/v1/realtime`): configured as `stt.upstreams.<id>` with `protocol: openai-realtime`.
 *
 * - Audio: `input_audio_buffer.append` with base64 PCM16 at 24 kHz (the session resamples).
 * - Turns: server VAD (default) commits after `silence_duration_ms`; `session.finalize` sends
 *   `input_audio_buffer.commit`. Each committed item's transcription deltas become interims and
 *   its `completed` event the item's single final. No word timings (the API has none); the
 *   segment spans the item's speech_started/speech_stopped audio times when known.
 * - A commit on an empty buffer answers `input_audio_buffer_commit_empty`: nothing to finalize.
 */
import { parseJsonObject } from '../upstream/json.ts';
import { GatewayError } from '../../protocol/errors.ts';
import { validateOptions, type OptionSpec } from '../options.ts';
import type { ProviderEndpoint, SttAdapter, SttCodec, SttEvent, SttOptions, SttSegment, UpstreamRequest } from '../types.ts';

const OPTIONS: Record<string, OptionSpec> = {
  prompt: { kind: 'string', maxLength: 4000 },
  /** false disables server VAD: only session.finalize commits. */
  server_vad: { kind: 'bool' },
  vad_threshold: { kind: 'number', min: 0, max: 1 },
  prefix_padding_ms: { kind: 'number', min: 0, max: 5000, integer: true },
  silence_duration_ms: { kind: 'number', min: 0, max: 10000, integer: true },
  noise_reduction: { kind: 'enum', values: ['near_field', 'far_field'] },
};

const REFUSED: Record<string, string> = {
  model: 'set the model in the model string',
  language: 'set the language in settings.language',
  format: 'the gateway sends audio/pcm at 24 kHz',
};

const RATE = 24000;

function validate(opts: SttOptions): SttOptions {
  return { ...opts, extra: validateOptions('openai-realtime', opts.extra, OPTIONS, REFUSED) };
}

function sessionUpdate(opts: SttOptions): string {
  const e = opts.extra;
  const transcription: Record<string, unknown> = { model: opts.model };
  if (opts.language && opts.language !== 'multi') transcription.language = opts.language.split('-')[0];
  if (typeof e.prompt === 'string') transcription.prompt = e.prompt;
  const turnDetection =
    e.server_vad === false
      ? null
      : {
          type: 'server_vad',
          ...(e.vad_threshold !== undefined ? { threshold: e.vad_threshold } : {}),
          ...(e.prefix_padding_ms !== undefined ? { prefix_padding_ms: e.prefix_padding_ms } : {}),
          ...(e.silence_duration_ms !== undefined ? { silence_duration_ms: e.silence_duration_ms } : {}),
        };
  const input: Record<string, unknown> = { format: { type: 'audio/pcm', rate: RATE }, transcription, turn_detection: turnDetection };
  if (e.noise_reduction !== undefined) input.noise_reduction = { type: e.noise_reduction };
  return JSON.stringify({ type: 'session.update', session: { type: 'transcription', audio: { input } } });
}

interface RtEvent {
  type?: string;
  item_id?: string;
  delta?: string;
  transcript?: string;
  audio_start_ms?: number;
  audio_end_ms?: number;
  error?: { type?: string; code?: string; message?: string };
}

function errorCode(type: string | undefined): 'bad_request' | 'unauthorized' | 'rate_limited' | 'provider_error' {
  if (type === 'invalid_request_error') return 'bad_request';
  if (type === 'authentication_error' || type === 'permission_error') return 'unauthorized';
  if (type === 'rate_limit_error') return 'rate_limited';
  return 'provider_error';
}

class OpenAiRealtimeCodec implements SttCodec {
  readonly openMessages: readonly string[];
  readonly finalizeMessage = '{"type":"input_audio_buffer.commit"}';
  readonly closeMessage = null;
  readonly keepAlive = null;
  private readonly language: string | undefined;
  /** Text per item so far (deltas). */
  private readonly text = new Map<string, string>();
  /** Audio span (seconds) of the current / last speech, from the VAD events. */
  private speechStart = 0;
  private speechEnd = 0;
  private speaking = false;
  /** Items committed while nobody asked (server VAD) vs by a commit we sent. */
  private readonly manual = new Set<string>();
  private finalizing = false;

  constructor(opts: SttOptions) {
    this.openMessages = [sessionUpdate(opts)];
    this.language = opts.language;
  }

  get midUtterance(): boolean {
    return this.speaking || this.text.size > 0;
  }

  encodeAudio(pcm: Buffer): string {
    return `{"type":"input_audio_buffer.append","audio":"${pcm.toString('base64')}"}`;
  }

  liveUpdate(): string[] | null {
    return null;
  }

  private segment(text: string): SttSegment {
    const end = Math.max(this.speechEnd, this.speechStart);
    return { text, start: this.speechStart, end, confidence: 1, words: [], ...(this.language ? { language: this.language } : {}) };
  }

  decode(data: Buffer, isBinary: boolean): SttEvent[] {
    if (isBinary) return [];
    const ev = parseJsonObject<RtEvent>(data, isBinary);
    if (ev === null) return [{ type: 'error', error: new GatewayError('provider_error', 'openai-realtime: provider sent a frame that is not a JSON object') }];
    switch (ev.type) {
      case 'input_audio_buffer.speech_started':
        this.speaking = true;
        if (typeof ev.audio_start_ms === 'number') this.speechStart = ev.audio_start_ms / 1000;
        return [{ type: 'speech_started' }];
      case 'input_audio_buffer.speech_stopped':
        this.speaking = false;
        if (typeof ev.audio_end_ms === 'number') this.speechEnd = ev.audio_end_ms / 1000;
        return [];
      case 'input_audio_buffer.committed':
        // A commit while speech was still going on (or without VAD) is ours: a finalize.
        if (ev.item_id && (this.speaking || this.finalizing)) this.manual.add(ev.item_id);
        if (!this.speaking && !this.finalizing && ev.item_id && !this.text.has(ev.item_id)) this.text.set(ev.item_id, '');
        return [];
      case 'conversation.item.input_audio_transcription.delta': {
        if (!ev.item_id || typeof ev.delta !== 'string') return [];
        const t = (this.text.get(ev.item_id) ?? '') + ev.delta;
        this.text.set(ev.item_id, t);
        return t.trim() ? [{ type: 'interim', segment: this.segment(t.trim()) }] : [];
      }
      case 'conversation.item.input_audio_transcription.completed': {
        const id = ev.item_id ?? '';
        this.text.delete(id);
        const out: SttEvent[] = [];
        const t = (ev.transcript ?? '').trim();
        if (t) out.push({ type: 'final', segment: this.segment(t) });
        if (this.manual.delete(id)) {
          this.finalizing = false;
          out.push({ type: 'finalized' });
        }
        return out;
      }
      case 'error': {
        if (ev.error?.code === 'input_audio_buffer_commit_empty') {
          this.finalizing = false;
          return [{ type: 'finalized' }];
        }
        const why = String(ev.error?.message ?? ev.error?.code ?? 'error').slice(0, 300);
        return [{ type: 'error', error: new GatewayError(errorCode(ev.error?.type), `openai-realtime: ${why}`) }];
      }
      default:
        return [];
    }
  }

  flush(): SttEvent[] {
    const out: SttEvent[] = [];
    for (const t of this.text.values()) if (t.trim()) out.push({ type: 'final', segment: this.segment(t.trim()) });
    this.text.clear();
    return out;
  }

  /**
   * The session calls this right before sending `finalizeMessage` (and before closing): the
   * next commit is ours, so its transcription answers the finalize. No audio is held.
   */
  flushAudio(): null {
    this.finalizing = true;
    return null;
  }
}

export const openAiRealtimeStt: SttAdapter = {
  provider: 'openai',
  models: ['gpt-4o-transcribe', 'gpt-4o-mini-transcribe', 'whisper-1'],
  defaultModel: 'gpt-4o-transcribe',
  capabilities: {
    wordTimings: false,
    diarization: false,
    startOfSpeech: true,
    preflight: false,
    liveUpdate: false,
    finalize: true,
    sampleRates: [RATE],
  },
  validate,
  request(_opts: SttOptions, endpoint: ProviderEndpoint): UpstreamRequest {
    const headers: Record<string, string> = {};
    if (endpoint.apiKey) headers.Authorization = `Bearer ${endpoint.apiKey}`;
    return { url: `${endpoint.baseUrl.replace(/\/+$/, '')}/realtime?intent=transcription`, headers };
  },
  createCodec: (opts) => new OpenAiRealtimeCodec(opts),
};
