import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { DeepgramClient, type listen } from '@deepgram/sdk';
import { scriptTimings, synthesize, type ScriptItem } from './audio.ts';
import { GARBAGE_TEXT, selfSignedCert, waitForEvent, withTimeout } from './base.ts';
import {
  DATA_0000_REASON,
  NET_0001_REASON,
  startDeepgramEmulator,
  type DeepgramEmulator,
  type DeepgramEmulatorOptions,
  type DgMetadata,
  type DgResults,
  type DgServerMessage,
  type DgSpeechStarted,
  type DgUtteranceEnd,
} from './deepgram.ts';

// Compile-time proof that the emulator's messages fit the SDK's published types.
type Assignable<T, U extends T> = U;
export type _ResultsFitsSdk = Assignable<listen.ListenV1Results, DgResults>;
export type _MetadataFitsSdk = Assignable<listen.ListenV1Metadata, DgMetadata>;
export type _UtteranceEndFitsSdk = Assignable<listen.ListenV1UtteranceEnd, DgUtteranceEnd>;
export type _SpeechStartedFitsSdk = Assignable<listen.ListenV1SpeechStarted, DgSpeechStarted>;

const KEY = 'dg-test-key';
const RATE = 16000;
const WIN = 0.01 + 1e-6; // one analysis window
const BASE_QUERY = { model: 'nova-3', encoding: 'linear16', sample_rate: String(RATE) };

const emulators: DeepgramEmulator[] = [];
const clients: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: DeepgramEmulatorOptions = {}): Promise<DeepgramEmulator> {
  const emu = await startDeepgramEmulator(opts);
  emulators.push(emu);
  return emu;
}

type Query = Record<string, string | string[]>;

function listenUrl(emu: DeepgramEmulator, query: Query): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) for (const x of Array.isArray(v) ? v : [v]) sp.append(k, x);
  return `${emu.wsUrl}/v1/listen?${sp.toString()}`;
}

interface Client {
  ws: WebSocket;
  messages: DgServerMessage[];
  texts: string[];
  upgradeHeaders: IncomingHttpHeaders;
  closed: Promise<{ code: number; reason: string }>;
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  sendPcm(pcm: Buffer, chunkBytes?: number): void;
  send(obj: unknown): void;
  results(): DgResults[];
}

