/**
 * TTS failover with a raw `ws` client (docs/failover.md "TTS"): the client's `fallback.models`
 * and configured `routes.tts` candidates take over a generation when its upstream fails, before
 * the first audio with the whole text, after it from the first text not yet spoken. Faults come
 * from the emulators (Cartesia errorAfterChars / stallAfterChars / refused upgrades, Deepgram
 * closeAfterChars, OpenAI failed requests). The client's audio is decoded character by character
 * (each character of the emulators' speech is one 60 ms tone), so "every character exactly once"
 * is checked on what the client heard, not only on byte counts.
 */
import { inference, initializeLogger } from '@livekit/agents';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCartesiaEmulator, type CartesiaEmulator } from '../emulators/cartesia.ts';
import { startDeepgramSpeakEmulator, type DeepgramSpeakConnection, type DeepgramSpeakEmulator } from '../emulators/deepgram-speak.ts';
import { startElevenLabsEmulator, type ElevenLabsEmulator } from '../emulators/elevenlabs.ts';
import { startOpenAiSpeechEmulator, type OpenAiSpeechEmulator } from '../emulators/openai-speech.ts';
import { charFrequency, dominantFrequency } from '../emulators/tts-audio.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { MS_PER_CHAR, audioOf, closeAllTtsClients, expectedBytes, generation, startTts, transcript, untilEnd, waitUntil } from '../helpers/tts.ts';

const RATE = 24000;
const SENTENCES: [string, string, string] = ['The first sentence is here. ', 'The second sentence follows. ', 'And a third one ends it. '];
const TEXT = SENTENCES.join('');
const DEEPGRAM = { model: 'deepgram/aura-2', voice: 'thalia', extra: {} };
const OPENAI = { model: 'openai/tts-1', voice: 'alloy', extra: {} };

let cartesia: CartesiaEmulator;
let deepgram: DeepgramSpeakEmulator;
let openai: OpenAiSpeechEmulator;
let elevenlabs: ElevenLabsEmulator;
let env: Record<string, string>;
const gateways: TestGateway[] = [];

beforeAll(async () => {
  initializeLogger({ pretty: false, level: 'silent' });
  cartesia = await startCartesiaEmulator({ msPerChar: MS_PER_CHAR });
  deepgram = await startDeepgramSpeakEmulator({ msPerChar: MS_PER_CHAR });
  openai = await startOpenAiSpeechEmulator({ msPerChar: MS_PER_CHAR });
  // One character per audio message, so its fault cuts exactly where asked.
  elevenlabs = await startElevenLabsEmulator({ msPerChar: MS_PER_CHAR, chunkMs: MS_PER_CHAR });
  env = {
    ELEVENLABS_API_KEY: 'el-test-key',
    ELEVENLABS_BASE_URL: elevenlabs.url,
    CARTESIA_API_KEY: 'cartesia-test-key',
    CARTESIA_BASE_URL: cartesia.url,
    DEEPGRAM_API_KEY: 'dg-test-key',
    DEEPGRAM_BASE_URL: deepgram.url,
    OPENAI_API_KEY: 'sk-test-key',
    OPENAI_BASE_URL: `${openai.url}/v1`,
  };
});

afterEach(async () => {
  closeAllTtsClients();
  for (const g of gateways.splice(0)) await g.close();
  cartesia.resetFaults();
  deepgram.resetFaults();
  openai.resetFaults();
  elevenlabs.resetFaults();
});

afterAll(async () => {
  await elevenlabs?.close();
  await cartesia?.close();
  await deepgram?.close();
  await openai?.close();
});

async function gateway(file: Record<string, unknown> = {}): Promise<TestGateway> {
  const gw = await startTestGateway({ env, file });
  gateways.push(gw);
  return gw;
}

const FREQS = Array.from({ length: 32 }, (_, i) => 200 + i * 50);

/** What the client heard: one entry per 60 ms character, the tone's frequency (0 = silence). */
function heard(pcm: Buffer): number[] {
  const win = Math.round((RATE * MS_PER_CHAR) / 1000) * 2;
  const out: number[] = [];
  for (let i = 0; i + win <= pcm.length; i += win) {
    const w = pcm.subarray(i, i + win);
    let sum = 0;
    for (let j = 0; j < w.length; j += 2) sum += w.readInt16LE(j) ** 2;
    out.push(Math.sqrt(sum / (w.length / 2)) < 1000 ? 0 : dominantFrequency(w, RATE, FREQS));
  }
  return out;
}

