import type { IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { alawToLinear, mulawToLinear } from './audio.ts';
import { GARBAGE_TEXT, waitForEvent, withTimeout } from './base.ts';
import {
  DEFAULT_API_KEY,
  IDLE_CLOSE_REASON,
  INJECTED_ERROR_MESSAGE,
  LATEST_VERSION,
  TTS_SAMPLE_RATES,
  startCartesiaEmulator,
  type CartesiaChunk,
  type CartesiaEmulator,
  type CartesiaEmulatorOptions,
  type CartesiaError2025,
  type CartesiaError2026,
  type CartesiaTimestamps,
  type CartesiaTtsMessage,
  type RawEncoding,
} from './cartesia.ts';
import { charFrequency, dominantFrequency, renderText, ttsTimings } from './tts-audio.ts';

const KEY = DEFAULT_API_KEY;
const V2026 = '2026-08-14';
const V2025 = '2025-04-16';

const emulators: CartesiaEmulator[] = [];
const clients: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: CartesiaEmulatorOptions = {}): Promise<CartesiaEmulator> {
  const emu = await startCartesiaEmulator(opts);
  emulators.push(emu);
  return emu;
}

interface Received {
  msg: CartesiaTtsMessage;
  /** performance.now() at receipt */
  at: number;
}

interface Client {
  ws: WebSocket;
  received: Received[];
  texts: string[];
  upgradeHeaders: IncomingHttpHeaders;
  openedAt: number;
  closed: Promise<{ code: number; reason: string; at: number }>;
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  send(obj: unknown): void;
  /** messages of a context (or without context_id when null) */
  of(contextId: string | null): CartesiaTtsMessage[];
  waitDone(contextId: string, timeoutMs?: number): Promise<CartesiaTtsMessage[]>;
  waitError(contextId: string | null, timeoutMs?: number): Promise<CartesiaTtsMessage>;
}

type ConnectOpts = { headers?: Record<string, string>; query?: Record<string, string>; ca?: string; url?: string };

