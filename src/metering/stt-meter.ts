/**
 * Per-session audio meter: plain integer byte counts on the hot path, converted to seconds and
 * pushed into prom-client only on flush (finals, close, and every few seconds).
 */
import type { Counter } from 'prom-client';
import { bytesPerSecond } from '../protocol/audio.ts';

type AudioCounter = Counter<'provider' | 'model' | 'api_key'>;

export class SttMeter {
  /** Client audio bytes forwarded to the provider (hot path: plain increment). */
  bytes = 0;
  private flushedBytes = 0;
  private child: { inc(v: number): void };
  private readonly bps: number;
  private readonly counter: AudioCounter;
  private readonly apiKey: string;

  constructor(counter: AudioCounter, sampleRate: number, labels: { provider: string; model: string; apiKey: string }) {
    this.counter = counter;
    this.bps = bytesPerSecond(sampleRate);
    this.apiKey = labels.apiKey;
    this.child = counter.labels(labels.provider, labels.model, labels.apiKey);
  }

  get seconds(): number {
    return this.bytes / this.bps;
  }

  /** Push the unflushed delta into the counter. */
  flush(): void {
    const delta = this.bytes - this.flushedBytes;
    if (delta <= 0) return;
    this.flushedBytes = this.bytes;
    this.child.inc(delta / this.bps);
  }

  /** Attribute audio from now on to another provider/model (after flushing what came before). */
  rebind(provider: string, model: string): void {
    this.flush();
    this.child = this.counter.labels(provider, model, this.apiKey);
  }
}
