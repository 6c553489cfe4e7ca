/**
 * Limits (docs/limits.md): concurrent STT and TTS sessions per API key, open sessions per
 * process, LLM requests and tokens per minute per API key. Checked at the WebSocket upgrade
 * (before the socket is accepted: a refusal is an HTTP answer, never a socket that opens and
 * closes) and at the entry of /v1/chat/completions. Refusals are GatewayErrors: 429
 * (`rate_limited`, retryable for LiveKit clients) for a key's limits, 503 (`unavailable`) for the
 * process limit, with `category` and `remaining_limit` fields (protocol.md 2.7).
 *
 * Per-minute limits use a sliding window of the last 60 s at one-second granularity (60 counters
 * per key and dimension: constant memory). A request is admitted while the window is below the
 * limit and counts at admission; its tokens count when it finishes (the metered usage), so one
 * large request can overshoot and the next ones wait until the window slides below the limit.
 */
import type { FileConfig } from '../config.ts';
import type { GatewayMetrics } from '../metering/metrics.ts';
import { GatewayError } from '../protocol/errors.ts';

export type SessionModality = 'stt' | 'tts';
export type LimitedModality = SessionModality | 'llm';

/** A key's effective limits (null = not enforced). */
export interface KeyLimits {
  maxSttSessions: number | null;
  maxTtsSessions: number | null;
  llmRequestsPerMinute: number | null;
  llmTokensPerMinute: number | null;
}

/** `category` values on refusals. The STT one is LiveKit's own (protocol.md 2.7). */
export const LIMIT_CATEGORY = {
  stt: 'MaxConcurrentGatewaySTT',
  tts: 'MaxConcurrentGatewayTTS',
  process: 'MaxSessionsPerProcess',
  rpm: 'LLMRequestsPerMinute',
  tpm: 'LLMTokensPerMinute',
} as const;

/** LLM quota headers (protocol.md 4.2); a dimension that is not enforced is omitted. */
export const QUOTA_HEADERS = {
  rpmLimit: 'X-LiveKit-Inference-RPM-Limit',
  rpmUsed: 'X-LiveKit-Inference-RPM-Used',
  tpmLimit: 'X-LiveKit-Inference-TPM-Limit',
  tpmUsed: 'X-LiveKit-Inference-TPM-Used',
} as const;

/**
 * An extra admission check run after the built-in limits (e.g. spending budgets): return an
 * error to refuse. Runs on every upgrade and LLM request: keep it cheap and synchronous.
 */
export type AdmissionCheck = (apiKey: string, modality: LimitedModality) => GatewayError | null;

/** A reserved session slot; `release` is idempotent. */
export interface SessionLease {
  release(): void;
}

export type SessionAdmission =
  | { ok: true; lease: SessionLease }
  | { ok: false; error: GatewayError; headers: Record<string, string> };

export interface LlmAdmission {
  /** Quota headers to put on the response, whatever its status (empty when no LLM limit is set). */
  headers: Record<string, string>;
  /** Set when the request is refused (send it with `headers`). */
  error: GatewayError | null;
}

const WINDOW_S = 60;

/** Sums over the last 60 seconds, one counter per second, constant memory. */
export class MinuteWindow {
  private readonly secs = new Float64Array(WINDOW_S).fill(-Infinity);
  private readonly vals = new Float64Array(WINDOW_S);

  add(sec: number, n: number): void {
    const i = sec % WINDOW_S;
    if (this.secs[i] !== sec) {
      this.secs[i] = sec;
      this.vals[i] = 0;
    }
    this.vals[i] = (this.vals[i] as number) + n;
  }

  /** Total of the seconds (sec-59 .. sec). */
  sum(sec: number): number {
    let t = 0;
    for (let i = 0; i < WINDOW_S; i++) {
      const s = this.secs[i] as number;
      if (s > sec - WINDOW_S && s <= sec) t += this.vals[i] as number;
    }
    return t;
  }

