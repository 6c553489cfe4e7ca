/**
 * The load generator's one request: the same code for every target (the emulator directly, our
 * gateway, Portkey). Node's fetch (undici) and a minimal SSE reader.
 *
 * Streaming: TTFT = request start -> the first chunk with non-empty `delta.content`; total =
 * request start -> `data: [DONE]`. The body is then read to its end so the connection goes back
 * to the pool. A request counts as ok only when the streamed text is exactly the expected answer,
 * the usage chunk came (stream_options.include_usage) and [DONE] came.
 * Non-streaming: total = request start -> the whole JSON body read (TTFT is not defined).
 *
 * Connections: Node's global dispatcher is an undici Agent whose per-origin pool has no
 * connection limit (`connections: null`) and keeps connections alive, so N workers use N
 * connections and reuse them. The `undici` package (for an explicit `new Agent({ connections })`)
 * is not a dependency of this repo, and the default already gives every worker its own socket.
 */
import { perfToMono } from './clock.ts';

export type TargetName = 'direct' | 'gateway' | 'portkey';

export interface Target {
  name: TargetName;
  /** the chat completions URL */
  url: string;
  /** headers of the next request (our gateway's carry the LiveKit JWT minted before the block) */
  headers(): Record<string, string>;
  /** pre-serialized request bodies */
  streamBody: string;
  plainBody: string;
}

export interface Result {
  ok: boolean;
  /** request start on the machine-wide monotonic clock (clock.ts), ms */
  startMono: number;
  /** ms; NaN for non-streaming or failed requests */
  ttftMs: number;
  totalMs: number;
  error?: string;
}

const REQUEST_TIMEOUT_MS = 60_000;

function fail(t0: number, error: string): Result {
  return { ok: false, startMono: perfToMono(t0), ttftMs: NaN, totalMs: NaN, error };
}

interface ChunkShape {
  error?: unknown;
  usage?: { prompt_tokens?: unknown } | null;
  choices?: Array<{ delta?: { content?: unknown } }>;
}

export async function streamOnce(target: Target, expected: string): Promise<Result> {
  const t0 = performance.now();
  let res: Response;
  try {
    res = await fetch(target.url, { method: 'POST', headers: target.headers(), body: target.streamBody, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    return fail(t0, `fetch: ${(err as Error).message}${(err as { cause?: Error }).cause ? ` (${(err as { cause: Error }).cause.message})` : ''}`);
  }
  if (res.status !== 200 || !res.body) {
    const body = await res.text().catch(() => '');
    return fail(t0, `HTTP ${res.status}: ${body.slice(0, 200)}`);
  }
  const decoder = new TextDecoder();
  let buf = '';
  let text = '';
  let ttft = NaN;
  let done = NaN;
  let usage = false;
  let error = '';
  try {
    for await (const bytes of res.body) {
      buf += decoder.decode(bytes, { stream: true });
      let end: number;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, end);
        buf = buf.slice(end + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data:')) continue; // comments (`: keep-alive`), event:, id:
          const data = line.charCodeAt(5) === 0x20 ? line.slice(6) : line.slice(5);
          if (data === '[DONE]') {
            if (Number.isNaN(done)) done = performance.now() - t0;
            continue;
          }
          const chunk = JSON.parse(data) as ChunkShape;
          if (chunk.error) error ||= `stream error: ${data.slice(0, 200)}`;
          if (chunk.usage && typeof chunk.usage.prompt_tokens === 'number') usage = true;
          const content = chunk.choices?.[0]?.delta?.content;
          if (typeof content === 'string' && content.length > 0) {
            if (Number.isNaN(ttft)) ttft = performance.now() - t0;
            text += content;
          }
        }
      }
    }
  } catch (err) {
    return fail(t0, `read: ${(err as Error).message}`);
  }
  if (error) return fail(t0, error);
  if (Number.isNaN(done)) return fail(t0, 'no [DONE]');
  if (!usage) return fail(t0, 'no usage chunk');
  if (text !== expected) return fail(t0, `unexpected text: ${JSON.stringify(text.slice(0, 80))}`);
  return { ok: true, startMono: perfToMono(t0), ttftMs: ttft, totalMs: done };
}

export async function plainOnce(target: Target, expected: string): Promise<Result> {
  const t0 = performance.now();
  let res: Response;
  try {
    res = await fetch(target.url, { method: 'POST', headers: target.headers(), body: target.plainBody, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    return fail(t0, `fetch: ${(err as Error).message}`);
  }
  let body: string;
  try {
    body = await res.text();
  } catch (err) {
    return fail(t0, `read: ${(err as Error).message}`);
  }
  const total = performance.now() - t0;
  if (res.status !== 200) return fail(t0, `HTTP ${res.status}: ${body.slice(0, 200)}`);
  let json: { choices?: Array<{ message?: { content?: unknown } }>; usage?: { prompt_tokens?: unknown } };
  try {
    json = JSON.parse(body) as typeof json;
  } catch {
    return fail(t0, 'body is not JSON');
  }
  if (typeof json.usage?.prompt_tokens !== 'number') return fail(t0, 'no usage');
  const text = json.choices?.[0]?.message?.content;
  if (text !== expected) return fail(t0, `unexpected text: ${JSON.stringify(String(text).slice(0, 80))}`);
  return { ok: true, startMono: perfToMono(t0), ttftMs: NaN, totalMs: total };
}

/** Run `n` calls of `fn` with `width` in flight; resolves with every result and the wall time. */
export async function runPool(n: number, width: number, fn: () => Promise<Result>, stop: () => boolean): Promise<{ results: Result[]; wallMs: number }> {
  const results: Result[] = [];
  let started = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (started < n && !stop()) {
      started++;
      results.push(await fn());
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, n) }, worker));
  return { results, wallMs: performance.now() - t0 };
}
