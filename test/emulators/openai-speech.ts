/**
 * Emulator of OpenAI's text-to-speech endpoint `POST /v1/audio/speech`:
 * https://platform.openai.com/docs/api-reference/audio/createSpeech
 *
 * Written from ../../../shared/providers.md §6.1 (errors), §6.2 (request body, pcm format, SSE) and
 * §9 "OpenAI" (timing), plus the SDK types of openai@6.49.0 (`resources/audio/speech.ts`), never
 * from the gateway adapter. Audio is the deterministic tone "speech" of ./tts-audio.ts: every input
 * character (code point) lasts `msPerChar / speed` ms of 24 kHz s16le mono PCM.
 *
 * Facts relied on (providers.md):
 * - `Authorization: Bearer <key>`; errors are `{"error":{"message","type","param","code"}}` with an
 *   `x-request-id` header; 400 invalid_request_error, 401 invalid_api_key, 404 model_not_found,
 *   429 rate_limit_exceeded / insufficient_quota with retry-after (+ retry-after-ms, which the SDK
 *   reads), 500/503 server errors.
 * - body: model (tts-1, tts-1-hd, gpt-4o-mini-tts, gpt-4o-mini-tts-2025-12-15), input (<= 4096
 *   chars), voice (13 names or {"id": "voice_..."}), instructions (not for tts-1*), response_format
 *   (mp3 default, opus, aac, flac, wav, pcm), speed 0.25-4.0, stream_format (audio default | sse,
 *   sse not for tts-1*).
 * - pcm = raw 24 kHz s16le mono, no header; stream_format=audio = chunked binary body;
 *   stream_format=sse = `speech.audio.delta {audio: b64}` ... `speech.audio.done {usage}`.
 * - timing: response headers immediately, first bytes ~200-500 ms later (realistic, UNCERTAIN),
 *   then continuous chunks faster than real time.
 *
 * Deterministic rules:
 * - Checks, in order: route (404 `Invalid URL (POST /v1/x)`, 405 for another method), injected
 *   fault status, Bearer auth (401), JSON body (400), schema (400, every problem in one
 *   pydantic-style message, param null, code null), model (404 model_not_found), instructions with
 *   tts-1* (400 unsupported_parameter), sse with tts-1* (400 unsupported_value), maxConcurrent (429).
 * - Success: 200 and headers are flushed at once (`x-request-id`, `openai-version`,
 *   `openai-processing-ms`, Content-Type of the format); the first audio chunk is written
 *   `firstAudioDelayMs` later; chunk k (each `chunkMs` of audio, the last one shorter) is written at
 *   first + (audio ms of chunks 1..k) / realtimeFactor (absolute schedule, no drift); then the body
 *   ends (SSE: a `speech.audio.done` event first).
 * - Audio bytes = round(chars x msPerChar / speed x 24) x 2 (`speechAudioBytes`), bit-identical to
 *   `renderText(input, 24000, { msPerChar: msPerChar / speed })`.
 *
 * UNCERTAIN choices (not settled by the docs we have):
 * - mp3/opus/aac/flac cannot be encoded offline: by default (`compressedFormats: 'raw-pcm'`) they
 *   are accepted and the body is the same raw PCM, labelled with the format's Content-Type and an
 *   `x-emulator-fake-format` header; `compressedFormats: 'reject'` answers 400 instead.
 * - wav: a 44-byte PCM header with exact RIFF/data sizes (the real stream may use placeholders),
 *   sent with the first audio chunk. Content-Types: audio/mpeg, audio/opus, audio/aac, audio/flac,
 *   audio/wav, audio/pcm, text/event-stream.
 * - Validation messages imitate the observed pydantic-style texts (e.g. `[{'type':
 *   'string_too_long', 'loc': ('body', 'input'), 'msg': 'String should have at most 4096
 *   characters', ...}]`); an empty input is `string_too_short`; unknown body keys are
 *   `extra_forbidden` unless `allowUnknownParams`; `null` optional fields mean "absent"; speed must
 *   be a JSON number (no numeric strings). Custom voices: any `{"id": string}` is accepted.
 * - `speed` is honoured by every model (older docs said gpt-4o-mini-tts ignores it).
 * - SSE events are `data: <json>\n\n` lines without an `event:` field; the done usage is
 *   `{input_tokens: ceil((chars(input)+chars(instructions))/4), output_tokens:
 *   ceil(audio seconds x 1250/60), total_tokens}` (1250 audio tokens per minute matches the
 *   documented $12/1M tokens ~= $0.015/min). A mid-stream SSE failure is `data: {"error":{...}}`.
 * - A missing or non-Bearer Authorization header is 401 with code null ("You didn't provide an API
 *   key..."); a wrong Bearer key is 401 invalid_api_key with the key masked.
 * - maxConcurrent (off by default; OpenAI documents rate limits, not a concurrency cap) counts
 *   responses in progress per key and answers 429 rate_limit_exceeded (type "requests").
 */
import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { startEmulatorServer, type EmulatorServer, type TlsOptions } from './base.ts';
import { DEFAULT_MS_PER_CHAR, TtsRenderer } from './tts-audio.ts';

// =============================================================================================
// Reusable OpenAI helpers (errors, auth, body) for every OpenAI-compatible emulator

export const DEFAULT_OPENAI_API_KEY = 'sk-test-key';
export const OPENAI_VERSION_HEADER = '2020-10-01';