  /** Whole seconds until the window total drops below `limit` (at least 1). */
  secondsUntilBelow(sec: number, limit: number): number {
    const live: Array<[number, number]> = [];
    for (let i = 0; i < WINDOW_S; i++) {
      const s = this.secs[i] as number;
      if (s > sec - WINDOW_S && s <= sec) live.push([s, this.vals[i] as number]);
    }
    live.sort((a, b) => a[0] - b[0]);
    let total = live.reduce((t, [, v]) => t + v, 0);
    let wait = 1;
    for (const [s, v] of live) {
      if (total < limit) break;
      total -= v;
      wait = s + WINDOW_S - sec;
    }
    return Math.max(1, wait);
  }
}

interface KeyState {
  stt: number;
  tts: number;
  requests: MinuteWindow | null;
  tokens: MinuteWindow | null;
}

export interface LimitsOptions {
  metrics: GatewayMetrics;
  /** Clock in ms (tests). */
  now?: () => number;
  checks?: AdmissionCheck[];
}

export class Limits {
  private readonly cfg: FileConfig['limits'];
  private readonly metrics: GatewayMetrics;
  private readonly now: () => number;
  private readonly checks: AdmissionCheck[];
  private readonly state = new Map<string, KeyState>();
  private readonly resolved = new Map<string, KeyLimits>();
  private open = 0;

  constructor(cfg: FileConfig['limits'], opts: LimitsOptions) {
    this.cfg = cfg;
    this.metrics = opts.metrics;
    this.now = opts.now ?? Date.now;
    this.checks = opts.checks ?? [];
  }

  /** Add an admission check (budgets) run after the built-in limits. */
  addCheck(check: AdmissionCheck): void {
    this.checks.push(check);
  }

  /** Sessions holding a slot in this process (upgrades being accepted included). */
  get openSessions(): number {
    return this.open;
  }

  /** The effective limits of a key: its own entry over `"*"`, field by field. */
  limitsFor(apiKey: string): KeyLimits {
    let l = this.resolved.get(apiKey);
    if (l === undefined) {
      const star = this.cfg.perKey['*'] ?? {};
      const own = this.cfg.perKey[apiKey] ?? {};
      const pick = (k: keyof KeyLimits): number | null => (own[k] !== undefined ? own[k] : star[k]) ?? null;
      l = {
        maxSttSessions: pick('maxSttSessions'),
        maxTtsSessions: pick('maxTtsSessions'),
        llmRequestsPerMinute: pick('llmRequestsPerMinute'),
        llmTokensPerMinute: pick('llmTokensPerMinute'),
      };
      this.resolved.set(apiKey, l);
    }
    return l;
  }

  /** Active sessions of a key for one modality. */
  activeSessions(apiKey: string, modality: SessionModality): number {
    return this.state.get(apiKey)?.[modality] ?? 0;
  }

  /** At the upgrade, before the socket is accepted: reserve a slot or say why not. */
  acquireSession(apiKey: string, modality: SessionModality): SessionAdmission {
    const max = this.cfg.maxSessionsPerProcess;
    if (max !== null && this.open >= max) {
      this.reject(modality, 'process_sessions', apiKey);
      return {
        ok: false,
        error: new GatewayError('unavailable', `gateway is at capacity (${max} open sessions); try another instance`, {
          category: LIMIT_CATEGORY.process,
          remaining_limit: 0,
        }),
        headers: { 'Retry-After': '1' },
      };
    }
    const limit = modality === 'stt' ? this.limitsFor(apiKey).maxSttSessions : this.limitsFor(apiKey).maxTtsSessions;
    const active = this.activeSessions(apiKey, modality);
    if (limit !== null && active >= limit) {
      this.reject(modality, 'concurrent_sessions', apiKey);
      return {
        ok: false,
        error: new GatewayError('rate_limited', `${modality.toUpperCase()} connection limit exceeded (${limit} concurrent sessions for this API key)`, {
          category: LIMIT_CATEGORY[modality],
          remaining_limit: 0,
        }),
        headers: {},
      };
    }
    const extra = this.runChecks(apiKey, modality);
    if (extra !== null) return { ok: false, error: extra, headers: {} };

    const st = this.stateOf(apiKey);
    st[modality]++;
    this.open++;
    let held = true;
    return {
      ok: true,
      lease: {
        release: () => {
          if (!held) return;
          held = false;
          st[modality]--;
          this.open--;
          if (st.stt === 0 && st.tts === 0 && st.requests === null && st.tokens === null) this.state.delete(apiKey);
        },
      },
    };
  }