async function connect(emu: CartesiaEmulator, version: string | null = V2026, opts: ConnectOpts = {}): Promise<Client> {
  const sp = new URLSearchParams(opts.query ?? {});
  const qs = sp.toString();
  const headers: Record<string, string> = opts.headers ?? { 'X-API-Key': KEY };
  if (version !== null && !('Cartesia-Version' in headers)) headers['Cartesia-Version'] = version;
  const ws = new WebSocket((opts.url ?? emu.ttsUrl) + (qs ? `?${qs}` : ''), { headers, ca: opts.ca });
  clients.push(ws);
  const received: Received[] = [];
  const texts: string[] = [];
  ws.on('message', (data) => {
    const text = data.toString();
    texts.push(text);
    try {
      received.push({ msg: JSON.parse(text) as CartesiaTtsMessage, at: performance.now() });
    } catch {
      /* garbage frames stay in texts */
    }
    ws.emit('change');
  });
  const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) =>
    ws.on('close', (code, reason) => {
      resolve({ code, reason: reason.toString(), at: performance.now() });
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
  const of = (id: string | null) => received.map((r) => r.msg).filter((m) => (id === null ? m.context_id === undefined : m.context_id === id));
  const waitFor = <T>(pred: () => T | undefined | null | false, timeoutMs = 2000, what = 'client condition') =>
    waitForEvent(ws, 'change', pred, timeoutMs, what);
  return {
    ws,
    received,
    texts,
    get upgradeHeaders() {
      return upgradeHeaders;
    },
    openedAt: performance.now(),
    closed: withTimeout(closed, 5000, 'client close'),
    waitFor,
    send: (obj) => ws.send(JSON.stringify(obj)),
    of,
    waitDone: (id, timeoutMs = 3000) => waitFor(() => (of(id).some((m) => m.type === 'done') ? of(id) : undefined), timeoutMs, `done of ${id}`),
    waitError: (id, timeoutMs = 2000) => waitFor(() => of(id).find((m) => m.type === 'error'), timeoutMs, `error of ${String(id)}`),
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

function gen(contextId: string | null, transcript: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const msg: Record<string, unknown> = {
    model_id: 'sonic-3',
    transcript,
    voice: { mode: 'id', id: 'a0e99841-438c-4a64-b679-ae501e7d6091' },
    output_format: { container: 'raw', encoding: 'pcm_s16le', sample_rate: 24000 },
    language: 'en',
    ...extra,
  };
  if (contextId !== null) msg['context_id'] = contextId;
  return msg;
}

function chunks(msgs: CartesiaTtsMessage[]): CartesiaChunk[] {
  return msgs.filter((m): m is CartesiaChunk => m.type === 'chunk');
}

function audio(msgs: CartesiaTtsMessage[]): Buffer {
  return Buffer.concat(chunks(msgs).map((c) => Buffer.from(c.data, 'base64')));
}

/** exact bytes of `chars` characters at 60 ms each */
function expectedBytes(chars: number, rate: number, bps = 2): number {
  return Math.round((chars * 60 * rate) / 1000) * bps;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------

describe('upgrade: auth, version, routes, limits', () => {
  it('rejects missing or wrong credentials with 401 and a JSON error body', async () => {
    const emu = await start({ accessTokens: ['tok-1'] });
    const cases: Array<{ headers: Record<string, string>; query?: string }> = [
      { headers: {} },
      { headers: { 'X-API-Key': 'nope' } },
      { headers: { Authorization: 'Bearer nope' } },
      { headers: { Authorization: `Token ${KEY}` } },
      { headers: { Authorization: KEY } },
      { headers: {}, query: 'api_key=nope' },
      { headers: {}, query: `access_token=${KEY}` }, // an API key is not an access token
      { headers: { 'X-API-Key': 'tok-1' } }, // nor the reverse
    ];
    for (const c of cases) {
      const r = await expectRejection(`${emu.ttsUrl}?cartesia_version=${V2026}${c.query ? `&${c.query}` : ''}`, c.headers);
      expect(r.status).toBe(401);
      expect(r.headers['content-type']).toBe('application/json');
      const body = JSON.parse(r.body) as Record<string, unknown>;
      expect(body).toMatchObject({ status_code: 401, title: 'Unauthorized', error_code: 'unauthorized' });
      expect(body['message']).toEqual(expect.any(String));
      expect(body['request_id']).toMatch(/^[0-9a-f-]{36}$/);
    }
    expect(emu.rejected).toHaveLength(cases.length);
    expect(emu.connections).toHaveLength(0);
  });

  it('accepts X-API-Key, Bearer (key or access token), ?api_key and ?access_token', async () => {
    const emu = await start({ accessTokens: ['tok-1'] });
    await connect(emu, V2026, { headers: { 'X-API-Key': KEY } });
    await connect(emu, V2026, { headers: { Authorization: `Bearer ${KEY}` } });
    await connect(emu, V2026, { headers: { Authorization: 'bearer tok-1' } });
    await connect(emu, null, { headers: {}, query: { api_key: KEY, cartesia_version: V2026 } });
    await connect(emu, null, { headers: {}, query: { access_token: 'tok-1', cartesia_version: V2026 } });
    expect(emu.ttsConnections().map((c) => [c.auth.via, c.auth.token, c.apiKey])).toEqual([
      ['x-api-key', false, KEY],
      ['bearer', false, KEY],
      ['bearer', true, 'tok-1'],
      ['api_key', false, KEY],
      ['access_token', true, 'tok-1'],
    ]);
  });

  it('requires a Cartesia-Version (header or query, the query wins) and picks the API generation from it', async () => {
    const emu = await start();
    for (const [version, re] of [[null, /Missing Cartesia-Version/], ['yesterday', /Invalid Cartesia-Version/], ['2023-12-31', /on or after 2024-06-10/], ['2025-13-01', /Invalid/]] as const) {
      const headers: Record<string, string> = { 'X-API-Key': KEY };
      if (version !== null) headers['Cartesia-Version'] = version;
      const r = await expectRejection(emu.ttsUrl, headers);
      expect(r.status).toBe(400);
      expect((JSON.parse(r.body) as { message: string }).message).toMatch(re);
    }
    await connect(emu, V2025);
    await connect(emu, '2024-06-10', { headers: { 'X-API-Key': KEY, 'Cartesia-Version': '2024-06-10' }, query: { cartesia_version: V2026 } });
    await connect(emu, '2026-09-01');
    expect(emu.ttsConnections().map((c) => [c.version, c.versionVia, c.apiGeneration])).toEqual([
      [V2025, 'header', '2025'],
      [V2026, 'query', '2026'],
      ['2026-09-01', 'header', '2026'],
    ]);
    const lax = await start({ requireVersion: false });
    await connect(lax, null);
    expect(lax.ttsConnections()[0]).toMatchObject({ version: LATEST_VERSION, versionVia: 'default', apiGeneration: '2026' });
  });

  it('answers 404 on other paths and to plain HTTP', async () => {
    const emu = await start();
    const r = await expectRejection(`${emu.wsUrl}/tts/websocket-v2`, { 'X-API-Key': KEY, 'Cartesia-Version': V2026 });
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body)).toMatchObject({ status_code: 404, error_code: 'not_found' });
    const res = await fetch(`${emu.url}/tts/bytes`, { method: 'POST', body: '{}' });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { status_code: number }).status_code).toBe(404);
    expect(emu.server.httpRequests.map((h) => [h.method, h.url])).toEqual([['POST', '/tts/bytes']]);
  });

  it('answers 429 at the upgrade beyond maxConnections per credential, and accepts again after a close', async () => {
    const emu = await start({ maxConnections: 2, apiKeys: [KEY, 'other'] });
    await connect(emu);
    const b = await connect(emu);
    const r = await expectRejection(emu.ttsUrl, { 'X-API-Key': KEY, 'Cartesia-Version': V2026 });
    expect(r.status).toBe(429);
    expect(JSON.parse(r.body)).toMatchObject({ status_code: 429, title: 'Too Many Requests' });
    await connect(emu, V2026, { headers: { 'X-API-Key': 'other' } }); // another account
    b.ws.close();
    await emu.waitForClose(emu.connections[1]);
    await connect(emu);
    expect(emu.connections).toHaveLength(4);
  });
});