export interface OpenAiErrorObject {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

export interface OpenAiErrorResponse {
  status: number;
  headers: Record<string, string>;
  error: OpenAiErrorObject;
  /** `{"error":{...}}` */
  body: string;
}

export interface OpenAiErrorOptions extends Partial<OpenAiErrorObject> {
  requestId?: string;
  /** 429 (and any status when given explicitly): `retry-after` (s, rounded up) + `retry-after-ms` */
  retryAfterMs?: number;
  headers?: Record<string, string>;
}

export const OPENAI_MISSING_KEY_MESSAGE =
  "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.";

export const OPENAI_INVALID_JSON_MESSAGE =
  "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)";

const DEFAULT_ERRORS: Record<number, OpenAiErrorObject> = {
  400: { message: 'Invalid request.', type: 'invalid_request_error', param: null, code: null },
  401: { message: 'Incorrect API key provided.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' },
  403: { message: 'Country, region, or territory not supported', type: 'request_forbidden', param: null, code: 'unsupported_country_region_territory' },
  404: { message: 'The model does not exist or you do not have access to it.', type: 'invalid_request_error', param: null, code: 'model_not_found' },
  408: { message: 'Request timed out.', type: 'invalid_request_error', param: null, code: null },
  409: { message: 'Conflict.', type: 'invalid_request_error', param: null, code: null },
  413: { message: 'Request body too large.', type: 'invalid_request_error', param: null, code: null },
  422: { message: 'Unprocessable entity.', type: 'invalid_request_error', param: null, code: null },
  429: {
    message:
      'Rate limit reached for requests. Please try again in 1s. Visit https://platform.openai.com/account/rate-limits to learn more.',
    type: 'requests',
    param: null,
    code: 'rate_limit_exceeded',
  },
  500: { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null },
  502: { message: 'Bad gateway.', type: 'server_error', param: null, code: null },
  503: { message: 'The engine is currently overloaded, please try again later.', type: 'server_error', param: null, code: null },
};

const QUOTA_ERROR: OpenAiErrorObject = {
  message:
    'You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.',
  type: 'insufficient_quota',
  param: null,
  code: 'insufficient_quota',
};

/** `req_` + 32 hex digits, like the real `x-request-id`. */
export function openAiRequestId(): string {
  return `req_${randomBytes(16).toString('hex')}`;
}

export function openAiErrorBody(error: OpenAiErrorObject): string {
  return JSON.stringify({ error });
}

/**
 * A vendor-shaped error: status, headers (x-request-id, content-type, retry-after on 429) and body.
 * Defaults per status; `openAiError(429, { code: 'insufficient_quota' })` gives the quota error.
 */
export function openAiError(status: number, o: OpenAiErrorOptions = {}): OpenAiErrorResponse {
  const base =
    status === 429 && o.code === 'insufficient_quota'
      ? QUOTA_ERROR
      : (DEFAULT_ERRORS[status] ?? {
          message: status >= 500 ? 'The server had an error processing your request.' : 'Invalid request.',
          type: status >= 500 ? 'server_error' : 'invalid_request_error',
          param: null,
          code: null,
        });
  const error: OpenAiErrorObject = {
    message: o.message ?? base.message,
    type: o.type ?? base.type,
    param: o.param !== undefined ? o.param : base.param,
    code: o.code !== undefined ? o.code : base.code,
  };
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'x-request-id': o.requestId ?? openAiRequestId(),
    'openai-version': OPENAI_VERSION_HEADER,
  };
  const retryMs = o.retryAfterMs ?? (status === 429 ? 1000 : undefined);
  if (retryMs !== undefined) {
    headers['retry-after'] = String(Math.max(0, Math.ceil(retryMs / 1000)));
    headers['retry-after-ms'] = String(retryMs);
  }
  Object.assign(headers, o.headers ?? {});
  return { status, headers, error, body: openAiErrorBody(error) };
}

/** Write an error response (no-op when the response is already gone). */
export function sendOpenAiError(res: ServerResponse, err: OpenAiErrorResponse): void {
  if (res.headersSent || res.destroyed) return;
  const body = Buffer.from(err.body, 'utf8');
  res.writeHead(err.status, { ...err.headers, 'content-length': String(body.length) });
  res.end(body);
}

/** How OpenAI shows a wrong key in its 401 message: head, asterisks, last 4 characters. */
export function maskApiKey(key: string): string {
  if (key.length <= 8) return '*'.repeat(key.length);
  return `${key.slice(0, 3)}${'*'.repeat(key.length - 7)}${key.slice(-4)}`;
}

export type BearerCheck = { ok: true; key: string } | { ok: false; key: string | null; error: OpenAiErrorResponse };

/** `Authorization: Bearer <key>` against a key list; failures are the vendor's 401 bodies. */
export function checkBearerAuth(headers: IncomingHttpHeaders, apiKeys: readonly string[], requestId: string): BearerCheck {
  const h = headers.authorization;
  const m = typeof h === 'string' ? /^\s*bearer\s+(\S+)\s*$/i.exec(h) : null;
  if (!m) return { ok: false, key: null, error: openAiError(401, { requestId, message: OPENAI_MISSING_KEY_MESSAGE, code: null }) };
  const key = m[1]!;
  if (!apiKeys.includes(key)) {
    const message = `Incorrect API key provided: ${maskApiKey(key)}. You can find your API key at https://platform.openai.com/account/api-keys.`;
    return { ok: false, key, error: openAiError(401, { requestId, message, code: 'invalid_api_key' }) };
  }
  return { ok: true, key };
}

/** `404 Invalid URL (POST /v1/x)` / `405 Invalid method for URL (GET /v1/x)`. */
export function openAiRouteError(method: string, path: string, kind: 'url' | 'method', requestId: string): OpenAiErrorResponse {
  return kind === 'url'
    ? openAiError(404, { requestId, message: `Invalid URL (${method} ${path})`, code: null })
    : openAiError(405, { requestId, message: `Invalid method for URL (${method} ${path})`, type: 'invalid_request_error', code: null });
}

