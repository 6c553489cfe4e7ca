/**
 * OpenAI text to speech: POST {base}/audio/speech (base includes /v1)
 * API reference: https://platform.openai.com/docs/api-reference/audio/createSpeech
 * (formats: https://platform.openai.com/docs/guides/text-to-speech).
 * Notes: shared/providers.md sections 6.2 (body) and 9 (timing).
 *
 * One streaming request per chunk of text (at most 4096 characters). `response_format: "pcm"`
 * is raw 24 kHz s16le mono without a header, so the body is forwarded as it arrives.
 */
import { GatewayError } from '../../protocol/errors.ts';
import { validateOptions, type OptionSpec } from '../options.ts';
import type { HttpRequestSpec, ProviderEndpoint, TtsHttpAdapter, TtsOptions } from '../types.ts';

const MODELS = ['gpt-4o-mini-tts', 'gpt-4o-mini-tts-2025-12-15', 'tts-1', 'tts-1-hd'] as const;

export const OPENAI_VOICES = [
  'alloy',
  'ash',
  'ballad',
  'coral',
  'echo',
  'fable',
  'onyx',
  'nova',
  'sage',
  'shimmer',
  'verse',
  'marin',
  'cedar',
] as const;

/** A custom voice id, sent as `{"id": ...}`. */
const CUSTOM_VOICE = /^voice_[A-Za-z0-9_-]{1,100}$/;

const OPTIONS: Record<string, OptionSpec> = {
  speed: { kind: 'number', min: 0.25, max: 4 },
  instructions: { kind: 'string', maxLength: 4096 },
};

const REFUSED: Record<string, string> = {
  model: 'set the model in the model string',
  voice: 'set the voice in the model string or the voice field',
  input: 'send text with input_transcript',
  response_format: 'the gateway always asks for raw pcm',
  stream_format: 'the gateway streams raw audio',
};

function bad(message: string): GatewayError {
  return new GatewayError('bad_request', `openai: ${message}`);
}

function isTts1(model: string): boolean {
  return model === 'tts-1' || model.startsWith('tts-1-');
}

function validate(opts: TtsOptions): TtsOptions {
  if (!(OPENAI_VOICES as readonly string[]).includes(opts.voice) && !CUSTOM_VOICE.test(opts.voice)) {
    throw bad(`voice must be one of ${OPENAI_VOICES.join(', ')} or a custom voice id (voice_...), got "${opts.voice.slice(0, 60)}"`);
  }
  const extra = validateOptions('openai', opts.extra, OPTIONS, REFUSED);
  if (extra.instructions !== undefined && isTts1(opts.model)) {
    throw bad(`option "instructions" does not work with ${opts.model}; use gpt-4o-mini-tts`);
  }
  return { ...opts, extra };
}

export const openAiTts: TtsHttpAdapter = {
  kind: 'http',
  provider: 'openai',
  models: MODELS,
  defaultModel: 'gpt-4o-mini-tts',
  defaultVoice: 'alloy',
  capabilities: {
    alignment: null,
    sampleRates: [24000],
  },
  maxChars: 4096,
  validate,
  request(opts: TtsOptions, text: string, endpoint: ProviderEndpoint): HttpRequestSpec {
    const body: Record<string, unknown> = {
      model: opts.model,
      input: text,
      voice: opts.voice.startsWith('voice_') ? { id: opts.voice } : opts.voice,
      response_format: 'pcm',
    };
    if (opts.extra.speed !== undefined) body.speed = opts.extra.speed;
    if (opts.extra.instructions !== undefined) body.instructions = opts.extra.instructions;
    return {
      url: `${endpoint.baseUrl.replace(/\/+$/, '')}/audio/speech`,
      headers: { Authorization: `Bearer ${endpoint.apiKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    };
  },
};
