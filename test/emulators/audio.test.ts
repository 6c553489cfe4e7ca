import { describe, expect, it } from 'vitest';
import {
  SpeechDetector,
  VOCABULARY,
  alawToLinear,
  chunkBuffer,
  detectWords,
  mulawToLinear,
  scriptTimings,
  synthesize,
  wordFrequency,
  type DetectorEvent,
  type ScriptItem,
} from './audio.ts';

/** Small deterministic PRNG so failures reproduce. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function windowSec(rate: number): number {
  return Math.round(rate / 100) / rate;
}

const SCRIPT: ScriptItem[] = [
  { silenceMs: 250 },
  { words: ['hello', 'world', 'world', 'alpha', 'four'] },
  { silenceMs: 600 },
  { words: ['zulu', 'one'], wordMs: 180 },
  { silenceMs: 300 },
];

describe('vocabulary', () => {
  it('has 32 distinct words on distinct, well separated frequencies below 4 kHz', () => {
    expect(VOCABULARY).toHaveLength(32);
    expect(new Set(VOCABULARY).size).toBe(32);
    const f = VOCABULARY.map(wordFrequency);
    expect(f[0]).toBe(300);
    for (let i = 1; i < f.length; i++) expect(f[i]! - f[i - 1]!).toBe(60);
    expect(Math.max(...f)).toBeLessThan(4000 / 1.5);
    expect(() => wordFrequency('banana')).toThrow(/vocabulary/);
  });
});

describe('synthesize', () => {
  it('produces exactly the samples scriptTimings describes', () => {
    const t = scriptTimings(SCRIPT, { sampleRate: 16000 });
    const pcm = synthesize(SCRIPT, { sampleRate: 16000 });
    expect(pcm.length).toBe(t.totalSamples * 2);
    expect(t.duration).toBeCloseTo(0.25 + 1.5 + 0.6 + 0.36 + 0.3, 9);
    expect(t.words.map((w) => w.word)).toEqual(['hello', 'world', 'world', 'alpha', 'four', 'zulu', 'one']);
    expect(t.words[0]).toEqual({ word: 'hello', start: 0.25, end: 0.55 });
    expect(t.utterances.map((u) => u.text)).toEqual(['hello world world alpha four', 'zulu one']);
    // silence really is digital silence, tone really is loud
    expect(pcm.readInt16LE(100 * 2)).toBe(0);
    let peak = 0;
    for (let i = 4000; i < 8000; i++) peak = Math.max(peak, Math.abs(pcm.readInt16LE(i * 2)));
    expect(peak).toBeGreaterThan(9000);
    // words are contiguous: the samples around a word boundary are near zero (fade) but not a gap
    const boundary = Math.round(0.55 * 16000);
    expect(Math.abs(pcm.readInt16LE(boundary * 2))).toBeLessThan(200);
    expect(Math.abs(pcm.readInt16LE((boundary + 40) * 2))).toBeGreaterThan(0);
  });
});

describe('SpeechDetector round trip', () => {
  for (const rate of [8000, 16000, 24000, 48000, 11025, 44100]) {
    it(`recovers words and timings at ${rate} Hz within one analysis window`, () => {
      const pcm = synthesize(SCRIPT, { sampleRate: rate });
      const expected = scriptTimings(SCRIPT, { sampleRate: rate }).words;
      const got = detectWords(pcm, { sampleRate: rate });
      expect(got.map((w) => w.word)).toEqual(expected.map((w) => w.word));
      const tol = windowSec(rate) + 1e-6;
      got.forEach((w, i) => {
        expect(Math.abs(w.start - expected[i]!.start)).toBeLessThanOrEqual(tol);
        expect(Math.abs(w.end - expected[i]!.end)).toBeLessThanOrEqual(tol);
      });
    });
  }

  it('handles random scripts (random word lengths, offsets, rates)', () => {
    const rnd = prng(7);
    for (let trial = 0; trial < 40; trial++) {
      const rate = [8000, 16000, 24000, 48000][trial % 4]!;
      const script: ScriptItem[] = [];
      for (let u = 0; u < 3; u++) {
        script.push({ silenceMs: 20 + rnd() * 300 });
        const words = Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => VOCABULARY[Math.floor(rnd() * 32)]!);
        script.push({ words, wordMs: 120 + rnd() * 300 });
      }
      script.push({ silenceMs: 40 });
      const expected = scriptTimings(script, { sampleRate: rate }).words;
      const got = detectWords(synthesize(script, { sampleRate: rate }), { sampleRate: rate });
      expect(got.map((w) => w.word)).toEqual(expected.map((w) => w.word));
      const tol = windowSec(rate) + 1e-6;
      got.forEach((w, i) => {
        expect(Math.abs(w.start - expected[i]!.start)).toBeLessThanOrEqual(tol);
        expect(Math.abs(w.end - expected[i]!.end)).toBeLessThanOrEqual(tol);
      });
    }
  });

  it('ignores words shorter than 100 ms but still reports them as voiced', () => {
    const script: ScriptItem[] = [{ silenceMs: 100 }, { words: ['echo'], wordMs: 60 }, { silenceMs: 200 }, { words: ['kilo'] }, { silenceMs: 50 }];
    const d = new SpeechDetector({ sampleRate: 16000 });
    const events = [...d.push(synthesize(script, { sampleRate: 16000 })), ...d.end()];
    expect(events.filter((e) => e.type === 'word').map((e) => (e as { word: string }).word)).toEqual(['kilo']);
    expect(events.filter((e) => e.type === 'speech-start')).toHaveLength(2);
    expect(events.filter((e) => e.type === 'speech-end')).toHaveLength(2);
  });

  it('reports speech-start/speech-end at utterance edges and a window event every 10 ms', () => {
    const rate = 16000;
    const d = new SpeechDetector({ sampleRate: rate });
    const events = [...d.push(synthesize(SCRIPT, { sampleRate: rate })), ...d.end()];
    const starts = events.filter((e) => e.type === 'speech-start').map((e) => (e as { time: number }).time);
    const ends = events.filter((e) => e.type === 'speech-end').map((e) => (e as { time: number }).time);
    const utts = scriptTimings(SCRIPT, { sampleRate: rate }).utterances;
    expect(starts).toHaveLength(2);
    expect(ends).toHaveLength(2);
    utts.forEach((u, i) => {
      expect(Math.abs(starts[i]! - u.start)).toBeLessThanOrEqual(0.01 + 1e-6);
      expect(Math.abs(ends[i]! - u.end)).toBeLessThanOrEqual(0.01 + 1e-6);
    });
    const windows = events.filter((e) => e.type === 'window');
    expect(windows).toHaveLength(Math.round(scriptTimings(SCRIPT, { sampleRate: rate }).duration * 100));
    expect(d.processedSeconds).toBeCloseTo(3.01, 6);
  });

  it('gives identical events for any chunking, including odd byte splits', () => {
    const rnd = prng(42);
    for (const rate of [8000, 16000, 24000, 48000]) {
      const pcm = synthesize(SCRIPT, { sampleRate: rate });
      const ref = new SpeechDetector({ sampleRate: rate });
      const expected = [...ref.push(pcm), ...ref.end()];
      for (let trial = 0; trial < 5; trial++) {
        const sizes = Array.from({ length: 50 }, () => 1 + Math.floor(rnd() * 2000));
        const d = new SpeechDetector({ sampleRate: rate });
        const got: DetectorEvent[] = [];
        for (const c of chunkBuffer(pcm, sizes)) got.push(...d.push(c));
        got.push(...d.end());
        expect(got).toEqual(expected);
      }
      // one byte at a time
      const d = new SpeechDetector({ sampleRate: rate });
      const got: DetectorEvent[] = [];
      for (let i = 0; i < pcm.length; i++) got.push(...d.push(pcm.subarray(i, i + 1)));
      got.push(...d.end());
      expect(got).toEqual(expected);
    }
  });

  it('pushSamples is equivalent to pushing s16le bytes', () => {
    const pcm = synthesize(SCRIPT, { sampleRate: 8000 });
    const a = new SpeechDetector({ sampleRate: 8000 });
    const b = new SpeechDetector({ sampleRate: 8000 });
    const samples = new Int16Array(pcm.buffer.slice(pcm.byteOffset, pcm.byteOffset + pcm.length));
    expect(b.pushSamples(samples)).toEqual(a.push(pcm));
  });

  it('flush() closes the word in progress; the tone that follows becomes a new word', () => {
    const rate = 16000;
    const pcm = synthesize([{ words: ['mike'], wordMs: 600 }, { silenceMs: 50 }], { sampleRate: rate });
    const d = new SpeechDetector({ sampleRate: rate });
    const first = d.push(pcm.subarray(0, Math.round(0.3 * rate) * 2));
    expect(first.some((e) => e.type === 'word')).toBe(false);
    const flushed = d.flush();
    expect(flushed).toEqual([{ type: 'word', word: 'mike', start: 0, end: 0.3 }]);
    const rest = [...d.push(pcm.subarray(Math.round(0.3 * rate) * 2)), ...d.end()];
    const words = rest.filter((e) => e.type === 'word');
    expect(words).toEqual([{ type: 'word', word: 'mike', start: 0.3, end: 0.6 }]);
    expect(rest.some((e) => e.type === 'speech-start')).toBe(false);
  });

  it('rejects sample rates outside 8000..48000', () => {
    expect(() => new SpeechDetector({ sampleRate: 4000 })).toThrow();
    expect(() => new SpeechDetector({ sampleRate: 96000 })).toThrow();
  });
});

describe('G.711', () => {
  it('decodes mu-law and A-law reference values', () => {
    expect(mulawToLinear(0xff)).toBe(0);
    expect(mulawToLinear(0x7f)).toBe(0);
    expect(mulawToLinear(0x80)).toBe(32124);
    expect(mulawToLinear(0x00)).toBe(-32124);
    expect(alawToLinear(0xd5)).toBe(8);
    expect(alawToLinear(0x55)).toBe(-8);
    expect(alawToLinear(0xaa)).toBe(32256);
    expect(alawToLinear(0x2a)).toBe(-32256);
  });
});
