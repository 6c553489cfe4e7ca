/**
 * /v1/stt session behaviour with a raw `ws` client (protocol.md 2.2-2.7): audio paths and
 * buffering, transcript fields and timeline, session.update / finalize / close, keep-alives
 * upstream, inactivity, and metering. Real gateway on port 0, Deepgram emulator behind it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { scriptTimings, synthesize, type ScriptItem } from '../emulators/audio.ts';
import { startDeepgramEmulator, type DeepgramConnection, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { TEST_KEY, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import {
  BYTES_PER_SECOND,
  RATE,
  connectStt,
  createMessage,
  finals,
  inputAudioFrame,
  sendBase64,
  sendBinary,
  settle,
  sleep,
  startSession,
  type CreateOptions,
} from '../helpers/stt.ts';
import type { JsonMessage, WsRecorder } from '../helpers/ws.ts';

let emu: DeepgramEmulator;
let gw: TestGateway;

beforeAll(async () => {
  emu = await startDeepgramEmulator({ recordAudio: true });
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

const pcmOf = (script: ScriptItem[]): Buffer => synthesize(script, { sampleRate: RATE });
const seconds = (bytes: number): number => bytes / BYTES_PER_SECOND;

async function liveSession(o: CreateOptions = {}, g: TestGateway = gw): Promise<{ rec: WsRecorder; id: string; conn: DeepgramConnection }> {
  const n = emu.connections.length;
  const { rec, id } = await startSession(g, o);
  return { rec, id, conn: await emu.waitForConnection(n + 1) };
}

/** Every binary frame the emulator received on this connection, concatenated. */
function receivedAudio(conn: DeepgramConnection): Buffer {
  return Buffer.concat(conn.record.frames.filter((f) => f.dir === 'in' && f.kind === 'binary').map((f) => f.data as Buffer));
}

function receivedText(conn: DeepgramConnection): string[] {
  return conn.record.frames.filter((f) => f.dir === 'in' && f.kind === 'text').map((f) => f.text as string);
}

async function audioSecondsMetric(model = 'nova-3'): Promise<number> {
  return metricValue(await gw.metricsText(), 'gateway_stt_audio_seconds_total', { provider: 'deepgram', model, api_key: TEST_KEY }) ?? 0;
}

async function closeSession(rec: WsRecorder): Promise<void> {
  rec.send({ type: 'session.close' });
  await rec.closed();
}

function expectWordsOnTimeline(msg: JsonMessage, expected: Array<{ word: string; start: number; end: number }>, offsetS = 0): void {
  const words = msg.words as Array<{ word: string; start: number; end: number }>;
  expect(words.map((w) => w.word.toLowerCase().replace(/\.$/, ''))).toEqual(expected.map((w) => w.word));
  for (const [i, w] of words.entries()) {
    expect(Math.abs(w.start - ((expected[i]?.start ?? NaN) + offsetS))).toBeLessThanOrEqual(0.015);
    expect(Math.abs(w.end - ((expected[i]?.end ?? NaN) + offsetS))).toBeLessThanOrEqual(0.015);
  }
}

// ---- audio paths ---------------------------------------------------------------------

