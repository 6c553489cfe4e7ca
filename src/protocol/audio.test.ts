import { describe, expect, it } from 'vitest';
import { bytesToSeconds, decodeBase64Strict, parseSampleRate, secondsToBytes } from './audio.ts';

describe('audio math', () => {
  it('converts bytes and seconds for s16le mono', () => {
    expect(bytesToSeconds(32000, 16000)).toBe(1);
    expect(bytesToSeconds(1600, 16000)).toBe(0.05);
    expect(secondsToBytes(0.05, 48000)).toBe(4800);
    expect(secondsToBytes(0.00003, 16000) % 2).toBe(0);
  });

  it('parses sample rates as the protocol sends them', () => {
    expect(parseSampleRate('16000')).toBe(16000);
    expect(parseSampleRate(24000)).toBe(24000);
    expect(parseSampleRate('7999')).toBeNull();
    expect(parseSampleRate('48001')).toBeNull();
    expect(parseSampleRate('16k')).toBeNull();
    expect(parseSampleRate(16000.5)).toBeNull();
    expect(parseSampleRate(undefined)).toBeNull();
  });

  it('decodes valid base64 and refuses what Node would silently accept', () => {
    const pcm = Buffer.from([1, 2, 3, 4, 5]);
    expect(decodeBase64Strict(pcm.toString('base64'))).toEqual(pcm);
    expect(decodeBase64Strict('')).toEqual(Buffer.alloc(0));
    expect(decodeBase64Strict('@@@@')).toBeNull();
    expect(decodeBase64Strict('AAA')).toBeNull();
    expect(decodeBase64Strict('not base64!!')).toBeNull();
    expect(decodeBase64Strict('AA"A')).toBeNull();
  });
});
