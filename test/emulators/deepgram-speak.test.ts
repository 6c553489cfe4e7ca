import type { IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { DeepgramClient, type speak } from '@deepgram/sdk';
import { alawToLinear, mulawToLinear } from './audio.ts';
import { waitForEvent, withTimeout } from './base.ts';
import {
  BIG_0000_REASON,
  DATA_0000_REASON,
  DATA_0001_REASON,
  EMULATED_ERROR_REASON,
  FLUSH_LIMIT_WARNING_CODE,
  MESSAGE_0000_REASON,
  NET_0001_REASON,
  SPEAK_MODELS,
  TEXT_TOO_LONG_WARNING_CODE,
  linearToAlaw,
  linearToMulaw,
  speakBytes,
  speakModelUuid,
  startDeepgramSpeakEmulator,
  type DeepgramSpeakEmulator,
  type DeepgramSpeakEmulatorOptions,
  type SpeakCleared,
  type SpeakFlushed,
  type SpeakMetadata,
  type SpeakServerMessage,
  type SpeakWarning,
} from './deepgram-speak.ts';
import { charFrequency, dominantFrequency, renderText } from './tts-audio.ts';

// Compile-time proof that the emulator's messages fit the SDK's published types.
type Assignable<T, U extends T> = U;
export type _MetadataFitsSdk = Assignable<speak.SpeakV1Metadata, SpeakMetadata>;
export type _FlushedFitsSdk = Assignable<speak.SpeakV1Flushed, SpeakFlushed>;
export type _ClearedFitsSdk = Assignable<speak.SpeakV1Cleared, SpeakCleared>;
export type _WarningFitsSdk = Assignable<speak.SpeakV1Warning, SpeakWarning>;

const KEY = 'dg-test-key';
const auth = { Authorization: `Token ${KEY}` };
const Q = { model: 'aura-2-thalia-en', encoding: 'linear16', sample_rate: '24000' };

const emulators: DeepgramSpeakEmulator[] = [];
const clients: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: DeepgramSpeakEmulatorOptions = {}): Promise<DeepgramSpeakEmulator> {
  const emu = await startDeepgramSpeakEmulator(opts);
  emulators.push(emu);
  return emu;
}

type Event = { t: number; kind: 'bin'; data: Buffer } | { t: number; kind: 'json'; msg: SpeakServerMessage };

interface Client {
  ws: WebSocket;
  events: Event[];
  upgradeHeaders: IncomingHttpHeaders;
  closed: Promise<{ code: number; reason: string }>;
  isClosed(): boolean;
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  send(obj: unknown): void;
  json(): SpeakServerMessage[];
  audio(): Buffer;
  frames(): Buffer[];
  /** resolves the n-th (1-based) JSON message of this type */
  waitType<T extends SpeakServerMessage['type']>(type: T, n?: number, timeoutMs?: number): Promise<Extract<SpeakServerMessage, { type: T }>>;
}

async function connect(
  emu: DeepgramSpeakEmulator,
  query: Record<string, string> = Q,
  opts: { headers?: Record<string, string>; protocols?: string[] } = { headers: auth },
): Promise<Client> {
  const ws = new WebSocket(emu.speakUrl(query), opts.protocols ?? [], { headers: opts.headers });
  clients.push(ws);
  const events: Event[] = [];
  const t0 = performance.now();
  let isClosed = false;
  ws.on('message', (data: Buffer, isBinary) => {
    const t = performance.now() - t0;
    if (isBinary) events.push({ t, kind: 'bin', data });
    else events.push({ t, kind: 'json', msg: JSON.parse(data.toString()) as SpeakServerMessage });
    ws.emit('change');
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => {
      isClosed = true;
      resolve({ code, reason: reason.toString() });
      ws.emit('change');
    }),
  );
  let upgradeHeaders: IncomingHttpHeaders = {};
  ws.on('upgrade', (res) => (upgradeHeaders = res.headers));
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    }),
    3000,
    'client open',
  );
  const json = () => events.flatMap((e) => (e.kind === 'json' ? [e.msg] : []));
  const frames = () => events.flatMap((e) => (e.kind === 'bin' ? [e.data] : []));
  const waitFor = <T>(pred: () => T | undefined | null | false, timeoutMs = 2000, what = 'client condition') => waitForEvent(ws, 'change', pred, timeoutMs, what);
  return {
    ws,
    events,
    get upgradeHeaders() {
      return upgradeHeaders;
    },
    closed: withTimeout(closed, 5000, 'client close'),
    isClosed: () => isClosed,
    waitFor,
    send: (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)),
    json,
    frames,
    audio: () => Buffer.concat(frames()),
    waitType: (type, n = 1, timeoutMs = 2000) =>
      waitFor(() => json().filter((m) => m.type === type)[n - 1] as never, timeoutMs, `${type} #${n}`),
  };
}

