/**
 * Test tokens: the exact JWT the LiveKit agent client mints (protocol.md §1.4), plus knobs for
 * every way a token can be wrong.
 *
 * By default `mintToken` is byte-for-byte what livekit-server-sdk's
 * `AccessToken(key, secret, { identity: 'agent', ttl: 600 })` + `addInferenceGrant({ perform: true })`
 * produces: header `{"alg":"HS256"}`, payload
 * `{"inference":{"perform":true},"iss":key,"exp":now+600,"nbf":now,"sub":"agent"}` (that key
 * order), HMAC-SHA256 with the secret's UTF-8 bytes.
 */
import { createHmac } from 'node:crypto';
import { generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey } from 'jose';

export interface MintOptions {
  key: string;
  secret: string;
  /** exp = nbf-base + ttlS. Default 600, like the client. Negative values make expired tokens. */
  ttlS?: number;
  /** nbf = now + nbfOffsetS (exp stays now + ttlS). Default 0. */
  nbfOffsetS?: number;
  /** Base time in milliseconds (pair with verifyBearer's `now`). Default Date.now(). */
  nowMs?: number;
  /** Value of `inference.perform`. Default true. */
  perform?: unknown;
  /** Leave out the `inference` grant entirely. */
  omitGrant?: boolean;
  /**
   * Header `alg`. HS256/HS384/HS512 are really signed with that HMAC; any other value (RS256,
   * ES256, none...) is written into the header while the token is still HMAC-SHA256-signed with
   * the secret: the forged-header form of algorithm confusion.
   */
  alg?: string;
  omitExp?: boolean;
  /** Merged over the protected header (e.g. `{ typ: 'JWT' }` for the Python client's header). */
  header?: object;
  /** Merged over the payload; a key set to undefined is dropped (e.g. `{ sub: undefined }`). */
  payload?: object;
}

const HMAC_HASH: Record<string, string> = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' };

function b64url(value: string | Buffer): string {
  return Buffer.from(value).toString('base64url');
}

/** The claims the client sends, in the client's key order, with the option knobs applied. */
export function clientPayload(opts: Omit<MintOptions, 'secret' | 'alg' | 'header'>): Record<string, unknown> {
  const now = Math.floor((opts.nowMs ?? Date.now()) / 1000);
  const claims: Record<string, unknown> = {};
  if (opts.omitGrant !== true) claims.inference = { perform: 'perform' in opts ? opts.perform : true };
  claims.iss = opts.key;
  if (opts.omitExp !== true) claims.exp = now + (opts.ttlS ?? 600);
  claims.nbf = now + (opts.nbfOffsetS ?? 0);
  claims.sub = 'agent';
  return { ...claims, ...opts.payload };
}

/** Signs `header.payload` with HMAC and returns the compact JWT. */
export function signHmac(header: object, payload: object, secret: string, hash = 'sha256'): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const signature = createHmac(hash, Buffer.from(secret, 'utf8')).update(input).digest('base64url');
  return `${input}.${signature}`;
}

/** Mints a token shaped like the real client's, with knobs for each negative case. */
export async function mintToken(opts: MintOptions): Promise<string> {
  const alg = opts.alg ?? 'HS256';
  const header = { alg, ...opts.header };
  return signHmac(header, clientPayload(opts), opts.secret, HMAC_HASH[alg] ?? 'sha256');
}

/** An unsecured `alg: none` token (RFC 7519 §6): empty signature part, as attackers send it. */
export function mintNoneAlgToken(opts: Omit<MintOptions, 'secret' | 'alg'> & { algValue?: string }): string {
  const header = { alg: opts.algValue ?? 'none', ...opts.header };
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(clientPayload(opts)))}.`;
}

/**
 * A token genuinely signed with a fresh asymmetric key pair (RS256 by default, or ES256): the
 * algorithm-confusion case, where a verifier that lets the header pick the algorithm might
 * accept it. Returns the public key too, for tests that want to show it verifies elsewhere.
 */
export async function mintAsymmetricToken(
  opts: Omit<MintOptions, 'secret' | 'alg'> & { alg?: 'RS256' | 'ES256' },
): Promise<{ token: string; publicKey: CryptoKey }> {
  const alg = opts.alg ?? 'RS256';
  const { privateKey, publicKey } = await generateKeyPair(alg);
  const token = await new SignJWT(clientPayload(opts) as Record<string, unknown>)
    .setProtectedHeader({ alg, ...opts.header })
    .sign(privateKey);
  return { token, publicKey };
}

/** `Bearer <token>`, the header value the client sends. */
export function bearer(token: string): string {
  return `Bearer ${token}`;
}
