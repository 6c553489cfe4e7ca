/**
 * One client STT socket (shared/protocol.md section 2): session.create -> audio in, transcripts
 * out; session.update / session.finalize / session.close; inactivity and shutdown.
 *
 * Timeline: every transcript time is on the client's audio timeline (seconds of audio received
 * on this socket, starting at 0). Each upstream connection ("link") records the client position
 * of the first byte it received, and its times are shifted by that offset; so reconnects (and,
 * later, failover) keep the client's timeline continuous.
 *
 * Hot path (input_audio): no await, no zod, no metrics lookups, no logging per frame.
 */
import { randomBytes } from 'node:crypto';
import type { GatewayConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { GatewayMetrics } from '../metering/metrics.ts';
import { SttMeter } from '../metering/stt-meter.ts';
import type { RequestMeta, UsageSink } from '../metering/usage.ts';
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
import { PcmResampler } from './resampler.ts';
import { pickSampleRate } from '../providers/options.ts';
import { resolveSttRoute, type SttRoute } from './routing.ts';
import { ClientSink } from './send.ts';
import type { WsConnection } from './transport.ts';

export interface SttSessionDeps {
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
}

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
  /** Current target options (what the next upstream connection uses). */
  private route: SttRoute | null = null;
  private opts: SttOptions | null = null;
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
  private droppedReported = 0;

  constructor(conn: WsConnection, ctx: ConnectionContext, deps: SttSessionDeps) {
    this.deps = deps;
    this.ctx = ctx;
    this.log = deps.log.child({ session_id: this.id, api_key: ctx.apiKey, room_id: ctx.meta.roomId });
    this.client = new ClientSink(conn, {
      maxBufferedBytes: 4 * 1024 * 1024,
      onOverflow: () => this.end('client_not_reading'),
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
      forwardAudio(link, pcm);
      if (link.socket.bufferedAmount > UPSTREAM_MAX_BUFFERED) {
        this.fail(new GatewayError('provider_error', `${link.route.label}: provider is not keeping up with the audio`), 'provider_error');
      }
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
    let route: SttRoute;
    let opts: SttOptions;
    try {
      const resolved = resolveSttRoute(msg.model, this.deps.cfg);
      route = resolved.route;
      opts = route.adapter.validate({
        model: route.model,
        language: settings.language ?? resolved.language,
        sampleRate: upstreamRate(route, sampleRate),
        extra: settings.extra,
      });
    } catch (err) {
      this.fail(asGatewayError(err));
      return;
    }
    this.sampleRate = sampleRate;
    this.bps = bytesPerSecond(sampleRate);
    this.route = route;
    this.opts = opts;
    this.ring = new AudioRing(Math.round(this.deps.cfg.file.stt.bufferS * this.bps));
    this.meter = new SttMeter(this.deps.metrics.sttAudioSeconds, sampleRate, {
      provider: route.provider,
      model: route.model,
      apiKey: this.ctx.apiKey,
    });
    this.phase = 'active';
    this.lastAudioAt = Date.now();
    this.client.send(sessionCreatedMessage(this.id, { model: route.label }));
    this.log.info({ model: route.label, sample_rate: sampleRate, language: opts.language }, 'stt session created');
    this.openLink(route, opts, 0, msg.connection?.timeout ?? undefined);
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
    let route = this.route;
    let next: SttOptions;
    try {
      let language = this.opts.language;
      if (s.model) {
        const resolved = resolveSttRoute(s.model, this.deps.cfg);
        route = resolved.route;
        language = resolved.language ?? language;
      }
      if (s.language) language = s.language;
      const extra: Record<string, unknown> = { ...this.opts.extra };
      for (const [k, v] of Object.entries(s.extra ?? {})) {
        if (v === null) delete extra[k];
        else extra[k] = v;
      }
      next = route.adapter.validate({ model: route.model, language, sampleRate: upstreamRate(route, this.sampleRate), extra });
    } catch (err) {
      this.reject(asGatewayError(err));
      return;
    }
    const sameRoute = route.adapter === this.route.adapter && route.model === this.route.model;
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

  private openLink(route: SttRoute, opts: SttOptions, offsetPos: number, clientTimeoutS: number | undefined): void {
    const timeoutMs = clientTimeoutS ? Math.min(clientTimeoutS * 1000, route.endpoint.connectTimeoutMs) : route.endpoint.connectTimeoutMs;
    const now = Date.now();
    const link: Link = {
      route,
      opts,
      codec: route.adapter.createCodec(opts),
      resampler: opts.sampleRate !== this.sampleRate ? new PcmResampler(this.sampleRate, opts.sampleRate) : null,
      socket: null as unknown as UpstreamSocket,
      open: false,
      offsetS: offsetPos / this.bps,
      retiring: false,
      finalizeOnOpen: false,
      connectStartedAt: now,
      lastKeepAliveAt: now,
      retireTimer: null,
    };
    this.link = link;
    link.socket = connectUpstream(route.adapter.request(opts, route.endpoint), { timeoutMs, providerLabel: route.label }, {
      onOpen: () => this.onLinkOpen(link),
      onMessage: (data, isBinary) => {
        if (this.phase !== 'closed') this.dispatch(link, link.codec.decode(data, isBinary));
      },
      onClose: (code, reason) => this.onLinkClosed(link, code, reason),
      onConnectError: (err) => {
        if (link.retiring || this.phase === 'closed') return;
        this.log.warn({ provider: route.provider, code: err.status, err: err.message }, 'upstream connect failed');
        this.fail(err, 'provider_error');
      },
    });
  }

  private onLinkOpen(link: Link): void {
    this.deps.metrics.upstreamConnectSeconds.observe({ provider: link.route.provider }, (Date.now() - link.connectStartedAt) / 1000);
    if (link.retiring || this.phase === 'closed') {
      link.socket.terminate();
      return;
    }
    link.open = true;
    const ring = this.ring as AudioRing;
    if (ring.dropped > this.droppedReported) {
      const lost = ring.dropped - this.droppedReported;
      this.droppedReported = ring.dropped;
      this.deps.metrics.sttAudioDroppedSeconds.inc({ provider: link.route.provider, model: link.route.model }, lost / this.bps);
      this.log.warn({ dropped_s: lost / this.bps }, 'audio dropped while the upstream was connecting');
    }
    // The link's timeline starts at the first byte it actually receives.
    link.offsetS = (ring.size > 0 ? ring.startPos : this.pos) / this.bps;
    const meter = this.meter as SttMeter;
    for (const m of link.codec.openMessages ?? []) link.socket.send(m);
    for (const chunk of ring.drain()) {
      meter.bytes += chunk.length;
      forwardAudio(link, chunk);
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
    if (this.phase === 'closed') return;
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
    this.fail(err, 'provider_error');
  }

  /** New upstream for changed options; the old one finishes its utterance and closes. */
  private reconnect(): void {
    if (!this.route || !this.opts || this.phase !== 'active') return;
    this.reconnectPending = false;
    const old = this.link;
    if (old) this.retire(old);
    (this.meter as SttMeter).rebind(this.route.provider, this.route.model);
    this.log.info({ model: this.route.label }, 'stt upstream reconnect for new options');
    this.openLink(this.route, this.opts, this.pos, undefined);
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
      if (this.phase === 'closed') return;
      const current = link === this.link;
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
          this.deps.metrics.sttProviderAudioSeconds.inc({ provider: link.route.provider, model: link.route.model }, ev.audioSeconds);
          break;
        case 'error':
          if (current) this.fail(ev.error, 'provider_error');
          break;
      }
    }
  }

  private sendTranscript(kind: TranscriptKind, link: Link, seg: SttSegment): void {
    if (!this.firstResultSeen && seg.text && this.firstAudioAt > 0) {
      this.firstResultSeen = true;
      this.deps.metrics.sttFirstResultSeconds.observe(
        { provider: link.route.provider, model: link.route.model },
        (Date.now() - this.firstAudioAt) / 1000,
      );
    }
    const off = link.offsetS;
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
    const link = this.link;
    const ka = link?.codec.keepAlive;
    if (link && link.open && ka && idle >= ka.idleMs && now - link.lastKeepAliveAt >= ka.idleMs) {
      link.lastKeepAliveAt = now;
      link.socket.send(ka.message);
    }
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
    if (!this.client.isClosed) this.client.close(1000, 'session closed');
    const m = this.deps.metrics;
    m.sessionsActive.dec({ modality: 'stt' });
    const provider = this.route?.provider ?? 'none';
    const model = this.route?.model ?? 'none';
    m.requests.inc({ modality: 'stt', provider, model, outcome });
    if (this.route && this.meter) {
      this.deps.usage.record({
        modality: 'stt',
        sessionId: this.id,
        apiKey: this.ctx.apiKey,
        provider,
        model,
        startedAt: this.startedAt,
        endedAt: new Date(),
        audioSeconds: this.meter.seconds,
        outcome,
        ...(err ? { errorCode: err.status } : {}),
        meta: this.ctx.meta,
      });
    }
    this.log.info({ outcome, audio_s: this.meter?.seconds ?? 0, ...(err ? { code: err.status, err: err.message } : {}) }, 'stt session ended');
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

/** The rate audio is sent upstream at: the client's when the provider accepts it. */
function upstreamRate(route: SttRoute, clientRate: number): number {
  const rates = route.adapter.capabilities.sampleRates;
  return rates ? pickSampleRate(clientRate, rates) : clientRate;
}