interface Rejection {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function expectRejection(url: string, headers: Record<string, string> = {}): Promise<Rejection> {
  return withTimeout(
    new Promise<Rejection>((resolve, reject) => {
      const ws = new WebSocket(url, { headers });
      ws.on('open', () => {
        ws.terminate();
        reject(new Error('upgrade unexpectedly accepted'));
      });
      ws.on('error', () => {});
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
    }),
    3000,
    'rejection',
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** bytes of linear16 24 kHz audio for n characters at 60 ms each */
const L16 = (n: number) => Math.round(n * 0.06 * 24000) * 2;

describe('upgrade validation', () => {
  it('rejects missing or wrong credentials with 401, dg-error, dg-request-id and a JSON body', async () => {
    const emu = await start();
    const headerSets: Array<Record<string, string>> = [{}, { Authorization: 'Token nope' }, { Authorization: `Basic ${KEY}` }, { Authorization: 'Bearer nope' }];
    for (const headers of headerSets) {
      const r = await expectRejection(emu.speakUrl(Q), headers);
      expect(r.status).toBe(401);
      expect(r.headers['dg-error']).toBe('Invalid credentials.');
      const body = JSON.parse(r.body) as { err_code: string; err_msg: string; request_id: string };
      expect(body).toEqual({ err_code: 'INVALID_AUTH', err_msg: 'Invalid credentials.', request_id: r.headers['dg-request-id'] });
    }
    expect(emu.rejected.map((r) => r.status)).toEqual([401, 401, 401, 401]);
    expect(emu.connections).toHaveLength(0);
  });

  it('accepts Token, Bearer and the browser subprotocol, with dg-request-id on the 101', async () => {
    const emu = await start({ accessTokens: ['temp-jwt'] });
    const a = await connect(emu, Q, { headers: { Authorization: `token ${KEY}` } });
    await connect(emu, Q, { headers: { Authorization: 'Bearer temp-jwt' } });
    const c = await connect(emu, Q, { protocols: ['token', KEY] });
    expect(c.ws.protocol).toBe('token');
    expect(emu.connections.map((x) => [x.auth.scheme, x.auth.via])).toEqual([
      ['token', 'header'],
      ['bearer', 'header'],
      ['token', 'subprotocol'],
    ]);
    expect(a.upgradeHeaders['dg-request-id']).toBe(emu.connections[0]!.requestId);
    const r = await expectRejection(emu.speakUrl(Q), { Authorization: 'Token temp-jwt' });
    expect(r.status).toBe(401);
  });

  it('rejects unknown voices and bad parameters with 400 and the vendor error shape', async () => {
    const emu = await start();
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ ...Q, model: 'aura-2-nobody-en' }, /^No such model\/version combination found\.$/],
      [{ ...Q, model: 'aura-2-perseo-it' }, /No such model/],
      [{ ...Q, model: 'nova-3' }, /No such model/],
      [{ ...Q, encoding: 'mp3' }, /encoding/],
      [{ ...Q, sample_rate: '44100' }, /sample_rate/],
      [{ ...Q, sample_rate: 'fast' }, /sample_rate/],
      [{ ...Q, encoding: 'mulaw', sample_rate: '24000' }, /sample_rate.*mulaw/],
      [{ ...Q, encoding: 'alaw', sample_rate: '48000' }, /sample_rate.*alaw/],
      [{ ...Q, speed: '2.0' }, /speed/],
      [{ ...Q, speed: '0.5' }, /speed/],
      [{ ...Q, speed: 'abc' }, /speed/],
      [{ ...Q, mip_opt_out: 'False' }, /mip_opt_out/],
    ];
    for (const [query, msg] of cases) {
      const r = await expectRejection(emu.speakUrl(query), auth);
      expect(r.status, JSON.stringify(query)).toBe(400);
      const body = JSON.parse(r.body) as { err_msg: string; request_id: string };
      expect(body.err_msg).toMatch(msg);
      expect(r.headers['dg-error']).toBe(body.err_msg);
      expect(r.headers['dg-request-id']).toBe(body.request_id);
    }
    // auth is checked first
    expect((await expectRejection(emu.speakUrl({ model: 'nope' }), {})).status).toBe(401);
    expect(emu.connections).toHaveLength(0);
  });

  it('applies documented defaults and lists unknown keys; 404 on other paths', async () => {
    const emu = await start();
    const c = await connect(emu, {});
    const md = await c.waitType('Metadata');
    expect(md.model_name).toBe('aura-asteria-en');
    const conn = emu.connections[0]!;
    expect(conn.params).toMatchObject({ model: 'aura-asteria-en', encoding: 'linear16', sampleRate: 24000, speed: 1, mipOptOut: null });
    await connect(emu, { model: 'aura-2-sirio-es', encoding: 'mulaw', mip_opt_out: 'true', foo: 'bar' });
    expect(emu.connections[1]!.params).toMatchObject({ encoding: 'mulaw', sampleRate: 8000, mipOptOut: true, unknown: ['foo'] });
    const r = await expectRejection(`${emu.wsUrl}/v1/listen?model=aura-2-thalia-en`, auth);
    expect(r.status).toBe(404);
    expect(SPEAK_MODELS).toContain('aura-2-uzume-ja');
    expect(SPEAK_MODELS).toContain('aura-zeus-en');
  });

