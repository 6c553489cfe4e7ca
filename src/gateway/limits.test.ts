import { describe, expect, it, vi } from 'vitest';
import { fileSchema } from '../config.ts';
import { GatewayMetrics } from '../metering/metrics.ts';
import { GatewayError, wsErrorEvent } from '../protocol/errors.ts';
import { Limits, MinuteWindow } from './limits.ts';
import { CLIENT_NOT_READING_CLOSE, ClientSink } from './send.ts';
import type { WsConnection } from './transport.ts';

function limitsWith(limits: unknown, now: () => number): Limits {
  const cfg = fileSchema.parse({ limits });
  return new Limits(cfg.limits, { metrics: new GatewayMetrics({ defaultMetrics: false }), now });
}

describe('MinuteWindow', () => {
  it('sums the last 60 one-second buckets and forgets older ones', () => {
    const w = new MinuteWindow();
    w.add(1000, 3);
    w.add(1030, 2);
    expect(w.sum(1030)).toBe(5);
    expect(w.sum(1059)).toBe(5);
    expect(w.sum(1060)).toBe(2);
    expect(w.sum(1089)).toBe(2);
    expect(w.sum(1090)).toBe(0);
    // A bucket reused 60 s later starts from zero.
    w.add(1060, 1);
    expect(w.sum(1060)).toBe(3);
  });

  it('secondsUntilBelow: how long until enough old buckets leave the window', () => {
    const w = new MinuteWindow();
    w.add(100, 5);
    w.add(110, 5);
    w.add(120, 5);
    expect(w.secondsUntilBelow(125, 15)).toBe(35); // bucket 100 leaves at 160
    expect(w.secondsUntilBelow(125, 6)).toBe(45); // buckets 100 and 110 must leave
    expect(w.secondsUntilBelow(125, 100)).toBe(1);
  });
});

describe('Limits', () => {
  it('LLM RPM: admits up to the limit in a sliding minute, Retry-After says when the oldest request leaves', () => {
    let now = 1_000_000;
    const l = limitsWith({ perKey: { '*': { llmRequestsPerMinute: 2 } } }, () => now);
    expect(l.admitLlm('k').error).toBeNull();
    now += 20_000;
    expect(l.admitLlm('k').headers).toEqual({ 'X-LiveKit-Inference-RPM-Limit': '2', 'X-LiveKit-Inference-RPM-Used': '2' });
    const refused = l.admitLlm('k');
    expect(refused.error?.status).toBe(429);
    expect(refused.headers['Retry-After']).toBe('40');
    now += 40_000;
    expect(l.admitLlm('k').error).toBeNull();
  });

  it('LLM TPM: tokens recorded at the end of a request count for 60 s', () => {
    let now = 5_000_000;
    const l = limitsWith({ perKey: { '*': { llmTokensPerMinute: 100 } } }, () => now);
    const first = l.admitLlm('k');
    expect(first.headers).toEqual({ 'X-LiveKit-Inference-TPM-Limit': '100', 'X-LiveKit-Inference-TPM-Used': '0' });
    l.recordLlmTokens('k', 60);
    expect(l.admitLlm('k').headers['X-LiveKit-Inference-TPM-Used']).toBe('60');
    l.recordLlmTokens('k', 60);
    now += 1000;
    const refused = l.admitLlm('k');
    expect(refused.error?.fields).toEqual({ category: 'LLMTokensPerMinute', remaining_limit: 0 });
    expect(refused.headers['Retry-After']).toBe('59');
    now += 59_000;
    expect(l.admitLlm('k').error).toBeNull();
  });

  it('session leases: release is idempotent and frees both the key and the process count', () => {
    const l = limitsWith({ maxSessionsPerProcess: 2, perKey: { '*': { maxSttSessions: 1 } } }, Date.now);
    const a = l.acquireSession('k', 'stt');
    if (!a.ok) throw new Error('expected admission');
    expect(l.acquireSession('k', 'stt').ok).toBe(false);
    a.lease.release();
    a.lease.release();
    expect(l.openSessions).toBe(0);
    expect(l.activeSessions('k', 'stt')).toBe(0);
    const b = l.acquireSession('k', 'stt');
    const c = l.acquireSession('j', 'tts');
    expect(b.ok && c.ok).toBe(true);
    const d = l.acquireSession('x', 'tts');
    expect(d.ok === false && d.error.status).toBe(503);
  });

  it('extra admission checks (budgets) run after the built-in limits', () => {
    const l = limitsWith({}, Date.now);
    l.addCheck((key, modality) => (key === 'broke' ? new GatewayError('rate_limited', `budget exhausted for ${modality}`, { category: 'Budget' }) : null));
    expect(l.acquireSession('rich', 'stt').ok).toBe(true);
    const s = l.acquireSession('broke', 'tts');
    expect(s.ok === false && s.error.message).toBe('budget exhausted for tts');
    expect(l.openSessions).toBe(1);
    expect(l.admitLlm('broke').error?.fields).toEqual({ category: 'Budget' });
  });

  it('a limit refusal as an STT error event has the protocol.md 2.7 shape', () => {
    const l = limitsWith({ perKey: { '*': { maxSttSessions: 0 } } }, Date.now);
    const r = l.acquireSession('k', 'stt');
    if (r.ok) throw new Error('expected a refusal');
    expect(JSON.parse(wsErrorEvent(r.error))).toEqual({
      type: 'error',
      code: 429,
      message: expect.stringMatching(/^STT connection limit exceeded/),
      category: 'MaxConcurrentGatewaySTT',
      remaining_limit: 0,
    });
    expect(r.error.retryable).toBe(true);
  });
});

