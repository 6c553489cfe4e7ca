import { AccessToken } from 'livekit-server-sdk';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  bearer,
  clientPayload,
  mintAsymmetricToken,
  mintNoneAlgToken,
  mintToken,
  signHmac,
} from '../../test/helpers/tokens.ts';
import { MAX_AUTHORIZATION_LENGTH, verifyBearer } from './jwt.ts';
import type { AuthFailure, AuthResult } from './jwt.ts';
import { createKeyStore, DEV_KEY, DEV_SECRET, resolveKeys } from './keys.ts';
import type { KeyStore } from './keys.ts';

const KEY = 'APIgatewayTest';
const SECRET = 'k3PqV9xS2mW7tY4zR8nB1cD6fG0hJ5lA';
const OTHER_SECRET = 'differentSecretValue0123456789abc';
const store = createKeyStore([
  { key: KEY, secret: SECRET },
  { key: 'APIother', secret: OTHER_SECRET },
]);

/** A fixed clock: tokens are minted at T0 and verified at T0 + offset, no sleeping. */
const T0 = 1_800_000_000_000;
const at = (offsetS: number) => ({ now: () => T0 + offsetS * 1000 });

async function verifyAt(token: string, offsetS = 0, s: KeyStore = store): Promise<AuthResult> {
  return verifyBearer(bearer(token), s, at(offsetS));
}

function expectOk(result: AuthResult, apiKey = KEY): void {
  expect(result).toEqual({ ok: true, apiKey, subject: 'agent' });
}

function expectFail(result: AuthResult, reason: AuthFailure): void {
  expect(result.ok).toBe(false);
  if (!result.ok) {
    expect(result.reason).toBe(reason);
    expect(result.message.length).toBeGreaterThan(0);
    expect(result.message.length).toBeLessThan(120);
  }
}

function decodePart(token: string, i: number): unknown {
  return JSON.parse(Buffer.from(token.split('.')[i]!, 'base64url').toString('utf8'));
}

/**
 * The real store behind a spy: tests that must be decided before any key lookup (algorithm,
 * shape, length) use it and check afterwards that lookup was never called.
 */
const lookupSpy = vi.fn((apiKey: string) => store.lookup(apiKey));
function untouchableStore(): KeyStore {
  return { keys: store.keys, devMode: false, lookup: lookupSpy };
}

/** A store that throws: the verifier must still resolve. */
const throwingStore: KeyStore = {
  keys: [KEY],
  devMode: false,
  lookup: () => {
    throw new Error('store failure');
  },
};

afterEach(() => {
  vi.useRealTimers();
  expect(lookupSpy).not.toHaveBeenCalled();
  lookupSpy.mockClear();
});

