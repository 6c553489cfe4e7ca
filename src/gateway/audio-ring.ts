/**
 * Bounded audio buffer of client PCM, addressed by absolute byte position on the session's
 * timeline. Holds audio while an upstream connects and, when the session has fallback
 * candidates, the audio since the last final transcript for replay (docs/failover.md). When
 * full, the oldest audio is dropped (and counted). Chunks are kept as received: no copies on the
 * hot path; `trimBefore` and `chunksFrom` cut with `subarray` (views, no copies either).
 */
export class AudioRing {
  private chunks: Buffer[] = [];
  private bytes = 0;
  /** Absolute position (bytes since session start) of the first buffered byte. */
  startPos = 0;
  /** Bytes dropped because the ring was full. */
  dropped = 0;
  /** Most bytes held (may change: a session that gains fallback candidates keeps more). */
  capacity: number;

  constructor(capacityBytes: number) {
    this.capacity = capacityBytes;
  }

  get size(): number {
    return this.bytes;
  }

  /** Absolute position just after the last buffered byte. */
  get endPos(): number {
    return this.startPos + this.bytes;
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

  /** Forget the audio before absolute position `pos` (not counted as dropped). */
  trimBefore(pos: number): void {
    while (this.chunks.length > 0 && this.startPos < pos) {
      const first = this.chunks[0] as Buffer;
      const cut = pos - this.startPos;
      if (cut >= first.length) {
        this.chunks.shift();
        this.bytes -= first.length;
        this.startPos += first.length;
      } else {
        this.chunks[0] = first.subarray(cut);
        this.bytes -= cut;
        this.startPos += cut;
      }
    }
    if (this.chunks.length === 0) {
      this.bytes = 0;
      if (this.startPos < pos) this.startPos = pos;
    }
  }

  /** The buffered audio from absolute position `pos` (or the oldest buffered byte) on, oldest first. */
  chunksFrom(pos: number): Buffer[] {
    const out: Buffer[] = [];
    let at = this.startPos;
    for (const c of this.chunks) {
      const end = at + c.length;
      if (end > pos) out.push(at >= pos ? c : c.subarray(pos - at));
      at = end;
    }
    return out;
  }

  /** Take everything out, oldest first. */
  drain(): Buffer[] {
    const out = this.chunks;
    this.chunks = [];
    this.startPos += this.bytes;
    this.bytes = 0;
    return out;
  }
}
