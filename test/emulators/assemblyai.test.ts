import tls from 'node:tls';
import type { IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { AssemblyAI, type BeginEvent, type TerminationEvent, type TurnEvent } from 'assemblyai';
import { scriptTimings, synthesize, type ScriptItem } from './audio.ts';
import { selfSignedCert, waitForEvent, withTimeout } from './base.ts';
import {
  REASONS,
  startAssemblyAiEmulator,
  type AaiBegin,
  type AaiServerMessage,
  type AaiSpeechStarted,
  type AaiTermination,
  type AaiTurn,
  type AssemblyAiEmulator,
  type AssemblyAiEmulatorOptions,
} from './assemblyai.ts';

// Compile-time proof that the emulator's messages fit the SDK's published types.
type Assignable<T, U extends T> = U;
export type _BeginFitsSdk = Assignable<BeginEvent, AaiBegin>;
export type _TurnFitsSdk = Assignable<TurnEvent, AaiTurn>;
export type _TerminationFitsSdk = Assignable<TerminationEvent, AaiTermination>;

const KEY = 'aai-test-key';
const RATE = 16000;
const CHUNK = 1600; // 50 ms at 16 kHz s16le
const WIN_MS = 10 + 1e-6; // one analysis window
const BASE_QUERY = { speech_model: 'universal-streaming-english', sample_rate: String(RATE) };

const emulators: AssemblyAiEmulator[] = [];
const clients: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: AssemblyAiEmulatorOptions = {}): Promise<AssemblyAiEmulator> {
  const emu = await startAssemblyAiEmulator(opts);
  emulators.push(emu);
  return emu;
}

type Query = Record<string, string>;

function wsUrl(emu: AssemblyAiEmulator, query: Query): string {
  return `${emu.streamingUrl}?${new URLSearchParams(query).toString()}`;
}

interface Client {
  ws: WebSocket;
  messages: AaiServerMessage[];
  closed: Promise<{ code: number; reason: string }>;
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  /** PCM in 50 ms chunks (the script must be a multiple of 50 ms) */
  sendPcm(pcm: Buffer, chunkBytes?: number): void;
  send(obj: unknown): void;
  turns(): AaiTurn[];
}

async function connect(emu: AssemblyAiEmulator, query: Query = BASE_QUERY, headers: Record<string, string> = { Authorization: KEY }, ca?: string): Promise<Client> {
  const ws = new WebSocket(wsUrl(emu, query), { headers, ca });
  clients.push(ws);
  const messages: AaiServerMessage[] = [];
  ws.on('message', (data) => {
    messages.push(JSON.parse(data.toString()) as AaiServerMessage);
    ws.emit('change');
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => {
      resolve({ code, reason: reason.toString() });
      ws.emit('change');
    }),
  );
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
    closed: withTimeout(closed, 5000, 'client close'),
    waitFor: (pred, timeoutMs = 2000, what = 'client condition') => waitForEvent(ws, 'change', pred, timeoutMs, what),
    sendPcm(pcm, chunkBytes = CHUNK) {
      expect(pcm.length % CHUNK).toBe(0);
      for (let o = 0; o < pcm.length; o += chunkBytes) ws.send(pcm.subarray(o, o + chunkBytes));
    },
    send: (obj) => ws.send(JSON.stringify(obj)),
    turns: () => messages.filter((m): m is AaiTurn => m.type === 'Turn'),
  };
}