describe('verifyBearer: accepted tokens', () => {
  it('accepts the client-shaped token', async () => {
    expectOk(await verifyAt(await mintToken({ key: KEY, secret: SECRET, nowMs: T0 })));
  });

  it('accepts a token minted by livekit-server-sdk exactly as @livekit/agents does, byte-identical to mintToken', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(T0);
    // Same calls as createAccessToken() in @livekit/agents/dist/inference/utils.js.
    const at0 = new AccessToken(KEY, SECRET, { identity: 'agent', ttl: 600 });
    at0.addInferenceGrant({ perform: true });
    const real = await at0.toJwt();
    vi.useRealTimers();

    expect(decodePart(real, 0)).toEqual({ alg: 'HS256' });
    expect(decodePart(real, 1)).toEqual({
      inference: { perform: true },
      iss: KEY,
      exp: T0 / 1000 + 600,
      nbf: T0 / 1000,
      sub: 'agent',
    });
    expect(await mintToken({ key: KEY, secret: SECRET, nowMs: T0 })).toBe(real);
    expectOk(await verifyAt(real));
    expectOk(await verifyAt(real, 599));
  });

  it('accepts a fresh livekit-server-sdk token on the real clock (no `now` option)', async () => {
    const t = new AccessToken(KEY, SECRET, { identity: 'agent', ttl: 600 });
    t.addInferenceGrant({ perform: true });
    expectOk(await verifyBearer(bearer(await t.toJwt()), store));
  });

  it('accepts the Python client header {"alg":"HS256","typ":"JWT"}', async () => {
    const token = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, header: { typ: 'JWT' } });
    expect(token.split('.')[0]).toBe('eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9');
    expectOk(await verifyAt(token));
  });

  it('accepts other HS256 headers through the full decode path', async () => {
    const token = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, header: { kid: 'x', typ: 'jwt' } });
    expectOk(await verifyAt(token));
  });

  it('uses the key named by iss among several', async () => {
    const token = await mintToken({ key: 'APIother', secret: OTHER_SECRET, nowMs: T0 });
    expectOk(await verifyAt(token), 'APIother');
  });

  it('omits subject when the token has no sub', async () => {
    const token = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, payload: { sub: undefined } });
    expect(await verifyAt(token)).toEqual({ ok: true, apiKey: KEY });
  });

  it('accepts dev-mode tokens (devkey/secret) when no key is configured', async () => {
    const dev = resolveKeys({ env: {} });
    const token = await mintToken({ key: DEV_KEY, secret: DEV_SECRET, nowMs: T0 });
    expectOk(await verifyAt(token, 0, dev), DEV_KEY);
  });

  it('accepts bearer scheme in any case and tolerates extra whitespace', async () => {
    const token = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    for (const header of [
      `bearer ${token}`,
      `BEARER ${token}`,
      `BeArEr ${token}`,
      `Bearer     ${token}`,
      `  Bearer ${token}  `,
      `Bearer\t${token}`,
    ]) {
      expectOk(await verifyBearer(header, store, at(0)));
    }
  });

  it('accepts a header exactly at the length cap', async () => {
    const token = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    const header = bearer(token).padEnd(MAX_AUTHORIZATION_LENGTH, ' ');
    expect(header.length).toBe(MAX_AUTHORIZATION_LENGTH);
    expectOk(await verifyBearer(header, store, at(0)));
  });

  it('verifies many tokens concurrently on a cold key cache', async () => {
    const fresh = createKeyStore([{ key: KEY, secret: SECRET }]);
    const token = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    const results = await Promise.all(Array.from({ length: 50 }, () => verifyAt(token, 0, fresh)));
    for (const r of results) expectOk(r);
  });

  it('does not mix up cached keys of two stores that reuse an API key name', async () => {
    const storeA = createKeyStore([{ key: KEY, secret: SECRET }]);
    const storeB = createKeyStore([{ key: KEY, secret: OTHER_SECRET }]);
    const tokenA = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    const tokenB = await mintToken({ key: KEY, secret: OTHER_SECRET, nowMs: T0 });
    expectOk(await verifyAt(tokenA, 0, storeA));
    expectOk(await verifyAt(tokenB, 0, storeB));
    expectFail(await verifyAt(tokenA, 0, storeB), 'bad_signature');
    expectFail(await verifyAt(tokenB, 0, storeA), 'bad_signature');
  });
});

