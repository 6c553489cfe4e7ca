/**
 * One clock for the bench and its emulator child. `process.hrtime` is CLOCK_MONOTONIC on Linux,
 * which is machine-wide, so a time taken in the client and one taken in the emulator process can
 * be subtracted. `performance.now()` is the same clock shifted by this process's time origin; the
 * shift is measured once (microsecond error) so hot paths keep using the cheap performance.now().
 */

function hrMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function measureOffset(): number {
  let best = Infinity;
  let offset = 0;
  for (let i = 0; i < 50; i++) {
    const a = performance.now();
    const h = hrMs();
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      offset = h - (a + b) / 2;
    }
  }
  return offset;
}

const OFFSET_MS = measureOffset();

/** A `performance.now()` value of this process, on the machine-wide monotonic clock (ms). */
export function perfToMono(perfMs: number): number {
  return perfMs + OFFSET_MS;
}