describe('audio reaches the provider byte-exact', () => {
  const PCM = pcmOf([{ silenceMs: 300 }, { words: ['alpha', 'bravo', 'charlie'] }, { silenceMs: 400 }]);

  it('binary frames (any split, even mid-sample) are forwarded unchanged', async () => {
    const { rec, conn } = await liveSession();
    sendBinary(rec, PCM, [1600, 3199, 1, 320]);
    await rec.first('final_transcript');
    await emu.waitFor(() => conn.audioBytes === PCM.length, 2000, 'all audio upstream');
    expect(receivedAudio(conn).equals(PCM)).toBe(true);
    expect(conn.audioSeconds).toBeCloseTo(seconds(PCM.length), 9);
    expect(finals(rec)).toEqual(['Alpha bravo charlie.']);
    expect(receivedText(conn)).toEqual([]);
  });

  it('base64 input_audio in every JSON spelling (Node, Python, reordered keys), mixed with binary, keeps order', async () => {
    const { rec, conn } = await liveSession();
    const frames = [];
    for (let off = 0; off < PCM.length; off += 1600) frames.push(PCM.subarray(off, off + 1600));
    for (const [i, f] of frames.entries()) {
      if (i % 4 === 0) rec.ws.send(f, { binary: true });
      else rec.ws.send(inputAudioFrame(f, i % 4 === 1 ? 'canonical' : i % 4 === 2 ? 'python' : 'reordered'));
    }
    await rec.first('final_transcript');
    await emu.waitFor(() => conn.audioBytes === PCM.length, 2000, 'all audio upstream');
    expect(receivedAudio(conn).equals(PCM)).toBe(true);
    expect(conn.audioSeconds).toBeCloseTo(seconds(PCM.length), 9);
    expect(finals(rec)).toEqual(['Alpha bravo charlie.']);
    expect(rec.of('error')).toEqual([]);
  });

  it('audio sent before the upstream is open is buffered and delivered in order', async () => {
    const script: ScriptItem[] = [{ silenceMs: 250 }, { words: ['hello', 'world'] }, { silenceMs: 400 }, { words: ['golf', 'hotel', 'india'] }, { silenceMs: 300 }];
    const pcm = pcmOf(script);
    const timings = scriptTimings(script, { sampleRate: RATE });
    emu.faultNext({ upgradeDelayMs: 300 });
    const n = emu.connections.length;
    const rec = await connectStt(gw);
    const sentAt = Date.now();
    // Like the client: session.create, then audio at once, without waiting for session.created.
    rec.send(createMessage());
    sendBase64(rec, pcm);
    const conn = await emu.waitForConnection(n + 1);
    expect(conn.record.openedAt.getTime() - sentAt).toBeGreaterThanOrEqual(250);
    await rec.until(() => finals(rec).length === 2, 'two finals');
    expect(finals(rec)).toEqual(['Hello world.', 'Golf hotel india.']);
    const [f1, f2] = rec.of('final_transcript') as [JsonMessage, JsonMessage];
    expectWordsOnTimeline(f1, timings.utterances[0]?.words ?? []);
    expectWordsOnTimeline(f2, timings.utterances[1]?.words ?? []);
    expect(receivedAudio(conn).equals(pcm)).toBe(true);
    expect(metricValue(await gw.metricsText(), 'gateway_stt_audio_dropped_seconds_total', { provider: 'deepgram', model: 'nova-3' }) ?? 0).toBe(0);
  });

  it('when the connect outlasts the 5 s buffer, the oldest audio is dropped (counted, not billed) and times stay on the client timeline', async () => {
    const script: ScriptItem[] = [
      { silenceMs: 200 },
      { words: ['alpha', 'bravo'] },
      { silenceMs: 2800 },
      { words: ['kilo', 'lima'] },
      { silenceMs: 2900 },
    ];
    const pcm = pcmOf(script); // 7.1 s; the ring keeps 5 s
    const timings = scriptTimings(script, { sampleRate: RATE });
    const billedBefore = await audioSecondsMetric();
    const droppedLabels = { provider: 'deepgram', model: 'nova-3' };
    const droppedBefore = metricValue(await gw.metricsText(), 'gateway_stt_audio_dropped_seconds_total', droppedLabels) ?? 0;
    emu.faultNext({ upgradeDelayMs: 400 });
    const n = emu.connections.length;
    const rec = await connectStt(gw);
    rec.send(createMessage());
    sendBinary(rec, pcm);
    const conn = await emu.waitForConnection(n + 1);
    await rec.first('final_transcript');
    expect(finals(rec)).toEqual(['Kilo lima.']);
    expectWordsOnTimeline(rec.of('final_transcript')[0] as JsonMessage, timings.utterances[1]?.words ?? []);
    await emu.waitFor(() => conn.audioBytes > 0 && conn.audioBytes === receivedAudio(conn).length, 2000, 'audio upstream');
    const forwarded = receivedAudio(conn);
    expect(forwarded.length).toBeLessThanOrEqual(5 * BYTES_PER_SECOND);
    expect(forwarded.length).toBeGreaterThan(5 * BYTES_PER_SECOND - 1600);
    expect(forwarded.equals(pcm.subarray(pcm.length - forwarded.length))).toBe(true);
    await closeSession(rec);
    await settle(gw);
    const dropped = (metricValue(await gw.metricsText(), 'gateway_stt_audio_dropped_seconds_total', droppedLabels) ?? 0) - droppedBefore;
    expect(dropped).toBeCloseTo(seconds(pcm.length - forwarded.length), 6);
    expect((await audioSecondsMetric()) - billedBefore).toBeCloseTo(seconds(forwarded.length), 6);
  });
});

