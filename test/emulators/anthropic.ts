/**
 * Emulator of Anthropic's Messages API `POST /v1/messages` (non-streaming and SSE streaming):
 * https://platform.claude.com/docs/en/api/messages
 *
 * Written from Anthropic's public documentation, never from the gateway adapter:
 * - Messages API reference (create / count_tokens body parameters, `messages` rules: "Consecutive
 *   `user` or `assistant` turns in your request will be combined into a single turn", content as a
 *   string or blocks, text/image/tool_use/tool_result/document block shapes, cache_control
 *   {type: ephemeral, ttl 5m|1h}, `system` string or text blocks, tools, tool_choice, stop_reason
 *   values, usage fields incl. cache_creation_input_tokens / cache_read_input_tokens).
 * - Streaming Messages (https://platform.claude.com/docs/en/build-with-claude/streaming): SSE with
 *   `event:` + `data:` lines; message_start (Message with empty content) -> per block
 *   content_block_start / content_block_delta (text_delta, input_json_delta with partial_json
 *   strings; the documented tool_use example begins with an empty partial_json) /
 *   content_block_stop -> message_delta (stop_reason, stop_sequence; usage is cumulative) ->
 *   message_stop; `ping` events anywhere; `event: error` with
 *   `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` mid-stream.
 * - Errors (https://platform.claude.com/docs/en/api/errors): 400 invalid_request_error (also other
 *   4XX), 401 authentication_error, 402 billing_error, 403 permission_error, 404 not_found_error,
 *   409 conflict_error, 413 request_too_large (Messages API: 32 MB), 429 rate_limit_error, 500
 *   api_error, 504 timeout_error, 529 overloaded_error; body
 *   `{"type":"error","error":{"type","message"},"request_id"}`; every response carries a
 *   `request-id` header (`req_...`) equal to the body's request_id.
 * - Rate limits (https://platform.claude.com/docs/en/api/rate-limits): `retry-after` (seconds) on
 *   429, `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
 *   with RFC 3339 reset times.
 * - Versioning (https://platform.claude.com/docs/en/api/versioning): `anthropic-version` header is
 *   required (2023-06-01; 2023-01-01 is the older accepted value).
 * - Tool use guide ("How to implement tool use"): tool_result blocks must immediately follow the
 *   tool_use turn and come FIRST in the user content; tool_use ids `toolu_...`; tool_choice
 *   auto|any|tool|none (any/tool: no text before the tool_use, the API prefills the turn).
 * Observed error texts quoted by many public client repositories (marked OBSERVED below):
 * "x-api-key header is required", "invalid x-api-key", "anthropic-version: header is required",
 * "max_tokens: Field required", "<key>: Extra inputs are not permitted", "model: <name>" (404),
 * `messages: first message must use the "user" role`, "messages.N: `tool_use` ids were found
 * without `tool_result` blocks immediately after: ID. Each `tool_use` block must have a
 * corresponding `tool_result` block in the next message.", "messages.N.content.M: unexpected
 * `tool_use_id` found in `tool_result` blocks: ID. Each `tool_result` block must have a
 * corresponding `tool_use` block in the previous message.", "messages.N: all messages must have
 * non-empty content except for the optional final assistant message", "messages: text content
 * blocks must be non-empty", "Request exceeds the maximum allowed number of bytes.".
 *
 * Deterministic rules (see README "Anthropic Messages" for the full list):
 * - Checks in order: route (404/405), injected fault status, x-api-key (401), anthropic-version
 *   (400), JSON (400), schema (400, first problem only), model list (404), key permissions (403),
 *   rate limits (429), then the reply (scripted error, or 200).
 * - Reply, first match: a queued script (`emu.enqueue`), `emu.responder`, else the default:
 *   last user turn has tool_result blocks -> "Tool <name> returned: <content>" (or "failed: ..."
 *   when is_error) per result; tools given, tool_choice not none and the last user text contains
 *   "call <toolname>" (optionally followed by a JSON object = the input) -> "Calling <names>."
 *   then one tool_use per call, stop_reason tool_use (tool_choice any/tool forces a call and
 *   drops the text); else "You said: <last user text>".
 * - Text streams as word pieces (`/\s*\S+/`: leading whitespace + one word), tool input as
 *   `jsonChunkChars` (8) character fragments of the compact JSON after an empty first fragment.
 *   One output token per piece/fragment; max_tokens cuts there (stop_reason max_tokens);
 *   stop_sequences cut text before the earliest match (stop_reason stop_sequence).
 * - Usage: input_tokens = ceil(chars / 4) over tools (compact JSON each), system text, and
 *   message blocks (text, tool_use name + JSON input, tool_result text, thinking text; an image is
 *   1600 tokens; other blocks their JSON) minus the cached prefix; prompt caching is simulated
 *   (first request with a cache_control prefix -> cache_creation_input_tokens, the same prefix
 *   again within its ttl -> cache_read_input_tokens) or fixed (`cache: {readTokens}`);
 *   output_tokens = pieces + fragments (at least 1, as the docs say output is never 0).
 *
 * UNCERTAIN choices (not settled by the docs):
 * - Auth is checked before the version header; a bad version value is 400
 *   `anthropic-version: "<v>" is not a valid version` (text invented).
 * - First message must be `user` (`requireUserFirst`, default true): the current reference no
 *   longer states it, but the observed 400 exists. Consecutive same-role turns are combined
 *   (documented) and never an error; tool pairing is checked on the combined turns.
 * - Message indexes in tool pairing errors: the last original message of the assistant turn.
 *   A trailing assistant turn with unanswered tool_use (prefill) is accepted. A prefilled final
 *   assistant turn does not change the reply (it is computed from the last user turn).
 * - Non-JSON body -> 400 "There was an error parsing the body: ..."; empty messages -> 400
 *   "messages: at least one message is required"; unknown route -> 404 "Not Found", wrong
 *   method -> 405 invalid_request_error; tool_use in a user turn / tool_result in an assistant
 *   turn, bad tool_choice, duplicate tool names -> 400 with invented texts.
 * - message_start carries output_tokens 1; message_delta repeats input/cache usage (the SDK types
 *   say cumulative) and the final output_tokens. The one `ping` follows the first
 *   content_block_start (as in the docs example); periodic pings only with `pingIntervalMs`.
 * - A tool_use cut by max_tokens keeps its streamed fragments but `input: {}` in the final message.
 * - Mid-stream error events carry no request_id (as in the docs example).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { startEmulatorServer, type EmulatorServer, type TlsOptions } from './base.ts';
import { BodyReadError, readRequestBody } from './openai-speech.ts';

// =============================================================================================
// Constants

export const MESSAGES_PATH = '/v1/messages';
export const DEFAULT_ANTHROPIC_API_KEY = 'sk-ant-test-key';
export const ANTHROPIC_VERSION = '2023-06-01';
export const ANTHROPIC_VERSIONS: readonly string[] = ['2023-06-01', '2023-01-01'];
/** Characters per input token (the documented rule of thumb, used as an exact rule here). */
export const CHARS_PER_TOKEN = 4;
/** Input tokens of one image block (the documented maximum for a ~1.15 MP image). */
export const IMAGE_TOKENS = 1600;
/** Documented Messages API request size limit. */
export const MAX_BODY_BYTES = 32 * 1024 * 1024;
/**
 * Timing that looks like the real service (UNCERTAIN; varies by model and load): first text
 * ~0.5-1 s after the request, then ~50 tokens/s.
 */
export const ANTHROPIC_REALISTIC_TIMING = { firstTokenDelayMs: 600, interTokenDelayMs: 20 } as const;

export type StopReason = 'end_turn' | 'max_tokens' | 'stop_sequence' | 'tool_use' | 'pause_turn' | 'refusal';

// =============================================================================================
// Errors

export type AnthropicErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'billing_error'
  | 'permission_error'
  | 'not_found_error'
  | 'conflict_error'
  | 'request_too_large'
  | 'rate_limit_error'
  | 'api_error'
  | 'timeout_error'
  | 'overloaded_error';

export const ERROR_TYPE_BY_STATUS: Readonly<Record<number, AnthropicErrorType>> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  402: 'billing_error',
  403: 'permission_error',
  404: 'not_found_error',
  409: 'conflict_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  504: 'timeout_error',
  529: 'overloaded_error',
};

export const STATUS_BY_ERROR_TYPE: Readonly<Record<AnthropicErrorType, number>> = {
  invalid_request_error: 400,
  authentication_error: 401,
  billing_error: 402,
  permission_error: 403,
  not_found_error: 404,
  conflict_error: 409,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  timeout_error: 504,
  overloaded_error: 529,
};

export const RATE_LIMIT_MESSAGE =
  'This request would exceed the rate limit for your organization of {limit} {what} per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.';

const DEFAULT_MESSAGES: Record<AnthropicErrorType, string> = {
  invalid_request_error: 'Invalid request.',
  authentication_error: 'invalid x-api-key',
  billing_error: 'Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.',
  permission_error: 'Your API key does not have permission to use the specified resource.',
  not_found_error: 'The requested resource could not be found.',
  conflict_error: 'The request conflicts with the current state of the resource.',
  request_too_large: 'Request exceeds the maximum allowed number of bytes.',
  rate_limit_error: RATE_LIMIT_MESSAGE.replace('{limit}', '50').replace('{what}', 'requests'),
  api_error: 'Internal server error',
  timeout_error: 'Request timeout',
  overloaded_error: 'Overloaded',
};

export interface AnthropicErrorObject {
  type: string;
  message: string;
}

export interface AnthropicErrorResponse {
  status: number;
  headers: Record<string, string>;
  error: AnthropicErrorObject;
  requestId: string;
  /** `{"type":"error","error":{...},"request_id":"req_..."}` */
  body: string;
}

export interface AnthropicErrorOptions {
  type?: string;
  message?: string;
  requestId?: string;
  /** `retry-after` in seconds (rounded up); default 1000 ms for 429 and 529 */
  retryAfterMs?: number | null;
  headers?: Record<string, string>;
}

