/**
 * The shared TTS conformance suite: the same behaviour, checked through the real gateway with a
 * plain `ws` client speaking protocol.md section 3, against every TTS adapter and its emulator.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { charFrequency, dominantFrequency } from '../emulators/tts-audio.ts';
import { metricValue, startTestGateway, TEST_KEY, TEST_SECRET, type TestGateway } from '../helpers/gateway.ts';
import { bearer, mintToken } from '../helpers/tokens.ts';
import { openWs, WsRecorder, type JsonMessage } from '../helpers/ws.ts';
import { MS_PER_CHAR, TTS_PROFILES, type TtsEmu } from './tts-profiles.ts';

async function connect(gw: TestGateway): Promise<WsRecorder> {
  const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
  const ws = await openWs(gw.wsUrl('/v1/tts'), { Authorization: bearer(token) });
  if (!(ws instanceof WebSocket)) throw new Error(`upgrade rejected: ${ws.status}`);
  return new WsRecorder(ws);
}

function audioOf(msgs: JsonMessage[]): Buffer {
  return Buffer.concat(msgs.filter((m) => m.type === 'output_audio').map((m) => Buffer.from(m.audio as string, 'base64')));
}

/** Exact PCM bytes of `chars` characters at `rate` (tts-audio.ts renders MS_PER_CHAR each). */
function expectedBytes(chars: number, rate: number): number {
  return Math.round((chars * MS_PER_CHAR * rate) / 1000) * 2;
}

/** Messages of one generation: from index `from` up to and including its `done`. */
async function generation(rec: WsRecorder, chunks: string[], extra: Record<string, unknown> = {}): Promise<JsonMessage[]> {
  const from = rec.messages.length;
  const doneBefore = rec.of('done').length;
  const errorsBefore = rec.of('error').length;
  for (const t of chunks) rec.send({ type: 'input_transcript', transcript: t, generation_config: {}, extra });
  rec.send({ type: 'session.flush' });
  await rec.until(() => rec.of('done').length > doneBefore || rec.of('error').length > errorsBefore, 'done', 15_000);
  return rec.messages.slice(from);
}