  it('answers 429 past maxConcurrent open sockets per key, and accepts again after a close', async () => {
    const emu = await start({ maxConcurrent: 1, apiKeys: [KEY, 'other'] });
    const a = await connect(emu);
    const r = await expectRejection(emu.speakUrl(Q), auth);
    expect(r.status).toBe(429);
    expect(JSON.parse(r.body).err_code).toBe('TOO_MANY_REQUESTS');
    await connect(emu, Q, { headers: { Authorization: 'Token other' } }); // other key: own budget
    a.send({ type: 'Close' });
    await emu.waitForClose(emu.connections[0]);
    await connect(emu);
    expect(emu.connections).toHaveLength(3);
  });
});

describe('synthesis', () => {
  it('sends Metadata first, audio only after Flush, exact bytes, then Flushed', async () => {
    const emu = await start();
    const c = await connect(emu);
    const md = await c.waitType('Metadata');
    expect(md).toEqual({
      type: 'Metadata',
      request_id: emu.connections[0]!.requestId,
      model_name: 'aura-2-thalia-en',
      model_version: expect.any(String) as string,
      model_uuid: speakModelUuid('aura-2-thalia-en'),
      additional_model_uuids: [],
    });
    c.send({ type: 'Speak', text: 'Hello' });
    c.send({ type: 'Speak', text: ' world' });
    await sleep(80);
    expect(c.frames()).toHaveLength(0); // nothing is synthesized without a Flush
    c.send({ type: 'Flush' });
    const f = await c.waitType('Flushed');
    expect(f.sequence_id).toBe(0);
    const audio = c.audio();
    expect(audio.length).toBe(L16(11));
    expect(audio.equals(renderText('Hello world', 24000))).toBe(true);
    // every frame is chunkMs (50 ms = 2400 bytes) except the last; Flushed comes after the audio
    const sizes = c.frames().map((b) => b.length);
    expect(sizes.slice(0, -1).every((s) => s === 2400)).toBe(true);
    expect(sizes[sizes.length - 1]).toBe(L16(11) % 2400 || 2400);
    expect(c.events[c.events.length - 1]).toMatchObject({ kind: 'json', msg: { type: 'Flushed' } });

    const conn = emu.connections[0]!;
    expect(conn.speaks.map((s) => s.text)).toEqual(['Hello', ' world']);
    expect(conn.segments).toHaveLength(1);
    expect(conn.segments[0]).toMatchObject({ index: 0, text: 'Hello world', chars: 11, status: 'done', sequenceId: 0, charsSent: 11, audioBytes: L16(11) });
    expect(conn.segments[0]!.audioSeconds).toBeCloseTo(0.66, 6);
    expect(conn).toMatchObject({ chars: 11, charsReceived: 11, charsSent: 11, audioBytes: L16(11), buffer: '' });
    expect(conn.audioSeconds).toBeCloseTo(0.66, 6);
    expect(conn.record.audioSeconds).toBeCloseTo(0.66, 6);
  });

  it('keeps one sequence per flush segment; an empty Flush answers at once with no audio', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    const c = await connect(emu);
    c.send({ type: 'Speak', text: 'ab' });
    c.send({ type: 'Flush' });
    c.send({ type: 'Speak', text: 'cde' });
    c.send({ type: 'Flush' });
    c.send({ type: 'Flush' });
    await c.waitType('Flushed', 3);
    // stream: audio(ab) Flushed0 audio(cde) Flushed1 Flushed2
    const kinds = c.events.filter((e) => !(e.kind === 'json' && e.msg.type === 'Metadata'));
    const summary: string[] = [];
    let bytes = 0;
    for (const e of kinds) {
      if (e.kind === 'bin') bytes += e.data.length;
      else {
        summary.push(`${bytes}:${e.msg.type}${(e.msg as SpeakFlushed).sequence_id}`);
        bytes = 0;
      }
    }
    expect(summary).toEqual([`${L16(2)}:Flushed0`, `${L16(3)}:Flushed1`, '0:Flushed2']);
    const conn = emu.connections[0]!;
    expect(conn.segments.map((s) => [s.text, s.chars, s.sequenceId, s.status])).toEqual([
      ['ab', 2, 0, 'done'],
      ['cde', 3, 1, 'done'],
      ['', 0, 2, 'done'],
    ]);
    expect(conn.counts).toMatchObject({ speak: 2, flush: 3, flushRejected: 0 });
  });

  it('renders mulaw/alaw at 8 kHz and linear16 at 48 kHz with the right size and tones', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    const text = 'kkkkk';
    for (const [encoding, sample_rate, decode] of [
      ['mulaw', '8000', mulawToLinear],
      ['alaw', '16000', alawToLinear],
    ] as const) {
      const c = await connect(emu, { model: 'aura-2-thalia-en', encoding, sample_rate });
      c.send({ type: 'Speak', text });
      c.send({ type: 'Flush' });
      await c.waitType('Flushed');
      const bytes = c.audio();
      const rate = Number(sample_rate);
      expect(bytes.length).toBe(5 * 0.06 * rate);
      expect(bytes.length).toBe(speakBytes(text, { encoding, sampleRate: rate }));
      const pcm = Buffer.alloc(bytes.length * 2);
      for (let i = 0; i < bytes.length; i++) pcm.writeInt16LE(decode(bytes[i]!), i * 2);
      const candidates = [charFrequency('a'), charFrequency('k'), charFrequency('z'), 400, 1000];
      expect(dominantFrequency(pcm, rate, candidates)).toBe(charFrequency('k'));
    }
    const c = await connect(emu, { encoding: 'linear16', sample_rate: '48000' });
    c.send({ type: 'Speak', text: 'abc' });
    c.send({ type: 'Flush' });
    await c.waitType('Flushed');
    expect(c.audio().equals(renderText('abc', 48000))).toBe(true);
  });

  it('scales the duration by speed', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    const c = await connect(emu, { ...Q, speed: '1.5' });
    c.send({ type: 'Speak', text: 'abcdefghij' });
    c.send({ type: 'Flush' });
    await c.waitType('Flushed');
    expect(c.audio().length).toBe(10 * 0.04 * 24000 * 2); // 60 ms / 1.5 per character
    expect(emu.connections[0]!.segments[0]!.totalAudioSeconds).toBeCloseTo(0.4, 6);
  });

  it('G.711 encoders round-trip through the audio.ts decoders', () => {
    for (let x = -32768; x <= 32767; x += 97) {
      const mu = mulawToLinear(linearToMulaw(x));
      const a = alawToLinear(linearToAlaw(x));
      const tol = Math.max(16, Math.abs(x) / 16);
      expect(Math.abs(mu - x)).toBeLessThanOrEqual(tol + 132);
      expect(Math.abs(a - x)).toBeLessThanOrEqual(tol + 16);
    }
    expect(linearToMulaw(0)).toBe(0xff);
    expect(linearToAlaw(0)).toBe(0xd5);
  });
});