export class BodyReadError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** Read a request body with a size limit and a timeout (rejects with BodyReadError). */
export function readRequestBody(req: IncomingMessage, maxBytes: number, timeoutMs: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err: BodyReadError | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
      if (err) reject(err);
      else resolve(Buffer.concat(parts));
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        req.resume();
        finish(new BodyReadError(413, `Request body too large (over ${maxBytes} bytes).`));
        return;
      }
      parts.push(c);
    };
    const onEnd = () => finish(null);
    const onError = () => finish(new BodyReadError(499, 'client closed the request'));
    const onClose = () => finish(new BodyReadError(499, 'client closed the request'));
    const timer = setTimeout(() => finish(new BodyReadError(408, 'Timed out reading the request body.')), timeoutMs);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

// ---------------------------------------------------------------------------------------------
// Pydantic-style validation messages (the shape observed from the audio endpoints)

export interface ValidationIssue {
  type: string;
  loc: Array<string | number>;
  msg: string;
  input?: unknown;
  ctx?: Record<string, unknown>;
}

/** Python `repr` of a JSON value (as the API echoes inputs in its validation messages). */
export function pyRepr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') {
    const q = v.includes("'") && !v.includes('"') ? '"' : "'";
    const body = v
      .replace(/\\/g, '\\\\')
      .replace(/\n/g, '\\n')
      .replace(/\r/g, '\\r')
      .replace(/\t/g, '\\t')
      .split(q)
      .join(`\\${q}`);
    return q + body + q;
  }
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`;
  if (typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`)
      .join(', ')}}`;
  }
  return pyRepr(String(v));
}

/** `[{'type': ..., 'loc': ('body', 'x'), 'msg': ..., 'input': ..., 'ctx': {...}}, ...]` */
export function formatValidationIssues(issues: readonly ValidationIssue[]): string {
  const one = (i: ValidationIssue): string => {
    const parts = [`'type': ${pyRepr(i.type)}`, `'loc': (${i.loc.map(pyRepr).join(', ')})`, `'msg': ${pyRepr(i.msg)}`];
    if ('input' in i) parts.push(`'input': ${pyRepr(i.input)}`);
    if (i.ctx) parts.push(`'ctx': ${pyRepr(i.ctx)}`);
    return `{${parts.join(', ')}}`;
  };
  return `[${issues.map(one).join(', ')}]`;
}

function enumText(values: readonly string[]): string {
  const q = values.map((v) => `'${v}'`);
  return q.length <= 1 ? (q[0] ?? '') : `${q.slice(0, -1).join(', ')} or ${q[q.length - 1]}`;
}

// =============================================================================================
// /v1/audio/speech

export const SPEECH_PATH = '/v1/audio/speech';
export const SPEECH_SAMPLE_RATE = 24000;
/** 24 kHz x 2 bytes */
export const SPEECH_BYTES_PER_MS = (SPEECH_SAMPLE_RATE * 2) / 1000;
export const SPEECH_MAX_INPUT_CHARS = 4096;
export const SPEECH_MODELS = ['tts-1', 'tts-1-hd', 'gpt-4o-mini-tts', 'gpt-4o-mini-tts-2025-12-15'] as const;
export type SpeechModelName = (typeof SPEECH_MODELS)[number];
export const SPEECH_VOICES: readonly string[] = [
  'alloy', 'ash', 'ballad', 'coral', 'echo', 'fable', 'onyx', 'nova', 'sage', 'shimmer', 'verse', 'marin', 'cedar',
];
export const SPEECH_FORMATS = ['mp3', 'opus', 'aac', 'flac', 'wav', 'pcm'] as const;
export type SpeechFormat = (typeof SPEECH_FORMATS)[number];
export const SPEECH_CONTENT_TYPES: Record<SpeechFormat, string> = {
  mp3: 'audio/mpeg',
  opus: 'audio/opus',
  aac: 'audio/aac',
  flac: 'audio/flac',
  wav: 'audio/wav',
  pcm: 'audio/pcm',
};
/** gpt-4o-mini-tts audio output tokens per second of audio (1250 per minute). */
export const AUDIO_TOKENS_PER_SECOND = 1250 / 60;

/** Timing a benchmark should use to look like the real service (§9, UNCERTAIN). */
export const OPENAI_SPEECH_REALISTIC_TIMING = { firstAudioDelayMs: 300, realtimeFactor: 5, chunkMs: 100 } as const;

export function isTts1(model: string): boolean {
  return model === 'tts-1' || model === 'tts-1-hd';
}

/** Exact PCM bytes the emulator renders for `chars` characters (TtsRenderer's rounding). */
export function speechAudioBytes(chars: number, o: { msPerChar?: number; speed?: number } = {}): number {
  const ms = (o.msPerChar ?? DEFAULT_MS_PER_CHAR) / (o.speed ?? 1);
  return Math.round((chars * ms * SPEECH_SAMPLE_RATE) / 1000) * 2;
}

/** 44-byte RIFF/WAVE header for 24 kHz s16le mono with `dataBytes` of samples. */
export function wavHeader(dataBytes: number, sampleRate = SPEECH_SAMPLE_RATE): Buffer {
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'latin1');
  h.writeUInt32LE(36 + dataBytes, 4);
  h.write('WAVE', 8, 'latin1');
  h.write('fmt ', 12, 'latin1');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20); // PCM
  h.writeUInt16LE(1, 22); // mono
  h.writeUInt32LE(sampleRate, 24);
  h.writeUInt32LE(sampleRate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36, 'latin1');
  h.writeUInt32LE(dataBytes, 40);
  return h;
}

export interface SpeechParams {
  model: string;
  input: string;
  voice: string | { id: string };
  instructions: string | null;
  responseFormat: SpeechFormat;
  speed: number;
  streamFormat: 'audio' | 'sse';
  /** body keys the emulator does not know (only present when allowUnknownParams) */
  unknown: string[];
}

export type SpeechCheck =
  | { ok: true; params: SpeechParams }
  | { ok: false; status: number; message: string; param: string | null; code: string | null };

const KNOWN_KEYS = new Set(['model', 'input', 'voice', 'instructions', 'response_format', 'speed', 'stream_format']);

/** Validate a parsed `/v1/audio/speech` body the way the API does (schema, then model rules). */
export function parseSpeechBody(
  body: unknown,
  o: { models?: readonly string[]; allowUnknownParams?: boolean; compressedFormats?: 'raw-pcm' | 'reject' } = {},
): SpeechCheck {
  const models: readonly string[] = o.models ?? SPEECH_MODELS;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    const msg = formatValidationIssues([{ type: 'model_attributes_type', loc: ['body'], msg: 'Input should be a valid dictionary or object to extract fields from', input: body }]);
    return { ok: false, status: 400, message: msg, param: null, code: null };
  }
  const b = body as Record<string, unknown>;
  const issues: ValidationIssue[] = [];
  const present = (k: string) => b[k] !== undefined && b[k] !== null;
  const str = (k: string, required: boolean): string | null => {
    if (!present(k)) {
      if (required) issues.push({ type: 'missing', loc: ['body', k], msg: 'Field required', input: body });
      return null;
    }
    const v = b[k];
    if (typeof v !== 'string') {
      issues.push({ type: 'string_type', loc: ['body', k], msg: 'Input should be a valid string', input: v });
      return null;
    }
    return v;
  };
  const model = str('model', true);
  const input = str('input', true);
  if (input !== null) {
    const n = [...input].length;
    if (n > SPEECH_MAX_INPUT_CHARS) {
      issues.push({ type: 'string_too_long', loc: ['body', 'input'], msg: `String should have at most ${SPEECH_MAX_INPUT_CHARS} characters`, input, ctx: { max_length: SPEECH_MAX_INPUT_CHARS } });
    } else if (n === 0) {
      issues.push({ type: 'string_too_short', loc: ['body', 'input'], msg: 'String should have at least 1 character', input, ctx: { min_length: 1 } });
    }
  }
  let voice: string | { id: string } | null = null;
  if (!present('voice')) {
    issues.push({ type: 'missing', loc: ['body', 'voice'], msg: 'Field required', input: body });
  } else if (typeof b['voice'] === 'string') {
    if (SPEECH_VOICES.includes(b['voice'])) voice = b['voice'];
    else issues.push({ type: 'enum', loc: ['body', 'voice'], msg: `Input should be ${enumText(SPEECH_VOICES)}`, input: b['voice'], ctx: { expected: enumText(SPEECH_VOICES) } });
  } else if (typeof b['voice'] === 'object' && !Array.isArray(b['voice'])) {
    const id = (b['voice'] as Record<string, unknown>)['id'];
    if (typeof id === 'string' && id !== '') voice = { id };
    else if (id === undefined) issues.push({ type: 'missing', loc: ['body', 'voice', 'id'], msg: 'Field required', input: b['voice'] });
    else issues.push({ type: 'string_type', loc: ['body', 'voice', 'id'], msg: 'Input should be a valid string', input: id });
  } else {
    issues.push({ type: 'enum', loc: ['body', 'voice'], msg: `Input should be ${enumText(SPEECH_VOICES)}`, input: b['voice'], ctx: { expected: enumText(SPEECH_VOICES) } });
  }
  const instructions = str('instructions', false);
  let responseFormat: SpeechFormat = 'mp3';
  if (present('response_format')) {
    const v = b['response_format'];
    if (typeof v === 'string' && (SPEECH_FORMATS as readonly string[]).includes(v)) responseFormat = v as SpeechFormat;
    else issues.push({ type: 'enum', loc: ['body', 'response_format'], msg: `Input should be ${enumText(SPEECH_FORMATS)}`, input: v, ctx: { expected: enumText(SPEECH_FORMATS) } });
  }
  let speed = 1;
  if (present('speed')) {
    const v = b['speed'];
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      issues.push({ type: 'float_type', loc: ['body', 'speed'], msg: 'Input should be a valid number', input: v });
    } else if (v < 0.25) {
      issues.push({ type: 'greater_than_equal', loc: ['body', 'speed'], msg: 'Input should be greater than or equal to 0.25', input: v, ctx: { ge: 0.25 } });
    } else if (v > 4) {
      issues.push({ type: 'less_than_equal', loc: ['body', 'speed'], msg: 'Input should be less than or equal to 4.0', input: v, ctx: { le: 4.0 } });
    } else {
      speed = v;
    }
  }
  let streamFormat: 'audio' | 'sse' = 'audio';
  if (present('stream_format')) {
    const v = b['stream_format'];
    if (v === 'audio' || v === 'sse') streamFormat = v;
    else issues.push({ type: 'enum', loc: ['body', 'stream_format'], msg: "Input should be 'sse' or 'audio'", input: v, ctx: { expected: "'sse' or 'audio'" } });
  }
  const unknown = Object.keys(b).filter((k) => !KNOWN_KEYS.has(k));
  if (!o.allowUnknownParams) {
    for (const k of unknown) issues.push({ type: 'extra_forbidden', loc: ['body', k], msg: 'Extra inputs are not permitted', input: b[k] });
  }
  if (issues.length > 0) return { ok: false, status: 400, message: formatValidationIssues(issues), param: null, code: null };

  const m = model!;
  if (!models.includes(m)) {
    return { ok: false, status: 404, message: `The model \`${m}\` does not exist or you do not have access to it.`, param: null, code: 'model_not_found' };
  }
  if (isTts1(m) && instructions !== null && instructions !== '') {
    return { ok: false, status: 400, message: "Unsupported parameter: 'instructions' is not supported with this model.", param: 'instructions', code: 'unsupported_parameter' };
  }
  if (isTts1(m) && streamFormat === 'sse') {
    return { ok: false, status: 400, message: "Unsupported value: 'stream_format' does not support 'sse' with this model. Supported values are: 'audio'.", param: 'stream_format', code: 'unsupported_value' };
  }
  if (o.compressedFormats === 'reject' && responseFormat !== 'pcm' && responseFormat !== 'wav') {
    return { ok: false, status: 400, message: `The emulator cannot encode '${responseFormat}' (compressedFormats: 'reject'); use 'pcm' or 'wav'.`, param: 'response_format', code: null };
  }
  return {
    ok: true,
    params: { model: m, input: input!, voice: voice!, instructions, responseFormat, speed, streamFormat, unknown: o.allowUnknownParams ? unknown : [] },
  };
}

