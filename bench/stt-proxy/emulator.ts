/**
 * The Deepgram emulator (test/emulators/deepgram.ts) as the bench uses it, plus what the bench
 * reads from its wire records: when each audio frame arrived and which frame triggered each
 * transcript. Runs in its own process by default (emulator-child.ts, reached over IPC) or in the
 * bench process (`--emulator inproc`); both sides implement `EmulatorApi`.
 *
 * Stream identity: every stream sets Deepgram's `tag` query parameter (the gateway passes
 * `settings.extra.tag` through), so a connection is found by its tag on both paths.
 */
import type { ConnectionRecord } from '../../test/emulators/base.ts';
import { DEFAULT_API_KEY, startDeepgramEmulator, type DeepgramEmulator } from '../../test/emulators/deepgram.ts';
import { perfToMono } from './clock.ts';

export const EMULATOR_KEY = DEFAULT_API_KEY;

/** What the emulator saw of one stream (one upstream connection). */
export interface TagData {
  tag: string;
  /** path + query as requested */
  url: string;
  /** audio bytes received */
  bytes: number;
  /** monotonic ms at which frame i had fully arrived (NaN: never arrived) */
  recv: Float64Array;
  /** non-empty Results sent before the client's CloseStream: monotonic send time */
  resultSent: Float64Array;
  /** ... index of the frame whose arrival produced it (the last frame received before it) */
  resultTrigger: Int32Array;
  /** ... transcript text */
  resultText: string[];
  /** how the connection ended (null: still open) */
  close: { code: number; by: string } | null;
}

export interface EmulatorApi {
  readonly port: number;
  /** Connections whose tag starts with prefix and that are open. */
  openTags(prefix: string): Promise<number>;
  collect(prefix: string, frameBytes: number): Promise<TagData[]>;
  /** Forget closed connections (the emulator records every frame; this bounds its memory). */
  reset(): Promise<void>;
  /** CPU time of the emulator's process, microseconds (user + system). */
  cpuMicros(): Promise<number>;
  /** Upgrades the emulator refused (e.g. over its concurrency limit). */
  rejectedCount(): Promise<number>;
  close(): Promise<void>;
}

export interface EmulatorHostOptions {
  maxConcurrent: number;
  interimIntervalMs: number;
  idleTimeoutMs: number;
}

/** The emulator plus its bench bookkeeping, living in one process. */
export class EmulatorHost {
  readonly emu: DeepgramEmulator;
  /** performance.now() when each connection opened: the origin of its record's frame times */
  private readonly opened = new WeakMap<ConnectionRecord, number>();

  private constructor(emu: DeepgramEmulator) {
    this.emu = emu;
    // Emitted synchronously right after the WsSession sampled its own t0 (base.ts), so this
    // timestamp is that origin to within microseconds.
    emu.server.on('connection', (rec: ConnectionRecord) => this.opened.set(rec, performance.now()));
  }

  static async start(opts: EmulatorHostOptions): Promise<EmulatorHost> {
    const emu = await startDeepgramEmulator({
      maxConcurrent: opts.maxConcurrent,
      interimIntervalMs: opts.interimIntervalMs,
      idleTimeoutMs: opts.idleTimeoutMs,
      recordAudio: false,
    });
    return new EmulatorHost(emu);
  }

  get port(): number {
    return this.emu.port;
  }

  openTags(prefix: string): number {
    let n = 0;
    for (const rec of this.emu.records) if (!rec.closed && tagOf(rec).startsWith(prefix)) n++;
    return n;
  }

  collect(prefix: string, frameBytes: number): TagData[] {
    const out: TagData[] = [];
    for (const rec of this.emu.records) {
      const tag = tagOf(rec);
      if (!tag.startsWith(prefix)) continue;
      const origin = this.opened.get(rec);
      if (origin === undefined) continue;
      let total = 0;
      for (const f of rec.frames) if (f.dir === 'in' && f.kind === 'binary') total += f.bytes ?? 0;
      const recv = new Float64Array(Math.ceil(total / frameBytes)).fill(NaN);
      const sent: number[] = [];
      const trigger: number[] = [];
      const text: string[] = [];
      let pos = 0;
      let next = 0; // next frame index to complete
      let closing = false;
      for (const f of rec.frames) {
        const at = perfToMono(origin + f.t);
        if (f.dir === 'in') {
          if (f.kind === 'binary') {
            pos += f.bytes ?? 0;
            while ((next + 1) * frameBytes <= pos) recv[next++] = at;
          } else if (f.kind === 'text' && f.text?.includes('CloseStream')) {
            closing = true;
          }
          continue;
        }
        if (closing || f.kind !== 'text' || !f.text?.startsWith('{"type":"Results"')) continue;
        const msg = JSON.parse(f.text) as { channel?: { alternatives?: Array<{ transcript?: string }> } };
        const t = msg.channel?.alternatives?.[0]?.transcript ?? '';
        if (t === '') continue;
        sent.push(at);
        trigger.push(Math.ceil(pos / frameBytes) - 1);
        text.push(t);
      }
      out.push({
        tag,
        url: rec.url,
        bytes: pos,
        recv,
        resultSent: Float64Array.from(sent),
        resultTrigger: Int32Array.from(trigger),
        resultText: text,
        close: rec.close ? { code: rec.close.code, by: rec.close.by } : null,
      });
    }
    return out;
  }

  reset(): void {
    const keepOpen = <T>(arr: T[], open: (x: T) => boolean): void => {
      const kept = arr.filter(open);
      arr.length = 0;
      arr.push(...kept);
    };
    keepOpen(this.emu.connections, (c) => !c.record.closed);
    keepOpen(this.emu.server.connections, (r) => !r.closed);
    keepOpen(this.emu.server.sessions, (s) => !s.record.closed);
    this.emu.server.rejected.length = 0;
    this.emu.server.httpRequests.length = 0;
  }

  rejectedCount(): number {
    return this.emu.rejected.length;
  }

  close(): Promise<void> {
    return this.emu.close();
  }
}

function tagOf(rec: ConnectionRecord): string {
  return rec.query['tag']?.[0] ?? '';
}

/** EmulatorApi over an EmulatorHost in this process. */
export function inProcessApi(host: EmulatorHost): EmulatorApi {
  return {
    port: host.port,
    openTags: async (prefix) => host.openTags(prefix),
    collect: async (prefix, frameBytes) => host.collect(prefix, frameBytes),
    reset: async () => host.reset(),
    cpuMicros: async () => {
      const u = process.cpuUsage();
      return u.user + u.system;
    },
    rejectedCount: async () => host.rejectedCount(),
    close: () => host.close(),
  };
}