function pcmOf(script: ScriptItem[], sampleRate = RATE): Buffer {
  return synthesize(script, { sampleRate });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const UTTERANCE = ['hello', 'world', 'alpha', 'bravo'];
const SCRIPT: ScriptItem[] = [{ silenceMs: 300 }, { words: UTTERANCE }, { silenceMs: 600 }];

describe('upgrade, auth and parameters', () => {
  it('answers 404 with the {"error"} body on other paths', async () => {
    const emu = await start();
    const res = await fetch(`${emu.url}/v2/realtime/ws`, { headers: { Authorization: KEY } });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: 'Not found' });
    const r = await withTimeout(
      new Promise<number>((resolve) => {
        const ws = new WebSocket(`${emu.wsUrl}/v2/realtime/ws`, { headers: { Authorization: KEY } });
        ws.on('error', () => {});
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      }),
      3000,
      'rejection',
    );
    expect(r).toBe(404);
  });

  it('sends Begin first with a session id and an expiry 3 h ahead', async () => {
    const emu = await start();
    const c = await connect(emu);
    const begin = await c.waitFor(() => c.messages[0]);
    expect(begin).toMatchObject({ type: 'Begin', id: emu.connections[0]!.sessionId });
    expect((begin as AaiBegin).id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Math.abs((begin as AaiBegin).expires_at - (Date.now() / 1000 + 10800))).toBeLessThan(5);
    expect(emu.connections[0]!.auth).toEqual({ via: 'header', key: KEY });
  });

  it('closes 1008 for a missing or wrong Authorization header, without Begin', async () => {
    const emu = await start();
    const cases: Array<[Record<string, string>, string]> = [
      [{}, REASONS.missingAuth],
      [{ Authorization: 'nope' }, REASONS.invalidKey],
      [{ Authorization: `Bearer ${KEY}` }, REASONS.invalidKey], // raw key, no scheme
    ];
    for (const [headers, reason] of cases) {
      const c = await connect(emu, BASE_QUERY, headers);
      expect(await c.closed).toEqual({ code: 1008, reason });
      expect(c.messages).toEqual([]);
    }
    expect(emu.connections.map((x) => x.refused?.code)).toEqual([1008, 1008, 1008]);
  });

  it('closes 3006 for invalid query parameters', async () => {
    const emu = await start();
    const cases: Array<[Query, RegExp]> = [
      [{ sample_rate: '16000' }, /speech_model is required/],
      [{ ...BASE_QUERY, speech_model: 'nova-3' }, /speech_model must be one of/],
      [{ speech_model: 'u3-rt-pro' }, /sample_rate is required/],
      [{ ...BASE_QUERY, sample_rate: 'abc' }, /sample_rate/],
      [{ ...BASE_QUERY, encoding: 'mp3' }, /encoding/],
      [{ ...BASE_QUERY, format_turns: 'yes' }, /format_turns must be true or false/],
      [{ ...BASE_QUERY, end_of_turn_confidence_threshold: '1.5' }, /end_of_turn_confidence_threshold/],
      [{ ...BASE_QUERY, inactivity_timeout: '2' }, /inactivity_timeout must be an integer between 5 and 3600/],
      [{ ...BASE_QUERY, max_turn_silence: '-1' }, /max_turn_silence/],
      [{ ...BASE_QUERY, keyterms_prompt: 'alpha,bravo' }, /keyterms_prompt must be a JSON array/],
      [{ ...BASE_QUERY, keyterms_prompt: JSON.stringify(Array.from({ length: 101 }, (_, i) => `t${i}`)) }, /at most 100/],
      [{ ...BASE_QUERY, speech_model: 'u3-rt-pro', prompt: 'Transcribe.', keyterms_prompt: '["a"]' }, /cannot be used together/],
    ];
    for (const [query, reason] of cases) {
      const c = await connect(emu, query);
      const closed = await c.closed;
      expect(closed.code, JSON.stringify(query)).toBe(3006);
      expect(closed.reason.startsWith('Invalid Query Parameter: ')).toBe(true);
      expect(closed.reason).toMatch(reason);
      expect(Buffer.byteLength(closed.reason)).toBeLessThanOrEqual(123);
      expect(c.messages).toEqual([]);
    }
  });

  it('applies per-model defaults, the deprecated silence name, keyterms and unknown keys', async () => {
    const emu = await start({ requireSpeechModel: false });
    await connect(emu, { sample_rate: '8000', keyterms_prompt: '["LiveKit","bar baz"]', brand_new: 'x' });
    await connect(emu, { sample_rate: '16000', speech_model: 'u3-rt-pro', agent_context: 'hi there', prompt: 'Transcribe.' });
    await connect(emu, { ...BASE_QUERY, min_end_of_turn_silence_when_confident: '160', max_turn_silence: '400', end_of_turn_confidence_threshold: '0' });
    await connect(emu, { ...BASE_QUERY, min_end_of_turn_silence_when_confident: '160', min_turn_silence: '200', format_turns: 'True' });
    const [a, b, c, d] = emu.connections.map((x) => x.params!);
    expect(a).toMatchObject({ speechModel: 'universal-streaming-english', u3: false, sampleRate: 8000, encoding: 'pcm_s16le', minTurnSilence: 400, maxTurnSilence: 1280, endOfTurnConfidenceThreshold: 0.4, keytermsPrompt: ['LiveKit', 'bar baz'], unknown: ['brand_new'] });
    expect(b).toMatchObject({ speechModel: 'u3-rt-pro', u3: true, minTurnSilence: 100, maxTurnSilence: 1000, agentContext: 'hi there', prompt: 'Transcribe.' });
    expect(c).toMatchObject({ minTurnSilence: 160, maxTurnSilence: 400, endOfTurnConfidenceThreshold: 0 });
    expect(d).toMatchObject({ minTurnSilence: 200, formatTurns: true });
  });

  it('closes 1008 past maxSessionsPerMinute and 3009 past maxConcurrent, per key', async () => {
    const emu = await start({ maxSessionsPerMinute: 2, apiKeys: [KEY, 'other'] });
    await connect(emu);
    const b = await connect(emu);
    b.ws.close();
    await emu.waitForClose(emu.connections[1]);
    const c = await connect(emu); // closing a session does not give the minute's budget back
    expect(await c.closed).toEqual({ code: 1008, reason: REASONS.rateLimited });
    const d = await connect(emu, BASE_QUERY, { Authorization: 'other' });
    await d.waitFor(() => d.messages[0]);

    const emu2 = await start({ maxConcurrent: 1 });
    const e = await connect(emu2);
    const f = await connect(emu2);
    expect(await f.closed).toEqual({ code: 3009, reason: REASONS.concurrency });
    e.ws.close();
    await emu2.waitForClose(emu2.connections[0]);
    const g = await connect(emu2);
    await g.waitFor(() => g.messages[0]?.type === 'Begin');
  });
});

