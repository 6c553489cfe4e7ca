/**
 * /v1/tts client input with a raw `ws` client (protocol.md 3.2-3.3): every kind of bad input is
 * answered with a 400/404 `error` event carrying `session_id` and the socket stays usable;
 * options change per generation (voice, extra, even the provider) without a new upstream
 * socket where the provider allows it; session.close. Real gateway on port 0, Cartesia and
 * OpenAI speech emulators behind it. The shared behaviour of every adapter (audio length,
 * resampling, alignment, cancellation, refusals) is in test/conformance/tts.test.ts.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCartesiaEmulator, type CartesiaEmulator, type CartesiaTtsContext } from '../emulators/cartesia.ts';
import { startOpenAiSpeechEmulator, type OpenAiSpeechEmulator } from '../emulators/openai-speech.ts';
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import {
  CARTESIA_VOICE,
  OTHER_CARTESIA_VOICE,
  audioOf,
  closeAllTtsClients,
  connectTts,
  expectedBytes,
  generation,
  startTts,
  transcript,
  ttsCreate,
  untilEnd,
  waitUntil,
} from '../helpers/tts.ts';
import type { JsonMessage, WsRecorder } from '../helpers/ws.ts';

const MAX_MESSAGE_BYTES = 4096;
const MAX_GENERATION_CHARS = 100;

let emu: CartesiaEmulator;
let oai: OpenAiSpeechEmulator;
let gw: TestGateway;

beforeAll(async () => {
  emu = await startCartesiaEmulator();
  oai = await startOpenAiSpeechEmulator();
  gw = await startTestGateway({
    env: { CARTESIA_API_KEY: 'cartesia-test-key', CARTESIA_BASE_URL: emu.url, OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${oai.url}/v1` },
    file: { tts: { maxMessageBytes: MAX_MESSAGE_BYTES, maxGenerationChars: MAX_GENERATION_CHARS } },
  });
});

afterEach(async () => {
  closeAllTtsClients();
  emu.resetFaults();
  oai.resetFaults();
  await waitUntil(() => gw.gateway.sessions.size === 0, 'all gateway sessions to end');
});

afterAll(async () => {
  await gw?.close();
  await emu?.close();
  await oai?.close();
});

/** Cartesia contexts of one session, in generation order (context_id = `<session>_g<n>_<hex>`). */
function contexts(sessionId: string): CartesiaTtsContext[] {
  const n = (c: CartesiaTtsContext): number => Number(/_g(\d+)_/.exec(c.contextId)?.[1]);
  return emu.connections
    .flatMap((c) => c.contexts)
    .filter((c) => c.contextId.startsWith(`${sessionId}_g`))
    .sort((a, b) => n(a) - n(b));
}

/** The emulator connection that carried a context. */
function ownerOf(ctx: CartesiaTtsContext | undefined): unknown {
  return emu.connections.find((c) => ctx !== undefined && c.contexts.includes(ctx));
}

/** The socket still works: one generation with the whole audio and its done. */
async function expectUsable(rec: WsRecorder, text = 'Still here. '): Promise<void> {
  const msgs = await generation(rec, [text]);
  expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
  expect(msgs.at(-1)?.type).toBe('done');
  expect(audioOf(msgs).length).toBe(expectedBytes(text.length));
}

function expectError(err: JsonMessage, code: number, message: RegExp, sessionId: string): void {
  expect(err).toMatchObject({ type: 'error', code, session_id: sessionId });
  expect(typeof err.message).toBe('string');
  expect(err.message).toMatch(message);
}

// ---- bad input ----------------------------------------------------------------------

