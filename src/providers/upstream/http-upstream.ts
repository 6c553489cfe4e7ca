/**
 * Shared HTTP upstream lifecycle: a streaming POST with a deadline for the response headers,
 * error classification of non-2xx answers (status + the provider's message, never our key),
 * and abort. Node's fetch keeps connections alive between requests (warm sockets).
 */
import { GatewayError, codeForUpstreamStatus } from '../../protocol/errors.ts';
import type { HttpRequestSpec } from '../types.ts';
import { providerReason } from './ws-upstream.ts';

const MAX_ERROR_BODY = 4096;

/** The message of an OpenAI-style `{"error":{"message"}}` body (or `{"detail":...}`), else the text. */
export function errorMessageOf(body: string): string {
  try {
    const j = JSON.parse(body) as { error?: { message?: unknown } | string; detail?: { message?: unknown } | string; message?: unknown };
    const m =
      (typeof j.error === 'object' && j.error !== null ? j.error.message : j.error) ??
      (typeof j.detail === 'object' && j.detail !== null ? j.detail.message : j.detail) ??
      j.message;
    if (typeof m === 'string' && m) return m;
  } catch {
    // not JSON: use the text
  }
  return body;
}

export function httpStatusError(label: string, status: number, body: string): GatewayError {
  const detail = providerReason(errorMessageOf(body));
  const what =
    status === 401 || status === 403
      ? 'provider rejected credentials'
      : status === 429
        ? 'provider rate limit reached'
        : status >= 500
          ? 'provider unavailable'
          : 'provider rejected the request';
  return new GatewayError(codeForUpstreamStatus(status), `${label}: ${what} (HTTP ${status}${detail ? `: ${detail}` : ''})`, {
    provider_status: status,
  });
}

async function readCapped(res: Response): Promise<string> {
  if (!res.body) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const c of res.body) {
      chunks.push(c);
      size += c.length;
      if (size >= MAX_ERROR_BODY) break;
    }
  } catch {
    // a broken error body still leaves the status
  }
  return Buffer.concat(chunks).toString('utf8').slice(0, MAX_ERROR_BODY);
}

export interface StreamHandlers {
  /** A 2xx answer arrived (headers); the body follows through onData. */
  onResponse?(status: number, headers: Headers): void;
  onData(chunk: Buffer): void;
  onEnd(): void;
  /** Called once, instead of onEnd, for any failure (not for an abort we asked for). */
  onError(err: GatewayError): void;
}

/**
 * POST `spec` and stream the body. Returns an abort function; after an abort no handler is
 * called. The headers must arrive within `timeoutMs`.
 */
export function streamPost(spec: HttpRequestSpec, opts: { timeoutMs: number; label: string }, h: StreamHandlers): () => void {
  const ac = new AbortController();
  let aborted = false;
  let finished = false;
  const finish = (fn: () => void): void => {
    if (finished || aborted) return;
    finished = true;
    fn();
  };
  const timer = setTimeout(() => {
    finish(() => h.onError(new GatewayError('provider_timeout', `${opts.label}: no response from provider after ${opts.timeoutMs} ms`)));
    ac.abort();
  }, opts.timeoutMs);

  void (async () => {
    let res: Response;
    try {
      res = await fetch(spec.url, { method: 'POST', headers: spec.headers, body: spec.body, signal: ac.signal });
    } catch (err) {
      clearTimeout(timer);
      finish(() => h.onError(new GatewayError('provider_error', `${opts.label}: could not reach provider`, undefined, { cause: err })));
      return;
    }
    clearTimeout(timer);
    if (!res.ok) {
      const body = await readCapped(res);
      finish(() => h.onError(httpStatusError(opts.label, res.status, body)));
      return;
    }
    if (aborted || finished) return;
    h.onResponse?.(res.status, res.headers);
    try {
      if (res.body) {
        for await (const c of res.body) {
          if (aborted || finished) return;
          h.onData(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
        }
      }
      finish(() => h.onEnd());
    } catch (err) {
      finish(() => h.onError(new GatewayError('provider_error', `${opts.label}: provider stream broke off`, undefined, { cause: err })));
    }
  })();

  return () => {
    if (aborted) return;
    aborted = true;
    clearTimeout(timer);
    ac.abort();
  };
}
