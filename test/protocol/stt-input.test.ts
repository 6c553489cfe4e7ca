/**
 * /v1/stt with a raw `ws` client: what the gateway does with bad client input, and how
 * session.create is validated and turned into the Deepgram connection (protocol.md 2.2, 2.8, 2.9;
 * providers.md 2.2). Real gateway on port 0, Deepgram emulator behind it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { synthesize } from '../emulators/audio.ts';
import { startDeepgramEmulator, type DeepgramConnection, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { TEST_KEY, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import {
  RATE,
  connectStt,
  createMessage,
  finals,
  inputAudioFrame,
  nextError,
  sendBase64,
  sendBinary,
  settle,
  startSession,
  type CreateOptions,
} from '../helpers/stt.ts';
import type { JsonMessage, WsRecorder } from '../helpers/ws.ts';

const MiB = 1024 * 1024;
/** One short utterance that ends in an endpoint: one final, "Hotel india." */
const UTTERANCE = synthesize([{ silenceMs: 100 }, { words: ['hotel', 'india'] }, { silenceMs: 200 }], { sampleRate: RATE });

let emu: DeepgramEmulator;
let gw: TestGateway;

beforeAll(async () => {
  emu = await startDeepgramEmulator();
  gw = await startTestGateway({ env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: emu.url } });
});

afterEach(async () => {
  emu.resetFaults();
  await settle(gw);
});

afterAll(async () => {
  await gw?.close();
  await emu?.close();
});

function expectError(msg: JsonMessage, code: number, message: RegExp, sessionId?: string): void {
  expect(msg).toMatchObject({ type: 'error', code });
  expect(typeof msg.message).toBe('string');
  expect(msg.message).toMatch(message);
  if (sessionId !== undefined) expect(msg.session_id).toBe(sessionId);
}

/** Send the test utterance on a live session and wait for its final. */
async function expectTranscribes(rec: WsRecorder): Promise<void> {
  const before = rec.of('final_transcript').length;
  sendBinary(rec, UTTERANCE);
  await rec.next('final_transcript');
  expect(finals(rec).slice(before)).toEqual(['Hotel india.']);
}

/** startSession plus the Deepgram connection it opened. */
async function liveSession(o: CreateOptions = {}): Promise<{ rec: WsRecorder; id: string; conn: DeepgramConnection }> {
  const n = emu.connections.length;
  const { rec, id } = await startSession(gw, o);
  return { rec, id, conn: await emu.waitForConnection(n + 1) };
}

/** A fresh session on the same gateway works end to end. */
async function expectGatewayHealthy(): Promise<void> {
  const { rec } = await startSession(gw);
  await expectTranscribes(rec);
  rec.send({ type: 'session.close' });
  await rec.closed();
}

// ---- bad input: every case answers error 400 and leaves the socket usable ---------------

const BAD_FRAMES: Array<[string, () => string | Buffer, RegExp]> = [
  ['non-JSON text', () => 'hello there', /not valid JSON/],
  ['truncated JSON', () => '{"type":"session.finalize"', /not valid JSON/],
  ['a JSON array', () => '[{"type":"session.finalize"}]', /must be a JSON object/],
  ['a JSON number', () => '42', /must be a JSON object/],
  ['JSON null', () => 'null', /must be a JSON object/],
  ['a JSON string', () => '"input_audio"', /must be a JSON object/],
  ['an object without type', () => '{"audio":"AAAA"}', /no "type"/],
  ['a non-string type', () => '{"type":7}', /no "type"/],
  ['an unknown type', () => '{"type":"session.restart"}', /unknown message type "session\.restart"/],
  ['input_audio with characters outside base64', () => '{"type":"input_audio","audio":"!!!!"}', /base64/],
  ['input_audio with junk inside base64', () => JSON.stringify({ type: 'input_audio', audio: 'AAAA$AAA' }), /base64/],
  ['input_audio with a base64 length not a multiple of 4', () => '{"type":"input_audio","audio":"AAAAA"}', /base64/],
  ['input_audio with a number as audio', () => '{"type":"input_audio","audio":1234}', /base64/],
  ['input_audio without audio', () => '{"type":"input_audio"}', /base64/],
  ['a text frame over 1 MiB', () => inputAudioFrame(Buffer.alloc(MiB)), /exceeds the 1048576-byte limit/],
  ['a binary frame over 1 MiB', () => Buffer.alloc(MiB + 2), /exceeds the 1048576-byte limit/],
];

