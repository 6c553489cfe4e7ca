/**
 * Emulator of Cartesia's WebSocket APIs, routed by upgrade path (`ROUTES`):
 * - TTS `/tts/websocket` (https://docs.cartesia.ai/api-reference/tts/websocket), `TtsSession`;
 * - STT `/stt/websocket` (manual finalize, ink-whisper / ink-2,
 *   https://docs.cartesia.ai/api-reference/stt/stt), `SttManualSession`;
 * - STT `/stt/turns/websocket` (ink-2 turn detection,
 *   https://docs.cartesia.ai/api-reference/stt/turns/websocket), `SttTurnsSession`.
 * Auth and version checks are shared. TTS sockets are in `emu.connections`, STT sockets in
 * `emu.sttConnections` (a separate list so TTS users keep their types).
 *
 * Written from ../../../shared/providers.md §4.1, §4.4, §9 "Cartesia TTS" (and the Cartesia docs
 * they cite: contexts.mdx, context-flushing-and-flush-ids.mdx, concurrency-limits-and-timeouts.mdx,
 * tts.yml, the 2026 SDK's WebsocketResponse types), never from the gateway adapter. Audio is the
 * deterministic tone speech of ./tts-audio.ts: every character lasts `msPerChar`, so durations are
 * exactly characters × msPerChar.
 *
 * Facts relied on:
 * - auth: `X-API-Key: <key>`, `Authorization: Bearer <key|access token>`, `?api_key=<key>`,
 *   `?access_token=<token>`; version: `Cartesia-Version` header or `?cartesia_version=` (the query
 *   "will take precedence"). API 2026-08-14 (SDK v4) vs ≤ 2025-04-16 differ in the error shape and
 *   the `max_buffer_delay_ms` range/default.
 * - client frames are JSON text: a generation request (model_id, transcript, voice, output_format
 *   {container:"raw", encoding, sample_rate}, language, context_id, continue, flush,
 *   max_buffer_delay_ms, add_timestamps, add_phoneme_timestamps, use_normalized_timestamps,
 *   generation_config, speed, duration, pronunciation_dict_id) or a cancel {context_id, cancel:true}.
 * - server frames are JSON text: chunk (base64 audio, step_time, flush_id), timestamps
 *   (word_timestamps parallel arrays in seconds), phoneme_timestamps, flush_done, done, error;
 *   status_code 206 on all but errors.
 * - contexts: inputs on one context keep every field except transcript/continue/duration (and
 *   flush, which is the flush command) identical; transcripts concatenate verbatim; continue:false
 *   ends the context; done only after all outputs; outputs in input order; contexts interleave;
 *   a context expires 1 s after its last audio output; cancel halts only what has not begun
 *   generating; manual flush (`flush:true`) → chunks before it carry flush_id n, then
 *   flush_done{flush_id:n}, later chunks n+1 (starts at 1).
 * - limits: concurrency = active contexts per account, beyond it 429; parallel sockets limited
 *   (10× concurrency) with 429 at the upgrade; idle sockets closed after 5 minutes.
 *
 * Deterministic rules (wall clock, scaled by the options; see README "Cartesia TTS"):
 * - Buffering with continue:true and max_buffer_delay_ms > 0: received text is held; the prefix
 *   up to the LAST sentence end (. ! ? optionally followed by closing quotes/brackets, then
 *   whitespace; or 。！？) is released at once; the rest when max_buffer_delay_ms has elapsed since
 *   the first held character arrived, or at continue:false, or at flush. max_buffer_delay_ms = 0
 *   releases every input at once.
 * - Each released piece is one "generation". A context generates one piece at a time. A piece
 *   started while the context was idle sends its first chunk after `firstAudioDelayMs`; pieces
 *   queued behind it follow seamlessly. Chunks carry `chunkMs` of audio (the last of a piece is
 *   shorter) and are `chunkMs / speedFactor` ms apart. After a piece's last chunk: timestamps
 *   (if add_timestamps) for the words of that piece, then phoneme_timestamps (if requested).
 *
 * UNCERTAIN choices (not settled by the docs we have):
 * - Missing version → 400 (option `requireVersion`, default true). Any YYYY-MM-DD ≥ 2024-06-10 is
 *   accepted; ≥ 2026-08-14 selects the 2026 behaviour, earlier dates the 2025 one.
 * - The credential checked is the first present of X-API-Key, Authorization, api_key,
 *   access_token; `Authorization` must use the Bearer scheme. Auth is checked before the version.
 * - Upgrade rejections and HTTP answers use a JSON body {status_code, title, message, error_code,
 *   request_id} (the 2026 error fields).
 * - Error frames: 2025 shape {type, context_id?, status_code, done:true, error} for versions before
 *   2026-08-14, 2026 shape {type, context_id?, status_code, done:true, title, message, error_code,
 *   request_id} from 2026-08-14. An error on a live context ends it (no done follows).
 * - A cancel discards what is held or queued, lets the generation in progress finish, then sends
 *   `done` (as in the tts.yml example, where `done` follows the cancel; option `doneAfterCancel`
 *   = false sends nothing more). Inputs on a cancelled context are ignored (`ignoredInputs`).
 * - A new input on a context that is closed (continue:false sent), done, expired or failed is an
 *   error; an open context also expires (silently) `contextExpiryMs` after its last audio output
 *   when nothing is held or queued.
 * - Idle close: no frame in either direction for `idleTimeoutMs` → close 1000 "idle timeout".
 * - Frames that are not a JSON object (or binary frames) → an error frame without context_id; the
 *   socket stays open.
 * - `duration` caps a context's audio at whole characters; speed/volume/emotion/language are
 *   validated and recorded but do not change the tone audio; 2025 requests without context_id are
 *   one-shot generations whose answers carry no context_id (2026 requires context_id).
 *
 * STT. Written from providers.md §4.1-§4.3, §9 "Cartesia STT (ink-whisper)", Appendix B, the
 * Cartesia docs (cartesia-ai/docs `fern/apis/version-2025-04-16/definition/stt.yml`; pages
 * api-reference/stt/stt, api-reference/stt/turns/websocket, use-the-api/stt/common-pitfalls) and the
 * 2026 SDK's STT types (@cartesia/cartesia-js 4.2.0 `src/resources/stt/{manual-finalize,
 * auto-finalize}/*.ts`). Transcripts are the deterministic tone words of ./audio.ts.
 * Facts relied on:
 * - query: `model` (required), `encoding` (required: pcm_s16le|pcm_s32le|pcm_f16le|pcm_f32le|
 *   pcm_mulaw|pcm_alaw), `sample_rate` (required), `language` (default en; ink-2 English only),
 *   `keyterm` (repeated, <= 100 terms, <= 1200 chars), ink-whisper only: `min_volume` (0-1),
 *   `max_silence_duration_secs` (auto-finalize after that much silence); turns endpoint:
 *   `turn_start_threshold` 0.5-0.9 (0.8), `turn_eager_end_threshold` 0.3-0.6 (0.4),
 *   `turn_end_threshold` 0.05-0.5 (0.2), `turn_end_timeout_ms` 640-11200 (5600), with
 *   end < eager_end < start. Over the STT concurrency limit -> 429 at the upgrade.
 * - /stt/websocket: binary audio; text frames `finalize` (-> flush_done), `done` (<= 2025) /
 *   `close` (2026) (-> remaining transcripts, `done`, close). Server: `transcript {request_id,
 *   text, is_final, duration, language, words[{word,start,end}]}` (seconds), `flush_done`, `done`,
 *   `error`. `text` is a delta since the last is_final transcript; concatenating the finals
 *   verbatim gives the full transcript (no whitespace stripping). ink-whisper finalizes on its
 *   own after `max_silence_duration_secs`; ink-2 on this endpoint only on finalize/close.
 * - /stt/turns/websocket: binary audio; JSON `{"type":"config","turn":{...}}` and
 *   `{"type":"close"}`. Server: `connected` on open, `turn.start`, `turn.update` (cumulative),
 *   `turn.eager_end` / `turn.resume` (preview), `turn.end`, `error`, all with request_id.
 * - "If no audio data is sent for 20 seconds, the WebSocket will automatically disconnect"; the
 *   timer resets with every message (audio or text command).
 * Deterministic STT rules (AUDIO time; messages leave as soon as the audio that triggers them
 * arrived, plus `stt.latencyMs`; only the idle timeout is wall-clock):
 * - manual: a word is recognised when its tone ends; an interim (is_final false, all words since
 *   the last final) at most every `stt.interimIntervalMs` of audio and only with new words;
 *   ink-whisper: a final when silence after the last word reaches max_silence_duration_secs
 *   (`stt.defaultMaxSilenceSecs` when not given); `finalize` closes the word in progress, sends a
 *   final if words are pending, then `flush_done`; `done`/`close`: the same flush, `done`, close
 *   1000. `duration`: 2026 = audio since the last final, 2025 = audio received so far.
 *   min_volume: windows with RMS < min_volume x 32768 are silence.
 * - turns: turn.start once voiced audio lasted start_threshold x `stt.turnStartScaleMs` (or at
 *   the first recognised word); one turn.update per recognised word; after speech ends,
 *   turn.eager_end at (1 - eager_end_threshold) x `stt.turnSilenceScaleMs` of silence (with >= 1
 *   word), turn.end at min((1 - end_threshold) x scale, end_timeout_ms) of silence; speech after
 *   an eager end -> turn.resume and the turn goes on. `config` changes apply to later decisions.
 * UNCERTAIN STT choices (not settled by the docs we have):
 * - Bad query parameters answer HTTP 400 at the upgrade with the JSON error body (error_code
 *   model_not_found / invalid_request / unsupported_language). The turns docs show an in-band
 *   `error` frame for an invalid model: `stt.paramErrors: 'in-band'` accepts, sends that frame
 *   and closes 1008. Sample rates: any integer 8000-48000. max_silence_duration_secs: any > 0.
 * - The default auto-finalize silence (0.5 s), the idle close code (1000) and reason, the
 *   interim cadence and the turn timing model are emulator choices.
 * - Order on finalize: final transcript, then flush_done (the 2025 docs example shows the
 *   reverse: `stt.flushDoneFirst`). Nothing but flush_done when no words are pending.
 * - Both `done` and `close` are accepted on every version. Unknown text commands (and non-JSON /
 *   unknown types on the turns endpoint) get a 400 error frame; the socket stays open. Invalid
 *   config commands are rejected whole (400 error frame, settings unchanged).
 * - Error frames: 2026 shape {type, request_id, status_code, title, message, error_code, doc_url}
 *   from 2026-08-14, before that {type, request_id, message, error}.
 * - After finalize/close the text of a later segment starts with a space (Whisper style), so
 *   finals concatenate verbatim into "w1 w2 w3"; `words[].word` carries no spaces. Text is the
 *   vocabulary words, lower case, no punctuation.
 * - `{"type":"close"}` on the turns endpoint ends an open turn (turn.end), then closes 1000 (no
 *   `done` event exists there).
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import {
  startEmulatorServer,
  type ConnectionRecord,
  type EmulatorServer,
  type FaultSwitches,
  type TlsOptions,
  type UpgradeContext,
  type UpgradeDecision,
  type WsHandler,
  type WsSession,
} from './base.ts';
import { DEFAULT_MS_PER_CHAR, TtsRenderer, chunkPcm, ttsTimings } from './tts-audio.ts';
import { SpeechDetector, alawToLinear, mulawToLinear, type DetectorEvent } from './audio.ts';

export const DEFAULT_API_KEY = 'cartesia-test-key';
/** the version the SDK v4 sends */
export const LATEST_VERSION = '2026-08-14';
export const OLDEST_VERSION = '2024-06-10';
export const IDLE_CLOSE_CODE = 1000;
export const IDLE_CLOSE_REASON = 'idle timeout';
export const INJECTED_ERROR_MESSAGE = 'Injected fault: generation failed.';

export const TTS_SAMPLE_RATES = [8000, 16000, 22050, 24000, 44100, 48000] as const;
export const TTS_ENCODINGS = ['pcm_s16le', 'pcm_f32le', 'pcm_mulaw', 'pcm_alaw'] as const;
export type RawEncoding = (typeof TTS_ENCODINGS)[number];
/** sonic, sonic-2, sonic-3, sonic-3.5, sonic-turbo, sonic-latest, … optionally with a -YYYY-MM-DD snapshot */
export const TTS_MODEL_RE = /^sonic(?:-(?:2|3|3\.5|turbo|latest|english|multilingual|preview))?(?:-\d{4}-\d{2}-\d{2})?$/;

