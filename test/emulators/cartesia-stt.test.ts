/**
 * Tests of the Cartesia STT emulator (`/stt/websocket`, `/stt/turns/websocket` in ./cartesia.ts)
 * with a raw `ws` client speaking the documented protocol, and with @cartesia/cartesia-js 4.2.0.
 *
 * SDK notes: the ESM entry cannot `require('ws')`, so on Node >= 22 it falls back to the global
 * WebSocket and authenticates in the query (`api_key`, `cartesia_version`); the CJS entry (loaded
 * with createRequire) uses `ws` with `Authorization: Bearer` + `cartesia-version` headers. Both map
 * an http:// baseURL to ws://, so no TLS is needed for STT. Both paths are exercised below.
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import type { IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import CartesiaEsm from '@cartesia/cartesia-js';
import type {
  STTAutoFinalizeConnected,
  STTAutoFinalizeTurnEagerEnd,
  STTAutoFinalizeTurnEnd,
  STTAutoFinalizeTurnResume,
  STTAutoFinalizeTurnStart,
  STTAutoFinalizeTurnUpdate,
  STTAutoFinalizeWebsocketResponse,
  STTManualFinalizeDoneResponse,
  STTManualFinalizeFlushDoneResponse,
  STTManualFinalizeTranscriptResponse,
  STTManualFinalizeWebsocketResponse,
} from '@cartesia/cartesia-js/resources/stt/index';
import type { STTErrorResponse } from '@cartesia/cartesia-js/resources/stt/stt';
import { scriptTimings, synthesize, type ScriptItem } from './audio.ts';
import { GARBAGE_TEXT, waitForEvent, withTimeout } from './base.ts';
import {
  DEFAULT_API_KEY,
  STT_IDLE_CLOSE_REASON,
  STT_INJECTED_ERROR_MESSAGE,
  encodePcm,
  startCartesiaEmulator,
  type CartesiaEmulator,
  type CartesiaEmulatorOptions,
  type CartesiaSttDone,
  type CartesiaSttError2025,
  type CartesiaSttError2026,
  type CartesiaSttFlushDone,
  type CartesiaSttMessage,
  type CartesiaSttTranscript,
  type CartesiaTurnEagerEnd,
  type CartesiaTurnEnd,
  type CartesiaTurnResume,
  type CartesiaTurnStart,
  type CartesiaTurnUpdate,
  type CartesiaTurnsConnected,
} from './cartesia.ts';

// Compile-time proof that the emulator's messages fit the SDK's published types. The SDK types
// `words` as its TTS-style parallel arrays, while the API reference (and stt.yml) shows
// [{word,start,end}] objects; the docs decide, so `words` is left out of that one check.
type Assignable<T, U extends T> = U;
export type _TranscriptFitsSdk = Assignable<Omit<STTManualFinalizeTranscriptResponse, 'words'>, Omit<CartesiaSttTranscript, 'words'>>;
export type _FlushDoneFitsSdk = Assignable<STTManualFinalizeFlushDoneResponse, CartesiaSttFlushDone>;
export type _DoneFitsSdk = Assignable<STTManualFinalizeDoneResponse, CartesiaSttDone>;
export type _ErrorFitsSdk = Assignable<STTErrorResponse, CartesiaSttError2026>;
export type _ConnectedFitsSdk = Assignable<STTAutoFinalizeConnected, CartesiaTurnsConnected>;
export type _TurnStartFitsSdk = Assignable<STTAutoFinalizeTurnStart, CartesiaTurnStart>;
export type _TurnUpdateFitsSdk = Assignable<STTAutoFinalizeTurnUpdate, CartesiaTurnUpdate>;
export type _TurnEagerEndFitsSdk = Assignable<STTAutoFinalizeTurnEagerEnd, CartesiaTurnEagerEnd>;
export type _TurnResumeFitsSdk = Assignable<STTAutoFinalizeTurnResume, CartesiaTurnResume>;
export type _TurnEndFitsSdk = Assignable<STTAutoFinalizeTurnEnd, CartesiaTurnEnd>;

const KEY = DEFAULT_API_KEY;
const V2026 = '2026-08-14';
const V2025 = '2025-04-16';
const RATE = 16000;
const WIN = 0.01 + 1e-6; // one analysis window

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

type Query = Record<string, string | string[]>;
const MANUAL: Query = { model: 'ink-whisper', encoding: 'pcm_s16le', sample_rate: String(RATE) };
const TURNS: Query = { model: 'ink-2', encoding: 'pcm_s16le', sample_rate: String(RATE) };

function url(base: string, query: Query): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) for (const x of Array.isArray(v) ? v : [v]) sp.append(k, x);
  const qs = sp.toString();
  return qs ? `${base}?${qs}` : base;
}

interface Client {
  ws: WebSocket;
  messages: CartesiaSttMessage[];
  texts: string[];
  upgradeHeaders: IncomingHttpHeaders;
  closed: Promise<{ code: number; reason: string }>;
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  /** wait for n messages of a type; returns all messages so far */
  waitType(type: string, n?: number, timeoutMs?: number): Promise<CartesiaSttMessage[]>;
  of<T extends CartesiaSttMessage['type']>(type: T): Array<Extract<CartesiaSttMessage, { type: T }>>;
  feed(pcm: Buffer, chunkBytes?: number): void;
}