describe('bad input on a live session', () => {
  for (const [name, frame, message] of BAD_FRAMES) {
    it(`${name} -> error 400, nothing forwarded, the session keeps transcribing`, async () => {
      const { rec, id, conn } = await liveSession();
      rec.send(frame());
      expectError(await nextError(rec), 400, message, id);
      await expectTranscribes(rec);
      expect(rec.of('error')).toHaveLength(1);
      expect(rec.closeCode).toBeUndefined();
      // Only the valid utterance reached the provider, byte for byte.
      expect(conn.audioBytes).toBe(UTTERANCE.length);
      expect(conn.counts.invalidText).toBe(0);
    });
  }

  it('a second session.create -> error 400; the first session and its upstream are unchanged', async () => {
    const { rec, id } = await liveSession();
    const conns = emu.connections.length;
    rec.send(createMessage({ model: 'deepgram/nova-2', sampleRate: '8000' }));
    expectError(await nextError(rec), 400, /session\.create was already received/, id);
    await expectTranscribes(rec);
    expect(rec.of('session.created')).toHaveLength(1);
    expect(emu.connections.length).toBe(conns);
    expect(emu.connections.at(-1)?.params).toMatchObject({ model: 'nova-3', sampleRate: RATE });
  });

  it('an invalid session.update -> error 400; the session keeps its upstream', async () => {
    const { rec, id } = await liveSession();
    rec.send({ type: 'session.update', settings: { extra: { bogus_option: 1 } } });
    expectError(await nextError(rec), 400, /unknown option "bogus_option"/, id);
    rec.send({ type: 'session.update', settings: 'fr' });
    expectError(await nextError(rec), 400, /invalid session\.update/, id);
    await expectTranscribes(rec);
    expect(emu.connections.at(-1)?.record.closed).toBe(false);
  });
});

describe('bad input before session.create', () => {
  for (const [name, frame, message] of BAD_FRAMES) {
    it(`${name} -> error 400, then session.create still works`, async () => {
      const rec = await connectStt(gw);
      rec.send(frame());
      expectError(await nextError(rec), 400, message);
      const n = emu.connections.length;
      rec.send(createMessage());
      await rec.first('session.created');
      const conn = await emu.waitForConnection(n + 1);
      await expectTranscribes(rec);
      expect(conn.audioBytes).toBe(UTTERANCE.length);
    });
  }

  it('audio before session.create (binary and base64) -> error 400 each; that audio is neither forwarded nor billed', async () => {
    const before = metricValue(await gw.metricsText(), 'gateway_stt_audio_seconds_total', { provider: 'deepgram', model: 'nova-3', api_key: TEST_KEY }) ?? 0;
    const rec = await connectStt(gw);
    sendBinary(rec, Buffer.alloc(1600), 1600);
    expectError(await nextError(rec), 400, /before session\.create/);
    sendBase64(rec, Buffer.alloc(1600));
    expectError(await nextError(rec), 400, /before session\.create/);
    const n = emu.connections.length;
    rec.send(createMessage());
    await rec.first('session.created');
    const conn = await emu.waitForConnection(n + 1);
    await expectTranscribes(rec);
    expect(conn.audioBytes).toBe(UTTERANCE.length);
    rec.send({ type: 'session.close' });
    await rec.closed();
    await settle(gw);
    const after = metricValue(await gw.metricsText(), 'gateway_stt_audio_seconds_total', { provider: 'deepgram', model: 'nova-3', api_key: TEST_KEY }) ?? 0;
    expect(after - before).toBeCloseTo(UTTERANCE.length / (RATE * 2), 6);
  });

  it('session.update and session.finalize before session.create -> error 400 each', async () => {
    const rec = await connectStt(gw);
    rec.send({ type: 'session.update', settings: { language: 'fr' } });
    expectError(await nextError(rec), 400, /session\.update before session\.create/);
    rec.send({ type: 'session.finalize' });
    expectError(await nextError(rec), 400, /session\.finalize before session\.create/);
    expect(rec.closeCode).toBeUndefined();
  });

  it('session.close before session.create closes the socket without an error', async () => {
    const rec = await connectStt(gw);
    rec.send({ type: 'session.close' });
    expect(await rec.closed()).toBe(1000);
    expect(rec.messages).toEqual([]);
  });
});

describe('frames over the transport limit', () => {
  it('a frame over 4x the message limit is cut off by the WebSocket layer (1009); the gateway stays healthy', async () => {
    const { rec } = await startSession(gw);
    rec.ws.send(Buffer.alloc(4 * MiB + 1), { binary: true });
    expect(await rec.closed()).toBe(1009);
    expect(rec.of('error')).toEqual([]);
    await settle(gw);
    expect(metricValue(await gw.metricsText(), 'gateway_sessions_active', { modality: 'stt' })).toBe(0);
    await expectGatewayHealthy();
  });
});

// ---- session.create --------------------------------------------------------------------

