import type { IncomingHttpHeaders } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { alawToLinear, mulawToLinear } from './audio.ts';
import { waitForEvent, withTimeout } from './base.ts';
import {
  DEFAULT_API_KEY,
  GENERATION_CONFIG_CHANGED,
  INVALID_API_KEY,
  SOMETHING_WENT_WRONG,
  VOICE_SETTINGS_CHANGED,
  closeReason,
  expectedAudioBytes,
  inputTimeoutMessage,
  linearToAlaw,
  linearToMulaw,
  startElevenLabsEmulator,
  type ElAudioOutput,
  type ElErrorOutput,
  type ElServerMessage,
  type ElevenLabsEmulator,
  type ElevenLabsEmulatorOptions,
} from './elevenlabs.ts';
import { renderText } from './tts-audio.ts';

const KEY = DEFAULT_API_KEY;
const VOICE = 'Xb7hH8MSUJpSbSDYk0k2';
const Q = { model_id: 'eleven_flash_v2_5', output_format: 'pcm_16000' };
const auth = { 'xi-api-key': KEY };
const BOS = { text: ' ', voice_settings: { stability: 0.5, similarity_boost: 0.75, speed: 1 } };

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

interface Event {
  t: number;
  msg: ElServerMessage;
}

interface Client {
  ws: WebSocket;
  events: Event[];
  messages(): ElServerMessage[];
  audio(): ElAudioOutput[];
  pcm(): Buffer;
  closed: Promise<{ code: number; reason: string }>;
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  waitAudio(n: number, timeoutMs?: number): Promise<ElAudioOutput[]>;
  send(obj: unknown): void;
}

