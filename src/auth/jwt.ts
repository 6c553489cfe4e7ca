/**
 * Verification of the LiveKit access token the agent client sends as `Authorization: Bearer <jwt>`
 * on every WebSocket upgrade and every LLM request (protocol.md §1.4).
 *
 * Accepted tokens: HS256 only, signed with the secret of the API key named by `iss`, `exp`
 * required, `exp`/`nbf` checked with a clock tolerance (10 s by default, like livekit-server-sdk's
 * TokenVerifier), and the grant `inference.perform === true`. Expiry only matters at the handshake:
 * established sockets are never dropped when `exp` passes (protocol.md §1.4).
 *
 * Failures are results, never exceptions, and their messages never contain the token, its
 * signature or a secret. The caller turns any failure into a 401 at the upgrade.
 *
 * Cost, measured with a throwaway loop (mint one client token, `await verifyBearer(...)` 100k
 * times after 5k warm-up, hrtime per op; Node 24.9, 2 vCPUs): about 44 µs per accepted token
 * one-at-a-time and about 11 µs per token (~89k/s) with 16-64 in flight; jose with the raw secret
 * (importKey on every call) was about 55 µs. Nearly all of it is WebCrypto's async
 * `subtle.verify` (a thread-pool hop); a synchronous node:crypto HMAC is about 2 µs, the
 * option if this ever shows up in a profile. Early rejections (scheme, alg, unknown key) cost
 * 0.1 to 1.2 µs.
 */
import { errors, jwtVerify } from 'jose';
import type { webcrypto } from 'node:crypto';
import type { KeyStore } from './keys.ts';

type CryptoKey = webcrypto.CryptoKey;

export type AuthFailure =
  | 'missing_token'
  | 'malformed_token'
  | 'unknown_key'
  | 'bad_signature'
  | 'unsupported_alg'
  | 'expired'
  | 'not_yet_valid'
  | 'missing_grant'
  | 'missing_exp';

export type AuthResult =
  | { ok: true; apiKey: string; subject?: string }
  | { ok: false; reason: AuthFailure; message: string };

export interface VerifyOptions {
  /** Leeway for `exp` and `nbf`, in seconds. Default 10 (livekit-server-sdk's TokenVerifier). */
  clockToleranceS?: number;
  /** Current time in milliseconds; for tests. Default Date.now. */
  now?: () => number;
}

/** Longest Authorization header we look at. A real client token is about 250 characters. */
export const MAX_AUTHORIZATION_LENGTH = 8 * 1024;
export const DEFAULT_CLOCK_TOLERANCE_S = 10;

const ALG = 'HS256';
const BASE64URL = /^[A-Za-z0-9_-]+$/;
/** Short, safe algorithm names can be echoed in a message; anything else is not. */
const PRINTABLE_ALG = /^[A-Za-z0-9+-]{1,16}$/;

/**
 * Protected headers the real clients send, pre-approved so the common case skips a base64 and
 * JSON decode: Node (`livekit-server-sdk` via jose) sends `{"alg":"HS256"}`, Python (PyJWT)
 * `{"alg":"HS256","typ":"JWT"}` (protocol.md §1.4). Any other header is decoded and checked.
 */
const KNOWN_HS256_HEADERS = new Set([
  'eyJhbGciOiJIUzI1NiJ9',
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9',
]);

function fail(reason: AuthFailure, message: string): AuthResult {
  return { ok: false, reason, message };
}

/**
 * HMAC keys imported once per secret. Keyed by the Uint8Array the KeyStore hands out (the same
 * instance on every lookup), so a replaced store's keys are collected with it. Without this, jose
 * runs `crypto.subtle.importKey` for every verification.
 */
const importedKeys = new WeakMap<Uint8Array, CryptoKey | Promise<CryptoKey>>();

async function hmacKey(secret: Uint8Array): Promise<CryptoKey> {
  const cached = importedKeys.get(secret);
  if (cached !== undefined) return cached;
  const pending = crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
  importedKeys.set(secret, pending);
  try {
    const key = await pending;
    importedKeys.set(secret, key);
    return key;
  } catch (err) {
    importedKeys.delete(secret);
    throw err;
  }
}

/** Decodes a base64url JSON object segment; undefined when it is anything else. */
function decodeSegment(segment: string): Record<string, unknown> | undefined {
  if (!BASE64URL.test(segment)) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  return value as Record<string, unknown>;
}

/** Extracts the token from `Bearer <token>`; a failure result otherwise. */
function bearerToken(authorization: string | undefined): string | AuthResult {
  if (authorization === undefined) return fail('missing_token', 'missing Authorization header');
  if (typeof authorization !== 'string') return fail('malformed_token', 'Authorization header is not a string');
  if (authorization.length > MAX_AUTHORIZATION_LENGTH) {
    return fail('malformed_token', 'Authorization header is too long');
  }
  const value = authorization.trim();
  if (value === '') return fail('missing_token', 'empty Authorization header');
  const sep = value.search(/\s/);
  const scheme = sep < 0 ? value : value.slice(0, sep);
  if (scheme.toLowerCase() !== 'bearer') return fail('missing_token', 'Authorization scheme must be Bearer');
  if (sep < 0) return fail('missing_token', 'Authorization header has no bearer token');
  const token = value.slice(sep + 1).trimStart();
  if (/\s/.test(token)) return fail('malformed_token', 'bearer token contains whitespace');
  return token;
}

