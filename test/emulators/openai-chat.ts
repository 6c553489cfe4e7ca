/**
 * Emulator of OpenAI's Chat Completions endpoint `POST /v1/chat/completions` (streaming SSE and
 * plain JSON) and `GET /v1/models`: https://platform.openai.com/docs/api-reference/chat
 * It can also pose as an OpenAI-compatible vendor (Gemini, Groq, DeepSeek, Mistral, vLLM-like):
 * other base paths and the documented quirks of §6.5, chosen with `vendor` / `quirks`.
 *
 * Written from ../../../shared/providers.md §6.1 (chunk shapes, tool-call deltas, usage chunk,
 * obfuscation, mid-stream errors, statuses, headers), §6.5 (compatible vendors) and §9 "OpenAI"
 * (timing), ../../../shared/protocol.md §4 (what the LiveKit client sends and expects), the SDK
 * types of openai@6.49.0 (`resources/chat/completions/completions.ts`, `core/streaming.ts`,
 * `lib/ChatCompletionStream.ts`) and recorded real streams found in public test fixtures; never
 * from the gateway adapter. Shared OpenAI helpers (errors, auth, body) come from ./openai-speech.ts.
 *
 * Facts relied on:
 * - SSE: `Content-Type: text/event-stream; charset=utf-8`, events `data: <json>\n\n`, terminator
 *   `data: [DONE]\n\n`; comment lines (`: keep-alive`) are ignored by clients. The SDK throws an
 *   APIError (status undefined) on `data: {"error":{...}}`.
 * - Chunk: {id, object:"chat.completion.chunk", created, model, service_tier, system_fingerprint,
 *   choices:[{index, delta, logprobs:null, finish_reason}], usage?, obfuscation?}. First chunk of a
 *   text answer: delta {role:"assistant", content:"", refusal:null}; an answer that starts with a
 *   tool call carries the role in that delta instead: {role, content:null, tool_calls:[{index, id,
 *   type:"function", function:{name, arguments:""}}], refusal:null}; later deltas carry only
 *   {index, function:{arguments:"<fragment>"}}; a parallel call gets a new index and id; then a
 *   chunk with delta {} and finish_reason; with stream_options.include_usage a last chunk with
 *   `choices: []` and usage (every other chunk then has `"usage": null`); then [DONE].
 * - `obfuscation` (random padding) is on every chunk unless stream_options.include_obfuscation is
 *   false (recorded streams show it on the usage chunk too, and it can be "").
 * - chat.completion: {id, object, created, model, choices:[{index, message:{role, content,
 *   refusal:null, annotations:[]} (+ tool_calls), logprobs:null, finish_reason}], usage,
 *   service_tier, system_fingerprint}.
 * - Errors `{"error":{message,type,param,code}}` + x-request-id; 400 "you must provide a model
 *   parameter"; "Missing required parameter: 'messages'." (missing_required_parameter); "Invalid
 *   'messages': empty array. ..." (empty_array); "[] is too short - 'tools'" (param/code null);
 *   "Invalid 'tools': array too long. ..." (array_above_max_length); "Unrecognized request argument
 *   supplied: x"; "Invalid parameter: messages with role 'tool' must be a response to a preceeding
 *   message with 'tool_calls'." (sic); 404 model_not_found; 429 rate_limit_exceeded (type
 *   requests|tokens) with retry-after; 500/503 server_error.
 * - Headers on answers: x-request-id, openai-version, openai-processing-ms, openai-project,
 *   x-ratelimit-{limit,remaining,reset}-{requests,tokens} (reset like "120ms", "8.64s", "6m0s": the
 *   time until the bucket is full again).
 * - Groq: x_groq {id} on the first chunk and {id, usage:{queue_time, prompt_tokens, prompt_time,
 *   completion_tokens, completion_time, total_tokens, total_time}} on the finish chunk.
 *
 * Deterministic rules (the default responder; scripts and a responder function override it):
 * - Last message role "tool": text "Tool <name> returned: <content>." for each trailing tool
 *   message (name found via the assistant tool_calls with that id), joined by spaces.
 * - Else, with tools, the last user text naming "call <tool>" (a function tool of the request)
 *   calls it; a JSON object written after the name is the arguments (else "{}"); several
 *   "call x" = parallel calls (only the first with parallel_tool_calls:false). tool_choice "none"
 *   never calls; "required" calls the first tool when the text names none; a named tool_choice
 *   calls that tool and then finishes with "stop" (as OpenAI does for a forced function).
 * - Else text "You said: <last user text>" ("Hello! How can I help you today?" when there is none).
 *   Content parts: the text parts joined by spaces.
 * - Text is streamed in word pieces (/\s*\S+/, the leading space kept, trailing space on the last
 *   piece); tool arguments in token-ish fragments (`{"`, `city`, `":"`, `Paris`, `"}`).
 * - Usage: prompt_tokens = max(1, ceil(C / 4)), C = code points of every message text (string
 *   content, text parts, refusal, tool_call names + arguments) + of JSON.stringify(tools) when
 *   present (`countPromptTokens`); completion_tokens = streamed pieces (one per text piece, one per
 *   tool-call header delta, one per argument fragment); cached_tokens = `cachedTokens` (0), capped
 *   at prompt_tokens. max_completion_tokens / max_tokens cut the pieces, finish_reason "length".
 * - Timing: headers at once (after responseDelayMs); the first chunk (role chunk and first piece
 *   together) `firstTokenDelayMs` (10; realistic 400) later; each further piece
 *   `interTokenDelayMs` (2; realistic 20) after the previous one (absolute schedule); finish, usage
 *   and [DONE] right after the last piece. Non-stream answers after the same total time.
 * - Checks, in order: route (404 Invalid URL / 405), injected fault status, Bearer auth (401),
 *   JSON (400), body (400, first problem only), model (404 when `models` is a list), rate limits
 *   (429). Scripts are consumed only by requests that pass every check; faults by every request.
 *
 * UNCERTAIN choices (not settled by the sources we have):
 * - Unknown keys inside messages/tools: "Unknown parameter: 'messages[1].extra_content'."
 *   (unknown_parameter; the newer style); top level: "Unrecognized request argument supplied: x"
 *   (the classic style). Only with `quirks.strict` (OpenAI); other vendors accept them.
 * - "The 'stream_options' parameter is only allowed when 'stream' is enabled."; tool_choice /
 *   parallel_tool_calls without tools -> "Invalid value for '<p>': '<p>' is only allowed when
 *   'tools' are specified."; n != 1 is refused (an emulator limit, not the API's).
 * - Obfuscation length pads the serialized choices to a multiple of 16 bytes (0-15 random chars).
 * - Rate limits: one bucket per key and dimension, refilled continuously at limit/60 s; a request
 *   costs 1 request and prompt_tokens + (max_completion_tokens ?? max_tokens ?? 0) tokens; only
 *   accepted requests consume. Defaults 5,000 RPM / 4,000,000 TPM.
 * - Vendor presets (§6.5, mostly UNCERTAIN): groq (/openai/v1, x_groq, whole tool calls), gemini
 *   (/v1beta/openai, role on the first content delta, whole tool calls,
 *   extra_content.google.thought_signature on tool calls), deepseek ('' and /v1), mistral (usage
 *   on the finish chunk, whole tool calls), generic (vLLM/Ollama-like). None sends obfuscation.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { startEmulatorServer, type EmulatorServer, type TlsOptions } from './base.ts';
import {
  BodyReadError,
  DEFAULT_OPENAI_API_KEY,
  OPENAI_INVALID_JSON_MESSAGE,
  OPENAI_VERSION_HEADER,
  checkBearerAuth,
  openAiError,
  openAiErrorBody,
  openAiRequestId,
  openAiRouteError,
  readRequestBody,
  sendOpenAiError,
  type OpenAiErrorObject,
  type OpenAiErrorResponse,
} from './openai-speech.ts';

// =============================================================================================
// Constants, vendor quirks

export const CHAT_COMPLETIONS_SUFFIX = '/chat/completions';
export const MODELS_SUFFIX = '/models';

/** What `GET /v1/models` lists when no model list is configured (protocol.md §4.3, OpenAI part). */
export const DEFAULT_CHAT_MODELS: readonly string[] = [
  'gpt-5.5', 'gpt-5.4', 'gpt-5.4-mini', 'gpt-5.4-nano', 'gpt-5.2', 'gpt-5.1', 'gpt-5', 'gpt-5-mini', 'gpt-5-nano',
  'gpt-4.1', 'gpt-4.1-mini', 'gpt-4.1-nano', 'gpt-4o', 'gpt-4o-mini', 'gpt-oss-120b',
];

/** Timing a benchmark should use to look like the real service (§9: TTFT 200-800 ms, 10-30 ms per token). */
export const OPENAI_CHAT_REALISTIC_TIMING = { firstTokenDelayMs: 400, interTokenDelayMs: 20 } as const;

export const KEEP_ALIVE_COMMENT = ': keep-alive\n\n';
export const DONE_EVENT = 'data: [DONE]\n\n';
export const MAX_TOOLS = 128;

export type ChatVendor = 'openai' | 'groq' | 'gemini' | 'deepseek' | 'mistral' | 'generic';

export interface ChatQuirks {
  /** path prefixes serving `/chat/completions` and `/models` (first one = `emu.baseUrl`) */
  basePaths: string[];
  /** `obfuscation` on every stream chunk unless include_obfuscation:false (OpenAI) */
  obfuscation: boolean;
  /**
   * The usage chunk: 'on-request' = `choices: []` chunk iff stream_options.include_usage (OpenAI);
   * 'never' = the vendor omits it; 'always' = sent even unasked; 'finish-chunk' = usage rides on
   * the finish chunk when asked (Mistral-like).
   */
  usageChunk: 'on-request' | 'never' | 'always' | 'finish-chunk';
  /** `"usage": null` on every other chunk when a usage chunk is coming (OpenAI) */
  usageNullOnChunks: boolean;
  /**
   * 'separate' = a first chunk {role, content:""} (OpenAI; a leading tool call carries the role
   * itself); 'inline' = role on the first content/tool delta; 'none' = no role at all.
   */
  role: 'separate' | 'inline' | 'none';
  /** 'fragmented' = header delta then argument fragments (OpenAI); 'whole' = one delta per call */
  toolCalls: 'fragmented' | 'whole';
  /** x_groq {id} on the first chunk, {id, usage} on the finish chunk */
  xGroq: boolean;
  /** extra_content.google.thought_signature on every tool call (Gemini compat layer) */
  thoughtSignatures: boolean;
  /** OpenAI's strictness: unknown body/message keys and broken tool sequences are 400 */
  strict: boolean;
  /** refusal:null, logprobs:null, service_tier, system_fingerprint, annotations (OpenAI shapes) */
  openAiFields: boolean;
}

