/**
 * Configuration: secrets and basics from environment variables; everything structured from an
 * optional YAML/JSON file at GATEWAY_CONFIG, validated strictly (an unknown key or a wrong type
 * stops startup with the exact path). Secrets in the file are references (`env:NAME`).
 * Documented in docs/configuration.md.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { resolveKeys, type KeyStore } from './auth/index.ts';
import { PROVIDERS, STT_PROTOCOLS, isProviderId, sttModelsOf, findLlmAdapter, findTtsAdapter } from './providers/registry.ts';
import type { ProviderEndpoint, ProviderId, SttAdapter } from './providers/types.ts';
import { budgetsSchema } from './metering/budgets.ts';
import { PriceTable, pricingSchema, routedModels, unpricedRoutes } from './metering/pricing.ts';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const modelString = z.string().min(1).max(200);

/** Default `auto` table (docs/providers.md): multilingual-capable models first for non-English. */
export const DEFAULT_AUTO_STT = {
  default: ['deepgram/nova-3', 'assemblyai/universal-streaming', 'cartesia/ink-whisper', 'elevenlabs/scribe_v2_realtime'],
  languages: {
    en: ['deepgram/nova-3', 'assemblyai/universal-streaming', 'cartesia/ink-whisper', 'elevenlabs/scribe_v2_realtime'],
    multi: ['deepgram/nova-3', 'assemblyai/universal-streaming-multilingual', 'elevenlabs/scribe_v2_realtime'],
    ...Object.fromEntries(
      ['de', 'es', 'fr', 'pt', 'it', 'nl'].map((l) => [l, ['deepgram/nova-3', 'assemblyai/universal-streaming-multilingual', 'elevenlabs/scribe_v2_realtime', 'cartesia/ink-whisper']]),
    ),
    ...Object.fromEntries(['ja', 'zh', 'hi', 'ko', 'ru'].map((l) => [l, ['deepgram/nova-3', 'elevenlabs/scribe_v2_realtime', 'cartesia/ink-whisper']])),
  } as Record<string, string[]>,
};

/** A secret value: `env:NAME` (resolved at startup) or, discouraged, a literal. */
const secretRef = z.string().min(1);
const seconds = (max: number) => z.number().positive().max(max);

const providerSchema = z.strictObject({
  apiKey: secretRef.optional(),
  baseUrl: z.string().url().optional(),
  connectTimeoutS: seconds(120).optional(),
});