// ---------------------------------------------------------------------------------------------
// Options, faults, records

export interface OpenAiSpeechEmulatorOptions {
  /** accepted Bearer keys (default ['sk-test-key']) */
  apiKeys?: string[];
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** accepted models (default the 4 documented ones) */
  models?: string[];
  /** ms of audio per character at speed 1 (default 60, tts-audio.ts) */
  msPerChar?: number;
  /** wall ms between the 200 headers and the first audio chunk (default 20; realistic 300) */
  firstAudioDelayMs?: number;
  /** audio is generated this many times faster than real time (default 10; Infinity = at once) */
  realtimeFactor?: number;
  /** audio ms per body write / SSE delta (default 100 = 4,800 bytes) */
  chunkMs?: number;
  /** responses in progress per key before 429 (default Infinity = no limit) */
  maxConcurrent?: number;
  /** retry-after(-ms) of the emulator's own 429s (default 1000) */
  retryAfterMs?: number;
  /** mp3/opus/aac/flac: 'raw-pcm' = accept, body is raw PCM (default); 'reject' = 400 */
  compressedFormats?: 'raw-pcm' | 'reject';
  /** accept (and record) unknown body keys instead of 400 extra_forbidden (default false) */
  allowUnknownParams?: boolean;
  /** request body read timeout -> 408 (default 10000) */
  bodyTimeoutMs?: number;
  /** request body size limit -> 413 (default 1 MiB) */
  maxBodyBytes?: number;
  /** keep the audio bytes sent in each request record (`audio`) */
  recordAudio?: boolean;
  /** one line per finished request (the CLI passes a stderr logger) */
  log?: (line: string) => void;
}

