/**
 * Raw `/v1/tts` protocol client helpers (plain `ws`, no LiveKit SDK): open an authenticated
 * socket, send a session.create shaped like the Node 1.9 client's, run one generation, decode
 * the audio, and clean up every socket a test opened.
 */
import { DEFAULT_MS_PER_CHAR } from '../emulators/tts-audio.ts';
import type { TestGateway } from './gateway.ts';
import { TEST_KEY, TEST_SECRET } from './gateway.ts';
import { bearer, mintToken } from './tokens.ts';
import { openWs, WsRecorder, type JsonMessage } from './ws.ts';

export { sleep, waitUntil } from './stt.ts';

/** Audio ms per character of the emulators' tone speech (their default). */
export const MS_PER_CHAR = DEFAULT_MS_PER_CHAR;
export const CARTESIA_VOICE = '9626c31c-bec5-4cca-baa8-f8ba9e84c8bc';
export const OTHER_CARTESIA_VOICE = 'e07c00bc-4134-4eae-9ea4-1a55fb45746b';
export const CARTESIA_MODEL = `cartesia/sonic-3:${CARTESIA_VOICE}`;

const openClients = new Set<WsRecorder>();

/** Open an authenticated /v1/tts socket; throws if the upgrade is rejected. */
export async function connectTts(gw: TestGateway): Promise<WsRecorder> {
  const token = await mintToken({ key: TEST_KEY, secret: TEST_SECRET });
  const res = await openWs(gw.wsUrl('/v1/tts'), { Authorization: bearer(token) });
  if ('status' in res) throw new Error(`upgrade rejected: ${res.status} ${res.body}`);
  const rec = new WsRecorder(res);
  openClients.add(rec);
  return rec;
}

/** A session.create like the Node 1.9 client's (flat, sample_rate as a string). */
export function ttsCreate(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'session.create',
    sample_rate: '24000',
    encoding: 'pcm_s16le',
    model: CARTESIA_MODEL,
    language: 'en',
    extra: {},
    connection: { timeout: 10, retries: 3 },
    ...over,
  };
}

/** Connect, send session.create, wait for session.created. */
export async function startTts(gw: TestGateway, over: Record<string, unknown> = {}): Promise<{ rec: WsRecorder; id: string }> {
  const rec = await connectTts(gw);
  rec.send(ttsCreate(over));
  const created = await rec.first('session.created');
  return { rec, id: created.session_id as string };
}

export function transcript(text: string, generationConfig: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'input_transcript', transcript: text, generation_config: generationConfig, extra };
}

/**
 * Send chunks and a flush; resolves with the messages from the first chunk on, up to and
 * including the generation's `done` or `error`.
 */
export async function generation(rec: WsRecorder, chunks: string[], timeoutMs = 10_000): Promise<JsonMessage[]> {
  const from = rec.messages.length;
  for (const t of chunks) rec.send(transcript(t));
  rec.send({ type: 'session.flush' });
  return untilEnd(rec, from, timeoutMs);
}

/** Messages from index `from` up to and including the first `done` or `error` after it. */
export async function untilEnd(rec: WsRecorder, from: number, timeoutMs = 10_000): Promise<JsonMessage[]> {
  const end = (): number => rec.messages.findIndex((m, i) => i >= from && (m.type === 'done' || m.type === 'error'));
  await rec.until(() => end() >= 0, 'done or error', timeoutMs);
  return rec.messages.slice(from, end() + 1);
}

export function audioOf(msgs: JsonMessage[]): Buffer {
  return Buffer.concat(msgs.filter((m) => m.type === 'output_audio').map((m) => Buffer.from(m.audio as string, 'base64')));
}

/** Exact PCM bytes of `chars` characters of tone speech at `rate`. */
export function expectedBytes(chars: number, rate = 24000): number {
  return Math.round((chars * MS_PER_CHAR * rate) / 1000) * 2;
}

/** Terminate every socket opened through connectTts that is still open. */
export function closeAllTtsClients(): void {
  for (const rec of openClients) {
    if (rec.closeCode === undefined) rec.ws.terminate();
  }
  openClients.clear();
}
