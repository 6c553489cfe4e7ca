/**
 * GET /v1/usage: the ledger's report for operators (docs/metering.md "Reporting API").
 * Authenticated with the admin token (`Authorization: Bearer <ADMIN_TOKEN>`), never with a
 * LiveKit JWT: agents hold those, and usage across API keys is not theirs to read.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { UsageReader } from '../metering/ledger.ts';
import { UsageQueryError, parseUsageQuery } from '../metering/ledger-report.ts';
import { GatewayError } from '../protocol/errors.ts';
import { sendError, sendJson } from './http.ts';

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Constant-time check of `Authorization: Bearer <token>`. */
export function adminAuthorized(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m) return false;
  return timingSafeEqual(digest(m[1] as string), digest(token));
}

export async function handleUsageRequest(
  req: IncomingMessage,
  res: ServerResponse,
  opts: { adminToken: string | undefined; reader: UsageReader | undefined },
): Promise<void> {
  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'HEAD') {
    sendError(res, new GatewayError('method_not_allowed', `${method} is not allowed on /v1/usage`), { Allow: 'GET, HEAD' });
    return;
  }
  if (opts.adminToken === undefined) {
    sendError(res, new GatewayError('forbidden', 'the admin API is disabled: set ADMIN_TOKEN (or admin.token) to enable GET /v1/usage'));
    return;
  }
  if (!adminAuthorized(req.headers.authorization, opts.adminToken)) {
    sendError(res, new GatewayError('unauthorized', 'GET /v1/usage needs Authorization: Bearer <admin token>'), { 'WWW-Authenticate': 'Bearer' });
    return;
  }
  if (opts.reader === undefined) {
    sendError(res, new GatewayError('not_found', 'the usage ledger is disabled (ledger.backend: none)'));
    return;
  }
  const url = new URL(req.url ?? '/', 'http://localhost');
  let q;
  try {
    q = parseUsageQuery((name) => url.searchParams.get(name));
  } catch (err) {
    if (err instanceof UsageQueryError) {
      sendError(res, new GatewayError('bad_request', err.message));
      return;
    }
    throw err;
  }
  const report = await opts.reader.report(q);
  sendJson(res, 200, report, { 'Cache-Control': 'no-store' });
}
