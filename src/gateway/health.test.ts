import { describe, expect, it } from 'vitest';
import { ProviderHealth } from './health.ts';

function clock(): { now: () => number; advance(ms: number): void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('ProviderHealth (circuit breaker per provider)', () => {
  it('opens after N consecutive failures, only for that provider; a success in between resets the count', () => {
    const c = clock();
    const h = new ProviderHealth({ failures: 3, cooldownMs: 30_000, now: c.now });
    h.failure('deepgram', 502);
    h.failure('deepgram', 502);
    h.success('deepgram');
    h.failure('deepgram', 502);
    h.failure('deepgram', 502);
    expect(h.allow('deepgram')).toBe(true);
    expect(h.state('deepgram')).toBe('closed');
    h.failure('deepgram', 504);
    expect(h.state('deepgram')).toBe('open');
    expect(h.allow('deepgram')).toBe(false);
    expect(h.allow('assemblyai')).toBe(true);
    expect(h.state('assemblyai')).toBe('closed');
  });

  it('after the cool-down: one half-open probe at a time; its success closes the circuit', () => {
    const c = clock();
    const h = new ProviderHealth({ failures: 1, cooldownMs: 10_000, now: c.now });
    h.failure('deepgram');
    c.advance(9_999);
    expect(h.allow('deepgram')).toBe(false);
    c.advance(1);
    expect(h.state('deepgram')).toBe('half_open');
    expect(h.allow('deepgram')).toBe(true); // the probe
    expect(h.allow('deepgram')).toBe(false); // others wait for its outcome
    h.success('deepgram');
    expect(h.state('deepgram')).toBe('closed');
    expect(h.allow('deepgram')).toBe(true);
    expect(h.allow('deepgram')).toBe(true);
  });

  it('a failed probe opens the circuit for another cool-down', () => {
    const c = clock();
    const h = new ProviderHealth({ failures: 2, cooldownMs: 10_000, now: c.now });
    h.failure('x');
    h.failure('x');
    c.advance(10_000);
    expect(h.allow('x')).toBe(true);
    h.failure('x');
    expect(h.state('x')).toBe('open');
    c.advance(9_000);
    expect(h.allow('x')).toBe(false);
    c.advance(1_000);
    expect(h.allow('x')).toBe(true);
  });

  it('a probe that never reports frees the slot after one more cool-down', () => {
    const c = clock();
    const h = new ProviderHealth({ failures: 1, cooldownMs: 5_000, now: c.now });
    h.failure('x');
    c.advance(5_000);
    expect(h.allow('x')).toBe(true);
    c.advance(4_999);
    expect(h.allow('x')).toBe(false);
    c.advance(1);
    expect(h.allow('x')).toBe(true);
  });
});