async function connect(target: string, opts: { headers?: Record<string, string>; version?: string | null } = {}): Promise<Client> {
  const headers: Record<string, string> = opts.headers ?? { 'X-API-Key': KEY };
  const version = opts.version === undefined ? V2026 : opts.version;
  if (version !== null) headers['Cartesia-Version'] = version;
  const ws = new WebSocket(target, { headers });
  clients.push(ws);
  const messages: CartesiaSttMessage[] = [];
  const texts: string[] = [];
  ws.on('message', (data) => {
    const text = data.toString();
    texts.push(text);
    try {
      messages.push(JSON.parse(text) as CartesiaSttMessage);
    } catch {
      /* garbage stays in texts */
    }
    ws.emit('change');
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => {
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
  const waitFor = <T>(pred: () => T | undefined | null | false, timeoutMs = 2000, what = 'client condition') =>
    waitForEvent(ws, 'change', pred, timeoutMs, what);
  const of = <T extends CartesiaSttMessage['type']>(type: T) =>
    messages.filter((m): m is Extract<CartesiaSttMessage, { type: T }> => m.type === type);
  return {
    ws,
    messages,
    texts,
    get upgradeHeaders() {
      return upgradeHeaders;
    },
    closed: withTimeout(closed, 5000, 'client close'),
    waitFor,
    waitType: (type, n = 1, timeoutMs = 2000) =>
      waitFor(() => (messages.filter((m) => m.type === type).length >= n ? messages : undefined), timeoutMs, `${n} × ${type}`),
    of,
    feed(pcm, chunkBytes = 3200) {
      for (let off = 0; off < pcm.length; off += chunkBytes) ws.send(pcm.subarray(off, off + chunkBytes));
    },
  };
}

interface Rejection {
  status: number;
  body: string;
}

function expectRejection(target: string, headers: Record<string, string> = { 'X-API-Key': KEY, 'Cartesia-Version': V2026 }): Promise<Rejection> {
  return withTimeout(
    new Promise<Rejection>((resolve, reject) => {
      const ws = new WebSocket(target, { headers });
      ws.on('open', () => {
        ws.terminate();
        reject(new Error(`upgrade unexpectedly accepted: ${target}`));
      });
      ws.on('error', () => {});
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
    }),
    3000,
    'rejection',
  );
}

function finals(c: Client): CartesiaSttTranscript[] {
  return c.of('transcript').filter((t) => t.is_final);
}

function interims(c: Client): CartesiaSttTranscript[] {
  return c.of('transcript').filter((t) => !t.is_final);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** IEEE 754 half from a float (round to nearest; enough for audio in [-1, 1]) */
function floatToHalf(x: number): number {
  const f32 = new Float32Array([x]);
  const u = new Uint32Array(f32.buffer)[0]!;
  const sign = (u >> 16) & 0x8000;
  const exp = ((u >> 23) & 0xff) - 127 + 15;
  const mant = u & 0x7fffff;
  if (exp <= 0) {
    if (exp < -10) return sign;
    const m = (mant | 0x800000) >> (1 - exp);
    return sign | ((m + 0x1000) >> 13);
  }
  if (exp >= 0x1f) return sign | 0x7c00;
  return sign | ((exp << 10) + ((mant + 0x1000) >> 13));
}

function encodeStt(s16: Buffer, encoding: string): Buffer {
  const n = s16.length >> 1;
  switch (encoding) {
    case 'pcm_s16le':
      return s16;
    case 'pcm_s32le': {
      const out = Buffer.alloc(n * 4);
      for (let i = 0; i < n; i++) out.writeInt32LE(s16.readInt16LE(i * 2) * 65536, i * 4);
      return out;
    }
    case 'pcm_f16le': {
      const out = Buffer.alloc(n * 2);
      for (let i = 0; i < n; i++) out.writeUInt16LE(floatToHalf(s16.readInt16LE(i * 2) / 32767), i * 2);
      return out;
    }
    case 'pcm_f32le':
    case 'pcm_mulaw':
    case 'pcm_alaw':
      return encodePcm(s16, encoding);
    default:
      throw new Error(encoding);
  }
}

// the words of two utterances separated by pauses longer than the default 0.5 s auto-finalize
const TWO_UTTERANCES: ScriptItem[] = [
  { silenceMs: 200 },
  { words: ['hello', 'world'] },
  { silenceMs: 800 },
  { words: ['alpha', 'bravo', 'charlie'] },
  { silenceMs: 800 },
];

// ---------------------------------------------------------------------------------------------

describe('upgrade: routes, auth, version, parameters, limits', () => {
  it('routes /stt/websocket and /stt/turns/websocket and accepts every documented credential form', async () => {
    const emu = await start({ accessTokens: ['tok-1'] });
    await connect(url(emu.sttUrl, MANUAL));
    await connect(url(emu.sttTurnsUrl, TURNS), { headers: { Authorization: `Bearer ${KEY}` } });
    await connect(url(emu.sttUrl, { ...MANUAL, api_key: KEY, cartesia_version: V2025 }), { headers: {}, version: null });
    await connect(url(emu.sttUrl, { ...MANUAL, access_token: 'tok-1' }), { headers: {}, version: '2026-03-01' });
    const conns = await emu.waitFor(() => (emu.sttConnections.length === 4 ? emu.sttConnections : undefined));
    expect(conns.map((c) => [c.kind, c.auth.via, c.versionVia, c.apiGeneration])).toEqual([
      ['stt', 'x-api-key', 'header', '2026'],
      ['stt-turns', 'bearer', 'header', '2026'],
      ['stt', 'api_key', 'query', '2025'],
      ['stt', 'access_token', 'header', '2025'],
    ]);
    expect(emu.connections).toHaveLength(0); // TTS list untouched
    expect(emu.records.map((r) => r.path)).toEqual(['/stt/websocket', '/stt/turns/websocket', '/stt/websocket', '/stt/websocket']);
    expect(conns[0]!.params).toMatchObject({ model: 'ink-whisper', encoding: 'pcm_s16le', sampleRate: RATE, language: 'en', keyterms: [] });
    expect(conns[1]!.turnConfig).toEqual({ start_threshold: 0.8, eager_end_threshold: 0.4, end_threshold: 0.2, end_timeout_ms: 5600 });
  });

  it('rejects missing or wrong credentials with 401 and a missing version with 400 (JSON bodies)', async () => {
    const emu = await start();
    const none = await expectRejection(url(emu.sttUrl, MANUAL), { 'Cartesia-Version': V2026 });
    expect(none.status).toBe(401);
    expect(JSON.parse(none.body)).toMatchObject({ status_code: 401, error_code: 'unauthorized' });
    expect((await expectRejection(url(emu.sttTurnsUrl, TURNS), { 'X-API-Key': 'nope', 'Cartesia-Version': V2026 })).status).toBe(401);
    expect((await expectRejection(url(emu.sttUrl, MANUAL), { 'X-API-Key': KEY })).status).toBe(400);
    expect(emu.sttConnections).toHaveLength(0);
  });

  it('rejects bad query parameters with 400 like the API, naming the parameter', async () => {
    const emu = await start();
    const cases: Array<[string, Query, RegExp, string?]> = [
      [emu.sttUrl, { encoding: 'pcm_s16le', sample_rate: '16000' }, /'model'/],
      [emu.sttUrl, { ...MANUAL, model: 'whisper-large' }, /model is not valid/, 'model_not_found'],
      [emu.sttTurnsUrl, { ...TURNS, model: 'ink-whisper' }, /model is not valid/, 'model_not_found'],
      [emu.sttUrl, { model: 'ink-whisper', sample_rate: '16000' }, /'encoding'/],
      [emu.sttUrl, { ...MANUAL, encoding: 'linear16' }, /encoding/],
      [emu.sttUrl, { model: 'ink-whisper', encoding: 'pcm_s16le' }, /'sample_rate'/],
      [emu.sttUrl, { ...MANUAL, sample_rate: '4000' }, /sample_rate/],
      [emu.sttUrl, { ...MANUAL, sample_rate: '16000.5' }, /sample_rate/],
      [emu.sttUrl, { ...MANUAL, language: 'xx' }, /language/i, 'unsupported_language'],
      [emu.sttUrl, { ...MANUAL, model: 'ink-2', language: 'fr' }, /only 'en'/, 'unsupported_language'],
      [emu.sttUrl, { ...MANUAL, min_volume: '1.5' }, /min_volume/],
      [emu.sttUrl, { ...MANUAL, max_silence_duration_secs: '0' }, /max_silence_duration_secs/],
      [emu.sttUrl, { ...MANUAL, keyterm: Array.from({ length: 101 }, (_, i) => `t${i}`) }, /keyterms/i],
      [emu.sttUrl, { ...MANUAL, keyterm: ['x'.repeat(700), 'y'.repeat(501)] }, /1200/],
      [emu.sttTurnsUrl, { ...TURNS, turn_start_threshold: '0.95' }, /turn_start_threshold.*0\.5 and 0\.9/],
      [emu.sttTurnsUrl, { ...TURNS, turn_eager_end_threshold: '0.2' }, /turn_eager_end_threshold/],
      [emu.sttTurnsUrl, { ...TURNS, turn_end_threshold: '0.6' }, /turn_end_threshold.*0\.05 and 0\.5/],
      [emu.sttTurnsUrl, { ...TURNS, turn_end_timeout_ms: '500' }, /turn_end_timeout_ms.*640 and 11200/],
      [emu.sttTurnsUrl, { ...TURNS, turn_end_timeout_ms: '700.5' }, /integer/],
      [emu.sttTurnsUrl, { ...TURNS, turn_end_timeout_ms: 'soon' }, /number/],
      // in range, but the end threshold must stay below the eager end threshold (default 0.4)
      [emu.sttTurnsUrl, { ...TURNS, turn_end_threshold: '0.45' }, /must stay below 'turn_eager_end_threshold'/],
      [emu.sttTurnsUrl, { ...TURNS, turn_eager_end_threshold: '0.55', turn_start_threshold: '0.5' }, /must stay below 'turn_start_threshold'/],
    ];
    for (const [base, query, re, code] of cases) {
      const r = await expectRejection(url(base, query));
      expect(r.status, JSON.stringify(query)).toBe(400);
      const body = JSON.parse(r.body) as { status_code: number; message: string; error_code: string; title: string; request_id: string };
      expect(body.message, JSON.stringify(query)).toMatch(re);
      expect(body).toMatchObject({ status_code: 400, error_code: code ?? 'invalid_request' });
      if (code === 'model_not_found') expect(body.title).toBe('Invalid model');
    }
    expect(emu.sttConnections).toHaveLength(0);
    expect(emu.rejected).toHaveLength(cases.length);
  });

  it('accepts documented boundary values, ink-whisper snapshots and ink-2 on /stt/websocket; records unknown keys and keyterms', async () => {
    const emu = await start();
    await connect(url(emu.sttTurnsUrl, { ...TURNS, turn_start_threshold: '0.9', turn_eager_end_threshold: '0.6', turn_end_threshold: '0.05', turn_end_timeout_ms: '11200' }));
    await connect(url(emu.sttTurnsUrl, { ...TURNS, turn_start_threshold: '0.5', turn_eager_end_threshold: '0.3', turn_end_threshold: '0.05', turn_end_timeout_ms: '640' }));
    await connect(url(emu.sttUrl, { ...MANUAL, model: 'ink-whisper-2025-06-04', language: 'de', min_volume: '0', max_silence_duration_secs: '2.5', keyterm: ['LiveKit', 'Cartesia Ink'], foo: 'bar' }));
    await connect(url(emu.sttUrl, { ...MANUAL, model: 'ink-2', encoding: 'pcm_mulaw', sample_rate: '8000' }));
    const conns = await emu.waitFor(() => (emu.sttConnections.length === 4 ? emu.sttConnections : undefined));
    expect(conns[0]!.turnConfig).toEqual({ start_threshold: 0.9, eager_end_threshold: 0.6, end_threshold: 0.05, end_timeout_ms: 11200 });
    expect(conns[1]!.turnConfig).toEqual({ start_threshold: 0.5, eager_end_threshold: 0.3, end_threshold: 0.05, end_timeout_ms: 640 });
    expect(conns[2]!.params).toMatchObject({ model: 'ink-whisper-2025-06-04', language: 'de', minVolume: 0, maxSilenceDurationSecs: 2.5, keyterms: ['LiveKit', 'Cartesia Ink'], unknown: ['foo'] });
    expect(conns[3]!.params).toMatchObject({ model: 'ink-2', encoding: 'pcm_mulaw', sampleRate: 8000 });
  });

  it('answers 429 beyond stt.maxConcurrent per credential, independently of the TTS socket limit', async () => {
    const emu = await start({ maxConnections: 1, apiKeys: [KEY, 'other'], stt: { maxConcurrent: 2 } });
    const a = await connect(url(emu.sttUrl, MANUAL));
    await connect(url(emu.sttTurnsUrl, TURNS));
    const r = await expectRejection(url(emu.sttUrl, MANUAL));
    expect(r.status).toBe(429);
    expect(JSON.parse(r.body)).toMatchObject({ status_code: 429, title: 'Too Many Requests' });
    await connect(url(emu.sttUrl, MANUAL), { headers: { 'X-API-Key': 'other' } });
    await connect(emu.ttsUrl); // the TTS limit (1) counts TTS sockets only
    a.ws.close();
    await emu.waitForSttClose(emu.sttConnections[0]);
    await connect(url(emu.sttUrl, MANUAL));
    expect(emu.sttConnections).toHaveLength(4);
    expect(emu.connections).toHaveLength(1);
  });

  it("paramErrors 'in-band' accepts the upgrade, sends the error frame of the docs, and closes 1008", async () => {
    const emu = await start({ stt: { paramErrors: 'in-band' } });
    const c = await connect(url(emu.sttTurnsUrl, { ...TURNS, model: 'ink-9' }));
    expect((await c.closed).code).toBe(1008);
    const err = c.of('error')[0] as CartesiaSttError2026;
    expect(err).toMatchObject({ type: 'error', status_code: 400, error_code: 'model_not_found', title: 'Invalid model' });
    expect(err.message).toMatch(/model is not valid/);
    expect(c.of('connected')).toEqual([]);
    expect(emu.sttConnections[0]).toMatchObject({ params: null, paramError: { message: err.message } });
  });
});

describe('/stt/websocket: transcripts', () => {
  it('sends nothing on open; interims carry the words since the last final; ink-whisper finalizes after the default 0.5 s of silence', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttUrl, MANUAL));
    await sleep(50);
    expect(c.texts).toEqual([]);
    const timings = scriptTimings(TWO_UTTERANCES, { sampleRate: RATE });
    c.feed(synthesize(TWO_UTTERANCES, { sampleRate: RATE }));
    await c.waitFor(() => finals(c).length >= 2);
    const conn = emu.sttConnections[0]!;
    expect(finals(c).map((f) => f.text)).toEqual(['hello world', ' alpha bravo charlie']);
    expect(finals(c).map((f) => f.text).join('')).toBe('hello world alpha bravo charlie');
    for (const [i, f] of finals(c).entries()) {
      const expected = timings.utterances[i]!.words;
      expect(f.words.map((w) => w.word)).toEqual(expected.map((w) => w.word));
      for (const [j, w] of f.words.entries()) {
        expect(Math.abs(w.start - expected[j]!.start)).toBeLessThanOrEqual(WIN);
        expect(Math.abs(w.end - expected[j]!.end)).toBeLessThanOrEqual(WIN);
      }
      expect(f).toMatchObject({ type: 'transcript', request_id: conn.requestId, is_final: true, language: 'en' });
    }
    // the final comes max_silence after the last word: 2026 duration = audio since the previous final
    expect(finals(c)[0]!.duration).toBeCloseTo(timings.utterances[0]!.end + 0.5, 2);
    expect(finals(c)[1]!.duration).toBeCloseTo(timings.utterances[1]!.end - timings.utterances[0]!.end, 2);
    // interims: before each final, growing word lists that are prefixes of that final
    const seq = c.of('transcript');
    let segment: string[] = [];
    let finalsBefore = 0;
    for (const t of seq) {
      const words = t.words.map((w) => w.word);
      expect(words.slice(0, segment.length)).toEqual(segment);
      expect(t.text).toBe((finalsBefore > 0 ? ' ' : '') + words.join(' '));
      if (t.is_final) {
        finalsBefore++;
        segment = [];
      } else {
        expect(words.length).toBeGreaterThan(segment.length);
        segment = words;
      }
    }
    expect(interims(c).length).toBeGreaterThanOrEqual(2);
    expect(interims(c)[0]!.text).toBe('hello');
    expect(new Set(c.messages.map((m) => (m as { request_id: string }).request_id))).toEqual(new Set([conn.requestId]));
  });

  it('produces the same messages however the audio is chunked', async () => {
    const emu = await start();
    const pcm = synthesize(TWO_UTTERANCES, { sampleRate: RATE });
    const runs: string[][] = [];
    for (const size of [320, 3200, 9999, pcm.length]) {
      const c = await connect(url(emu.sttUrl, MANUAL));
      c.feed(pcm, size);
      c.ws.send('finalize');
      await c.waitType('flush_done');
      runs.push(c.of('transcript').map((t) => JSON.stringify({ ...t, request_id: '' })));
    }
    for (const r of runs.slice(1)) expect(r).toEqual(runs[0]);
  });

  it('max_silence_duration_secs longer than the pause keeps both utterances in one segment', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttUrl, { ...MANUAL, max_silence_duration_secs: '1.2' }));
    c.feed(synthesize([...TWO_UTTERANCES, { silenceMs: 600 }], { sampleRate: RATE }));
    await c.waitFor(() => finals(c).length >= 1);
    await sleep(30);
    expect(finals(c).map((f) => f.text)).toEqual(['hello world alpha bravo charlie']);
  });

  it('finalize closes the word in progress: final (if words are pending), then flush_done; finals concatenate verbatim', async () => {
    const emu = await start({ stt: { defaultMaxSilenceSecs: 10 } });
    const c = await connect(url(emu.sttUrl, MANUAL));
    const pcm = synthesize([{ words: ['hello', 'world', 'alpha'] }], { sampleRate: RATE });
    c.feed(pcm.subarray(0, RATE * 2 * 0.65)); // 0.65 s: only 50 ms of "alpha" so far (too short for a word)
    c.ws.send('finalize');
    await c.waitType('flush_done');
    expect(c.messages.slice(-2).map((m) => m.type)).toEqual(['transcript', 'flush_done']);
    const f1 = finals(c)[0]!;
    expect(f1.text).toBe('hello world');
    expect(f1.words[1]!.end).toBeCloseTo(0.6, 2);
    // nothing pending: flush_done only
    c.ws.send('finalize');
    await c.waitType('flush_done', 2);
    expect(c.messages[c.messages.length - 2]!.type).toBe('flush_done');
    c.feed(pcm.subarray(RATE * 2 * 0.65));
    c.feed(synthesize([{ silenceMs: 100 }, { words: ['bravo'] }], { sampleRate: RATE }));
    c.ws.send('finalize');
    await c.waitType('flush_done', 3);
    // the rest of "alpha" after the finalize (250 ms) is a word of its own
    const f2 = finals(c)[1]!;
    expect(finals(c).map((f) => f.text)).toEqual(['hello world', ' alpha bravo']);
    expect(f2.words[0]!.start).toBeCloseTo(0.65, 2);
    expect(finals(c).map((f) => f.text).join('')).toBe('hello world alpha bravo');
    expect(emu.sttConnections[0]!.counts.finalize).toBe(3);
  });

  it('flushDoneFirst sends flush_done before the final transcript (the 2025 docs example order)', async () => {
    const emu = await start({ stt: { flushDoneFirst: true } });
    const c = await connect(url(emu.sttUrl, MANUAL));
    c.feed(synthesize([{ words: ['hello', 'world'] }], { sampleRate: RATE }));
    c.ws.send('finalize');
    await c.waitFor(() => finals(c).length === 1);
    expect(c.messages.map((m) => m.type).slice(-2)).toEqual(['flush_done', 'transcript']);
  });

  it('close (2026): remaining final, done, close 1000; later input is ignored', async () => {
    const emu = await start({ stt: { defaultMaxSilenceSecs: 10 } });
    const c = await connect(url(emu.sttUrl, MANUAL));
    c.feed(synthesize([{ words: ['hello', 'world'] }, { silenceMs: 200 }], { sampleRate: RATE }));
    c.ws.send('close');
    expect((await c.closed).code).toBe(1000);
    await emu.waitForSttClose();
    expect(c.messages.slice(-2).map((m) => m.type)).toEqual(['transcript', 'done']);
    expect(finals(c).map((f) => f.text)).toEqual(['hello world']);
    expect(c.of('done')[0]).toEqual({ type: 'done', request_id: emu.sttConnections[0]!.requestId });
    expect(emu.sttConnections[0]!.counts.close).toBe(1);
    expect(emu.sttConnections[0]!.record.close).toMatchObject({ code: 1000, by: 'server' });
  });

  it('done (2025): same flush and close; duration counts all audio so far; 2025 error frames', async () => {
    const emu = await start({ stt: { defaultMaxSilenceSecs: 0.3 } });
    const c = await connect(url(emu.sttUrl, MANUAL), { version: V2025 });
    c.feed(synthesize(TWO_UTTERANCES, { sampleRate: RATE }));
    await c.waitFor(() => finals(c).length >= 2);
    const t = scriptTimings(TWO_UTTERANCES, { sampleRate: RATE });
    expect(finals(c)[1]!.duration).toBeCloseTo(t.utterances[1]!.end + 0.3, 2);
    c.ws.send('{"type":"finalize"}');
    const err = (await c.waitFor(() => c.of('error')[0])) as CartesiaSttError2025;
    expect(err).toEqual({ type: 'error', request_id: emu.sttConnections[0]!.requestId, message: expect.stringMatching(/Unknown command/), error: err.message });
    c.ws.send('done');
    expect((await c.closed).code).toBe(1000);
    expect(c.messages[c.messages.length - 1]!.type).toBe('done');
    expect(emu.sttConnections[0]!.counts).toMatchObject({ done: 1, invalid: 1 });
  });

  it('ink-2 on /stt/websocket does not finalize on silence: finals come from finalize only', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttUrl, { ...MANUAL, model: 'ink-2' }));
    c.feed(synthesize(TWO_UTTERANCES, { sampleRate: RATE }));
    await c.waitFor(() => interims(c).some((t) => t.words.length === 5));
    expect(finals(c)).toEqual([]);
    c.ws.send('finalize');
    await c.waitType('flush_done');
    expect(finals(c).map((f) => f.text)).toEqual(['hello world alpha bravo charlie']);
  });

  it('transcribes every documented encoding at 8, 24 and 48 kHz', async () => {
    const emu = await start();
    const script: ScriptItem[] = [{ words: ['delta', 'echo', 'golf'] }];
    for (const [encoding, rate] of [['pcm_s32le', 24000], ['pcm_f16le', 48000], ['pcm_f32le', 16000], ['pcm_mulaw', 8000], ['pcm_alaw', 8000]] as const) {
      const c = await connect(url(emu.sttUrl, { ...MANUAL, encoding, sample_rate: String(rate) }));
      const pcm = encodeStt(synthesize(script, { sampleRate: rate }), encoding);
      c.feed(pcm, 1001); // odd chunk sizes split samples
      c.ws.send('finalize');
      await c.waitType('flush_done');
      expect(finals(c).map((f) => f.text), encoding).toEqual(['delta echo golf']);
      const conn = emu.sttConnections[emu.sttConnections.length - 1]!;
      expect(conn.audioSeconds).toBeCloseTo(0.9, 6);
      expect(conn.audioBytes).toBe(pcm.length);
    }
  });

  it('min_volume above the speech level turns it into silence', async () => {
    const emu = await start();
    const pcm = synthesize([{ words: ['hello'] }], { sampleRate: RATE });
    const loud = await connect(url(emu.sttUrl, { ...MANUAL, min_volume: '0.1' }));
    const quiet = await connect(url(emu.sttUrl, { ...MANUAL, min_volume: '0.3' }));
    for (const c of [loud, quiet]) {
      c.feed(pcm);
      c.ws.send('finalize');
      await c.waitType('flush_done');
    }
    expect(finals(loud).map((f) => f.text)).toEqual(['hello']);
    expect(quiet.of('transcript')).toEqual([]);
  });

  it('answers unknown text commands with a 400 error frame (2026 shape) and keeps transcribing', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttUrl, MANUAL));
    c.ws.send('Finalize');
    const err = (await c.waitFor(() => c.of('error')[0])) as CartesiaSttError2026;
    expect(err).toMatchObject({ type: 'error', status_code: 400, title: 'Bad Request', error_code: 'invalid_request', request_id: emu.sttConnections[0]!.requestId });
    expect(err.doc_url).toMatch(/^https:\/\/docs\.cartesia\.ai\//);
    c.feed(synthesize([{ words: ['hello'] }], { sampleRate: RATE }));
    c.ws.send('finalize');
    await c.waitType('flush_done');
    expect(finals(c).map((f) => f.text)).toEqual(['hello']);
  });
});

