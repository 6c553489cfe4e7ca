/**
 * Backpressure and bounds (docs/limits.md; issue 6 item 6): a client that never reads is cut off
 * after a bounded outbound queue (an error event, then close 1013) on /v1/stt and /v1/tts; an
 * STT provider that stops reading makes the session fail instead of growing our memory. Memory
 * is asserted as bytes produced/accepted against the documented bounds, never wall time.
 */
import { createHash } from 'node:crypto';
import { connect as tcpConnect, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startCartesiaEmulator, type CartesiaEmulator } from '../emulators/cartesia.ts';
import { synthesize, VOCABULARY } from '../emulators/audio.ts';
import { startDeepgramEmulator, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { bearer, mintToken } from '../helpers/tokens.ts';
import { CARTESIA_MODEL } from '../helpers/tts.ts';
import { waitUntil } from '../helpers/stt.ts';

/** Bounds of the gateway's client queues (stt-session.ts / tts-session.ts ClientSink). */
const STT_CLIENT_QUEUE = 4 * 1024 * 1024;
const TTS_CLIENT_QUEUE = 8 * 1024 * 1024;
/** Loopback kernel buffers a non-reading peer can absorb (tcp_wmem max 4 MiB + receive buffer). */
const KERNEL_SLACK = 16 * 1024 * 1024;

const gateways: TestGateway[] = [];
const sockets: WebSocket[] = [];

afterEach(async () => {
  for (const ws of sockets.splice(0)) ws.terminate();
  for (const g of gateways.splice(0)) await g.close();
});

/** A raw client socket that keeps every text message small enough to inspect, never parsing audio. */
interface RawClient {
  ws: WebSocket;
  /** Small (< 4 KiB) text messages, parsed. */
  small: Array<Record<string, unknown>>;
  bytes: number;
  closeCode: number | undefined;
}

async function rawClient(gw: TestGateway, path: string): Promise<RawClient> {
  const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
  const ws = new WebSocket(gw.wsUrl(path), { headers: { Authorization: bearer(token) } });
  sockets.push(ws);
  const c: RawClient = { ws, small: [], bytes: 0, closeCode: undefined };
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    c.bytes += data.length;
    if (!isBinary && data.length < 4096) c.small.push(JSON.parse(data.toString()) as Record<string, unknown>);
  });
  ws.on('close', (code: number) => {
    c.closeCode = code;
  });
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return c;
}

