/**
 * Bounded audio buffer of client PCM, addressed by absolute byte position on the session's
 * timeline. Holds audio while an upstream connects; when full, the oldest audio is dropped
 * (and counted). Chunks are kept as received: no copies on the hot path.
 */
export class AudioRing {
  private chunks: Buffer[] = [];
  private bytes = 0;
  /** Absolute position (bytes since session start) of the first buffered byte. */
  startPos = 0;
  /** Bytes dropped because the ring was full. */
  dropped = 0;
  private readonly capacity: number;

  constructor(capacityBytes: number) {
    this.capacity = capacityBytes;
  }

  get size(): number {
    return this.bytes;
  }

  /** Append audio that starts at absolute position `pos` (pos === startPos + size normally). */
  push(buf: Buffer, pos: number): void {
    if (this.bytes === 0) this.startPos = pos;
    this.chunks.push(buf);
    this.bytes += buf.length;
    while (this.bytes > this.capacity && this.chunks.length > 1) {
      const old = this.chunks.shift() as Buffer;
      this.bytes -= old.length;
      this.startPos += old.length;
      this.dropped += old.length;
    }
  }

  /** Take everything out, oldest first. */
  drain(): Buffer[] {
    const out = this.chunks;
    this.chunks = [];
    this.bytes = 0;
    return out;
  }
}
