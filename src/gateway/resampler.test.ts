import { describe, expect, it } from 'vitest';
import { PcmResampler } from './resampler.ts';

const AMP = 16384; // -6 dBFS

function sine(rate: number, freq: number, seconds: number, amp = AMP): Buffer {
  const n = Math.round(rate * seconds);
  const b = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) b.writeInt16LE(Math.round(amp * Math.sin((2 * Math.PI * freq * i) / rate)), i * 2);
  return b;
}

function samples(b: Buffer): Int16Array {
  const s = new Int16Array(b.length >> 1);
  for (let i = 0; i < s.length; i++) s[i] = b.readInt16LE(i * 2);
  return s;
}

/** Where two sample arrays first differ (-1 if equal), and their largest difference. */
function diff(a: Int16Array, b: Int16Array): { length: [number, number]; first: number; maxAbs: number } {
  let first = -1;
  let maxAbs = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (d > 0 && first < 0) first = i;
    maxAbs = Math.max(maxAbs, d);
  }
  return { length: [a.length, b.length], first, maxAbs };
}

function expectSame(a: Int16Array, b: Int16Array): void {
  // Bit-identical, not just within 1 LSB.
  expect(diff(a, b)).toEqual({ length: [b.length, b.length], first: -1, maxAbs: 0 });
}

function resampleAll(inRate: number, outRate: number, pcm: Buffer): Int16Array {
  const r = new PcmResampler(inRate, outRate);
  return samples(Buffer.concat([r.push(pcm), r.flush()]));
}

/** Frequency from rising zero crossings (linearly interpolated) over [from, to). */
function zeroCrossingHz(s: Int16Array, rate: number, from: number, to: number): number {
  let first = -1;
  let last = -1;
  let count = 0;
  for (let i = from + 1; i < to; i++) {
    const a = s[i - 1]!;
    const b = s[i]!;
    if (a < 0 && b >= 0) {
      const t = i - 1 + -a / (b - a);
      if (first < 0) first = t;
      last = t;
      count++;
    }
  }
  return ((count - 1) * rate) / (last - first);
}

/** Over exactly one second [from, from + rate): power in dB relative to the ideal sine, and SNR against it. */
function compareToIdeal(s: Int16Array, rate: number, freq: number, from: number): { gainDb: number; snrDb: number } {
  let ideal = 0;
  let err = 0;
  let power = 0;
  for (let i = from; i < from + rate; i++) {
    const want = AMP * Math.sin((2 * Math.PI * freq * i) / rate);
    const got = s[i]!;
    ideal += want * want;
    power += got * got;
    err += (got - want) ** 2;
  }
  return { gainDb: 10 * Math.log10(power / ideal), snrDb: 10 * Math.log10(ideal / err) };
}

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomChunks(buf: Buffer, seed: number, maxBytes: number): Buffer[] {
  const next = rng(seed);
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; ) {
    const n = 1 + Math.floor(next() * maxBytes);
    out.push(buf.subarray(i, i + n));
    i += n;
  }
  return out;
}

const PAIRS: Array<[number, number]> = [
  [24000, 16000],
  [22050, 16000],
  [16000, 48000],
  [44100, 8000],
  [48000, 24000],
  [16000, 16000],
  [44100, 47999], // L = 47999 phases: the interpolated table
];

describe('PcmResampler: a sine keeps its frequency, amplitude and timing', () => {
  for (const [inRate, outRate] of PAIRS) {
    for (const freq of [440, 1000, 3000]) {
      it(`${freq} Hz, ${inRate} -> ${outRate}`, () => {
        const out = resampleAll(inRate, outRate, sine(inRate, freq, 1.5));
        expect(out.length).toBe(Math.ceil((1.5 * inRate * outRate) / inRate));
        const from = Math.floor(outRate * 0.2); // past the start transient
        const hz = zeroCrossingHz(out, outRate, from, from + outRate);
        expect(Math.abs(hz - freq) / freq).toBeLessThan(0.01);
        const { gainDb, snrDb } = compareToIdeal(out, outRate, freq, from);
        expect(Math.abs(gainDb)).toBeLessThan(0.5);
        // Against the ideal sine at the output rate: no time shift, no images, no aliases, no
        // phase jitter (measured 83-97 dB; 16-bit quantization of a -6 dBFS sine is ~92 dB).
        expect(snrDb).toBeGreaterThan(75);
      });
    }
  }
});

