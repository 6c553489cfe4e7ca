/**
 * Anthropic Messages API behind the OpenAI Chat Completions surface.
 * POST {base}/v1/messages (base `https://api.anthropic.com`, without /v1), `x-api-key`,
 * `anthropic-version: 2023-06-01`.
 * API reference: https://docs.anthropic.com/en/api/messages
 * Streaming events: https://platform.claude.com/docs/en/build-with-claude/streaming
 * Stop reasons: https://platform.claude.com/docs/en/build-with-claude/handling-stop-reasons
 * Errors: https://docs.claude.com/en/api/errors
 *
 * Request decisions (OpenAI body -> Anthropic):
 * - Messages follow LiveKit's own Anthropic format (agents `_provider_format/anthropic.py`):
 *   the first system/developer message is `system` (its text parts in order); later ones
 *   (mid-conversation or per-turn instructions from generate_reply) stay in place as user text
 *   `<instructions>\n...\n</instructions>`. user/assistant/tool messages become content blocks;
 *   `tool` messages are `tool_result` blocks of a user turn, placed before other blocks of that
 *   turn; consecutive turns of one role are merged (Anthropic alternates); a conversation that
 *   does not start with a user turn (an agent greeting first) gets a leading "(empty)" user turn.
 *   Empty text is skipped (Anthropic rejects empty text blocks); other message fields (`name`,
 *   `extra_content`, `refusal`, ...) are not forwarded. A trailing assistant message is sent
 *   as is (Anthropic continues it as a prefill; models that refuse prefill answer 400).
 * - `max_tokens` (required by Anthropic) = max_completion_tokens ?? max_tokens ?? 4096.
 * - `temperature` and `top_p` must be within Anthropic's 0..1: values above 1 (valid on
 *   OpenAI's 0..2 scale) are rejected, never clamped or rescaled. `top_k` (an Anthropic field
 *   arriving through `extra_body`) is forwarded.
 * - Dropped (bookkeeping without effect on the answer, or neutral values): stream_options,
 *   store, metadata, service_tier, prompt_cache_key, prompt_cache_retention, seed (best effort
 *   on OpenAI too), top_logprobs, n: 1, logprobs: false, frequency_penalty/presence_penalty: 0,
 *   logit_bias: {}, response_format {type:"text"}, modalities ["text"], reasoning_effort "none",
 *   verbosity "medium", parallel_tool_calls true; tool_choice/parallel_tool_calls without tools.
 * - Rejected with 400 (they would change what the client gets): n > 1, logprobs: true,
 *   non-zero penalties, a non-empty logit_bias, response_format json_object/json_schema,
 *   audio output, reasoning_effort other than "none" (thinking is not enabled), verbosity
 *   other than "medium", and any other parameter (audio, prediction, web_search_options,
 *   functions, ...).
 *
 * Response decisions: thinking / redacted_thinking and server-tool blocks are not forwarded
 * (the Chat Completions surface has no place for them); usage follows OpenAI:
 * prompt_tokens = input + cache_read + cache_creation, cached_tokens = cache_read.
 */
import { GatewayError, type ErrorCode } from '../../protocol/errors.ts';
import type {
  HttpRequestSpec,
  LlmRequestContext,
  LlmStreamTranslator,
  LlmUsage,
  ProviderEndpoint,
  SseEvent,
  TranslatingLlmAdapter,
} from '../types.ts';
import { providerReason } from '../upstream/ws-upstream.ts';

export const ANTHROPIC_VERSION = '2023-06-01';
export const DEFAULT_MAX_TOKENS = 4096;
/** Text of the user turn put first when a conversation starts with the assistant (or has none). */
export const EMPTY_USER_TURN = '(empty)';

const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp']);

