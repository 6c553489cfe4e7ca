/**
 * Per-session audio meter: plain integer byte counts on the hot path, converted to seconds and
 * pushed into prom-client only on flush (finals, close, and every few seconds). Cost is derived
 * at the same flushes (cost.ts): each provider stream (between rebinds) is priced as a whole,
 * so per-stream rounding (`pricing.rounding: provider`) applies once, not per flush.
 */
import type { Counter } from 'prom-client';
import { bytesPerSecond } from '../protocol/audio.ts';
import type { CostMeter, SttCostStream } from './cost.ts';

type AudioCounter = Counter<'provider' | 'model' | 'api_key'>;

export class SttMeter {
  /** Client audio bytes forwarded to the provider (hot path: plain increment). */
  bytes = 0;
  private flushedBytes = 0;
  private child: { inc(v: number): void };
  private readonly bps: number;
  private readonly counter: AudioCounter;
  private readonly apiKey: string;
  private readonly cost: CostMeter | null;
  private stream: SttCostStream | null;
  /** Bytes at the start of the current provider stream. */
  private streamStartBytes = 0;
  /** USD of the streams before the current one. */
  private closedUsd = 0;

  constructor(counter: AudioCounter, sampleRate: number, labels: { provider: string; model: string; apiKey: string }, cost?: CostMeter) {
    this.counter = counter;
    this.bps = bytesPerSecond(sampleRate);
    this.apiKey = labels.apiKey;
    this.child = counter.labels(labels.provider, labels.model, labels.apiKey);
    this.cost = cost ?? null;
    this.stream = this.cost ? this.cost.sttStream(labels.provider, labels.model, labels.apiKey) : null;
  }

  get seconds(): number {
    return this.bytes / this.bps;
  }

  /** Cost in USD of the audio flushed so far (every stream of the session). */
  get costUsd(): number {
    return this.closedUsd + (this.stream?.usd ?? 0);
  }

  /** Push the unflushed delta into the counter (and the cost of the current stream). */
  flush(): void {
    const delta = this.bytes - this.flushedBytes;
    if (delta <= 0) return;
    this.flushedBytes = this.bytes;
    this.child.inc(delta / this.bps);
    this.stream?.update((this.bytes - this.streamStartBytes) / this.bps);
  }

  /** Attribute audio from now on to another provider/model (after flushing what came before). */
  rebind(provider: string, model: string): void {
    this.flush();
    this.child = this.counter.labels(provider, model, this.apiKey);
    if (this.cost) {
      this.closedUsd += this.stream?.usd ?? 0;
      this.stream = this.cost.sttStream(provider, model, this.apiKey);
      this.streamStartBytes = this.bytes;
    }
  }
}
