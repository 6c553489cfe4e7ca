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
import { PROVIDERS, STT_PROTOCOLS, isProviderId } from './providers/registry.ts';
import type { ProviderEndpoint, ProviderId, SttAdapter } from './providers/types.ts';

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
  providers: z.record(z.string(), providerSchema).default({}),
});
export type FileConfig = z.infer<typeof fileSchema>;

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

  return { port, host, devMode: keys.devMode, logLevel: env.LOG_LEVEL || 'info', keys, file, endpoints, missingCredentials, llmUpstreams, sttUpstreams };
}
