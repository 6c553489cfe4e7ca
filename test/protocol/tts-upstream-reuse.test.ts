/**
 * Upstream socket reuse against provider limits: Deepgram's 20 Flush per 60 s per socket (a
 * socket at the limit is not reused) and ElevenLabs' one generation per socket (the socket
 * opened ahead of time is parked in the pool when its session ends, and used by the next one).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDeepgramSpeakEmulator, type DeepgramSpeakEmulator } from '../emulators/deepgram-speak.ts';
import { startElevenLabsEmulator, type ElevenLabsEmulator } from '../emulators/elevenlabs.ts';
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { closeAllTtsClients, generation, startTts } from '../helpers/tts.ts';

let dg: DeepgramSpeakEmulator;
let el: ElevenLabsEmulator;
let gw: TestGateway;

beforeAll(async () => {
  dg = await startDeepgramSpeakEmulator();
  el = await startElevenLabsEmulator();
  gw = await startTestGateway({
    env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: dg.url, ELEVENLABS_API_KEY: 'el-test-key', ELEVENLABS_BASE_URL: el.url },
  });
});

afterAll(async () => {
  closeAllTtsClients();
  await gw?.close();
  await dg?.close();
  await el?.close();
});

describe('upstream reuse within provider limits', () => {
  it('deepgram: the 21st generation in a minute runs on a new socket instead of hitting the Flush limit', async () => {
    const { rec } = await startTts(gw, { model: 'deepgram/aura-2:thalia' });
    for (let i = 0; i < 21; i++) {
      const msgs = await generation(rec, [`Number ${i}. `]);
      expect(msgs.at(-1)?.type).toBe('done');
    }
    expect(rec.of('error')).toEqual([]);
    expect(dg.connections.length).toBe(2);
    expect(dg.connections[0]?.segments.length).toBe(20);
    expect(dg.connections.flatMap((c) => c.sent).filter((m) => (m as { type?: string }).type === 'Warning')).toEqual([]);
  });

  it('elevenlabs: the socket opened ahead is parked when the session ends and serves the next session', async () => {
    const a = await startTts(gw, { model: 'elevenlabs/eleven_flash_v2_5:Xb7hH8MSUJpSbSDYk0k2' });
    expect((await generation(a.rec, ['Hello there. '])).at(-1)?.type).toBe('done');
    // After done, the gateway opened the next socket (with its settings message) ahead of time.
    await el.waitFor(() => el.connections.length === 2, 3000, 'socket opened ahead');
    a.rec.ws.close();
    await a.rec.closed();
    const b = await startTts(gw, { model: 'elevenlabs/eleven_flash_v2_5:Xb7hH8MSUJpSbSDYk0k2' });
    expect((await generation(b.rec, ['Second session. '])).at(-1)?.type).toBe('done');
    // The second session's generation ran on the parked socket: its text is on connection 2.
    expect(el.connections[1]?.text).toBe('Second session. ');
    b.rec.ws.close();
  });
});
