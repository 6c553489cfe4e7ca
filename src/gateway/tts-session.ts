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
 * - Failover (docs/failover.md "TTS"): a generation runs on the first candidate of the session's
 *   plan (configured route, then the client's `fallback.models`). When its upstream fails
 *   (connect error, error event, close, no audio `firstAudioS` after the flush, dead air), the
 *   next candidate takes over: with the whole text before any audio was sent, else from the first
 *   text not yet spoken (tts-resume.ts). Every candidate failed -> one error listing each cause.
 */
import { randomBytes } from 'node:crypto';
import type { GatewayConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { CostMeter } from '../metering/cost.ts';
import type { GatewayMetrics } from '../metering/metrics.ts';
import type { RequestMeta, UsageRecord, UsageSink } from '../metering/usage.ts';
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
import type { TtsAlignment, TtsOptions } from '../providers/types.ts';
import { healthOf, type ProviderHealth } from './health.ts';
import { PcmResampler } from './resampler.ts';
import {
  allCandidatesFailed,
  parseTtsModel,
  ttsPlan,
  type AttemptFailure,
  type TtsCandidate,
  type TtsPlan,
  type TtsPlanInput,
  type TtsRoute,
} from './routing.ts';
import { ClientSink } from './send.ts';
import { countChars, createLink, linkKey, type TtsFailure, type TtsGenSink, type TtsLink } from './tts-link.ts';
import { lastSentenceStart, resumePoint, type AlignedWord } from './tts-resume.ts';
import type { TtsLinkPool } from './tts-pool.ts';
import type { WsConnection } from './transport.ts';

export interface TtsSessionDeps {
  /** Prices the characters of each generation when it ends (docs/pricing.md). */
  cost: CostMeter;
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
  /** What the client asked for (re-planned when a chunk's generation_config/extra change it). */
  input: TtsPlanInput;
  /** Ordered candidates (routing.ts `ttsPlan`). */
  plan: TtsPlan;
  /** The route of the first candidate: the session's model. */
  route: TtsRoute;
}

/** One candidate working on a generation: the first one, or one that took over after a failure. */
interface Attempt {
  cand: TtsCandidate;
  /** Options sent to the provider (the candidate's, plus its alignment flag when failover may need it). */
  opts: TtsOptions;
  link: TtsLink;
  resampler: PcmResampler;
  /** Forward its alignment to the client (the client set the provider's flag). */
  forwardAlignment: boolean;
  /** Where its text starts in the generation's text. */
  from: number;
  /** Text units (from `from`) the link reported fully voiced. */
  voiced: number;
  /** Client-rate bytes of its audio sent to the client. */
  bytesOut: number;
  /** Seconds of the generation's audio sent before it started (its alignment is shifted by this). */
  baseSeconds: number;
  /** Characters written to its provider (billed by that provider). */
  charsSent: number;
  words: AlignedWord[];
  marks: { pos: number; seconds: number }[];
  startedAt: number;
  firstAudioAt: number;
}

interface Generation {
  id: string;
  plan: TtsPlan;
  /** Index in plan.candidates of the next candidate to try. */
  next: number;
  /** The attempt in progress (null only while switching). */
  attempt: Attempt | null;
  attempts: Attempt[];
  failures: AttemptFailure[];
  /** Candidates skipped because their provider's circuit is open. */
  skipped: string[];
  /** The client's text, in order, and where each of its chunks ends. */
  text: string;
  chunkEnds: number[];
  /** Client text received for this generation (bounded by maxGenerationChars). */
  charsIn: number;
  /** Characters written to providers, all attempts. */
  charsSent: number;
  /** Client-rate bytes sent to the client, all attempts. */
  bytesOut: number;
  startedAt: number;
  firstAudioAt: number;
  /** session.flush received, and when. */
  ended: boolean;
  endedAt: number;
  /** Last time the provider sent anything for this generation (or the generation or attempt started, or its flush). */
  lastUpstreamAt: number;
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
  private totalCostUsd = 0;
  private totalAudioBytes = 0;
  private lastError: GatewayError | null = null;
  /** Every `provider/model` that served or was tried in this session, in order (usage record). */
  private readonly chain: string[] = [];
  /** The route that completed the last generation (usage record). */
  private served: TtsRoute | null = null;
  /** Characters and seconds of completed attempts per candidate: the measured speech rate (tts-resume.ts). */
  private readonly rates = new Map<string, { chars: number; seconds: number }>();
  /** From session.create `connection`: attempt bound and connect timeout cap. */
  private maxAttempts = Infinity;
  private clientTimeoutMs: number | undefined;
  private readonly health: ProviderHealth;

  constructor(conn: WsConnection, ctx: TtsConnectionContext, deps: TtsSessionDeps) {
    this.deps = deps;
    this.ctx = ctx;
    this.log = deps.log.child({ session_id: this.id, api_key: ctx.apiKey, room_id: ctx.meta.roomId });
    this.audioPrefix = outputAudioPrefix(this.id);
    this.health = healthOf(deps.cfg);
    this.client = new ClientSink(conn, {
      maxBufferedBytes: MAX_CLIENT_BUFFER,
      onOverflow: () => this.finish('client_not_reading'),
      sessionId: this.id,
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
      this.sampleRate = rate;
      // Planned (and validated) now: bad options fail at create, not mid-conversation.
      settings = this.settingsFor({
        model: msg.model,
        voice: msg.voice || undefined,
        language: msg.language || undefined,
        extra: msg.extra,
        sampleRate: rate,
        fallback: msg.fallback?.models ?? null,
      });
    } catch (err) {
      this.reject(asGatewayError(err));
      return;
    }
    const conn = msg.connection;
    if (conn?.retries != null) this.maxAttempts = conn.retries + 1;
    if (conn?.timeout != null) this.clientTimeoutMs = Math.round(conn.timeout * 1000);
    this.settings = settings;
    this.phase = 'ready';
    this.send(ttsSessionCreated(this.id));
    this.log.info(
      { model: settings.route.label, candidates: settings.plan.candidates.map((c) => c.route.label), sample_rate: rate },
      'tts session created',
    );
    this.warm();
  }

  private settingsFor(input: TtsPlanInput): Settings {
    const plan = ttsPlan(input, this.deps.cfg);
    if (plan.skipped.length > 0) this.log.warn({ skipped: plan.skipped }, 'tts candidates left out');
    return { input, plan, route: (plan.candidates[0] as TtsCandidate).route };
  }

  /**
   * Options a candidate's provider gets: the candidate's, plus the provider's alignment flag when
   * another candidate could take over (word timings tell where to continue, tts-resume.ts).
   */
  private linkOptions(cand: TtsCandidate, plan: TtsPlan): TtsOptions {
    const al = cand.route.adapter.capabilities.alignment;
    if (al === null || plan.candidates.length < 2 || cand.opts.extra[al.flag] === true) return cand.opts;
    return { ...cand.opts, extra: { ...cand.opts.extra, [al.flag]: true } };
  }

  /** Apply generation_config/extra of a chunk to the session settings (re-planned and validated). */
  private merged(msg: TtsInputTranscript): Settings {
    const cur = this.settings as Settings;
    const input = cur.input;
    const gc = msg.generation_config;
    const changes = msg.extra ? Object.keys(msg.extra).length > 0 : false;
    if (!changes && !(gc?.model && gc.model !== input.model) && !(gc?.voice && gc.voice !== input.voice) && !(gc?.language && gc.language !== input.language)) {
      return cur;
    }
    let model = input.model;
    let voice = input.voice;
    if (gc?.model && gc.model !== input.model) {
      // Another model of the same provider keeps the voice; another provider starts from its own.
      const prev = parseTtsModel(input.model);
      voice = parseTtsModel(gc.model).provider === prev.provider ? voice || prev.voice : undefined;
      model = gc.model;
    }
    if (gc?.voice) voice = gc.voice;
    const extra = { ...input.extra };
    for (const [k, v] of Object.entries(msg.extra ?? {})) {
      if (v === null) delete extra[k];
      else extra[k] = v;
    }
    return this.settingsFor({ ...input, model, voice, language: gc?.language || input.language, extra });
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
    try {
      next = this.merged(msg);
    } catch (err) {
      this.reject(asGatewayError(err));
      return;
    }
    this.settings = next;
    if (gen === null) {
      // Whitespace alone does not start a generation (a flush then answers done at once).
      // Draining: the generation in flight may finish, no new one starts.
      if (msg.transcript.trim() === '' || this.endAfterGeneration) return;
      gen = this.startGeneration(next);
      if (gen === null) return;
    }
    const chars = countChars(msg.transcript);
    gen.charsIn += chars;
    if (gen.charsIn > this.deps.cfg.file.tts.maxGenerationChars) {
      this.failGeneration(new GatewayError('bad_request', `generation exceeds ${this.deps.cfg.file.tts.maxGenerationChars} characters`), 'bad_request');
      return;
    }
    this.log.debug({ 'pii.text': msg.transcript }, 'tts text');
    if (msg.transcript.length > 0) {
      gen.text += msg.transcript;
      gen.chunkEnds.push(gen.text.length);
      gen.attempt?.link.text(msg.transcript);
    }
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
    gen.endedAt = Date.now();
    gen.lastUpstreamAt = gen.endedAt;
    gen.attempt?.link.end();
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

  /** Start a generation on the first candidate that may be tried; null when none could start (error sent). */
  private startGeneration(s: Settings): Generation | null {
    const gen: Generation = {
      id: `${this.id}_g${++this.genCount}_${randomBytes(3).toString('hex')}`,
      plan: s.plan,
      next: 0,
      attempt: null,
      attempts: [],
      failures: [],
      skipped: [],
      text: '',
      chunkEnds: [],
      charsIn: 0,
      charsSent: 0,
      bytesOut: 0,
      startedAt: performance.now(),
      firstAudioAt: 0,
      ended: false,
      endedAt: 0,
      lastUpstreamAt: Date.now(),
    };
    this.gen = gen;
    if (!this.tryNext(gen, 0)) {
      this.failGeneration(allCandidatesFailed('TTS', gen.failures, gen.skipped), 'unavailable');
      return null;
    }
    return gen;
  }

  /** Another candidate may still be tried for this generation. */
  private canSwitch(gen: Generation): boolean {
    return gen.next < gen.plan.candidates.length && gen.attempts.length < this.maxAttempts;
  }

  /**
   * Start the next candidate on the generation's text from `from`. Candidates whose provider's
   * circuit is open are skipped (counted); when every remaining one is open, the first of them
   * is tried anyway (a breaker orders candidates, it never leaves a generation without a try).
   * False when no candidate is left.
   */
  private tryNext(gen: Generation, from: number): boolean {
    if (!this.canSwitch(gen)) return false;
    const cands = gen.plan.candidates;
    let pick = gen.next;
    while (pick < cands.length && !this.health.allow((cands[pick] as TtsCandidate).route.adapter.provider)) pick++;
    if (pick === cands.length) pick = gen.next;
    for (let i = gen.next; i < pick; i++) {
      const skipped = (cands[i] as TtsCandidate).route;
      gen.skipped.push(skipped.label);
      this.deps.metrics.candidatesSkipped.inc({ modality: 'tts', provider: skipped.adapter.provider, reason: 'circuit_open' });
    }
    gen.next = pick + 1;
    this.startAttempt(gen, cands[pick] as TtsCandidate, from);
    return true;
  }

  private startAttempt(gen: Generation, cand: TtsCandidate, from: number): void {
    const opts = this.linkOptions(cand, gen.plan);
    // The first attempt uses the session's warm link; a takeover takes a pooled one or connects.
    const link = gen.attempts.length === 0 ? this.acquireLink(cand.route, opts, gen.plan) : this.otherLink(cand.route, opts, gen.plan);
    const al = cand.route.adapter.capabilities.alignment;
    const now = Date.now();
    const attempt: Attempt = {
      cand,
      opts,
      link,
      resampler: new PcmResampler(opts.sampleRate, this.sampleRate),
      forwardAlignment: al !== null && cand.opts.extra[al.flag] === true,
      from,
      voiced: 0,
      bytesOut: 0,
      baseSeconds: gen.bytesOut / bytesPerSecond(this.sampleRate),
      charsSent: 0,
      words: [],
      marks: [],
      startedAt: now,
      firstAudioAt: 0,
    };
    gen.attempt = attempt;
    gen.attempts.push(attempt);
    gen.lastUpstreamAt = now;
    if (!this.chain.includes(cand.route.label)) this.chain.push(cand.route.label);
    // A takeover runs under its own id: the provider never sees two attempts as one stream.
    link.start(gen.attempts.length === 1 ? gen.id : `${gen.id}_a${gen.attempts.length}`, opts, this.sinkFor(gen, attempt));
    // The client's chunks from `from` on, chunk by chunk as the client sent them.
    let cur = from;
    for (const end of gen.chunkEnds) {
      if (end <= cur) continue;
      link.text(gen.text.slice(cur, end));
      cur = end;
    }
    if (gen.ended) link.end();
  }

  /** Connect timeout of an attempt: the provider's, shortened by the route's and the client's `connection.timeout`. */
  private endpointFor(route: TtsRoute, plan: TtsPlan): TtsRoute['endpoint'] {
    const ms = Math.min(route.endpoint.connectTimeoutMs, plan.connectTimeoutMs ?? Infinity, this.clientTimeoutMs ?? Infinity);
    return ms === route.endpoint.connectTimeoutMs ? route.endpoint : { ...route.endpoint, connectTimeoutMs: ms };
  }

  /** The session's warm link when it fits, else a pooled one, else a new connection. */
  private acquireLink(route: TtsRoute, opts: TtsOptions, plan: TtsPlan): TtsLink {
    const key = linkKey(route.adapter, route.endpoint, opts);
    const cur = this.link;
    if (cur !== null && cur.usable && cur.idle && cur.key === key) return cur;
    if (cur !== null) this.release(cur);
    const link = this.deps.pool.take(key) ?? this.connect(route, opts, plan);
    this.link = link;
    return link;
  }

  /** A link for a takeover: pooled or new; the session's warm link stays for the next generation. */
  private otherLink(route: TtsRoute, opts: TtsOptions, plan: TtsPlan): TtsLink {
    const cur = this.link;
    const key = linkKey(route.adapter, route.endpoint, opts);
    if (cur !== null && cur.usable && cur.idle && cur.key === key) {
      this.link = null;
      return cur;
    }
    return this.deps.pool.take(key) ?? this.connect(route, opts, plan);
  }

  private connect(route: TtsRoute, opts: TtsOptions, plan: TtsPlan): TtsLink {
    const provider = route.adapter.provider;
    return createLink(route.adapter, opts, {
      endpoint: this.endpointFor(route, plan),
      log: this.log,
      onConnected: (s) => this.deps.metrics.upstreamConnectSeconds.observe({ provider }, s),
    });
  }

  /** Open (or take from the pool) the link the next generation will use. */
  private warm(): void {
    const s = this.settings;
    if (s === null || this.phase !== 'ready') return;
    const first = s.plan.candidates[0] as TtsCandidate;
    // No warm socket to a provider whose circuit is open (its generation will skip it).
    if (this.health.state(first.route.adapter.provider) === 'open') return;
    const opts = this.linkOptions(first, s.plan);
    const key = linkKey(s.route.adapter, s.route.endpoint, opts);
    if (this.link !== null && this.link.usable && this.link.key === key) return;
    if (this.link !== null) this.release(this.link);
    this.link = this.deps.pool.take(key) ?? this.connect(s.route, opts, s.plan);
  }

  private release(link: TtsLink): void {
    if (this.link === link) this.link = null;
    if (link.usable && link.idle) {
      if (!this.deps.pool.put(link)) link.close();
    } else {
      link.drop();
    }
  }

  private sinkFor(gen: Generation, attempt: Attempt): TtsGenSink {
    const route = attempt.cand.route;
    const labels = { provider: route.adapter.provider, model: route.model };
    const bps = bytesPerSecond(this.sampleRate);
    const live = (): boolean => this.gen === gen && gen.attempt === attempt;
    return {
      onAudio: (pcm) => {
        if (!live()) return;
        gen.lastUpstreamAt = Date.now();
        const out = attempt.resampler.push(pcm);
        if (out.length === 0) return;
        if (attempt.firstAudioAt === 0) attempt.firstAudioAt = performance.now();
        if (gen.firstAudioAt === 0) {
          gen.firstAudioAt = attempt.firstAudioAt;
          this.deps.metrics.ttsFirstAudioSeconds.observe(labels, (gen.firstAudioAt - gen.startedAt) / 1000);
        }
        gen.bytesOut += out.length;
        attempt.bytesOut += out.length;
        this.send(this.audioPrefix + out.toString('base64') + AUDIO_SUFFIX);
      },
      onAlignment: (a: TtsAlignment) => {
        if (!live()) return;
        gen.lastUpstreamAt = Date.now();
        if (a.words && gen.plan.candidates.length > 1) for (const w of a.words) attempt.words.push(w);
        if (attempt.forwardAlignment) this.send(outputAlignment(this.id, shiftAlignment(a, attempt.baseSeconds)));
      },
      onSent: (chars) => {
        attempt.charsSent += chars;
        gen.charsSent += chars;
      },
      onVoiced: (units) => {
        if (!live()) return;
        attempt.voiced += units;
        attempt.marks.push({ pos: attempt.from + attempt.voiced, seconds: attempt.bytesOut / bps });
      },
      onDone: () => {
        if (!live()) return;
        const tail = attempt.resampler.flush();
        if (tail.length > 0) {
          gen.bytesOut += tail.length;
          attempt.bytesOut += tail.length;
          this.send(this.audioPrefix + tail.toString('base64') + AUDIO_SUFFIX);
        }
        this.health.success(labels.provider);
        this.learnRate(gen, attempt);
        this.completeGeneration(gen);
      },
      onError: (err, how) => {
        if (!live()) return;
        this.failover(gen, err, FAILURE_REASON[how]);
      },
    };
  }

  /** The generation's audio is complete: done, meter, get the next generation's link ready. */
  private completeGeneration(gen: Generation): void {
    const a = gen.attempt;
    this.send(ttsSimple('done', this.id));
    if (a !== null) this.served = a.cand.route;
    this.closeGeneration(gen, 'ok');
    // A takeover's link goes back to the pool (or is closed); the session's warm link stays.
    if (a !== null && a.link !== this.link) this.release(a.link);
    if (this.endAfterGeneration) {
      this.finish('ok', this.endCloseCode);
      return;
    }
    // A link that served its only generation is replaced now, before the next one.
    this.warm();
  }

  /** Remember how fast a candidate speaks (characters per second of audio) for later estimates. */
  private learnRate(gen: Generation, a: Attempt): void {
    const seconds = a.bytesOut / bytesPerSecond(this.sampleRate);
    if (seconds < 0.2 || gen.plan.candidates.length < 2) return;
    const key = `${a.cand.route.label}|${a.cand.opts.voice}`;
    const r = this.rates.get(key) ?? { chars: 0, seconds: 0 };
    r.chars += gen.text.length - a.from;
    r.seconds += seconds;
    this.rates.set(key, r);
  }

  /**
   * The attempt in progress failed: the next candidate takes over (before any audio with the
   * whole text, after it from the first text not yet spoken), else the generation fails with
   * every attempt's cause.
   */
  private failover(gen: Generation, err: GatewayError, reason: string): void {
    const a = gen.attempt;
    if (a === null || this.gen !== gen) return;
    const route = a.cand.route;
    const provider = route.adapter.provider;
    // A refusal of the request itself says nothing about the provider's health.
    if (!isRequestError(err)) this.health.failure(provider, err.status);
    this.deps.metrics.providerErrors.inc({ provider, code: String(err.status) });
    gen.failures.push({ label: route.label, error: err });
    gen.attempt = null;
    if (this.link === a.link) this.link = null;
    a.link.drop();
    const rate = this.rates.get(`${route.label}|${a.cand.opts.voice}`);
    const at = resumePoint({
      text: gen.text,
      from: a.from,
      sentSeconds: a.bytesOut / bytesPerSecond(this.sampleRate),
      words: a.words,
      marks: a.marks,
      chunkEnds: gen.chunkEnds,
      rate: rate && rate.seconds >= 1 ? rate.chars / rate.seconds : undefined,
    });
    let pos = at.pos;
    if (gen.ended && gen.text.slice(pos).trim() === '') {
      if (at.by !== 'estimate') {
        // Everything had been spoken (word timings or finished chunks say so): the generation is complete.
        this.log.warn({ from: route.label, reason, code: err.status, err: err.message }, 'tts upstream failed after the last audio: generation complete');
        this.completeGeneration(gen);
        return;
      }
      // Only an estimate says so: speak the last sentence again rather than risk losing it.
      pos = lastSentenceStart(gen.text, a.from, gen.chunkEnds);
    }
    const fields = { from: route.label, reason, code: err.status, err: err.message, sent_s: a.bytesOut / bytesPerSecond(this.sampleRate), resume_at: pos, resume_by: at.by };
    if (this.tryNext(gen, pos)) {
      const to = (gen.attempt as Attempt | null)?.cand.route;
      this.deps.metrics.fallbacks.inc({ modality: 'tts', from: provider, to: to?.adapter.provider ?? 'none', reason });
      this.log.warn({ ...fields, to: to?.label }, 'tts failover');
      return;
    }
    const final = allCandidatesFailed('TTS', gen.failures, gen.skipped);
    this.log.warn({ ...fields, attempts: gen.failures.length }, 'tts generation failed');
    this.failGeneration(final, outcomeOf(final));
  }

  /** Meter and forget a finished generation: every attempt under its own provider and model. */
  private closeGeneration(gen: Generation, outcome: string, bps = bytesPerSecond(this.sampleRate)): void {
    if (this.gen !== gen) return;
    this.gen = null;
    const m = this.deps.metrics;
    for (const a of gen.attempts) {
      const labels = { provider: a.cand.route.adapter.provider, model: a.cand.route.model };
      if (a.charsSent > 0) m.ttsCharacters.inc({ ...labels, api_key: this.ctx.apiKey }, a.charsSent);
      if (a.bytesOut > 0) m.ttsAudioSeconds.inc({ ...labels, api_key: this.ctx.apiKey }, a.bytesOut / bps);
      this.totalCostUsd += this.deps.cost.tts(labels.provider, labels.model, this.ctx.apiKey, a.charsSent);
    }
    const last = (gen.attempts.at(-1)?.cand ?? gen.plan.candidates[0]) as TtsCandidate;
    m.requests.inc({ modality: 'tts', provider: last.route.adapter.provider, model: last.route.model, outcome });
    this.totalChars += gen.charsSent;
    this.totalAudioBytes += gen.bytesOut;
  }

  private failGeneration(err: GatewayError, outcome: string): void {
    const gen = this.gen;
    if (gen === null) return;
    this.lastError = err;
    this.send(wsErrorEvent(err, this.id));
    const a = gen.attempt;
    if (a !== null) {
      if (this.link === a.link) this.link = null;
      a.link.drop();
    }
    this.closeGeneration(gen, outcome);
    if (this.endAfterGeneration) this.finish('error', this.endCloseCode);
  }

  /** The client went away or asked to stop mid-generation: stop the provider at once. */
  private cancelGeneration(): void {
    const gen = this.gen;
    if (gen === null) return;
    const a = gen.attempt;
    if (a !== null) {
      if (this.link === a.link) this.link = null;
      a.link.drop();
    }
    this.closeGeneration(gen, 'cancelled');
  }

  // ---- housekeeping --------------------------------------------------------------------

  tick(now: number): void {
    if (this.phase === 'closed') return;
    if (this.phase === 'awaiting_create') {
      // A socket that never sends session.create does not hold a slot forever.
      if (now - this.startedAt.getTime() > this.deps.cfg.file.server.upgradeTimeoutS * 1000) {
        this.send(wsErrorEvent(new GatewayError('timeout', 'no session.create received'), this.id));
        this.finish('timeout', 1008);
      }
      return;
    }
    this.checkpointUsage(now);
    const cfg = this.deps.cfg.file.tts;
    const gen = this.gen;
    if (gen !== null) {
      // Before session.flush a silent provider may just have nothing left to say (the client's
      // LLM is slow); from the flush on it owes the rest of the audio and the done. With another
      // candidate left, the plan's shorter first-audio and dead-air limits apply.
      const a = gen.attempt;
      const label = a?.cand.route.label ?? 'tts';
      const quiet = now - gen.lastUpstreamAt;
      const plan = gen.plan;
      const switchable = a !== null && gen.ended && this.canSwitch(gen);
      if (switchable && a.firstAudioAt === 0 && plan.firstAudioMs > 0 && now - Math.max(gen.endedAt, a.startedAt) > plan.firstAudioMs) {
        this.failover(gen, new GatewayError('provider_timeout', `${label}: no audio ${plan.firstAudioMs / 1000} s after the end of input`), 'no_result');
      } else if (switchable && a.firstAudioAt > 0 && plan.deadAirMs > 0 && quiet > plan.deadAirMs) {
        this.failover(gen, new GatewayError('provider_timeout', `${label}: provider sent nothing for ${plan.deadAirMs / 1000} s`), 'dead_air');
      } else if (gen.ended && quiet > cfg.providerSilenceTimeoutS * 1000) {
        this.failover(gen, new GatewayError('provider_timeout', `${label}: provider sent nothing for ${cfg.providerSilenceTimeoutS} s`), 'dead_air');
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
    // A takeover's link (after a failover) is not the session's warm link: it needs keep-alives too.
    const running = this.gen?.attempt?.link;
    if (running !== undefined && running !== this.link) running.tick(now);
  }

  private lastCheckpointAt = Date.now();

  /** Every `ledger.checkpointS`: the quantities so far, incl. a generation in flight (docs/metering.md). */
  private checkpointUsage(now: number): void {
    const usage = this.deps.usage;
    if (!usage.checkpoint || this.settings === null || now - this.lastCheckpointAt < this.deps.cfg.file.ledger.checkpointS * 1000) return;
    this.lastCheckpointAt = now;
    usage.checkpoint(this.usageRecord(this.settings, new Date(now), 'open', this.gen));
  }

  /**
   * The session's usage (checkpoints and the final record share it); a generation in flight adds
   * its characters and audio so far (its cost is known when it ends).
   */
  private usageRecord(s: Settings, endedAt: Date, outcome: string, inFlight: Generation | null): UsageRecord {
    return {
      modality: 'tts',
      sessionId: this.id,
      apiKey: this.ctx.apiKey,
      // The model that served last (the session's model unless a fallback took over).
      provider: (this.served ?? s.route).adapter.provider,
      model: (this.served ?? s.route).model,
      ...(this.chain.length > 1 ? { fallbackChain: [...this.chain] } : {}),
      startedAt: this.startedAt,
      endedAt,
      audioSeconds: (this.totalAudioBytes + (inFlight?.bytesOut ?? 0)) / bytesPerSecond(this.sampleRate),
      characters: this.totalChars + (inFlight?.charsSent ?? 0),
      costUsd: this.totalCostUsd,
      generations: this.genCount,
      outcome,
      ...(this.lastError && outcome !== 'open' ? { errorCode: this.lastError.status } : {}),
      meta: this.ctx.meta,
    };
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
    const m = this.deps.metrics;
    m.sessionsActive.dec({ modality: 'tts' });
    const s = this.settings;
    // The usage record is queued before the client sees its socket close (durability).
    if (s !== null) this.deps.usage.record(this.usageRecord(s, new Date(), outcome, null));
    if (closeCode !== undefined) this.client.close(closeCode);
    else this.client.terminate();
    this.deps.onEnd(this);
  }
}

function asGatewayError(err: unknown): GatewayError {
  return err instanceof GatewayError ? err : new GatewayError('internal', 'internal error', undefined, { cause: err });
}

function outcomeOf(err: GatewayError): string {
  return err.code;
}

/** Errors caused by the request itself (400, 404, 413): not counted against the provider's health. */
function isRequestError(err: GatewayError): boolean {
  return err.code === 'bad_request' || err.code === 'not_found' || err.code === 'payload_too_large';
}

/** Metric reason of a link failure (`gateway_fallbacks_total`). */
const FAILURE_REASON: Record<TtsFailure, string> = { connect: 'connect_failed', error: 'error', close: 'closed' };

/** Alignment of a takeover on the generation's timeline (after the audio sent before it). */
function shiftAlignment(a: TtsAlignment, by: number): TtsAlignment {
  if (by === 0) return a;
  const out: TtsAlignment = {};
  if (a.words) out.words = a.words.map((w) => ({ word: w.word, start: w.start + by, end: w.end + by }));
  if (a.chars) out.chars = a.chars.map((c) => ({ char: c.char, start: c.start + by, end: c.end + by }));
  return out;
}