describe('verifyBearer: time', () => {
  const token = () => mintToken({ key: KEY, secret: SECRET, nowMs: T0 }); // nbf T0, exp T0+600

  it('rejects a token expired beyond the 10 s leeway', async () => {
    expectFail(await verifyAt(await token(), 611), 'expired');
    expectFail(await verifyAt(await token(), 3600), 'expired');
  });

  it('accepts a token expired within the leeway', async () => {
    expectOk(await verifyAt(await token(), 601));
    expectOk(await verifyAt(await token(), 609.999));
  });

  it('treats exp + leeway as expired (jose: exp <= now - tolerance)', async () => {
    expectFail(await verifyAt(await token(), 610), 'expired');
  });

  it('rejects a token whose nbf is beyond the leeway in the future', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, nbfOffsetS: 11 });
    expectFail(await verifyAt(t), 'not_yet_valid');
    const far = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, nbfOffsetS: 3600, ttlS: 7200 });
    expectFail(await verifyAt(far), 'not_yet_valid');
  });

  it('accepts a token whose nbf is within the leeway in the future', async () => {
    expectOk(await verifyAt(await mintToken({ key: KEY, secret: SECRET, nowMs: T0, nbfOffsetS: 9 })));
    expectOk(await verifyAt(await mintToken({ key: KEY, secret: SECRET, nowMs: T0, nbfOffsetS: 10 })));
  });

  it('honours a custom clock tolerance', async () => {
    const t = await token();
    expectFail(await verifyBearer(bearer(t), store, { ...at(600), clockToleranceS: 0 }), 'expired');
    expectOk(await verifyBearer(bearer(t), store, { ...at(599), clockToleranceS: 0 }));
    expectOk(await verifyBearer(bearer(t), store, { ...at(650), clockToleranceS: 60 }));
    const early = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, nbfOffsetS: 1 });
    expectFail(await verifyBearer(bearer(early), store, { ...at(0), clockToleranceS: 0 }), 'not_yet_valid');
  });

  it('rejects a token without exp', async () => {
    expectFail(await verifyAt(await mintToken({ key: KEY, secret: SECRET, nowMs: T0, omitExp: true })), 'missing_exp');
  });

  it('accepts a token without nbf (nbf is optional, exp is not)', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, payload: { nbf: undefined } });
    expectOk(await verifyAt(t));
  });

  it('checks the signature before exp: an unsigned-by-us token without exp is bad_signature', async () => {
    const t = await mintToken({ key: KEY, secret: OTHER_SECRET, nowMs: T0, omitExp: true });
    expectFail(await verifyAt(t), 'bad_signature');
  });

  it('rejects non-numeric exp, nbf and iat as malformed', async () => {
    for (const payload of [{ exp: String(T0 / 1000 + 600) }, { exp: null }, { nbf: 'now' }, { iat: 'x' }]) {
      expectFail(await verifyAt(await mintToken({ key: KEY, secret: SECRET, nowMs: T0, payload })), 'malformed_token');
    }
  });
});

describe('verifyBearer: keys and signatures', () => {
  it('rejects a token signed with the wrong secret', async () => {
    expectFail(await verifyAt(await mintToken({ key: KEY, secret: OTHER_SECRET, nowMs: T0 })), 'bad_signature');
  });

  it('rejects a token whose signature was tampered with or truncated', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    const [h, p, s] = t.split('.') as [string, string, string];
    const flipped = (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
    expectFail(await verifyAt(`${h}.${p}.${flipped}`), 'bad_signature');
    expectFail(await verifyAt(`${h}.${p}.${s.slice(0, 20)}`), 'bad_signature');
  });

  it('rejects a payload changed after signing', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    const [h, , s] = t.split('.') as [string, string, string];
    const forged = Buffer.from(JSON.stringify(clientPayload({ key: KEY, nowMs: T0, ttlS: 86_400 }))).toString(
      'base64url',
    );
    expectFail(await verifyAt(`${h}.${forged}.${s}`), 'bad_signature');
  });

  it('rejects an unknown iss', async () => {
    expectFail(await verifyAt(await mintToken({ key: 'APInobody', secret: SECRET, nowMs: T0 })), 'unknown_key');
  });

  it('rejects a missing, empty or non-string iss as unknown_key', async () => {
    for (const iss of [undefined, '', 42, null, [KEY], { k: KEY }]) {
      const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, payload: { iss } });
      expectFail(await verifyAt(t), 'unknown_key');
    }
  });

  it('treats prototype names in iss as unknown keys', async () => {
    for (const iss of ['__proto__', 'constructor', 'toString']) {
      expectFail(await verifyAt(await mintToken({ key: iss, secret: SECRET, nowMs: T0 })), 'unknown_key');
    }
  });

  it('rejects a key that only exists in dev mode once keys are configured', async () => {
    expectFail(await verifyAt(await mintToken({ key: DEV_KEY, secret: DEV_SECRET, nowMs: T0 })), 'unknown_key');
  });
});

