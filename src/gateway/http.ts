/** Small HTTP helpers: JSON answers and upgrade rejections (always a JSON body). */
import type { ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { GatewayError, httpErrorBody } from '../protocol/errors.ts';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export function sendError(res: ServerResponse, err: GatewayError, headers: Record<string, string> = {}): void {
  sendJson(res, err.status, httpErrorBody(err), headers);
}

/** Answer a WebSocket upgrade request with an HTTP error instead of 101, then close. */
export function rejectUpgrade(socket: Duplex, err: GatewayError, headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const body = httpErrorBody(err);
  const lines = [
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? 'Error'}`,
    'Content-Type: application/json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** Collapse duplicate slashes and drop a trailing slash and the query: `/v1//stt/?x` -> `/v1/stt`. */
export function normalizePath(url: string | undefined): string {
  const raw = (url ?? '/').split('?', 1)[0] ?? '/';
  const collapsed = raw.replace(/\/{2,}/g, '/');
  return collapsed.length > 1 && collapsed.endsWith('/') ? collapsed.slice(0, -1) : collapsed;
}

function header(v: string | string[] | undefined): string | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  return s ? s.slice(0, 256) : undefined;
}

/** LiveKit metadata headers (protocol.md 1.5); HTTP header names are case-insensitive. */
export function requestMeta(headers: Record<string, string | string[] | undefined>): {
  roomId?: string;
  jobId?: string;
  agentId?: string;
  clientSessionId?: string;
} {
  const out: { roomId?: string; jobId?: string; agentId?: string; clientSessionId?: string } = {};
  const room = header(headers['x-livekit-room-id']);
  const job = header(headers['x-livekit-job-id']);
  const agent = header(headers['x-livekit-agent-id']);
  const sess = header(headers['x-livekit-session-id']);
  if (room) out.roomId = room;
  if (job) out.jobId = job;
  if (agent) out.agentId = agent;
  if (sess) out.clientSessionId = sess;
  return out;
}
