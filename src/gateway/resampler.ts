/**
 * Streaming resampler for PCM s16le mono (the TTS path: provider rate -> the client's
 * sample_rate). Why our own and not a library: docs/decisions/0006-tts-resampler.md.
 *
 * Polyphase windowed sinc with an exact rational ratio: out/in = L/M after dividing by the gcd,
 * so output sample n sits at input time n*M/L, tracked as an integer position plus an integer
 * phase (no floating-point drift, however long the stream). The filter is a Kaiser-windowed
 * sinc (beta 8, ~80 dB stopband) with its cutoff at 0.92 x the lower Nyquist; it spans 48
 * samples of the lower rate, so downsampling widens it in input samples and does not alias.
 * The table (one row of taps per phase) is built once per rate pair and shared by every
 * instance. When L is above 512 (odd client rates such as 44100 -> 47999) the table has 512
 * rows and the taps of a phase are interpolated linearly between two rows (error < -90 dB).
 *
 * Streaming: the filter is centred on the output time, so output is aligned with the input
 * (no time shift) and waits for half a filter (24 samples of the lower rate, ~1.5 ms at 16 kHz)
 * of future input. History is carried between chunks, a chunk may end mid-sample (the odd byte
 * is kept), and any chunking produces the same bytes as one push of the whole stream.
 * `flush()` pads with silence, returns the tail and resets: a stream of N input samples gives
 * exactly ceil(N * out / in) output samples.
 *
 * Hot path (STYLE.md §3): no allocation per sample; per push one output Buffer, and the working
 * buffer only grows when a chunk is larger than any before. Equal rates are a zero-copy
 * pass-through (a copy only to re-join a sample split across two chunks).
 */
import { MAX_SAMPLE_RATE, MIN_SAMPLE_RATE } from '../protocol/audio.ts';

/** Filter half-length, in samples of the lower of the two rates. */
const HALF_TAPS_LOW_RATE = 24;
/** Kaiser beta: ~80 dB stopband, far below the 16-bit noise floor of speech at normal levels. */
const KAISER_BETA = 8;
/** Cutoff as a fraction of the lower Nyquist frequency (passband flat to ~0.81 of it). */
const CUTOFF = 0.92;
/** Above this many phases the table is interpolated instead of holding one row per phase. */
const MAX_PHASES = 512;
const TABLE_CACHE_SIZE = 16;
const INITIAL_CAPACITY = 8192;

const EMPTY = Buffer.alloc(0);

interface Filter {
  /** Interpolation factor L (out / gcd). */
  readonly up: number;
  /** Decimation factor M (in / gcd). */
  readonly down: number;
  /** Taps per output sample (even). */
  readonly taps: number;
  /** Table rows: L when exact; MAX_PHASES when interpolated (plus one extra row at phase 1). */
  readonly rows: number;
  readonly interpolated: boolean;
  readonly coeffs: Float32Array;
}

const filterCache = new Map<string, Filter>();

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/** Modified Bessel function of the first kind, order 0 (power series). */
function besselI0(x: number): number {
  const q = (x * x) / 4;
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 64; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-15) break;
  }
  return sum;
}

function designFilter(inRate: number, outRate: number): Filter {
  const key = `${inRate}:${outRate}`;
  const cached = filterCache.get(key);
  if (cached) return cached;

  const g = gcd(inRate, outRate);
  const up = outRate / g;
  const down = inRate / g;
  // Everything below is in units of input samples.
  const widen = Math.max(1, inRate / outRate);
  const half = Math.ceil(HALF_TAPS_LOW_RATE * widen);
  const taps = 2 * half;
  const fc = (0.5 * CUTOFF) / widen; // cycles per input sample
  const interpolated = up > MAX_PHASES;
  const rows = interpolated ? MAX_PHASES : up;
  const tableRows = interpolated ? rows + 1 : rows;
  const coeffs = new Float32Array(tableRows * taps);
  const i0Beta = besselI0(KAISER_BETA);
  const row = new Float64Array(taps);
  for (let r = 0; r < tableRows; r++) {
    const frac = r / rows; // output time minus the integer input position
    let sum = 0;
    for (let k = 0; k < taps; k++) {
      // Tap k multiplies input sample (i - half + 1 + k); tau = its distance from output time.
      const tau = frac + half - 1 - k;
      const x = 2 * fc * tau;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const w = tau / half;
      const win = w * w >= 1 ? 0 : besselI0(KAISER_BETA * Math.sqrt(1 - w * w)) / i0Beta;
      row[k] = sinc * win;
      sum += row[k]!;
    }
    // Unity DC gain on every phase: no phase-dependent gain ripple (which would be a spur).
    for (let k = 0; k < taps; k++) coeffs[r * taps + k] = row[k]! / sum;
  }

  const filter: Filter = { up, down, taps, rows, interpolated, coeffs };
  if (filterCache.size >= TABLE_CACHE_SIZE) {
    const oldest = filterCache.keys().next().value;
    if (oldest !== undefined) filterCache.delete(oldest);
  }
  filterCache.set(key, filter);
  return filter;
}

function checkRate(name: string, rate: number): void {
  if (!Number.isInteger(rate) || rate < MIN_SAMPLE_RATE || rate > MAX_SAMPLE_RATE) {
    throw new RangeError(`${name} must be an integer from ${MIN_SAMPLE_RATE} to ${MAX_SAMPLE_RATE}, got ${rate}`);
  }
}

function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

export class PcmResampler {
  readonly inRate: number;
  readonly outRate: number;
  /** Equal rates: push() returns its input (re-aligned to whole samples), no copy. */
  readonly passthrough: boolean;