/** session.create (built or raw) that must fail: returns the error; checks nothing went upstream. */
async function createFails(g: TestGateway, msg: CreateOptions | Record<string, unknown>, raw = false): Promise<{ err: JsonMessage; rec: WsRecorder }> {
  const conns = emu.connections.length;
  const rejected = emu.rejected.length;
  const rec = await connectStt(g);
  rec.send(raw ? msg : createMessage(msg as CreateOptions));
  const err = await rec.first('error');
  await rec.closed();
  expect(rec.of('session.created')).toEqual([]);
  expect(emu.connections.length).toBe(conns);
  expect(emu.rejected.length).toBe(rejected);
  return { err, rec };
}

describe('session.create validation', () => {
  const invalid: Array<[string, Record<string, unknown>, RegExp]> = [
    ['model is not a string', { ...createMessage(), model: 42 }, /invalid session\.create: model/],
    ['settings is not an object', { type: 'session.create', model: 'deepgram/nova-3', settings: 'fast' }, /invalid session\.create: settings/],
    ['extra is not an object', createMessage({ extra: ['keyterm'] as unknown as Record<string, unknown> }), /invalid session\.create: settings\.extra/],
    ['sample_rate is not a number', createMessage({ sampleRate: 'sixteen k' }), /sample_rate must be an integer from 8000 to 48000/],
    ['sample_rate "7999"', createMessage({ sampleRate: '7999' }), /sample_rate must be an integer from 8000 to 48000/],
    ['sample_rate 48001', createMessage({ sampleRate: 48001 }), /sample_rate must be an integer from 8000 to 48000/],
    ['sample_rate "16000.5"', createMessage({ sampleRate: '16000.5' }), /sample_rate/],
    ['encoding other than pcm_s16le', { ...createMessage(), settings: { sample_rate: '16000', encoding: 'opus', extra: {} } }, /unsupported encoding "opus"/],
    ['an invalid language', createMessage({ language: 'not a language' }), /invalid language/],
    ['keywords on nova-3', createMessage({ extra: { keyterm: [], keywords: [['LiveKit', 2]] } }), /keywords are not supported for nova-3.*keyterm/],
    ['keyterm on nova-2', createMessage({ model: 'deepgram/nova-2', extra: { keyterm: ['LiveKit'] } }), /keyterm prompting is only available for nova-3/],
    ['an unknown extra key', createMessage({ extra: { keyterm: [], bogus_option: true } }), /unknown option "bogus_option"/],
    ['a gateway-owned extra key', createMessage({ extra: { sample_rate: 8000 } }), /option "sample_rate" is not accepted in extra/],
    ['a wrongly typed extra value', createMessage({ extra: { endpointing: '300ms' } }), /"endpointing" must be an integer number of milliseconds/],
  ];
  for (const [name, msg, message] of invalid) {
    it(`${name} -> error 400 and close, no upstream attempt`, async () => {
      const { err, rec } = await createFails(gw, msg, true);
      expectError(err, 400, message);
      expect(rec.closeCode).toBe(1008);
    });
  }

  it('an unknown model -> error 404 naming the model and listing the provider models', async () => {
    const { err, rec } = await createFails(gw, { model: 'deepgram/nova-9' });
    expectError(err, 404, /unknown STT model "deepgram\/nova-9".*nova-3/);
    expect(rec.closeCode).toBe(1008);
  });

  it('an unknown provider -> error 404 naming it', async () => {
    const { err } = await createFails(gw, { model: 'acme/whisper-9' });
    expectError(err, 404, /unknown STT provider "acme"/);
  });

  it('a provider without credentials -> error 400 naming the environment variable', async () => {
    const bare = await startTestGateway({ env: { DEEPGRAM_BASE_URL: emu.url } });
    try {
      const { err } = await createFails(bare, { model: 'deepgram/nova-3' });
      expectError(err, 400, /DEEPGRAM_API_KEY/);
      const auto = await createFails(bare, { model: null });
      expectError(auto.err, 400, /no STT provider has credentials/);
    } finally {
      await bare.close();
    }
  });

  it('counts failed creates as client_error with provider/model "none"', async () => {
    const labels = { modality: 'stt', provider: 'none', model: 'none', outcome: 'client_error' };
    const before = metricValue(await gw.metricsText(), 'gateway_requests_total', labels) ?? 0;
    await createFails(gw, { model: 'deepgram/nova-9' });
    await createFails(gw, { sampleRate: '7999' });
    await settle(gw);
    expect(metricValue(await gw.metricsText(), 'gateway_requests_total', labels)).toBe(before + 2);
    expect(metricValue(await gw.metricsText(), 'gateway_sessions_active', { modality: 'stt' })).toBe(0);
  });
});