async function connect(
  emu: ElevenLabsEmulator,
  query: Record<string, string> = Q,
  headers: Record<string, string> = auth,
  kind: 'stream-input' | 'multi-stream-input' = 'stream-input',
  voice = VOICE,
): Promise<Client> {
  const ws = new WebSocket(emu.streamInputUrl(voice, query, kind), { headers });
  clients.push(ws);
  const t0 = performance.now();
  const events: Event[] = [];
  ws.on('message', (data, isBinary) => {
    expect(isBinary).toBe(false);
    events.push({ t: performance.now() - t0, msg: JSON.parse(data.toString()) as ElServerMessage });
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
  const audio = () => messages().filter((m): m is ElAudioOutput => 'audio' in m);
  return {
    ws,
    events,
    messages,
    audio,
    pcm: () => Buffer.concat(audio().map((m) => Buffer.from(m.audio, 'base64'))),
    closed: withTimeout(closed, 5000, 'client close'),
    waitFor: (pred, timeoutMs = 2000, what = 'client condition') => waitForEvent(ws, 'change', pred, timeoutMs, what),
    waitAudio(n, timeoutMs = 2000) {
      return waitForEvent(ws, 'change', () => (audio().length >= n ? audio() : undefined), timeoutMs, `${n} audio messages`);
    },
    send: (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)),
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** `n` characters of 5-char words: "abcd abcd …" (every 5th char a space). */
function words(n: number, word = 'abcd'): string {
  return `${word} `.repeat(Math.ceil(n / (word.length + 1))).slice(0, n);
}

const isFinal = (m: ElServerMessage): boolean => 'isFinal' in m;
const isError = (m: ElServerMessage): m is ElErrorOutput => 'error' in m;

describe('upgrade', () => {
  it('answers 404 on unknown paths', async () => {
    const emu = await start();
    const r = await expectRejection(`${emu.wsUrl}/v1/text-to-speech/${VOICE}/stream-output?model_id=eleven_flash_v2_5`);
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body)).toEqual({ detail: 'Not Found' });
  });

  it('refuses bad query parameters with 403 and a pydantic-style detail', async () => {
    const emu = await start();
    const cases: Array<[Record<string, string>, string, string]> = [
      [{ ...Q, output_format: 'wav_16000' }, 'enum', 'output_format'],
      [{ ...Q, inactivity_timeout: '181' }, 'less_than_equal', 'inactivity_timeout'],
      [{ ...Q, inactivity_timeout: '0' }, 'greater_than_equal', 'inactivity_timeout'],
      [{ ...Q, inactivity_timeout: 'soon' }, 'int_parsing', 'inactivity_timeout'],
      [{ ...Q, sync_alignment: 'maybe' }, 'bool_parsing', 'sync_alignment'],
      [{ ...Q, auto_mode: 'sometimes' }, 'bool_parsing', 'auto_mode'],
      [{ ...Q, apply_text_normalization: 'always' }, 'enum', 'apply_text_normalization'],
      [{ ...Q, seed: '-1' }, 'greater_than_equal', 'seed'],
    ];
    for (const [query, type, field] of cases) {
      const r = await expectRejection(emu.streamInputUrl(VOICE, query));
      expect(r.status, JSON.stringify(query)).toBe(403);
      const body = JSON.parse(r.body) as { detail: Array<{ type: string; loc: string[]; msg: string; input: string }> };
      expect(body.detail[0]).toMatchObject({ type, loc: ['query', field], input: query[field] });
    }
    const enumBody = JSON.parse((await expectRejection(emu.streamInputUrl(VOICE, { ...Q, apply_text_normalization: 'x' }))).body);
    expect(enumBody.detail[0].msg).toBe("Input should be 'auto', 'on' or 'off'");
    expect(emu.rejected).toHaveLength(cases.length + 1);
    expect(emu.connections).toHaveLength(0);
  });

  it('refuses unknown models, eleven_v3 on multi-stream-input, and formats it cannot encode', async () => {
    const emu = await start();
    const bad = await expectRejection(emu.streamInputUrl(VOICE, { ...Q, model_id: 'eleven_monolingual_v9' }));
    expect(bad.status).toBe(403);
    expect(JSON.parse(bad.body)).toMatchObject({ detail: { status: 'model_not_found' } });
    const v3multi = await expectRejection(emu.streamInputUrl(VOICE, { ...Q, model_id: 'eleven_v3' }, 'multi-stream-input'));
    expect(v3multi.status).toBe(403);
    for (const q of [{ model_id: 'eleven_flash_v2_5' }, { ...Q, output_format: 'mp3_44100_128' }, { ...Q, output_format: 'opus_48000_64' }]) {
      const r = await expectRejection(emu.streamInputUrl(VOICE, q));
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body)).toMatchObject({ detail: { status: 'emulator_unsupported_output_format' } });
    }
    // every documented model and emulated format is accepted; eleven_v3 on stream-input too
    const models = ['eleven_flash_v2_5', 'eleven_flash_v2', 'eleven_turbo_v2_5', 'eleven_turbo_v2', 'eleven_multilingual_v2', 'eleven_v3'];
    for (const model_id of models) (await connect(emu, { ...Q, model_id })).ws.close();
    for (const output_format of ['pcm_8000', 'pcm_22050', 'pcm_24000', 'pcm_44100', 'ulaw_8000', 'alaw_8000']) {
      (await connect(emu, { ...Q, output_format })).ws.close();
    }
    expect(emu.connections).toHaveLength(12);
  });

  it('parses every documented parameter, with pydantic booleans, and lists unknown keys', async () => {
    const emu = await start();
    await connect(emu, {
      model_id: 'eleven_turbo_v2_5', output_format: 'pcm_24000', language_code: 'de', inactivity_timeout: '180',
      sync_alignment: 'yes', auto_mode: '1', apply_text_normalization: 'off', enable_ssml_parsing: 'true',
      enable_logging: 'false', seed: '42', brand_new: 'x',
    });
    const conn = await emu.waitForConnection();
    expect(conn.voiceId).toBe(VOICE);
    expect(conn.kind).toBe('stream-input');
    expect(conn.params).toEqual({
      modelId: 'eleven_turbo_v2_5', languageCode: 'de', outputFormat: 'pcm_24000', inactivityTimeout: 180,
      syncAlignment: true, autoMode: true, applyTextNormalization: 'off', enableSsmlParsing: true,
      enableLogging: false, seed: 42, authorization: null, unknown: ['brand_new'],
    });
    expect(conn.record.headers['xi-api-key']).toBe(KEY);
  });

  it('answers 429 too_many_concurrent_requests beyond maxConcurrent, and accepts again after a close', async () => {
    const emu = await start({ maxConcurrent: 2 });
    const a = await connect(emu);
    await connect(emu);
    const r = await expectRejection(emu.streamInputUrl(VOICE, Q));
    expect(r.status).toBe(429);
    expect(JSON.parse(r.body)).toMatchObject({ detail: { status: 'too_many_concurrent_requests' } });
    a.ws.close();
    await emu.waitForClose(emu.connections[0]);
    await connect(emu);
    expect(emu.connections).toHaveLength(3);
  });

  it('can refuse a bad xi-api-key header at the upgrade (authFailure 401)', async () => {
    const emu = await start({ authFailure: 401 });
    const r = await expectRejection(emu.streamInputUrl(VOICE, Q), { 'xi-api-key': 'nope' });
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toEqual({ detail: { status: 'invalid_api_key', message: INVALID_API_KEY } });
    // no header: the key may still come in the first message
    const c = await connect(emu, Q, {});
    c.send({ ...BOS, 'xi-api-key': KEY });
    await emu.waitFor(() => emu.connections[0]?.auth.ok);
  });
});

describe('authentication after the upgrade', () => {
  it('sends nothing on open, then 1008 invalid_api_key at the first message for a bad or missing key', async () => {
    const emu = await start();
    const headerSets: Array<Record<string, string>> = [{ 'xi-api-key': 'nope' }, {}];
    for (const headers of headerSets) {
      const c = await connect(emu, Q, headers);
      await sleep(40);
      expect(c.events).toHaveLength(0);
      c.send(BOS);
      const closed = await c.closed;
      expect(closed).toEqual({ code: 1008, reason: INVALID_API_KEY });
      expect(c.messages()).toEqual([{ message: INVALID_API_KEY, error: 'invalid_api_key', code: 1008 }]);
      await emu.waitForClose();
    }
    expect(emu.connections.map((x) => [x.auth.via, x.auth.ok, x.closeCode])).toEqual([
      ['header', false, 1008],
      [null, false, 1008],
    ]);
  });

  it('accepts the key in the first message (xi-api-key or xi_api_key) and tokens in `authorization`', async () => {
    const emu = await start({ tokens: ['single-use-1'] });
    const a = await connect(emu, Q, {});
    a.send({ ...BOS, 'xi-api-key': KEY });
    const b = await connect(emu, Q, {});
    b.send({ ...BOS, xi_api_key: KEY });
    const c = await connect(emu, { ...Q, authorization: 'Bearer single-use-1' }, {});
    c.send(BOS);
    const d = await connect(emu, Q, {});
    d.send({ ...BOS, authorization: 'single-use-1' });
    await emu.waitFor(() => emu.connections.length === 4 && emu.connections.every((x) => x.auth.ok !== null));
    expect(emu.connections.map((x) => [x.auth.via, x.auth.kind, x.auth.ok])).toEqual([
      ['message', 'api-key', true],
      ['message', 'api-key', true],
      ['query', 'token', true],
      ['message', 'token', true],
    ]);
    for (const x of [a, b, c, d]) {
      x.send({ text: 'Hi. ', flush: true });
      await x.waitAudio(1);
    }
  });

  it('closes 1008 voice_not_found for an unknown voice when voices are configured', async () => {
    const emu = await start({ voices: [VOICE] });
    const c = await connect(emu, Q, auth, 'stream-input', 'no-such-voice');
    c.send(BOS);
    expect((await c.closed).code).toBe(1008);
    expect(c.messages()[0]).toMatchObject({ error: 'voice_not_found' });
  });
});