async function connect(
  emu: DeepgramEmulator,
  query: Query = BASE_QUERY,
  opts: { headers?: Record<string, string>; protocols?: string[]; ca?: string } = { headers: { Authorization: `Token ${KEY}` } },
): Promise<Client> {
  const ws = new WebSocket(listenUrl(emu, query), opts.protocols ?? [], { headers: opts.headers, ca: opts.ca });
  clients.push(ws);
  const messages: DgServerMessage[] = [];
  const texts: string[] = [];
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    texts.push(text);
    try {
      messages.push(JSON.parse(text) as DgServerMessage);
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
    sendPcm(pcm, chunkBytes = 3200) {
      for (let o = 0; o < pcm.length; o += chunkBytes) ws.send(pcm.subarray(o, o + chunkBytes));
    },
    send: (obj) => ws.send(JSON.stringify(obj)),
    results: () => messages.filter((m): m is DgResults => m.type === 'Results'),
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

const auth = { Authorization: `Token ${KEY}` };

const UTTERANCE = ['hello', 'world', 'alpha', 'bravo', 'charlie', 'delta', 'echo', 'golf'];
const SCRIPT: ScriptItem[] = [{ silenceMs: 300 }, { words: UTTERANCE }, { silenceMs: 800 }];

function transcript(r: DgResults): string {
  return r.channel.alternatives[0]!.transcript;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe('upgrade validation', () => {
  it('rejects missing or wrong credentials with 401, dg-error, dg-request-id and a JSON body', async () => {
    const emu = await start();
    const headerSets: Array<Record<string, string>> = [{}, { Authorization: 'Token nope' }, { Authorization: `Basic ${KEY}` }, { Authorization: 'Bearer nope' }];
    for (const headers of headerSets) {
      const r = await expectRejection(listenUrl(emu, BASE_QUERY), headers);
      expect(r.status).toBe(401);
      expect(r.headers['dg-error']).toBe('Invalid credentials.');
      const body = JSON.parse(r.body) as { err_code: string; err_msg: string; request_id: string };
      expect(body).toEqual({ err_code: 'INVALID_AUTH', err_msg: 'Invalid credentials.', request_id: r.headers['dg-request-id'] });
      expect(body.request_id).toMatch(/^[0-9a-f-]{36}$/);
    }
    expect(emu.rejected.map((r) => r.status)).toEqual([401, 401, 401, 401]);
    expect(emu.connections).toHaveLength(0);
  });

  it('accepts Token, Bearer and the browser subprotocol, and sends dg-request-id on the 101', async () => {
    const emu = await start({ accessTokens: ['temp-jwt'] });
    const a = await connect(emu, BASE_QUERY, { headers: { Authorization: `token ${KEY}` } });
    const b = await connect(emu, BASE_QUERY, { headers: { Authorization: 'Bearer temp-jwt' } });
    const c = await connect(emu, BASE_QUERY, { protocols: ['token', KEY] });
    expect(c.ws.protocol).toBe('token');
    expect(emu.connections.map((x) => [x.auth.scheme, x.auth.via])).toEqual([
      ['token', 'header'],
      ['bearer', 'header'],
      ['token', 'subprotocol'],
    ]);
    expect(a.upgradeHeaders['dg-request-id']).toBe(emu.connections[0]!.requestId);
    expect(b.upgradeHeaders['dg-request-id']).toBe(emu.connections[1]!.requestId);
    // a temporary token is not an API key
    const r = await expectRejection(listenUrl(emu, BASE_QUERY), { Authorization: 'Token temp-jwt' });
    expect(r.status).toBe(401);
  });

  it('rejects bad query parameters with 400 and the vendor error shape', async () => {
    const emu = await start();
    const cases: Array<[Query, RegExp]> = [
      [{ ...BASE_QUERY, punctuate: 'yes' }, /punctuate/],
      [{ ...BASE_QUERY, interim_results: '1' }, /interim_results/],
      [{ ...BASE_QUERY, sample_rate: 'abc' }, /sample_rate/],
      [{ ...BASE_QUERY, endpointing: 'soon' }, /endpointing/],
      [{ ...BASE_QUERY, encoding: 'mp3' }, /encoding/],
      [{ model: 'nova-3', encoding: 'linear16' }, /sample_rate.*required/],
      [{ ...BASE_QUERY, keywords: 'alpha:2' }, /^Keywords are not supported for Nova-3\. Please use `keyterm` instead\.$/],
      [{ ...BASE_QUERY, model: 'nova-2', keyterm: 'alpha' }, /Nova-3/],
      [{ ...BASE_QUERY, utterance_end_ms: '1000' }, /interim_results/],
      [{ ...BASE_QUERY, model: 'nova-9' }, /No such model/],
      [{ encoding: 'linear16', sample_rate: '16000' }, /model/],
    ];
    for (const [query, msg] of cases) {
      const r = await expectRejection(listenUrl(emu, query), auth);
      expect(r.status, JSON.stringify(query)).toBe(400);
      const body = JSON.parse(r.body) as { err_code: string; err_msg: string; request_id: string };
      expect(body.err_msg).toMatch(msg);
      expect(r.headers['dg-error']).toBe(body.err_msg);
      expect(r.headers['dg-request-id']).toBe(body.request_id);
    }
    expect(emu.rejected).toHaveLength(cases.length);
  });

  it('accepts valid combinations, records repeated keyterms and unknown parameters', async () => {
    const emu = await start();
    await connect(emu, { ...BASE_QUERY, keyterm: ['foo', 'bar baz'], brand_new_flag: 'x', endpointing: 'false' });
    await connect(emu, { ...BASE_QUERY, model: 'nova-2-general', keywords: 'alpha:2', interim_results: 'true', utterance_end_ms: '1000', endpointing: '300' });
    const [a, b] = emu.connections;
    expect(a!.params.keyterms).toEqual(['foo', 'bar baz']);
    expect(a!.record.query['keyterm']).toEqual(['foo', 'bar baz']);
    expect(a!.params.unknown).toEqual(['brand_new_flag']);
    expect(a!.params.endpointing).toBe(false);
    expect(b!.params.keywords).toEqual(['alpha:2']);
    expect(b!.params.endpointing).toBe(300);
    expect(b!.params.utteranceEndMs).toBe(1000);
  });

  it('answers 429 beyond maxConcurrent sessions per key, and accepts again after a close', async () => {
    const emu = await start({ maxConcurrent: 2, apiKeys: [KEY, 'other-key'] });
    const a = await connect(emu);
    await connect(emu);
    const r = await expectRejection(listenUrl(emu, BASE_QUERY), auth);
    expect(r.status).toBe(429);
    expect(r.headers['dg-error']).toMatch(/Too many requests/);
    expect(JSON.parse(r.body)).toMatchObject({ err_code: 'TOO_MANY_REQUESTS' });
    await connect(emu, BASE_QUERY, { headers: { Authorization: 'Token other-key' } }); // other key unaffected
    a.ws.close();
    await emu.waitForClose(emu.connections[0]);
    await connect(emu);
    expect(emu.connections).toHaveLength(4);
  });

  it('answers 404 on other paths', async () => {
    const emu = await start();
    const r = await expectRejection(`${emu.wsUrl}/v1/speak?model=aura-2`, auth);
    expect(r.status).toBe(404);
    expect(r.headers['dg-request-id']).toBeTruthy();
  });
});

describe('transcription', () => {
  it('sends nothing on open', async () => {
    const emu = await start();
    const c = await connect(emu);
    await sleep(80);
    expect(c.texts).toEqual([]);
    expect(emu.connections[0]!.record.frames).toEqual([]);
  });

  it('sends cumulative interims, then is_final + speech_final with the words and their times', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, interim_results: 'true' });
    c.sendPcm(synthesize(SCRIPT, { sampleRate: RATE }));
    const expected = scriptTimings(SCRIPT, { sampleRate: RATE });
    const final = await c.waitFor(() => c.results().find((r) => r.is_final), 2000, 'final');
    const results = c.results();
    const interims = results.slice(0, results.indexOf(final));
    expect(interims.length).toBe(2); // at 1 s and 2 s of audio
    expect(interims.every((r) => !r.is_final && !r.speech_final && r.start === 0)).toBe(true);
    expect(interims.map((r) => r.duration)).toEqual([1, 2]);
    expect(interims.map(transcript)).toEqual(['hello world', 'hello world alpha bravo charlie']);
    expect(final).toMatchObject({ type: 'Results', channel_index: [0, 1], start: 0, is_final: true, speech_final: true, from_finalize: false });
    expect(transcript(final)).toBe(UTTERANCE.join(' '));
    expect(final.duration).toBeCloseTo(2.71, 6); // end of speech + 10 ms default endpointing
    const words = final.channel.alternatives[0]!.words;
    expect(words.map((w) => w.word)).toEqual(UTTERANCE);
    words.forEach((w, i) => {
      expect(Math.abs(w.start - expected.words[i]!.start)).toBeLessThanOrEqual(WIN);
      expect(Math.abs(w.end - expected.words[i]!.end)).toBeLessThanOrEqual(WIN);
      expect(w.punctuated_word).toBe(w.word);
      expect(w.confidence).toBeGreaterThan(0);
      expect('speaker' in w).toBe(false);
    });
    expect(final.metadata).toMatchObject({ request_id: emu.connections[0]!.requestId, model_info: { arch: 'nova-3' } });
    expect(final.metadata.model_uuid).toMatch(/^[0-9a-f-]{36}$/);
    expect('languages' in final.channel.alternatives[0]!).toBe(false);
  });

  it('sends no interims without interim_results, and starts the next window where the last ended', async () => {
    const emu = await start();
    const c = await connect(emu);
    const script: ScriptItem[] = [{ words: ['one', 'two'] }, { silenceMs: 400 }, { words: ['three'] }, { silenceMs: 100 }];
    c.sendPcm(synthesize(script, { sampleRate: RATE }));
    c.send({ type: 'CloseStream' });
    await c.closed;
    const results = c.results();
    expect(results.every((r) => r.is_final)).toBe(true);
    expect(results.filter((r) => r.speech_final).map(transcript)).toEqual(['one two', 'three']);
    for (let i = 1; i < results.length; i++) {
      expect(results[i]!.start).toBeCloseTo(results[i - 1]!.start + results[i - 1]!.duration, 6);
    }
    const last = results[results.length - 1]!;
    expect(last.start + last.duration).toBeCloseTo(1.4, 6);
  });

  it('produces the same messages however the audio is chunked', async () => {
    const emu = await start();
    const query = { ...BASE_QUERY, interim_results: 'true', vad_events: 'true', utterance_end_ms: '1000' };
    const pcm = synthesize([...SCRIPT, { words: ['one', 'two', 'three'] }, { silenceMs: 1500 }], { sampleRate: RATE });
    const runs: string[][] = [];
    for (const chunk of [3200, 1001, 77777]) {
      const c = await connect(emu, query);
      c.sendPcm(pcm, chunk);
      c.send({ type: 'CloseStream' });
      await c.closed;
      runs.push(c.messages.map((m) => JSON.stringify({ ...m, metadata: undefined, request_id: undefined, created: undefined })));
    }
    expect(runs[0]!.length).toBeGreaterThan(5);
    expect(runs[1]).toEqual(runs[0]);
    expect(runs[2]).toEqual(runs[0]);
  });

  it('honours endpointing in ms: shorter pauses do not end the segment', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, endpointing: '500' });
    c.sendPcm(synthesize([{ words: ['alpha', 'bravo'] }, { silenceMs: 300 }, { words: ['charlie'] }, { silenceMs: 600 }], { sampleRate: RATE }));
    const final = await c.waitFor(() => c.results().find((r) => r.speech_final));
    expect(transcript(final)).toBe('alpha bravo charlie');
    expect(final.start + final.duration).toBeCloseTo(1.2 + 0.5, 6); // end of speech + 500 ms
  });

  it('with endpointing=false finalizes long speech at a word boundary without speech_final', async () => {
    const emu = await start({ maxSegmentMs: 1000 });
    const c = await connect(emu, { ...BASE_QUERY, endpointing: 'false' });
    c.sendPcm(synthesize([{ words: ['one', 'two', 'three', 'four', 'one', 'two', 'three'] }, { silenceMs: 500 }], { sampleRate: RATE }));
    c.send({ type: 'CloseStream' });
    await c.closed;
    const finals = c.results();
    expect(finals.length).toBeGreaterThanOrEqual(2);
    expect(finals.every((r) => r.is_final && !r.speech_final)).toBe(true);
    expect(transcript(finals[0]!)).toBe('one two three');
    expect(finals[0]!.duration).toBeCloseTo(0.9, 2); // ends at the end of "three"
    expect(finals.map(transcript).join(' ').trim()).toBe('one two three four one two three');
  });

  it('sends SpeechStarted at each voice onset before the results of that speech', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, vad_events: 'true', interim_results: 'true' });
    const script: ScriptItem[] = [{ silenceMs: 500 }, { words: ['kilo', 'lima'] }, { silenceMs: 300 }, { words: ['mike'] }, { silenceMs: 100 }];
    c.sendPcm(synthesize(script, { sampleRate: RATE }));
    await c.waitFor(() => c.results().filter((r) => r.speech_final).length === 2);
    const types = c.messages.map((m) => m.type);
    expect(types[0]).toBe('SpeechStarted');
    const started = c.messages.filter((m): m is DgSpeechStarted => m.type === 'SpeechStarted');
    expect(started.map((s) => s.channel)).toEqual([[0, 1], [0, 1]]);
    expect(Math.abs(started[0]!.timestamp - 0.5)).toBeLessThanOrEqual(WIN);
    expect(Math.abs(started[1]!.timestamp - 1.4)).toBeLessThanOrEqual(WIN);
    const secondSs = c.messages.indexOf(started[1]!);
    const mikeFinal = c.messages.findIndex((m) => m.type === 'Results' && transcript(m) === 'mike');
    expect(secondSs).toBeLessThan(mikeFinal);
  });

  it('sends one UtteranceEnd per gap >= utterance_end_ms after the last word', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, interim_results: 'true', utterance_end_ms: '1000' });
    const script: ScriptItem[] = [{ words: ['papa', 'quebec'] }, { silenceMs: 700 }, { words: ['romeo'] }, { silenceMs: 2500 }];
    c.sendPcm(synthesize(script, { sampleRate: RATE }));
    c.send({ type: 'CloseStream' });
    await c.closed;
    const ue = c.messages.filter((m): m is DgUtteranceEnd => m.type === 'UtteranceEnd');
    expect(ue).toHaveLength(1); // the 700 ms gap is too short; the 2.5 s one counts once
    expect(ue[0]!.channel).toEqual([0, 1]);
    expect(Math.abs(ue[0]!.last_word_end - 1.6)).toBeLessThanOrEqual(WIN);
    const idx = c.messages.indexOf(ue[0]!);
    const romeoFinal = c.messages.findIndex((m) => m.type === 'Results' && m.is_final && transcript(m) === 'romeo');
    expect(romeoFinal).toBeLessThan(idx);
  });

  it('sends empty finals during long silence every silenceResultEveryMs of audio', async () => {
    const emu = await start({ silenceResultEveryMs: 1000 });
    const c = await connect(emu);
    c.sendPcm(Buffer.alloc(RATE * 2 * 3.5));
    await c.waitFor(() => c.results().length === 3);
    const r = c.results();
    expect(r.map((x) => [x.start, x.duration, x.is_final, x.speech_final, transcript(x)])).toEqual([
      [0, 1, true, false, ''],
      [1, 1, true, false, ''],
      [2, 1, true, false, ''],
    ]);
    expect(r[0]!.channel.alternatives[0]!.confidence).toBe(0);
  });

  it('punctuates with punctuate/smart_format, labels speakers with diarize, lists languages for multi', async () => {
    const emu = await start();
    const script: ScriptItem[] = [{ words: ['hello', 'world'] }, { silenceMs: 200 }, { words: ['alpha'] }, { silenceMs: 100 }];
    const pcm = synthesize(script, { sampleRate: RATE });
    const run = async (q: Query) => {
      const c = await connect(emu, { ...BASE_QUERY, ...q });
      c.sendPcm(pcm);
      return c.waitFor(() => {
        const f = c.results().filter((r) => r.speech_final);
        return f.length === 2 ? f : undefined;
      });
    };
    const p = await run({ punctuate: 'true' });
    expect(p.map(transcript)).toEqual(['Hello world.', 'Alpha.']);
    expect(p[0]!.channel.alternatives[0]!.words.map((w) => [w.word, w.punctuated_word])).toEqual([
      ['hello', 'Hello'],
      ['world', 'world.'],
    ]);
    const s = await run({ smart_format: 'true' });
    expect(s.map(transcript)).toEqual(['Hello world.', 'Alpha.']);
    const d = await run({ diarize: 'true' });
    expect(d.map((r) => r.channel.alternatives[0]!.words.map((w) => w.speaker))).toEqual([[0, 0], [1]]);
    expect(d[0]!.metadata.diarize_info?.arch).toBe('v1');
    const m = await run({ language: 'multi' });
    expect(m[0]!.channel.alternatives[0]!.languages).toEqual(['en']);
    expect(m[0]!.channel.alternatives[0]!.words[0]!.language).toBe('en');
  });

  it('transcribes WAV when encoding is omitted', async () => {
    const emu = await start();
    const pcm = synthesize([{ words: ['tango', 'uniform'] }, { silenceMs: 100 }], { sampleRate: 8000 });
    const header = Buffer.alloc(44);
    header.write('RIFF', 0, 'latin1');
    header.writeUInt32LE(36 + pcm.length, 4);
    header.write('WAVEfmt ', 8, 'latin1');
    header.writeUInt32LE(16, 16);
    header.writeUInt16LE(1, 20);
    header.writeUInt16LE(1, 22);
    header.writeUInt32LE(8000, 24);
    header.writeUInt32LE(16000, 28);
    header.writeUInt16LE(2, 32);
    header.writeUInt16LE(16, 34);
    header.write('data', 36, 'latin1');
    header.writeUInt32LE(pcm.length, 40);
    const c = await connect(emu, { model: 'nova-3' });
    c.sendPcm(Buffer.concat([header, pcm]), 999);
    c.send({ type: 'CloseStream' });
    await c.closed;
    expect(c.results().filter((r) => r.speech_final).map(transcript)).toEqual(['tango uniform']);
    const meta = c.messages.find((m): m is DgMetadata => m.type === 'Metadata')!;
    expect(meta.duration).toBeCloseTo(0.7, 6);
  });
});