type Obj = Record<string, unknown>;
interface Turn {
  role: 'user' | 'assistant';
  content: Obj[];
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(message: string, param?: string): GatewayError {
  return new GatewayError('bad_request', `anthropic: ${message}`, param ? { param } : undefined);
}

// ---- request -------------------------------------------------------------------------------

function unit(key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 1) {
    throw bad(`${key} must be a number from 0 to 1 (Anthropic's range), got ${JSON.stringify(v)}`, key);
  }
  return v;
}

function integer(key: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw bad(`${key} must be an integer >= ${min}`, key);
  return v;
}

function unsupported(key: string, why: string): GatewayError {
  return bad(`parameter "${key}" ${why}`, key);
}

function text(t: string): Obj {
  return { type: 'text', text: t };
}

/** String or text parts -> non-empty text blocks (system, tool results). */
function textBlocks(content: unknown, where: string, allowRefusal = false): Obj[] {
  if (typeof content === 'string') return content ? [text(content)] : [];
  if (content === null || content === undefined) return [];
  if (!Array.isArray(content)) throw bad(`${where}.content must be a string or an array of parts`);
  const out: Obj[] = [];
  for (let j = 0; j < content.length; j++) {
    const p: unknown = content[j];
    const t = isObj(p) ? (p.type === 'text' ? p.text : allowRefusal && p.type === 'refusal' ? p.refusal : undefined) : undefined;
    if (typeof t !== 'string') throw bad(`${where}.content[${j}] must be a text part here`);
    if (t) out.push(text(t));
  }
  return out;
}