  private readonly filter: Filter | null;
  /** Input samples (int16 values as floats): history then unconsumed input. */
  private buf: Float32Array;
  private filled = 0;
  /** Index in buf of the first tap of the next output sample. */
  private pos = 0;
  /** Phase of the next output sample, 0..L-1 (its time is pos + half - 1 + phase / L). */
  private phase = 0;
  /** Low byte of a sample split across two chunks, or -1. */
  private pending = -1;

  constructor(inRate: number, outRate: number) {
    checkRate('inRate', inRate);
    checkRate('outRate', outRate);
    this.inRate = inRate;
    this.outRate = outRate;
    this.passthrough = inRate === outRate;
    this.filter = this.passthrough ? null : designFilter(inRate, outRate);
    this.buf = new Float32Array(this.filter ? INITIAL_CAPACITY + this.filter.taps : 0);
    this.reset();
  }

  /** s16le bytes in (any length, may split a sample) -> s16le bytes out (possibly empty). */
  push(chunk: Uint8Array): Buffer {
    const n = chunk.length;
    if (n === 0) return EMPTY;
    if (this.filter === null) return this.passAligned(chunk);

    const bytes = n + (this.pending >= 0 ? 1 : 0);
    this.reserve(bytes >> 1);
    const buf = this.buf;
    let w = this.filled;
    let b = 0;
    if (this.pending >= 0) {
      buf[w++] = ((this.pending | (chunk[0]! << 8)) << 16) >> 16;
      b = 1;
    }
    const end = b + ((n - b) & ~1);
    for (; b < end; b += 2) buf[w++] = ((chunk[b]! | (chunk[b + 1]! << 8)) << 16) >> 16;
    this.pending = end < n ? chunk[end]! : -1;
    this.filled = w;
    return this.run();
  }

  /**
   * End of a stream (a TTS generation): returns the remaining output (the filter's look-ahead)
   * and resets, so the instance can serve the next generation. A dangling odd byte is dropped.
   */
  flush(): Buffer {
    if (this.filter === null) {
      this.pending = -1;
      return EMPTY;
    }
    const half = this.filter.taps >> 1;
    this.reserve(half);
    this.buf.fill(0, this.filled, this.filled + half);
    this.filled += half;
    const out = this.run();
    this.reset();
    return out;
  }

  /** Forget all state (history, phase, a dangling byte): the next push starts a new stream. */
  reset(): void {
    this.pending = -1;
    this.pos = 0;
    this.phase = 0;
    if (this.filter === null) return;
    if (this.buf.length > 4 * INITIAL_CAPACITY) this.buf = new Float32Array(INITIAL_CAPACITY + this.filter.taps);
    // Silence before the first sample: the first output's window reaches half - 1 samples back.
    this.filled = (this.filter.taps >> 1) - 1;
    this.buf.fill(0, 0, this.filled);
  }

  private passAligned(chunk: Uint8Array): Buffer {
    const n = chunk.length;
    if (this.pending < 0) {
      if ((n & 1) === 0) return asBuffer(chunk);
      this.pending = chunk[n - 1]!;
      return asBuffer(chunk.subarray(0, n - 1));
    }
    const even = (n + 1) & ~1;
    const out = Buffer.allocUnsafe(even);
    out[0] = this.pending;
    out.set(chunk.subarray(0, even - 1), 1);
    this.pending = even - 1 < n ? chunk[n - 1]! : -1;
    return out;
  }

  /** Room for `more` samples after `filled`. Grows (rarely) by doubling. */
  private reserve(more: number): void {
    const need = this.filled + more;
    if (need <= this.buf.length) return;
    const grown = new Float32Array(Math.max(need, 2 * this.buf.length));
    grown.set(this.buf.subarray(0, this.filled));
    this.buf = grown;
  }

  /** Emit every output sample whose whole window is in the buffer, then drop consumed input. */
  private run(): Buffer {
    const f = this.filter as Filter;
    const { up, down, taps, coeffs } = f;
    const buf = this.buf;
    let pos = this.pos;
    let phase = this.phase;
    const last = this.filled - taps; // last pos whose window is complete
    if (pos > last) return EMPTY;
    // Outputs k = 0.. with floor(pos + (phase + k * M) / L) <= last.
    const count = Math.floor(((last + 1 - pos) * up - phase + down - 1) / down);
    const out = Buffer.allocUnsafe(count * 2);
    const stepInt = Math.floor(down / up);
    const stepFrac = down % up;

    for (let o = 0; o < count; o++) {
      let acc = 0;
      if (f.interpolated) {
        const x = (phase * f.rows) / up;
        const r = Math.floor(x);
        const t = x - r;
        const c0 = r * taps;
        const c1 = c0 + taps;
        for (let k = 0; k < taps; k++) {
          const a = coeffs[c0 + k]!;
          acc += (a + t * (coeffs[c1 + k]! - a)) * buf[pos + k]!;
        }
      } else {
        const c = phase * taps;
        for (let k = 0; k < taps; k++) acc += coeffs[c + k]! * buf[pos + k]!;
      }
      let v = Math.round(acc);
      if (v > 32767) v = 32767;
      else if (v < -32768) v = -32768;
      out[2 * o] = v & 0xff;
      out[2 * o + 1] = (v >> 8) & 0xff;
      pos += stepInt;
      phase += stepFrac;
      if (phase >= up) {
        phase -= up;
        pos++;
      }
    }

    // Keep what later outputs still need (fewer than `taps` samples).
    buf.copyWithin(0, pos, this.filled);
    this.filled -= pos;
    this.pos = 0;
    this.phase = phase;
    return out;
  }
}