describe('generation', () => {
  it('renders one context: chunkMs chunks, exact byte count, PCM identical to the tone rendering, done last', async () => {
    const emu = await start();
    const c = await connect(emu);
    const text = 'Hello, world!';
    c.send(gen('ctx-1', text));
    const msgs = await c.waitDone('ctx-1');
    const ch = chunks(msgs);
    expect(msgs[msgs.length - 1]).toEqual({ type: 'done', context_id: 'ctx-1', status_code: 206, done: true });
    expect(msgs.filter((m) => m.type === 'done')).toHaveLength(1);
    for (const m of ch) {
      expect(m).toMatchObject({ type: 'chunk', context_id: 'ctx-1', status_code: 206, done: false, flush_id: 1 });
      expect(m.step_time).toBeGreaterThan(0);
    }
    const pcm = audio(msgs);
    expect(pcm.length).toBe(expectedBytes(13, 24000)); // 13 chars × 1440 samples × 2 bytes
    expect(pcm.equals(renderText(text, 24000))).toBe(true);
    const sizes = ch.map((m) => Buffer.from(m.data, 'base64').length);
    expect(sizes.slice(0, -1).every((s) => s === 1920)).toBe(true); // 40 ms at 24 kHz s16le
    expect(sizes.length).toBe(Math.ceil(780 / 40));

    const conn = await emu.waitForTtsConnection();
    const ctx = await emu.waitForContext('ctx-1', (x) => x.doneAt !== null);
    expect(ctx).toMatchObject({ transcript: text, chars: 13, charsGenerated: 13, state: 'done', active: false, chunks: ch.length, audioBytes: pcm.length });
    expect(ctx.audioSeconds).toBeCloseTo(0.78, 9);
    expect(ctx.request).toMatchObject({ modelId: 'sonic-3', voice: { mode: 'id', id: 'a0e99841-438c-4a64-b679-ae501e7d6091' }, voiceForm: 'mode-id', outputFormat: { container: 'raw', encoding: 'pcm_s16le', sampleRate: 24000 }, language: 'en', continue: false, maxBufferDelayMs: 3000 });
    expect(ctx.generations).toEqual([expect.objectContaining({ text, generatedText: text, reason: 'continue_false', flushId: 1, chunks: ch.length, cut: null })]);
    expect(conn.charsReceived).toBe(13);
    expect(conn.audioSeconds).toBeCloseTo(0.78, 9);
    expect(conn.record.audioSeconds).toBeCloseTo(0.78, 9); // audio sent drives the base audio-time faults
    expect(conn.sent.map((m) => m.type)).toEqual(msgs.map((m) => m.type));
  });

  it('encodes pcm_s16le at every documented rate, pcm_f32le exactly, and G.711 mu-law / A-law', async () => {
    const emu = await start({ speedFactor: 50 });
    const c = await connect(emu);
    const text = 'abc';
    const fmt = (encoding: RawEncoding, sample_rate: number) => ({ output_format: { container: 'raw', encoding, sample_rate } });
    for (const rate of TTS_SAMPLE_RATES) c.send(gen(`s16-${rate}`, text, fmt('pcm_s16le', rate)));
    c.send(gen('f32', text, fmt('pcm_f32le', 16000)));
    c.send(gen('mulaw', text, fmt('pcm_mulaw', 8000)));
    c.send(gen('alaw', text, fmt('pcm_alaw', 8000)));
    for (const rate of TTS_SAMPLE_RATES) {
      const pcm = audio(await c.waitDone(`s16-${rate}`));
      expect(pcm.length).toBe(expectedBytes(3, rate));
      expect(pcm.equals(renderText(text, rate))).toBe(true);
    }
    const ref16 = renderText(text, 16000);
    const f32 = audio(await c.waitDone('f32'));
    expect(f32.length).toBe(expectedBytes(3, 16000, 4));
    for (let i = 0; i < ref16.length / 2; i++) expect(f32.readFloatLE(i * 4)).toBe(ref16.readInt16LE(i * 2) / 32768);
    const ref8 = renderText(text, 8000);
    for (const [id, decode] of [['mulaw', mulawToLinear], ['alaw', alawToLinear]] as const) {
      const g711 = audio(await c.waitDone(id));
      expect(g711.length).toBe(expectedBytes(3, 8000, 1));
      const lin = Buffer.alloc(g711.length * 2);
      let maxErr = 0;
      for (let i = 0; i < g711.length; i++) {
        const v = decode(g711[i]!);
        lin.writeInt16LE(v, i * 2);
        maxErr = Math.max(maxErr, Math.abs(v - ref8.readInt16LE(i * 2)));
      }
      expect(maxErr).toBeLessThan(400); // G.711 quantisation at 0.3 FS
      const candidates = [...text].map(charFrequency);
      const secondChar = lin.subarray(480 * 2, 960 * 2); // 60 ms at 8 kHz
      expect(dominantFrequency(secondChar, 8000, candidates)).toBe(charFrequency('b'));
    }
  });

  it('continues a context: transcripts concatenated verbatim, outputs in input order, timestamps relative to the context', async () => {
    const emu = await start();
    const c = await connect(emu);
    const parts = ['Hello, ', "Sonic! I'm ", 'streaming inputs.'];
    for (const p of parts) c.send(gen('ctx', p, { continue: true, max_buffer_delay_ms: 0, add_timestamps: true }));
    c.send(gen('ctx', '', { continue: false, max_buffer_delay_ms: 0, add_timestamps: true }));
    const msgs = await c.waitDone('ctx');
    const full = parts.join('');
    expect(audio(msgs).equals(renderText(full, 24000))).toBe(true);
    // every piece: its chunks, then its timestamps; done last
    const kinds = msgs.map((m) => m.type);
    const tsIdx = kinds.flatMap((k, i) => (k === 'timestamps' ? [i] : []));
    expect(tsIdx).toHaveLength(3);
    expect(kinds.slice(0, tsIdx[0]).every((k) => k === 'chunk')).toBe(true);
    expect(tsIdx[0]).toBe(Math.ceil((7 * 60) / 40)); // "Hello, " = 420 ms = 11 chunks
    expect(kinds[kinds.length - 1]).toBe('done');
    expect(kinds[kinds.length - 2]).toBe('timestamps');
    const ts = msgs.filter((m): m is CartesiaTimestamps => m.type === 'timestamps');
    const words = ts.flatMap((m) => m.word_timestamps.words);
    const starts = ts.flatMap((m) => m.word_timestamps.start);
    const ends = ts.flatMap((m) => m.word_timestamps.end);
    const expected = ttsTimings(full).words;
    expect(words).toEqual(expected.map((w) => w.word));
    expect(starts).toEqual(expected.map((w) => w.start));
    expect(ends).toEqual(expected.map((w) => w.end));
    expect(ts[1]!.word_timestamps).toEqual({ words: ['Sonic!', "I'm"], start: [0.42, 0.84], end: [0.78, 1.02] });
    const ctx = emu.ttsConnections()[0]!.context('ctx')!;
    expect(ctx.transcript).toBe(full);
    expect(ctx.inputs.map((i) => [i.transcript, i.continue])).toEqual([...parts.map((p) => [p, true]), ['', false]]);
    expect(ctx.generations.map((g) => [g.text, g.reason])).toEqual(parts.map((p) => [p, 'immediate']));
  });

  it('sends phoneme_timestamps (one per non-space character) when asked', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.send(gen('p', 'Hi yo', { add_phoneme_timestamps: true }));
    const msgs = await c.waitDone('p');
    expect(msgs.some((m) => m.type === 'timestamps')).toBe(false);
    const ph = msgs.find((m) => m.type === 'phoneme_timestamps');
    expect(ph).toEqual({
      type: 'phoneme_timestamps',
      context_id: 'p',
      status_code: 206,
      done: false,
      flush_id: 1,
      phoneme_timestamps: { phonemes: ['H', 'i', 'y', 'o'], start: [0, 0.06, 0.18, 0.24], end: [0.06, 0.12, 0.24, 0.3] },
    });
  });

  it('interleaves contexts on one socket, each in its own input order', async () => {
    const emu = await start();
    const c = await connect(emu);
    const a = 'The first context speaks.';
    const b = 'And the second one too!';
    c.send(gen('A', a));
    c.send(gen('B', b));
    await c.waitDone('A');
    await c.waitDone('B');
    const ids = c.received.map((r) => r.msg.context_id);
    const lastA = ids.lastIndexOf('A');
    const firstB = ids.indexOf('B');
    expect(firstB).toBeLessThan(lastA);
    expect(audio(c.of('A')).equals(renderText(a, 24000))).toBe(true);
    expect(audio(c.of('B')).equals(renderText(b, 24000))).toBe(true);
  });

  it('flush: earlier chunks carry flush_id 1, then flush_done 1, then chunks with flush_id 2', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.send(gen('f', 'One. ', { continue: true, max_buffer_delay_ms: 0 }));
    c.send(gen('f', '', { continue: true, flush: true, max_buffer_delay_ms: 0 }));
    c.send(gen('f', 'Two.', { continue: false, max_buffer_delay_ms: 0 }));
    const msgs = await c.waitDone('f');
    const seq = msgs.map((m) => (m.type === 'chunk' ? `chunk${m.flush_id}` : m.type === 'flush_done' ? `flush_done${m.flush_id}` : m.type));
    const compact = seq.filter((s, i) => s !== seq[i - 1]);
    expect(compact).toEqual(['chunk1', 'flush_done1', 'chunk2', 'done']);
    expect(msgs.find((m) => m.type === 'flush_done')).toEqual({ type: 'flush_done', context_id: 'f', status_code: 206, done: false, flush_done: true, flush_id: 1 });
    expect(audio(msgs).length).toBe(expectedBytes(9, 24000));
    const ctx = emu.ttsConnections()[0]!.context('f')!;
    expect(ctx.flushesDone).toEqual([1]);
    expect(ctx.generations.map((g) => [g.text, g.flushId])).toEqual([['One. ', 1], ['Two.', 2]]);
  });

  it('duration caps the audio of a context at whole characters', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.send(gen('d', 'abcdefghij', { duration: 0.33 }));
    const msgs = await c.waitDone('d');
    expect(audio(msgs).length).toBe(expectedBytes(5, 24000));
    const ctx = emu.ttsConnections()[0]!.context('d')!;
    expect(ctx).toMatchObject({ chars: 10, charsGenerated: 5 });
    expect(ctx.generations[0]).toMatchObject({ generatedText: 'abcde', cut: 'duration' });
  });

  it('accepts the voice as {mode,id}, a bare id string or {id}', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.send(gen('v1', 'a', { voice: { mode: 'id', id: 'voice-1' } }));
    c.send(gen('v2', 'a', { voice: 'voice-1' }));
    c.send(gen('v3', 'a', { voice: { id: 'voice-1' } }));
    for (const id of ['v1', 'v2', 'v3']) await c.waitDone(id);
    const conn = emu.ttsConnections()[0]!;
    expect(conn.contexts.map((x) => [x.request.voice.id, x.request.voiceForm])).toEqual([
      ['voice-1', 'mode-id'],
      ['voice-1', 'string'],
      ['voice-1', 'id-only'],
    ]);
  });

  it('2025: a request without context_id is a one-shot whose answers carry no context_id; 2026 requires context_id', async () => {
    const emu = await start();
    const old = await connect(emu, V2025);
    old.send(gen(null, 'Hi there', { continue: true }));
    const msgs = await old.waitFor(() => (old.of(null).some((m) => m.type === 'done') ? old.of(null) : undefined));
    expect(audio(msgs).length).toBe(expectedBytes(8, 24000));
    expect(msgs.every((m) => !('context_id' in m))).toBe(true);
    expect(emu.ttsConnections()[0]!.contexts[0]).toMatchObject({ anonymous: true, state: 'done' });

    const now = await connect(emu, V2026);
    now.send(gen(null, 'Hi'));
    const err = (await now.waitError(null)) as CartesiaError2026;
    expect(err.message).toMatch(/context_id/);
    expect(emu.ttsConnections()[1]!.contexts).toHaveLength(0);
  });
});