  /** At the entry of a chat completion: admit (counting the request) or refuse; headers either way. */
  admitLlm(apiKey: string): LlmAdmission {
    const l = this.limitsFor(apiKey);
    const rpm = l.llmRequestsPerMinute;
    const tpm = l.llmTokensPerMinute;
    let error: GatewayError | null = null;
    const headers: Record<string, string> = {};
    if (rpm === null && tpm === null) {
      error = this.runChecks(apiKey, 'llm');
      return { headers, error };
    }
    const sec = Math.floor(this.now() / 1000);
    const st = this.stateOf(apiKey);
    if (rpm !== null) st.requests ??= new MinuteWindow();
    if (tpm !== null) st.tokens ??= new MinuteWindow();
    const requestsUsed = st.requests?.sum(sec) ?? 0;
    const tokensUsed = st.tokens?.sum(sec) ?? 0;
    let retryAfter = 0;
    if (rpm !== null && requestsUsed >= rpm) {
      this.reject('llm', 'requests_per_minute', apiKey);
      retryAfter = (st.requests as MinuteWindow).secondsUntilBelow(sec, rpm);
      error = new GatewayError('rate_limited', `LLM request limit exceeded (${rpm} requests per minute for this API key)`, {
        category: LIMIT_CATEGORY.rpm,
        remaining_limit: 0,
      });
    } else if (tpm !== null && tokensUsed >= tpm) {
      this.reject('llm', 'tokens_per_minute', apiKey);
      retryAfter = (st.tokens as MinuteWindow).secondsUntilBelow(sec, tpm);
      error = new GatewayError('rate_limited', `LLM token limit exceeded (${tpm} tokens per minute for this API key)`, {
        category: LIMIT_CATEGORY.tpm,
        remaining_limit: 0,
      });
    } else {
      error = this.runChecks(apiKey, 'llm');
    }
    const admitted = error === null;
    if (admitted && st.requests !== null) st.requests.add(sec, 1);
    if (rpm !== null) {
      headers[QUOTA_HEADERS.rpmLimit] = String(rpm);
      headers[QUOTA_HEADERS.rpmUsed] = String(requestsUsed + (admitted ? 1 : 0));
    }
    if (tpm !== null) {
      headers[QUOTA_HEADERS.tpmLimit] = String(tpm);
      headers[QUOTA_HEADERS.tpmUsed] = String(Math.round(tokensUsed));
    }
    if (retryAfter > 0) headers['Retry-After'] = String(retryAfter);
    return { headers, error };
  }

  /** The metered tokens of a finished (or cancelled) completion. */
  recordLlmTokens(apiKey: string, tokens: number): void {
    if (!(tokens > 0)) return;
    const st = this.state.get(apiKey);
    if (st?.tokens) st.tokens.add(Math.floor(this.now() / 1000), tokens);
  }

  private stateOf(apiKey: string): KeyState {
    let st = this.state.get(apiKey);
    if (st === undefined) {
      st = { stt: 0, tts: 0, requests: null, tokens: null };
      this.state.set(apiKey, st);
    }
    return st;
  }

  private runChecks(apiKey: string, modality: LimitedModality): GatewayError | null {
    for (const check of this.checks) {
      const err = check(apiKey, modality);
      if (err !== null) return err;
    }
    return null;
  }

  private reject(modality: LimitedModality, limit: string, apiKey: string): void {
    this.metrics.limitRejections.inc({ modality, limit, api_key: apiKey });
  }
}
