/**
 * STT WebSocket protocol (shared/protocol.md section 2): client messages validated with zod
 * (control messages only: audio frames take a hand-written fast path in the session), and
 * builders for every server message.
 */
import { z } from 'zod';
import { connectionSchema, extraSchema } from './common.ts';


export const sttSessionCreateSchema = z.object({
  type: z.literal('session.create'),
  model: z.string().min(1).max(200).nullish(),
  settings: z
    .object({
      sample_rate: z.union([z.string(), z.number()]).nullish(),
      encoding: z.string().nullish(),
      language: z.string().min(1).max(35).nullish(),
      extra: extraSchema,
    })
    .nullish(),
  fallback: z
    .object({
      models: z
        .array(z.object({ model: z.string().min(1).max(200), extra: extraSchema }))
        .max(8),
    })
    .nullish(),
  connection: connectionSchema,
});
export type SttSessionCreate = z.infer<typeof sttSessionCreateSchema>;

export const sttSessionUpdateSchema = z.object({
  type: z.literal('session.update'),
  settings: z.object({
    model: z.string().min(1).max(200).nullish(),
    language: z.string().min(1).max(35).nullish(),
    extra: z.record(z.string(), z.unknown()).nullish(),
  }),
});
export type SttSessionUpdate = z.infer<typeof sttSessionUpdateSchema>;

export const sttInputAudioSchema = z.object({ type: z.literal('input_audio'), audio: z.string() });

export const STT_CLIENT_TYPES = ['session.create', 'input_audio', 'session.update', 'session.finalize', 'session.close'] as const;

export { describeZodError } from './common.ts';

// ---- server messages -------------------------------------------------------------------

export interface WireWord {
  word: string;
  start: number;
  end: number;
  confidence: number;
  speaker_id?: string | null;
}

/** A transcript segment on the client's timeline (seconds since the socket's first audio). */
export interface SttTranscriptOut {
  transcript: string;
  language: string;
  start: number;
  duration: number;
  confidence: number;
  words: WireWord[];
  speaker_id?: string | null;
  extra?: Record<string, unknown>;
}

export type TranscriptKind = 'interim_transcript' | 'final_transcript' | 'preflight_transcript';

const round = (n: number): number => Math.round(n * 1000) / 1000;

export function transcriptMessage(type: TranscriptKind, sessionId: string, t: SttTranscriptOut): string {
  const msg: Record<string, unknown> = {
    type,
    session_id: sessionId,
    request_id: sessionId,
    transcript: t.transcript,
    language: t.language,
    start: round(t.start),
    duration: round(t.duration),
    confidence: t.confidence,
    words: t.words.map((w) => ({
      word: w.word,
      start: round(w.start),
      end: round(w.end),
      confidence: w.confidence,
      ...(w.speaker_id != null ? { speaker_id: w.speaker_id } : {}),
    })),
  };
  if (t.speaker_id != null) msg.speaker_id = t.speaker_id;
  if (t.extra && Object.keys(t.extra).length > 0) msg.extra = t.extra;
  return JSON.stringify(msg);
}

export function sessionCreatedMessage(sessionId: string, fields?: Record<string, unknown>): string {
  return JSON.stringify({ type: 'session.created', session_id: sessionId, ...fields });
}

export function simpleMessage(type: 'start_of_speech' | 'session.finalized' | 'session.closed', sessionId: string): string {
  return JSON.stringify({ type, session_id: sessionId });
}
