/**
 * Deterministic "speech" for emulator tests: no ASR exists offline, so a transcript is a pure
 * function of the audio.
 *
 * Encoding rules (used by every STT emulator and by the tests that drive them):
 * - VOCABULARY has 32 words; word i is a sine tone at `300 + 60 * i` Hz (300 .. 2160 Hz, all far
 *   below the 4 kHz Nyquist limit of 8 kHz audio).
 * - A word is `wordMs` (default 300) of its tone at amplitude 0.3 of full scale, with a 5 ms linear
 *   fade at each end (no clicks). Words of one utterance are CONTIGUOUS: a word boundary is a
 *   frequency change plus the short fade dip, never silence (Deepgram's default endpointing of
 *   10 ms would treat any silence as an endpoint).
 * - Utterances are separated by digital silence.
 *
 * Detection (SpeechDetector), in 10 ms analysis windows of `round(sampleRate / 100)` samples:
 * - voiced = RMS >= 500 (about -36 dBFS);
 * - every voiced window gets the vocabulary index whose frequency has the largest Goertzel power;
 * - a voiced window whose energy is < 0.85 x the larger of the two previous windows' energies is a
 *   "dip" (the fade between two words); a run of dips ends a word at the middle of the dip run;
 * - inside a dip-free segment a change of label that lasts >= 3 windows also splits words;
 * - a word is the majority label of its windows; words shorter than 100 ms are ignored;
 * - a word that ends in silence ends at the start of the first unvoiced window.
 * Detected times are therefore within one analysis window of the synthesized times, and results
 * depend only on the sample stream, never on how it was split into chunks.
 */

export const VOCABULARY: readonly string[] = Object.freeze([
  'hello', 'world', 'alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot',
  'golf', 'hotel', 'india', 'juliet', 'kilo', 'lima', 'mike', 'november',
  'oscar', 'papa', 'quebec', 'romeo', 'sierra', 'tango', 'uniform', 'victor',
  'whiskey', 'xray', 'yankee', 'zulu', 'one', 'two', 'three', 'four',
]);

export const BASE_FREQUENCY_HZ = 300;
export const FREQUENCY_STEP_HZ = 60;
export const DEFAULT_WORD_MS = 300;
export const DEFAULT_AMPLITUDE = 0.3;
const RAMP_MS = 5;

const WORD_INDEX = new Map(VOCABULARY.map((w, i) => [w, i]));

/** Frequency (Hz) of a vocabulary word; throws for words outside VOCABULARY. */
export function wordFrequency(word: string): number {
  const i = WORD_INDEX.get(word);
  if (i === undefined) throw new Error(`"${word}" is not in the emulator vocabulary`);
  return BASE_FREQUENCY_HZ + FREQUENCY_STEP_HZ * i;
}

export type ScriptItem =
  | { readonly words: readonly string[]; readonly wordMs?: number }
  | { readonly silenceMs: number };

export interface SynthOptions {
  sampleRate: number;
  /** default word length for items without their own wordMs (default 300) */
  wordMs?: number;
  /** 0..1 of full scale (default 0.3) */
  amplitude?: number;
}

export interface TimedWord {
  word: string;
  /** seconds from the start of the audio */
  start: number;
  end: number;
}

export interface ScriptTimings {
  words: TimedWord[];
  /** one entry per `words` item */
  utterances: Array<{ words: TimedWord[]; text: string; start: number; end: number }>;
  /** total audio length in seconds */
  duration: number;
  totalSamples: number;
}

function samplesFor(ms: number, rate: number): number {
  return Math.round((ms * rate) / 1000);
}

/** Exact word timings (seconds) of what `synthesize` produces for the same script and options. */
export function scriptTimings(script: readonly ScriptItem[], opts: SynthOptions): ScriptTimings {
  const rate = opts.sampleRate;
  const words: TimedWord[] = [];
  const utterances: ScriptTimings['utterances'] = [];
  let pos = 0;
  for (const item of script) {
    if ('silenceMs' in item) {
      pos += samplesFor(item.silenceMs, rate);
      continue;
    }
    const n = samplesFor(item.wordMs ?? opts.wordMs ?? DEFAULT_WORD_MS, rate);
    const utt: TimedWord[] = [];
    for (const w of item.words) {
      wordFrequency(w); // validates
      const tw = { word: w, start: pos / rate, end: (pos + n) / rate };
      utt.push(tw);
      words.push(tw);
      pos += n;
    }
    if (utt.length > 0) {
      utterances.push({
        words: utt,
        text: utt.map((w) => w.word).join(' '),
        start: utt[0]!.start,
        end: utt[utt.length - 1]!.end,
      });
    }
  }
  return { words, utterances, duration: pos / rate, totalSamples: pos };
}

