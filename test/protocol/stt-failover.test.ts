/**
 * STT mid-stream failover (docs/failover.md, issue 6): a raw `/v1/stt` client, the real gateway,
 * the Deepgram emulator as the primary and the AssemblyAI emulator as the fallback candidate
 * (`fallback.models` or a configured route), with the emulators' fault switches: TCP drop and
 * close 1011 mid-utterance, refused upgrade, dead air, every candidate failing. The client must
 * see one continuous, correct transcript (no repeat of finalized text, times on its own
 * timeline), no error and no reconnect; billed audio is counted once.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FaultSwitches } from '../emulators/base.ts';
import { GARBAGE_TEXT } from '../emulators/base.ts';
import { scriptTimings, synthesize, type ScriptItem } from '../emulators/audio.ts';
import { startAssemblyAiEmulator, type AssemblyAiEmulator } from '../emulators/assemblyai.ts';
import { NET_0001_REASON, startDeepgramEmulator, type DeepgramConnection, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { TEST_KEY, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { BYTES_PER_SECOND, FRAME_BYTES, RATE, connectStt, createMessage, finals, sendBinary, settle, sleep, type CreateOptions } from '../helpers/stt.ts';
import type { JsonMessage, WsRecorder } from '../helpers/ws.ts';

let dg: DeepgramEmulator;
let aai: AssemblyAiEmulator;
let gw: TestGateway;

const ENV = (): Record<string, string> => ({
  DEEPGRAM_API_KEY: 'dg-test-key',
  DEEPGRAM_BASE_URL: dg.url,
  ASSEMBLYAI_API_KEY: 'aai-test-key',
  ASSEMBLYAI_BASE_URL: aai.url,
});
/** Short dead air for paced tests; a breaker that never opens on the shared gateway (tests of it use their own). */
const FILE = { failover: { stt: { deadAirS: 0.6 }, breaker: { failures: 1000 } } };
const AAI = 'assemblyai/universal-streaming';

beforeAll(async () => {
  dg = await startDeepgramEmulator();
  aai = await startAssemblyAiEmulator();
  gw = await startTestGateway({ env: ENV(), file: FILE });
});

afterEach(async () => {
  dg.resetFaults();
  aai.resetFaults();
  await settle(gw);
});

afterAll(async () => {
  await gw?.close();
  await dg?.close();
  await aai?.close();
});

const pcmOf = (script: ScriptItem[]): Buffer => synthesize(script, { sampleRate: RATE });
const seconds = (bytes: number): number => bytes / BYTES_PER_SECOND;

/** First utterance (finalized by Deepgram before any fault), then one the fault lands in. */
const P1: ScriptItem[] = [{ silenceMs: 300 }, { words: ['alpha', 'bravo'] }, { silenceMs: 800 }];
const P2: ScriptItem[] = [{ words: ['charlie', 'delta', 'echo', 'foxtrot'] }, { silenceMs: 1500 }];
const P3: ScriptItem[] = [{ words: ['golf', 'hotel'] }, { silenceMs: 1500 }];
const TIMINGS = scriptTimings([...P1, ...P2, ...P3], { sampleRate: RATE });
const P1_SECONDS = seconds(pcmOf(P1).length);

/** session.create with fallback models (the helper's create message plus `fallback`). */
async function openSession(
  g: TestGateway,
  o: CreateOptions & { fallback?: string[] } = {},
): Promise<{ rec: WsRecorder; id: string; created: JsonMessage }> {
  const rec = await connectStt(g);
  const msg = createMessage(o);
  const fallback = o.fallback ?? [AAI];
  if (fallback.length > 0) msg.fallback = { models: fallback.map((model) => ({ model, extra: {} })) };
  rec.send(msg);
  const created = await rec.first('session.created');
  return { rec, id: created.session_id as string, created };
}

/** Send PCM at `speed` × real time in 50 ms frames (dead air needs audio to keep flowing). */
async function sendPaced(rec: WsRecorder, pcm: Buffer, speed = 2): Promise<void> {
  const frameMs = (FRAME_BYTES / BYTES_PER_SECOND) * 1000;
  for (let off = 0; off < pcm.length; off += FRAME_BYTES) {
    rec.ws.send(pcm.subarray(off, off + FRAME_BYTES), { binary: true });
    await sleep(frameMs / speed);
  }
}

async function metrics(g: TestGateway = gw): Promise<(name: string, labels?: Record<string, string>) => number> {
  const text = await g.metricsText();
  return (name, labels = {}) => metricValue(text, name, labels) ?? 0;
}