describe('control messages and closes', () => {
  it('Finalize flushes the window as is_final + from_finalize; nothing when no audio arrived since', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, interim_results: 'true' });
    // speech still going on: "victor whiskey" and half of "xray"
    const pcm = synthesize([{ words: ['victor', 'whiskey', 'xray'] }], { sampleRate: RATE });
    c.sendPcm(pcm.subarray(0, Math.round(0.75 * RATE) * 2));
    c.send({ type: 'Finalize' });
    const f = await c.waitFor(() => c.results().find((r) => r.from_finalize));
    expect(f).toMatchObject({ is_final: true, speech_final: false, from_finalize: true, start: 0 });
    expect(f.duration).toBeCloseTo(0.75, 6);
    expect(transcript(f)).toBe('victor whiskey xray');
    expect(f.channel.alternatives[0]!.words[2]!.end).toBeCloseTo(0.75, 6);
    const before = c.messages.length;
    c.send({ type: 'Finalize' }); // no audio since the last final -> nothing
    c.send({ type: 'CloseStream' });
    await c.closed;
    expect(c.messages.slice(before).map((m) => m.type)).toEqual(['Metadata']);
    expect(emu.connections[0]!.counts).toMatchObject({ finalize: 2, closeStream: 1, keepAlive: 0 });
  });

  it('Finalize after silence returns an empty from_finalize result', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.sendPcm(synthesize([{ words: ['golf'] }, { silenceMs: 400 }], { sampleRate: RATE }));
    c.send({ type: 'Finalize' });
    const f = await c.waitFor(() => c.results().find((r) => r.from_finalize));
    expect(transcript(f)).toBe('');
    expect(f.start).toBeCloseTo(0.31, 6);
    expect(f.start + f.duration).toBeCloseTo(0.7, 6);
  });

  it('CloseStream flushes, sends Metadata (duration = audio sent, sha256) and closes 1000', async () => {
    const emu = await start();
    const c = await connect(emu);
    const pcm = synthesize([{ silenceMs: 100 }, { words: ['india', 'juliet'] }], { sampleRate: RATE }); // ends mid-speech
    c.sendPcm(pcm, 1234);
    c.send({ type: 'CloseStream' });
    const closed = await c.closed;
    expect(closed).toEqual({ code: 1000, reason: '' });
    const types = c.messages.map((m) => m.type);
    expect(types).toEqual(['Results', 'Metadata']);
    const last = c.results()[0]!;
    expect(last).toMatchObject({ is_final: true, speech_final: false, from_finalize: false });
    expect(transcript(last)).toBe('india juliet');
    const meta = c.messages[1] as DgMetadata;
    expect(Object.keys(meta).sort()).toEqual(['channels', 'created', 'duration', 'request_id', 'sha256', 'transaction_key', 'type']);
    expect(meta.duration).toBeCloseTo(0.7, 6);
    expect(meta.channels).toBe(1);
    expect(meta.sha256).toBe(createHash('sha256').update(pcm).digest('hex'));
    expect(meta.request_id).toBe(emu.connections[0]!.requestId);
    expect(Number.isNaN(Date.parse(meta.created))).toBe(false);
    const conn = emu.connections[0]!;
    expect(conn.audioSeconds).toBeCloseTo(0.7, 6);
    expect(conn.record.audioSeconds).toBeCloseTo(0.7, 6);
    await emu.waitForClose(conn);
    expect(conn.record.close).toMatchObject({ code: 1000, by: 'server' });
  });

  it('treats an empty binary frame as CloseStream', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.sendPcm(synthesize([{ words: ['oscar'] }], { sampleRate: RATE }));
    c.ws.send(Buffer.alloc(0));
    expect((await c.closed).code).toBe(1000);
    expect(c.messages.map((m) => m.type)).toEqual(['Results', 'Metadata']);
    expect(emu.connections[0]!.counts.emptyBinary).toBe(1);
  });

  it('closes 1011 NET-0001 when neither audio nor KeepAlive arrives within the idle timeout', async () => {
    const emu = await start({ idleTimeoutMs: 150 });
    const c = await connect(emu);
    const t0 = performance.now();
    const closed = await c.closed;
    expect(closed.code).toBe(1011);
    expect(closed.reason.startsWith('NET-0001')).toBe(true);
    expect(closed.reason).toBe(NET_0001_REASON);
    expect(Buffer.byteLength(closed.reason)).toBeLessThanOrEqual(123);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(100);
  });

  it('KeepAlive resets the idle timer without any response', async () => {
    const emu = await start({ idleTimeoutMs: 300 });
    const c = await connect(emu);
    for (let i = 0; i < 6; i++) {
      await sleep(50);
      c.send({ type: 'KeepAlive' });
    }
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    await emu.waitFor(() => emu.connections[0]!.counts.keepAlive === 6);
    expect(c.texts).toEqual([]);
    expect((await c.closed).code).toBe(1011);
  });

  it('closes 1008 DATA-0000 for JSON sent as a binary frame', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.ws.send(Buffer.from(JSON.stringify({ type: 'KeepAlive' })));
    const closed = await c.closed;
    expect(closed.code).toBe(1008);
    expect(closed.reason.startsWith('DATA-0000')).toBe(true);
    expect(closed.reason).toBe(DATA_0000_REASON);
    expect(Buffer.byteLength(closed.reason)).toBeLessThanOrEqual(123);
  });

  it('closes 1008 DATA-0000 for unknown text messages', async () => {
    const emu = await start();
    for (const text of ['{"type":"Flush"}', 'not json']) {
      const c = await connect(emu);
      c.ws.send(text);
      const closed = await c.closed;
      expect(closed.code).toBe(1008);
      expect(closed.reason).toMatch(/^DATA-0000/);
    }
    expect(emu.connections.map((c) => c.counts.invalidText)).toEqual([1, 1]);
  });

  it('adds latencyMs of wall-clock delay to every message', async () => {
    const emu = await start({ latencyMs: 120 });
    const c = await connect(emu);
    const t0 = performance.now();
    c.sendPcm(synthesize([{ words: ['sierra'] }, { silenceMs: 50 }], { sampleRate: RATE }));
    await c.waitFor(() => c.results().length > 0);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(100);
  });

  it('serves TLS (wss) with a self-signed certificate', async () => {
    const tls = selfSignedCert();
    const emu = await start({ tls });
    expect(emu.url.startsWith('https://')).toBe(true);
    const c = await connect(emu, BASE_QUERY, { headers: auth, ca: tls.cert.toString() });
    c.sendPcm(synthesize([{ words: ['tango'] }, { silenceMs: 50 }], { sampleRate: RATE }));
    const r = await c.waitFor(() => c.results()[0]);
    expect(transcript(r)).toBe('tango');
  });
});