describe('timing', () => {
  it('waits firstAudioDelayMs before the first frame and paces frames at chunkMs / realtimeFactor', async () => {
    const emu = await start({ firstAudioDelayMs: 120, chunkMs: 100, realtimeFactor: 4 });
    const c = await connect(emu);
    await c.waitType('Metadata');
    c.send({ type: 'Speak', text: 'abcdefghijklmnopqrst' }); // 1.2 s = 12 frames of 100 ms
    const sentAt = performance.now();
    c.send({ type: 'Flush' });
    await c.waitFor(() => c.frames().length >= 1);
    expect(performance.now() - sentAt).toBeGreaterThanOrEqual(115);
    await c.waitType('Flushed');
    // frame k is due firstAudioDelayMs + k * 25 ms after the Flush (timers never fire early)
    expect(performance.now() - sentAt).toBeGreaterThanOrEqual(120 + 11 * 25 - 10);
    expect(c.frames()).toHaveLength(12);
    const seg = emu.connections[0]!.segments[0]!;
    expect(seg.firstAudioAt! - seg.flushAt).toBeGreaterThanOrEqual(115);
    expect(seg.doneAt! - seg.flushAt).toBeGreaterThanOrEqual(120 + 11 * 25 - 10);
    expect(seg.frames).toBe(12);
  });

  it('per-connection timing can be changed live (e.g. a slow first audio for keepalive tests)', async () => {
    const emu = await start();
    const c = await connect(emu);
    const conn = await emu.waitForConnection();
    conn.timing.firstAudioDelayMs = 250;
    conn.timing.realtimeFactor = Infinity;
    c.send({ type: 'Speak', text: 'hi' });
    const sentAt = performance.now();
    c.send({ type: 'Flush' });
    await c.waitType('Flushed', 1, 3000);
    const firstBin = c.events.find((e) => e.kind === 'bin')!;
    expect(firstBin.t).toBeGreaterThan(0);
    expect(performance.now() - sentAt).toBeGreaterThanOrEqual(245);
    expect(conn.segments[0]!.firstAudioAt! - conn.segments[0]!.flushAt).toBeGreaterThanOrEqual(245);
  });

  it('closes 1011 NET-0001 after idleTimeoutMs without a client message, but never while generating', async () => {
    const emu = await start({ idleTimeoutMs: 150, chunkMs: 60, realtimeFactor: 2, firstAudioDelayMs: 0 });
    const c = await connect(emu);
    c.send({ type: 'Speak', text: 'abcdefgh' }); // 8 frames of 60 ms, 30 ms apart: 210 ms of generation > idle
    const sentAt = performance.now();
    c.send({ type: 'Flush' });
    await c.waitType('Flushed', 1, 2000);
    expect(performance.now() - sentAt).toBeGreaterThanOrEqual(7 * 30 - 5); // last of 8 frames, 30 ms apart
    const closed = await c.closed;
    expect(closed).toEqual({ code: 1011, reason: NET_0001_REASON });
    expect(c.audio().length).toBe(L16(8));
    const conn = await emu.waitForClose();
    expect(conn.record.close).toMatchObject({ code: 1011, by: 'server' });

    const emu2 = await start({ idleTimeoutMs: 120 });
    const d = await connect(emu2);
    const t0 = performance.now();
    await sleep(60);
    d.send({ type: 'Speak', text: 'x' }); // resets the timer
    expect((await d.closed).code).toBe(1011);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(170);
  });
});