describe('temporary tokens (GET /v3/token)', () => {
  it('validates the key and expires_in_seconds, and returns {token, expires_in_seconds}', async () => {
    const emu = await start();
    const get = (q: string, key?: string) => fetch(`${emu.url}/v3/token${q}`, { headers: key ? { Authorization: key } : {} });
    const noKey = await get('?expires_in_seconds=60');
    expect(noKey.status).toBe(401);
    expect(await noKey.json()).toEqual({ error: 'Invalid API key' });
    for (const q of ['', '?expires_in_seconds=0', '?expires_in_seconds=601', '?expires_in_seconds=60&max_session_duration_seconds=59']) {
      const r = await get(q, KEY);
      expect(r.status, q).toBe(400);
      expect(typeof ((await r.json()) as { error: string }).error).toBe('string');
    }
    const ok = await get('?expires_in_seconds=60', KEY);
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as { token: string; expires_in_seconds: number };
    expect(body.expires_in_seconds).toBe(60);
    expect(emu.tokens[0]).toMatchObject({ token: body.token, apiKey: KEY, used: false, maxSessionDurationSeconds: 10800 });
    expect((await fetch(`${emu.url}/v3/token?expires_in_seconds=60`, { method: 'POST', headers: { Authorization: KEY } })).status).toBe(405);
  });

  it('a token opens exactly one session; unknown and expired tokens close 1008', async () => {
    const emu = await start({ timeoutSecondMs: 20 });
    const token = emu.createToken({ expiresInSeconds: 60 });
    const a = await connect(emu, { ...BASE_QUERY, token }, {});
    await a.waitFor(() => a.messages[0]?.type === 'Begin');
    expect(emu.connections[0]!.auth).toEqual({ via: 'token', key: KEY });
    const b = await connect(emu, { ...BASE_QUERY, token }, {});
    expect(await b.closed).toEqual({ code: 1008, reason: REASONS.invalidToken });
    const c = await connect(emu, { ...BASE_QUERY, token: 'made-up' }, {});
    expect((await c.closed).code).toBe(1008);
    const stale = emu.createToken({ expiresInSeconds: 1 }); // 20 ms
    await sleep(60);
    const d = await connect(emu, { ...BASE_QUERY, token: stale }, {});
    expect(await d.closed).toEqual({ code: 1008, reason: REASONS.invalidToken });
  });

  it("caps the session at the token's max_session_duration_seconds with 3008", async () => {
    const emu = await start({ timeoutSecondMs: 5 }); // 60 s -> 300 ms
    const token = emu.createToken({ maxSessionDurationSeconds: 60 });
    const c = await connect(emu, { ...BASE_QUERY, token }, {});
    const t0 = performance.now();
    expect(await c.closed).toEqual({ code: 3008, reason: REASONS.sessionExpired });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
  });
});