export type ResolvedOpenAiSpeechOptions = Required<Omit<OpenAiSpeechEmulatorOptions, 'port' | 'host' | 'tls' | 'log'>>;

/** Fault switches: `emu.faults` (server-wide, mutable) and `emu.faultNext(...)` (next request). */
export interface SpeechFaults {
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
  /** override options.firstAudioDelayMs */
  firstAudioDelayMs: number | null;
  /** override options.realtimeFactor (e.g. 0.5 = slower than real time) */
  realtimeFactor: number | null;
  /** send 200 + headers, then nothing at all (the body never starts or ends) */
  deadAir: boolean;
  /** write exactly this many audio bytes, then destroy the TCP socket (no chunked terminator) */
  dropAfterBytes: number | null;
  /** write exactly this many audio bytes, then fail: SSE `data: {"error":...}` + end; audio: clean early end */
  failAfterBytes: number | null;
  /** write exactly this many audio bytes, then send nothing more (connection stays open) */
  stallAfterBytes: number | null;
}

export function defaultSpeechFaults(): SpeechFaults {
  return {
    status: null,
    error: null,
    headers: null,
    retryAfterMs: null,
    responseDelayMs: 0,
    firstAudioDelayMs: null,
    realtimeFactor: null,
    deadAir: false,
    dropAfterBytes: null,
    failAfterBytes: null,
    stallAfterBytes: null,
  };
}

/**
 * pending: in progress (also while dead-air/stalled); rejected: an error status was answered;
 * completed: the whole audio and the end of the body were written; aborted: the client went away
 * first; dropped/failed: the fault of that name fired; shutdown: the emulator closed it.
 */
export type SpeechOutcome = 'pending' | 'rejected' | 'completed' | 'aborted' | 'dropped' | 'failed' | 'shutdown';

export interface SpeechUsage {
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
}

export interface SpeechRequest {
  id: number;
  /** x-request-id of the answer */
  requestId: string;
  receivedAt: Date;
  method: string;
  /** pathname */
  path: string;
  /** path + query as requested */
  url: string;
  headers: IncomingHttpHeaders;
  /** Bearer token presented (valid or not) */
  apiKey: string | null;
  authorized: boolean;
  rawBody: string;
  /** parsed JSON body (undefined when not JSON) */
  body: unknown;
  /** validated parameters (null when rejected before) */
  params: SpeechParams | null;
  /** faults applied to this request */
  faults: SpeechFaults;
  /** status answered (null while nothing was answered) */
  status: number | null;
  responseHeaders: Record<string, string>;
  error: OpenAiErrorObject | null;
  /** input text exactly as received (accepted requests; '' otherwise) */
  text: string;
  /** characters (code points) of the input: the tts-1 billing figure (accepted requests) */
  chars: number;
  /** audio the whole input renders to */
  expectedAudioBytes: number;
  expectedAudioSeconds: number;
  /** PCM bytes written (without the WAV header or SSE framing) */
  audioBytes: number;
  audioSeconds: number;
  /** body bytes written (headers excluded) */
  bodyBytes: number;
  /** audio writes / SSE deltas */
  chunks: number;
  /** each audio write: ms since receivedAt, PCM bytes */
  writes: Array<{ t: number; audioBytes: number }>;
  /** ms since receivedAt */
  timing: { headersMs: number | null; firstAudioMs: number | null; endMs: number | null };
  /** usage sent in speech.audio.done (SSE only) */
  usage: SpeechUsage | null;
  outcome: SpeechOutcome;
  /** the client went away before the response was complete */
  aborted: boolean;
  abortedAtMs: number | null;
  /** a stall/deadAir fault is holding the response */
  stalled: boolean;
  /** the HTTP exchange is over (ended or socket closed) */
  finished: boolean;
  /** audio bytes sent, only with recordAudio */
  audio?: Buffer;
}