describe('buffering (max_buffer_delay_ms)', () => {
  it('releases up to the last sentence end at once and holds the rest until max_buffer_delay_ms', async () => {
    const emu = await start();
    const c = await connect(emu);
    const o = { continue: true, max_buffer_delay_ms: 300 };
    c.send(gen('b', 'Hello there', o));
    await sleep(100);
    expect(c.of('b')).toHaveLength(0); // held: no sentence end yet
    await c.waitFor(() => chunks(c.of('b')).length > 0, 2000, 'first chunk');
    const conn = emu.ttsConnections()[0]!;
    const ctx = conn.context('b')!;
    const g0 = ctx.generations[0]!;
    expect(g0).toMatchObject({ text: 'Hello there', reason: 'max_buffer_delay' });
    expect(g0.releasedAt - ctx.inputs[0]!.at).toBeGreaterThanOrEqual(295);

    c.send(gen('b', ' general Kenobi. You ', o));
    c.send(gen('b', 'are', o));
    await emu.waitForContext('b', (x) => x.generations.length === 3, 2000);
    const [, g1, g2] = ctx.generations;
    expect(g1).toMatchObject({ text: ' general Kenobi. ', reason: 'sentence' });
    expect(g1!.releasedAt - ctx.inputs[1]!.at).toBeLessThan(50);
    expect(g2).toMatchObject({ text: 'You are', reason: 'max_buffer_delay' });
    expect(g2!.releasedAt - ctx.inputs[1]!.at).toBeGreaterThanOrEqual(295); // timer from the first held character

    c.send(gen('b', ' a bold one', o));
    c.send(gen('b', '', { ...o, continue: false }));
    const msgs = await c.waitDone('b');
    expect(ctx.generations[3]).toMatchObject({ text: ' a bold one', reason: 'continue_false' });
    expect(audio(msgs).equals(renderText(ctx.transcript, 24000))).toBe(true);
  });

  it('defaults to 3000 ms on API 2026 (flush and continue:false release at once) and to 0 on 2025', async () => {
    const emu = await start();
    const c = await connect(emu, V2026);
    c.send(gen('x', 'Streaming words', { continue: true }));
    await sleep(100);
    expect(c.of('x')).toHaveLength(0);
    c.send(gen('x', '', { continue: true, flush: true }));
    await c.waitFor(() => c.of('x').some((m) => m.type === 'flush_done'));
    c.send(gen('x', ' and more', { continue: true }));
    c.send(gen('x', '', { continue: false }));
    await c.waitDone('x');
    const ctx = emu.ttsConnections()[0]!.context('x')!;
    expect(ctx.request.maxBufferDelayMs).toBe(3000);
    expect(ctx.generations.map((g) => [g.text, g.reason, g.flushId])).toEqual([
      ['Streaming words', 'flush', 1],
      [' and more', 'continue_false', 2],
    ]);

    const old = await connect(emu, V2025);
    old.send(gen('y', 'No buffering', { continue: true }));
    await old.waitFor(() => chunks(old.of('y')).length > 0);
    const y = emu.ttsConnections()[1]!.context('y')!;
    expect(y.request.maxBufferDelayMs).toBe(0);
    expect(y.generations[0]!.reason).toBe('immediate');
  });
});

