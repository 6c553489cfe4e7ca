import { afterEach, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { SpeechModel } from 'openai/resources/audio/speech';
import { renderText } from './tts-audio.ts';
import {
  AUDIO_TOKENS_PER_SECOND,
  DEFAULT_OPENAI_API_KEY,
  OPENAI_INVALID_JSON_MESSAGE,
  OPENAI_MISSING_KEY_MESSAGE,
  SPEECH_MODELS,
  SPEECH_VOICES,
  openAiError,
  speechAudioBytes,
  startOpenAiSpeechEmulator,
  type OpenAiErrorObject,
  type OpenAiSpeechEmulator,
  type OpenAiSpeechEmulatorOptions,
  type SpeechRequest,
} from './openai-speech.ts';

// Compile-time proof that every model the SDK (openai@6) names is accepted by the emulator.
type MissingModels = Exclude<SpeechModel, (typeof SPEECH_MODELS)[number]>;
export const _everySdkModelAccepted: [MissingModels] extends [never] ? true : false = true;

const KEY = DEFAULT_OPENAI_API_KEY;
const RATE = 24000;
const BYTES_PER_CHAR = 2880; // 60 ms x 24 kHz x 2 bytes
const HELLO = 'hello world';

const emulators: OpenAiSpeechEmulator[] = [];
const aborts: AbortController[] = [];

afterEach(async () => {
  for (const a of aborts.splice(0)) a.abort();
  await Promise.all(emulators.splice(0).map((e) => e.close()));
});

async function start(opts: OpenAiSpeechEmulatorOptions = {}): Promise<OpenAiSpeechEmulator> {
  const emu = await startOpenAiSpeechEmulator(opts);
  emulators.push(emu);
  return emu;
}

function body(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: 'tts-1', input: HELLO, voice: 'alloy', response_format: 'pcm', ...over };
}

function post(emu: OpenAiSpeechEmulator, json: unknown, o: { headers?: Record<string, string>; raw?: string } = {}): Promise<Response> {
  const ac = new AbortController();
  aborts.push(ac);
  return fetch(emu.speechUrl, {
    method: 'POST',
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json', ...(o.headers ?? {}) },
    body: o.raw ?? JSON.stringify(json),
    signal: ac.signal,
  });
}

async function errorOf(res: Response): Promise<OpenAiErrorObject> {
  expect(res.headers.get('content-type')).toBe('application/json');
  const j = (await res.json()) as { error: OpenAiErrorObject };
  expect(Object.keys(j)).toEqual(['error']);
  expect(Object.keys(j.error)).toEqual(['message', 'type', 'param', 'code']);
  return j.error;
}

/** Read a body chunk by chunk; resolves with what arrived and the error that ended it, if any. */
async function drain(res: Response): Promise<{ bytes: Buffer; chunks: number; error: unknown }> {
  const reader = res.body!.getReader();
  const parts: Buffer[] = [];
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(Buffer.from(value));
    }
    return { bytes: Buffer.concat(parts), chunks: parts.length, error: null };
  } catch (error) {
    return { bytes: Buffer.concat(parts), chunks: parts.length, error };
  }
}

