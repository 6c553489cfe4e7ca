/**
 * /v1/tts session lifecycle with a raw `ws` client (protocol.md 3.1, 3.4-3.5): heartbeats during
 * slow generations, provider silence, idle timeout, mid-generation provider errors, the
 * cross-session upstream pool, billing of cancelled and completed generations, graceful
 * shutdown. Each test runs its own gateway (short `tts.*` knobs) in front of one Cartesia and
 * one OpenAI speech emulator.
 */
import { connect as tcpConnect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCartesiaEmulator, type CartesiaEmulator, type CartesiaTtsConnection, type CartesiaTtsContext } from '../emulators/cartesia.ts';
import { startOpenAiSpeechEmulator, type OpenAiSpeechEmulator } from '../emulators/openai-speech.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { bearer, mintToken } from '../helpers/tokens.ts';
import {
  MS_PER_CHAR,
  audioOf,
  closeAllTtsClients,
  connectTts,
  expectedBytes,
  generation,
  sleep,
  startTts,
  transcript,
  ttsCreate,
  untilEnd,
  waitUntil,
} from '../helpers/tts.ts';
import type { WsRecorder } from '../helpers/ws.ts';

let emu: CartesiaEmulator;
let oai: OpenAiSpeechEmulator;
let env: Record<string, string>;
const gateways: TestGateway[] = [];

