/**
 * Structured logging (pino). Static messages, ids as fields. Transcripts and input text are
 * logged only at debug level under `pii.*` keys; secrets never.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  // process.stdout rather than pino's default sonic-boom destination: on exit sonic-boom
  // flushes synchronously and retries forever on EPIPE when nothing reads stdout any more,
  // which hung graceful shutdown. A closed stdout must never stop the gateway.
  process.stdout.on('error', () => {});
  return pino(
    {
      level,
      base: { svc: 'gateway' },
      redact: { paths: ['*.authorization', '*.Authorization', '*.apiKey', '*.secret', 'headers'], censor: '[redacted]' },
    },
    process.stdout,
  );
}

/** A logger that drops everything (tests, benches). */
export const silentLogger: Logger = pino({ level: 'silent' });
