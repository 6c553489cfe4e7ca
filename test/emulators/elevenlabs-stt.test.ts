/**
 * Tests of the ElevenLabs Scribe realtime STT emulator (`/v1/speech-to-text/realtime` in
 * ./elevenlabs.ts), with a raw `ws` client speaking the documented protocol. The ElevenLabs SDK
 * is not a dependency of this repository, so there is no SDK client test.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { chunkBuffer, scriptTimings, synthesize, type ScriptItem } from './audio.ts';
import { waitForEvent, withTimeout } from './base.ts';
import {
  DEFAULT_API_KEY,
  SCRIBE_ERROR_CLOSE_CODES,
  SCRIBE_ERROR_TEXT,
  SCRIBE_WORD_LOGPROB,
  linearToMulaw,
  parseScribeQuery,
  startElevenLabsEmulator,
  type ElevenLabsEmulator,
  type ElevenLabsEmulatorOptions,
  type ScribeErrorMessage,
  type ScribeServerMessage,
  type ScribeSessionStarted,
  type ScribeTimestamped,
} from './elevenlabs.ts';

const MODEL = 'scribe_v2_realtime';
const Q = { model_id: MODEL };
const AUTH = { 'xi-api-key': DEFAULT_API_KEY };
const RATE = 16000;
/** tone words are found within one 10 ms analysis window of where they were synthesized */
const TOL = 0.011;

const emulators: ElevenLabsEmulator[] = [];
const clients: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: ElevenLabsEmulatorOptions = {}): Promise<ElevenLabsEmulator> {
  const emu = await startElevenLabsEmulator(opts);
  emulators.push(emu);
  return emu;
}

interface Client {
  ws: WebSocket;
  /** ms since open, per message */
  events: Array<{ t: number; msg: ScribeServerMessage }>;
  messages(): ScribeServerMessage[];
  types(): string[];
  texts(type: string): string[];
  closed: Promise<{ code: number; reason: string }>;
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  waitType(type: string, n?: number, timeoutMs?: number): Promise<ScribeServerMessage[]>;
  send(obj: unknown): void;
  /** one input_audio_chunk */
  chunk(audio: Buffer, commit?: boolean, extra?: Record<string, unknown>): void;
  /** `audio` in input_audio_chunk messages of `chunkMs` */
  stream(audio: Buffer, o?: { chunkMs?: number; rate?: number; bytesPerSample?: number }): void;
  commit(): void;
}

