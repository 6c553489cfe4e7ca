/**
 * One client TTS socket (shared/protocol.md section 3): `session.create` once, then any number
 * of sequential generations (`input_transcript`* + `session.flush` -> `output_audio`* ->
 * `done`) on the same socket, as the LiveKit clients pool it.
 *
 * - Options: `session.create` sets model/voice/language/extra; `generation_config` and `extra`
 *   on an `input_transcript` are merged into the session and apply from the generation they
 *   start (a generation keeps the options of its first chunk; later changes apply to the next).
 * - Upstream: a warm provider link is opened at `session.create` (or taken from the pool),
 *   reused across generations when the provider allows it, and replaced ahead of time when it
 *   serves one generation only. The client terminating mid-generation drops the link at once.
 * - Output: provider PCM is resampled to the client's rate and sent as base64 `output_audio`.
 * - Liveness: during a generation, a `heartbeat` after `tts.heartbeatS` without any server
 *   message keeps the client's 10 s receive timeout from firing; a provider silent for
 *   `tts.providerSilenceTimeoutS` after `session.flush` fails the generation with 504.
 */
import { randomBytes } from 'node:crypto';
import type { GatewayConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { GatewayMetrics } from '../metering/metrics.ts';
import type { RequestMeta, UsageSink } from '../metering/usage.ts';
import { bytesPerSecond, parseSampleRate } from '../protocol/audio.ts';
import { GatewayError, wsErrorEvent } from '../protocol/errors.ts';
import {
  AUDIO_SUFFIX,
  describeZodError,
  outputAlignment,
  outputAudioPrefix,
  ttsHeartbeat,
  ttsInputTranscriptSchema,
  ttsSessionCreated,
  ttsSessionCreateSchema,
  ttsSimple,
  type TtsInputTranscript,
} from '../protocol/tts.ts';
import { pickSampleRate } from '../providers/options.ts';
import type { TtsAlignment, TtsOptions } from '../providers/types.ts';
import { PcmResampler } from './resampler.ts';
import { resolveTtsRoute, type TtsRoute } from './routing.ts';
import { ClientSink } from './send.ts';
import { countChars, createLink, linkKey, type TtsGenSink, type TtsLink } from './tts-link.ts';
import type { TtsLinkPool } from './tts-pool.ts';
import type { WsConnection } from './transport.ts';

export interface TtsSessionDeps {
  cfg: GatewayConfig;
  metrics: GatewayMetrics;
  usage: UsageSink;
  log: Logger;
  pool: TtsLinkPool;
  onEnd(session: TtsSession): void;
}

export interface TtsConnectionContext {
  apiKey: string;
  meta: RequestMeta;
}

type Phase = 'awaiting_create' | 'ready' | 'closed';

/** What the next generation uses: the session's current settings. */
interface Settings {
  route: TtsRoute;
  voice: string;
  language: string | undefined;
  extra: Record<string, unknown>;
}

interface Generation {
  id: string;
  route: TtsRoute;
  opts: TtsOptions;
  link: TtsLink;
  resampler: PcmResampler;
  /** Client text received for this generation (bounded by maxGenerationChars). */
  charsIn: number;
  charsSent: number;
  bytesOut: number;
  startedAt: number;
  firstAudioAt: number;
  /** session.flush received. */
  ended: boolean;
  /** Last time the provider sent anything for this generation (or the generation started, or its flush). */
  lastUpstreamAt: number;
  wantAlignment: boolean;
}

const MAX_CLIENT_BUFFER = 8 * 1024 * 1024;

export class TtsSession {
  readonly id = `tts_${randomBytes(9).toString('base64url')}`;
  private phase: Phase = 'awaiting_create';
  private readonly deps: TtsSessionDeps;
  private readonly ctx: TtsConnectionContext;
  private readonly client: ClientSink;
  private readonly log: Logger;
  private readonly startedAt = new Date();
  private readonly audioPrefix: string;

  private sampleRate = 16000;
  private settings: Settings | null = null;
  /** The warm link kept for this session's next generation. */
  private link: TtsLink | null = null;
  private gen: Generation | null = null;
  private genCount = 0;

  private lastClientAt = Date.now();
  private lastServerSendAt = Date.now();
  private endAfterGeneration = false;
  private endCloseCode = 1000;

  // usage totals
  private totalChars = 0;
  private totalAudioBytes = 0;
  private lastError: GatewayError | null = null;

  constructor(conn: WsConnection, ctx: TtsConnectionContext, deps: TtsSessionDeps) {
    this.deps = deps;
    this.ctx = ctx;
    this.log = deps.log.child({ session_id: this.id, api_key: ctx.apiKey, room_id: ctx.meta.roomId });
    this.audioPrefix = outputAudioPrefix(this.id);
    this.client = new ClientSink(conn, {
      maxBufferedBytes: MAX_CLIENT_BUFFER,
      onOverflow: () => this.finish('client_not_reading'),
    });
    conn.onMessage((data, isBinary) => this.onClientMessage(data, isBinary));
    conn.onClose(() => this.onClientGone());
    deps.metrics.sessionsActive.inc({ modality: 'tts' });
  }

  get isClosed(): boolean {
    return this.phase === 'closed';
  }

  // ---- client input --------------------------------------------------------------------

  private onClientMessage(data: Buffer, isBinary: boolean): void {
    if (this.phase === 'closed') return;
    this.lastClientAt = Date.now();
    const max = this.deps.cfg.file.tts.maxMessageBytes;
    if (data.length > max) {
      this.reject(new GatewayError('bad_request', `message of ${data.length} bytes exceeds the ${max}-byte limit`));
      return;
    }
    if (isBinary) {
      this.reject(new GatewayError('bad_request', 'binary frames are not part of the TTS protocol; send JSON text messages'));
      return;
    }
    let msg: unknown;
    try {
      msg = JSON.parse(data.toString('utf8'));
    } catch {
      this.reject(new GatewayError('bad_request', 'message is not valid JSON'));
      return;
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
      this.reject(new GatewayError('bad_request', 'message must be a JSON object with a "type"'));
      return;
    }
    const type = (msg as { type?: unknown }).type;
    switch (type) {
      case 'session.create':
        this.onCreate(msg);
        return;
      case 'input_transcript':
        this.onTranscript(msg);
        return;
      case 'session.flush':
        this.onFlush();
        return;
      case 'session.close':
        this.onCloseRequest();
        return;
      default:
        this.reject(
          new GatewayError('bad_request', typeof type === 'string' ? `unknown message type "${type.slice(0, 40)}"` : 'message has no "type"'),
        );
    }
  }

  private send(message: string): void {
    if (this.client.send(message)) this.lastServerSendAt = Date.now();
  }

  /** Answer bad input with an error event; the session stays usable. */
  private reject(err: GatewayError): void {
    this.send(wsErrorEvent(err, this.id));
  }

  private onCreate(raw: object): void {
    if (this.phase !== 'awaiting_create') {
      this.reject(new GatewayError('bad_request', 'session.create was already received on this socket'));
      return;
    }
    const parsed = ttsSessionCreateSchema.safeParse(raw);
    if (!parsed.success) {
      this.reject(new GatewayError('bad_request', `invalid session.create: ${describeZodError(parsed.error)}`));
      return;
    }
    const msg = parsed.data;
    const rate = parseSampleRate(msg.sample_rate ?? '16000');
    if (rate === null) {
      this.reject(new GatewayError('bad_request', 'sample_rate must be an integer from 8000 to 48000'));
      return;
    }
    if (msg.encoding != null && msg.encoding !== 'pcm_s16le') {
      this.reject(new GatewayError('bad_request', `unsupported encoding "${msg.encoding.slice(0, 20)}"; only pcm_s16le`));
      return;
    }
    let settings: Settings;
    try {
      const route = resolveTtsRoute(msg.model, this.deps.cfg);
      settings = {
        route,
        voice: msg.voice || route.voice || route.adapter.defaultVoice,
        language: msg.language || undefined,
        extra: msg.extra,
      };
      this.sampleRate = rate;
      this.optionsFor(settings); // validate now: bad options fail at create, not mid-conversation
    } catch (err) {
      this.reject(asGatewayError(err));
      return;
    }
    this.settings = settings;
    this.phase = 'ready';
    this.send(ttsSessionCreated(this.id));
    this.log.info({ model: settings.route.label, sample_rate: rate }, 'tts session created');
    this.warm();
  }

  private optionsFor(s: Settings): TtsOptions {
    const adapter = s.route.adapter;
    return adapter.validate({
      model: s.route.model,
      voice: s.voice,
      language: s.language,
      sampleRate: pickSampleRate(this.sampleRate, adapter.capabilities.sampleRates),
      extra: s.extra,
    });
  }

  /** Apply generation_config/extra of a chunk to the session settings (validated). */
  private merged(msg: TtsInputTranscript): Settings {
    const cur = this.settings as Settings;
    const gc = msg.generation_config;
    let route = cur.route;
    let voice = cur.voice;
    if (gc?.model) {
      const next = resolveTtsRoute(gc.model, this.deps.cfg);
      if (next.adapter !== route.adapter || next.model !== route.model) {
        if (next.adapter !== route.adapter) voice = next.voice ?? next.adapter.defaultVoice;
        route = next;
      }
    }
    if (gc?.voice) voice = gc.voice;
    const extra = { ...cur.extra };
    for (const [k, v] of Object.entries(msg.extra ?? {})) {
      if (v === null) delete extra[k];
      else extra[k] = v;
    }
    return { route, voice, language: gc?.language || cur.language, extra };
  }

  private onTranscript(raw: object): void {
    if (this.phase !== 'ready' || this.settings === null) {
      if (this.phase === 'awaiting_create') this.reject(new GatewayError('bad_request', 'input_transcript before session.create'));
      return;
    }
    const parsed = ttsInputTranscriptSchema.safeParse(raw);
    if (!parsed.success) {
      this.reject(new GatewayError('bad_request', `invalid input_transcript: ${describeZodError(parsed.error)}`));
      return;
    }
    const msg = parsed.data;
    let gen = this.gen;
    // Checked before merging: a refused chunk must not change the session's options.
    if (gen !== null && gen.ended) {
      this.reject(new GatewayError('bad_request', 'input_transcript after session.flush: wait for done before the next generation'));
      return;
    }
    let next: Settings;
    let opts: TtsOptions;
    try {
      next = this.merged(msg);
      opts = this.optionsFor(next);
    } catch (err) {
      this.reject(asGatewayError(err));
      return;
    }
    this.settings = next;
    if (gen === null) {
      // Whitespace alone does not start a generation (a flush then answers done at once).
      // Draining: the generation in flight may finish, no new one starts.
      if (msg.transcript.trim() === '' || this.endAfterGeneration) return;
      gen = this.startGeneration(next.route, opts);
    }
    const chars = countChars(msg.transcript);
    gen.charsIn += chars;
    if (gen.charsIn > this.deps.cfg.file.tts.maxGenerationChars) {
      this.failGeneration(new GatewayError('bad_request', `generation exceeds ${this.deps.cfg.file.tts.maxGenerationChars} characters`), 'bad_request');
      return;
    }
    this.log.debug({ 'pii.text': msg.transcript }, 'tts text');
    if (msg.transcript.length > 0) gen.link.text(msg.transcript);
  }

  private onFlush(): void {
    if (this.phase !== 'ready') {
      if (this.phase === 'awaiting_create') this.reject(new GatewayError('bad_request', 'session.flush before session.create'));
      return;
    }
    const gen = this.gen;
    if (gen === null) {
      // A generation without text still gets its done.
      this.send(ttsSimple('done', this.id));
      return;
    }
    if (gen.ended) return;
    gen.ended = true;
    gen.lastUpstreamAt = Date.now();
    gen.link.end();
  }

  private onCloseRequest(): void {
    if (this.phase === 'closed') return;
    if (this.gen !== null) this.cancelGeneration();
    this.send(ttsSimple('session.closed', this.id));
    this.finish('ok', 1000);
  }

  private onClientGone(): void {
    if (this.phase === 'closed') return;
    if (this.gen !== null) this.cancelGeneration();
    this.finish(this.lastError ? 'error' : 'ok');
  }

  // ---- generations ---------------------------------------------------------------------

  private startGeneration(route: TtsRoute, opts: TtsOptions): Generation {
    const link = this.acquireLink(route, opts);
    const now = Date.now();
    const gen: Generation = {
      id: `${this.id}_g${++this.genCount}_${randomBytes(3).toString('hex')}`,
      route,
      opts,
      link,
      resampler: new PcmResampler(opts.sampleRate, this.sampleRate),
      charsIn: 0,
      charsSent: 0,
      bytesOut: 0,
      startedAt: performance.now(),
      firstAudioAt: 0,
      ended: false,
      lastUpstreamAt: now,
      wantAlignment: route.adapter.capabilities.alignment !== null && opts.extra[route.adapter.capabilities.alignment.flag] === true,
    };
    this.gen = gen;
    link.start(gen.id, opts, this.sinkFor(gen));
    return gen;
  }

  /** The session's warm link when it fits, else a pooled one, else a new connection. */
  private acquireLink(route: TtsRoute, opts: TtsOptions): TtsLink {
    const key = linkKey(route.adapter, route.endpoint, opts);
    const cur = this.link;
    if (cur !== null && cur.usable && cur.idle && cur.key === key) return cur;
    if (cur !== null) this.release(cur);
    const link = this.deps.pool.take(key) ?? this.connect(route, opts);
    this.link = link;
    return link;
  }

  private connect(route: TtsRoute, opts: TtsOptions): TtsLink {
    const provider = route.adapter.provider;
    return createLink(route.adapter, opts, {
      endpoint: route.endpoint,
      log: this.log,
      onConnected: (s) => this.deps.metrics.upstreamConnectSeconds.observe({ provider }, s),
    });
  }

  /** Open (or take from the pool) the link the next generation will use. */
  private warm(): void {
    const s = this.settings;
    if (s === null || this.phase !== 'ready') return;
    let opts: TtsOptions;
    try {
      opts = this.optionsFor(s);
    } catch {
      return;
    }
    const key = linkKey(s.route.adapter, s.route.endpoint, opts);
    if (this.link !== null && this.link.usable && this.link.key === key) return;
    if (this.link !== null) this.release(this.link);
    this.link = this.deps.pool.take(key) ?? this.connect(s.route, opts);
  }

  private release(link: TtsLink): void {
    if (this.link === link) this.link = null;
    if (link.usable && link.idle) {
      if (!this.deps.pool.put(link)) link.close();
    } else {
      link.drop();
    }
  }

  private sinkFor(gen: Generation): TtsGenSink {
    const labels = { provider: gen.route.adapter.provider, model: gen.route.model };
    const bps = bytesPerSecond(this.sampleRate);
    return {
      onAudio: (pcm) => {
        if (this.gen !== gen) return;
        gen.lastUpstreamAt = Date.now();
        const out = gen.resampler.push(pcm);
        if (out.length === 0) return;
        if (gen.firstAudioAt === 0) {
          gen.firstAudioAt = performance.now();
          this.deps.metrics.ttsFirstAudioSeconds.observe(labels, (gen.firstAudioAt - gen.startedAt) / 1000);
        }
        gen.bytesOut += out.length;
        this.send(this.audioPrefix + out.toString('base64') + AUDIO_SUFFIX);
      },
      onAlignment: (a: TtsAlignment) => {
        if (this.gen !== gen) return;
        gen.lastUpstreamAt = Date.now();
        if (gen.wantAlignment) this.send(outputAlignment(this.id, a));
      },
      onSent: (chars) => {
        gen.charsSent += chars;
      },
      onDone: () => {
        if (this.gen !== gen) return;
        const tail = gen.resampler.flush();
        if (tail.length > 0) {
          gen.bytesOut += tail.length;
          this.send(this.audioPrefix + tail.toString('base64') + AUDIO_SUFFIX);
        }
        this.send(ttsSimple('done', this.id));
        this.closeGeneration(gen, 'ok', bps);
        if (this.endAfterGeneration) {
          this.finish('ok', this.endCloseCode);
          return;
        }
        // A link that served its only generation is replaced now, before the next one.
        this.warm();
      },
      onError: (err) => {
        if (this.gen !== gen) return;
        this.log.warn({ model: gen.route.label, code: err.status, err: err.message }, 'tts generation failed');
        this.lastError = err;
        this.send(wsErrorEvent(err, this.id));
        if (this.link === gen.link) this.link = null;
        gen.link.drop();
        this.closeGeneration(gen, outcomeOf(err), bps);
        if (this.endAfterGeneration) this.finish('error', this.endCloseCode);
      },
    };
  }

  /** Meter and forget a finished generation. */
  private closeGeneration(gen: Generation, outcome: string, bps = bytesPerSecond(this.sampleRate)): void {
    if (this.gen !== gen) return;
    this.gen = null;
    const labels = { provider: gen.route.adapter.provider, model: gen.route.model };
    const m = this.deps.metrics;
    if (gen.charsSent > 0) m.ttsCharacters.inc({ ...labels, api_key: this.ctx.apiKey }, gen.charsSent);
    if (gen.bytesOut > 0) m.ttsAudioSeconds.inc({ ...labels, api_key: this.ctx.apiKey }, gen.bytesOut / bps);
    m.requests.inc({ modality: 'tts', ...labels, outcome });
    this.totalChars += gen.charsSent;
    this.totalAudioBytes += gen.bytesOut;
  }

  private failGeneration(err: GatewayError, outcome: string): void {
    const gen = this.gen;
    if (gen === null) return;
    this.lastError = err;
    this.send(wsErrorEvent(err, this.id));
    if (this.link === gen.link) this.link = null;
    gen.link.drop();
    this.closeGeneration(gen, outcome);
    if (this.endAfterGeneration) this.finish('error', this.endCloseCode);
  }

  /** The client went away or asked to stop mid-generation: stop the provider at once. */
  private cancelGeneration(): void {
    const gen = this.gen;
    if (gen === null) return;
    if (this.link === gen.link) this.link = null;
    gen.link.drop();
    this.closeGeneration(gen, 'cancelled');
  }

  // ---- housekeeping --------------------------------------------------------------------

  tick(now: number): void {
    if (this.phase === 'closed') return;
    const cfg = this.deps.cfg.file.tts;
    const gen = this.gen;
    if (gen !== null) {
      // Before session.flush a silent provider may just have nothing left to say (the client's
      // LLM is slow); from the flush on it owes the rest of the audio and the done.
      if (gen.ended && now - gen.lastUpstreamAt > cfg.providerSilenceTimeoutS * 1000) {
        this.failGeneration(
          new GatewayError('provider_timeout', `${gen.route.label}: provider sent nothing for ${cfg.providerSilenceTimeoutS} s`),
          'provider_timeout',
        );
      } else if (now - this.lastServerSendAt >= cfg.heartbeatS * 1000) {
        this.send(ttsHeartbeat(this.id));
      }
    } else if (now - this.lastClientAt > cfg.idleTimeoutS * 1000) {
      this.log.info({ idle_s: cfg.idleTimeoutS }, 'tts session idle: closing');
      this.send(ttsSimple('session.closed', this.id));
      this.finish('ok', 1000);
      return;
    }
    this.link?.tick(now);
  }

  /** Shutdown: let a generation in flight finish, then close with `code`. */
  beginGracefulEnd(code: number): void {
    if (this.phase === 'closed') return;
    if (this.gen === null) {
      this.finish('ok', code);
      return;
    }
    this.endAfterGeneration = true;
    this.endCloseCode = code;
  }

  private finish(outcome: string, closeCode?: number): void {
    if (this.phase === 'closed') return;
    if (this.gen !== null) this.cancelGeneration();
    this.phase = 'closed';
    if (this.link !== null) this.release(this.link);
    if (closeCode !== undefined) this.client.close(closeCode);
    else this.client.terminate();
    const m = this.deps.metrics;
    m.sessionsActive.dec({ modality: 'tts' });
    const s = this.settings;
    if (s !== null) {
      this.deps.usage.record({
        modality: 'tts',
        sessionId: this.id,
        apiKey: this.ctx.apiKey,
        provider: s.route.adapter.provider,
        model: s.route.model,
        startedAt: this.startedAt,
        endedAt: new Date(),
        audioSeconds: this.totalAudioBytes / bytesPerSecond(this.sampleRate),
        characters: this.totalChars,
        generations: this.genCount,
        outcome,
        ...(this.lastError ? { errorCode: this.lastError.status } : {}),
        meta: this.ctx.meta,
      });
    }
    this.deps.onEnd(this);
  }
}

function asGatewayError(err: unknown): GatewayError {
  return err instanceof GatewayError ? err : new GatewayError('internal', 'internal error', undefined, { cause: err });
}

function outcomeOf(err: GatewayError): string {
  return err.code;
}