/**
 * Verifies an `Authorization` header value. Always resolves; never throws.
 *
 * Order of checks: header shape, token shape, algorithm (HS256 only, before any signature work:
 * this is what stops `alg: none` and RS256/HS256 key confusion), key lookup by the unverified
 * `iss`, then signature + `exp`/`nbf` via jose, then the inference grant. `unknown_key` and
 * `bad_signature` are distinguishable on purpose: API keys are not secret (every token carries
 * one in clear).
 */
export async function verifyBearer(
  authorization: string | undefined,
  store: KeyStore,
  opts?: VerifyOptions,
): Promise<AuthResult> {
  try {
    const token = bearerToken(authorization);
    if (typeof token !== 'string') return token;

    const dot1 = token.indexOf('.');
    const dot2 = dot1 < 0 ? -1 : token.indexOf('.', dot1 + 1);
    if (dot2 < 0 || token.indexOf('.', dot2 + 1) >= 0) {
      return fail('malformed_token', 'token is not a JWT (expected three dot-separated parts)');
    }
    const headerSegment = token.slice(0, dot1);
    const payloadSegment = token.slice(dot1 + 1, dot2);
    const signatureSegment = token.slice(dot2 + 1);

    if (!KNOWN_HS256_HEADERS.has(headerSegment)) {
      const header = decodeSegment(headerSegment);
      if (header === undefined) return fail('malformed_token', 'token header is not base64url-encoded JSON');
      const alg = header.alg;
      if (alg !== ALG) {
        const shown = typeof alg === 'string' && PRINTABLE_ALG.test(alg) ? ` ${alg}` : '';
        return fail('unsupported_alg', `token algorithm${shown} is not accepted (HS256 only)`);
      }
    }

    const payload = decodeSegment(payloadSegment);
    if (payload === undefined) return fail('malformed_token', 'token payload is not base64url-encoded JSON');
    if (signatureSegment === '' || !BASE64URL.test(signatureSegment)) {
      return fail('malformed_token', 'token signature is missing or not base64url');
    }

    const iss = payload.iss;
    if (typeof iss !== 'string' || iss === '') return fail('unknown_key', 'token has no iss (API key) claim');
    const secret = store.lookup(iss);
    if (secret === undefined) return fail('unknown_key', 'token iss is not a known API key');

    let verified: Record<string, unknown>;
    try {
      // jose verifies the HMAC with WebCrypto's `subtle.verify`, which compares MACs in
      // constant time. `algorithms` repeats the HS256-only rule inside jose; `issuer` binds the
      // secret we chose to the iss jose reads from the signed payload.
      const result = await jwtVerify(token, await hmacKey(secret), {
        algorithms: [ALG],
        issuer: iss,
        requiredClaims: ['exp'],
        clockTolerance: opts?.clockToleranceS ?? DEFAULT_CLOCK_TOLERANCE_S,
        ...(opts?.now !== undefined ? { currentDate: new Date(opts.now()) } : {}),
      });
      verified = result.payload;
    } catch (err) {
      return joseFailure(err);
    }

    const inference = verified.inference;
    if (
      typeof inference !== 'object' ||
      inference === null ||
      (inference as { perform?: unknown }).perform !== true
    ) {
      return fail('missing_grant', 'token lacks the inference.perform grant');
    }

    const sub = verified.sub;
    return typeof sub === 'string' ? { ok: true, apiKey: iss, subject: sub } : { ok: true, apiKey: iss };
  } catch {
    // Defensive: nothing above should throw, but an auth check must never reject its promise.
    return fail('malformed_token', 'token could not be verified');
  }
}

/** Maps a jose error to a failure by class and claim, never by message text. */
function joseFailure(err: unknown): AuthResult {
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return fail('bad_signature', 'token signature does not match the API secret');
  }
  if (err instanceof errors.JWTExpired) return fail('expired', 'token has expired');
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'exp' && err.reason === 'missing') return fail('missing_exp', 'token has no exp claim');
    if (err.claim === 'nbf' && err.reason === 'check_failed') {
      return fail('not_yet_valid', 'token is not valid yet (nbf is in the future)');
    }
    return fail('malformed_token', `token claim ${err.claim} is invalid`);
  }
  if (err instanceof errors.JOSEAlgNotAllowed) {
    return fail('unsupported_alg', 'token algorithm is not accepted (HS256 only)');
  }
  return fail('malformed_token', 'token is malformed');
}
