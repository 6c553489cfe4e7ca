/**
 * Conformance with the real client: `inference.TTS` from @livekit/agents@1.9, configured only
 * through LIVEKIT_INFERENCE_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET, synthesizing through the
 * gateway with each TTS provider's emulator behind it.
 */
import { inference, initializeLogger } from '@livekit/agents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MS_PER_CHAR, TTS_PROFILES, type TtsEmu } from '../conformance/tts-profiles.ts';
import { TEST_KEY, TEST_SECRET, startTestGateway, type TestGateway } from '../helpers/gateway.ts';

const RATE = 24000;

beforeAll(() => {
  initializeLogger({ pretty: false, level: 'silent' });
});

interface Frame {
  frame: { data: Int16Array; sampleRate: number };
  final: boolean;
  timedTranscripts?: { text: string; startTime: number; endTime: number }[];
}

interface Run {
  frames: Frame[];
  samples: number;
  words: { text: string; startTime: number; endTime: number }[];
}

type AnyTts = inference.TTS<string>;

/** One generation through the client: push text, end input, read frames until the end. */
async function synthesize(tts: AnyTts, text: string, timeoutMs = 15_000): Promise<Run> {
  const stream = tts.stream();
  stream.pushText(text);
  stream.endInput();
  const frames: Frame[] = [];
  const read = (async () => {
    for await (const ev of stream as AsyncIterable<unknown>) {
      if (typeof ev === 'symbol') break;
      frames.push(ev as Frame);
    }
  })();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    read,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`synthesis did not finish in ${timeoutMs} ms`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
  return {
    frames,
    samples: frames.reduce((n, f) => n + f.frame.data.length, 0),
    words: frames.flatMap((f) => f.timedTranscripts ?? []),
  };
}

function errorsOf(tts: AnyTts): { error: Error; recoverable: boolean }[] {
  const errors: { error: Error; recoverable: boolean }[] = [];
  tts.on('error' as never, ((e: { error: Error; recoverable: boolean }) => errors.push(e)) as never);
  return errors;
}

describe.each(TTS_PROFILES)('@livekit/agents inference.TTS through the gateway ($provider)', (profile) => {
  let emu: TtsEmu;
  let gw: TestGateway;

  beforeAll(async () => {
    emu = await profile.start();
    gw = await startTestGateway({ env: emu.env });
    process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
    process.env.LIVEKIT_API_KEY = TEST_KEY;
    process.env.LIVEKIT_API_SECRET = TEST_SECRET;
  });
  afterAll(async () => {
    await gw?.close();
    await emu?.close();
  });

  function makeTts(modelOptions: Record<string, unknown> = {}, maxRetry = 3): AnyTts {
    return new inference.TTS({
      model: profile.model,
      sampleRate: RATE,
      modelOptions,
      connOptions: { maxRetry, retryIntervalMs: 100, timeoutMs: 10_000 },
    } as never) as AnyTts;
  }

  it('runs several generations on one pooled socket with audio of the right length', async () => {
    const tts = makeTts();
    const errors = errorsOf(tts);
    const recordsBefore = gw.usage.records.filter((r) => r.modality === 'tts').length;
    const texts = ['Hello there.', 'How can I help you today?', 'Goodbye.'];
    for (const text of texts) {
      const run = await synthesize(tts, text);
      // The client sends each sentence with a trailing space; every character is 60 ms of audio.
      expect(run.samples).toBe(((text.length + 1) * MS_PER_CHAR * RATE) / 1000);
      expect(run.frames.at(-1)?.final).toBe(true);
      for (const f of run.frames) expect(f.frame.sampleRate).toBe(RATE);
    }
    expect(errors).toEqual([]);
    await tts.close();
    // One gateway socket served the three generations.
    await expect.poll(() => gw.usage.records.filter((r) => r.modality === 'tts').length).toBe(recordsBefore + 1);
    const rec = gw.usage.records.filter((r) => r.modality === 'tts').at(-1);
    expect(rec?.generations).toBe(3);
    expect(rec?.characters).toBe(texts.reduce((n, t) => n + t.length + 1, 0));
  });

  if (profile.alignmentExtra !== null) {
    it('surfaces word alignment when the provider flag is set', async () => {
      const tts = makeTts(profile.alignmentExtra ?? {});
      const run = await synthesize(tts, 'Good morning world.');
      await tts.close();
      const words = run.words.map((w) => w.text.trim().replace(/[^\w]/g, ''));
      expect(words).toEqual(['Good', 'morning', 'world']);
      const morning = run.words[1];
      expect(morning?.startTime).toBeCloseTo((5 * MS_PER_CHAR) / 1000, 2);
    });
  }

  it('cancels the upstream when the client interrupts a generation', async () => {
    emu.setFirstAudioDelay(300);
    const tts = makeTts();
    const stream = tts.stream();
    stream.pushText('This is a long answer that the user will interrupt before it is spoken.');
    stream.flush();
    await new Promise((r) => setTimeout(r, 150));
    stream.close();
    await emu.waitCancelled();
    await tts.close();
    emu.setFirstAudioDelay(20);
  });

  it('reports a provider error as a client error', async () => {
    emu.setRefusal(429);
    const fresh = await startTestGateway({ env: emu.env });
    process.env.LIVEKIT_INFERENCE_URL = fresh.baseUrl;
    try {
      const tts = makeTts({}, 0);
      const errors = errorsOf(tts);
      const run = await synthesize(tts, 'Hello.');
      expect(run.samples).toBe(0);
      expect(errors.length).toBe(1);
      expect(errors[0]?.error.message).toMatch(/LiveKit TTS returned error: .*(rate limit|429)/);
      await tts.close();
    } finally {
      emu.setRefusal(null);
      process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
      await fresh.close();
    }
  });
});

describe('@livekit/agents inference.TTS: a slow provider', () => {
  it('completes a generation whose first audio takes longer than the client receive timeout (10 s)', async () => {
    const profile = TTS_PROFILES.find((p) => p.provider === 'cartesia');
    if (!profile) throw new Error('cartesia profile missing');
    const emu = await profile.start();
    const gw = await startTestGateway({ env: emu.env });
    process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
    try {
      emu.setFirstAudioDelay(11_000);
      const tts = new inference.TTS({ model: profile.model, sampleRate: RATE, connOptions: { maxRetry: 0, retryIntervalMs: 100, timeoutMs: 10_000 } } as never) as AnyTts;
      const errors = errorsOf(tts);
      const t0 = Date.now();
      const run = await synthesize(tts, 'Slow.', 20_000);
      expect(Date.now() - t0).toBeGreaterThan(10_000);
      expect(errors).toEqual([]);
      expect(run.samples).toBe((6 * MS_PER_CHAR * RATE) / 1000);
      await tts.close();
    } finally {
      await gw.close();
      await emu.close();
    }
  }, 30_000);
});
