/** Schema pieces and helpers shared by the STT and TTS protocols. */
import { z } from 'zod';

/** Provider options object; absent/null becomes {}. */
export const extraSchema = z.record(z.string(), z.unknown()).nullish().transform((v) => v ?? {});

/** The client's `connection` options (STT and TTS session.create): bound our attempts. */
export const connectionSchema = z
  .object({
    timeout: z.number().positive().max(600).nullish(),
    retries: z.number().int().min(0).max(10).nullish(),
  })
  .nullish();

/** Format zod issues as `path: reason; ...` for error events. */
export function describeZodError(err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}