describe('a client that never reads', () => {
  let cartesia: CartesiaEmulator;
  let deepgram: DeepgramEmulator;

  beforeAll(async () => {
    // One second of audio per chunk, a chunk every millisecond: far faster than real time.
    cartesia = await startCartesiaEmulator({ chunkMs: 1000, speedFactor: 1000, firstAudioDelayMs: 0 });
    deepgram = await startDeepgramEmulator({ interimIntervalMs: 10, maxSegmentMs: 60_000 });
  });

  afterAll(async () => {
    await cartesia?.close();
    await deepgram?.close();
  });

  it('TTS: the session is cut off after a bounded queue (error event, close 1013), the provider is stopped', async () => {
    const gw = await startTestGateway({ env: { CARTESIA_API_KEY: 'cartesia-test-key', CARTESIA_BASE_URL: cartesia.url } });
    gateways.push(gw);
    const c = await rawClient(gw, '/v1/tts');
    c.ws.send(JSON.stringify({ type: 'session.create', sample_rate: '24000', encoding: 'pcm_s16le', model: CARTESIA_MODEL, extra: {} }));
    await waitUntil(() => c.small.some((m) => m.type === 'session.created'), 'session.created');
    c.ws.pause();
    // 90 000 characters = 90 minutes of audio at 60 ms per character: 260 MB of PCM at 24 kHz.
    const sentence = 'The quick brown fox jumps over the lazy dog again and again and again. ';
    const chars = 90_000;
    for (let sent = 0; sent < chars; sent += sentence.length) {
      c.ws.send(JSON.stringify({ type: 'input_transcript', transcript: sentence }));
    }
    c.ws.send(JSON.stringify({ type: 'session.flush' }));
    const fullBytes = (chars * 60 * 24_000 * 2) / 1000;

    await waitUntil(() => gw.gateway.sessions.size === 0, 'the gateway to cut the session off', 20_000);
    expect(gw.usage.records.map((r) => r.outcome)).toEqual(['client_not_reading']);
    // What the provider produced before it was stopped is bounded by the client queue and the
    // kernel buffers (plus what was in flight), not by the length of the text.
    await waitUntil(() => cartesia.ttsConnections().every((conn) => conn.contexts.every((ctx) => ctx.state !== 'open' && ctx.state !== 'closing')), 'the provider context to end', 10_000);
    const produced = cartesia.ttsConnections().reduce((n, conn) => n + conn.audioBytes, 0);
    expect(produced).toBeLessThan(TTS_CLIENT_QUEUE + KERNEL_SLACK + 8 * 1024 * 1024);
    expect(produced).toBeLessThan(fullBytes / 5);

    // The client reads again: what was queued, then the error event, then the close 1013.
    c.ws.resume();
    await waitUntil(() => c.closeCode !== undefined, 'the close', 10_000);
    expect(c.closeCode).toBe(1013);
    const err = c.small.find((m) => m.type === 'error');
    expect(err).toMatchObject({ code: 503, message: expect.stringMatching(/client is not reading/) });
    expect(c.bytes).toBeLessThan(TTS_CLIENT_QUEUE + KERNEL_SLACK);
  });

  it('STT: the session is cut off after a bounded queue (error event, close 1013) and billed for what was forwarded', async () => {
    const gw = await startTestGateway({ env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: deepgram.url } });
    gateways.push(gw);
    const c = await rawClient(gw, '/v1/stt');
    c.ws.send(JSON.stringify({ type: 'session.create', model: 'deepgram/nova-3', settings: { sample_rate: '16000', encoding: 'pcm_s16le', extra: { interim_results: true } } }));
    await waitUntil(() => c.small.some((m) => m.type === 'session.created'), 'session.created');
    c.ws.pause();
    // Continuous speech: an interim every 10 ms of audio, each carrying every word so far.
    const words = Array.from({ length: 200 }, (_, i) => VOCABULARY[i % VOCABULARY.length] as string);
    const speech = synthesize([{ words }], { sampleRate: 16000 });
    // Keep talking (60 s of speech per round, faster than real time) until the gateway gives up.
    let sentAudio = 0;
    for (let round = 0; round < 100 && gw.gateway.sessions.size > 0; round++) {
      for (let off = 0; off < speech.length; off += 3200) c.ws.send(speech.subarray(off, off + 3200));
      sentAudio += speech.length;
      // At the provider's pace (this test is about the client, not a slow provider).
      const upstream = deepgram.records.at(-1);
      await waitUntil(() => gw.gateway.sessions.size === 0 || (upstream?.audioSeconds ?? 0) >= sentAudio / 32_000 - 0.5, 'the provider to take the audio', 20_000);
    }
    await waitUntil(() => gw.gateway.sessions.size === 0, 'the gateway to cut the session off', 20_000);
    const [usage] = gw.usage.records;
    expect(usage?.outcome).toBe('client_not_reading');
    expect(usage?.audioSeconds).toBeGreaterThan(0);
    expect(usage?.audioSeconds).toBeLessThanOrEqual(sentAudio / 32_000);
    expect(metricValue(await gw.metricsText(), 'gateway_requests_total', { modality: 'stt', outcome: 'client_not_reading' })).toBe(1);

    c.ws.resume();
    await waitUntil(() => c.closeCode !== undefined, 'the close', 10_000);
    expect(c.closeCode).toBe(1013);
    expect(c.small.find((m) => m.type === 'error')).toMatchObject({ code: 503, message: expect.stringMatching(/client is not reading/) });
    expect(c.bytes).toBeLessThan(STT_CLIENT_QUEUE + KERNEL_SLACK);
  });
});

/**
 * A provider that accepts the WebSocket upgrade and then never reads another byte: whatever we
 * send piles up in the kernel and then in our socket's buffer.
 */
