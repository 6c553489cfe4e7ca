/**
 * Routes. HTTP: /healthz, /readyz, /metrics (no auth), everything else authenticated or 404.
 * WebSocket upgrades: /v1/stt, /v1/tts; /v1/eot and /v1/bargein answer 404 at the upgrade so dev-mode
 * agents fall back to their local models at once (protocol.md 5.1, 5.2).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { GatewayConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import { GatewayMetrics } from '../metering/metrics.ts';
import { LogUsageSink, type UsageSink } from '../metering/usage.ts';
import { GatewayError } from '../protocol/errors.ts';
import { normalizePath, rejectUpgrade, requestMeta, sendError, sendJson } from './http.ts';
import { SessionRegistry } from './sessions.ts';
import { SttSession } from './stt-session.ts';
import { createLlmHandler } from './llm-handler.ts';
import { TtsLinkPool } from './tts-pool.ts';
import { TtsSession } from './tts-session.ts';
import { createWsTransport, type WsConnection } from './transport.ts';
import { authenticate } from './upgrade.ts';

export interface GatewayOptions {
  log: Logger;
  metrics?: GatewayMetrics;
  usage?: UsageSink;
}

export interface Gateway {
  readonly server: Server;
  readonly metrics: GatewayMetrics;
  readonly sessions: SessionRegistry;
  listen(port?: number, host?: string): Promise<AddressInfo>;
  /** Stop accepting, finish live sessions within the configured deadline, close. */
  shutdown(): Promise<void>;
}

type WsRoute = (conn: WsConnection, req: IncomingMessage, apiKey: string) => void;

/** HTTP API routes and their method. */
const HTTP_ROUTES = new Map<string, string>([
  ['/v1/chat/completions', 'POST'],
  ['/v1/models', 'GET'],
]);

/** Paths that exist in the LiveKit protocol but are not served: 404 at the upgrade. */
const UNSERVED_WS = new Set(['/v1/eot', '/v1/bargein']);

