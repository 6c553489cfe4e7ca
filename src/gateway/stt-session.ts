/**
 * One client STT socket (shared/protocol.md section 2): session.create -> audio in, transcripts
 * out; session.update / session.finalize / session.close; inactivity and shutdown.
 *
 * Timeline: every transcript time is on the client's audio timeline (seconds of audio received
 * on this socket, starting at 0). Each upstream connection ("link") records the client position
 * of the first byte it received, and its times are shifted by that offset; so reconnects and
 * failover keep the client's timeline continuous.
 *
 * Failover (docs/failover.md): the session has ordered candidates (routing.ts `sttPlan`). When the
 * current link fails (connect error, unexpected close, error event, dead air, no result,
 * backpressure), the next candidate gets the audio since the last final again (the ring keeps
 * it), its results that end before that final are dropped, and the client sees none of it.
 * Billed audio is counted once (`billedPos`); the replay is counted apart as provider cost.
 *
 * Hot path (input_audio): no await, no zod, no metrics lookups, no logging per frame.
 */
import { randomBytes } from 'node:crypto';
import type { GatewayConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { GatewayMetrics } from '../metering/metrics.ts';
import { SttMeter } from '../metering/stt-meter.ts';
import type { CostMeter } from '../metering/cost.ts';
import type { RequestMeta, UsageRecord, UsageSink } from '../metering/usage.ts';
import { bytesPerSecond, decodeBase64Strict, parseSampleRate } from '../protocol/audio.ts';
import { GatewayError, wsErrorEvent, type ErrorCode } from '../protocol/errors.ts';
import {
  describeZodError,
  sessionCreatedMessage,
  simpleMessage,
  sttSessionCreateSchema,
  sttSessionUpdateSchema,
  transcriptMessage,
  type SttSessionCreate,
  type SttTranscriptOut,
  type TranscriptKind,
} from '../protocol/stt.ts';
import type { SttCodec, SttEvent, SttOptions, SttSegment } from '../providers/types.ts';
import { connectUpstream, defaultCloseError, type UpstreamSocket } from '../providers/upstream/ws-upstream.ts';
import { AudioRing } from './audio-ring.ts';
import { healthOf, type ProviderHealth } from './health.ts';
import { PcmResampler } from './resampler.ts';
import { allCandidatesFailed, parseModelString, sttPlan, type SttCandidate, type SttPlan, type SttRoute } from './routing.ts';
import { ClientSink } from './send.ts';
import type { WsConnection } from './transport.ts';

export interface SttSessionDeps {
  /** Prices the metered audio at each meter flush (docs/pricing.md). */
  cost: CostMeter;
  cfg: GatewayConfig;
  metrics: GatewayMetrics;
  usage: UsageSink;
  log: Logger;
  onEnd(session: SttSession): void;
}

export interface ConnectionContext {
  apiKey: string;
  meta: RequestMeta;
}

type Phase = 'awaiting_create' | 'active' | 'ending' | 'closed';

interface Link {
  route: SttRoute;
  opts: SttOptions;
  codec: SttCodec;
  /** Client rate -> the provider's rate, when they differ. */
  resampler: PcmResampler | null;
  socket: UpstreamSocket;
  open: boolean;
  /** Client-timeline seconds of the first audio byte this link received. */
  offsetS: number;
  /** We asked this link to end (reconnect or session end): its close is expected. */
  retiring: boolean;
  finalizeOnOpen: boolean;
  connectStartedAt: number;
  lastKeepAliveAt: number;
  retireTimer: NodeJS.Timeout | null;
  /** Index of its candidate in the session's plan. */
  index: number;
  /** Client position its audio should start at (the replay start after a failover). */
  fromPos: number;
  /** Failed and abandoned: nothing from it reaches the client any more. */
  dead: boolean;
  /** It was sent audio an earlier link had already received: its results before the last final are dropped. */
  replay: boolean;
  /** It delivered a transcript event (health success; the failover episode is over). */
  gotResult: boolean;
  /** Wall ms of the first speech it was sent (0: none yet). */
  firstSpeechAt: number;
  /** Wall ms since when speech went in without any message back (0: answered). */
  quietSince: number;
  /** Audio bytes sent to it since `quietSince`. */
  quietBytes: number;
}

interface Attempt {
  index: number;
  label: string;
  error: GatewayError;
}

/** Why a link was abandoned (the `reason` label of gateway_fallbacks_total). */
type FailReason = 'connect_failed' | 'closed' | 'error' | 'dead_air' | 'no_result' | 'backpressure';

interface ClientRequest {
  model: string | null | undefined;
  language: string | null | undefined;
  extra: Record<string, unknown>;
  fallback: Array<{ model: string; extra?: Record<string, unknown> | null }>;
}

/** Error codes that are the client's request, not the provider's health. */
const CLIENT_FAULTS: ReadonlySet<ErrorCode> = new Set(['bad_request', 'not_found', 'payload_too_large']);
/** A result of a replaying link that ends this close to the last final is a repeat of it. */
const REPLAY_TOLERANCE_S = 0.05;

const AUDIO_PREFIXES = [Buffer.from('{"type":"input_audio","audio":"'), Buffer.from('{"type": "input_audio", "audio": "')];
const AUDIO_SUFFIX_0 = 0x22; // "
const AUDIO_SUFFIX_1 = 0x7d; // }

/** Extract the base64 payload of a canonical input_audio message without JSON.parse. */
function fastAudioPayload(data: Buffer): string | undefined {
  const n = data.length;
  if (n < 34 || data[n - 1] !== AUDIO_SUFFIX_1 || data[n - 2] !== AUDIO_SUFFIX_0) return undefined;
  for (const p of AUDIO_PREFIXES) {
    if (data[p.length - 1] === 0x22 && data.compare(p, 0, p.length, 0, p.length) === 0) {
      return data.toString('latin1', p.length, n - 2);
    }
  }
  return undefined;
}

/** Upstream send buffer beyond which the provider is considered unable to keep up. */
const UPSTREAM_MAX_BUFFERED = 8 * 1024 * 1024;
const RETIRE_GRACE_MS = 5000;
const END_GRACE_MS = 3000;

export class SttSession {
  readonly id = `stt_${randomBytes(9).toString('base64url')}`;
  private phase: Phase = 'awaiting_create';
  private readonly deps: SttSessionDeps;
  private readonly ctx: ConnectionContext;
  private readonly client: ClientSink;
  private readonly log: Logger;
  private readonly startedAt = new Date();

  private sampleRate = 16000;
  private bps = 32000;
  /** Current target options (what the next upstream connection uses): the active candidate's. */
  private route: SttRoute | null = null;
  private opts: SttOptions | null = null;
  private plan: SttPlan | null = null;
  /** Index of the active candidate in `plan`. */
  private active = 0;
  /** What the client asked (session.create, then session.update patches): the plan is rebuilt from it. */
  private request: ClientRequest | null = null;
  /** Attempts per failure episode (the client's connection.retries + 1). */
  private maxAttempts = Number.POSITIVE_INFINITY;
  private clientTimeoutS: number | undefined;
  /** Failed attempts since the last result: the next candidate is one not among them. */
  private episode: Attempt[] = [];
  /** Every provider/model that served this session, in order (usage `fallbackChain`). */
  private readonly chain: string[] = [];
  /** Keep forwarded audio since the last final for replay (there is a candidate to fail over to). */
  private keepHistory = false;
  private replayBytes = 0;
  private deadAirBytes = 0;
  /** Audio sent again to fallback links (provider cost). */
  private replayedBytes = 0;
  /** Client timeline: end of the last final sent (seconds) and its byte position. */
  private lastFinalEndS = 0;
  private lastFinalPos = 0;
  /** Client audio before this position has been billed (forwarded once). */
  private billedPos = 0;
  private readonly health: ProviderHealth;
  private link: Link | null = null;
  private readonly retiring = new Set<Link>();
  private ring: AudioRing | null = null;
  private meter: SttMeter | null = null;
  /** Absolute client audio bytes received (the timeline). */
  private pos = 0;

  private lastAudioAt = Date.now();
  private firstAudioAt = 0;
  private firstResultSeen = false;
  private inSpeech = false;
  private reconnectPending = false;
  private awaitingFinalize = false;
  private finalizeAckTimer: NodeJS.Timeout | null = null;
  private finalizeCloseTimer: NodeJS.Timeout | null = null;
  private endTimer: NodeJS.Timeout | null = null;
  private endCloseCode = 1000;

  constructor(conn: WsConnection, ctx: ConnectionContext, deps: SttSessionDeps) {
    this.deps = deps;
    this.ctx = ctx;
    this.health = healthOf(deps.cfg);
    this.log = deps.log.child({ session_id: this.id, api_key: ctx.apiKey, room_id: ctx.meta.roomId });
    this.client = new ClientSink(conn, {
      maxBufferedBytes: 4 * 1024 * 1024,
      onOverflow: () => this.end('client_not_reading'),
      sessionId: this.id,
    });
    conn.onMessage((data, isBinary) => this.onClientMessage(data, isBinary));
    conn.onClose(() => this.onClientGone());
    deps.metrics.sessionsActive.inc({ modality: 'stt' });
  }

  get isClosed(): boolean {
    return this.phase === 'closed';
  }

  // ---- client input --------------------------------------------------------------------

  private onClientMessage(data: Buffer, isBinary: boolean): void {
    if (this.phase === 'closed') return;
    const max = this.deps.cfg.file.stt.maxMessageBytes;
    if (data.length > max) {
      this.reject(new GatewayError('bad_request', `message of ${data.length} bytes exceeds the ${max}-byte limit`));
      return;
    }
    if (isBinary) {
      this.onAudio(data);
      return;
    }
    const b64 = fastAudioPayload(data);
    if (b64 !== undefined) {
      const pcm = decodeBase64Strict(b64);
      if (pcm) {
        this.onAudio(pcm);
        return;
      }
      // Fall through: a JSON encoder may have escaped characters; let JSON.parse decide.
    }
    this.onControl(data);
  }

  private onControl(data: Buffer): void {
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
      case 'input_audio': {
        const audio = (msg as { audio?: unknown }).audio;
        const pcm = typeof audio === 'string' ? decodeBase64Strict(audio) : null;
        if (!pcm) {
          this.reject(new GatewayError('bad_request', 'input_audio.audio must be a base64 string of PCM s16le'));
          return;
        }
        this.onAudio(pcm);
        return;
      }
      case 'session.create':
        this.onCreate(msg);
        return;
      case 'session.update':
        this.onUpdate(msg);
        return;
      case 'session.finalize':
        this.onFinalize();
        return;
      case 'session.close':
        this.onClose();
        return;
      default:
        this.reject(
          new GatewayError('bad_request', typeof type === 'string' ? `unknown message type "${type.slice(0, 40)}"` : 'message has no "type"'),
        );
    }
  }

  /** Answer bad input with an error event; the session stays usable. */
  private reject(err: GatewayError): void {
    this.client.send(wsErrorEvent(err, this.id));
  }

  private onAudio(pcm: Buffer): void {
    if (this.phase !== 'active') {
      if (this.phase === 'awaiting_create') this.reject(new GatewayError('bad_request', 'input_audio before session.create'));
      return; // ending: the session is being finalized; late audio is not forwarded or billed
    }
    const now = Date.now();
    this.lastAudioAt = now;
    if (this.firstAudioAt === 0) this.firstAudioAt = now;
    if (this.finalizeCloseTimer !== null) {
      clearTimeout(this.finalizeCloseTimer);
      this.finalizeCloseTimer = null;
    }
    const pos = this.pos;
    this.pos += pcm.length;
    const link = this.link;
    if (link !== null && link.open) {
      // Billed when forwarded (STYLE.md 5): audio dropped from the ring or never sent is not billed.
      (this.meter as SttMeter).bytes += pcm.length;
      this.billedPos = this.pos;
      forwardAudio(link, pcm);
      if (this.keepHistory) (this.ring as AudioRing).push(pcm, pos);
      if (link.socket.bufferedAmount > UPSTREAM_MAX_BUFFERED) {
        this.failover(link, new GatewayError('provider_error', `${link.route.label}: provider is not keeping up with the audio`), 'backpressure');
        return;
      }
      if (this.keepHistory) this.watch(link, pcm, now);
    } else {
      (this.ring as AudioRing).push(pcm, pos);
    }
  }

  private onCreate(raw: object): void {
    if (this.phase !== 'awaiting_create') {
      this.reject(new GatewayError('bad_request', 'session.create was already received on this socket'));
      return;
    }
    const parsed = sttSessionCreateSchema.safeParse(raw);
    if (!parsed.success) {
      this.fail(new GatewayError('bad_request', `invalid session.create: ${describeZodError(parsed.error)}`));
      return;
    }
    const msg = parsed.data;
    const settings: NonNullable<SttSessionCreate['settings']> = msg.settings ?? { extra: {} };
    const sampleRate = parseSampleRate(settings.sample_rate ?? '16000');
    if (sampleRate === null) {
      this.fail(new GatewayError('bad_request', 'settings.sample_rate must be an integer from 8000 to 48000'));
      return;
    }
    if (settings.encoding != null && settings.encoding !== 'pcm_s16le') {
      this.fail(new GatewayError('bad_request', `unsupported encoding "${settings.encoding.slice(0, 20)}"; only pcm_s16le`));
      return;
    }
    const request: ClientRequest = {
      model: msg.model,
      language: settings.language,
      extra: settings.extra ?? {},
      fallback: (msg.fallback?.models ?? []).map((f) => ({ model: f.model, extra: f.extra })),
    };
    let plan: SttPlan;
    try {
      plan = sttPlan({ ...request, sampleRate }, this.deps.cfg);
    } catch (err) {
      this.fail(asGatewayError(err));
      return;
    }
    this.sampleRate = sampleRate;
    this.bps = bytesPerSecond(sampleRate);
    this.request = request;
    this.clientTimeoutS = msg.connection?.timeout ?? undefined;
    const retries = msg.connection?.retries;
    if (retries != null) this.maxAttempts = retries + 1;
    this.replayBytes = Math.round(this.deps.cfg.file.failover.stt.replayS * this.bps);
    this.ring = new AudioRing(Math.round(this.deps.cfg.file.stt.bufferS * this.bps));
    this.setPlan(plan);
    const index = this.nextCandidate() ?? 0;
    const { route, opts } = plan.candidates[index] as SttCandidate;
    this.active = index;
    this.route = route;
    this.opts = opts;
    // Metric label (bounded); its price is the exact model's (a price key's model resolves to that key).
    this.meter = new SttMeter(this.deps.metrics.sttAudioSeconds, sampleRate, {
      provider: route.provider,
      model: route.metricModel,
      apiKey: this.ctx.apiKey,
    }, this.deps.cost);
    this.phase = 'active';
    this.lastAudioAt = Date.now();
    this.client.send(sessionCreatedMessage(this.id, { model: route.label }));
    this.log.info(
      { model: route.label, sample_rate: sampleRate, language: opts.language, candidates: plan.candidates.map((c) => c.route.label) },
      'stt session created',
    );
    this.openLink(index, 0);
  }

  private onUpdate(raw: object): void {
    if (this.phase !== 'active' || !this.route || !this.opts) {
      if (this.phase === 'awaiting_create') this.reject(new GatewayError('bad_request', 'session.update before session.create'));
      return;
    }
    const parsed = sttSessionUpdateSchema.safeParse(raw);
    if (!parsed.success) {
      this.reject(new GatewayError('bad_request', `invalid session.update: ${describeZodError(parsed.error)}`));
      return;
    }
    const s = parsed.data.settings;
    const req = this.request as ClientRequest;
    let language = req.language;
    if (s.model) language = parseModelString(s.model).language ?? language;
    if (s.language) language = s.language;
    const extra: Record<string, unknown> = { ...req.extra };
    for (const [k, v] of Object.entries(s.extra ?? {})) {
      if (v === null) delete extra[k];
      else extra[k] = v;
    }
    const nextReq: ClientRequest = { ...req, model: s.model ?? req.model, language, extra };
    let plan: SttPlan;
    try {
      plan = sttPlan({ ...nextReq, sampleRate: this.sampleRate }, this.deps.cfg);
    } catch (err) {
      this.reject(asGatewayError(err));
      return;
    }
    this.request = nextReq;
    // The same model keeps the candidate serving now (maybe a fallback); another model starts over.
    const currentLabel = this.route.label;
    const keep = s.model && s.model !== req.model ? -1 : plan.candidates.findIndex((c) => c.route.label === currentLabel);
    this.setPlan(plan);
    const index = keep >= 0 ? keep : (this.nextCandidate() ?? 0);
    const { route, opts: next } = plan.candidates[index] as SttCandidate;
    const sameRoute = route.adapter === this.route.adapter && route.model === this.route.model;
    this.active = index;
    if (this.link && sameRoute) this.link.index = index;
    this.route = route;
    this.opts = next;
    const link = this.link;
    if (link && sameRoute && JSON.stringify(link.opts) === JSON.stringify(next)) return;
    if (link && link.open && sameRoute) {
      const frames = link.codec.liveUpdate(next);
      if (frames !== null) {
        for (const f of frames) link.socket.send(f);
        link.opts = next;
        this.log.info('stt options updated live');
        return;
      }
    }
    // Reconnect upstream between utterances.
    this.reconnectPending = true;
    if (!link || !link.codec.midUtterance) this.reconnect();
  }

  private onFinalize(): void {
    if (this.phase !== 'active') {
      if (this.phase === 'awaiting_create') this.reject(new GatewayError('bad_request', 'session.finalize before session.create'));
      return;
    }
    const link = this.link;
    this.awaitingFinalize = true;
    if (link && link.codec.finalizeMessage !== null) {
      if (link.open) {
        flushHeldAudio(link, false);
        link.socket.send(link.codec.finalizeMessage);
      } else link.finalizeOnOpen = true;
      this.armFinalizeAck();
    } else {
      this.completeFinalize();
    }
    if (this.finalizeCloseTimer !== null) clearTimeout(this.finalizeCloseTimer);
    this.finalizeCloseTimer = setTimeout(() => {
      this.finalizeCloseTimer = null;
      this.beginGracefulEnd(1000);
    }, this.deps.cfg.file.stt.finalizeCloseS * 1000);
  }

  private armFinalizeAck(): void {
    if (this.finalizeAckTimer !== null) clearTimeout(this.finalizeAckTimer);
    this.finalizeAckTimer = setTimeout(() => {
      this.finalizeAckTimer = null;
      this.completeFinalize();
    }, this.deps.cfg.file.stt.finalizeAckTimeoutS * 1000);
  }

  /** Finalize what we have (provider ack or timeout): pending text -> final, then session.finalized. */
  private completeFinalize(): void {
    if (this.finalizeAckTimer !== null) {
      clearTimeout(this.finalizeAckTimer);
      this.finalizeAckTimer = null;
    }
    if (!this.awaitingFinalize) return;
    this.awaitingFinalize = false;
    if (this.link) this.dispatch(this.link, this.link.codec.flush());
    this.client.send(simpleMessage('session.finalized', this.id));
  }

  /** Client's session.close: tear down; nothing more is sent to the client. */
  private onClose(): void {
    if (this.phase === 'closed') return;
    this.end('ok');
  }

  private onClientGone(): void {
    if (this.phase === 'closed') return;
    this.end(this.phase === 'awaiting_create' ? 'abandoned' : 'ok');
  }

  // ---- upstream ------------------------------------------------------------------------

  /** The plan in force: what is kept for replay depends on whether there is somewhere to go. */
  private setPlan(plan: SttPlan): void {
    this.plan = plan;
    this.episode = [];
    this.keepHistory = plan.candidates.length > 1;
    const fc = this.deps.cfg.file;
    const ring = this.ring as AudioRing;
    ring.capacity = Math.round((fc.stt.bufferS + (this.keepHistory ? fc.failover.stt.replayS : 0)) * this.bps);
    if (!this.keepHistory && this.link?.open) ring.trimBefore(this.pos);
    this.deadAirBytes = Math.round((plan.deadAirMs / 1000) * this.bps);
    for (const s of plan.skipped) this.log.debug({ model: s.model, reason: s.reason }, 'stt candidate skipped');
  }

  /**
   * The first candidate in plan order not tried in this failure episode whose circuit allows it;
   * when every untried candidate's circuit is open, the first untried one anyway (a breaker
   * orders candidates, it never leaves a session without a try). null: none left, or the client's
   * `connection.retries` is used up.
   */
  private nextCandidate(): number | null {
    if (this.episode.length >= this.maxAttempts) return null;
    const plan = this.plan as SttPlan;
    const passed: number[] = [];
    const skip = (indexes: number[]): void => {
      for (const i of indexes) {
        const provider = (plan.candidates[i] as SttCandidate).route.provider;
        this.deps.metrics.candidatesSkipped.inc({ modality: 'stt', provider, reason: 'circuit_open' });
      }
    };
    for (const [i, c] of plan.candidates.entries()) {
      if (this.episode.some((a) => a.index === i)) continue;
      if (this.health.allow(c.route.provider)) {
        skip(passed);
        return i;
      }
      passed.push(i);
    }
    if (passed.length === 0) return null;
    skip(passed.slice(1));
    return passed[0] as number;
  }

  private openLink(index: number, fromPos: number): Link {
    const plan = this.plan as SttPlan;
    const { route, opts } = plan.candidates[index] as SttCandidate;
    const limitMs = plan.connectTimeoutMs ?? route.endpoint.connectTimeoutMs;
    const timeoutMs = this.clientTimeoutS ? Math.min(this.clientTimeoutS * 1000, limitMs) : limitMs;
    const now = Date.now();
    const link: Link = {
      route,
      opts,
      codec: route.adapter.createCodec(opts),
      resampler: opts.sampleRate !== this.sampleRate ? new PcmResampler(this.sampleRate, opts.sampleRate) : null,
      socket: null as unknown as UpstreamSocket,
      open: false,
      offsetS: fromPos / this.bps,
      retiring: false,
      finalizeOnOpen: false,
      connectStartedAt: now,
      lastKeepAliveAt: now,
      retireTimer: null,
      index,
      fromPos,
      dead: false,
      replay: false,
      gotResult: false,
      firstSpeechAt: 0,
      quietSince: 0,
      quietBytes: 0,
    };
    this.link = link;
    if (this.chain.at(-1) !== route.label) this.chain.push(route.label);
    link.socket = connectUpstream(route.adapter.request(opts, route.endpoint), { timeoutMs, providerLabel: route.label }, {
      onOpen: () => this.onLinkOpen(link),
      onMessage: (data, isBinary) => {
        if (this.phase === 'closed' || link.dead) return;
        link.quietSince = 0;
        let events: SttEvent[];
        try {
          events = link.codec.decode(data, isBinary);
        } catch (err) {
          // A decoder bug must not crash the process: the link is treated as failed.
          events = [{ type: 'error', error: new GatewayError('provider_error', `${route.label}: unreadable provider message`, undefined, { cause: err }) }];
        }
        this.dispatch(link, events);
      },
      onClose: (code, reason) => this.onLinkClosed(link, code, reason),
      onConnectError: (err) => {
        if (link.retiring || link.dead || this.phase === 'closed') return;
        this.log.warn({ provider: route.provider, code: err.status, err: err.message }, 'upstream connect failed');
        this.failover(link, err, 'connect_failed');
      },
    });
    return link;
  }

  private onLinkOpen(link: Link): void {
    this.deps.metrics.upstreamConnectSeconds.observe({ provider: link.route.provider }, (Date.now() - link.connectStartedAt) / 1000);
    if (link.retiring || link.dead || this.phase === 'closed') {
      link.socket.terminate();
      return;
    }
    link.open = true;
    const ring = this.ring as AudioRing;
    // The link's timeline starts at the first byte it actually receives.
    const start = ring.size > 0 ? Math.min(Math.max(link.fromPos, ring.startPos), this.pos) : this.pos;
    const wanted = this.keepHistory ? Math.max(link.fromPos, Math.min(this.lastFinalPos, start)) : link.fromPos;
    if (start > wanted) {
      const lost = (start - wanted) / this.bps;
      this.deps.metrics.sttAudioDroppedSeconds.inc({ provider: link.route.provider, model: link.route.metricModel }, lost);
      this.log.warn({ dropped_s: lost }, 'audio dropped while the upstream was connecting');
    }
    link.offsetS = start / this.bps;
    const meter = this.meter as SttMeter;
    for (const m of link.codec.openMessages ?? []) link.socket.send(m);
    // Audio an earlier link already received is replayed, not billed again (docs/decisions/0009).
    const now = Date.now();
    let at = start;
    let replayed = 0;
    for (const chunk of ring.chunksFrom(start)) {
      const end = at + chunk.length;
      const fresh = Math.max(0, end - Math.max(at, this.billedPos));
      meter.bytes += fresh;
      replayed += chunk.length - fresh;
      forwardAudio(link, chunk);
      if (this.keepHistory) noteSpeech(link, chunk, now);
      at = end;
    }
    if (this.billedPos < this.pos) this.billedPos = this.pos;
    if (!this.keepHistory) ring.trimBefore(this.pos);
    if (replayed > 0) {
      link.replay = true;
      this.replayedBytes += replayed;
      this.deps.metrics.sttReplayedAudioSeconds.inc(
        { provider: link.route.provider, model: link.route.metricModel, api_key: this.ctx.apiKey },
        replayed / this.bps,
      );
      this.log.info({ provider: link.route.provider, replayed_s: replayed / this.bps }, 'stt audio replayed to the next candidate');
    }
    if (link.finalizeOnOpen && link.codec.finalizeMessage !== null) {
      flushHeldAudio(link, false);
      link.socket.send(link.codec.finalizeMessage);
    }
    if (this.phase === 'ending') this.sendEndOfStream(link);
  }

  private onLinkClosed(link: Link, code: number, reason: string): void {
    link.open = false;
    if (link.retireTimer !== null) clearTimeout(link.retireTimer);
    if (this.phase === 'closed' || link.dead) return;
    if (link.retiring) {
      this.retiring.delete(link);
      this.dispatch(link, link.codec.flush());
      return;
    }
    if (this.phase === 'ending') {
      this.completeGracefulEnd();
      return;
    }
    const err = link.route.adapter.closeError?.(code, reason) ?? defaultCloseError(link.route.label, code, reason);
    this.log.warn({ provider: link.route.provider, close: code }, 'upstream closed unexpectedly');
    this.failover(link, err, 'closed');
  }

  /**
   * The current link failed: abandon it and move to the next candidate with the audio since the
   * last final (before the first result that is all the audio: plain fallback). With no
   * candidate left (or the session ending), one error that lists every attempt's cause.
   */
  private failover(link: Link, err: GatewayError, reason: FailReason): void {
    if (this.phase === 'closed' || link.dead || link !== this.link) return;
    link.dead = true;
    link.open = false;
    link.socket.terminate();
    const provider = link.route.provider;
    this.deps.metrics.providerErrors.inc({ provider, code: String(err.status) });
    if (!CLIENT_FAULTS.has(err.code)) this.health.failure(provider, err.status);
    this.episode.push({ index: link.index, label: link.route.label, error: err });
    const next = this.phase === 'active' ? this.nextCandidate() : null;
    if (next === null) {
      this.fail(allCandidatesFailed('STT', this.episode), 'provider_error');
      return;
    }
    const cand = (this.plan as SttPlan).candidates[next] as SttCandidate;
    this.deps.metrics.fallbacks.inc({ modality: 'stt', from: provider, to: cand.route.provider, reason });
    this.log.warn({ from: link.route.label, to: cand.route.label, reason, code: err.status, err: err.message }, 'stt failover');
    this.active = next;
    this.route = cand.route;
    this.opts = cand.opts;
    this.reconnectPending = false;
    (this.meter as SttMeter).rebind(cand.route.provider, cand.route.metricModel);
    const from = Math.max(this.lastFinalPos, this.pos - this.replayBytes, 0);
    if (from > this.lastFinalPos) {
      // Speech since the last final outlasted the replay buffer: its start is lost to the transcript.
      const lost = (from - this.lastFinalPos) / this.bps;
      this.deps.metrics.sttAudioDroppedSeconds.inc({ provider: cand.route.provider, model: cand.route.metricModel }, lost);
      this.log.warn({ dropped_s: lost }, 'audio since the last final exceeds the replay buffer');
    }
    const fresh = this.openLink(next, from);
    if (this.awaitingFinalize) fresh.finalizeOnOpen = true;
  }

  /** Every attempt of the episode failed: one error naming each cause (one attempt: its own error). */
  /** A link's first transcript event: the provider works (health), and the failure episode is over. */
  private onFirstResult(link: Link): void {
    link.gotResult = true;
    this.health.success(link.route.provider);
    if (link === this.link) this.episode = [];
  }

  /** A final went to the client: what precedes its end is never replayed. */
  private noteFinal(link: Link, seg: SttSegment): void {
    let endS = seg.end + link.offsetS;
    if (seg.end <= 0) {
      // No timing from the provider: everything sent so far counts as finalized.
      if (!seg.text) return;
      endS = this.pos / this.bps;
    }
    if (endS <= this.lastFinalEndS) return;
    this.lastFinalEndS = endS;
    const pos = Math.min(this.pos, Math.floor((endS * this.bps) / 2) * 2);
    if (pos > this.lastFinalPos) {
      this.lastFinalPos = pos;
      if (this.keepHistory) (this.ring as AudioRing).trimBefore(pos);
    }
  }

  /**
   * Dead air and first result, while audio goes in (a provider waiting for more audio is not
   * dead). Hot path: a few integer compares; the energy check runs only until speech is seen in
   * an unanswered stretch, so about once per provider message.
   */
  private watch(link: Link, pcm: Buffer, now: number): void {
    if (link.quietSince === 0) {
      noteSpeech(link, pcm, now);
      return;
    }
    link.quietBytes += pcm.length;
    const plan = this.plan as SttPlan;
    if (plan.deadAirMs > 0 && now - link.quietSince >= plan.deadAirMs && link.quietBytes >= this.deadAirBytes) {
      const s = plan.deadAirMs / 1000;
      this.failover(link, new GatewayError('provider_timeout', `${link.route.label}: no answer from the provider for ${s} s while speech was sent (dead air)`), 'dead_air');
      return;
    }
    if (plan.firstResultMs > 0 && !link.gotResult && now - link.firstSpeechAt >= plan.firstResultMs) {
      const s = plan.firstResultMs / 1000;
      this.failover(link, new GatewayError('provider_timeout', `${link.route.label}: no transcript from the provider within ${s} s of speech`), 'no_result');
    }
  }

  /** New upstream for changed options; the old one finishes its utterance and closes. */
  private reconnect(): void {
    if (!this.route || !this.opts || this.phase !== 'active') return;
    this.reconnectPending = false;
    const old = this.link;
    if (old) this.retire(old);
    (this.meter as SttMeter).rebind(this.route.provider, this.route.metricModel);
    this.log.info({ model: this.route.label }, 'stt upstream reconnect for new options');
    // A link that never opened hands its unsent audio on.
    this.openLink(this.active, old && !old.open && !old.dead ? old.fromPos : this.pos);
  }

  private retire(link: Link): void {
    link.retiring = true;
    this.retiring.add(link);
    if (link.open) flushHeldAudio(link, true);
    if (link.open && link.codec.closeMessage !== null) link.socket.send(link.codec.closeMessage);
    else link.socket.close(1000);
    link.retireTimer = setTimeout(() => {
      link.socket.terminate();
      this.retiring.delete(link);
    }, RETIRE_GRACE_MS);
  }

  // ---- events to the client ------------------------------------------------------------

  private dispatch(link: Link, events: SttEvent[]): void {
    for (const ev of events) {
      if (this.phase === 'closed' || link.dead) return;
      const current = link === this.link;
      if (!link.gotResult && (ev.type === 'interim' || ev.type === 'final' || ev.type === 'preflight')) this.onFirstResult(link);
      switch (ev.type) {
        case 'speech_started':
          if (current && !this.inSpeech) {
            this.inSpeech = true;
            this.client.send(simpleMessage('start_of_speech', this.id));
          }
          break;
        case 'interim':
          if (current) this.sendTranscript('interim_transcript', link, ev.segment);
          break;
        case 'preflight':
          if (current) this.sendTranscript('preflight_transcript', link, ev.segment);
          break;
        case 'final':
          this.sendTranscript('final_transcript', link, ev.segment);
          this.noteFinal(link, ev.segment);
          if (current) {
            this.inSpeech = false;
            this.meter?.flush();
            if (this.reconnectPending) this.reconnect();
          }
          break;
        case 'finalized':
          if (current) this.completeFinalize();
          break;
        case 'provider_usage':
          this.deps.metrics.sttProviderAudioSeconds.inc({ provider: link.route.provider, model: link.route.metricModel }, ev.audioSeconds);
          break;
        case 'error':
          if (current) this.failover(link, ev.error, 'error');
          break;
      }
    }
  }

  private sendTranscript(kind: TranscriptKind, link: Link, seg: SttSegment): void {
    if (!this.firstResultSeen && seg.text && this.firstAudioAt > 0) {
      this.firstResultSeen = true;
      this.deps.metrics.sttFirstResultSeconds.observe(
        { provider: link.route.provider, model: link.route.metricModel },
        (Date.now() - this.firstAudioAt) / 1000,
      );
    }
    const off = link.offsetS;
    // A replaying link re-transcribes from the last final: what ends before it was already final.
    if (link.replay && seg.end + off <= this.lastFinalEndS + REPLAY_TOLERANCE_S) return;
    const out: SttTranscriptOut = {
      transcript: seg.text,
      language: seg.language ?? link.opts.language ?? 'en',
      start: seg.start + off,
      duration: Math.max(0, seg.end - seg.start),
      confidence: seg.confidence,
      words: seg.words.map((w) => ({
        word: w.word,
        start: w.start + off,
        end: w.end + off,
        confidence: w.confidence,
        ...(w.speaker !== undefined ? { speaker_id: w.speaker } : {}),
      })),
      ...(seg.speaker !== undefined ? { speaker_id: seg.speaker } : {}),
      ...(seg.extra ? { extra: seg.extra } : {}),
    };
    this.client.send(transcriptMessage(kind, this.id, out));
    if (this.log.isLevelEnabled('debug')) this.log.debug({ kind, pii: { transcript: seg.text } }, 'transcript');
  }

  // ---- ending --------------------------------------------------------------------------

  /** Finish the stream: provider flushes its finals, then session.closed and close. */
  beginGracefulEnd(closeCode: number): void {
    if (this.phase === 'awaiting_create') {
      this.client.close(closeCode, 'server shutting down');
      this.end('ok');
      return;
    }
    if (this.phase !== 'active') return;
    this.phase = 'ending';
    this.endCloseCode = closeCode;
    this.clearTimers();
    const link = this.link;
    if (!link) {
      this.completeGracefulEnd();
      return;
    }
    // A link still connecting sends end-of-stream when it opens (onLinkOpen).
    if (link.open) this.sendEndOfStream(link);
    this.endTimer = setTimeout(() => this.completeGracefulEnd(), END_GRACE_MS + (link && !link.open ? link.route.endpoint.connectTimeoutMs : 0));
  }

  private sendEndOfStream(link: Link): void {
    flushHeldAudio(link, true);
    if (link.codec.closeMessage !== null) link.socket.send(link.codec.closeMessage);
    else this.completeGracefulEnd();
  }

  private completeGracefulEnd(): void {
    if (this.phase !== 'ending') return;
    if (this.link) this.dispatch(this.link, this.link.codec.flush());
    this.awaitingFinalize = false;
    this.client.send(simpleMessage('session.closed', this.id));
    this.client.close(this.endCloseCode, this.endCloseCode === 1001 ? 'server shutting down' : 'session closed');
    this.end('ok');
  }

  /** A fatal error: report it (with code), close the socket, release everything. */
  fail(err: GatewayError, outcome: string = outcomeOf(err.code)): void {
    if (this.phase === 'closed') return;
    this.client.send(wsErrorEvent(err, this.id));
    this.client.close(err.closeCode, err.message.slice(0, 100));
    this.end(outcome, err);
  }

  /** Housekeeping, called about once a second by the session registry. */
  tick(now: number): void {
    if (this.phase === 'awaiting_create') {
      if (now - this.lastAudioAt > this.deps.cfg.file.server.upgradeTimeoutS * 1000) {
        this.fail(new GatewayError('timeout', 'no session.create received'));
      }
      return;
    }
    if (this.phase !== 'active') return;
    const idle = now - this.lastAudioAt;
    const limitS = this.deps.cfg.file.stt.inactivityTimeoutS;
    if (idle > limitS * 1000) {
      this.fail(new GatewayError('inactivity', `no audio received for ${limitS} s`));
      return;
    }
    this.meter?.flush();
    this.checkpointUsage(now);
    const link = this.link;
    const ka = link?.codec.keepAlive;
    if (link && link.open && ka && idle >= ka.idleMs && now - link.lastKeepAliveAt >= ka.idleMs) {
      link.lastKeepAliveAt = now;
      link.socket.send(ka.message);
    }
  }

  private lastCheckpointAt = Date.now();

  /** Every `ledger.checkpointS`: the quantities so far, so a crash loses at most that window (docs/metering.md). */
  private checkpointUsage(now: number): void {
    const usage = this.deps.usage;
    if (!usage.checkpoint || now - this.lastCheckpointAt < this.deps.cfg.file.ledger.checkpointS * 1000) return;
    const rec = this.usageRecord(new Date(now), 'open');
    if (rec === null) return;
    this.lastCheckpointAt = now;
    usage.checkpoint(rec);
  }

  /** The session's usage so far (checkpoints and the final record share it). */
  private usageRecord(endedAt: Date, outcome: string, err?: GatewayError): UsageRecord | null {
    if (!this.route || !this.meter) return null;
    return {
      modality: 'stt',
      sessionId: this.id,
      apiKey: this.ctx.apiKey,
      provider: this.route.provider,
      model: this.route.model,
      startedAt: this.startedAt,
      endedAt,
      audioSeconds: this.meter.seconds,
      ...(this.chain.length > 1 ? { fallbackChain: [...this.chain] } : {}),
      costUsd: this.meter.costUsd,
      outcome,
      ...(err ? { errorCode: err.status } : {}),
      meta: this.ctx.meta,
    };
  }

  private clearTimers(): void {
    for (const t of [this.finalizeAckTimer, this.finalizeCloseTimer, this.endTimer]) if (t !== null) clearTimeout(t);
    this.finalizeAckTimer = this.finalizeCloseTimer = this.endTimer = null;
  }

  private end(outcome: string, err?: GatewayError): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.clearTimers();
    for (const link of [this.link, ...this.retiring]) {
      if (!link) continue;
      if (link.retireTimer !== null) clearTimeout(link.retireTimer);
      if (link.open) flushHeldAudio(link, true);
      if (link.open && link.codec.closeMessage !== null) link.socket.send(link.codec.closeMessage);
      link.socket.close(1000);
      // Give the provider a moment to close cleanly, then drop the TCP connection.
      setTimeout(() => link.socket.terminate(), 1000).unref();
    }
    this.retiring.clear();
    this.link = null;
    this.ring?.drain();
    this.meter?.flush();
    const m = this.deps.metrics;
    m.sessionsActive.dec({ modality: 'stt' });
    m.requests.inc({ modality: 'stt', provider: this.route?.provider ?? 'none', model: this.route?.metricModel ?? 'none', outcome });
    const rec = this.usageRecord(new Date(), outcome, err);
    if (rec !== null) this.deps.usage.record(rec);
    // Closed after the usage record is queued (durability: a record is never lost behind a close).
    if (!this.client.isClosed) this.client.close(1000, 'session closed');
    this.log.info({ outcome, audio_s: this.meter?.seconds ?? 0, replayed_s: this.replayedBytes / this.bps, chain: this.chain, ...(err ? { code: err.status, err: err.message } : {}) }, 'stt session ended');
    this.deps.onEnd(this);
  }
}