const OPENAI_QUIRKS: ChatQuirks = {
  basePaths: ['/v1'],
  obfuscation: true,
  usageChunk: 'on-request',
  usageNullOnChunks: true,
  role: 'separate',
  toolCalls: 'fragmented',
  xGroq: false,
  thoughtSignatures: false,
  strict: true,
  openAiFields: true,
};

const COMPATIBLE: ChatQuirks = { ...OPENAI_QUIRKS, obfuscation: false, usageNullOnChunks: false, strict: false, openAiFields: false };

export const CHAT_VENDOR_QUIRKS: Record<ChatVendor, ChatQuirks> = {
  openai: OPENAI_QUIRKS,
  groq: { ...COMPATIBLE, basePaths: ['/openai/v1'], xGroq: true, toolCalls: 'whole' },
  gemini: { ...COMPATIBLE, basePaths: ['/v1beta/openai'], role: 'inline', toolCalls: 'whole', thoughtSignatures: true },
  deepseek: { ...COMPATIBLE, basePaths: ['', '/v1'] },
  mistral: { ...COMPATIBLE, basePaths: ['/v1'], usageChunk: 'finish-chunk', toolCalls: 'whole' },
  generic: { ...COMPATIBLE, basePaths: ['/v1'] },
};

// =============================================================================================
// Types: requests, replies, usage, faults, records

export type ChatFinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'function_call';

export interface ChatToolCallIn {
  id: string;
  type: string;
  function?: { name: string; arguments: string };
  [k: string]: unknown;
}

/** A request message as received (loosely typed; validated by parseChatBody). */
export interface ChatMessage {
  role: string;
  content?: unknown;
  name?: string;
  tool_calls?: ChatToolCallIn[];
  tool_call_id?: string;
  refusal?: string | null;
  [k: string]: unknown;
}

export interface ChatToolDef {
  type: string;
  function?: { name: string; description?: string; parameters?: unknown; strict?: boolean };
  [k: string]: unknown;
}

/** A validated request. */
export interface ChatParams {
  model: string;
  messages: ChatMessage[];
  /** null when absent */
  tools: ChatToolDef[] | null;
  toolChoice: unknown;
  parallelToolCalls: boolean;
  stream: boolean;
  includeUsage: boolean;
  includeObfuscation: boolean;
  /** max_completion_tokens ?? max_tokens */
  maxTokens: number | null;
  /** top-level keys the emulator does not know (accepted when not strict) */
  unknown: string[];
}

export interface ChatToolCallSpec {
  name: string;
  /** a string is sent as is; an object is JSON.stringify'd */
  arguments: string | Record<string, unknown>;
  /** default `call_` + 24 random characters */
  id?: string;
  /** argument split: token-ish (default), a fixed size, exact pieces (must join to the arguments), or 'whole' */
  fragments?: number | string[] | 'whole';
  /** extra keys on the first delta of this call (e.g. extra_content) */
  extra?: Record<string, unknown>;
}

/** One step of a scripted stream, in order. */
export type ChatStep =
  /** one content delta, verbatim (one completion token) */
  | { text: string }
  /** a tool call: header delta + argument fragments */
  | { toolCall: ChatToolCallSpec }
  /** an SSE comment line `: <comment>` (no chunk) */
  | { comment: string }
  /** wait this long before the next step */
  | { delayMs: number }
  /** `data: {"error":{...}}` then the body ends (no finish, usage or [DONE]) */
  | { error: Partial<OpenAiErrorObject> }
  /** bytes written as is */
  | { raw: string }
  /** destroy the socket (no [DONE], no chunked terminator) */
  | { drop: true }
  /** send nothing more; the response stays open */
  | { stall: true };

export interface ChatUsageOverride {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
  cached_tokens?: number;
  reasoning_tokens?: number;
}

/** What the emulator answers to one request (script entry or responder result). */
export interface ChatReply {
  /** a string is split into word pieces; an array is the exact pieces */
  text?: string | string[];
  toolCalls?: ChatToolCallSpec[];
  /** exact steps; replaces text/toolCalls */
  steps?: ChatStep[];
  /** default: 'tool_calls' with tool calls, else 'stop' ('length' when cut by max tokens); null = no finish chunk */
  finishReason?: ChatFinishReason | null;
  /** override computed numbers; null = no usage at all (as a vendor that omits it) */
  usage?: ChatUsageOverride | null;
  firstTokenDelayMs?: number;
  interTokenDelayMs?: number;
  /** merged into the first delta (e.g. {extra_content: {...}}); non-stream: into the message */
  firstDeltaExtra?: Record<string, unknown>;
  /** `model` of the answer (default: options.modelAliases[requested] ?? requested) */
  model?: string;
  /** answer this HTTP error instead (vendor body, retry-after on 429) */
  httpError?: { status: number; error?: Partial<OpenAiErrorObject>; retryAfterMs?: number; headers?: Record<string, string> };
}

export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number; audio_tokens: number };
  completion_tokens_details: {
    reasoning_tokens: number;
    audio_tokens: number;
    accepted_prediction_tokens: number;
    rejected_prediction_tokens: number;
  };
}

export interface ChatResponderContext {
  params: ChatParams;
  record: ChatRequestRecord;
  /** text of the last user message ('' when none) */
  lastUserText: string;
  /** the reply the default rules would give */
  defaultReply(): ChatReply;
}

export type ChatResponder = (ctx: ChatResponderContext) => ChatReply | undefined | Promise<ChatReply | undefined>;

/** Fault switches: `emu.faults` (server-wide, mutable) and `emu.faultNext(...)` (next request). */
export interface ChatFaults {
  /** answer with this status and a vendor error body instead of doing the work (after responseDelayMs) */
  status: number | null;
  /** override parts of that error body (e.g. { code: 'insufficient_quota' }) */
  error: Partial<OpenAiErrorObject> | null;
  /** extra headers on that error response (e.g. { 'x-should-retry': 'false' }) */
  headers: Record<string, string> | null;
  /** retry-after(-ms) on that error response (default 1000 for 429) */
  retryAfterMs: number | null;
  /** wait this long before answering anything (headers included) */
  responseDelayMs: number;
  /** override the timing (a slow first token, a slow stream) */
  firstTokenDelayMs: number | null;
  interTokenDelayMs: number | null;
  /** write exactly this many data chunks, then destroy the socket (no [DONE]); non-stream: reset, no answer */
  dropAfterChunks: number | null;
  /** write this many data chunks, then `data: {"error":...}` (streamError) and end; non-stream: 500 */
  errorAfterChunks: number | null;
  /** the mid-stream error object (default a 500 server_error) */
  streamError: Partial<OpenAiErrorObject> | null;
  /** write this many data chunks, then nothing more (the response stays open) */
  stallAfterChunks: number | null;
  /** 200 + headers, then nothing at all (no keep-alive either); non-stream: no answer at all */
  deadAir: boolean;
  /** `: keep-alive` comments (non-stream: "\n") every N ms while waiting for the first chunk */
  keepAliveEveryMs: number | null;
  /** end the body after the last chunk without `data: [DONE]` */
  omitDone: boolean;
}

export function defaultChatFaults(): ChatFaults {
  return {
    status: null,
    error: null,
    headers: null,
    retryAfterMs: null,
    responseDelayMs: 0,
    firstTokenDelayMs: null,
    interTokenDelayMs: null,
    dropAfterChunks: null,
    errorAfterChunks: null,
    streamError: null,
    stallAfterChunks: null,
    deadAir: false,
    keepAliveEveryMs: null,
    omitDone: false,
  };
}

export interface ChatWireEvent {
  /** ms since the request arrived */
  t: number;
  /** chunk = data chunk with choices; usage = the `choices: []` chunk; newline = non-stream keep-alive */
  kind: 'chunk' | 'usage' | 'error' | 'comment' | 'done' | 'raw' | 'newline' | 'body';
  /** exact bytes written */
  data: string;
  /** parsed JSON of data events / the body */
  json?: Record<string, unknown>;
}

/**
 * pending: in progress (also while stalled); rejected: an error status was answered; completed:
 * the whole answer was written; aborted: the client went away first; dropped: a drop fired;
 * failed: a mid-stream error event (or a non-stream 500 by errorAfterChunks); shutdown: close().
 */
export type ChatOutcome = 'pending' | 'rejected' | 'completed' | 'aborted' | 'dropped' | 'failed' | 'shutdown';

export interface ChatRequestRecord {
  id: number;
  /** x-request-id of the answer */
  requestId: string;
  receivedAt: Date;
  method: string;
  /** pathname, e.g. /v1/chat/completions */
  path: string;
  /** the base path it matched, e.g. /v1 */
  basePath: string;
  /** path + query as requested */
  url: string;
  /** request headers (authorization included) */
  headers: IncomingHttpHeaders;
  /** Bearer token presented (valid or not) */
  apiKey: string | null;
  authorized: boolean;
  rawBody: string;
  /** parsed JSON body (undefined when not JSON) */
  body: unknown;
  params: ChatParams | null;
  /** requested model (when a string) */
  model: string | null;
  /** the request asked for a stream */
  stream: boolean;
  faults: ChatFaults;
  /** where the reply came from */
  replySource: 'script' | 'responder' | 'default' | null;
  reply: ChatReply | null;
  status: number | null;
  responseHeaders: Record<string, string>;
  error: OpenAiErrorObject | null;
  /** everything written in the body, in order */
  events: ChatWireEvent[];
  /** data chunks written (choice chunks + usage chunk) */
  chunks: number;
  /** content streamed / answered so far */
  text: string;
  /** tool calls as sent (arguments as accumulated so far) */
  toolCalls: Array<{ index: number; id: string; name: string; arguments: string }>;
  finishReason: string | null;
  /** usage sent to the client (null if none was sent) */
  usage: ChatUsage | null;
  /** the usage of the full answer, whether sent or not (the figure a gateway must reconstruct) */
  expectedUsage: ChatUsage | null;
  /** pieces (completion tokens) written */
  pieces: number;
  /** the non-stream answer object */
  responseBody: Record<string, unknown> | null;
  /** ms since receivedAt */
  timing: { headersMs: number | null; firstChunkMs: number | null; firstTokenMs: number | null; endMs: number | null };
  outcome: ChatOutcome;
  aborted: boolean;
  abortedAtMs: number | null;
  /** a stall/deadAir is holding the response */
  stalled: boolean;
  /** the HTTP exchange is over */
  finished: boolean;
}

