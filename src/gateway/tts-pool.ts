/**
 * Warm upstream TTS sockets shared across client sessions. A session that ends with an idle,
 * reusable provider socket parks it here; the next session asking for the same key (provider,
 * base URL, socket-level options) starts on a warm socket instead of a cold connect. Bounded:
 * at most `maxPerKey` idle sockets per key, each kept at most `idleMs`; keep-alives run from
 * one timer.
 */
import type { TtsLink } from './tts-link.ts';

interface Parked {
  link: TtsLink;
  since: number;
}

export class TtsLinkPool {
  private readonly idle = new Map<string, Parked[]>();
  private readonly maxPerKey: number;
  private readonly idleMs: number;
  private readonly timer: NodeJS.Timeout;

  constructor(opts: { maxPerKey: number; idleMs: number }) {
    this.maxPerKey = opts.maxPerKey;
    this.idleMs = opts.idleMs;
    this.timer = setInterval(() => this.sweep(Date.now()), 1000);
    this.timer.unref();
  }

  get size(): number {
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  /** A parked link for `key` that is still usable, or undefined. */
  take(key: string): TtsLink | undefined {
    const list = this.idle.get(key);
    while (list && list.length > 0) {
      const p = list.pop() as Parked;
      if (p.link.usable && p.link.idle) return p.link;
    }
    return undefined;
  }

  /** Park a link; returns false (and the caller closes it) when it cannot be kept. */
  put(link: TtsLink): boolean {
    // A socket serving many generations, or an unused one opened ahead for a one-generation provider.
    const reusable = link.adapter.kind === 'ws' && (link.adapter.reuse === 'many' || link.fresh);
    if (this.maxPerKey <= 0 || !link.usable || !link.idle || !reusable) return false;
    const list = this.idle.get(link.key) ?? [];
    if (list.length >= this.maxPerKey) return false;
    list.push({ link, since: Date.now() });
    this.idle.set(link.key, list);
    return true;
  }

  private sweep(now: number): void {
    for (const [key, list] of this.idle) {
      const keep: Parked[] = [];
      for (const p of list) {
        if (!p.link.usable) continue;
        if (now - p.since > this.idleMs) {
          p.link.close();
          continue;
        }
        p.link.tick(now);
        keep.push(p);
      }
      if (keep.length > 0) this.idle.set(key, keep);
      else this.idle.delete(key);
    }
  }

  close(): void {
    clearInterval(this.timer);
    for (const list of this.idle.values()) for (const p of list) p.link.close();
    this.idle.clear();
  }
}
