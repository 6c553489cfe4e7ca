/**
 * The shared STT conformance suite: the same client-visible behaviour, checked through the real
 * gateway with a plain `ws` client speaking protocol.md section 2, against every STT adapter and
 * its emulator (profiles in stt-profiles.ts). Behaviours an adapter cannot have are skipped by
 * not registering the test, with the reason written in its profile.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scriptTimings, synthesize, type ScriptItem } from '../emulators/audio.ts';
import { TEST_KEY, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { BYTES_PER_SECOND, RATE, connectStt, createMessage, sendBinary, startSession } from '../helpers/stt.ts';
import type { JsonMessage, WsRecorder } from '../helpers/ws.ts';
import { STT_PROFILES, type SttEmu } from './stt-profiles.ts';

const norm = (s: string): string =>
  s
    .toLowerCase()
    .replace(/[^a-z\s]/g, '')
    .trim()
    .replace(/\s+/g, ' ');

function finals(rec: WsRecorder): JsonMessage[] {
  return rec.of('final_transcript');
}

describe.each(STT_PROFILES)('STT conformance: $name', (profile) => {
  let emu: SttEmu;
  let gw: TestGateway;

  beforeAll(async () => {
    emu = await profile.start();
    gw = await startTestGateway({ env: emu.env, file: emu.file ?? {} });
  });
  afterAll(async () => {
    await gw?.close();
    await emu?.close();
  });

  const script: ScriptItem[] = [
    { silenceMs: 400 },
    { words: ['hello', 'world', 'alpha'] },
    { silenceMs: profile.endOfUtteranceMs },
    { words: ['bravo', 'charlie'] },
    { silenceMs: profile.endOfUtteranceMs },
  ];

  it('streams interims and exactly one final per utterance, on the socket timeline, metered', async () => {
    const { rec, id } = await startSession(gw, { model: profile.model, language: 'en', extra: {} });
    const pcm = synthesize(script, { sampleRate: RATE });
    // The script is sent at once, faster than real time: let the upstream open first, or the
    // bounded connect buffer (stt.bufferS, 5 s) would drop the oldest audio of this 6 s burst.
    await new Promise((r) => setTimeout(r, 300));
    sendBinary(rec, pcm);
    await rec.until(() => finals(rec).length >= 2, 'two finals', 15_000);
    const f = finals(rec);
    expect(f.map((m) => norm(m.transcript as string))).toEqual(['hello world alpha', 'bravo charlie']);
    expect(rec.of('interim_transcript').length).toBeGreaterThan(0);
    expect(rec.of('error')).toEqual([]);
    for (const m of [...f, ...rec.of('interim_transcript')]) {
      expect(m.session_id).toBe(id);
      expect(typeof m.request_id).toBe('string');
    }
    const timings = scriptTimings(script, { sampleRate: RATE });
    const second = f[1] as JsonMessage;
    // The second utterance is placed after the first on the client's timeline.
    expect(second.start as number).toBeGreaterThanOrEqual((f[0]?.start as number) ?? 0);
    if (profile.capabilities.wordTimings === true) {
      const words = f.flatMap((m) => m.words as { word: string; start: number; end: number }[]);
      expect(words.map((w) => norm(w.word))).toEqual(['hello', 'world', 'alpha', 'bravo', 'charlie']);
      for (const [i, w] of words.entries()) {
        const t = timings.words[i];
        expect(Math.abs(w.start - (t?.start ?? 0))).toBeLessThan(0.15);
        expect(Math.abs(w.end - (t?.end ?? 0))).toBeLessThan(0.15);
      }
    }
    if (profile.capabilities.startOfSpeech === true) expect(rec.of('start_of_speech').length).toBeGreaterThanOrEqual(1);
    rec.send({ type: 'session.close' });
    await rec.closed(5000);
    const seconds = pcm.length / BYTES_PER_SECOND;
    const [provider, model] = profile.model.split('/');
    await expect
      .poll(async () => metricValue(await gw.metricsText(), 'gateway_stt_audio_seconds_total', { provider: provider ?? '', model: model ?? '', api_key: TEST_KEY }) ?? 0)
      .toBeGreaterThanOrEqual(seconds - 1e-6);
  });

  if (profile.capabilities.finalize === true) {
    it('session.finalize: the pending utterance as a final, then session.finalized; the socket stays open', async () => {
      const { rec } = await startSession(gw, { model: profile.model, language: 'en', extra: {} });
      sendBinary(rec, synthesize([{ silenceMs: 300 }, { words: ['kilo', 'lima'] }, { silenceMs: 200 }], { sampleRate: RATE }));
      // Let the provider take the audio in (some transcribe only on commit: no interim to wait for).
      await new Promise((r) => setTimeout(r, 400));
      rec.send({ type: 'session.finalize' });
      await rec.first('session.finalized', 10_000);
      expect(finals(rec).map((m) => norm(m.transcript as string))).toEqual(['kilo lima']);
      const iFinal = rec.messages.findIndex((m) => m.type === 'final_transcript');
      const iDone = rec.messages.findIndex((m) => m.type === 'session.finalized');
      expect(iFinal).toBeLessThan(iDone);
      // More speech on the same socket still transcribes.
      sendBinary(rec, synthesize([{ words: ['mike'] }, { silenceMs: profile.endOfUtteranceMs }], { sampleRate: RATE }));
      await rec.until(() => finals(rec).length >= 2, 'second final', 10_000);
      expect(rec.closeCode).toBeUndefined();
      rec.ws.close();
    });
  }

  it('accepts any client rate 8-48 kHz', async () => {
    for (const rate of [8000, 48000]) {
      const { rec } = await startSession(gw, { model: profile.model, language: 'en', sampleRate: String(rate), extra: {} });
      sendBinary(rec, synthesize([{ silenceMs: 200 }, { words: ['oscar', 'papa'] }, { silenceMs: profile.endOfUtteranceMs }], { sampleRate: rate }), rate / 10);
      await rec.until(() => finals(rec).length >= 1, `a final at ${rate} Hz`, 10_000);
      expect(norm(finals(rec)[0]?.transcript as string)).toBe('oscar papa');
      rec.ws.close();
    }
  });

  it('refuses invalid provider options with a 400 error event naming the option', async () => {
    const rec = await connectStt(gw);
    rec.send(createMessage({ model: profile.model, extra: profile.badExtra }));
    const bad = await rec.first('error');
    expect(bad.code).toBe(400);
    expect(String(bad.message)).toContain(Object.keys(profile.badExtra)[0] ?? '');
    expect(rec.of('session.created')).toEqual([]);
  });

  it('tears the upstream down on session.close and sends nothing after it', async () => {
    const { rec } = await startSession(gw, { model: profile.model, language: 'en', extra: {} });
    sendBinary(rec, synthesize([{ silenceMs: 200 }, { words: ['quebec'] }], { sampleRate: RATE }));
    await new Promise((r) => setTimeout(r, 300));
    rec.send({ type: 'session.close' });
    const count = rec.messages.length;
    await rec.closed(5000);
    expect(rec.messages.length).toBe(count);
    await expect.poll(() => emu.lastClosed(), { timeout: 5000 }).toBe(true);
  });
});
