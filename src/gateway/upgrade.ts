/** Authentication of every WebSocket upgrade and authenticated HTTP call (LiveKit JWT). */
import type { IncomingMessage } from 'node:http';
import { verifyBearer, type KeyStore } from '../auth/index.ts';
import type { GatewayMetrics } from '../metering/metrics.ts';
import { GatewayError } from '../protocol/errors.ts';

export async function authenticate(
  req: IncomingMessage,
  keys: KeyStore,
  metrics: GatewayMetrics,
  clockToleranceS: number,
): Promise<{ apiKey: string } | GatewayError> {
  const result = await verifyBearer(req.headers.authorization, keys, { clockToleranceS });
  if (result.ok) return { apiKey: result.apiKey };
  metrics.authFailures.inc({ reason: result.reason });
  return new GatewayError('unauthorized', result.message, { reason: result.reason });
}