/** The error type the API uses for a status (other 4XX: invalid_request_error, other 5XX: api_error). */
export function anthropicErrorType(status: number): AnthropicErrorType {
  return ERROR_TYPE_BY_STATUS[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
}

const BASE62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function base62(n: number): string {
  const bytes = randomBytes(n);
  let s = '';
  for (const b of bytes) s += BASE62[b % 62];
  return s;
}

/** `req_011C` + 20 base62 characters (the real ids are `req_` + 24 characters). */
export function anthropicRequestId(): string {
  return `req_011C${base62(20)}`;
}

/** `msg_01` + 22 base62 characters. */
export function anthropicMessageId(): string {
  return `msg_01${base62(22)}`;
}

/** `toolu_01` + 22 base62 characters. */
export function anthropicToolUseId(): string {
  return `toolu_01${base62(22)}`;
}

/** A vendor-shaped error: status, headers (request-id, content-type, retry-after) and body. */
export function anthropicError(status: number, o: AnthropicErrorOptions = {}): AnthropicErrorResponse {
  const type = o.type ?? anthropicErrorType(status);
  const message = o.message ?? DEFAULT_MESSAGES[type as AnthropicErrorType] ?? 'Error';
  const requestId = o.requestId ?? anthropicRequestId();
  const error: AnthropicErrorObject = { type, message };
  const headers: Record<string, string> = { 'content-type': 'application/json', 'request-id': requestId };
  const retryMs = o.retryAfterMs !== undefined ? o.retryAfterMs : status === 429 || status === 529 ? 1000 : null;
  if (retryMs !== null) headers['retry-after'] = String(Math.max(0, Math.ceil(retryMs / 1000)));
  Object.assign(headers, o.headers ?? {});
  return { status, headers, error, requestId, body: JSON.stringify({ type: 'error', error, request_id: requestId }) };
}

/** Write an error response (no-op when the response is already gone). */
export function sendAnthropicError(res: ServerResponse, err: AnthropicErrorResponse): void {
  if (res.headersSent || res.destroyed) return;
  const body = Buffer.from(err.body, 'utf8');
  res.writeHead(err.status, { ...err.headers, 'content-length': String(body.length) });
  res.end(body);
}

// =============================================================================================
// Request parameters and validation

export interface CacheControl {
  type: 'ephemeral';
  ttl?: '5m' | '1h';
}

/** A request content block as received (validated for the types the emulator understands). */
export interface ContentBlockParam {
  type: string;
  [key: string]: unknown;
}

export interface MessageParam {
  role: 'user' | 'assistant';
  content: string | ContentBlockParam[];
}

export interface ToolParam {
  name: string;
  description?: string;
  input_schema?: Record<string, unknown>;
  /** server tools (web_search_..., bash_..., text_editor_...) have a type; custom tools none or 'custom' */
  type?: string;
  cache_control?: CacheControl | null;
  [key: string]: unknown;
}

export type ToolChoice =
  | { type: 'auto'; disable_parallel_tool_use?: boolean }
  | { type: 'any'; disable_parallel_tool_use?: boolean }
  | { type: 'tool'; name: string; disable_parallel_tool_use?: boolean }
  | { type: 'none' };

/** One block of a combined turn, with where it came from. */
export interface TurnBlock {
  block: ContentBlockParam;
  /** index in `messages` */
  message: number;
  /** index in that message's content (0 for string content) */
  index: number;
}

/** Consecutive same-role messages combined (documented), string content as one text block. */
export interface Turn {
  role: 'user' | 'assistant';
  /** indexes in `messages` */
  messages: number[];
  blocks: TurnBlock[];
}

export interface MessagesParams {
  model: string;
  max_tokens: number;
  messages: MessageParam[];
  system: string | ContentBlockParam[] | null;
  tools: ToolParam[];
  tool_choice: ToolChoice | null;
  temperature: number | null;
  top_p: number | null;
  top_k: number | null;
  stop_sequences: string[];
  stream: boolean;
  metadata: { user_id?: string | null } | null;
  turns: Turn[];
  /** documented keys the emulator accepts and ignores (thinking, service_tier, ...) */
  ignored: string[];
  /** unknown keys kept because of allowUnknownParams */
  unknown: string[];
}

export type MessagesCheck = { ok: true; params: MessagesParams } | { ok: false; status: number; message: string };

const KNOWN_KEYS = new Set([
  'model', 'max_tokens', 'messages', 'system', 'tools', 'tool_choice', 'temperature', 'top_p', 'top_k',
  'stop_sequences', 'stream', 'metadata',
]);
/** Documented parameters outside the emulator's scope: accepted, recorded in `ignored`. */
const IGNORED_KEYS = new Set([
  'thinking', 'service_tier', 'container', 'mcp_servers', 'context_management', 'output_config', 'output_format',
  'inference_geo', 'betas',
]);
const BLOCK_TYPES = [
  'text', 'image', 'document', 'search_result', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result',
  'server_tool_use', 'web_search_tool_result', 'web_fetch_tool_result', 'code_execution_tool_result',
  'container_upload',
];
const IMAGE_MEDIA_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp'];
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,128}$/;

