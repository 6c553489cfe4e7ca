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
import { Budgets } from '../metering/budgets.ts';
import { CostMeter } from '../metering/cost.ts';
import { GatewayMetrics } from '../metering/metrics.ts';
import { LogUsageSink, type UsageSink } from '../metering/usage.ts';
import type { UsageReader } from '../metering/ledger.ts';
import { handleUsageRequest } from './usage-api.ts';
import { GatewayError } from '../protocol/errors.ts';
import { normalizePath, rejectUpgrade, requestMeta, sendError, sendJson } from './http.ts';
import { SessionRegistry, type LiveSession } from './sessions.ts';
import { SttSession } from './stt-session.ts';
import { createLlmHandler } from './llm-handler.ts';
import { Limits, type SessionLease, type SessionModality } from './limits.ts';
import { TtsLinkPool } from './tts-pool.ts';
import { TtsSession } from './tts-session.ts';
import { createWsTransport, type WsConnection } from './transport.ts';
import { authenticate } from './upgrade.ts';

export interface GatewayOptions {
  log: Logger;
  metrics?: GatewayMetrics;
  usage?: UsageSink;
  /** The usage ledger, for GET /v1/usage (absent: the ledger is disabled). */
  ledger?: UsageReader;
}

export interface Gateway {
  readonly server: Server;
  readonly metrics: GatewayMetrics;
  readonly sessions: SessionRegistry;
  /** Per-key and per-process limits (docs/limits.md); `addCheck` plugs in more admission checks. */
  readonly limits: Limits;
  /** Spend per API key against its budgets (docs/pricing.md); `seed()` loads spend from the ledger. */
  readonly budgets: Budgets;
  listen(port?: number, host?: string): Promise<AddressInfo>;
  /** Stop accepting, finish live sessions within the configured deadline, close. */
  shutdown(): Promise<void>;
}

type WsRoute = (conn: WsConnection, req: IncomingMessage, apiKey: string, lease: SessionLease) => void;

/** HTTP API routes and their method. */
const HTTP_ROUTES = new Map<string, string>([
  ['/v1/chat/completions', 'POST'],
  ['/v1/models', 'GET'],
]);

/** At shutdown, how long LLM requests cut at the deadline get to record their usage. */
const CUT_RECORD_MS = 5000;

/** Paths that exist in the LiveKit protocol but are not served: 404 at the upgrade. */
const UNSERVED_WS = new Set(['/v1/eot', '/v1/bargein']);

/** Which session limit each WebSocket route counts against. */
const WS_MODALITY = new Map<string, SessionModality>([
  ['/v1/stt', 'stt'],
  ['/v1/tts', 'tts'],
]);

export function createGateway(cfg: GatewayConfig, opts: GatewayOptions): Gateway {
  const log = opts.log;
  const metrics = opts.metrics ?? new GatewayMetrics();
  const usage = opts.usage ?? new LogUsageSink(log);
  const sessions = new SessionRegistry();
  const transport = createWsTransport({ maxPayload: cfg.file.stt.maxMessageBytes * 4 });
  const limits = new Limits(cfg.file.limits, { metrics });
  // Budgets refuse new sessions / LLM calls at the same admission point as the limits.
  const budgets = new Budgets(cfg.file.budgets, metrics, { log });
  limits.addCheck((apiKey, modality) => budgets.check(apiKey, modality));
  const cost = new CostMeter(cfg.prices, metrics, budgets);
  const llm = createLlmHandler({ cfg, metrics, usage, log, limits, cost });
  const ttsPool = new TtsLinkPool({ maxPerKey: cfg.file.tts.poolMaxPerKey, idleMs: cfg.file.tts.poolIdleS * 1000 });
  let draining = false;

  /** What every session gets: shared services, and its end releases its registry entry and limit slot. */
  const sessionDeps = (lease: SessionLease) => ({
    cfg,
    metrics,
    usage,
    log,
    cost,
    onEnd: (s: LiveSession) => {
      sessions.remove(s);
      lease.release();
    },
  });

  const wsRoutes = new Map<string, WsRoute>([
    ['/v1/stt', (conn, req, apiKey, lease) => sessions.add(new SttSession(conn, { apiKey, meta: requestMeta(req.headers) }, sessionDeps(lease)))],
    [
      '/v1/tts',
      (conn, req, apiKey, lease) =>
        sessions.add(new TtsSession(conn, { apiKey, meta: requestMeta(req.headers) }, { ...sessionDeps(lease), pool: ttsPool })),
    ],
  ]);

  const server = createServer({
    headersTimeout: cfg.file.server.upgradeTimeoutS * 1000,
    // How often Node enforces headersTimeout (default 30 s would let a slow upgrade live that long).
    connectionsCheckingInterval: Math.min(1000, cfg.file.server.upgradeTimeoutS * 1000),
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
    if (path === '/v1/usage') {
      await handleUsageRequest(req, res, { adminToken: cfg.adminToken, reader: opts.ledger });
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
    // Limits are checked before the socket is accepted: a refusal is an HTTP answer (docs/limits.md).
    const admission = limits.acquireSession(auth.apiKey, WS_MODALITY.get(path) as SessionModality);
    if (!admission.ok) {
      log.info({ path, code: admission.error.status, category: admission.error.fields?.category }, 'upgrade rejected: limit');
      rejectUpgrade(socket, admission.error, admission.headers);
      return;
    }
    const lease = admission.lease;
    // The slot is held until the session ends, or the socket closes if no session ever starts.
    socket.once('close', () => lease.release());
    const conn = await transport.accept(req, socket, head);
    route(conn, req, auth.apiKey, lease);
  }

  return {
    server,
    metrics,
    sessions,
    limits,
    budgets,
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
      const deadlineMs = cfg.file.server.shutdownTimeoutS * 1000;
      // LLM completions in flight finish too (they are HTTP requests, not sessions).
      const [clean, llmClean] = await Promise.all([sessions.drain(deadlineMs), llm.drain(deadlineMs)]);
      if (!clean) log.warn({ remaining: sessions.size }, 'shutdown deadline passed with live sessions');
      if (!llmClean) log.warn({ remaining: llm.inFlight }, 'shutdown deadline passed with LLM requests in flight');
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Upgraded sockets are not HTTP connections: the transport cuts whatever is still open.
      await transport.close();
      ttsPool.close();
      sessions.stop();
      server.closeAllConnections();
      // Completions cut just now record their usage (an estimate) on close: the ledger closes after us.
      if (!(await llm.drain(CUT_RECORD_MS))) log.warn({ remaining: llm.inFlight }, 'LLM usage not recorded at shutdown');
      await closed;
    },
  };
}
