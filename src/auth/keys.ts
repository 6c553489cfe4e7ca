/**
 * LiveKit API key store: which API keys the gateway accepts and the secret each one signs with.
 *
 * The agent client signs every connection with its LiveKit project key pair (protocol.md §1.3,
 * §1.4): the JWT's `iss` is the API key, the HMAC key is the API secret's UTF-8 bytes. Keys come
 * from the same places livekit-server takes them (`LIVEKIT_API_KEY`/`LIVEKIT_API_SECRET`,
 * `LIVEKIT_KEYS`) plus the gateway's config file; with none configured the gateway runs in dev
 * mode with `devkey`/`secret`, the `livekit-server --dev` convention.
 *
 * Secrets never leave this module except as bytes from `lookup()`, and never appear in error
 * messages, `JSON.stringify(store)` or `util.inspect(store)`.
 */

export interface KeyEntry {
  key: string;
  secret: string;
}

export interface KeyStore {
  /**
   * The secret for an API key as UTF-8 bytes, or undefined for an unknown key. The same
   * Uint8Array instance is returned on every call (the verifier caches imported keys by it): do
   * not mutate it.
   */
  lookup(apiKey: string): Uint8Array | undefined;
  /** Accepted API keys, in configuration order. Safe to log. */
  readonly keys: readonly string[];
  /** True when no key was configured and the store only holds the dev key pair. */
  readonly devMode: boolean;
}

/** The `livekit-server --dev` key pair. Accepted only when no key is configured. */
export const DEV_KEY = 'devkey';
export const DEV_SECRET = 'secret';

/** Strips one pair of matching surrounding quotes, as YAML would for `key: "secret"`. */
function unquote(s: string): string {
  if (s.length >= 2) {
    const first = s[0];
    if ((first === '"' || first === "'") && s[s.length - 1] === first) return s.slice(1, -1).trim();
  }
  return s;
}

/**
 * Parses livekit-server's `LIVEKIT_KEYS` format: `key: secret` pairs separated by commas or
 * newlines. Whitespace around keys and secrets is trimmed, one pair of surrounding quotes is
 * removed, blank entries are ignored, and a secret may itself contain `:` (the first colon
 * separates). An identical duplicate pair is kept once.
 *
 * Throws on a malformed entry (message names the 1-based entry position) or on a key repeated
 * with a different secret (message names the key). Messages never contain secret text.
 */
export function parseLivekitKeys(text: string): KeyEntry[] {
  const out: KeyEntry[] = [];
  const seen = new Map<string, string>();
  let position = 0;
  for (const raw of text.split(/[,\r\n]/)) {
    const entry = raw.trim();
    if (entry === '') continue;
    position++;
    const colon = entry.indexOf(':');
    if (colon < 0) {
      throw new Error(`LIVEKIT_KEYS entry ${position} is malformed: expected "key: secret"`);
    }
    const key = unquote(entry.slice(0, colon).trim());
    const secret = unquote(entry.slice(colon + 1).trim());
    if (key === '') throw new Error(`LIVEKIT_KEYS entry ${position} has an empty key`);
    if (secret === '') throw new Error(`LIVEKIT_KEYS entry ${position} has an empty secret`);
    const previous = seen.get(key);
    if (previous !== undefined) {
      if (previous !== secret) {
        throw new Error(`LIVEKIT_KEYS lists key ${JSON.stringify(key)} twice with different secrets`);
      }
      continue;
    }
    seen.set(key, secret);
    out.push({ key, secret });
  }
  return out;
}

/**
 * Builds an immutable key store. Secrets live only in a closure, so logging or serializing the
 * store shows `keys` and `devMode` and nothing else. Throws on an empty key or secret and on a
 * key given twice with different secrets; identical duplicates are merged.
 */
export function createKeyStore(entries: readonly KeyEntry[], opts?: { devMode?: boolean }): KeyStore {
  const encoder = new TextEncoder();
  const plain = new Map<string, string>();
  const secrets = new Map<string, Uint8Array>();
  for (const [i, { key, secret }] of entries.entries()) {
    if (typeof key !== 'string' || key === '') throw new Error(`API key entry ${i + 1} has an empty key`);
    if (typeof secret !== 'string' || secret === '') {
      throw new Error(`API key ${JSON.stringify(key)} has an empty secret`);
    }
    const previous = plain.get(key);
    if (previous !== undefined) {
      if (previous !== secret) {
        throw new Error(`API key ${JSON.stringify(key)} is configured twice with different secrets`);
      }
      continue;
    }
    plain.set(key, secret);
    secrets.set(key, encoder.encode(secret));
  }
  const keys = Object.freeze([...secrets.keys()]);
  return Object.freeze({
    keys,
    devMode: opts?.devMode === true,
    // A Map, not an object: `__proto__`, `constructor` and friends are just unknown keys.
    lookup: (apiKey: string): Uint8Array | undefined => secrets.get(apiKey),
  });
}

export interface KeyEnv {
  LIVEKIT_API_KEY?: string | undefined;
  LIVEKIT_API_SECRET?: string | undefined;
  LIVEKIT_KEYS?: string | undefined;
}

/**
 * The gateway's key store: the union of `LIVEKIT_API_KEY` + `LIVEKIT_API_SECRET`, `LIVEKIT_KEYS`
 * and the config file's keys. Empty environment values count as unset. Setting only one of
 * `LIVEKIT_API_KEY`/`LIVEKIT_API_SECRET` is an error, as is one key with two different secrets
 * across sources. With no key at all, returns a dev-mode store holding only `devkey`/`secret`.
 */
export function resolveKeys(input: { env: KeyEnv; fileKeys?: readonly KeyEntry[] | undefined }): KeyStore {
  const { env } = input;
  // Used verbatim (the client signs with the raw variable); only an empty value counts as unset.
  const apiKey = env.LIVEKIT_API_KEY || undefined;
  const apiSecret = env.LIVEKIT_API_SECRET || undefined;
  if ((apiKey === undefined) !== (apiSecret === undefined)) {
    throw new Error(
      apiKey === undefined
        ? 'LIVEKIT_API_SECRET is set but LIVEKIT_API_KEY is not: set both or neither'
        : 'LIVEKIT_API_KEY is set but LIVEKIT_API_SECRET is not: set both or neither',
    );
  }
  const entries: KeyEntry[] = [];
  if (apiKey !== undefined && apiSecret !== undefined) entries.push({ key: apiKey, secret: apiSecret });
  if (env.LIVEKIT_KEYS !== undefined) entries.push(...parseLivekitKeys(env.LIVEKIT_KEYS));
  if (input.fileKeys !== undefined) entries.push(...input.fileKeys);
  if (entries.length === 0) return createKeyStore([{ key: DEV_KEY, secret: DEV_SECRET }], { devMode: true });
  return createKeyStore(entries);
}
