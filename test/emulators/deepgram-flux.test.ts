import type { IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { DeepgramClient, type listen } from '@deepgram/sdk';
import { scriptTimings, synthesize, type ScriptItem } from './audio.ts';
import { waitForEvent, withTimeout } from './base.ts';
import {
  UNPARSABLE_REASON,
  startDeepgramFluxEmulator,
  type DeepgramFluxEmulator,
  type DeepgramFluxEmulatorOptions,
  type FluxConfigureFailure,
  type FluxConfigureSuccess,
  type FluxConnected,
  type FluxError,
  type FluxServerMessage,
  type FluxTurnInfo,
} from './deepgram-flux.ts';
import { DATA_0000_REASON, NET_0001_REASON } from './deepgram.ts';

// Compile-time proof that the emulator's messages fit the SDK's published types.
type Assignable<T, U extends T> = U;
export type _ConnectedFitsSdk = Assignable<listen.ListenV2Connected, FluxConnected>;
export type _TurnInfoFitsSdk = Assignable<listen.ListenV2TurnInfo, FluxTurnInfo>;
export type _ConfigureSuccessFitsSdk = Assignable<listen.ListenV2ConfigureSuccess, FluxConfigureSuccess>;
export type _ConfigureFailureFitsSdk = Assignable<listen.ListenV2ConfigureFailure, FluxConfigureFailure>;
export type _ErrorFitsSdk = Assignable<listen.ListenV2FatalError, FluxError>;

const KEY = 'dg-test-key';
const RATE = 16000;
const WIN = 0.01 + 1e-6; // one analysis window
const BASE_QUERY = { model: 'flux-general-en', encoding: 'linear16', sample_rate: String(RATE) };
const auth = { Authorization: `Token ${KEY}` };

const emulators: DeepgramFluxEmulator[] = [];
const clients: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: DeepgramFluxEmulatorOptions = {}): Promise<DeepgramFluxEmulator> {
  const emu = await startDeepgramFluxEmulator(opts);
  emulators.push(emu);
  return emu;
}

type Query = Record<string, string | string[]>;

function fluxUrl(emu: DeepgramFluxEmulator, query: Query, path = '/v2/listen'): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) for (const x of Array.isArray(v) ? v : [v]) sp.append(k, x);
  return `${emu.wsUrl}${path}?${sp.toString()}`;
}

interface Client {
  ws: WebSocket;
  messages: FluxServerMessage[];
  texts: string[];
  upgradeHeaders: IncomingHttpHeaders;
  closed: Promise<{ code: number; reason: string }>;
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  sendPcm(pcm: Buffer, chunkBytes?: number): void;
  send(obj: unknown): void;
  turns(): FluxTurnInfo[];
}