function sseEvents(text: string): unknown[] {
  expect(text.endsWith('\n\n')).toBe(true);
  return text
    .split('\n\n')
    .filter((e) => e !== '')
    .map((e) => {
      expect(e.startsWith('data: ')).toBe(true);
      return JSON.parse(e.slice('data: '.length)) as unknown;
    });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe('auth, routes and request validation', () => {
  it('answers 401 without a Bearer key (code null) and with a wrong key (invalid_api_key, masked)', async () => {
    const emu = await start();
    const cases: Array<[Record<string, string>, string | null, RegExp]> = [
      [{ Authorization: '' }, null, /^You didn't provide an API key\./],
      [{ Authorization: `Token ${KEY}` }, null, /^You didn't provide an API key\./],
      [{ Authorization: 'Bearer sk-wrong-key-123456' }, 'invalid_api_key', /^Incorrect API key provided: sk-\*{12}3456\. You can find/],
    ];
    for (const [headers, code, msg] of cases) {
      const res = await post(emu, body(), { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/);
      const err = await errorOf(res);
      expect(err).toMatchObject({ type: 'invalid_request_error', param: null, code });
      expect(err.message).toMatch(msg);
      expect(err.message).not.toContain('sk-wrong-key-123456');
    }
    expect(emu.requests.map((r) => [r.status, r.authorized, r.outcome, r.apiKey])).toEqual([
      [401, false, 'rejected', null],
      [401, false, 'rejected', null],
      [401, false, 'rejected', 'sk-wrong-key-123456'],
    ]);
    expect(emu.requests[0]!.error!.message).toBe(OPENAI_MISSING_KEY_MESSAGE);
    expect(emu.requests[2]!.requestId).toBe(emu.requests[2]!.responseHeaders['x-request-id']);
  });

  it('answers 404 Invalid URL on other paths and 405 on another method', async () => {
    const emu = await start();
    const a = await fetch(`${emu.url}/v1/audio/speak`, { method: 'POST', headers: { Authorization: `Bearer ${KEY}` }, body: '{}' });
    expect(a.status).toBe(404);
    expect(await errorOf(a)).toEqual({ message: 'Invalid URL (POST /v1/audio/speak)', type: 'invalid_request_error', param: null, code: null });
    const b = await fetch(emu.speechUrl, { headers: { Authorization: `Bearer ${KEY}` } });
    expect(b.status).toBe(405);
    expect((await errorOf(b)).message).toBe('Invalid method for URL (GET /v1/audio/speech)');
    expect(emu.requests).toHaveLength(0); // only the speech endpoint is recorded as a request
    expect(emu.server.httpRequests.map((r) => r.status)).toEqual([404, 405]);
  });

  it('answers 400 to a body that is not JSON', async () => {
    const emu = await start();
    const res = await post(emu, null, { raw: '{"model": "tts-1", ' });
    expect(res.status).toBe(400);
    expect(await errorOf(res)).toEqual({ message: OPENAI_INVALID_JSON_MESSAGE, type: 'invalid_request_error', param: null, code: null });
    expect(emu.requests[0]!.rawBody).toBe('{"model": "tts-1", ');
    expect(emu.requests[0]!.body).toBeUndefined();
  });

  it('rejects schema violations with one pydantic-style 400 listing every problem', async () => {
    const emu = await start();
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ input: 'x'.repeat(4097) }, /^\[\{'type': 'string_too_long', 'loc': \('body', 'input'\), 'msg': 'String should have at most 4096 characters', 'input': 'x{4097}', 'ctx': \{'max_length': 4096\}\}\]$/],
      [{ input: '' }, /'string_too_short', 'loc': \('body', 'input'\)/],
      [{ input: undefined }, /^\[\{'type': 'missing', 'loc': \('body', 'input'\), 'msg': 'Field required'/],
      [{ model: undefined }, /'missing', 'loc': \('body', 'model'\)/],
      [{ voice: 'bob' }, /'type': 'enum', 'loc': \('body', 'voice'\), 'msg': "Input should be 'alloy', 'ash', 'ballad', 'coral', 'echo', 'fable', 'onyx', 'nova', 'sage', 'shimmer', 'verse', 'marin' or 'cedar'", 'input': 'bob'/],
      [{ voice: { id: 5 } }, /'string_type', 'loc': \('body', 'voice', 'id'\)/],
      [{ response_format: 'ogg' }, /'loc': \('body', 'response_format'\), 'msg': "Input should be 'mp3', 'opus', 'aac', 'flac', 'wav' or 'pcm'", 'input': 'ogg'/],
      [{ speed: 0.2 }, /'greater_than_equal', 'loc': \('body', 'speed'\), 'msg': 'Input should be greater than or equal to 0.25', 'input': 0.2/],
      [{ speed: 4.5 }, /'less_than_equal', 'loc': \('body', 'speed'\)/],
      [{ speed: '1.5' }, /'float_type', 'loc': \('body', 'speed'\)/],
      [{ stream_format: 'chunks' }, /'loc': \('body', 'stream_format'\), 'msg': "Input should be 'sse' or 'audio'"/],
      [{ instructions: 7 }, /'string_type', 'loc': \('body', 'instructions'\)/],
      [{ stream: true }, /'extra_forbidden', 'loc': \('body', 'stream'\), 'msg': 'Extra inputs are not permitted', 'input': True/],
    ];
    for (const [over, msg] of cases) {
      const res = await post(emu, body(over));
      expect(res.status, JSON.stringify(over)).toBe(400);
      const err = await errorOf(res);
      expect(err.message, JSON.stringify(over)).toMatch(msg);
      expect(err).toMatchObject({ type: 'invalid_request_error', param: null, code: null });
    }
    // several problems at once, in field order
    const res = await post(emu, { model: 'tts-1', voice: 'bob', speed: 9 });
    const err = await errorOf(res);
    expect([...err.message.matchAll(/'loc': \(([^)]*)\)/g)].map((m) => m[1])).toEqual(["'body', 'input'", "'body', 'voice'", "'body', 'speed'"]);
    expect(emu.requests.every((r) => r.outcome === 'rejected' && r.params === null && r.audioBytes === 0)).toBe(true);
  });

  it('answers 404 model_not_found, and 400 for instructions or SSE with tts-1*', async () => {
    const emu = await start();
    const a = await post(emu, body({ model: 'tts-2' }));
    expect(a.status).toBe(404);
    expect(await errorOf(a)).toEqual({
      message: 'The model `tts-2` does not exist or you do not have access to it.',
      type: 'invalid_request_error',
      param: null,
      code: 'model_not_found',
    });
    const b = await post(emu, body({ model: 'tts-1-hd', instructions: 'Speak like a pirate' }));
    expect(b.status).toBe(400);
    expect(await errorOf(b)).toMatchObject({ param: 'instructions', code: 'unsupported_parameter', type: 'invalid_request_error' });
    const c = await post(emu, body({ model: 'tts-1', stream_format: 'sse' }));
    expect(c.status).toBe(400);
    expect(await errorOf(c)).toMatchObject({ param: 'stream_format', code: 'unsupported_value' });
  });

  it('accepts every documented model and voice, a custom voice id, instructions and nulls on newer models', async () => {
    const emu = await start({ realtimeFactor: Infinity, firstAudioDelayMs: 0 });
    for (const model of SPEECH_MODELS) {
      const res = await post(emu, body({ model, input: 'a' }));
      expect(res.status, model).toBe(200);
      expect((await res.arrayBuffer()).byteLength).toBe(BYTES_PER_CHAR);
    }
    for (const voice of [...SPEECH_VOICES, { id: 'voice_1234' }]) {
      const res = await post(emu, body({ voice, input: 'a' }));
      expect(res.status, JSON.stringify(voice)).toBe(200);
      await res.arrayBuffer();
    }
    const res = await post(emu, body({ model: 'gpt-4o-mini-tts', instructions: 'Speak in a cheerful tone.', speed: null, stream_format: null }));
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const last = await emu.waitForDone();
    expect(last.params).toMatchObject({ model: 'gpt-4o-mini-tts', instructions: 'Speak in a cheerful tone.', speed: 1, streamFormat: 'audio' });
    expect(emu.requests.find((r) => typeof r.params?.voice === 'object')!.params!.voice).toEqual({ id: 'voice_1234' });
  });

  it('records unknown body keys instead of rejecting them with allowUnknownParams', async () => {
    const emu = await start({ allowUnknownParams: true });
    const res = await post(emu, body({ user: 'u1', stream: true }));
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    expect((await emu.waitForDone()).params!.unknown).toEqual(['user', 'stream']);
  });
});

describe('audio', () => {
  it('streams raw 24 kHz s16le PCM: exact bytes, bit-identical to renderText, chunked by chunkMs', async () => {
    const emu = await start({ recordAudio: true });
    const res = await post(emu, body());
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('audio/pcm');
    expect(res.headers.get('transfer-encoding')).toBe('chunked');
    expect(res.headers.get('openai-version')).toBe('2020-10-01');
    const requestId = res.headers.get('x-request-id');
    const { bytes, error } = await drain(res);
    expect(error).toBeNull();
    expect(bytes.length).toBe(HELLO.length * BYTES_PER_CHAR);
    expect(bytes.equals(renderText(HELLO, RATE))).toBe(true);
    const r = await emu.waitForDone();
    expect(r).toMatchObject({
      requestId,
      status: 200,
      outcome: 'completed',
      aborted: false,
      finished: true,
      text: HELLO,
      chars: 11,
      expectedAudioBytes: 31680,
      audioBytes: 31680,
      bodyBytes: 31680,
      chunks: 7, // 6 x 100 ms + 60 ms
      apiKey: KEY,
      authorized: true,
    });
    expect(r.audioSeconds).toBeCloseTo(0.66, 9);
    expect(r.writes.map((w) => w.audioBytes)).toEqual([4800, 4800, 4800, 4800, 4800, 4800, 2880]);
    expect(r.audio!.equals(bytes)).toBe(true);
    expect(r.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(JSON.parse(r.rawBody)).toEqual(body());
    expect(r.body).toEqual(body());
  });

  it('counts characters as code points and renders each one', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    const text = 'héllo 👋 wörld';
    expect([text.length, [...text].length]).toEqual([14, 13]); // the emoji is two UTF-16 units
    const res = await post(emu, body({ input: text }));
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(bytes.length).toBe(13 * BYTES_PER_CHAR);
    expect(bytes.equals(renderText(text, RATE))).toBe(true);
    const r = await emu.waitForDone();
    expect([r.chars, r.text]).toEqual([13, text]);
  });

  it('scales the duration by 1/speed', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    for (const speed of [0.25, 0.5, 0.7, 1, 2, 3, 4]) {
      const res = await post(emu, body({ speed }));
      const bytes = Buffer.from(await res.arrayBuffer());
      expect(bytes.length, String(speed)).toBe(speechAudioBytes(HELLO.length, { speed }));
      expect(bytes.equals(renderText(HELLO, RATE, { msPerChar: 60 / speed })), String(speed)).toBe(true);
    }
    expect(speechAudioBytes(11, { speed: 2 })).toBe(11 * BYTES_PER_CHAR / 2);
    expect(speechAudioBytes(11, { speed: 0.25 })).toBe(11 * BYTES_PER_CHAR * 4);
  });

  it('honours msPerChar', async () => {
    const emu = await start({ msPerChar: 20, realtimeFactor: Infinity });
    const res = await post(emu, body());
    expect((await res.arrayBuffer()).byteLength).toBe(11 * 960);
  });

  it('wav: a 44-byte header with exact sizes, then the same PCM', async () => {
    const emu = await start();
    const res = await post(emu, body({ response_format: 'wav' }));
    expect(res.headers.get('content-type')).toBe('audio/wav');
    const bytes = Buffer.from(await res.arrayBuffer());
    const pcm = renderText(HELLO, RATE);
    expect(bytes.length).toBe(44 + pcm.length);
    expect(bytes.toString('latin1', 0, 4)).toBe('RIFF');
    expect(bytes.readUInt32LE(4)).toBe(36 + pcm.length);
    expect(bytes.toString('latin1', 8, 16)).toBe('WAVEfmt ');
    expect([bytes.readUInt16LE(20), bytes.readUInt16LE(22), bytes.readUInt32LE(24), bytes.readUInt32LE(28), bytes.readUInt16LE(32), bytes.readUInt16LE(34)]).toEqual([1, 1, 24000, 48000, 2, 16]);
    expect(bytes.toString('latin1', 36, 40)).toBe('data');
    expect(bytes.readUInt32LE(40)).toBe(pcm.length);
    expect(bytes.subarray(44).equals(pcm)).toBe(true);
    const r = await emu.waitForDone();
    expect([r.audioBytes, r.bodyBytes]).toEqual([pcm.length, pcm.length + 44]);
  });

  it('compressed formats: raw PCM labelled with the format (default mp3), or 400 with compressedFormats=reject', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    const res = await post(emu, { model: 'tts-1', input: HELLO, voice: 'alloy' });
    expect(res.headers.get('content-type')).toBe('audio/mpeg');
    expect(res.headers.get('x-emulator-fake-format')).toMatch(/^mp3; body is raw pcm_s16le 24000 Hz mono$/);
    expect(Buffer.from(await res.arrayBuffer()).equals(renderText(HELLO, RATE))).toBe(true);
    expect((await emu.waitForDone()).params!.responseFormat).toBe('mp3');
    const types: Record<string, string> = { opus: 'audio/opus', aac: 'audio/aac', flac: 'audio/flac' };
    for (const [fmt, type] of Object.entries(types)) {
      const r = await post(emu, body({ response_format: fmt }));
      expect(r.headers.get('content-type')).toBe(type);
      await r.arrayBuffer();
    }
    const strict = await start({ compressedFormats: 'reject' });
    const bad = await post(strict, body({ response_format: 'opus' }));
    expect(bad.status).toBe(400);
    expect(await errorOf(bad)).toMatchObject({ param: 'response_format' });
    const ok = await post(strict, body({ response_format: 'pcm' }));
    expect(ok.status).toBe(200);
    await ok.arrayBuffer();
  });

  it('SSE: speech.audio.delta events carry the PCM in base64, then speech.audio.done with usage', async () => {
    const emu = await start();
    const instructions = 'Calm.';
    const res = await post(emu, body({ model: 'gpt-4o-mini-tts', stream_format: 'sse', instructions }));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const events = sseEvents(await res.text()) as Array<{ type: string; audio?: string; usage?: unknown }>;
    expect(events.map((e) => e.type)).toEqual([...Array<string>(7).fill('speech.audio.delta'), 'speech.audio.done']);
    expect(events.slice(0, -1).every((e) => Object.keys(e).join() === 'type,audio')).toBe(true);
    const pcm = Buffer.concat(events.slice(0, -1).map((e) => Buffer.from(e.audio!, 'base64')));
    expect(pcm.equals(renderText(HELLO, RATE))).toBe(true);
    const usage = { input_tokens: Math.ceil((11 + 5) / 4), output_tokens: Math.ceil(0.66 * AUDIO_TOKENS_PER_SECOND), total_tokens: 4 + 14 };
    expect(usage.output_tokens).toBe(14);
    expect(events.at(-1)).toEqual({ type: 'speech.audio.done', usage });
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ outcome: 'completed', audioBytes: pcm.length, chunks: 7, usage });
    expect(r.bodyBytes).toBeGreaterThan(pcm.length);
  });
});