export interface ModelListRequestRecord {
  at: Date;
  path: string;
  headers: IncomingHttpHeaders;
  apiKey: string | null;
  status: number;
}

export interface OpenAiChatEmulatorOptions {
  /** accepted Bearer keys (default ['sk-test-key']) */
  apiKeys?: string[];
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** vendor preset for the quirks (default 'openai') */
  vendor?: ChatVendor;
  /** override parts of the preset */
  quirks?: Partial<ChatQuirks>;
  /** accepted models; null (default) = any model; GET /models lists this or DEFAULT_CHAT_MODELS */
  models?: string[] | null;
  /** requested model -> model named in answers (e.g. { 'gpt-4o-mini': 'gpt-4o-mini-2024-07-18' }) */
  modelAliases?: Record<string, string>;
  /** ms between the headers and the first chunk (default 10; realistic 400) */
  firstTokenDelayMs?: number;
  /** ms between pieces (default 2; realistic 20) */
  interTokenDelayMs?: number;
  /** prompt_tokens_details.cached_tokens (capped at prompt_tokens) */
  cachedTokens?: number | ((params: ChatParams, promptTokens: number) => number);
  /** per-key buckets; null = no x-ratelimit headers and no 429 (default 5000 RPM / 4M TPM) */
  rateLimits?: { requestsPerMinute: number; tokensPerMinute: number } | null;
  /** request body read timeout -> 408 (default 10000) */
  bodyTimeoutMs?: number;
  /** request body size limit -> 413 (default 4 MiB) */
  maxBodyBytes?: number;
  /** one line per finished request (the CLI passes a stderr logger) */
  log?: (line: string) => void;
}

export interface ResolvedOpenAiChatOptions {
  apiKeys: string[];
  vendor: ChatVendor;
  quirks: ChatQuirks;
  models: string[] | null;
  modelAliases: Record<string, string>;
  firstTokenDelayMs: number;
  interTokenDelayMs: number;
  cachedTokens: number | ((params: ChatParams, promptTokens: number) => number);
  rateLimits: { requestsPerMinute: number; tokensPerMinute: number } | null;
  bodyTimeoutMs: number;
  maxBodyBytes: number;
}

// =============================================================================================
// Pure helpers: text, pieces, tokens, the default responder

/** Text of a message content: a string, or the text parts joined by spaces. */
export function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  const texts: string[] = [];
  for (const p of content) {
    if (p && typeof p === 'object' && (p as Record<string, unknown>)['type'] === 'text') {
      const t = (p as Record<string, unknown>)['text'];
      if (typeof t === 'string') texts.push(t);
    }
  }
  return texts.join(' ');
}

/** Text of the last user message ('' when none). */
export function lastUserText(messages: readonly ChatMessage[]): string {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i]!;
    if (m.role === 'user') return contentText(m.content);
  }
  return '';
}

/** Word pieces: "You said: hi" -> ["You", " said:", " hi"]; pieces.join('') === text. */
export function splitTextPieces(text: string): string[] {
  const pieces = text.match(/\s*\S+/g) ?? [];
  const joined = pieces.join('');
  const rest = text.slice(joined.length);
  if (rest) {
    if (pieces.length === 0) return [rest];
    pieces[pieces.length - 1] += rest;
  }
  return pieces;
}

/** Token-ish fragments of JSON arguments: '{"city":"Paris"}' -> ['{"', 'city', '":"', 'Paris', '"}']. */
export function splitArgumentFragments(args: string): string[] {
  return args.match(/[A-Za-z0-9_]+|\s+|[^A-Za-z0-9_\s]+/g) ?? [];
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** prompt_tokens = max(1, ceil(C / 4)); C is described in the file header. */
export function countPromptTokens(messages: readonly ChatMessage[], tools: readonly unknown[] | null = null): number {
  let chars = 0;
  for (const m of messages) {
    chars += codePoints(contentText(m.content));
    if (typeof m.refusal === 'string') chars += codePoints(m.refusal);
    for (const tc of Array.isArray(m.tool_calls) ? m.tool_calls : []) {
      chars += codePoints(tc.function?.name ?? '') + codePoints(tc.function?.arguments ?? '');
    }
  }
  if (tools && tools.length > 0) chars += codePoints(JSON.stringify(tools));
  return Math.max(1, Math.ceil(chars / 4));
}

/** The balanced JSON object starting at the first '{' at or after `from` (strings respected). */
function extractJsonObject(text: string, from: number, to: number): string | null {
  const start = text.indexOf('{', from);
  if (start < 0 || start >= to) return null;
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{') depth++;
    else if (c === '}' && --depth === 0) return text.slice(start, i + 1);
  }
  return null;
}

function jsonArgs(candidate: string | null): string {
  if (candidate === null) return '{}';
  try {
    const v: unknown = JSON.parse(candidate);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? JSON.stringify(v) : '{}';
  } catch {
    return '{}';
  }
}

function functionToolNames(tools: readonly ChatToolDef[] | null): string[] {
  return (tools ?? []).filter((t) => t.type === 'function' && t.function).map((t) => t.function!.name);
}

/** The deterministic answer of the file header's rules. */
export function defaultChatReply(p: ChatParams): ChatReply {
  const msgs = p.messages;
  const last = msgs[msgs.length - 1];
  if (last?.role === 'tool') {
    let i = msgs.length - 1;
    while (i > 0 && msgs[i - 1]!.role === 'tool') i--;
    const parts: string[] = [];
    for (let k = i; k < msgs.length; k++) {
      const t = msgs[k]!;
      let name: string | null = null;
      for (let j = i - 1; j >= 0 && name === null; j--) {
        const call = msgs[j]!.tool_calls?.find((c) => c.id === t.tool_call_id);
        if (call) name = call.function?.name ?? null;
      }
      parts.push(`Tool ${name ?? 'call'} returned: ${contentText(t.content)}.`);
    }
    return { text: parts.join(' ') };
  }
  const userText = lastUserText(msgs);
  const names = functionToolNames(p.tools);
  const choice = p.toolChoice;
  if (names.length > 0 && choice !== 'none') {
    const calls: ChatToolCallSpec[] = [];
    const re = /\bcall\s+([A-Za-z0-9_-]{1,64})/gi;
    const matches = [...userText.matchAll(re)].filter((m) => names.includes(m[1]!));
    matches.forEach((m, k) => {
      const end = k + 1 < matches.length ? matches[k + 1]!.index : userText.length;
      calls.push({ name: m[1]!, arguments: jsonArgs(extractJsonObject(userText, m.index + m[0].length, end)) });
    });
    let forcedName: string | null = null;
    if (choice && typeof choice === 'object') {
      const fn = (choice as { function?: { name?: unknown } }).function;
      if (typeof fn?.name === 'string') forcedName = fn.name;
    }
    if (forcedName !== null) {
      const own = calls.find((c) => c.name === forcedName);
      return { toolCalls: [own ?? { name: forcedName, arguments: '{}' }], finishReason: 'stop' };
    }
    if (calls.length === 0 && choice === 'required') calls.push({ name: names[0]!, arguments: '{}' });
    if (calls.length > 0) return { toolCalls: p.parallelToolCalls ? calls : calls.slice(0, 1) };
  }
  return { text: userText.trim() ? `You said: ${userText}` : 'Hello! How can I help you today?' };
}

// =============================================================================================
// Request validation

export type ChatCheck =
  | { ok: true; params: ChatParams }
  | { ok: false; status: number; message: string; param: string | null; code: string | null };

export const CHAT_BODY_KEYS: readonly string[] = [
  'messages', 'model', 'audio', 'frequency_penalty', 'function_call', 'functions', 'logit_bias', 'logprobs',
  'max_completion_tokens', 'max_tokens', 'metadata', 'modalities', 'moderation', 'n', 'parallel_tool_calls',
  'prediction', 'presence_penalty', 'prompt_cache_key', 'prompt_cache_options', 'prompt_cache_retention',
  'reasoning_effort', 'response_format', 'safety_identifier', 'seed', 'service_tier', 'stop', 'store', 'stream',
  'stream_options', 'temperature', 'tool_choice', 'tools', 'top_logprobs', 'top_p', 'user', 'verbosity',
  'web_search_options',
];

const MESSAGE_KEYS: Record<string, readonly string[]> = {
  system: ['role', 'content', 'name'],
  developer: ['role', 'content', 'name'],
  user: ['role', 'content', 'name'],
  assistant: ['role', 'audio', 'content', 'function_call', 'name', 'refusal', 'tool_calls'],
  tool: ['role', 'content', 'tool_call_id'],
  function: ['role', 'content', 'name'],
};
const ROLES = ['system', 'assistant', 'user', 'function', 'tool', 'developer'];
const TOOL_CALL_KEYS = ['id', 'type', 'function', 'custom'];
const TOOL_NAME_RE = /^[a-zA-Z0-9_-]{1,64}$/;

function jsonTypeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return 'a string';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a decimal';
  if (typeof v === 'boolean') return 'a boolean';
  return 'an object';
}

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