describe('universal-streaming turns', () => {
  it('sends word-by-word partials, then end_of_turn min_turn_silence after the speech', async () => {
    const emu = await start();
    const c = await connect(emu);
    const pcm = pcmOf(SCRIPT);
    const expected = scriptTimings(SCRIPT, { sampleRate: RATE });
    // speech ends at 1.5 s; 350 ms of silence is not enough for the 400 ms default
    c.sendPcm(pcm.subarray(0, (1.85 * RATE) * 2));
    await c.waitFor(() => c.turns().length === 4);
    await sleep(50);
    expect(c.turns().every((t) => !t.end_of_turn)).toBe(true);
    c.sendPcm(pcm.subarray(1.85 * RATE * 2));
    const eot = await c.waitFor(() => c.turns().find((t) => t.end_of_turn));
    const turns = c.turns();
    const partials = turns.slice(0, turns.indexOf(eot));
    expect(partials.map((t) => t.transcript)).toEqual(['', 'hello', 'hello world', 'hello world alpha']);
    expect(partials.map((t) => t.words.map((w) => w.word_is_final))).toEqual([[false], [true, false], [true, true, false], [true, true, true, false]]);
    expect(partials.every((t) => t.turn_order === 0 && !t.turn_is_formatted && t.utterance === '' && t.end_of_turn_confidence === 0.01)).toBe(true);
    expect(eot).toMatchObject({
      type: 'Turn',
      turn_order: 0,
      turn_is_formatted: false,
      end_of_turn: true,
      transcript: 'hello world alpha bravo',
      end_of_turn_confidence: 0.75,
      utterance: 'Hello world alpha bravo.',
    });
    eot.words.forEach((w, i) => {
      expect(w.text).toBe(UTTERANCE[i]);
      expect(w.word_is_final).toBe(true);
      expect(Number.isInteger(w.start) && Number.isInteger(w.end)).toBe(true);
      expect(Math.abs(w.start - expected.words[i]!.start * 1000)).toBeLessThanOrEqual(WIN_MS);
      expect(Math.abs(w.end - expected.words[i]!.end * 1000)).toBeLessThanOrEqual(WIN_MS);
      expect(w.confidence).toBeGreaterThan(0);
      expect('speaker' in w).toBe(false);
    });
    expect(c.messages.some((m) => m.type === 'SpeechStarted')).toBe(false); // u3 models only by default
    expect(turns).toHaveLength(5); // no formatted turn without format_turns
  });

  it('format_turns adds a formatted end-of-turn Turn with the same turn_order; the next turn counts up', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, format_turns: 'true' });
    c.sendPcm(pcmOf([{ words: ['kilo', 'lima'] }, { silenceMs: 500 }, { words: ['mike'] }, { silenceMs: 500 }]));
    await c.waitFor(() => c.turns().filter((t) => t.turn_is_formatted).length === 2);
    const ends = c.turns().filter((t) => t.end_of_turn);
    expect(ends.map((t) => [t.turn_order, t.turn_is_formatted, t.transcript, t.utterance])).toEqual([
      [0, false, 'kilo lima', 'Kilo lima.'],
      [0, true, 'Kilo lima.', ''],
      [1, false, 'mike', 'Mike.'],
      [1, true, 'Mike.', ''],
    ]);
    expect(ends[1]!.words.map((w) => w.text)).toEqual(['Kilo', 'lima.']);
    expect(c.turns().filter((t) => t.turn_order === 1 && !t.end_of_turn).map((t) => t.transcript)).toEqual(['']);
  });

  it('with confidence below the threshold: utterance at min_turn_silence, end of turn at max_turn_silence', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, end_of_turn_confidence_threshold: '0.9', max_turn_silence: '1000' });
    const pcm = pcmOf([{ words: ['oscar', 'papa'] }, { silenceMs: 1200 }]);
    c.sendPcm(pcm.subarray(0, 1.55 * RATE * 2)); // 950 ms of silence
    const utt = await c.waitFor(() => c.turns().find((t) => t.utterance !== ''));
    expect(utt).toMatchObject({ end_of_turn: false, transcript: 'oscar papa', utterance: 'Oscar papa.' });
    expect(utt.words.every((w) => w.word_is_final)).toBe(true);
    await sleep(50);
    expect(c.turns().some((t) => t.end_of_turn)).toBe(false);
    c.sendPcm(pcm.subarray(1.55 * RATE * 2));
    const eot = await c.waitFor(() => c.turns().find((t) => t.end_of_turn));
    expect(eot).toMatchObject({ transcript: 'oscar papa', utterance: '', end_of_turn_confidence: 0.75 });
  });

  it('takes the semantic confidence from endOfTurnConfidence(words)', async () => {
    const emu = await start({ endOfTurnConfidence: (words) => (words[words.length - 1] === 'one' ? 0.1 : 0.9) });
    const c = await connect(emu, { ...BASE_QUERY, max_turn_silence: '2000' });
    c.sendPcm(pcmOf([{ words: ['two', 'one'] }, { silenceMs: 500 }, { words: ['three'] }, { silenceMs: 500 }]));
    const eot = await c.waitFor(() => c.turns().find((t) => t.end_of_turn));
    expect(eot.transcript).toBe('two one three'); // no end of turn after "one": 0.1 < 0.4
    expect(eot.end_of_turn_confidence).toBe(0.9);
  });

  it('produces the same messages however the audio is chunked (50 ms to 1 s)', async () => {
    const emu = await start();
    const pcm = pcmOf([...SCRIPT, { words: ['one', 'two', 'three'] }, { silenceMs: 1500 }]);
    const runs: string[][] = [];
    for (const chunk of [1600, 4800, 32000]) {
      const c = await connect(emu, { ...BASE_QUERY, format_turns: 'true' });
      c.sendPcm(pcm, chunk);
      c.send({ type: 'Terminate' });
      await c.closed;
      runs.push(c.messages.filter((m) => m.type !== 'Begin' && m.type !== 'Termination').map((m) => JSON.stringify(m)));
    }
    expect(runs[0]!.length).toBeGreaterThan(8);
    expect(runs[1]).toEqual(runs[0]);
    expect(runs[2]).toEqual(runs[0]);
  });

  it('labels speakers, reports languages, and transcribes pcm_mulaw at 8 kHz', async () => {
    const emu = await start();
    const c = await connect(emu, { speech_model: 'universal-streaming-multilingual', sample_rate: '8000', encoding: 'pcm_mulaw', speaker_labels: 'true', language_detection: 'true' });
    const s16 = pcmOf([{ words: ['tango'] }, { silenceMs: 500 }, { words: ['uniform'] }, { silenceMs: 500 }], 8000);
    const mulaw = Buffer.alloc(s16.length / 2);
    for (let i = 0; i < mulaw.length; i++) mulaw[i] = linearToMulaw(s16.readInt16LE(i * 2));
    for (let o = 0; o < mulaw.length; o += 400) c.ws.send(mulaw.subarray(o, o + 400)); // 50 ms
    await c.waitFor(() => c.turns().filter((t) => t.end_of_turn).length === 2);
    const ends = c.turns().filter((t) => t.end_of_turn);
    expect(ends.map((t) => [t.transcript, t.speaker_label, t.words[0]!.speaker, t.language_code, t.language_confidence])).toEqual([
      ['tango', 'A', 'A', 'en', 0.99],
      ['uniform', 'B', 'B', 'en', 0.99],
    ]);
    expect(emu.connections[0]!.audioSeconds).toBeCloseTo(1.6, 6);
  });
});