describe('timing', () => {
  it('flushes headers at once, first audio after firstAudioDelayMs', async () => {
    const emu = await start({ firstAudioDelayMs: 150 });
    const t0 = performance.now();
    const res = await post(emu, body({ input: 'ab' }));
    const tHeaders = performance.now() - t0;
    const { bytes } = await drain(res);
    const tBody = performance.now() - t0;
    expect(bytes.length).toBe(2 * BYTES_PER_CHAR);
    expect(tHeaders).toBeLessThan(140);
    expect(tBody).toBeGreaterThanOrEqual(145);
    const r = await emu.waitForDone();
    expect(r.timing.headersMs!).toBeLessThan(100);
    expect(r.timing.firstAudioMs! - r.timing.headersMs!).toBeGreaterThanOrEqual(148);
  });

  it('paces chunks at chunkMs / realtimeFactor on an absolute schedule', async () => {
    // 20 chars = 1.2 s of audio = 12 chunks of 100 ms; 4x real time -> one chunk every 25 ms
    const emu = await start({ firstAudioDelayMs: 0, realtimeFactor: 4 });
    const res = await post(emu, body({ input: 'abcdefghijklmnopqrst' }));
    await res.arrayBuffer();
    const r = await emu.waitForDone();
    expect(r.writes).toHaveLength(12);
    const first = r.writes[0]!.t;
    for (let k = 1; k < 12; k++) expect(r.writes[k]!.t - first, `chunk ${k}`).toBeGreaterThanOrEqual(k * 25 - 2);
    expect(r.writes[11]!.t - first).toBeLessThan(275 + 1500);
  });

  it('chunkMs sets the audio per write; a per-request fault can slow generation below real time', async () => {
    const emu = await start({ chunkMs: 40, firstAudioDelayMs: 0 });
    const res = await post(emu, body({ input: 'abcd' })); // 240 ms = 6 x 40 ms
    await res.arrayBuffer();
    expect((await emu.waitForDone()).writes.map((w) => w.audioBytes)).toEqual(Array<number>(6).fill(1920));
    emu.faultNext({ realtimeFactor: 0.5 }); // 40 ms of audio every 80 ms
    const slow = await post(emu, body({ input: 'abcd' }));
    await slow.arrayBuffer();
    const r = await emu.waitForDone();
    expect(r.writes[5]!.t - r.writes[0]!.t).toBeGreaterThanOrEqual(5 * 80 - 2);
  });

  it('responseDelayMs holds even the headers', async () => {
    const emu = await start();
    emu.faultNext({ responseDelayMs: 120 });
    const t0 = performance.now();
    const res = await post(emu, body({ input: 'a' }));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(115);
    await res.arrayBuffer();
    expect((await emu.waitForDone()).timing.headersMs!).toBeGreaterThanOrEqual(118);
  });
});