describe('message validation', () => {
  it('requires the first text to be a single space', async () => {
    const emu = await start();
    const c = await connect(emu);
    c.send({ text: 'Hello ' });
    const closed = await c.closed;
    expect(closed.code).toBe(1008);
    expect(c.messages()[0]).toMatchObject({ error: 'invalid_request', code: 1008 });
    expect(emu.connections[0]!.contexts).toHaveLength(0);
  });

  it('validates voice_settings ranges and chunk_length_schedule items (50-500)', async () => {
    const emu = await start();
    const bad = [
      { ...BOS, voice_settings: { speed: 2 } },
      { ...BOS, voice_settings: { stability: 1.5 } },
      { ...BOS, voice_settings: { use_speaker_boost: 'yes' } },
      { ...BOS, generation_config: { chunk_length_schedule: [10] } },
      { ...BOS, generation_config: { chunk_length_schedule: [120, 600] } },
      { ...BOS, generation_config: { chunk_length_schedule: 'fast' } },
    ];
    for (const bos of bad) {
      const c = await connect(emu);
      c.send(bos);
      expect((await c.closed).code, JSON.stringify(bos)).toBe(1008);
      expect(c.messages()[0]).toMatchObject({ error: 'invalid_request' });
    }
  });

  it('rejects a changed voice_settings or generation_config, accepts an unchanged repeat', async () => {
    const emu = await start();
    const ok = await connect(emu);
    ok.send({ ...BOS, generation_config: { chunk_length_schedule: [50] } });
    ok.send({ text: 'Hello there. ', voice_settings: { speed: 1, similarity_boost: 0.75, stability: 0.5 }, generation_config: { chunk_length_schedule: [50] }, flush: true });
    await ok.waitAudio(1);
    const a = await connect(emu);
    a.send(BOS);
    a.send({ text: 'Hello ', voice_settings: { stability: 0.9 } });
    expect(await a.closed).toEqual({ code: 1008, reason: closeReason(VOICE_SETTINGS_CHANGED) });
    const b = await connect(emu);
    b.send(BOS);
    b.send({ text: 'Hello ', generator_config: { chunk_length_schedule: [60] } });
    expect((await b.closed).code).toBe(1008);
    expect(b.messages()[0]).toMatchObject({ message: GENERATION_CONFIG_CHANGED });
  });

  it('closes 1008 on invalid JSON, binary frames and wrong field types', async () => {
    const emu = await start();
    const inputs: Array<(c: Client) => void> = [
      (c) => c.send('not json'),
      (c) => c.ws.send(Buffer.from([1, 2, 3])),
      (c) => {
        c.send(BOS);
        c.send({ text: 42 });
      },
      (c) => {
        c.send(BOS);
        c.send({ text: 'Hi ', flush: 'yes' });
      },
    ];
    for (const f of inputs) {
      const c = await connect(emu);
      f(c);
      expect((await c.closed).code).toBe(1008);
      expect(c.messages().filter(isError)[0]).toMatchObject({ error: 'invalid_request', code: 1008 });
    }
    expect(emu.connections.map((x) => x.counts.invalid)).toEqual([1, 1, 1, 1]);
  });
});

