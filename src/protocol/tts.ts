/**
 * TTS WebSocket protocol (shared/protocol.md section 3): client messages validated with zod,
 * and builders for every server message. `output_audio` is built by string concatenation
 * (it is the hot path: one per audio chunk).
 */
import { z } from 'zod';
import { connectionSchema, extraSchema } from './common.ts';

export { describeZodError } from './common.ts';

const generationConfigSchema = z
  .object({
    voice: z.string().max(200).nullish(),
    model: z.string().max(200).nullish(),
    language: z.string().max(35).nullish(),
  })
  .nullish();

export const ttsSessionCreateSchema = z.object({
  type: z.literal('session.create'),
  sample_rate: z.union([z.string(), z.number()]).nullish(),
  encoding: z.string().nullish(),
  model: z.string().min(1).max(200).nullish(),
  voice: z.string().max(200).nullish(),
  language: z.string().max(35).nullish(),
  extra: extraSchema,
  fallback: z
    .object({
      models: z
        .array(z.object({ model: z.string().min(1).max(200), voice: z.string().max(200).nullish(), extra: extraSchema }))
        .max(8),
    })
    .nullish(),
  connection: connectionSchema,
});
export type TtsSessionCreate = z.infer<typeof ttsSessionCreateSchema>;

export const ttsInputTranscriptSchema = z.object({
  type: z.literal('input_transcript'),
  transcript: z.string(),
  generation_config: generationConfigSchema,
  extra: z.record(z.string(), z.unknown()).nullish(),
});
export type TtsInputTranscript = z.infer<typeof ttsInputTranscriptSchema>;

// ---- server messages -------------------------------------------------------------------

export function ttsSessionCreated(sessionId: string): string {
  return JSON.stringify({ type: 'session.created', session_id: sessionId });
}

/** Prefix for output_audio of one session; append base64 and `AUDIO_SUFFIX`. */
export function outputAudioPrefix(sessionId: string): string {
  return `{"type":"output_audio","session_id":${JSON.stringify(sessionId)},"audio":"`;
}
export const AUDIO_SUFFIX = '"}';

const r3 = (n: number): number => Math.round(n * 1000) / 1000;

export function outputAlignment(
  sessionId: string,
  a: { words?: { word: string; start: number; end: number }[]; chars?: { char: string; start: number; end: number }[] },
): string {
  const msg: Record<string, unknown> = { type: 'output_alignment', session_id: sessionId };
  if (a.words) msg.words = a.words.map((w) => ({ word: w.word, start: r3(w.start), end: r3(w.end) }));
  if (a.chars) msg.chars = a.chars.map((c) => ({ char: c.char, start: r3(c.start), end: r3(c.end) }));
  return JSON.stringify(msg);
}

export function ttsSimple(type: 'done' | 'session.closed', sessionId: string): string {
  return JSON.stringify({ type, session_id: sessionId });
}

/**
 * Sent while a generation is in progress but the provider has been silent for a few seconds,
 * so the client's 10 s receive timeout does not fire (docs/decisions/0007-tts-heartbeat.md).
 * Clients skip unknown message types.
 */
export function ttsHeartbeat(sessionId: string): string {
  return JSON.stringify({ type: 'heartbeat', session_id: sessionId });
}
