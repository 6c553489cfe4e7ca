/** The `ledger` and `admin` config sections with USAGE_DB, USAGE_DATABASE_URL and ADMIN_TOKEN. */
import { describe, expect, it } from 'vitest';
import { ConfigError, fileSchema, resolveConfig } from './config.ts';

const KEYS = { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 'a-secret-long-enough-for-tests' };
const resolve = (file: unknown, env: Record<string, string> = {}) => resolveConfig(fileSchema.parse(file), { ...KEYS, ...env });

describe('ledger config', () => {
  it('defaults to SQLite at ./data/usage.db with 5 s checkpoints', () => {
    const cfg = resolve({});
    expect(cfg.ledger).toEqual({ kind: 'sqlite', path: './data/usage.db' });
    expect(cfg.file.ledger).toEqual({ checkpointS: 5, maxQueue: 10_000 });
  });

  it('USAGE_DB overrides the file path; USAGE_DATABASE_URL selects PostgreSQL', () => {
    expect(resolve({ ledger: { sqlitePath: '/var/lib/gw/u.db' } }).ledger).toEqual({ kind: 'sqlite', path: '/var/lib/gw/u.db' });
    expect(resolve({ ledger: { sqlitePath: '/var/lib/gw/u.db' } }, { USAGE_DB: '/tmp/x.db' }).ledger).toEqual({ kind: 'sqlite', path: '/tmp/x.db' });
    expect(resolve({}, { USAGE_DATABASE_URL: 'postgres://u@db/usage' }).ledger).toEqual({ kind: 'postgres', url: 'postgres://u@db/usage' });
    expect(resolve({ ledger: { databaseUrl: 'env:LEDGER_URL' } }, { LEDGER_URL: 'postgresql://db/x' }).ledger).toEqual({ kind: 'postgres', url: 'postgresql://db/x' });
    // An explicit backend wins over a URL in the environment.
    expect(resolve({ ledger: { backend: 'sqlite' } }, { USAGE_DATABASE_URL: 'postgres://db/x' }).ledger.kind).toBe('sqlite');
    expect(resolve({ ledger: { backend: 'none' } }).ledger).toEqual({ kind: 'none' });
  });

  it('rejects a postgres backend without a URL, a non-postgres URL and unknown keys', () => {
    expect(() => resolve({ ledger: { backend: 'postgres' } })).toThrow(ConfigError);
    expect(() => resolve({ ledger: { backend: 'postgres' } })).toThrow(/no database URL/);
    expect(() => resolve({}, { USAGE_DATABASE_URL: 'mysql://db/x' })).toThrow(/must be a postgres:\/\//);
    expect(() => fileSchema.parse({ ledger: { path: 'x' } })).toThrow();
    expect(() => fileSchema.parse({ ledger: { checkpointS: 0 } })).toThrow();
  });
});

describe('admin config', () => {
  it('takes the token from admin.token or ADMIN_TOKEN; none disables the admin API', () => {
    expect(resolve({}).adminToken).toBeUndefined();
    expect(resolve({}, { ADMIN_TOKEN: 'sixteen-chars-ok' }).adminToken).toBe('sixteen-chars-ok');
    expect(resolve({ admin: { token: 'env:OPS_TOKEN' } }, { OPS_TOKEN: 'ops-token-0123456789' }).adminToken).toBe('ops-token-0123456789');
  });

  it('refuses a short token and a missing variable', () => {
    expect(() => resolve({}, { ADMIN_TOKEN: 'short' })).toThrow(/at least 16 characters/);
    expect(() => resolve({ admin: { token: 'env:NOPE' } })).toThrow(/NOPE is not set/);
  });
});
