import { spawn } from 'node:child_process';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { GatewayError } from '../../protocol/errors.ts';
import { streamPost } from './http-upstream.ts';

interface Outcome {
  status?: number;
  headers?: IncomingHttpHeaders;
  chunks: Buffer[];
  ended: boolean;
  error?: GatewayError;
  calls: number;
}

/** streamPost with recording handlers; resolves on onEnd / onError. */
function post(url: string, opts: { timeoutMs?: number; body?: string; onData?: (o: Outcome, abort: () => void) => void } = {}) {
  const o: Outcome = { chunks: [], ended: false, calls: 0 };
  let abort: () => void = () => {};
  const done = new Promise<Outcome>((resolve) => {
    abort = streamPost(
      { url, headers: { 'Content-Type': 'application/json', Authorization: 'Bearer sk-test' }, body: opts.body ?? '{"hello":"wörld"}' },
      { timeoutMs: opts.timeoutMs ?? 2000, label: 'testprov' },
      {
        onResponse: (status, headers) => {
          o.calls++;
          o.status = status;
          o.headers = headers;
        },
        onData: (chunk) => {
          o.calls++;
          o.chunks.push(chunk);
          opts.onData?.(o, abort);
        },
        onEnd: () => {
          o.calls++;
          o.ended = true;
          resolve(o);
        },
        onError: (err) => {
          o.calls++;
          o.error = err;
          resolve(o);
        },
      },
    );
  });
  return { done, abort: () => abort(), outcome: o };
}