describe('/stt/websocket: idle and latency', () => {
  it('closes after idleTimeoutMs without any message; audio and text commands reset the timer', async () => {
    const emu = await start({ stt: { idleTimeoutMs: 150 } });
    const c = await connect(url(emu.sttUrl, MANUAL));
    const t0 = performance.now();
    for (let i = 0; i < 3; i++) {
      await sleep(80);
      if (i === 1) c.ws.send('finalize');
      else c.ws.send(Buffer.alloc(320));
    }
    const closed = await c.closed;
    const elapsed = performance.now() - t0;
    expect(closed).toEqual({ code: 1000, reason: STT_IDLE_CLOSE_REASON });
    expect(elapsed).toBeGreaterThanOrEqual(240 + 150 - 20);
    expect((await emu.waitForSttClose()).record.close?.by).toBe('server');
  });

  it('idleCloseCode picks the close code; the turns endpoint times out the same way', async () => {
    const emu = await start({ stt: { idleTimeoutMs: 80, idleCloseCode: 1011 } });
    const c = await connect(url(emu.sttTurnsUrl, TURNS));
    expect((await c.closed).code).toBe(1011);
    expect(c.of('connected')).toHaveLength(1);
  });

  it('latencyMs delays every message', async () => {
    const emu = await start({ stt: { latencyMs: 120 } });
    const c = await connect(url(emu.sttUrl, MANUAL));
    c.feed(synthesize([{ words: ['hello'] }], { sampleRate: RATE }));
    const t0 = performance.now();
    c.ws.send('finalize');
    await c.waitType('flush_done');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(100);
  });
});

