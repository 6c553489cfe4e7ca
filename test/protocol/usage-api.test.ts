/**
 * GET /v1/usage over the SQLite ledger: admin authentication (the admin token only; a LiveKit
 * JWT is refused), input validation, and the records of real STT, TTS and LLM traffic through
 * the gateway (Deepgram, Cartesia and OpenAI emulators) with their LiveKit headers, filters and
 * group_by. The ledger's quantities equal the Prometheus billing counters.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.ts';
import { openLedger, type Ledger } from '../../src/metering/ledger.ts';
import type { UsageRecordOut, UsageReport } from '../../src/metering/ledger-report.ts';
import { startCartesiaEmulator, type CartesiaEmulator } from '../emulators/cartesia.ts';
import { startDeepgramEmulator, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { startOpenAiChatEmulator, type OpenAiChatEmulator } from '../emulators/openai-chat.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { startLedgerGateway } from '../helpers/ledger.ts';
import { BYTES_PER_SECOND, createMessage, sendBinary, waitUntil } from '../helpers/stt.ts';
import { bearer, mintToken } from '../helpers/tokens.ts';
import { generation, ttsCreate } from '../helpers/tts.ts';
import { WsRecorder, openWs } from '../helpers/ws.ts';

const ADMIN_TOKEN = 'admin-token-for-usage-api-tests';

let dg: DeepgramEmulator;
let cartesia: CartesiaEmulator;
let oai: OpenAiChatEmulator;
let dir: string;
let ledger: Ledger;
let gw: TestGateway;

beforeAll(async () => {
  [dg, cartesia, oai] = await Promise.all([startDeepgramEmulator({ idleTimeoutMs: 60_000 }), startCartesiaEmulator(), startOpenAiChatEmulator()]);
  dir = mkdtempSync(join(tmpdir(), 'gw-usage-api-'));
  ledger = (await openLedger({ kind: 'sqlite', path: join(dir, 'usage.db') }, { log: silentLogger })) as Ledger;
  gw = await startLedgerGateway(ledger, {
    env: {
      ADMIN_TOKEN,
      DEEPGRAM_API_KEY: 'dg-test-key',
      DEEPGRAM_BASE_URL: dg.url,
      CARTESIA_API_KEY: 'cartesia-test-key',
      CARTESIA_BASE_URL: cartesia.url,
      OPENAI_API_KEY: 'sk-test-key',
      OPENAI_BASE_URL: `${oai.url}/v1`,
    },
    file: { ledger: { checkpointS: 1 } },
  });
});

afterAll(async () => {
  await gw?.close();
  await ledger?.close();
  await Promise.all([dg?.close(), cartesia?.close(), oai?.close()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };

async function usage(g: TestGateway, query: string, headers: Record<string, string> = admin, method = 'GET'): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${g.baseUrl}/usage${query}`, { method, headers });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const errorMessage = (body: Record<string, unknown>): string => (body.error as { message: string }).message;

async function ws(path: string, headers: Record<string, string>): Promise<WsRecorder> {
  const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
  const res = await openWs(gw.wsUrl(path), { Authorization: bearer(token), ...headers });
  if ('status' in res) throw new Error(`upgrade rejected: ${res.status}`);
  return new WsRecorder(res);
}

const roomHeaders = (room: string) => ({
  'X-LiveKit-Room-Id': room,
  'X-LiveKit-Job-Id': `job-${room}`,
  'X-LiveKit-Agent-Id': 'agent-7',
  'X-LiveKit-Session-ID': `client-${room}`,
});

describe('GET /v1/usage authentication', () => {
  it('needs the admin token: no token, a wrong one and a valid LiveKit JWT are 401', async () => {
    const jwt = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
    const attempts: Record<string, string>[] = [{}, { Authorization: 'Bearer not-the-admin-token-at-all' }, { Authorization: bearer(jwt) }, { Authorization: ADMIN_TOKEN }];
    for (const headers of attempts) {
      const r = await usage(gw, '', headers);
      expect(r.status).toBe(401);
      expect(errorMessage(r.body)).toMatch(/admin token/);
    }
    expect((await usage(gw, '')).status).toBe(200);
  });

  it('is 405 for other methods and 400 with the reason for bad filters', async () => {
    expect((await usage(gw, '', admin, 'POST')).status).toBe(405);
    const bad = await usage(gw, '?group_by=user');
    expect(bad.status).toBe(400);
    expect(errorMessage(bad.body)).toMatch(/group_by: unknown key "user"/);
    const badTime = await usage(gw, '?from=last-week');
    expect(badTime.status).toBe(400);
    expect(errorMessage(badTime.body)).toMatch(/from: not an ISO 8601/);
  });

  it('is 403 when no admin token is configured, and 404 when the ledger is disabled', async () => {
    const noAdmin = await startTestGateway();
    const withAdmin = await startTestGateway({ env: { ADMIN_TOKEN } });
    try {
      const r = await usage(noAdmin, '', { Authorization: 'Bearer whatever-token-value' });
      expect(r.status).toBe(403);
      expect(errorMessage(r.body)).toMatch(/ADMIN_TOKEN/);
      const n = await usage(withAdmin, '');
      expect(n.status).toBe(404);
      expect(errorMessage(n.body)).toMatch(/ledger is disabled/);
    } finally {
      await noAdmin.close();
      await withAdmin.close();
    }
  });
});

describe('GET /v1/usage records', () => {
  it('has one record per STT session, TTS session and LLM request with their headers and quantities', async () => {
    // STT: exactly 0.6 s of audio, in room-a.
    const stt = await ws('/v1/stt', roomHeaders('room-a'));
    const n = dg.connections.length;
    stt.send(createMessage());
    const sttId = (await stt.first('session.created')).session_id as string;
    const conn = await dg.waitForConnection(n + 1);
    sendBinary(stt, Buffer.alloc(0.6 * BYTES_PER_SECOND, 3));
    await waitUntil(() => conn.audioBytes === 0.6 * BYTES_PER_SECOND, 'audio upstream');
    stt.send({ type: 'session.close' });
    await stt.closed();

    // TTS: one generation, in room-a.
    const tts = await ws('/v1/tts', roomHeaders('room-a'));
    tts.send(ttsCreate());
    const ttsId = (await tts.first('session.created')).session_id as string;
    const msgs = await generation(tts, ['Hello there, ', 'how are you? ']);
    expect(msgs.at(-1)?.type).toBe('done');
    tts.send({ type: 'session.close' });
    await tts.closed();

    // LLM: one request, in room-b.
    const jwt = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
    const res = await fetch(`${gw.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { Authorization: bearer(jwt), 'Content-Type': 'application/json', ...roomHeaders('room-b') },
      body: JSON.stringify({ model: 'openai/gpt-4.1-mini', messages: [{ role: 'user', content: 'hello there' }] }),
    });
    expect(res.status).toBe(200);
    const completion = (await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };

    await waitUntil(() => gw.gateway.sessions.size === 0, 'sessions to end');
    await ledger.flush();

    const roomA = await usage(gw, '?room=room-a');
    expect(roomA.status).toBe(200);
    const records = (roomA.body as unknown as UsageReport).records as UsageRecordOut[];
    expect(records.map((r) => r.id).sort()).toEqual([sttId, ttsId].sort());
    const sttRow = records.find((r) => r.id === sttId);
    expect(sttRow).toMatchObject({
      status: 'closed',
      modality: 'stt',
      api_key: TEST_KEY,
      provider: 'deepgram',
      model: 'nova-3',
      room_id: 'room-a',
      job_id: 'job-room-a',
      agent_id: 'agent-7',
      client_session_id: 'client-room-a',
      audio_seconds: 0.6,
      outcome: 'ok',
      error_code: null,
    });
    expect(Date.parse(sttRow?.ended_at ?? '')).toBeGreaterThanOrEqual(Date.parse(sttRow?.started_at ?? ''));
    const metrics = await gw.metricsText();
    const ttsRow = records.find((r) => r.id === ttsId);
    expect(ttsRow).toMatchObject({ modality: 'tts', provider: 'cartesia', room_id: 'room-a', generations: 1, outcome: 'ok' });
    expect(ttsRow?.characters).toBe(metricValue(metrics, 'gateway_tts_characters_total', { provider: 'cartesia' }));
    expect(ttsRow?.characters).toBe('Hello there, how are you? '.length);

    const roomB = (await usage(gw, '?room=room-b')).body as unknown as UsageReport;
    expect(roomB.records).toEqual([
      expect.objectContaining({
        modality: 'llm',
        provider: 'openai',
        model: 'gpt-4.1-mini',
        room_id: 'room-b',
        prompt_tokens: completion.usage.prompt_tokens,
        completion_tokens: completion.usage.completion_tokens,
        tokens_estimated: false,
        outcome: 'ok',
      }),
    ]);

    const byModality = (await usage(gw, '?group_by=modality,room')).body as unknown as UsageReport;
    expect(byModality.groups?.map((g) => [g.key.modality, g.key.room, g.records])).toEqual([
      ['llm', 'room-b', 1],
      ['stt', 'room-a', 1],
      ['tts', 'room-a', 1],
    ]);
    expect(byModality.totals).toMatchObject({ records: 3, stt_audio_seconds: 0.6, tts_characters: 26, llm_prompt_tokens: completion.usage.prompt_tokens });

    const byModel = (await usage(gw, `?model=deepgram/nova-3&api_key=${TEST_KEY}&from=2020-01-01&group_by=day`)).body as unknown as UsageReport;
    expect(byModel.groups).toEqual([expect.objectContaining({ key: { day: new Date().toISOString().slice(0, 10) }, records: 1, stt_audio_seconds: 0.6 })]);
    expect((await usage(gw, '?api_key=someone-else')).body.totals).toMatchObject({ records: 0 });
  });
});

describe('checkpoints of live sessions', () => {
  it('a live TTS session is an open row with the characters so far, then closed with the same', async () => {
    const tts = await ws('/v1/tts', roomHeaders('room-live'));
    tts.send(ttsCreate());
    const id = (await tts.first('session.created')).session_id as string;
    expect((await generation(tts, ['One two three. '])).at(-1)?.type).toBe('done');
    const row = async (): Promise<UsageRecordOut | undefined> =>
      ((await usage(gw, '?room=room-live')).body as unknown as UsageReport).records?.find((r) => r.id === id);
    let open: UsageRecordOut | undefined;
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      open = await row();
      if (open) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(open).toMatchObject({ status: 'open', outcome: 'open', modality: 'tts', characters: 'One two three. '.length, generations: 1 });
    tts.send({ type: 'session.close' });
    await tts.closed();
    await waitUntil(() => gw.gateway.sessions.size === 0, 'the session to end');
    await ledger.flush();
    expect(await row()).toMatchObject({ status: 'closed', outcome: 'ok', characters: 'One two three. '.length, audio_seconds: open?.audio_seconds });
  });
});