describe('Clear, Close and the Flush limit', () => {
  it('Clear stops the generation, drops queued segments and unflushed text, answers Cleared', async () => {
    const emu = await start({ chunkMs: 20, realtimeFactor: 1, firstAudioDelayMs: 0 });
    const c = await connect(emu);
    c.send({ type: 'Speak', text: 'a'.repeat(30) }); // 1.8 s, real time
    c.send({ type: 'Flush' });
    c.send({ type: 'Speak', text: 'queued' });
    c.send({ type: 'Flush' });
    c.send({ type: 'Speak', text: 'never flushed' });
    await c.waitFor(() => c.frames().length >= 3);
    c.send({ type: 'Clear' });
    const cleared = await c.waitType('Cleared');
    expect(cleared.sequence_id).toBe(0);
    const idx = c.events.findIndex((e) => e.kind === 'json' && e.msg.type === 'Cleared');
    await sleep(100);
    expect(c.events.slice(idx + 1)).toEqual([]); // no audio and no Flushed after Cleared
    expect(c.json().some((m) => m.type === 'Flushed')).toBe(false);

    const conn = emu.connections[0]!;
    const [s0, s1] = conn.segments;
    expect(s0).toMatchObject({ status: 'cleared', text: 'a'.repeat(30), sequenceId: null });
    expect(s1).toMatchObject({ status: 'cleared', text: 'queued', audioBytes: 0 });
    expect(s0!.audioSeconds + s0!.droppedAudioSeconds).toBeCloseTo(1.8, 5);
    expect(s0!.audioBytes).toBe(c.audio().length);
    expect(s1!.droppedAudioSeconds).toBeCloseTo(0.36, 6);
    expect(conn.clears).toEqual([
      {
        at: expect.any(Number) as number,
        sequenceId: 0,
        droppedText: 'never flushed',
        droppedChars: 13,
        segments: [0, 1],
        droppedAudioSeconds: expect.any(Number) as number,
      },
    ]);
    expect(conn.clears[0]!.droppedAudioSeconds).toBeCloseTo(s0!.droppedAudioSeconds + 0.36, 5);
    expect(conn.chars).toBe(36); // both segments were submitted for synthesis
    expect(conn.charsSent).toBeLessThan(30);

    // the socket keeps working after a Clear; the sequence continues
    conn.timing.realtimeFactor = Infinity;
    c.send({ type: 'Speak', text: 'ok' });
    c.send({ type: 'Flush' });
    expect((await c.waitType('Flushed')).sequence_id).toBe(1);
    expect(conn.segments[2]).toMatchObject({ text: 'ok', status: 'done', audioBytes: L16(2) });
  });

  it('Clear with nothing pending still answers Cleared and empties the buffer', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    const c = await connect(emu);
    c.send({ type: 'Speak', text: 'abc' });
    c.send({ type: 'Clear' });
    c.send({ type: 'Speak', text: 'de' });
    c.send({ type: 'Flush' });
    await c.waitType('Flushed');
    expect(c.audio().length).toBe(L16(2));
    expect(c.json().filter((m) => m.type !== 'Metadata')).toEqual([
      { type: 'Cleared', sequence_id: 0 },
      { type: 'Flushed', sequence_id: 1 },
    ]);
    expect(emu.connections[0]!.clears[0]).toMatchObject({ droppedText: 'abc', droppedChars: 3, segments: [], droppedAudioSeconds: 0 });
  });

  it('Close closes 1000 at once, even mid-generation, discarding pending audio', async () => {
    const emu = await start({ chunkMs: 20, realtimeFactor: 1, firstAudioDelayMs: 0 });
    const c = await connect(emu);
    c.send({ type: 'Speak', text: 'a'.repeat(50) });
    c.send({ type: 'Flush' });
    await c.waitFor(() => c.frames().length >= 2);
    c.send({ type: 'Close' });
    expect(await c.closed).toEqual({ code: 1000, reason: '' });
    const conn = await emu.waitForClose();
    expect(conn.record.close).toMatchObject({ code: 1000, by: 'server' });
    expect(conn.counts.close).toBe(1);
    expect(conn.segments[0]!.status).toBe('aborted');
    expect(conn.segments[0]!.droppedAudioSeconds).toBeGreaterThan(2);
    expect(c.json().some((m) => m.type === 'Flushed')).toBe(false);
  });

  it('warns past flushLimit per window, keeps the text buffered, and accepts again after the window', async () => {
    const emu = await start({ flushLimit: 3, flushWindowMs: 300, realtimeFactor: Infinity, firstAudioDelayMs: 0 });
    const c = await connect(emu);
    for (const t of ['a', 'b', 'c', 'd']) {
      c.send({ type: 'Speak', text: t });
      c.send({ type: 'Flush' });
    }
    const w = await c.waitType('Warning');
    expect(w.code).toBe(FLUSH_LIMIT_WARNING_CODE);
    expect(w.description).toMatch(/3 Flush/);
    await c.waitType('Flushed', 3);
    const conn = emu.connections[0]!;
    expect(conn.counts).toMatchObject({ flush: 4, flushRejected: 1, warnings: 1 });
    expect(conn.buffer).toBe('d');
    expect(conn.segments.map((s) => s.text)).toEqual(['a', 'b', 'c']);
    await sleep(320);
    c.send({ type: 'Flush' });
    expect((await c.waitType('Flushed', 4)).sequence_id).toBe(3);
    expect(conn.segments[3]).toMatchObject({ text: 'd', status: 'done' });
    expect(c.audio().length).toBe(L16(4));
  });
});