describe('/stt/turns/websocket (ink-2)', () => {
  const TURN_SCRIPT: ScriptItem[] = [
    { silenceMs: 300 },
    { words: ['hello', 'world'] },
    { silenceMs: 1200 },
    { words: ['alpha', 'bravo'] },
    { silenceMs: 1200 },
  ];

  it('connected on open, then per turn: turn.start, cumulative turn.update per word, turn.eager_end, turn.end', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttTurnsUrl, TURNS));
    await c.waitType('connected');
    const conn = emu.sttConnections[0]!;
    expect(c.messages[0]).toEqual({ type: 'connected', request_id: conn.requestId });
    c.feed(synthesize(TURN_SCRIPT, { sampleRate: RATE }));
    await c.waitType('turn.end', 2);
    const shape = c.messages.map((m) => ('transcript' in m ? `${m.type}:${m.transcript}` : m.type));
    expect(shape).toEqual([
      'connected',
      'turn.start', 'turn.update:hello', 'turn.update:hello world', 'turn.eager_end:hello world', 'turn.end:hello world',
      'turn.start', 'turn.update:alpha', 'turn.update:alpha bravo', 'turn.eager_end:alpha bravo', 'turn.end:alpha bravo',
    ]);
    // timing (audio seconds): start 160 ms after onset, end 0.8 s (= (1 - 0.2) × 1 s) after the last word
    const t = scriptTimings(TURN_SCRIPT, { sampleRate: RATE });
    expect(conn.turns).toHaveLength(2);
    for (const [i, turn] of conn.turns.entries()) {
      expect(Math.abs(turn.startedAt - t.utterances[i]!.start)).toBeLessThanOrEqual(WIN);
      expect(Math.abs(turn.endedAt! - (t.utterances[i]!.end + 0.8))).toBeLessThanOrEqual(2 * WIN);
      expect(turn).toMatchObject({ endReason: 'threshold', eagerEnds: 1, resumes: 0 });
    }
  });

  it('speech after turn.eager_end sends turn.resume and the turn goes on (cumulative transcript)', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttTurnsUrl, TURNS));
    // 700 ms pause: past the eager end (600 ms) but before the end (800 ms)
    c.feed(synthesize([{ words: ['hello', 'world'] }, { silenceMs: 700 }, { words: ['alpha'] }, { silenceMs: 1000 }], { sampleRate: RATE }));
    await c.waitType('turn.end');
    const shape = c.messages.map((m) => ('transcript' in m ? `${m.type}:${m.transcript}` : m.type));
    expect(shape).toEqual([
      'connected', 'turn.start', 'turn.update:hello', 'turn.update:hello world', 'turn.eager_end:hello world', 'turn.resume',
      'turn.update:hello world alpha', 'turn.eager_end:hello world alpha', 'turn.end:hello world alpha',
    ]);
    expect(emu.sttConnections[0]!.turns[0]).toMatchObject({ eagerEnds: 2, resumes: 1 });
  });

  it('a pause shorter than the eager end is not a turn boundary; eagerEnd=false sends no preview events', async () => {
    const emu = await start({ stt: { eagerEnd: false } });
    const c = await connect(url(emu.sttTurnsUrl, TURNS));
    c.feed(synthesize([{ words: ['hello'] }, { silenceMs: 400 }, { words: ['world'] }, { silenceMs: 1000 }], { sampleRate: RATE }));
    await c.waitType('turn.end');
    expect(c.messages.map((m) => m.type)).toEqual(['connected', 'turn.start', 'turn.update', 'turn.update', 'turn.end']);
    expect(c.of('turn.end')[0]!.transcript).toBe('hello world');
  });

  it('turn_end_timeout_ms caps the wait; turn_end_threshold lengthens it; turn_start_threshold delays turn.start', async () => {
    const emu = await start();
    const script: ScriptItem[] = [{ silenceMs: 100 }, { words: ['hello'] }, { silenceMs: 1200 }];
    const t = scriptTimings(script, { sampleRate: RATE });
    const end = t.utterances[0]!.end;
    const timeout = await connect(url(emu.sttTurnsUrl, { ...TURNS, turn_end_timeout_ms: '640' }));
    const slow = await connect(url(emu.sttTurnsUrl, { ...TURNS, turn_end_threshold: '0.05' }));
    for (const c of [timeout, slow]) {
      c.feed(synthesize(script, { sampleRate: RATE }));
      await c.waitType('turn.end');
    }
    const [a, b] = emu.sttConnections.map((x) => x.turns[0]!);
    expect(a).toMatchObject({ endReason: 'timeout' });
    expect(Math.abs(a!.endedAt! - (end + 0.64))).toBeLessThanOrEqual(2 * WIN);
    expect(a!.eagerEnds).toBe(1); // eager end at 0.6 s, just before the timeout
    expect(b).toMatchObject({ endReason: 'threshold', eagerEnds: 1 });
    expect(Math.abs(b!.endedAt! - (end + 0.95))).toBeLessThanOrEqual(2 * WIN);
  });

  it('a tone blip shorter than the start delay and than a word starts no turn', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttTurnsUrl, TURNS));
    c.feed(synthesize([{ words: ['hello'], wordMs: 80 }, { silenceMs: 1500 }], { sampleRate: RATE }));
    await emu.waitFor(() => emu.sttConnections[0]!.audioSeconds >= 1.579);
    await sleep(20);
    expect(c.messages.map((m) => m.type)).toEqual(['connected']);
  });

  it('config changes the turn settings for later decisions; an invalid config is rejected whole with a 400 error', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttTurnsUrl, TURNS));
    c.ws.send(JSON.stringify({ type: 'config', turn: { end_threshold: 0.5, eager_end_threshold: 0.55 } }));
    c.ws.send(JSON.stringify({ type: 'config', turn: { end_timeout_ms: 100 } }));
    c.ws.send(JSON.stringify({ type: 'config', turn: { start_threshold: '0.7' } }));
    c.ws.send(JSON.stringify({ type: 'config', turn: { speed: 1 } }));
    c.ws.send(JSON.stringify({ type: 'config', turn: { eager_end_threshold: 0.5 } })); // would break end < eager_end
    await c.waitType('error', 4);
    const conn = emu.sttConnections[0]!;
    expect(conn.turnConfig).toEqual({ start_threshold: 0.8, eager_end_threshold: 0.55, end_threshold: 0.5, end_timeout_ms: 5600 });
    expect(conn.configs.map((x) => x.ok)).toEqual([true, false, false, false, false]);
    expect(c.of('error').map((e) => (e as CartesiaSttError2026).message)).toEqual([
      expect.stringMatching(/turn\.end_timeout_ms.*640 and 11200/),
      expect.stringMatching(/turn\.start_threshold' must be a number/),
      expect.stringMatching(/Unknown turn setting 'speed'/),
      expect.stringMatching(/turn\.end_threshold.*must stay below 'turn\.eager_end_threshold'/),
    ]);
    const script: ScriptItem[] = [{ words: ['hello'] }, { silenceMs: 1000 }];
    c.feed(synthesize(script, { sampleRate: RATE }));
    await c.waitType('turn.end');
    // end after (1 - 0.5) × 1 s of silence; eager (0.45 s) comes first
    expect(Math.abs(conn.turns[0]!.endedAt! - (0.3 + 0.5))).toBeLessThanOrEqual(2 * WIN);
    expect(conn.turns[0]!.eagerEnds).toBe(1);
    expect(conn.counts.config).toBe(5);
  });

  it('{"type":"close"} ends the open turn and closes 1000; non-JSON and unknown commands get 400 error frames', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttTurnsUrl, TURNS));
    c.ws.send('finalize');
    c.ws.send(JSON.stringify({ type: 'finalize' }));
    await c.waitType('error', 2);
    c.feed(synthesize([{ words: ['hello', 'world'] }], { sampleRate: RATE }));
    c.ws.send(JSON.stringify({ type: 'close' }));
    expect((await c.closed).code).toBe(1000);
    expect(c.messages.map((m) => m.type)).toEqual(['connected', 'error', 'error', 'turn.start', 'turn.update', 'turn.update', 'turn.end']);
    expect(c.of('turn.end')[0]!.transcript).toBe('hello world');
    expect(emu.sttConnections[0]!.turns[0]!.endReason).toBe('close');
    expect(emu.sttConnections[0]!.counts).toMatchObject({ close: 1, invalid: 2 });
  });
});

