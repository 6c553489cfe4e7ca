/**
 * Deterministic "speech" for TTS emulators: no neural voice is available offline, so a text is
 * rendered as one tone per character, with a duration proportional to the text. Tests can then
 * assert durations exactly (characters x msPerChar) and check resampling (a tone must keep its
 * frequency).
 *
 * - Every character of the text (spaces and punctuation included) lasts `msPerChar` (default 60).
 * - A non-space character is a sine at `charFrequency(ch)` Hz, amplitude 0.3 FS; whitespace is
 *   silence. Phase is continuous across characters and across chunks (no clicks).
 * - Word/char timings (seconds from the start of the rendered text) come from `ttsTimings`.
 *
 * `TtsRenderer` renders a long text incrementally (chunk by chunk) with exact sample positions,
 * so a stream of chunks is bit-identical to `renderText` of the whole text.
 */

export const DEFAULT_MS_PER_CHAR = 60;
export const TTS_AMPLITUDE = 0.3;

/** 200..1750 Hz in 50 Hz steps, by character code (always below Nyquist of 8 kHz audio). */
export function charFrequency(ch: string): number {
  const code = ch.codePointAt(0) ?? 0;
  return 200 + (code % 32) * 50;
}

export interface TtsTimingOptions {
  msPerChar?: number;
}

export interface TimedChar {
  char: string;
  start: number;
  end: number;
}

export interface TimedTtsWord {
  word: string;
  start: number;
  end: number;
}

/** Seconds of audio a text renders to. */
export function ttsDuration(text: string, opts: TtsTimingOptions = {}): number {
  return ([...text].length * (opts.msPerChar ?? DEFAULT_MS_PER_CHAR)) / 1000;
}

/** Char and word timings (seconds, relative to the start of `text`'s audio, plus `offsetS`). */
export function ttsTimings(text: string, opts: TtsTimingOptions & { offsetS?: number } = {}): { chars: TimedChar[]; words: TimedTtsWord[] } {
  const step = (opts.msPerChar ?? DEFAULT_MS_PER_CHAR) / 1000;
  const off = opts.offsetS ?? 0;
  const chars: TimedChar[] = [];
  const words: TimedTtsWord[] = [];
  let cur: TimedTtsWord | null = null;
  [...text].forEach((ch, i) => {
    const start = round6(off + i * step);
    const end = round6(off + (i + 1) * step);
    chars.push({ char: ch, start, end });
    if (/\s/u.test(ch)) {
      cur = null;
    } else if (cur) {
      cur.word += ch;
      cur.end = end;
    } else {
      cur = { word: ch, start, end };
      words.push(cur);
    }
  });
  return { chars, words };
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/**
 * Incremental renderer: `push(text)` returns the PCM s16le mono of those characters at
 * `sampleRate`, continuing sample positions and phase from the previous call.
 */
export class TtsRenderer {
  readonly sampleRate: number;
  readonly msPerChar: number;
  /** characters rendered so far */
  chars = 0;
  /** samples rendered so far */
  samples = 0;
  private phase = 0;

  constructor(sampleRate: number, opts: TtsTimingOptions = {}) {
    this.sampleRate = sampleRate;
    this.msPerChar = opts.msPerChar ?? DEFAULT_MS_PER_CHAR;
  }

  /** Exact sample index where character `i` starts (rounded, so totals never drift). */
  private boundary(i: number): number {
    return Math.round((i * this.msPerChar * this.sampleRate) / 1000);
  }

  push(text: string): Buffer {
    const chars = [...text];
    const end = this.boundary(this.chars + chars.length);
    const out = Buffer.alloc((end - this.samples) * 2);
    let o = 0;
    for (const ch of chars) {
      const stop = this.boundary(this.chars + 1);
      const n = stop - this.samples;
      const silent = /\s/u.test(ch);
      const f = charFrequency(ch);
      const inc = (2 * Math.PI * f) / this.sampleRate;
      const fade = Math.max(1, Math.round(this.sampleRate * 0.003));
      for (let k = 0; k < n; k++) {
        let v = 0;
        if (!silent) {
          const env = Math.min(1, (k + 1) / fade, (n - k) / fade);
          v = Math.round(Math.sin(this.phase) * TTS_AMPLITUDE * 32767 * env);
          this.phase += inc;
          if (this.phase > 2 * Math.PI) this.phase -= 2 * Math.PI;
        }
        out.writeInt16LE(v, o);
        o += 2;
      }
      this.samples = stop;
      this.chars += 1;
    }
    return out;
  }
}

/** Whole text at once. */
export function renderText(text: string, sampleRate: number, opts: TtsTimingOptions = {}): Buffer {
  return new TtsRenderer(sampleRate, opts).push(text);
}

/** Split PCM into chunks of `chunkMs` (last one shorter); never splits a sample. */
export function chunkPcm(pcm: Buffer, sampleRate: number, chunkMs: number): Buffer[] {
  const size = Math.max(2, Math.round((sampleRate * chunkMs) / 1000) * 2);
  const out: Buffer[] = [];
  for (let i = 0; i < pcm.length; i += size) out.push(pcm.subarray(i, Math.min(pcm.length, i + size)));
  return out;
}

/** Dominant frequency of s16le PCM by scanning candidate tones with Goertzel (for tests). */
export function dominantFrequency(pcm: Buffer, sampleRate: number, candidates: readonly number[]): number {
  const n = Math.floor(pcm.length / 2);
  let best = candidates[0] ?? 0;
  let bestPower = -1;
  for (const f of candidates) {
    const coeff = 2 * Math.cos((2 * Math.PI * f) / sampleRate);
    let s1 = 0;
    let s2 = 0;
    for (let i = 0; i < n; i++) {
      const s = pcm.readInt16LE(i * 2) + coeff * s1 - s2;
      s2 = s1;
      s1 = s;
    }
    const power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if (power > bestPower) {
      bestPower = power;
      best = f;
    }
  }
  return best;
}
