/**
 * Structured logging (pino). Static messages, ids as fields. Transcripts and input text are
 * logged only at debug level under `pii.*` keys; secrets never.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({
    level,
    base: { svc: 'gateway' },
    redact: { paths: ['*.authorization', '*.Authorization', '*.apiKey', '*.secret', 'headers'], censor: '[redacted]' },
  });
}

/** A logger that drops everything (tests, benches). */
export const silentLogger: Logger = pino({ level: 'silent' });