class Invalid extends Error {
  readonly status: number;
  constructor(message: string, status = 400) {
    super(message);
    this.status = status;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function tagList(values: readonly string[]): string {
  return values.map((v) => `'${v}'`).join(', ');
}

function checkCacheControl(path: string, v: unknown): void {
  if (v === undefined || v === null) return;
  if (!isObject(v)) throw new Invalid(`${path}.cache_control: Input should be a valid dictionary`);
  if (v['type'] !== 'ephemeral') throw new Invalid(`${path}.cache_control.type: Input should be 'ephemeral'`);
  if (v['ttl'] !== undefined && v['ttl'] !== '5m' && v['ttl'] !== '1h') {
    throw new Invalid(`${path}.cache_control.ttl: Input should be '5m' or '1h'`);
  }
}

function checkString(path: string, v: unknown): string {
  if (v === undefined) throw new Invalid(`${path}: Field required`);
  if (typeof v !== 'string') throw new Invalid(`${path}: Input should be a valid string`);
  return v;
}

function checkTextBlock(path: string, b: Record<string, unknown>, root: string): void {
  const text = checkString(`${path}.text`, b['text']);
  if (text === '') throw new Invalid(`${root}: text content blocks must be non-empty`);
  checkCacheControl(path, b['cache_control']);
}

function checkImageBlock(path: string, b: Record<string, unknown>): void {
  const src = b['source'];
  if (src === undefined) throw new Invalid(`${path}.source: Field required`);
  if (!isObject(src)) throw new Invalid(`${path}.source: Input should be a valid dictionary or object to extract fields from`);
  const t = src['type'];
  if (t === 'base64') {
    const mt = src['media_type'];
    if (typeof mt !== 'string' || !IMAGE_MEDIA_TYPES.includes(mt)) {
      throw new Invalid(`${path}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'`);
    }
    checkString(`${path}.source.base64.data`, src['data']);
  } else if (t === 'url') {
    checkString(`${path}.source.url.url`, src['url']);
  } else if (t === 'file') {
    checkString(`${path}.source.file.file_id`, src['file_id']);
  } else {
    throw new Invalid(`${path}.source: Input tag '${String(t)}' found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'`);
  }
  checkCacheControl(path, b['cache_control']);
}

function checkBlock(path: string, v: unknown, role: 'user' | 'assistant'): ContentBlockParam {
  if (!isObject(v)) throw new Invalid(`${path}: Input should be a valid dictionary or object to extract fields from`);
  const t = v['type'];
  if (t === undefined) throw new Invalid(`${path}: Unable to extract tag using discriminator 'type'`);
  if (typeof t !== 'string' || !BLOCK_TYPES.includes(t)) {
    throw new Invalid(`${path}: Input tag '${String(t)}' found using 'type' does not match any of the expected tags: ${tagList(BLOCK_TYPES)}`);
  }
  switch (t) {
    case 'text':
      checkTextBlock(path, v, 'messages');
      break;
    case 'image':
      checkImageBlock(path, v);
      break;
    case 'tool_use': {
      if (role !== 'assistant') throw new Invalid(`${path}: \`tool_use\` blocks can only be in \`assistant\` messages`);
      checkString(`${path}.id`, v['id']);
      const name = checkString(`${path}.name`, v['name']);
      if (!TOOL_NAME.test(name)) throw new Invalid(`${path}.name: String should match pattern '${TOOL_NAME.source}'`);
      if (v['input'] === undefined) throw new Invalid(`${path}.input: Field required`);
      if (!isObject(v['input'])) throw new Invalid(`${path}.input: Input should be a valid dictionary`);
      checkCacheControl(path, v['cache_control']);
      break;
    }
    case 'tool_result': {
      if (role !== 'user') throw new Invalid(`${path}: \`tool_result\` blocks can only be in \`user\` messages`);
      checkString(`${path}.tool_use_id`, v['tool_use_id']);
      const c = v['content'];
      if (c !== undefined && typeof c !== 'string') {
        if (!Array.isArray(c)) throw new Invalid(`${path}.content: Input should be a valid list`);
        c.forEach((inner: unknown, k: number) => {
          const p = `${path}.content.${k}`;
          if (!isObject(inner)) throw new Invalid(`${p}: Input should be a valid dictionary or object to extract fields from`);
          if (inner['type'] === 'text') checkTextBlock(p, inner, 'messages');
          else if (inner['type'] === 'image') checkImageBlock(p, inner);
          else if (!['document', 'search_result', 'tool_reference'].includes(String(inner['type']))) {
            throw new Invalid(`${p}: Input tag '${String(inner['type'])}' found using 'type' does not match any of the expected tags: 'text', 'image', 'search_result', 'document', 'tool_reference'`);
          }
        });
      }
      if (v['is_error'] !== undefined && typeof v['is_error'] !== 'boolean') {
        throw new Invalid(`${path}.is_error: Input should be a valid boolean`);
      }
      checkCacheControl(path, v['cache_control']);
      break;
    }
    default:
      checkCacheControl(path, v['cache_control']);
  }
  return v as ContentBlockParam;
}

function checkNumber(key: string, v: unknown, min: number, max: number, integer: boolean): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Invalid(`${key}: Input should be a valid ${integer ? 'integer' : 'number'}`);
  if (integer && !Number.isInteger(v)) throw new Invalid(`${key}: Input should be a valid integer, got a number with a fractional part`);
  if (v < min) throw new Invalid(`${key}: Input should be greater than or equal to ${min}`);
  if (v > max) throw new Invalid(`${key}: Input should be less than or equal to ${max}`);
  return v;
}

/** Blocks of one message as a list (string content = one text block). */
export function contentBlocks(content: string | ContentBlockParam[]): ContentBlockParam[] {
  return typeof content === 'string' ? [{ type: 'text', text: content }] : content;
}

function combineTurns(messages: MessageParam[]): Turn[] {
  const turns: Turn[] = [];
  messages.forEach((m, i) => {
    const blocks = contentBlocks(m.content).map((block, index) => ({ block, message: i, index }));
    const last = turns[turns.length - 1];
    if (last && last.role === m.role) {
      last.messages.push(i);
      last.blocks.push(...blocks);
    } else {
      turns.push({ role: m.role, messages: [i], blocks });
    }
  });
  return turns;
}

function checkToolPairing(turns: Turn[]): void {
  const seen = new Set<string>();
  for (const t of turns) {
    for (const b of t.blocks) {
      if (b.block.type !== 'tool_use') continue;
      const id = b.block['id'] as string;
      if (seen.has(id)) throw new Invalid(`messages.${b.message}.content.${b.index}: \`tool_use\` ids must be unique`);
      seen.add(id);
    }
  }
  turns.forEach((t, k) => {
    if (t.role !== 'user') return;
    const prev = k > 0 ? turns[k - 1] : undefined;
    const asked = prev ? prev.blocks.filter((b) => b.block.type === 'tool_use').map((b) => b.block['id'] as string) : [];
    if (asked.length > 0) {
      const leading: string[] = [];
      for (const b of t.blocks) {
        if (b.block.type !== 'tool_result') break;
        leading.push(b.block['tool_use_id'] as string);
      }
      const missing = asked.filter((id) => !leading.includes(id));
      if (missing.length > 0) {
        const at = prev!.messages[prev!.messages.length - 1]!;
        throw new Invalid(
          `messages.${at}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${missing.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next message.`,
        );
      }
    }
    for (const b of t.blocks) {
      if (b.block.type !== 'tool_result') continue;
      const id = b.block['tool_use_id'] as string;
      if (!asked.includes(id)) {
        throw new Invalid(
          `messages.${b.message}.content.${b.index}: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${id}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous message.`,
        );
      }
    }
  });
}

export interface ParseOptions {
  /** accept (and record) unknown top-level keys instead of 400 Extra inputs (default false) */
  allowUnknownParams?: boolean;
  /** 400 when the first message is not `user` (default true, UNCERTAIN) */
  requireUserFirst?: boolean;
  /** max_tokens above this -> 400 (default 128000) */
  maxOutputTokens?: number;
}

/** Validate a parsed `/v1/messages` body; the first problem wins, as the API reports one message. */
export function parseMessagesBody(body: unknown, o: ParseOptions = {}): MessagesCheck {
  try {
    return { ok: true, params: parseOrThrow(body, o) };
  } catch (err) {
    if (err instanceof Invalid) return { ok: false, status: err.status, message: err.message };
    throw err;
  }
}

function parseOrThrow(body: unknown, o: ParseOptions): MessagesParams {
  if (!isObject(body)) throw new Invalid('Input should be a valid dictionary or object to extract fields from');
  const b = body;
  const unknown = Object.keys(b).filter((k) => !KNOWN_KEYS.has(k) && !IGNORED_KEYS.has(k));
  if (!o.allowUnknownParams && unknown.length > 0) throw new Invalid(`${unknown[0]}: Extra inputs are not permitted`);
  const ignored = Object.keys(b).filter((k) => IGNORED_KEYS.has(k));

  const model = checkString('model', b['model']);
  if (b['max_tokens'] === undefined) throw new Invalid('max_tokens: Field required');
  const maxTokens = checkNumber('max_tokens', b['max_tokens'], 1, Number.MAX_SAFE_INTEGER, true)!;
  const maxOut = o.maxOutputTokens ?? 128_000;
  if (maxTokens > maxOut) {
    throw new Invalid(`max_tokens: ${maxTokens} > ${maxOut}, which is the maximum allowed number of output tokens for ${model}`);
  }

  const rawMessages = b['messages'];
  if (rawMessages === undefined) throw new Invalid('messages: Field required');
  if (!Array.isArray(rawMessages)) throw new Invalid('messages: Input should be a valid list');
  if (rawMessages.length === 0) throw new Invalid('messages: at least one message is required');
  const messages: MessageParam[] = rawMessages.map((m: unknown, i: number) => {
    const p = `messages.${i}`;
    if (!isObject(m)) throw new Invalid(`${p}: Input should be a valid dictionary or object to extract fields from`);
    const role = m['role'];
    if (role === undefined) throw new Invalid(`${p}.role: Field required`);
    if (role === 'system') {
      throw new Invalid('messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, not "system" as an input message role.');
    }
    if (role !== 'user' && role !== 'assistant') throw new Invalid(`${p}.role: Input should be 'user' or 'assistant'`);
    const c = m['content'];
    if (c === undefined) throw new Invalid(`${p}.content: Field required`);
    const finalAssistant = role === 'assistant' && i === rawMessages.length - 1;
    let content: string | ContentBlockParam[];
    if (typeof c === 'string') {
      content = c;
    } else if (Array.isArray(c)) {
      content = c.map((blk: unknown, j: number) => checkBlock(`${p}.content.${j}`, blk, role));
    } else {
      throw new Invalid(`${p}.content: Input should be a valid list`);
    }
    if (!finalAssistant && (content === '' || (Array.isArray(content) && content.length === 0))) {
      throw new Invalid(`${p}: all messages must have non-empty content except for the optional final assistant message`);
    }
    return { role, content };
  });
  if ((o.requireUserFirst ?? true) && messages[0]!.role !== 'user') {
    throw new Invalid('messages: first message must use the "user" role');
  }

  let system: string | ContentBlockParam[] | null = null;
  const rawSystem = b['system'];
  if (rawSystem !== undefined && rawSystem !== null) {
    if (typeof rawSystem === 'string') {
      system = rawSystem;
    } else if (Array.isArray(rawSystem)) {
      system = rawSystem.map((blk: unknown, j: number) => {
        const p = `system.${j}`;
        if (!isObject(blk)) throw new Invalid(`${p}: Input should be a valid dictionary or object to extract fields from`);
        if (blk['type'] !== 'text') throw new Invalid(`${p}.type: Input should be 'text'`);
        checkTextBlock(p, blk, 'system');
        return blk as ContentBlockParam;
      });
    } else {
      throw new Invalid('system: Input should be a valid string');
    }
  }

  const tools: ToolParam[] = [];
  const rawTools = b['tools'];
  if (rawTools !== undefined && rawTools !== null) {
    if (!Array.isArray(rawTools)) throw new Invalid('tools: Input should be a valid list');
    rawTools.forEach((t: unknown, j: number) => {
      const p = `tools.${j}`;
      if (!isObject(t)) throw new Invalid(`${p}: Input should be a valid dictionary or object to extract fields from`);
      const custom = t['type'] === undefined || t['type'] === null || t['type'] === 'custom';
      const cp = custom ? `${p}.custom` : p;
      const name = checkString(`${cp}.name`, t['name']);
      if (!TOOL_NAME.test(name)) throw new Invalid(`${cp}.name: String should match pattern '${TOOL_NAME.source}'`);
      if (custom) {
        const schema = t['input_schema'];
        if (schema === undefined) throw new Invalid(`${cp}.input_schema: Field required`);
        if (!isObject(schema)) throw new Invalid(`${cp}.input_schema: Input should be a valid dictionary`);
        if (schema['type'] !== 'object') throw new Invalid(`${cp}.input_schema.type: Input should be 'object'`);
        if (t['description'] !== undefined && typeof t['description'] !== 'string') {
          throw new Invalid(`${cp}.description: Input should be a valid string`);
        }
      }
      checkCacheControl(cp, t['cache_control']);
      if (tools.some((x) => x.name === name)) throw new Invalid('tools: Tool names must be unique.');
      tools.push(t as ToolParam);
    });
  }

  let toolChoice: ToolChoice | null = null;
  const rawChoice = b['tool_choice'];
  if (rawChoice !== undefined && rawChoice !== null) {
    if (!isObject(rawChoice)) throw new Invalid('tool_choice: Input should be a valid dictionary or object to extract fields from');
    const t = rawChoice['type'];
    if (t !== 'auto' && t !== 'any' && t !== 'tool' && t !== 'none') {
      throw new Invalid(`tool_choice: Input tag '${String(t)}' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'`);
    }
    const dp = rawChoice['disable_parallel_tool_use'];
    if (dp !== undefined && typeof dp !== 'boolean') throw new Invalid(`tool_choice.${t}.disable_parallel_tool_use: Input should be a valid boolean`);
    if (t === 'tool') {
      const name = checkString('tool_choice.tool.name', rawChoice['name']);
      if (!tools.some((x) => x.name === name)) throw new Invalid(`tool_choice: Tool '${name}' not found in provided tools`);
    }
    if ((t === 'any' || t === 'tool') && tools.length === 0) {
      throw new Invalid('tool_choice: `tool_choice` may only be specified while providing tools.');
    }
    toolChoice = rawChoice as ToolChoice;
  }

  const temperature = checkNumber('temperature', b['temperature'], 0, 1, false);
  const topP = checkNumber('top_p', b['top_p'], 0, 1, false);
  const topK = checkNumber('top_k', b['top_k'], 0, Number.MAX_SAFE_INTEGER, true);

  const stopSequences: string[] = [];
  const rawStops = b['stop_sequences'];
  if (rawStops !== undefined && rawStops !== null) {
    if (!Array.isArray(rawStops)) throw new Invalid('stop_sequences: Input should be a valid list');
    rawStops.forEach((s: unknown, j: number) => stopSequences.push(checkString(`stop_sequences.${j}`, s)));
  }

  let stream = false;
  if (b['stream'] !== undefined && b['stream'] !== null) {
    if (typeof b['stream'] !== 'boolean') throw new Invalid('stream: Input should be a valid boolean');
    stream = b['stream'];
  }

  let metadata: { user_id?: string | null } | null = null;
  const rawMeta = b['metadata'];
  if (rawMeta !== undefined && rawMeta !== null) {
    if (!isObject(rawMeta)) throw new Invalid('metadata: Input should be a valid dictionary');
    for (const k of Object.keys(rawMeta)) if (k !== 'user_id') throw new Invalid(`metadata.${k}: Extra inputs are not permitted`);
    const uid = rawMeta['user_id'];
    if (uid !== undefined && uid !== null && typeof uid !== 'string') throw new Invalid('metadata.user_id: Input should be a valid string');
    metadata = rawMeta as { user_id?: string | null };
  }

  const turns = combineTurns(messages);
  checkToolPairing(turns);

  return {
    model,
    max_tokens: maxTokens,
    messages,
    system,
    tools,
    tool_choice: toolChoice,
    temperature,
    top_p: topP,
    top_k: topK,
    stop_sequences: stopSequences,
    stream,
    metadata,
    turns,
    ignored,
    unknown: o.allowUnknownParams ? unknown : [],
  };
}

// =============================================================================================
// Token accounting

export interface InputTokenCount {
  /** every input token: ceil(chars / 4), images 1600 each */
  total: number;
  /** tokens up to and including the last cache_control breakpoint (0 without one) */
  prefix: number;
  /** ttl of that breakpoint */
  ttl: '5m' | '1h' | null;
  /** identifies the cached prefix (model + content up to the breakpoint) */
  prefixKey: string | null;
  /** true when any block/tool carries cache_control */
  hasBreakpoint: boolean;
}

function textOfToolResultContent(c: unknown): { chars: number; images: number } {
  if (c === undefined || c === null) return { chars: 0, images: 0 };
  if (typeof c === 'string') return { chars: c.length, images: 0 };
  let chars = 0;
  let images = 0;
  if (Array.isArray(c)) {
    for (const inner of c) {
      if (!isObject(inner)) continue;
      if (inner['type'] === 'text') chars += String(inner['text'] ?? '').length;
      else if (inner['type'] === 'image') images++;
      else chars += JSON.stringify(inner).length;
    }
  }
  return { chars, images };
}

/** Characters a block is billed as (images as IMAGE_TOKENS x CHARS_PER_TOKEN). */
export function blockChars(b: ContentBlockParam): number {
  switch (b.type) {
    case 'text':
      return String(b['text'] ?? '').length;
    case 'image':
      return IMAGE_TOKENS * CHARS_PER_TOKEN;
    case 'tool_use':
      return String(b['name'] ?? '').length + JSON.stringify(b['input'] ?? {}).length;
    case 'tool_result': {
      const r = textOfToolResultContent(b['content']);
      return r.chars + r.images * IMAGE_TOKENS * CHARS_PER_TOKEN;
    }
    case 'thinking':
      return String(b['thinking'] ?? '').length;
    default: {
      const { cache_control: _cc, ...rest } = b;
      return JSON.stringify(rest).length;
    }
  }
}

function withoutCacheControl(o: Record<string, unknown>): Record<string, unknown> {
  const { cache_control: _cc, ...rest } = o;
  return rest;
}

/** Deterministic input token count with the cached prefix (see header). */
export function countInputTokens(p: Pick<MessagesParams, 'model' | 'tools' | 'system' | 'messages'>): InputTokenCount {
  const segments: Array<{ chars: number; cc: CacheControl | null; src: unknown }> = [];
  for (const t of p.tools) {
    const plain = withoutCacheControl(t);
    segments.push({ chars: JSON.stringify(plain).length, cc: (t.cache_control as CacheControl | null | undefined) ?? null, src: plain });
  }
  if (typeof p.system === 'string') segments.push({ chars: p.system.length, cc: null, src: p.system });
  else if (p.system) {
    for (const b of p.system) segments.push({ chars: blockChars(b), cc: (b['cache_control'] as CacheControl | null | undefined) ?? null, src: withoutCacheControl(b) });
  }
  for (const m of p.messages) {
    for (const b of contentBlocks(m.content)) {
      segments.push({ chars: blockChars(b), cc: (b['cache_control'] as CacheControl | null | undefined) ?? null, src: [m.role, withoutCacheControl(b)] });
    }
  }
  let totalChars = 0;
  for (const s of segments) totalChars += s.chars;
  let last = -1;
  segments.forEach((s, i) => {
    if (s.cc) last = i;
  });
  const total = Math.ceil(totalChars / CHARS_PER_TOKEN);
  if (last < 0) return { total, prefix: 0, ttl: null, prefixKey: null, hasBreakpoint: false };
  let prefixChars = 0;
  const hash = createHash('sha256').update(p.model);
  for (let i = 0; i <= last; i++) {
    prefixChars += segments[i]!.chars;
    hash.update(JSON.stringify(segments[i]!.src));
  }
  return {
    total,
    prefix: Math.ceil(prefixChars / CHARS_PER_TOKEN),
    ttl: segments[last]!.cc!.ttl ?? '5m',
    prefixKey: hash.digest('hex'),
    hasBreakpoint: true,
  };
}

/** Split text into stream pieces: optional leading whitespace + one word (trailing whitespace joins the last piece). */
export function wordPieces(text: string): string[] {
  const pieces: string[] = [...(text.match(/\s*\S+/g) ?? [])];
  const used = pieces.join('').length;
  if (used < text.length) {
    if (pieces.length > 0) pieces[pieces.length - 1] += text.slice(used);
    else pieces.push(text);
  }
  return pieces;
}

/** Split a string into fragments of n characters. */
export function chunkString(s: string, n: number): string[] {
  const out: string[] = [];
  const size = Math.max(1, Math.floor(n));
  for (let i = 0; i < s.length; i += size) out.push(s.slice(i, i + size));
  return out;
}

// =============================================================================================
// Scripts

export type ScriptBlock =
  | {
      type: 'text';
      text: string;
      /** exact text_delta strings (default: word pieces of `text`; joined they must equal text) */
      pieces?: string[];
      /** extra wait before this block starts (stream: before content_block_start) */
      delayMs?: number;
    }
  | {
      type: 'tool_use';
      name: string;
      input: Record<string, unknown>;
      /** default: a fresh toolu_ id */
      id?: string;
      /** exact partial_json strings after the empty first one (default: jsonChunkChars chunks) */
      fragments?: string[];
      delayMs?: number;
    };

export interface ScriptedError {
  status: number;
  type?: string;
  message?: string;
  headers?: Record<string, string>;
  retryAfterMs?: number | null;
}

export interface UsageOverride {
  input_tokens?: number;
  output_tokens?: number;
  cache_read_input_tokens?: number;
  cache_creation_input_tokens?: number;
}

/** One scripted answer (all fields optional: missing parts come from the default behaviour). */
export interface ScriptedReply {
  /** answer this HTTP error instead of a message (after validation) */
  error?: ScriptedError;
  /** reply blocks (default: the default reply) */
  content?: ScriptBlock[];
  /** stop_reason when neither max_tokens nor a stop sequence cut the reply (default derived) */
  stopReason?: StopReason;
  stopSequence?: string | null;
  /** replaces the computed usage fields given */
  usage?: UsageOverride;
  /** model echoed in the message (default the requested one) */
  model?: string;
  firstTokenDelayMs?: number;
  interTokenDelayMs?: number;
  /** faults for this reply only (merged over the request's faults) */
  faults?: Partial<AnthropicFaults>;
}

export interface ResponderContext {
  request: MessagesRequest;
  /** what the default behaviour would answer */
  defaultReply(): ScriptBlock[];
}

export type Responder = (params: MessagesParams, ctx: ResponderContext) => ScriptedReply | undefined | Promise<ScriptedReply | undefined>;

// ---------------------------------------------------------------------------------------------
// Default behaviour

function lastUserTurn(turns: Turn[]): Turn | undefined {
  for (let i = turns.length - 1; i >= 0; i--) if (turns[i]!.role === 'user') return turns[i];
  return undefined;
}

/** Text of the (combined) last user turn: text blocks joined by a space, images as [image]. */
export function lastUserText(p: Pick<MessagesParams, 'turns'>): string {
  const t = lastUserTurn(p.turns);
  if (!t) return '';
  const parts: string[] = [];
  for (const { block } of t.blocks) {
    if (block.type === 'text') parts.push(String(block['text']));
    else if (block.type === 'image') parts.push('[image]');
  }
  return parts.join(' ');
}

function toolResultText(c: unknown): string {
  if (c === undefined || c === null) return '(empty)';
  if (typeof c === 'string') return c === '' ? '(empty)' : c;
  const parts: string[] = [];
  if (Array.isArray(c)) {
    for (const inner of c) {
      if (!isObject(inner)) continue;
      if (inner['type'] === 'text') parts.push(String(inner['text']));
      else if (inner['type'] === 'image') parts.push('[image]');
      else parts.push(`[${String(inner['type'])}]`);
    }
  }
  return parts.length > 0 ? parts.join(' ') : '(empty)';
}

/** Input built from a JSON schema: enum -> first value, string "test", number 1, boolean true, array [], object {}. */
export function inputFromSchema(schema: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!isObject(schema) || !isObject(schema['properties'])) return out;
  for (const [k, prop] of Object.entries(schema['properties'])) {
    if (!isObject(prop)) {
      out[k] = 'test';
      continue;
    }
    if (Array.isArray(prop['enum']) && prop['enum'].length > 0) {
      out[k] = prop['enum'][0];
      continue;
    }
    const type = Array.isArray(prop['type']) ? prop['type'][0] : prop['type'];
    switch (type) {
      case 'number':
      case 'integer':
        out[k] = 1;
        break;
      case 'boolean':
        out[k] = true;
        break;
      case 'array':
        out[k] = [];
        break;
      case 'object':
        out[k] = {};
        break;
      case 'null':
        out[k] = null;
        break;
      default:
        out[k] = 'test';
    }
  }
  return out;
}