export const fileSchema = z.strictObject({
  server: z
    .strictObject({
      /** Deadline for graceful shutdown (finalize and close live sessions). */
      shutdownTimeoutS: seconds(600).default(10),
      /** Time allowed between TCP accept and a completed WebSocket upgrade/HTTP request headers. */
      upgradeTimeoutS: seconds(120).default(10),
    })
    .prefault({}),
  auth: z
    .strictObject({
      keys: z.array(z.strictObject({ key: z.string().min(1).max(256), secret: secretRef })).default([]),
      clockToleranceS: z.number().min(0).max(300).default(10),
    })
    .prefault({}),
  stt: z
    .strictObject({
      /** No audio for this long -> error 2007 and close. */
      inactivityTimeoutS: seconds(3600).default(60),
      /** After session.finalize, this long without audio -> remaining finals, session.closed, close. */
      finalizeCloseS: seconds(60).default(2),
      /** How long to wait for the provider to answer a finalize before finalizing what we have. */
      finalizeAckTimeoutS: seconds(30).default(1.5),
      /** Audio kept while the upstream connects (and, later, for replay). */
      bufferS: seconds(30).default(5),
      /** Largest accepted client message; larger ones get an error event (code 400). */
      maxMessageBytes: z.number().int().min(64 * 1024).max(16 * 1024 * 1024).default(1024 * 1024),
      /** Default upstream connect timeout when the client sends no connection.timeout. */
      connectTimeoutS: seconds(120).default(10),
      /**
       * `auto` / `auto:<lang>`: candidate models per language, in order; the first whose provider
       * has credentials serves. A language without a list uses `default`.
       */
      auto: z
        .strictObject({
          default: z.array(modelString).min(1).default(DEFAULT_AUTO_STT.default),
          languages: z.record(z.string().min(1).max(35), z.array(modelString).min(1)).default(DEFAULT_AUTO_STT.languages),
        })
        .prefault({}),
      /** Self-hosted / custom STT servers speaking a known protocol, addressed as `<id>/<model>`. */
      upstreams: z
        .record(
          z.string().regex(/^[a-z0-9][a-z0-9._-]{0,39}$/, 'lower-case id: letters, digits, . _ -'),
          z.strictObject({
            protocol: z.enum(['openai-realtime']),
            baseUrl: z.string().url(),
            apiKey: secretRef.optional(),
            /** Model used when the model string names only the upstream (`<id>`). */
            model: z.string().min(1).max(200),
          }),
        )
        .default({}),
    })
    .prefault({}),
  tts: z
    .strictObject({
      /** A socket with no client message for this long gets session.closed and is closed. */
      idleTimeoutS: seconds(86400).default(600),
      /** During a generation, a heartbeat message after this long without any server message. */
      heartbeatS: seconds(9).default(3),
      /** A generation whose provider sends nothing for this long fails with 504. */
      providerSilenceTimeoutS: seconds(600).default(30),
      /** Largest accepted client message. */
      maxMessageBytes: z.number().int().min(4 * 1024).max(16 * 1024 * 1024).default(256 * 1024),
      /** Most text one generation may carry. */
      maxGenerationChars: z.number().int().min(100).max(10_000_000).default(100_000),
      /** Warm provider sockets kept across sessions, per provider/options key (0 disables). */
      poolMaxPerKey: z.number().int().min(0).max(100).default(4),
      /** How long a parked warm socket is kept. */
      poolIdleS: seconds(3600).default(60),
    })
    .prefault({}),
  llm: z
    .strictObject({
      /** Largest accepted request body. */
      maxBodyBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(8 * 1024 * 1024),
      /** Before the first token, an SSE comment after this long without output. */
      keepAliveS: seconds(30).default(3),
      /** Time allowed for a provider to answer with response headers. */
      headersTimeoutS: seconds(600).default(60),
      /** Streaming: after the response headers, no byte from the provider for this long -> the attempt is given up. */
      streamIdleS: seconds(600).default(30),
      /** Custom OpenAI-compatible upstreams (vLLM, Ollama, llama.cpp server...), by provider id. */
      upstreams: z
        .record(
          z.string().regex(/^[a-z0-9][a-z0-9._-]{0,39}$/, 'lower-case id: letters, digits, . _ -'),
          z.strictObject({
            baseUrl: z.string().url(),
            apiKey: secretRef.optional(),
            /** Model ids listed by GET /v1/models (any model id is forwarded). */
            models: z.array(z.string().min(1).max(200)).default([]),
          }),
        )
        .default({}),
    })
    .prefault({}),
  /** Per-API-key and per-process limits (docs/limits.md). */
  limits: z
    .strictObject({
      /** Open STT + TTS WebSocket sessions in this process; past it upgrades get 503. null = no limit. */
      maxSessionsPerProcess: z.number().int().min(1).max(1_000_000).nullable().default(1000),
      /**
       * Limits by LiveKit API key; `"*"` applies to every key without its own entry (each key has
       * its own counters). A key's entry overrides `"*"` field by field; `null` lifts a limit.
       */
      perKey: z
        .record(
          z.string().min(1).max(256),
          z.strictObject({
            maxSttSessions: z.number().int().min(0).max(1_000_000).nullable().optional(),
            maxTtsSessions: z.number().int().min(0).max(1_000_000).nullable().optional(),
            llmRequestsPerMinute: z.number().int().min(0).max(100_000_000).nullable().optional(),
            llmTokensPerMinute: z.number().int().min(0).max(1_000_000_000_000).nullable().optional(),
          }),
        )
        .default({}),
    })
    .prefault({}),
  /**
   * Ordered candidates per model string or alias, per modality (docs/failover.md). The key is what a
   * client sends as `model` (e.g. `deepgram/nova-3`) or an alias (`fast-en`); candidates are concrete
   * `provider/model` strings, tried in order (client `fallback.models` come after them).
   */
  routes: z
    .strictObject({
      stt: z
        .record(
          z.string().min(1).max(200),
          z.strictObject({
            candidates: z
              .array(z.union([modelString, z.strictObject({ model: modelString, extra: z.record(z.string(), z.unknown()).optional() })]))
              .min(1)
              .max(8),
            /** Upstream connect timeout per attempt (the client's connection.timeout can shorten it). */
            connectTimeoutS: seconds(120).optional(),
            /** Speech sent to a candidate and no transcript from it for this long -> next candidate (0 = off). */
            firstResultS: z.number().min(0).max(600).optional(),
            /** Speech going in and no provider message at all for this long -> next candidate (0 = off). */
            deadAirS: z.number().min(0).max(60).optional(),
          }),
        )
        .default({}),
      /** TTS: candidates with their own voice and extra (docs/failover.md "TTS"). */
      tts: z
        .record(
          z.string().min(1).max(200),
          z.strictObject({
            candidates: z
              .array(
                z.union([
                  modelString,
                  z.strictObject({ model: modelString, voice: z.string().min(1).max(200).optional(), extra: z.record(z.string(), z.unknown()).optional() }),
                ]),
              )
              .min(1)
              .max(8),
            /** Upstream connect timeout per attempt (the client's connection.timeout can shorten it). */
            connectTimeoutS: seconds(120).optional(),
            /** After session.flush, no audio from a candidate for this long -> next candidate (0 = off). */
            firstAudioS: z.number().min(0).max(600).optional(),
            /** After audio and session.flush, no provider message for this long -> next candidate (0 = off). */
            deadAirS: z.number().min(0).max(600).optional(),
          }),
        )
        .default({}),
      /** LLM: candidate `provider/model` strings, tried in order before any visible output. */
      llm: z
        .record(
          z.string().min(1).max(200),
          z.strictObject({
            candidates: z.array(modelString).min(1).max(8),
            /** Streaming: no response body byte for this long after the request -> next candidate (0 = off). */
            firstTokenS: z.number().min(0).max(600).optional(),
          }),
        )
        .default({}),
    })
    .prefault({}),
  /** Failover and provider health (docs/failover.md). */
  failover: z
    .strictObject({
      /** Circuit breaker per provider: `failures` consecutive failures open it for `cooldownS`. */
      breaker: z
        .strictObject({
          failures: z.number().int().min(1).max(1000).default(3),
          cooldownS: seconds(3600).default(30),
        })
        .prefault({}),
      stt: z
        .strictObject({
          /** Audio since the last final kept for replay on the next candidate (seconds). */
          replayS: seconds(60).default(10),
          /** Default dead-air detection (seconds; 0 = off); a route can override it. */
          deadAirS: z.number().min(0).max(60).default(2),
          /** Default first-result timeout (seconds; 0 = off); a route can override it. */
          firstResultS: z.number().min(0).max(600).default(10),
        })
        .prefault({}),
      tts: z
        .strictObject({
          /** Default: after session.flush, no audio from a candidate for this long -> next candidate (0 = off). */
          firstAudioS: z.number().min(0).max(600).default(5),
          /** Default: after audio and session.flush, no provider message for this long -> next candidate (0 = off). */
          deadAirS: z.number().min(0).max(600).default(3),
        })
        .prefault({}),
      llm: z
        .strictObject({
          /** Default: streaming, no response body byte for this long after the request -> next candidate (0 = off). */
          firstTokenS: z.number().min(0).max(600).default(30),
        })
        .prefault({}),
    })
    .prefault({}),
  providers: z.record(z.string(), providerSchema).default({}),
  /** Prices overriding the defaults, rounding (docs/pricing.md). */
  pricing: pricingSchema,
  /** Daily / monthly USD budgets per API key (docs/pricing.md). */
  budgets: budgetsSchema,
  /** Durable usage ledger (docs/metering.md "Usage ledger"). */
  ledger: z
    .strictObject({
      /** `sqlite` (default), `postgres` (default when a database URL is set) or `none` (log lines only). */
      backend: z.enum(['sqlite', 'postgres', 'none']).optional(),
      /** SQLite file; env USAGE_DB overrides. Default ./data/usage.db. */
      sqlitePath: z.string().min(1).max(4096).optional(),
      /** PostgreSQL connection URL (a secret: `env:NAME`); env USAGE_DATABASE_URL when absent. */
      databaseUrl: secretRef.optional(),
      /** Live sessions write their quantities so far this often (a crash loses at most this window). */
      checkpointS: seconds(3600).default(5),
      /** Most records waiting for the database; beyond it the oldest checkpoints, then records, are dropped (counted). */
      maxQueue: z.number().int().min(100).max(1_000_000).default(10_000),
    })
    .prefault({}),
  /** Operator API (GET /v1/usage). */
  admin: z
    .strictObject({
      /** Bearer token for the admin API (a secret: `env:NAME`); env ADMIN_TOKEN when absent. Unset: admin API disabled. */
      token: secretRef.optional(),
    })
    .prefault({}),
});
export type FileConfig = z.infer<typeof fileSchema>;

