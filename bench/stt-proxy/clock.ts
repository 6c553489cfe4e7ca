/**
 * One clock for every process of the bench. `process.hrtime` is CLOCK_MONOTONIC on Linux, which
 * is system-wide, so a time taken in the bench client and one taken in the emulator child can be
 * subtracted. `performance.now()` is the same clock shifted by this process's time origin; the
 * shift is measured once (microsecond error) so the hot path can use the cheap performance.now().
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

/** Milliseconds on the machine-wide monotonic clock. */
export function monoNow(): number {
  return performance.now() + OFFSET_MS;
}

/** A `performance.now()` value of this process, on the machine-wide monotonic clock. */
export function perfToMono(perfMs: number): number {
  return perfMs + OFFSET_MS;
}