/** The JSON object starting at s[i] (balanced braces, strings respected), or null. */
function jsonObjectAt(s: string, i: number): Record<string, unknown> | null {
  if (s[i] !== '{') return null;
  let depth = 0;
  let inStr = false;
  for (let j = i; j < s.length; j++) {
    const ch = s[j];
    if (inStr) {
      if (ch === '\\') j++;
      else if (ch === '"') inStr = false;
    } else if (ch === '"') inStr = true;
    else if (ch === '{') depth++;
    else if (ch === '}') {
      depth--;
      if (depth === 0) {
        try {
          const v = JSON.parse(s.slice(i, j + 1)) as unknown;
          return isObject(v) ? v : null;
        } catch {
          return null;
        }
      }
    }
  }
  return null;
}

interface ToolCall {
  name: string;
  input: Record<string, unknown>;
}

/** Every "call <toolname> [json]" in the text, for tools that exist, in order. */
export function findToolCalls(text: string, tools: readonly ToolParam[]): ToolCall[] {
  const calls: ToolCall[] = [];
  const re = /\bcall\s+([a-zA-Z0-9_-]+)/gi;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    const tool = tools.find((t) => t.name === m![1]);
    if (!tool) continue;
    let j = m.index + m[0].length;
    while (j < text.length && /\s/.test(text[j]!)) j++;
    calls.push({ name: tool.name, input: jsonObjectAt(text, j) ?? inputFromSchema(tool.input_schema) });
  }
  return calls;
}

