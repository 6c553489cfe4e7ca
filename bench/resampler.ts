/**
 * Throughput of the TTS resampler (src/gateway/resampler.ts). Prints numbers, asserts nothing.
 *
 *   npx node bench/resampler.ts
 *
 * 10 s of speech-like audio (a few harmonics plus noise) per rate pair, pushed in 20 ms chunks
 * as a provider stream would arrive (and once as a single push). Each case is run a few times
 * after a warm-up; the best run is reported. Realtime factor = audio seconds / CPU seconds on
 * one core: how many concurrent streams of that pair one core could resample.
 */
import { PcmResampler } from '../src/gateway/resampler.ts';

const SECONDS = 10;
const RUNS = 5;

function speechLike(rate: number): Buffer {
  const n = rate * SECONDS;
  const b = Buffer.alloc(n * 2);
  let seed = 12345;
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const t = i / rate;
    const f0 = 140 + 30 * Math.sin(2 * Math.PI * 0.7 * t);
    let v = 0;
    for (let h = 1; h <= 8; h++) v += Math.sin(2 * Math.PI * f0 * h * t) / h;
    v = v * 5000 + ((seed / 4294967296) - 0.5) * 600;
    b.writeInt16LE(Math.max(-32768, Math.min(32767, Math.round(v))), i * 2);
  }
  return b;
}

function run(inRate: number, outRate: number, pcm: Buffer, chunkBytes: number): { ms: number; outBytes: number } {
  const r = new PcmResampler(inRate, outRate);
  const t0 = process.hrtime.bigint();
  let outBytes = 0;
  for (let i = 0; i < pcm.length; i += chunkBytes) outBytes += r.push(pcm.subarray(i, i + chunkBytes)).length;
  outBytes += r.flush().length;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { ms, outBytes };
}

const pairs: Array<[number, number]> = [
  [24000, 16000],
  [24000, 48000],
  [22050, 16000],
  [44100, 16000],
  [16000, 48000],
  [44100, 47999],
];

console.log(`node ${process.version}, ${SECONDS} s of audio per case, best of ${RUNS}`);
console.log('pair             chunks   ms      realtime x   in samples/s   out samples');
for (const [inRate, outRate] of pairs) {
  const pcm = speechLike(inRate);
  const chunk20ms = Math.round(inRate * 0.02) * 2;
  for (const [label, chunkBytes] of [['20 ms', chunk20ms], ['whole', pcm.length]] as Array<[string, number]>) {
    run(inRate, outRate, pcm, chunkBytes); // warm-up (JIT, filter table)
    let best = Number.POSITIVE_INFINITY;
    let outBytes = 0;
    for (let k = 0; k < RUNS; k++) {
      const r = run(inRate, outRate, pcm, chunkBytes);
      if (r.ms < best) best = r.ms;
      outBytes = r.outBytes;
    }
    const rtf = (SECONDS * 1000) / best;
    const sps = (inRate * SECONDS * 1000) / best;
    console.log(
      `${`${inRate}->${outRate}`.padEnd(16)} ${label.padEnd(8)} ${best.toFixed(1).padStart(6)}  ${rtf.toFixed(0).padStart(8)}x  ${(sps / 1e6).toFixed(2).padStart(9)} M    ${outBytes / 2}`,
    );
  }
}