/** Where usage records go (resolved from `ledger` and USAGE_DB / USAGE_DATABASE_URL). */
export type LedgerTarget = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string } | { kind: 'none' };

export interface GatewayConfig {
  port: number;
  host: string;
  devMode: boolean;
  logLevel: string;
  keys: KeyStore;
  file: FileConfig;
  /** Providers with credentials, resolved from the file and environment. */
  endpoints: Map<ProviderId, ProviderEndpoint>;
  /** Providers that are known but have no key configured, with the variable to set. */
  missingCredentials: Map<ProviderId, string>;
  /** Custom OpenAI-compatible LLM upstreams from the file, by id (secrets resolved). */
  llmUpstreams: Map<string, { endpoint: ProviderEndpoint; models: string[] }>;
  /** Custom STT upstreams from the file, by id. */
  sttUpstreams: Map<string, { adapter: SttAdapter; endpoint: ProviderEndpoint; model: string }>;
  /** Default prices overlaid with `pricing`; every routed model has one (checked at startup). */
  prices: PriceTable;
  ledger: LedgerTarget;
  /** Bearer token of the admin API; undefined disables it. */
  adminToken: string | undefined;
}

type Env = Record<string, string | undefined>;

function formatIssues(err: z.ZodError, source: string): string {
  return err.issues
    .map((i) => {
      const path = i.path.length ? i.path.join('.') : '(root)';
      return `${source}: ${path}: ${i.message}`;
    })
    .join('\n');
}