describe('fault switches', () => {
  it('errorAfterAudioSec: an error frame after that much audio, then close 1011 (or stay open with closeCode null)', async () => {
    const emu = await start();
    emu.sttFaults.errorAfterAudioSec = { seconds: 0.5 };
    const c = await connect(url(emu.sttUrl, MANUAL));
    c.feed(synthesize([{ words: ['hello', 'world', 'alpha'] }], { sampleRate: RATE }));
    expect((await c.closed).code).toBe(1011);
    expect(c.of('error')[0]).toMatchObject({ status_code: 500, message: STT_INJECTED_ERROR_MESSAGE, error_code: 'internal_error' });
    const c2 = await connect(url(emu.sttTurnsUrl, TURNS));
    emu.sttConnections[1]!.sttFaults.errorAfterAudioSec = { seconds: 0.3, statusCode: 429, message: 'slow down', closeCode: null };
    c2.feed(synthesize([{ words: ['hello', 'world'] }, { silenceMs: 1000 }], { sampleRate: RATE }));
    await c2.waitType('error');
    await sleep(50);
    expect(c2.messages.map((m) => m.type)).toEqual(['connected', 'turn.start', 'error']);
    expect(c2.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('omitFlushDone drops the finalize ack; omitDone leaves close unanswered (no done, no close)', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttUrl, MANUAL));
    emu.sttConnections[0]!.sttFaults = { omitFlushDone: true, omitDone: true };
    c.feed(synthesize([{ words: ['hello'] }], { sampleRate: RATE }));
    c.ws.send('finalize');
    await c.waitFor(() => finals(c).length === 1);
    c.ws.send('close');
    await emu.waitFor(() => emu.sttConnections[0]!.counts.close === 1);
    await sleep(100);
    expect(c.messages.map((m) => m.type)).toEqual(['transcript']);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('base switches: closeAfterAudioSec, garbageAfterAudioSec, deadAir, refuseUpgrade in the Cartesia format', async () => {
    const emu = await start();
    emu.faultNext({ closeAfterAudioSec: { seconds: 0.3, code: 1011, reason: 'boom' } });
    const a = await connect(url(emu.sttUrl, MANUAL));
    a.feed(synthesize([{ words: ['hello', 'world'] }], { sampleRate: RATE }));
    expect(await a.closed).toEqual({ code: 1011, reason: 'boom' });
    emu.faultNext({ garbageAfterAudioSec: { seconds: 0.1 } });
    const b = await connect(url(emu.sttUrl, MANUAL));
    b.feed(synthesize([{ words: ['hello'] }], { sampleRate: RATE }));
    b.ws.send('finalize');
    await b.waitType('flush_done');
    expect(b.texts).toContain(GARBAGE_TEXT);
    emu.faultNext({ deadAir: true });
    const d = await connect(url(emu.sttTurnsUrl, TURNS));
    d.feed(synthesize([{ words: ['hello'] }, { silenceMs: 1000 }], { sampleRate: RATE }));
    await emu.waitFor(() => emu.sttConnections[2]!.turns[0]?.endedAt != null);
    expect(d.texts).toEqual([]);
    expect(emu.sttConnections[2]!.record.suppressed).toBe(emu.sttConnections[2]!.sent.length);
    emu.faultNext({ refuseUpgrade: { status: 503, message: 'maintenance' } });
    const r = await expectRejection(url(emu.sttUrl, MANUAL));
    expect(r.status).toBe(503);
    expect(JSON.parse(r.body)).toMatchObject({ status_code: 503, message: 'maintenance' });
  });
});

describe('wire recording and shutdown', () => {
  it('records path, query (repeated keyterms), headers, binary lengths and text commands', async () => {
    const emu = await start();
    const c = await connect(url(emu.sttUrl, { ...MANUAL, keyterm: ['a', 'b c'] }));
    c.ws.send(Buffer.alloc(3200));
    c.ws.send(Buffer.alloc(0));
    c.ws.send('finalize');
    await c.waitType('flush_done');
    const rec = emu.sttConnections[0]!.record;
    expect(rec.path).toBe('/stt/websocket');
    expect(rec.query['keyterm']).toEqual(['a', 'b c']);
    expect(rec.headers['x-api-key']).toBe(KEY);
    expect(rec.headers['cartesia-version']).toBe(V2026);
    expect(rec.frames.filter((f) => f.dir === 'in').map((f) => f.kind === 'text' ? f.text : f.bytes)).toEqual([3200, 0, 'finalize']);
    expect(rec.audioSeconds).toBeCloseTo(0.1, 9);
    expect(emu.sttConnections[0]!.counts).toMatchObject({ audioFrames: 2, emptyFrames: 1, finalize: 1 });
  });

  it('close() clears every STT timer and terminates the sockets', async () => {
    const emu = await startCartesiaEmulator();
    const c = await connect(url(emu.sttUrl, MANUAL));
    await connect(url(emu.sttTurnsUrl, TURNS));
    expect(emu.pendingTimers()).toBe(2);
    await emu.close();
    expect(emu.pendingTimers()).toBe(0);
    expect((await c.closed).code).toBe(1006);
  });
});

describe('@cartesia/cartesia-js 4.2.0 as a client', () => {
  interface SdkWs<M> {
    on(event: 'event', fn: (m: M) => void): unknown;
    on(event: 'close', fn: (code: number, reason: string) => void): unknown;
    on(event: 'error', fn: (e: Error) => void): unknown;
    send(m: unknown): void;
    sendRaw(d: Buffer): void;
  }

  function collect<M extends { type: string }>(ws: SdkWs<M>) {
    const events: M[] = [];
    const errors: Error[] = [];
    const bus = new EventEmitter();
    ws.on('event', (m) => {
      events.push(m);
      bus.emit('change');
    });
    ws.on('error', (e) => errors.push(e));
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    const waitType = (type: string) => waitForEvent(bus, 'change', () => events.some((e) => e.type === type), 3000, `sdk ${type}`);
    return { events, errors, waitType, closed: withTimeout(closed, 3000, 'sdk close') };
  }

  it('ESM entry (global WebSocket, query auth): manual finalize, flush_done, close → done', async () => {
    const emu = await start();
    const client = new CartesiaEsm({ apiKey: KEY, baseURL: emu.url });
    const ws = client.stt.manualFinalize.websocket({ model: 'ink-whisper', encoding: 'pcm_s16le', sample_rate: RATE, language: 'en' });
    const { events, errors, waitType, closed } = collect<STTManualFinalizeWebsocketResponse>(ws);
    ws.sendRaw(synthesize([{ words: ['hello', 'world'] }], { sampleRate: RATE }));
    ws.send('finalize');
    await waitType('flush_done');
    ws.send('close');
    expect(await closed).toBe(1000);
    expect(errors).toEqual([]);
    const finalTexts = events.filter((e): e is STTManualFinalizeTranscriptResponse => e.type === 'transcript' && e.is_final).map((e) => e.text);
    expect(finalTexts).toEqual(['hello world']);
    expect(events[events.length - 1]!.type).toBe('done');
    const conn = emu.sttConnections[0]!;
    expect(conn.auth.via).toBe('api_key');
    expect(conn.versionVia).toBe('query');
    expect(conn.version).toBe(V2026);
    expect(conn.counts).toMatchObject({ finalize: 1, close: 1 });
  });

  it('CJS entry (ws, Bearer + cartesia-version headers): auto finalize with turn settings, turn events, {"type":"close"}', async () => {
    const emu = await start();
    const require = createRequire(import.meta.url);
    const CartesiaCjs = require('@cartesia/cartesia-js') as { default: typeof CartesiaEsm };
    const client = new CartesiaCjs.default({ apiKey: KEY, baseURL: emu.url });
    const ws = client.stt.autoFinalize.websocket({ model: 'ink-2', encoding: 'pcm_s16le', sample_rate: RATE, turn_end_timeout_ms: 1000, turn_end_threshold: 0.1 });
    const { events, errors, waitType, closed } = collect<STTAutoFinalizeWebsocketResponse>(ws);
    ws.send({ type: 'config', turn: { end_timeout_ms: 700 } });
    ws.sendRaw(synthesize([{ words: ['hello', 'world'] }, { silenceMs: 900 }], { sampleRate: RATE }));
    await waitType('turn.end');
    ws.send({ type: 'close' });
    expect(await closed).toBe(1000);
    expect(errors).toEqual([]);
    expect(events.map((e) => e.type)).toEqual(['connected', 'turn.start', 'turn.update', 'turn.update', 'turn.eager_end', 'turn.end']);
    const conn = emu.sttConnections[0]!;
    expect(conn.record.headers['authorization']).toBe(`Bearer ${KEY}`);
    expect(conn.record.headers['cartesia-version']).toBe(V2026);
    expect(conn.params?.turn).toMatchObject({ end_timeout_ms: 1000, end_threshold: 0.1 });
    expect(conn.turnConfig?.end_timeout_ms).toBe(700);
    expect(conn.turns[0]).toMatchObject({ endReason: 'timeout', transcript: 'hello world' });
  });
});