/** A connection whose buffered amount the test controls. */
function fakeConn(): WsConnection & { sent: string[]; closes: number[]; terminated: number; buffered: number } {
  const c = {
    sent: [] as string[],
    closes: [] as number[],
    terminated: 0,
    buffered: 0,
    open: true,
    send(data: string | Buffer) {
      c.sent.push(String(data));
      c.buffered += Buffer.byteLength(String(data));
    },
    get bufferedAmount() {
      return c.buffered;
    },
    get isOpen() {
      return c.open;
    },
    close(code: number) {
      c.closes.push(code);
    },
    terminate() {
      c.terminated++;
      c.open = false;
    },
    onMessage() {},
    onClose() {},
  };
  return c;
}

describe('ClientSink (send.ts)', () => {
  it('a client that stops reading: bounded queue, then an error event, close 1013, and a drop after the grace', () => {
    vi.useFakeTimers();
    try {
      const conn = fakeConn();
      const overflow = vi.fn();
      const sink = new ClientSink(conn, { maxBufferedBytes: 1000, onOverflow: overflow, sessionId: 'stt_x' });
      const msg = 'x'.repeat(300);
      let accepted = 0;
      for (let i = 0; i < 100; i++) if (sink.send(msg)) accepted++;
      // Writes stop once more than the bound is queued: at most the bound plus one message.
      expect(accepted).toBe(4);
      const last = conn.sent.at(-1) as string;
      expect(JSON.parse(last)).toMatchObject({ type: 'error', code: 503, session_id: 'stt_x', message: expect.stringMatching(/not reading/) });
      expect(conn.buffered).toBeLessThanOrEqual(1000 + msg.length + last.length);
      expect(conn.closes).toEqual([CLIENT_NOT_READING_CLOSE]);
      expect(overflow).toHaveBeenCalledTimes(1);
      // The session's own terminate does not cut the queued error and close short...
      sink.terminate();
      expect(conn.terminated).toBe(0);
      // ...the grace timer does.
      vi.advanceTimersByTime(2000);
      expect(conn.terminated).toBe(1);
      expect(sink.send(msg)).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a reading client is never cut off and terminate works at once', () => {
    const conn = fakeConn();
    const sink = new ClientSink(conn, { maxBufferedBytes: 1000 });
    for (let i = 0; i < 100; i++) {
      expect(sink.send('y'.repeat(300))).toBe(true);
      conn.buffered = 0; // drained
    }
    sink.terminate();
    expect(conn.terminated).toBe(1);
    expect(conn.closes).toEqual([]);
  });
});
