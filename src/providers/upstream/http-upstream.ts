/**
 * Shared HTTP upstream lifecycle: a streaming POST with a deadline for the response headers,
 * error classification of non-2xx answers (status + the provider's message, never our key),
 * and abort. Requests go through node:http / node:https with module-level keep-alive Agents:
 * cheaper per request than fetch (docs/perf.md), and idle connections stay warm for about a
 * minute, so a pause between conversation turns does not cost a new TCP+TLS handshake.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { GatewayError, codeForUpstreamStatus } from '../../protocol/errors.ts';
import type { HttpRequestSpec } from '../types.ts';
import { providerReason } from './ws-upstream.ts';

const MAX_ERROR_BODY = 4096;

/**
 * Idle keep-alive sockets. In Node's Agent, `timeout` is the socket's idle timeout: a free
 * (pooled) socket that stays idle that long is destroyed, and a server's `Keep-Alive: timeout=N`
 * hint lowers it to N - 1 s (agentKeepAliveTimeoutBuffer). On a socket in use it only emits
 * 'timeout' (nothing here listens; the deadlines are ours). Free sockets are unref'd by the
 * Agent, so a warm pool never keeps the process alive.
 */
const IDLE_SOCKET_MS = 60_000;
const AGENT_OPTIONS: http.AgentOptions = {
  keepAlive: true,
  keepAliveMsecs: 1000,
  maxSockets: Infinity,
  maxFreeSockets: 256,
  timeout: IDLE_SOCKET_MS,
};
const httpAgent = new http.Agent(AGENT_OPTIONS);
const httpsAgent = new https.Agent(AGENT_OPTIONS);

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

export interface StreamHandlers {
  /** A 2xx answer arrived (headers, lower-case names); the body follows through onData. */
  onResponse?(status: number, headers: IncomingHttpHeaders): void;
  onData(chunk: Buffer): void;
  onEnd(): void;
  /** Called once, instead of onEnd, for any failure (not for an abort we asked for). */
  onError(err: GatewayError): void;
}

/**
 * The error of a request written to a pooled socket that the server had just closed as idle (a
 * race no keep-alive client avoids). Before any response, the request was almost surely never
 * read, so it is sent once more on a fresh connection (the pattern Node's http docs show).
 */
function isStaleSocketError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

/**
 * POST `spec` and stream the body. Returns an abort function; after an abort no handler is
 * called. The headers must arrive within `timeoutMs`.
 */
export function streamPost(spec: HttpRequestSpec, opts: { timeoutMs: number; label: string }, h: StreamHandlers): () => void {
  let aborted = false;
  let finished = false;
  let req: http.ClientRequest | null = null;
  let res: IncomingMessage | null = null;
  const finish = (fn: () => void): void => {
    if (finished || aborted) return;
    finished = true;
    clearTimeout(timer);
    fn();
  };
  /** Drop the connection (it is not reused): for a deadline, an oversized error body, an abort. */
  const destroy = (): void => {
    res?.destroy();
    req?.destroy();
  };
  const unreachable = (err: unknown): void =>
    finish(() => h.onError(new GatewayError('provider_error', `${opts.label}: could not reach provider`, undefined, { cause: err })));
  const brokeOff = (err: unknown): void =>
    finish(() => h.onError(new GatewayError('provider_error', `${opts.label}: provider stream broke off`, undefined, { cause: err })));
  /** What a connection error means once the headers are in (the request reports it, not the body). */
  let bodyError: (err: unknown) => void = brokeOff;

  let timer: NodeJS.Timeout = setTimeout(() => {
    finish(() => h.onError(new GatewayError('provider_timeout', `${opts.label}: no response from provider after ${opts.timeoutMs} ms`)));
    destroy();
  }, opts.timeoutMs);

  const onErrorResponse = (m: IncomingMessage, status: number): void => {
    // Read up to MAX_ERROR_BODY of the provider's message; a body that stalls gets the same
    // deadline as the headers, and a broken one still leaves the status.
    const chunks: Buffer[] = [];
    let size = 0;
    const report = (): void => finish(() => h.onError(httpStatusError(opts.label, status, Buffer.concat(chunks).toString('utf8').slice(0, MAX_ERROR_BODY))));
    timer = setTimeout(() => {
      report();
      destroy();
    }, opts.timeoutMs);
    m.on('data', (c: Buffer) => {
      if (finished || aborted) return;
      chunks.push(c);
      size += c.length;
      if (size >= MAX_ERROR_BODY) {
        report();
        destroy();
      }
    });
    m.on('end', report);
    m.on('error', report);
    m.on('close', report);
    bodyError = report;
  };

  const onResponse = (m: IncomingMessage): void => {
    if (finished || aborted) {
      m.destroy();
      return;
    }
    clearTimeout(timer);
    res = m;
    const status = m.statusCode ?? 0;
    if (status < 200 || status > 299) {
      onErrorResponse(m, status);
      return;
    }
    h.onResponse?.(status, m.headers);
    if (finished || aborted) return;
    m.on('data', (c: Buffer) => {
      if (finished || aborted) return;
      try {
        h.onData(c);
      } catch (err) {
        brokeOff(err);
        destroy();
      }
    });
    m.on('end', () => finish(() => h.onEnd()));
    m.on('error', brokeOff);
    // A connection closed before the end of the body without an 'error' (belt and braces).
    m.on('close', () => {
      if (!m.complete) brokeOff(new Error('connection closed before the end of the response body'));
    });
  };

  let body: Buffer;
  let url: URL;
  let agent: http.Agent;
  let request: typeof http.request;
  const headers: OutgoingHttpHeaders = {};
  try {
    url = new URL(spec.url);
    if (url.protocol === 'https:') {
      agent = httpsAgent;
      request = https.request;
    } else if (url.protocol === 'http:') {
      agent = httpAgent;
      request = http.request;
    } else {
      throw new Error(`unsupported protocol ${url.protocol}`);
    }
    body = Buffer.from(spec.body, 'utf8');
    // Lower-case names so the ones set here replace, not duplicate, the caller's.
    for (const [name, value] of Object.entries(spec.headers)) headers[name.toLowerCase()] = value;
    headers['content-length'] = body.length;
    headers.connection = 'keep-alive';
    // No compressed bodies: the stream goes to the parser (or the client) as it arrives.
    headers['accept-encoding'] ??= 'identity';
  } catch (err) {
    process.nextTick(unreachable, err);
    return () => {
      aborted = true;
      clearTimeout(timer);
    };
  }

  let retried = false;
  const send = (): void => {
    let r: http.ClientRequest;
    try {
      r = request(url, { method: 'POST', headers, agent });
    } catch (err) {
      // e.g. an invalid header value: reported after streamPost returned, like any failure
      process.nextTick(unreachable, err);
      return;
    }
    req = r;
    let responded = false;
    r.on('response', (m) => {
      responded = true;
      onResponse(m);
    });
    r.on('error', (err) => {
      if (finished || aborted) return;
      if (!responded) {
        // A pooled socket the server closed as we reused it: once more on a fresh connection.
        if (r.reusedSocket && !retried && isStaleSocketError(err)) {
          retried = true;
          send();
          return;
        }
        unreachable(err);
      } else {
        bodyError(err);
      }
    });
    r.end(body);
  };
  send();

  return () => {
    if (aborted) return;
    aborted = true;
    clearTimeout(timer);
    // A finished request's socket may already be back in the pool (or serving another request).
    if (!finished) destroy();
  };
}