describe('session.create -> Deepgram connection parameters', () => {
  async function paramsFor(o: CreateOptions): Promise<{ created: JsonMessage; conn: DeepgramConnection }> {
    const n = emu.connections.length;
    const { rec, created } = await startSession(gw, o);
    const conn = await emu.waitForConnection(n + 1);
    rec.send({ type: 'session.close' });
    await rec.closed();
    return { created, conn };
  }

  it('bare "deepgram" -> the default model nova-3, announced in session.created and to Deepgram', async () => {
    const { created, conn } = await paramsFor({ model: 'deepgram' });
    expect(created.model).toBe('deepgram/nova-3');
    expect(conn.params.model).toBe('nova-3');
    expect(conn.auth).toEqual({ scheme: 'token', via: 'header' });
  });

  it('no model (the client\'s "auto") -> a provider with credentials and its default model', async () => {
    const { created, conn } = await paramsFor({ model: null });
    expect(created.model).toBe('deepgram/nova-3');
    expect(conn.params.model).toBe('nova-3');
  });

  it('always announces linear16 mono and the LiveKit-like defaults', async () => {
    const { conn } = await paramsFor({});
    expect(conn.params.raw).toMatchObject({
      model: ['nova-3'],
      encoding: ['linear16'],
      sample_rate: ['16000'],
      channels: ['1'],
      interim_results: ['true'],
      punctuate: ['true'],
    });
    // no_delay is not in the SDK's ConnectArgs but is sent by LiveKit's Deepgram plugin; the API accepts it.
    expect(conn.params.unknown).toEqual(['no_delay']);
  });

  it('settings.language is forwarded; it beats a ":lang" suffix; the suffix alone also works', async () => {
    expect((await paramsFor({ language: 'en-US' })).conn.params.raw.language).toEqual(['en-US']);
    expect((await paramsFor({ model: 'deepgram/nova-2:fr' })).conn.params).toMatchObject({ model: 'nova-2', language: 'fr' });
    expect((await paramsFor({ model: 'deepgram/nova-3:fr', language: 'de' })).conn.params.raw.language).toEqual(['de']);
    expect((await paramsFor({ model: 'deepgram/nova-3' })).conn.params.raw.language).toBeUndefined();
  });

  for (const rate of [8000, 16000, 24000, 48000]) {
    it(`sample rate ${rate} is announced as sample_rate and the audio is transcribed at that rate`, async () => {
      const { rec, conn } = await liveSession({ sampleRate: String(rate) });
      expect(conn.params.raw.sample_rate).toEqual([String(rate)]);
      const pcm = synthesize([{ silenceMs: 100 }, { words: ['kilo', 'lima'] }, { silenceMs: 200 }], { sampleRate: rate });
      sendBinary(rec, pcm, rate / 10); // 50 ms frames at this rate
      const final = await rec.first('final_transcript');
      expect(final.transcript).toBe('Kilo lima.');
      expect(final.start as number).toBeCloseTo(0.1, 1);
      expect(conn.audioSeconds).toBeCloseTo(pcm.length / (rate * 2), 9);
    });
  }

  it('a number sample_rate is accepted too', async () => {
    expect((await paramsFor({ sampleRate: 24000 })).conn.params.sampleRate).toBe(24000);
  });

  it('an empty keyterm array (always injected by the clients) is dropped', async () => {
    const { conn } = await paramsFor({ extra: { keyterm: [] } });
    expect(conn.params.raw.keyterm).toBeUndefined();
    expect(conn.record.url).not.toContain('keyterm');
  });

  it('several keyterms become repeated keyterm= parameters, in order; a bare string is one term', async () => {
    const { conn } = await paramsFor({ extra: { keyterm: ['LiveKit', 'Niamh Murphy', 'gateway'] } });
    expect(conn.params.keyterms).toEqual(['LiveKit', 'Niamh Murphy', 'gateway']);
    expect(conn.record.url.match(/[?&]keyterm=/g)).toHaveLength(3);
    expect((await paramsFor({ extra: { keyterm: 'LiveKit' } })).conn.params.keyterms).toEqual(['LiveKit']);
  });

  it('keywords on nova-2 are sent as term:boost', async () => {
    const { conn } = await paramsFor({ model: 'deepgram/nova-2', extra: { keyterm: [], keywords: [['LiveKit', 2], 'gateway:1.5'] } });
    expect(conn.params.keywords).toEqual(['LiveKit:2', 'gateway:1.5']);
  });

  it('known extra options are mapped to Deepgram parameters and override the defaults', async () => {
    const { conn } = await paramsFor({ extra: { keyterm: [], endpointing: 300, punctuate: false, smart_format: true, diarize: true } });
    expect(conn.params.raw).toMatchObject({ endpointing: ['300'], punctuate: ['false'], smart_format: ['true'], diarize: ['true'] });
    expect(conn.params.endpointing).toBe(300);
  });
});

describe('gateway health after all of the above', () => {
  it('a new session still transcribes', async () => {
    await expectGatewayHealthy();
  });
});