describe('wire recording', () => {
  it('records path, query, headers and frames; binary by length unless recordAudio', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, keyterm: ['a', 'b c'] }, { headers: { ...auth, 'X-Extra': 'yes' } });
    c.ws.send(Buffer.alloc(3200));
    c.send({ type: 'KeepAlive' });
    c.send({ type: 'CloseStream' });
    await c.closed;
    await emu.waitForClose();
    const rec = emu.connections[0]!.record;
    expect(rec.path).toBe('/v1/listen');
    expect(rec.url).toContain('keyterm=a&keyterm=b+c');
    expect(rec.query['keyterm']).toEqual(['a', 'b c']);
    expect(rec.headers['authorization']).toBe(`Token ${KEY}`);
    expect(rec.headers['x-extra']).toBe('yes');
    const inFrames = rec.frames.filter((f) => f.dir === 'in');
    expect(inFrames.map((f) => [f.kind, f.bytes ?? f.text ?? f.code])).toEqual([
      ['binary', 3200],
      ['text', '{"type":"KeepAlive"}'],
      ['text', '{"type":"CloseStream"}'],
      ['close', 1000],
    ]);
    expect(inFrames[0]!.data).toBeUndefined();
    const outKinds = rec.frames.filter((f) => f.dir === 'out').map((f) => f.kind);
    expect(outKinds).toEqual(['text', 'text', 'close']); // empty final for 0.1 s of silence, Metadata, close
    expect(rec.frames.every((f, i) => i === 0 || f.t >= rec.frames[i - 1]!.t)).toBe(true);

    const emu2 = await start({ recordAudio: true });
    const c2 = await connect(emu2);
    c2.ws.send(Buffer.from([1, 2, 3, 4]));
    const f = await emu2.waitFor(() => emu2.connections[0]?.record.frames[0]);
    expect(f.data).toEqual(Buffer.from([1, 2, 3, 4]));
  });
});