function asGatewayError(err: unknown): GatewayError {
  return err instanceof GatewayError ? err : new GatewayError('internal', 'internal error');
}

function outcomeOf(code: ErrorCode): string {
  switch (code) {
    case 'inactivity':
      return 'inactivity';
    case 'rate_limited':
      return 'rate_limited';
    case 'provider_error':
    case 'provider_timeout':
    case 'unavailable':
      return 'provider_error';
    case 'internal':
      return 'error';
    case 'timeout':
      return 'timeout';
    default:
      return 'client_error';
  }
}

/** Client PCM -> the provider's rate -> the wire (hot path: no allocation beyond the resampler's). */
function forwardAudio(link: Link, pcm: Buffer): void {
  const data = link.resampler !== null ? link.resampler.push(pcm) : pcm;
  if (data.length === 0) return;
  const frame = link.codec.encodeAudio(data);
  if (frame !== null) link.socket.send(frame);
}

/** Send audio held by the resampler (end of stream only) and the codec before a finalize/close. */
function flushHeldAudio(link: Link, endOfStream: boolean): void {
  if (endOfStream && link.resampler !== null) {
    const tail = link.resampler.flush();
    if (tail.length > 0) {
      const frame = link.codec.encodeAudio(tail);
      if (frame !== null) link.socket.send(frame);
    }
  }
  const held = link.codec.flushAudio?.() ?? null;
  if (held !== null) link.socket.send(held);
}

/** Speech energy: mean square of every 4th sample at or above RMS 400 (about -38 dBFS). */
const SPEECH_MEAN_SQUARE = 400 * 400;

function hasSpeech(pcm: Buffer): boolean {
  let sum = 0;
  let n = 0;
  for (let i = 0; i + 1 < pcm.length; i += 8) {
    const v = pcm.readInt16LE(i);
    sum += v * v;
    n++;
  }
  return n > 0 && sum >= SPEECH_MEAN_SQUARE * n;
}

/** Start an unanswered stretch at the first speech sent to a link, or count audio sent during one. */
function noteSpeech(link: Link, pcm: Buffer, now: number): void {
  if (link.quietSince !== 0) {
    link.quietBytes += pcm.length;
    return;
  }
  if (!hasSpeech(pcm)) return;
  link.quietSince = now;
  link.quietBytes = 0;
  if (link.firstSpeechAt === 0) link.firstSpeechAt = now;
}
