export { createKeyStore, DEV_KEY, DEV_SECRET, parseLivekitKeys, resolveKeys } from './keys.ts';
export type { KeyEntry, KeyEnv, KeyStore } from './keys.ts';
export { DEFAULT_CLOCK_TOLERANCE_S, MAX_AUTHORIZATION_LENGTH, verifyBearer } from './jwt.ts';
export type { AuthFailure, AuthResult, VerifyOptions } from './jwt.ts';
