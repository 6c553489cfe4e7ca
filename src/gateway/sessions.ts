/**
 * Live sessions of this process: one housekeeping ticker for all of them (inactivity,
 * keep-alives, metering flushes) instead of per-session timers, and graceful shutdown.
 */
export interface LiveSession {
  readonly isClosed: boolean;
  tick(now: number): void;
  beginGracefulEnd(closeCode: number): void;
}

export class SessionRegistry {
  private readonly sessions = new Set<LiveSession>();
  private readonly ticker: NodeJS.Timeout;

  constructor(tickMs = 1000) {
    this.ticker = setInterval(() => this.tick(), tickMs);
    this.ticker.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  add(s: LiveSession): void {
    this.sessions.add(s);
  }

  remove(s: LiveSession): void {
    this.sessions.delete(s);
  }

  private tick(): void {
    const now = Date.now();
    for (const s of this.sessions) s.tick(now);
  }

  /** Ask every session to finish; resolves when all are gone or the deadline passes. */
  async drain(deadlineMs: number): Promise<boolean> {
    for (const s of [...this.sessions]) s.beginGracefulEnd(1001);
    const until = Date.now() + deadlineMs;
    while (this.sessions.size > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
    }
    return this.sessions.size === 0;
  }

  stop(): void {
    clearInterval(this.ticker);
  }
}