export interface CartesiaEmulatorOptions {
  /** keys accepted with X-API-Key, Bearer and ?api_key (default ['cartesia-test-key']) */
  apiKeys?: string[];
  /** access tokens accepted with Bearer and ?access_token (default none) */
  accessTokens?: string[];
  port?: number;
  host?: string;
  tls?: TlsOptions;
  /** a missing Cartesia-Version is a 400 (default true); false = treat as LATEST_VERSION */
  requireVersion?: boolean;
  /** open sockets per credential before 429 at the upgrade (docs: 10× concurrency; default null = no limit) */
  maxConnections?: number | null;
  /** active contexts per credential before a 429 error frame (docs: plan concurrency, e.g. 15 on Scale; default null = no limit) */
  maxConcurrentContexts?: number | null;
  /** no frame in either direction for this long → close 1000 (docs: 5 min; default 300000) */
  idleTimeoutMs?: number;
  /** wall ms from the start of a generation (context idle) to its first chunk (default 20; realistic 90–250) */
  firstAudioDelayMs?: number;
  /** generation speed vs real time: chunks are chunkMs / speedFactor ms apart (default 10) */
  speedFactor?: number;
  /** audio ms per chunk message (default 40) */
  chunkMs?: number;
  /** audio ms per character (default 60, see tts-audio.ts) */
  msPerChar?: number;
  /** a context expires this long after its last audio output (docs: 1 s; default 1000) */
  contextExpiryMs?: number;
  /** after a cancel, send `done` once the generation in progress (if any) ended (default true; false = nothing more) */
  doneAfterCancel?: boolean;
  /** keep binary payloads in the wire record and chunk data in `conn.sent` */
  recordAudio?: boolean;
  /** STT endpoints (/stt/websocket, /stt/turns/websocket); the TTS knobs above do not apply to them */
  stt?: CartesiaSttOptions;
}

export type ResolvedCartesiaOptions = Required<Omit<CartesiaEmulatorOptions, 'port' | 'host' | 'tls' | 'stt'>> & {
  stt: ResolvedCartesiaSttOptions;
};

/** TTS-specific fault switches (server-wide on `emu.ttsFaults`, per connection on `conn.ttsFaults`). */
export interface CartesiaTtsFaults {
  /** once a context generated this many characters, send an error frame (status default 500) and end it */
  errorAfterChars: { chars: number; statusCode?: number; message?: string } | null;
  /** once a context generated this many characters, it sends nothing more (no chunk, no done) */
  stallAfterChars: number | null;
}

export function defaultTtsFaults(): CartesiaTtsFaults {
  return { errorAfterChars: null, stallAfterChars: null };
}

// ---------------------------------------------------------------------------------------------
// Wire types (server → client), after tts.yml and the 2026 SDK's WebsocketResponse

export interface WordTimestamps {
  words: string[];
  start: number[];
  end: number[];
}

export interface CartesiaChunk {
  type: 'chunk';
  context_id?: string;
  status_code: number;
  done: false;
  /** base64 audio */
  data: string;
  /** ms */
  step_time: number;
  flush_id: number;
}

export interface CartesiaTimestamps {
  type: 'timestamps';
  context_id?: string;
  status_code: number;
  done: false;
  flush_id: number;
  word_timestamps: WordTimestamps;
}

export interface CartesiaPhonemeTimestamps {
  type: 'phoneme_timestamps';
  context_id?: string;
  status_code: number;
  done: false;
  flush_id: number;
  phoneme_timestamps: { phonemes: string[]; start: number[]; end: number[] };
}

export interface CartesiaFlushDone {
  type: 'flush_done';
  context_id?: string;
  status_code: number;
  done: false;
  flush_done: true;
  flush_id: number;
}

export interface CartesiaDone {
  type: 'done';
  context_id?: string;
  status_code: number;
  done: true;
}

/** API versions before 2026-08-14 */
export interface CartesiaError2025 {
  type: 'error';
  context_id?: string;
  status_code: number;
  done: true;
  error: string;
}

/** API 2026-08-14 */
export interface CartesiaError2026 {
  type: 'error';
  context_id?: string;
  status_code: number;
  done: true;
  title: string;
  message: string;
  error_code: string;
  request_id: string;
}

export type CartesiaTtsMessage =
  | CartesiaChunk
  | CartesiaTimestamps
  | CartesiaPhonemeTimestamps
  | CartesiaFlushDone
  | CartesiaDone
  | CartesiaError2025
  | CartesiaError2026;

// ---------------------------------------------------------------------------------------------
// Generation request validation

export type ApiGeneration = '2025' | '2026';

export interface TtsRequest {
  modelId: string;
  transcript: string;
  voice: { mode: 'id'; id: string };
  /** how the voice was written: {mode,id} | bare string | {id} */
  voiceForm: 'mode-id' | 'string' | 'id-only';
  outputFormat: { container: 'raw'; encoding: RawEncoding; sampleRate: number };
  language: string | null;
  contextId: string | null;
  continue: boolean;
  flush: boolean;
  /** after the version's default (2025: 0, 2026: 3000) */
  maxBufferDelayMs: number;
  addTimestamps: boolean;
  addPhonemeTimestamps: boolean;
  useNormalizedTimestamps: boolean;
  generationConfig: { speed?: number; volume?: number; emotion?: string } | null;
  speed: string | number | null;
  duration: number | null;
  pronunciationDictId: string | null;
  /** top-level keys the emulator does not know (accepted) */
  unknown: string[];
  /** the message as received */
  raw: Record<string, unknown>;
}

export type RequestCheck = { ok: true; req: TtsRequest } | { ok: false; message: string };

const KNOWN_REQUEST_KEYS = new Set([
  'model_id', 'transcript', 'voice', 'output_format', 'language', 'context_id', 'continue', 'flush',
  'max_buffer_delay_ms', 'add_timestamps', 'add_phoneme_timestamps', 'use_normalized_timestamps',
  'generation_config', 'speed', 'duration', 'pronunciation_dict_id', 'cancel',
]);
/** fields that may change between inputs of one context */
const VARIABLE_FIELDS = new Set(['transcript', 'continue', 'duration', 'flush', 'contextId', 'raw', 'unknown', 'voiceForm']);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validate one generation request the way the API does (2025: max_buffer_delay_ms ≤ 1000, default 0; 2026: ≤ 5000, default 3000). */
export function parseGenerationRequest(msg: Record<string, unknown>, generation: ApiGeneration): RequestCheck {
  const bad = (message: string): RequestCheck => ({ ok: false, message });
  const optBool = (k: string): boolean | null | RequestCheck => {
    const v = msg[k];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'boolean') return bad(`Invalid value for '${k}': expected a boolean.`);
    return v;
  };
  const modelId = msg['model_id'];
  if (typeof modelId !== 'string' || modelId === '') return bad(`Missing required field 'model_id'.`);
  if (!TTS_MODEL_RE.test(modelId)) return bad(`Invalid model_id '${modelId}'.`);
  const transcript = msg['transcript'];
  if (typeof transcript !== 'string') return bad(`Missing required field 'transcript' (a string, possibly empty).`);

  const v = msg['voice'];
  let voice: { mode: 'id'; id: string };
  let voiceForm: TtsRequest['voiceForm'];
  if (typeof v === 'string') {
    voice = { mode: 'id', id: v };
    voiceForm = 'string';
  } else if (isObject(v)) {
    if (v['mode'] !== undefined && v['mode'] !== 'id') return bad(`Unsupported voice mode '${String(v['mode'])}': use {"mode":"id","id":…}.`);
    if (typeof v['id'] !== 'string') return bad(`Invalid voice: 'id' must be a string.`);
    voice = { mode: 'id', id: v['id'] };
    voiceForm = v['mode'] === 'id' ? 'mode-id' : 'id-only';
  } else {
    return bad(`Missing required field 'voice'.`);
  }
  if (voice.id.trim() === '') return bad(`Invalid voice: 'id' must not be empty.`);

  const of = msg['output_format'];
  if (!isObject(of)) return bad(`Missing required field 'output_format'.`);
  if (of['container'] !== 'raw') return bad(`Invalid output_format.container '${String(of['container'])}': only 'raw' is supported over WebSocket.`);
  const encoding = of['encoding'];
  if (typeof encoding !== 'string' || !(TTS_ENCODINGS as readonly string[]).includes(encoding)) {
    return bad(`Invalid output_format.encoding '${String(encoding)}': expected one of ${TTS_ENCODINGS.join(', ')}.`);
  }
  const sampleRate = of['sample_rate'];
  if (typeof sampleRate !== 'number' || !(TTS_SAMPLE_RATES as readonly number[]).includes(sampleRate)) {
    return bad(`Invalid output_format.sample_rate '${String(sampleRate)}': expected one of ${TTS_SAMPLE_RATES.join(', ')}.`);
  }

  const language = msg['language'];
  if (language !== undefined && language !== null && (typeof language !== 'string' || !/^[a-z]{2,3}$/.test(language))) {
    return bad(`Invalid language '${String(language)}'.`);
  }
  const contextId = msg['context_id'];
  if (contextId !== undefined && contextId !== null && (typeof contextId !== 'string' || contextId === '')) {
    return bad(`Invalid context_id: expected a non-empty string.`);
  }
  if (generation === '2026' && typeof contextId !== 'string') return bad(`Missing required field 'context_id'.`);

  const bools: Record<string, boolean | null> = {};
  for (const k of ['continue', 'flush', 'add_timestamps', 'add_phoneme_timestamps', 'use_normalized_timestamps']) {
    const b = optBool(k);
    if (typeof b === 'object' && b !== null) return b;
    bools[k] = b;
  }

  const maxDelay = generation === '2026' ? 5000 : 1000;
  let maxBufferDelayMs = generation === '2026' ? 3000 : 0;
  const mbd = msg['max_buffer_delay_ms'];
  if (mbd !== undefined && mbd !== null) {
    if (typeof mbd !== 'number' || !Number.isInteger(mbd) || mbd < 0 || mbd > maxDelay) {
      return bad(`Invalid max_buffer_delay_ms '${String(mbd)}': expected an integer in [0, ${maxDelay}].`);
    }
    maxBufferDelayMs = mbd;
  }

  let generationConfig: TtsRequest['generationConfig'] = null;
  const gc = msg['generation_config'];
  if (gc !== undefined && gc !== null) {
    if (!isObject(gc)) return bad(`Invalid generation_config: expected an object.`);
    generationConfig = {};
    const sp = gc['speed'];
    if (sp !== undefined && sp !== null) {
      if (typeof sp !== 'number' || sp < 0.6 || sp > 1.5) return bad(`Invalid generation_config.speed '${String(sp)}': expected a number in [0.6, 1.5].`);
      generationConfig.speed = sp;
    }
    const vol = gc['volume'];
    if (vol !== undefined && vol !== null) {
      if (typeof vol !== 'number' || vol < 0.5 || vol > 2) return bad(`Invalid generation_config.volume '${String(vol)}': expected a number in [0.5, 2.0].`);
      generationConfig.volume = vol;
    }
    const em = gc['emotion'];
    if (em !== undefined && em !== null) {
      if (typeof em !== 'string' || !/^[a-z_]+$/.test(em)) return bad(`Invalid generation_config.emotion '${String(em)}'.`);
      generationConfig.emotion = em;
    }
  }

  let speed: string | number | null = null;
  const s = msg['speed'];
  if (s !== undefined && s !== null) {
    const ok = (typeof s === 'string' && ['slow', 'normal', 'fast'].includes(s)) || (typeof s === 'number' && s >= -1 && s <= 1);
    if (!ok) return bad(`Invalid speed '${String(s)}': expected slow, normal, fast or a number in [-1, 1].`);
    speed = s as string | number;
  }
  let duration: number | null = null;
  const d = msg['duration'];
  if (d !== undefined && d !== null) {
    if (typeof d !== 'number' || !(d > 0)) return bad(`Invalid duration '${String(d)}': expected a positive number of seconds.`);
    duration = d;
  }
  const pd = msg['pronunciation_dict_id'];
  if (pd !== undefined && pd !== null && typeof pd !== 'string') return bad(`Invalid pronunciation_dict_id: expected a string.`);

  return {
    ok: true,
    req: {
      modelId,
      transcript,
      voice,
      voiceForm,
      outputFormat: { container: 'raw', encoding: encoding as RawEncoding, sampleRate },
      language: typeof language === 'string' ? language : null,
      contextId: typeof contextId === 'string' ? contextId : null,
      continue: bools['continue'] ?? false,
      flush: bools['flush'] ?? false,
      maxBufferDelayMs,
      addTimestamps: bools['add_timestamps'] ?? false,
      addPhonemeTimestamps: bools['add_phoneme_timestamps'] ?? false,
      useNormalizedTimestamps: bools['use_normalized_timestamps'] ?? false,
      generationConfig,
      speed,
      duration,
      pronunciationDictId: typeof pd === 'string' ? pd : null,
      unknown: Object.keys(msg).filter((k) => !KNOWN_REQUEST_KEYS.has(k)),
      raw: msg,
    },
  };
}

