/**
 * The real client against every STT provider: `inference.STT` from @livekit/agents@1.9 through
 * the gateway to each provider's emulator (profiles of the shared conformance suite). The
 * Deepgram-specific failure cases live in livekit-stt.test.ts.
 */
import { AudioFrame } from '@livekit/rtc-node';
import { inference, initializeLogger, stt } from '@livekit/agents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { synthesize } from '../emulators/audio.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { STT_PROFILES, type SttEmu } from '../conformance/stt-profiles.ts';

const RATE = 16000;
const T = stt.SpeechEventType;

beforeAll(() => {
  initializeLogger({ pretty: false, level: 'error' });
});

function pushAudio(stream: { pushFrame(f: AudioFrame): void }, pcm: Buffer): void {
  const per = RATE / 100;
  const samples = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
  for (let i = 0; i < samples.length; i += per) {
    const chunk = samples.slice(i, Math.min(i + per, samples.length));
    stream.pushFrame(new AudioFrame(chunk, RATE, 1, chunk.length));
  }
}

const norm = (s: string | undefined): string =>
  (s ?? '')
    .toLowerCase()
    .replace(/[^a-z\s]/g, '')
    .trim()
    .replace(/\s+/g, ' ');

describe.each(STT_PROFILES)('@livekit/agents inference.STT through the gateway ($name)', (profile) => {
  let emu: SttEmu;
  let gw: TestGateway;

  beforeAll(async () => {
    emu = await profile.start();
    gw = await startTestGateway({ env: emu.env, file: emu.file ?? {} });
    process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
    process.env.LIVEKIT_API_KEY = TEST_KEY;
    process.env.LIVEKIT_API_SECRET = TEST_SECRET;
  });
  afterAll(async () => {
    await gw?.close();
    await emu?.close();
  });

  it('transcribes utterances into finals, reports usage, and ends without error', async () => {
    process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
    const pcm = synthesize(
      [{ silenceMs: 400 }, { words: ['sierra', 'tango'] }, { silenceMs: profile.endOfUtteranceMs }, { words: ['uniform', 'victor'] }, { silenceMs: profile.endOfUtteranceMs }],
      { sampleRate: RATE },
    );
    const model = new inference.STT({ model: profile.model, language: 'en', sampleRate: RATE } as never);
    const errors: unknown[] = [];
    model.on('error' as never, ((e: unknown) => errors.push(e)) as never);
    const stream = model.stream();
    // Pushed faster than real time: give the upstream time to open before the 6 s burst, so the
    // bounded connect buffer (5 s) keeps it all.
    await new Promise((r) => setTimeout(r, 500));
    pushAudio(stream, pcm);
    stream.endInput();
    const events: stt.SpeechEvent[] = [];
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      (async () => {
        for await (const ev of stream) events.push(ev);
      })(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`stream did not end; got ${events.map((e) => e.type).join(',')}`)), 20_000);
      }),
    ]).finally(() => clearTimeout(timer));
    expect(errors).toEqual([]);
    const finals = events.filter((e) => e.type === T.FINAL_TRANSCRIPT).map((e) => norm(e.alternatives?.[0]?.text));
    expect(finals).toEqual(['sierra tango', 'uniform victor']);
    const usage = events.filter((e) => e.type === T.RECOGNITION_USAGE).reduce((s, e) => s + (e.recognitionUsage?.audioDuration ?? 0), 0);
    expect(Math.abs(usage - pcm.length / (RATE * 2))).toBeLessThanOrEqual(0.05);
    const [provider, m] = profile.model.split('/');
    const billed = metricValue(await gw.metricsText(), 'gateway_stt_audio_seconds_total', { provider: provider ?? '', model: m ?? '', api_key: TEST_KEY });
    expect(Math.abs((billed ?? 0) - pcm.length / (RATE * 2))).toBeLessThanOrEqual(0.05);
    await model.close();
  });
});