describe('u3-rt-pro turns', () => {
  const U3 = { speech_model: 'u3-rt-pro', sample_rate: String(RATE) };

  it('SpeechStarted, no partials while speaking, a formatted end of turn 100 ms into the silence', async () => {
    const emu = await start();
    const c = await connect(emu, U3);
    const pcm = pcmOf([{ silenceMs: 500 }, { words: ['hotel', 'india'] }, { silenceMs: 200 }]);
    c.sendPcm(pcm.subarray(0, 1.15 * RATE * 2)); // 50 ms of silence
    const ss = await c.waitFor(() => c.messages.find((m): m is AaiSpeechStarted => m.type === 'SpeechStarted'));
    expect(Math.abs(ss.timestamp - 500)).toBeLessThanOrEqual(WIN_MS);
    await sleep(50);
    expect(c.turns()).toEqual([]);
    c.sendPcm(pcm.subarray(1.15 * RATE * 2));
    const eot = await c.waitFor(() => c.turns()[0]);
    expect(eot).toMatchObject({
      turn_order: 0,
      turn_is_formatted: true,
      end_of_turn: true,
      transcript: 'Hotel india.',
      utterance: 'Hotel india.',
      end_of_turn_confidence: 1,
    });
    expect(eot.words.map((w) => [w.text, w.word_is_final])).toEqual([['Hotel', true], ['india.', true]]);
    expect(c.messages.map((m) => m.type)).toEqual(['Begin', 'SpeechStarted', 'Turn']);
  });

  it('without terminal punctuation: one partial per pause (all words non-final, "—"), forced end at max_turn_silence', async () => {
    const emu = await start({ sentenceComplete: () => false });
    const c = await connect(emu, U3);
    c.sendPcm(pcmOf([{ words: ['juliet'] }, { silenceMs: 400 }, { words: ['kilo'] }, { silenceMs: 1100 }]));
    await c.waitFor(() => c.turns().find((t) => t.end_of_turn));
    expect(c.turns().map((t) => [t.end_of_turn, t.turn_is_formatted, t.transcript, t.end_of_turn_confidence, t.utterance])).toEqual([
      [false, false, 'Juliet—', 0, ''],
      [false, false, 'Juliet kilo—', 0, ''],
      [true, true, 'Juliet kilo', 0, 'Juliet kilo'],
    ]);
    expect(c.turns()[1]!.words.map((w) => [w.text, w.word_is_final])).toEqual([['Juliet', false], ['kilo—', false]]);
    expect(c.messages.filter((m) => m.type === 'SpeechStarted')).toHaveLength(1); // once per turn
  });
});

