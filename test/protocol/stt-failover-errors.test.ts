/**
 * STT failover on an in-band provider error event (docs/failover.md): Deepgram Flux sends
 * `Error` then closes 1011; Cartesia sends an `error` frame and keeps the socket open. Either way
 * the next candidate (AssemblyAI) continues from the last final and the client sees no error.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { synthesize, type ScriptItem } from '../emulators/audio.ts';
import { startAssemblyAiEmulator, type AssemblyAiEmulator } from '../emulators/assemblyai.ts';
import { startCartesiaEmulator, type CartesiaEmulator } from '../emulators/cartesia.ts';
import { startDeepgramFluxEmulator, type DeepgramFluxEmulator } from '../emulators/deepgram-flux.ts';
import { metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { BYTES_PER_SECOND, RATE, connectStt, createMessage, finals, sendBinary, settle } from '../helpers/stt.ts';
import type { WsRecorder } from '../helpers/ws.ts';

let flux: DeepgramFluxEmulator;
let cartesia: CartesiaEmulator;
let aai: AssemblyAiEmulator;
let gw: TestGateway;

beforeAll(async () => {
  flux = await startDeepgramFluxEmulator();
  cartesia = await startCartesiaEmulator();
  aai = await startAssemblyAiEmulator();
  gw = await startTestGateway({
    env: {
      DEEPGRAM_API_KEY: 'dg-test-key',
      DEEPGRAM_BASE_URL: flux.url,
      CARTESIA_API_KEY: 'cartesia-test-key',
      CARTESIA_BASE_URL: cartesia.url,
      ASSEMBLYAI_API_KEY: 'aai-test-key',
      ASSEMBLYAI_BASE_URL: aai.url,
    },
    file: { failover: { breaker: { failures: 1000 } } },
  });
});

afterEach(async () => {
  await settle(gw);
});

afterAll(async () => {
  await gw?.close();
  await flux?.close();
  await cartesia?.close();
  await aai?.close();
});

const pcmOf = (script: ScriptItem[]): Buffer => synthesize(script, { sampleRate: RATE });
const P1: ScriptItem[] = [{ silenceMs: 300 }, { words: ['alpha', 'bravo'] }, { silenceMs: 1500 }];
const P2: ScriptItem[] = [{ words: ['charlie', 'delta', 'echo', 'foxtrot'] }, { silenceMs: 1500 }];
const P1_SECONDS = pcmOf(P1).length / BYTES_PER_SECOND;

async function open(model: string): Promise<WsRecorder> {
  const rec = await connectStt(gw);
  rec.send({ ...createMessage({ model, extra: {} }), fallback: { models: [{ model: 'assemblyai/universal-streaming', extra: {} }] } });
  await rec.first('session.created');
  return rec;
}

async function fallbacks(reason: string, from: string): Promise<number> {
  return metricValue(await gw.metricsText(), 'gateway_fallbacks_total', { modality: 'stt', from, to: 'assemblyai', reason }) ?? 0;
}

const norm = (s: string): string => s.toLowerCase().replace(/[^a-z ]/g, '');

describe('an error event from the provider moves the session to the next candidate', () => {
  it('Deepgram Flux: Error + close 1011 in the middle of an utterance', async () => {
    const before = await fallbacks('error', 'deepgram');
    const n = flux.connections.length;
    const rec = await open('deepgram/flux-general-en');
    const conn = await flux.waitForConnection(n + 1);
    sendBinary(rec, pcmOf(P1));
    await rec.first('final_transcript');
    conn.fluxFaults.errorAfterAudioSec = { seconds: P1_SECONDS + 0.5, code: 'INTERNAL_SERVER_ERROR', description: 'boom' };
    sendBinary(rec, pcmOf(P2));
    await rec.until(() => finals(rec).length === 2, 'the second final');
    expect(finals(rec).map(norm)).toEqual(['alpha bravo', 'charlie delta echo foxtrot']);
    expect(finals(rec)[1]).toBe('charlie delta echo foxtrot'); // from AssemblyAI
    expect(rec.of('error')).toEqual([]);
    expect(rec.closeCode).toBeUndefined();
    expect(await fallbacks('error', 'deepgram')).toBe(before + 1);
    const errors = metricValue(await gw.metricsText(), 'gateway_provider_errors_total', { provider: 'deepgram', code: '502' }) ?? 0;
    expect(errors).toBeGreaterThanOrEqual(1);
  });

  it('Cartesia: an error frame on a socket that stays open', async () => {
    const before = await fallbacks('error', 'cartesia');
    const n = cartesia.sttConnections.length;
    const aaiCount = aai.connections.length;
    const rec = await open('cartesia/ink-whisper');
    const conn = await cartesia.waitForSttConnection(n + 1);
    sendBinary(rec, pcmOf(P1));
    await rec.first('final_transcript');
    conn.sttFaults.errorAfterAudioSec = { seconds: P1_SECONDS + 0.5, statusCode: 500, message: 'boom', closeCode: null };
    sendBinary(rec, pcmOf(P2));
    await rec.until(() => finals(rec).length === 2, 'the second final');
    expect(finals(rec).map(norm)).toEqual(['alpha bravo', 'charlie delta echo foxtrot']);
    expect(rec.of('error')).toEqual([]);
    expect(aai.connections.length - aaiCount).toBe(1);
    expect(await fallbacks('error', 'cartesia')).toBe(before + 1);
    // The gateway abandoned the erroring socket itself.
    await cartesia.waitForSttClose(conn);
  });
});