function resolveSecret(ref: string, path: string, env: Env): string {
  if (!ref.startsWith('env:')) return ref;
  const name = ref.slice(4);
  const value = env[name];
  if (!value) throw new ConfigError(`config: ${path}: environment variable ${name} is not set`);
  return value;
}

function envNumber(env: Env, name: string): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`env: ${name}: must be a positive number (got "${raw.slice(0, 20)}")`);
  return n;
}

export function parseConfigFile(text: string, path: string): FileConfig {
  let raw: unknown;
  try {
    raw = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${path}: cannot parse: ${(err as Error).message}`);
  }
  const parsed = fileSchema.safeParse(raw ?? {});
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error, path));
  for (const id of Object.keys(parsed.data.providers)) {
    if (!isProviderId(id)) {
      throw new ConfigError(`${path}: providers.${id}: unknown provider; known: ${Object.keys(PROVIDERS).join(', ')}`);
    }
  }
  return parsed.data;
}

export function loadConfig(env: Env = process.env): GatewayConfig {
  const path = env.GATEWAY_CONFIG;
  let file: FileConfig;
  if (path) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`GATEWAY_CONFIG: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    file = parseConfigFile(text, path);
  } else {
    file = fileSchema.parse({});
  }
  return resolveConfig(file, env);
}