describe('faults and errors', () => {
  it('faultNext({status}) answers that status once with the vendor body, then normal service resumes', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    emu.faultNext({ status: 429 });
    emu.faultNext({ status: 429, error: { code: 'insufficient_quota' } });
    emu.faultNext({ status: 503, headers: { 'x-should-retry': 'false' } });
    emu.faultNext({ status: 500 });
    const a = await post(emu, body());
    expect(a.status).toBe(429);
    expect([a.headers.get('retry-after'), a.headers.get('retry-after-ms')]).toEqual(['1', '1000']);
    expect(await errorOf(a)).toMatchObject({ type: 'requests', code: 'rate_limit_exceeded', param: null });
    const b = await post(emu, body());
    expect(b.status).toBe(429);
    expect(await errorOf(b)).toMatchObject({ type: 'insufficient_quota', code: 'insufficient_quota' });
    const c = await post(emu, body());
    expect(c.status).toBe(503);
    expect(c.headers.get('x-should-retry')).toBe('false');
    expect(c.headers.get('retry-after')).toBeNull();
    expect(await errorOf(c)).toMatchObject({ type: 'server_error', code: null });
    const d = await post(emu, body());
    expect(d.status).toBe(500);
    expect((await errorOf(d)).message).toBe('The server had an error while processing your request. Sorry about that!');
    const e = await post(emu, body());
    expect(e.status).toBe(200);
    await e.arrayBuffer();
    expect(emu.requests.map((r) => r.status)).toEqual([429, 429, 503, 500, 200]);
    expect(emu.requests[0]!.faults.status).toBe(429);
    expect(emu.requests[4]!.faults.status).toBeNull();
  });

  it('server-wide faults apply to every request until resetFaults', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    emu.faults.status = 502;
    for (let i = 0; i < 2; i++) {
      const r = await post(emu, body());
      expect(r.status).toBe(502);
      await r.text();
    }
    emu.resetFaults();
    const ok = await post(emu, body());
    expect(ok.status).toBe(200);
    await ok.arrayBuffer();
  });

  it('dropAfterBytes: exactly N audio bytes, then the socket is destroyed (no chunked terminator)', async () => {
    const emu = await start({ chunkMs: 100 });
    emu.faultNext({ dropAfterBytes: 10_000 });
    const res = await post(emu, body());
    expect(res.status).toBe(200);
    const { bytes, error } = await drain(res);
    expect(error).toBeInstanceOf(Error);
    expect(bytes.length).toBe(10_000);
    expect(bytes.equals(renderText(HELLO, RATE).subarray(0, 10_000))).toBe(true);
    const r = await emu.waitForDone();
    expect(r).toMatchObject({ outcome: 'dropped', audioBytes: 10_000, chunks: 3, aborted: false, finished: true });
    // dropping at 0 bytes: headers, then nothing but a reset
    emu.faultNext({ dropAfterBytes: 0 });
    const z = await post(emu, body());
    expect(z.status).toBe(200);
    const zz = await drain(z);
    expect([zz.bytes.length, zz.error instanceof Error]).toEqual([0, true]);
  });

  it('failAfterBytes: SSE ends with a data: {"error"} event; an audio body just ends early', async () => {
    const emu = await start();
    emu.faultNext({ failAfterBytes: 6000 });
    const res = await post(emu, body({ model: 'gpt-4o-mini-tts', stream_format: 'sse' }));
    const events = sseEvents(await res.text()) as Array<Record<string, unknown>>;
    expect(events.map((e) => ('error' in e ? 'error' : e['type']))).toEqual(['speech.audio.delta', 'speech.audio.delta', 'error']);
    const audio = Buffer.concat(events.slice(0, 2).map((e) => Buffer.from(e['audio'] as string, 'base64')));
    expect(audio.length).toBe(6000);
    expect(events[2]).toEqual({ error: openAiError(500).error });
    expect(await emu.waitForDone()).toMatchObject({ outcome: 'failed', audioBytes: 6000, usage: null });

    emu.faultNext({ failAfterBytes: 6000 });
    const pcm = await post(emu, body());
    const d = await drain(pcm);
    expect([d.bytes.length, d.error]).toEqual([6000, null]);
    expect(await emu.waitForDone()).toMatchObject({ outcome: 'failed', audioBytes: 6000 });
  });

  it('deadAir: 200 and headers, then nothing; the client abort is recorded', async () => {
    const emu = await start();
    emu.faultNext({ deadAir: true });
    const ac = new AbortController();
    const res = await fetch(emu.speechUrl, { method: 'POST', headers: { Authorization: `Bearer ${KEY}` }, body: JSON.stringify(body()), signal: ac.signal });
    expect(res.status).toBe(200);
    const reading = drain(res);
    await sleep(150);
    const r = emu.requests[0]!;
    expect([r.stalled, r.finished, r.audioBytes, r.timing.firstAudioMs]).toEqual([true, false, 0, null]);
    ac.abort();
    expect((await reading).error).toBeTruthy();
    await emu.waitForDone(r);
    expect(r).toMatchObject({ outcome: 'aborted', aborted: true, audioBytes: 0 });
    expect(r.abortedAtMs!).toBeGreaterThanOrEqual(140);
  });

  it('stallAfterBytes: exactly N bytes, then silence on an open connection', async () => {
    const emu = await start();
    emu.faultNext({ stallAfterBytes: 5000 });
    const ac = new AbortController();
    const res = await fetch(emu.speechUrl, { method: 'POST', headers: { Authorization: `Bearer ${KEY}` }, body: JSON.stringify(body()), signal: ac.signal });
    const reading = drain(res);
    const r = await emu.waitFor(() => (emu.requests[0]?.stalled ? emu.requests[0] : undefined));
    await sleep(100);
    expect([r.audioBytes, r.finished, r.outcome]).toEqual([5000, false, 'pending']);
    ac.abort();
    const got = await reading;
    expect(got.bytes.length).toBe(5000);
    await emu.waitForDone(r);
    expect(r).toMatchObject({ outcome: 'aborted', aborted: true, audioBytes: 5000 });
  });

  it('a client abort mid-stream stops the generation and records the audio written', async () => {
    // 100 chars = 6 s of audio; 5x real time = 1.2 s of generation
    const emu = await start({ firstAudioDelayMs: 0, realtimeFactor: 5 });
    const ac = new AbortController();
    const res = await fetch(emu.speechUrl, { method: 'POST', headers: { Authorization: `Bearer ${KEY}` }, body: JSON.stringify(body({ input: 'a'.repeat(100) })), signal: ac.signal });
    const reader = res.body!.getReader();
    await reader.read();
    await emu.waitFor(() => (emu.requests[0]!.chunks >= 3 ? true : undefined));
    ac.abort();
    const r = await emu.waitForDone(emu.requests[0]);
    expect(r).toMatchObject({ outcome: 'aborted', aborted: true, chars: 100, expectedAudioBytes: 100 * BYTES_PER_CHAR });
    const written = r.audioBytes;
    expect(written).toBeGreaterThanOrEqual(3 * 4800);
    expect(written).toBeLessThan(r.expectedAudioBytes);
    expect(r.abortedAtMs).not.toBeNull();
    await sleep(80);
    expect(r.audioBytes).toBe(written); // nothing generated after the abort
    expect(r.audioSeconds).toBeCloseTo(written / 48000, 9);
  });

  it('maxConcurrent: 429 rate_limit_exceeded past N responses in progress per key', async () => {
    const emu = await start({ maxConcurrent: 1, retryAfterMs: 2500, apiKeys: [KEY, 'sk-other-key'] });
    emu.faultNext({ firstAudioDelayMs: 250 });
    const first = post(emu, body());
    await emu.waitFor(() => emu.requests[0]?.status === 200);
    const busy = await post(emu, body());
    expect(busy.status).toBe(429);
    expect([busy.headers.get('retry-after'), busy.headers.get('retry-after-ms')]).toEqual(['3', '2500']);
    const err = await errorOf(busy);
    expect(err).toMatchObject({ code: 'rate_limit_exceeded', type: 'requests' });
    expect(err.message).toMatch(/^Rate limit reached for tts-1 .* Limit 1, Used 1/);
    const other = await post(emu, body(), { headers: { Authorization: 'Bearer sk-other-key' } });
    expect(other.status).toBe(200);
    await other.arrayBuffer();
    await (await first).arrayBuffer();
    await emu.waitForDone(emu.requests[0]);
    const again = await post(emu, body());
    expect(again.status).toBe(200);
    await again.arrayBuffer();
  });

  it('close() ends generations in progress and clears their timers', async () => {
    const emu = await startOpenAiSpeechEmulator({ firstAudioDelayMs: 0, realtimeFactor: 1 });
    const res = await post(emu, body({ input: 'a'.repeat(200) })); // 12 s of audio at real time
    const reading = drain(res);
    await emu.waitFor(() => (emu.requests[0]!.chunks >= 1 ? true : undefined));
    emu.faultNext({ responseDelayMs: 60_000 });
    void post(emu, body()).catch(() => undefined);
    await emu.waitForRequest(2);
    const t0 = performance.now();
    await emu.close();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect((await reading).error).toBeTruthy();
    expect(emu.requests.map((r) => [r.outcome, r.finished])).toEqual([
      ['shutdown', true],
      ['shutdown', true],
    ]);
    const written = emu.requests[0]!.audioBytes;
    await sleep(120);
    expect(emu.requests[0]!.audioBytes).toBe(written);
  });
});