beforeAll(async () => {
  emu = await startCartesiaEmulator({ msPerChar: MS_PER_CHAR });
  oai = await startOpenAiSpeechEmulator({ msPerChar: MS_PER_CHAR });
  env = { CARTESIA_API_KEY: 'cartesia-test-key', CARTESIA_BASE_URL: emu.url, OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${oai.url}/v1` };
});

afterEach(async () => {
  closeAllTtsClients();
  for (const g of gateways.splice(0)) await g.close();
  emu.resetFaults();
  oai.resetFaults();
  setCartesia({ firstAudioDelayMs: 20, idleTimeoutMs: 300_000 });
});

afterAll(async () => {
  await emu?.close();
  await oai?.close();
});

/** A fresh gateway (empty pool) with these `tts` knobs, closed after the test. */
async function gateway(tts: Record<string, unknown> = {}, extraEnv: Record<string, string> = env): Promise<TestGateway> {
  const gw = await startTestGateway({ env: extraEnv, file: { tts } });
  gateways.push(gw);
  return gw;
}

function setCartesia(o: Partial<{ firstAudioDelayMs: number; idleTimeoutMs: number }>): void {
  Object.assign(emu.options, o);
}

/** The Cartesia context of one generation (context_id = `<session>_g<n>_<hex>`) and its connection. */
function contextOf(sessionId: string, n: number): { ctx: CartesiaTtsContext; conn: CartesiaTtsConnection } {
  for (const conn of emu.ttsConnections()) {
    const ctx = conn.contexts.find((c) => c.contextId.startsWith(`${sessionId}_g${n}_`));
    if (ctx) return { ctx, conn };
  }
  throw new Error(`no cartesia context for generation ${n} of ${sessionId}`);
}

/** Arrival time (performance.now) of every message, aligned with `rec.messages`. */
function arrivalTimes(rec: WsRecorder): number[] {
  const times: number[] = [];
  rec.ws.on('message', () => times.push(performance.now()));
  return times;
}

const chars = (s: string): number => [...s].length;

// ---- keep-alive and liveness -------------------------------------------------------------

describe('liveness', () => {
  it('a slow generation gets heartbeats (< 2.5 s apart) until its audio; none while idle', async () => {
    const gw = await gateway({ heartbeatS: 1 });
    const rec = await connectTts(gw);
    const times = arrivalTimes(rec);
    rec.send(ttsCreate());
    const id = (await rec.first('session.created')).session_id as string;
    setCartesia({ firstAudioDelayMs: 3500 });
    const text = 'Slow to start. ';
    const from = rec.messages.length;
    const sentAt = performance.now();
    const msgs = await generation(rec, [text]);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(audioOf(msgs).length).toBe(expectedBytes(text.length));
    const firstAudio = rec.messages.findIndex((m, i) => i >= from && m.type === 'output_audio');
    const beats = rec.messages.map((m, i) => ({ m, t: times[i] as number })).filter(({ m }, i) => i >= from && m.type === 'heartbeat');
    // Checked by the 1 s session ticker: one every 1-2 s, so at least one in a 3.5 s wait.
    expect(beats.length).toBeGreaterThanOrEqual(1);
    for (const { m, t } of beats) {
      expect(m).toEqual({ type: 'heartbeat', session_id: id });
      expect(t).toBeLessThan(times[firstAudio] as number);
    }
    // The client's 10 s receive timer never comes close: every gap before the audio is short.
    expect((times[firstAudio] as number) - sentAt).toBeGreaterThan(3400);
    const marks = [sentAt, ...beats.map((b) => b.t), times[firstAudio] as number];
    for (let i = 1; i < marks.length; i++) expect((marks[i] as number) - (marks[i - 1] as number)).toBeLessThan(2500);
    // Idle between generations: nothing at all, although heartbeatS has passed twice.
    const count = rec.messages.length;
    await sleep(2200);
    expect(rec.messages.slice(count)).toEqual([]);
  });

  it('a provider silent for tts.providerSilenceTimeoutS fails the generation with 504; the next one runs on a new upstream', async () => {
    const gw = await gateway({ providerSilenceTimeoutS: 1 });
    const cartesia = await startTts(gw);
    const openai = await startTts(gw, { model: 'openai/tts-1:alloy' });
    emu.ttsFaults.stallAfterChars = 5;
    oai.faults.stallAfterBytes = expectedBytes(5);
    const reqs = oai.requests.length;
    const t0 = performance.now();
    const [c, o] = await Promise.all([generation(cartesia.rec, ['Hello there, this one stalls. ']), generation(openai.rec, ['And this one stalls too. '])]);
    const elapsed = performance.now() - t0;
    for (const [msgs, label] of [
      [c, 'cartesia/sonic-3'],
      [o, 'openai/tts-1'],
    ] as const) {
      expect(msgs.at(-1)).toMatchObject({ type: 'error', code: 504, message: `${label}: provider sent nothing for 1 s` });
      expect(audioOf(msgs).length).toBe(expectedBytes(5));
      expect(msgs.filter((m) => m.type === 'done')).toEqual([]);
    }
    expect(elapsed).toBeGreaterThan(1000);
    expect(elapsed).toBeLessThan(3500);
    // The silent upstreams are given up: socket closed, request aborted.
    const stalled = contextOf(cartesia.id, 1).conn;
    await emu.waitFor(() => stalled.record.closed, 2000, 'stalled cartesia socket closed');
    await oai.waitFor(() => oai.requests[reqs]?.outcome === 'aborted', 2000, 'stalled openai request aborted');
    emu.resetFaults();
    oai.resetFaults();
    for (const rec of [cartesia.rec, openai.rec]) {
      const msgs = await generation(rec, ['Working again. ']);
      expect(msgs.at(-1)?.type).toBe('done');
      expect(audioOf(msgs).length).toBe(expectedBytes('Working again. '.length));
    }
    expect(contextOf(cartesia.id, 2).conn).not.toBe(stalled);
    expect(oai.requests.slice(reqs).map((r) => r.outcome)).toEqual(['aborted', 'completed']);
    cartesia.rec.send({ type: 'session.close' });
    await cartesia.rec.closed();
    await waitUntil(() => gw.usage.records.some((r) => r.sessionId === cartesia.id), 'usage record');
    expect(gw.usage.records.find((r) => r.sessionId === cartesia.id)).toMatchObject({ errorCode: 504, generations: 2 });
  });

  it('a client pausing between chunks of one generation is not provider silence', async () => {
    // OpenAI: one request per chunk, so the provider is idle while the client's LLM is slow.
    // The pause outlasts the silence limit by more than the 1 s session tick: a tick falls in it.
    const gw = await gateway({ providerSilenceTimeoutS: 0.5 });
    const { rec } = await startTts(gw, { model: 'openai/tts-1:alloy' });
    const from = rec.messages.length;
    rec.send(transcript('First sentence. '));
    await sleep(1700);
    rec.send(transcript('Second sentence. '));
    rec.send({ type: 'session.flush' });
    const msgs = await untilEnd(rec, from);
    expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(audioOf(msgs).length).toBe(expectedBytes('First sentence. Second sentence. '.length));
  });

  it('a pause past Cartesia context expiry mid-generation continues on a new context, one timeline', async () => {
    const gw = await gateway();
    const { rec } = await startTts(gw, { extra: { add_timestamps: true } });
    const from = rec.messages.length;
    rec.send(transcript('First sentence. '));
    await sleep(1800); // the first sentence's audio ends well before; Cartesia expires the context 1 s later
    rec.send(transcript('Second sentence. '));
    rec.send({ type: 'session.flush' });
    const msgs = await untilEnd(rec, from);
    expect(msgs.filter((m) => m.type === 'error')).toEqual([]);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(audioOf(msgs).length).toBe(expectedBytes('First sentence. Second sentence. '.length));
    const words = msgs.filter((m) => m.type === 'output_alignment').flatMap((m) => m.words as { word: string; start: number }[]);
    expect(words.map((w) => w.word)).toEqual(['First', 'sentence.', 'Second', 'sentence.']);
    // 'Second' starts after the 16 characters of the first sentence's audio.
    expect(words[2]?.start).toBeCloseTo((16 * MS_PER_CHAR) / 1000, 2);
  });

  it('tts.idleTimeoutS: a quiet socket gets session.closed then 1000; a socket with client messages stays open', async () => {
    const gw = await gateway({ idleTimeoutS: 1, heartbeatS: 1 });
    const quiet = await startTts(gw);
    const busy = await startTts(gw);
    const quietTimes = arrivalTimes(quiet.rec); // only its last entry is used: the close's message
    const lastClientAt = performance.now(); // the flush below is the quiet socket's last message
    await generation(quiet.rec, ['One generation, then silence. ']);
    const until = lastClientAt + 2600;
    while (performance.now() < until) {
      busy.rec.send({ type: 'session.flush' }); // an empty generation: answered with done
      await sleep(300);
    }
    expect(await quiet.rec.closed(1000)).toBe(1000);
    const closedMsg = quiet.rec.messages.at(-1);
    expect(closedMsg).toEqual({ type: 'session.closed', session_id: quiet.id });
    const closedAfter = (quietTimes.at(-1) as number) - lastClientAt;
    expect(closedAfter).toBeGreaterThan(900);
    expect(closedAfter).toBeLessThan(2600);
    expect(quiet.rec.of('heartbeat')).toEqual([]);
    expect(busy.rec.closeCode).toBeUndefined();
    expect(busy.rec.of('session.closed')).toEqual([]);
    expect(busy.rec.of('done').length).toBeGreaterThanOrEqual(3);
  });
});

// ---- provider errors ----------------------------------------------------------------------

describe('mid-generation provider error', () => {
  it.each([
    [500, 502],
    [429, 429],
    [400, 400],
  ])('Cartesia error %i -> error event %i, nothing of the failed generation after it, next generation OK', async (providerStatus, code) => {
    const gw = await gateway();
    const { rec, id } = await startTts(gw);
    emu.ttsFaults.errorAfterChars = { chars: 10, statusCode: providerStatus };
    const msgs = await generation(rec, ['This sentence fails part way through. ']);
    const errAt = rec.messages.length;
    expect(msgs.at(-1)).toMatchObject({ type: 'error', code, session_id: id });
    expect(msgs.at(-1)?.message).toMatch(new RegExp(`^cartesia: Injected fault: generation failed\\. \\(status ${providerStatus}\\)`));
    expect(audioOf(msgs).length).toBe(expectedBytes(10));
    const failed = contextOf(id, 1).conn;
    await emu.waitFor(() => failed.record.closed, 2000, 'failed cartesia socket closed');
    await sleep(200);
    expect(rec.messages.slice(errAt)).toEqual([]);
    emu.resetFaults();
    const next = await generation(rec, ['Recovered. ']);
    expect(next.map((m) => m.type).filter((t) => t !== 'output_audio')).toEqual(['done']);
    expect(audioOf(next).length).toBe(expectedBytes('Recovered. '.length));
    expect(contextOf(id, 2).conn).not.toBe(failed);
  });
});

// ---- upstream pool ------------------------------------------------------------------------

describe('upstream pool across sessions', () => {
  async function sessionThenClose(gw: TestGateway): Promise<string> {
    const { rec, id } = await startTts(gw);
    const msgs = await generation(rec, ['Warm it up. ']);
    expect(msgs.at(-1)?.type).toBe('done');
    rec.ws.close();
    await rec.closed();
    await waitUntil(() => gw.gateway.sessions.size === 0, 'session ended');
    return id;
  }

  it('a new session reuses the socket an idle session left behind', async () => {
    const gw = await gateway();
    const n = emu.connections.length;
    const first = await sessionThenClose(gw);
    expect(emu.connections.length).toBe(n + 1);
    const parked = contextOf(first, 1).conn;
    expect(parked.record.closed).toBe(false);
    const { rec, id } = await startTts(gw);
    const msgs = await generation(rec, ['Straight onto a warm socket. ']);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(audioOf(msgs).length).toBe(expectedBytes('Straight onto a warm socket. '.length));
    expect(contextOf(id, 1).conn).toBe(parked);
    expect(emu.connections.length).toBe(n + 1);
  });

  it('with tts.poolMaxPerKey = 0 the socket is closed and the next session connects', async () => {
    const gw = await gateway({ poolMaxPerKey: 0 });
    const n = emu.connections.length;
    const first = await sessionThenClose(gw);
    const used = contextOf(first, 1).conn;
    await emu.waitFor(() => used.record.closed, 2000, 'unpooled socket closed');
    expect(used.record.close?.code).toBe(1000);
    const { rec, id } = await startTts(gw);
    const msgs = await generation(rec, ['Cold start. ']);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(emu.connections.length).toBe(n + 2);
    expect(contextOf(id, 1).conn).not.toBe(used);
  });

  it('a parked socket the provider closed is not handed out', async () => {
    const gw = await gateway();
    setCartesia({ idleTimeoutMs: 300 });
    const first = await sessionThenClose(gw);
    const parked = contextOf(first, 1).conn;
    await emu.waitFor(() => parked.record.closed, 2000, 'parked socket closed by the provider');
    const { rec, id } = await startTts(gw);
    const msgs = await generation(rec, ['Fresh socket. ']);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(contextOf(id, 1).conn).not.toBe(parked);
  });
});

// ---- billing ------------------------------------------------------------------------------

describe('billing', () => {
  const charsMetric = async (gw: TestGateway): Promise<number> =>
    metricValue(await gw.metricsText(), 'gateway_tts_characters_total', { provider: 'cartesia', model: 'sonic-3', api_key: TEST_KEY }) ?? 0;

  it('a generation cancelled before the upstream opened bills 0 characters', async () => {
    const gw = await gateway();
    const n = emu.connections.length;
    emu.faultNext({ upgradeDelayMs: 500 });
    const { rec, id } = await startTts(gw);
    rec.send(transcript('Never reaches the provider. '));
    await sleep(100);
    rec.ws.terminate();
    await waitUntil(() => gw.usage.records.some((r) => r.sessionId === id), 'usage record');
    const usage = gw.usage.records.find((r) => r.sessionId === id);
    expect(usage).toMatchObject({ modality: 'tts', characters: 0, audioSeconds: 0, generations: 1, provider: 'cartesia', model: 'sonic-3' });
    expect(await charsMetric(gw)).toBe(0);
    const m = await gw.metricsText();
    expect(metricValue(m, 'gateway_requests_total', { modality: 'tts', provider: 'cartesia', outcome: 'cancelled' })).toBe(1);
    // Past the delayed upgrade: the provider never received a character.
    await sleep(600);
    expect(emu.connections.slice(n).reduce((s, c) => s + c.charsReceived, 0)).toBe(0);
  });

  it('completed generations bill exactly their characters; one usage record per session', async () => {
    const gw = await gateway();
    const texts = [['Hi 👋 there, ', 'café au lait? '], ['Two. ']];
    const { rec, id } = await startTts(gw);
    for (const chunks of texts) {
      const msgs = await generation(rec, chunks);
      expect(msgs.at(-1)?.type).toBe('done');
      expect(audioOf(msgs).length).toBe(expectedBytes(chars(chunks.join(''))));
    }
    rec.send({ type: 'session.flush' }); // empty: a done, no generation
    await rec.next('done');
    const total = chars(texts.flat().join(''));
    expect(total).toBe(texts.flat().join('').length - 1); // the emoji is 2 UTF-16 units, 1 character
    expect(await charsMetric(gw)).toBe(total);
    rec.send({ type: 'session.close' });
    await rec.closed();
    await waitUntil(() => gw.usage.records.some((r) => r.sessionId === id), 'usage record');
    const records = gw.usage.records.filter((r) => r.sessionId === id);
    expect(records).toHaveLength(1);
    const [usage] = records;
    expect(usage).toMatchObject({ modality: 'tts', apiKey: TEST_KEY, provider: 'cartesia', model: 'sonic-3', characters: total, generations: 2, outcome: 'ok' });
    expect(usage?.audioSeconds).toBeCloseTo((total * MS_PER_CHAR) / 1000, 9);
    expect(usage?.errorCode).toBeUndefined();
    expect(usage?.endedAt.getTime()).toBeGreaterThanOrEqual(usage?.startedAt.getTime() ?? Infinity);
  });
});

// ---- shutdown -----------------------------------------------------------------------------

/** Send an upgrade request in two parts, the second after `between()` ran; resolves with the status line. */
function splitUpgrade(port: number, token: string, between: () => Promise<void>): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = tcpConnect(port, '127.0.0.1');
    let answer = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer to the upgrade; got ${JSON.stringify(answer)}`));
    }, 5000);
    sock.on('data', (d: Buffer) => (answer += d.toString()));
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(answer.split('\r\n')[0] ?? '');
    });
    sock.on('error', () => {});
    sock.on('connect', () => {
      sock.write('GET /v1/tts HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      void between().then(() =>
        sock.write(
          `Authorization: ${bearer(token)}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
            'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
        ),
      );
    });
  });
}

describe('graceful shutdown', () => {
  it('lets a generation in flight finish (text still arriving), then closes with 1001; upgrades get 503', async () => {
    const gw = await gateway({ providerSilenceTimeoutS: 1 });
    setCartesia({ firstAudioDelayMs: 300 });
    const n = emu.connections.length;
    // The first session's upstream socket (its warm link) stalls after 5 characters.
    const stalled = await startTts(gw);
    (await emu.waitForTtsConnection(n + 1)).ttsFaults.stallAfterChars = 5;
    const busy = await startTts(gw);
    const idle = await startTts(gw);
    const from = busy.rec.messages.length;
    busy.rec.send(transcript('Started before the shutdown, '));
    const stalledFrom = stalled.rec.messages.length;
    stalled.rec.send(transcript('This one never finishes. '));
    stalled.rec.send({ type: 'session.flush' });
    const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
    let closing: Promise<void> | null = null;
    const startedAt = performance.now();
    const status = await splitUpgrade(gw.port, token, async () => {
      closing = gw.gateway.shutdown();
      await sleep(50);
    });
    expect(status).toMatch(/^HTTP\/1\.1 503/);
    // An idle session is closed at once; the busy one may still finish its generation.
    expect(await idle.rec.closed(2000)).toBe(1001);
    expect(busy.rec.closeCode).toBeUndefined();
    busy.rec.send(transcript('and finished after it. '));
    busy.rec.send({ type: 'session.flush' });
    const msgs = await untilEnd(busy.rec, from);
    expect(msgs.at(-1)?.type).toBe('done');
    expect(audioOf(msgs).length).toBe(expectedBytes('Started before the shutdown, and finished after it. '.length));
    expect(await busy.rec.closed(2000)).toBe(1001);
    // A generation that fails while draining ends its session too, long before the deadline.
    expect(await stalled.rec.closed(4000)).toBe(1001);
    expect(stalled.rec.messages.slice(stalledFrom).filter((m) => m.type !== 'output_audio')).toMatchObject([{ type: 'error', code: 504 }]);
    await closing;
    expect(performance.now() - startedAt).toBeLessThan(4000);
  });
});