const billedLabels = (provider: string, model: string): Record<string, string> => ({ provider, model, api_key: TEST_KEY });
const DG_BILLED = billedLabels('deepgram', 'nova-3');
const AAI_BILLED = billedLabels('assemblyai', 'universal-streaming');

/** Primary Deepgram connection of a session just opened, with faults armed after the first final. */
async function firstFinalThenFault(rec: WsRecorder, dgCount: number, faults: Partial<FaultSwitches>): Promise<DeepgramConnection> {
  const conn = await dg.waitForConnection(dgCount + 1);
  sendBinary(rec, pcmOf(P1));
  await rec.first('final_transcript');
  Object.assign(conn.session.faults, faults);
  return conn;
}

function noError(rec: WsRecorder): void {
  expect(rec.of('error')).toEqual([]);
  expect(rec.closeCode).toBeUndefined();
}

/** Nothing after the first final repeats it: no later message carries its words. */
function noRepeat(rec: WsRecorder): void {
  const firstFinal = rec.messages.findIndex((m) => m.type === 'final_transcript');
  const later = rec.messages.slice(firstFinal + 1).filter((m) => typeof m.transcript === 'string');
  expect(later.filter((m) => /alpha|bravo/i.test(m.transcript as string))).toEqual([]);
}

// ---- mid-stream failures -----------------------------------------------------------------

describe('the primary fails in the middle of an utterance', () => {
  const cases: Array<[string, Partial<FaultSwitches>, string, string]> = [
    ['TCP drop without a close frame', { dropAfterAudioSec: P1_SECONDS + 0.5 }, 'closed', '502'],
    ['close 1011 NET-0001', { closeAfterAudioSec: { seconds: P1_SECONDS + 0.5, code: 1011, reason: NET_0001_REASON } }, 'closed', '502'],
  ];
  for (const [name, faults, reason, code] of cases) {
    it(`${name}: the fallback continues from the last final; exact finals on the client timeline, no error, billed once`, async () => {
      const m0 = await metrics();
      const dgCount = dg.connections.length;
      const aaiCount = aai.connections.length;
      const { rec, id } = await openSession(gw);
      const dgConn = await firstFinalThenFault(rec, dgCount, faults);
      const p2 = pcmOf(P2);
      sendBinary(rec, p2);
      await rec.until(() => finals(rec).length === 2, 'the second final');
      const aaiConn = await aai.waitForConnection(aaiCount + 1);
      expect(dgConn.record.close?.by).toBe(name.startsWith('TCP') ? 'drop' : 'server');

      expect(finals(rec)).toEqual(['Alpha bravo.', 'charlie delta echo foxtrot']);
      noRepeat(rec);
      noError(rec);
      // The fallback's times are rebased onto the client's timeline.
      const second = rec.of('final_transcript')[1] as JsonMessage;
      const expected = TIMINGS.utterances[1];
      expect(second.start).toBeCloseTo(expected?.start ?? -1, 1);
      expect((second.start as number) + (second.duration as number)).toBeCloseTo(expected?.end ?? -1, 1);
      const words = second.words as Array<{ word: string; start: number; end: number }>;
      expect(words.map((w) => w.word)).toEqual(expected?.words.map((w) => w.word));
      for (const [i, w] of words.entries()) expect(w.start).toBeCloseTo(expected?.words[i]?.start ?? -1, 1);

      // The session goes on with the fallback.
      const p3 = pcmOf(P3);
      sendBinary(rec, p3);
      await rec.until(() => finals(rec).length === 3, 'the third final');
      expect(finals(rec)[2]).toBe('golf hotel');
      expect((rec.of('final_transcript')[2] as JsonMessage).start).toBeCloseTo(TIMINGS.utterances[2]?.start ?? -1, 1);
      expect(dg.connections.length - dgCount).toBe(1);
      expect(aai.connections.length - aaiCount).toBe(1);
      rec.send({ type: 'session.close' });
      await rec.closed();
      await settle(gw);

      const m1 = await metrics();
      expect(m1('gateway_fallbacks_total', { modality: 'stt', from: 'deepgram', to: 'assemblyai', reason }) - m0('gateway_fallbacks_total', { modality: 'stt', from: 'deepgram', to: 'assemblyai', reason })).toBe(1);
      expect(m1('gateway_provider_errors_total', { provider: 'deepgram', code }) - m0('gateway_provider_errors_total', { provider: 'deepgram', code })).toBe(1);
      // Billing: every client byte once, split by the provider that first received it.
      const sent = seconds(pcmOf(P1).length + p2.length + p3.length);
      const dgBilled = m1('gateway_stt_audio_seconds_total', DG_BILLED) - m0('gateway_stt_audio_seconds_total', DG_BILLED);
      const aaiBilled = m1('gateway_stt_audio_seconds_total', AAI_BILLED) - m0('gateway_stt_audio_seconds_total', AAI_BILLED);
      expect(dgBilled + aaiBilled).toBeCloseTo(sent, 6);
      expect(dgBilled).toBeGreaterThanOrEqual(P1_SECONDS + 0.5);
      // The replay (audio since the last final that Deepgram had already received) is provider cost only.
      const replayed = m1('gateway_stt_replayed_audio_seconds_total', AAI_BILLED) - m0('gateway_stt_replayed_audio_seconds_total', AAI_BILLED);
      expect(replayed).toBeGreaterThan(0.5);
      expect(replayed).toBeLessThanOrEqual(dgBilled - (TIMINGS.utterances[0]?.end ?? 0) + 0.001);
      expect(seconds(aaiConn.audioBytes)).toBeCloseTo(aaiBilled + replayed, 3);
      const record = gw.usage.records.find((r) => r.sessionId === id);
      expect(record).toMatchObject({ outcome: 'ok', provider: 'assemblyai', model: 'universal-streaming', fallbackChain: ['deepgram/nova-3', AAI] });
      expect(record?.audioSeconds).toBeCloseTo(sent, 6);
    });
  }

  it('a non-JSON frame from the provider is not a failure: no failover, Deepgram keeps transcribing', async () => {
    const m0 = await metrics();
    const dgCount = dg.connections.length;
    const aaiCount = aai.connections.length;
    const { rec } = await openSession(gw);
    const conn = await firstFinalThenFault(rec, dgCount, { garbageAfterAudioSec: { seconds: P1_SECONDS + 0.3 } });
    sendBinary(rec, pcmOf(P2));
    await rec.until(() => finals(rec).length === 2, 'the second final');
    expect(conn.record.frames.some((f) => f.dir === 'out' && f.text === GARBAGE_TEXT)).toBe(true);
    expect(finals(rec)).toEqual(['Alpha bravo.', 'Charlie delta echo foxtrot.']);
    noError(rec);
    expect(aai.connections.length).toBe(aaiCount);
    const m1 = await metrics();
    expect(m1('gateway_fallbacks_total', { modality: 'stt', from: 'deepgram', to: 'assemblyai', reason: 'closed' })).toBe(
      m0('gateway_fallbacks_total', { modality: 'stt', from: 'deepgram', to: 'assemblyai', reason: 'closed' }),
    );
  });
});