class CheckError extends Error {
  readonly status: number;
  readonly param: string | null;
  readonly code: string | null;
  constructor(message: string, param: string | null, code: string | null, status = 400) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

const missing = (p: string) => new CheckError(`Missing required parameter: '${p}'.`, p, 'missing_required_parameter');
const invalidType = (p: string, expected: string, v: unknown) =>
  new CheckError(`Invalid type for '${p}': expected ${expected}, but got ${jsonTypeName(v)} instead.`, p, 'invalid_type');
const unknownParam = (p: string) => new CheckError(`Unknown parameter: '${p}'.`, p, 'unknown_parameter');

function checkMessages(raw: unknown, strict: boolean): ChatMessage[] {
  if (raw === undefined || raw === null) throw missing('messages');
  if (!Array.isArray(raw)) throw invalidType('messages', 'an array of objects', raw);
  if (raw.length === 0) {
    throw new CheckError("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", 'messages', 'empty_array');
  }
  raw.forEach((m: unknown, i) => {
    const at = `messages[${i}]`;
    if (!isObj(m)) throw invalidType(at, 'an object', m);
    if (m['role'] === undefined) throw missing(`${at}.role`);
    const role = m['role'];
    if (typeof role !== 'string' || !ROLES.includes(role)) {
      throw new CheckError(`Invalid value: ${JSON.stringify(role)}. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.`, `${at}.role`, 'invalid_value');
    }
    const content = m['content'];
    if ((content === undefined || content === null) && role !== 'assistant') throw missing(`${at}.content`);
    if (content !== undefined && content !== null && typeof content !== 'string' && !Array.isArray(content)) {
      throw invalidType(`${at}.content`, 'one of a string or array of objects', content);
    }
    if (role === 'tool' && typeof m['tool_call_id'] !== 'string') throw missing(`${at}.tool_call_id`);
    if (strict) {
      for (const k of Object.keys(m)) if (!MESSAGE_KEYS[role]!.includes(k)) throw unknownParam(`${at}.${k}`);
    }
    if (m['tool_calls'] !== undefined && m['tool_calls'] !== null) {
      if (!Array.isArray(m['tool_calls'])) throw invalidType(`${at}.tool_calls`, 'an array of objects', m['tool_calls']);
      m['tool_calls'].forEach((tc: unknown, j) => {
        const tat = `${at}.tool_calls[${j}]`;
        if (!isObj(tc)) throw invalidType(tat, 'an object', tc);
        if (typeof tc['id'] !== 'string') throw missing(`${tat}.id`);
        if (tc['type'] === undefined) throw missing(`${tat}.type`);
        if (tc['type'] === 'function') {
          const fn = tc['function'];
          if (!isObj(fn)) throw missing(`${tat}.function`);
          if (typeof fn['name'] !== 'string') throw missing(`${tat}.function.name`);
          if (typeof fn['arguments'] !== 'string') throw missing(`${tat}.function.arguments`);
        }
        if (strict) for (const k of Object.keys(tc)) if (!TOOL_CALL_KEYS.includes(k)) throw unknownParam(`${tat}.${k}`);
      });
    }
  });
  const msgs = raw as ChatMessage[];
  if (strict) checkToolSequence(msgs);
  return msgs;
}

/** Every tool message answers a preceding assistant tool call; every call is answered. */
function checkToolSequence(msgs: readonly ChatMessage[]): void {
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i]!;
    if (m.role === 'tool') {
      let j = i - 1;
      while (j >= 0 && msgs[j]!.role === 'tool') j--;
      const owner = j >= 0 ? msgs[j]! : null;
      if (!owner || owner.role !== 'assistant' || !owner.tool_calls?.length) {
        throw new CheckError("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.", `messages.[${i}].role`, null);
      }
    }
    if (m.role === 'assistant' && m.tool_calls?.length) {
      const answered = new Set<string>();
      for (let k = i + 1; k < msgs.length && msgs[k]!.role === 'tool'; k++) answered.add(msgs[k]!.tool_call_id ?? '');
      const missingIds = m.tool_calls.map((c) => c.id).filter((id) => !answered.has(id));
      if (missingIds.length > 0) {
        throw new CheckError(
          `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ${missingIds.join(', ')}`,
          `messages.[${i}].role`,
          null,
        );
      }
    }
  }
}

function checkTools(raw: unknown, strict: boolean): ChatToolDef[] | null {
  if (raw === undefined || raw === null) return null;
  if (!Array.isArray(raw)) throw invalidType('tools', 'an array of objects', raw);
  if (raw.length === 0) throw new CheckError("[] is too short - 'tools'", null, null);
  if (raw.length > MAX_TOOLS) {
    throw new CheckError(`Invalid 'tools': array too long. Expected an array with maximum length ${MAX_TOOLS}, but got an array with length ${raw.length} instead.`, 'tools', 'array_above_max_length');
  }
  raw.forEach((t: unknown, i) => {
    const at = `tools[${i}]`;
    if (!isObj(t)) throw invalidType(at, 'an object', t);
    if (t['type'] !== 'function' && t['type'] !== 'custom') {
      throw new CheckError(`Invalid value: ${JSON.stringify(t['type'] ?? null)}. Supported values are: 'function' and 'custom'.`, `${at}.type`, 'invalid_value');
    }
    if (t['type'] === 'function') {
      const fn = t['function'];
      if (!isObj(fn)) throw missing(`${at}.function`);
      if (typeof fn['name'] !== 'string') throw missing(`${at}.function.name`);
      if (!TOOL_NAME_RE.test(fn['name'])) {
        throw new CheckError(`Invalid '${at}.function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.`, `${at}.function.name`, 'invalid_value');
      }
    }
    if (strict) for (const k of Object.keys(t)) if (!['type', 'function', 'custom'].includes(k)) throw unknownParam(`${at}.${k}`);
  });
  return raw as ChatToolDef[];
}

