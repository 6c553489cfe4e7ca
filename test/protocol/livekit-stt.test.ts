/**
 * Conformance with the real client: `inference.STT` from @livekit/agents@1.9 (+ @livekit/rtc-node),
 * configured only through LIVEKIT_INFERENCE_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET, streaming
 * through the gateway to the Deepgram emulator.
 */
import { AudioFrame } from '@livekit/rtc-node';
import { inference, initializeLogger, stt } from '@livekit/agents';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { scriptTimings, synthesize, type ScriptItem } from '../emulators/audio.ts';
import { startDeepgramEmulator, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';

const SAMPLE_RATE = 16000;

let emu: DeepgramEmulator;
let gw: TestGateway;

beforeAll(async () => {
  initializeLogger({ pretty: false, level: 'error' });
  emu = await startDeepgramEmulator({ interimIntervalMs: 500 });
  gw = await startTestGateway({ env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: emu.url } });
  process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
  process.env.LIVEKIT_API_KEY = TEST_KEY;
  process.env.LIVEKIT_API_SECRET = TEST_SECRET;
});

afterAll(async () => {
  await gw?.close();
  await emu?.close();
});

afterEach(() => {
  emu.resetFaults();
});

/** Push PCM as 10 ms AudioFrames, like a LiveKit room track delivers them. */
function pushAudio(stream: { pushFrame(f: AudioFrame): void }, pcm: Buffer): void {
  const samplesPer = SAMPLE_RATE / 100;
  const samples = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
  for (let i = 0; i < samples.length; i += samplesPer) {
    const chunk = samples.slice(i, Math.min(i + samplesPer, samples.length));
    stream.pushFrame(new AudioFrame(chunk, SAMPLE_RATE, 1, chunk.length));
  }
}

interface Collected {
  events: stt.SpeechEvent[];
  errors: Array<{ error: Error & { statusCode?: number; retryable?: boolean }; recoverable: boolean }>;
}

function watchErrors(model: { on(ev: 'error', cb: (e: never) => void): unknown }, into: Collected['errors']): void {
  model.on('error', ((e: { error: Error; recoverable: boolean }) => into.push(e)) as never);
}