// ---- before the first result: plain fallback -------------------------------------------

describe('before the first result, failover is plain fallback', () => {
  it('the primary refuses the upgrade (503): the fallback gets all the audio, nothing is replayed', async () => {
    const m0 = await metrics();
    dg.faultNext({ refuseUpgrade: { status: 503, message: 'Service unavailable' } });
    const rejected = dg.rejected.length;
    const aaiCount = aai.connections.length;
    const { rec, created } = await openSession(gw);
    expect(created.model).toBe('deepgram/nova-3');
    const pcm = pcmOf([...P1, ...P2]);
    sendBinary(rec, pcm);
    await rec.until(() => finals(rec).length === 2, 'two finals');
    expect(finals(rec)).toEqual(['alpha bravo', 'charlie delta echo foxtrot']);
    noError(rec);
    expect(dg.rejected.length - rejected).toBe(1);
    const conn = await aai.waitForConnection(aaiCount + 1);
    expect(conn.audioBytes).toBe(pcm.length);
    expect((rec.of('final_transcript')[0] as JsonMessage).start).toBeCloseTo(TIMINGS.utterances[0]?.start ?? -1, 1);
    rec.send({ type: 'session.close' });
    await rec.closed();
    await settle(gw);
    const m1 = await metrics();
    const reason = { modality: 'stt', from: 'deepgram', to: 'assemblyai', reason: 'connect_failed' };
    expect(m1('gateway_fallbacks_total', reason) - m0('gateway_fallbacks_total', reason)).toBe(1);
    expect(m1('gateway_provider_errors_total', { provider: 'deepgram', code: '502' }) - m0('gateway_provider_errors_total', { provider: 'deepgram', code: '502' })).toBe(1);
    expect(m1('gateway_stt_replayed_audio_seconds_total', AAI_BILLED)).toBe(m0('gateway_stt_replayed_audio_seconds_total', AAI_BILLED));
    expect(m1('gateway_stt_audio_seconds_total', AAI_BILLED) - m0('gateway_stt_audio_seconds_total', AAI_BILLED)).toBeCloseTo(seconds(pcm.length), 6);
    expect(m1('gateway_stt_audio_seconds_total', DG_BILLED)).toBe(m0('gateway_stt_audio_seconds_total', DG_BILLED));
  });

  it('dead air from the start: speech goes in, Deepgram says nothing -> the fallback transcribes everything', async () => {
    const m0 = await metrics();
    dg.faultNext({ deadAir: true });
    const dgCount = dg.connections.length;
    const aaiCount = aai.connections.length;
    const { rec } = await openSession(gw);
    const dgConn = await dg.waitForConnection(dgCount + 1);
    await sendPaced(rec, pcmOf([...P1, ...P2]));
    await rec.until(() => finals(rec).length === 2, 'two finals');
    expect(finals(rec)).toEqual(['alpha bravo', 'charlie delta echo foxtrot']);
    noError(rec);
    expect(dgConn.record.suppressed).toBeGreaterThan(0); // Deepgram did produce results; the fault withheld them
    await aai.waitForConnection(aaiCount + 1);
    const m1 = await metrics();
    const reason = { modality: 'stt', from: 'deepgram', to: 'assemblyai', reason: 'dead_air' };
    expect(m1('gateway_fallbacks_total', reason) - m0('gateway_fallbacks_total', reason)).toBe(1);
    expect(m1('gateway_provider_errors_total', { provider: 'deepgram', code: '504' }) - m0('gateway_provider_errors_total', { provider: 'deepgram', code: '504' })).toBe(1);
    expect(m1('gateway_stt_replayed_audio_seconds_total', AAI_BILLED)).toBeGreaterThan(m0('gateway_stt_replayed_audio_seconds_total', AAI_BILLED));
  });
});