describe('validation and errors', () => {
  it('answers invalid requests with a 400 error frame (2026 shape), creates no context and keeps the socket open', async () => {
    const emu = await start();
    const c = await connect(emu);
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...gen('e1', 'x'), model_id: undefined }, /model_id/],
      [{ ...gen('e2', 'x'), model_id: 'gpt-4o' }, /model_id/],
      [{ ...gen('e3', 'x'), transcript: 5 }, /transcript/],
      [{ ...gen('e4', 'x'), voice: undefined }, /voice/],
      [{ ...gen('e5', 'x'), voice: { mode: 'embedding', embedding: [0.1] } }, /voice mode/],
      [{ ...gen('e6', 'x'), output_format: { container: 'wav', encoding: 'pcm_s16le', sample_rate: 24000 } }, /container/],
      [{ ...gen('e7', 'x'), output_format: { container: 'raw', encoding: 'pcm_s24le', sample_rate: 24000 } }, /encoding/],
      [{ ...gen('e8', 'x'), output_format: { container: 'raw', encoding: 'pcm_s16le', sample_rate: 32000 } }, /sample_rate/],
      [gen('e9', 'x', { max_buffer_delay_ms: 5001 }), /max_buffer_delay_ms.*\[0, 5000\]/],
      [gen('e10', 'x', { generation_config: { speed: 2 } }), /generation_config.speed/],
      [gen('e11', 'x', { generation_config: { volume: 0.1 } }), /generation_config.volume/],
      [gen('e12', 'x', { speed: 'warp' }), /speed/],
      [gen('e13', 'x', { continue: 'yes' }), /continue/],
      [gen('e14', 'x', { duration: -1 }), /duration/],
      [gen('e15', 'x', { language: 'English' }), /language/],
    ];
    for (const [msg] of cases) c.send(msg);
    await c.waitFor(() => c.received.length >= cases.length);
    const conn = emu.ttsConnections()[0]!;
    cases.forEach(([msg, re], i) => {
      const err = c.received[i]!.msg as CartesiaError2026;
      expect(err).toMatchObject({ type: 'error', context_id: msg['context_id'], status_code: 400, done: true, title: 'Bad Request', error_code: 'invalid_request', request_id: conn.requestId });
      expect(err.message).toMatch(re);
    });
    expect(conn.contexts).toHaveLength(0);
    expect(conn.rejectedInputs).toHaveLength(cases.length);
    c.send(gen('e1', 'ok'));
    await c.waitDone('e1');
  });

  it('uses the 2025 error shape before 2026-08-14 and its max_buffer_delay_ms range', async () => {
    const emu = await start();
    const c = await connect(emu, V2025);
    c.send(gen('a', 'x', { max_buffer_delay_ms: 1001 }));
    const err = (await c.waitError('a')) as CartesiaError2025;
    expect(Object.keys(err).sort()).toEqual(['context_id', 'done', 'error', 'status_code', 'type']);
    expect(err).toMatchObject({ type: 'error', context_id: 'a', status_code: 400, done: true });
    expect(err.error).toMatch(/\[0, 1000\]/);
    c.send(gen('b', 'x', { max_buffer_delay_ms: 1000 }));
    await c.waitDone('b');
  });

  it('answers non-JSON, non-object and binary frames with an error without context_id', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.ws.send('hello');
    c.ws.send('[1,2]');
    c.ws.send(Buffer.from([1, 2, 3]));
    await c.waitFor(() => c.received.length === 3);
    expect(c.received.map((r) => (r.msg as CartesiaError2026).message)).toEqual([
      'Invalid JSON message.',
      'Invalid message: expected a JSON object.',
      expect.stringMatching(/Binary frames/),
    ]);
    expect(c.received.every((r) => r.msg.type === 'error' && r.msg.context_id === undefined)).toBe(true);
    expect(emu.ttsConnections()[0]!.invalidFrames).toBe(3);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('a continuation that changes a fixed field fails the context (error, no done); transcript/continue/duration/flush may change', async () => {
    const emu = await start({ firstAudioDelayMs: 150 });
    const c = await connect(emu);
    c.send(gen('m', 'Some text ', { continue: true, max_buffer_delay_ms: 0, duration: 10 }));
    c.send(gen('m', 'more ', { continue: true, max_buffer_delay_ms: 0, duration: 20, flush: true }));
    c.send(gen('m', 'and more', { continue: true, max_buffer_delay_ms: 0, voice: { mode: 'id', id: 'other-voice' } }));
    const err = (await c.waitError('m')) as CartesiaError2026;
    expect(err).toMatchObject({ status_code: 400, done: true });
    expect(err.message).toMatch(/changed: voice/);
    await sleep(250);
    expect(c.of('m').map((m) => m.type)).toEqual(['error']); // the pending generation died with the context
    const ctx = emu.ttsConnections()[0]!.context('m')!;
    expect(ctx).toMatchObject({ state: 'error', active: false, transcript: 'Some text more ', error: { statusCode: 400 } });
  });

  it('an input after continue:false, after done, or after expiry is an error', async () => {
    const emu = await start({ contextExpiryMs: 150 });
    const c = await connect(emu);
    c.send(gen('closing', 'Long enough to still be speaking.'));
    c.send(gen('closing', 'late'));
    expect(((await c.waitError('closing')) as CartesiaError2026).message).toMatch(/already closed for input/);

    c.send(gen('fin', 'ab'));
    await c.waitDone('fin');
    c.send(gen('fin', 'again'));
    expect(((await c.waitError('fin')) as CartesiaError2026).message).toMatch(/already done/);
    const fin = await emu.waitForContext('fin', (x) => x.expiredAt !== null, 2000);
    expect(fin.state).toBe('done');
    c.send(gen('fin', 'again'));
    await c.waitFor(() => c.of('fin').filter((m) => m.type === 'error').length === 2);
    expect((c.of('fin').filter((m) => m.type === 'error')[1] as CartesiaError2026).message).toMatch(/expired/);
    expect(fin.inputs).toHaveLength(1);
  });
});