/** PCM s16le mono for a script of words and silences. */
export function synthesize(script: readonly ScriptItem[], opts: SynthOptions): Buffer {
  const rate = opts.sampleRate;
  const amp = Math.round((opts.amplitude ?? DEFAULT_AMPLITUDE) * 32767);
  const { totalSamples } = scriptTimings(script, opts);
  const out = Buffer.alloc(totalSamples * 2);
  let pos = 0;
  for (const item of script) {
    if ('silenceMs' in item) {
      pos += samplesFor(item.silenceMs, rate);
      continue;
    }
    const n = samplesFor(item.wordMs ?? opts.wordMs ?? DEFAULT_WORD_MS, rate);
    const ramp = Math.max(1, samplesFor(RAMP_MS, rate));
    for (const w of item.words) {
      const w0 = (2 * Math.PI * wordFrequency(w)) / rate;
      for (let k = 0; k < n; k++) {
        const env = Math.min(1, (k + 0.5) / ramp, (n - k - 0.5) / ramp);
        out.writeInt16LE(Math.round(amp * env * Math.sin(w0 * k)), (pos + k) * 2);
      }
      pos += n;
    }
  }
  return out;
}

/** Seconds of audio in `bytes` of PCM with the given layout. */
export function pcmSeconds(bytes: number, sampleRate: number, bytesPerSample = 2, channels = 1): number {
  return bytes / (sampleRate * bytesPerSample * channels);
}

