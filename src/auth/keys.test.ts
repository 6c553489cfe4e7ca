import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createKeyStore, DEV_KEY, DEV_SECRET, parseLivekitKeys, resolveKeys } from './keys.ts';

const SECRET_A = 'S3cretAaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
const SECRET_B = 'S3cretBbbbbbbbbbbbbbbbbbbbbbbbbbbbb';

function thrownMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected a throw');
}

describe('parseLivekitKeys', () => {
  it('parses a single pair', () => {
    expect(parseLivekitKeys('APIa: sec')).toEqual([{ key: 'APIa', secret: 'sec' }]);
  });

  it('parses comma-separated pairs', () => {
    expect(parseLivekitKeys('k1: s1, k2: s2,k3:s3')).toEqual([
      { key: 'k1', secret: 's1' },
      { key: 'k2', secret: 's2' },
      { key: 'k3', secret: 's3' },
    ]);
  });

  it('parses newline-separated pairs (LF and CRLF) and mixed separators', () => {
    expect(parseLivekitKeys('k1: s1\nk2: s2\r\nk3: s3, k4: s4\n')).toEqual([
      { key: 'k1', secret: 's1' },
      { key: 'k2', secret: 's2' },
      { key: 'k3', secret: 's3' },
      { key: 'k4', secret: 's4' },
    ]);
  });

  it('trims spaces and tabs around keys and secrets', () => {
    expect(parseLivekitKeys('  \tk1 \t:\t  s1  ,   k2:s2   ')).toEqual([
      { key: 'k1', secret: 's1' },
      { key: 'k2', secret: 's2' },
    ]);
  });

  it('ignores blank entries', () => {
    expect(parseLivekitKeys(',, \n\n k1: s1 ,,\n  ,')).toEqual([{ key: 'k1', secret: 's1' }]);
    expect(parseLivekitKeys('')).toEqual([]);
    expect(parseLivekitKeys('  \n , ')).toEqual([]);
  });

  it('splits on the first colon only, so secrets may contain colons', () => {
    expect(parseLivekitKeys('k1: a:b:c')).toEqual([{ key: 'k1', secret: 'a:b:c' }]);
  });

  it('removes one pair of YAML-style surrounding quotes', () => {
    expect(parseLivekitKeys(`"k1": "s1", 'k2': 's2'`)).toEqual([
      { key: 'k1', secret: 's1' },
      { key: 'k2', secret: 's2' },
    ]);
  });

  it('rejects an entry without a colon, naming its 1-based position and not its text', () => {
    const msg = thrownMessage(() => parseLivekitKeys(`k1: s1, ${SECRET_A}`));
    expect(msg).toMatch(/entry 2\b/);
    expect(msg).not.toContain(SECRET_A);
  });

  it('counts positions over non-blank entries', () => {
    const msg = thrownMessage(() => parseLivekitKeys(`k1: s1,,\n\nk2: s2\n${SECRET_A}`));
    expect(msg).toMatch(/entry 3\b/);
    expect(msg).not.toContain(SECRET_A);
  });

  it('rejects an empty key without showing the secret', () => {
    const msg = thrownMessage(() => parseLivekitKeys(`: ${SECRET_A}`));
    expect(msg).toMatch(/entry 1\b/);
    expect(msg).toMatch(/empty key/);
    expect(msg).not.toContain(SECRET_A);
  });

  it('rejects an empty secret', () => {
    expect(() => parseLivekitKeys('k1: s1\nk2:   ')).toThrow(/entry 2\b.*empty secret/);
    expect(() => parseLivekitKeys('k1: ""')).toThrow(/entry 1\b.*empty secret/);
  });

  it('keeps an identical duplicate once', () => {
    expect(parseLivekitKeys('k1: s1, k1: s1')).toEqual([{ key: 'k1', secret: 's1' }]);
  });

  it('rejects a duplicate key with a different secret, naming the key and neither secret', () => {
    const msg = thrownMessage(() => parseLivekitKeys(`dupkey: ${SECRET_A}\ndupkey: ${SECRET_B}`));
    expect(msg).toContain('dupkey');
    expect(msg).not.toContain(SECRET_A);
    expect(msg).not.toContain(SECRET_B);
  });
});