// ---------------------------------------------------------------------------------------------
// One generation (a 200 response being streamed)

type LimitAction = 'drop' | 'fail' | 'stall';

class SpeechGeneration {
  private readonly rec: SpeechRequest;
  private readonly p: SpeechParams;
  private readonly res: ServerResponse;
  private readonly emu: OpenAiSpeechEmulator;
  private readonly t0: number;
  private readonly renderer: TtsRenderer;
  private readonly chars: string[];
  private readonly chunkBytes: number;
  private readonly factor: number;
  private readonly firstDelay: number;
  private readonly limit: { bytes: number; action: LimitAction } | null;
  private readonly audioParts: Buffer[] = [];
  private next = 0;
  private pending: Buffer = Buffer.alloc(0);
  private firstAt = 0;
  private firstChunkBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(emu: OpenAiSpeechEmulator, rec: SpeechRequest, p: SpeechParams, res: ServerResponse, t0: number) {
    this.emu = emu;
    this.rec = rec;
    this.p = p;
    this.res = res;
    this.t0 = t0;
    const o = emu.options;
    const f = rec.faults;
    this.renderer = new TtsRenderer(SPEECH_SAMPLE_RATE, { msPerChar: o.msPerChar / p.speed });
    this.chars = [...p.input];
    this.chunkBytes = Math.max(2, Math.round((SPEECH_SAMPLE_RATE * o.chunkMs) / 1000) * 2);
    this.factor = f.realtimeFactor ?? o.realtimeFactor;
    this.firstDelay = f.firstAudioDelayMs ?? o.firstAudioDelayMs;
    const limits: Array<{ bytes: number; action: LimitAction }> = [];
    if (f.dropAfterBytes != null) limits.push({ bytes: f.dropAfterBytes, action: 'drop' });
    if (f.failAfterBytes != null) limits.push({ bytes: f.failAfterBytes, action: 'fail' });
    if (f.stallAfterBytes != null) limits.push({ bytes: f.stallAfterBytes, action: 'stall' });
    limits.sort((a, b) => a.bytes - b.bytes);
    this.limit = limits[0] ?? null;
  }

  start(): void {
    const p = this.p;
    const headers: Record<string, string> = {
      'content-type': p.streamFormat === 'sse' ? 'text/event-stream' : SPEECH_CONTENT_TYPES[p.responseFormat],
      'x-request-id': this.rec.requestId,
      'openai-version': OPENAI_VERSION_HEADER,
      'openai-processing-ms': String(Math.round(this.ms())),
    };
    if (p.streamFormat === 'sse') headers['cache-control'] = 'no-cache';
    if (p.responseFormat !== 'pcm' && p.responseFormat !== 'wav') {
      headers['x-emulator-fake-format'] = `${p.responseFormat}; body is raw pcm_s16le ${SPEECH_SAMPLE_RATE} Hz mono`;
    }
    this.rec.status = 200;
    this.rec.responseHeaders = headers;
    this.res.writeHead(200, headers);
    this.res.flushHeaders();
    this.rec.timing.headersMs = this.ms();
    this.emu.changed();
    if (this.rec.faults.deadAir) {
      this.rec.stalled = true;
      this.emu.changed();
      return;
    }
    this.schedule(this.firstDelay);
  }