describe('dead air in the middle of the stream', () => {
  it('after a final, Deepgram goes silent while speech flows: the fallback takes the utterance in flight', async () => {
    const dgCount = dg.connections.length;
    const { rec } = await openSession(gw);
    const conn = await firstFinalThenFault(rec, dgCount, { deadAir: true });
    const started = Date.now();
    await sendPaced(rec, pcmOf(P2));
    await rec.until(() => finals(rec).length === 2, 'the second final');
    expect(finals(rec)).toEqual(['Alpha bravo.', 'charlie delta echo foxtrot']);
    noRepeat(rec);
    noError(rec);
    expect(conn.record.close?.by).toBe('client'); // the gateway dropped the silent provider
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('a pause in the client audio is not dead air: no failover while no audio goes in', async () => {
    const dgCount = dg.connections.length;
    const aaiCount = aai.connections.length;
    const { rec } = await openSession(gw);
    const conn = await firstFinalThenFault(rec, dgCount, { deadAir: true });
    sendBinary(rec, pcmOf([{ words: ['india'] }]));
    await sleep(1200); // twice the dead-air time, but nothing more is sent
    expect(aai.connections.length).toBe(aaiCount);
    expect(conn.record.closed).toBe(false);
    noError(rec);
  });
});

// ---- every candidate failing -------------------------------------------------------------

describe('every candidate fails', () => {
  it('both refuse at connect: one error listing each attempt, close 1011', async () => {
    dg.faultNext({ refuseUpgrade: { status: 503, message: 'Service unavailable' } });
    aai.faultNext({ refuseUpgrade: { status: 500, message: 'Internal error' } });
    const { rec, id } = await openSession(gw);
    sendBinary(rec, pcmOf(P1));
    const err = await rec.first('error');
    expect(await rec.closed()).toBe(1011);
    expect(rec.of('error')).toHaveLength(1);
    expect(rec.messages.at(-1)).toBe(err);
    expect(err).toMatchObject({ type: 'error', code: 502, session_id: id });
    expect(err.message).toMatch(/^every STT candidate failed \(2 attempts\): deepgram\/nova-3: provider unavailable \(HTTP 503/);
    expect(err.message).toContain('assemblyai/universal-streaming: ');
    expect(err.attempts).toEqual([
      { model: 'deepgram/nova-3', code: 502, message: expect.stringContaining('HTTP 503') },
      { model: AAI, code: 502, message: expect.stringContaining('assemblyai/universal-streaming') },
    ]);
    await settle(gw);
    expect(gw.usage.records.find((r) => r.sessionId === id)).toMatchObject({ outcome: 'provider_error', audioSeconds: 0, errorCode: 502 });
  });

  it('dropped mid-stream, then the fallback rejects our credentials: one error, each cause and code listed', async () => {
    aai.faultNext({ refuseUpgrade: { status: 401, message: 'Invalid API key' } });
    const dgCount = dg.connections.length;
    const { rec } = await openSession(gw);
    await firstFinalThenFault(rec, dgCount, { dropAfterAudioSec: P1_SECONDS + 0.3 });
    sendBinary(rec, pcmOf(P2));
    const err = await rec.first('error');
    expect(await rec.closed()).toBe(1011);
    expect(finals(rec)).toEqual(['Alpha bravo.']);
    expect(err.code).toBe(502); // mixed causes, one of them retryable
    expect(err.attempts).toEqual([
      { model: 'deepgram/nova-3', code: 502, message: expect.stringContaining('close 1006') },
      { model: AAI, code: 401, message: expect.stringContaining('HTTP 401') },
    ]);
  });

  it('connection.retries 0: no failover, the primary\'s own error', async () => {
    const dgCount = dg.connections.length;
    const aaiCount = aai.connections.length;
    const { rec } = await openSession(gw, { connection: { timeout: 10, retries: 0 } });
    await firstFinalThenFault(rec, dgCount, { dropAfterAudioSec: P1_SECONDS + 0.3 });
    sendBinary(rec, pcmOf(P2));
    const err = await rec.first('error');
    expect(err).toMatchObject({ code: 502, provider_close: 1006 });
    expect(err.attempts).toBeUndefined();
    expect(aai.connections.length).toBe(aaiCount);
  });

  it('a session without fallback candidates fails as before (no replay buffer kept)', async () => {
    const dgCount = dg.connections.length;
    const { rec } = await openSession(gw, { fallback: [] });
    await firstFinalThenFault(rec, dgCount, { dropAfterAudioSec: P1_SECONDS + 0.3 });
    sendBinary(rec, pcmOf(P2));
    const err = await rec.first('error');
    expect(err).toMatchObject({ code: 502, provider_close: 1006 });
    expect(err.message).toMatch(/^deepgram\/nova-3: provider closed the stream \(close 1006/);
  });
});

// ---- bounds and configuration ----------------------------------------------------------------

describe('replay buffer bound (failover.stt.replayS)', () => {
  it('speech since the last final longer than the buffer: only its last second is replayed, the rest is counted as dropped', async () => {
    const g = await startTestGateway({ env: ENV(), file: { failover: { stt: { replayS: 1 }, breaker: { failures: 1000 } } } });
    try {
      const m0 = await metrics(g);
      const dgCount = dg.connections.length;
      const aaiCount = aai.connections.length;
      const { rec } = await openSession(g);
      const conn = await firstFinalThenFault(rec, dgCount, { dropAfterAudioSec: P1_SECONDS + 2.1 });
      // 2.4 s of speech, no pause: Deepgram drops after 2.1 s of it.
      sendBinary(rec, pcmOf([{ words: ['charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet'] }]));
      await dg.waitForClose(conn);
      await aai.waitForConnection(aaiCount + 1);
      sendBinary(rec, pcmOf([{ silenceMs: 1500 }]));
      await rec.until(() => finals(rec).length === 2, 'the second final');
      noError(rec);
      expect(finals(rec)[0]).toBe('Alpha bravo.');
      // Only the last second before the failure was replayed: the start of the utterance is lost.
      expect(finals(rec)[1]).toMatch(/hotel india juliet$/);
      expect(finals(rec)[1]).not.toMatch(/charlie|delta|echo/);
      const m1 = await metrics(g);
      const replayed = m1('gateway_stt_replayed_audio_seconds_total', AAI_BILLED) - m0('gateway_stt_replayed_audio_seconds_total', AAI_BILLED);
      expect(replayed).toBeGreaterThan(0);
      expect(replayed).toBeLessThanOrEqual(1.0001);
      const dropped = m1('gateway_stt_audio_dropped_seconds_total', { provider: 'assemblyai', model: 'universal-streaming' }) - m0('gateway_stt_audio_dropped_seconds_total', { provider: 'assemblyai', model: 'universal-streaming' });
      expect(dropped).toBeGreaterThan(1);
      await settle(g);
    } finally {
      await g.close();
    }
  });
});

describe('configured routes', () => {
  it('an alias routes to its ordered candidates, with the route\'s dead-air time and each candidate\'s own extra', async () => {
    const g = await startTestGateway({
      env: ENV(),
      file: {
        routes: { stt: { 'fast-en': { candidates: ['deepgram/nova-3', { model: AAI, extra: { format_turns: true } }], deadAirS: 0.5 } } },
        failover: { breaker: { failures: 1000 } },
      },
    });
    try {
      const dgCount = dg.connections.length;
      const aaiCount = aai.connections.length;
      const { rec, created } = await openSession(g, { model: 'fast-en', extra: {}, fallback: [] });
      expect(created.model).toBe('deepgram/nova-3');
      const conn = await firstFinalThenFault(rec, dgCount, { deadAir: true });
      await sendPaced(rec, pcmOf(P2));
      await rec.until(() => finals(rec).length === 2, 'the second final');
      // The configured candidate's own extra (format_turns) applies to it.
      expect(finals(rec)).toEqual(['Alpha bravo.', 'Charlie delta echo foxtrot.']);
      noError(rec);
      expect(conn.record.closed).toBe(true);
      const aaiConn = await aai.waitForConnection(aaiCount + 1);
      expect(aaiConn.record.query.format_turns).toEqual(['true']);
      await settle(g);
    } finally {
      await g.close();
    }
  });
});

describe('first-result timeout (firstResultS)', () => {
  it('speech sent and no transcript from the candidate in time: the next one takes over (reason no_result)', async () => {
    const g = await startTestGateway({
      env: ENV(),
      file: {
        // Deepgram without interim results answers only at the end of the utterance (1.2 s of speech).
        routes: { stt: { 'deepgram/nova-3': { candidates: [{ model: 'deepgram/nova-3', extra: { interim_results: false } }, AAI], deadAirS: 0, firstResultS: 0.3 } } },
        failover: { breaker: { failures: 1000 } },
      },
    });
    try {
      const m0 = await metrics(g);
      const aaiCount = aai.connections.length;
      const { rec } = await openSession(g, { extra: {}, fallback: [] });
      await sendPaced(rec, pcmOf(P2), 1);
      await rec.until(() => finals(rec).length === 1, 'a final');
      expect(finals(rec)).toEqual(['charlie delta echo foxtrot']);
      noError(rec);
      await aai.waitForConnection(aaiCount + 1);
      const m1 = await metrics(g);
      const reason = { modality: 'stt', from: 'deepgram', to: 'assemblyai', reason: 'no_result' };
      expect(m1('gateway_fallbacks_total', reason) - m0('gateway_fallbacks_total', reason)).toBe(1);
      await settle(g);
    } finally {
      await g.close();
    }
  });
});

describe('circuit breaker (failover.breaker)', () => {
  it('consecutive failures open the circuit: the provider is skipped (counted); after the cool-down one probe closes it again', async () => {
    const g = await startTestGateway({ env: ENV(), file: { failover: { breaker: { failures: 2, cooldownS: 1 } } } });
    try {
      const skipped = async (): Promise<number> => (await metrics(g))('gateway_candidates_skipped_total', { modality: 'stt', provider: 'deepgram', reason: 'circuit_open' });
      const run = async (): Promise<WsRecorder> => {
        const { rec } = await openSession(g);
        sendBinary(rec, pcmOf(P1));
        await rec.first('final_transcript');
        rec.send({ type: 'session.close' });
        await rec.closed();
        return rec;
      };
      dg.faults.refuseUpgrade = { status: 503, message: 'Service unavailable' };
      const rejected = dg.rejected.length;
      await run();
      await run();
      expect(dg.rejected.length - rejected).toBe(2);
      // Open: Deepgram is not even tried.
      const before = await skipped();
      const aaiCount = aai.connections.length;
      await run();
      expect(dg.rejected.length - rejected).toBe(2);
      expect(aai.connections.length - aaiCount).toBe(1);
      expect(await skipped()).toBe(before + 1);
      // Deepgram recovers; after the cool-down one session probes it and closes the circuit.
      dg.resetFaults();
      await sleep(1100);
      const dgCount = dg.connections.length;
      const probe = await run();
      expect(finals(probe)).toEqual(['Alpha bravo.']);
      expect(dg.connections.length - dgCount).toBe(1);
      const after = await run();
      expect(finals(after)).toEqual(['Alpha bravo.']);
      expect(dg.connections.length - dgCount).toBe(2);
      await settle(g);
    } finally {
      await g.close();
    }
  });
});
