import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfigFile } from './config.ts';

function withFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'gwcfg-'));
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('config', () => {
  it('defaults: dev mode binds loopback, 10 s shutdown, 60 s inactivity', () => {
    const cfg = loadConfig({ HOST: '0.0.0.0' });
    expect(cfg.devMode).toBe(true);
    expect(cfg.host).toBe('127.0.0.1');
    expect(cfg.port).toBe(8080);
    expect(cfg.file.server.shutdownTimeoutS).toBe(10);
    expect(cfg.file.stt.inactivityTimeoutS).toBe(60);
    expect(cfg.keys.lookup('devkey')).toBeDefined();
    expect(cfg.missingCredentials.get('deepgram')).toBe('DEEPGRAM_API_KEY');
  });

  it('keys from the environment leave dev mode and honour HOST/PORT and env overrides', () => {
    const cfg = loadConfig({
      LIVEKIT_API_KEY: 'k',
      LIVEKIT_API_SECRET: 's',
      HOST: '0.0.0.0',
      PORT: '9000',
      STT_INACTIVITY_TIMEOUT_S: '5',
      DEEPGRAM_API_KEY: 'dg',
      DEEPGRAM_BASE_URL: 'http://127.0.0.1:1234',
    });
    expect(cfg.devMode).toBe(false);
    expect(cfg.host).toBe('0.0.0.0');
    expect(cfg.port).toBe(9000);
    expect(cfg.file.stt.inactivityTimeoutS).toBe(5);
    expect(cfg.endpoints.get('deepgram')).toMatchObject({ apiKey: 'dg', baseUrl: 'http://127.0.0.1:1234' });
    expect(cfg.keys.lookup('devkey')).toBeUndefined();
  });

  it('an unknown key stops startup with its exact path', () => {
    expect(() => parseConfigFile('stt:\n  inactivityTimeoutS: 5\n  bogus: 1\n', 'gw.yaml')).toThrow(/gw\.yaml: stt: .*bogus/);
  });

  it('a wrong type stops startup with its exact path and reason', () => {
    expect(() => parseConfigFile('{"server":{"shutdownTimeoutS":"ten"}}', 'gw.json')).toThrow(/gw\.json: server\.shutdownTimeoutS: .*number/);
  });

  it('an unknown provider is rejected', () => {
    expect(() => parseConfigFile('providers:\n  nosuch:\n    apiKey: env:X\n', 'gw.yaml')).toThrow(/providers\.nosuch: unknown provider/);
  });

  it('resolves env: secret references from the file and reports missing ones by path', () => {
    const path = withFile('gw.yaml', 'auth:\n  keys:\n    - key: prod\n      secret: env:PROD_SECRET\nproviders:\n  deepgram:\n    apiKey: env:DG_KEY_2\n');
    const cfg = loadConfig({ GATEWAY_CONFIG: path, PROD_SECRET: 'xyz', DG_KEY_2: 'dg2' });
    expect(cfg.devMode).toBe(false);
    expect(cfg.keys.lookup('prod')).toEqual(new TextEncoder().encode('xyz'));
    expect(cfg.endpoints.get('deepgram')?.apiKey).toBe('dg2');
    expect(() => loadConfig({ GATEWAY_CONFIG: path, PROD_SECRET: 'xyz' })).toThrow(/providers\.deepgram\.apiKey: environment variable DG_KEY_2 is not set/);
  });

  it('rejects unreadable files, bad YAML, bad PORT and half a key pair', () => {
    expect(() => loadConfig({ GATEWAY_CONFIG: '/nonexistent/gw.yaml' })).toThrow(ConfigError);
    expect(() => loadConfig({ GATEWAY_CONFIG: withFile('bad.yaml', 'a: [1,\n') })).toThrow(/cannot parse/);
    expect(() => loadConfig({ PORT: 'abc' })).toThrow(/PORT/);
    expect(() => loadConfig({ LIVEKIT_API_KEY: 'k' })).toThrow(ConfigError);
    expect(() => loadConfig({ STT_INACTIVITY_TIMEOUT_S: '-1' })).toThrow(/STT_INACTIVITY_TIMEOUT_S/);
  });

  it('error messages never contain secret values', () => {
    try {
      loadConfig({ LIVEKIT_KEYS: 'a: supersecretvalue, broken-entry' });
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).not.toContain('supersecretvalue');
    }
  });
});