async function connect(
  emu: DeepgramFluxEmulator,
  query: Query = BASE_QUERY,
  opts: { headers?: Record<string, string>; protocols?: string[] } = { headers: auth },
): Promise<Client> {
  const ws = new WebSocket(fluxUrl(emu, query), opts.protocols ?? [], { headers: opts.headers });
  clients.push(ws);
  const messages: FluxServerMessage[] = [];
  const texts: string[] = [];
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    texts.push(text);
    try {
      messages.push(JSON.parse(text) as FluxServerMessage);
    } catch {
      /* garbage frames are kept in texts */
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
  return {
    ws,
    messages,
    texts,
    get upgradeHeaders() {
      return upgradeHeaders;
    },
    closed: withTimeout(closed, 5000, 'client close'),
    waitFor: (pred, timeoutMs = 2000, what = 'client condition') => waitForEvent(ws, 'change', pred, timeoutMs, what),
    sendPcm(pcm, chunkBytes = 2560) {
      for (let o = 0; o < pcm.length; o += chunkBytes) ws.send(pcm.subarray(o, o + chunkBytes));
    },
    send: (obj) => ws.send(JSON.stringify(obj)),
    turns: () => messages.filter((m): m is FluxTurnInfo => m.type === 'TurnInfo'),
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

const events = (c: Client) => c.turns().filter((t) => t.event !== 'Update').map((t) => t.event);
const ofEvent = (c: Client, e: string) => c.turns().filter((t) => t.event === e);

const UTTERANCE = ['hello', 'world', 'alpha', 'bravo'];
const SCRIPT: ScriptItem[] = [{ silenceMs: 300 }, { words: UTTERANCE }, { silenceMs: 1000 }];

describe('upgrade validation', () => {
  it('rejects missing or wrong credentials with 401, dg-error, dg-request-id and a JSON body', async () => {
    const emu = await start({ accessTokens: ['temp-jwt'] });
    const attempts: Array<[Query, Record<string, string>]> = [
      [BASE_QUERY, {}],
      [BASE_QUERY, { Authorization: 'Token nope' }],
      [BASE_QUERY, { Authorization: `Basic ${KEY}` }],
      [{ ...BASE_QUERY, token: KEY }, {}], // an API key is not a temporary token
      [BASE_QUERY, { Authorization: 'Token temp-jwt' }],
    ];
    for (const [query, headers] of attempts) {
      const r = await expectRejection(fluxUrl(emu, query), headers);
      expect(r.status).toBe(401);
      expect(r.headers['dg-error']).toBe('Invalid credentials.');
      expect(JSON.parse(r.body)).toEqual({ err_code: 'INVALID_AUTH', err_msg: 'Invalid credentials.', request_id: r.headers['dg-request-id'] });
    }
    expect(emu.connections).toHaveLength(0);
  });

  it('accepts Token, Bearer, the browser subprotocol and ?token=, and sends dg-request-id on the 101', async () => {
    const emu = await start({ accessTokens: ['temp-jwt'] });
    const a = await connect(emu, BASE_QUERY, { headers: { Authorization: `token ${KEY}` } });
    await connect(emu, BASE_QUERY, { headers: { Authorization: 'Bearer temp-jwt' } });
    const c = await connect(emu, BASE_QUERY, { protocols: ['token', KEY] });
    await connect(emu, { ...BASE_QUERY, token: 'temp-jwt' }, {});
    expect(c.ws.protocol).toBe('token');
    expect(emu.connections.map((x) => [x.auth.scheme, x.auth.via])).toEqual([
      ['token', 'header'],
      ['bearer', 'header'],
      ['token', 'subprotocol'],
      ['bearer', 'query'],
    ]);
    expect(a.upgradeHeaders['dg-request-id']).toBe(emu.connections[0]!.requestId);
  });

  it('rejects bad query parameters with 400 and the vendor error shape', async () => {
    const emu = await start();
    const cases: Array<[Query, RegExp]> = [
      [{ encoding: 'linear16', sample_rate: '16000' }, /model/],
      [{ ...BASE_QUERY, model: 'nova-3' }, /No such model/],
      [{ ...BASE_QUERY, model: 'flux-general' }, /No such model/],
      [{ ...BASE_QUERY, encoding: 'flac' }, /encoding/],
      [{ model: 'flux-general-en', encoding: 'linear16' }, /sample_rate.*required/],
      [{ ...BASE_QUERY, sample_rate: '22050' }, /sample_rate/],
      [{ ...BASE_QUERY, eot_threshold: '0.4' }, /eot_threshold must be between 0.5 and 1/],
      [{ ...BASE_QUERY, eot_threshold: '1.1' }, /eot_threshold/],
      [{ ...BASE_QUERY, eot_threshold: 'high' }, /eot_threshold/],
      [{ ...BASE_QUERY, eager_eot_threshold: '0.2' }, /eager_eot_threshold must be between 0.3 and 0.9/],
      [{ ...BASE_QUERY, eager_eot_threshold: '0.8', eot_threshold: '0.6' }, /less than or equal to eot_threshold/],
      [{ ...BASE_QUERY, eot_timeout_ms: '400' }, /eot_timeout_ms/],
      [{ ...BASE_QUERY, eot_timeout_ms: '60001' }, /eot_timeout_ms/],
      [{ ...BASE_QUERY, eot_timeout_ms: '1500.5' }, /eot_timeout_ms/],
      [{ ...BASE_QUERY, language_hint: 'es' }, /flux-general-multi/],
      [{ ...BASE_QUERY, model: 'flux-general-multi', language_hint: '' }, /language_hint/],
      [{ ...BASE_QUERY, mip_opt_out: 'yes' }, /mip_opt_out/],
      [{ ...BASE_QUERY, redact: 'pci' }, /redact/],
      [{ ...BASE_QUERY, keyterm: '' }, /keyterm/],
    ];
    for (const [query, msg] of cases) {
      const r = await expectRejection(fluxUrl(emu, query), auth);
      expect(r.status, JSON.stringify(query)).toBe(400);
      const body = JSON.parse(r.body) as { err_code: string; err_msg: string; request_id: string };
      expect(body.err_msg, JSON.stringify(query)).toMatch(msg);
      expect(r.headers['dg-error']).toBe(body.err_msg);
      expect(r.headers['dg-request-id']).toBe(body.request_id);
    }
    expect(emu.rejected).toHaveLength(cases.length);
  });

  it('accepts valid combinations and records them (repeated keyterm/tag, unknown keys)', async () => {
    const emu = await start();
    await connect(emu, {
      ...BASE_QUERY,
      eot_threshold: '1.0',
      eager_eot_threshold: '0.4',
      eot_timeout_ms: '60000',
      keyterm: ['foo', 'bar baz'],
      tag: ['a', 'b'],
      mip_opt_out: 'true',
      redact: 'numbers',
      brand_new: 'x',
    });
    await connect(emu, { model: 'flux-general-multi', encoding: 'mulaw', sample_rate: '8000', language_hint: ['en', 'es'] });
    await connect(emu, { model: 'flux-general-en' }); // containerized audio
    const [a, b, c] = emu.connections;
    expect(a!.params).toMatchObject({ eotThreshold: 1, eagerEotThreshold: 0.4, eotTimeoutMs: 60000, keyterms: ['foo', 'bar baz'], tags: ['a', 'b'], mipOptOut: true, redact: ['numbers'], unknown: ['brand_new'] });
    expect(a!.record.query['keyterm']).toEqual(['foo', 'bar baz']);
    expect(b!.params).toMatchObject({ model: 'flux-general-multi', encoding: 'mulaw', sampleRate: 8000, languageHints: ['en', 'es'] });
    expect(c!.params).toMatchObject({ encoding: null, sampleRate: null, eotThreshold: 0.7, eagerEotThreshold: null, eotTimeoutMs: 5000 });
  });

  it('answers 429 beyond maxConcurrent per key and 404 on other paths', async () => {
    const emu = await start({ maxConcurrent: 1 });
    const a = await connect(emu);
    const r = await expectRejection(fluxUrl(emu, BASE_QUERY), auth);
    expect(r.status).toBe(429);
    expect(JSON.parse(r.body)).toMatchObject({ err_code: 'TOO_MANY_REQUESTS' });
    a.ws.close();
    await emu.waitForClose(emu.connections[0]);
    await connect(emu);
    const nf = await expectRejection(fluxUrl(emu, BASE_QUERY, '/v1/listen'), auth);
    expect(nf.status).toBe(404);
    expect(nf.headers['dg-request-id']).toBeTruthy();
  });
});

describe('turns', () => {
  it('sends Connected (sequence 0) at once', async () => {
    const emu = await start();
    const c = await connect(emu);
    const m = await c.waitFor(() => c.messages[0]);
    expect(m).toEqual({ type: 'Connected', request_id: emu.connections[0]!.requestId, sequence_id: 0 });
  });

  it('StartOfTurn with the first word, Updates every 240 ms of audio, EndOfTurn 350 ms after speech', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.sendPcm(synthesize(SCRIPT, { sampleRate: RATE }));
    await c.waitFor(() => ofEvent(c, 'EndOfTurn')[0]);
    await c.waitFor(() => c.turns().at(-1)!.audio_window_end >= 2.19);
    const expected = scriptTimings(SCRIPT, { sampleRate: RATE });
    const all = c.messages;
    expect(all.map((m) => m.sequence_id)).toEqual(all.map((_, i) => i));
    expect(events(c)).toEqual(['StartOfTurn', 'EndOfTurn']);
    const turns = c.turns();
    // Updates before the turn: empty, turn 0, window from 0
    const before = turns.slice(0, turns.findIndex((t) => t.event === 'StartOfTurn'));
    expect(before.map((t) => t.audio_window_end)).toEqual([0.24, 0.48]);
    expect(before.every((t) => t.event === 'Update' && t.transcript === '' && t.turn_index === 0 && t.audio_window_start === 0 && t.end_of_turn_confidence === 0)).toBe(true);
    const sot = ofEvent(c, 'StartOfTurn')[0]!;
    expect(sot.transcript).toBe('Hello');
    // the first word ends at 0.6 s; the detector closes it once the dip into the next word is over
    expect(sot.audio_window_end).toBeGreaterThanOrEqual(0.6);
    expect(sot.audio_window_end).toBeLessThanOrEqual(0.63);
    const eot = ofEvent(c, 'EndOfTurn')[0]!;
    expect(eot).toMatchObject({ turn_index: 0, audio_window_start: 0, trigger: 'model', transcript: 'Hello world alpha bravo' });
    expect(eot.audio_window_end).toBeCloseTo(1.5 + 0.35, 6);
    expect(eot.end_of_turn_confidence).toBeGreaterThanOrEqual(0.7);
    expect(eot.words.map((w) => w.word)).toEqual(['Hello', 'world', 'alpha', 'bravo']);
    eot.words.forEach((w, i) => {
      expect(Math.abs(w.start - expected.words[i]!.start)).toBeLessThanOrEqual(WIN);
      expect(Math.abs(w.end - expected.words[i]!.end)).toBeLessThanOrEqual(WIN);
      expect(w.confidence).toBeGreaterThan(0);
    });
    // Updates inside the turn grow the transcript; after EndOfTurn the index moves on
    const during = turns.slice(turns.indexOf(sot) + 1, turns.indexOf(eot));
    expect(during.every((t) => t.event === 'Update' && t.turn_index === 0)).toBe(true);
    expect(during.map((t) => t.transcript)).toContain('Hello world');
    const ends = [sot, ...during, eot].map((t) => t.audio_window_end);
    for (let i = 1; i < ends.length - 1; i++) expect(ends[i]! - ends[i - 1]!).toBeCloseTo(0.24, 6); // no state change: an Update per 240 ms
    const after = turns.slice(turns.indexOf(eot) + 1);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((t) => t.event === 'Update' && t.turn_index === 1 && t.transcript === '' && t.audio_window_start === eot.audio_window_end)).toBe(true);
    expect('languages' in eot).toBe(false);
  });

  it('produces the same messages however the audio is chunked', async () => {
    const emu = await start();
    const pcm = synthesize([...SCRIPT, { words: ['one', 'two'] }, { silenceMs: 700 }], { sampleRate: RATE });
    const runs: string[][] = [];
    for (const chunk of [2560, 999, 64000]) {
      const c = await connect(emu, { ...BASE_QUERY, eager_eot_threshold: '0.5' });
      c.sendPcm(pcm, chunk);
      c.send({ type: 'CloseStream' });
      await c.closed;
      runs.push(c.messages.map((m) => JSON.stringify({ ...m, request_id: undefined })));
    }
    expect(runs[0]!.length).toBeGreaterThan(10);
    expect(runs[1]).toEqual(runs[0]);
    expect(runs[2]).toEqual(runs[0]);
  });

  it('EagerEndOfTurn, TurnResumed when speech goes on, then Eager + EndOfTurn with the same transcript', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, eager_eot_threshold: '0.4', eot_threshold: '0.8' });
    // the 300 ms pause passes eager (200 ms) but not eot (400 ms)
    c.sendPcm(synthesize([{ words: ['kilo', 'lima'] }, { silenceMs: 300 }, { words: ['mike'] }, { silenceMs: 600 }], { sampleRate: RATE }));
    await c.waitFor(() => ofEvent(c, 'EndOfTurn')[0]);
    expect(events(c)).toEqual(['StartOfTurn', 'EagerEndOfTurn', 'TurnResumed', 'EagerEndOfTurn', 'EndOfTurn']);
    const [e1, e2] = ofEvent(c, 'EagerEndOfTurn');
    expect(e1!.transcript).toBe('Kilo lima');
    expect(e1!.audio_window_end).toBeCloseTo(0.6 + 0.2, 6);
    expect(e1!.end_of_turn_confidence).toBeCloseTo(0.4, 6);
    const resumed = ofEvent(c, 'TurnResumed')[0]!;
    expect(resumed.audio_window_end).toBeCloseTo(0.9, 6); // at the voice onset of "mike"
    const eot = ofEvent(c, 'EndOfTurn')[0]!;
    expect(eot.transcript).toBe(e2!.transcript);
    expect(eot.transcript).toBe('Kilo lima mike');
    expect(eot.audio_window_end).toBeCloseTo(1.2 + 0.4, 6);
    expect(c.turns().every((t) => t.turn_index === 0 || t.event === 'Update')).toBe(true);
  });

  it('eot_threshold=1.0 leaves only eot_timeout_ms (trigger timeout)', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, eot_threshold: '1.0', eot_timeout_ms: '800' });
    c.sendPcm(synthesize([{ words: ['oscar'] }, { silenceMs: 1000 }], { sampleRate: RATE }));
    const eot = await c.waitFor(() => ofEvent(c, 'EndOfTurn')[0]);
    expect(eot.trigger).toBe('timeout');
    expect(eot.audio_window_end).toBeCloseTo(0.3 + 0.8, 6);
    expect(eot.end_of_turn_confidence).toBe(0.99);
  });

  it('ForceEndTurn ends the turn on the words so far (manual); ignored without a turn', async () => {
    const emu = await start();
    const c = await connect(emu);
    const pcm = synthesize([{ words: ['papa', 'quebec', 'romeo'] }], { sampleRate: RATE });
    c.sendPcm(pcm.subarray(0, Math.round(0.75 * RATE) * 2)); // half of "romeo"
    c.send({ type: 'ForceEndTurn' });
    const eot = await c.waitFor(() => ofEvent(c, 'EndOfTurn')[0]);
    expect(eot).toMatchObject({ trigger: 'manual', turn_index: 0, transcript: 'Papa quebec romeo' });
    expect(eot.words[2]!.end).toBeCloseTo(0.75, 6);
    c.sendPcm(Buffer.alloc(RATE * 2 * 0.3)); // silence
    const before = c.messages.length;
    c.send({ type: 'ForceEndTurn' });
    c.send({ type: 'CloseStream' });
    await c.closed;
    expect(c.messages.slice(before).every((m) => m.type === 'TurnInfo' && m.event === 'Update')).toBe(true);
    expect(emu.connections[0]!.counts).toMatchObject({ forceEndTurn: 2, closeStream: 1 });
  });

  it('ForceEndTurn on a deployment without the feature: Error UNPARSABLE_CLIENT_MESSAGE and close', async () => {
    const emu = await start({ forceEndTurn: false });
    const c = await connect(emu);
    c.send({ type: 'ForceEndTurn' });
    const closed = await c.closed;
    expect(closed).toEqual({ code: 1008, reason: UNPARSABLE_REASON });
    expect(c.messages.at(-1)).toMatchObject({ type: 'Error', code: UNPARSABLE_REASON, sequence_id: 1 });
  });

  it('CloseStream ends the open turn, then closes without a status code (1005)', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.sendPcm(synthesize([{ silenceMs: 100 }, { words: ['sierra', 'tango'] }], { sampleRate: RATE }), 1234); // ends mid-speech
    c.send({ type: 'CloseStream' });
    const closed = await c.closed;
    expect(closed).toEqual({ code: 1005, reason: '' });
    expect(events(c)).toEqual(['StartOfTurn', 'EndOfTurn']);
    const eot = ofEvent(c, 'EndOfTurn')[0]!;
    expect(eot).toMatchObject({ trigger: 'manual', transcript: 'Sierra tango' });
    expect(eot.audio_window_end).toBeCloseTo(0.7, 6);
    const conn = await emu.waitForClose();
    expect(conn.record.close).toMatchObject({ code: 1005, by: 'server' });
    expect(conn.audioSeconds).toBeCloseTo(0.7, 6);
    expect(conn.record.frames.filter((f) => f.dir === 'out' && f.kind === 'close')).toHaveLength(1);
  });

  it('an empty binary frame acts as CloseStream', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.ws.send(Buffer.alloc(0));
    expect((await c.closed).code).toBe(1005);
    expect(emu.connections[0]!.counts.emptyBinary).toBe(1);
  });

  it('flux-general-multi adds languages and languages_hinted; numerals turns number words into digits', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, model: 'flux-general-multi', language_hint: ['en', 'de'], numerals: 'true' });
    c.sendPcm(synthesize([{ words: ['one', 'two', 'golf'] }, { silenceMs: 500 }], { sampleRate: RATE }));
    const eot = await c.waitFor(() => ofEvent(c, 'EndOfTurn')[0]);
    expect(eot.transcript).toBe('1 2 golf');
    expect(eot.languages).toEqual(['en']);
    expect(eot.languages_hinted).toEqual(['en', 'de']);
    const update = c.turns()[0]!;
    expect(update).toMatchObject({ event: 'Update', languages: [], languages_hinted: ['en', 'de'] });
  });

  it('transcribes mulaw at 8 kHz and WAV when encoding is omitted', async () => {
    const emu = await start();
    const pcm8 = synthesize([{ words: ['uniform', 'victor'] }, { silenceMs: 500 }], { sampleRate: 8000 });
    const mu = Buffer.alloc(pcm8.length / 2);
    for (let i = 0; i < mu.length; i++) mu[i] = linearToMulaw(pcm8.readInt16LE(i * 2));
    const a = await connect(emu, { model: 'flux-general-en', encoding: 'mulaw', sample_rate: '8000' });
    a.sendPcm(mu, 640);
    expect((await a.waitFor(() => ofEvent(a, 'EndOfTurn')[0])).transcript).toBe('Uniform victor');
    const header = Buffer.alloc(44);
    header.write('RIFF', 0, 'latin1');
    header.writeUInt32LE(36 + pcm8.length, 4);
    header.write('WAVEfmt ', 8, 'latin1');
    header.writeUInt32LE(16, 16);
    header.writeUInt16LE(1, 20);
    header.writeUInt16LE(1, 22);
    header.writeUInt32LE(8000, 24);
    header.writeUInt32LE(16000, 28);
    header.writeUInt16LE(2, 32);
    header.writeUInt16LE(16, 34);
    header.write('data', 36, 'latin1');
    header.writeUInt32LE(pcm8.length, 40);
    const b = await connect(emu, { model: 'flux-general-en' });
    b.sendPcm(Buffer.concat([header, pcm8]), 777);
    expect((await b.waitFor(() => ofEvent(b, 'EndOfTurn')[0])).transcript).toBe('Uniform victor');
  });
});

