/**
 * Shared upstream WebSocket connect: a refused upgrade's reason comes from the header the adapter
 * names in `UpstreamRequest.errorHeader` (Deepgram: `dg-error`), else from the body. A local
 * server refuses every upgrade with a JSON body and a `dg-error` header.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayError } from '../../protocol/errors.ts';
import type { UpstreamRequest } from '../types.ts';
import { connectUpstream } from './ws-upstream.ts';

const BODY = '{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials in body."}';

let server: Server;
let url: string;

beforeAll(async () => {
  server = createServer();
  server.on('upgrade', (_req, socket) => {
    socket.end(
      'HTTP/1.1 401 Unauthorized\r\n' +
        'Content-Type: application/json\r\n' +
        'dg-error: Invalid credentials in header.\r\n' +
        `Content-Length: ${Buffer.byteLength(BODY)}\r\n` +
        'Connection: close\r\n\r\n' +
        BODY,
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

function refusal(req: UpstreamRequest): Promise<GatewayError> {
  return new Promise((resolve, reject) => {
    connectUpstream(req, { timeoutMs: 2000, providerLabel: 'prov' }, {
      onOpen: () => reject(new Error('opened')),
      onMessage: () => undefined,
      onClose: () => reject(new Error('closed after open')),
      onConnectError: resolve,
    });
  });
}

describe('connectUpstream: refused upgrade', () => {
  it("uses the adapter's errorHeader when the provider sends it", async () => {
    const err = await refusal({ url, headers: {}, errorHeader: 'dg-error' });
    expect(err.code).toBe('unauthorized');
    expect(err.message).toBe('prov: provider rejected credentials (HTTP 401: Invalid credentials in header.)');
  });

  it('uses the body for a provider without errorHeader, whatever headers the response has', async () => {
    const err = await refusal({ url, headers: {} });
    expect(err.message).toBe(`prov: provider rejected credentials (HTTP 401: ${BODY})`);
  });
});