describe('generation', () => {
  it('BOS, text, EOS: one audio message with exact bytes and alignment, isFinal, close 1000', async () => {
    const emu = await start();
    const c = await connect(emu, { ...Q, output_format: 'pcm_24000' });
    const text = 'Hello world. ';
    c.send(BOS);
    c.send({ text });
    c.send({ text: '' });
    expect(await c.closed).toEqual({ code: 1000, reason: '' });
    const msgs = c.messages();
    expect(msgs).toHaveLength(2);
    const a = msgs[0] as ElAudioOutput;
    expect(Buffer.from(a.audio, 'base64').equals(renderText(text, 24000))).toBe(true);
    expect(Buffer.from(a.audio, 'base64')).toHaveLength(13 * 60 * 24 * 2);
    expect(expectedAudioBytes(13, 'pcm_24000')).toBe(37440);
    const al = { chars: [...text], charStartTimesMs: [...text].map((_, i) => i * 60), charDurationsMs: [...text].map(() => 60) };
    expect(a.alignment).toEqual(al);
    expect(a.normalizedAlignment).toEqual(al);
    expect(Object.keys(a)).toEqual(['audio', 'normalizedAlignment', 'alignment']);
    expect(msgs[1]).toEqual({ isFinal: true });

    const conn = await emu.waitForClose();
    expect(conn.text).toBe(text);
    expect(conn.characters).toBe(13);
    expect(conn.bos).toEqual(BOS);
    expect(conn.context!.voiceSettings).toEqual(BOS.voice_settings);
    expect(conn.context!.chunkLengthSchedule).toEqual([120, 160, 250, 290]);
    expect(conn.segments).toHaveLength(1);
    expect(conn.segments[0]).toMatchObject({ text, chars: 13, trigger: 'eos', status: 'done', messages: 1, audioBytes: 37440 });
    expect(conn.segments[0]!.audioSeconds).toBeCloseTo(0.78, 9);
    expect(conn.audioSeconds).toBeCloseTo(0.78, 9);
    expect(conn.record.audioSeconds).toBeCloseTo(0.78, 9);
    expect(conn.isFinal).toBe(1);
    expect(conn.counts).toMatchObject({ messages: 3, text: 1, eos: 1 });
    expect(conn.record.close).toMatchObject({ code: 1000, by: 'server' });
    expect(conn.context!.ended?.by).toBe('eos');
  });

  it('buffers by the default chunk_length_schedule: nothing below 120 characters', async () => {
    const emu = await start({ firstAudioDelayMs: 0 });
    const c = await connect(emu, { ...Q, output_format: 'pcm_8000' });
    c.send(BOS);
    for (let i = 0; i < 23; i++) c.send({ text: 'abcd ' }); // 115 characters
    await emu.waitFor(() => emu.connections[0]?.characters === 115);
    await sleep(60);
    expect(c.events).toHaveLength(0);
    c.send({ text: 'abcd ' }); // 120
    const [a] = await c.waitAudio(1);
    expect(a!.alignment!.chars.join('')).toBe(words(120));
    expect(Buffer.from(a!.audio, 'base64')).toHaveLength(expectedAudioBytes(120, 'pcm_8000'));
    for (let i = 0; i < 31; i++) c.send({ text: 'abcd ' }); // +155 < 160
    await emu.waitFor(() => emu.connections[0]?.characters === 275);
    await sleep(60);
    expect(c.audio()).toHaveLength(1);
    c.send({ text: 'abcd ' }); // +160
    await c.waitAudio(2);
    expect(emu.connections[0]!.segments.map((s) => [s.chars, s.trigger])).toEqual([
      [120, 'schedule'],
      [160, 'schedule'],
    ]);
  });

  it('follows a custom schedule (last item repeats), holds an unfinished word, restarts after a flush', async () => {
    const emu = await start({ firstAudioDelayMs: 0 });
    const c = await connect(emu);
    c.send({ ...BOS, generation_config: { chunk_length_schedule: [50, 60] } });
    c.send({ text: words(45) + 'xyzzyabcd' }); // 54 chars, last whitespace at 45
    await c.waitAudio(1);
    const conn = emu.connections[0]!;
    expect(conn.segments[0]).toMatchObject({ text: words(45), trigger: 'schedule' });
    expect(conn.context!.buffered).toBe('xyzzyabcd');
    c.send({ text: ' ' + words(55) }); // buffered 9 + 56 = 65 >= 60
    await c.waitAudio(2);
    expect(conn.segments[1]!.text).toBe('xyzzyabcd ' + words(55));
    c.send({ text: words(59) }); // < 60 (the last item repeats)
    await sleep(50);
    expect(c.audio()).toHaveLength(2);
    c.send({ text: 'go ', flush: true });
    await c.waitAudio(3);
    expect(conn.segments[2]).toMatchObject({ text: words(59) + 'go ', trigger: 'flush' });
    // after a flush the schedule starts again at 50
    c.send({ text: words(55) });
    await c.waitAudio(4);
    expect(conn.segments[3]).toMatchObject({ chars: 55, trigger: 'schedule' });
    expect(conn.counts.flush).toBe(1);
    // the socket stays open after a flush: no isFinal
    expect(c.messages().some(isFinal)).toBe(false);
    c.send({ text: '' });
    expect((await c.closed).code).toBe(1000);
    expect(c.messages().filter(isFinal)).toHaveLength(1);
    expect(conn.segments).toHaveLength(4); // nothing buffered at EOS: no extra segment
  });

  it('try_trigger_generation generates only above tryTriggerMinChars', async () => {
    const emu = await start({ firstAudioDelayMs: 0, tryTriggerMinChars: 40 });
    const c = await connect(emu);
    c.send(BOS);
    c.send({ text: words(30), try_trigger_generation: true });
    await emu.waitFor(() => emu.connections[0]?.characters === 30);
    await sleep(50);
    expect(c.events).toHaveLength(0);
    c.send({ text: words(20), try_trigger_generation: true });
    await c.waitAudio(1);
    expect(emu.connections[0]!.segments[0]).toMatchObject({ chars: 50, trigger: 'try_trigger' });
    expect(emu.connections[0]!.counts.tryTrigger).toBe(2);
  });

  it('auto_mode=true generates every text message at once', async () => {
    const emu = await start({ firstAudioDelayMs: 0 });
    const c = await connect(emu, { ...Q, auto_mode: 'true' });
    c.send(BOS);
    c.send({ text: 'Hi. ' });
    c.send({ text: 'How are you? ' });
    await c.waitAudio(2);
    expect(emu.connections[0]!.segments.map((s) => [s.text, s.trigger])).toEqual([
      ['Hi. ', 'auto_mode'],
      ['How are you? ', 'auto_mode'],
    ]);
  });

  it('splits segments into chunkMs messages with chunk-relative alignment, paced by speedFactor', async () => {
    const emu = await start({ firstAudioDelayMs: 0, chunkMs: 300, speedFactor: 10 });
    const c = await connect(emu, { ...Q, output_format: 'pcm_22050' });
    const text = 'The quick brown fox. '; // 21 chars -> 5 messages of 5,5,5,5,1 chars
    c.send(BOS);
    c.send({ text, flush: true });
    const audio = await c.waitAudio(5);
    expect(audio.map((m) => m.alignment!.chars.join(''))).toEqual(['The q', 'uick ', 'brown', ' fox.', ' ']);
    for (const m of audio) {
      expect(m.alignment!.charStartTimesMs).toEqual(m.alignment!.chars.map((_, i) => i * 60));
      expect(Buffer.from(m.audio, 'base64')).toHaveLength(expectedAudioBytes(m.alignment!.chars.length, 'pcm_22050'));
    }
    expect(c.pcm().equals(renderText(text, 22050))).toBe(true);
    // 300 ms chunks at 10x: each follows the previous one by 30 ms (the last one, 60 ms, by 6 ms)
    const seg = emu.connections[0]!.segments[0]!;
    expect(seg).toMatchObject({ messages: 5, charsSent: 21, status: 'done' });
    expect(seg.doneAt! - seg.firstAudioAt!).toBeGreaterThanOrEqual(90);
  });

  it('waits firstAudioDelayMs before the first audio of each segment', async () => {
    const emu = await start({ firstAudioDelayMs: 150 });
    const c = await connect(emu);
    c.send(BOS);
    const sentAt = performance.now();
    c.send({ text: 'Hello. ', flush: true });
    await c.waitAudio(1);
    expect(performance.now() - sentAt).toBeGreaterThanOrEqual(140);
    const seg = emu.connections[0]!.segments[0]!;
    expect(seg.firstAudioAt! - seg.triggeredAt).toBeGreaterThanOrEqual(140);
  });

  it('alignment: "sync-only" sends null alignment unless sync_alignment=true', async () => {
    const emu = await start({ firstAudioDelayMs: 0, alignment: 'sync-only' });
    const a = await connect(emu);
    const b = await connect(emu, { ...Q, sync_alignment: 'true' });
    for (const c of [a, b]) {
      c.send(BOS);
      c.send({ text: 'Hi. ', flush: true });
    }
    const [ma] = await a.waitAudio(1);
    const [mb] = await b.waitAudio(1);
    expect(ma!.alignment).toBeNull();
    expect(ma!.normalizedAlignment).toBeNull();
    expect(mb!.alignment!.chars).toEqual(['H', 'i', '.', ' ']);
  });

  it('encodes ulaw_8000 and alaw_8000 (one byte per sample)', async () => {
    const emu = await start({ firstAudioDelayMs: 0 });
    const text = 'Tone test. ';
    const ref = renderText(text, 8000);
    for (const [fmt, decode] of [['ulaw_8000', mulawToLinear], ['alaw_8000', alawToLinear]] as const) {
      const c = await connect(emu, { ...Q, output_format: fmt });
      c.send(BOS);
      c.send({ text, flush: true });
      await c.waitAudio(1);
      const bytes = c.pcm();
      expect(bytes).toHaveLength(expectedAudioBytes(11, fmt));
      expect(bytes).toHaveLength(11 * 480);
      let maxErr = 0;
      for (let i = 0; i < bytes.length; i++) maxErr = Math.max(maxErr, Math.abs(decode(bytes[i]!) - ref.readInt16LE(i * 2)));
      expect(maxErr).toBeLessThan(700); // G.711 quantisation at 0.3 FS
    }
    expect(mulawToLinear(linearToMulaw(1000))).toBeCloseTo(1000, -2);
    expect(alawToLinear(linearToAlaw(-1000))).toBeCloseTo(-1000, -2);
  });

  it('keep-alives (a single space) produce no audio and are not billed; messages after EOS are ignored', async () => {
    const emu = await start({ firstAudioDelayMs: 0 });
    const c = await connect(emu);
    c.send(BOS);
    c.send({ text: ' ' });
    c.send({ text: 'Hi there ' });
    c.send({ text: ' ' });
    c.send({ text: '' });
    c.send({ text: 'too late ', flush: true });
    await c.closed;
    const conn = await emu.waitForClose();
    expect(conn.text).toBe('Hi there ');
    expect(conn.characters).toBe(9);
    expect(conn.counts).toMatchObject({ keepAlive: 2, text: 1, eos: 1 });
    expect(c.pcm()).toHaveLength(expectedAudioBytes(9, 'pcm_16000'));
    expect(conn.record.frames.filter((f) => f.dir === 'in' && f.kind === 'text')).toHaveLength(6);
  });

  it('counts characters as code points', async () => {
    const emu = await start({ firstAudioDelayMs: 0 });
    const c = await connect(emu);
    c.send(BOS);
    c.send({ text: 'héllo 😀 ', flush: true });
    const [a] = await c.waitAudio(1);
    expect(emu.connections[0]!.characters).toBe(8);
    expect(a!.alignment!.chars).toEqual(['h', 'é', 'l', 'l', 'o', ' ', '😀', ' ']);
    // 8 code points: "héllo 😀 " (the emoji is one)
    expect(Buffer.from(a!.audio, 'base64')).toHaveLength(expectedAudioBytes(8, 'pcm_16000'));
  });
});

