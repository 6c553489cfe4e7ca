/**
 * /v1/stt when the provider misbehaves (providers.md 2.1: failed upgrades, close frames,
 * garbage) and during graceful shutdown (protocol.md 2.6, 2.7). Raw `ws` client, real gateway,
 * Deepgram emulator with fault switches.
 */
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GARBAGE_TEXT, type FaultSwitches } from '../emulators/base.ts';
import { synthesize, type ScriptItem } from '../emulators/audio.ts';
import { DATA_0000_REASON, NET_0001_REASON, startDeepgramEmulator, type DeepgramConnection, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import {
  RATE,
  connectStt,
  finals,
  sendBinary,
  settle,
  sleep,
  startSession,
  type CreateOptions,
} from '../helpers/stt.ts';
import { bearer, mintToken } from '../helpers/tokens.ts';
import type { JsonMessage, WsRecorder } from '../helpers/ws.ts';

let emu: DeepgramEmulator;
let gw: TestGateway;
const DG_ENV = (): Record<string, string> => ({ DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: emu.url });

beforeAll(async () => {
  emu = await startDeepgramEmulator();
  gw = await startTestGateway({ env: DG_ENV() });
});

afterEach(async () => {
  emu.resetFaults();
  await settle(gw);
});

afterAll(async () => {
  await gw?.close();
  await emu?.close();
});

const pcmOf = (script: ScriptItem[]): Buffer => synthesize(script, { sampleRate: RATE });
const ONE_SECOND_OF_WORDS = pcmOf([{ silenceMs: 100 }, { words: ['alpha', 'bravo', 'charlie'] }]);

async function audioSecondsMetric(g: TestGateway): Promise<number> {
  return metricValue(await g.metricsText(), 'gateway_stt_audio_seconds_total', { provider: 'deepgram', model: 'nova-3', api_key: TEST_KEY }) ?? 0;
}

/** session.create (session.created comes at once), optional audio, then the error event and the close. */
async function sessionError(
  g: TestGateway,
  o: { faults?: Partial<FaultSwitches>; audio?: Buffer; create?: CreateOptions } = {},
): Promise<{ rec: WsRecorder; id: string; err: JsonMessage; ms: number }> {
  if (o.faults) emu.faultNext(o.faults);
  const started = Date.now();
  const { rec, id } = await startSession(g, o.create);
  if (o.audio) sendBinary(rec, o.audio);
  const err = await rec.first('error', 8000);
  const ms = Date.now() - started;
  await rec.closed();
  expect(rec.messages.at(-1)).toBe(err);
  expect(rec.of('error')).toHaveLength(1);
  expect(err.session_id).toBe(id);
  return { rec, id, err, ms };
}

// ---- failed upgrades ------------------------------------------------------------------

describe('provider refuses the upgrade', () => {
  const cases: Array<[number, number, RegExp, number]> = [
    [401, 401, /provider rejected credentials \(HTTP 401: Invalid credentials\.\)/, 1008],
    [403, 401, /provider rejected credentials \(HTTP 403/, 1008],
    [429, 429, /provider rate limit or concurrency limit reached \(HTTP 429: Too many requests\)/, 1013],
    [400, 400, /provider rejected the request \(HTTP 400/, 1008],
    [500, 502, /provider unavailable \(HTTP 500/, 1011],
    [503, 502, /provider unavailable \(HTTP 503/, 1011],
  ];
  const messages: Record<number, string> = { 401: 'Invalid credentials.', 429: 'Too many requests' };
  for (const [status, code, message, close] of cases) {
    it(`HTTP ${status} -> error ${code} with the provider's reason, close ${close}`, async () => {
      const { rec, err } = await sessionError(gw, { faults: { refuseUpgrade: { status, message: messages[status] ?? 'Injected fault' } } });
      expect(err).toMatchObject({ type: 'error', code, provider_status: status });
      expect(err.message).toMatch(/^deepgram\/nova-3: /);
      expect(err.message).toMatch(message);
      expect(rec.closeCode).toBe(close);
      expect(rec.of('session.created')).toHaveLength(1);
    });
  }

  it('a wrong Deepgram key on the gateway -> error 401; the key never appears in the message', async () => {
    const wrong = await startTestGateway({ env: { DEEPGRAM_API_KEY: 'not-the-dg-key', DEEPGRAM_BASE_URL: emu.url } });
    try {
      const { err } = await sessionError(wrong);
      expect(err).toMatchObject({ code: 401 });
      expect(err.message).toMatch(/Invalid credentials/);
      expect(JSON.stringify(err)).not.toContain('not-the-dg-key');
      expect(emu.rejected.at(-1)?.headers.authorization).toBe('Token not-the-dg-key');
    } finally {
      await wrong.close();
    }
  });

  it('audio buffered while the refused upgrade was pending is not billed; outcome provider_error', async () => {
    const labels = { modality: 'stt', provider: 'deepgram', model: 'nova-3', outcome: 'provider_error' };
    const billed = await audioSecondsMetric(gw);
    const failures = metricValue(await gw.metricsText(), 'gateway_requests_total', labels) ?? 0;
    const { id } = await sessionError(gw, { faults: { upgradeDelayMs: 200, refuseUpgrade: { status: 401 } }, audio: ONE_SECOND_OF_WORDS });
    await settle(gw);
    expect(await audioSecondsMetric(gw)).toBe(billed);
    expect(metricValue(await gw.metricsText(), 'gateway_requests_total', labels)).toBe(failures + 1);
    expect(gw.usage.records.find((r) => r.sessionId === id)).toMatchObject({ outcome: 'provider_error', audioSeconds: 0, errorCode: 401 });
  });

  it('nothing listening at the provider address -> error 502 "could not connect"', async () => {
    const nowhere = await startTestGateway({ env: { DEEPGRAM_API_KEY: 'k', DEEPGRAM_BASE_URL: 'http://127.0.0.1:9' } });
    try {
      const { err } = await sessionError(nowhere);
      expect(err).toMatchObject({ code: 502 });
      expect(err.message).toMatch(/could not connect to provider/);
    } finally {
      await nowhere.close();
    }
  });
});

describe('provider connect timeout -> error 504', () => {
  const files: Array<[string, unknown]> = [
    ['providers.deepgram.connectTimeoutS', { providers: { deepgram: { connectTimeoutS: 0.3 } } }],
    ['stt.connectTimeoutS', { stt: { connectTimeoutS: 0.3 } }],
  ];
  for (const [knob, file] of files) {
    it(`${knob}: 0.3 and a 2 s upgrade`, async () => {
      const quick = await startTestGateway({ env: DG_ENV(), file });
      try {
        const { err, rec, ms } = await sessionError(quick, { faults: { upgradeDelayMs: 2000 }, audio: ONE_SECOND_OF_WORDS });
        expect(err).toMatchObject({ code: 504 });
        expect(err.message).toMatch(/timed out connecting to provider after 300 ms/);
        expect(ms).toBeGreaterThanOrEqual(280);
        expect(ms).toBeLessThan(1500);
        expect(rec.closeCode).toBe(1011);
      } finally {
        await quick.close();
      }
    });
  }

  it('the client connection.timeout (seconds) shortens the provider connect timeout', async () => {
    const { err, ms } = await sessionError(gw, { faults: { upgradeDelayMs: 2000 }, create: { connection: { timeout: 0.3, retries: 0 } } });
    expect(err).toMatchObject({ code: 504 });
    expect(err.message).toMatch(/after 300 ms/);
    expect(ms).toBeLessThan(1500);
  });
});

// ---- mid-stream failures ------------------------------------------------------------

describe('provider fails mid-stream', () => {
  it('close 1011 NET-0001 -> error 502 carrying the provider reason, close 1011', async () => {
    const { err, rec } = await sessionError(gw, {
      faults: { closeAfterAudioSec: { seconds: 0.5, code: 1011, reason: NET_0001_REASON } },
      audio: ONE_SECOND_OF_WORDS,
    });
    expect(err).toMatchObject({ code: 502, provider_close: 1011 });
    expect(err.message).toContain('provider closed the stream (close 1011: NET-0001 Deepgram did not receive audio');
    expect(rec.closeCode).toBe(1011);
  });

  it('close 1008 DATA-0000 -> error 400 carrying the provider reason, close 1008', async () => {
    const { err, rec } = await sessionError(gw, {
      faults: { closeAfterAudioSec: { seconds: 0.5, code: 1008, reason: DATA_0000_REASON } },
      audio: ONE_SECOND_OF_WORDS,
    });
    expect(err).toMatchObject({ code: 400, provider_close: 1008 });
    expect(err.message).toContain('provider rejected the stream (close 1008: DATA-0000 The payload cannot be decoded as audio');
    expect(rec.closeCode).toBe(1008);
  });

  it('a binary frame that is not audio (JSON) is forwarded as audio; Deepgram\'s DATA-0000 comes back as error 400', async () => {
    const { rec } = await startSession(gw);
    rec.ws.send(Buffer.from('{"type":"KeepAlive"}'), { binary: true });
    const err = await rec.first('error');
    expect(err).toMatchObject({ code: 400, provider_close: 1008 });
    expect(err.message).toContain('DATA-0000');
    expect(await rec.closed()).toBe(1008);
  });

  it('TCP drop without a close frame -> error 502 (close 1006)', async () => {
    const { err } = await sessionError(gw, { faults: { dropAfterAudioSec: 0.5 }, audio: ONE_SECOND_OF_WORDS });
    expect(err).toMatchObject({ code: 502, provider_close: 1006 });
    expect(err.message).toMatch(/close 1006/);
  });

  it('a non-JSON frame from the provider is ignored: no error, no garbage to the client, transcripts continue', async () => {
    emu.faultNext({ garbageAfterAudioSec: { seconds: 0.5 } });
    const n = emu.connections.length;
    const { rec } = await startSession(gw);
    const conn: DeepgramConnection = await emu.waitForConnection(n + 1);
    sendBinary(rec, pcmOf([{ silenceMs: 600 }, { words: ['delta', 'echo'] }, { silenceMs: 300 }]));
    await rec.first('final_transcript');
    expect(conn.record.frames.some((f) => f.dir === 'out' && f.text === GARBAGE_TEXT)).toBe(true);
    expect(finals(rec)).toEqual(['Delta echo.']);
    expect(rec.of('error')).toEqual([]);
    // Every client message parsed as JSON (WsRecorder throws otherwise) and has a known type.
    const known = new Set(['session.created', 'start_of_speech', 'interim_transcript', 'final_transcript']);
    expect(rec.messages.filter((m) => !known.has(m.type))).toEqual([]);
    sendBinary(rec, pcmOf([{ words: ['foxtrot'] }, { silenceMs: 300 }]));
    await rec.until(() => finals(rec).length === 2, 'second final');
    expect(rec.closeCode).toBeUndefined();
  });

  it('a provider that never answers Finalize: session.finalized after the ack timeout, pending interim text as the final', async () => {
    const n = emu.connections.length;
    const { rec } = await startSession(gw);
    const conn = await emu.waitForConnection(n + 1);
    sendBinary(rec, pcmOf([{ silenceMs: 100 }, { words: ['golf', 'hotel', 'india', 'juliet'] }]));
    await rec.first('interim_transcript');
    conn.session.faults.deadAir = true;
    const at = Date.now();
    rec.send({ type: 'session.finalize' });
    await rec.first('session.finalized', 4000);
    expect(Date.now() - at).toBeGreaterThanOrEqual(1400); // stt.finalizeAckTimeoutS = 1.5
    expect(finals(rec)).toEqual([(rec.of('interim_transcript').at(-1) as JsonMessage).transcript]);
    const types = rec.messages.map((m) => m.type);
    expect(types.indexOf('final_transcript')).toBeLessThan(types.indexOf('session.finalized'));
  });
});

// ---- graceful shutdown ----------------------------------------------------------------

/** Send the first part of an upgrade request now; returns a function that sends the rest. */
async function halfUpgrade(port: number): Promise<{ finish(): void; response: Promise<string> }> {
  const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
  const sock = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  let data = '';
  sock.on('data', (d: Buffer) => (data += d.toString()));
  sock.on('error', () => {});
  const response = new Promise<string>((resolve) => sock.on('close', () => resolve(data)));
  sock.write('GET /v1/stt HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  return {
    finish: () =>
      sock.write(
        'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
          `Sec-WebSocket-Version: 13\r\nAuthorization: ${bearer(token)}\r\n\r\n`,
      ),
    response,
  };
}

describe('graceful shutdown', () => {
  it('live session: finals, session.closed, close 1001 within the deadline; upgrades during the drain get 503', async () => {
    const g = await startTestGateway({ env: { ...DG_ENV(), SHUTDOWN_TIMEOUT_S: '5' } });
    try {
      const n = emu.connections.length;
      const { rec, id } = await startSession(g);
      const conn = await emu.waitForConnection(n + 1);
      const pcm = pcmOf([{ silenceMs: 200 }, { words: ['kilo', 'lima'] }, { silenceMs: 300 }, { words: ['mike', 'november'] }]);
      sendBinary(rec, pcm);
      await rec.first('final_transcript');
      await emu.waitFor(() => conn.audioBytes === pcm.length, 2000, 'audio upstream');
      const pending = await halfUpgrade(g.port);
      emu.faults.outDelayMs = 300; // the provider takes a moment to answer CloseStream
      const started = Date.now();
      const shutdown = g.close();
      await sleep(50);
      pending.finish();
      const answer = await pending.response;
      expect(answer).toMatch(/^HTTP\/1\.1 503 /);
      expect(answer).toMatch(/\r\nRetry-After: 1\r\n/i);
      expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 503 } });
      // A brand-new connection gets no session either (the listener is closed, or 503).
      const fresh = await new Promise<string>((resolve) => {
        const s = net.connect(g.port, '127.0.0.1');
        s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        s.on('connect', () => {
          s.end('GET /v1/stt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
          let d = '';
          s.on('data', (c: Buffer) => (d += c.toString()));
          s.on('close', () => resolve(d.slice(0, 12)));
        });
      });
      expect(['ECONNREFUSED', 'HTTP/1.1 503']).toContain(fresh);
      await shutdown;
      const took = Date.now() - started;
      expect(took).toBeLessThan(5000);
      expect(finals(rec)).toEqual(['Kilo lima.', 'Mike november']);
      expect(rec.messages.at(-1)?.type).toBe('session.closed');
      expect(await rec.closed(1000)).toBe(1001);
      expect(conn.counts.closeStream).toBe(1);
      expect(g.gateway.sessions.size).toBe(0);
      expect(g.usage.records.find((r) => r.sessionId === id)?.outcome).toBe('ok');
    } finally {
      await g.close();
    }
  });

  it('a provider that never answers CloseStream: pending interim text becomes a final, then session.closed / 1001 after the end grace', async () => {
    const g = await startTestGateway({ env: { ...DG_ENV(), SHUTDOWN_TIMEOUT_S: '5' } });
    try {
      const n = emu.connections.length;
      const { rec } = await startSession(g);
      const conn = await emu.waitForConnection(n + 1);
      sendBinary(rec, pcmOf([{ silenceMs: 100 }, { words: ['oscar', 'papa', 'quebec', 'romeo'] }]));
      await rec.first('interim_transcript');
      conn.session.faults.deadAir = true;
      const started = Date.now();
      await g.close();
      const took = Date.now() - started;
      expect(took).toBeGreaterThanOrEqual(2900); // the session's 3 s end grace
      expect(took).toBeLessThan(5000);
      expect(finals(rec)).toEqual([(rec.of('interim_transcript').at(-1) as JsonMessage).transcript]);
      expect(rec.messages.at(-1)?.type).toBe('session.closed');
      expect(await rec.closed(1000)).toBe(1001);
    } finally {
      await g.close();
    }
  });

  it('a socket still waiting for session.create is closed with 1001 at once', async () => {
    const g = await startTestGateway({ env: DG_ENV() });
    try {
      const rec = await connectStt(g);
      const started = Date.now();
      await g.close();
      expect(await rec.closed()).toBe(1001);
      expect(Date.now() - started).toBeLessThan(1000);
      expect(rec.messages).toEqual([]);
    } finally {
      await g.close();
    }
  });
});

describe('gateway health after the failures above', () => {
  it('a new session on the shared gateway still transcribes', async () => {
    const { rec } = await startSession(gw, {});
    sendBinary(rec, pcmOf([{ silenceMs: 100 }, { words: ['sierra'] }, { silenceMs: 300 }]));
    await rec.first('final_transcript');
    expect(finals(rec)).toEqual(['Sierra.']);
    rec.send({ type: 'session.close' });
    await rec.closed();
  });
});
