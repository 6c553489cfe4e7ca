/**
 * Ledger durability (issue 7): the real gateway process (`node src/main.ts`, SQLite ledger,
 * checkpoints every second) serves STT sessions against the Deepgram emulator and is killed
 * with SIGKILL while a session streams audio. After the kill, every session the client saw
 * closed has its final record with its exact audio; the live sessions have their last
 * checkpoint, and the restarted gateway marks them interrupted and reports them. A graceful
 * SIGTERM drains the queue: the session it ends is recorded too.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { synthesize } from '../emulators/audio.ts';
import { startDeepgramEmulator, type DeepgramEmulator } from '../emulators/deepgram.ts';
import { connectChild, startChildGateway, type ChildGateway } from '../helpers/child-gateway.ts';
import { BYTES_PER_SECOND, RATE, createMessage, sendBinary, waitUntil } from '../helpers/stt.ts';
import type { WsRecorder } from '../helpers/ws.ts';

const ADMIN_TOKEN = 'admin-token-for-durability-tests';

let emu: DeepgramEmulator;
let dir: string;
let dbPath: string;
let env: Record<string, string>;
const children: ChildGateway[] = [];
const clients: WsRecorder[] = [];

beforeAll(async () => {
  emu = await startDeepgramEmulator({ idleTimeoutMs: 60_000 });
  dir = mkdtempSync(join(tmpdir(), 'gw-durability-'));
  dbPath = join(dir, 'data', 'usage.db');
  const cfgPath = join(dir, 'gateway.yaml');
  writeFileSync(cfgPath, 'ledger:\n  checkpointS: 1\n');
  env = {
    DEEPGRAM_API_KEY: 'dg-test-key',
    DEEPGRAM_BASE_URL: emu.url,
    USAGE_DB: dbPath,
    GATEWAY_CONFIG: cfgPath,
    ADMIN_TOKEN,
  };
});

afterAll(async () => {
  for (const c of clients) c.ws.terminate();
  for (const g of children) if (g.proc.exitCode === null && g.proc.signalCode === null) g.proc.kill('SIGKILL');
  await emu?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function start(): Promise<ChildGateway> {
  const g = await startChildGateway(env);
  children.push(g);
  return g;
}

/** Tone "speech" repeated and cut to exactly `seconds`. */
function pcm(seconds: number): Buffer {
  const bytes = Math.round(seconds * BYTES_PER_SECOND);
  const base = synthesize([{ words: ['alpha', 'bravo', 'charlie', 'delta'] }, { silenceMs: 200 }], { sampleRate: RATE });
  const out = Buffer.alloc(bytes);
  for (let off = 0; off < bytes; off += base.length) base.copy(out, off, 0, Math.min(base.length, bytes - off));
  return out;
}

interface Live {
  rec: WsRecorder;
  id: string;
  /** Bytes the emulator must have received (upstream connection index). */
  conn: number;
  sent: number;
}

async function open(g: ChildGateway, room: string): Promise<Live> {
  const rec = await connectChild(g, '/v1/stt', { 'X-LiveKit-Room-Id': room, 'X-LiveKit-Job-Id': `job-${room}` });
  clients.push(rec);
  const n = emu.connections.length;
  rec.send(createMessage());
  const created = await rec.first('session.created');
  await emu.waitForConnection(n + 1, 5000);
  return { rec, id: created.session_id as string, conn: n, sent: 0 };
}

function send(s: Live, seconds: number): void {
  const audio = pcm(seconds);
  sendBinary(s.rec, audio);
  s.sent += audio.length;
}

/** Until the provider got every byte sent (so the gateway has metered it). */
async function forwarded(s: Live): Promise<void> {
  const c = emu.connections[s.conn];
  if (!c) throw new Error('no upstream connection');
  await waitUntil(() => c.audioBytes === s.sent, `${s.sent} bytes upstream (got ${c.audioBytes})`, 5000);
}

async function closeSession(s: Live): Promise<void> {
  s.rec.send({ type: 'session.close' });
  await s.rec.closed(5000);
}

interface Row {
  id: string;
  status: string;
  outcome: string;
  audio_seconds: number;
  room_id: string | null;
  job_id: string | null;
  api_key: string;
  ended_at: number;
}

