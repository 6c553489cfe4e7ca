/**
 * Provider health: one circuit breaker per provider id, shared by every modality of a gateway
 * (docs/failover.md). `failures` consecutive failures open the circuit for `cooldownMs`; then one
 * caller at a time gets through as a half-open probe: its success closes the circuit, its failure
 * opens it again for another cool-down. A probe that never reports (e.g. a session that ended
 * without speech) frees the probe slot after one more cool-down.
 *
 * The API is three calls: `allow(provider)` before trying a candidate (false: skip it, the caller
 * counts the skip), `success(provider)` when the provider delivered a real result, `failure(provider,
 * code)` when an attempt failed for a reason that is the provider's (not a client error).
 *
 * One instance per gateway configuration (`healthOf(cfg)`), so test gateways are independent.
 */
import type { GatewayConfig } from '../config.ts';

export type CircuitState = 'closed' | 'open' | 'half_open';

interface Breaker {
  failures: number;
  /** When the circuit last opened (0: closed). */
  openedAt: number;
  /** When the current half-open probe was let through (0: none in flight). */
  probeAt: number;
  lastCode: number | undefined;
}

export interface HealthOptions {
  /** Consecutive failures that open a circuit. */
  failures: number;
  cooldownMs: number;
  now?: () => number;
}

export class ProviderHealth {
  private readonly breakers = new Map<string, Breaker>();
  private readonly threshold: number;
  private readonly cooldownMs: number;
  private readonly now: () => number;

  constructor(opts: HealthOptions) {
    this.threshold = opts.failures;
    this.cooldownMs = opts.cooldownMs;
    this.now = opts.now ?? Date.now;
  }

  state(provider: string): CircuitState {
    const b = this.breakers.get(provider);
    if (!b || b.openedAt === 0) return 'closed';
    return this.now() - b.openedAt < this.cooldownMs ? 'open' : 'half_open';
  }

  /** May this provider be tried now? In half-open state, true for one probe per cool-down. */
  allow(provider: string): boolean {
    const b = this.breakers.get(provider);
    if (!b || b.openedAt === 0) return true;
    const now = this.now();
    if (now - b.openedAt < this.cooldownMs) return false;
    if (b.probeAt !== 0 && now - b.probeAt < this.cooldownMs) return false;
    b.probeAt = now;
    return true;
  }

  success(provider: string): void {
    const b = this.breakers.get(provider);
    if (!b) return;
    b.failures = 0;
    b.openedAt = 0;
    b.probeAt = 0;
  }

  failure(provider: string, code?: number): void {
    let b = this.breakers.get(provider);
    if (!b) {
      b = { failures: 0, openedAt: 0, probeAt: 0, lastCode: undefined };
      this.breakers.set(provider, b);
    }
    b.failures++;
    b.lastCode = code;
    const now = this.now();
    if (b.openedAt !== 0 && now - b.openedAt >= this.cooldownMs) {
      // A failed half-open probe (or any failure after the cool-down): open for another period.
      b.openedAt = now;
      b.probeAt = 0;
    } else if (b.openedAt === 0 && b.failures >= this.threshold) {
      b.openedAt = now;
      b.probeAt = 0;
    }
  }
}

const instances = new WeakMap<GatewayConfig, ProviderHealth>();

/** The health registry of the gateway built from this configuration. */
export function healthOf(cfg: GatewayConfig): ProviderHealth {
  let h = instances.get(cfg);
  if (!h) {
    const b = cfg.file.failover.breaker;
    h = new ProviderHealth({ failures: b.failures, cooldownMs: b.cooldownS * 1000 });
    instances.set(cfg, h);
  }
  return h;
}