function linearToMulaw(sample: number): number {
  const BIAS = 0x84;
  const sign = sample < 0 ? 0x80 : 0;
  let s = Math.min(32635, Math.abs(sample)) + BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  s = ~(sign | (exponent << 4) | mantissa) & 0xff;
  return s;
}

describe('Configure', () => {
  it('applies valid updates at once and answers ConfigureSuccess with the settings in effect', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, keyterm: 'foo' });
    c.send({ type: 'Configure', thresholds: { eot_threshold: 1.0, eot_timeout_ms: 600 }, keyterms: ['LiveKit', 'Deepgram'] });
    const ok = await c.waitFor(() => c.messages.find((m): m is FluxConfigureSuccess => m.type === 'ConfigureSuccess'));
    expect(ok).toEqual({
      type: 'ConfigureSuccess',
      request_id: emu.connections[0]!.requestId,
      thresholds: { eot_threshold: 1, eot_timeout_ms: 600 },
      keyterms: ['LiveKit', 'Deepgram'],
      sequence_id: 1,
    });
    c.send({ type: 'Configure', thresholds: { eager_eot_threshold: 0.5 } });
    const ok2 = await c.waitFor(() => c.messages.filter((m): m is FluxConfigureSuccess => m.type === 'ConfigureSuccess')[1]);
    expect(ok2.thresholds).toEqual({ eot_threshold: 1, eot_timeout_ms: 600, eager_eot_threshold: 0.5 });
    expect(ok2.keyterms).toEqual(['LiveKit', 'Deepgram']);
    c.sendPcm(synthesize([{ words: ['zulu'] }, { silenceMs: 700 }], { sampleRate: RATE }));
    const eot = await c.waitFor(() => ofEvent(c, 'EndOfTurn')[0]);
    expect(eot.trigger).toBe('timeout');
    expect(eot.audio_window_end).toBeCloseTo(0.3 + 0.6, 6);
    expect(events(c)).toEqual(['StartOfTurn', 'EagerEndOfTurn', 'EndOfTurn']);
    expect(emu.connections[0]!.current).toMatchObject({ eotThreshold: 1, eagerEotThreshold: 0.5, eotTimeoutMs: 600, keyterms: ['LiveKit', 'Deepgram'] });
  });

  it('answers ConfigureFailure to invalid updates, keeps the settings and the stream', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, eot_threshold: '0.6' });
    const bad: unknown[] = [
      { type: 'Configure', thresholds: { eot_threshold: 0.2 } },
      { type: 'Configure', thresholds: { eager_eot_threshold: 0.7 } }, // > eot 0.6
      { type: 'Configure', thresholds: { eot_timeout_ms: 100 } },
      { type: 'Configure', thresholds: 'fast' },
      { type: 'Configure', keyterms: [''] },
      { type: 'Configure', language_hints: ['en'] }, // flux-general-en
      { type: 'Configure', numerals: 'yes' },
    ];
    for (const m of bad) c.send(m);
    await c.waitFor(() => c.messages.filter((m) => m.type === 'ConfigureFailure').length === bad.length);
    const failures = c.messages.filter((m): m is FluxConfigureFailure => m.type === 'ConfigureFailure');
    expect(failures[0]).toEqual({ type: 'ConfigureFailure', request_id: emu.connections[0]!.requestId, sequence_id: 1 });
    expect(emu.connections[0]!.current).toMatchObject({ eotThreshold: 0.6, eagerEotThreshold: null, eotTimeoutMs: 5000 });
    expect(emu.connections[0]!.counts).toMatchObject({ configure: 7, configureFailure: 7 });
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    emu.fluxFaults.failConfigure = true;
    c.send({ type: 'Configure', keyterms: ['ok'] });
    await c.waitFor(() => c.messages.filter((m) => m.type === 'ConfigureFailure').length === bad.length + 1);
  });

  it('updates language_hints on flux-general-multi', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, model: 'flux-general-multi' });
    c.send({ type: 'Configure', language_hints: ['fr'] });
    const ok = await c.waitFor(() => c.messages.find((m): m is FluxConfigureSuccess => m.type === 'ConfigureSuccess'));
    expect(ok.language_hints).toEqual(['fr']);
    expect(ok.keyterms).toEqual([]);
  });
});

