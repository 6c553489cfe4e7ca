/**
 * Entry point: `npm start`. Loads configuration (exits 1 with the exact reason when invalid),
 * starts the gateway, and shuts down gracefully on SIGTERM/SIGINT (exit 0).
 */
import { ConfigError, loadConfig, type GatewayConfig } from './config.ts';
import { createGateway } from './gateway/server.ts';
import { createLogger } from './log.ts';
import { seedBudgetsFromLedger } from './metering/budget-seed.ts';
import { openLedger, type Ledger } from './metering/ledger.ts';
import { GatewayMetrics } from './metering/metrics.ts';

const log = createLogger();

let cfg: GatewayConfig;
try {
  cfg = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    log.fatal({ reason: err.message }, 'invalid configuration');
    process.stderr.write(`configuration error:\n${err.message}\n`);
    process.exit(1);
  }
  throw err;
}

if (cfg.devMode) {
  log.warn(
    '!!! DEV MODE: no LiveKit API keys configured (LIVEKIT_API_KEY/LIVEKIT_API_SECRET, LIVEKIT_KEYS or the config file). ' +
      'Accepting the development key "devkey" with secret "secret" and listening on 127.0.0.1 only. Never expose this. !!!',
  );
}
for (const [provider, variable] of cfg.missingCredentials) {
  log.info({ provider, variable }, 'provider disabled: no credentials');
}

const metrics = new GatewayMetrics();
let ledger: Ledger | null;
try {
  ledger = await openLedger(cfg.ledger, { log, metrics, maxQueue: cfg.file.ledger.maxQueue });
} catch (err) {
  log.fatal({ err, ledger: cfg.ledger.kind }, 'cannot open the usage ledger');
  process.stderr.write(`usage ledger error: ${(err as Error).message}\n`);
  process.exit(1);
}
if (ledger === null) log.warn('usage ledger disabled (ledger.backend: none): usage records go to the log only');
else {
  log.info({ backend: ledger.store.backend, ...(cfg.ledger.kind === 'sqlite' ? { path: cfg.ledger.path } : {}) }, 'usage ledger open');
  // A crash that still runs exit handlers: write what is queued (synchronous stores only).
  const l = ledger;
  process.on('exit', () => l.flushSync());
}

const gateway = createGateway(cfg, { log, metrics, ...(ledger ? { usage: ledger, ledger } : {}) });
if (ledger) {
  // Budgets survive restarts: today's and this month's spend per key come from the ledger.
  try {
    const keys = await seedBudgetsFromLedger(gateway.budgets, ledger);
    if (keys > 0) log.info({ keys }, 'budgets seeded from the usage ledger');
  } catch (err) {
    log.error({ err: (err as Error).message }, 'could not seed budgets from the usage ledger');
  }
}
const addr = await gateway.listen();
log.info({ host: addr.address, port: addr.port, dev_mode: cfg.devMode, providers: [...cfg.endpoints.keys()] }, 'gateway listening');

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal, deadline_s: cfg.file.server.shutdownTimeoutS }, 'shutting down');
  await gateway.shutdown();
  // Every session has written its final record by now: drain the queue and close the database.
  await ledger?.close();
  log.info('shutdown complete');
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
