/**
 * Shared upstream WebSocket lifecycle: connect with a deadline, classify handshake failures
 * (HTTP status at the upgrade, network errors, timeouts), surface closes, and expose a tiny
 * synchronous send surface. Adapters never open sockets themselves and never retry.
 */
import WebSocket from 'ws';
import { GatewayError, codeForUpstreamStatus } from '../../protocol/errors.ts';
import type { UpstreamRequest } from '../types.ts';

export interface UpstreamHandlers {
  onOpen(): void;
  onMessage(data: Buffer, isBinary: boolean): void;
  /** Called once when the socket is gone, after open (code/reason as received). */
  onClose(code: number, reason: string): void;
  /** Called once when the connection could not be established. */
  onConnectError(err: GatewayError): void;
}

export interface UpstreamSocket {
  send(data: Buffer | string): void;
  readonly bufferedAmount: number;
  readonly isOpen: boolean;
  /** Graceful close frame; the peer's close arrives through onClose. */
  close(code?: number, reason?: string): void;
  /** Drop the TCP connection now. */
  terminate(): void;
}

const MAX_ERROR_BODY = 2048;

function toWsUrl(url: string): string {
  return url.replace(/^http(s?):\/\//i, 'ws$1://');
}

/** Short, printable excerpt of a provider's error text (never contains our credentials). */
export function providerReason(text: string): string {
  const clean = text.replace(/[\r\n\t]+/g, ' ').trim();
  return clean.length > 200 ? `${clean.slice(0, 200)}...` : clean;
}

function handshakeError(status: number, providerLabel: string, body: string, headerText: string | undefined): GatewayError {
  const code = codeForUpstreamStatus(status);
  const detail = providerReason(headerText ?? body);
  const what =
    status === 401 || status === 403
      ? 'provider rejected credentials'
      : status === 429
        ? 'provider rate limit or concurrency limit reached'
        : status >= 500
          ? 'provider unavailable'
          : 'provider rejected the request';
  return new GatewayError(code, `${providerLabel}: ${what} (HTTP ${status}${detail ? `: ${detail}` : ''})`, {
    provider_status: status,
  });
}

export function connectUpstream(
  req: UpstreamRequest,
  opts: { timeoutMs: number; providerLabel: string },
  handlers: UpstreamHandlers,
): UpstreamSocket {
  let settled = false;
  let opened = false;
  const ws = new WebSocket(toWsUrl(req.url), {
    headers: req.headers,
    perMessageDeflate: false,
    // Our own timer (below) owns the deadline; ws's is a backstop only.
    handshakeTimeout: opts.timeoutMs + 1000,
    maxPayload: 16 * 1024 * 1024,
  });

  const fail = (err: GatewayError): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    ws.removeAllListeners('close');
    ws.on('error', () => {});
    ws.terminate();
    handlers.onConnectError(err);
  };

  const timer = setTimeout(() => {
    fail(new GatewayError('provider_timeout', `${opts.providerLabel}: timed out connecting to provider after ${opts.timeoutMs} ms`));
  }, opts.timeoutMs);

  ws.on('unexpected-response', (_req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (): void => {
      const body = Buffer.concat(chunks).toString('utf8');
      const header = req.errorHeader === undefined ? undefined : res.headers[req.errorHeader.toLowerCase()];
      fail(handshakeError(res.statusCode ?? 502, opts.providerLabel, body, typeof header === 'string' ? header : undefined));
    };
    res.on('data', (c: Buffer) => {
      if (size < MAX_ERROR_BODY) chunks.push(c);
      size += c.length;
    });
    res.on('end', done);
    res.on('error', done);
    res.on('close', done);
  });

  ws.on('open', () => {
    if (settled) return;
    settled = true;
    opened = true;
    clearTimeout(timer);
    handlers.onOpen();
  });

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    handlers.onMessage(data, isBinary);
  });

  ws.on('error', (err: Error) => {
    if (!opened) {
      fail(new GatewayError('provider_error', `${opts.providerLabel}: could not connect to provider`, undefined, { cause: err }));
    }
    // After open, an error is always followed by 'close', which reports it.
  });

  ws.on('close', (code: number, reason: Buffer) => {
    if (!opened) {
      fail(new GatewayError('provider_error', `${opts.providerLabel}: connection closed during handshake (${code})`));
      return;
    }
    handlers.onClose(code, reason.toString('utf8'));
  });

  return {
    send(data) {
      if (ws.readyState === WebSocket.OPEN) ws.send(data);
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
    get isOpen() {
      return ws.readyState === WebSocket.OPEN;
    },
    close(code = 1000, reason = '') {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
        try {
          ws.close(code, reason);
        } catch {
          ws.terminate();
        }
      }
    },
    terminate() {
      clearTimeout(timer);
      ws.terminate();
    },
  };
}

/** Default mapping of an unrequested upstream close to an error. */
export function defaultCloseError(providerLabel: string, code: number, reason: string): GatewayError {
  const why = providerReason(reason);
  const suffix = `(close ${code}${why ? `: ${why}` : ''})`;
  if (code === 1008 || code === 1003 || code === 1007) {
    return new GatewayError('bad_request', `${providerLabel}: provider rejected the stream ${suffix}`, { provider_close: code });
  }
  if (code === 1013) {
    return new GatewayError('unavailable', `${providerLabel}: provider asked to try again later ${suffix}`, { provider_close: code });
  }
  return new GatewayError('provider_error', `${providerLabel}: provider closed the stream ${suffix}`, { provider_close: code });
}
