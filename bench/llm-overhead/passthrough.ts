/**
 * A minimal LLM pass-through proxy, the floor any Node proxy pays for the extra hop: no auth, no
 * JSON parsing, no inspection, no metrics. It reads the request body, POSTs it to the upstream's
 * chat completions URL with the upstream key, and writes each upstream chunk to the client as it
 * arrives. Two upstream clients: `http` (node:http with a keep-alive Agent) or `fetch` (Node's
 * fetch, what the gateway uses). Forked by breakdown.ts; prints nothing, reports its port over IPC.
 *
 *   argv: <http|fetch> <upstream base URL with /v1> <upstream key>
 */
import http from 'node:http';

const [mode, base, key] = process.argv.slice(2) as [string, string, string];
const target = new URL(`${base}/chat/completions`);
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

async function readAll(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

const server = http.createServer((req, res) => {
  void (async () => {
    const body = await readAll(req);
    const headers = { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` };
    if (mode === 'http') {
      const up = http.request(target, { method: 'POST', agent, headers: { ...headers, 'Content-Length': String(body.length) } }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, { 'Content-Type': ur.headers['content-type'] ?? 'application/json' });
        ur.on('data', (c: Buffer) => res.write(c));
        ur.on('end', () => res.end());
      });
      up.on('error', () => res.destroy());
      up.end(body);
      return;
    }
    const ur = await fetch(target, { method: 'POST', headers, body });
    res.writeHead(ur.status, { 'Content-Type': ur.headers.get('content-type') ?? 'application/json' });
    if (ur.body) for await (const c of ur.body) res.write(c);
    res.end();
  })().catch(() => res.destroy());
});

server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.send?.(typeof addr === 'object' && addr ? addr.port : 0);
});
// The parent went away: do not linger.
process.on('disconnect', () => process.exit(0));