async function startNonReadingUpstream(): Promise<{ url: string; upgrades: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let upgrades = 0;
  const server: TcpServer = createTcpServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    let head = '';
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      socket.pause();
      const key = /sec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? '';
      const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      upgrades++;
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    upgrades: () => upgrades,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('a provider that cannot keep up', () => {
  it('STT: audio the upstream does not take is bounded; the session fails with an error event instead of buffering', async () => {
    const upstream = await startNonReadingUpstream();
    try {
      const gw = await startTestGateway({ env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: upstream.url } });
      gateways.push(gw);
      const c = await rawClient(gw, '/v1/stt');
      c.ws.send(JSON.stringify({ type: 'session.create', model: 'deepgram/nova-3', settings: { sample_rate: '16000', encoding: 'pcm_s16le', extra: {} } }));
      await waitUntil(() => c.small.some((m) => m.type === 'session.created') && upstream.upgrades() === 1, 'session.created and the upstream connection');
      // Up to 200 MB of audio (almost two hours), sent as fast as the gateway reads it.
      const frame = Buffer.alloc(64 * 1024, 1);
      let sent = 0;
      while (sent < 200 * 1024 * 1024 && c.closeCode === undefined && !c.small.some((m) => m.type === 'error')) {
        c.ws.send(frame);
        sent += frame.length;
        if (c.ws.bufferedAmount > 1024 * 1024) await waitUntil(() => c.ws.bufferedAmount < 256 * 1024 || c.closeCode !== undefined, 'the client socket to drain', 10_000);
      }
      await waitUntil(() => c.closeCode !== undefined, 'the close', 10_000);
      const err = c.small.find((m) => m.type === 'error');
      expect(err).toMatchObject({ code: 502, message: expect.stringMatching(/not keeping up/) });
      expect(c.closeCode).toBe(1011);
      // The gateway stopped taking audio at its upstream bound (8 MiB) plus kernel buffers.
      expect(sent).toBeLessThan(8 * 1024 * 1024 + 2 * KERNEL_SLACK);
      await waitUntil(() => gw.gateway.sessions.size === 0, 'the session to end');
      expect(gw.usage.records.map((r) => r.outcome)).toEqual(['provider_error']);
    } finally {
      await upstream.close();
    }
  });
});

describe('handshake timeouts', () => {
  /** Raw TCP: send `text`, resolve with everything received until the server closes. */
  function rawExchange(port: number, text: string, timeoutMs: number): Promise<{ data: string; closed: boolean }> {
    return new Promise((resolve) => {
      const sock = tcpConnect(port, '127.0.0.1');
      let data = '';
      const timer = setTimeout(() => {
        sock.destroy();
        resolve({ data, closed: false });
      }, timeoutMs);
      sock.on('data', (d: Buffer) => (data += d.toString('latin1')));
      sock.on('error', () => {});
      sock.on('close', () => {
        clearTimeout(timer);
        resolve({ data, closed: true });
      });
      sock.write(text);
    });
  }

  it('an upgrade whose headers never complete is answered 408 and closed after server.upgradeTimeoutS', async () => {
    const gw = await startTestGateway({ file: { server: { upgradeTimeoutS: 0.5 } } });
    gateways.push(gw);
    const partial = 'GET /v1/stt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n';
    const res = await rawExchange(gw.port, partial, 10_000);
    expect(res.closed).toBe(true);
    expect(res.data).toMatch(/^HTTP\/1\.1 408 /);
    expect(gw.gateway.limits.openSessions).toBe(0);
  });

  it('STT: a socket that never sends session.create gets error 408 and is closed, freeing its slot', async () => {
    const gw = await startTestGateway({ file: { server: { upgradeTimeoutS: 0.5 }, limits: { perKey: { '*': { maxSttSessions: 1 } } } } });
    gateways.push(gw);
    const c = await rawClient(gw, '/v1/stt');
    await waitUntil(() => c.closeCode !== undefined, 'the close', 10_000);
    expect(c.small.find((m) => m.type === 'error')).toMatchObject({ code: 408, message: 'no session.create received' });
    await waitUntil(() => gw.gateway.limits.openSessions === 0, 'the slot to be released');
    const again = await rawClient(gw, '/v1/stt');
    expect(again.closeCode).toBeUndefined();
  });

  it('TTS: a socket that never sends session.create gets error 408 and is closed, freeing its slot', async () => {
    const gw = await startTestGateway({ file: { server: { upgradeTimeoutS: 0.5 }, limits: { perKey: { '*': { maxTtsSessions: 1 } } } } });
    gateways.push(gw);
    const c = await rawClient(gw, '/v1/tts');
    await waitUntil(() => c.closeCode !== undefined, 'the close', 10_000);
    expect(c.closeCode).toBe(1008);
    expect(c.small.find((m) => m.type === 'error')).toMatchObject({ code: 408, message: 'no session.create received' });
    await waitUntil(() => gw.gateway.limits.openSessions === 0, 'the slot to be released');
    const again = await rawClient(gw, '/v1/tts');
    expect(again.closeCode).toBeUndefined();
  });
});