/**
 * What the client heard when the first provider stopped at an arbitrary byte (not on a
 * character boundary): its audio (`firstBytes`) and the takeover's, each from its own start.
 */
function heardAcross(pcm: Buffer, firstBytes: number): { first: number[]; second: number[] } {
  return { first: heard(pcm.subarray(0, firstBytes)), second: heard(pcm.subarray(firstBytes)) };
}

/** The tones of a text, as `heard` reports them. */
function tones(text: string): number[] {
  return [...text].map((ch) => (/\s/u.test(ch) ? 0 : charFrequency(ch)));
}

/** Deepgram sockets opened since `n` (the takeover's socket is the last one). */
function deepgramSince(n: number): DeepgramSpeakConnection[] {
  return deepgram.connections.slice(n);
}

const chars = (s: string): number => [...s].length;

describe('fallback before the first audio', () => {
  it('Cartesia refuses the connection: Deepgram speaks the whole generation, the client sees no error', async () => {
    const gw = await gateway();
    cartesia.faults.refuseUpgrade = { status: 503 };
    const dg = deepgram.connections.length;
    const { rec, id } = await startTts(gw, { fallback: { models: [DEEPGRAM] } });
    const msgs = await generation(rec, SENTENCES);
    expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(heard(audioOf(msgs))).toEqual(tones(TEXT));
    const takeover = deepgramSince(dg).at(-1) as DeepgramSpeakConnection;
    expect(takeover.speaks.map((s) => s.text)).toEqual(SENTENCES);
    expect(takeover.params.model).toBe('aura-2-thalia-en');
    const text = await gw.metricsText();
    expect(metricValue(text, 'gateway_fallbacks_total', { modality: 'tts', from: 'cartesia', to: 'deepgram', reason: 'connect_failed' })).toBe(1);
    expect(metricValue(text, 'gateway_provider_errors_total', { provider: 'cartesia', code: '502' })).toBe(1);
    // Billing: characters sent to each provider (Cartesia got none).
    expect(metricValue(text, 'gateway_tts_characters_total', { provider: 'deepgram', model: 'aura-2' })).toBe(chars(TEXT));
    expect(metricValue(text, 'gateway_tts_characters_total', { provider: 'cartesia', model: 'sonic-3' })).toBeUndefined();
    rec.ws.close();
    await waitUntil(() => gw.usage.records.some((r) => r.sessionId === id), 'usage record');
    expect(gw.usage.records.find((r) => r.sessionId === id)).toMatchObject({
      provider: 'deepgram',
      model: 'aura-2',
      fallbackChain: ['cartesia/sonic-3', 'deepgram/aura-2'],
      characters: chars(TEXT),
      outcome: 'ok',
    });
  });

  it('Cartesia reports an error before any audio: OpenAI speaks the whole generation', async () => {
    const gw = await gateway();
    const reqs = openai.requests.length;
    const { rec } = await startTts(gw, { fallback: { models: [OPENAI] } });
    cartesia.ttsFaults.errorAfterChars = { chars: 0, statusCode: 500 };
    const msgs = await generation(rec, SENTENCES);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(heard(audioOf(msgs))).toEqual(tones(TEXT));
    expect(openai.requests.slice(reqs).map((r) => r.text)).toEqual(SENTENCES);
    expect(openai.requests.slice(reqs).every((r) => (r.body as { voice?: string }).voice === 'alloy')).toBe(true);
    expect(metricValue(await gw.metricsText(), 'gateway_fallbacks_total', { modality: 'tts', from: 'cartesia', to: 'openai', reason: 'error' })).toBe(1);
    // The next generation starts on Cartesia again (it recovered).
    cartesia.resetFaults();
    const again = await generation(rec, ['Back on Cartesia. ']);
    expect(again.at(-1)?.type).toBe('done');
    expect(openai.requests.length).toBe(reqs + SENTENCES.length);
  });

  it('Cartesia accepts the text but sends no audio: after failover.tts.firstAudioS Deepgram takes over', async () => {
    const gw = await gateway({ failover: { tts: { firstAudioS: 1 } } });
    const dg = deepgram.connections.length;
    const { rec } = await startTts(gw, { fallback: { models: [DEEPGRAM] } });
    cartesia.ttsFaults.stallAfterChars = 0;
    const t0 = performance.now();
    const msgs = await generation(rec, SENTENCES);
    const elapsed = performance.now() - t0;
    expect(msgs.at(-1)?.type).toBe('done');
    expect(heard(audioOf(msgs))).toEqual(tones(TEXT));
    // Checked by the 1 s session tick: switched between 1 and ~3 s after the flush.
    expect(elapsed).toBeGreaterThan(1000);
    expect(elapsed).toBeLessThan(4500);
    expect((deepgramSince(dg).at(-1) as DeepgramSpeakConnection).speaks.map((s) => s.text).join('')).toBe(TEXT);
    expect(metricValue(await gw.metricsText(), 'gateway_fallbacks_total', { modality: 'tts', from: 'cartesia', to: 'deepgram', reason: 'no_result' })).toBe(1);
  });

  it('the takeover link gets keep-alives while the client is slow to send more text (ElevenLabs inactivity_timeout)', async () => {
    const gw = await gateway();
    const el = elevenlabs.connections.length;
    const { rec } = await startTts(gw, {
      fallback: { models: [{ model: 'elevenlabs/eleven_flash_v2_5', voice: 'Xb7hH8MSUJpSbSDYk0k2', extra: { inactivity_timeout: 5 } }] },
    });
    cartesia.ttsFaults.errorAfterChars = { chars: 0, statusCode: 500 };
    const from = rec.messages.length;
    rec.send(transcript(SENTENCES[0]));
    await waitUntil(() => elevenlabs.connections.length > el, 'the ElevenLabs takeover socket');
    const takeover = elevenlabs.connections.at(-1) as (typeof elevenlabs.connections)[number];
    // No more text for a while (the client's LLM is slow): the gateway's keep-alive is due every
    // 5 s / 3; without it ElevenLabs ends the socket after 5 s of silence.
    await waitUntil(() => takeover.counts.keepAlive > 0, 'a keep-alive on the takeover socket', 4000);
    rec.send(transcript(SENTENCES[1]));
    rec.send(transcript(SENTENCES[2]));
    rec.send({ type: 'session.flush' });
    const msgs = await untilEnd(rec, from);
    expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(takeover.errors).toEqual([]);
    expect(heard(audioOf(msgs))).toEqual(tones(TEXT));
  });

  it('a configured route lists the candidates; its voices come with it', async () => {
    const gw = await gateway({
      routes: { tts: { 'my-voice': { candidates: ['cartesia/sonic-3', { model: 'deepgram/aura-2', voice: 'orion' }] } } },
    });
    cartesia.faults.refuseUpgrade = { status: 500 };
    const dg = deepgram.connections.length;
    const { rec } = await startTts(gw, { model: 'my-voice' });
    const msgs = await generation(rec, ['Routed speech. ']);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(audioOf(msgs).length).toBe(expectedBytes(chars('Routed speech. ')));
    expect((deepgramSince(dg).at(-1) as DeepgramSpeakConnection).params.model).toBe('aura-2-orion-en');
  });
});