describe('limits and invalid messages', () => {
  it('closes 1009 BIG-0000 on a Speak longer than maxSpeakChars (code points)', async () => {
    const emu = await start({ maxSpeakChars: 10 });
    const c = await connect(emu);
    c.send({ type: 'Speak', text: '😀'.repeat(10) }); // 10 code points, 20 UTF-16 units: accepted
    c.send({ type: 'Speak', text: 'x'.repeat(11) });
    expect(await c.closed).toEqual({ code: 1009, reason: BIG_0000_REASON });
    const conn = await emu.waitForClose();
    expect(conn.speaks.map((s) => [s.chars, s.accepted])).toEqual([
      [10, true],
      [11, false],
    ]);
  });

  it("with speakTooLong 'warning' sends a Warning and drops only that text", async () => {
    const emu = await start({ maxSpeakChars: 5, speakTooLong: 'warning', realtimeFactor: Infinity });
    const c = await connect(emu);
    c.send({ type: 'Speak', text: 'abc' });
    c.send({ type: 'Speak', text: 'toolong' });
    c.send({ type: 'Flush' });
    expect((await c.waitType('Warning')).code).toBe(TEXT_TOO_LONG_WARNING_CODE);
    await c.waitType('Flushed');
    expect(c.audio().length).toBe(L16(3));
    expect(emu.connections[0]!.charsReceived).toBe(3);
  });

  it('closes 1003 on binary, 1008 DATA-0000 on non-JSON, 1008 DATA-0001 on unknown messages', async () => {
    const emu = await start();
    const cases: Array<[string | Buffer, number, string]> = [
      [Buffer.from([1, 2, 3]), 1003, MESSAGE_0000_REASON],
      ['hello', 1008, DATA_0000_REASON],
      [JSON.stringify({ type: 'KeepAlive' }), 1008, DATA_0001_REASON],
      [JSON.stringify({ type: 'Speak' }), 1008, DATA_0001_REASON],
      [JSON.stringify({ type: 'Speak', text: 42 }), 1008, DATA_0001_REASON],
      [JSON.stringify([1, 2]), 1008, DATA_0001_REASON],
    ];
    for (const [data, code, reason] of cases) {
      const c = await connect(emu);
      c.ws.send(data);
      expect(await c.closed).toEqual({ code, reason });
    }
    await emu.waitFor(() => emu.connections.every((x) => x.record.closed));
    expect(emu.connections.map((x) => x.counts.invalid)).toEqual([1, 1, 1, 1, 1, 1]);
  });
});

describe('faults', () => {
  it('closeAfterChars closes mid-generation with the given code after exactly that many characters', async () => {
    const emu = await start({ chunkMs: 60, realtimeFactor: Infinity, firstAudioDelayMs: 0 });
    emu.speakFaults.closeAfterChars = { chars: 5 };
    const c = await connect(emu);
    c.send({ type: 'Speak', text: 'abcdefghij' });
    c.send({ type: 'Flush' });
    expect(await c.closed).toEqual({ code: 1011, reason: EMULATED_ERROR_REASON });
    expect(c.audio().length).toBe(L16(5)); // one 60 ms frame per character
    const conn = await emu.waitForClose();
    expect(conn.charsSent).toBe(5);
    expect(conn.segments[0]).toMatchObject({ status: 'aborted', charsSent: 5 });
    expect(conn.segments[0]!.droppedAudioSeconds).toBeCloseTo(0.3, 6);
  });

  it('dropAfterChars destroys the TCP socket (1006); speakFaultNext targets only the next connection', async () => {
    const emu = await start({ chunkMs: 60, realtimeFactor: Infinity, firstAudioDelayMs: 0 });
    emu.speakFaultNext({ dropAfterChars: 3 });
    const c = await connect(emu);
    c.send({ type: 'Speak', text: 'abcdef' });
    c.send({ type: 'Flush' });
    expect((await c.closed).code).toBe(1006);
    const conn = await emu.waitForClose();
    expect(conn.record.close?.by).toBe('drop');
    const d = await connect(emu);
    d.send({ type: 'Speak', text: 'abcdef' });
    d.send({ type: 'Flush' });
    await d.waitType('Flushed');
    expect(d.audio().length).toBe(L16(6));
  });

  it('stallAfterChars freezes the generation (no Flushed) until a Clear; swallowCleared hides Cleared', async () => {
    const emu = await start({ chunkMs: 60, realtimeFactor: Infinity, firstAudioDelayMs: 0 });
    const c = await connect(emu);
    const conn = await emu.waitForConnection();
    conn.speakFaults = { stallAfterChars: 4 };
    c.send({ type: 'Speak', text: 'abcdefgh' });
    c.send({ type: 'Flush' });
    await c.waitFor(() => c.frames().length >= 4);
    await sleep(100);
    expect(c.frames()).toHaveLength(4);
    expect(conn.segments[0]).toMatchObject({ status: 'generating', stalled: true });
    c.send({ type: 'Clear' });
    await c.waitType('Cleared');
    expect(conn.segments[0]).toMatchObject({ status: 'cleared', charsSent: 4 });
    expect(conn.segments[0]!.droppedAudioSeconds).toBeCloseTo(0.24, 6);

    conn.speakFaults = { swallowCleared: true };
    c.send({ type: 'Clear' });
    await emu.waitFor(() => conn.clears.length === 2);
    await sleep(50);
    expect(c.json().filter((m) => m.type === 'Cleared')).toHaveLength(1);
    expect(conn.clears[1]!.sequenceId).toBeNull();
  });

  it('base faults: refuseUpgrade, outDelayMs, deadAir, dropAfterAudioSec', async () => {
    const emu = await start({ realtimeFactor: Infinity, firstAudioDelayMs: 0 });
    emu.faultNext({ refuseUpgrade: { status: 503, message: 'Service Unavailable' } });
    const r = await expectRejection(emu.speakUrl(Q), auth);
    expect(r.status).toBe(503);
    expect(JSON.parse(r.body)).toMatchObject({ err_msg: 'Service Unavailable' });

    emu.faultNext({ outDelayMs: 120 });
    const t0 = performance.now();
    const a = await connect(emu);
    await a.waitType('Metadata');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(115);

    emu.faultNext({ deadAir: true });
    const b = await connect(emu);
    b.send({ type: 'Speak', text: 'abc' });
    b.send({ type: 'Flush' });
    const bc = await emu.waitForConnection(2);
    await emu.waitForSegment(bc, 0);
    await sleep(30);
    expect(b.events).toEqual([]);
    expect(bc.record.suppressed).toBeGreaterThanOrEqual(3); // Metadata, audio, Flushed
    expect(bc.audioSeconds).toBe(0);
    expect(bc.record.frames.filter((f) => f.dir === 'out')).toEqual([]);

    emu.faultNext({ dropAfterAudioSec: 0.1 });
    const d = await connect(emu);
    d.send({ type: 'Speak', text: 'abcdefghij' });
    d.send({ type: 'Flush' });
    expect((await d.closed).code).toBe(1006);
    const dc = await emu.waitForClose(emu.connections[3]);
    expect(dc.record.close?.by).toBe('drop');
    expect(dc.record.audioSeconds).toBeCloseTo(0.1, 6); // two 50 ms frames reach 0.1 s
    expect(d.audio().length).toBeLessThanOrEqual(2 * 2400);
  });
});