describe('contexts: expiry, concurrency, cancel', () => {
  it('an open context expires contextExpiryMs after its last audio output; reuse is an error', async () => {
    const emu = await start({ contextExpiryMs: 150 });
    const c = await connect(emu);
    c.send(gen('e', 'Hi ', { continue: true, max_buffer_delay_ms: 0 }));
    const ctx = await emu.waitForContext('e', (x) => x.state === 'expired', 2000);
    expect(ctx.expiredAt! - ctx.lastAudioAt!).toBeGreaterThanOrEqual(145);
    expect(ctx.active).toBe(false);
    expect(c.of('e').some((m) => m.type === 'done')).toBe(false); // expiry is silent
    c.send(gen('e', 'there', { continue: false, max_buffer_delay_ms: 0 }));
    expect(((await c.waitError('e')) as CartesiaError2026).message).toMatch(/expired/);
  });

  it('new input before expiry keeps a context alive', async () => {
    const emu = await start({ contextExpiryMs: 400 });
    const c = await connect(emu);
    const o = { continue: true, max_buffer_delay_ms: 0 };
    c.send(gen('k', 'a', o));
    await c.waitFor(() => chunks(c.of('k')).length > 0);
    await sleep(150);
    c.send(gen('k', 'b', o));
    await sleep(150);
    c.send(gen('k', 'c', { ...o, continue: false }));
    const msgs = await c.waitDone('k');
    expect(audio(msgs).equals(renderText('abc', 24000))).toBe(true);
  });

  it('beyond maxConcurrentContexts per account a new context gets a 429 error; a finished context frees its slot', async () => {
    const emu = await start({ maxConcurrentContexts: 1 });
    const c1 = await connect(emu);
    const c2 = await connect(emu);
    c1.send(gen('one', 'Hold ', { continue: true, max_buffer_delay_ms: 0 }));
    await emu.waitForContext('one');
    c2.send(gen('two', 'Hello'));
    const err = (await c2.waitError('two')) as CartesiaError2026;
    expect(err).toMatchObject({ status_code: 429, title: 'Too Many Requests', error_code: 'too_many_requests', done: true });
    expect(emu.activeContexts(KEY)).toBe(1);
    c1.send(gen('one', 'on.', { continue: false, max_buffer_delay_ms: 0 }));
    await c1.waitDone('one');
    expect(emu.activeContexts(KEY)).toBe(0);
    c2.send(gen('two', 'Hello'));
    await c2.waitDone('two');
    expect(emu.ttsConnections()[1]!.rejectedInputs.map((r) => r.statusCode)).toEqual([429]);
  });

  it('cancel discards what has not begun; the generation in progress completes, then done; later inputs are ignored', async () => {
    const emu = await start({ firstAudioDelayMs: 80 });
    const c = await connect(emu);
    const o = { continue: true, max_buffer_delay_ms: 0 };
    c.send(gen('c', 'first part ', o));
    c.send(gen('c', 'second part ', o));
    c.send(gen('c', 'third', o));
    c.send({ context_id: 'c', cancel: true });
    const msgs = await c.waitDone('c');
    expect(audio(msgs).equals(renderText('first part ', 24000))).toBe(true);
    c.send(gen('c', 'ignored', o));
    await sleep(100);
    expect(c.of('c').length).toBe(msgs.length);
    const ctx = emu.ttsConnections()[0]!.context('c')!;
    expect(ctx.state).toBe('cancelled');
    expect(ctx.cancel).toMatchObject({ contextId: 'c', known: true, effective: true, discardedText: 'second part third', discardedChars: 17, inProgress: true });
    expect(ctx.ignoredInputs).toBe(1);
    expect(ctx.transcript).toBe('first part second part third');
    expect(ctx.generations.map((g) => g.text)).toEqual(['first part ']);
    expect(ctx.doneAt).not.toBeNull();
  });

  it('cancel after all audio was generated takes no effect; doneAfterCancel=false sends nothing more; unknown ids are recorded', async () => {
    const emu = await start({ doneAfterCancel: false });
    const c = await connect(emu);
    c.send(gen('z', 'short', { continue: true, max_buffer_delay_ms: 0 }));
    await c.waitFor(() => chunks(c.of('z')).length === Math.ceil(300 / 40)); // all of "short" (300 ms)
    const before = c.of('z').length;
    c.send({ context_id: 'z', cancel: true });
    c.send({ context_id: 'nobody', cancel: true });
    const conn = emu.ttsConnections()[0]!;
    await emu.waitFor(() => conn.cancels.length === 2);
    await sleep(80);
    expect(c.of('z').length).toBe(before);
    expect(conn.cancels.map((x) => [x.contextId, x.known, x.effective, x.inProgress])).toEqual([
      ['z', true, false, false],
      ['nobody', false, false, false],
    ]);
    expect(conn.context('z')).toMatchObject({ state: 'cancelled', active: false, doneAt: null });
  });
});