describe('failover after audio was sent: continue with the unspoken text', () => {
  it('Cartesia fails mid-sentence: word timings say what was spoken, Deepgram speaks only the rest', async () => {
    const gw = await gateway();
    const dg = deepgram.connections.length;
    const { rec } = await startTts(gw, { fallback: { models: [DEEPGRAM] } });
    // Fails after "The first sentence is here. The second " (39 characters, a word boundary).
    const spoken = SENTENCES[0] + 'The second ';
    cartesia.ttsFaults.errorAfterChars = { chars: chars(spoken), statusCode: 500 };
    const msgs = await generation(rec, SENTENCES);
    expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    const takeover = deepgramSince(dg).at(-1) as DeepgramSpeakConnection;
    // Only the unspoken text, chunk by chunk as the client sent it.
    expect(takeover.speaks.map((s) => s.text)).toEqual(['sentence follows. ', SENTENCES[2]]);
    // Every character heard exactly once, in order.
    expect(heard(audioOf(msgs))).toEqual(tones(TEXT));
    expect(audioOf(msgs).length).toBe(expectedBytes(chars(TEXT)));
    // Word timings were asked for internally (to know where to continue), not forwarded: the client did not ask.
    expect(msgs.filter((m) => m.type === 'output_alignment')).toEqual([]);
    const ctx = cartesia.ttsConnections().flatMap((c) => c.contexts).at(-1);
    expect(ctx?.request.addTimestamps).toBe(true);
    // Billing: each provider's characters under its own labels.
    const text = await gw.metricsText();
    expect(metricValue(text, 'gateway_tts_characters_total', { provider: 'cartesia', model: 'sonic-3' })).toBe(chars(TEXT));
    expect(metricValue(text, 'gateway_tts_characters_total', { provider: 'deepgram', model: 'aura-2' })).toBe(chars(TEXT) - chars(spoken));
    expect(metricValue(text, 'gateway_fallbacks_total', { modality: 'tts', from: 'cartesia', to: 'deepgram', reason: 'error' })).toBe(1);
  });

  it('Cartesia goes quiet mid-generation (dead air): after failover.tts.deadAirS Deepgram speaks the rest', async () => {
    const gw = await gateway({ failover: { tts: { deadAirS: 1 } } });
    const dg = deepgram.connections.length;
    const { rec } = await startTts(gw, { fallback: { models: [DEEPGRAM] } });
    const spoken = SENTENCES[0] + 'The second ';
    cartesia.ttsFaults.stallAfterChars = chars(spoken);
    const msgs = await generation(rec, SENTENCES);
    expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    expect((deepgramSince(dg).at(-1) as DeepgramSpeakConnection).speaks.map((x) => x.text)).toEqual(['sentence follows. ', SENTENCES[2]]);
    expect(heard(audioOf(msgs))).toEqual(tones(TEXT));
    expect(metricValue(await gw.metricsText(), 'gateway_fallbacks_total', { modality: 'tts', from: 'cartesia', to: 'deepgram', reason: 'dead_air' })).toBe(1);
  });

  it('Cartesia fails inside a word: that word is spoken again in full (at most one word repeats)', async () => {
    const gw = await gateway();
    const dg = deepgram.connections.length;
    const { rec } = await startTts(gw, { fallback: { models: [DEEPGRAM] }, extra: { add_timestamps: true } });
    const cut = chars(SENTENCES[0] + 'The second sen');
    cartesia.ttsFaults.errorAfterChars = { chars: cut, statusCode: 500 };
    const msgs = await generation(rec, SENTENCES);
    expect(msgs.at(-1)?.type).toBe('done');
    expect((deepgramSince(dg).at(-1) as DeepgramSpeakConnection).speaks.map((s) => s.text).join('')).toBe('sentence follows. ' + SENTENCES[2]);
    const expected = SENTENCES[0] + 'The second sen' + 'sentence follows. ' + SENTENCES[2];
    expect(heard(audioOf(msgs))).toEqual(tones(expected));
    expect(audioOf(msgs).length - expectedBytes(chars(TEXT))).toBeLessThanOrEqual(expectedBytes(chars('sentence')));
    // The client asked for timings: they continue on the generation's timeline after the takeover.
    const words = msgs.filter((m) => m.type === 'output_alignment').flatMap((m) => m.words as { word: string; start: number }[]);
    expect(words.slice(0, 7).map((w) => w.word)).toEqual(['The', 'first', 'sentence', 'is', 'here.', 'The', 'second']);
  });

  it('ElevenLabs (character timings, one socket per generation) fails mid-sentence: Cartesia speaks only the rest', async () => {
    const gw = await gateway();
    const { rec } = await startTts(gw, {
      model: 'elevenlabs/eleven_flash_v2_5:Xb7hH8MSUJpSbSDYk0k2',
      fallback: { models: [{ model: 'cartesia/sonic-3', voice: '9626c31c-bec5-4cca-baa8-f8ba9e84c8bc', extra: {} }] },
    });
    const spoken = SENTENCES[0] + 'The second ';
    elevenlabs.ttsFaults.errorAfterChars = { chars: chars(spoken), error: 'internal_error', code: 1011 };
    const contexts = cartesia.ttsConnections().flatMap((c) => c.contexts).length;
    const msgs = await generation(rec, SENTENCES);
    expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    // The gateway asked ElevenLabs for timings itself (sync_alignment in the socket URL).
    expect(elevenlabs.connections.at(-1)?.params.syncAlignment).toBe(true);
    const ctx = cartesia.ttsConnections().flatMap((c) => c.contexts).slice(contexts)[0];
    expect(ctx?.transcript).toBe('sentence follows. ' + SENTENCES[2]);
    expect(heard(audioOf(msgs))).toEqual(tones(TEXT));
  });

  it('OpenAI (no timings) fails on its second chunk: Deepgram continues at that chunk, nothing repeated', async () => {
    const gw = await gateway();
    const dg = deepgram.connections.length;
    const { rec } = await startTts(gw, { model: 'openai/tts-1:alloy', fallback: { models: [DEEPGRAM] } });
    openai.faultNext({});
    openai.faultNext({ status: 500 });
    const msgs = await generation(rec, SENTENCES);
    expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    expect((deepgramSince(dg).at(-1) as DeepgramSpeakConnection).speaks.map((s) => s.text)).toEqual(SENTENCES.slice(1));
    expect(heard(audioOf(msgs))).toEqual(tones(TEXT));
  });

  it('Deepgram (no timings) closes mid-sentence: the sentence restarts on OpenAI (rate measured on an earlier generation)', async () => {
    const gw = await gateway();
    const { rec } = await startTts(gw, { model: 'deepgram/aura-2:thalia', fallback: { models: [OPENAI] } });
    const warmUp = 'Measure my speaking rate first. ';
    expect((await generation(rec, [warmUp])).at(-1)?.type).toBe('done');
    const conn = deepgram.connections.at(-1) as DeepgramSpeakConnection;
    conn.speakFaults.closeAfterChars = { chars: chars(warmUp) + chars(SENTENCES[0] + 'The second '), code: 1011 };
    const reqs = openai.requests.length;
    const msgs = await generation(rec, SENTENCES);
    expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    // The first sentence was heard whole: OpenAI starts at the second, which is heard again from its start.
    expect(openai.requests.slice(reqs).map((r) => r.text)).toEqual(SENTENCES.slice(1));
    // Deepgram's 50 ms frames cut inside the 40th character: its audio, then OpenAI's from its own start.
    const sent = (conn.segments.at(-1) as { audioBytes: number }).audioBytes;
    const h = heardAcross(audioOf(msgs), sent);
    expect(h.first).toEqual(tones(SENTENCES[0] + 'The second '));
    expect(h.second).toEqual(tones(SENTENCES[1] + SENTENCES[2]));
    expect(metricValue(await gw.metricsText(), 'gateway_fallbacks_total', { modality: 'tts', from: 'deepgram', to: 'openai', reason: 'closed' })).toBe(1);
  });

  it('Deepgram closes right after a sentence: the next sentence is where OpenAI starts', async () => {
    const gw = await gateway();
    const { rec } = await startTts(gw, { model: 'deepgram/aura-2:thalia', fallback: { models: [OPENAI] } });
    const warmUp = 'Measure my speaking rate first. ';
    expect((await generation(rec, [warmUp])).at(-1)?.type).toBe('done');
    const conn = deepgram.connections.at(-1) as DeepgramSpeakConnection;
    conn.speakFaults.closeAfterChars = { chars: chars(warmUp) + chars(SENTENCES[0]), code: 1011 };
    const reqs = openai.requests.length;
    const msgs = await generation(rec, SENTENCES);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(openai.requests.slice(reqs).map((r) => r.text)).toEqual(SENTENCES.slice(1));
    const h = heardAcross(audioOf(msgs), (conn.segments.at(-1) as { audioBytes: number }).audioBytes);
    expect(h.first).toEqual(tones(SENTENCES[0]));
    expect(h.second).toEqual(tones(SENTENCES[1] + SENTENCES[2]));
  });
});