/** Split a buffer into consecutive chunks of the given sizes (the last chunk takes the rest). */
export function chunkBuffer(buf: Buffer, sizes: readonly number[] | number): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  let i = 0;
  while (off < buf.length) {
    const size = typeof sizes === 'number' ? sizes : (sizes[i++ % sizes.length] ?? buf.length);
    const n = Math.max(1, size);
    out.push(buf.subarray(off, off + n));
    off += n;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Streaming detector

export interface DetectorOptions {
  sampleRate: number;
  /** analysis window (default 10 ms) */
  windowMs?: number;
  /** RMS threshold for a voiced window, in s16 units (default 500) */
  voicedRms?: number;
  /** words shorter than this are ignored (default 100 ms) */
  minWordMs?: number;
  /** energy ratio under which a window is a dip between words (default 0.85) */
  dipRatio?: number;
}

export type DetectorEvent =
  | { type: 'speech-start'; time: number }
  | { type: 'word'; word: string; start: number; end: number }
  | { type: 'speech-end'; time: number }
  | { type: 'window'; start: number; end: number; voiced: boolean };

const MIN_LABEL_RUN = 3;

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

interface Segment {
  start: number;
  /** window index and label of each non-dip voiced window */
  labels: Array<{ idx: number; label: number }>;
}

/**
 * Streaming word detector. Feed s16le bytes (any split, odd byte counts allowed) or Int16 samples;
 * each call returns the events of the analysis windows completed by that call, in audio order.
 * Within one window the order is: word(s) that the window closes, speech-end or speech-start,
 * then the window event itself.
 */
export class SpeechDetector {
  readonly sampleRate: number;
  readonly windowSamples: number;
  private readonly voicedEnergy: number;
  private readonly minWordSec: number;
  private readonly dipRatio: number;
  private readonly coeffs: Float64Array;
  private readonly buf: Float64Array;
  private fill = 0;
  private carry: number | null = null; // odd trailing byte
  private windowIndex = 0;
  private processedSamples = 0;
  private prevE1 = 0;
  private prevE2 = 0;
  private inVoiced = false;
  private segment: Segment | null = null;
  private dipStart: number | null = null;

  constructor(opts: DetectorOptions) {
    const rate = opts.sampleRate;
    if (!Number.isFinite(rate) || rate < 8000 || rate > 48000) {
      throw new Error(`sample rate ${rate} outside 8000..48000`);
    }
    this.sampleRate = rate;
    this.windowSamples = Math.max(1, Math.round((rate * (opts.windowMs ?? 10)) / 1000));
    const rms = opts.voicedRms ?? 500;
    this.voicedEnergy = rms * rms;
    this.minWordSec = (opts.minWordMs ?? 100) / 1000;
    this.dipRatio = opts.dipRatio ?? 0.85;
    this.coeffs = Float64Array.from(VOCABULARY, (w) => 2 * Math.cos((2 * Math.PI * wordFrequency(w)) / rate));
    this.buf = new Float64Array(this.windowSamples);
  }

  /** Seconds of audio analysed so far (whole windows only). */
  get processedSeconds(): number {
    return round6(this.processedSamples / this.sampleRate);
  }

  /** Seconds of audio received so far, including a partial window not yet analysed. */
  get receivedSeconds(): number {
    return (this.processedSamples + this.fill) / this.sampleRate;
  }

  /** Push s16le bytes. */
  push(chunk: Uint8Array): DetectorEvent[] {
    const events: DetectorEvent[] = [];
    let i = 0;
    if (this.carry !== null && chunk.length > 0) {
      this.addSample(((chunk[0]! << 8) | this.carry) << 16 >> 16, events);
      this.carry = null;
      i = 1;
    }
    for (; i + 1 < chunk.length; i += 2) {
      this.addSample(((chunk[i + 1]! << 8) | chunk[i]!) << 16 >> 16, events);
    }
    if (i < chunk.length) this.carry = chunk[i]!;
    return events;
  }

  /** Push decoded samples (s16 range). */
  pushSamples(samples: ArrayLike<number>): DetectorEvent[] {
    const events: DetectorEvent[] = [];
    for (let i = 0; i < samples.length; i++) this.addSample(samples[i]!, events);
    return events;
  }

  /**
   * Close the word in progress at the current analysed time (used for Finalize). Audio that
   * continues the same tone afterwards starts a new word. The partial window stays buffered.
   */
  flush(): DetectorEvent[] {
    const events: DetectorEvent[] = [];
    if (this.inVoiced && this.segment) {
      const t = this.processedSamples / this.sampleRate;
      this.closeSegment(this.dipStart ?? t, events);
      this.segment = null;
      this.dipStart = null;
    }
    return events;
  }

  /** End of stream: analyse the partial window (if any) and close everything. */
  end(): DetectorEvent[] {
    const events: DetectorEvent[] = [];
    if (this.fill > 0) this.processWindow(this.fill, events);
    if (this.inVoiced) {
      const t = this.processedSamples / this.sampleRate;
      if (this.segment) this.closeSegment(this.dipStart ?? t, events);
      events.push({ type: 'speech-end', time: round6(t) });
      this.inVoiced = false;
      this.segment = null;
      this.dipStart = null;
    }
    return events;
  }

  private addSample(s: number, events: DetectorEvent[]): void {
    this.buf[this.fill++] = s;
    if (this.fill === this.windowSamples) this.processWindow(this.windowSamples, events);
  }

  private processWindow(n: number, events: DetectorEvent[]): void {
    const x = this.buf;
    let e = 0;
    for (let k = 0; k < n; k++) e += x[k]! * x[k]!;
    e /= n;
    const rate = this.sampleRate;
    const idx = this.windowIndex;
    const t0 = this.processedSamples / rate;
    const t1 = (this.processedSamples + n) / rate;
    const voiced = e >= this.voicedEnergy;
    if (voiced) {
      if (!this.inVoiced) {
        this.inVoiced = true;
        this.segment = { start: t0, labels: [{ idx, label: this.label(n) }] };
        this.dipStart = null;
        events.push({ type: 'speech-start', time: round6(t0) });
      } else if (this.segment === null) {
        // after a flush(): a new word starts here without a new speech-start
        this.segment = { start: t0, labels: [{ idx, label: this.label(n) }] };
      } else {
        const isDip = e < this.dipRatio * Math.max(this.prevE1, this.prevE2);
        if (isDip) {
          if (this.dipStart === null) this.dipStart = t0;
        } else {
          if (this.dipStart !== null) {
            const mid = (this.dipStart + t0) / 2;
            this.closeSegment(mid, events);
            this.segment = { start: mid, labels: [] };
            this.dipStart = null;
          }
          this.segment.labels.push({ idx, label: this.label(n) });
        }
      }
    } else if (this.inVoiced) {
      if (this.segment) this.closeSegment(t0, events);
      this.segment = null;
      this.dipStart = null;
      this.inVoiced = false;
      events.push({ type: 'speech-end', time: round6(t0) });
    }
    events.push({ type: 'window', start: round6(t0), end: round6(t1), voiced });
    this.prevE2 = this.prevE1;
    this.prevE1 = voiced ? e : 0;
    this.processedSamples += n;
    this.windowIndex++;
    this.fill = 0;
  }

  /** Vocabulary index with the largest Goertzel power over the first n buffered samples. */
  private label(n: number): number {
    const x = this.buf;
    let best = 0;
    let bestPower = -1;
    for (let k = 0; k < this.coeffs.length; k++) {
      const c = this.coeffs[k]!;
      let s1 = 0;
      let s2 = 0;
      for (let j = 0; j < n; j++) {
        const s0 = x[j]! + c * s1 - s2;
        s2 = s1;
        s1 = s0;
      }
      const power = s1 * s1 + s2 * s2 - c * s1 * s2;
      if (power > bestPower) {
        bestPower = power;
        best = k;
      }
    }
    return best;
  }

  private closeSegment(end: number, events: DetectorEvent[]): void {
    const seg = this.segment;
    if (!seg || seg.labels.length === 0) return;
    // runs of equal labels; runs shorter than MIN_LABEL_RUN windows join the previous run
    const runs: Array<{ label: number; firstIdx: number; count: number }> = [];
    for (const { idx, label } of seg.labels) {
      const last = runs[runs.length - 1];
      if (last && last.label === label) last.count++;
      else runs.push({ label, firstIdx: idx, count: 1 });
    }
    const merged: Array<{ label: number; firstIdx: number; count: number }> = [];
    let pendingShort: { firstIdx: number; count: number } | null = null;
    for (const r of runs) {
      const prev = merged[merged.length - 1];
      if (r.count < MIN_LABEL_RUN) {
        if (prev) prev.count += r.count;
        else if (pendingShort) pendingShort.count += r.count;
        else pendingShort = { firstIdx: r.firstIdx, count: r.count };
        continue;
      }
      if (prev && prev.label === r.label) {
        prev.count += r.count;
      } else if (!prev && pendingShort) {
        merged.push({ label: r.label, firstIdx: pendingShort.firstIdx, count: r.count + pendingShort.count });
        pendingShort = null;
      } else {
        merged.push({ ...r });
      }
    }
    if (merged.length === 0) {
      // only short runs: take the majority label of the whole segment
      const counts = new Map<number, number>();
      for (const { label } of seg.labels) counts.set(label, (counts.get(label) ?? 0) + 1);
      let label = seg.labels[0]!.label;
      let best = 0;
      for (const [l, c] of counts) {
        if (c > best) {
          best = c;
          label = l;
        }
      }
      merged.push({ label, firstIdx: seg.labels[0]!.idx, count: seg.labels.length });
    }
    const winSec = this.windowSamples / this.sampleRate;
    for (let i = 0; i < merged.length; i++) {
      const r = merged[i]!;
      const start = i === 0 ? seg.start : r.firstIdx * winSec;
      const next = merged[i + 1];
      const wEnd = next ? next.firstIdx * winSec : end;
      if (wEnd - start + 1e-9 < this.minWordSec) continue;
      events.push({ type: 'word', word: VOCABULARY[r.label]!, start: round6(start), end: round6(wEnd) });
    }
  }
}

/** Convenience: all words detected in a complete PCM s16le buffer. */
export function detectWords(pcm: Uint8Array, opts: DetectorOptions): TimedWord[] {
  const d = new SpeechDetector(opts);
  const events = [...d.push(pcm), ...d.end()];
  const words: TimedWord[] = [];
  for (const e of events) if (e.type === 'word') words.push({ word: e.word, start: e.start, end: e.end });
  return words;
}

// ---------------------------------------------------------------------------------------------
// G.711 decoding (telephony encodings accepted by STT APIs)

/** ITU-T G.711 mu-law byte -> s16 sample. */
export function mulawToLinear(byte: number): number {
  const u = ~byte & 0xff;
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  return u & 0x80 ? 0x84 - t : t - 0x84;
}

/** ITU-T G.711 A-law byte -> s16 sample. */
export function alawToLinear(byte: number): number {
  const a = byte ^ 0x55;
  let t = (a & 0x0f) << 4;
  const seg = (a & 0x70) >> 4;
  if (seg === 0) t += 8;
  else if (seg === 1) t += 0x108;
  else t = (t + 0x108) << (seg - 1);
  return a & 0x80 ? t : -t;
}
