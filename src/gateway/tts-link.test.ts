import { describe, expect, it } from 'vitest';
import { countChars, splitText } from './tts-link.ts';
import { parseTtsModel } from './routing.ts';

describe('tts text helpers', () => {
  it('counts code points, not UTF-16 units', () => {
    expect(countChars('hello')).toBe(5);
    expect(countChars('héllo')).toBe(5);
    expect(countChars('hi 👋')).toBe(4);
    expect(countChars('')).toBe(0);
  });

  it('splits long text at spaces without losing characters', () => {
    const text = 'one two three four five six seven';
    const parts = splitText(text, 10);
    expect(parts.join('')).toBe(text);
    for (const p of parts) expect(p.length).toBeLessThanOrEqual(10);
    expect(splitText('short', 10)).toEqual(['short']);
    expect(splitText('abcdefghijkl', 5)).toEqual(['abcde', 'fghij', 'kl']);
  });
});

describe('tts model strings', () => {
  it('splits provider/model[:voice] on the last colon', () => {
    expect(parseTtsModel('cartesia/sonic-3:9626c31c')).toEqual({ provider: 'cartesia', model: 'sonic-3', voice: '9626c31c' });
    expect(parseTtsModel('cartesia/sonic:')).toEqual({ provider: 'cartesia', model: 'sonic', voice: undefined });
    expect(parseTtsModel('deepgram')).toEqual({ provider: 'deepgram', model: undefined, voice: undefined });
    expect(parseTtsModel('elevenlabs/eleven_flash_v2_5:Xb7hH8MSUJpSbSDYk0k2')).toEqual({
      provider: 'elevenlabs',
      model: 'eleven_flash_v2_5',
      voice: 'Xb7hH8MSUJpSbSDYk0k2',
    });
    expect(parseTtsModel(null)).toEqual({ provider: '', model: undefined, voice: undefined });
  });
});