describe('every candidate fails', () => {
  it('one error event listing each attempt, then the session works again', async () => {
    const gw = await gateway();
    const { rec, id } = await startTts(gw, { fallback: { models: [DEEPGRAM, OPENAI] } });
    cartesia.faults.refuseUpgrade = { status: 503 };
    deepgram.faults.refuseUpgrade = { status: 401 };
    openai.faults.status = 500;
    const msgs = await generation(rec, SENTENCES);
    const err = msgs.at(-1) as Record<string, unknown>;
    expect(err).toMatchObject({ type: 'error', session_id: id, code: 502 });
    expect(err.message).toMatch(/^every TTS candidate failed \(3 attempts\): cartesia: .*HTTP 503.*; deepgram: .*HTTP 401.*; openai: .*HTTP 500.*$/);
    expect((err.attempts as { model: string }[]).map((a) => a.model)).toEqual(['cartesia/sonic-3', 'deepgram/aura-2', 'openai/tts-1']);
    expect(msgs.filter((m) => m.type === 'error')).toHaveLength(1);
    const text = await gw.metricsText();
    expect(metricValue(text, 'gateway_provider_errors_total', { provider: 'deepgram', code: '401' })).toBe(1);
    expect(metricValue(text, 'gateway_fallbacks_total', { modality: 'tts', from: 'deepgram', to: 'openai', reason: 'connect_failed' })).toBe(1);
    cartesia.resetFaults();
    deepgram.resetFaults();
    openai.resetFaults();
    const next = await generation(rec, ['Recovered. ']);
    expect(next.at(-1)?.type).toBe('done');
  });

  it('connection.retries bounds the attempts: retries 0 means no fallback', async () => {
    const gw = await gateway();
    const dg = deepgram.connections.length;
    const { rec } = await startTts(gw, { fallback: { models: [DEEPGRAM] }, connection: { timeout: 10, retries: 0 } });
    cartesia.ttsFaults.errorAfterChars = { chars: 0, statusCode: 500 };
    const msgs = await generation(rec, ['Nobody takes over. ']);
    expect(msgs.at(-1)).toMatchObject({ type: 'error', code: 502 });
    expect(deepgram.connections.length).toBe(dg);
  });

  it('an open circuit skips its provider: after 3 failures Cartesia is not tried (counted), Deepgram serves at once', async () => {
    const gw = await gateway({ failover: { breaker: { failures: 3, cooldownS: 60 } } });
    const { rec } = await startTts(gw, { fallback: { models: [DEEPGRAM] } });
    cartesia.ttsFaults.errorAfterChars = { chars: 0, statusCode: 500 };
    for (let i = 0; i < 3; i++) expect((await generation(rec, ['Fail over. '])).at(-1)?.type).toBe('done');
    const contexts = cartesia.ttsConnections().reduce((n, c) => n + c.contexts.length, 0);
    expect((await generation(rec, ['Skip Cartesia. '])).at(-1)?.type).toBe('done');
    expect(cartesia.ttsConnections().reduce((n, c) => n + c.contexts.length, 0)).toBe(contexts);
    expect(metricValue(await gw.metricsText(), 'gateway_candidates_skipped_total', { modality: 'tts', provider: 'cartesia', reason: 'circuit_open' })).toBe(1);
  });
});