describe('verifyBearer: inference grant', () => {
  it('rejects a token without the inference grant', async () => {
    expectFail(await verifyAt(await mintToken({ key: KEY, secret: SECRET, nowMs: T0, omitGrant: true })), 'missing_grant');
  });

  it.each([
    ['false', false],
    ['"true"', 'true'],
    ['1', 1],
    ['null', null],
    ['{}', {}],
    ['[true]', [true]],
  ])('rejects perform: %s', async (_name, perform) => {
    expectFail(await verifyAt(await mintToken({ key: KEY, secret: SECRET, nowMs: T0, perform })), 'missing_grant');
  });

  it('rejects a missing perform field and non-object grants', async () => {
    for (const inference of [{}, true, null, 'perform', [{ perform: true }]]) {
      const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, payload: { inference } });
      expectFail(await verifyAt(t), 'missing_grant');
    }
  });

  it('does not accept other grants in place of inference', async () => {
    const t = await mintToken({
      key: KEY,
      secret: SECRET,
      nowMs: T0,
      omitGrant: true,
      payload: { video: { roomAdmin: true, roomJoin: true }, perform: true },
    });
    expectFail(await verifyAt(t), 'missing_grant');
  });

  it('checks the grant only after the signature', async () => {
    const t = await mintToken({ key: KEY, secret: OTHER_SECRET, nowMs: T0, perform: false });
    expectFail(await verifyAt(t), 'bad_signature');
  });
});

describe('verifyBearer: algorithms', () => {
  it('rejects alg none (unsigned) before any key lookup', async () => {
    const t = mintNoneAlgToken({ key: KEY, nowMs: T0 });
    expect(t.endsWith('.')).toBe(true);
    expectFail(await verifyAt(t), 'unsupported_alg');
    expectFail(await verifyAt(t, 0, untouchableStore()), 'unsupported_alg');
  });

  it('rejects alg none variants, with or without a signature part', async () => {
    for (const algValue of ['none', 'None', 'NONE', 'nOnE']) {
      const t = mintNoneAlgToken({ key: KEY, nowMs: T0, algValue });
      expectFail(await verifyAt(t, 0, untouchableStore()), 'unsupported_alg');
      // The same unsecured header with a genuine HS256 signature appended.
      const signed = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, alg: algValue });
      expectFail(await verifyAt(signed, 0, untouchableStore()), 'unsupported_alg');
    }
  });

  it('rejects HS512 and HS384 signed with the right secret', async () => {
    for (const alg of ['HS512', 'HS384']) {
      const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, alg });
      expectFail(await verifyAt(t), 'unsupported_alg');
    }
  });

  it('rejects an RS256 token signed with a real RSA key (algorithm confusion)', async () => {
    const { token } = await mintAsymmetricToken({ key: KEY, nowMs: T0, alg: 'RS256' });
    expectFail(await verifyAt(token, 0, untouchableStore()), 'unsupported_alg');
  });

  it('rejects an ES256 token signed with a real EC key', async () => {
    const { token } = await mintAsymmetricToken({ key: KEY, nowMs: T0, alg: 'ES256' });
    expectFail(await verifyAt(token, 0, untouchableStore()), 'unsupported_alg');
  });

  it('rejects asymmetric alg headers on tokens HMAC-signed with the right secret', async () => {
    for (const alg of ['RS256', 'ES256', 'PS256', 'EdDSA', 'hs256', 'HS256 ', 'HS2560']) {
      const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, alg });
      expectFail(await verifyAt(t), 'unsupported_alg');
    }
  });

  it('rejects a missing or non-string alg', async () => {
    for (const alg of [undefined, null, 256, ['HS256'], { HS256: true }]) {
      const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, header: { alg } });
      expectFail(await verifyAt(t, 0, untouchableStore()), 'unsupported_alg');
    }
  });

  it('does not echo odd algorithm names into the message', async () => {
    const weird = `x${'A'.repeat(200)}`;
    const r = await verifyAt(await mintToken({ key: KEY, secret: SECRET, nowMs: T0, header: { alg: weird } }));
    expectFail(r, 'unsupported_alg');
    if (!r.ok) expect(r.message).not.toContain(weird);
  });

  it('rejects unknown critical header parameters', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, header: { crit: ['exp'], exp: 1 } });
    expectFail(await verifyAt(t), 'malformed_token');
  });

  it('rejects the unencoded-payload option (b64: false)', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, header: { b64: false, crit: ['b64'] } });
    expectFail(await verifyAt(t), 'malformed_token');
  });
});

