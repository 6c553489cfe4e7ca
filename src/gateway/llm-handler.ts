/**
 * POST /v1/chat/completions and GET /v1/models (shared/protocol.md section 4).
 *
 * Streaming: the response headers go out as soon as the provider answers; until the first token,
 * an SSE comment every `llm.keepAliveS` keeps byte-timeout clients alive. OpenAI-compatible
 * chunks are forwarded as received (parsed only to be inspected); a translating adapter
 * (Anthropic) produces chunks itself. Whatever the vendor does, the client gets `choices` arrays,
 * a `finish_reason`, a usage chunk when it asked for one (estimated with a tokenizer when the
 * vendor reports none) and `[DONE]`.
 *
 * Retries and fallback (docs/failover.md "LLM"), only while nothing visible (text or a complete
 * tool call) was sent (protocol.md 4.2): a model with one candidate is retried once on connection
 * errors, 5xx and 429 (retryable codes); a model with a configured route (`routes.llm`) moves to
 * the next candidate on any provider failure (including an in-band error before output and, when
 * streaming, no body byte for `firstTokenS`) except a refusal of the request itself (400, 413).
 * Every candidate failed -> one error listing each attempt's cause.
 *
 * A stream (or a non-streamed body after its headers) that goes quiet (`llm.streamIdleS` without a byte) is given up
 * like any failed attempt: another candidate before visible output, else an SSE error event.
 * Keep-alive comments go out only while the provider is not past that limit. A request that
 * ends in an error after producing output is billed like a cancelled one (the vendor's usage,
 * else an estimate). Requests in flight are tracked until their usage is recorded, for shutdown.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { GatewayConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { CostMeter } from '../metering/cost.ts';
import type { GatewayMetrics } from '../metering/metrics.ts';
import { estimatePromptTokens, estimateTokens } from '../metering/tokens.ts';
import type { RequestMeta, UsageSink } from '../metering/usage.ts';
import { ERROR_TABLE, GatewayError } from '../protocol/errors.ts';
import { prepareOpenAiBody } from '../providers/llm/hygiene.ts';
import { LLM_ADAPTERS } from '../providers/registry.ts';
import type { HttpRequestSpec, LlmRequestContext, LlmStreamTranslator, LlmUsage, SseEvent } from '../providers/types.ts';
import { streamPost } from '../providers/upstream/http-upstream.ts';
import { SseParser } from '../providers/upstream/sse.ts';
import { sendError, sendJson } from './http.ts';
import type { Limits } from './limits.ts';
import { healthOf } from './health.ts';
import { allCandidatesFailed, llmPlan, type AttemptFailure, type LlmPlan, type LlmRoute } from './routing.ts';
import { SseWriter } from './sse.ts';

export interface LlmDeps {
  cfg: GatewayConfig;
  metrics: GatewayMetrics;
  usage: UsageSink;
  log: Logger;
  /** Per-key request/token limits and their quota headers (docs/limits.md). */
  limits?: Limits;
  /** Prices the tokens of each request when it ends (docs/pricing.md). */
  cost: CostMeter;
}

type Json = Record<string, unknown>;

/** Most completion text kept for a token estimate when the vendor reports no usage. */
const MAX_ESTIMATE_TEXT = 1024 * 1024;
/** Largest non-streaming answer accepted from a provider. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > max) throw new GatewayError('payload_too_large', `request body exceeds ${max} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw new GatewayError('payload_too_large', `request body exceeds ${max} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

function toUsage(u: unknown): LlmUsage | null {
  if (!isObject(u)) return null;
  const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const details = isObject(u.prompt_tokens_details) ? u.prompt_tokens_details : {};
  const prompt = num(u.prompt_tokens);
  const completion = num(u.completion_tokens);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: num(u.total_tokens) || prompt + completion, cached_tokens: num(details.cached_tokens) };
}

/** Watches the chunks going to the client: finish, usage, visible output, text for estimates. */
class ChunkInspector {
  finished = false;
  toolCalls = false;
  visible = false;
  firstVisibleAt = 0;
  usage: LlmUsage | null = null;
  text = '';
  id = '';
  created = 0;
  upstreamModel = '';

