import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { TtsOptions } from '../types.ts';
import { OPENAI_VOICES, openAiTts } from './openai.ts';

const opts = (over: Partial<TtsOptions> = {}): TtsOptions => ({
  model: 'gpt-4o-mini-tts',
  voice: 'alloy',
  language: 'en',
  sampleRate: 24000,
  extra: {},
  ...over,
});
const endpoint = { apiKey: 'sk-secret-key', baseUrl: 'https://api.openai.com/v1/', connectTimeoutMs: 1000 };

function rejects(o: TtsOptions): GatewayError {
  try {
    openAiTts.validate(o);
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('bad_request');
    return err as GatewayError;
  }
  throw new Error('expected validate to throw');
}

describe('openai tts validate', () => {
  it('accepts every built-in voice, custom voice ids and the documented options', () => {
    for (const voice of OPENAI_VOICES) expect(() => openAiTts.validate(opts({ voice }))).not.toThrow();
    expect(() => openAiTts.validate(opts({ voice: 'voice_6870c5f1a2b48191' }))).not.toThrow();
    const v = openAiTts.validate(opts({ extra: { speed: 4, instructions: 'Speak warmly.' } }));
    expect(v.extra).toEqual({ speed: 4, instructions: 'Speak warmly.' });
    expect(openAiTts.validate(opts({ model: 'tts-1', extra: { speed: 0.25 } })).extra).toEqual({ speed: 0.25 });
  });

  it('rejects unknown voices and options, out-of-range speed, gateway-owned fields', () => {
    expect(rejects(opts({ voice: 'bob' })).message).toMatch(/voice must be one of alloy, ash/);
    expect(rejects(opts({ extra: { temperature: 1 } })).message).toMatch(/unknown option "temperature"; accepted: speed, instructions/);
    expect(rejects(opts({ extra: { speed: 4.5 } })).message).toMatch(/option "speed" must be a number from 0.25 to 4/);
    expect(rejects(opts({ extra: { speed: 0.1 } })).message).toMatch(/option "speed"/);
    expect(rejects(opts({ extra: { instructions: 'x'.repeat(4097) } })).message).toMatch(/option "instructions" must be a string of at most 4096/);
    expect(rejects(opts({ extra: { response_format: 'mp3' } })).message).toMatch(/option "response_format" is not accepted/);
    expect(rejects(opts({ extra: { stream_format: 'sse' } })).message).toMatch(/option "stream_format" is not accepted/);
  });

  it('refuses instructions for tts-1 models', () => {
    expect(rejects(opts({ model: 'tts-1', extra: { instructions: 'x' } })).message).toMatch(/"instructions" does not work with tts-1/);
    expect(rejects(opts({ model: 'tts-1-hd', extra: { instructions: 'x' } })).message).toMatch(/tts-1-hd/);
  });
});

describe('openai tts request', () => {
  it('POSTs pcm to {base}/audio/speech with the key only in the auth header', () => {
    const o = openAiTts.validate(opts({ voice: 'coral', extra: { speed: 1.25, instructions: 'Cheerful.' } }));
    const req = openAiTts.request(o, 'Hello there! ', endpoint);
    expect(req.url).toBe('https://api.openai.com/v1/audio/speech');
    expect(req.headers).toEqual({ Authorization: 'Bearer sk-secret-key', 'Content-Type': 'application/json' });
    expect(req.body).toBe(
      '{"model":"gpt-4o-mini-tts","input":"Hello there! ","voice":"coral","response_format":"pcm","speed":1.25,"instructions":"Cheerful."}',
    );
    expect(req.url + req.body).not.toContain('sk-secret-key');
  });

  it('sends a custom voice as an object and omits options that were not given', () => {
    const o = openAiTts.validate(opts({ model: 'tts-1-hd', voice: 'voice_abc123' }));
    expect(JSON.parse(openAiTts.request(o, 'Hi', endpoint).body)).toEqual({
      model: 'tts-1-hd',
      input: 'Hi',
      voice: { id: 'voice_abc123' },
      response_format: 'pcm',
    });
  });

  it('declares 24 kHz pcm, 4096 characters per request, no alignment', () => {
    expect(openAiTts.kind).toBe('http');
    expect(openAiTts.maxChars).toBe(4096);
    expect(openAiTts.capabilities).toEqual({ alignment: null, sampleRates: [24000] });
    expect(openAiTts.models).toEqual(expect.arrayContaining(['tts-1', 'tts-1-hd', 'gpt-4o-mini-tts', 'gpt-4o-mini-tts-2025-12-15']));
    expect(openAiTts.models).toContain(openAiTts.defaultModel);
    expect(() => openAiTts.validate(opts({ voice: openAiTts.defaultVoice }))).not.toThrow();
  });
});
