/**
 * Preloaded into the Portkey child only (`node --import bench/llm-overhead/portkey-shim.ts
 * .../start-server.js`), unless the bench runs with --portkey-shim off.
 *
 * Why: @portkey-ai/gateway 1.15.2 declares `@hono/node-server: ^1.3.3`, so npm installs the latest
 * 1.19.x, and with any @hono/node-server after 1.14.2 every streaming chat completion fails with
 * HTTP 500 "Something went wrong" (log: `TypeError: immutable` in ResponseService.updateHeaders):
 * Portkey wraps the upstream fetch Response as `new Response(readable, upstreamResponse)`, the
 * newer node-server keeps the upstream's Headers object, whose guard is `immutable` per the fetch
 * spec, and Portkey then appends its x-portkey-* headers to it. Reported upstream as
 * Portkey-AI/gateway#1389 (fix proposed in #1390: stop mutating those headers).
 *
 * The shim does not touch Portkey's code: it wraps the global fetch so the Responses Portkey gets
 * from its upstream carry a mutable copy of the headers (same body stream, no extra copy of the
 * bytes). Cost: one Headers copy and one Response object per upstream request, microseconds,
 * the same work the proposed upstream fix does.
 */
const NativeResponse = globalThis.Response;
const nativeFetch = globalThis.fetch;

globalThis.fetch = async function fetchWithMutableHeaders(input: Parameters<typeof fetch>[0], init?: RequestInit): Promise<Response> {
  const res = await nativeFetch(input, init);
  return new NativeResponse(res.body, { status: res.status, statusText: res.statusText, headers: new Headers(res.headers) });
};