function imageBlock(part: Obj, where: string): Obj {
  const url = isObj(part.image_url) ? part.image_url.url : undefined;
  if (typeof url !== 'string') throw bad(`${where}.image_url.url must be a string`);
  if (url.startsWith('data:')) {
    const comma = url.indexOf(',');
    const meta = url.slice(5, comma < 0 ? 5 : comma).split(';');
    const mediaType = (meta[0] ?? '').toLowerCase();
    if (comma < 0 || meta.at(-1) !== 'base64') throw bad(`${where}: data URLs must be base64-encoded`);
    if (!IMAGE_TYPES.has(mediaType)) throw bad(`${where}: image type "${mediaType.slice(0, 40)}" is not supported (jpeg, png, gif, webp)`);
    return { type: 'image', source: { type: 'base64', media_type: mediaType, data: url.slice(comma + 1) } };
  }
  if (/^https?:\/\//i.test(url)) return { type: 'image', source: { type: 'url', url } };
  throw bad(`${where}: image URLs must be data: (base64) or http(s) URLs`);
}

function userBlocks(content: unknown, where: string): Obj[] {
  if (!Array.isArray(content)) return textBlocks(content, where);
  const out: Obj[] = [];
  for (let j = 0; j < content.length; j++) {
    const p: unknown = content[j];
    const at = `${where}.content[${j}]`;
    if (isObj(p) && p.type === 'text' && typeof p.text === 'string') {
      if (p.text) out.push(text(p.text));
    } else if (isObj(p) && p.type === 'image_url') {
      out.push(imageBlock(p, at));
    } else {
      const t = isObj(p) && typeof p.type === 'string' ? ` "${p.type.slice(0, 30)}"` : '';
      throw bad(`${at}: part type${t} is not supported (text, image_url)`);
    }
  }
  return out;
}

function assistantBlocks(m: Obj, where: string): Obj[] {
  const out = textBlocks(m.content, where, true);
  const calls = m.tool_calls;
  if (calls === undefined || calls === null) return out;
  if (!Array.isArray(calls)) throw bad(`${where}.tool_calls must be an array`);
  for (let j = 0; j < calls.length; j++) {
    const c: unknown = calls[j];
    const fn = isObj(c) ? c.function : undefined;
    if (!isObj(c) || typeof c.id !== 'string' || !c.id || !isObj(fn) || typeof fn.name !== 'string' || !fn.name) {
      throw bad(`${where}.tool_calls[${j}] must have an id and function.name`);
    }
    const call = `${where}.tool_calls[${j}] (id "${c.id.slice(0, 64)}", function "${fn.name.slice(0, 64)}")`;
    let input: unknown = {};
    if (typeof fn.arguments === 'string' && fn.arguments.trim() !== '') {
      try {
        input = JSON.parse(fn.arguments);
      } catch {
        throw bad(`${call}: arguments are not valid JSON`);
      }
    } else if (fn.arguments !== undefined && fn.arguments !== null && typeof fn.arguments !== 'string') {
      throw bad(`${call}: arguments must be a JSON string`);
    }
    if (!isObj(input)) throw bad(`${call}: arguments must be a JSON object`);
    out.push({ type: 'tool_use', id: c.id, name: fn.name, input });
  }
  return out;
}

function toolResult(m: Obj, where: string): Obj {
  if (typeof m.tool_call_id !== 'string' || !m.tool_call_id) throw bad(`${where}.tool_call_id must be a non-empty string`);
  const block: Obj = { type: 'tool_result', tool_use_id: m.tool_call_id };
  if (typeof m.content === 'string') {
    if (m.content) block.content = m.content;
  } else {
    const parts = textBlocks(m.content, where);
    if (parts.length) block.content = parts;
  }
  return block;
}

/** Later system/developer messages keep their position as user text (LiveKit's Anthropic format). */
function instructions(blocks: Obj[]): Obj[] {
  const t = blocks.map((b) => b.text).join('\n');
  return t ? [text(`<instructions>\n${t}\n</instructions>`)] : [];
}

function translateMessages(messages: unknown): { system: Obj[]; turns: Turn[] } {
  if (!Array.isArray(messages) || messages.length === 0) throw bad('messages must be a non-empty array', 'messages');
  let system: Obj[] | null = null;
  const turns: Turn[] = [];
  const add = (role: Turn['role'], blocks: Obj[]): void => {
    if (!blocks.length) return;
    const last = turns.at(-1);
    if (last?.role !== role) {
      turns.push({ role, content: blocks });
      return;
    }
    // Anthropic wants a user turn's tool_result blocks before anything else in it.
    const firstOther = blocks[0]?.type === 'tool_result' ? last.content.findIndex((b) => b.type !== 'tool_result') : -1;
    if (firstOther >= 0) last.content.splice(firstOther, 0, ...blocks);
    else last.content.push(...blocks);
  };
  for (let i = 0; i < messages.length; i++) {
    const m: unknown = messages[i];
    const where = `messages[${i}]`;
    if (!isObj(m)) throw bad(`${where} must be an object`);
    if (m.role === 'system' || m.role === 'developer') {
      const blocks = textBlocks(m.content, where);
      if (system === null) system = blocks;
      else add('user', instructions(blocks));
    } else if (m.role === 'user') add('user', userBlocks(m.content, where));
    else if (m.role === 'assistant') add('assistant', assistantBlocks(m, where));
    else if (m.role === 'tool') add('user', [toolResult(m, where)]);
    else throw bad(`${where}.role must be system, developer, user, assistant or tool`);
  }
  // Anthropic's conversation starts with a user turn (LiveKit's Anthropic format inserts the same).
  if (turns[0]?.role !== 'user') turns.unshift({ role: 'user', content: [text(EMPTY_USER_TURN)] });
  return { system: system ?? [], turns };
}

function translateTools(v: unknown): Obj[] {
  if (!Array.isArray(v)) throw bad('tools must be an array', 'tools');
  return v.map((t: unknown, i) => {
    const f = isObj(t) ? t.function : undefined;
    if (!isObj(t) || t.type !== 'function' || !isObj(f)) throw bad(`tools[${i}]: only {type:"function", function:{...}} tools are supported`, 'tools');
    if (typeof f.name !== 'string' || !f.name) throw bad(`tools[${i}].function.name must be a non-empty string`, 'tools');
    if (f.description != null && typeof f.description !== 'string') throw bad(`tools[${i}].function.description must be a string`, 'tools');
    if (f.parameters != null && !isObj(f.parameters)) throw bad(`tools[${i}].function.parameters must be a JSON schema object`, 'tools');
    const tool: Obj = { name: f.name };
    if (f.description) tool.description = f.description;
    tool.input_schema = f.parameters ?? { type: 'object', properties: {} };
    return tool;
  });
}

function translateToolChoice(choice: unknown, parallel: unknown, tools: Obj[]): Obj | undefined {
  if (parallel !== undefined && typeof parallel !== 'boolean') throw bad('parallel_tool_calls must be a boolean', 'parallel_tool_calls');
  let tc: Obj | undefined;
  if (choice === 'none') return { type: 'none' };
  if (choice === 'auto') tc = { type: 'auto' };
  else if (choice === 'required') tc = { type: 'any' };
  else if (choice !== undefined) {
    const name = isObj(choice) && choice.type === 'function' && isObj(choice.function) ? choice.function.name : undefined;
    if (typeof name !== 'string') throw bad('tool_choice must be "auto", "none", "required" or {type:"function", function:{name}}', 'tool_choice');
    if (!tools.some((t) => t.name === name)) throw bad(`tool_choice names "${name.slice(0, 64)}", which is not in tools`, 'tool_choice');
    tc = { type: 'tool', name };
  }
  if (parallel === false) {
    tc ??= { type: 'auto' };
    tc.disable_parallel_tool_use = true;
  }
  return tc;
}

/** Read by request() itself, or OpenAI bookkeeping with no effect on the answer: not forwarded. */
const IGNORED = new Set([
  'model', 'messages', 'stream', 'tools', 'tool_choice', 'parallel_tool_calls',
  'stream_options', 'store', 'metadata', 'service_tier', 'prompt_cache_key', 'prompt_cache_retention', 'seed', 'top_logprobs',
]);

/** OpenAI parameters without an Anthropic equivalent: accepted only with their neutral value. */
const NEUTRAL_ONLY = new Map<string, [ok: (v: unknown) => boolean, why: string]>([
  ['n', [(v) => v === 1, 'must be 1: Anthropic returns a single choice']],
  ['logprobs', [(v) => v === false, 'is not available from Anthropic']],
  ['frequency_penalty', [(v) => v === 0, 'is not supported by Anthropic (only 0 is accepted)']],
  ['presence_penalty', [(v) => v === 0, 'is not supported by Anthropic (only 0 is accepted)']],
  ['logit_bias', [(v) => isObj(v) && Object.keys(v).length === 0, 'is not supported by Anthropic']],
  ['response_format', [(v) => isObj(v) && v.type === 'text', 'is not supported by the anthropic adapter (only {type:"text"})']],
  ['modalities', [(v) => Array.isArray(v) && v.every((m) => m === 'text'), 'must be ["text"] (no audio output)']],
  ['reasoning_effort', [(v) => v === 'none', 'is not supported by the anthropic adapter (extended thinking is not enabled); use "none" or omit it']],
  ['verbosity', [(v) => v === 'medium', 'is not supported by Anthropic']],
]);

function request(body: Record<string, unknown>, ctx: LlmRequestContext, endpoint: ProviderEndpoint): HttpRequestSpec {
  const p: Obj = {};
  let maxCompletion: number | undefined;
  let maxTokens: number | undefined;
  let userId: string | undefined;
  for (const key of Object.keys(body)) {
    const v = body[key];
    if (v === null || v === undefined || IGNORED.has(key)) continue;
    const neutral = NEUTRAL_ONLY.get(key);
    if (neutral) {
      if (!neutral[0](v)) throw unsupported(key, neutral[1]);
      continue;
    }
    switch (key) {
      case 'max_completion_tokens':
        maxCompletion = integer(key, v, 1);
        break;
      case 'max_tokens':
        maxTokens = integer(key, v, 1);
        break;
      case 'temperature':
      case 'top_p':
        p[key] = unit(key, v);
        break;
      case 'top_k':
        p.top_k = integer(key, v, 0);
        break;
      case 'stop': {
        const stops: unknown[] = Array.isArray(v) ? v : [v];
        if (!stops.every((s) => typeof s === 'string' && s)) throw bad('stop must be a non-empty string or an array of them', 'stop');
        if (stops.length) p.stop_sequences = stops;
        break;
      }
      case 'user':
      case 'safety_identifier':
        if (typeof v !== 'string') throw bad(`${key} must be a string`, key);
        if (key === 'safety_identifier' || userId === undefined) userId = v;
        break;
      default:
        throw unsupported(key.slice(0, 60), 'is not supported by the anthropic adapter');
    }
  }
  const { system, turns } = translateMessages(body.messages);
  const out: Obj = { model: ctx.model, max_tokens: maxCompletion ?? maxTokens ?? DEFAULT_MAX_TOKENS };
  if (system.length) out.system = system;
  out.messages = turns;
  const tools = body.tools === null || body.tools === undefined ? [] : translateTools(body.tools);
  if (tools.length) {
    out.tools = tools;
    const tc = translateToolChoice(body.tool_choice ?? undefined, body.parallel_tool_calls ?? undefined, tools);
    if (tc) out.tool_choice = tc;
  }
  Object.assign(out, p);
  if (userId !== undefined) out.metadata = { user_id: userId };
  out.stream = ctx.stream;
  return {
    url: `${endpoint.baseUrl.replace(/\/+$/, '')}/v1/messages`,
    headers: { 'x-api-key': endpoint.apiKey, 'anthropic-version': ANTHROPIC_VERSION, 'content-type': 'application/json' },
    body: JSON.stringify(out),
  };
}

// ---- responses -----------------------------------------------------------------------------

const FINISH = new Map<string, string>([
  ['end_turn', 'stop'],
  ['stop_sequence', 'stop'],
  ['pause_turn', 'stop'],
  ['max_tokens', 'length'],
  ['model_context_window_exceeded', 'length'],
  ['tool_use', 'tool_calls'],
  ['refusal', 'content_filter'],
]);

function finishReason(stop: unknown): string {
  return (typeof stop === 'string' && FINISH.get(stop)) || 'stop';
}

const ERROR_CODES = new Map<string, ErrorCode>([
  ['invalid_request_error', 'bad_request'],
  ['authentication_error', 'unauthorized'],
  ['permission_error', 'forbidden'],
  ['billing_error', 'forbidden'],
  ['not_found_error', 'not_found'],
  ['request_too_large', 'payload_too_large'],
  ['rate_limit_error', 'rate_limited'],
  ['api_error', 'provider_error'],
  ['overloaded_error', 'unavailable'],
  ['timeout_error', 'provider_timeout'],
]);

/** An in-band Anthropic error object (`{type, message}`) -> GatewayError. */
export function anthropicError(e: unknown): GatewayError {
  const type = isObj(e) && typeof e.type === 'string' ? e.type : 'unknown_error';
  const msg = isObj(e) && typeof e.message === 'string' ? providerReason(e.message) : '';
  return new GatewayError(ERROR_CODES.get(type) ?? 'provider_error', `anthropic: provider reported ${providerReason(type)}${msg ? `: ${msg}` : ''}`);
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function toUsage(input: number, cacheRead: number, cacheCreation: number, output: number): LlmUsage {
  const prompt = input + cacheRead + cacheCreation;
  return { prompt_tokens: prompt, completion_tokens: output, total_tokens: prompt + output, cached_tokens: cacheRead };
}

/** OpenAI's `usage` object. */
function usageObject(u: LlmUsage): Obj {
  return {
    prompt_tokens: u.prompt_tokens,
    completion_tokens: u.completion_tokens,
    total_tokens: u.total_tokens,
    prompt_tokens_details: { cached_tokens: u.cached_tokens },
  };
}

interface ToolBlock {
  index: number;
  input: unknown;
  /** Some non-empty `partial_json` was forwarded. */
  args: boolean;
}

/** Per content-block index: a tool call being streamed, or null (text, thinking, ...). */
type BlockState = ToolBlock | null;

class AnthropicStream implements LlmStreamTranslator {
  #usage: LlmUsage | null = null;
  #visible = false;
  #error: GatewayError | null = null;
  /** `{"id":...,"choices":` shared by every chunk. */
  readonly #head: string;
  readonly #textHead: string;
  #started = false;
  #finished = false;
  #over = false;
  #blocks: BlockState[] = [];
  #tools = 0;
  #raw = { input: 0, cacheRead: 0, cacheCreation: 0, output: 0 };

  constructor(ctx: LlmRequestContext, id: string, created: number) {
    this.#head = `{"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(ctx.label)},"choices":`;
    this.#textHead = `${this.#head}[{"index":0,"delta":{"content":`;
  }

  get usage(): LlmUsage | null {
    return this.#usage;
  }
  get visible(): boolean {
    return this.#visible;
  }
  get error(): GatewayError | null {
    return this.#error;
  }

  #delta(delta: string, finish = 'null'): string {
    return `${this.#head}[{"index":0,"delta":${delta},"finish_reason":${finish}}]}`;
  }

  #start(out: string[]): void {
    if (this.#started) return;
    this.#started = true;
    out.push(this.#delta('{"role":"assistant","content":""}'));
  }

  #text(out: string[], t: string): void {
    this.#start(out);
    this.#visible = true;
    out.push(`${this.#textHead}${JSON.stringify(t)}},"finish_reason":null}]}`);
  }

  #takeUsage(u: unknown): void {
    if (!isObj(u)) return;
    const r = this.#raw;
    r.input = num(u.input_tokens) ?? r.input;
    r.cacheRead = num(u.cache_read_input_tokens) ?? r.cacheRead;
    r.cacheCreation = num(u.cache_creation_input_tokens) ?? r.cacheCreation;
    r.output = num(u.output_tokens) ?? r.output;
    this.#usage = toUsage(r.input, r.cacheRead, r.cacheCreation, r.output);
  }

  #fail(err: GatewayError): string[] {
    this.#error = err;
    this.#over = true;
    return [];
  }

  #usageChunk(out: string[]): string[] {
    this.#over = true;
    if (this.#usage) out.push(`${this.#head}[],"usage":${JSON.stringify(usageObject(this.#usage))}}`);
    return out;
  }

  push(ev: SseEvent): string[] {
    if (this.#over || ev.event === 'ping') return [];
    let msg: unknown;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return this.#fail(new GatewayError('provider_error', 'anthropic: unparseable stream event'));
    }
    if (!isObj(msg)) return [];
    const out: string[] = [];
    switch (msg.type) {
      case 'message_start':
        this.#takeUsage(isObj(msg.message) ? msg.message.usage : undefined);
        this.#start(out);
        return out;
      case 'content_block_start': {
        const idx = num(msg.index) ?? 0;
        const b = msg.content_block;
        if (!isObj(b)) return out;
        if (b.type === 'text') {
          this.#start(out);
          if (typeof b.text === 'string' && b.text) this.#text(out, b.text);
        } else if (b.type === 'tool_use') {
          const tool: ToolBlock = { index: this.#tools++, input: b.input, args: false };
          this.#blocks[idx] = tool;
          this.#start(out);
          out.push(
            this.#delta(
              `{"tool_calls":[{"index":${tool.index},"id":${JSON.stringify(String(b.id))},"type":"function","function":{"name":${JSON.stringify(String(b.name))},"arguments":""}}]}`,
            ),
          );
        }
        return out;
      }
      case 'content_block_delta': {
        const d = msg.delta;
        if (!isObj(d)) return out;
        if (d.type === 'text_delta') {
          if (typeof d.text === 'string' && d.text) this.#text(out, d.text);
        } else if (d.type === 'input_json_delta') {
          const tool = this.#blocks[num(msg.index) ?? 0];
          if (tool && typeof d.partial_json === 'string' && d.partial_json) {
            tool.args = true;
            out.push(this.#delta(`{"tool_calls":[{"index":${tool.index},"function":{"arguments":${JSON.stringify(d.partial_json)}}}]}`));
          }
        }
        // thinking_delta, signature_delta, citations_delta: not forwarded
        return out;
      }
      case 'content_block_stop': {
        const idx = num(msg.index) ?? 0;
        const tool = this.#blocks[idx];
        if (tool) {
          this.#blocks[idx] = null;
          if (!tool.args) {
            // no fragments arrived: send the whole input (`{}` for a call without arguments)
            const args = JSON.stringify(isObj(tool.input) ? tool.input : {});
            out.push(this.#delta(`{"tool_calls":[{"index":${tool.index},"function":{"arguments":${JSON.stringify(args)}}}]}`));
          }
          this.#visible = true;
        }
        return out;
      }
      case 'message_delta': {
        this.#takeUsage(msg.usage);
        const stop = isObj(msg.delta) ? msg.delta.stop_reason : undefined;
        if (typeof stop === 'string' && !this.#finished) {
          this.#finished = true;
          this.#start(out);
          out.push(this.#delta('{}', `"${finishReason(stop)}"`));
        }
        return out;
      }
      case 'message_stop':
        if (!this.#finished) {
          this.#finished = true;
          this.#start(out);
          out.push(this.#delta('{}', '"stop"'));
        }
        return this.#usageChunk(out);
      case 'error':
        return this.#fail(anthropicError(msg.error));
      default:
        return out; // ping and event types added later
    }
  }

  end(): string[] {
    if (this.#over) return [];
    // Without a stop_reason the message is incomplete: report it rather than pretend it ended.
    if (!this.#finished) return this.#fail(new GatewayError('provider_error', 'anthropic: stream ended before the message was complete'));
    return this.#usageChunk([]);
  }
}

function translateResponse(json: unknown, ctx: LlmRequestContext, id: string, created: number): { body: Record<string, unknown>; usage: LlmUsage | null } {
  if (isObj(json) && json.type === 'error') throw anthropicError(json.error);
  if (!isObj(json) || !Array.isArray(json.content)) throw new GatewayError('provider_error', 'anthropic: unexpected response (no content array)');
  let content: string | null = null;
  const calls: Obj[] = [];
  for (const b of json.content as unknown[]) {
    if (!isObj(b)) continue;
    if (b.type === 'text' && typeof b.text === 'string') content = (content ?? '') + b.text;
    else if (b.type === 'tool_use') {
      const args = JSON.stringify(isObj(b.input) ? b.input : {});
      calls.push({ id: String(b.id), type: 'function', function: { name: String(b.name), arguments: args } });
    }
  }
  const message: Obj = { role: 'assistant', content };
  if (calls.length) message.tool_calls = calls;
  const body: Obj = {
    id,
    object: 'chat.completion',
    created,
    model: ctx.label,
    choices: [{ index: 0, message, finish_reason: finishReason(json.stop_reason) }],
  };
  const u = json.usage;
  let usage: LlmUsage | null = null;
  if (isObj(u)) {
    usage = toUsage(num(u.input_tokens) ?? 0, num(u.cache_read_input_tokens) ?? 0, num(u.cache_creation_input_tokens) ?? 0, num(u.output_tokens) ?? 0);
    body.usage = usageObject(usage);
  }
  return { body, usage };
}

export const anthropicLlm: TranslatingLlmAdapter = {
  kind: 'translate',
  provider: 'anthropic',
  // Listed by GET /v1/models only: any model id is forwarded as is.
  models: ['claude-opus-4-6', 'claude-sonnet-4-6', 'claude-opus-4-5', 'claude-sonnet-4-5', 'claude-haiku-4-5', 'claude-opus-4-1'],
  request,
  createStreamTranslator: (ctx, id, created) => new AnthropicStream(ctx, id, created),
  translateResponse,
};
