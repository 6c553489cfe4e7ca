/**
 * The HTTP surface and authentication at the WebSocket upgrade: every failure is an HTTP status
 * with a JSON body before the socket is accepted.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, mintAsymmetricToken, mintNoneAlgToken, mintToken } from '../helpers/tokens.ts';
import { TEST_KEY, TEST_SECRET, metricValue, startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { openWs, type UpgradeRejection } from '../helpers/ws.ts';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ env: { DEEPGRAM_API_KEY: 'unused', DEEPGRAM_BASE_URL: 'http://127.0.0.1:9' } });
});
afterAll(async () => {
  await gw.close();
});

const good = () => mintToken({ key: TEST_KEY, secret: TEST_SECRET });

async function upgradeStatus(path: string, authorization?: string): Promise<{ status: number; body: unknown }> {
  const headers: Record<string, string> = authorization ? { Authorization: authorization } : {};
  const res = await openWs(gw.wsUrl(path), headers);
  if ('status' in res) {
    const r = res as UpgradeRejection;
    expect(r.headers['content-type']).toBe('application/json');
    return { status: r.status, body: JSON.parse(r.body) };
  }
  res.close();
  return { status: 101, body: null };
}

describe('auth at the STT upgrade', () => {
  const now = Math.floor(Date.now() / 1000);
  const cases: Array<[string, () => Promise<string | undefined> | string | undefined, number]> = [
    ['good token', async () => bearer(await good()), 101],
    ['good token, Python header with typ', async () => bearer(await mintToken({ key: TEST_KEY, secret: TEST_SECRET, header: { typ: 'JWT' } })), 101],
    ['expired beyond the 10 s leeway', async () => bearer(await mintToken({ key: TEST_KEY, secret: TEST_SECRET, nowMs: (now - 700) * 1000 })), 401],
    ['not yet valid beyond the leeway', async () => bearer(await mintToken({ key: TEST_KEY, secret: TEST_SECRET, nbfOffsetS: 60 })), 401],
    ['wrong secret', async () => bearer(await mintToken({ key: TEST_KEY, secret: 'wrong-secret' })), 401],
    ['unknown iss', async () => bearer(await mintToken({ key: 'nobody', secret: TEST_SECRET })), 401],
    ['missing grant', async () => bearer(await mintToken({ key: TEST_KEY, secret: TEST_SECRET, omitGrant: true })), 401],
    ['perform false', async () => bearer(await mintToken({ key: TEST_KEY, secret: TEST_SECRET, perform: false })), 401],
    ['alg none', () => bearer(mintNoneAlgToken({ key: TEST_KEY })), 401],
    ['alg HS512 with the right secret', async () => bearer(await mintToken({ key: TEST_KEY, secret: TEST_SECRET, alg: 'HS512' })), 401],
    ['RS256 confusion', async () => bearer((await mintAsymmetricToken({ key: TEST_KEY, alg: 'RS256' })).token), 401],
    ['malformed token', () => 'Bearer abc.def', 401],
    ['missing header', () => undefined, 401],
  ];
  for (const [name, header, expected] of cases) {
    it(`${name} -> ${expected}`, async () => {
      const { status, body } = await upgradeStatus('/v1/stt', await header());
      expect(status).toBe(expected);
      if (expected === 401) {
        expect(body).toMatchObject({ error: { code: 401, type: 'authentication_error' } });
        expect(JSON.stringify(body)).not.toContain(TEST_SECRET);
      }
    });
  }

  it('counts auth failures by reason in /metrics', async () => {
    await upgradeStatus('/v1/stt', bearer(await mintToken({ key: TEST_KEY, secret: 'nope' })));
    expect(metricValue(await gw.metricsText(), 'gateway_auth_failures_total', { reason: 'bad_signature' })).toBeGreaterThan(0);
  });
});

describe('routes', () => {
  it('tolerates a doubled slash (LIVEKIT_INFERENCE_URL with a trailing slash)', async () => {
    expect((await upgradeStatus('/v1//stt', bearer(await good()))).status).toBe(101);
    expect((await upgradeStatus('/v1/stt?model=deepgram%2Fnova-3', bearer(await good()))).status).toBe(101);
  });

  it('/v1/eot and /v1/bargein answer 404 at the upgrade', async () => {
    for (const p of ['/v1/eot', '/v1/bargein']) {
      const { status, body } = await upgradeStatus(p, bearer(await good()));
      expect(status).toBe(404);
      expect(body).toMatchObject({ error: { code: 404 } });
    }
  });

  it('unknown WebSocket paths answer 404 JSON', async () => {
    expect((await upgradeStatus('/v1/nope', bearer(await good()))).status).toBe(404);
  });

  it('health, readiness and metrics need no auth', async () => {
    const h = await fetch(`http://127.0.0.1:${gw.port}/healthz`);
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ status: 'ok' });
    const r = await fetch(`http://127.0.0.1:${gw.port}/readyz`);
    expect(r.status).toBe(200);
    const m = await fetch(`http://127.0.0.1:${gw.port}/metrics`);
    expect(m.status).toBe(200);
    const text = await m.text();
    expect(text).toContain('gateway_sessions_active{modality="stt"}');
    expect(text).toContain('process_cpu_user_seconds_total');
  });

  it('other paths 404 with a JSON body; WS endpoints over plain HTTP need auth, then 426', async () => {
    const nf = await fetch(`http://127.0.0.1:${gw.port}/v2/whatever`);
    expect(nf.status).toBe(404);
    expect(await nf.json()).toMatchObject({ error: { code: 404 } });
    const unauth = await fetch(`http://127.0.0.1:${gw.port}/v1/stt`);
    expect(unauth.status).toBe(401);
    const authed = await fetch(`http://127.0.0.1:${gw.port}/v1/stt`, { headers: { Authorization: bearer(await good()) } });
    expect(authed.status).toBe(426);
    const post = await fetch(`http://127.0.0.1:${gw.port}/healthz`, { method: 'POST' });
    expect(post.status).toBe(405);
  });
});