  /** Inspect one chunk; returns what to forward ('' to drop it). */
  inspect(data: string, keepUsageChunk: boolean): string {
    let obj: unknown;
    try {
      obj = JSON.parse(data);
    } catch {
      return '';
    }
    if (!isObject(obj)) return '';
    if (typeof obj.id === 'string' && !this.id) this.id = obj.id;
    if (typeof obj.created === 'number' && !this.created) this.created = obj.created;
    if (typeof obj.model === 'string' && !this.upstreamModel) this.upstreamModel = obj.model;
    let changed = false;
    if (!Array.isArray(obj.choices)) {
      obj.choices = [];
      changed = true;
    }
    const usage = toUsage(obj.usage);
    if (usage) this.usage = usage;
    for (const c of obj.choices as unknown[]) {
      if (!isObject(c)) continue;
      const delta = isObject(c.delta) ? c.delta : isObject(c.message) ? c.message : null;
      if (delta) {
        if (typeof delta.content === 'string' && delta.content.length > 0) {
          this.markVisible();
          if (this.text.length < MAX_ESTIMATE_TEXT) this.text += delta.content;
        }
        if (Array.isArray(delta.tool_calls) && delta.tool_calls.length > 0) {
          this.toolCalls = true;
          if (this.text.length < MAX_ESTIMATE_TEXT) this.text += JSON.stringify(delta.tool_calls);
        }
      }
      if (c.finish_reason != null) {
        this.finished = true;
        // A tool call is complete (visible) once its choice finishes.
        if (this.toolCalls) this.markVisible();
      }
    }
    if ((obj.choices as unknown[]).length === 0 && usage && !keepUsageChunk) return '';
    return changed ? JSON.stringify(obj) : data;
  }

  private markVisible(): void {
    if (!this.visible) {
      this.visible = true;
      this.firstVisibleAt = performance.now();
    }
  }
}

export interface LlmHandler {
  chatCompletions(req: IncomingMessage, res: ServerResponse, apiKey: string, meta: RequestMeta): Promise<void>;
  models(res: ServerResponse): void;
  /** Requests whose usage is not recorded yet. */
  readonly inFlight: number;
  /** Resolves true once every request in flight has recorded its usage, false when `timeoutMs` passes first. */
  drain(timeoutMs: number): Promise<boolean>;
}

