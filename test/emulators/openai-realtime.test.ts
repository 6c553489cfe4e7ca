import type { IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type {
  ConversationItemInputAudioTranscriptionCompletedEvent,
  ConversationItemInputAudioTranscriptionDeltaEvent,
  ConversationItemInputAudioTranscriptionFailedEvent,
  InputAudioBufferClearedEvent,
  InputAudioBufferCommittedEvent,
  InputAudioBufferSpeechStartedEvent,
  InputAudioBufferSpeechStoppedEvent,
  RealtimeErrorEvent,
} from 'openai/resources/realtime/realtime';
import { chunkBuffer, scriptTimings, synthesize, type ScriptItem } from './audio.ts';
import { selfSignedCert, waitForEvent, withTimeout } from './base.ts';
import { OPENAI_MISSING_KEY_MESSAGE, maskApiKey } from './openai-speech.ts';
import {
  BAD_KEY_CLOSE_CODE,
  BAD_KEY_CLOSE_REASON,
  SESSION_EXPIRED_MESSAGE,
  startOpenAiRealtimeEmulator,
  type OpenAiRealtimeEmulator,
  type OpenAiRealtimeEmulatorOptions,
  type RtBetaSessionUpdated,
  type RtCleared,
  type RtCommitted,
  type RtErrorEvent,
  type RtServerEvent,
  type RtSessionCreated,
  type RtSpeechStarted,
  type RtSpeechStopped,
  type RtTranscriptionCompleted,
  type RtTranscriptionDelta,
  type RtTranscriptionFailed,
  type RtTranscriptionSession,
} from './openai-realtime.ts';

// Compile-time proof that the emulator's events fit the openai@6 SDK's published types. (The
// session objects do not: the API sends `language: null` / `transcript: null`, the SDK types say
// `string | undefined`.)
type Assignable<T, U extends T> = U;
export type _ErrorFitsSdk = Assignable<RealtimeErrorEvent, RtErrorEvent>;
export type _StartedFitsSdk = Assignable<InputAudioBufferSpeechStartedEvent, RtSpeechStarted>;
export type _StoppedFitsSdk = Assignable<InputAudioBufferSpeechStoppedEvent, RtSpeechStopped>;
export type _CommittedFitsSdk = Assignable<InputAudioBufferCommittedEvent, RtCommitted>;
export type _ClearedFitsSdk = Assignable<InputAudioBufferClearedEvent, RtCleared>;
export type _DeltaFitsSdk = Assignable<ConversationItemInputAudioTranscriptionDeltaEvent, RtTranscriptionDelta>;
export type _CompletedFitsSdk = Assignable<ConversationItemInputAudioTranscriptionCompletedEvent, RtTranscriptionCompleted>;
export type _FailedFitsSdk = Assignable<ConversationItemInputAudioTranscriptionFailedEvent, RtTranscriptionFailed>;

const KEY = 'sk-test-key';
const RATE = 24000;
const auth = { Authorization: `Bearer ${KEY}` };
const DELTA = 'conversation.item.input_audio_transcription.delta';
const COMPLETED = 'conversation.item.input_audio_transcription.completed';

const emulators: OpenAiRealtimeEmulator[] = [];
const clients: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: OpenAiRealtimeEmulatorOptions = {}): Promise<OpenAiRealtimeEmulator> {
  const emu = await startOpenAiRealtimeEmulator(opts);
  emulators.push(emu);
  return emu;
}

interface Client {
  ws: WebSocket;
  events: RtServerEvent[];
  texts: string[];
  upgradeHeaders: IncomingHttpHeaders;
  closed: Promise<{ code: number; reason: string }>;
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  send(obj: unknown): void;
  /** input_audio_buffer.append events of chunkBytes each */
  appendPcm(pcm: Buffer, chunkBytes?: number | number[]): void;
  of<K extends RtServerEvent['type']>(type: K): Array<Extract<RtServerEvent, { type: K }>>;
  /** wait for the n-th (1-based) event of a type */
  next<K extends RtServerEvent['type']>(type: K, n?: number, timeoutMs?: number): Promise<Extract<RtServerEvent, { type: K }>>;
  types(): string[];
}