describe('PcmResampler: anti-aliasing', () => {
  const cases: Array<[number, number, number]> = [
    [24000, 8000, 7000],
    [44100, 8000, 5000],
    [24000, 16000, 10000],
    [48000, 24000, 13000],
  ];
  for (const [inRate, outRate, freq] of cases) {
    it(`a ${freq} Hz tone (above ${outRate / 2} Hz) is attenuated by > 30 dB, ${inRate} -> ${outRate}`, () => {
      const out = resampleAll(inRate, outRate, sine(inRate, freq, 1));
      let power = 0;
      for (let i = 100; i < out.length - 100; i++) power += out[i]! ** 2;
      const rms = Math.sqrt(power / (out.length - 200));
      const db = 20 * Math.log10(Math.max(rms, 1e-9) / (AMP / Math.SQRT2));
      expect(db).toBeLessThan(-30);
    });
  }
});

describe('PcmResampler: streaming', () => {
  for (const [inRate, outRate] of [...PAIRS, [8000, 44100] as [number, number]]) {
    it(`random chunking with odd byte splits equals one push, ${inRate} -> ${outRate}`, () => {
      const pcm = sine(inRate, 523, 0.7);
      const whole = resampleAll(inRate, outRate, pcm);
      const r = new PcmResampler(inRate, outRate);
      const parts = randomChunks(pcm, inRate + outRate, 1500).map((c) => r.push(c));
      parts.push(r.flush());
      const chunked = Buffer.concat(parts);
      expect(chunked.length % 2).toBe(0);
      expectSame(samples(chunked), whole);
    });
  }

  it('single-byte pushes equal one push', () => {
    const pcm = sine(22050, 1000, 0.1);
    const r = new PcmResampler(22050, 16000);
    const parts: Buffer[] = [];
    for (let i = 0; i < pcm.length; i++) parts.push(r.push(pcm.subarray(i, i + 1)));
    parts.push(r.flush());
    expectSame(samples(Buffer.concat(parts)), resampleAll(22050, 16000, pcm));
  });

  for (const [inRate, outRate] of [
    [24000, 16000],
    [22050, 16000],
    [16000, 48000],
  ] as Array<[number, number]>) {
    it(`no clicks at chunk boundaries: a 200 Hz sine at 0.9 FS, ${inRate} -> ${outRate}`, () => {
      const amp = 0.9 * 32767;
      const pcm = sine(inRate, 200, 2, amp);
      const r = new PcmResampler(inRate, outRate);
      const parts: Buffer[] = [];
      const boundaries: number[] = [];
      let outLen = 0;
      // ~20 ms provider chunks of odd byte lengths.
      for (const c of randomChunks(pcm, 7, Math.round(inRate * 0.04) | 1)) {
        const o = r.push(c);
        parts.push(o);
        outLen += o.length >> 1;
        boundaries.push(outLen);
      }
      parts.push(r.flush());
      const out = samples(Buffer.concat(parts));
      // The largest step of the ideal sine between two output samples, plus rounding.
      const bound = amp * 2 * Math.sin((Math.PI * 200) / outRate) + 2;
      let maxJump = 0;
      for (const b of boundaries) {
        if (b < 1 || b >= out.length - outRate * 0.01) continue; // skip the hard stop at the very end
        maxJump = Math.max(maxJump, Math.abs(out[b]! - out[b - 1]!));
      }
      expect(boundaries.length).toBeGreaterThan(50);
      expect(maxJump).toBeGreaterThan(0);
      expect(maxJump).toBeLessThanOrEqual(bound);
      let maxAny = 0;
      for (let i = Math.floor(outRate * 0.01); i < out.length - outRate * 0.01; i++) {
        maxAny = Math.max(maxAny, Math.abs(out[i]! - out[i - 1]!));
      }
      expect(maxAny).toBeLessThanOrEqual(bound);
    });
  }
});