  /** Stop generating (client gone, shutdown). */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.saveAudio();
  }

  private ms(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.emit();
    }, Math.max(0, delayMs));
  }

  private nextChunk(): Buffer {
    const parts: Buffer[] = [this.pending];
    let have = this.pending.length;
    while (have < this.chunkBytes && this.next < this.chars.length) {
      const b = this.renderer.push(this.chars[this.next++]!);
      parts.push(b);
      have += b.length;
    }
    const all = parts.length === 1 ? this.pending : Buffer.concat(parts, have);
    const chunk = all.subarray(0, Math.min(this.chunkBytes, all.length));
    this.pending = all.subarray(chunk.length);
    return chunk;
  }

  private get complete(): boolean {
    return this.next >= this.chars.length && this.pending.length === 0;
  }

  private emit(): void {
    if (this.stopped || this.res.destroyed) return;
    let piece = this.nextChunk();
    let action: LimitAction | null = null;
    const lim = this.limit;
    if (lim && this.rec.audioBytes + piece.length >= lim.bytes) {
      piece = piece.subarray(0, Math.max(0, lim.bytes - this.rec.audioBytes));
      action = lim.action;
    }
    let ok = true;
    if (piece.length > 0) {
      ok = this.write(piece, action === 'drop' ? () => this.drop() : undefined);
    } else if (action === 'drop') {
      this.drop();
    }
    if (action === 'drop') return;
    if (action === 'fail') return this.fail();
    if (action === 'stall') {
      this.rec.stalled = true;
      this.emu.changed();
      return;
    }
    if (this.complete) return this.finish();
    const sentMs = (this.rec.audioBytes - this.firstChunkBytes) / SPEECH_BYTES_PER_MS;
    const upcoming = Math.min(this.chunkBytes, this.rec.expectedAudioBytes - this.rec.audioBytes) / SPEECH_BYTES_PER_MS;
    const due = Number.isFinite(this.factor) ? this.firstAt + (sentMs + upcoming) / this.factor : 0;
    const go = () => this.schedule(due - performance.now());
    if (ok) go();
    else this.res.once('drain', go);
  }

  private write(piece: Buffer, cb?: () => void): boolean {
    const rec = this.rec;
    const first = rec.chunks === 0;
    let payload = piece;
    if (first && this.p.responseFormat === 'wav') payload = Buffer.concat([wavHeader(rec.expectedAudioBytes), piece]);
    const data: Buffer =
      this.p.streamFormat === 'sse'
        ? Buffer.from(`data: ${JSON.stringify({ type: 'speech.audio.delta', audio: payload.toString('base64') })}\n\n`, 'utf8')
        : payload;
    if (first) {
      this.firstAt = performance.now();
      this.firstChunkBytes = piece.length;
      rec.timing.firstAudioMs = this.ms();
    }
    rec.audioBytes += piece.length;
    rec.audioSeconds = rec.audioBytes / (SPEECH_BYTES_PER_MS * 1000);
    rec.bodyBytes += data.length;
    rec.chunks++;
    rec.writes.push({ t: this.ms(), audioBytes: piece.length });
    if (this.emu.options.recordAudio) this.audioParts.push(Buffer.from(piece));
    const ok = cb ? this.res.write(data, cb) : this.res.write(data);
    this.emu.changed();
    return ok;
  }

  private finish(): void {
    const rec = this.rec;
    if (this.p.streamFormat === 'sse') {
      const usage = speechUsage(this.p, rec.expectedAudioSeconds);
      rec.usage = usage;
      const done = Buffer.from(`data: ${JSON.stringify({ type: 'speech.audio.done', usage })}\n\n`, 'utf8');
      rec.bodyBytes += done.length;
      this.res.write(done);
    }
    this.end('completed');
  }

  private fail(): void {
    if (this.p.streamFormat === 'sse') {
      const err = openAiError(500).error;
      const data = Buffer.from(`data: ${openAiErrorBody(err)}\n\n`, 'utf8');
      this.rec.error = err;
      this.rec.bodyBytes += data.length;
      this.res.write(data);
    }
    this.end('failed');
  }

  private end(outcome: SpeechOutcome): void {
    this.stopped = true;
    this.rec.outcome = outcome;
    this.rec.timing.endMs = this.ms();
    this.saveAudio();
    this.res.end();
    this.emu.changed();
  }

  private drop(): void {
    this.stopped = true;
    if (this.rec.finished) return; // the client went first (recorded as aborted)
    this.rec.outcome = 'dropped';
    this.rec.timing.endMs = this.ms();
    this.saveAudio();
    this.emu.changed();
    (this.res.socket ?? this.res).destroy();
  }

  private saveAudio(): void {
    if (this.emu.options.recordAudio) this.rec.audio = Buffer.concat(this.audioParts);
  }
}

export function speechUsage(p: SpeechParams, audioSeconds: number): SpeechUsage {
  const input_tokens = Math.ceil(([...p.input].length + [...(p.instructions ?? '')].length) / 4);
  const output_tokens = Math.ceil(audioSeconds * AUDIO_TOKENS_PER_SECOND - 1e-9);
  return { input_tokens, output_tokens, total_tokens: input_tokens + output_tokens };
}

// ---------------------------------------------------------------------------------------------
// The emulator

export class OpenAiSpeechEmulator {
  readonly server: EmulatorServer;
  /** live options: changes apply to requests received afterwards */
  readonly options: ResolvedOpenAiSpeechOptions;
  /** every request to the emulator, in arrival order */
  readonly requests: SpeechRequest[] = [];
  /** server-wide fault switches (mutable) */
  faults: SpeechFaults = defaultSpeechFaults();
  private nextFaults: Partial<SpeechFaults>[] = [];
  private readonly generations = new Set<SpeechGeneration>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly log: ((line: string) => void) | null;
  private nextId = 1;
  private shuttingDown = false;

  constructor(server: EmulatorServer, options: ResolvedOpenAiSpeechOptions, log: ((line: string) => void) | null) {
    this.server = server;
    this.options = options;
    this.log = log;
  }

  get url(): string {
    return this.server.url;
  }
  /** what an OpenAI SDK takes as baseURL: `${url}/v1` */
  get baseUrl(): string {
    return `${this.server.url}/v1`;
  }
  /** full endpoint URL */
  get speechUrl(): string {
    return `${this.server.url}${SPEECH_PATH}`;
  }
  get port(): number {
    return this.server.port;
  }

  /** Apply these faults to the next request to /v1/audio/speech only (queued, one per request). */
  faultNext(f: Partial<SpeechFaults>): void {
    this.nextFaults.push(f);
  }

  /** Reset server-wide switches and drop queued next-request faults. */
  resetFaults(): void {
    this.faults = defaultSpeechFaults();
    this.nextFaults = [];
  }