function checkMaxTokens(b: Record<string, unknown>, key: string): number | null {
  const v = b[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalidType(key, 'an integer', v);
  if (v < 1) throw new CheckError(`Invalid '${key}': integer below minimum value. Expected a value >= 1, but got ${v} instead.`, key, 'integer_below_min_value');
  return v;
}

/** Validate a parsed body the way the API does (first problem only), then the model. */
export function parseChatBody(body: unknown, o: { strict?: boolean; models?: readonly string[] | null } = {}): ChatCheck {
  const strict = o.strict ?? true;
  try {
    if (!isObj(body)) throw new CheckError(`Invalid type for 'body': expected an object, but got ${jsonTypeName(body)} instead.`, null, 'invalid_type');
    const b = body;
    if (typeof b['model'] !== 'string' || b['model'] === '') throw new CheckError('you must provide a model parameter', null, null);
    const model = b['model'];
    const unknown = Object.keys(b).filter((k) => !CHAT_BODY_KEYS.includes(k));
    if (strict && unknown.length > 0) throw new CheckError(`Unrecognized request argument supplied: ${unknown[0]}`, null, null);
    const messages = checkMessages(b['messages'], strict);
    const tools = checkTools(b['tools'], strict);
    for (const k of ['tool_choice', 'parallel_tool_calls']) {
      if (b[k] !== undefined && b[k] !== null && tools === null) {
        throw new CheckError(`Invalid value for '${k}': '${k}' is only allowed when 'tools' are specified.`, k, null);
      }
    }
    const stream = b['stream'] === true;
    if (b['stream'] !== undefined && b['stream'] !== null && typeof b['stream'] !== 'boolean') throw invalidType('stream', 'a boolean', b['stream']);
    const so = b['stream_options'];
    if (so !== undefined && so !== null) {
      if (!stream) throw new CheckError("The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options', null);
      if (!isObj(so)) throw invalidType('stream_options', 'an object', so);
      if (strict) for (const k of Object.keys(so)) if (k !== 'include_usage' && k !== 'include_obfuscation') throw unknownParam(`stream_options.${k}`);
    }
    if (b['n'] !== undefined && b['n'] !== null && b['n'] !== 1) {
      throw new CheckError('The emulator supports n=1 only.', 'n', 'unsupported_value');
    }
    const maxCompletion = checkMaxTokens(b, 'max_completion_tokens');
    const maxTokens = checkMaxTokens(b, 'max_tokens');
    if (o.models && !o.models.includes(model)) {
      throw new CheckError(`The model \`${model}\` does not exist or you do not have access to it.`, null, 'model_not_found', 404);
    }
    const sopts = isObj(so) ? so : {};
    return {
      ok: true,
      params: {
        model,
        messages,
        tools,
        toolChoice: b['tool_choice'] ?? null,
        parallelToolCalls: b['parallel_tool_calls'] !== false,
        stream,
        includeUsage: sopts['include_usage'] === true,
        includeObfuscation: sopts['include_obfuscation'] !== false,
        maxTokens: maxCompletion ?? maxTokens,
        unknown,
      },
    };
  } catch (err) {
    if (!(err instanceof CheckError)) throw err;
    return { ok: false, status: err.status, message: err.message, param: err.param, code: err.code };
  }
}

// =============================================================================================
// Rate limits (continuous token buckets per key)

interface Bucket {
  level: number;
  at: number;
}

export interface RateLimitState {
  limitRequests: number;
  limitTokens: number;
  remainingRequests: number;
  remainingTokens: number;
  /** ms until each bucket is full again */
  resetRequestsMs: number;
  resetTokensMs: number;
}

/** "120ms", "1s", "8.64s", "6m0s" (how OpenAI writes x-ratelimit-reset-*). */
export function formatResetDuration(ms: number): string {
  const r = Math.max(0, Math.ceil(ms));
  if (r < 1000) return `${r}ms`;
  if (r < 60_000) return `${Number((r / 1000).toFixed(3))}s`;
  const m = Math.floor(r / 60_000);
  return `${m}m${Number(((r - m * 60_000) / 1000).toFixed(3))}s`;
}

class RateLimiter {
  private readonly buckets = new Map<string, { req: Bucket; tok: Bucket }>();

  private refill(b: Bucket, limit: number, now: number): void {
    b.level = Math.min(limit, b.level + ((now - b.at) * limit) / 60_000);
    b.at = now;
  }

  private get(key: string, rpm: number, tpm: number, now: number): { req: Bucket; tok: Bucket } {
    let e = this.buckets.get(key);
    if (!e) {
      e = { req: { level: rpm, at: now }, tok: { level: tpm, at: now } };
      this.buckets.set(key, e);
    }
    this.refill(e.req, rpm, now);
    this.refill(e.tok, tpm, now);
    return e;
  }

  state(key: string, rpm: number, tpm: number): RateLimitState {
    const e = this.get(key, rpm, tpm, performance.now());
    return {
      limitRequests: rpm,
      limitTokens: tpm,
      remainingRequests: Math.floor(e.req.level + 1e-9),
      remainingTokens: Math.floor(e.tok.level + 1e-9),
      resetRequestsMs: ((rpm - e.req.level) * 60_000) / rpm,
      resetTokensMs: ((tpm - e.tok.level) * 60_000) / tpm,
    };
  }

  /** Take 1 request + `tokens`, or say which dimension is short and for how long. */
  take(key: string, rpm: number, tpm: number, tokens: number): { ok: true } | { ok: false; dim: 'requests' | 'tokens'; waitMs: number; used: number; limit: number } {
    const e = this.get(key, rpm, tpm, performance.now());
    if (e.req.level < 1 - 1e-9) {
      return { ok: false, dim: 'requests', waitMs: ((1 - e.req.level) * 60_000) / rpm, used: rpm - Math.floor(e.req.level + 1e-9), limit: rpm };
    }
    if (e.tok.level < tokens - 1e-9) {
      return { ok: false, dim: 'tokens', waitMs: ((tokens - e.tok.level) * 60_000) / tpm, used: tpm - Math.floor(e.tok.level + 1e-9), limit: tpm };
    }
    e.req.level -= 1;
    e.tok.level -= tokens;
    return { ok: true };
  }
}

function rateLimitHeaders(s: RateLimitState): Record<string, string> {
  return {
    'x-ratelimit-limit-requests': String(s.limitRequests),
    'x-ratelimit-limit-tokens': String(s.limitTokens),
    'x-ratelimit-remaining-requests': String(s.remainingRequests),
    'x-ratelimit-remaining-tokens': String(s.remainingTokens),
    'x-ratelimit-reset-requests': formatResetDuration(s.resetRequestsMs),
    'x-ratelimit-reset-tokens': formatResetDuration(s.resetTokensMs),
  };
}

// =============================================================================================
// Ids and padding

const BASE62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export function randomBase62(n: number): string {
  const bytes = randomBytes(n);
  let s = '';
  for (let i = 0; i < n; i++) s += BASE62[bytes[i]! % 62];
  return s;
}

/** `chatcmpl-` + 29 characters, like the real ids. */
export function chatCompletionId(): string {
  return `chatcmpl-${randomBase62(29)}`;
}

/** `call_` + 24 characters. */
export function toolCallId(): string {
  return `call_${randomBase62(24)}`;
}

function fingerprint(model: string): string {
  return `fp_${createHash('sha256').update(model).digest('hex').slice(0, 10)}`;
}

function thoughtSignature(name: string, args: string): string {
  return createHash('sha256').update(`${name}\n${args}`).digest('base64');
}

// =============================================================================================
// Plan: a reply compiled into steps with pieces counted

interface PlannedToolCall {
  index: number;
  id: string;
  name: string;
  arguments: string;
  fragments: string[];
  whole: boolean;
  extra: Record<string, unknown> | null;
}

type PlanStep =
  | { kind: 'text'; text: string }
  | { kind: 'tool'; call: PlannedToolCall; part: 'header' | 'fragment'; fragment: string }
  | { kind: 'comment'; text: string }
  | { kind: 'delay'; ms: number }
  | { kind: 'error'; error: OpenAiErrorObject }
  | { kind: 'raw'; text: string }
  | { kind: 'drop' }
  | { kind: 'stall' };

interface Plan {
  steps: PlanStep[];
  finishReason: string | null;
  /** usage of the whole answer (null = the reply says no usage) */
  usage: ChatUsage | null;
  pieces: number;
  text: string;
  toolCalls: PlannedToolCall[];
}

function isPiece(s: PlanStep): boolean {
  return s.kind === 'text' || s.kind === 'tool';
}

function planToolCall(spec: ChatToolCallSpec, index: number, q: ChatQuirks): PlannedToolCall {
  const args = typeof spec.arguments === 'string' ? spec.arguments : JSON.stringify(spec.arguments);
  const mode = spec.fragments ?? (q.toolCalls === 'whole' ? 'whole' : undefined);
  let fragments: string[];
  if (mode === 'whole') fragments = [];
  else if (Array.isArray(mode)) {
    if (mode.join('') !== args) throw new Error(`tool call ${spec.name}: fragments do not join to the arguments`);
    fragments = [...mode];
  } else if (typeof mode === 'number') {
    if (!(mode > 0)) throw new Error('fragments must be > 0');
    fragments = [];
    const cps = [...args];
    for (let i = 0; i < cps.length; i += mode) fragments.push(cps.slice(i, i + mode).join(''));
  } else {
    fragments = splitArgumentFragments(args);
  }
  let extra = spec.extra ? { ...spec.extra } : null;
  if (q.thoughtSignatures && !extra?.['extra_content']) {
    extra = { ...(extra ?? {}), extra_content: { google: { thought_signature: thoughtSignature(spec.name, args) } } };
  }
  return { index, id: spec.id ?? toolCallId(), name: spec.name, arguments: args, fragments, whole: mode === 'whole', extra };
}

function buildPlan(reply: ChatReply, p: ChatParams, q: ChatQuirks, cached: number): Plan {
  const steps: PlanStep[] = [];
  const toolCalls: PlannedToolCall[] = [];
  const addCall = (spec: ChatToolCallSpec) => {
    const call = planToolCall(spec, toolCalls.length, q);
    toolCalls.push(call);
    steps.push({ kind: 'tool', call, part: 'header', fragment: call.whole ? call.arguments : '' });
    for (const f of call.fragments) steps.push({ kind: 'tool', call, part: 'fragment', fragment: f });
  };
  if (reply.steps) {
    for (const s of reply.steps) {
      if ('text' in s) steps.push({ kind: 'text', text: s.text });
      else if ('toolCall' in s) addCall(s.toolCall);
      else if ('comment' in s) steps.push({ kind: 'comment', text: s.comment });
      else if ('delayMs' in s) steps.push({ kind: 'delay', ms: s.delayMs });
      else if ('error' in s) steps.push({ kind: 'error', error: openAiError(500, s.error).error });
      else if ('raw' in s) steps.push({ kind: 'raw', text: s.raw });
      else if ('drop' in s) steps.push({ kind: 'drop' });
      else steps.push({ kind: 'stall' });
    }
  } else {
    const pieces = typeof reply.text === 'string' ? splitTextPieces(reply.text) : (reply.text ?? []);
    for (const t of pieces) steps.push({ kind: 'text', text: t });
    for (const spec of reply.toolCalls ?? []) addCall(spec);
  }
  let cut = false;
  if (p.maxTokens !== null) {
    let n = 0;
    const idx = steps.findIndex((s) => isPiece(s) && ++n > p.maxTokens!);
    if (idx >= 0) {
      steps.splice(idx);
      cut = true;
    }
  }
  const pieceSteps = steps.filter(isPiece);
  const pieces = pieceSteps.length;
  const text = pieceSteps.map((s) => (s.kind === 'text' ? s.text : '')).join('');
  const sentCalls = toolCalls.filter((c) => pieceSteps.some((s) => s.kind === 'tool' && s.call === c));
  for (const c of sentCalls) {
    c.arguments = pieceSteps.map((s) => (s.kind === 'tool' && s.call === c ? s.fragment : '')).join('');
  }
  const finishReason =
    reply.finishReason !== undefined ? reply.finishReason : cut ? 'length' : sentCalls.length > 0 ? 'tool_calls' : 'stop';
  let usage: ChatUsage | null = null;
  if (reply.usage !== null) {
    const o = reply.usage ?? {};
    const prompt = o.prompt_tokens ?? countPromptTokens(p.messages, p.tools);
    const completion = o.completion_tokens ?? pieces;
    usage = {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: o.total_tokens ?? prompt + completion,
      prompt_tokens_details: { cached_tokens: o.cached_tokens ?? Math.min(prompt, Math.max(0, cached)), audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: o.reasoning_tokens ?? 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    };
  }
  return { steps, finishReason, usage, pieces, text, toolCalls: sentCalls };
}

// =============================================================================================
// One answer being written

class ChatGeneration {
  private readonly emu: OpenAiChatEmulator;
  private readonly rec: ChatRequestRecord;
  private readonly p: ChatParams;
  private readonly plan: Plan;
  private readonly res: ServerResponse;
  private readonly t0: number;
  private readonly q: ChatQuirks;
  private readonly firstDelay: number;
  private readonly interDelay: number;
  private readonly id = chatCompletionId();
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly model: string;
  private readonly groqId = `req_${randomBase62(26).toLowerCase()}`;
  private readonly extraFirstDelta: Record<string, unknown> | null;
  private timer: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;
  private readonly flushWaiters = new Set<() => void>();
  private stopped = false;
  private roleSent = false;
  private firstDeltaUsed = false;

  constructor(emu: OpenAiChatEmulator, rec: ChatRequestRecord, p: ChatParams, reply: ChatReply, plan: Plan, res: ServerResponse, t0: number) {
    this.emu = emu;
    this.rec = rec;
    this.p = p;
    this.plan = plan;
    this.res = res;
    this.t0 = t0;
    this.q = emu.options.quirks;
    const f = rec.faults;
    this.firstDelay = reply.firstTokenDelayMs ?? f.firstTokenDelayMs ?? emu.options.firstTokenDelayMs;
    this.interDelay = reply.interTokenDelayMs ?? f.interTokenDelayMs ?? emu.options.interTokenDelayMs;
    this.model = reply.model ?? emu.options.modelAliases[p.model] ?? p.model;
    this.extraFirstDelta = reply.firstDeltaExtra ?? null;
  }

  /** Stop writing (client gone, shutdown). */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const w = this.wake;
    this.wake = null;
    w?.();
    for (const f of [...this.flushWaiters]) f();
  }

  private ms(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  private sleepUntil(due: number): Promise<void> {
    const wait = due - performance.now();
    if (wait <= 0 || this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(() => {
        this.timer = null;
        this.wake = null;
        resolve();
      }, wait);
    });
  }

  /** Wait until `due`, writing keep-alives at from + k x every (k >= 1, before due) meanwhile (if set). */
  private async waitWithKeepAlive(from: number, due: number, every: number | null, keepAlive: () => void): Promise<void> {
    if (every === null || !(every > 0)) return this.sleepUntil(due);
    let next = from + every;
    while (!this.stopped && next < due) {
      await this.sleepUntil(next);
      if (this.stopped) return;
      keepAlive();
      next += every;
    }
    await this.sleepUntil(due);
  }

  private headers(contentType: string): Record<string, string> {
    return {
      'content-type': contentType,
      'x-request-id': this.rec.requestId,
      'openai-version': OPENAI_VERSION_HEADER,
      'openai-processing-ms': String(Math.round(this.ms())),
      'openai-organization': 'user-emulator',
      'openai-project': 'proj_emulator',
      'access-control-expose-headers': 'X-Request-ID',
      ...this.emu.rateLimitHeadersFor(this.rec.apiKey),
    };
  }

  private sendHeaders(contentType: string): void {
    const headers = this.headers(contentType);
    this.rec.status = 200;
    this.rec.responseHeaders = headers;
    this.res.writeHead(200, headers);
    this.res.flushHeaders();
    this.rec.timing.headersMs = this.ms();
    this.emu.changed();
  }

  private write(kind: ChatWireEvent['kind'], data: string, json?: Record<string, unknown>): Promise<void> {
    const ev: ChatWireEvent = { t: this.ms(), kind, data };
    if (json) ev.json = json;
    this.rec.events.push(ev);
    this.emu.changed();
    // resolves once the bytes are handed to the socket (so a drop never cuts a chunk), or at stop()
    return new Promise<void>((resolve) => {
      if (this.res.destroyed) return resolve();
      const done = () => {
        this.flushWaiters.delete(done);
        resolve();
      };
      this.flushWaiters.add(done);
      this.res.write(data, done);
    });
  }

  async run(): Promise<void> {
    try {
      if (this.p.stream) await this.runStream();
      else await this.runJson();
    } catch (err) {
      if (!this.res.headersSent) {
        sendOpenAiError(this.res, openAiError(500, { requestId: this.rec.requestId, message: `emulator failure: ${String(err)}` }));
      } else {
        this.res.destroy();
      }
    }
  }

  // ----- streaming

  private chunkObject(choices: unknown[], o: { usage?: ChatUsage | null; extra?: Record<string, unknown> } = {}): Record<string, unknown> {
    const c: Record<string, unknown> = { id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model };
    if (this.q.openAiFields) {
      c['service_tier'] = 'default';
      c['system_fingerprint'] = fingerprint(this.model);
    }
    c['choices'] = choices;
    if (o.usage !== undefined) c['usage'] = o.usage;
    else if (this.usageComing() && this.q.usageNullOnChunks) c['usage'] = null;
    if (o.extra) Object.assign(c, o.extra);
    if (this.q.obfuscation && this.p.includeObfuscation) {
      const pad = (16 - (Buffer.byteLength(JSON.stringify(choices)) % 16)) % 16;
      c['obfuscation'] = randomBase62(pad);
    }
    return c;
  }

  private choice(delta: Record<string, unknown>, finish: string | null): Record<string, unknown> {
    const ch: Record<string, unknown> = { index: 0, delta };
    if (this.q.openAiFields) ch['logprobs'] = null;
    ch['finish_reason'] = finish;
    return ch;
  }

  /** The usage chunk (`choices: []`) will be sent after the finish chunk. */
  private usageComing(): boolean {
    if (this.plan.usage === null) return false;
    const m = this.q.usageChunk;
    return m === 'always' || (m === 'on-request' && this.p.includeUsage);
  }

  private withFirstDelta(delta: Record<string, unknown>): Record<string, unknown> {
    if (this.firstDeltaUsed) return delta;
    this.firstDeltaUsed = true;
    return this.extraFirstDelta ? { ...delta, ...this.extraFirstDelta } : delta;
  }

  private firstChunkExtra(): Record<string, unknown> | undefined {
    return this.q.xGroq && this.rec.chunks === 0 ? { x_groq: { id: this.groqId } } : undefined;
  }

  private async writeChunk(obj: Record<string, unknown>, kind: 'chunk' | 'usage'): Promise<void> {
    if (this.rec.timing.firstChunkMs === null) this.rec.timing.firstChunkMs = this.ms();
    this.rec.chunks++;
    await this.write(kind, `data: ${JSON.stringify(obj)}\n\n`, obj);
  }

  /** Before writing data chunk number chunks+1: a fault may stop here. Returns true to stop. */
  private async faultBeforeChunk(): Promise<boolean> {
    const f = this.rec.faults;
    const n = this.rec.chunks;
    if (f.dropAfterChunks !== null && n >= f.dropAfterChunks) {
      await this.drop();
      return true;
    }
    if (f.errorAfterChunks !== null && n >= f.errorAfterChunks) {
      await this.failStream(openAiError(500, f.streamError ?? {}).error);
      return true;
    }
    if (f.stallAfterChunks !== null && n >= f.stallAfterChunks) {
      this.stall();
      return true;
    }
    return false;
  }

  private async runStream(): Promise<void> {
    const f = this.rec.faults;
    this.sendHeaders('text/event-stream; charset=utf-8');
    if (f.deadAir) return this.stall();
    const start = performance.now();
    let lastPieceDue = start;
    let sawPiece = false;
    let sawChunk = false;
    let extraWait = 0;
    const keepAlive = () => void this.write('comment', KEEP_ALIVE_COMMENT);
    for (const step of this.plan.steps) {
      if (this.stopped) return;
      if (step.kind === 'delay') {
        extraWait += step.ms;
        continue;
      }
      if (step.kind === 'comment' || step.kind === 'raw') {
        if (extraWait > 0) {
          lastPieceDue = Math.max(lastPieceDue, performance.now()) + extraWait;
          extraWait = 0;
          await this.sleepUntil(lastPieceDue);
          if (this.stopped) return;
        }
        if (step.kind === 'comment') await this.write('comment', `: ${step.text}\n\n`);
        else await this.write('raw', step.text);
        continue;
      }
      if (step.kind === 'drop') return this.drop();
      if (step.kind === 'stall') return this.stall();
      if (step.kind === 'error') {
        if (extraWait > 0) await this.sleepUntil(Math.max(lastPieceDue, performance.now()) + extraWait);
        if (this.stopped) return;
        return this.failStream(step.error);
      }
      // a piece: pace it
      const gap = !sawPiece ? this.firstDelay : this.interDelay;
      const due = (sawPiece ? lastPieceDue : start) + gap + extraWait;
      extraWait = 0;
      if (!sawChunk) await this.waitWithKeepAlive(start, due, f.keepAliveEveryMs, keepAlive);
      else await this.sleepUntil(due);
      if (this.stopped) return;
      lastPieceDue = due;
      sawPiece = true;
      if (!(await this.writePiece(step))) return;
      sawChunk = true;
    }
    if (this.stopped) return;
    if (!sawChunk) {
      // no pieces at all: the role chunk (if any) still comes after the first-token delay
      await this.waitWithKeepAlive(start, start + this.firstDelay + extraWait, f.keepAliveEveryMs, keepAlive);
      if (this.stopped) return;
      if (this.q.role === 'separate') {
        if (await this.faultBeforeChunk()) return;
        await this.writeChunk(this.chunkObject([this.choice(this.withFirstDelta(this.roleDelta()), null)], { extra: this.firstChunkExtra() }), 'chunk');
        this.roleSent = true;
      }
    } else if (extraWait > 0) {
      await this.sleepUntil(Math.max(lastPieceDue, performance.now()) + extraWait);
      if (this.stopped) return;
    }
    await this.finishStream();
  }

  private roleDelta(): Record<string, unknown> {
    return this.q.openAiFields ? { role: 'assistant', content: '', refusal: null } : { role: 'assistant', content: '' };
  }

  /** Write one piece (with the role chunk first when due). Returns false when a fault ended the stream. */
  private async writePiece(step: PlanStep): Promise<boolean> {
    let delta: Record<string, unknown>;
    if (step.kind === 'text') {
      delta = { content: step.text };
    } else if (step.kind === 'tool') {
      const c = step.call;
      if (step.part === 'header') {
        const item: Record<string, unknown> = { index: c.index, id: c.id, type: 'function', function: { name: c.name, arguments: step.fragment } };
        if (c.extra) Object.assign(item, c.extra);
        delta = { tool_calls: [item] };
        this.rec.toolCalls.push({ index: c.index, id: c.id, name: c.name, arguments: step.fragment });
      } else {
        delta = { tool_calls: [{ index: c.index, function: { arguments: step.fragment } }] };
        const tc = this.rec.toolCalls.find((t) => t.index === c.index);
        if (tc) tc.arguments += step.fragment;
      }
    } else {
      return true;
    }
    if (!this.roleSent && this.q.role !== 'none') {
      if (this.q.role === 'separate' && step.kind === 'text') {
        if (await this.faultBeforeChunk()) return false;
        await this.writeChunk(this.chunkObject([this.choice(this.withFirstDelta(this.roleDelta()), null)], { extra: this.firstChunkExtra() }), 'chunk');
        if (this.stopped) return false;
      } else if (this.q.role === 'separate') {
        delta = this.q.openAiFields ? { role: 'assistant', content: null, ...delta, refusal: null } : { role: 'assistant', content: null, ...delta };
      } else {
        delta = { role: 'assistant', ...delta };
      }
      this.roleSent = true;
    }
    if (await this.faultBeforeChunk()) return false;
    if (step.kind === 'text') this.rec.text += step.text;
    this.rec.pieces++;
    if (this.rec.timing.firstTokenMs === null) this.rec.timing.firstTokenMs = this.ms();
    await this.writeChunk(this.chunkObject([this.choice(this.withFirstDelta(delta), null)], { extra: this.firstChunkExtra() }), 'chunk');
    return !this.stopped;
  }

  private async finishStream(): Promise<void> {
    const plan = this.plan;
    const usage = plan.usage;
    if (plan.finishReason !== null) {
      if (await this.faultBeforeChunk()) return;
      const extra: Record<string, unknown> = {};
      if (this.q.xGroq) {
        extra['x_groq'] = usage
          ? {
              id: this.groqId,
              usage: {
                queue_time: 0.01,
                prompt_tokens: usage.prompt_tokens,
                prompt_time: 0.001,
                completion_tokens: usage.completion_tokens,
                completion_time: (plan.pieces * this.interDelay) / 1000,
                total_tokens: usage.total_tokens,
                total_time: (this.firstDelay + plan.pieces * this.interDelay) / 1000,
              },
            }
          : { id: this.groqId };
      }
      const onFinish = this.q.usageChunk === 'finish-chunk' && this.p.includeUsage && usage !== null;
      const obj = this.chunkObject([this.choice({}, plan.finishReason)], { extra, ...(onFinish ? { usage } : {}) });
      await this.writeChunk(obj, 'chunk');
      this.rec.finishReason = plan.finishReason;
      if (onFinish) this.rec.usage = usage;
      if (this.stopped) return;
    }
    if (this.usageComing() && usage) {
      if (await this.faultBeforeChunk()) return;
      await this.writeChunk(this.chunkObject([], { usage }), 'usage');
      this.rec.usage = usage;
      if (this.stopped) return;
    }
    if (await this.faultBeforeChunk()) return;
    if (!this.rec.faults.omitDone) await this.write('done', DONE_EVENT);
    this.end('completed');
  }

  private async failStream(error: OpenAiErrorObject): Promise<void> {
    this.rec.error = error;
    const body = openAiErrorBody(error);
    await this.write('error', `data: ${body}\n\n`, { error });
    this.end('failed');
  }

  private stall(): void {
    this.rec.stalled = true;
    this.emu.changed();
  }

  private async drop(): Promise<void> {
    this.stopped = true;
    if (this.rec.finished) return;
    this.rec.outcome = 'dropped';
    this.rec.timing.endMs = this.ms();
    this.emu.changed();
    (this.res.socket ?? this.res).destroy();
  }

  private end(outcome: ChatOutcome): void {
    if (this.stopped) return; // the client went first (recorded as aborted) or shutdown
    this.stopped = true;
    this.rec.outcome = outcome;
    this.rec.timing.endMs = this.ms();
    this.res.end();
    this.emu.changed();
  }

  // ----- non-stream

  private async runJson(): Promise<void> {
    const f = this.rec.faults;
    const plan = this.plan;
    if (f.deadAir) return this.stall();
    let total = plan.pieces > 0 ? this.firstDelay + (plan.pieces - 1) * this.interDelay : this.firstDelay;
    for (const s of plan.steps) if (s.kind === 'delay') total += s.ms;
    const from = performance.now();
    const due = from + total;
    if (f.keepAliveEveryMs !== null && f.keepAliveEveryMs > 0) {
      // DeepSeek style: blank lines while the answer is generated
      this.sendHeaders('application/json');
      await this.waitWithKeepAlive(from, due, f.keepAliveEveryMs, () => void this.write('newline', '\n'));
    } else {
      await this.sleepUntil(due);
    }
    if (this.stopped) return;
    const firstAction = plan.steps.find((s) => s.kind === 'drop' || s.kind === 'stall' || s.kind === 'error');
    if (f.dropAfterChunks !== null || firstAction?.kind === 'drop') return this.drop();
    if (f.stallAfterChunks !== null || firstAction?.kind === 'stall') return this.stall();
    if (f.errorAfterChunks !== null || firstAction?.kind === 'error') {
      const error = firstAction?.kind === 'error' ? firstAction.error : openAiError(500, f.streamError ?? {}).error;
      this.rec.error = error;
      if (this.res.headersSent) {
        await this.write('body', openAiErrorBody(error), { error });
        this.end('failed');
        return;
      }
      const err = openAiError(500, { requestId: this.rec.requestId, ...error });
      this.rec.status = 500;
      this.rec.responseHeaders = err.headers;
      this.rec.events.push({ t: this.ms(), kind: 'body', data: err.body, json: { error } });
      sendOpenAiError(this.res, err);
      this.rec.outcome = 'failed';
      this.rec.timing.endMs = this.ms();
      this.stopped = true;
      this.emu.changed();
      return;
    }
    const message: Record<string, unknown> = { role: 'assistant', content: plan.toolCalls.length > 0 && plan.text === '' ? null : plan.text };
    if (plan.toolCalls.length > 0) {
      message['tool_calls'] = plan.toolCalls.map((c) => ({
        id: c.id,
        type: 'function',
        function: { name: c.name, arguments: c.arguments },
        ...(c.extra ?? {}),
      }));
    }
    if (this.q.openAiFields) {
      message['refusal'] = null;
      message['annotations'] = [];
    }
    if (this.extraFirstDelta) Object.assign(message, this.extraFirstDelta);
    const choice: Record<string, unknown> = { index: 0, message };
    if (this.q.openAiFields) choice['logprobs'] = null;
    choice['finish_reason'] = plan.finishReason ?? 'stop';
    const body: Record<string, unknown> = { id: this.id, object: 'chat.completion', created: this.created, model: this.model, choices: [choice] };
    if (plan.usage) body['usage'] = plan.usage;
    if (this.q.openAiFields) {
      body['service_tier'] = 'default';
      body['system_fingerprint'] = fingerprint(this.model);
    }
    if (this.q.xGroq) body['x_groq'] = { id: this.groqId };
    if (!this.res.headersSent) this.sendHeaders('application/json');
    this.rec.text = plan.text;
    this.rec.pieces = plan.pieces;
    this.rec.toolCalls = plan.toolCalls.map((c) => ({ index: c.index, id: c.id, name: c.name, arguments: c.arguments }));
    this.rec.finishReason = choice['finish_reason'] as string;
    this.rec.usage = plan.usage;
    this.rec.responseBody = body;
    this.rec.timing.firstTokenMs = this.ms();
    await this.write('body', JSON.stringify(body), body);
    this.end('completed');
  }
}

// =============================================================================================
// The emulator

export class OpenAiChatEmulator {
  readonly server: EmulatorServer;
  /** live options: changes apply to requests received afterwards */
  readonly options: ResolvedOpenAiChatOptions;
  /** every request to a chat completions path, in arrival order */
  readonly requests: ChatRequestRecord[] = [];
  /** every GET /models(/id) */
  readonly modelRequests: ModelListRequestRecord[] = [];
  /** server-wide fault switches (mutable) */
  faults: ChatFaults = defaultChatFaults();
  private nextFaults: Partial<ChatFaults>[] = [];
  private scripts: ChatReply[] = [];
  private responder: ChatResponder | null = null;
  private readonly limiter = new RateLimiter();
  private readonly generations = new Set<ChatGeneration>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly log: ((line: string) => void) | null;
  private nextId = 1;
  private shuttingDown = false;

  constructor(server: EmulatorServer, options: ResolvedOpenAiChatOptions, log: ((line: string) => void) | null) {
    this.server = server;
    this.options = options;
    this.log = log;
  }

  get url(): string {
    return this.server.url;
  }
  /** what an OpenAI SDK takes as baseURL: url + first base path (e.g. `${url}/v1`) */
  get baseUrl(): string {
    return `${this.server.url}${this.options.quirks.basePaths[0] ?? ''}`;
  }
  /** full endpoint URL */
  get chatUrl(): string {
    return `${this.baseUrl}${CHAT_COMPLETIONS_SUFFIX}`;
  }
  get port(): number {
    return this.server.port;
  }

  /** Answer the next accepted requests with these replies, in order (one per request). */
  script(...replies: ChatReply[]): void {
    this.scripts.push(...replies);
  }

  /** Replies still queued. */
  get pendingScripts(): number {
    return this.scripts.length;
  }

  /** Answer with this function when no script is queued (undefined result = default rules); null resets. */
  setResponder(fn: ChatResponder | null): void {
    this.responder = fn;
  }

  /** Apply these faults to the next request to a chat completions path only (queued, one per request). */
  faultNext(f: Partial<ChatFaults>): void {
    this.nextFaults.push(f);
  }

  /** Reset server-wide switches, queued faults, scripts and the responder. */
  resetFaults(): void {
    this.faults = defaultChatFaults();
    this.nextFaults = [];
    this.scripts = [];
    this.responder = null;
  }

  /** Notify waiters (records changed). */
  changed(): void {
    this.server.changed();
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  /** The n-th request (1-based) once it was received. */
  waitForRequest(n = 1, timeoutMs = 2000): Promise<ChatRequestRecord> {
    return this.waitFor(() => this.requests[n - 1], timeoutMs, `openai chat request #${n}`);
  }

  /** A request (default: the latest) once its HTTP exchange is over. */
  waitForDone(req?: ChatRequestRecord, timeoutMs = 2000): Promise<ChatRequestRecord> {
    return this.waitFor(() => {
      const r = req ?? this.requests[this.requests.length - 1];
      return r && r.finished ? r : undefined;
    }, timeoutMs, 'openai chat request done');
  }

  /** Current x-ratelimit-* headers for a key (empty without rate limits or key). */
  rateLimitHeadersFor(key: string | null): Record<string, string> {
    const rl = this.options.rateLimits;
    if (!rl || key === null) return {};
    return rateLimitHeaders(this.limiter.state(key, rl.requestsPerMinute, rl.tokensPerMinute));
  }

  /** Stop every answer and timer, close every socket, stop listening. */
  async close(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const g of this.generations) g.stop();
    this.generations.clear();
    for (const r of this.requests) {
      if (!r.finished) {
        if (r.outcome === 'pending') r.outcome = 'shutdown';
        r.finished = true;
      }
    }
    await this.server.close();
  }

  /** HTTP entry point (base.ts onHttpRequest). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const url = new URL(req.url ?? '/', 'http://emulator');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const requestId = openAiRequestId();
    let chatBase: string | null = null;
    let modelsBase: string | null = null;
    for (const base of this.options.quirks.basePaths) {
      if (path === `${base}${CHAT_COMPLETIONS_SUFFIX}`) chatBase = base;
      else if (path === `${base}${MODELS_SUFFIX}` || path.startsWith(`${base}${MODELS_SUFFIX}/`)) modelsBase ??= base;
    }
    if (modelsBase !== null && chatBase === null) {
      req.resume();
      if (method !== 'GET') return sendOpenAiError(res, openAiRouteError(method, url.pathname, 'method', requestId));
      return this.handleModels(req, res, path.slice(modelsBase.length + MODELS_SUFFIX.length + 1), requestId);
    }
    if (chatBase === null || method !== 'POST') {
      req.resume();
      sendOpenAiError(res, openAiRouteError(method, url.pathname, chatBase === null ? 'url' : 'method', requestId));
      return;
    }
    const faults: ChatFaults = { ...this.faults, ...(this.nextFaults.shift() ?? {}) };
    const rec: ChatRequestRecord = {
      id: this.nextId++,
      requestId,
      receivedAt: new Date(),
      method,
      path,
      basePath: chatBase,
      url: req.url ?? '/',
      headers: req.headers,
      apiKey: null,
      authorized: false,
      rawBody: '',
      body: undefined,
      params: null,
      model: null,
      stream: false,
      faults,
      replySource: null,
      reply: null,
      status: null,
      responseHeaders: {},
      error: null,
      events: [],
      chunks: 0,
      text: '',
      toolCalls: [],
      finishReason: null,
      usage: null,
      expectedUsage: null,
      pieces: 0,
      responseBody: null,
      timing: { headersMs: null, firstChunkMs: null, firstTokenMs: null, endMs: null },
      outcome: 'pending',
      aborted: false,
      abortedAtMs: null,
      stalled: false,
      finished: false,
    };
    this.requests.push(rec);
    const ms = () => Math.round((performance.now() - t0) * 10) / 10;
    let generation: ChatGeneration | null = null;
    res.on('close', () => {
      if (generation) {
        generation.stop();
        this.generations.delete(generation);
      }
      if (rec.finished) return;
      rec.finished = true;
      if (rec.outcome === 'pending') {
        rec.outcome = this.shuttingDown ? 'shutdown' : 'aborted';
        if (!this.shuttingDown) {
          rec.aborted = true;
          rec.abortedAtMs = ms();
        }
      }
      this.logDone(rec);
      this.changed();
    });
    this.changed();

    if (faults.responseDelayMs > 0) {
      await this.sleep(faults.responseDelayMs);
      if (res.destroyed || this.shuttingDown) return;
    }
    let raw: Buffer;
    try {
      raw = await readRequestBody(req, this.options.maxBodyBytes, this.options.bodyTimeoutMs);
    } catch (err) {
      const e = err instanceof BodyReadError ? err : new BodyReadError(400, String(err));
      if (e.status !== 499) this.reject(rec, res, openAiError(e.status, { requestId, message: e.message, code: null }));
      return;
    }
    if (res.destroyed || this.shuttingDown) return;
    rec.rawBody = raw.toString('utf8');
    let parsed: { ok: true; value: unknown } | { ok: false } = { ok: false };
    try {
      parsed = { ok: true, value: JSON.parse(rec.rawBody) as unknown };
      rec.body = parsed.value;
      if (isObj(parsed.value)) {
        if (typeof parsed.value['model'] === 'string') rec.model = parsed.value['model'];
        rec.stream = parsed.value['stream'] === true;
      }
    } catch {
      /* not JSON */
    }
    const auth = checkBearerAuth(req.headers, this.options.apiKeys, requestId);
    rec.apiKey = auth.key;
    if (faults.status !== null) {
      this.reject(rec, res, openAiError(faults.status, {
        requestId,
        ...(faults.error ?? {}),
        ...(faults.retryAfterMs !== null ? { retryAfterMs: faults.retryAfterMs } : {}),
        headers: { ...(auth.ok ? this.rateLimitHeadersFor(auth.key) : {}), ...(faults.headers ?? {}) },
      }));
      return;
    }
    if (!auth.ok) return this.reject(rec, res, auth.error);
    rec.authorized = true;
    const rlHeaders = () => this.rateLimitHeadersFor(auth.key);
    if (!parsed.ok) return this.reject(rec, res, openAiError(400, { requestId, message: OPENAI_INVALID_JSON_MESSAGE, code: null, headers: rlHeaders() }));
    const check = parseChatBody(parsed.value, { strict: this.options.quirks.strict, models: this.options.models });
    if (!check.ok) {
      return this.reject(rec, res, openAiError(check.status, { requestId, message: check.message, param: check.param, code: check.code, headers: rlHeaders() }));
    }
    const p = check.params;
    rec.params = p;
    const rl = this.options.rateLimits;
    if (rl) {
      const cost = countPromptTokens(p.messages, p.tools) + (p.maxTokens ?? 0);
      const got = this.limiter.take(auth.key, rl.requestsPerMinute, rl.tokensPerMinute, cost);
      if (!got.ok) {
        const wait = formatResetDuration(got.waitMs);
        const what = got.dim === 'requests' ? 'requests per min (RPM)' : 'tokens per min (TPM)';
        const requested = got.dim === 'requests' ? 1 : cost;
        const message = `Rate limit reached for ${p.model} in organization org-emulator on ${what}: Limit ${got.limit}, Used ${got.used}, Requested ${requested}. Please try again in ${wait}. Visit https://platform.openai.com/account/rate-limits to learn more.`;
        return this.reject(rec, res, openAiError(429, { requestId, message, type: got.dim, code: 'rate_limit_exceeded', retryAfterMs: Math.ceil(got.waitMs), headers: rlHeaders() }));
      }
    }
    let reply: ChatReply | undefined = this.scripts.shift();
    rec.replySource = reply ? 'script' : null;
    if (!reply && this.responder) {
      try {
        reply = await this.responder({ params: p, record: rec, lastUserText: lastUserText(p.messages), defaultReply: () => defaultChatReply(p) });
      } catch (err) {
        const message = `emulator responder failed: ${err instanceof Error ? err.message : String(err)}`;
        return this.reject(rec, res, openAiError(500, { requestId, message, headers: rlHeaders() }));
      }
      if (reply) rec.replySource = 'responder';
      if (res.destroyed || this.shuttingDown) return;
    }
    if (!reply) {
      reply = defaultChatReply(p);
      rec.replySource = 'default';
    }
    rec.reply = reply;
    if (reply.httpError) {
      const h = reply.httpError;
      return this.reject(rec, res, openAiError(h.status, {
        requestId,
        ...(h.error ?? {}),
        ...(h.retryAfterMs !== undefined ? { retryAfterMs: h.retryAfterMs } : {}),
        headers: { ...rlHeaders(), ...(h.headers ?? {}) },
      }));
    }
    const cachedOpt = this.options.cachedTokens;
    const prompt = countPromptTokens(p.messages, p.tools);
    const cached = typeof cachedOpt === 'function' ? cachedOpt(p, prompt) : cachedOpt;
    let plan: Plan;
    try {
      plan = buildPlan(reply, p, this.options.quirks, cached);
    } catch (err) {
      const message = `emulator failure: ${err instanceof Error ? err.message : String(err)}`;
      return this.reject(rec, res, openAiError(500, { requestId, message, headers: rlHeaders() }));
    }
    rec.expectedUsage = plan.usage;
    generation = new ChatGeneration(this, rec, p, reply, plan, res, t0);
    this.generations.add(generation);
    await generation.run();
  }

  private handleModels(req: IncomingMessage, res: ServerResponse, id: string, requestId: string): void {
    const auth = checkBearerAuth(req.headers, this.options.apiKeys, requestId);
    const rec: ModelListRequestRecord = { at: new Date(), path: req.url ?? '/', headers: req.headers, apiKey: auth.key, status: 0 };
    this.modelRequests.push(rec);
    const finish = (status: number) => {
      rec.status = status;
      this.changed();
    };
    if (!auth.ok) {
      sendOpenAiError(res, auth.error);
      return finish(401);
    }
    const list = this.options.models ?? [...DEFAULT_CHAT_MODELS];
    const entry = (m: string) => ({ id: m, object: 'model', created: 1_700_000_000, owned_by: 'system' });
    let body: unknown;
    if (id === '') body = { object: 'list', data: list.map(entry) };
    else {
      const name = decodeURIComponent(id);
      if (!list.includes(name)) {
        sendOpenAiError(res, openAiError(404, { requestId, message: `The model '${name}' does not exist`, param: 'model', code: 'model_not_found' }));
        return finish(404);
      }
      body = entry(name);
    }
    const data = Buffer.from(JSON.stringify(body), 'utf8');
    res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': requestId, 'openai-version': OPENAI_VERSION_HEADER, 'content-length': String(data.length) });
    res.end(data);
    finish(200);
  }

  private reject(rec: ChatRequestRecord, res: ServerResponse, err: OpenAiErrorResponse): void {
    if (res.destroyed) return;
    rec.status = err.status;
    rec.error = err.error;
    rec.responseHeaders = err.headers;
    rec.outcome = 'rejected';
    rec.events.push({ t: Date.now() - rec.receivedAt.getTime(), kind: 'body', data: err.body, json: { error: err.error } });
    sendOpenAiError(res, err);
    this.changed();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  private logDone(r: ChatRequestRecord): void {
    if (!this.log) return;
    this.log(
      `#${r.id} ${r.method} ${r.url} -> ${r.status ?? '-'} ${r.outcome}` +
        (r.model ? ` model=${r.model}` : '') +
        ` stream=${r.stream} chunks=${r.chunks} pieces=${r.pieces}` +
        (r.finishReason ? ` finish=${r.finishReason}` : '') +
        (r.usage ? ` usage=${r.usage.prompt_tokens}+${r.usage.completion_tokens}` : '') +
        (r.error ? ` error=${JSON.stringify(r.error.message.slice(0, 120))}` : ''),
    );
  }
}

export async function startOpenAiChatEmulator(opts: OpenAiChatEmulatorOptions = {}): Promise<OpenAiChatEmulator> {
  const vendor = opts.vendor ?? 'openai';
  const preset = CHAT_VENDOR_QUIRKS[vendor];
  if (!preset) throw new Error(`unknown vendor ${String(vendor)}`);
  const quirks: ChatQuirks = { ...preset, ...(opts.quirks ?? {}) };
  quirks.basePaths = quirks.basePaths.map((b) => b.replace(/\/+$/, ''));
  const options: ResolvedOpenAiChatOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_OPENAI_API_KEY],
    vendor,
    quirks,
    models: opts.models ?? null,
    modelAliases: opts.modelAliases ?? {},
    firstTokenDelayMs: opts.firstTokenDelayMs ?? 10,
    interTokenDelayMs: opts.interTokenDelayMs ?? 2,
    cachedTokens: opts.cachedTokens ?? 0,
    rateLimits: opts.rateLimits === undefined ? { requestsPerMinute: 5000, tokensPerMinute: 4_000_000 } : opts.rateLimits,
    bodyTimeoutMs: opts.bodyTimeoutMs ?? 10_000,
    maxBodyBytes: opts.maxBodyBytes ?? 4 << 20,
  };
  let emu: OpenAiChatEmulator | null = null;
  const server = await startEmulatorServer<never>({
    name: 'openai-chat',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    onUpgrade: (ctx) => {
      const e = openAiRouteError('GET', ctx.url.pathname, 'url', openAiRequestId());
      return { accept: false, status: 404, headers: { 'x-request-id': e.headers['x-request-id']! }, body: e.body };
    },
    onConnection: () => {
      throw new Error('openai-chat accepts no WebSocket');
    },
    onHttpRequest: (req, res) => emu!.handle(req, res),
  });
  emu = new OpenAiChatEmulator(server, options, opts.log ?? null);
  return emu;
}