describe('errors and timeouts', () => {
  it('idle: Error NET-0001 then close 1011 when neither audio nor messages arrive', async () => {
    const emu = await start({ idleTimeoutMs: 150 });
    const c = await connect(emu);
    const t0 = performance.now();
    const closed = await c.closed;
    expect(closed).toEqual({ code: 1011, reason: NET_0001_REASON });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(100);
    expect(c.messages.map((m) => m.type)).toEqual(['Connected', 'Error']);
    expect(c.messages[1]).toMatchObject({ code: 'NET-0001', sequence_id: 1 });
  });

  it('KeepAlive resets the idle timer without an answer', async () => {
    const emu = await start({ idleTimeoutMs: 400 });
    const c = await connect(emu);
    for (let i = 0; i < 5; i++) {
      await sleep(100); // 500 ms in all: the socket outlives the 400 ms timeout only thanks to KeepAlive
      c.send({ type: 'KeepAlive' });
    }
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    expect(c.messages.map((m) => m.type)).toEqual(['Connected']);
    expect((await c.closed).code).toBe(1011);
    expect(emu.connections[0]!.counts.keepAlive).toBe(5);
  });

  it('unknown or non-JSON text: Error UNPARSABLE_CLIENT_MESSAGE + 1008; JSON as binary: DATA-0000 + 1008', async () => {
    const emu = await start();
    for (const text of ['{"type":"Finalize"}', 'not json']) {
      const c = await connect(emu);
      c.ws.send(text);
      expect(await c.closed).toEqual({ code: 1008, reason: UNPARSABLE_REASON });
      expect(c.messages.at(-1)).toMatchObject({ type: 'Error', code: UNPARSABLE_REASON });
    }
    const c = await connect(emu);
    c.ws.send(Buffer.from('{"type":"CloseStream"}'));
    expect(await c.closed).toEqual({ code: 1008, reason: DATA_0000_REASON });
    expect(c.messages.at(-1)).toMatchObject({ type: 'Error', code: 'DATA-0000' });
  });

  it('errorAfterAudioSec fault: Error then close 1011; per-connection override', async () => {
    const emu = await start();
    const healthy = await connect(emu);
    const c = await connect(emu);
    emu.connections[1]!.fluxFaults.errorAfterAudioSec = { seconds: 0.5, code: 'INTERNAL_SERVER_ERROR', description: 'boom' };
    const pcm = synthesize(SCRIPT, { sampleRate: RATE });
    c.sendPcm(pcm);
    healthy.sendPcm(pcm);
    expect(await c.closed).toEqual({ code: 1011, reason: 'INTERNAL_SERVER_ERROR' });
    expect(c.messages.at(-1)).toMatchObject({ type: 'Error', code: 'INTERNAL_SERVER_ERROR', description: 'boom' });
    await healthy.waitFor(() => ofEvent(healthy, 'EndOfTurn')[0]);
  });

  it('base faults: refuseUpgrade in the vendor format, deadAir, outDelayMs', async () => {
    const emu = await start({ latencyMs: 0 });
    emu.faultNext({ refuseUpgrade: { status: 503, message: 'Service unavailable' } });
    const r = await expectRejection(fluxUrl(emu, BASE_QUERY), auth);
    expect(r.status).toBe(503);
    expect(r.headers['dg-error']).toBe('Service unavailable');
    emu.faultNext({ deadAir: true });
    const dead = await connect(emu);
    dead.sendPcm(synthesize(SCRIPT, { sampleRate: RATE }));
    dead.send({ type: 'CloseStream' });
    emu.faults.outDelayMs = 150;
    const t0 = performance.now();
    const slow = await connect(emu);
    await slow.waitFor(() => slow.messages[0]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
    expect(dead.texts).toEqual([]);
    expect(emu.connections[0]!.record.suppressed).toBeGreaterThan(3);
  });

  it('latencyMs delays every message', async () => {
    const emu = await start({ latencyMs: 120 });
    const t0 = performance.now();
    const c = await connect(emu);
    await c.waitFor(() => c.messages[0]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(100);
  });
});

describe('wire recording', () => {
  it('records path, query, headers, frames and the no-status close', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, keyterm: ['a', 'b c'] }, { headers: { ...auth, 'X-Extra': 'yes' } });
    c.ws.send(Buffer.alloc(7680)); // 240 ms: one Update
    c.send({ type: 'KeepAlive' });
    c.send({ type: 'CloseStream' });
    await c.closed;
    const conn = await emu.waitForClose();
    const rec = conn.record;
    expect(rec.path).toBe('/v2/listen');
    expect(rec.url).toContain('keyterm=a&keyterm=b+c');
    expect(rec.headers['authorization']).toBe(`Token ${KEY}`);
    expect(rec.headers['x-extra']).toBe('yes');
    expect(rec.frames.filter((f) => f.dir === 'in').map((f) => [f.kind, f.bytes ?? f.text ?? f.code])).toEqual([
      ['binary', 7680],
      ['text', '{"type":"KeepAlive"}'],
      ['text', '{"type":"CloseStream"}'],
      ['close', 1005],
    ]);
    expect(rec.frames.filter((f) => f.dir === 'out').map((f) => f.kind)).toEqual(['text', 'text', 'close']); // Connected, 1 Update, close
    expect(conn.sent.map((m) => m.type)).toEqual(['Connected', 'TurnInfo']);
  });
});