describe('bad input: error event with session_id, the socket stays usable', () => {
  const oversized = JSON.stringify(transcript('x'.repeat(MAX_MESSAGE_BYTES)));
  const beforeCreate: Array<[string, string | Buffer | object, RegExp]> = [
    ['non-JSON text', 'hello {', /not valid JSON/],
    ['a JSON array', '[1,2]', /JSON object/],
    ['a JSON number', '42', /JSON object/],
    ['JSON null', 'null', /JSON object/],
    ['an unknown type', { type: 'session.start' }, /unknown message type "session\.start"/],
    ['a message without type', { transcript: 'hi' }, /no "type"/],
    ['a binary frame', Buffer.from([1, 2, 3, 4]), /binary/],
    [`a message over tts.maxMessageBytes`, oversized, new RegExp(`${oversized.length} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte limit`)],
    ['input_transcript before session.create', transcript('Hello. '), /input_transcript before session\.create/],
    ['session.flush before session.create', { type: 'session.flush' }, /session\.flush before session\.create/],
  ];

  it.each(beforeCreate)('before session.create: %s -> 400, then session.create works', async (_name, bad, message) => {
    const rec = await connectTts(gw);
    rec.send(bad);
    const err = await rec.first('error');
    rec.send(ttsCreate());
    const created = await rec.first('session.created');
    expectError(err, 400, message, created.session_id as string);
    await expectUsable(rec);
    expect(rec.of('error')).toHaveLength(1);
  });

  const afterCreate: Array<[string, string | Buffer | object, RegExp]> = [
    ['a second session.create', ttsCreate(), /session\.create was already received/],
    ['transcript not a string', { type: 'input_transcript', transcript: 5, generation_config: {}, extra: {} }, /invalid input_transcript: transcript/],
    ['transcript missing', { type: 'input_transcript', generation_config: {}, extra: {} }, /invalid input_transcript: transcript/],
    ['generation_config not an object', { type: 'input_transcript', transcript: 'Hi. ', generation_config: 'fast' }, /invalid input_transcript: generation_config/],
    ['extra not an object', { type: 'input_transcript', transcript: 'Hi. ', extra: [1] }, /invalid input_transcript: extra/],
    ['a binary frame', Buffer.alloc(320), /binary/],
    ['non-JSON text', '{"type":"input_transcript",', /not valid JSON/],
    ['an unknown type', { type: 'input_audio', audio: '' }, /unknown message type "input_audio"/],
    ['an unknown extra option', transcript('Hi. ', {}, { pitch: 2 }), /cartesia: unknown option "pitch"/],
    ['an extra option out of range', transcript('Hi. ', {}, { speed: 9 }), /cartesia: option "speed" must be/],
    ['an unknown model in generation_config', transcript('Hi. ', { model: 'cartesia/sonic-9' }), /unknown TTS model "cartesia\/sonic-9"/],
  ];

  it.each(afterCreate)('after session.create: %s -> error, nothing synthesized, next generation works', async (_name, bad, message) => {
    const { rec, id } = await startTts(gw);
    rec.send(bad);
    const err = await rec.first('error');
    expectError(err, /unknown TTS model/.test(message.source) ? 404 : 400, message, id);
    await expectUsable(rec);
    // The rejected message started nothing: one context, with only the valid text.
    expect(contexts(id).map((c) => c.transcript)).toEqual(['Still here. ']);
    expect(rec.of('error')).toHaveLength(1);
  });

  const badCreate: Array<[string, number, Record<string, unknown>, RegExp]> = [
    ['sample_rate "7999"', 400, { sample_rate: '7999' }, /sample_rate must be an integer from 8000 to 48000/],
    ['sample_rate "abc"', 400, { sample_rate: 'abc' }, /sample_rate/],
    ['sample_rate 96000', 400, { sample_rate: 96000 }, /sample_rate/],
    ['encoding pcm_f32le', 400, { encoding: 'pcm_f32le' }, /unsupported encoding "pcm_f32le"; only pcm_s16le/],
    ['an unknown model', 404, { model: 'cartesia/sonic-9' }, /unknown TTS model "cartesia\/sonic-9"/],
    ['an unknown provider', 404, { model: 'acme/voice-1' }, /unknown TTS provider "acme"/],
    ['model not a string', 400, { model: 7 }, /invalid session\.create: model/],
    ['extra with an unknown option', 400, { extra: { pitch: 1.2 } }, /cartesia: unknown option "pitch"/],
    ['extra out of range', 400, { extra: { speed: 3 } }, /cartesia: option "speed" must be a number from 0\.6 to 1\.5/],
    ['extra the gateway owns', 400, { extra: { output_format: {} } }, /option "output_format" is not accepted/],
    ['a voice that is not a voice id', 400, { voice: 'not a voice!' }, /cartesia: voice must be a Cartesia voice id/],
  ];

  it.each(badCreate)('session.create with %s -> %i at session.create, then a valid one works', async (_name, code, over, message) => {
    const n = emu.connections.length;
    const rec = await connectTts(gw);
    rec.send(ttsCreate(over));
    const err = await rec.first('error');
    expect(rec.of('session.created')).toEqual([]);
    rec.send(ttsCreate());
    const created = await rec.first('session.created');
    expectError(err, code, message, created.session_id as string);
    await expectUsable(rec);
    // The refused create opened no upstream socket (at most the one of the valid create).
    expect(emu.connections.length - n).toBeLessThanOrEqual(1);
  });

  it('a provider without credentials -> 400 naming the variable; another provider works on the same socket', async () => {
    const noCartesia = await startTestGateway({ env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${oai.url}/v1` } });
    try {
      const rec = await connectTts(noCartesia);
      rec.send(ttsCreate());
      const err = await rec.first('error');
      expect(err).toMatchObject({ type: 'error', code: 400 });
      expect(err.message).toMatch(/provider cartesia has no credentials configured.*CARTESIA_API_KEY/);
      rec.send(ttsCreate({ model: 'openai/tts-1:alloy' }));
      const created = await rec.first('session.created');
      expect(err.session_id).toBe(created.session_id);
      await expectUsable(rec);
      rec.ws.close();
      await rec.closed();
    } finally {
      await noCartesia.close();
    }
  });

  it('input_transcript after session.flush, before done -> 400; the generation completes unchanged', async () => {
    const { rec, id } = await startTts(gw);
    const from = rec.messages.length;
    // All three in one go: the gateway sees the late chunk before the provider's done.
    rec.send(transcript('First part. '));
    rec.send({ type: 'session.flush' });
    rec.send(transcript('Too late. ', { voice: OTHER_CARTESIA_VOICE }, { speed: 1.2 }));
    const err = await rec.first('error');
    expectError(err, 400, /input_transcript after session\.flush/, id);
    await rec.first('done');
    const msgs = rec.messages.slice(from);
    expect(audioOf(msgs).length).toBe(expectedBytes('First part. '.length));
    // The refused chunk changed nothing: the next generation keeps the session's voice and options.
    await expectUsable(rec);
    const [first, next] = contexts(id);
    expect(first?.transcript).toBe('First part. ');
    expect(next?.request.voice.id).toBe(CARTESIA_VOICE);
    expect(next?.request.generationConfig).toBeNull();
  });

  it(`a generation over tts.maxGenerationChars (${MAX_GENERATION_CHARS}) -> 400; the next generation works`, async () => {
    const { rec, id } = await startTts(gw);
    const chunk = `${'word '.repeat(12)}`; // 60 characters
    rec.send(transcript(chunk));
    rec.send(transcript(chunk));
    const err = await rec.first('error');
    expectError(err, 400, new RegExp(`generation exceeds ${MAX_GENERATION_CHARS} characters`), id);
    // The chunk over the limit never reached the provider.
    await waitUntil(() => emu.connections.some((c) => c.record.closed && c.contexts.some((x) => x.transcript === chunk)), 'failed context dropped');
    expect(emu.connections.flatMap((c) => c.contexts).filter((x) => x.transcript.includes(chunk + chunk))).toEqual([]);
    await expectUsable(rec);
  });
});

// ---- options per generation -------------------------------------------------------------

describe('options per generation', () => {
  it('generation_config.voice changes the voice from the generation it starts, on the same upstream socket', async () => {
    const conns = emu.connections.length;
    const { rec, id } = await startTts(gw);
    const run = async (chunks: Array<[string, Record<string, unknown>]>): Promise<void> => {
      const from = rec.messages.length;
      for (const [text, gc] of chunks) rec.send(transcript(text, gc));
      rec.send({ type: 'session.flush' });
      const msgs = await untilEnd(rec, from);
      expect(msgs.at(-1)?.type).toBe('done');
      expect(audioOf(msgs).length).toBe(expectedBytes(chunks.map(([t]) => t).join('').length));
    };
    await run([['Default voice. ', { voice: CARTESIA_VOICE }]]);
    await run([['Other voice. ', { voice: OTHER_CARTESIA_VOICE }]]);
    // A change on a later chunk applies to the next generation, not to the one in flight.
    await run([
      ['Back to the default. ', { voice: CARTESIA_VOICE }],
      ['Still the default. ', { voice: OTHER_CARTESIA_VOICE }],
    ]);
    await run([['Other again. ', {}]]);
    expect(rec.of('error')).toEqual([]);
    const ctxs = contexts(id);
    expect(ctxs.map((c) => c.request.voice.id)).toEqual([CARTESIA_VOICE, OTHER_CARTESIA_VOICE, CARTESIA_VOICE, OTHER_CARTESIA_VOICE]);
    expect(ctxs[2]?.transcript).toBe('Back to the default. Still the default. ');
    // No new upstream socket: every context on the one connection of the session (warm or pooled).
    expect(emu.connections.length).toBeLessThanOrEqual(conns + 1);
    expect(new Set(ctxs.map(ownerOf)).size).toBe(1);
  });

  it('extra on input_transcript is merged into the session (kept by later generations, null unsets)', async () => {
    const { rec, id } = await startTts(gw, { extra: { volume: 1.5 } });
    const gen = async (text: string, extra: Record<string, unknown>): Promise<void> => {
      const from = rec.messages.length;
      rec.send(transcript(text, {}, extra));
      rec.send({ type: 'session.flush' });
      const msgs = await untilEnd(rec, from);
      expect(msgs.at(-1)?.type).toBe('done');
    };
    await gen('Session options. ', {});
    await gen('Faster. ', { speed: 1.2 });
    await gen('Still faster. ', {});
    await gen('Default speed. ', { speed: null });
    expect(rec.of('error')).toEqual([]);
    expect(contexts(id).map((c) => c.request.generationConfig)).toEqual([{ volume: 1.5 }, { volume: 1.5, speed: 1.2 }, { volume: 1.5, speed: 1.2 }, { volume: 1.5 }]);
  });

  it('generation_config.model routes a generation to another provider, and back', async () => {
    const conns = emu.connections.length;
    const { rec, id } = await startTts(gw);
    const reqs = oai.requests.length;
    const gen = async (text: string, gc: Record<string, unknown>): Promise<JsonMessage[]> => {
      const from = rec.messages.length;
      rec.send(transcript(text, gc));
      rec.send({ type: 'session.flush' });
      const msgs = await untilEnd(rec, from);
      expect(msgs.at(-1)?.type).toBe('done');
      expect(audioOf(msgs).length).toBe(expectedBytes(text.length));
      return msgs;
    };
    await gen('On Cartesia. ', {});
    await gen('On OpenAI now. ', { model: 'openai/tts-1:alloy' });
    await gen('Back on Cartesia. ', { model: 'cartesia/sonic-3', voice: OTHER_CARTESIA_VOICE });
    expect(rec.of('error')).toEqual([]);
    expect(oai.requests.slice(reqs).map((r) => ({ model: r.params?.model, voice: r.params?.voice, text: r.text }))).toEqual([
      { model: 'tts-1', voice: 'alloy', text: 'On OpenAI now. ' },
    ]);
    const ctxs = contexts(id);
    expect(ctxs.map((c) => [c.transcript, c.request.voice.id])).toEqual([
      ['On Cartesia. ', CARTESIA_VOICE],
      ['Back on Cartesia. ', OTHER_CARTESIA_VOICE],
    ]);
    // The Cartesia socket was parked during the OpenAI generation and taken back afterwards.
    expect(emu.connections.length).toBeLessThanOrEqual(conns + 1);
    expect(ownerOf(ctxs[1])).toBe(ownerOf(ctxs[0]));
  });
});

// ---- session.close --------------------------------------------------------------------

describe('session.close', () => {
  it('answers session.closed, then closes with 1000', async () => {
    const { rec, id } = await startTts(gw);
    await expectUsable(rec);
    rec.send({ type: 'session.close' });
    expect(await rec.closed()).toBe(1000);
    expect(rec.messages.at(-1)).toEqual({ type: 'session.closed', session_id: id });
  });

  it('mid-generation: cancels the upstream, session.closed without done, close 1000', async () => {
    (emu.options as { firstAudioDelayMs: number }).firstAudioDelayMs = 400;
    try {
      const { rec, id } = await startTts(gw);
      rec.send(transcript('This will never be spoken. '));
      rec.send({ type: 'session.flush' });
      rec.send({ type: 'session.close' });
      expect(await rec.closed()).toBe(1000);
      expect(rec.messages.slice(1)).toEqual([{ type: 'session.closed', session_id: id }]);
      await emu.waitFor(
        () => emu.connections.some((c) => c.record.closed && c.contexts.some((x) => x.transcript === 'This will never be spoken. ' && x.doneAt === null)),
        2000,
        'upstream socket closed mid-context',
      );
    } finally {
      (emu.options as { firstAudioDelayMs: number }).firstAudioDelayMs = 20;
    }
  });
});