export function createLlmHandler(deps: LlmDeps): LlmHandler {
  const { cfg, metrics, log } = deps;
  /** One promise per request, resolved once its usage is recorded (or it ended without any). */
  const inFlight = new Set<Promise<void>>();

  async function drain(timeoutMs: number): Promise<boolean> {
    if (inFlight.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const all = (async (): Promise<true> => {
      while (inFlight.size > 0) await Promise.all([...inFlight]);
      return true;
    })();
    try {
      return await Promise.race([all, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  function models(res: ServerResponse): void {
    const data: Json[] = [];
    for (const a of LLM_ADAPTERS) {
      if (!cfg.endpoints.has(a.provider)) continue;
      for (const m of a.models ?? []) data.push({ id: `${a.provider}/${m}`, object: 'model', created: 0, owned_by: a.provider });
    }
    for (const [id, u] of cfg.llmUpstreams) {
      for (const m of u.models) data.push({ id: `${id}/${m}`, object: 'model', created: 0, owned_by: id });
    }
    sendJson(res, 200, { object: 'list', data });
  }

  async function chatCompletions(req: IncomingMessage, res: ServerResponse, apiKey: string, meta: RequestMeta): Promise<void> {
    const track: Tracking = { recorded: () => {}, started: false };
    const recorded = new Promise<void>((resolve) => {
      track.recorded = resolve;
    });
    inFlight.add(recorded);
    void recorded.then(() => inFlight.delete(recorded));
    try {
      await serve(req, res, apiKey, meta, track);
    } finally {
      // Refused before any attempt: nothing will be recorded.
      if (!track.started) track.recorded();
    }
  }

  async function serve(req: IncomingMessage, res: ServerResponse, apiKey: string, meta: RequestMeta, track: Tracking): Promise<void> {
    const startedAt = new Date();
    const t0 = performance.now();
    if (deps.limits) {
      // Quota headers go on every answer to this request, the 429 included (protocol.md 4.2).
      const admission = deps.limits.admitLlm(apiKey);
      for (const [name, value] of Object.entries(admission.headers)) res.setHeader(name, value);
      if (admission.error) {
        log.info({ api_key: apiKey, category: admission.error.fields?.category }, 'llm request rejected: limit');
        sendError(res, admission.error);
        return;
      }
    }
    let raw: Buffer;
    try {
      raw = await readBody(req, cfg.file.llm.maxBodyBytes);
    } catch (err) {
      sendError(res, err instanceof GatewayError ? err : new GatewayError('bad_request', 'could not read the request body'));
      return;
    }
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      sendError(res, new GatewayError('bad_request', 'request body is not valid JSON'));
      return;
    }
    if (!isObject(body)) {
      sendError(res, new GatewayError('bad_request', 'request body must be a JSON object'));
      return;
    }
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      sendError(res, new GatewayError('bad_request', '"messages" must be a non-empty array', { param: 'messages' }));
      return;
    }
    let plan: LlmPlan;
    try {
      plan = llmPlan(body.model, cfg);
    } catch (err) {
      const e = err instanceof GatewayError ? err : new GatewayError('internal', 'internal error');
      metrics.requests.inc({ modality: 'llm', provider: 'none', model: 'none', outcome: e.code });
      sendError(res, e);
      return;
    }
    if (plan.skipped.length > 0) log.warn({ skipped: plan.skipped }, 'llm candidates left out');
    const stream = body.stream === true;
    const id = `chatcmpl-${randomBytes(12).toString('base64url')}`;
    const created = Math.floor(Date.now() / 1000);
    const reqBody: Json = body;

    /** The upstream request for one candidate; throws GatewayError('bad_request') for a request it cannot take. */
    const prepare = (r: LlmRoute): Prepared => {
      const c: LlmRequestContext = { model: r.model, label: r.label, stream };
      if (r.adapter.kind === 'openai') {
        const prepared = prepareOpenAiBody(reqBody, r.adapter, r.model);
        const headers: Record<string, string> = { 'Content-Type': 'application/json', Accept: stream ? 'text/event-stream' : 'application/json' };
        if (r.endpoint.apiKey) headers.Authorization = `Bearer ${r.endpoint.apiKey}`;
        return {
          ctx: c,
          spec: { url: `${r.endpoint.baseUrl.replace(/\/+$/, '')}${r.adapter.chatPath}`, headers, body: JSON.stringify(prepared.body) },
          clientWantsUsage: prepared.clientWantsUsage,
          newTranslator: null,
        };
      }
      const adapter = r.adapter;
      return {
        ctx: c,
        spec: adapter.request(reqBody, c, r.endpoint),
        clientWantsUsage: isObject(reqBody.stream_options) && reqBody.stream_options.include_usage === true,
        newTranslator: () => adapter.createStreamTranslator(c, id, created),
      };
    };

    const health = healthOf(cfg);
    /** Candidates not tried yet (the first is taken below), attempts that failed, candidates skipped. */
    const pending = [...plan.candidates];
    const failures: AttemptFailure[] = [];
    const skipped: string[] = [];
    /**
     * Take the next candidate to try: open circuits are skipped (counted); when every remaining
     * one is open, the first of them is tried anyway.
     */
    const nextCandidate = (): { route: LlmRoute; prepared: Prepared } | null => {
      while (pending.length > 0) {
        const open = pending.findIndex((c) => health.allow(c.provider));
        for (const c of pending.splice(0, open < 0 ? 0 : open)) {
          skipped.push(c.label);
          metrics.candidatesSkipped.inc({ modality: 'llm', provider: c.provider, reason: 'circuit_open' });
        }
        const r = pending.shift() as LlmRoute;
        try {
          return { route: r, prepared: prepare(r) };
        } catch (err) {
          const e = err instanceof GatewayError ? err : new GatewayError('bad_request', 'invalid request');
          // The first candidate refusing the request is the client's problem; a later one is just not usable.
          if (failures.length === 0 && skipped.length === 0) throw e;
          failures.push({ label: r.label, error: e });
        }
      }
      return null;
    };
    let first: { route: LlmRoute; prepared: Prepared } | null;
    try {
      first = nextCandidate();
    } catch (err) {
      sendError(res, err as GatewayError);
      return;
    }
    if (first === null) {
      sendError(res, allCandidatesFailed('LLM', failures, skipped));
      return;
    }
    let route = first.route;
    let { ctx, spec, clientWantsUsage, newTranslator } = first.prepared;

    let labels = { provider: route.provider, model: route.metricModel };
    const sse = new SseWriter(res);
    const inspector = new ChunkInspector();
    let abort: (() => void) | null = null;
    let done = false;
    /** An ending is under way (its usage estimate is being computed): nothing else may end the request. */
    let finishing = false;
    /** Streaming: when the current attempt last sent a body byte (0: none yet, `firstTokenS` watches the wait for it). */
    let lastUpstreamAt = 0;
    /** The current attempt's number (1, 2, ...), for the stall check of the keep-alive timer. */
    let current = 1;
    const idleMs = cfg.file.llm.streamIdleS * 1000;
    let outcome = 'ok';
    let keepAlive: NodeJS.Timeout | null = null;
    const timeoutMs = Math.round(cfg.file.llm.headersTimeoutS * 1000) * (stream ? 1 : 10);

    const finish = (result: string, usage: LlmUsage | null, estimated: boolean, errorCode?: number): void => {
      if (done) return;
      done = true;
      outcome = result;
      if (keepAlive) clearInterval(keepAlive);
      clearFirstEvent();
      if (result === 'ok') health.success(route.provider);
      metrics.requests.inc({ modality: 'llm', ...labels, outcome });
      if (inspector.firstVisibleAt > 0) metrics.llmTtftSeconds.observe(labels, (inspector.firstVisibleAt - t0) / 1000);
      if (usage) {
        deps.limits?.recordLlmTokens(apiKey, usage.total_tokens);
        const l = { ...labels, api_key: apiKey, estimated: String(estimated) };
        metrics.llmTokens.inc({ ...l, kind: 'prompt' }, usage.prompt_tokens);
        metrics.llmTokens.inc({ ...l, kind: 'completion' }, usage.completion_tokens);
        if (usage.cached_tokens > 0) metrics.llmTokens.inc({ ...l, kind: 'cached' }, usage.cached_tokens);
      }
      const costUsd = usage ? deps.cost.llm(route.provider, route.model, apiKey, usage, labels.model) : 0;
      deps.usage.record({
        modality: 'llm',
        sessionId: id,
        apiKey,
        provider: route.provider,
        model: route.model,
        ...(failures.length > 0 ? { fallbackChain: [...failures.map((f) => f.label), route.label] } : {}),
        startedAt,
        endedAt: new Date(),
        audioSeconds: 0,
        outcome,
        ...(usage ? { tokens: { prompt: usage.prompt_tokens, completion: usage.completion_tokens, cached: usage.cached_tokens, estimated } } : {}),
        costUsd,
        ...(errorCode !== undefined ? { errorCode } : {}),
        meta,
      });
      track.recorded();
    };

    /**
     * End with what was produced so far: the vendor's usage, else an estimate when anything was
     * produced (a request cut off after output is not free) or `estimateAlways`, else no tokens.
     */
    const finishWithProduced = (result: string, errorCode?: number, estimateAlways = false): void => {
      if (done || finishing) return;
      finishing = true;
      if (inspector.usage || !(estimateAlways || inspector.visible || inspector.toolCalls)) {
        finish(result, inspector.usage, false, errorCode);
        return;
      }
      void usageOrEstimate().then(
        ({ usage, estimated }) => finish(result, usage, estimated, errorCode),
        () => finish(result, null, false, errorCode),
      );
    };

    res.on('close', () => {
      if (done || finishing) return;
      abort?.();
      // The client went away: bill what the vendor reported so far, else estimate what was produced.
      finishWithProduced('cancelled', undefined, true);
    });

    const usageOrEstimate = async (): Promise<{ usage: LlmUsage; estimated: boolean }> => {
      if (inspector.usage) return { usage: inspector.usage, estimated: false };
      const prompt = await estimatePromptTokens(body as Json);
      const completion = await estimateTokens(inspector.text);
      return { usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, cached_tokens: 0 }, estimated: true };
    };

    const fail = (err: GatewayError): void => {
      if (done || finishing) return;
      log.warn({ model: route.label, code: err.status, err: err.message }, 'llm request failed');
      if (!sse.isStarted) {
        if (!res.headersSent && !res.destroyed) sendError(res, err);
      } else {
        sse.data(JSON.stringify({ error: { message: err.message, type: ERROR_TABLE[err.code].type, code: err.status } }));
        sse.end();
      }
      finishWithProduced(err.code, err.status);
    };

    const endStream = async (translator: LlmStreamTranslator | null): Promise<void> => {
      if (done) return;
      if (translator) for (const s of translator.end()) forward(s);
      if (translator?.error) {
        fail(translator.error);
        return;
      }
      if (!inspector.finished && (inspector.visible || inspector.toolCalls)) {
        forward(
          JSON.stringify({
            id: inspector.id || id,
            object: 'chat.completion.chunk',
            created: inspector.created || created,
            model: inspector.upstreamModel || route.label,
            choices: [{ index: 0, delta: {}, finish_reason: inspector.toolCalls ? 'tool_calls' : 'stop' }],
          }),
        );
      }
      const { usage, estimated } = await usageOrEstimate();
      if (estimated && clientWantsUsage && sse.isOpen) {
        sse.data(
          JSON.stringify({
            id: inspector.id || id,
            object: 'chat.completion.chunk',
            created: inspector.created || created,
            model: inspector.upstreamModel || route.label,
            choices: [],
            usage: { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens, total_tokens: usage.total_tokens },
          }),
        );
      }
      sse.done();
      finish('ok', usage, estimated);
    };

    const forward = (data: string): void => {
      const out = inspector.inspect(data, clientWantsUsage);
      if (out) sse.data(out);
    };

    const attempt = (n: number): void => {
      current = n;
      lastUpstreamAt = 0;
      const parser = new SseParser();
      const translator = newTranslator ? newTranslator() : null;
      const chunks: Buffer[] = [];
      let size = 0;
      let sawDone = false;
      let sawData = false;
      // Streaming: an upstream that sends nothing at all (no headers, or no first event) is given up.
      const firstEvent =
        stream && plan.firstEventMs > 0
          ? setTimeout(() => {
              if (done || sawData) return;
              abort?.();
              retryOrFail(new GatewayError('provider_timeout', `${route.provider}: no output from provider after ${plan.firstEventMs / 1000} s`), 'no_result', n);
            }, plan.firstEventMs)
          : undefined;
      firstEvent?.unref();
      clearFirstEvent = () => clearTimeout(firstEvent);
      abort = streamPost(
        spec,
        { timeoutMs, label: route.provider },
        {
          onResponse: () => {
            // Without a first-token limit, the stall limit also covers the wait for the first byte
            // (a non-streamed body too: its headers came, its body must follow).
            if (plan.firstEventMs === 0 || !stream) lastUpstreamAt = Date.now();
            if (keepAlive !== null) return;
            if (stream && !sse.isStarted) sse.start();
            const every = stream ? cfg.file.llm.keepAliveS * 1000 : idleMs;
            keepAlive = setInterval(() => {
              const now = Date.now();
              if (lastUpstreamAt > 0 && now - lastUpstreamAt >= idleMs) {
                // The provider went quiet mid-stream: keep-alives would hide that from the client forever.
                if (done || finishing) return;
                abort?.();
                retryOrFail(new GatewayError('provider_timeout', `${route.provider}: provider stream stalled for ${idleMs / 1000} s`), 'dead_air', current);
                return;
              }
              if (stream && !inspector.visible && now - sse.lastWriteAt >= every) sse.comment('keep-alive');
            }, Math.min(every, idleMs, 1000));
            keepAlive.unref();
          },
          onData: (chunk) => {
            if (done) return;
            lastUpstreamAt = Date.now();
            if (!sawData) {
              sawData = true;
              clearTimeout(firstEvent);
            }
            if (!stream) {
              size += chunk.length;
              if (size > MAX_RESPONSE_BYTES) {
                abort?.();
                fail(new GatewayError('provider_error', `${route.provider}: response too large`));
                return;
              }
              chunks.push(chunk);
              return;
            }
            let events: SseEvent[];
            try {
              events = parser.push(chunk);
            } catch (err) {
              abort?.();
              fail(new GatewayError('provider_error', `${route.provider}: ${(err as Error).message}`));
              return;
            }
            for (const ev of events) {
              if (done) return;
              if (translator) {
                for (const s of translator.push(ev)) forward(s);
                if (translator.error) {
                  abort?.();
                  retryOrFail(translator.error, 'error', n);
                  return;
                }
                continue;
              }
              if (sawDone) continue;
              if (ev.data === '[DONE]') {
                sawDone = true;
                continue;
              }
              if (ev.data.includes('"error"')) {
                const parsed = safeParse(ev.data);
                if (isObject(parsed) && parsed.error !== undefined && parsed.error !== null) {
                  abort?.();
                  // Before any visible output, another candidate may still answer.
                  if (!inspector.visible && pending.length > 0) {
                    retryOrFail(new GatewayError('provider_error', `${route.provider}: ${inbandMessage(parsed.error)}`), 'error', n);
                    return;
                  }
                  // A vendor's mid-stream error goes to the client as is (the SDK raises it).
                  sse.data(ev.data);
                  sse.end();
                  finishWithProduced('provider_error', 502);
                  return;
                }
              }
              forward(ev.data);
            }
          },
          onEnd: () => {
            if (done) return;
            clearTimeout(firstEvent);
            if (!stream) {
              void finishNonStream(Buffer.concat(chunks));
              return;
            }
            for (const ev of parser.end()) if (translator) for (const s of translator.push(ev)) forward(s);
            void endStream(translator);
          },
          onError: (err) => {
            if (done) return;
            retryOrFail(err, sawData ? 'closed' : 'connect_failed', n);
          },
        },
      );
    };

    /**
     * An attempt failed. After visible output: the error goes to the client. Before it: a single
     * candidate is retried once (retryable errors); with a route, the next candidate takes over
     * (except for a refusal of the request itself); none left -> every attempt's cause.
     */
    const retryOrFail = (err: GatewayError, reason: string, n: number): void => {
      if (done || finishing) return;
      clearFirstEvent();
      // A refusal of the request itself is not the provider's failure, and no other candidate would take it.
      const clientError = err.code === 'bad_request' || err.code === 'payload_too_large';
      if (!clientError && err.code !== 'not_found') health.failure(route.provider, err.status);
      metrics.providerErrors.inc({ provider: route.provider, code: String(err.status) });
      if (inspector.visible) {
        fail(err);
        return;
      }
      if (plan.candidates.length === 1) {
        if (n === 1 && err.retryable) {
          log.info({ model: route.label, code: err.status }, 'llm attempt failed before output: retrying once');
          attempt(2);
          return;
        }
        fail(err);
        return;
      }
      failures.push({ label: route.label, error: err });
      const from = route;
      const next = clientError ? null : nextCandidate();
      if (next === null) {
        fail(clientError ? err : allCandidatesFailed('LLM', failures, skipped));
        return;
      }
      route = next.route;
      ({ ctx, spec, clientWantsUsage, newTranslator } = next.prepared);
      labels = { provider: route.provider, model: route.metricModel };
      metrics.fallbacks.inc({ modality: 'llm', from: from.provider, to: route.provider, reason });
      log.warn({ from: from.label, to: route.label, reason, code: err.status, err: err.message }, 'llm fallback');
      attempt(n + 1);
    };
    let clearFirstEvent = (): void => {};

    const finishNonStream = async (buf: Buffer): Promise<void> => {
      const parsed = safeParse(buf.toString('utf8'));
      if (!isObject(parsed)) {
        fail(new GatewayError('provider_error', `${route.provider}: provider answer is not JSON`));
        return;
      }
      let out: Json = parsed;
      let usage: LlmUsage | null;
      if (route.adapter.kind === 'translate') {
        const t = route.adapter.translateResponse(parsed, ctx, id, created);
        out = t.body;
        usage = t.usage;
      } else {
        usage = toUsage(parsed.usage);
        if (!Array.isArray(parsed.choices)) out = { ...parsed, choices: [] };
      }
      inspector.inspect(JSON.stringify({ choices: out.choices }), false);
      let estimated = false;
      if (!usage) {
        const e = await usageOrEstimate();
        usage = e.usage;
        estimated = true;
      }
      if (!res.destroyed) {
        if (out === parsed) {
          res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': buf.length });
          res.end(buf);
        } else {
          sendJson(res, 200, out);
        }
      }
      finish('ok', usage, estimated);
    };

    attempt(1);
    track.started = true;
  }

  return {
    chatCompletions,
    models,
    get inFlight() {
      return inFlight.size;
    },
    drain,
  };
}

/** One request's usage record, awaited by shutdown (`drain`). */
interface Tracking {
  /** Called once its usage is recorded (idempotent). */
  recorded: () => void;
  /** An attempt was started: `finish` will call `recorded`. */
  started: boolean;
}

/** The upstream request for one candidate (llm-handler `prepare`). */
interface Prepared {
  ctx: LlmRequestContext;
  spec: HttpRequestSpec;
  clientWantsUsage: boolean;
  newTranslator: (() => LlmStreamTranslator) | null;
}

/** A short message from a vendor's in-band `error` value (string or `{message}`). */
function inbandMessage(e: unknown): string {
  if (typeof e === 'string') return e.slice(0, 300);
  if (isObject(e) && typeof e.message === 'string') return e.message.slice(0, 300);
  return 'provider reported an error';
}

function safeParse(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}