describe.each(TTS_PROFILES)('TTS conformance: $provider', (profile) => {
  let emu: TtsEmu;
  let gw: TestGateway;

  beforeAll(async () => {
    emu = await profile.start();
    gw = await startTestGateway({ env: emu.env });
  });
  afterAll(async () => {
    await gw?.close();
    await emu?.close();
  });
  afterEach(() => {
    emu.setFirstAudioDelay(20);
    emu.setRefusal(null);
  });

  async function create(rec: WsRecorder, over: Record<string, unknown> = {}): Promise<JsonMessage> {
    rec.send({ type: 'session.create', sample_rate: '24000', encoding: 'pcm_s16le', model: profile.model, language: 'en', extra: {}, ...over });
    return rec.first('session.created');
  }

  it('synthesizes a generation: audio of the right length, session_id everywhere, done, metered', async () => {
    const rec = await connect(gw);
    const created = await create(rec);
    const chunks = ['Hello there! ', 'How can I help you today? '];
    const msgs = await generation(rec, chunks);
    expect(rec.of('error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    for (const m of rec.messages) expect(m.session_id).toBe(created.session_id);
    const chars = chunks.join('').length;
    expect(audioOf(msgs).length).toBe(expectedBytes(chars, 24000));
    expect(emu.charsReceived()).toBeGreaterThanOrEqual(chars);
    rec.ws.close();
    await rec.closed();
    await expect.poll(async () => metricValue(await gw.metricsText(), 'gateway_tts_characters_total', { provider: profile.provider, api_key: TEST_KEY })).toBeGreaterThanOrEqual(chars);
    const m = await gw.metricsText();
    expect(metricValue(m, 'gateway_tts_audio_seconds_total', { provider: profile.provider, api_key: TEST_KEY })).toBeGreaterThanOrEqual((chars * MS_PER_CHAR) / 1000 - 1e-9);
    expect(metricValue(m, 'gateway_requests_total', { modality: 'tts', provider: profile.provider, outcome: 'ok' })).toBeGreaterThanOrEqual(1);
  });

  it('runs several generations on one client socket, and answers an empty flush with done', async () => {
    const before = emu.upstreamCount();
    const rec = await connect(gw);
    await create(rec);
    const texts = ['First one. ', 'Second, a bit longer. ', 'Third. '];
    for (const t of texts) {
      const msgs = await generation(rec, [t]);
      expect(msgs.at(-1)?.type).toBe('done');
      expect(audioOf(msgs).length).toBe(expectedBytes(t.length, 24000));
    }
    const emptyFrom = rec.messages.length;
    rec.send({ type: 'session.flush' });
    await rec.next('done');
    expect(rec.messages.slice(emptyFrom).map((m) => m.type)).toEqual(['done']);
    expect(rec.of('error')).toEqual([]);
    const used = emu.upstreamCount() - before;
    // A reusable socket serves every generation (0 new ones when a warm pooled socket was taken).
    if (profile.reusesSocket) expect(used).toBeLessThanOrEqual(1);
    else expect(used).toBeGreaterThanOrEqual(texts.length);
    rec.ws.close();
  });

  it('resamples to the requested rate: exact length, same tone', async () => {
    const rec = await connect(gw);
    await create(rec, { sample_rate: '16000' });
    const text = 'aaaaaaaaaa';
    const msgs = await generation(rec, [text]);
    const pcm = audioOf(msgs);
    expect(pcm.length).toBe(expectedBytes(text.length, 16000));
    const mid = pcm.subarray(pcm.length / 4, (pcm.length * 3) / 4);
    const f = charFrequency('a');
    expect(dominantFrequency(mid, 16000, [f - 100, f - 50, f, f + 50, f + 100])).toBe(f);
    rec.ws.close();
  });

  // Registered only for providers with alignment (no skipped tests in the default run).
  if (profile.alignmentExtra !== null) it('sends output_alignment only when the provider flag is set', async () => {
    const rec = await connect(gw);
    await create(rec, { extra: profile.alignmentExtra });
    const text = 'Good morning world. ';
    const msgs = await generation(rec, [text]);
    const aligned = msgs.filter((m) => m.type === 'output_alignment');
    expect(aligned.length).toBeGreaterThan(0);
    const words = aligned.flatMap((m) => (m.words as { word: string; start: number; end: number }[]) ?? []);
    expect(words.map((w) => w.word.replace(/[^\w]/g, ''))).toEqual(['Good', 'morning', 'world']);
    // 'morning' starts after 'Good ' (5 characters) of audio.
    expect(words[1]?.start).toBeCloseTo((5 * MS_PER_CHAR) / 1000, 2);
    for (const w of words) expect(w.end).toBeGreaterThan(w.start);
    const plain = await connect(gw);
    await create(plain);
    const noAlign = await generation(plain, [text]);
    expect(noAlign.filter((m) => m.type === 'output_alignment')).toEqual([]);
    rec.ws.close();
    plain.ws.close();
  });

  it('cancels the upstream at once when the client terminates mid-generation', async () => {
    emu.setFirstAudioDelay(400);
    const rec = await connect(gw);
    await create(rec);
    rec.send({ type: 'input_transcript', transcript: 'This sentence will never be heard in full. ', generation_config: {}, extra: {} });
    await new Promise((r) => setTimeout(r, 150));
    rec.ws.terminate();
    await emu.waitCancelled();
    await expect
      .poll(async () => metricValue(await gw.metricsText(), 'gateway_requests_total', { modality: 'tts', provider: profile.provider, outcome: 'cancelled' }))
      .toBeGreaterThanOrEqual(1);
  });

  it('surfaces a provider refusal as an error event with the mapped code', async () => {
    // A fresh gateway: its pool is empty, so the session has to connect.
    const fresh = await startTestGateway({ env: emu.env });
    const rec = await connect(fresh);
    emu.setRefusal(401);
    await create(rec);
    await generation(rec, ['Hello. ']);
    emu.setRefusal(null);
    const err = await rec.first('error');
    expect(err.code).toBe(401);
    expect(String(err.message)).toMatch(/credentials|401/);
    // The session stays usable: the next generation connects again and succeeds.
    const msgs = await generation(rec, ['Again. ']);
    expect(msgs.at(-1)?.type).toBe('done');
    rec.ws.close();
    await fresh.close();
  });
});
