/** Start a real gateway on an ephemeral port for protocol tests. */
import type { AddressInfo } from 'node:net';
import { fileSchema, resolveConfig, type GatewayConfig } from '../../src/config.ts';
import { createGateway, type Gateway } from '../../src/gateway/server.ts';
import { silentLogger } from '../../src/log.ts';
import { MemoryUsageSink } from '../../src/metering/usage.ts';

export const TEST_KEY = 'test-api-key';
export const TEST_SECRET = 'test-api-secret-with-enough-entropy';

export interface TestGateway {
  gateway: Gateway;
  cfg: GatewayConfig;
  usage: MemoryUsageSink;
  /** `http://127.0.0.1:PORT/v1` — what LIVEKIT_INFERENCE_URL would be. */
  baseUrl: string;
  wsUrl(path: string): string;
  port: number;
  metricsText(): Promise<string>;
  close(): Promise<void>;
}

export async function startTestGateway(opts: { env?: Record<string, string>; file?: unknown } = {}): Promise<TestGateway> {
  const env = { LIVEKIT_API_KEY: TEST_KEY, LIVEKIT_API_SECRET: TEST_SECRET, ...opts.env };
  const cfg = resolveConfig(fileSchema.parse(opts.file ?? {}), env);
  const usage = new MemoryUsageSink();
  const gateway = createGateway(cfg, { log: silentLogger, usage });
  const addr: AddressInfo = await gateway.listen(0, '127.0.0.1');
  return {
    gateway,
    cfg,
    usage,
    port: addr.port,
    baseUrl: `http://127.0.0.1:${addr.port}/v1`,
    wsUrl: (path) => `ws://127.0.0.1:${addr.port}${path}`,
    metricsText: () => gateway.metrics.registry.metrics(),
    close: () => gateway.shutdown(),
  };
}

/** Read a counter/gauge sample from Prometheus text, by metric name and label subset. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const kv of (m[2] ?? '').slice(1, -1).matchAll(/(\w+)="([^"]*)"/g)) got[kv[1] as string] = kv[2] as string;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}