describe('verifyBearer: malformed tokens and headers', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64url');
  const goodHeader = b64('{"alg":"HS256"}');

  it('rejects a missing Authorization header', async () => {
    expectFail(await verifyBearer(undefined, store), 'missing_token');
    expectFail(await verifyBearer('', store), 'missing_token');
    expectFail(await verifyBearer('   ', store), 'missing_token');
  });

  it('rejects other schemes', async () => {
    const token = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    for (const header of [
      'Basic dXNlcjpwYXNzd29yZA==',
      `Basic ${token}`,
      `Token ${token}`,
      `Bearer: ${token}`,
      `Bearer${token}`,
      `JWT ${token}`,
      token,
    ]) {
      expectFail(await verifyBearer(header, store, at(0)), 'missing_token');
    }
  });

  it('rejects "Bearer" without a token', async () => {
    expectFail(await verifyBearer('Bearer', store), 'missing_token');
    expectFail(await verifyBearer('Bearer    ', store), 'missing_token');
  });

  it('rejects a bearer value with inner whitespace', async () => {
    const token = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    expectFail(await verifyBearer(`Bearer ${token} extra`, store, at(0)), 'malformed_token');
  });

  it('rejects a header over the length cap without parsing it', async () => {
    expectFail(await verifyBearer(`Bearer ${'a'.repeat(9000)}`, store), 'malformed_token');
    const token = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    const padded = bearer(token).padEnd(MAX_AUTHORIZATION_LENGTH + 1, ' ');
    expectFail(await verifyBearer(padded, untouchableStore(), at(0)), 'malformed_token');
    const big = await mintToken({ key: KEY, secret: SECRET, nowMs: T0, payload: { pad: 'x'.repeat(8000) } });
    expectFail(await verifyBearer(bearer(big), untouchableStore(), at(0)), 'malformed_token');
    expectFail(await verifyBearer(`Bearer ${'.'.repeat(1_000_000)}`, store), 'malformed_token');
  });

  it('rejects tokens without exactly three parts', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    const [h, p, s] = t.split('.') as [string, string, string];
    for (const bad of [h, `${h}.${p}`, `${h}.${p}.${s}.${s}`, `${t}.`, '..', '...', 'abc']) {
      expectFail(await verifyAt(bad, 0, untouchableStore()), 'malformed_token');
    }
  });

  it('rejects garbage base64', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    const [h, p, s] = t.split('.') as [string, string, string];
    for (const bad of [
      `!!!.${p}.${s}`,
      `${h}.@@@@.${s}`,
      `${h}.${p}.***`,
      `${h}.${p}.a+b/c=`,
      `${h.replaceAll('J', '+')}.${p}.${s}`,
      `${h}=.${p}.${s}`,
      `.${p}.${s}`,
      `${h}..${s}`,
    ]) {
      expectFail(await verifyAt(bad, 0, untouchableStore()), 'malformed_token');
    }
  });

  it('rejects an empty signature on an HS256 token', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    const [h, p] = t.split('.') as [string, string, string];
    expectFail(await verifyAt(`${h}.${p}.`, 0, untouchableStore()), 'malformed_token');
  });

  it('rejects non-JSON and non-object headers and payloads', async () => {
    const payload = b64(JSON.stringify(clientPayload({ key: KEY, nowMs: T0 })));
    for (const bad of [
      `${b64('hello')}.${payload}.c2ln`,
      `${b64('{"alg":"HS256"')}.${payload}.c2ln`,
      `${b64('["HS256"]')}.${payload}.c2ln`,
      `${b64('null')}.${payload}.c2ln`,
      `${b64('"HS256"')}.${payload}.c2ln`,
      `${goodHeader}.${b64('not json')}.c2ln`,
      `${goodHeader}.${b64('[1,2]')}.c2ln`,
      `${goodHeader}.${b64('null')}.c2ln`,
      `${goodHeader}.${b64('12')}.c2ln`,
      `${goodHeader}.${b64('{"iss":')}.c2ln`,
    ]) {
      expectFail(await verifyAt(bad, 0, untouchableStore()), 'malformed_token');
    }
  });

  it('rejects a correctly signed payload that is not valid UTF-8', async () => {
    const header = b64('{"alg":"HS256"}');
    const json = Buffer.concat([
      Buffer.from(`{"inference":{"perform":true},"iss":"${KEY}","exp":${T0 / 1000 + 600},"x":"`),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"}'),
    ]);
    const input = `${header}.${json.toString('base64url')}`;
    const { createHmac } = await import('node:crypto');
    const sig = createHmac('sha256', SECRET).update(input).digest('base64url');
    expectFail(await verifyAt(`${input}.${sig}`), 'malformed_token');
  });
});