describe('OpenAI SDK (openai@6) smoke test', () => {
  it('speech.create returns the PCM; APIError carries status, code and request id; 429 is retried', async () => {
    const emu = await start({ realtimeFactor: Infinity });
    const client = new OpenAI({ apiKey: KEY, baseURL: emu.baseUrl, maxRetries: 0 });
    const res = await client.audio.speech.create({ model: 'gpt-4o-mini-tts', voice: 'coral', input: HELLO, response_format: 'pcm' });
    expect(Buffer.from(await res.arrayBuffer()).equals(renderText(HELLO, RATE))).toBe(true);
    const r0 = await emu.waitForDone();
    expect(r0.headers['accept']).toBe('application/octet-stream');

    const bad = new OpenAI({ apiKey: 'sk-nope-nope-nope', baseURL: emu.baseUrl, maxRetries: 0 });
    const err = await bad.audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'a' }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    const apiErr = err as InstanceType<typeof OpenAI.APIError>;
    expect([apiErr.status, apiErr.code, apiErr.type]).toEqual([401, 'invalid_api_key', 'invalid_request_error']);
    expect(apiErr.requestID).toBe(emu.requests[1]!.requestId);

    emu.faultNext({ status: 429, retryAfterMs: 10 });
    const retrying = new OpenAI({ apiKey: KEY, baseURL: emu.baseUrl, maxRetries: 1 });
    const ok = await retrying.audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'ab', response_format: 'pcm' });
    expect((await ok.arrayBuffer()).byteLength).toBe(2 * BYTES_PER_CHAR);
    expect(emu.requests.slice(2).map((r: SpeechRequest) => r.status)).toEqual([429, 200]);
  });
});