// ---- transcripts -----------------------------------------------------------------------

describe('transcript messages', () => {
  it('carry session_id and request_id, language, confidence, words on a timeline from 0; start_of_speech and interims come first', async () => {
    const script: ScriptItem[] = [{ silenceMs: 400 }, { words: ['echo', 'foxtrot', 'golf', 'hotel'] }, { silenceMs: 300 }];
    const timings = scriptTimings(script, { sampleRate: RATE });
    const { rec, id } = await liveSession();
    sendBinary(rec, pcmOf(script));
    const final = await rec.first('final_transcript');
    const types = rec.messages.map((m) => m.type);
    expect(types.indexOf('start_of_speech')).toBeGreaterThan(0);
    expect(types.indexOf('start_of_speech')).toBeLessThan(types.indexOf('interim_transcript'));
    expect(types.indexOf('interim_transcript')).toBeLessThan(types.indexOf('final_transcript'));
    for (const m of rec.messages) expect(m.session_id).toBe(id);
    for (const m of [...rec.of('interim_transcript'), final]) {
      expect(m.request_id).toBe(id);
      expect(m.language).toBe('en');
      expect(typeof m.confidence).toBe('number');
      expect(m).not.toHaveProperty('speaker_id');
    }
    expect(final).toMatchObject({ transcript: 'Echo foxtrot golf hotel.' });
    expect(final.start as number).toBeCloseTo(timings.utterances[0]?.start ?? NaN, 2);
    expect((final.start as number) + (final.duration as number)).toBeCloseTo(timings.utterances[0]?.end ?? NaN, 1);
    expectWordsOnTimeline(final, timings.utterances[0]?.words ?? []);
    for (const w of final.words as Array<Record<string, unknown>>) {
      expect(Object.keys(w).sort()).toEqual(['confidence', 'end', 'start', 'word']);
    }
  });

  it('with diarize=true, words and segments carry string speaker ids', async () => {
    const { rec } = await liveSession({ extra: { keyterm: [], diarize: true } });
    sendBinary(rec, pcmOf([{ silenceMs: 200 }, { words: ['alpha', 'bravo'] }, { silenceMs: 300 }, { words: ['charlie'] }, { silenceMs: 300 }]));
    await rec.until(() => finals(rec).length === 2, 'two finals');
    const [f1, f2] = rec.of('final_transcript') as [JsonMessage, JsonMessage];
    expect(f1.speaker_id).toBe('0');
    expect(f2.speaker_id).toBe('1');
    expect((f1.words as Array<{ speaker_id: unknown }>).map((w) => w.speaker_id)).toEqual(['0', '0']);
    expect((f2.words as Array<{ speaker_id: unknown }>).map((w) => w.speaker_id)).toEqual(['1']);
  });
});

// ---- session.update ------------------------------------------------------------------