describe('wire record', () => {
  it('records every frame in order with the texts received', async () => {
    const emu = await start({ realtimeFactor: Infinity, recordAudio: true });
    const c = await connect(emu);
    c.send({ type: 'Speak', text: 'hi' });
    c.send({ type: 'Flush' });
    await c.waitType('Flushed');
    c.send({ type: 'Close' });
    await c.closed;
    const rec = (await emu.waitForClose()).record;
    expect(rec.path).toBe('/v1/speak');
    expect(rec.query['model']).toEqual(['aura-2-thalia-en']);
    expect(rec.headers['authorization']).toBe(`Token ${KEY}`);
    const wire = rec.frames.map((f) => `${f.dir}:${f.kind}:${f.kind === 'text' ? JSON.parse(f.text!).type : f.kind === 'binary' ? f.bytes : f.code}`);
    expect(wire[0]).toBe('out:text:Metadata');
    expect(wire).toContain('in:text:Speak');
    expect(wire.slice(-3)).toEqual(['in:text:Close', 'out:close:1000', 'in:close:1000']);
    const audio = Buffer.concat(rec.frames.filter((f) => f.dir === 'out' && f.kind === 'binary').map((f) => f.data!));
    expect(audio.equals(renderText('hi', 24000))).toBe(true);
  });
});