describe('control messages and closes', () => {
  it('ForceEndpoint ends the turn at once with the words so far; nothing without words', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, format_turns: 'true' });
    c.send({ type: 'ForceEndpoint' });
    const pcm = pcmOf([{ words: ['victor', 'whiskey', 'xray'] }]);
    c.sendPcm(pcm.subarray(0, 0.75 * RATE * 2)); // "xray" half spoken
    c.send({ type: 'ForceEndpoint' });
    const ends = await c.waitFor(() => {
      const e = c.turns().filter((t) => t.end_of_turn);
      return e.length === 2 ? e : undefined;
    });
    expect(ends.map((t) => t.transcript)).toEqual(['victor whiskey xray', 'Victor whiskey xray.']);
    expect(ends[0]!.words[2]!.end).toBe(750);
    expect(emu.connections[0]!.counts.forceEndpoint).toBe(2);
  });

  it('UpdateConfiguration applies live; an invalid value closes 3006', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.send({ type: 'UpdateConfiguration', end_of_turn_confidence_threshold: 1, max_turn_silence: 300, keyterms_prompt: ['Niamh'], something_new: 1 });
    c.sendPcm(pcmOf([{ words: ['yankee'] }, { silenceMs: 300 }]));
    const eot = await c.waitFor(() => c.turns().find((t) => t.end_of_turn));
    expect(eot.transcript).toBe('yankee');
    const conn = emu.connections[0]!;
    expect(conn.config).toMatchObject({ endOfTurnConfidenceThreshold: 1, maxTurnSilence: 300, keytermsPrompt: ['Niamh'] });
    expect(conn.params!.maxTurnSilence).toBe(1280);
    expect(conn.updates[0]).toMatchObject({ something_new: 1 });
    c.send({ type: 'UpdateConfiguration', max_turn_silence: 'long' });
    const closed = await c.closed;
    expect(closed.code).toBe(3006);
    expect(closed.reason).toMatch(/^Invalid Message: max_turn_silence/);
  });

  it('Terminate flushes the turn, sends Termination and closes 1000', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.sendPcm(pcmOf([{ silenceMs: 2000 }, { words: ['zulu', 'one'] }])); // ends mid-speech
    c.send({ type: 'Terminate' });
    expect(await c.closed).toEqual({ code: 1000, reason: '' });
    const types = c.messages.map((m) => m.type);
    expect(types[0]).toBe('Begin');
    expect(types.slice(-2)).toEqual(['Turn', 'Termination']);
    expect(c.turns().at(-1)).toMatchObject({ end_of_turn: true, transcript: 'zulu one' });
    expect(c.messages.at(-1)).toEqual({ type: 'Termination', audio_duration_seconds: 3, session_duration_seconds: 0 });
    const conn = await emu.waitForClose();
    expect(conn.record.close).toMatchObject({ code: 1000, by: 'server' });
    expect(conn.audioSeconds).toBeCloseTo(2.6, 6);
    expect(conn.counts.terminate).toBe(1);
  });

  it('inactivity_timeout: KeepAlive and audio reset it; expiry sends Termination and closes 1000', async () => {
    const emu = await start({ timeoutSecondMs: 40 }); // 5 s -> 200 ms
    const c = await connect(emu, { ...BASE_QUERY, inactivity_timeout: '5' });
    for (let i = 0; i < 4; i++) {
      await sleep(80);
      c.send({ type: 'KeepAlive' });
    }
    c.sendPcm(Buffer.alloc(CHUNK));
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    const t0 = performance.now();
    expect(await c.closed).toEqual({ code: 1000, reason: REASONS.inactivity });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(150);
    expect(c.messages.map((m) => m.type)).toEqual(['Begin', 'Termination']);
    expect(emu.connections[0]!.counts.keepAlive).toBe(4);
  });

  it('without inactivity_timeout an idle session stays open', async () => {
    const emu = await start({ timeoutSecondMs: 1 });
    const c = await connect(emu);
    await sleep(100);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('closes 3006 for invalid JSON, unknown types and non-object messages', async () => {
    const emu = await start();
    const cases: Array<[string, string]> = [
      ['not json', 'Invalid JSON: not json'],
      ['{"type":"Flush"}', 'Invalid Message Type: Flush'],
      ['[]', 'Invalid Message: []'],
    ];
    for (const [text, reason] of cases) {
      const c = await connect(emu);
      c.ws.send(text);
      expect(await c.closed).toEqual({ code: 3006, reason });
    }
    expect(emu.connections.map((x) => x.counts.invalid)).toEqual([1, 1, 1]);
  });

  it('closes 3007 for audio messages shorter than 50 ms or longer than 1000 ms', async () => {
    const emu = await start();
    const a = await connect(emu);
    a.ws.send(Buffer.alloc(1280)); // 40 ms
    expect(await a.closed).toEqual({ code: 3007, reason: 'Input duration violation: 40 ms. Expected between 50 and 1000 ms' });
    const b = await connect(emu);
    b.ws.send(Buffer.alloc(35200)); // 1100 ms
    expect(await b.closed).toEqual({ code: 3007, reason: 'Input duration violation: 1100 ms. Expected between 50 and 1000 ms' });
    const c = await connect(emu, { speech_model: 'u3-rt-pro', sample_rate: '8000', encoding: 'pcm_mulaw' });
    c.ws.send(Buffer.alloc(400)); // 50 ms of mu-law is fine
    c.ws.send(Buffer.alloc(8000)); // 1000 ms too
    c.ws.send(Buffer.alloc(399));
    expect((await c.closed).reason).toBe('Input duration violation: 49.88 ms. Expected between 50 and 1000 ms');
    const emu2 = await start({ enforceChunkDuration: false });
    const d = await connect(emu2);
    d.ws.send(Buffer.alloc(100));
    d.send({ type: 'Terminate' });
    expect((await d.closed).code).toBe(1000);
  });

  it('maxRealtimeFactor: audio faster than real time closes 3007', async () => {
    const emu = await start({ maxRealtimeFactor: 1, realtimeBurstSec: 0.5 });
    const c = await connect(emu);
    c.sendPcm(Buffer.alloc(CHUNK * 20)); // 1 s at once
    const closed = await c.closed;
    expect(closed.code).toBe(3007);
    expect(closed.reason).toMatch(/^Audio Transmission Rate Exceeded: Received 0\.\d sec\. audio in 0\.\d sec$/);
  });

  it('closes 3008 at maxSessionSeconds', async () => {
    const emu = await start({ maxSessionSeconds: 3, timeoutSecondMs: 50 });
    const c = await connect(emu);
    const begin = (await c.waitFor(() => c.messages[0])) as AaiBegin;
    expect(Math.abs(begin.expires_at - (Date.now() / 1000 + 3))).toBeLessThan(2);
    expect(await c.closed).toEqual({ code: 3008, reason: REASONS.sessionExpired });
  });

  it('beginDelayMs delays Begin and keeps it first; latencyMs delays every message', async () => {
    const emu = await start({ beginDelayMs: 150, latencyMs: 50 });
    const t0 = performance.now();
    const c = await connect(emu);
    c.sendPcm(pcmOf([{ words: ['echo'] }, { silenceMs: 450 }]));
    await c.waitFor(() => c.messages[0]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(190);
    await c.waitFor(() => c.turns().find((t) => t.end_of_turn));
    expect(c.messages[0]!.type).toBe('Begin');
  });
});

describe('wire recording and faults', () => {
  it('records the query, headers and frames', async () => {
    const emu = await start();
    const c = await connect(emu, { ...BASE_QUERY, keyterms_prompt: '["a","b c"]' }, { Authorization: KEY, 'X-Extra': 'yes' });
    c.ws.send(Buffer.alloc(CHUNK));
    c.send({ type: 'KeepAlive' });
    c.send({ type: 'Terminate' });
    await c.closed;
    const conn = await emu.waitForClose();
    const rec = conn.record;
    expect(rec.path).toBe('/v3/ws');
    expect(rec.query['keyterms_prompt']).toEqual(['["a","b c"]']);
    expect(rec.headers['authorization']).toBe(KEY);
    expect(rec.headers['x-extra']).toBe('yes');
    expect(rec.frames.filter((f) => f.dir === 'in').map((f) => [f.kind, f.bytes ?? f.text ?? f.code])).toEqual([
      ['binary', CHUNK],
      ['text', '{"type":"KeepAlive"}'],
      ['text', '{"type":"Terminate"}'],
      ['close', 1000],
    ]);
    expect(rec.frames.filter((f) => f.dir === 'out').map((f) => f.kind)).toEqual(['text', 'text', 'close']);
    expect(rec.audioSeconds).toBeCloseTo(0.05, 9);
  });

  it('refuseUpgrade answers with the {"error"} body; dropAfterAudioSec and deadAir work on audio time', async () => {
    const emu = await start();
    emu.faultNext({ refuseUpgrade: { status: 503, message: 'Service unavailable' } });
    const status = await withTimeout(
      new Promise<[number, string]>((resolve) => {
        const ws = new WebSocket(wsUrl(emu, BASE_QUERY), { headers: { Authorization: KEY } });
        ws.on('error', () => {});
        ws.on('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve([res.statusCode ?? 0, body]));
        });
      }),
      3000,
      'refusal',
    );
    expect(status).toEqual([503, '{"error":"Service unavailable"}']);

    emu.faultNext({ dropAfterAudioSec: 1 });
    const a = await connect(emu);
    a.sendPcm(pcmOf(SCRIPT));
    expect((await a.closed).code).toBe(1006);
    const healthy = await connect(emu);
    healthy.sendPcm(pcmOf(SCRIPT));
    await healthy.waitFor(() => healthy.turns().find((t) => t.end_of_turn));

    const dead = await connect(emu);
    await dead.waitFor(() => dead.messages[0]);
    emu.connections.at(-1)!.session.faults.deadAir = true;
    dead.sendPcm(pcmOf(SCRIPT));
    dead.send({ type: 'Terminate' });
    await sleep(100);
    expect(dead.messages.map((m) => m.type)).toEqual(['Begin']);
    expect(dead.ws.readyState).toBe(WebSocket.OPEN);
    expect(emu.connections.at(-1)!.record.suppressed).toBeGreaterThanOrEqual(6);
  });
});