describe('timeouts', () => {
  it('closes 1008 input_timeout_exceeded after inactivity_timeout without text (reason cut at 120 bytes)', async () => {
    const emu = await start({ timeoutSecondMs: 5 }); // 20 s -> 100 ms
    const c = await connect(emu);
    c.send(BOS);
    const closed = await c.closed;
    const message = inputTimeoutMessage(20);
    expect(c.messages()).toEqual([{ message, error: 'input_timeout_exceeded', code: 1008 }]);
    expect(closed.code).toBe(1008);
    expect(closed.reason).toBe(closeReason(message));
    expect(closed.reason).toMatch(/Please make sure to eit$/); // as observed (elevenlabs-docs#426)
    expect(Buffer.byteLength(closed.reason)).toBe(120);
  });

  it('honours inactivity_timeout; keep-alives reset it; EOS stops it', async () => {
    const emu = await start({ timeoutSecondMs: 25, firstAudioDelayMs: 0 });
    const c = await connect(emu, { ...Q, inactivity_timeout: '8' }); // 200 ms
    c.send(BOS);
    for (let i = 0; i < 10; i++) {
      await sleep(30);
      c.send({ text: ' ' });
    }
    expect(emu.connections[0]!.closed).toBe(false);
    const closed = await c.closed;
    expect(closed.code).toBe(1008);
    expect(c.messages()[0]).toEqual({ message: inputTimeoutMessage(8), error: 'input_timeout_exceeded', code: 1008 });
    // after EOS the timer no longer runs, even while a slow segment is generating
    const emu2 = await start({ timeoutSecondMs: 10, firstAudioDelayMs: 200 });
    const d = await connect(emu2, { ...Q, inactivity_timeout: '5' }); // 50 ms
    d.send(BOS);
    d.send({ text: 'Slow. ' });
    d.send({ text: '' });
    expect(await d.closed).toEqual({ code: 1000, reason: '' });
    expect(d.messages().map((m) => Object.keys(m)[0])).toEqual(['audio', 'isFinal']);
  });

  it('starts the inactivity timer on open (no BOS at all)', async () => {
    const emu = await start({ timeoutSecondMs: 10 });
    const c = await connect(emu, { ...Q, inactivity_timeout: '3' });
    expect((await c.closed).code).toBe(1008);
    expect(emu.connections[0]!.errors[0]!.error).toBe('input_timeout_exceeded');
  });
});