describe('verifyBearer: never throws, never leaks', () => {
  it('resolves for garbage inputs of every kind', async () => {
    let seed = 12345;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const alphabet = 'AZaz09-_.=+/ \t:{}"\\\u0000\u00e9\u{1F600}eyJ';
    const inputs: unknown[] = [
      null,
      0,
      123,
      {},
      [],
      ['Bearer x'],
      Symbol.iterator.toString(),
      'Bearer \u0000',
      'Bearer ey.ey.ey',
      `Bearer ${'eyJ'.repeat(2000)}`,
      `Bearer ${'a.'.repeat(4000)}`,
      'x'.repeat(10_000_000),
    ];
    for (let i = 0; i < 300; i++) {
      const n = Math.floor(rand() * 120);
      let s = 'Bearer ';
      for (let j = 0; j < n; j++) s += alphabet[Math.floor(rand() * alphabet.length)];
      inputs.push(s);
    }
    for (const input of inputs) {
      const result = await verifyBearer(input as string, store, at(0));
      expect(result.ok).toBe(false);
    }
  });

  it('resolves even if the key store throws', async () => {
    const t = await mintToken({ key: KEY, secret: SECRET, nowMs: T0 });
    expectFail(await verifyAt(t, 0, throwingStore), 'malformed_token');
  });

  it('never puts the token, its signature or the secret in a message', async () => {
    const tokens = [
      await mintToken({ key: KEY, secret: OTHER_SECRET, nowMs: T0 }),
      await mintToken({ key: KEY, secret: SECRET, nowMs: T0 + 3_600_000 }),
      await mintToken({ key: KEY, secret: SECRET, nowMs: T0 - 3_600_000 }),
      await mintToken({ key: KEY, secret: SECRET, nowMs: T0, perform: false }),
      await mintToken({ key: KEY, secret: SECRET, nowMs: T0, omitExp: true }),
      await mintToken({ key: KEY, secret: SECRET, nowMs: T0, alg: 'HS512' }),
      await mintToken({ key: 'APInobody', secret: SECRET, nowMs: T0 }),
      await mintToken({ key: KEY, secret: SECRET, nowMs: T0, payload: { exp: 'soon' } }),
      mintNoneAlgToken({ key: KEY, nowMs: T0 }),
      (await mintAsymmetricToken({ key: KEY, nowMs: T0 })).token,
    ];
    for (const t of tokens) {
      const r = await verifyAt(t);
      expect(r.ok).toBe(false);
      if (r.ok) continue;
      const sig = t.split('.')[2]!;
      expect(r.message).not.toContain(t);
      if (sig.length > 0) expect(r.message).not.toContain(sig);
      expect(r.message).not.toContain(SECRET);
      expect(r.message).not.toContain(OTHER_SECRET);
      expect(r.message).not.toContain(t.split('.')[1]!);
    }
  });
});

describe('test helpers', () => {
  it('signHmac matches mintToken for the default shape', async () => {
    const payload = clientPayload({ key: KEY, nowMs: T0 });
    expect(signHmac({ alg: 'HS256' }, payload, SECRET)).toBe(await mintToken({ key: KEY, secret: SECRET, nowMs: T0 }));
  });

  it('clientPayload follows the client key order', () => {
    expect(Object.keys(clientPayload({ key: KEY, nowMs: T0 }))).toEqual(['inference', 'iss', 'exp', 'nbf', 'sub']);
  });
});