const servers: http.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function serve(handler: http.RequestListener): Promise<{ url: string; server: http.Server; connections: () => number }> {
  const server = http.createServer(handler);
  let connections = 0;
  server.on('connection', () => connections++);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat`, server, connections: () => connections };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('streamPost (node:http, keep-alive agent)', () => {
  it('streams the body as it arrives and reuses one connection for sequential requests', async () => {
    const seen: { body: string; headers: IncomingHttpHeaders }[] = [];
    const { url, connections } = await serve((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', async () => {
        seen.push({ body, headers: req.headers });
        res.writeHead(200, { 'Content-Type': 'text/event-stream', 'X-Request-Id': 'req-1' });
        res.write('data: one\n\n');
        await sleep(20);
        res.end('data: two\n\n');
      });
    });

    const a = await post(url).done;
    expect(a.error).toBeUndefined();
    expect(a.ended).toBe(true);
    expect(a.status).toBe(200);
    expect(a.headers?.['x-request-id']).toBe('req-1');
    expect(a.chunks.length).toBeGreaterThanOrEqual(2); // two writes 20 ms apart: two chunks
    expect(a.chunks.every((c) => Buffer.isBuffer(c))).toBe(true);
    expect(Buffer.concat(a.chunks).toString()).toBe('data: one\n\ndata: two\n\n');

    await sleep(50);
    const b = await post(url).done;
    expect(b.ended).toBe(true);
    expect(Buffer.concat(b.chunks).toString()).toBe('data: one\n\ndata: two\n\n');
    expect(connections()).toBe(1);

    const [first] = seen;
    expect(first?.body).toBe('{"hello":"wörld"}');
    expect(first?.headers['content-length']).toBe(String(Buffer.byteLength('{"hello":"wörld"}')));
    expect(first?.headers.connection).toBe('keep-alive');
    expect(first?.headers.authorization).toBe('Bearer sk-test');
    expect(first?.headers['content-type']).toBe('application/json');
  });

  it("turns a non-2xx answer into an error with the provider's message", async () => {
    const { url } = await serve((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(429, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'Rate limit reached for gpt-4o-mini', type: 'requests' } }));
      });
    });
    const o = await post(url).done;
    expect(o.ended).toBe(false);
    expect(o.status).toBeUndefined(); // onResponse is for 2xx answers only
    expect(o.error?.code).toBe('rate_limited');
    expect(o.error?.status).toBe(429);
    expect(o.error?.fields).toEqual({ provider_status: 429 });
    expect(o.error?.message).toBe('testprov: provider rate limit reached (HTTP 429: Rate limit reached for gpt-4o-mini)');
    expect(o.error?.message).not.toContain('sk-test');
  });

  it('reads at most 4 KiB of an error body, even an endless one', async () => {
    const { url } = await serve((req, res) => {
      req.resume();
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      const t = setInterval(() => res.write('x'.repeat(1000)), 1);
      res.on('close', () => clearInterval(t));
    });
    const o = await post(url).done;
    expect(o.error?.code).toBe('provider_error');
    expect(o.error?.message).toMatch(/^testprov: provider unavailable \(HTTP 500: x+/);
  });

  it('gives provider_timeout (504) when the headers do not arrive in time', async () => {
    const { url } = await serve((req) => {
      req.resume(); // never answers
    });
    const t0 = performance.now();
    const o = await post(url, { timeoutMs: 150 }).done;
    expect(performance.now() - t0).toBeGreaterThanOrEqual(140);
    expect(o.error?.code).toBe('provider_timeout');
    expect(o.error?.status).toBe(504);
    expect(o.error?.message).toBe('testprov: no response from provider after 150 ms');
    expect(o.calls).toBe(1);
  });

  it('calls no handler after an abort (mid-body and before the headers)', async () => {
    const { url } = await serve((req, res) => {
      req.resume();
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      let i = 0;
      const t = setInterval(() => {
        res.write(`data: ${i++}\n\n`);
        if (i === 20) {
          clearInterval(t);
          res.end();
        }
      }, 5);
      res.on('close', () => clearInterval(t));
    });

    const mid = post(url, { onData: (o, abort) => o.chunks.length === 2 && abort() });
    await sleep(300);
    expect(mid.outcome.chunks.length).toBe(2);
    expect(mid.outcome.ended).toBe(false);
    expect(mid.outcome.error).toBeUndefined();
    expect(mid.outcome.calls).toBe(3); // onResponse + 2 x onData

    const { url: silent } = await serve((req) => req.resume());
    const early = post(silent, { timeoutMs: 100 });
    await sleep(20);
    early.abort();
    await sleep(200); // past the deadline: no timeout error either
    expect(early.outcome.calls).toBe(0);

    const immediate = post(url);
    immediate.abort();
    await sleep(150);
    expect(immediate.outcome.calls).toBe(0);
  });

  it('reports an unreachable provider and a body that breaks off', async () => {
    const { url, server } = await serve((req) => req.resume());
    const closedPort = (server.address() as AddressInfo).port;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    const o = await post(`http://127.0.0.1:${closedPort}/v1/chat`).done;
    expect(o.error?.code).toBe('provider_error');
    expect(o.error?.message).toBe('testprov: could not reach provider');

    const { url: broken } = await serve((req, res) => {
      req.resume();
      res.writeHead(200, { 'Content-Type': 'audio/pcm', 'Content-Length': '1000' });
      res.write(Buffer.alloc(100));
      setTimeout(() => res.socket?.destroy(), 20);
    });
    const b = await post(broken).done;
    expect(b.chunks.length).toBeGreaterThan(0);
    expect(b.ended).toBe(false);
    expect(b.error?.code).toBe('provider_error');
    expect(b.error?.message).toBe('testprov: provider stream broke off');
    void url;
  });

  it('sends once more on a fresh connection when a pooled socket turns out closed', async () => {
    const served = new WeakMap<Socket, number>();
    let requests = 0;
    const { url, connections } = await serve((req, res) => {
      requests++;
      const n = (served.get(req.socket) ?? 0) + 1;
      served.set(req.socket, n);
      if (n > 1) {
        req.socket.destroy(); // as a server closing an idle connection just as it is reused
        return;
      }
      req.resume();
      res.end('ok');
    });
    expect((await post(url).done).ended).toBe(true);
    await sleep(20);
    const second = await post(url).done;
    expect(second.error).toBeUndefined();
    expect(Buffer.concat(second.chunks).toString()).toBe('ok');
    expect(requests).toBe(3);
    expect(connections()).toBe(2);
  });

  it('does not keep the process alive with idle pooled sockets', async () => {
    const { url, server, connections } = await serve((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    server.keepAliveTimeout = 60_000; // the server would keep the connection: the child must not wait for it
    const mod = fileURLToPath(new URL('./http-upstream.ts', import.meta.url));
    const script = `
      const { streamPost } = await import(${JSON.stringify(mod)});
      streamPost({ url: ${JSON.stringify(url)}, headers: {}, body: '{}' }, { timeoutMs: 2000, label: 't' }, {
        onData() {}, onEnd() { console.log('end'); }, onError(e) { console.log('error', e.message); },
      });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (out += c));
    const code = await Promise.race([
      new Promise<number | null>((r) => child.on('exit', (c) => r(c))),
      sleep(4000).then(() => {
        child.kill('SIGKILL');
        return 'hung';
      }),
    ]);
    expect(out).toContain('end');
    expect(code).toBe(0);
    expect(connections()).toBe(1);
  });
});