describe('session.update', () => {
  const U1: ScriptItem[] = [{ silenceMs: 200 }, { words: ['alpha', 'bravo'] }, { silenceMs: 300 }];
  const U2: ScriptItem[] = [{ silenceMs: 200 }, { words: ['charlie', 'delta'] }, { silenceMs: 300 }];

  it('a changed extra between utterances reconnects upstream; the timeline continues', async () => {
    const { rec, conn: first } = await liveSession();
    const pcm1 = pcmOf(U1);
    sendBinary(rec, pcm1);
    await rec.first('final_transcript');
    rec.send({ type: 'session.update', settings: { extra: { keyterm: ['LiveKit'] } } });
    const second = await emu.waitForConnection(emu.connections.indexOf(first) + 2);
    expect(second.params.keyterms).toEqual(['LiveKit']);
    expect(second.params.model).toBe('nova-3');
    sendBinary(rec, pcmOf(U2));
    await rec.until(() => finals(rec).length === 2, 'second final');
    expect(finals(rec)).toEqual(['Alpha bravo.', 'Charlie delta.']);
    const [f1, f2] = rec.of('final_transcript') as [JsonMessage, JsonMessage];
    const t2 = scriptTimings(U2, { sampleRate: RATE });
    expectWordsOnTimeline(f2, t2.utterances[0]?.words ?? [], seconds(pcm1.length));
    expect(f2.start as number).toBeGreaterThan((f1.start as number) + (f1.duration as number));
    // The old connection was ended gracefully and got only the first utterance.
    await emu.waitForClose(first);
    expect(first.counts.closeStream).toBe(1);
    expect(receivedAudio(first).equals(pcm1)).toBe(true);
    expect(rec.of('error')).toEqual([]);
    expect(rec.of('session.created')).toHaveLength(1);
  });

  it('an update that changes nothing keeps the connection', async () => {
    const { rec, conn } = await liveSession({ language: 'en' });
    rec.send({ type: 'session.update', settings: { language: 'en', extra: { keyterm: [] } } });
    sendBinary(rec, pcmOf(U1));
    await rec.first('final_transcript');
    expect(emu.connections.at(-1)).toBe(conn);
    expect(conn.record.closed).toBe(false);
  });

  it('an update mid-utterance waits for the final before reconnecting', async () => {
    const { rec, conn: first } = await liveSession();
    // 1.4 s of words without trailing silence: an interim, no final yet.
    sendBinary(rec, pcmOf([{ silenceMs: 200 }, { words: ['echo', 'foxtrot', 'golf', 'hotel'] }]));
    await rec.first('interim_transcript');
    rec.send({ type: 'session.update', settings: { language: 'en-GB' } });
    await sleep(200);
    expect(emu.connections.at(-1)).toBe(first);
    sendBinary(rec, pcmOf([{ silenceMs: 300 }]));
    await rec.first('final_transcript');
    expect(finals(rec)).toEqual(['Echo foxtrot golf hotel.']);
    const second = await emu.waitForConnection(emu.connections.indexOf(first) + 2);
    expect(second.params.language).toBe('en-GB');
  });
});

// ---- finalize and close ----------------------------------------------------------------

describe('session.finalize and session.close', () => {
  it('finalize -> final_transcript then session.finalized; the socket stays open and later audio still transcribes', async () => {
    const u1 = pcmOf([{ silenceMs: 200 }, { words: ['hello', 'world'] }]);
    const { rec, conn } = await liveSession();
    sendBinary(rec, u1);
    rec.send({ type: 'session.finalize' });
    await rec.first('session.finalized');
    const types = rec.messages.map((m) => m.type);
    expect(types.indexOf('final_transcript')).toBeLessThan(types.indexOf('session.finalized'));
    expect(finals(rec)).toEqual(['Hello world']);
    expect(conn.counts.finalize).toBe(1);
    sendBinary(rec, pcmOf([{ words: ['kilo', 'lima'] }, { silenceMs: 300 }]));
    await rec.until(() => finals(rec).length === 2, 'final after finalize');
    expect(finals(rec)[1]).toBe('Kilo lima.');
    expect((rec.of('final_transcript')[1] as JsonMessage).start as number).toBeCloseTo(seconds(u1.length), 2);
    // Audio after the finalize cancelled the 2 s end-of-input close.
    await sleep(2300);
    expect(rec.closeCode).toBeUndefined();
    expect(rec.of('session.closed')).toEqual([]);
    expect(conn.record.closed).toBe(false);
  });

  it('finalize while the upstream is still connecting is delivered after the buffered audio', async () => {
    emu.faultNext({ upgradeDelayMs: 300 });
    const rec = await connectStt(gw);
    rec.send(createMessage());
    sendBase64(rec, pcmOf([{ silenceMs: 200 }, { words: ['mike', 'november'] }]));
    rec.send({ type: 'session.finalize' });
    await rec.first('session.finalized');
    expect(finals(rec)).toEqual(['Mike november']);
  });

  it('finalize followed by 2 s without audio -> session.closed and close 1000', async () => {
    const { rec, conn } = await liveSession();
    sendBinary(rec, pcmOf([{ silenceMs: 200 }, { words: ['oscar', 'papa'] }]));
    rec.send({ type: 'session.finalize' });
    await rec.first('session.finalized');
    const finalizedAt = Date.now();
    await rec.first('session.closed', 5000);
    const waited = Date.now() - finalizedAt;
    expect(waited).toBeGreaterThanOrEqual(1800);
    expect(waited).toBeLessThan(3500);
    expect(await rec.closed()).toBe(1000);
    expect(rec.messages.at(-1)?.type).toBe('session.closed');
    expect(finals(rec)).toEqual(['Oscar papa']);
    await emu.waitForClose(conn);
    expect(conn.counts.closeStream).toBe(1);
    expect(rec.of('error')).toEqual([]);
  });

  it('session.close -> nothing more is sent; the upstream gets CloseStream and is torn down', async () => {
    const pcm = pcmOf([{ silenceMs: 200 }, { words: ['quebec', 'romeo'] }]);
    const { rec, id, conn } = await liveSession();
    sendBinary(rec, pcm);
    await emu.waitFor(() => conn.audioBytes === pcm.length, 2000, 'audio upstream');
    await sleep(100);
    const seen = rec.messages.length;
    rec.send({ type: 'session.close' });
    expect(await rec.closed()).toBe(1000);
    expect(rec.messages.length).toBe(seen);
    await emu.waitForClose(conn);
    expect(conn.counts.closeStream).toBe(1);
    // The provider did flush the pending words; the gateway no longer forwarded them.
    expect(conn.sent.some((m) => m.type === 'Results' && m.is_final && m.channel.alternatives[0]?.transcript === 'Quebec romeo')).toBe(true);
    expect(finals(rec)).toEqual([]);
    await settle(gw);
    expect(gw.usage.records.find((r) => r.sessionId === id)).toMatchObject({ outcome: 'ok', provider: 'deepgram', model: 'nova-3' });
  });

  it('a client that just drops the socket: the upstream gets CloseStream and the session ends', async () => {
    const { rec, id, conn } = await liveSession();
    sendBinary(rec, pcmOf([{ silenceMs: 300 }]));
    await emu.waitFor(() => conn.audioBytes > 0, 2000, 'audio upstream');
    rec.ws.terminate();
    await emu.waitForClose(conn);
    expect(conn.counts.closeStream).toBe(1);
    await settle(gw);
    expect(gw.usage.records.find((r) => r.sessionId === id)?.outcome).toBe('ok');
  });
});