describe('timing and idle', () => {
  it('first audio comes firstAudioDelayMs after the start; chunks are chunkMs/speedFactor apart; options are live', async () => {
    const emu = await start({ firstAudioDelayMs: 150, speedFactor: 10, chunkMs: 40 });
    const c = await connect(emu);
    const sentAt = performance.now();
    c.send(gen('t', 'abcdefghij')); // 600 ms of audio = 15 chunks, 14 gaps of 4 ms
    await c.waitDone('t');
    const rx = c.received.filter((r) => r.msg.type === 'chunk');
    expect(rx).toHaveLength(15);
    expect(rx[0]!.at - sentAt).toBeGreaterThanOrEqual(145);
    expect(rx[14]!.at - rx[0]!.at).toBeGreaterThanOrEqual(50);
    expect(rx[14]!.at - rx[0]!.at).toBeLessThan(1500);
    expect((rx[0]!.msg as CartesiaChunk).step_time).toBe(154);
    expect((rx[1]!.msg as CartesiaChunk).step_time).toBe(4);

    emu.options.firstAudioDelayMs = 300;
    const sent2 = performance.now();
    c.send(gen('t2', 'a'));
    await c.waitDone('t2');
    const first2 = c.received.find((r) => r.msg.context_id === 't2' && r.msg.type === 'chunk')!;
    expect(first2.at - sent2).toBeGreaterThanOrEqual(295);
    const ctx = emu.ttsConnections()[0]!.context('t2')!;
    expect(ctx.firstAudioAt! - ctx.createdAt).toBeGreaterThanOrEqual(295);
  });

  it('closes an idle socket (no frame either way for idleTimeoutMs) with 1000; any frame resets the timer', async () => {
    const emu = await start({ idleTimeoutMs: 300 });
    const c = await connect(emu);
    await sleep(100);
    c.send({ context_id: 'nothing', cancel: true }); // activity
    const lastActivity = performance.now();
    const closed = await c.closed;
    expect(closed).toMatchObject({ code: 1000, reason: IDLE_CLOSE_REASON });
    expect(closed.at - lastActivity).toBeGreaterThanOrEqual(290);
    const conn = await emu.waitForClose();
    expect(conn.record.close).toMatchObject({ code: 1000, reason: IDLE_CLOSE_REASON, by: 'server' });
  });
});

