import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { TtsOptions } from '../types.ts';
import { auraModelId, decodeDeepgramSpeak, deepgramTts, speakPieces } from './deepgram.ts';

function fixture(name: string): Buffer[] {
  return readFileSync(new URL(`../../../test/fixtures/tts/${name}`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => Buffer.from(l));
}

const opts = (over: Partial<TtsOptions> = {}): TtsOptions => ({
  model: 'aura-2',
  voice: 'thalia',
  language: 'en',
  sampleRate: 24000,
  extra: {},
  ...over,
});
const endpoint = { apiKey: 'dg-secret-key', baseUrl: 'https://api.deepgram.com/', connectTimeoutMs: 1000 };

function rejects(o: TtsOptions): GatewayError {
  try {
    deepgramTts.validate(o);
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('bad_request');
    return err as GatewayError;
  }
  throw new Error('expected validate to throw');
}

describe('deepgram tts model id', () => {
  it('builds aura-2-<voice>-<lang> from the voice and the language', () => {
    expect(auraModelId('aura-2', 'thalia', 'en')).toBe('aura-2-thalia-en');
    expect(auraModelId('aura-2', 'celeste', 'es')).toBe('aura-2-celeste-es');
    expect(auraModelId('aura-2', 'Thalia', 'en-US')).toBe('aura-2-thalia-en');
    expect(auraModelId('aura-2', 'thalia', undefined)).toBe('aura-2-thalia-en');
    for (const lang of ['en', 'es', 'de', 'nl', 'fr', 'it', 'ja']) expect(auraModelId('aura-2', 'x', lang)).toBe(`aura-2-x-${lang}`);
  });

  it('builds aura-<voice>-en for Aura v1 and keeps full model ids', () => {
    expect(auraModelId('aura', 'asteria', 'en')).toBe('aura-asteria-en');
    expect(auraModelId('aura-2', 'aura-2-thalia-en', 'en')).toBe('aura-2-thalia-en');
    // A full id carries its own language: the client's default `en` does not fight it.
    expect(auraModelId('aura-2', 'aura-2-celeste-es', 'en')).toBe('aura-2-celeste-es');
    expect(auraModelId('aura', 'aura-asteria-en', undefined)).toBe('aura-asteria-en');
  });

  it('rejects languages, families and voices that cannot map', () => {
    expect(rejects(opts({ language: 'pt' })).message).toMatch(/language "pt" is not available for aura-2; supported: en, es/);
    expect(rejects(opts({ model: 'aura', voice: 'asteria', language: 'de' })).message).toMatch(/aura is English only/);
    expect(rejects(opts({ model: 'aura', voice: 'aura-2-thalia-en' })).message).toMatch(/aura-2 model id but the model is aura/);
    expect(rejects(opts({ voice: 'aura-asteria-en' })).message).toMatch(/aura model id but the model is aura-2/);
    expect(rejects(opts({ voice: 'aura-2-thalia-pt' })).message).toMatch(/unsupported language/);
    expect(rejects(opts({ voice: 'thalia&model=x' })).message).toMatch(/voice must be an Aura voice name/);
    expect(rejects(opts({ model: 'nova-3' })).message).toMatch(/unknown model "nova-3"/);
  });
});

describe('deepgram tts validate', () => {
  it('accepts the documented options', () => {
    const v = deepgramTts.validate(opts({ extra: { mip_opt_out: true, speed: 1.2, ignored: null } }));
    expect(v.extra).toEqual({ mip_opt_out: true, speed: 1.2 });
  });

  it('rejects unknown, out-of-range and gateway-owned options, naming them', () => {
    expect(rejects(opts({ extra: { pitch: 1 } })).message).toMatch(/unknown option "pitch"; accepted: mip_opt_out, speed/);
    expect(rejects(opts({ extra: { speed: 2 } })).message).toMatch(/option "speed" must be a number from 0.7 to 1.5/);
    expect(rejects(opts({ extra: { mip_opt_out: 'yes' } })).message).toMatch(/option "mip_opt_out" must be a boolean/);
    expect(rejects(opts({ extra: { encoding: 'mulaw' } })).message).toMatch(/option "encoding" is not accepted/);
    expect(rejects(opts({ extra: { callback: 'https://x' } })).message).toMatch(/option "callback" is not accepted/);
  });
});

describe('deepgram tts request', () => {
  it('puts model id, encoding, rate and options in the URL and the key only in the header', () => {
    const o = deepgramTts.validate(opts({ sampleRate: 16000, extra: { mip_opt_out: true, speed: 0.9 } }));
    const req = deepgramTts.request(o, endpoint);
    expect(req.url).toBe('https://api.deepgram.com/v1/speak?model=aura-2-thalia-en&encoding=linear16&sample_rate=16000&mip_opt_out=true&speed=0.9');
    expect(req.headers).toEqual({ Authorization: 'Token dg-secret-key' });
    expect(req.errorHeader).toBe('dg-error');
    expect(deepgramTts.connectionKey(o)).not.toContain('dg-secret-key');
  });

  it('groups generations by model id, rate and options', () => {
    const key = (o: Partial<TtsOptions>) => deepgramTts.connectionKey(deepgramTts.validate(opts(o)));
    expect(key({})).toBe(key({ language: 'en-US' }));
    expect(key({})).not.toBe(key({ voice: 'athena' }));
    expect(key({})).not.toBe(key({ sampleRate: 48000 }));
    expect(key({})).not.toBe(key({ extra: { speed: 1.1 } }));
    expect(key({})).not.toBe(key({ language: 'es' }));
  });

  it('declares many generations per socket, no alignment, the documented rates', () => {
    expect(deepgramTts.reuse).toBe('many');
    expect(deepgramTts.capabilities).toEqual({ alignment: null, sampleRates: [8000, 16000, 24000, 32000, 48000] });
    expect(deepgramTts.models).toContain(deepgramTts.defaultModel);
    expect(() => deepgramTts.validate(opts({ model: deepgramTts.defaultModel, voice: deepgramTts.defaultVoice }))).not.toThrow();
  });
});

describe('deepgram tts codec', () => {
  const codec = deepgramTts.createCodec(opts());

  it('sends Speak per chunk and Flush at the end, nothing on open, no keepalive', () => {
    expect(codec.openMessages).toEqual([]);
    expect(codec.keepAlive).toBeNull();
    expect(codec.text('g1', 'Hello "there"! ', opts())).toEqual(['{"type":"Speak","text":"Hello \\"there\\"! "}']);
    expect(codec.text('g1', '', opts())).toEqual([]);
    expect(codec.end('g1', opts())).toEqual(['{"type":"Flush"}']);
  });

  it('splits very long chunks into several Speak messages at whitespace', () => {
    const long = `${'word '.repeat(500)}end. `;
    const frames = codec.text('g1', long, opts());
    expect(frames.length).toBe(2);
    const texts = frames.map((f) => (JSON.parse(f) as { text: string }).text);
    expect(texts.join('')).toBe(long);
    expect(texts.every((t) => t.length <= 2000)).toBe(true);
    expect(texts[0]?.endsWith(' ')).toBe(true);
    expect(speakPieces('a'.repeat(4500), 2000).map((p) => p.length)).toEqual([2000, 2000, 500]);
    // a surrogate pair at the cut stays whole
    expect(speakPieces(`${'a'.repeat(1999)}😀b`, 2000)).toEqual(['a'.repeat(1999), '😀b']);
  });

  it('decodes binary frames as audio and Flushed as done; ignores Metadata, Warning, Cleared', () => {
    const pcm = Buffer.from([1, 2, 3, 4]);
    expect(codec.decode(pcm, true)).toEqual([{ type: 'audio', gen: null, pcm }]);
    expect(codec.decode(Buffer.alloc(0), true)).toEqual([]);
    const events = fixture('deepgram-speak.jsonl').flatMap((m) => decodeDeepgramSpeak(m, false));
    expect(events).toEqual([{ type: 'done', gen: null }]);
  });

  it('reports an unparseable text frame as a provider error', () => {
    const [ev] = codec.decode(Buffer.from('not json{'), false);
    expect(ev).toMatchObject({ type: 'error', gen: null });
    expect((ev as { error: GatewayError }).error.code).toBe('provider_error');
  });
});