/** The default reply (see header). */
export function defaultReply(p: MessagesParams): ScriptBlock[] {
  const turn = lastUserTurn(p.turns);
  const results = turn ? turn.blocks.filter((b) => b.block.type === 'tool_result') : [];
  if (turn && results.length > 0) {
    const idx = p.turns.indexOf(turn);
    const prev = idx > 0 ? p.turns[idx - 1] : undefined;
    const parts = results.map(({ block }) => {
      const use = prev?.blocks.find((b) => b.block.type === 'tool_use' && b.block['id'] === block['tool_use_id']);
      const name = use ? String(use.block['name']) : String(block['tool_use_id']);
      return `Tool ${name} ${block['is_error'] === true ? 'failed' : 'returned'}: ${toolResultText(block['content'])}`;
    });
    return [{ type: 'text', text: parts.join(' ') }];
  }
  const text = lastUserText(p);
  const choice = p.tool_choice?.type ?? 'auto';
  const custom = p.tools.filter((t) => t.type === undefined || t.type === null || t.type === 'custom');
  if (custom.length > 0 && choice !== 'none') {
    let calls = findToolCalls(text, custom);
    if (choice === 'tool') {
      const name = (p.tool_choice as { name: string }).name;
      const tool = custom.find((t) => t.name === name)!;
      calls = calls.filter((c) => c.name === name);
      if (calls.length === 0) calls = [{ name, input: inputFromSchema(tool.input_schema) }];
    } else if (choice === 'any' && calls.length === 0) {
      calls = [{ name: custom[0]!.name, input: inputFromSchema(custom[0]!.input_schema) }];
    }
    const disableParallel = p.tool_choice !== null && 'disable_parallel_tool_use' in p.tool_choice && p.tool_choice.disable_parallel_tool_use === true;
    if (disableParallel) calls = calls.slice(0, 1);
    if (calls.length > 0) {
      const blocks: ScriptBlock[] = [];
      if (choice === 'auto') blocks.push({ type: 'text', text: `Calling ${calls.map((c) => c.name).join(' and ')}.` });
      for (const c of calls) blocks.push({ type: 'tool_use', name: c.name, input: c.input });
      return blocks;
    }
  }
  return [{ type: 'text', text: `You said: ${text}` }];
}

// =============================================================================================
// Options, faults, records

export type CacheMode = 'simulate' | 'off' | { readTokens: number; creationTokens?: number };

export interface RateLimits {
  requestsPerMinute: number;
  inputTokensPerMinute: number;
  outputTokensPerMinute: number;
  /** window length (default 60000); a fixed window starting at the first request */
  windowMs: number;
}

export interface AnthropicEmulatorOptions {
  /** accepted x-api-key values (default ['sk-ant-test-key']) */
  apiKeys?: string[];
  /** per key: models it may use; other models -> 403 permission_error (keys not listed: all) */
  keyModels?: Record<string, string[]>;
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** accepted models; null = any model name (default null) */
  models?: string[] | null;
  /** accepted anthropic-version values (default 2023-06-01, 2023-01-01) */
  versions?: string[];
  /** ms before the first text/JSON delta (default 20; realistic 600) */
  firstTokenDelayMs?: number;
  /** ms between deltas (default 2; realistic 20) */
  interTokenDelayMs?: number;
  /** periodic `ping` events while a stream is open (default 0 = only the one after the first block start) */
  pingIntervalMs?: number;
  /** characters per input_json_delta fragment (default 8) */
  jsonChunkChars?: number;
  /** prompt caching (default 'simulate') */
  cache?: CacheMode;
  /** a cache_control prefix shorter than this is not cached (default 0; realistic 1024-4096) */
  minCacheableTokens?: number;
  /** rate limits (defaults 4000 rpm, 2,000,000 itpm, 400,000 otpm) */
  rateLimits?: Partial<RateLimits>;
  /** 400 when the first message is not `user` (default true) */
  requireUserFirst?: boolean;
  /** max_tokens above this -> 400 (default 128000) */
  maxOutputTokens?: number;
  /** accept and record unknown body keys (default false) */
  allowUnknownParams?: boolean;
  /** request body read timeout -> 408 (default 10000) */
  bodyTimeoutMs?: number;
  /** request body size limit -> 413 (default 32 MB, documented) */
  maxBodyBytes?: number;
  /** one line per finished request (the CLI passes a stderr logger) */
  log?: (line: string) => void;
}

export type ResolvedAnthropicOptions = Required<Omit<AnthropicEmulatorOptions, 'port' | 'host' | 'tls' | 'log' | 'rateLimits'>> & {
  rateLimits: RateLimits;
};

/** Fault switches: `emu.faults` (server-wide, mutable), `emu.faultNext(...)` (next request), script `faults`. */
export interface AnthropicFaults {
  /** answer this status with a vendor error body instead of doing the work */
  status: number | null;
  /** override the error type/message of that answer */
  error: { type?: string; message?: string } | null;
  /** extra headers on that error response */
  headers: Record<string, string> | null;
  /** retry-after of that answer (default 1000 ms for 429/529; null = none) */
  retryAfterMs: number | null;
  /** wait this long before reading the request or answering anything */
  responseDelayMs: number;
  firstTokenDelayMs: number | null;
  interTokenDelayMs: number | null;
  pingIntervalMs: number | null;
  /** stream: 200 + headers, then nothing at all; non-stream: never answer */
  deadAir: boolean;
  /** destroy the TCP socket after N stream events (non-stream: instead of the answer) */
  dropAfterEvents: number | null;
  /** after N stream events send `event: error` and end (non-stream: that error as HTTP status) */
  errorAfterEvents: { events: number; type?: string; message?: string } | null;
  /** after N stream events send nothing more but pings (non-stream: never answer) */
  stallAfterEvents: number | null;
}

export function defaultAnthropicFaults(): AnthropicFaults {
  return {
    status: null,
    error: null,
    headers: null,
    retryAfterMs: null,
    responseDelayMs: 0,
    firstTokenDelayMs: null,
    interTokenDelayMs: null,
    pingIntervalMs: null,
    deadAir: false,
    dropAfterEvents: null,
    errorAfterEvents: null,
    stallAfterEvents: null,
  };
}

export interface Usage {
  input_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
  cache_creation: { ephemeral_5m_input_tokens: number; ephemeral_1h_input_tokens: number };
  output_tokens: number;
  service_tier: 'standard';
}

export type ContentBlock =
  | { type: 'text'; text: string }
  | { type: 'tool_use'; id: string; name: string; input: Record<string, unknown> };

export interface Message {
  id: string;
  type: 'message';
  role: 'assistant';
  content: ContentBlock[];
  model: string;
  stop_reason: StopReason | null;
  stop_sequence: string | null;
  usage: Usage;
}

export interface SseEventRecord {
  /** ms since the request arrived */
  t: number;
  event: string;
  data: Record<string, unknown>;
  /** a periodic keep-alive ping (pingIntervalMs), not part of the message plan */
  keepalive?: boolean;
}

/**
 * pending: in progress (also while dead-air/stalled); rejected: an error status was answered;
 * completed: the whole message was sent; aborted: the client went away first; dropped / failed:
 * the fault of that name fired; shutdown: the emulator closed it.
 */
export type MessagesOutcome = 'pending' | 'rejected' | 'completed' | 'aborted' | 'dropped' | 'failed' | 'shutdown';

export interface MessagesRequest {
  id: number;
  /** request-id of the answer */
  requestId: string;
  receivedAt: Date;
  method: string;
  path: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** x-api-key presented (valid or not) */
  apiKey: string | null;
  authorized: boolean;
  anthropicVersion: string | null;
  /** anthropic-beta values (comma separated header, split) */
  betas: string[];
  rawBody: string;
  /** parsed JSON body (undefined when not JSON) */
  body: unknown;
  params: MessagesParams | null;
  stream: boolean;
  faults: AnthropicFaults;
  /** where the reply came from */
  source: 'default' | 'script' | 'responder' | null;
  status: number | null;
  responseHeaders: Record<string, string>;
  error: AnthropicErrorObject | null;
  /** the complete message the emulator meant to send (also for streams) */
  message: Message | null;
  /** SSE events written, in order */
  events: SseEventRecord[];
  /** stream events of the plan written so far (pings after the first block included, keep-alives not) */
  eventsSent: number;
  /** output tokens (pieces + fragments) written so far */
  outputTokensSent: number;
  /** mid-stream error event sent (errorAfterEvents) */
  streamError: AnthropicErrorObject | null;
  /** ms since receivedAt */
  timing: { headersMs: number | null; firstDeltaMs: number | null; endMs: number | null };
  outcome: MessagesOutcome;
  aborted: boolean;
  abortedAtMs: number | null;
  /** a stall/deadAir fault is holding the response */
  stalled: boolean;
  /** the HTTP exchange is over */
  finished: boolean;
}

// ---------------------------------------------------------------------------------------------
// Planning a reply

interface PlannedEvent {
  event: string;
  data: Record<string, unknown>;
  /** wait before this event, after the previous one */
  delayMs: number;
  /** output tokens this event carries (deltas) */
  tokens: number;
}

interface Plan {
  message: Message;
  events: PlannedEvent[];
}

function cutAt(pieces: string[], chars: number): string[] {
  const out: string[] = [];
  let used = 0;
  for (const p of pieces) {
    if (used >= chars) break;
    const take = p.slice(0, chars - used);
    if (take !== '') out.push(take);
    used += take.length;
  }
  return out;
}

interface BuiltBlock {
  type: 'text' | 'tool_use';
  pieces: string[];
  id: string;
  name: string;
  input: Record<string, unknown>;
  delayMs: number;
  complete: boolean;
}