// ---- keep-alive ------------------------------------------------------------------------

describe('upstream keep-alive', () => {
  it('during silence the provider receives {"type":"KeepAlive"} and does not close with NET-0001', async () => {
    const idle = emu.options.idleTimeoutMs;
    // The gateway keeps alive after 4 s without audio (ticks are 1 s apart): a 6.5 s provider
    // idle timeout closes the stream unless a KeepAlive arrives.
    emu.options.idleTimeoutMs = 6500;
    try {
      const { rec, conn } = await liveSession();
      sendBinary(rec, pcmOf([{ silenceMs: 300 }]));
      await emu.waitFor(() => receivedText(conn).length >= 1, 7000, 'a KeepAlive');
      const lastAudio = conn.record.frames.filter((f) => f.dir === 'in' && f.kind === 'binary').at(-1)?.t ?? 0;
      const firstKa = conn.record.frames.find((f) => f.dir === 'in' && f.kind === 'text');
      expect(firstKa?.text).toBe('{"type":"KeepAlive"}');
      expect((firstKa?.t ?? 0) - lastAudio).toBeGreaterThanOrEqual(3900);
      expect((firstKa?.t ?? 0) - lastAudio).toBeLessThan(5500);
      // Wait until 7 s after the last audio (past the provider's idle timeout): open on both sides.
      await sleep(7000 - (conn.session.elapsed() - lastAudio));
      expect(conn.session.elapsed() - lastAudio).toBeGreaterThanOrEqual(6900);
      expect(conn.record.closed).toBe(false);
      expect(rec.closeCode).toBeUndefined();
      expect(rec.of('error')).toEqual([]);
      expect(conn.counts.keepAlive).toBeGreaterThanOrEqual(1);
      expect(new Set(receivedText(conn))).toEqual(new Set(['{"type":"KeepAlive"}']));
    } finally {
      emu.options.idleTimeoutMs = idle;
    }
  });
});

// ---- inactivity and missing session.create ----------------------------------------------