describe('plain HTTP', () => {
  it('answers 404 to HTTP requests and records them', async () => {
    const emu = await start();
    const res = await fetch(`${emu.url}/v1/projects`, { headers: auth });
    expect(res.status).toBe(404);
    await emu.waitFor(() => emu.server.httpRequests[0]?.status);
    expect(emu.server.httpRequests[0]).toMatchObject({ method: 'GET', url: '/v1/projects', status: 404 });
  });
});

describe('fault switches', () => {
  it('refuseUpgrade answers with the given status in the vendor format; faultNext applies once', async () => {
    const emu = await start();
    emu.faultNext({ refuseUpgrade: { status: 503, message: 'Service unavailable' } });
    const r = await expectRejection(listenUrl(emu, BASE_QUERY), auth);
    expect(r.status).toBe(503);
    expect(r.headers['dg-error']).toBe('Service unavailable');
    expect(r.headers['dg-request-id']).toBeTruthy();
    await connect(emu); // next one is fine
    emu.faults.refuseUpgrade = { status: 429, body: 'slow down', headers: { 'retry-after': '1' } };
    const r2 = await expectRejection(listenUrl(emu, BASE_QUERY), auth);
    expect([r2.status, r2.body, r2.headers['retry-after']]).toEqual([429, 'slow down', '1']);
    expect(emu.rejected.map((x) => x.status)).toEqual([503, 429]);
  });

  it('upgradeDelayMs delays the 101', async () => {
    const emu = await start();
    emu.faults.upgradeDelayMs = 150;
    const t0 = performance.now();
    await connect(emu);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
  });

  it('outDelayMs delays every outgoing message, keeping order', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, interim_results: 'true' });
    emu.faults.outDelayMs = 300;
    const t0 = performance.now();
    c.sendPcm(synthesize(SCRIPT, { sampleRate: RATE }));
    await sleep(50);
    expect(c.messages).toHaveLength(0);
    await c.waitFor(() => c.results().find((r) => r.speech_final));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(c.results().map((r) => r.is_final)).toEqual([false, false, true]);
  });

  it('dropAfterAudioSec destroys the TCP connection without a close frame', async () => {
    const emu = await start();
    emu.faultNext({ dropAfterAudioSec: 1 });
    const c = await connect(emu, { ...BASE_QUERY, interim_results: 'true' });
    c.sendPcm(synthesize(SCRIPT, { sampleRate: RATE }));
    const closed = await c.closed;
    expect(closed.code).toBe(1006);
    const rec = emu.connections[0]!.record;
    expect(rec.close).toMatchObject({ code: 1006, by: 'drop' });
    expect(rec.audioSeconds).toBeCloseTo(1, 6);
    // the chunk that reached 1 s was dropped before processing: no interim (due at 1 s) was sent
    expect(c.texts).toEqual([]);
    // the next connection is unaffected
    const c2 = await connect(emu);
    c2.sendPcm(synthesize(SCRIPT, { sampleRate: RATE }));
    await c2.waitFor(() => c2.results().find((r) => r.speech_final));
  });

  it('closeAfterAudioSec closes with the given code and reason', async () => {
    const emu = await start();
    emu.faults.closeAfterAudioSec = { seconds: 0.5, code: 1011, reason: 'NET-0000 injected' };
    const c = await connect(emu);
    c.sendPcm(synthesize(SCRIPT, { sampleRate: RATE }));
    expect(await c.closed).toEqual({ code: 1011, reason: 'NET-0000 injected' });
    await emu.waitForClose();
    expect(emu.connections[0]!.record.close).toMatchObject({ code: 1011, by: 'server' });
  });

  it('garbageAfterAudioSec sends one non-JSON text frame and carries on', async () => {
    const emu = await start();
    emu.faults.garbageAfterAudioSec = { seconds: 0.2 };
    const c = await connect(emu);
    c.sendPcm(synthesize(SCRIPT, { sampleRate: RATE }));
    await c.waitFor(() => c.results().find((r) => r.speech_final));
    expect(c.texts.filter((t) => t === GARBAGE_TEXT)).toHaveLength(1);
    expect(c.texts[0]).toBe(GARBAGE_TEXT);
  });

  it('deadAir accepts audio but sends nothing, not even on CloseStream; per-connection override', async () => {
    const emu = await start();
    const c = await connect(emu);
    emu.connections[0]!.session.faults.deadAir = true;
    const healthy = await connect(emu);
    const pcm = synthesize(SCRIPT, { sampleRate: RATE });
    c.sendPcm(pcm);
    c.send({ type: 'CloseStream' });
    healthy.sendPcm(pcm);
    await healthy.waitFor(() => healthy.results().find((r) => r.speech_final));
    await sleep(50);
    expect(c.texts).toEqual([]);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    const rec = emu.connections[0]!.record;
    expect(rec.suppressed).toBeGreaterThanOrEqual(3); // final, Metadata, close
    expect(rec.audioSeconds).toBeCloseTo(3.5, 6);
    expect(rec.frames.filter((f) => f.dir === 'out')).toEqual([]);
  });
});