/** Combine a validated file (possibly empty) with the environment. */
export function resolveConfig(file: FileConfig, env: Env = process.env): GatewayConfig {
  // Environment basics override the file defaults.
  const inactivity = envNumber(env, 'STT_INACTIVITY_TIMEOUT_S');
  if (inactivity !== undefined) file.stt.inactivityTimeoutS = inactivity;
  const ttsIdle = envNumber(env, 'TTS_IDLE_TIMEOUT_S');
  if (ttsIdle !== undefined) file.tts.idleTimeoutS = ttsIdle;
  const shutdown = envNumber(env, 'SHUTDOWN_TIMEOUT_S');
  if (shutdown !== undefined) file.server.shutdownTimeoutS = shutdown;

  const fileKeys = file.auth.keys.map((k, i) => ({ key: k.key, secret: resolveSecret(k.secret, `auth.keys.${i}.secret`, env) }));
  let keys: KeyStore;
  try {
    keys = resolveKeys({ env, fileKeys });
  } catch (err) {
    throw new ConfigError(`auth: ${(err as Error).message}`);
  }
  // A limit for a key that does not exist is a typo that would silently never apply.
  for (const k of Object.keys(file.limits.perKey)) {
    if (k !== '*' && keys.lookup(k) === undefined) throw new ConfigError(`config: limits.perKey.${k.slice(0, 64)}: no such API key (configured keys only, or "*")`);
  }

  const portRaw = env.PORT ?? '8080';
  const port = Number(portRaw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`env: PORT: invalid port "${portRaw.slice(0, 20)}"`);
  // Dev mode (no keys configured) binds loopback only, whatever HOST says.
  const host = keys.devMode ? '127.0.0.1' : env.HOST || '0.0.0.0';

  const endpoints = new Map<ProviderId, ProviderEndpoint>();
  const missingCredentials = new Map<ProviderId, string>();
  for (const info of Object.values(PROVIDERS)) {
    const fromFile = file.providers[info.id];
    const apiKey = fromFile?.apiKey ? resolveSecret(fromFile.apiKey, `providers.${info.id}.apiKey`, env) : env[info.keyEnv];
    const baseUrl = fromFile?.baseUrl ?? env[info.baseUrlEnv] ?? info.defaultBaseUrl;
    try {
      const u = new URL(baseUrl);
      if (!/^(https?|wss?):$/.test(u.protocol)) throw new Error('scheme');
    } catch {
      throw new ConfigError(`${info.baseUrlEnv}: invalid base URL for ${info.id}`);
    }
    if (!apiKey) {
      missingCredentials.set(info.id, info.keyEnv);
      continue;
    }
    endpoints.set(info.id, {
      apiKey,
      baseUrl,
      connectTimeoutMs: Math.round((fromFile?.connectTimeoutS ?? file.stt.connectTimeoutS) * 1000),
    });
  }

  const llmUpstreams = new Map<string, { endpoint: ProviderEndpoint; models: string[] }>();
  for (const [id, u] of Object.entries(file.llm.upstreams)) {
    if (isProviderId(id)) throw new ConfigError(`llm.upstreams.${id}: "${id}" is a built-in provider; configure it under providers.${id}`);
    llmUpstreams.set(id, {
      endpoint: {
        apiKey: u.apiKey ? resolveSecret(u.apiKey, `llm.upstreams.${id}.apiKey`, env) : '',
        baseUrl: u.baseUrl,
        connectTimeoutMs: Math.round(file.llm.headersTimeoutS * 1000),
      },
      models: u.models,
    });
  }

  const sttUpstreams = new Map<string, { adapter: SttAdapter; endpoint: ProviderEndpoint; model: string }>();
  for (const [id, u] of Object.entries(file.stt.upstreams)) {
    if (isProviderId(id)) throw new ConfigError(`stt.upstreams.${id}: "${id}" is a built-in provider; configure it under providers.${id}`);
    sttUpstreams.set(id, {
      adapter: STT_PROTOCOLS[u.protocol],
      endpoint: {
        apiKey: u.apiKey ? resolveSecret(u.apiKey, `stt.upstreams.${id}.apiKey`, env) : '',
        baseUrl: u.baseUrl,
        connectTimeoutMs: Math.round(file.stt.connectTimeoutS * 1000),
      },
      model: u.model,
    });
  }

  // Route candidates must name a known STT provider (typos would otherwise only show at failover).
  for (const [key, route] of Object.entries(file.routes.stt)) {
    for (const [i, c] of route.candidates.entries()) {
      const model = typeof c === 'string' ? c : c.model;
      const provider = model.split('/')[0] ?? '';
      if (!(isProviderId(provider) && sttModelsOf(provider).length > 0) && !(provider in file.stt.upstreams)) {
        throw new ConfigError(`config: routes.stt.${key.slice(0, 64)}.candidates.${i}: "${model.slice(0, 64)}" is not a known STT provider/model`);
      }
    }
  }
  // TTS and LLM route candidates must name a known provider (and, for TTS, a known model).
  for (const [key, route] of Object.entries(file.routes.tts)) {
    for (const [i, c] of route.candidates.entries()) {
      const raw = typeof c === 'string' ? c : c.model;
      const model = raw.lastIndexOf(':') < 0 ? raw : raw.slice(0, raw.lastIndexOf(':')); // without a `:voice`
      const slash = model.indexOf('/');
      const provider = slash < 0 ? model : model.slice(0, slash);
      const name = slash < 0 ? undefined : model.slice(slash + 1);
      const adapter = findTtsAdapter(provider);
      if (!adapter || (name !== undefined && !adapter.models.includes(name))) {
        throw new ConfigError(`config: routes.tts.${key.slice(0, 64)}.candidates.${i}: "${model.slice(0, 64)}" is not a known TTS provider/model`);
      }
    }
  }
  for (const [key, route] of Object.entries(file.routes.llm)) {
    for (const [i, model] of route.candidates.entries()) {
      const provider = model.split('/')[0] ?? '';
      if (!findLlmAdapter(provider) && !(provider in file.llm.upstreams)) {
        throw new ConfigError(`config: routes.llm.${key.slice(0, 64)}.candidates.${i}: "${model.slice(0, 64)}" is not a known LLM provider`);
      }
    }
  }
  // No silent $0: every model this gateway can route to needs a price or `free: true`.
  const prices = new PriceTable(file.pricing);
  const unpriced = unpricedRoutes(
    prices,
    routedModels({
      providersWithCredentials: endpoints.keys(),
      sttCandidates: [
        ['stt.auto.default', file.stt.auto.default],
        ...Object.entries(file.stt.auto.languages).map(([l, v]): [string, string[]] => [`stt.auto.languages.${l}`, v]),
        ...Object.entries(file.routes.stt).map(([k, r]): [string, string[]] => [`routes.stt.${k}`, r.candidates.map((c) => (typeof c === 'string' ? c : c.model))]),
      ],
      sttUpstreams: [...sttUpstreams].map(([id, u]): [string, { model: string }] => [id, { model: u.model }]),
      llmUpstreams: llmUpstreams,
    }),
  );
  if (unpriced.length > 0) throw new ConfigError(unpriced.join('\n'));
  // A budget for a key that does not exist is a typo that would silently never apply.
  for (const k of Object.keys(file.budgets.keys)) {
    if (keys.lookup(k) === undefined) throw new ConfigError(`config: budgets.keys.${k.slice(0, 64)}: no such API key (configured keys only; budgets.default covers every key)`);
  }
  const ledger = resolveLedger(file, env);
  const adminToken = file.admin.token ? resolveSecret(file.admin.token, 'admin.token', env) : env.ADMIN_TOKEN || undefined;
  if (adminToken !== undefined && adminToken.length < 16) throw new ConfigError('admin.token / ADMIN_TOKEN: must be at least 16 characters');

  return { prices, port, host, devMode: keys.devMode, logLevel: env.LOG_LEVEL || 'info', keys, file, endpoints, missingCredentials, llmUpstreams, sttUpstreams, ledger, adminToken };
}

function resolveLedger(file: FileConfig, env: Env): LedgerTarget {
  const url = file.ledger.databaseUrl ? resolveSecret(file.ledger.databaseUrl, 'ledger.databaseUrl', env) : env.USAGE_DATABASE_URL || undefined;
  const backend = file.ledger.backend ?? (url ? 'postgres' : 'sqlite');
  if (backend === 'none') return { kind: 'none' };
  if (backend === 'sqlite') return { kind: 'sqlite', path: env.USAGE_DB || file.ledger.sqlitePath || './data/usage.db' };
  if (!url) throw new ConfigError('ledger.backend is postgres but no database URL is set (ledger.databaseUrl or USAGE_DATABASE_URL)');
  if (!/^postgres(ql)?:\/\//.test(url)) throw new ConfigError('ledger.databaseUrl / USAGE_DATABASE_URL: must be a postgres:// or postgresql:// URL');
  return { kind: 'postgres', url };
}