async function connect(emu: ElevenLabsEmulator, query: Record<string, string | string[]> = Q, headers: Record<string, string> = AUTH, rate = RATE): Promise<Client> {
  const ws = new WebSocket(emu.scribeUrl(query), { headers });
  clients.push(ws);
  const t0 = performance.now();
  const events: Client['events'] = [];
  ws.on('message', (data, isBinary) => {
    expect(isBinary).toBe(false);
    events.push({ t: performance.now() - t0, msg: JSON.parse(data.toString()) as ScribeServerMessage });
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
  const messages = () => events.map((e) => e.msg);
  const send = (obj: unknown) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  const chunk = (audio: Buffer, commit = false, extra: Record<string, unknown> = {}) =>
    send({ message_type: 'input_audio_chunk', audio_base_64: audio.toString('base64'), commit, sample_rate: rate, ...extra });
  return {
    ws,
    events,
    messages,
    types: () => messages().map((m) => m.message_type),
    texts: (type) => messages().filter((m) => m.message_type === type).map((m) => (m as { text: string }).text),
    closed: withTimeout(closed, 5000, 'client close'),
    waitFor: (pred, timeoutMs = 2000, what = 'client condition') => waitForEvent(ws, 'change', pred, timeoutMs, what),
    waitType(type, n = 1, timeoutMs = 2000) {
      return waitForEvent(
        ws,
        'change',
        () => {
          const m = messages().filter((x) => x.message_type === type);
          return m.length >= n ? m : undefined;
        },
        timeoutMs,
        `${n} × ${type}`,
      );
    },
    send,
    chunk,
    stream(audio, o = {}) {
      const bytesPerSecond = (o.rate ?? rate) * (o.bytesPerSample ?? 2);
      const size = Math.round(((o.chunkMs ?? 100) / 1000) * bytesPerSecond);
      for (const c of chunkBuffer(audio, size)) chunk(c);
    },
    commit: () => chunk(Buffer.alloc(0), true),
  };
}

interface Rejection {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function expectRejection(url: string, headers: Record<string, string> = AUTH): Promise<Rejection> {
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

/** Expect exactly one error message of `type`, then a close with `code`. */
async function expectError(c: Client, type: string, code = SCRIBE_ERROR_CLOSE_CODES[type as ScribeErrorMessage['message_type']]): Promise<ScribeErrorMessage> {
  const closed = await c.closed;
  const errors = c.messages().filter((m): m is ScribeErrorMessage => 'error' in m);
  expect(errors.map((e) => e.message_type)).toEqual([type]);
  expect(closed.code).toBe(code);
  return errors[0]!;
}

const speech = (script: ScriptItem[], rate = RATE) => synthesize(script, { sampleRate: rate });

describe('scribe: connect, auth and parameters', () => {
  it('sends session_started with the documented config defaults on open', async () => {
    const emu = await start();
    const c = await connect(emu);
    const [started] = (await c.waitType('session_started')) as ScribeSessionStarted[];
    expect(started!.session_id).toMatch(/^[0-9a-f]{32}$/);
    expect(started!.config).toEqual({
      sample_rate: 16000,
      audio_format: 'pcm_16000',
      language_code: null,
      commit_strategy: 'manual',
      vad_silence_threshold_secs: 1.5,
      vad_threshold: 0.4,
      min_speech_duration_ms: 250,
      min_silence_duration_ms: 2500,
      model_id: MODEL,
      enable_logging: true,
      include_timestamps: false,
      include_language_detection: false,
    });
    const conn = await emu.waitForScribeConnection();
    expect(conn.auth).toEqual({ via: 'header', credential: DEFAULT_API_KEY, ok: true });
    expect(conn.sessionId).toBe(started!.session_id);
    expect(emu.connections).toHaveLength(0); // TTS sockets are listed apart
  });

  it('echoes every parameter given, including repeated keyterms', async () => {
    const emu = await start();
    const query = {
      model_id: MODEL,
      audio_format: 'ulaw_8000',
      language_code: 'FR',
      commit_strategy: 'vad',
      vad_silence_threshold_secs: '0.8',
      vad_threshold: '0.6',
      min_speech_duration_ms: '100',
      min_silence_duration_ms: '300',
      include_timestamps: 'true',
      include_language_detection: 'true',
      enable_logging: 'false',
      keyterms: ['LiveKit', 'Niamh'],
      no_verbatim: 'true',
      something_new: '1',
    };
    const c = await connect(emu, query, AUTH, 8000);
    const [started] = (await c.waitType('session_started')) as ScribeSessionStarted[];
    expect(started!.config).toEqual({
      sample_rate: 8000,
      audio_format: 'ulaw_8000',
      language_code: 'fr',
      commit_strategy: 'vad',
      vad_silence_threshold_secs: 0.8,
      vad_threshold: 0.6,
      min_speech_duration_ms: 100,
      min_silence_duration_ms: 300,
      model_id: MODEL,
      enable_logging: false,
      include_timestamps: true,
      include_language_detection: true,
      keyterms: ['LiveKit', 'Niamh'],
      no_verbatim: true,
    });
    expect((await emu.waitForScribeConnection()).params?.unknown).toEqual(['something_new']);
  });

  it('answers a missing or wrong key with auth_error and a close, without session_started', async () => {
    const emu = await start();
    const attempts: Array<Record<string, string>> = [{}, { 'xi-api-key': 'nope' }];
    for (const headers of attempts) {
      const c = await connect(emu, Q, headers);
      const err = await expectError(c, 'auth_error', 1008);
      expect(err.error).toBe('Invalid API key');
      expect(c.types()).toEqual(['auth_error']);
    }
    expect(emu.scribeConnections.map((s) => s.auth.ok)).toEqual([false, false]);
  });

  it('accepts a single-use token once', async () => {
    const emu = await start({ scribe: { tokens: ['sutkn_abc'] } });
    const a = await connect(emu, { ...Q, token: 'sutkn_abc' }, {});
    await a.waitType('session_started');
    expect(emu.scribeConnections[0]!.auth).toMatchObject({ via: 'token', ok: true });
    const b = await connect(emu, { ...Q, token: 'sutkn_abc' }, {});
    expect((await expectError(b, 'auth_error')).error).toMatch(/token/);
  });

  it('refuses at the upgrade with scribe.authFailure = 401', async () => {
    const emu = await start({ scribe: { authFailure: 401 } });
    const r = await expectRejection(emu.scribeUrl(Q), { 'xi-api-key': 'nope' });
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toEqual({ detail: { status: 'invalid_api_key', message: 'Invalid API key' } });
    await (await connect(emu)).waitType('session_started');
  });

  it('rejects bad parameters with invalid_request and closes', async () => {
    const emu = await start();
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{}, /model_id/],
      [{ model_id: 'scribe_v9' }, /model_id/],
      [{ ...Q, audio_format: 'pcm_11025' }, /audio_format/],
      [{ ...Q, commit_strategy: 'auto' }, /commit_strategy/],
      [{ ...Q, vad_silence_threshold_secs: '3.5' }, /vad_silence_threshold_secs.*0.3 and 3/],
      [{ ...Q, vad_silence_threshold_secs: 'soon' }, /vad_silence_threshold_secs/],
      [{ ...Q, vad_threshold: '0.05' }, /vad_threshold/],
      [{ ...Q, min_speech_duration_ms: '2001' }, /min_speech_duration_ms/],
      [{ ...Q, min_silence_duration_ms: '10.5' }, /integer/],
      [{ ...Q, include_timestamps: 'maybe' }, /include_timestamps/],
      [{ ...Q, language_code: 'en-US' }, /language_code/],
    ];
    for (const [query, re] of cases) {
      const c = await connect(emu, query);
      const err = await expectError(c, 'invalid_request', 1008);
      expect(err.error, JSON.stringify(query)).toMatch(re);
    }
    expect(emu.scribeConnections.every((s) => !s.started)).toBe(true);
  });

  it('parseScribeQuery keeps the documented defaults', () => {
    const r = parseScribeQuery({ model_id: [MODEL] });
    expect(r).toMatchObject({ ok: true, params: { sampleRate: 16000, encoding: 'pcm', commitStrategy: 'manual', keyterms: [], token: null } });
  });
});

describe('scribe: transcripts', () => {
  it('manual: cumulative partials, then committed_transcript and the timestamped twin on commit', async () => {
    const emu = await start({ scribe: { processingStartSec: 0 } });
    const c = await connect(emu, { ...Q, include_timestamps: 'true', language_code: 'en' });
    const script: ScriptItem[] = [{ words: ['hello', 'world', 'alpha'] }, { silenceMs: 300 }];
    c.stream(speech(script));
    await c.waitType('partial_transcript', 3);
    c.commit();
    const [timed] = (await c.waitType('committed_transcript_with_timestamps')) as ScribeTimestamped[];
    expect(c.texts('partial_transcript')).toEqual(['hello', 'hello world', 'hello world alpha']);
    expect(c.types()).toEqual([
      'session_started',
      'partial_transcript',
      'partial_transcript',
      'partial_transcript',
      'committed_transcript',
      'committed_transcript_with_timestamps',
    ]);
    expect(c.texts('committed_transcript')).toEqual(['hello world alpha']);
    expect(timed!.text).toBe('hello world alpha');
    expect(timed!.language_code).toBe('en');
    const expected = scriptTimings(script, { sampleRate: RATE }).words;
    const words = timed!.words.filter((w) => w.type === 'word');
    expect(words.map((w) => w.text)).toEqual(['hello', 'world', 'alpha']);
    words.forEach((w, i) => {
      expect(Math.abs(w.start - expected[i]!.start)).toBeLessThanOrEqual(TOL);
      expect(Math.abs(w.end - expected[i]!.end)).toBeLessThanOrEqual(TOL);
      expect(w.logprob).toBe(SCRIBE_WORD_LOGPROB);
    });
    expect(timed!.words.map((w) => w.type)).toEqual(['word', 'spacing', 'word', 'spacing', 'word']);
    expect(timed!.words[1]).toMatchObject({ text: ' ', start: words[0]!.end, end: words[1]!.start });
    const conn = await emu.waitForScribeConnection();
    expect(conn.commits).toMatchObject([{ index: 0, trigger: 'manual', text: 'hello world alpha' }]);
    expect(conn.counts).toMatchObject({ commitFlags: 1, emptyChunks: 1 });
    expect(conn.audioSeconds).toBeCloseTo(1.2, 6);
    // a commit starts a new segment: the next partials and commit only hold new words
    c.stream(speech([{ words: ['bravo'] }, { silenceMs: 200 }]));
    await c.waitType('partial_transcript', 4);
    c.commit();
    await c.waitType('committed_transcript', 2);
    expect(c.texts('committed_transcript')).toEqual(['hello world alpha', 'bravo']);
    expect(c.texts('partial_transcript').at(-1)).toBe('bravo');
  });

  it('a commit closes the word in progress; an empty commit answers an empty transcript', async () => {
    const emu = await start({ scribe: { processingStartSec: 0 } });
    const c = await connect(emu);
    c.commit();
    await c.waitType('committed_transcript');
    expect(c.texts('committed_transcript')).toEqual(['']);
    c.stream(speech([{ words: ['hello', 'world'] }]), { chunkMs: 50 }); // ends mid-"world": no silence yet
    await c.waitType('partial_transcript', 1);
    c.commit();
    await c.waitType('committed_transcript', 2);
    expect(c.texts('committed_transcript')).toEqual(['', 'hello world']);
    expect(c.types()).not.toContain('committed_transcript_with_timestamps'); // include_timestamps is off
  });

  it('partials start only after the first 2 s of audio ("processing starts after 2 seconds")', async () => {
    const emu = await start();
    const c = await connect(emu);
    const conn = await emu.waitForScribeConnection();
    const audio = speech([{ words: ['hello', 'world'] }, { silenceMs: 2000 }]);
    const first = audio.subarray(0, Math.round(1.9 * RATE) * 2);
    c.stream(first);
    await emu.waitFor(() => conn.audioSeconds >= 1.9 - 1e-9, 2000, '1.9 s received');
    expect(conn.partials).toEqual([]);
    c.stream(audio.subarray(first.length));
    await c.waitType('partial_transcript');
    expect(c.texts('partial_transcript')).toEqual(['hello world']);
  });

  it('vad: commits after vad_silence_threshold_secs of silence, once per utterance', async () => {
    const emu = await start({ scribe: { processingStartSec: 0 } });
    const c = await connect(emu, { ...Q, commit_strategy: 'vad', vad_silence_threshold_secs: '0.5', include_timestamps: 'true' });
    const script: ScriptItem[] = [{ words: ['hello', 'world'] }, { silenceMs: 800 }, { words: ['bravo'] }, { silenceMs: 800 }];
    c.stream(speech(script));
    await c.waitType('committed_transcript_with_timestamps', 2);
    expect(c.texts('committed_transcript')).toEqual(['hello world', 'bravo']);
    const conn = await emu.waitForScribeConnection();
    const u = scriptTimings(script, { sampleRate: RATE }).utterances;
    expect(conn.commits.map((x) => x.trigger)).toEqual(['vad', 'vad']);
    expect(Math.abs(conn.commits[0]!.audioTime - (u[0]!.end + 0.5))).toBeLessThanOrEqual(TOL);
    expect(Math.abs(conn.commits[1]!.audioTime - (u[1]!.end + 0.5))).toBeLessThanOrEqual(TOL);
    expect(c.texts('partial_transcript')).toEqual(['hello', 'hello world', 'bravo']);
  });

  it('vad: speech shorter than min_speech_duration_ms does not commit; a manual commit still does', async () => {
    const emu = await start({ scribe: { processingStartSec: 0 } });
    const c = await connect(emu, { ...Q, commit_strategy: 'vad', vad_silence_threshold_secs: '0.3', min_speech_duration_ms: '500' });
    const conn = await emu.waitForScribeConnection();
    c.stream(speech([{ words: ['hello'] }, { silenceMs: 1000 }]));
    await emu.waitFor(() => conn.audioSeconds >= 1.3 - 1e-9, 2000, 'all audio');
    expect(conn.commits).toEqual([]);
    c.commit();
    await c.waitType('committed_transcript');
    expect(c.texts('committed_transcript')).toEqual(['hello']);
  });

  it('manual: the stream commits itself after autoCommitSec of audio', async () => {
    const emu = await start({ scribe: { processingStartSec: 0, autoCommitSec: 1 } });
    const c = await connect(emu);
    c.stream(speech([{ words: ['hello', 'world'] }, { silenceMs: 500 }, { words: ['alpha'] }, { silenceMs: 700 }]));
    await c.waitType('committed_transcript', 2);
    expect(c.texts('committed_transcript')).toEqual(['hello world', 'alpha']);
    const conn = await emu.waitForScribeConnection();
    expect(conn.commits.map((x) => [x.trigger, x.audioTime])).toEqual([
      ['auto', 1],
      ['auto', 2],
    ]);
  });

  it('ulaw_8000 audio is decoded and transcribed', async () => {
    const emu = await start({ scribe: { processingStartSec: 0 } });
    const c = await connect(emu, { ...Q, audio_format: 'ulaw_8000' }, AUTH, 8000);
    const pcm = speech([{ words: ['kilo', 'lima'] }, { silenceMs: 200 }], 8000);
    const ulaw = Buffer.alloc(pcm.length / 2);
    for (let i = 0; i < ulaw.length; i++) ulaw[i] = linearToMulaw(pcm.readInt16LE(i * 2));
    c.stream(ulaw, { rate: 8000, bytesPerSample: 1 });
    c.commit();
    await c.waitType('committed_transcript');
    expect(c.texts('committed_transcript')).toEqual(['kilo lima']);
    expect((await emu.waitForScribeConnection()).audioSeconds).toBeCloseTo(0.8, 6);
  });

  it('final_transcript at each end of speech with scribe.finalTranscripts', async () => {
    const emu = await start({ scribe: { processingStartSec: 0, finalTranscripts: true } });
    const c = await connect(emu, { ...Q, include_timestamps: 'true' });
    c.stream(speech([{ words: ['hello', 'world'] }, { silenceMs: 300 }, { words: ['bravo'] }, { silenceMs: 300 }]));
    await c.waitType('final_transcript', 2);
    c.commit();
    await c.waitType('committed_transcript');
    expect(c.texts('final_transcript')).toEqual(['hello world', 'bravo']);
    expect(c.types().filter((t) => t !== 'partial_transcript')).toEqual([
      'session_started',
      'final_transcript',
      'final_transcript_with_timestamps',
      'final_transcript',
      'final_transcript_with_timestamps',
      'committed_transcript',
      'committed_transcript_with_timestamps',
    ]);
    expect(c.texts('committed_transcript')).toEqual(['hello world bravo']);
  });

  it('latencyMs delays every message', async () => {
    const emu = await start({ scribe: { latencyMs: 80 } });
    const c = await connect(emu);
    await c.waitType('session_started');
    expect(c.events[0]!.t).toBeGreaterThanOrEqual(60);
  });
});

describe('scribe: input errors', () => {
  const cases: Array<[string, (c: Client) => void, RegExp]> = [
    ['binary frames', (c) => c.ws.send(Buffer.alloc(320)), /Binary frames/],
    ['non-JSON text', (c) => c.send('hello'), /JSON object/],
    ['another message_type', (c) => c.send({ message_type: 'commit' }), /Unsupported message_type "commit"/],
    ['bad base64', (c) => c.send({ message_type: 'input_audio_chunk', audio_base_64: 'abc', commit: false, sample_rate: RATE }), /audio_base_64/],
    ['a missing commit', (c) => c.send({ message_type: 'input_audio_chunk', audio_base_64: '', sample_rate: RATE }), /"commit"/],
    ['a missing sample_rate', (c) => c.send({ message_type: 'input_audio_chunk', audio_base_64: '', commit: false }), /"sample_rate"/],
    ['a sample_rate that is not the format\'s', (c) => c.chunk(Buffer.alloc(320), false, { sample_rate: 24000 }), /does not match audio_format pcm_16000/],
    [
      'previous_text after the first chunk',
      (c) => {
        c.chunk(Buffer.alloc(320), false, { previous_text: 'So as I was saying,' });
        c.chunk(Buffer.alloc(320), false, { previous_text: 'again' });
      },
      /only be sent alongside the first audio chunk/,
    ],
  ];
  it.each(cases)('%s -> input_error + close 1008', async (_name, act, re) => {
    const emu = await start();
    const c = await connect(emu);
    await c.waitType('session_started');
    act(c);
    const err = await expectError(c, 'input_error', 1008);
    expect(err.error).toMatch(re);
    const conn = await emu.waitForScribeClose();
    expect(conn.counts.invalid).toBe(1);
    expect(conn.record.close).toMatchObject({ code: 1008, by: 'server' });
  });

  it('previous_text on the first chunk is recorded', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.chunk(Buffer.alloc(320), false, { previous_text: 'So as I was saying,' });
    const conn = await emu.waitForScribeConnection();
    await emu.waitFor(() => conn.counts.chunks === 1, 2000, 'chunk');
    expect(conn.previousText).toBe('So as I was saying,');
  });
});

describe('scribe: limits, timeouts and faults', () => {
  it('insufficient_audio_activity after inactivityTimeoutMs without chunks; empty chunks keep it alive', async () => {
    const emu = await start({ scribe: { inactivityTimeoutMs: 150 } });
    const c = await connect(emu);
    for (let i = 0; i < 6; i++) {
      await sleep(50);
      c.chunk(Buffer.alloc(0));
    }
    expect(c.types()).toEqual(['session_started']);
    const err = await expectError(c, 'insufficient_audio_activity', 1000);
    expect(err.error).toBe(SCRIBE_ERROR_TEXT.insufficient_audio_activity);
    expect((await emu.waitForScribeClose()).counts.emptyChunks).toBe(6);
  });

  it('scribe.inactivityError = false closes 1000 without a message', async () => {
    const emu = await start({ scribe: { inactivityTimeoutMs: 60, inactivityError: false } });
    const c = await connect(emu);
    expect((await c.closed).code).toBe(1000);
    expect(c.types()).toEqual(['session_started']);
  });

  it('chunk_size_exceeded, quota_exceeded and session_time_limit_exceeded', async () => {
    const emu = await start({ scribe: { maxChunkSec: 0.5, quotaSeconds: 1.5 } });
    const big = await connect(emu);
    big.chunk(Buffer.alloc(Math.round(0.6 * RATE) * 2));
    await expectError(big, 'chunk_size_exceeded', 1009);

    const quota = await connect(emu);
    quota.stream(Buffer.alloc(2 * RATE * 2));
    await expectError(quota, 'quota_exceeded', 1008);
    expect(emu.usedScribeSeconds).toBeCloseTo(1.5, 6);

    const emu2 = await start({ scribe: { maxSessionSec: 0.5 } });
    const long = await connect(emu2);
    long.stream(Buffer.alloc(RATE * 2));
    await expectError(long, 'session_time_limit_exceeded', 1000);
    expect((await emu2.waitForScribeClose()).audioSeconds).toBeCloseTo(0.5, 6);
  });

  it('rate_limited beyond maxConcurrent open sessions per credential', async () => {
    const emu = await start({ scribe: { maxConcurrent: 1 } });
    const a = await connect(emu);
    await a.waitType('session_started');
    const b = await connect(emu);
    await expectError(b, 'rate_limited', 1013);
    a.ws.close();
    await emu.waitForScribeClose(emu.scribeConnections[0]);
    await (await connect(emu)).waitType('session_started');
  });

  it('commit_throttled for manual commits closer than minCommitIntervalMs', async () => {
    const emu = await start({ scribe: { minCommitIntervalMs: 10_000 } });
    const c = await connect(emu);
    c.commit();
    c.commit();
    await expectError(c, 'commit_throttled', 1008);
    expect(c.texts('committed_transcript')).toEqual(['']);
  });

  it('errorAfterAudioSec sends any documented error at an audio time, with its close code', async () => {
    const emu = await start();
    emu.scribeFaultNext({ errorAfterAudioSec: { seconds: 0.3, messageType: 'transcriber_error' } });
    const c = await connect(emu);
    c.stream(Buffer.alloc(RATE * 2));
    const err = await expectError(c, 'transcriber_error', 1011);
    expect(err.error).toBe(SCRIBE_ERROR_TEXT.transcriber_error);
    expect((await emu.waitForScribeClose()).audioSeconds).toBeCloseTo(0.3, 6);
    emu.scribeFaults.errorAfterAudioSec = { seconds: 0.1, messageType: 'resource_exhausted', error: 'busy', closeCode: 4000 };
    const d = await connect(emu);
    d.stream(Buffer.alloc(RATE));
    expect((await expectError(d, 'resource_exhausted', 4000)).error).toBe('busy');
  });

  it('timestampsFirst and omitTimestamps change the commit answer', async () => {
    const emu = await start();
    emu.scribeFaultNext({ timestampsFirst: true });
    emu.scribeFaultNext({ omitTimestamps: true });
    const query = { ...Q, include_timestamps: 'true' };
    const a = await connect(emu, query);
    a.commit();
    await a.waitType('committed_transcript');
    await a.waitType('committed_transcript_with_timestamps');
    expect(a.types()).toEqual(['session_started', 'committed_transcript_with_timestamps', 'committed_transcript']);
    const b = await connect(emu, query);
    b.commit();
    await b.waitType('committed_transcript');
    await sleep(30);
    expect(b.types()).toEqual(['session_started', 'committed_transcript']);
  });

  it('base faults count received audio seconds; the wire is recorded', async () => {
    const emu = await start();
    emu.faultNext({ closeAfterAudioSec: { seconds: 0.5, code: 1011, reason: 'boom' } });
    const c = await connect(emu);
    c.stream(Buffer.alloc(RATE * 2));
    expect(await c.closed).toEqual({ code: 1011, reason: 'boom' });
    const conn = await emu.waitForScribeClose();
    expect(conn.record.path).toBe('/v1/speech-to-text/realtime');
    expect(conn.record.audioSeconds).toBeCloseTo(0.5, 6);
    const inFrames = conn.record.frames.filter((f) => f.dir === 'in' && f.kind === 'text');
    expect(JSON.parse(inFrames[0]!.text!)).toMatchObject({ message_type: 'input_audio_chunk', commit: false, sample_rate: RATE });
    expect(conn.record.frames.find((f) => f.dir === 'out')?.text).toContain('session_started');
  });

  it('deadAir withholds session_started and transcripts', async () => {
    const emu = await start({ scribe: { processingStartSec: 0 } });
    emu.faultNext({ deadAir: true });
    const c = await connect(emu);
    c.stream(speech([{ words: ['hello'] }]));
    c.commit();
    const conn = await emu.waitForScribeConnection();
    await emu.waitFor(() => conn.commits.length === 1, 2000, 'commit');
    await sleep(30);
    expect(c.messages()).toEqual([]);
    expect(conn.record.suppressed).toBe(conn.sent.length);
  });
});
