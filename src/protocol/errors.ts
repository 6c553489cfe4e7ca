/**
 * The one error table: every error the gateway can report maps to an HTTP status (for HTTP
 * answers and upgrade rejections), a WebSocket close code (when the error ends a socket) and a
 * retryability flag that follows the LiveKit client rule (4xx are not retryable except 408,
 * 429, 499; everything else is). Code 2007 is the LiveKit gateway's STT inactivity timeout.
 */

export const ERROR_TABLE = {
  bad_request: { status: 400, close: 1008, retryable: false, type: 'invalid_request_error' },
  unauthorized: { status: 401, close: 1008, retryable: false, type: 'authentication_error' },
  forbidden: { status: 403, close: 1008, retryable: false, type: 'permission_error' },
  not_found: { status: 404, close: 1008, retryable: false, type: 'not_found_error' },
  method_not_allowed: { status: 405, close: 1008, retryable: false, type: 'invalid_request_error' },
  timeout: { status: 408, close: 1011, retryable: true, type: 'timeout_error' },
  upgrade_required: { status: 426, close: 1008, retryable: false, type: 'invalid_request_error' },
  payload_too_large: { status: 413, close: 1009, retryable: false, type: 'invalid_request_error' },
  rate_limited: { status: 429, close: 1013, retryable: true, type: 'rate_limit_error' },
  internal: { status: 500, close: 1011, retryable: true, type: 'api_error' },
  provider_error: { status: 502, close: 1011, retryable: true, type: 'api_error' },
  unavailable: { status: 503, close: 1013, retryable: true, type: 'api_error' },
  provider_timeout: { status: 504, close: 1011, retryable: true, type: 'api_error' },
  inactivity: { status: 2007, close: 1000, retryable: false, type: 'inactivity_timeout' },
} as const satisfies Record<string, { status: number; close: number; retryable: boolean; type: string }>;

export type ErrorCode = keyof typeof ERROR_TABLE;

/** The single error type of the gateway. `message` is safe to show to clients (no secrets). */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  /** Extra fields carried on the client-facing error event (e.g. category, remaining_limit). */
  readonly fields: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, fields?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GatewayError';
    this.code = code;
    this.fields = fields;
  }

  get status(): number {
    return ERROR_TABLE[this.code].status;
  }

  get closeCode(): number {
    return ERROR_TABLE[this.code].close;
  }

  get retryable(): boolean {
    return ERROR_TABLE[this.code].retryable;
  }
}

export function isRetryableStatus(status: number): boolean {
  if (status >= 400 && status < 500) return status === 408 || status === 429 || status === 499;
  return true;
}

/** Map an HTTP-like status (e.g. from a provider's upgrade response) to our code. */
export function codeForUpstreamStatus(status: number): ErrorCode {
  if (status === 401 || status === 403) return 'unauthorized';
  if (status === 429) return 'rate_limited';
  if (status === 400 || status === 404 || status === 422) return 'bad_request';
  if (status === 408 || status === 504) return 'provider_timeout';
  return 'provider_error';
}

/** OpenAI-format JSON error body, used for every HTTP error answer (and upgrade rejections). */
export function httpErrorBody(err: GatewayError): string {
  return JSON.stringify({
    error: { message: err.message, type: ERROR_TABLE[err.code].type, code: err.status, ...err.fields },
  });
}

/** The WebSocket `error` event (STT/TTS protocol). */
export function wsErrorEvent(err: GatewayError, sessionId?: string): string {
  return JSON.stringify({
    type: 'error',
    code: err.status,
    message: err.message,
    ...err.fields,
    ...(sessionId ? { session_id: sessionId } : {}),
  });
}