export function createGateway(cfg: GatewayConfig, opts: GatewayOptions): Gateway {
  const log = opts.log;
  const metrics = opts.metrics ?? new GatewayMetrics();
  const usage = opts.usage ?? new LogUsageSink(log);
  const sessions = new SessionRegistry();
  const transport = createWsTransport({ maxPayload: cfg.file.stt.maxMessageBytes * 4 });
  const llm = createLlmHandler({ cfg, metrics, usage, log });
  const ttsPool = new TtsLinkPool({ maxPerKey: cfg.file.tts.poolMaxPerKey, idleMs: cfg.file.tts.poolIdleS * 1000 });
  let draining = false;

  const wsRoutes = new Map<string, WsRoute>([
    [
      '/v1/stt',
      (conn, req, apiKey) => {
        const session = new SttSession(
          conn,
          { apiKey, meta: requestMeta(req.headers) },
          { cfg, metrics, usage, log, onEnd: (s) => sessions.remove(s) },
        );
        sessions.add(session);
      },
    ],
    [
      '/v1/tts',
      (conn, req, apiKey) => {
        const session = new TtsSession(
          conn,
          { apiKey, meta: requestMeta(req.headers) },
          { cfg, metrics, usage, log, pool: ttsPool, onEnd: (s) => sessions.remove(s) },
        );
        sessions.add(session);
      },
    ],
  ]);

  const server = createServer({
    headersTimeout: cfg.file.server.upgradeTimeoutS * 1000,
    requestTimeout: 60_000,
    keepAliveTimeout: 65_000,
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    handleHttp(req, res).catch((err: unknown) => {
      log.error({ err }, 'http handler failed');
      if (!res.headersSent) sendError(res, new GatewayError('internal', 'internal error'));
      else res.destroy();
    });
  });

  async function handleHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = normalizePath(req.url);
    const method = req.method ?? 'GET';
    if (path === '/healthz' || path === '/readyz' || path === '/metrics') {
      if (method !== 'GET' && method !== 'HEAD') {
        sendError(res, new GatewayError('method_not_allowed', `${method} is not allowed on ${path}`), { Allow: 'GET, HEAD' });
        return;
      }
      if (path === '/healthz') sendJson(res, 200, { status: 'ok' });
      else if (path === '/readyz') sendJson(res, draining ? 503 : 200, { status: draining ? 'draining' : 'ready', sessions: sessions.size });
      else {
        const text = await metrics.registry.metrics();
        res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
        res.end(text);
      }
      return;
    }
    const httpRoute = HTTP_ROUTES.get(path);
    if (httpRoute) {
      if (method !== httpRoute) {
        sendError(res, new GatewayError('method_not_allowed', `${method} is not allowed on ${path}`), { Allow: httpRoute });
        return;
      }
      const auth = await authenticate(req, cfg.keys, metrics, cfg.file.auth.clockToleranceS);
      if (auth instanceof GatewayError) {
        sendError(res, auth);
        return;
      }
      if (draining) {
        sendError(res, new GatewayError('unavailable', 'gateway is shutting down'), { 'Retry-After': '1' });
        return;
      }
      if (path === '/v1/models') llm.models(res);
      else await llm.chatCompletions(req, res, auth.apiKey, requestMeta(req.headers));
      return;
    }
    if (wsRoutes.has(path) || UNSERVED_WS.has(path)) {
      const auth = await authenticate(req, cfg.keys, metrics, cfg.file.auth.clockToleranceS);
      if (auth instanceof GatewayError) {
        sendError(res, auth);
        return;
      }
      if (UNSERVED_WS.has(path)) sendError(res, new GatewayError('not_found', `${path} is not served by this gateway`));
      else sendError(res, new GatewayError('upgrade_required', `${path} is a WebSocket endpoint`), { Upgrade: 'websocket' });
      return;
    }
    sendError(res, new GatewayError('not_found', `no route for ${method} ${path.slice(0, 100)}`));
  }

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    handleUpgrade(req, socket, head).catch((err: unknown) => {
      log.error({ err }, 'upgrade handler failed');
      rejectUpgrade(socket, new GatewayError('internal', 'internal error'));
    });
  });

  async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const path = normalizePath(req.url);
    const route = wsRoutes.get(path);
    if (!route) {
      rejectUpgrade(socket, new GatewayError('not_found', `no WebSocket endpoint at ${path.slice(0, 100)}`));
      return;
    }
    if (draining) {
      rejectUpgrade(socket, new GatewayError('unavailable', 'gateway is shutting down'), { 'Retry-After': '1' });
      return;
    }
    const auth = await authenticate(req, cfg.keys, metrics, cfg.file.auth.clockToleranceS);
    if (auth instanceof GatewayError) {
      log.info({ path, reason: auth.fields?.reason }, 'upgrade rejected: unauthorized');
      rejectUpgrade(socket, auth);
      return;
    }
    if (socket.destroyed) return;
    const conn = await transport.accept(req, socket, head);
    route(conn, req, auth.apiKey);
  }

  return {
    server,
    metrics,
    sessions,
    listen(port = cfg.port, host = cfg.host) {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve(server.address() as AddressInfo);
        });
      });
    },
    async shutdown() {
      if (draining) return;
      draining = true;
      // Keep listening while live sessions finish: load balancers see 503 on /readyz and new
      // upgrades get 503 with Retry-After, instead of connection refused.
      server.closeIdleConnections();
      const clean = await sessions.drain(cfg.file.server.shutdownTimeoutS * 1000);
      if (!clean) log.warn({ remaining: sessions.size }, 'shutdown deadline passed with live sessions');
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Upgraded sockets are not HTTP connections: the transport cuts whatever is still open.
      transport.close();
      ttsPool.close();
      sessions.stop();
      server.closeAllConnections();
      await closed;
    },
  };
}