describe('@deepgram/sdk as a client', () => {
  it('connects with the SDK, receives Results and Metadata, and closes 1000', async () => {
    const emu = await start();
    const client = new DeepgramClient({ apiKey: KEY, baseUrl: emu.url, reconnect: false });
    const socket = await client.listen.v1.connect({
      model: 'nova-3',
      encoding: 'linear16',
      sample_rate: RATE,
      interim_results: 'true',
      punctuate: 'true',
      keyterm: ['foo', 'bar baz'],
      reconnectAttempts: 0,
    });
    const messages: listen.ListenV1Results[] = [];
    let metadata: listen.ListenV1Metadata | undefined;
    socket.on('message', (m) => {
      if (m.type === 'Results') messages.push(m);
      if (m.type === 'Metadata') metadata = m;
    });
    const closed = new Promise<number>((resolve) => socket.on('close', (e) => resolve(e.code)));
    socket.connect();
    await withTimeout(socket.waitForOpen(), 3000, 'sdk open');
    const pcm = synthesize(SCRIPT, { sampleRate: RATE });
    socket.sendMedia(pcm);
    socket.sendKeepAlive({ type: 'KeepAlive' });
    socket.sendCloseStream({ type: 'CloseStream' });
    expect(await withTimeout(closed, 3000, 'sdk close')).toBe(1000);
    const finals = messages.filter((m) => m.is_final && m.speech_final);
    expect(finals.map((m) => m.channel.alternatives[0]!.transcript)).toEqual(['Hello world alpha bravo charlie delta echo golf.']);
    expect(messages.some((m) => !m.is_final)).toBe(true);
    expect(metadata?.duration).toBeCloseTo(3.5, 6);
    const conn = emu.connections[0]!;
    expect(conn.record.headers['authorization']).toBe(`Token ${KEY}`);
    expect(conn.record.query['keyterm']).toEqual(['foo', 'bar baz']);
    expect(conn.counts).toMatchObject({ keepAlive: 1, closeStream: 1 });
    socket.close();
  });

  it('surfaces the 400 for keywords with nova-3 before connecting (SDK-side check mirrors the API)', async () => {
    const emu = await start();
    const client = new DeepgramClient({ apiKey: KEY, baseUrl: emu.url, reconnect: false });
    await expect(client.listen.v1.connect({ model: 'nova-3', keywords: 'alpha:2', reconnectAttempts: 0 })).rejects.toThrow(/keyterm/);
    // and the emulator says the same thing at the upgrade when a raw client tries
    const r = await expectRejection(listenUrl(emu, { ...BASE_QUERY, keywords: 'alpha:2' }), auth);
    expect(JSON.parse(r.body).err_msg).toBe('Keywords are not supported for Nova-3. Please use `keyterm` instead.');
  });
});