describe('REST POST /v1/speak', () => {
  const post = (emu: DeepgramSpeakEmulator, query: string, body: unknown, headers: Record<string, string> = auth) =>
    fetch(`${emu.url}/v1/speak?${query}`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body) });

  it('streams raw linear16 or a WAV, with dg headers and a record', async () => {
    const emu = await start();
    const r = await post(emu, 'model=aura-2-thalia-en&encoding=linear16&container=none', { text: 'Hello' });
    expect(r.status).toBe(200);
    expect(r.headers.get('dg-char-count')).toBe('5');
    expect(r.headers.get('dg-model-name')).toBe('aura-2-thalia-en');
    const raw = Buffer.from(await r.arrayBuffer());
    expect(raw.equals(renderText('Hello', 24000))).toBe(true);

    const w = await post(emu, 'model=aura-2-thalia-en&encoding=mulaw', { text: 'abcd' });
    expect(w.headers.get('content-type')).toBe('audio/wav');
    const wav = Buffer.from(await w.arrayBuffer());
    expect(wav.toString('latin1', 0, 4)).toBe('RIFF');
    expect(wav.readUInt16LE(20)).toBe(7); // mu-law
    expect(wav.readUInt32LE(24)).toBe(8000);
    expect(wav.readUInt32LE(40)).toBe(4 * 0.06 * 8000);
    expect(wav.length).toBe(44 + 4 * 0.06 * 8000);
    await emu.waitFor(() => emu.restRequests.every((x) => x.done));
    expect(emu.restRequests.map((x) => [x.status, x.text, x.chars, x.audioBytes, x.aborted])).toEqual([
      [200, 'Hello', 5, L16(5), false],
      [200, 'abcd', 4, 1920, false],
    ]);
  });

  it('counts requests in flight toward maxConcurrent (429) and records a client abort', async () => {
    const emu = await start({ maxConcurrent: 1, chunkMs: 20, realtimeFactor: 1, firstAudioDelayMs: 0 });
    const ac = new AbortController();
    const slow = await fetch(`${emu.url}/v1/speak?encoding=linear16&container=none`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...auth },
      body: JSON.stringify({ text: 'a'.repeat(100) }), // 6 s in real time
      signal: ac.signal,
    });
    expect(slow.status).toBe(200);
    const busy = await post(emu, 'encoding=linear16', { text: 'b' });
    expect(busy.status).toBe(429);
    await busy.arrayBuffer();
    // a WebSocket counts against the same budget
    expect((await expectRejection(emu.speakUrl(Q), auth)).status).toBe(429);
    ac.abort();
    const rec = await emu.waitFor(() => emu.restRequests.find((x) => x.text === 'a'.repeat(100) && x.done), 2000, 'abort recorded');
    expect(rec.aborted).toBe(true);
    expect(rec.audioSeconds).toBeLessThan(6);
    const ok = await post(emu, 'encoding=linear16&container=none', { text: 'c' });
    expect(ok.status).toBe(200);
    expect((await ok.arrayBuffer()).byteLength).toBe(L16(1));
  });

  it('answers 401, 400 (model, encoding it cannot render, body, length) and 404 with the vendor shape', async () => {
    const emu = await start({ maxSpeakChars: 10 });
    const cases: Array<[string, unknown, Record<string, string>, number, RegExp]> = [
      ['encoding=linear16', { text: 'a' }, {}, 401, /Invalid credentials/],
      ['encoding=linear16&model=aura-2-nobody-en', { text: 'a' }, auth, 400, /No such model/],
      ['model=aura-2-thalia-en', { text: 'a' }, auth, 400, /mp3/], // the API's default encoding
      ['encoding=linear16&container=ogg', { text: 'a' }, auth, 400, /container/],
      ['encoding=linear16', { nope: 1 }, auth, 400, /text/],
      ['encoding=linear16', { text: 'x'.repeat(11) }, auth, 400, /exceeds/],
    ];
    for (const [query, body, headers, status, msg] of cases) {
      const r = await post(emu, query, body, headers);
      expect(r.status, query).toBe(status);
      const j = (await r.json()) as { err_msg: string; request_id: string };
      expect(j.err_msg).toMatch(msg);
      expect(r.headers.get('dg-request-id')).toBe(j.request_id);
      expect(r.headers.get('dg-error')).toBe(j.err_msg);
    }
    const nf = await fetch(`${emu.url}/v1/nope`, { method: 'POST', headers: auth, body: '{}' });
    expect(nf.status).toBe(404);
    await nf.arrayBuffer();
  });
});

describe('@deepgram/sdk as a client', () => {
  it('speaks over the SDK WebSocket: Metadata, Blob audio, Flushed, Close -> 1000', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    const client = new DeepgramClient({ apiKey: KEY, baseUrl: emu.url, reconnect: false });
    const socket = await client.speak.v1.connect({ model: 'aura-2-thalia-en', encoding: 'linear16', sample_rate: '24000', reconnectAttempts: 0 });
    const blobs: Blob[] = [];
    const messages: Array<{ type: string }> = [];
    let onFlushed: () => void = () => {};
    const flushed = new Promise<void>((resolve) => (onFlushed = resolve));
    socket.on('message', (m: unknown) => {
      if (m instanceof Blob) blobs.push(m);
      else if (m && typeof m === 'object') messages.push(m as { type: string });
      if (messages.some((x) => x.type === 'Flushed')) onFlushed();
    });
    const closed = new Promise<number>((resolve) => socket.on('close', (e) => resolve(e.code)));
    socket.connect();
    await withTimeout(socket.waitForOpen(), 3000, 'sdk open');
    socket.sendText({ type: 'Speak', text: 'Hello world' });
    socket.sendFlush({ type: 'Flush' });
    await withTimeout(flushed, 3000, 'sdk Flushed');
    expect(messages[0]!.type).toBe('Metadata');
    const total = (await Promise.all(blobs.map((b) => b.arrayBuffer()))).reduce((a, b) => a + b.byteLength, 0);
    expect(total).toBe(L16(11));
    socket.sendClose({ type: 'Close' });
    expect(await withTimeout(closed, 3000, 'sdk close')).toBe(1000);
    expect(emu.connections[0]!.record.headers['authorization']).toBe(`Token ${KEY}`);
    socket.close();
  });

  it('generates over the SDK REST client', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    const client = new DeepgramClient({ apiKey: KEY, baseUrl: emu.url });
    const res = await client.speak.v1.audio.generate({ text: 'abc', model: 'aura-2-thalia-en', encoding: 'linear16', container: 'none', sample_rate: 16000 });
    const buf = Buffer.from(await res.arrayBuffer());
    expect(buf.equals(renderText('abc', 16000))).toBe(true);
  });
});