describe('faults and recording', () => {
  it('errorAfterChars: audio for N characters, then an error JSON and a 1008 close; segments cancelled', async () => {
    const emu = await start({ firstAudioDelayMs: 0, chunkMs: 60, speedFactor: 100 });
    emu.ttsFaults.errorAfterChars = { chars: 5 };
    const c = await connect(emu);
    c.send(BOS);
    c.send({ text: 'Hello world. ', flush: true });
    const closed = await c.closed;
    expect(closed).toEqual({ code: 1008, reason: closeReason(SOMETHING_WENT_WRONG) });
    expect(c.audio()).toHaveLength(5);
    expect(c.messages()[5]).toEqual({ message: SOMETHING_WENT_WRONG, error: 'internal_error', code: 1008 });
    const conn = await emu.waitForClose();
    expect(conn.segments[0]).toMatchObject({ status: 'cancelled', charsSent: 5 });
    expect(conn.segments[0]!.cancelledAt).not.toBeNull();
    expect(conn.charsSent).toBe(5);
  });

  it('stallAfterChars stops the audio but keeps the socket open; omitIsFinal closes 1000 without isFinal', async () => {
    const emu = await start({ firstAudioDelayMs: 0, chunkMs: 60, speedFactor: 100 });
    emu.ttsFaultNext({ stallAfterChars: 3 });
    const a = await connect(emu);
    a.send(BOS);
    a.send({ text: 'Hello. ', flush: true });
    await emu.waitFor(() => emu.connections[0]?.segments[0]?.status === 'stalled');
    await sleep(40);
    expect(a.audio()).toHaveLength(3);
    expect(emu.connections[0]!.closed).toBe(false);

    emu.ttsFaultNext({ omitIsFinal: true });
    const b = await connect(emu);
    b.send(BOS);
    b.send({ text: 'Bye. ' });
    b.send({ text: '' });
    expect((await b.closed).code).toBe(1000);
    expect(b.messages().some(isFinal)).toBe(false);
    expect(b.audio()).toHaveLength(5);
  });

  it('per-connection firstAudioDelayMs (a generation slower than a 10 s client timeout, scaled down)', async () => {
    const emu = await start({ firstAudioDelayMs: 0 });
    emu.ttsFaultNext({ firstAudioDelayMs: 400 });
    const slow = await connect(emu);
    const fast = await connect(emu);
    for (const c of [slow, fast]) {
      c.send(BOS);
      c.send({ text: 'Hi. ', flush: true });
    }
    await fast.waitAudio(1);
    expect(slow.audio()).toHaveLength(0);
    await slow.waitAudio(1);
    expect(emu.connections[0]!.ttsFaults.firstAudioDelayMs).toBe(400);
    const seg = emu.connections[0]!.segments[0]!;
    expect(seg.firstAudioAt! - seg.triggeredAt).toBeGreaterThanOrEqual(390);
  });

  it('base faults: closeAfterAudioSec / dropAfterAudioSec count audio sent; deadAir; refuseUpgrade', async () => {
    const emu = await start({ firstAudioDelayMs: 0, chunkMs: 120, speedFactor: 100 });
    emu.faultNext({ closeAfterAudioSec: { seconds: 0.36, code: 1011, reason: 'boom' } });
    const a = await connect(emu);
    a.send(BOS);
    a.send({ text: 'Hello world. ', flush: true });
    expect(await a.closed).toEqual({ code: 1011, reason: 'boom' });
    expect(a.audio()).toHaveLength(3);
    await emu.waitForClose(emu.connections[0]);
    expect(emu.connections[0]!.segments[0]!.status).toBe('cancelled');

    emu.faultNext({ dropAfterAudioSec: 0.12 });
    const b = await connect(emu);
    b.send(BOS);
    b.send({ text: 'Hello world. ', flush: true });
    expect((await b.closed).code).toBe(1006);
    expect(emu.connections[1]!.record.close).toMatchObject({ code: 1006, by: 'drop' });

    emu.faultNext({ deadAir: true });
    const c = await connect(emu);
    c.send(BOS);
    c.send({ text: 'Hi. ' });
    c.send({ text: '' });
    await emu.waitFor(() => emu.connections[2]!.segments[0]?.status === 'done');
    await sleep(30);
    expect(c.events).toHaveLength(0);
    expect(emu.connections[2]!.record.suppressed).toBeGreaterThanOrEqual(3); // 2 audio + isFinal + close

    emu.faults.refuseUpgrade = { status: 503, message: 'down for maintenance' };
    const r = await expectRejection(emu.streamInputUrl(VOICE, Q));
    expect(r.status).toBe(503);
    expect(JSON.parse(r.body)).toEqual({ detail: { status: 'emulated_fault', message: 'down for maintenance' } });
  });

  it('records a client close mid-generation as cancelled, with the unsent text', async () => {
    const emu = await start({ firstAudioDelayMs: 0, chunkMs: 60, speedFactor: 1 });
    const c = await connect(emu);
    c.send(BOS);
    c.send({ text: 'A fairly long sentence. ', flush: true });
    c.send({ text: 'never spoken ' });
    await c.waitAudio(2);
    c.ws.close(1000);
    const conn = await emu.waitForClose();
    expect(conn.record.close).toMatchObject({ code: 1000, by: 'client' });
    expect(conn.segments[0]!.status).toBe('cancelled');
    expect(conn.segments[0]!.charsSent).toBeLessThan(24);
    expect(conn.context!.discarded).toBe('never spoken ');
    expect(conn.context!.ended?.by).toBe('socket');
    expect(conn.record.frames.filter((f) => f.dir === 'out' && f.kind === 'text').length).toBe(conn.segments[0]!.messages);
  });

  it('quotaCharacters: quota_exceeded 1008 when a text would exceed the quota', async () => {
    const emu = await start({ quotaCharacters: 20, firstAudioDelayMs: 0 });
    const c = await connect(emu);
    c.send(BOS);
    c.send({ text: 'fifteen chars. ' });
    c.send({ text: 'ten chars ' });
    expect((await c.closed).code).toBe(1008);
    expect(c.messages().find(isError)).toEqual({
      message: 'This request exceeds your quota of 20. You have 5 credits remaining, while 10 credits are required for this request.',
      error: 'quota_exceeded',
      code: 1008,
    });
    expect(emu.usedCharacters).toBe(15);
  });

  it('closing the emulator cancels pending generations and clears timers', async () => {
    const emu = await startElevenLabsEmulator({ firstAudioDelayMs: 10_000 });
    const c = await connect(emu);
    c.send(BOS);
    c.send({ text: 'Hello. ', flush: true });
    await emu.waitFor(() => emu.connections[0]?.segments[0]);
    await emu.close();
    expect(emu.connections[0]!.segments[0]!.status).toBe('cancelled');
    expect((await c.closed).code).toBe(1006);
  });
});

