import { describe, expect, it } from 'vitest';
import { STT_ADAPTERS, TTS_ADAPTERS } from '../registry.ts';
import { parseJsonObject } from './json.ts';

const b = (s: string): Buffer => Buffer.from(s);

describe('parseJsonObject', () => {
  it('returns objects and nothing else', () => {
    expect(parseJsonObject(b('{"type":"x"}'), false)).toEqual({ type: 'x' });
    for (const s of ['null', '3', '"s"', '[1]', 'not json', '']) expect(parseJsonObject(b(s), false)).toBeNull();
    expect(parseJsonObject(b('{"type":"x"}'), true)).toBeNull();
  });

  it('no decoder throws on JSON that is not an object', () => {
    for (const a of STT_ADAPTERS) {
      const model = a.defaultModel ?? (a.models[0] as string);
      const codec = a.createCodec(a.validate({ model, language: 'en', sampleRate: a.capabilities.sampleRates?.[0] ?? 16000, extra: {} }));
      for (const s of ['null', '42', '[]', '"x"']) expect(() => codec.decode(b(s), false)).not.toThrow();
    }
    for (const a of TTS_ADAPTERS) {
      if (a.kind !== 'ws') continue;
      const opts = a.validate({ model: a.defaultModel, voice: a.defaultVoice, language: 'en', sampleRate: a.capabilities.sampleRates[0] as number, extra: {} });
      const codec = a.createCodec(opts);
      for (const s of ['null', '42', '[]', '"x"']) expect(() => codec.decode(b(s), false)).not.toThrow();
    }
  });
});