describe('createKeyStore', () => {
  it('looks secrets up by key as UTF-8 bytes', () => {
    const store = createKeyStore([
      { key: 'k1', secret: 'plain' },
      { key: 'k2', secret: 'sécret✓' },
    ]);
    expect(Buffer.from(store.lookup('k1')!).toString('utf8')).toBe('plain');
    expect(store.lookup('k2')).toEqual(new Uint8Array(Buffer.from('sécret✓', 'utf8')));
    expect(store.lookup('k3')).toBeUndefined();
    expect(store.keys).toEqual(['k1', 'k2']);
    expect(store.devMode).toBe(false);
  });

  it('returns the same bytes instance on each lookup (the verifier caches by it)', () => {
    const store = createKeyStore([{ key: 'k1', secret: 's1' }]);
    expect(store.lookup('k1')).toBe(store.lookup('k1'));
  });

  it('treats prototype property names as unknown keys', () => {
    const store = createKeyStore([{ key: 'k1', secret: 's1' }]);
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', '']) {
      expect(store.lookup(name)).toBeUndefined();
    }
  });

  it('is case-sensitive', () => {
    const store = createKeyStore([{ key: 'APIabc', secret: 's1' }]);
    expect(store.lookup('apiabc')).toBeUndefined();
  });

  it('does not show secrets when serialized, inspected or spread', () => {
    const store = createKeyStore([{ key: 'visiblekey', secret: SECRET_A }], { devMode: false });
    const json = JSON.stringify(store);
    expect(json).not.toContain(SECRET_A);
    expect(json).toContain('visiblekey');
    const shown = inspect(store, { depth: Infinity, showHidden: true, getters: true });
    expect(shown).not.toContain(SECRET_A);
    expect(JSON.stringify({ ...store })).not.toContain(SECRET_A);
    expect(String(Object.values(store))).not.toContain(SECRET_A);
  });

  it('is immutable', () => {
    const store = createKeyStore([{ key: 'k1', secret: 's1' }]);
    expect(Object.isFrozen(store)).toBe(true);
    expect(Object.isFrozen(store.keys)).toBe(true);
  });

  it('records dev mode', () => {
    expect(createKeyStore([{ key: 'k', secret: 's' }], { devMode: true }).devMode).toBe(true);
  });

  it('merges identical duplicates and rejects conflicting ones without showing secrets', () => {
    expect(createKeyStore([{ key: 'k', secret: 's' }, { key: 'k', secret: 's' }]).keys).toEqual(['k']);
    const msg = thrownMessage(() =>
      createKeyStore([
        { key: 'k', secret: SECRET_A },
        { key: 'k', secret: SECRET_B },
      ]),
    );
    expect(msg).toContain('"k"');
    expect(msg).not.toContain(SECRET_A);
    expect(msg).not.toContain(SECRET_B);
  });

  it('rejects empty keys and secrets', () => {
    expect(() => createKeyStore([{ key: '', secret: SECRET_A }])).toThrow(/empty key/);
    expect(() => createKeyStore([{ key: 'k', secret: '' }])).toThrow(/empty secret/);
  });
});

describe('resolveKeys', () => {
  it('uses LIVEKIT_API_KEY + LIVEKIT_API_SECRET', () => {
    const store = resolveKeys({ env: { LIVEKIT_API_KEY: 'APIenv', LIVEKIT_API_SECRET: SECRET_A } });
    expect(store.keys).toEqual(['APIenv']);
    expect(store.devMode).toBe(false);
    expect(Buffer.from(store.lookup('APIenv')!).toString()).toBe(SECRET_A);
    expect(store.lookup(DEV_KEY)).toBeUndefined();
  });

  it('rejects only one of the pair, without showing the secret', () => {
    expect(() => resolveKeys({ env: { LIVEKIT_API_KEY: 'APIenv' } })).toThrow(/LIVEKIT_API_SECRET/);
    const msg = thrownMessage(() => resolveKeys({ env: { LIVEKIT_API_SECRET: SECRET_A } }));
    expect(msg).toMatch(/LIVEKIT_API_KEY/);
    expect(msg).not.toContain(SECRET_A);
  });

  it('treats empty environment values as unset', () => {
    expect(resolveKeys({ env: { LIVEKIT_API_KEY: '', LIVEKIT_API_SECRET: '' } }).devMode).toBe(true);
    expect(() => resolveKeys({ env: { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: '' } })).toThrow();
    expect(resolveKeys({ env: { LIVEKIT_KEYS: '' } }).devMode).toBe(true);
  });

  it('uses LIVEKIT_KEYS', () => {
    const store = resolveKeys({ env: { LIVEKIT_KEYS: 'k1: s1\nk2: s2' } });
    expect(store.keys).toEqual(['k1', 'k2']);
    expect(store.devMode).toBe(false);
  });

  it('propagates LIVEKIT_KEYS parse errors', () => {
    expect(() => resolveKeys({ env: { LIVEKIT_KEYS: 'k1 s1' } })).toThrow(/entry 1/);
  });

  it('uses config-file keys', () => {
    const store = resolveKeys({ env: {}, fileKeys: [{ key: 'fk', secret: 'fs' }] });
    expect(store.keys).toEqual(['fk']);
    expect(store.devMode).toBe(false);
  });

  it('takes the union of all three sources', () => {
    const store = resolveKeys({
      env: { LIVEKIT_API_KEY: 'pair', LIVEKIT_API_SECRET: 'ps', LIVEKIT_KEYS: 'k1: s1, k2: s2' },
      fileKeys: [
        { key: 'fk', secret: 'fs' },
        { key: 'k1', secret: 's1' },
      ],
    });
    expect([...store.keys].sort()).toEqual(['fk', 'k1', 'k2', 'pair']);
    expect(Buffer.from(store.lookup('pair')!).toString()).toBe('ps');
    expect(Buffer.from(store.lookup('fk')!).toString()).toBe('fs');
  });

  it('rejects one key with different secrets across sources', () => {
    const msg = thrownMessage(() =>
      resolveKeys({
        env: { LIVEKIT_API_KEY: 'same', LIVEKIT_API_SECRET: SECRET_A },
        fileKeys: [{ key: 'same', secret: SECRET_B }],
      }),
    );
    expect(msg).toContain('same');
    expect(msg).not.toContain(SECRET_A);
    expect(msg).not.toContain(SECRET_B);
  });

  it('falls back to dev mode with only devkey/secret when nothing is configured', () => {
    for (const input of [{ env: {} }, { env: {}, fileKeys: [] }]) {
      const store = resolveKeys(input);
      expect(store.devMode).toBe(true);
      expect(store.keys).toEqual([DEV_KEY]);
      expect(Buffer.from(store.lookup(DEV_KEY)!).toString()).toBe(DEV_SECRET);
    }
    expect(DEV_KEY).toBe('devkey');
    expect(DEV_SECRET).toBe('secret');
  });

  it('does not accept the dev key once any key is configured', () => {
    const store = resolveKeys({ env: { LIVEKIT_KEYS: 'k1: s1' } });
    expect(store.lookup(DEV_KEY)).toBeUndefined();
  });
});