/** Names of the fixed fields (everything but transcript/continue/duration/flush) that differ. */
export function differingFields(a: TtsRequest, b: TtsRequest): string[] {
  const out: string[] = [];
  for (const k of Object.keys(a) as Array<keyof TtsRequest>) {
    if (VARIABLE_FIELDS.has(k)) continue;
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out.push(k);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Audio encodings (G.711 after the ITU reference g711.c)

function linearToMulaw(sample: number): number {
  let v = sample >> 2;
  let mask = 0xff;
  if (v < 0) {
    v = -v;
    mask = 0x7f;
  }
  if (v > 8159) v = 8159;
  v += 0x21;
  let seg = 0;
  for (let end = 0x3f; seg < 8 && v > end; seg++) end = (end << 1) | 1;
  if (seg >= 8) return 0x7f ^ mask;
  return ((seg << 4) | ((v >> (seg + 1)) & 0x0f)) ^ mask;
}

function linearToAlaw(sample: number): number {
  let v = sample >> 3;
  let mask: number;
  if (v >= 0) {
    mask = 0xd5;
  } else {
    mask = 0x55;
    v = -v - 1;
  }
  let seg = 0;
  for (let end = 0x1f; seg < 8 && v > end; seg++) end = (end << 1) | 1;
  if (seg >= 8) return 0x7f ^ mask;
  let a = seg << 4;
  a |= seg < 2 ? (v >> 1) & 0x0f : (v >> seg) & 0x0f;
  return a ^ mask;
}

export function bytesPerSample(encoding: RawEncoding): number {
  return encoding === 'pcm_s16le' ? 2 : encoding === 'pcm_f32le' ? 4 : 1;
}

/** s16le mono → the requested raw encoding (f32le = s16 / 32768). */
export function encodePcm(s16: Buffer, encoding: RawEncoding): Buffer {
  if (encoding === 'pcm_s16le') return s16;
  const n = s16.length >> 1;
  const out = Buffer.alloc(n * bytesPerSample(encoding));
  for (let i = 0; i < n; i++) {
    const s = s16.readInt16LE(i * 2);
    if (encoding === 'pcm_f32le') out.writeFloatLE(s / 32768, i * 4);
    else out[i] = encoding === 'pcm_mulaw' ? linearToMulaw(s) : linearToAlaw(s);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Records exposed to tests

export type ContextState = 'open' | 'closing' | 'done' | 'cancelled' | 'error' | 'expired' | 'aborted';
export type ReleaseReason = 'immediate' | 'sentence' | 'max_buffer_delay' | 'flush' | 'continue_false';

export interface CartesiaTtsInput {
  /** ms since the connection opened */
  at: number;
  transcript: string;
  continue: boolean;
  flush: boolean;
  duration: number | null;
}

/** One released piece of text, generated as a unit (ms since the connection opened). */
export interface CartesiaGeneration {
  text: string;
  /** what became audio (shorter when cut by `duration` or a fault) */
  generatedText: string;
  reason: ReleaseReason;
  flushId: number;
  releasedAt: number;
  startedAt: number | null;
  firstAudioAt: number | null;
  endedAt: number | null;
  chunks: number;
  audioSeconds: number;
  cut: 'duration' | 'error' | 'stall' | null;
}

export interface CartesiaCancel {
  at: number;
  contextId: string;
  /** the context exists on this connection */
  known: boolean;
  /** something not yet begun was discarded (text held or queued) */
  effective: boolean;
  discardedText: string;
  discardedChars: number;
  /** a generation was in progress (it runs to completion) */
  inProgress: boolean;
}

export interface CartesiaTtsContext {
  contextId: string;
  /** 2025 request without context_id (answers carry none) */
  anonymous: boolean;
  createdAt: number;
  /** the first input, normalized; later inputs must match it except transcript/continue/duration/flush */
  request: TtsRequest;
  inputs: CartesiaTtsInput[];
  /** every transcript concatenated verbatim */
  transcript: string;
  /** characters received (code points): the billing figure */
  chars: number;
  state: ContextState;
  /** counts toward maxConcurrentContexts */
  active: boolean;
  generations: CartesiaGeneration[];
  /** characters whose audio was fully sent */
  charsGenerated: number;
  audioSeconds: number;
  audioBytes: number;
  chunks: number;
  /** flush ids acknowledged with flush_done */
  flushesDone: number[];
  firstAudioAt: number | null;
  lastAudioAt: number | null;
  /** continue:false received */
  inputClosedAt: number | null;
  doneAt: number | null;
  expiredAt: number | null;
  cancel: CartesiaCancel | null;
  error: { at: number; statusCode: number; message: string } | null;
  /** inputs received after a cancel (ignored) */
  ignoredInputs: number;
  stalled: boolean;
}

export interface CartesiaRejectedInput {
  at: number;
  contextId: string | null;
  statusCode: number;
  message: string;
  raw: unknown;
}

export interface CartesiaAuth {
  via: 'x-api-key' | 'bearer' | 'api_key' | 'access_token';
  /** an access token rather than an API key */
  token: boolean;
}

export interface CartesiaTtsConnection {
  kind: 'tts';
  /** wire record (frames, headers, close code) */
  record: ConnectionRecord;
  /** base session: per-connection base fault overrides live in `session.faults` */
  session: WsSession;
  requestId: string;
  /** the credential used (API key or access token) */
  apiKey: string;
  auth: CartesiaAuth;
  version: string;
  versionVia: 'header' | 'query' | 'default';
  apiGeneration: ApiGeneration;
  /** contexts in creation order */
  contexts: CartesiaTtsContext[];
  context(id: string): CartesiaTtsContext | undefined;
  cancels: CartesiaCancel[];
  rejectedInputs: CartesiaRejectedInput[];
  /** frames that were not a JSON object (binary included) */
  invalidFrames: number;
  charsReceived: number;
  audioSeconds: number;
  audioBytes: number;
  /** every message produced, in order (chunk data replaced by '<N bytes>' unless recordAudio) */
  sent: CartesiaTtsMessage[];
  /** TTS fault overrides for this connection */
  ttsFaults: Partial<CartesiaTtsFaults>;
}

/**
 * TTS connections (`emu.connections` holds TTS sockets only, so TTS users keep their types; STT
 * sockets are in `emu.sttConnections`, every socket's wire record in `emu.records`).
 */
export type CartesiaConnection = CartesiaTtsConnection;

// ---------------------------------------------------------------------------------------------
// Helpers

function r3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
};

function errorCodeFor(status: number): string {
  switch (status) {
    case 400:
      return 'invalid_request';
    case 401:
      return 'unauthorized';
    case 404:
      return 'not_found';
    case 429:
      return 'too_many_requests';
    default:
      return 'internal_error';
  }
}

/** JSON body of an upgrade rejection / HTTP error. */
export function cartesiaHttpError(status: number, message: string, requestId: string, errorCode = errorCodeFor(status)): { headers: Record<string, string>; body: string } {
  return {
    headers: {},
    body: JSON.stringify({ status_code: status, title: TITLES[status] ?? 'Error', message, error_code: errorCode, request_id: requestId }),
  };
}

type AuthResult = { ok: true; key: string; auth: CartesiaAuth } | { ok: false; message: string };

function checkAuth(req: IncomingMessage, query: Record<string, string[]>, keys: string[], tokens: string[]): AuthResult {
  const q = (k: string) => query[k]?.[query[k]!.length - 1];
  const xKey = headerValue(req.headers['x-api-key']);
  const authz = req.headers.authorization;
  const apiKey = q('api_key');
  const accessToken = q('access_token');
  if (xKey !== undefined) {
    return keys.includes(xKey.trim()) ? { ok: true, key: xKey.trim(), auth: { via: 'x-api-key', token: false } } : { ok: false, message: 'Invalid API key.' };
  }
  if (authz !== undefined) {
    const m = /^\s*bearer\s+(\S+)\s*$/i.exec(authz);
    if (!m) return { ok: false, message: 'Invalid Authorization header: expected "Bearer <api key or access token>".' };
    const k = m[1]!;
    if (keys.includes(k)) return { ok: true, key: k, auth: { via: 'bearer', token: false } };
    if (tokens.includes(k)) return { ok: true, key: k, auth: { via: 'bearer', token: true } };
    return { ok: false, message: 'Invalid API key or access token.' };
  }
  if (apiKey !== undefined) {
    return keys.includes(apiKey) ? { ok: true, key: apiKey, auth: { via: 'api_key', token: false } } : { ok: false, message: 'Invalid API key.' };
  }
  if (accessToken !== undefined) {
    return tokens.includes(accessToken) ? { ok: true, key: accessToken, auth: { via: 'access_token', token: true } } : { ok: false, message: 'Invalid access token.' };
  }
  return { ok: false, message: 'Missing API key: send X-API-Key, Authorization: Bearer, or ?api_key=.' };
}

type VersionResult = { ok: true; version: string; via: 'header' | 'query' | 'default'; generation: ApiGeneration } | { ok: false; message: string };

export function apiGenerationOf(version: string): ApiGeneration {
  return version >= LATEST_VERSION ? '2026' : '2025';
}

function checkVersion(req: IncomingMessage, query: Record<string, string[]>, required: boolean): VersionResult {
  const qv = query['cartesia_version'];
  const fromQuery = qv ? qv[qv.length - 1] : undefined;
  const fromHeader = headerValue(req.headers['cartesia-version']);
  const version = fromQuery ?? fromHeader;
  if (version === undefined) {
    if (required) return { ok: false, message: 'Missing Cartesia-Version header (or cartesia_version query parameter).' };
    return { ok: true, version: LATEST_VERSION, via: 'default', generation: apiGenerationOf(LATEST_VERSION) };
  }
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(version);
  const valid = m !== null && Number(m[2]) >= 1 && Number(m[2]) <= 12 && Number(m[3]) >= 1 && Number(m[3]) <= 31;
  if (!valid || version < OLDEST_VERSION) {
    return { ok: false, message: `Invalid Cartesia-Version '${version}': expected a date (YYYY-MM-DD) on or after ${OLDEST_VERSION}.` };
  }
  return { ok: true, version, via: fromQuery !== undefined ? 'query' : 'header', generation: apiGenerationOf(version) };
}

/** Upgrade paths → connection kind. */
const ROUTES: Record<string, 'tts' | SttKind> = {
  '/tts/websocket': 'tts',
  '/stt/websocket': 'stt',
  '/stt/turns/websocket': 'stt-turns',
};

/** the end of the last sentence in `text` (index after the whitespace), or -1 */
function lastSentenceEnd(text: string): number {
  const re = /[.!?]["'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]/gu;
  let end = -1;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) end = m.index + m[0].length;
  return end;
}

// ---------------------------------------------------------------------------------------------
// One TTS socket

type Item =
  | { kind: 'text'; gen: CartesiaGeneration }
  | { kind: 'flush_done'; flushId: number }
  | { kind: 'done' }
  /** end silently (cancel without doneAfterCancel) */
  | { kind: 'end' };

interface Running {
  gen: CartesiaGeneration;
  chunks: Buffer[];
  samples: number[];
  idx: number;
  offsetS: number;
  burstStart: boolean;
  end: 'normal' | 'error' | 'stall';
}

interface Ctx {
  rec: CartesiaTtsContext;
  rate: number;
  encoding: RawEncoding;
  renderer: TtsRenderer;
  /** characters handed to the renderer */
  charsRendered: number;
  samples: number;
  duration: number | null;
  pending: string;
  bufferTimer: NodeJS.Timeout | null;
  queue: Item[];
  running: Running | null;
  genTimer: NodeJS.Timeout | null;
  nextDue: number;
  idle: boolean;
  flushId: number;
  expiryTimer: NodeJS.Timeout | null;
  /** performance.now() of the last chunk */
  lastAudioWall: number | null;
  /** nothing more will be generated */
  finished: boolean;
}

interface TtsHost {
  options: ResolvedCartesiaOptions;
  ttsFaults(): CartesiaTtsFaults;
  activeContexts(apiKey: string): number;
  changed(): void;
}

class TtsSession implements WsHandler {
  readonly conn: CartesiaTtsConnection;
  private readonly host: TtsHost;
  private readonly session: WsSession;
  private readonly ctxs = new Map<string, Ctx>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private idleTimer: NodeJS.Timeout | null = null;
  private anonymous = 0;
  private closed = false;

  constructor(conn: CartesiaTtsConnection, host: TtsHost) {
    this.conn = conn;
    this.host = host;
    this.session = conn.session;
    this.touch();
  }

  /** timers this socket still holds (idle, buffer, generation, expiry) */
  get timerCount(): number {
    return this.timers.size;
  }

  private get opts(): ResolvedCartesiaOptions {
    return this.host.options;
  }

  // ---- socket events

  onMessage(data: Buffer, isBinary: boolean): void {
    if (this.closed) return;
    this.touch();
    if (isBinary) {
      this.invalidFrame('Binary frames are not supported: send generation requests as JSON text.');
      return;
    }
    let msg: unknown;
    try {
      msg = JSON.parse(data.toString('utf8'));
    } catch {
      this.invalidFrame('Invalid JSON message.');
      return;
    }
    if (!isObject(msg)) {
      this.invalidFrame('Invalid message: expected a JSON object.');
      return;
    }
    if (msg['cancel'] === true) this.cancel(msg);
    else this.input(msg);
    this.host.changed();
  }

  onClose(): void {
    this.stop();
  }

  /** Stop every timer; live contexts become `aborted`. */
  stop(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.idleTimer = null;
    for (const c of this.ctxs.values()) {
      c.bufferTimer = c.genTimer = c.expiryTimer = null;
      if (c.rec.state === 'open' || c.rec.state === 'closing') c.rec.state = 'aborted';
      c.rec.active = false;
      c.finished = true;
    }
    this.host.changed();
  }

  // ---- timers

  private later(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, Math.max(0, ms));
    this.timers.add(t);
    return t;
  }

  private clear(t: NodeJS.Timeout | null): null {
    if (t) {
      clearTimeout(t);
      this.timers.delete(t);
    }
    return null;
  }

  private touch(): void {
    this.idleTimer = this.clear(this.idleTimer);
    if (this.closed) return;
    this.idleTimer = this.later(this.opts.idleTimeoutMs, () => {
      this.idleTimer = null;
      this.session.close(IDLE_CLOSE_CODE, IDLE_CLOSE_REASON);
    });
  }

  private now(): number {
    return this.session.elapsed();
  }

  // ---- output

  private send(msg: CartesiaTtsMessage): void {
    if (msg.type === 'chunk' && !this.opts.recordAudio) {
      this.conn.sent.push({ ...msg, data: `<${Buffer.from(msg.data, 'base64').length} bytes>` });
    } else {
      this.conn.sent.push(msg);
    }
    this.session.send(JSON.stringify(msg));
    this.touch();
  }

  /** `{type, context_id, ...}` (no context_id for anonymous one-shot requests) */
  private withContext<T extends { type: string }>(c: Ctx, body: T): T & { context_id?: string } {
    if (c.rec.anonymous) return body;
    const { type, ...rest } = body;
    return { type, context_id: c.rec.contextId, ...rest } as unknown as T & { context_id: string };
  }

  private errorMessage(contextId: string | null, status: number, message: string): CartesiaTtsMessage {
    const id = contextId !== null ? { context_id: contextId } : {};
    if (this.conn.apiGeneration === '2026') {
      return {
        type: 'error',
        ...id,
        status_code: status,
        done: true,
        title: TITLES[status] ?? 'Error',
        message,
        error_code: errorCodeFor(status),
        request_id: this.conn.requestId,
      };
    }
    return { type: 'error', ...id, status_code: status, done: true, error: message };
  }

  private invalidFrame(message: string): void {
    this.conn.invalidFrames++;
    this.send(this.errorMessage(null, 400, message));
    this.host.changed();
  }

  /** Error for an input that creates or touches no live context. */
  private rejectInput(contextId: string | null, status: number, message: string, raw: unknown): void {
    this.conn.rejectedInputs.push({ at: this.now(), contextId, statusCode: status, message, raw });
    this.send(this.errorMessage(contextId, status, message));
  }

  // ---- input

  private input(msg: Record<string, unknown>): void {
    const check = parseGenerationRequest(msg, this.conn.apiGeneration);
    const rawId = typeof msg['context_id'] === 'string' && msg['context_id'] !== '' ? msg['context_id'] : null;
    const existing = rawId !== null ? this.ctxs.get(rawId) : undefined;
    if (!check.ok) {
      if (existing && existing.rec.state === 'cancelled') {
        existing.rec.ignoredInputs++;
        return;
      }
      if (existing && this.isLive(existing)) this.fail(existing, 400, check.message);
      else this.rejectInput(rawId, 400, check.message, msg);
      return;
    }
    const req = check.req;
    if (existing) {
      this.continueContext(existing, req, msg);
      return;
    }
    // a new context
    if (this.opts.maxConcurrentContexts !== null && this.host.activeContexts(this.conn.apiKey) >= this.opts.maxConcurrentContexts) {
      this.rejectInput(rawId, 429, `Concurrency limit of ${this.opts.maxConcurrentContexts} active contexts exceeded.`, msg);
      return;
    }
    const anonymous = req.contextId === null;
    const id = req.contextId ?? `anonymous-${++this.anonymous}`;
    if (anonymous) req.continue = false; // one-shot
    const t = this.now();
    const c: Ctx = {
      rec: {
        contextId: id,
        anonymous,
        createdAt: t,
        request: req,
        inputs: [],
        transcript: '',
        chars: 0,
        state: 'open',
        active: true,
        generations: [],
        charsGenerated: 0,
        audioSeconds: 0,
        audioBytes: 0,
        chunks: 0,
        flushesDone: [],
        firstAudioAt: null,
        lastAudioAt: null,
        inputClosedAt: null,
        doneAt: null,
        expiredAt: null,
        cancel: null,
        error: null,
        ignoredInputs: 0,
        stalled: false,
      },
      rate: req.outputFormat.sampleRate,
      encoding: req.outputFormat.encoding,
      renderer: new TtsRenderer(req.outputFormat.sampleRate, { msPerChar: this.opts.msPerChar }),
      charsRendered: 0,
      samples: 0,
      duration: null,
      pending: '',
      bufferTimer: null,
      queue: [],
      running: null,
      genTimer: null,
      nextDue: 0,
      idle: true,
      flushId: 1,
      expiryTimer: null,
      lastAudioWall: null,
      finished: false,
    };
    this.ctxs.set(id, c);
    this.conn.contexts.push(c.rec);
    this.accept(c, req);
  }

  private isLive(c: Ctx): boolean {
    return c.rec.state === 'open' || c.rec.state === 'closing';
  }

  private continueContext(c: Ctx, req: TtsRequest, raw: Record<string, unknown>): void {
    const id = c.rec.contextId;
    switch (c.rec.state) {
      case 'cancelled':
        c.rec.ignoredInputs++;
        return;
      case 'open':
        break;
      case 'closing':
        this.fail(c, 400, `Context '${id}' was already closed for input (continue: false).`);
        return;
      case 'done':
        this.rejectInput(id, 400, c.rec.expiredAt !== null ? `Context '${id}' has expired.` : `Context '${id}' is already done.`, raw);
        return;
      case 'expired':
        this.rejectInput(id, 400, `Context '${id}' has expired.`, raw);
        return;
      case 'error':
      case 'aborted':
        this.rejectInput(id, 400, `Context '${id}' has failed.`, raw);
        return;
    }
    const diff = differingFields(c.rec.request, req);
    if (diff.length > 0) {
      this.fail(c, 400, `Inputs on context '${id}' must keep all fields except transcript, continue and duration identical (changed: ${diff.join(', ')}).`);
      return;
    }
    this.accept(c, req);
  }

  /** Append a valid input to a live context and apply the buffering rules. */
  private accept(c: Ctx, req: TtsRequest): void {
    const rec = c.rec;
    c.expiryTimer = this.clear(c.expiryTimer);
    const chars = [...req.transcript].length;
    rec.inputs.push({ at: this.now(), transcript: req.transcript, continue: req.continue, flush: req.flush, duration: req.duration });
    rec.transcript += req.transcript;
    rec.chars += chars;
    this.conn.charsReceived += chars;
    c.duration = req.duration;
    const heldBefore = c.pending !== '';
    c.pending += req.transcript;
    if (!req.continue) {
      this.release(c, 'continue_false');
    } else if (req.flush) {
      this.release(c, 'flush');
    } else if (rec.request.maxBufferDelayMs === 0) {
      this.release(c, 'immediate');
    } else {
      const end = lastSentenceEnd(c.pending);
      if (end > 0) {
        const rest = c.pending.slice(end);
        c.pending = c.pending.slice(0, end);
        this.release(c, 'sentence');
        c.pending = rest;
        if (rest !== '') this.armBuffer(c);
      } else if (!heldBefore && c.pending !== '') {
        this.armBuffer(c);
      }
    }
    if (req.flush) {
      c.queue.push({ kind: 'flush_done', flushId: c.flushId });
      c.flushId++;
    }
    if (!req.continue) {
      rec.state = 'closing';
      rec.inputClosedAt = this.now();
      c.queue.push({ kind: 'done' });
    }
    this.advance(c);
  }

  private armBuffer(c: Ctx): void {
    c.bufferTimer = this.clear(c.bufferTimer);
    c.bufferTimer = this.later(c.rec.request.maxBufferDelayMs, () => {
      c.bufferTimer = null;
      this.release(c, 'max_buffer_delay');
      this.advance(c);
      this.host.changed();
    });
  }

  /** Queue everything held as one generation. */
  private release(c: Ctx, reason: ReleaseReason): void {
    c.bufferTimer = this.clear(c.bufferTimer);
    if (c.pending === '') return;
    const gen: CartesiaGeneration = {
      text: c.pending,
      generatedText: '',
      reason,
      flushId: c.flushId,
      releasedAt: this.now(),
      startedAt: null,
      firstAudioAt: null,
      endedAt: null,
      chunks: 0,
      audioSeconds: 0,
      cut: null,
    };
    c.pending = '';
    c.rec.generations.push(gen);
    c.queue.push({ kind: 'text', gen });
  }

  // ---- cancel

  private cancel(msg: Record<string, unknown>): void {
    const id = typeof msg['context_id'] === 'string' ? msg['context_id'] : '';
    const c = this.ctxs.get(id);
    const rec: CartesiaCancel = { at: this.now(), contextId: id, known: c !== undefined, effective: false, discardedText: '', discardedChars: 0, inProgress: false };
    this.conn.cancels.push(rec);
    if (!c || !this.isLive(c)) return;
    let discarded = '';
    for (const item of c.queue) if (item.kind === 'text') discarded += item.gen.text;
    discarded += c.pending;
    c.rec.generations = c.rec.generations.filter((g) => g.startedAt !== null);
    c.pending = '';
    c.bufferTimer = this.clear(c.bufferTimer);
    c.queue = [];
    rec.discardedText = discarded;
    rec.discardedChars = [...discarded].length;
    rec.effective = rec.discardedChars > 0;
    rec.inProgress = c.running !== null;
    c.rec.cancel = rec;
    c.rec.state = 'cancelled';
    c.queue.push(this.opts.doneAfterCancel ? { kind: 'done' } : { kind: 'end' });
    this.advance(c);
  }

  // ---- generation

  private advance(c: Ctx): void {
    while (!c.running && !c.finished && !c.rec.stalled && !this.closed) {
      const item = c.queue.shift();
      if (!item) {
        c.idle = true;
        this.armExpiry(c);
        return;
      }
      switch (item.kind) {
        case 'flush_done':
          c.rec.flushesDone.push(item.flushId);
          this.send(this.withContext(c, { type: 'flush_done' as const, status_code: 206, done: false as const, flush_done: true as const, flush_id: item.flushId }));
          break;
        case 'done':
          this.send(this.withContext(c, { type: 'done' as const, status_code: 206, done: true as const }));
          c.rec.doneAt = this.now();
          if (c.rec.state === 'closing') c.rec.state = 'done';
          this.finish(c);
          break;
        case 'end':
          this.finish(c);
          break;
        case 'text':
          this.start(c, item.gen);
          break;
      }
    }
  }

  private finish(c: Ctx): void {
    c.finished = true;
    c.rec.active = false;
    c.queue = [];
    this.armExpiry(c);
    this.host.changed();
  }

  /** Expire `contextExpiryMs` after the last audio output once nothing is held, queued or running. */
  private armExpiry(c: Ctx): void {
    c.expiryTimer = this.clear(c.expiryTimer);
    if (c.running || c.pending !== '' || c.queue.length > 0 || c.rec.stalled) return;
    if (c.rec.state === 'error' || c.rec.state === 'aborted' || c.rec.expiredAt !== null) return;
    const since = c.lastAudioWall;
    if (since === null && !c.finished) return; // an open context that never spoke does not expire
    const wait = since === null ? this.opts.contextExpiryMs : since + this.opts.contextExpiryMs - performance.now();
    c.expiryTimer = this.later(wait, () => {
      c.expiryTimer = null;
      c.rec.expiredAt = this.now();
      if (c.rec.state === 'open') {
        c.rec.state = 'expired';
        c.finished = true;
        c.rec.active = false;
      }
      this.host.changed();
    });
  }

  private start(c: Ctx, gen: CartesiaGeneration): void {
    const o = this.opts;
    const faults = this.host.ttsFaults();
    const chars = [...gen.text];
    let limit = chars.length;
    let cut: CartesiaGeneration['cut'] = null;
    let end: Running['end'] = 'normal';
    if (c.duration !== null) {
      const room = Math.max(0, Math.floor((c.duration * 1000) / o.msPerChar + 1e-9) - c.charsRendered);
      if (room < limit) {
        limit = room;
        cut = 'duration';
      }
    }
    const stall = faults.stallAfterChars;
    const err = faults.errorAfterChars;
    const errRoom = err ? Math.max(0, err.chars - c.charsRendered) : Infinity;
    const stallRoom = stall !== null ? Math.max(0, stall - c.charsRendered) : Infinity;
    if (errRoom <= limit && errRoom <= stallRoom) {
      limit = errRoom;
      cut = 'error';
      end = 'error';
    } else if (stallRoom <= limit) {
      limit = stallRoom;
      cut = 'stall';
      end = 'stall';
    }
    const text = chars.slice(0, limit).join('');
    const pcm = c.renderer.push(text);
    c.charsRendered += limit;
    const pieces = chunkPcm(pcm, c.rate, o.chunkMs);
    gen.generatedText = text;
    gen.cut = cut;
    gen.startedAt = this.now();
    const now = performance.now();
    const burstStart = c.idle;
    if (c.idle) c.nextDue = now + o.firstAudioDelayMs;
    else c.nextDue = Math.max(c.nextDue, now);
    c.idle = false;
    c.running = {
      gen,
      chunks: pieces.map((p) => encodePcm(p, c.encoding)),
      samples: pieces.map((p) => p.length >> 1),
      idx: 0,
      offsetS: c.samples / c.rate,
      burstStart,
      end,
    };
    c.expiryTimer = this.clear(c.expiryTimer);
    c.genTimer = this.later(c.nextDue - now, () => this.pump(c));
  }

  private interval(): number {
    return this.opts.chunkMs / this.opts.speedFactor;
  }

  private pump(c: Ctx): void {
    c.genTimer = null;
    const r = c.running;
    if (!r) return;
    const now = performance.now();
    while (r.idx < r.chunks.length && c.nextDue <= now + 0.5) {
      if (!this.sendChunk(c, r)) return;
      c.nextDue += this.interval();
    }
    if (r.idx < r.chunks.length || (r.chunks.length === 0 && c.nextDue > now + 0.5)) {
      c.genTimer = this.later(c.nextDue - now, () => this.pump(c));
      return;
    }
    this.complete(c, r);
  }

  /** false when the socket is gone or being closed by a fault */
  private sendChunk(c: Ctx, r: Running): boolean {
    const data = r.chunks[r.idx]!;
    const samples = r.samples[r.idx]!;
    const first = r.idx === 0;
    r.idx++;
    const t = this.now();
    const seconds = samples / c.rate;
    c.samples += samples;
    const rec = c.rec;
    rec.audioSeconds = c.samples / c.rate;
    rec.audioBytes += data.length;
    rec.chunks++;
    rec.charsGenerated = Math.floor((c.samples * 1000) / (this.opts.msPerChar * c.rate) + 1e-6);
    rec.firstAudioAt ??= t;
    rec.lastAudioAt = t;
    c.lastAudioWall = performance.now();
    r.gen.chunks++;
    r.gen.audioSeconds += seconds;
    r.gen.firstAudioAt ??= t;
    this.conn.audioSeconds += seconds;
    this.conn.audioBytes += data.length;
    const stepTime = first && r.burstStart ? this.opts.firstAudioDelayMs + this.interval() : this.interval();
    this.send(this.withContext(c, {
      type: 'chunk' as const,
      status_code: 206,
      done: false as const,
      data: data.toString('base64'),
      step_time: r3(stepTime),
      flush_id: r.gen.flushId,
    }));
    return this.session.reportAudio(seconds) && !this.closed;
  }

  /** All chunks of a generation were sent: timestamps, then the next item (or the fault's end). */
  private complete(c: Ctx, r: Running): void {
    const rec = c.rec;
    const req = rec.request;
    r.gen.endedAt = this.now();
    const text = r.gen.generatedText;
    if (text !== '' && (req.addTimestamps || req.addPhonemeTimestamps)) {
      const timings = ttsTimings(text, { msPerChar: this.opts.msPerChar, offsetS: r.offsetS });
      if (req.addTimestamps && timings.words.length > 0) {
        this.send(this.withContext(c, {
          type: 'timestamps' as const,
          status_code: 206,
          done: false as const,
          flush_id: r.gen.flushId,
          word_timestamps: {
            words: timings.words.map((w) => w.word),
            start: timings.words.map((w) => w.start),
            end: timings.words.map((w) => w.end),
          },
        }));
      }
      const phonemes = timings.chars.filter((ch) => !/\s/u.test(ch.char));
      if (req.addPhonemeTimestamps && phonemes.length > 0) {
        this.send(this.withContext(c, {
          type: 'phoneme_timestamps' as const,
          status_code: 206,
          done: false as const,
          flush_id: r.gen.flushId,
          phoneme_timestamps: { phonemes: phonemes.map((p) => p.char), start: phonemes.map((p) => p.start), end: phonemes.map((p) => p.end) },
        }));
      }
    }
    c.running = null;
    if (r.end === 'error') {
      const e = this.host.ttsFaults().errorAfterChars;
      this.fail(c, e?.statusCode ?? 500, e?.message ?? INJECTED_ERROR_MESSAGE);
      return;
    }
    if (r.end === 'stall') {
      rec.stalled = true;
      this.host.changed();
      return;
    }
    this.host.changed();
    this.advance(c);
  }

  /** Error frame on the context; it ends (nothing else is sent for it). */
  private fail(c: Ctx, status: number, message: string): void {
    c.bufferTimer = this.clear(c.bufferTimer);
    c.genTimer = this.clear(c.genTimer);
    c.expiryTimer = this.clear(c.expiryTimer);
    c.queue = [];
    c.pending = '';
    c.running = null;
    c.finished = true;
    c.rec.state = 'error';
    c.rec.active = false;
    c.rec.error = { at: this.now(), statusCode: status, message };
    this.send(this.errorMessage(c.rec.anonymous ? null : c.rec.contextId, status, message));
    this.host.changed();
  }
}

// ---------------------------------------------------------------------------------------------
// STT: `/stt/websocket` (manual finalize: ink-whisper, ink-2) and `/stt/turns/websocket` (ink-2
// turn detection). Rules: see the header ("STT") and README "Cartesia STT".

export const STT_ENCODINGS = ['pcm_s16le', 'pcm_s32le', 'pcm_f16le', 'pcm_f32le', 'pcm_mulaw', 'pcm_alaw'] as const;
export type SttEncoding = (typeof STT_ENCODINGS)[number];
/** models of /stt/websocket: ink-whisper, ink-2 and their dated snapshots (e.g. ink-whisper-2025-06-04) */
export const STT_MODEL_RE = /^(?:ink-whisper|ink-2)(?:-\d{4}-\d{2}-\d{2})?$/;
/** models of /stt/turns/websocket */
export const STT_TURNS_MODEL_RE = /^ink-2(?:-\d{4}-\d{2}-\d{2})?$/;
export const STT_DOC_URL = 'https://docs.cartesia.ai/build-with-cartesia/stt-models/latest';
export const STT_MIN_SAMPLE_RATE = 8000;
export const STT_MAX_SAMPLE_RATE = 48000;
export const MAX_KEYTERMS = 100;
export const MAX_KEYTERM_CHARS = 1200;
/** ink-whisper languages (stt.yml 2025-04-16); ink-2 is English only */
export const WHISPER_LANGUAGES: readonly string[] = [
  'en', 'zh', 'de', 'es', 'ru', 'ko', 'fr', 'ja', 'pt', 'tr', 'pl', 'ca', 'nl', 'ar', 'sv', 'it', 'id', 'hi', 'fi', 'vi',
  'he', 'uk', 'el', 'ms', 'cs', 'ro', 'da', 'hu', 'ta', 'no', 'th', 'ur', 'hr', 'bg', 'lt', 'la', 'mi', 'ml', 'cy', 'sk',
  'te', 'fa', 'lv', 'bn', 'sr', 'az', 'sl', 'kn', 'et', 'mk', 'br', 'eu', 'is', 'hy', 'ne', 'mn', 'bs', 'kk', 'sq', 'sw',
  'gl', 'mr', 'pa', 'si', 'km', 'sn', 'yo', 'so', 'af', 'oc', 'ka', 'be', 'tg', 'sd', 'gu', 'am', 'yi', 'lo', 'uz', 'fo',
  'ht', 'ps', 'tk', 'nn', 'mt', 'sa', 'lb', 'my', 'bo', 'tl', 'mg', 'as', 'tt', 'haw', 'ln', 'ha', 'ba', 'jw', 'su', 'yue',
];
/** documented ranges and defaults of the ink-2 turn settings (query `turn_<name>`, config `turn.<name>`) */
export const TURN_RANGES = {
  start_threshold: { min: 0.5, max: 0.9, default: 0.8 },
  eager_end_threshold: { min: 0.3, max: 0.6, default: 0.4 },
  end_threshold: { min: 0.05, max: 0.5, default: 0.2 },
  end_timeout_ms: { min: 640, max: 11200, default: 5600 },
} as const;
export type TurnSetting = keyof typeof TURN_RANGES;
const TURN_SETTINGS = Object.keys(TURN_RANGES) as TurnSetting[];

export type SttKind = 'stt' | 'stt-turns';

export interface TurnConfig {
  start_threshold: number;
  eager_end_threshold: number;
  end_threshold: number;
  end_timeout_ms: number;
}

export function defaultTurnConfig(): TurnConfig {
  return {
    start_threshold: TURN_RANGES.start_threshold.default,
    eager_end_threshold: TURN_RANGES.eager_end_threshold.default,
    end_threshold: TURN_RANGES.end_threshold.default,
    end_timeout_ms: TURN_RANGES.end_timeout_ms.default,
  };
}

export interface CartesiaSttParams {
  model: string;
  encoding: SttEncoding;
  sampleRate: number;
  language: string;
  /** ink-whisper only (ignored for ink-2) */
  minVolume: number | null;
  /** ink-whisper only (ignored for ink-2) */
  maxSilenceDurationSecs: number | null;
  keyterms: string[];
  /** turn settings after the query (turns endpoint only) */
  turn: TurnConfig | null;
  /** query keys the emulator does not know (accepted) */
  unknown: string[];
  raw: Record<string, string[]>;
}

export type SttParamCheck =
  | { ok: true; params: CartesiaSttParams }
  | { ok: false; message: string; errorCode: string; title: string };

const STT_COMMON_KEYS = ['model', 'encoding', 'sample_rate', 'language', 'keyterm', 'api_key', 'access_token', 'cartesia_version'];
const STT_MANUAL_KEYS = new Set([...STT_COMMON_KEYS, 'min_volume', 'max_silence_duration_secs']);
const STT_TURNS_KEYS = new Set([...STT_COMMON_KEYS, ...TURN_SETTINGS.map((k) => `turn_${k}`)]);

function parseNumber(v: string): number | null {
  if (v.trim() === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/**
 * Check turn settings (merged over `base`) against the documented ranges and the ordering rule
 * end_threshold < eager_end_threshold < start_threshold. `where` names the field in messages.
 */
export function checkTurnConfig(
  patch: Partial<Record<TurnSetting, unknown>>,
  base: TurnConfig,
  where: (k: TurnSetting) => string,
): { ok: true; config: TurnConfig } | { ok: false; message: string } {
  const config = { ...base };
  for (const k of TURN_SETTINGS) {
    const v = patch[k];
    if (v === undefined) continue;
    const r = TURN_RANGES[k];
    const n = typeof v === 'number' ? v : typeof v === 'string' ? parseNumber(v) : null;
    if (n === null || !Number.isFinite(n)) return { ok: false, message: `'${where(k)}' must be a number.` };
    if (k === 'end_timeout_ms' && !Number.isInteger(n)) return { ok: false, message: `'${where(k)}' must be an integer number of milliseconds.` };
    if (n < r.min || n > r.max) return { ok: false, message: `'${where(k)}' must be between ${r.min} and ${r.max} (got ${n}).` };
    config[k] = n;
  }
  if (!(config.end_threshold < config.eager_end_threshold)) {
    return { ok: false, message: `'${where('end_threshold')}' (${config.end_threshold}) must stay below '${where('eager_end_threshold')}' (${config.eager_end_threshold}).` };
  }
  if (!(config.eager_end_threshold < config.start_threshold)) {
    return { ok: false, message: `'${where('eager_end_threshold')}' (${config.eager_end_threshold}) must stay below '${where('start_threshold')}' (${config.start_threshold}).` };
  }
  return { ok: true, config };
}

/** Validate the query of /stt/websocket ('stt') or /stt/turns/websocket ('stt-turns') like the API. */
export function parseSttQuery(kind: SttKind, query: Record<string, string[]>): SttParamCheck {
  const bad = (message: string, errorCode = 'invalid_request', title = 'Bad Request'): SttParamCheck => ({ ok: false, message, errorCode, title });
  const last = (k: string): string | undefined => {
    const v = query[k];
    return v ? v[v.length - 1] : undefined;
  };
  const model = last('model');
  if (model === undefined || model === '') return bad(`Missing required query parameter 'model'.`);
  const modelRe = kind === 'stt' ? STT_MODEL_RE : STT_TURNS_MODEL_RE;
  if (!modelRe.test(model)) {
    return bad(`The model is not valid, make sure it is a valid model ID (got '${model}').`, 'model_not_found', 'Invalid model');
  }
  const encoding = last('encoding');
  if (encoding === undefined) return bad(`Missing required query parameter 'encoding'.`);
  if (!(STT_ENCODINGS as readonly string[]).includes(encoding)) {
    return bad(`Invalid encoding '${encoding}': expected one of ${STT_ENCODINGS.join(', ')}.`);
  }
  const sr = last('sample_rate');
  if (sr === undefined) return bad(`Missing required query parameter 'sample_rate'.`);
  const sampleRate = parseNumber(sr);
  if (sampleRate === null || !Number.isInteger(sampleRate) || sampleRate < STT_MIN_SAMPLE_RATE || sampleRate > STT_MAX_SAMPLE_RATE) {
    return bad(`Invalid sample_rate '${sr}': expected an integer between ${STT_MIN_SAMPLE_RATE} and ${STT_MAX_SAMPLE_RATE}.`);
  }
  const isInk2 = model.startsWith('ink-2');
  const language = last('language') ?? 'en';
  if (isInk2 ? language !== 'en' : !WHISPER_LANGUAGES.includes(language)) {
    return bad(isInk2 ? `Language '${language}' is not supported by ${model}: only 'en' is supported.` : `Unsupported language '${language}'.`, 'unsupported_language');
  }
  const keyterms = query['keyterm'] ?? [];
  if (keyterms.length > MAX_KEYTERMS) return bad(`Too many keyterms: at most ${MAX_KEYTERMS} are allowed (got ${keyterms.length}).`);
  const keytermChars = keyterms.reduce((n, k) => n + [...k].length, 0);
  if (keytermChars > MAX_KEYTERM_CHARS) return bad(`Keyterms may total at most ${MAX_KEYTERM_CHARS} characters (got ${keytermChars}).`);
  if (keyterms.some((k) => k.trim() === '')) return bad('Keyterms must not be empty.');
  let minVolume: number | null = null;
  let maxSilenceDurationSecs: number | null = null;
  let turn: TurnConfig | null = null;
  if (kind === 'stt') {
    const mv = last('min_volume');
    if (mv !== undefined) {
      minVolume = parseNumber(mv);
      if (minVolume === null || minVolume < 0 || minVolume > 1) return bad(`Invalid min_volume '${mv}': expected a number between 0 and 1.`);
    }
    const ms = last('max_silence_duration_secs');
    if (ms !== undefined) {
      maxSilenceDurationSecs = parseNumber(ms);
      if (maxSilenceDurationSecs === null || maxSilenceDurationSecs <= 0) {
        return bad(`Invalid max_silence_duration_secs '${ms}': expected a number of seconds > 0.`);
      }
    }
  } else {
    const patch: Partial<Record<TurnSetting, unknown>> = {};
    for (const k of TURN_SETTINGS) {
      const v = last(`turn_${k}`);
      if (v !== undefined) patch[k] = v;
    }
    const check = checkTurnConfig(patch, defaultTurnConfig(), (k) => `turn_${k}`);
    if (!check.ok) return bad(check.message);
    turn = check.config;
  }
  const known = kind === 'stt' ? STT_MANUAL_KEYS : STT_TURNS_KEYS;
  return {
    ok: true,
    params: {
      model,
      encoding: encoding as SttEncoding,
      sampleRate,
      language,
      minVolume,
      maxSilenceDurationSecs,
      keyterms,
      turn,
      unknown: Object.keys(query).filter((k) => !known.has(k)),
      raw: query,
    },
  };
}

// ---- wire types (server → client), after stt.yml 2025-04-16 and the 2026 SDK's STT types

export interface CartesiaSttWord {
  word: string;
  /** seconds from the start of the socket's audio */
  start: number;
  end: number;
}

export interface CartesiaSttTranscript {
  type: 'transcript';
  request_id: string;
  /** delta since the last is_final transcript (Whisper-style leading space after the first final) */
  text: string;
  is_final: boolean;
  /** 2026: audio seconds that produced this chunk; 2025: audio seconds transcribed so far */
  duration: number;
  language: string;
  words: CartesiaSttWord[];
}

export interface CartesiaSttFlushDone {
  type: 'flush_done';
  request_id: string;
}

export interface CartesiaSttDone {
  type: 'done';
  request_id: string;
}

/** STT error frame before 2026-08-14 (stt.yml ErrorMessage `message` + the docs example's `error`) */
export interface CartesiaSttError2025 {
  type: 'error';
  request_id: string;
  message: string;
  error: string;
}

/** STT error frame from 2026-08-14 (SDK STTErrorResponse) */
export interface CartesiaSttError2026 {
  type: 'error';
  request_id: string;
  status_code: number;
  title: string;
  message: string;
  error_code: string;
  doc_url?: string;
}

export interface CartesiaTurnsConnected {
  type: 'connected';
  request_id: string;
}
export interface CartesiaTurnStart {
  type: 'turn.start';
  request_id: string;
}
export interface CartesiaTurnUpdate {
  type: 'turn.update';
  request_id: string;
  /** cumulative within the turn */
  transcript: string;
}
export interface CartesiaTurnEagerEnd {
  type: 'turn.eager_end';
  request_id: string;
  transcript: string;
}
export interface CartesiaTurnResume {
  type: 'turn.resume';
  request_id: string;
}
export interface CartesiaTurnEnd {
  type: 'turn.end';
  request_id: string;
  transcript: string;
}

export type CartesiaSttErrorMessage = CartesiaSttError2025 | CartesiaSttError2026;
export type CartesiaSttManualMessage = CartesiaSttTranscript | CartesiaSttFlushDone | CartesiaSttDone | CartesiaSttErrorMessage;
export type CartesiaTurnsMessage =
  | CartesiaTurnsConnected
  | CartesiaTurnStart
  | CartesiaTurnUpdate
  | CartesiaTurnEagerEnd
  | CartesiaTurnResume
  | CartesiaTurnEnd
  | CartesiaSttErrorMessage;
export type CartesiaSttMessage = CartesiaSttManualMessage | CartesiaTurnsMessage;

// ---- options, faults, records

export interface CartesiaSttOptions {
  /** no client message (audio or text) for this long → close (docs: 20 s; default 20000) */
  idleTimeoutMs?: number;
  /** close code of the idle close (UNCERTAIN; default 1000) */
  idleCloseCode?: number;
  /** open STT sockets per credential before 429 at the upgrade (docs: plan STT concurrency; default null = no limit) */
  maxConcurrent?: number | null;
  /** extra wall-clock delay before every message (default 0; realistic finalize answer 100–300) */
  latencyMs?: number;
  /** at most one interim per this many audio ms, only when new words were recognised (default 500) */
  interimIntervalMs?: number;
  /** ink-whisper auto-final after this much silence when max_silence_duration_secs is not given (UNCERTAIN; default 0.5) */
  defaultMaxSilenceSecs?: number;
  /** answer `finalize` with flush_done BEFORE the final transcript (2025 docs example order; default false) */
  flushDoneFirst?: boolean;
  /** 'upgrade' (default): bad query → HTTP 400 at the upgrade; 'in-band': accept, send an error frame, close 1008 */
  paramErrors?: 'upgrade' | 'in-band';
  /** turns: voiced audio needed for turn.start = start_threshold × this (default 200 → 160 ms) */
  turnStartScaleMs?: number;
  /** turns: silence for eager_end = (1 − eager_end_threshold) × this, for end = (1 − end_threshold) × this (default 1000) */
  turnSilenceScaleMs?: number;
  /** turns: send turn.eager_end / turn.resume (preview events; default true) */
  eagerEnd?: boolean;
}

export type ResolvedCartesiaSttOptions = Required<CartesiaSttOptions>;

export const STT_IDLE_CLOSE_REASON = 'Idle timeout: no audio received.';
export const STT_PARAM_ERROR_CLOSE_CODE = 1008;
export const STT_INJECTED_ERROR_MESSAGE = 'Injected fault: transcription failed.';

/** STT-specific fault switches (server-wide on `emu.sttFaults`, per connection on `conn.sttFaults`). */
export interface CartesiaSttFaults {
  /** once this much audio arrived: an error frame (status default 500), then close (code default 1011; null = stay open, silent) */
  errorAfterAudioSec: { seconds: number; statusCode?: number; message?: string; closeCode?: number | null } | null;
  /** answer `finalize` without flush_done (the final transcript is still sent) */
  omitFlushDone: boolean;
  /** answer `done`/`close` (/stt/websocket) with the last transcript only: no done, no close */
  omitDone: boolean;
}

export function defaultSttFaults(): CartesiaSttFaults {
  return { errorAfterAudioSec: null, omitFlushDone: false, omitDone: false };
}

export interface CartesiaTurn {
  index: number;
  /** audio seconds */
  startedAt: number;
  endedAt: number | null;
  transcript: string;
  words: CartesiaSttWord[];
  eagerEnds: number;
  resumes: number;
  /** what ended it: end threshold, end_timeout_ms, the close command */
  endReason: 'threshold' | 'timeout' | 'close' | null;
}

export interface CartesiaSttConnection {
  kind: SttKind;
  /** wire record (frames, headers, close code) */
  record: ConnectionRecord;
  /** base session: per-connection base fault overrides live in `session.faults` */
  session: WsSession;
  requestId: string;
  apiKey: string;
  auth: CartesiaAuth;
  version: string;
  versionVia: 'header' | 'query' | 'default';
  apiGeneration: ApiGeneration;
  /** null when the upgrade was accepted only to report `paramError` in-band */
  params: CartesiaSttParams | null;
  paramError: { message: string; errorCode: string; title: string } | null;
  counts: { audioFrames: number; emptyFrames: number; finalize: number; done: number; close: number; config: number; invalid: number };
  audioSeconds: number;
  audioBytes: number;
  /** turns endpoint: the live turn settings (query, then config commands) */
  turnConfig: TurnConfig | null;
  /** turns endpoint: every config command with its outcome */
  configs: Array<{ at: number; turn: unknown; ok: boolean; message?: string }>;
  /** turns endpoint: turns in order */
  turns: CartesiaTurn[];
  /** every message produced, in order (also those withheld by deadAir) */
  sent: CartesiaSttMessage[];
  /** STT fault overrides for this connection */
  sttFaults: Partial<CartesiaSttFaults>;
}

// ---- audio decoding

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 0x1f) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

function floatToS16(x: number): number {
  if (!Number.isFinite(x)) return 0;
  return Math.max(-32768, Math.min(32767, Math.round(x * 32767)));
}

export function sttBytesPerSample(encoding: SttEncoding): number {
  switch (encoding) {
    case 'pcm_s16le':
    case 'pcm_f16le':
      return 2;
    case 'pcm_s32le':
    case 'pcm_f32le':
      return 4;
    case 'pcm_mulaw':
    case 'pcm_alaw':
      return 1;
  }
}

/** Mono PCM in any STT encoding → s16 samples; partial samples carry over to the next chunk. */
class SttDecoder {
  readonly encoding: SttEncoding;
  readonly sampleRate: number;
  readonly bps: number;
  private carry: Buffer = Buffer.alloc(0);

  constructor(encoding: SttEncoding, sampleRate: number) {
    this.encoding = encoding;
    this.sampleRate = sampleRate;
    this.bps = sttBytesPerSample(encoding);
  }

  decode(chunk: Buffer): { seconds: number; samples: Int16Array } {
    const seconds = chunk.length / (this.sampleRate * this.bps);
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    const n = Math.floor(buf.length / this.bps);
    const samples = new Int16Array(n);
    for (let i = 0; i < n; i++) {
      const off = i * this.bps;
      switch (this.encoding) {
        case 'pcm_s16le':
          samples[i] = buf.readInt16LE(off);
          break;
        case 'pcm_s32le':
          samples[i] = buf.readInt32LE(off) >> 16;
          break;
        case 'pcm_f16le':
          samples[i] = floatToS16(halfToFloat(buf.readUInt16LE(off)));
          break;
        case 'pcm_f32le':
          samples[i] = floatToS16(buf.readFloatLE(off));
          break;
        case 'pcm_mulaw':
          samples[i] = mulawToLinear(buf[off]!);
          break;
        case 'pcm_alaw':
          samples[i] = alawToLinear(buf[off]!);
          break;
      }
    }
    this.carry = Buffer.from(buf.subarray(n * this.bps));
    return { seconds, samples };
  }
}

// ---- sessions

const EPS = 1e-6;

function r6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

interface SttHost {
  options: ResolvedCartesiaOptions;
  sttFaults(): CartesiaSttFaults;
  changed(): void;
}

/** Shared by both STT endpoints: idle timer, audio decoding, fault checks, output. */
abstract class SttSessionBase implements WsHandler {
  readonly conn: CartesiaSttConnection;
  protected readonly host: SttHost;
  protected readonly session: WsSession;
  protected readonly params: CartesiaSttParams | null;
  protected readonly decoder: SttDecoder | null;
  protected readonly detector: SpeechDetector | null;
  /** no more input is processed (done/close command, fatal error, fault) */
  protected ended = false;
  private closed = false;
  private idleTimer: NodeJS.Timeout | null = null;
  private errorFired = false;

  constructor(conn: CartesiaSttConnection, host: SttHost) {
    this.conn = conn;
    this.host = host;
    this.session = conn.session;
    this.params = conn.params;
    const p = conn.params;
    this.decoder = p ? new SttDecoder(p.encoding, p.sampleRate) : null;
    // min_volume (ink-whisper): windows quieter than min_volume × full scale (RMS) count as silence
    const voicedRms = p && p.minVolume !== null && !p.model.startsWith('ink-2') ? Math.max(500, p.minVolume * 32768) : 500;
    this.detector = p ? new SpeechDetector({ sampleRate: p.sampleRate, voicedRms }) : null;
    if (conn.paramError !== null) {
      this.ended = true;
      const e = conn.paramError;
      this.send(this.errorMessage(400, e.message, e.errorCode, e.title));
      this.session.close(STT_PARAM_ERROR_CLOSE_CODE, 'Invalid request parameters.', { delayMs: this.opts.latencyMs });
      return;
    }
    this.touch();
  }

  get timerCount(): number {
    return this.idleTimer ? 1 : 0;
  }

  protected get opts(): ResolvedCartesiaSttOptions {
    return this.host.options.stt;
  }

  onMessage(data: Buffer, isBinary: boolean): void {
    if (this.closed) return;
    if (isBinary) {
      this.conn.counts.audioFrames++;
      if (this.ended) return;
      this.touch();
      if (data.length === 0) {
        this.conn.counts.emptyFrames++;
        return;
      }
      this.audio(data);
    } else {
      if (!this.ended) this.touch();
      this.command(data.toString('utf8'));
    }
    this.host.changed();
  }

  onClose(): void {
    this.stop();
  }

  stop(): void {
    if (this.closed) return;
    this.closed = true;
    this.ended = true;
    this.clearIdle();
    this.host.changed();
  }

  protected abstract handle(events: DetectorEvent[]): void;
  protected abstract command(text: string): void;

  private audio(data: Buffer): void {
    if (!this.decoder || !this.detector) return;
    const { seconds, samples } = this.decoder.decode(data);
    this.conn.audioBytes += data.length;
    this.conn.audioSeconds += seconds;
    if (!this.session.reportAudio(seconds)) {
      this.end();
      return;
    }
    const fault = this.host.sttFaults().errorAfterAudioSec;
    if (fault && !this.errorFired && this.conn.audioSeconds + 1e-9 >= fault.seconds) {
      this.errorFired = true;
      this.fail(fault.statusCode ?? 500, fault.message ?? STT_INJECTED_ERROR_MESSAGE, fault.closeCode === undefined ? 1011 : fault.closeCode);
      return;
    }
    this.handle(this.detector.pushSamples(samples));
  }

  /** error frame, then close with `closeCode` (null: stay open but process nothing more) */
  protected fail(status: number, message: string, closeCode: number | null): void {
    this.end();
    this.send(this.errorMessage(status, message, errorCodeFor(status)));
    if (closeCode !== null) this.session.close(closeCode, message.slice(0, 120), { delayMs: this.opts.latencyMs });
  }

  protected end(): void {
    this.ended = true;
    this.clearIdle();
  }

  protected send(msg: CartesiaSttMessage): void {
    this.conn.sent.push(msg);
    this.session.send(JSON.stringify(msg), { delayMs: this.opts.latencyMs });
    this.host.changed();
  }

  protected closeNormally(): void {
    this.session.close(1000, '', { delayMs: this.opts.latencyMs });
  }

  protected errorMessage(status: number, message: string, errorCode: string, title = TITLES[status] ?? 'Error'): CartesiaSttErrorMessage {
    if (this.conn.apiGeneration === '2026') {
      return { type: 'error', request_id: this.conn.requestId, status_code: status, title, message, error_code: errorCode, doc_url: STT_DOC_URL };
    }
    return { type: 'error', request_id: this.conn.requestId, message, error: message };
  }

  /** an unknown or malformed text frame: 400 error frame, the socket stays open */
  protected invalid(message: string): void {
    this.conn.counts.invalid++;
    if (!this.ended) this.send(this.errorMessage(400, message, 'invalid_request'));
  }

  private touch(): void {
    this.clearIdle();
    if (this.ended || this.closed) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      this.end();
      this.session.close(this.opts.idleCloseCode, STT_IDLE_CLOSE_REASON);
      this.host.changed();
    }, this.opts.idleTimeoutMs);
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}

function shortText(text: string): string {
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

/** /stt/websocket: interims while speaking, finals at auto-finalize (ink-whisper), finalize, done/close. */
class SttManualSession extends SttSessionBase {
  private segWords: CartesiaSttWord[] = [];
  private segStart = 0;
  private now = 0;
  private inSpeech = false;
  private silenceStart: number | null = null;
  private interimWords = 0;
  private lastInterimAt = Number.NEGATIVE_INFINITY;
  private nonEmptyFinals = 0;

  private get autoFinalize(): boolean {
    return this.params !== null && this.params.model.startsWith('ink-whisper');
  }

  private get maxSilence(): number {
    return this.params?.maxSilenceDurationSecs ?? this.opts.defaultMaxSilenceSecs;
  }

  protected handle(events: DetectorEvent[]): void {
    for (const ev of events) {
      if (this.ended) return;
      switch (ev.type) {
        case 'speech-start':
          this.inSpeech = true;
          this.silenceStart = null;
          break;
        case 'word':
          this.segWords.push({ word: ev.word, start: ev.start, end: ev.end });
          break;
        case 'speech-end':
          this.inSpeech = false;
          this.silenceStart = ev.time;
          break;
        case 'window':
          this.onWindow(ev.end);
          break;
      }
    }
  }

  private onWindow(now: number): void {
    this.now = now;
    if (this.autoFinalize && this.segWords.length > 0 && !this.inSpeech && this.silenceStart !== null && now - this.silenceStart >= this.maxSilence - EPS) {
      this.emitFinal();
      return;
    }
    const interval = this.opts.interimIntervalMs / 1000;
    if (this.segWords.length > this.interimWords && now - this.lastInterimAt >= interval - EPS) {
      this.interimWords = this.segWords.length;
      this.lastInterimAt = now;
      this.send(this.transcript(false));
    }
  }

  private transcript(isFinal: boolean): CartesiaSttTranscript {
    const words = this.segWords.map((w) => ({ ...w }));
    const body = words.map((w) => w.word).join(' ');
    const text = body !== '' && this.nonEmptyFinals > 0 ? ` ${body}` : body;
    return {
      type: 'transcript',
      request_id: this.conn.requestId,
      text,
      is_final: isFinal,
      duration: r6(this.conn.apiGeneration === '2026' ? this.now - this.segStart : this.now),
      language: this.params?.language ?? 'en',
      words,
    };
  }

  private emitFinal(): void {
    const msg = this.transcript(true);
    if (msg.text !== '') this.nonEmptyFinals++;
    this.send(msg);
    this.segWords = [];
    this.segStart = this.now;
    this.interimWords = 0;
    this.lastInterimAt = Number.NEGATIVE_INFINITY;
  }

  protected command(text: string): void {
    switch (text) {
      case 'finalize':
        this.conn.counts.finalize++;
        if (!this.ended) this.finalize();
        return;
      case 'done':
      case 'close':
        this.conn.counts[text]++;
        if (!this.ended) this.finish();
        return;
      default:
        this.invalid(`Unknown command '${shortText(text)}': send audio as binary frames and the text commands 'finalize' or '${this.conn.apiGeneration === '2026' ? 'close' : 'done'}'.`);
    }
  }

  private finalize(): void {
    if (this.detector) this.handle(this.detector.flush());
    if (this.ended) return;
    if (this.detector) this.now = Math.max(this.now, this.detector.processedSeconds);
    const ack: CartesiaSttFlushDone = { type: 'flush_done', request_id: this.conn.requestId };
    const withAck = !this.host.sttFaults().omitFlushDone;
    if (withAck && this.opts.flushDoneFirst) this.send(ack);
    if (this.segWords.length > 0) this.emitFinal();
    if (withAck && !this.opts.flushDoneFirst) this.send(ack);
  }

  private finish(): void {
    if (this.detector) this.handle(this.detector.end());
    if (this.ended) return;
    if (this.detector) this.now = Math.max(this.now, this.detector.processedSeconds);
    if (this.segWords.length > 0) this.emitFinal();
    this.end();
    if (this.host.sttFaults().omitDone) return;
    this.send({ type: 'done', request_id: this.conn.requestId });
    this.closeNormally();
  }
}

/** /stt/turns/websocket: connected, then turn.start / turn.update / turn.eager_end / turn.resume / turn.end. */
class SttTurnsSession extends SttSessionBase {
  private turn: CartesiaTurn | null = null;
  private inSpeech = false;
  private onsetAt: number | null = null;
  private silenceStart: number | null = null;
  private eagerSent = false;

  constructor(conn: CartesiaSttConnection, host: SttHost) {
    super(conn, host);
    if (!this.ended) this.send({ type: 'connected', request_id: conn.requestId });
  }

  private get config(): TurnConfig {
    return this.conn.turnConfig ?? defaultTurnConfig();
  }

  protected handle(events: DetectorEvent[]): void {
    for (const ev of events) {
      if (this.ended) return;
      switch (ev.type) {
        case 'speech-start':
          this.inSpeech = true;
          this.onsetAt = ev.time;
          this.silenceStart = null;
          if (this.turn && this.eagerSent) {
            this.eagerSent = false;
            this.turn.resumes++;
            this.send({ type: 'turn.resume', request_id: this.conn.requestId });
          }
          break;
        case 'word':
          if (!this.turn) this.startTurn(ev.start);
          this.turn!.words.push({ word: ev.word, start: ev.start, end: ev.end });
          this.turn!.transcript = this.turn!.words.map((w) => w.word).join(' ');
          this.send({ type: 'turn.update', request_id: this.conn.requestId, transcript: this.turn!.transcript });
          break;
        case 'speech-end':
          this.inSpeech = false;
          this.onsetAt = null;
          this.silenceStart = ev.time;
          break;
        case 'window':
          this.onWindow(ev.end);
          break;
      }
    }
  }

  private onWindow(now: number): void {
    const cfg = this.config;
    if (!this.turn) {
      if (this.inSpeech && this.onsetAt !== null && now - this.onsetAt >= (cfg.start_threshold * this.opts.turnStartScaleMs) / 1000 - EPS) {
        this.startTurn(this.onsetAt);
      }
      return;
    }
    if (this.inSpeech || this.silenceStart === null) return;
    const silence = now - this.silenceStart;
    const scale = this.opts.turnSilenceScaleMs / 1000;
    const byThreshold = (1 - cfg.end_threshold) * scale;
    const byTimeout = cfg.end_timeout_ms / 1000;
    if (silence >= Math.min(byThreshold, byTimeout) - EPS) {
      this.endTurn(now, byTimeout < byThreshold ? 'timeout' : 'threshold');
      return;
    }
    if (this.opts.eagerEnd && !this.eagerSent && this.turn.words.length > 0 && silence >= (1 - cfg.eager_end_threshold) * scale - EPS) {
      this.eagerSent = true;
      this.turn.eagerEnds++;
      this.send({ type: 'turn.eager_end', request_id: this.conn.requestId, transcript: this.turn.transcript });
    }
  }

  private startTurn(at: number): void {
    this.turn = { index: this.conn.turns.length, startedAt: at, endedAt: null, transcript: '', words: [], eagerEnds: 0, resumes: 0, endReason: null };
    this.conn.turns.push(this.turn);
    this.eagerSent = false;
    this.send({ type: 'turn.start', request_id: this.conn.requestId });
  }

  private endTurn(at: number, reason: CartesiaTurn['endReason']): void {
    const t = this.turn;
    if (!t) return;
    t.endedAt = r6(at);
    t.endReason = reason;
    this.turn = null;
    this.eagerSent = false;
    this.send({ type: 'turn.end', request_id: this.conn.requestId, transcript: t.transcript });
  }

  protected command(text: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      this.invalid('Invalid message: expected a JSON command ({"type":"config"} or {"type":"close"}).');
      return;
    }
    const type = isObject(msg) ? msg['type'] : undefined;
    if (type === 'close') {
      this.conn.counts.close++;
      if (!this.ended) this.finish();
      return;
    }
    if (type === 'config' && isObject(msg)) {
      this.conn.counts.config++;
      this.configure(msg['turn']);
      return;
    }
    this.invalid(`Unknown command type ${JSON.stringify(type ?? null)}: expected 'config' or 'close'.`);
  }

  private configure(turn: unknown): void {
    const at = this.session.elapsed();
    if (turn !== undefined && !isObject(turn)) {
      const message = `'turn' must be an object.`;
      this.conn.configs.push({ at, turn, ok: false, message });
      this.invalid(message);
      return;
    }
    const patch: Partial<Record<TurnSetting, unknown>> = {};
    for (const [k, v] of Object.entries(turn ?? {})) {
      if (!(TURN_SETTINGS as string[]).includes(k)) {
        const message = `Unknown turn setting '${k}'.`;
        this.conn.configs.push({ at, turn, ok: false, message });
        this.invalid(message);
        return;
      }
      patch[k as TurnSetting] = typeof v === 'number' ? v : Number.NaN;
    }
    const check = checkTurnConfig(patch, this.config, (k) => `turn.${k}`);
    if (!check.ok) {
      this.conn.configs.push({ at, turn, ok: false, message: check.message });
      this.invalid(check.message);
      return;
    }
    this.conn.turnConfig = check.config;
    this.conn.configs.push({ at, turn, ok: true });
  }

  private finish(): void {
    if (this.detector) this.handle(this.detector.end());
    if (this.ended) return;
    if (this.turn) this.endTurn(this.detector?.processedSeconds ?? 0, 'close');
    this.end();
    this.closeNormally();
  }
}

// ---------------------------------------------------------------------------------------------
// The emulator

interface AcceptState {
  kind: 'tts' | SttKind;
  requestId: string;
  apiKey: string;
  auth: CartesiaAuth;
  version: string;
  versionVia: 'header' | 'query' | 'default';
  generation: ApiGeneration;
  /** STT only: validated query, or the error to report in-band (paramErrors: 'in-band') */
  stt: { params: CartesiaSttParams | null; paramError: CartesiaSttConnection['paramError'] } | null;
}

interface StoppableSession {
  stop(): void;
  readonly timerCount: number;
}

export class CartesiaEmulator {
  readonly server: EmulatorServer;
  /** live options: timing knobs are read at each generation, limits at each upgrade/new context */
  readonly options: ResolvedCartesiaOptions;
  /** TTS connections only (see `sttConnections` for STT) */
  readonly connections: CartesiaConnection[];
  /** STT connections (/stt/websocket and /stt/turns/websocket) in order */
  readonly sttConnections: CartesiaSttConnection[];
  /** server-wide TTS fault switches (mutable; `conn.ttsFaults` overrides per connection) */
  ttsFaults: CartesiaTtsFaults = defaultTtsFaults();
  /** server-wide STT fault switches (mutable; `conn.sttFaults` overrides per connection) */
  sttFaults: CartesiaSttFaults = defaultSttFaults();
  private readonly sessions: StoppableSession[];

  constructor(server: EmulatorServer, options: ResolvedCartesiaOptions, connections: CartesiaConnection[], sttConnections: CartesiaSttConnection[], sessions: StoppableSession[]) {
    this.server = server;
    this.options = options;
    this.connections = connections;
    this.sttConnections = sttConnections;
    this.sessions = sessions;
  }

  get url(): string {
    return this.server.url;
  }
  get wsUrl(): string {
    return this.server.wsUrl;
  }
  /** ws(s)://host:port/tts/websocket */
  get ttsUrl(): string {
    return `${this.server.wsUrl}/tts/websocket`;
  }
  /** ws(s)://host:port/stt/websocket */
  get sttUrl(): string {
    return `${this.server.wsUrl}/stt/websocket`;
  }
  /** ws(s)://host:port/stt/turns/websocket */
  get sttTurnsUrl(): string {
    return `${this.server.wsUrl}/stt/turns/websocket`;
  }
  get port(): number {
    return this.server.port;
  }
  /** server-wide base fault switches (mutable) */
  get faults(): FaultSwitches {
    return this.server.faults;
  }
  set faults(f: FaultSwitches) {
    this.server.faults = f;
  }
  /** apply base faults to the next upgrade attempt only */
  faultNext(f: Partial<FaultSwitches>): void {
    this.server.faultNext(f);
  }
  /** reset base, TTS and STT fault switches */
  resetFaults(): void {
    this.server.resetFaults();
    this.ttsFaults = defaultTtsFaults();
    this.sttFaults = defaultSttFaults();
  }
  get rejected() {
    return this.server.rejected;
  }
  /** wire records of every accepted connection (TTS and STT) */
  get records(): ConnectionRecord[] {
    return this.server.connections;
  }

  ttsConnections(): CartesiaTtsConnection[] {
    return this.connections.filter((c): c is CartesiaTtsConnection => c.kind === 'tts');
  }

  /** Active contexts of a credential over all its connections. */
  activeContexts(apiKey?: string): number {
    let n = 0;
    for (const conn of this.ttsConnections()) {
      if (apiKey !== undefined && conn.apiKey !== apiKey) continue;
      for (const c of conn.contexts) if (c.active) n++;
    }
    return n;
  }

  /** Every context with this id, over all connections (latest last). */
  findContexts(contextId: string): CartesiaTtsContext[] {
    return this.ttsConnections().flatMap((c) => c.contexts.filter((x) => x.contextId === contextId));
  }

  waitForConnection(n = 1, timeoutMs = 2000): Promise<CartesiaConnection> {
    return this.server.waitFor(() => this.connections[n - 1], timeoutMs, `cartesia connection #${n}`);
  }

  waitForTtsConnection(n = 1, timeoutMs = 2000): Promise<CartesiaTtsConnection> {
    return this.server.waitFor(() => this.ttsConnections()[n - 1], timeoutMs, `cartesia tts connection #${n}`);
  }

  /** Wait for the n-th STT connection (1-based, both STT endpoints counted together). */
  waitForSttConnection(n = 1, timeoutMs = 2000): Promise<CartesiaSttConnection> {
    return this.server.waitFor(() => this.sttConnections[n - 1], timeoutMs, `cartesia stt connection #${n}`);
  }

  waitForClose(conn?: CartesiaConnection, timeoutMs = 2000): Promise<CartesiaConnection> {
    return this.server.waitFor(() => {
      const c = conn ?? this.connections[this.connections.length - 1];
      return c && c.record.closed ? c : undefined;
    }, timeoutMs, 'cartesia connection close');
  }

  /** Wait until an STT connection (default: the latest) is closed. */
  waitForSttClose(conn?: CartesiaSttConnection, timeoutMs = 2000): Promise<CartesiaSttConnection> {
    return this.server.waitFor(() => {
      const c = conn ?? this.sttConnections[this.sttConnections.length - 1];
      return c && c.record.closed ? c : undefined;
    }, timeoutMs, 'cartesia stt connection close');
  }

  /** Wait for a context (latest with this id) matching `pred` (default: it exists). */
  waitForContext(contextId: string, pred: (c: CartesiaTtsContext) => boolean = () => true, timeoutMs = 2000): Promise<CartesiaTtsContext> {
    return this.server.waitFor(() => {
      const all = this.findContexts(contextId);
      const c = all[all.length - 1];
      return c && pred(c) ? c : undefined;
    }, timeoutMs, `cartesia context '${contextId}'`);
  }

  waitFor<T>(predicate: () => T | undefined | null | false, timeoutMs = 2000, what = 'condition'): Promise<T> {
    return this.server.waitFor(predicate, timeoutMs, what);
  }

  /** Timers held by all sockets (idle, buffering, generation, expiry): 0 after close(). */
  pendingTimers(): number {
    return this.sessions.reduce((n, s) => n + s.timerCount, 0);
  }

  /** Stop every generation timer, terminate every socket, stop listening. */
  async close(): Promise<void> {
    for (const s of this.sessions) s.stop();
    await this.server.close();
  }
}

export function resolveSttOptions(o: CartesiaSttOptions = {}): ResolvedCartesiaSttOptions {
  const r: ResolvedCartesiaSttOptions = {
    idleTimeoutMs: o.idleTimeoutMs ?? 20_000,
    idleCloseCode: o.idleCloseCode ?? 1000,
    maxConcurrent: o.maxConcurrent ?? null,
    latencyMs: o.latencyMs ?? 0,
    interimIntervalMs: o.interimIntervalMs ?? 500,
    defaultMaxSilenceSecs: o.defaultMaxSilenceSecs ?? 0.5,
    flushDoneFirst: o.flushDoneFirst ?? false,
    paramErrors: o.paramErrors ?? 'upgrade',
    turnStartScaleMs: o.turnStartScaleMs ?? 200,
    turnSilenceScaleMs: o.turnSilenceScaleMs ?? 1000,
    eagerEnd: o.eagerEnd ?? true,
  };
  if (!(r.defaultMaxSilenceSecs > 0) || !(r.turnSilenceScaleMs > 0) || !(r.turnStartScaleMs >= 0)) {
    throw new Error('stt: defaultMaxSilenceSecs and turnSilenceScaleMs must be > 0, turnStartScaleMs >= 0');
  }
  return r;
}

export async function startCartesiaEmulator(opts: CartesiaEmulatorOptions = {}): Promise<CartesiaEmulator> {
  const options: ResolvedCartesiaOptions = {
    apiKeys: opts.apiKeys ?? [DEFAULT_API_KEY],
    accessTokens: opts.accessTokens ?? [],
    requireVersion: opts.requireVersion ?? true,
    maxConnections: opts.maxConnections ?? null,
    maxConcurrentContexts: opts.maxConcurrentContexts ?? null,
    idleTimeoutMs: opts.idleTimeoutMs ?? 300_000,
    firstAudioDelayMs: opts.firstAudioDelayMs ?? 20,
    speedFactor: opts.speedFactor ?? 10,
    chunkMs: opts.chunkMs ?? 40,
    msPerChar: opts.msPerChar ?? DEFAULT_MS_PER_CHAR,
    contextExpiryMs: opts.contextExpiryMs ?? 1000,
    doneAfterCancel: opts.doneAfterCancel ?? true,
    recordAudio: opts.recordAudio ?? false,
    stt: resolveSttOptions(opts.stt),
  };
  if (!(options.speedFactor > 0)) throw new Error('speedFactor must be > 0');
  if (!(options.chunkMs > 0) || !(options.msPerChar > 0)) throw new Error('chunkMs and msPerChar must be > 0');
  const connections: CartesiaConnection[] = [];
  const sttConnections: CartesiaSttConnection[] = [];
  const sessions: StoppableSession[] = [];
  let emu: CartesiaEmulator | null = null;
  // TTS sockets and STT sockets have separate limits (STT has its own concurrency limit)
  const openTts = (key: string) => connections.filter((c) => c.apiKey === key && !c.record.closed).length;
  const openStt = (key: string) => sttConnections.filter((c) => c.apiKey === key && !c.record.closed).length;

  const onUpgrade = (ctx: UpgradeContext): UpgradeDecision<AcceptState> => {
    const requestId = randomUUID();
    const reject = (status: number, message: string, errorCode?: string, title?: string): UpgradeDecision<AcceptState> => {
      const e = cartesiaHttpError(status, message, requestId, errorCode);
      if (title !== undefined) e.body = JSON.stringify({ ...(JSON.parse(e.body) as object), title });
      return { accept: false, status, ...e };
    };
    const path = ctx.url.pathname.replace(/\/+$/, '');
    const kind = ROUTES[path];
    if (!kind) return reject(404, `No route for ${ctx.url.pathname}.`);
    const auth = checkAuth(ctx.req, ctx.query, options.apiKeys, options.accessTokens);
    if (!auth.ok) return reject(401, auth.message);
    const version = checkVersion(ctx.req, ctx.query, options.requireVersion);
    if (!version.ok) return reject(400, version.message);
    const base = { kind, requestId, apiKey: auth.key, auth: auth.auth, version: version.version, versionVia: version.via, generation: version.generation };
    if (kind === 'tts') {
      if (options.maxConnections !== null && openTts(auth.key) >= options.maxConnections) {
        return reject(429, `WebSocket connection limit of ${options.maxConnections} reached.`);
      }
      return { accept: true, state: { ...base, stt: null } };
    }
    const check = parseSttQuery(kind, ctx.query);
    if (!check.ok && options.stt.paramErrors === 'upgrade') return reject(400, check.message, check.errorCode, check.title);
    const limit = options.stt.maxConcurrent;
    if (limit !== null && openStt(auth.key) >= limit) {
      return reject(429, `STT concurrency limit of ${limit} reached.`);
    }
    return { accept: true, state: { ...base, stt: check.ok ? { params: check.params, paramError: null } : { params: null, paramError: { message: check.message, errorCode: check.errorCode, title: check.title } } } };
  };

  const sttConnection = (session: WsSession, state: AcceptState, kind: SttKind): CartesiaSttConnection => ({
    kind,
    record: session.record,
    session,
    requestId: state.requestId,
    apiKey: state.apiKey,
    auth: state.auth,
    version: state.version,
    versionVia: state.versionVia,
    apiGeneration: state.generation,
    params: state.stt?.params ?? null,
    paramError: state.stt?.paramError ?? null,
    counts: { audioFrames: 0, emptyFrames: 0, finalize: 0, done: 0, close: 0, config: 0, invalid: 0 },
    audioSeconds: 0,
    audioBytes: 0,
    turnConfig: kind === 'stt-turns' ? (state.stt?.params?.turn ?? defaultTurnConfig()) : null,
    configs: [],
    turns: [],
    sent: [],
    sttFaults: {},
  });

  const server = await startEmulatorServer<AcceptState>({
    name: 'cartesia',
    port: opts.port,
    host: opts.host,
    tls: opts.tls,
    recordAudio: options.recordAudio,
    onUpgrade,
    onConnection: (session, _ctx, state) => {
      if (state.kind !== 'tts') {
        const conn = sttConnection(session, state, state.kind);
        sttConnections.push(conn);
        const host: SttHost = {
          options,
          sttFaults: () => ({ ...(emu?.sttFaults ?? defaultSttFaults()), ...conn.sttFaults }),
          changed: () => server.changed(),
        };
        const s = state.kind === 'stt' ? new SttManualSession(conn, host) : new SttTurnsSession(conn, host);
        sessions.push(s);
        return s;
      }
      const contexts: CartesiaTtsContext[] = [];
      const conn: CartesiaTtsConnection = {
        kind: 'tts',
        record: session.record,
        session,
        requestId: state.requestId,
        apiKey: state.apiKey,
        auth: state.auth,
        version: state.version,
        versionVia: state.versionVia,
        apiGeneration: state.generation,
        contexts,
        context: (id) => contexts.find((c) => c.contextId === id),
        cancels: [],
        rejectedInputs: [],
        invalidFrames: 0,
        charsReceived: 0,
        audioSeconds: 0,
        audioBytes: 0,
        sent: [],
        ttsFaults: {},
      };
      connections.push(conn);
      const host: TtsHost = {
        options,
        ttsFaults: () => ({ ...(emu?.ttsFaults ?? defaultTtsFaults()), ...conn.ttsFaults }),
        activeContexts: (key) => emu?.activeContexts(key) ?? 0,
        changed: () => server.changed(),
      };
      const s = new TtsSession(conn, host);
      sessions.push(s);
      return s;
    },
    onHttpRequest: (_req, res) => {
      const e = cartesiaHttpError(404, 'Not found: this emulator serves WebSocket endpoints only (/tts/websocket, /stt/websocket, /stt/turns/websocket).', randomUUID());
      res.writeHead(404, { 'Content-Type': 'application/json' }).end(e.body);
    },
    formatError: (status, message) => cartesiaHttpError(status, message, randomUUID()),
  });
  emu = new CartesiaEmulator(server, options, connections, sttConnections, sessions);
  return emu;
}
