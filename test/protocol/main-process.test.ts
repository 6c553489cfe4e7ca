/**
 * The real entry point (`npm start` = node src/main.ts) as a child process: it starts, serves
 * /healthz, and exits 0 promptly on SIGTERM, even when nothing reads its stdout any more.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';

it('starts, then exits 0 on SIGTERM even after its stdout reader went away', async () => {
  const child = spawn(process.execPath, ['src/main.ts'], {
    env: { ...process.env, USAGE_DB: join(mkdtempSync(join(tmpdir(), 'gw-main-')), 'usage.db'), PORT: '0', LOG_LEVEL: 'info', LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 'secret-with-enough-entropy-0123456789', GATEWAY_CONFIG: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 15_000);
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /"port":(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  const health = await fetch(`http://127.0.0.1:${port}/healthz`);
  expect(health.status).toBe(200);
  // The log reader dies: later log lines hit a closed pipe (EPIPE).
  child.stdout.destroy();
  const started = Date.now();
  child.kill('SIGTERM');
  const [code] = (await Promise.race([
    once(child, 'exit'),
    new Promise((_, reject) => setTimeout(() => reject(new Error('gateway did not exit within 8 s of SIGTERM')), 8000)),
  ])) as [number | null];
  expect(code).toBe(0);
  expect(Date.now() - started).toBeLessThan(8000);
}, 30_000);