describe('PcmResampler: output length', () => {
  for (const [inRate, outRate] of PAIRS) {
    it(`push + flush gives ceil(N * out / in) samples, ${inRate} -> ${outRate}`, () => {
      for (const n of [0, 1, 2, 3, 7, 441, 1000, 24001]) {
        const r = new PcmResampler(inRate, outRate);
        const got = (r.push(Buffer.alloc(n * 2, 1)).length + r.flush().length) / 2;
        expect(got).toBe(Math.ceil((n * outRate) / inRate));
        expect(Math.abs(got - Math.round((n * outRate) / inRate))).toBeLessThanOrEqual(1);
      }
    });
  }

  it('no drift over 5 minutes of 22050 -> 16000 in odd-sized chunks', () => {
    const chunk = sine(22050, 300, 1).subarray(0, 1001); // 500.5 samples
    const r = new PcmResampler(22050, 16000);
    let bytesIn = 0;
    let bytesOut = 0;
    const totalBytes = 300 * 22050 * 2;
    while (bytesIn + chunk.length <= totalBytes) {
      bytesOut += r.push(chunk).length;
      bytesIn += chunk.length;
    }
    bytesOut += r.push(Buffer.alloc(totalBytes - bytesIn)).length + r.flush().length;
    expect(bytesOut / 2).toBe(300 * 16000);
  });
});

describe('PcmResampler: edge cases', () => {
  it('clamps at full scale without wraparound', () => {
    // A full-scale 100 Hz square wave: the filter's overshoot (Gibbs) must clip, not wrap.
    const rate = 24000;
    const pcm = Buffer.alloc(rate * 2);
    for (let i = 0; i < rate; i++) pcm.writeInt16LE(Math.floor((i * 200) / rate) % 2 === 0 ? 32767 : -32768, i * 2);
    const out = resampleAll(rate, 16000, pcm);
    expect(Math.max(...out)).toBe(32767);
    expect(Math.min(...out)).toBe(-32768);
    for (let i = 0; i < out.length; i++) {
      const t = (i / 16000) * 200; // half-periods
      const edge = Math.abs(t - Math.round(t)) * 5; // ms from the nearest edge (half-period = 5 ms)
      if (edge < 0.5 || i > out.length - 16) continue;
      expect(Math.sign(out[i]!)).toBe(Math.floor(t) % 2 === 0 ? 1 : -1);
    }
  });

  it('flush resets, and reset() mid-stream (with a dangling byte) starts a new stream', () => {
    const a = sine(24000, 440, 0.3);
    const b = sine(24000, 1000, 0.3);
    const fresh = resampleAll(24000, 16000, b);
    const r = new PcmResampler(24000, 16000);
    r.push(a);
    r.flush();
    expectSame(samples(Buffer.concat([r.push(b), r.flush()])), fresh);
    r.push(a.subarray(0, 1001));
    r.reset();
    expectSame(samples(Buffer.concat([r.push(b), r.flush()])), fresh);
  });

  it('accepts a plain Uint8Array and returns empty output for empty input', () => {
    const pcm = sine(24000, 440, 0.1);
    const r = new PcmResampler(24000, 16000);
    expect(r.push(new Uint8Array(0)).length).toBe(0);
    const out = Buffer.concat([r.push(new Uint8Array(pcm)), r.flush()]);
    expectSame(samples(out), resampleAll(24000, 16000, pcm));
  });

  it('equal rates: zero-copy pass-through that keeps samples whole', () => {
    const r = new PcmResampler(16000, 16000);
    expect(r.passthrough).toBe(true);
    expect(new PcmResampler(24000, 16000).passthrough).toBe(false);
    const pcm = sine(16000, 440, 0.1);
    const out = r.push(pcm);
    expect(out.buffer).toBe(pcm.buffer);
    expect(out.byteOffset).toBe(pcm.byteOffset);
    expect(out.length).toBe(pcm.length);
    // Odd splits are re-aligned to whole samples and lose nothing.
    const parts = randomChunks(pcm, 3, 99).map((c) => r.push(c));
    for (const p of parts) expect(p.length % 2).toBe(0);
    parts.push(r.flush());
    expect(Buffer.concat(parts).equals(pcm)).toBe(true);
    // A dangling byte at the end of a stream is dropped by flush.
    r.push(pcm.subarray(0, 3));
    expect(r.flush().length).toBe(0);
    expect(r.push(pcm.subarray(0, 2)).equals(pcm.subarray(0, 2))).toBe(true);
  });

  it('rejects invalid rates', () => {
    for (const bad of [0, -16000, 7999, 48001, 16000.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => new PcmResampler(bad, 16000)).toThrow(RangeError);
      expect(() => new PcmResampler(16000, bad)).toThrow(RangeError);
    }
    expect(() => new PcmResampler(8000, 48000)).not.toThrow();
  });
});