async function connect(
  emu: OpenAiRealtimeEmulator,
  o: { query?: string; headers?: Record<string, string>; protocols?: string[]; ca?: string; url?: string } = {},
): Promise<Client> {
  const url = o.url ?? `${emu.wsUrl}${emu.options.path}${o.query ?? '?intent=transcription'}`;
  const ws = new WebSocket(url, o.protocols ?? [], { headers: o.headers ?? auth, ca: o.ca });
  clients.push(ws);
  const events: RtServerEvent[] = [];
  const texts: string[] = [];
  ws.on('message', (data) => {
    const text = data.toString();
    texts.push(text);
    try {
      events.push(JSON.parse(text) as RtServerEvent);
    } catch {
      /* kept in texts */
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
  const of = <K extends RtServerEvent['type']>(type: K) => events.filter((e): e is Extract<RtServerEvent, { type: K }> => e.type === type);
  const waitFor = <T>(pred: () => T | undefined | null | false, timeoutMs = 2000, what = 'client condition') =>
    waitForEvent(ws, 'change', pred, timeoutMs, what);
  return {
    ws,
    events,
    texts,
    get upgradeHeaders() {
      return upgradeHeaders;
    },
    closed: withTimeout(closed, 5000, 'client close'),
    waitFor,
    send: (obj) => ws.send(JSON.stringify(obj)),
    appendPcm(pcm, chunkBytes = 2400) {
      for (const c of chunkBuffer(pcm, chunkBytes)) ws.send(JSON.stringify({ type: 'input_audio_buffer.append', audio: c.toString('base64') }));
    },
    of,
    next: (type, n = 1, timeoutMs = 2000) => waitFor(() => of(type)[n - 1], timeoutMs, `${type} #${n}`),
    types: () => events.map((e) => e.type),
  };
}

interface Rejection {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function expectRejection(url: string, headers: Record<string, string> = auth): Promise<Rejection> {
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

/** A GA transcription session.update. */
function gaUpdate(input: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'session.update', session: { type: 'transcription', audio: { input }, ...extra } };
}

const VAD_4O = gaUpdate({
  format: { type: 'audio/pcm', rate: RATE },
  transcription: { model: 'gpt-4o-transcribe', language: 'en' },
  turn_detection: { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 100, silence_duration_ms: 500 },
});

function manual(model: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return gaUpdate({ transcription: { model }, turn_detection: null }, extra);
}

/** Connect, configure, and wait for session.updated. */
async function configured(emu: OpenAiRealtimeEmulator, update: Record<string, unknown>): Promise<Client> {
  const c = await connect(emu);
  await c.next('session.created');
  c.send(update);
  await c.next('session.updated');
  return c;
}

const pcm = (script: ScriptItem[]) => synthesize(script, { sampleRate: RATE });
const deltasOf = (c: Client, itemId: string) =>
  c
    .of(DELTA)
    .filter((d) => d.item_id === itemId)
    .map((d) => d.delta)
    .join('');

/** ITU-T G.711 mu-law encoder (for the pcmu test). */
function linearToMulaw(sample: number): number {
  const BIAS = 0x84;
  const CLIP = 32635;
  const sign = (sample >> 8) & 0x80;
  let s = sign ? -sample : sample;
  if (s > CLIP) s = CLIP;
  s += BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; exponent--, mask >>= 1);
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

// ---------------------------------------------------------------------------------------------

describe('upgrade', () => {
  it('answers 404 on other paths and 401 without an Authorization header, in the OpenAI error shape', async () => {
    const emu = await start();
    const r404 = await expectRejection(`${emu.wsUrl}/v1/listen?intent=transcription`);
    expect(r404.status).toBe(404);
    expect(JSON.parse(r404.body)).toEqual({ error: { message: 'Invalid URL (GET /v1/listen)', type: 'invalid_request_error', param: null, code: null } });
    expect(r404.headers['x-request-id']).toMatch(/^req_[0-9a-f]{32}$/);
    const r401 = await expectRejection(emu.transcriptionUrl, {});
    expect(r401.status).toBe(401);
    expect(JSON.parse(r401.body).error).toMatchObject({ message: OPENAI_MISSING_KEY_MESSAGE, type: 'invalid_request_error', code: null });
    expect(emu.rejected.map((r) => r.status)).toEqual([404, 401]);
  });

  it('needs ?intent=transcription or a model: 400 otherwise', async () => {
    const emu = await start();
    const none = await expectRejection(`${emu.wsUrl}/v1/realtime`);
    expect(none.status).toBe(400);
    expect(JSON.parse(none.body).error).toMatchObject({ code: 'missing_required_parameter', param: 'model' });
    const bad = await expectRejection(`${emu.wsUrl}/v1/realtime?intent=conversation`);
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).error).toMatchObject({ code: 'invalid_value', param: 'intent' });
  });

  it('accepts an unknown key, then sends invalid_api_key and closes 3000 (no session.created)', async () => {
    const emu = await start();
    const c = await connect(emu, { headers: { Authorization: 'Bearer sk-wrong-key-123456' } });
    const closed = await c.closed;
    expect(closed).toEqual({ code: BAD_KEY_CLOSE_CODE, reason: BAD_KEY_CLOSE_REASON });
    expect(c.types()).toEqual(['error']);
    const e = c.of('error')[0]!;
    expect(e.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_api_key', param: null, event_id: null });
    expect(e.error.message).toBe(`Incorrect API key provided: ${maskApiKey('sk-wrong-key-123456')}. You can find your API key at https://platform.openai.com/account/api-keys.`);
    expect(maskApiKey('sk-wrong-key-123456')).toBe('sk-************3456');
  });

  it("badKeyAnswer 'http' refuses an unknown key with 401 invalid_api_key instead", async () => {
    const emu = await start({ badKeyAnswer: 'http' });
    const r = await expectRejection(emu.transcriptionUrl, { Authorization: 'Bearer nope-nope-nope' });
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body).error.code).toBe('invalid_api_key');
  });

  it('accepts the browser subprotocol key, sends x-request-id on the 101, honours a custom path', async () => {
    const emu = await start({ path: '/openai/v1/realtime/' });
    expect(emu.transcriptionUrl).toBe(`${emu.wsUrl}/openai/v1/realtime?intent=transcription`);
    const c = await connect(emu, { headers: {}, protocols: ['realtime', `openai-insecure-api-key.${KEY}`] });
    await c.next('session.created');
    expect(c.ws.protocol).toBe('realtime');
    expect(c.upgradeHeaders['x-request-id']).toMatch(/^req_/);
    const conn = await emu.waitForConnection();
    expect(conn).toMatchObject({ authVia: 'subprotocol', apiKey: KEY, kind: 'transcription', dialect: 'ga' });
    expect((await expectRejection(`${emu.wsUrl}/v1/realtime?intent=transcription`)).status).toBe(404);
  });
});

describe('session configuration', () => {
  it('greets with session.created holding the API defaults (transcription off, server_vad 200 ms)', async () => {
    const emu = await start();
    const before = Math.floor(Date.now() / 1000);
    const c = await connect(emu);
    const created = await c.next('session.created');
    expect(c.events[0]).toBe(created);
    const s = created.session as RtTranscriptionSession;
    expect(created.event_id).toMatch(/^event_[A-Za-z0-9]{21}$/);
    expect(s).toMatchObject({
      type: 'transcription',
      object: 'realtime.transcription_session',
      audio: {
        input: {
          format: { type: 'audio/pcm', rate: 24000 },
          noise_reduction: null,
          transcription: null,
          turn_detection: { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 200 },
        },
      },
      include: null,
    });
    expect(s.id).toMatch(/^sess_/);
    expect(s.expires_at - before).toBeGreaterThanOrEqual(3599);
    expect(s.expires_at - before).toBeLessThanOrEqual(3601);
  });

  it('answers session.update with the full effective configuration; later updates change only what they name', async () => {
    const emu = await start();
    const c = await connect(emu);
    await c.next('session.created');
    c.send(gaUpdate({ transcription: { model: 'gpt-4o-mini-transcribe' }, turn_detection: { type: 'server_vad' } }));
    const u1 = await c.next('session.updated');
    expect(u1.session.audio.input).toEqual({
      format: { type: 'audio/pcm', rate: 24000 },
      noise_reduction: null,
      transcription: { model: 'gpt-4o-mini-transcribe', language: null, prompt: null },
      turn_detection: { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 },
    });
    c.send({ type: 'session.update', session: { type: 'transcription', include: ['item.input_audio_transcription.logprobs'], audio: { input: { noise_reduction: { type: 'near_field' } } } } });
    const u2 = await c.next('session.updated', 2);
    expect(u2.session.include).toEqual(['item.input_audio_transcription.logprobs']);
    expect(u2.session.audio.input.noise_reduction).toEqual({ type: 'near_field' });
    expect(u2.session.audio.input.transcription?.model).toBe('gpt-4o-mini-transcribe');
    expect(u2.session.id).toBe(u1.session.id);
    const conn = await emu.waitForConnection();
    expect(conn.config.transcription?.model).toBe('gpt-4o-mini-transcribe');
    expect(conn.counts.sessionUpdate).toBe(2);
  });

  it('refuses invalid updates with an error event (param, client event_id) and keeps the session unchanged', async () => {
    const emu = await start();
    const c = await connect(emu);
    await c.next('session.created');
    const cases: Array<[Record<string, unknown>, { code: string; param: string; message?: string | RegExp }]> = [
      [gaUpdate({ transcription: { model: 'gpt-9-transcribe' } }), { code: 'invalid_value', param: 'session.audio.input.transcription.model', message: /^Invalid value: 'gpt-9-transcribe'\. Supported values are: 'whisper-1', 'gpt-4o-transcribe', .*, and 'gpt-live-transcribe'\.$/ }],
      [gaUpdate({ format: { type: 'audio/pcm', rate: 16000 } }), { code: 'integer_below_min_value', param: 'session.audio.input.format.rate', message: "Invalid 'session.audio.input.format.rate': integer below minimum value. Expected a value >= 24000, but got 16000 instead." }],
      [gaUpdate({ format: { type: 'audio/pcm', rate: 48000 } }), { code: 'integer_above_max_value', param: 'session.audio.input.format.rate' }],
      [gaUpdate({ format: { type: 'audio/opus' } }), { code: 'invalid_value', param: 'session.audio.input.format.type' }],
      [gaUpdate({ transcription: { model: 'whisper-1' }, vad: true }), { code: 'unknown_parameter', param: 'session.audio.input.vad', message: "Unknown parameter: 'session.audio.input.vad'." }],
      [{ type: 'session.update', session: { audio: {} } }, { code: 'missing_required_parameter', param: 'session.type', message: "Missing required parameter: 'session.type'." }],
      [{ type: 'session.update', session: { type: 'realtime' } }, { code: 'invalid_value', param: 'session.type' }],
      [gaUpdate({ transcription: { model: 'gpt-live-transcribe' } }), { code: 'invalid_value', param: 'session.audio.input.turn_detection' }],
      [gaUpdate({ transcription: { model: 'gpt-live-transcribe', delay: 'bogus' }, turn_detection: null }), { code: 'invalid_value', param: 'session.audio.input.transcription.delay', message: "Invalid value: 'bogus'. Supported values are: 'minimal', 'low', 'medium', 'high', and 'xhigh'." }],
      [gaUpdate({ transcription: { model: 'gpt-4o-transcribe', delay: 'low' } }), { code: 'invalid_value', param: 'session.audio.input.transcription.delay' }],
      [gaUpdate({ turn_detection: { type: 'server_vad', threshold: 2 } }), { code: 'decimal_above_max_value', param: 'session.audio.input.turn_detection.threshold' }],
      [gaUpdate({ turn_detection: { type: 'server_vad', silence_duration_ms: 'long' } }), { code: 'invalid_type', param: 'session.audio.input.turn_detection.silence_duration_ms' }],
      [gaUpdate({}, { include: ['everything'] }), { code: 'invalid_value', param: 'session.include' }],
    ];
    for (const [i, [update, want]] of cases.entries()) {
      c.send({ ...update, event_id: `evt_${i}` });
      const e = await c.next('error', i + 1);
      expect(e.error, JSON.stringify(update)).toMatchObject({ type: 'invalid_request_error', code: want.code, param: want.param, event_id: `evt_${i}` });
      if (typeof want.message === 'string') expect(e.error.message).toBe(want.message);
      else if (want.message) expect(e.error.message).toMatch(want.message);
    }
    expect(c.of('session.updated')).toHaveLength(0);
    const conn = await emu.waitForConnection();
    expect(conn.config.transcription).toBeNull();
    c.send(gaUpdate({ transcription: { model: 'gpt-live-transcribe', delay: 'low', languages: ['ja'] }, turn_detection: null }));
    const ok = await c.next('session.updated');
    expect(ok.session.audio.input.transcription).toEqual({ model: 'gpt-live-transcribe', language: null, prompt: null, languages: ['ja'] });
    expect(ok.session.audio.input.turn_detection).toBeNull();
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('speaks the beta dialect with OpenAI-Beta: realtime=v1 (transcription_session.*, conversation.item.created)', async () => {
    const emu = await start();
    const c = await connect(emu, { headers: { ...auth, 'OpenAI-Beta': 'realtime=v1' } });
    const created = await c.next('transcription_session.created');
    expect(created.session).toMatchObject({ object: 'realtime.transcription_session', input_audio_format: 'pcm16', input_audio_transcription: null, client_secret: null });
    c.send({ type: 'session.update', session: { type: 'transcription' }, event_id: 'e1' });
    expect((await c.next('error')).error).toMatchObject({ code: 'invalid_value', param: 'type', event_id: 'e1' });
    c.send({
      type: 'transcription_session.update',
      session: { input_audio_format: 'pcm16', input_audio_transcription: { model: 'gpt-4o-transcribe', language: 'en', prompt: '' }, turn_detection: null },
    });
    const u = await c.next('transcription_session.updated');
    expect(u.session).toMatchObject({
      input_audio_format: 'pcm16',
      input_audio_transcription: { model: 'gpt-4o-transcribe', language: 'en', prompt: '' },
      turn_detection: null,
      modalities: ['audio', 'text'],
    });
    c.appendPcm(pcm([{ words: ['kilo'] }, { silenceMs: 100 }]));
    c.send({ type: 'input_audio_buffer.commit' });
    const done = await c.next(COMPLETED);
    expect(done.transcript).toBe('Kilo.');
    expect(c.types().filter((t) => t.startsWith('conversation.item.') && !t.includes('transcription'))).toEqual(['conversation.item.created']);
    expect((await emu.waitForConnection()).dialect).toBe('beta');
  });

  it('also accepts the beta transcription_session.update in the GA dialect and answers in kind', async () => {
    const emu = await start();
    const c = await connect(emu);
    await c.next('session.created');
    c.send({ type: 'transcription_session.update', session: { input_audio_format: 'g711_ulaw', input_audio_transcription: { model: 'whisper-1' } } });
    const u = (await c.next('transcription_session.updated')) as RtBetaSessionUpdated;
    expect(u.session.input_audio_format).toBe('g711_ulaw');
    expect((await emu.waitForConnection()).config.format).toEqual({ type: 'audio/pcmu' });
    c.send({ type: 'transcription_session.update', session: { input_audio_format: 'pcm8' } });
    expect((await c.next('error')).error).toMatchObject({ code: 'invalid_value', param: 'session.input_audio_format' });
  });

  it('a model URL opens a conversation session that refuses the transcription update', async () => {
    const emu = await start();
    const c = await connect(emu, { query: '?model=gpt-realtime' });
    const created = (await c.next('session.created')) as RtSessionCreated;
    expect(created.session).toMatchObject({ type: 'realtime', object: 'realtime.session', model: 'gpt-realtime' });
    c.send(VAD_4O);
    expect((await c.next('error')).error).toMatchObject({ code: 'invalid_value', param: 'session.type', message: "Invalid value: 'transcription'. Supported values are: 'realtime'." });
    c.send({ type: 'response.create' });
    expect((await c.next('error', 2)).error.code).toBe('emulator_unsupported');
  });

  it('lenientUrl makes any URL a transcription session and presets ?model= (self-hosted servers)', async () => {
    const emu = await start({ lenientUrl: true });
    const c = await connect(emu, { query: '?model=gpt-live-transcribe' });
    const s = (await c.next('session.created')).session as RtTranscriptionSession;
    expect(s.audio.input.transcription?.model).toBe('gpt-live-transcribe');
    expect(s.audio.input.turn_detection).toBeNull();
    const bare = await connect(emu, { query: '' });
    expect(((await bare.next('session.created')).session as RtTranscriptionSession).type).toBe('transcription');
  });
});

describe('server VAD', () => {
  it('speech_started, speech_stopped, committed, item added/done, word deltas, completed — times in session ms', async () => {
    const emu = await start();
    const c = await configured(emu, VAD_4O);
    c.appendPcm(pcm([{ silenceMs: 400 }, { words: ['hello', 'world', 'alpha'] }, { silenceMs: 700 }]));
    const done = await c.next(COMPLETED);
    const after = c.types().slice(2);
    expect(after).toEqual([
      'input_audio_buffer.speech_started',
      'input_audio_buffer.speech_stopped',
      'input_audio_buffer.committed',
      'conversation.item.added',
      'conversation.item.done',
      DELTA,
      DELTA,
      DELTA,
      COMPLETED,
    ]);
    const started = c.of('input_audio_buffer.speech_started')[0]!;
    const stopped = c.of('input_audio_buffer.speech_stopped')[0]!;
    const committed = c.of('input_audio_buffer.committed')[0]!;
    expect(started.audio_start_ms).toBe(300); // onset 400 ms - prefix_padding_ms 100
    expect(stopped.audio_end_ms).toBe(1800); // speech end 1300 ms + silence_duration_ms 500
    expect(new Set([started.item_id, stopped.item_id, committed.item_id, done.item_id]).size).toBe(1);
    expect(committed.previous_item_id).toBeNull();
    const added = c.of('conversation.item.added')[0]!;
    expect(added.item).toEqual({ id: committed.item_id, object: 'realtime.item', type: 'message', status: 'completed', role: 'user', content: [{ type: 'input_audio', transcript: null }] });
    expect(c.of(DELTA).map((d) => d.delta)).toEqual(['Hello', ' world', ' alpha.']);
    expect(c.of(DELTA).every((d) => d.content_index === 0 && d.logprobs === undefined)).toBe(true);
    expect(done).toMatchObject({ transcript: 'Hello world alpha.', content_index: 0 });
    expect(done.usage).toEqual({ type: 'tokens', input_tokens: 30, output_tokens: 5, total_tokens: 35, input_token_details: { audio_tokens: 30, text_tokens: 0 } });
    expect('logprobs' in done).toBe(false);
    const conn = await emu.waitForConnection();
    const item = conn.items[0]!;
    expect(item).toMatchObject({ id: committed.item_id, committedBy: 'server_vad', startMs: 0, endMs: 1800, model: 'gpt-4o-transcribe', transcript: 'Hello world alpha.', outcome: 'completed' });
    const want = scriptTimings([{ silenceMs: 400 }, { words: ['hello', 'world', 'alpha'] }], { sampleRate: RATE }).words;
    item.words.forEach((w, i) => {
      expect(w.word).toBe(want[i]!.word);
      expect(Math.abs(w.start - want[i]!.start)).toBeLessThanOrEqual(0.0101);
      expect(Math.abs(w.end - want[i]!.end)).toBeLessThanOrEqual(0.0101);
    });
  });

  it('chains items (previous_item_id), clamps audio_start_ms to the buffer start, and keeps the audio running', async () => {
    const emu = await start();
    const c = await configured(emu, gaUpdate({ transcription: { model: 'gpt-4o-transcribe' }, turn_detection: { type: 'server_vad' } }));
    c.appendPcm(pcm([{ silenceMs: 200 }, { words: ['bravo'] }, { silenceMs: 600 }, { words: ['charlie', 'delta'] }, { silenceMs: 600 }]));
    const second = await c.next(COMPLETED, 2);
    const [s1, s2] = c.of('input_audio_buffer.speech_started');
    const [e1, e2] = c.of('input_audio_buffer.speech_stopped');
    const [k1, k2] = c.of('input_audio_buffer.committed');
    expect([s1!.audio_start_ms, e1!.audio_end_ms]).toEqual([0, 1000]); // 200-300 -> 0; 500+500
    expect([s2!.audio_start_ms, e2!.audio_end_ms]).toEqual([1000, 2200]); // 1100-300 clamped to 1000; 1700+500
    expect(k2!.previous_item_id).toBe(k1!.item_id);
    expect(c.of('conversation.item.added')[1]!.previous_item_id).toBe(k1!.item_id);
    expect(c.of(COMPLETED)[0]!.transcript).toBe('Bravo.');
    expect(second.transcript).toBe('Charlie delta.');
    expect(deltasOf(c, second.item_id)).toBe(second.transcript);
  });

  it('gives the same events however the audio is chunked (odd sizes included)', async () => {
    const emu = await start();
    const audio = pcm([{ silenceMs: 150 }, { words: ['echo', 'foxtrot'] }, { silenceMs: 600 }, { words: ['golf'] }, { silenceMs: 600 }]);
    const summary = async (chunks: number | number[]) => {
      const c = await configured(emu, VAD_4O);
      c.appendPcm(audio, chunks);
      await c.next(COMPLETED, 2);
      return c.events
        .slice(2)
        .map((e) => ('audio_start_ms' in e ? `${e.type}@${e.audio_start_ms}` : 'audio_end_ms' in e ? `${e.type}@${e.audio_end_ms}` : 'delta' in e ? e.delta : 'transcript' in e ? e.transcript : e.type));
    };
    const a = await summary(2400);
    const b = await summary([1, 777, 4801, 3, 96000]);
    expect(b).toEqual(a);
    const items = ['input_audio_buffer.committed', 'conversation.item.added', 'conversation.item.done'];
    expect(a).toEqual([
      'input_audio_buffer.speech_started@50',
      'input_audio_buffer.speech_stopped@1250',
      ...items,
      'Echo',
      ' foxtrot.',
      'Echo foxtrot.',
      'input_audio_buffer.speech_started@1250', // 1350 - 100 ms, clamped to the buffer start
      'input_audio_buffer.speech_stopped@2150',
      ...items,
      'Golf.',
      'Golf.',
    ]);
  });

  it('whisper-1 sends one delta with the whole transcript and duration usage', async () => {
    const emu = await start();
    const c = await configured(emu, gaUpdate({ transcription: { model: 'whisper-1' }, turn_detection: { type: 'server_vad', silence_duration_ms: 300 } }));
    c.appendPcm(pcm([{ words: ['india', 'juliet', 'kilo'] }, { silenceMs: 400 }]));
    const done = await c.next(COMPLETED);
    expect(c.of(DELTA).map((d) => d.delta)).toEqual(['India juliet kilo.']);
    expect(done.usage).toEqual({ type: 'duration', seconds: 2 }); // 900 + 300 ms -> ceil 1.2
  });

  it('without a transcription model (the default) commits and creates items but transcribes nothing', async () => {
    const emu = await start();
    const c = await connect(emu);
    await c.next('session.created');
    c.appendPcm(pcm([{ words: ['lima'] }, { silenceMs: 300 }]));
    await c.next('conversation.item.done');
    expect(c.of('input_audio_buffer.speech_stopped')[0]!.audio_end_ms).toBe(500); // default 200 ms silence
    await new Promise((r) => setTimeout(r, 50));
    expect(c.of(DELTA)).toHaveLength(0);
    expect(c.of(COMPLETED)).toHaveLength(0);
    expect((await emu.waitForConnection()).items[0]!.outcome).toBe('untranscribed');
  });

  it('semantic_vad ends the turn after the eagerness silence; logprobs only with include', async () => {
    const emu = await start();
    const c = await configured(
      emu,
      gaUpdate({ transcription: { model: 'gpt-4o-mini-transcribe' }, turn_detection: { type: 'semantic_vad', eagerness: 'high' } }, { include: ['item.input_audio_transcription.logprobs'] }),
    );
    c.appendPcm(pcm([{ words: ['mike'] }, { silenceMs: 500 }]));
    const done = await c.next(COMPLETED);
    expect(c.of('input_audio_buffer.speech_stopped')[0]!.audio_end_ms).toBe(700);
    expect(c.of(DELTA)[0]!.logprobs).toEqual([{ token: 'Mike.', logprob: Math.log(0.99), bytes: [...Buffer.from('Mike.')] }]);
    expect(done.logprobs?.[0]?.token).toBe('Mike.');
  });

  it('punctuate: false gives bare lower-case words; a manual commit during speech uses the speech item id', async () => {
    const emu = await start({ punctuate: false });
    const c = await configured(emu, VAD_4O);
    c.appendPcm(pcm([{ words: ['oscar', 'papa'] }]));
    const started = await c.next('input_audio_buffer.speech_started');
    c.send({ type: 'input_audio_buffer.commit' });
    const done = await c.next(COMPLETED);
    expect(done.item_id).toBe(started.item_id);
    expect(done.transcript).toBe('oscar papa');
    expect(c.of('input_audio_buffer.speech_stopped')).toHaveLength(0);
    expect((await emu.waitForConnection()).items[0]!.committedBy).toBe('client');
  });
});

describe('manual commits (turn_detection: null)', () => {
  it('sends no VAD events; commit gives committed, items, deltas and completed', async () => {
    const emu = await start();
    const c = await configured(emu, manual('gpt-4o-transcribe', { include: [] }));
    c.appendPcm(pcm([{ silenceMs: 100 }, { words: ['quebec', 'romeo'] }, { silenceMs: 300 }]));
    await new Promise((r) => setTimeout(r, 50));
    expect(c.events).toHaveLength(2);
    c.send({ type: 'input_audio_buffer.commit', event_id: 'commit_1' });
    const done = await c.next(COMPLETED);
    expect(c.types().slice(2)).toEqual(['input_audio_buffer.committed', 'conversation.item.added', 'conversation.item.done', DELTA, DELTA, COMPLETED]);
    expect(done.transcript).toBe('Quebec romeo.');
    const conn = await emu.waitForConnection();
    expect(conn.items[0]).toMatchObject({ committedBy: 'client', startMs: 0, endMs: 1000 });
  });

  it('a commit of < 100 ms answers input_audio_buffer_commit_empty and the session goes on', async () => {
    const emu = await start();
    const c = await configured(emu, manual('gpt-4o-transcribe'));
    c.send({ type: 'input_audio_buffer.commit', event_id: 'commit_a' });
    const e1 = await c.next('error');
    expect(e1.error).toEqual({
      type: 'invalid_request_error',
      code: 'input_audio_buffer_commit_empty',
      message: 'Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer only has 0.00ms of audio.',
      param: null,
      event_id: 'commit_a',
    });
    c.appendPcm(Buffer.alloc(2400)); // 50 ms
    c.send({ type: 'input_audio_buffer.commit' });
    const e2 = await c.next('error', 2);
    expect(e2.error.message).toContain('buffer only has 50.00ms of audio.');
    expect(e2.error.event_id).toBeNull();
    c.appendPcm(Buffer.alloc(7200)); // +150 ms of silence: 200 ms buffer
    c.send({ type: 'input_audio_buffer.commit' });
    const done = await c.next(COMPLETED);
    expect(done.transcript).toBe('');
    expect(c.of(DELTA)).toHaveLength(0);
    expect(done.usage).toMatchObject({ type: 'tokens', input_tokens: 4, output_tokens: 0 });
    expect(c.of('input_audio_buffer.committed')).toHaveLength(1);
  });

  it('clear drops the uncommitted audio (cleared, then an empty commit), also when already empty', async () => {
    const emu = await start();
    const c = await configured(emu, manual('gpt-4o-transcribe'));
    c.appendPcm(pcm([{ words: ['sierra'] }]));
    c.send({ type: 'input_audio_buffer.clear' });
    await c.next('input_audio_buffer.cleared');
    c.send({ type: 'input_audio_buffer.commit' });
    expect((await c.next('error')).error.code).toBe('input_audio_buffer_commit_empty');
    c.send({ type: 'input_audio_buffer.clear' });
    await c.next('input_audio_buffer.cleared', 2);
    c.appendPcm(pcm([{ words: ['tango'] }, { silenceMs: 50 }]));
    c.send({ type: 'input_audio_buffer.commit' });
    expect((await c.next(COMPLETED)).transcript).toBe('Tango.');
    expect((await emu.waitForConnection()).counts).toMatchObject({ clear: 2, commit: 2 });
  });

  it('commit mid-word splits the word between items', async () => {
    const emu = await start();
    const c = await configured(emu, manual('gpt-4o-transcribe'));
    const audio = pcm([{ words: ['uniform'], wordMs: 600 }, { silenceMs: 100 }]);
    c.appendPcm(audio.subarray(0, 24000 * 2 * 0.3));
    c.send({ type: 'input_audio_buffer.commit' });
    c.appendPcm(audio.subarray(24000 * 2 * 0.3));
    c.send({ type: 'input_audio_buffer.commit' });
    await c.next(COMPLETED, 2);
    expect(c.of(COMPLETED).map((e) => e.transcript)).toEqual(['Uniform.', 'Uniform.']);
    const items = (await emu.waitForConnection()).items;
    expect(items.map((i) => [i.startMs, Math.round(i.endMs)])).toEqual([[0, 300], [300, 700]]);
  });

  it('transcribes G.711 mu-law (audio/pcmu, 8 kHz)', async () => {
    const emu = await start();
    const c = await configured(emu, gaUpdate({ format: { type: 'audio/pcmu' }, transcription: { model: 'gpt-4o-transcribe' }, turn_detection: { type: 'server_vad', prefix_padding_ms: 0 } }));
    const lin = synthesize([{ silenceMs: 200 }, { words: ['victor', 'whiskey'] }, { silenceMs: 600 }], { sampleRate: 8000 });
    const mu = Buffer.alloc(lin.length / 2);
    for (let i = 0; i < mu.length; i++) mu[i] = linearToMulaw(lin.readInt16LE(i * 2));
    c.appendPcm(mu, 800);
    const done = await c.next(COMPLETED);
    expect(done.transcript).toBe('Victor whiskey.');
    expect(c.of('input_audio_buffer.speech_started')[0]!.audio_start_ms).toBe(200);
    expect(c.of('input_audio_buffer.speech_stopped')[0]!.audio_end_ms).toBe(1300);
    expect((await emu.waitForConnection()).audioSeconds).toBeCloseTo(1.4, 6);
  });

  it('gpt-live-transcribe streams deltas during speech under the final item id; "." and completed after the commit', async () => {
    const emu = await start();
    const c = await configured(emu, manual('gpt-live-transcribe'));
    c.appendPcm(pcm([{ words: ['xray', 'yankee', 'zulu'] }, { silenceMs: 200 }]));
    await c.next(DELTA, 3);
    expect(c.of('input_audio_buffer.committed')).toHaveLength(0);
    c.send({ type: 'input_audio_buffer.commit' });
    const done = await c.next(COMPLETED);
    const committed = c.of('input_audio_buffer.committed')[0]!;
    expect(c.of(DELTA).map((d) => [d.item_id, d.delta])).toEqual([
      [committed.item_id, 'Xray'],
      [committed.item_id, ' yankee'],
      [committed.item_id, ' zulu'],
      [committed.item_id, '.'],
    ]);
    expect(c.types().indexOf('input_audio_buffer.committed')).toBe(5);
    expect(done).toMatchObject({ item_id: committed.item_id, transcript: 'Xray yankee zulu.', usage: { type: 'duration', seconds: 2 } });
  });
});

describe('client event errors', () => {
  it('answers non-JSON, binary frames, unknown types, missing or bad audio with error events', async () => {
    const emu = await start();
    const c = await configured(emu, manual('whisper-1'));
    c.ws.send('not json');
    c.ws.send(Buffer.from([1, 2, 3]));
    c.send({ type: 'response.create', event_id: 'r1' });
    c.send({ event_id: 'x' });
    c.send({ type: 'input_audio_buffer.append' });
    c.send({ type: 'input_audio_buffer.append', audio: '***' });
    c.send({ type: 'input_audio_buffer.append', audio: 42 });
    const errors = await c.waitFor(() => c.of('error').length >= 7 && c.of('error'));
    expect(errors.map((e) => [e.error.code, e.error.param])).toEqual([
      ['invalid_json', null],
      ['invalid_json', null],
      ['invalid_value', 'type'],
      ['missing_required_parameter', 'type'],
      ['missing_required_parameter', 'audio'],
      ['invalid_value', 'audio'],
      ['invalid_type', 'audio'],
    ]);
    expect(errors[2]!.error).toMatchObject({
      event_id: 'r1',
      message:
        "Invalid value: 'response.create'. Supported values are: 'session.update', 'transcription_session.update', 'input_audio_buffer.append', 'input_audio_buffer.commit', and 'input_audio_buffer.clear'.",
    });
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    expect((await emu.waitForConnection()).counts.errors).toBe(7);
  });
});

describe('timers and latency', () => {
  it('maxSessionMs: error session_expired, then close', async () => {
    const emu = await start({ maxSessionMs: 150 });
    const c = await connect(emu);
    const created = (await c.next('session.created')) as RtSessionCreated;
    const closed = await c.closed;
    expect(closed.code).toBe(1000);
    expect(c.of('error')[0]!.error).toMatchObject({ type: 'invalid_request_error', code: 'session_expired', message: SESSION_EXPIRED_MESSAGE });
    expect(created.session.expires_at).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
  });

  it('idleTimeoutMs closes a silent socket (off by default)', async () => {
    const emu = await start({ idleTimeoutMs: 120 });
    const c = await connect(emu);
    const t0 = Date.now();
    expect(await c.closed).toEqual({ code: 1000, reason: 'idle timeout' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
  });

  it('transcriptionDelayMs / deltaIntervalMs space the deltas after the commit; latencyMs delays everything', async () => {
    const emu = await start({ transcriptionDelayMs: 80, deltaIntervalMs: 30, latencyMs: 20 });
    const c = await connect(emu);
    const at = new Map<string, number>();
    c.ws.on('message', (d) => {
      const e = JSON.parse(d.toString()) as RtServerEvent;
      at.set(`${e.type}#${c.of(e.type).length}`, performance.now());
    });
    await c.next('session.created');
    c.send(manual('gpt-4o-transcribe'));
    await c.next('session.updated');
    c.appendPcm(pcm([{ words: ['one', 'two', 'three'] }]));
    const t0 = performance.now();
    c.send({ type: 'input_audio_buffer.commit' });
    await c.next(COMPLETED, 1, 3000);
    // wall-clock delays can only make things later: measure from the client's send time
    const committed = at.get('input_audio_buffer.committed#1')! - t0;
    const first = at.get(`${DELTA}#1`)! - t0;
    const done = at.get(`${COMPLETED}#1`)! - t0;
    expect(committed).toBeGreaterThanOrEqual(18); // latencyMs
    expect(first).toBeGreaterThanOrEqual(95); // transcriptionDelayMs + latencyMs
    expect(done).toBeGreaterThanOrEqual(185); // + 3 deltas x deltaIntervalMs
    expect(done).toBeGreaterThanOrEqual(first);
    expect(c.of(COMPLETED)[0]!.transcript).toBe('One two three.');
  });
});

describe('faults and records', () => {
  it('failTranscription sends ...transcription.failed; stallTranscription sends nothing after the items', async () => {
    const emu = await start();
    emu.realtimeFaults.failTranscription = { code: 'audio_unintelligible', message: 'Audio could not be transcribed.' };
    const c = await configured(emu, manual('gpt-4o-transcribe'));
    c.appendPcm(pcm([{ words: ['four'] }]));
    c.send({ type: 'input_audio_buffer.commit' });
    const failed = await c.next('conversation.item.input_audio_transcription.failed');
    expect(failed).toMatchObject({ content_index: 0, item_id: c.of('input_audio_buffer.committed')[0]!.item_id, error: { type: 'server_error', code: 'audio_unintelligible', message: 'Audio could not be transcribed.' } });
    expect(c.of(DELTA)).toHaveLength(0);
    emu.resetFaults();
    const conn = await emu.waitForConnection();
    conn.faults.stallTranscription = true;
    c.appendPcm(pcm([{ words: ['hello'] }]));
    c.send({ type: 'input_audio_buffer.commit' });
    await c.next('conversation.item.done', 2);
    await new Promise((r) => setTimeout(r, 60));
    expect(c.of(COMPLETED)).toHaveLength(0);
    expect(conn.items.map((i) => i.outcome)).toEqual(['failed', 'stalled']);
  });

  it('errorAfterAudioSec sends one error event and optionally closes', async () => {
    const emu = await start();
    emu.realtimeFaults.errorAfterAudioSec = { seconds: 0.2, close: { code: 1011, reason: 'server error' } };
    const c = await configured(emu, manual('gpt-4o-transcribe'));
    c.appendPcm(Buffer.alloc(24000 * 2 * 0.5));
    expect(await c.closed).toEqual({ code: 1011, reason: 'server error' });
    expect(c.of('error')).toHaveLength(1);
    expect(c.of('error')[0]!.error).toMatchObject({ type: 'server_error', code: null });
  });

  it('base faults: dropAfterAudioSec destroys the socket; deadAir sends nothing', async () => {
    const emu = await start();
    emu.faultNext({ dropAfterAudioSec: 0.1 });
    const c = await configured(emu, manual('gpt-4o-transcribe'));
    c.appendPcm(Buffer.alloc(24000 * 2 * 0.3));
    expect((await c.closed).code).toBe(1006);
    emu.faults.deadAir = true;
    const d = await connect(emu);
    d.send(manual('gpt-4o-transcribe'));
    await emu.waitFor(() => emu.connections[1]?.sent.length === 2 && true);
    expect(d.events).toHaveLength(0);
    expect(emu.records[1]!.suppressed).toBe(2);
  });

  it('records the wire, every produced event and the counts', async () => {
    const emu = await start();
    const c = await configured(emu, manual('gpt-4o-transcribe'));
    c.appendPcm(pcm([{ words: ['alpha'] }]), 7200);
    c.send({ type: 'input_audio_buffer.commit' });
    await c.next(COMPLETED);
    c.ws.close(1000);
    const conn = await emu.waitForClose();
    expect(conn.record.path).toBe('/v1/realtime');
    expect(conn.record.query).toEqual({ intent: ['transcription'] });
    expect(conn.record.headers.authorization).toBe(`Bearer ${KEY}`);
    const inTypes = conn.record.frames.filter((f) => f.dir === 'in' && f.kind === 'text').map((f) => JSON.parse(f.text!).type as string);
    expect(inTypes).toEqual(['session.update', 'input_audio_buffer.append', 'input_audio_buffer.append', 'input_audio_buffer.commit']);
    expect(conn.sent.map((e) => e.type)).toEqual(c.types());
    expect(conn.counts).toMatchObject({ append: 2, commit: 1, sessionUpdate: 1, errors: 0 });
    expect(conn.audioSeconds).toBeCloseTo(0.3, 6);
    expect(conn.record.audioSeconds).toBeCloseTo(0.3, 6);
    expect(conn.record.close).toMatchObject({ code: 1000, by: 'client' });
  });

  it('serves wss with a self-signed certificate', async () => {
    const tls = selfSignedCert();
    const emu = await start({ tls });
    expect(emu.transcriptionUrl.startsWith('wss://')).toBe(true);
    const c = await connect(emu, { ca: tls.cert.toString() });
    expect(((await c.next('session.created')) as RtSessionCreated).session.type).toBe('transcription');
  });
});