describe('multi-stream-input', () => {
  it('runs independent contexts with contextId, flush, keep-alive, close_context and close_socket', async () => {
    const emu = await start({ firstAudioDelayMs: 0 });
    const c = await connect(emu, Q, auth, 'multi-stream-input');
    c.send({ text: ' ', context_id: 'c1', voice_settings: { stability: 0.3 } });
    c.send({ text: 'One. ', context_id: 'c1' });
    c.send({ text: 'Two. ', context_id: 'c2', voice_settings: { stability: 0.9 } });
    c.send({ context_id: 'c1', text: '', flush: true });
    c.send({ context_id: 'c2', text: 'Three. ', flush: true });
    c.send({ context_id: 'c1', text: '' }); // keep-alive
    await c.waitAudio(2);
    expect(c.audio().map((m) => [m.contextId, m.alignment!.chars.join('')]).sort()).toEqual([
      ['c1', 'One. '],
      ['c2', 'Two. Three. '],
    ]);
    c.send({ context_id: 'c1', close_context: true });
    await c.waitFor(() => c.messages().some(isFinal));
    expect(c.messages().filter(isFinal)).toEqual([{ isFinal: true, contextId: 'c1' }]);
    c.send({ text: 'Unflushed. ', context_id: 'c2' });
    c.send({ close_socket: true });
    expect((await c.closed).code).toBe(1000);
    expect(c.messages().filter(isFinal)).toEqual([
      { isFinal: true, contextId: 'c1' },
      { isFinal: true, contextId: 'c2' },
    ]);
    const conn = await emu.waitForClose();
    expect(conn.kind).toBe('multi-stream-input');
    expect(conn.contexts.map((x) => [x.id, x.text, x.characters, x.voiceSettings, x.keepAlives, x.ended?.by, x.discarded])).toEqual([
      ['c1', 'One. ', 5, { stability: 0.3 }, 1, 'close_context', ''],
      ['c2', 'Two. Three. Unflushed. ', 23, { stability: 0.9 }, 0, 'close_socket', 'Unflushed. '],
    ]);
    expect(conn.characters).toBe(28);
    expect(conn.counts).toMatchObject({ closeContext: 1, closeSocket: 1, flush: 2, keepAlive: 1 });
  });

  it('close_context cancels a schedule-triggered generation but lets a flushed one finish', async () => {
    const emu = await start({ firstAudioDelayMs: 0, chunkMs: 60, speedFactor: 2 }); // 30 ms per message
    const c = await connect(emu, Q, auth, 'multi-stream-input');
    c.send({ text: words(60), context_id: 'a', generation_config: { chunk_length_schedule: [50] } });
    c.send({ text: 'Keep me. ', context_id: 'b', flush: true });
    await c.waitFor(() => c.audio().filter((m) => m.contextId === 'a').length >= 2);
    c.send({ context_id: 'a', close_context: true });
    c.send({ context_id: 'b', close_context: true });
    await c.waitFor(() => c.messages().filter(isFinal).length === 2, 3000);
    const conn = emu.connections[0]!;
    const [sa, sb] = [conn.contexts[0]!.segments[0]!, conn.contexts[1]!.segments[0]!];
    expect(sa).toMatchObject({ trigger: 'schedule', status: 'cancelled' });
    expect(sa.charsSent).toBeLessThan(60);
    expect(sb).toMatchObject({ trigger: 'flush', status: 'done', charsSent: 9 });
    const final = c.messages().filter(isFinal);
    expect(final).toContainEqual({ isFinal: true, contextId: 'a' });
    expect(final).toContainEqual({ isFinal: true, contextId: 'b' });
    // the context id can be reused: a new, unrelated context
    c.send({ text: 'Again. ', context_id: 'a', flush: true });
    await c.waitFor(() => conn.contexts.length === 3 && conn.contexts[2]!.segments[0]?.status === 'done');
    expect(conn.contexts[2]!.text).toBe('Again. ');
  });

  it('uses the "default" context without context_id', async () => {
    const emu = await start({ firstAudioDelayMs: 0 });
    const c = await connect(emu, Q, auth, 'multi-stream-input');
    c.send({ text: ' ' });
    c.send({ text: 'Hi. ', flush: true });
    const [a] = await c.waitAudio(1);
    expect(a!.contextId).toBe('default');
  });
});