describe('inactivity (STT_INACTIVITY_TIMEOUT_S=1, server.upgradeTimeoutS=1)', () => {
  let quick: TestGateway;
  beforeAll(async () => {
    quick = await startTestGateway({
      env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: emu.url, STT_INACTIVITY_TIMEOUT_S: '1' },
      file: { server: { upgradeTimeoutS: 1 } },
    });
  });
  afterEach(async () => {
    await settle(quick);
  });
  afterAll(async () => {
    await quick?.close();
  });

  it('no audio for 1 s -> error 2007, then close; the upstream is ended', async () => {
    const { rec, id, conn } = await liveSession({}, quick);
    sendBinary(rec, pcmOf([{ silenceMs: 200 }]));
    const sentAt = Date.now();
    const err = await rec.first('error', 4000);
    const after = Date.now() - sentAt;
    expect(err).toMatchObject({ type: 'error', code: 2007, session_id: id });
    expect(err.message).toMatch(/no audio received for 1 s/);
    expect(after).toBeGreaterThanOrEqual(900);
    expect(after).toBeLessThan(3000);
    expect(await rec.closed()).toBe(1000);
    expect(rec.messages.at(-1)?.type).toBe('error');
    await emu.waitForClose(conn);
    expect(conn.counts.closeStream).toBe(1);
    await settle(quick);
    expect(quick.usage.records.find((r) => r.sessionId === id)?.outcome).toBe('inactivity');
    expect(metricValue(await quick.metricsText(), 'gateway_requests_total', { provider: 'deepgram', model: 'nova-3', outcome: 'inactivity' })).toBe(1);
  });

  it('no session.create within the upgrade timeout -> error 408, then close', async () => {
    const rec = await connectStt(quick);
    const err = await rec.first('error', 4000);
    expect(err).toMatchObject({ type: 'error', code: 408 });
    expect(err.message).toMatch(/no session\.create/);
    expect(await rec.closed()).toBe(1011);
  });
});

// ---- metering --------------------------------------------------------------------------

describe('metering', () => {
  it('billed seconds equal the audio sent; outcome ok; sessions_active goes back to 0', async () => {
    const billed = await audioSecondsMetric();
    const ok = { modality: 'stt', provider: 'deepgram', model: 'nova-3', outcome: 'ok' };
    const okBefore = metricValue(await gw.metricsText(), 'gateway_requests_total', ok) ?? 0;
    const { rec, id, conn } = await liveSession();
    expect(metricValue(await gw.metricsText(), 'gateway_sessions_active', { modality: 'stt' })).toBe(1);
    const a = pcmOf([{ silenceMs: 500 }, { words: ['sierra', 'tango'] }, { silenceMs: 300 }]);
    const b = pcmOf([{ words: ['uniform'] }, { silenceMs: 333 }]);
    sendBinary(rec, a, 1234);
    sendBase64(rec, b, 'canonical', 1602);
    await rec.until(() => finals(rec).length === 2, 'two finals');
    await emu.waitFor(() => conn.audioBytes === a.length + b.length, 2000, 'audio upstream');
    await closeSession(rec);
    await settle(gw);
    const sent = seconds(a.length + b.length);
    expect(Math.abs((await audioSecondsMetric()) - billed - sent)).toBeLessThan(1e-6);
    expect(metricValue(await gw.metricsText(), 'gateway_requests_total', ok)).toBe(okBefore + 1);
    expect(metricValue(await gw.metricsText(), 'gateway_sessions_active', { modality: 'stt' })).toBe(0);
    const record = gw.usage.records.find((r) => r.sessionId === id);
    expect(record).toMatchObject({ apiKey: TEST_KEY, provider: 'deepgram', model: 'nova-3', outcome: 'ok' });
    expect(record?.audioSeconds).toBeCloseTo(sent, 9);
  });

  it('a model change mid-session bills each part to its model', async () => {
    const nova3 = await audioSecondsMetric('nova-3');
    const nova2 = await audioSecondsMetric('nova-2');
    const { rec, conn: first } = await liveSession();
    const a = pcmOf([{ silenceMs: 200 }, { words: ['victor'] }, { silenceMs: 300 }]);
    const b = pcmOf([{ silenceMs: 200 }, { words: ['whiskey', 'xray'] }, { silenceMs: 300 }]);
    sendBinary(rec, a);
    await rec.first('final_transcript');
    rec.send({ type: 'session.update', settings: { model: 'deepgram/nova-2' } });
    const second = await emu.waitForConnection(emu.connections.indexOf(first) + 2);
    expect(second.params.model).toBe('nova-2');
    sendBinary(rec, b);
    await rec.until(() => finals(rec).length === 2, 'second final');
    expect(finals(rec)).toEqual(['Victor.', 'Whiskey xray.']);
    await closeSession(rec);
    await settle(gw);
    expect((await audioSecondsMetric('nova-3')) - nova3).toBeCloseTo(seconds(a.length), 6);
    expect((await audioSecondsMetric('nova-2')) - nova2).toBeCloseTo(seconds(b.length), 6);
  });
});