describe('@livekit/agents inference.TTS with fallback models', () => {
  it('a provider failing mid-generation is invisible to the client: every character once, no error, no retry', async () => {
    const gw = await gateway();
    process.env.LIVEKIT_INFERENCE_URL = gw.baseUrl;
    process.env.LIVEKIT_API_KEY = TEST_KEY;
    process.env.LIVEKIT_API_SECRET = TEST_SECRET;
    const tts = new inference.TTS({
      model: 'cartesia/sonic-3',
      voice: '9626c31c-bec5-4cca-baa8-f8ba9e84c8bc',
      sampleRate: RATE,
      fallback: [{ model: 'deepgram/aura-2', voice: 'thalia' }],
      // The client's retries (sent as connection.retries) also bound the gateway's attempts.
      connOptions: { maxRetry: 3, retryIntervalMs: 100, timeoutMs: 10_000 },
    } as never) as inference.TTS<string>;
    const errors: unknown[] = [];
    tts.on('error' as never, ((e: unknown) => errors.push(e)) as never);
    const dg = deepgram.connections.length;
    cartesia.ttsFaults.errorAfterChars = { chars: chars(SENTENCES[0] + 'The second '), statusCode: 500 };
    const contextsBefore = cartesia.ttsConnections().flatMap((c) => c.contexts).length;
    const stream = tts.stream();
    stream.pushText(TEXT.trim());
    stream.endInput();
    const pcm: Buffer[] = [];
    for await (const ev of stream as AsyncIterable<unknown>) {
      if (typeof ev === 'symbol') break;
      const f = (ev as { frame: { data: Int16Array } }).frame;
      pcm.push(Buffer.from(f.data.buffer, f.data.byteOffset, f.data.byteLength));
    }
    await tts.close();
    expect(errors).toEqual([]);
    // One generation, one Cartesia context: the client did not retry.
    expect(cartesia.ttsConnections().flatMap((c) => c.contexts).length).toBe(contextsBefore + 1);
    const ctx = cartesia.ttsConnections().flatMap((c) => c.contexts).at(-1);
    const sent = ctx?.transcript ?? '';
    expect(sent.replace(/\s+/g, ' ').trim()).toBe(TEXT.trim());
    // Deepgram received exactly what Cartesia had not spoken.
    const takeover = deepgramSince(dg).at(-1) as DeepgramSpeakConnection;
    expect(takeover.speaks.map((x) => x.text).join('')).toBe(sent.slice((SENTENCES[0] + 'The second ').length));
    // The client heard every character of the text it sent exactly once.
    expect(heard(Buffer.concat(pcm))).toEqual(tones(sent));
  });
});