function rows(): Map<string, Row> {
  const db = new DatabaseSync(dbPath, { readOnly: true });
  try {
    const all = db.prepare('SELECT id, status, outcome, audio_seconds, room_id, job_id, api_key, ended_at FROM usage_records').all() as unknown as Row[];
    return new Map(all.map((r) => [r.id, r]));
  } finally {
    db.close();
  }
}

const seconds = (bytes: number): number => bytes / BYTES_PER_SECOND;

describe('usage ledger durability', () => {
  it('kill -9 under load keeps every closed session and the live sessions\' last checkpoints', async () => {
    const g1 = await start();

    // Sessions that complete normally.
    const closed: Live[] = [];
    for (let i = 0; i < 4; i++) {
      const s = await open(g1, `room-${i % 2}`);
      send(s, 0.4 + 0.25 * i);
      closed.push(s);
    }
    for (const s of closed) await forwarded(s);
    await Promise.all(closed.map(closeSession));

    // A live session that paused: its checkpoint must reach exactly what it sent.
    const paused = await open(g1, 'room-paused');
    send(paused, 1.5);
    await forwarded(paused);
    await waitUntil(() => rows().get(paused.id)?.audio_seconds === 1.5, 'a checkpoint of the paused session with 1.5 s', 8000);
    expect(rows().get(paused.id)?.status).toBe('open');

    // A live session streaming at 2x real time while sessions close and the gateway is killed.
    const streaming = await open(g1, 'room-streaming');
    let streamErr: unknown = null;
    const ticker = setInterval(() => {
      try {
        send(streaming, 0.1);
      } catch (err) {
        streamErr = err;
      }
    }, 50);
    try {
      await waitUntil(() => (rows().get(streaming.id)?.audio_seconds ?? 0) > 0, 'a checkpoint of the streaming session', 8000);
      // The last sessions end while audio flows; the kill follows their close at once.
      const last: Live[] = [];
      for (let i = 0; i < 3; i++) {
        const s = await open(g1, 'room-last');
        send(s, 0.3 + 0.1 * i);
        last.push(s);
      }
      for (const s of last) await forwarded(s);
      await Promise.all(last.map(closeSession));
      g1.proc.kill('SIGKILL');
      expect(await g1.exited).toBe('SIGKILL');
      closed.push(...last);
    } finally {
      clearInterval(ticker);
    }
    expect(streamErr).toBeNull();

    const after = rows();
    for (const s of closed) {
      expect(after.get(s.id), `closed session ${s.id}`).toMatchObject({ status: 'closed', outcome: 'ok', audio_seconds: seconds(s.sent), api_key: 'test-api-key' });
    }
    expect(after.get(closed[1]?.id as string)).toMatchObject({ room_id: 'room-1', job_id: 'job-room-1' });
    expect(after.get(paused.id)).toMatchObject({ status: 'open', outcome: 'open', audio_seconds: 1.5, room_id: 'room-paused' });
    const streamed = after.get(streaming.id);
    expect(streamed?.status).toBe('open');
    expect(streamed?.audio_seconds).toBeGreaterThan(0);
    expect(streamed?.audio_seconds).toBeLessThanOrEqual(seconds(streaming.sent));

    // Restart on the same file: the dead process's open rows become `interrupted`, quantities kept.
    const g2 = await start();
    const res = await fetch(`${g2.url}/v1/usage?room=room-paused`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    const report = (await res.json()) as { records: { id: string; status: string; outcome: string; audio_seconds: number }[] };
    expect(report.records).toEqual([expect.objectContaining({ id: paused.id, status: 'closed', outcome: 'interrupted', audio_seconds: 1.5 })]);
    const totals = (await (await fetch(`${g2.url}/v1/usage`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as {
      totals: { records: number; open: number; stt_audio_seconds: number };
    };
    expect(totals.totals.records).toBe(closed.length + 2);
    expect(totals.totals.open).toBe(0);
    expect(totals.totals.stt_audio_seconds).toBeCloseTo(closed.reduce((a, s) => a + seconds(s.sent), 0) + 1.5 + (streamed?.audio_seconds ?? 0), 9);

    // Graceful stop: the live session is ended by the drain and its final record written.
    const s = await open(g2, 'room-graceful');
    send(s, 0.5);
    await forwarded(s);
    g2.proc.kill('SIGTERM');
    expect(await g2.exited).toBe(0);
    expect(rows().get(s.id)).toMatchObject({ status: 'closed', outcome: 'ok', audio_seconds: 0.5, room_id: 'room-graceful' });
  });
});