describe('REST stream', () => {
  const url = (emu: ElevenLabsEmulator, q = 'output_format=pcm_16000') => `${emu.url}/v1/text-to-speech/${VOICE}/stream?${q}`;

  it('streams exact audio for the text and records the request', async () => {
    const emu = await start({ firstAudioDelayMs: 0, restChunkMs: 300 });
    const text = 'Hello from REST. ';
    const res = await fetch(url(emu), {
      method: 'POST',
      headers: { 'xi-api-key': KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ text, model_id: 'eleven_turbo_v2_5' }),
    });
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    expect(body.equals(renderText(text, 16000))).toBe(true);
    await emu.waitFor(() => emu.restRequests[0]?.done);
    expect(emu.restRequests[0]).toMatchObject({ status: 200, text, characters: 17, modelId: 'eleven_turbo_v2_5', aborted: false, audioBytes: body.length });
  });

  it('answers 401 invalid_api_key, 422 without text, 400 for mp3 (emulator limit)', async () => {
    const emu = await start();
    const post = (headers: Record<string, string>, body: unknown, q?: string) =>
      fetch(url(emu, q), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    const r1 = await post({ 'xi-api-key': 'nope' }, { text: 'x' });
    expect(r1.status).toBe(401);
    expect(await r1.json()).toEqual({ detail: { status: 'invalid_api_key', message: INVALID_API_KEY } });
    const r2 = await post(auth, { model_id: 'eleven_flash_v2_5' });
    expect(r2.status).toBe(422);
    expect(((await r2.json()) as { detail: Array<{ loc: string[] }> }).detail[0]!.loc).toEqual(['body', 'text']);
    const r3 = await post(auth, { text: 'x' }, 'output_format=mp3_44100_128');
    expect(r3.status).toBe(400);
  });
});