  /** Notify waiters (records changed). */
  changed(): void {
    this.server.changed();
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  /** The n-th request (1-based) once it was received. */
  waitForRequest(n = 1, timeoutMs = 2000): Promise<SpeechRequest> {
    return this.waitFor(() => this.requests[n - 1], timeoutMs, `openai speech request #${n}`);
  }

  /** A request (default: the latest) once its HTTP exchange is over. */
  waitForDone(req?: SpeechRequest, timeoutMs = 2000): Promise<SpeechRequest> {
    return this.waitFor(() => {
      const r = req ?? this.requests[this.requests.length - 1];
      return r && r.finished ? r : undefined;
    }, timeoutMs, 'openai speech request done');
  }

  /** Stop every generation and timer, close every socket, stop listening. */
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
    if (path !== SPEECH_PATH || method !== 'POST') {
      req.resume();
      sendOpenAiError(res, openAiRouteError(method, url.pathname, path === SPEECH_PATH ? 'method' : 'url', requestId));
      return;
    }
    const faults: SpeechFaults = { ...this.faults, ...(this.nextFaults.shift() ?? {}) };
    const rec: SpeechRequest = {
      id: this.nextId++,
      requestId,
      receivedAt: new Date(),
      method,
      path,
      url: req.url ?? '/',
      headers: req.headers,
      apiKey: null,
      authorized: false,
      rawBody: '',
      body: undefined,
      params: null,
      faults,
      status: null,
      responseHeaders: {},
      error: null,
      text: '',
      chars: 0,
      expectedAudioBytes: 0,
      expectedAudioSeconds: 0,
      audioBytes: 0,
      audioSeconds: 0,
      bodyBytes: 0,
      chunks: 0,
      writes: [],
      timing: { headersMs: null, firstAudioMs: null, endMs: null },
      usage: null,
      outcome: 'pending',
      aborted: false,
      abortedAtMs: null,
      stalled: false,
      finished: false,
    };
    this.requests.push(rec);
    const ms = () => Math.round((performance.now() - t0) * 10) / 10;
    let generation: SpeechGeneration | null = null;
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
        headers: faults.headers ?? {},
      }));
      return;
    }
    if (!auth.ok) return this.reject(rec, res, auth.error);
    rec.authorized = true;
    if (!parsed.ok) return this.reject(rec, res, openAiError(400, { requestId, message: OPENAI_INVALID_JSON_MESSAGE, code: null }));
    const check = parseSpeechBody(parsed.value, {
      models: this.options.models,
      allowUnknownParams: this.options.allowUnknownParams,
      compressedFormats: this.options.compressedFormats,
    });
    if (!check.ok) {
      return this.reject(rec, res, openAiError(check.status, { requestId, message: check.message, param: check.param, code: check.code }));
    }
    const p = check.params;
    const key = auth.key;
    const inFlight = this.requests.filter((r) => r !== rec && r.apiKey === key && r.status === 200 && !r.finished).length;
    if (inFlight >= this.options.maxConcurrent) {
      const retryAfterMs = this.options.retryAfterMs;
      const message = `Rate limit reached for ${p.model} in organization org-emulator on concurrent requests: Limit ${this.options.maxConcurrent}, Used ${inFlight}, Requested 1. Please try again in ${Math.ceil(retryAfterMs / 1000)}s. Visit https://platform.openai.com/account/rate-limits to learn more.`;
      return this.reject(rec, res, openAiError(429, { requestId, message, retryAfterMs }));
    }
    rec.params = p;
    rec.text = p.input;
    rec.chars = [...p.input].length;
    rec.expectedAudioBytes = speechAudioBytes(rec.chars, { msPerChar: this.options.msPerChar, speed: p.speed });
    rec.expectedAudioSeconds = rec.expectedAudioBytes / (SPEECH_BYTES_PER_MS * 1000);
    generation = new SpeechGeneration(this, rec, p, res, t0);
    this.generations.add(generation);
    generation.start();
  }

  private reject(rec: SpeechRequest, res: ServerResponse, err: OpenAiErrorResponse): void {
    if (res.destroyed) return;
    rec.status = err.status;
    rec.error = err.error;
    rec.responseHeaders = err.headers;
    rec.outcome = 'rejected';
    rec.bodyBytes = Buffer.byteLength(err.body);
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

  private logDone(r: SpeechRequest): void {
    if (!this.log) return;
    const p = r.params;
    this.log(
      `#${r.id} ${r.method} ${r.url} -> ${r.status ?? '-'} ${r.outcome}` +
        (p ? ` model=${p.model} format=${p.responseFormat}/${p.streamFormat} speed=${p.speed} chars=${r.chars}` : '') +
        ` audio=${r.audioSeconds.toFixed(3)}s bytes=${r.audioBytes}` +
        (r.error ? ` error=${JSON.stringify(r.error.message.slice(0, 120))}` : ''),
    );
  }
}

export async function startOpenAiSpeechEmulator(opts: OpenAiSpeechEmulatorOptions = {}): Promise<OpenAiSpeechEmulator> {
  const options: ResolvedOpenAiSpeechOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_OPENAI_API_KEY],
    models: opts.models ?? [...SPEECH_MODELS],
    msPerChar: opts.msPerChar ?? DEFAULT_MS_PER_CHAR,
    firstAudioDelayMs: opts.firstAudioDelayMs ?? 20,
    realtimeFactor: opts.realtimeFactor ?? 10,
    chunkMs: opts.chunkMs ?? 100,
    maxConcurrent: opts.maxConcurrent ?? Infinity,
    retryAfterMs: opts.retryAfterMs ?? 1000,
    compressedFormats: opts.compressedFormats ?? 'raw-pcm',
    allowUnknownParams: opts.allowUnknownParams ?? false,
    bodyTimeoutMs: opts.bodyTimeoutMs ?? 10_000,
    maxBodyBytes: opts.maxBodyBytes ?? 1 << 20,
    recordAudio: opts.recordAudio ?? false,
  };
  if (!(options.realtimeFactor > 0)) throw new Error('realtimeFactor must be > 0');
  if (!(options.chunkMs > 0)) throw new Error('chunkMs must be > 0');
  let emu: OpenAiSpeechEmulator | null = null;
  const server = await startEmulatorServer<never>({
    name: 'openai-speech',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    onUpgrade: (ctx) => ({ accept: false, status: 404, ...openAiRouteErrorParts('GET', ctx.url.pathname) }),
    onConnection: () => {
      throw new Error('openai-speech accepts no WebSocket');
    },
    onHttpRequest: (req, res) => emu!.handle(req, res),
  });
  emu = new OpenAiSpeechEmulator(server, options, opts.log ?? null);
  return emu;
}

function openAiRouteErrorParts(method: string, path: string): { headers: Record<string, string>; body: string } {
  const e = openAiRouteError(method, path, 'url', openAiRequestId());
  return { headers: { 'x-request-id': e.headers['x-request-id']! }, body: e.body };
}
