/**
 * Raw `/v1/stt` protocol client helpers (plain `ws`, no LiveKit SDK): open an authenticated
 * socket, build session.create, send audio as binary frames or as base64 `input_audio` in the
 * three JSON spellings clients produce, and clean up every socket a test opened.
 */
import type { TestGateway } from './gateway.ts';
import { TEST_KEY, TEST_SECRET } from './gateway.ts';
import { bearer, mintToken } from './tokens.ts';
import { openWs, WsRecorder, type JsonMessage } from './ws.ts';

export const RATE = 16000;
/** 50 ms at 16 kHz s16le mono: the LiveKit client's chunk size. */
export const FRAME_BYTES = 1600;
export const BYTES_PER_SECOND = RATE * 2;

const openClients = new Set<WsRecorder>();

/** Open an authenticated /v1/stt socket; throws if the upgrade is rejected. */
export async function connectStt(gw: TestGateway, path = '/v1/stt'): Promise<WsRecorder> {
  const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
  const res = await openWs(gw.wsUrl(path), { Authorization: bearer(token) });
  if ('status' in res) throw new Error(`upgrade rejected: ${res.status} ${res.body}`);
  const rec = new WsRecorder(res);
  openClients.add(rec);
  return rec;
}

export interface CreateOptions {
  /** `null` leaves `model` out (the client's `auto`). Default `deepgram/nova-3`. */
  model?: string | null;
  sampleRate?: string | number;
  language?: string;
  extra?: Record<string, unknown>;
  connection?: { timeout?: number; retries?: number };
}

/** A session.create shaped like the Node 1.9 client's (sample_rate as a string, keyterm: []). */
export function createMessage(o: CreateOptions = {}): Record<string, unknown> {
  const settings: Record<string, unknown> = {
    sample_rate: o.sampleRate ?? String(RATE),
    encoding: 'pcm_s16le',
    extra: o.extra ?? { keyterm: [] },
  };
  if (o.language !== undefined) settings.language = o.language;
  const msg: Record<string, unknown> = { type: 'session.create', settings, connection: o.connection ?? { timeout: 10, retries: 3 } };
  if (o.model !== null) msg.model = o.model ?? 'deepgram/nova-3';
  return msg;
}

/** Connect, send session.create, wait for session.created. */
export async function startSession(gw: TestGateway, o: CreateOptions = {}): Promise<{ rec: WsRecorder; id: string; created: JsonMessage }> {
  const rec = await connectStt(gw);
  rec.send(createMessage(o));
  const created = await rec.first('session.created');
  return { rec, id: created.session_id as string, created };
}

export type Base64Style = 'canonical' | 'python' | 'reordered';

/** One input_audio text frame: Node's JSON.stringify, Python's json.dumps, or keys reordered. */
export function inputAudioFrame(pcm: Buffer, style: Base64Style = 'canonical'): string {
  const b64 = pcm.toString('base64');
  switch (style) {
    case 'canonical':
      return JSON.stringify({ type: 'input_audio', audio: b64 });
    case 'python':
      return `{"type": "input_audio", "audio": "${b64}"}`;
    case 'reordered':
      return JSON.stringify({ audio: b64, type: 'input_audio' });
  }
}

/** Send PCM as binary frames of `frameBytes` (or a repeating list of sizes). */
export function sendBinary(rec: WsRecorder, pcm: Buffer, frameBytes: number | readonly number[] = FRAME_BYTES): number {
  let frames = 0;
  for (const chunk of chunks(pcm, frameBytes)) {
    rec.ws.send(chunk, { binary: true });
    frames++;
  }
  return frames;
}

/** Send PCM as base64 input_audio messages, like the LiveKit clients (50 ms chunks). */
export function sendBase64(rec: WsRecorder, pcm: Buffer, style: Base64Style = 'canonical', frameBytes = FRAME_BYTES): number {
  let frames = 0;
  for (const chunk of chunks(pcm, frameBytes)) {
    rec.ws.send(inputAudioFrame(chunk, style));
    frames++;
  }
  return frames;
}

function chunks(pcm: Buffer, sizes: number | readonly number[]): Buffer[] {
  const out: Buffer[] = [];
  let off = 0;
  let i = 0;
  while (off < pcm.length) {
    const n = typeof sizes === 'number' ? sizes : (sizes[i++ % sizes.length] as number);
    out.push(pcm.subarray(off, off + n));
    off += n;
  }
  return out;
}

/** Wait for the next `error` event after the ones already received. */
export function nextError(rec: WsRecorder, timeoutMs = 5000): Promise<JsonMessage> {
  return rec.next('error', timeoutMs);
}

/** Text of every final_transcript so far. */
export function finals(rec: WsRecorder): string[] {
  return rec.of('final_transcript').map((m) => m.transcript as string);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `pred` every 20 ms until it holds; throws after `timeoutMs`. */
export async function waitUntil(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Terminate every socket opened through connectStt that is still open. */
export function closeAllClients(): void {
  for (const rec of openClients) {
    if (rec.closeCode === undefined) rec.ws.terminate();
  }
  openClients.clear();
}

/** After a test: drop the client sockets it left open and wait until the gateway has no session. */
export async function settle(gw: TestGateway, timeoutMs = 5000): Promise<void> {
  closeAllClients();
  await waitUntil(() => gw.gateway.sessions.size === 0, 'all gateway sessions to end', timeoutMs);
}