async function collect(stream: AsyncIterable<stt.SpeechEvent>, into: stt.SpeechEvent[], timeoutMs: number): Promise<void> {
  const done = (async () => {
    for await (const ev of stream) into.push(ev);
  })();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`stream did not finish in ${timeoutMs} ms; got ${into.map((e) => e.type).join(',')}`)), timeoutMs);
  });
  try {
    await Promise.race([done, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const T = stt.SpeechEventType;

describe('@livekit/agents inference.STT through the gateway (Deepgram)', () => {
  it('streams interim then final transcripts with words and times, reports usage, and finishes without reconnect or error', async () => {
    const script: ScriptItem[] = [
      { silenceMs: 500 },
      { words: ['hello', 'world', 'alpha', 'bravo'] },
      { silenceMs: 800 },
      { words: ['charlie', 'delta'] },
      { silenceMs: 100 },
    ];
    const pcm = synthesize(script, { sampleRate: SAMPLE_RATE });
    const timings = scriptTimings(script, { sampleRate: SAMPLE_RATE });
    const sentSeconds = pcm.length / (SAMPLE_RATE * 2);
    const connectionsBefore = emu.connections.length;
    const recordsBefore = gw.usage.records.length;

    const model = new inference.STT({ model: 'deepgram/nova-3', language: 'en', sampleRate: SAMPLE_RATE });
    const got: Collected = { events: [], errors: [] };
    watchErrors(model, got.errors);
    const stream = model.stream();
    pushAudio(stream, pcm);
    stream.endInput();
    await collect(stream, got.events, 20_000);

    expect(got.errors).toEqual([]);
    const types = got.events.map((e) => e.type);
    const finals = got.events.filter((e) => e.type === T.FINAL_TRANSCRIPT);
    const interims = got.events.filter((e) => e.type === T.INTERIM_TRANSCRIPT);
    expect(finals.map((e) => e.alternatives?.[0]?.text)).toEqual(['Hello world alpha bravo.', 'Charlie delta.']);
    expect(interims.length).toBeGreaterThan(0);
    expect(types.indexOf(T.INTERIM_TRANSCRIPT)).toBeLessThan(types.indexOf(T.FINAL_TRANSCRIPT));
    expect(types).toContain(T.START_OF_SPEECH);
    expect(types).toContain(T.END_OF_SPEECH);

    // Word timings on the socket's timeline (the client adds its own small start offset).
    const first = finals[0]?.alternatives?.[0];
    const expectedWords = timings.utterances[0]?.words ?? [];
    expect(first?.words?.map((w) => w.text.trim().toLowerCase().replace(/\.$/, ''))).toEqual(expectedWords.map((w) => w.word));
    for (const [i, w] of (first?.words ?? []).entries()) {
      expect(w.startTime).toBeCloseTo(expectedWords[i]?.start ?? -1, 1);
      expect(w.endTime).toBeCloseTo(expectedWords[i]?.end ?? -1, 1);
    }
    expect(first?.startTime).toBeCloseTo(timings.utterances[0]?.start ?? -1, 1);
    expect(first?.endTime).toBeCloseTo(timings.utterances[0]?.end ?? -1, 1);
    const second = finals[1]?.alternatives?.[0];
    expect(second?.startTime).toBeCloseTo(timings.utterances[1]?.start ?? -1, 1);

    // RECOGNITION_USAGE: the client's own count of audio sent, reported before finals.
    const usage = got.events.filter((e) => e.type === T.RECOGNITION_USAGE);
    const usageSeconds = usage.reduce((s, e) => s + (e.recognitionUsage?.audioDuration ?? 0), 0);
    expect(usageSeconds).toBeGreaterThan(0);
    expect(Math.abs(usageSeconds - sentSeconds)).toBeLessThanOrEqual(0.05);

    // finalize + close completed on the first connection: no reconnect.
    expect(emu.connections.length - connectionsBefore).toBe(1);
    const conn = emu.connections.at(-1);
    expect(conn?.counts.finalize).toBe(1);
    expect(conn?.counts.closeStream).toBe(1);
    for (let i = 0; i < 50 && gw.gateway.sessions.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(gw.gateway.sessions.size).toBe(0);
    const records = gw.usage.records.slice(recordsBefore);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ provider: 'deepgram', model: 'nova-3', outcome: 'ok', apiKey: TEST_KEY });

    // /metrics shows the audio seconds sent, within one 50 ms frame.
    const billed = metricValue(await gw.metricsText(), 'gateway_stt_audio_seconds_total', {
      provider: 'deepgram',
      model: 'nova-3',
      api_key: TEST_KEY,
    });
    expect(billed).toBeDefined();
    expect(Math.abs((billed ?? 0) - sentSeconds)).toBeLessThanOrEqual(0.05);
    expect(records[0]?.audioSeconds).toBeCloseTo(sentSeconds, 2);
    await model.close();
  });

  it('a wrong secret fails fast with a non-retryable 401 and no retries', async () => {
    const before = metricValue(await gw.metricsText(), 'gateway_auth_failures_total', { reason: 'bad_signature' }) ?? 0;
    const model = new inference.STT({ model: 'deepgram/nova-3', apiSecret: 'not-the-secret', sampleRate: SAMPLE_RATE });
    const got: Collected = { events: [], errors: [] };
    watchErrors(model, got.errors);
    const started = Date.now();
    const stream = model.stream();
    pushAudio(stream, synthesize([{ silenceMs: 200 }], { sampleRate: SAMPLE_RATE }));
    const deadline = Date.now() + 5000;
    while (got.errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const elapsed = Date.now() - started;
    expect(got.errors).toHaveLength(1);
    expect(got.errors[0]?.error.statusCode).toBe(401);
    expect(got.errors[0]?.error.retryable).toBe(false);
    expect(got.errors[0]?.recoverable).toBe(false);
    expect(elapsed).toBeLessThan(2000); // a retry would wait 0.1 s, then 2 s per attempt
    await new Promise((r) => setTimeout(r, 300));
    const after = metricValue(await gw.metricsText(), 'gateway_auth_failures_total', { reason: 'bad_signature' }) ?? 0;
    expect(after - before).toBe(1);
    stream.close();
    await model.close();
  });

  it('a provider 429 surfaces as a retryable client error (and the client retries)', async () => {
    emu.faults.refuseUpgrade = { status: 429, message: 'Too many requests' };
    const rejectedBefore = emu.rejected.length;
    const model = new inference.STT({ model: 'deepgram/nova-3', sampleRate: SAMPLE_RATE });
    const got: Collected = { events: [], errors: [] };
    watchErrors(model, got.errors);
    const stream = model.stream({ connOptions: { maxRetry: 1, retryIntervalMs: 50, timeoutMs: 5000 } });
    pushAudio(stream, synthesize([{ silenceMs: 300 }], { sampleRate: SAMPLE_RATE }));
    const deadline = Date.now() + 10_000;
    while (got.errors.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(got.errors).toHaveLength(1);
    const err = got.errors[0]?.error;
    expect(err?.statusCode).toBe(429);
    expect(err?.retryable).toBe(true);
    // Retryable: the client tried twice (maxRetry 1), and each attempt reached the provider.
    expect(emu.rejected.length - rejectedBefore).toBe(2);
    stream.close();
    await model.close();
  });
});