describe('fault switches', () => {
  it('errorAfterChars: exactly N characters of audio, then an error frame and no done', async () => {
    const emu = await start();
    emu.ttsFaults.errorAfterChars = { chars: 4, statusCode: 500 };
    const c = await connect(emu);
    c.send(gen('x', 'abcdefgh'));
    const err = (await c.waitError('x')) as CartesiaError2026;
    expect(err).toMatchObject({ status_code: 500, done: true, message: INJECTED_ERROR_MESSAGE, error_code: 'internal_error' });
    await sleep(60);
    expect(c.of('x').some((m) => m.type === 'done')).toBe(false);
    expect(audio(c.of('x')).equals(renderText('abcd', 24000))).toBe(true);
    const ctx = emu.ttsConnections()[0]!.context('x')!;
    expect(ctx).toMatchObject({ state: 'error', charsGenerated: 4, error: { statusCode: 500 } });
    expect(ctx.generations[0]).toMatchObject({ generatedText: 'abcd', cut: 'error' });
  });

  it('stallAfterChars (per connection): N characters of audio, then silence; other connections unaffected', async () => {
    const emu = await start();
    const c = await connect(emu);
    const other = await connect(emu);
    emu.ttsConnections()[0]!.ttsFaults.stallAfterChars = 3;
    c.send(gen('s', 'abcdef'));
    other.send(gen('s', 'abcdef'));
    await other.waitDone('s');
    const ctx = await emu.waitFor(() => {
      const x = emu.ttsConnections()[0]!.context('s');
      return x?.stalled ? x : undefined;
    });
    await sleep(80);
    expect(c.of('s').every((m) => m.type === 'chunk')).toBe(true);
    expect(audio(c.of('s')).length).toBe(expectedBytes(3, 24000));
    expect(ctx).toMatchObject({ stalled: true, active: true, state: 'closing', doneAt: null });
  });

  it('closeAfterAudioSec and dropAfterAudioSec fire on audio sent', async () => {
    const emu = await start();
    emu.faultNext({ closeAfterAudioSec: { seconds: 0.3, code: 1011, reason: 'boom' } });
    const c = await connect(emu);
    c.send(gen('x', 'abcdefghijkl'));
    expect(await c.closed).toMatchObject({ code: 1011, reason: 'boom' });
    expect(audio(c.of('x')).length).toBe(8 * 1920); // the 40 ms chunk that reaches 0.3 s is the last one
    const conn = await emu.waitForClose();
    expect(conn.record.close?.by).toBe('server');
    expect(conn.contexts[0]!.state).toBe('aborted');

    emu.faultNext({ dropAfterAudioSec: 0.2 });
    const d = await connect(emu);
    d.send(gen('y', 'abcdefghijkl'));
    expect((await d.closed).code).toBe(1006);
    expect((await emu.waitForClose()).record.close?.by).toBe('drop');
  });

  it('garbageAfterAudioSec sends one non-JSON frame and carries on', async () => {
    const emu = await start();
    emu.faults.garbageAfterAudioSec = { seconds: 0.1 };
    const c = await connect(emu);
    c.send(gen('g', 'abcdef'));
    await c.waitDone('g');
    expect(c.texts.filter((t) => t === GARBAGE_TEXT)).toHaveLength(1);
    expect(audio(c.of('g')).length).toBe(expectedBytes(6, 24000));
  });

  it('refuseUpgrade answers in the Cartesia error format; faultNext applies once; upgradeDelayMs delays the 101', async () => {
    const emu = await start();
    emu.faultNext({ refuseUpgrade: { status: 429, message: 'slow down' } });
    const r = await expectRejection(emu.ttsUrl, { 'X-API-Key': KEY, 'Cartesia-Version': V2026 });
    expect(r.status).toBe(429);
    expect(JSON.parse(r.body)).toMatchObject({ status_code: 429, title: 'Too Many Requests', message: 'slow down' });
    emu.faultNext({ upgradeDelayMs: 150 });
    const t0 = performance.now();
    await connect(emu);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(145);
  });

  it('deadAir generates (recorded) but sends nothing; outDelayMs delays every frame keeping order', async () => {
    const emu = await start();
    emu.faultNext({ deadAir: true });
    const dead = await connect(emu);
    dead.send(gen('d', 'abc'));
    const conn = emu.ttsConnections()[0]!;
    await emu.waitFor(() => conn.context('d')?.doneAt != null);
    expect(dead.received).toHaveLength(0);
    expect(conn.record.suppressed).toBe(conn.sent.length);
    expect(conn.context('d')!.audioSeconds).toBeCloseTo(0.18, 9);

    emu.faultNext({ outDelayMs: 150 });
    const slow = await connect(emu);
    const t0 = performance.now();
    slow.send(gen('s', 'abc'));
    const msgs = await slow.waitDone('s');
    expect(slow.received[0]!.at - t0).toBeGreaterThanOrEqual(165); // 20 ms first audio + 150 ms
    expect(msgs[msgs.length - 1]!.type).toBe('done');
    expect(audio(msgs).equals(renderText('abc', 24000))).toBe(true);
  });
});

describe('wire recording and shutdown', () => {
  it('records path, query, headers and frames; chunk data only with recordAudio', async () => {
    const emu = await start({ recordAudio: true });
    const c = await connect(emu, V2026, { headers: { Authorization: `Bearer ${KEY}`, 'Cartesia-Version': V2026 }, query: { extra: '1' } });
    c.send(gen('r', 'ab', { custom_field: true }));
    await c.waitDone('r');
    const conn = emu.ttsConnections()[0]!;
    expect(conn.record.path).toBe('/tts/websocket');
    expect(conn.record.query).toEqual({ extra: ['1'] });
    expect(conn.record.headers['cartesia-version']).toBe(V2026);
    const inFrames = conn.record.frames.filter((f) => f.dir === 'in');
    expect(inFrames).toHaveLength(1);
    expect(JSON.parse(inFrames[0]!.text!)).toMatchObject({ context_id: 'r', transcript: 'ab', custom_field: true });
    expect(conn.context('r')!.request.unknown).toEqual(['custom_field']);
    const firstChunk = conn.sent.find((m): m is CartesiaChunk => m.type === 'chunk')!;
    expect(Buffer.from(firstChunk.data, 'base64').length).toBe(1920);

    const plain = await start();
    const p = await connect(plain);
    p.send(gen('r', 'ab'));
    await p.waitDone('r');
    const rec = plain.ttsConnections()[0]!.sent.find((m): m is CartesiaChunk => m.type === 'chunk')!;
    expect(rec.data).toBe('<1920 bytes>');
  });

  it('close() stops generations waiting for first audio, clears every timer and terminates sockets', async () => {
    const emu = await startCartesiaEmulator({ firstAudioDelayMs: 10_000, idleTimeoutMs: 60_000, contextExpiryMs: 60_000 });
    const c = await connect(emu);
    c.send(gen('w', 'never spoken'));
    c.send(gen('held', 'held text', { continue: true, max_buffer_delay_ms: 5000 }));
    const ctx = await emu.waitForContext('w', (x) => x.generations[0]?.startedAt != null);
    await emu.waitForContext('held');
    expect(emu.pendingTimers()).toBe(3); // idle, first audio of 'w', buffer of 'held'
    const t0 = performance.now();
    await emu.close();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect((await c.closed).code).toBe(1006);
    expect(ctx).toMatchObject({ state: 'aborted', active: false, chunks: 0 });
    expect(c.received).toHaveLength(0);
    expect(emu.pendingTimers()).toBe(0);
  });
});
