/**
 * Failover with the real client: `inference.STT` from @livekit/agents@1.9 with a `fallback`
 * model, through the gateway, to the Deepgram emulator (primary) and the AssemblyAI emulator
 * (fallback). Deepgram is dropped (TCP, no close frame) in the middle of an utterance: the
 * client still gets the exact final transcripts, no error, and never reconnects (one gateway
 * session, one socket); the billed audio equals what the client sent.
 */
import { AudioFrame } from '@livekit/rtc-node';
import { inference, initializeLogger, stt } from '@livekit/agents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { synthesize, type ScriptItem } from '../emulators/audio.ts';
import { startAssemblyAiEmulator, type AssemblyAiEmulator } from '../emulators/assemblyai.ts';
import { startDeepgramEmulator, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';

const RATE = 16000;
const T = stt.SpeechEventType;

let dg: DeepgramEmulator;
let aai: AssemblyAiEmulator;
let gw: TestGateway;

beforeAll(async () => {
  initializeLogger({ pretty: false, level: 'error' });
  dg = await startDeepgramEmulator({ interimIntervalMs: 500 });
  aai = await startAssemblyAiEmulator();
  gw = await startTestGateway({
    env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: dg.url, ASSEMBLYAI_API_KEY: 'aai-test-key', ASSEMBLYAI_BASE_URL: aai.url },
  });
  process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
  process.env.LIVEKIT_API_KEY = TEST_KEY;
  process.env.LIVEKIT_API_SECRET = TEST_SECRET;
});

afterAll(async () => {
  await gw?.close();
  await dg?.close();
  await aai?.close();
});

function pushAudio(stream: { pushFrame(f: AudioFrame): void }, pcm: Buffer): void {
  const per = RATE / 100;
  const samples = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
  for (let i = 0; i < samples.length; i += per) {
    const chunk = samples.slice(i, Math.min(i + per, samples.length));
    stream.pushFrame(new AudioFrame(chunk, RATE, 1, chunk.length));
  }
}

async function waitFor(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('@livekit/agents inference.STT with a fallback model, primary dropped mid-utterance', () => {
  it('yields the exact final transcripts with no error and no client reconnect', async () => {
    const p1: ScriptItem[] = [{ silenceMs: 300 }, { words: ['hello', 'world'] }, { silenceMs: 800 }];
    const p2: ScriptItem[] = [{ words: ['alpha', 'bravo', 'charlie', 'delta'] }, { silenceMs: 1500 }];
    const pcm1 = synthesize(p1, { sampleRate: RATE });
    const pcm2 = synthesize(p2, { sampleRate: RATE });
    const sentSeconds = (pcm1.length + pcm2.length) / (RATE * 2);
    const dgCount = dg.connections.length;
    const aaiCount = aai.connections.length;
    const recordsBefore = gw.usage.records.length;

    const model = new inference.STT({ model: 'deepgram/nova-3', fallback: 'assemblyai/universal-streaming', language: 'en', sampleRate: RATE });
    const errors: unknown[] = [];
    model.on('error' as never, ((e: unknown) => errors.push(e)) as never);
    const stream = model.stream();
    const events: stt.SpeechEvent[] = [];
    const reading = (async () => {
      for await (const ev of stream) events.push(ev);
    })();
    const finals = (): string[] => events.filter((e) => e.type === T.FINAL_TRANSCRIPT).map((e) => e.alternatives?.[0]?.text ?? '');

    pushAudio(stream, pcm1);
    await waitFor(() => finals().length === 1, 'the first final (from Deepgram)');
    const conn = await dg.waitForConnection(dgCount + 1);
    // Drop Deepgram 0.5 s into the next utterance ("alpha bravo ...").
    conn.session.faults.dropAfterAudioSec = pcm1.length / (RATE * 2) + 0.5;
    pushAudio(stream, pcm2);
    stream.endInput();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      reading,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`stream did not end; got ${events.map((e) => e.type).join(',')}`)), 20_000);
      }),
    ]).finally(() => clearTimeout(timer));

    expect(errors).toEqual([]);
    expect(conn.record.close?.by).toBe('drop');
    expect(finals()).toEqual(['Hello world.', 'alpha bravo charlie delta']);
    // No client-side reconnect: one gateway session for the whole stream, one upstream per provider.
    expect(dg.connections.length - dgCount).toBe(1);
    expect(aai.connections.length - aaiCount).toBe(1);
    await waitFor(() => gw.gateway.sessions.size === 0, 'the gateway session to end', 5000);
    const records = gw.usage.records.slice(recordsBefore);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ outcome: 'ok', fallbackChain: ['deepgram/nova-3', 'assemblyai/universal-streaming'] });
    // Billed once: the client's own count, the gateway's record and /metrics agree.
    const usage = events.filter((e) => e.type === T.RECOGNITION_USAGE).reduce((s, e) => s + (e.recognitionUsage?.audioDuration ?? 0), 0);
    expect(Math.abs(usage - sentSeconds)).toBeLessThanOrEqual(0.05);
    expect(Math.abs((records[0]?.audioSeconds ?? 0) - sentSeconds)).toBeLessThanOrEqual(0.05);
    const text = await gw.metricsText();
    const billed =
      (metricValue(text, 'gateway_stt_audio_seconds_total', { provider: 'deepgram', model: 'nova-3', api_key: TEST_KEY }) ?? 0) +
      (metricValue(text, 'gateway_stt_audio_seconds_total', { provider: 'assemblyai', model: 'universal-streaming', api_key: TEST_KEY }) ?? 0);
    expect(billed).toBeCloseTo(records[0]?.audioSeconds ?? -1, 6);
    expect(metricValue(text, 'gateway_stt_replayed_audio_seconds_total', { provider: 'assemblyai', model: 'universal-streaming', api_key: TEST_KEY })).toBeGreaterThan(0);
    await model.close();
  });
});