function buildPlan(
  p: MessagesParams,
  script: ScriptBlock[],
  reply: ScriptedReply,
  usageBase: Omit<Usage, 'output_tokens'>,
  o: { firstTokenDelayMs: number; interTokenDelayMs: number; jsonChunkChars: number },
): Plan {
  let blocks: BuiltBlock[] = script.map((s) =>
    s.type === 'text'
      ? { type: 'text', pieces: s.pieces ? [...s.pieces] : wordPieces(s.text), id: '', name: '', input: {}, delayMs: s.delayMs ?? 0, complete: true }
      : {
          type: 'tool_use',
          pieces: s.fragments ? [...s.fragments] : chunkString(JSON.stringify(s.input), o.jsonChunkChars),
          id: s.id ?? anthropicToolUseId(),
          name: s.name,
          input: s.input,
          delayMs: s.delayMs ?? 0,
          complete: true,
        },
  );
  // stop sequences: cut text before the earliest match, drop what follows
  let stopSequence: string | null = null;
  if (p.stop_sequences.length > 0) {
    for (let i = 0; i < blocks.length; i++) {
      const b = blocks[i]!;
      if (b.type !== 'text') continue;
      const text = b.pieces.join('');
      let best: { at: number; seq: string } | null = null;
      for (const seq of p.stop_sequences) {
        if (seq === '') continue;
        const at = text.indexOf(seq);
        if (at >= 0 && (!best || at < best.at)) best = { at, seq };
      }
      if (best) {
        stopSequence = best.seq;
        b.pieces = cutAt(b.pieces, best.at);
        blocks = blocks.slice(0, i + (b.pieces.length > 0 ? 1 : 0));
        break;
      }
    }
  }
  // max_tokens: one token per piece / non-empty fragment
  let budget = p.max_tokens;
  let cutByMax = false;
  const kept: BuiltBlock[] = [];
  for (const b of blocks) {
    const cost = b.pieces.filter((x) => x !== '').length;
    if (cost <= budget) {
      kept.push(b);
      budget -= cost;
      continue;
    }
    cutByMax = true;
    if (budget > 0) {
      const pieces: string[] = [];
      let left = budget;
      for (const x of b.pieces) {
        if (x !== '' && left === 0) break;
        pieces.push(x);
        if (x !== '') left--;
      }
      kept.push({ ...b, pieces, complete: false });
    }
    break;
  }
  if (!cutByMax && budget === 0 && kept.length < blocks.length) cutByMax = true;
  blocks = kept;

  const outputTokens = blocks.reduce((n, b) => n + b.pieces.filter((x) => x !== '').length, 0);
  let stopReason: StopReason;
  if (cutByMax) stopReason = 'max_tokens';
  else if (stopSequence !== null) stopReason = 'stop_sequence';
  else if (reply.stopReason) stopReason = reply.stopReason;
  else stopReason = blocks.length > 0 && blocks[blocks.length - 1]!.type === 'tool_use' ? 'tool_use' : 'end_turn';
  if (stopReason !== 'stop_sequence') stopSequence = null;
  else if (stopSequence === null) stopSequence = reply.stopSequence ?? null; // scripted stop_sequence

  const u = reply.usage ?? {};
  const usage: Usage = {
    input_tokens: usageBase.input_tokens,
    cache_creation_input_tokens: usageBase.cache_creation_input_tokens,
    cache_read_input_tokens: usageBase.cache_read_input_tokens,
    cache_creation: { ...usageBase.cache_creation },
    output_tokens: Math.max(1, outputTokens),
    service_tier: usageBase.service_tier,
  };
  if (u.input_tokens !== undefined) usage.input_tokens = u.input_tokens;
  if (u.output_tokens !== undefined) usage.output_tokens = u.output_tokens;
  if (u.cache_read_input_tokens !== undefined) usage.cache_read_input_tokens = u.cache_read_input_tokens;
  if (u.cache_creation_input_tokens !== undefined) {
    usage.cache_creation_input_tokens = u.cache_creation_input_tokens;
    usage.cache_creation = { ephemeral_5m_input_tokens: u.cache_creation_input_tokens, ephemeral_1h_input_tokens: 0 };
  }

  const content: ContentBlock[] = blocks.map((b) =>
    b.type === 'text'
      ? { type: 'text', text: b.pieces.join('') }
      : { type: 'tool_use', id: b.id, name: b.name, input: b.complete ? b.input : {} },
  );
  const message: Message = {
    id: anthropicMessageId(),
    type: 'message',
    role: 'assistant',
    content,
    model: reply.model ?? p.model,
    stop_reason: stopReason,
    stop_sequence: stopSequence,
    usage,
  };

  const events: PlannedEvent[] = [];
  const push = (event: string, data: Record<string, unknown>, delayMs = 0, tokens = 0) => events.push({ event, data, delayMs, tokens });
  push('message_start', {
    type: 'message_start',
    message: { ...message, content: [], stop_reason: null, stop_sequence: null, usage: { ...usage, cache_creation: { ...usage.cache_creation }, output_tokens: 1 } },
  });
  let firstDelta = true;
  const deltaDelay = () => {
    const d = firstDelta ? o.firstTokenDelayMs : o.interTokenDelayMs;
    firstDelta = false;
    return d;
  };
  blocks.forEach((b, index) => {
    const start = b.type === 'text' ? { type: 'text', text: '' } : { type: 'tool_use', id: b.id, name: b.name, input: {} };
    push('content_block_start', { type: 'content_block_start', index, content_block: start }, b.delayMs);
    if (index === 0) push('ping', { type: 'ping' });
    if (b.type === 'text') {
      for (const piece of b.pieces) {
        push('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'text_delta', text: piece } }, deltaDelay(), 1);
      }
    } else {
      push('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: '' } });
      for (const frag of b.pieces) {
        if (frag === '') continue;
        push('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: frag } }, deltaDelay(), 1);
      }
    }
    push('content_block_stop', { type: 'content_block_stop', index });
  });
  if (blocks.length === 0) push('ping', { type: 'ping' });
  push(
    'message_delta',
    {
      type: 'message_delta',
      delta: { stop_reason: stopReason, stop_sequence: stopSequence },
      usage: {
        input_tokens: usage.input_tokens,
        cache_creation_input_tokens: usage.cache_creation_input_tokens,
        cache_read_input_tokens: usage.cache_read_input_tokens,
        output_tokens: usage.output_tokens,
      },
    },
    firstDelta ? o.firstTokenDelayMs : 0,
  );
  push('message_stop', { type: 'message_stop' });
  return { message, events };
}

// ---------------------------------------------------------------------------------------------
// One accepted request being answered

class MessageResponder {
  private readonly emu: AnthropicEmulator;
  private readonly rec: MessagesRequest;
  private readonly res: ServerResponse;
  private readonly plan: Plan;
  private readonly faults: AnthropicFaults;
  private readonly t0: number;
  private readonly offsets: number[];
  private readonly pingIntervalMs: number;
  private timer: NodeJS.Timeout | null = null;
  private pinger: NodeJS.Timeout | null = null;
  private startAt = 0;
  private next = 0;
  private stopped = false;
  /** SSE writes not yet handed to the kernel */
  private unflushed = 0;
  private onFlushed: (() => void) | null = null;

  constructor(emu: AnthropicEmulator, rec: MessagesRequest, res: ServerResponse, plan: Plan, faults: AnthropicFaults, t0: number) {
    this.emu = emu;
    this.rec = rec;
    this.res = res;
    this.plan = plan;
    this.faults = faults;
    this.t0 = t0;
    let at = 0;
    this.offsets = plan.events.map((e) => (at += e.delayMs));
    this.pingIntervalMs = faults.pingIntervalMs ?? emu.options.pingIntervalMs;
  }

  /** Stop writing (client gone, shutdown). */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.pinger) clearInterval(this.pinger);
    this.timer = null;
    this.pinger = null;
  }

  private ms(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  private headers(contentType: string): Record<string, string> {
    return {
      'content-type': contentType,
      'request-id': this.rec.requestId,
      'anthropic-organization-id': this.emu.organizationId,
      ...this.emu.rateLimitHeaders(),
    };
  }

  startStream(): void {
    const headers = { ...this.headers('text/event-stream; charset=utf-8'), 'cache-control': 'no-cache' };
    this.rec.status = 200;
    this.rec.responseHeaders = headers;
    this.res.writeHead(200, headers);
    this.res.flushHeaders();
    this.rec.timing.headersMs = this.ms();
    this.emu.changed();
    if (this.faults.deadAir) {
      this.rec.stalled = true;
      this.emu.changed();
      return;
    }
    if (this.pingIntervalMs > 0) {
      this.pinger = setInterval(() => this.write('ping', { type: 'ping' }, true), this.pingIntervalMs);
    }
    this.startAt = performance.now();
    this.step();
  }

  startJson(): void {
    const total = this.offsets[this.offsets.length - 1] ?? 0;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.answerJson();
    }, total);
  }

  private answerJson(): void {
    if (this.stopped || this.res.destroyed) return;
    const f = this.faults;
    if (f.deadAir || f.stallAfterEvents !== null) {
      this.rec.stalled = true;
      this.emu.changed();
      return;
    }
    if (f.dropAfterEvents !== null) return this.drop();
    if (f.errorAfterEvents) {
      const type = f.errorAfterEvents.type ?? 'overloaded_error';
      const status = STATUS_BY_ERROR_TYPE[type as AnthropicErrorType] ?? 500;
      const err = anthropicError(status, { type, message: f.errorAfterEvents.message, requestId: this.rec.requestId, headers: this.emu.rateLimitHeaders() });
      this.rec.outcome = 'failed';
      this.rec.status = status;
      this.rec.error = err.error;
      this.rec.responseHeaders = err.headers;
      this.rec.timing.endMs = this.ms();
      sendAnthropicError(this.res, err);
      this.emu.changed();
      return;
    }
    const body = Buffer.from(JSON.stringify(this.plan.message), 'utf8');
    const headers = { ...this.headers('application/json'), 'content-length': String(body.length) };
    this.rec.status = 200;
    this.rec.responseHeaders = headers;
    this.rec.outcome = 'completed';
    this.rec.outputTokensSent = this.plan.events.reduce((n, e) => n + e.tokens, 0);
    this.rec.timing.headersMs = this.ms();
    this.rec.timing.endMs = this.ms();
    this.res.writeHead(200, headers);
    this.res.end(body);
    this.emu.changed();
  }

  private step(): void {
    if (this.stopped || this.res.destroyed) return;
    const f = this.faults;
    const now = performance.now() - this.startAt;
    while (this.next < this.plan.events.length && this.offsets[this.next]! <= now + 1) {
      const sent = this.rec.eventsSent;
      if (f.dropAfterEvents !== null && sent >= f.dropAfterEvents) return this.drop();
      if (f.errorAfterEvents && sent >= f.errorAfterEvents.events) return this.fail();
      if (f.stallAfterEvents !== null && sent >= f.stallAfterEvents) {
        this.rec.stalled = true;
        this.emu.changed();
        return;
      }
      const e = this.plan.events[this.next++]!;
      const t = this.write(e.event, e.data, false);
      this.rec.eventsSent++;
      this.rec.outputTokensSent += e.tokens;
      if (e.tokens > 0 && this.rec.timing.firstDeltaMs === null) this.rec.timing.firstDeltaMs = t;
    }
    if (this.next >= this.plan.events.length) {
      const sent = this.rec.eventsSent;
      if (f.dropAfterEvents !== null && sent >= f.dropAfterEvents) return this.drop();
      if (f.errorAfterEvents && sent >= f.errorAfterEvents.events) return this.fail();
      return this.end('completed');
    }
    const wait = Math.max(0, this.offsets[this.next]! - (performance.now() - this.startAt));
    this.timer = setTimeout(() => {
      this.timer = null;
      this.step();
    }, wait);
  }

  /** Write one SSE event; returns its record time. */
  private write(event: string, data: Record<string, unknown>, keepalive: boolean): number {
    const t = this.ms();
    if (this.stopped || this.res.destroyed) return t;
    const rec: SseEventRecord = { t, event, data };
    if (keepalive) rec.keepalive = true;
    this.rec.events.push(rec);
    this.unflushed++;
    this.res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`, () => {
      this.unflushed--;
      if (this.unflushed === 0 && this.onFlushed) this.onFlushed();
    });
    this.emu.changed();
    return t;
  }

  private fail(): void {
    const ea = this.faults.errorAfterEvents!;
    const type = ea.type ?? 'overloaded_error';
    const error: AnthropicErrorObject = { type, message: ea.message ?? DEFAULT_MESSAGES[type as AnthropicErrorType] ?? 'Error' };
    this.rec.streamError = error;
    this.write('error', { type: 'error', error }, false);
    this.end('failed');
  }

  private end(outcome: MessagesOutcome): void {
    this.stop();
    this.rec.outcome = outcome;
    this.rec.timing.endMs = this.ms();
    this.res.end();
    this.emu.changed();
  }

  /** Destroy the TCP socket (no chunked terminator) once the events written so far are flushed. */
  private drop(): void {
    this.stop();
    if (this.rec.finished) return;
    this.rec.outcome = 'dropped';
    this.rec.timing.endMs = this.ms();
    this.emu.changed();
    const destroy = () => (this.res.socket ?? this.res).destroy();
    if (this.unflushed === 0) destroy();
    else this.onFlushed = destroy;
  }
}

// =============================================================================================
// The emulator

interface RateWindow {
  start: number;
  requests: number;
  inputTokens: number;
  outputTokens: number;
}

export class AnthropicEmulator {
  readonly server: EmulatorServer;
  /** live options: changes apply to requests received afterwards */
  readonly options: ResolvedAnthropicOptions;
  /** every request to /v1/messages, in arrival order */
  readonly requests: MessagesRequest[] = [];
  /** server-wide fault switches (mutable) */
  faults: AnthropicFaults = defaultAnthropicFaults();
  /** called for every valid request when no script is queued; undefined result = default reply */
  responder: Responder | null = null;
  readonly organizationId = randomUUID();
  /** simulated prompt cache: prefix key -> expiry (ms epoch) */
  readonly cacheEntries = new Map<string, number>();
  private readonly script: ScriptedReply[] = [];
  private nextFaults: Partial<AnthropicFaults>[] = [];
  private readonly responders = new Set<MessageResponder>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly log: ((line: string) => void) | null;
  private window: RateWindow | null = null;
  private nextId = 1;
  private shuttingDown = false;

  constructor(server: EmulatorServer, options: ResolvedAnthropicOptions, log: ((line: string) => void) | null) {
    this.server = server;
    this.options = options;
    this.log = log;
  }

  get url(): string {
    return this.server.url;
  }
  /** what the Anthropic SDK takes as baseURL (it appends /v1/messages) */
  get baseUrl(): string {
    return this.server.url;
  }
  get messagesUrl(): string {
    return `${this.server.url}${MESSAGES_PATH}`;
  }
  get port(): number {
    return this.server.port;
  }

  /** Queue scripted replies: each valid request consumes one, in order. */
  enqueue(...replies: ScriptedReply[]): void {
    this.script.push(...replies);
  }

  /** Scripted replies not consumed yet. */
  get pendingScripts(): number {
    return this.script.length;
  }

  /** Drop queued scripts and the responder. */
  resetScript(): void {
    this.script.length = 0;
    this.responder = null;
  }

  /** Apply these faults to the next request to /v1/messages only (queued, one per request). */
  faultNext(f: Partial<AnthropicFaults>): void {
    this.nextFaults.push(f);
  }

  resetFaults(): void {
    this.faults = defaultAnthropicFaults();
    this.nextFaults = [];
  }

  changed(): void {
    this.server.changed();
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  /** The n-th request (1-based) once it was received. */
  waitForRequest(n = 1, timeoutMs = 2000): Promise<MessagesRequest> {
    return this.waitFor(() => this.requests[n - 1], timeoutMs, `anthropic request #${n}`);
  }

  /** A request (default: the latest) once its HTTP exchange is over. */
  waitForDone(req?: MessagesRequest, timeoutMs = 2000): Promise<MessagesRequest> {
    return this.waitFor(() => {
      const r = req ?? this.requests[this.requests.length - 1];
      return r && r.finished ? r : undefined;
    }, timeoutMs, 'anthropic request done');
  }

  /** `anthropic-ratelimit-*` headers for the current window. */
  rateLimitHeaders(): Record<string, string> {
    const w = this.currentWindow();
    const l = this.options.rateLimits;
    const reset = rfc3339(w.start + l.windowMs);
    const inRemaining = Math.max(0, l.inputTokensPerMinute - w.inputTokens);
    const outRemaining = Math.max(0, l.outputTokensPerMinute - w.outputTokens);
    const tightestIsInput = inRemaining / l.inputTokensPerMinute <= outRemaining / l.outputTokensPerMinute;
    return {
      'anthropic-ratelimit-requests-limit': String(l.requestsPerMinute),
      'anthropic-ratelimit-requests-remaining': String(Math.max(0, l.requestsPerMinute - w.requests)),
      'anthropic-ratelimit-requests-reset': reset,
      'anthropic-ratelimit-input-tokens-limit': String(l.inputTokensPerMinute),
      'anthropic-ratelimit-input-tokens-remaining': String(inRemaining),
      'anthropic-ratelimit-input-tokens-reset': reset,
      'anthropic-ratelimit-output-tokens-limit': String(l.outputTokensPerMinute),
      'anthropic-ratelimit-output-tokens-remaining': String(outRemaining),
      'anthropic-ratelimit-output-tokens-reset': reset,
      'anthropic-ratelimit-tokens-limit': String(tightestIsInput ? l.inputTokensPerMinute : l.outputTokensPerMinute),
      'anthropic-ratelimit-tokens-remaining': String(tightestIsInput ? inRemaining : outRemaining),
      'anthropic-ratelimit-tokens-reset': reset,
    };
  }

  /** Stop every response and timer, close every socket, stop listening. */
  async close(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const r of this.responders) r.stop();
    this.responders.clear();
    for (const r of this.requests) {
      if (!r.finished) {
        if (r.outcome === 'pending') r.outcome = 'shutdown';
        r.finished = true;
      }
    }
    await this.server.close();
  }

  private currentWindow(): RateWindow {
    const now = Date.now();
    if (!this.window || now >= this.window.start + this.options.rateLimits.windowMs) {
      this.window = { start: now, requests: 0, inputTokens: 0, outputTokens: 0 };
    }
    return this.window;
  }

  /** HTTP entry point (base.ts onHttpRequest). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const url = new URL(req.url ?? '/', 'http://emulator');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const requestId = anthropicRequestId();
    if (path !== MESSAGES_PATH) {
      req.resume();
      sendAnthropicError(res, anthropicError(404, { requestId, message: 'Not Found' }));
      return;
    }
    if (method !== 'POST') {
      req.resume();
      sendAnthropicError(res, anthropicError(405, { requestId, type: 'invalid_request_error', message: `Method Not Allowed: ${method} ${MESSAGES_PATH}` }));
      return;
    }
    const faults: AnthropicFaults = { ...this.faults, ...(this.nextFaults.shift() ?? {}) };
    const header = (k: string): string | null => {
      const v = req.headers[k];
      return typeof v === 'string' ? v : Array.isArray(v) ? (v[0] ?? null) : null;
    };
    const rec: MessagesRequest = {
      id: this.nextId++,
      requestId,
      receivedAt: new Date(),
      method,
      path,
      url: req.url ?? '/',
      headers: req.headers,
      apiKey: header('x-api-key'),
      authorized: false,
      anthropicVersion: header('anthropic-version'),
      betas: (header('anthropic-beta') ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''),
      rawBody: '',
      body: undefined,
      params: null,
      stream: false,
      faults,
      source: null,
      status: null,
      responseHeaders: {},
      error: null,
      message: null,
      events: [],
      eventsSent: 0,
      outputTokensSent: 0,
      streamError: null,
      timing: { headersMs: null, firstDeltaMs: null, endMs: null },
      outcome: 'pending',
      aborted: false,
      abortedAtMs: null,
      stalled: false,
      finished: false,
    };
    this.requests.push(rec);
    const ms = () => Math.round((performance.now() - t0) * 10) / 10;
    let responder: MessageResponder | null = null;
    res.on('close', () => {
      if (responder) {
        responder.stop();
        this.responders.delete(responder);
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
      if (rec.timing.endMs === null) rec.timing.endMs = ms();
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
      if (e.status === 413) return this.reject(rec, res, anthropicError(413, { requestId }));
      if (e.status !== 499) return this.reject(rec, res, anthropicError(e.status, { requestId, type: 'invalid_request_error', message: e.message }));
      return;
    }
    if (res.destroyed || this.shuttingDown) return;
    rec.rawBody = raw.toString('utf8');
    let parsed: { ok: true; value: unknown } | { ok: false; error: string } = { ok: false, error: '' };
    try {
      parsed = { ok: true, value: JSON.parse(rec.rawBody) as unknown };
      rec.body = parsed.value;
      if (isObject(parsed.value) && parsed.value['stream'] === true) rec.stream = true;
    } catch (err) {
      parsed = { ok: false, error: err instanceof Error ? err.message : String(err) };
    }

    if (faults.status !== null) {
      const status = faults.status;
      const rl = status === 429 ? { ...this.rateLimitHeaders(), 'anthropic-ratelimit-requests-remaining': '0' } : {};
      return this.reject(rec, res, anthropicError(status, {
        requestId,
        ...(faults.error ?? {}),
        ...(faults.retryAfterMs !== null ? { retryAfterMs: faults.retryAfterMs } : {}),
        headers: { ...rl, ...(faults.headers ?? {}) },
      }));
    }
    if (rec.apiKey === null || rec.apiKey === '') {
      return this.reject(rec, res, anthropicError(401, { requestId, message: 'x-api-key header is required' }));
    }
    if (!this.options.apiKeys.includes(rec.apiKey)) {
      return this.reject(rec, res, anthropicError(401, { requestId, message: 'invalid x-api-key' }));
    }
    rec.authorized = true;
    if (rec.anthropicVersion === null || rec.anthropicVersion === '') {
      return this.reject(rec, res, anthropicError(400, { requestId, message: 'anthropic-version: header is required' }));
    }
    if (!this.options.versions.includes(rec.anthropicVersion)) {
      return this.reject(rec, res, anthropicError(400, { requestId, message: `anthropic-version: "${rec.anthropicVersion}" is not a valid version` }));
    }
    if (!parsed.ok) {
      return this.reject(rec, res, anthropicError(400, { requestId, message: `There was an error parsing the body: ${parsed.error}` }));
    }
    const check = parseMessagesBody(parsed.value, {
      allowUnknownParams: this.options.allowUnknownParams,
      requireUserFirst: this.options.requireUserFirst,
      maxOutputTokens: this.options.maxOutputTokens,
    });
    if (!check.ok) return this.reject(rec, res, anthropicError(check.status, { requestId, message: check.message }));
    const p = check.params;
    rec.params = p;
    rec.stream = p.stream;
    if (this.options.models !== null && !this.options.models.includes(p.model)) {
      return this.reject(rec, res, anthropicError(404, { requestId, message: `model: ${p.model}` }));
    }
    const allowed = this.options.keyModels[rec.apiKey];
    if (allowed && !allowed.includes(p.model)) {
      return this.reject(rec, res, anthropicError(403, { requestId }));
    }

    // usage and prompt cache
    const count = countInputTokens(p);
    const usageBase = this.inputUsage(count);

    // rate limits (fixed window)
    const w = this.currentWindow();
    const l = this.options.rateLimits;
    const billedInput = usageBase.input_tokens + usageBase.cache_creation_input_tokens;
    let limited: { limit: number; what: string } | null = null;
    if (w.requests + 1 > l.requestsPerMinute) limited = { limit: l.requestsPerMinute, what: 'requests' };
    else if (w.inputTokens + billedInput > l.inputTokensPerMinute) limited = { limit: l.inputTokensPerMinute, what: 'input tokens' };
    else if (w.outputTokens >= l.outputTokensPerMinute) limited = { limit: l.outputTokensPerMinute, what: 'output tokens' };
    if (limited) {
      const retryAfterMs = Math.max(1000, w.start + l.windowMs - Date.now());
      const message = RATE_LIMIT_MESSAGE.replace('{limit}', String(limited.limit)).replace('{what}', limited.what);
      return this.reject(rec, res, anthropicError(429, { requestId, message, retryAfterMs, headers: this.rateLimitHeaders() }));
    }

    // the reply: queued script, responder, default
    let reply: ScriptedReply | undefined = this.script.shift();
    rec.source = reply ? 'script' : null;
    if (!reply && this.responder) {
      reply = await this.responder(p, { request: rec, defaultReply: () => defaultReply(p) });
      if (reply) rec.source = 'responder';
      if (res.destroyed || this.shuttingDown) return;
    }
    reply ??= {};
    rec.source ??= 'default';
    if (reply.error) {
      const e = reply.error;
      return this.reject(rec, res, anthropicError(e.status, {
        requestId,
        type: e.type,
        message: e.message,
        ...(e.retryAfterMs !== undefined ? { retryAfterMs: e.retryAfterMs } : {}),
        headers: { ...(e.status === 429 ? this.rateLimitHeaders() : {}), ...(e.headers ?? {}) },
      }));
    }
    const f: AnthropicFaults = { ...faults, ...(reply.faults ?? {}) };
    rec.faults = f;
    const plan = buildPlan(p, reply.content ?? defaultReply(p), reply, usageBase, {
      firstTokenDelayMs: reply.firstTokenDelayMs ?? f.firstTokenDelayMs ?? this.options.firstTokenDelayMs,
      interTokenDelayMs: reply.interTokenDelayMs ?? f.interTokenDelayMs ?? this.options.interTokenDelayMs,
      jsonChunkChars: this.options.jsonChunkChars,
    });
    rec.message = plan.message;
    w.requests++;
    w.inputTokens += billedInput;
    w.outputTokens += plan.message.usage.output_tokens;
    responder = new MessageResponder(this, rec, res, plan, f, t0);
    this.responders.add(responder);
    if (p.stream) responder.startStream();
    else responder.startJson();
  }

  private inputUsage(count: InputTokenCount): Omit<Usage, 'output_tokens'> {
    const zero = { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 };
    const base = { input_tokens: count.total, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, cache_creation: zero, service_tier: 'standard' as const };
    const mode = this.options.cache;
    if (!count.hasBreakpoint || mode === 'off') return base;
    if (typeof mode === 'object') {
      const read = mode.readTokens;
      const creation = mode.creationTokens ?? 0;
      return {
        ...base,
        input_tokens: Math.max(0, count.total - read - creation),
        cache_read_input_tokens: read,
        cache_creation_input_tokens: creation,
        cache_creation: { ephemeral_5m_input_tokens: creation, ephemeral_1h_input_tokens: 0 },
      };
    }
    if (count.prefix < this.options.minCacheableTokens || count.prefixKey === null) return base;
    const now = Date.now();
    const ttlMs = count.ttl === '1h' ? 3_600_000 : 300_000;
    const expires = this.cacheEntries.get(count.prefixKey);
    const hit = expires !== undefined && expires > now;
    this.cacheEntries.set(count.prefixKey, now + ttlMs);
    const uncached = count.total - count.prefix;
    if (hit) return { ...base, input_tokens: uncached, cache_read_input_tokens: count.prefix };
    return {
      ...base,
      input_tokens: uncached,
      cache_creation_input_tokens: count.prefix,
      cache_creation: count.ttl === '1h' ? { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: count.prefix } : { ephemeral_5m_input_tokens: count.prefix, ephemeral_1h_input_tokens: 0 },
    };
  }

  private reject(rec: MessagesRequest, res: ServerResponse, err: AnthropicErrorResponse): void {
    if (res.destroyed) return;
    rec.status = err.status;
    rec.error = err.error;
    rec.responseHeaders = err.headers;
    rec.outcome = 'rejected';
    sendAnthropicError(res, err);
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

  private logDone(r: MessagesRequest): void {
    if (!this.log) return;
    const p = r.params;
    const u = r.message?.usage;
    this.log(
      `#${r.id} ${r.method} ${r.url} -> ${r.status ?? '-'} ${r.outcome}` +
        (p ? ` model=${p.model} stream=${p.stream} max_tokens=${p.max_tokens} source=${r.source}` : '') +
        (r.message ? ` stop=${r.message.stop_reason}` : '') +
        (u ? ` in=${u.input_tokens} cache_read=${u.cache_read_input_tokens} cache_write=${u.cache_creation_input_tokens} out=${u.output_tokens}` : '') +
        ` events=${r.eventsSent}` +
        (r.error ? ` error=${r.error.type}:${JSON.stringify(r.error.message.slice(0, 120))}` : ''),
    );
  }
}

function rfc3339(ms: number): string {
  return new Date(Math.ceil(ms / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export async function startAnthropicEmulator(opts: AnthropicEmulatorOptions = {}): Promise<AnthropicEmulator> {
  const options: ResolvedAnthropicOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_ANTHROPIC_API_KEY],
    keyModels: opts.keyModels ?? {},
    models: opts.models ?? null,
    versions: opts.versions ?? [...ANTHROPIC_VERSIONS],
    firstTokenDelayMs: opts.firstTokenDelayMs ?? 20,
    interTokenDelayMs: opts.interTokenDelayMs ?? 2,
    pingIntervalMs: opts.pingIntervalMs ?? 0,
    jsonChunkChars: opts.jsonChunkChars ?? 8,
    cache: opts.cache ?? 'simulate',
    minCacheableTokens: opts.minCacheableTokens ?? 0,
    rateLimits: {
      requestsPerMinute: opts.rateLimits?.requestsPerMinute ?? 4000,
      inputTokensPerMinute: opts.rateLimits?.inputTokensPerMinute ?? 2_000_000,
      outputTokensPerMinute: opts.rateLimits?.outputTokensPerMinute ?? 400_000,
      windowMs: opts.rateLimits?.windowMs ?? 60_000,
    },
    requireUserFirst: opts.requireUserFirst ?? true,
    maxOutputTokens: opts.maxOutputTokens ?? 128_000,
    allowUnknownParams: opts.allowUnknownParams ?? false,
    bodyTimeoutMs: opts.bodyTimeoutMs ?? 10_000,
    maxBodyBytes: opts.maxBodyBytes ?? MAX_BODY_BYTES,
  };
  if (!(options.jsonChunkChars >= 1)) throw new Error('jsonChunkChars must be >= 1');
  let emu: AnthropicEmulator | null = null;
  const server = await startEmulatorServer<never>({
    name: 'anthropic',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    onUpgrade: () => {
      const e = anthropicError(404, { message: 'Not Found' });
      return { accept: false, status: 404, headers: { 'request-id': e.requestId }, body: e.body };
    },
    onConnection: () => {
      throw new Error('anthropic accepts no WebSocket');
    },
    onHttpRequest: (req, res) => emu!.handle(req, res),
  });
  emu = new AnthropicEmulator(server, options, opts.log ?? null);
  return emu;
}