describe('@deepgram/sdk listen.v2 as a client', () => {
  it('connects, receives Connected/TurnInfo/ConfigureSuccess and treats the 1005 close after CloseStream as terminal', async () => {
    const emu = await start();
    const client = new DeepgramClient({ apiKey: KEY, baseUrl: emu.url });
    const socket = await client.listen.v2.connect({
      model: 'flux-general-en',
      encoding: 'linear16',
      sample_rate: RATE,
      eot_threshold: 0.7,
      eager_eot_threshold: 0.5,
      keyterm: ['foo', 'bar baz'],
    });
    const messages: listen.ListenV2TurnInfo[] = [];
    const others: string[] = [];
    socket.on('message', (m) => {
      if (m.type === 'TurnInfo') messages.push(m);
      else others.push(m.type);
    });
    const closed = new Promise<number>((resolve) => socket.on('close', (e) => resolve(e.code)));
    socket.connect();
    await withTimeout(socket.waitForOpen(), 3000, 'sdk open');
    socket.sendConfigure({ type: 'Configure', thresholds: { eot_timeout_ms: 3000 } });
    socket.sendMedia(synthesize(SCRIPT, { sampleRate: RATE }));
    socket.sendForceEndTurn({ type: 'ForceEndTurn' });
    socket.sendCloseStream({ type: 'CloseStream' });
    expect(await withTimeout(closed, 3000, 'sdk close')).toBe(1005);
    await sleep(100); // a reconnect would show up as a second connection
    expect(emu.connections).toHaveLength(1);
    expect(others).toEqual(['Connected', 'ConfigureSuccess']);
    expect(messages.filter((m) => m.event !== 'Update').map((m) => m.event)).toEqual(['StartOfTurn', 'EagerEndOfTurn', 'EndOfTurn']);
    expect(messages.find((m) => m.event === 'EndOfTurn')).toMatchObject({ transcript: 'Hello world alpha bravo', trigger: 'model' });
    const conn = emu.connections[0]!;
    expect(conn.record.headers['authorization']).toBe(`Token ${KEY}`);
    expect(conn.record.query).toMatchObject({ model: ['flux-general-en'], eot_threshold: ['0.7'], eager_eot_threshold: ['0.5'], keyterm: ['foo', 'bar baz'] });
    expect(conn.counts).toMatchObject({ configure: 1, forceEndTurn: 1, closeStream: 1 });
    expect(conn.current.eotTimeoutMs).toBe(3000);
    socket.close();
  });
});