describe('the official assemblyai SDK as a client (wss only)', () => {
  /**
   * The SDK refuses ws:// and offers no CA option, so the emulator serves TLS with a self-signed
   * certificate and the test adds it to Node's default CA list (tls.setDefaultCACertificates,
   * Node >= 22.19 / 24.5) for its duration; both `ws` and `fetch` honour it. NODE_EXTRA_CA_CERTS
   * would be read too late (at startup) and NODE_TLS_REJECT_UNAUTHORIZED=0 would switch
   * verification off entirely.
   */
  async function withTrustedCert<T>(cert: string, run: () => Promise<T>): Promise<T> {
    const saved = tls.getCACertificates('default');
    tls.setDefaultCACertificates([...saved, cert]);
    try {
      return await run();
    } finally {
      tls.setDefaultCACertificates(saved);
    }
  }

  it('gets a temporary token, streams, receives partial/final/formatted turns and terminates cleanly', async () => {
    const cert = selfSignedCert();
    const emu = await start({ tls: cert });
    expect(emu.streamingUrl.startsWith('wss://')).toBe(true);
    await withTrustedCert(cert.cert.toString(), async () => {
      const client = new AssemblyAI({ apiKey: KEY, streamingBaseUrl: emu.url });
      const token = await client.streaming.createTemporaryToken({ expires_in_seconds: 60 });
      const transcriber = client.streaming.transcriber({
        token,
        websocketBaseUrl: emu.streamingUrl,
        sampleRate: RATE,
        speechModel: 'universal-streaming-english',
        formatTurns: true,
        keytermsPrompt: ['LiveKit'],
        maxConnectionRetries: 0,
      });
      const turns: TurnEvent[] = [];
      let formatted: () => void = () => {};
      const gotFormatted = new Promise<void>((resolve) => (formatted = resolve));
      transcriber.on('turn', (t) => {
        turns.push(t);
        if (t.turn_is_formatted) formatted();
      });
      const begin = await transcriber.connect();
      expect(begin.id).toBe(emu.connections[0]!.sessionId);
      const pcm = pcmOf(SCRIPT);
      // sendAudio is typed ArrayBufferLike: hand it plain ArrayBuffers of 50 ms
      for (let o = 0; o < pcm.length; o += CHUNK) transcriber.sendAudio(pcm.buffer.slice(pcm.byteOffset + o, pcm.byteOffset + o + CHUNK));
      await withTimeout(gotFormatted, 3000, 'formatted turn');
      transcriber.forceEndpoint();
      transcriber.updateConfiguration({ max_turn_silence: 1000 });
      await withTimeout(transcriber.close(), 3000, 'sdk close');
      expect(turns.filter((t) => t.end_of_turn).map((t) => t.transcript)).toEqual(['hello world alpha bravo', 'Hello world alpha bravo.']);
      const conn = await emu.waitForClose();
      expect(conn.record.query['token']).toEqual([token]);
      expect(conn.record.query['keyterms_prompt']).toEqual(['["LiveKit"]']);
      expect(conn.record.headers['authorization']).toBeUndefined();
      expect(conn.counts).toMatchObject({ forceEndpoint: 1, updateConfiguration: 1, terminate: 1 });
      expect(conn.sent.at(-1)?.type).toBe('Termination');
      // the SDK answers our close frame without a status code, so check the frame we sent
      expect(conn.record.frames.find((f) => f.dir === 'out' && f.kind === 'close')?.code).toBe(1000);
      expect(emu.server.httpRequests[0]).toMatchObject({ method: 'GET', url: '/v3/token?expires_in_seconds=60', status: 200 });
    });
  });

  it('connects with the API key header; refuses ws:// before connecting; surfaces a 1008 close', async () => {
    const cert = selfSignedCert();
    const emu = await start({ tls: cert });
    await withTrustedCert(cert.cert.toString(), async () => {
      const client = new AssemblyAI({ apiKey: KEY, streamingBaseUrl: emu.url });
      const t = client.streaming.transcriber({ websocketBaseUrl: emu.streamingUrl, sampleRate: RATE, speechModel: 'u3-rt-pro' });
      await t.connect();
      expect(emu.connections[0]!.record.headers['authorization']).toBe(KEY);
      await t.close();
      const plain = client.streaming.transcriber({ websocketBaseUrl: emu.streamingUrl.replace('wss:', 'ws:'), sampleRate: RATE, speechModel: 'u3-rt-pro' });
      await expect(plain.connect()).rejects.toThrow(/must be wss/);
      const bad = new AssemblyAI({ apiKey: 'wrong' }).streaming.transcriber({
        websocketBaseUrl: emu.streamingUrl,
        sampleRate: RATE,
        speechModel: 'u3-rt-pro',
        maxConnectionRetries: 0,
      });
      await expect(bad.connect()).rejects.toThrow(REASONS.invalidKey);
    });
  });
});

/** ITU-T G.711 mu-law encoder (test helper; the emulator only decodes). */
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
