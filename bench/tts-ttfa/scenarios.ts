/**
 * The providers and the six scenarios of bench/tts-ttfa. A scenario is setup, then one timed
 * generation per `rep()`, then teardown; the runner (run.ts) pauses `gapMs` between generations.
 *
 * - direct-cold: a new provider connection per generation, timed from the connect (the text is
 *   ready when the client starts connecting). OpenAI: a new TCP connection per request.
 * - direct-warm: one provider connection already open (and already used once); timed from the
 *   text. ElevenLabs serves one generation per socket: the next socket is opened (BOS sent) right
 *   after a generation ends, as the gateway does. OpenAI: a kept-alive HTTP connection.
 * - gateway-cold: a fresh client socket to the no-pool gateway; session.create, input_transcript
 *   and session.flush back to back; timed from the input_transcript.
 * - gateway-warm-socket: one client socket that already ran a generation (LiveKit's pooled socket).
 * - gateway-prewarmed: fresh client socket to the no-pool gateway, session.create, wait
 *   `prewarmMs` (what the client's prewarm() allows), then the text.
 * - gateway-pool: fresh client socket to the pooled gateway (default config) after an earlier
 *   session parked its idle upstream socket; create + text back to back.
 *
 * Direct clients speak the provider protocol with the gateway adapter's own request (URL,
 * headers) and codec (frames, decoding), so both paths send the provider the same bytes.
 */
import http from 'node:http';
import { cartesiaTts } from '../../src/providers/tts/cartesia.ts';
import { deepgramTts } from '../../src/providers/tts/deepgram.ts';
import { elevenLabsTts } from '../../src/providers/tts/elevenlabs.ts';
import { openAiTts } from '../../src/providers/tts/openai.ts';
import type { HttpRequestSpec, ProviderEndpoint, TtsAdapter, TtsOptions, TtsWsAdapter, TtsWsCodec } from '../../src/providers/types.ts';
import { Socket, codecKind, gatewayKind, httpTimed, type Timed } from './clients.ts';
import { EMULATOR_KEYS, type ProviderName } from './emulators.ts';
import type { GatewayChild } from './gateway.ts';

export interface ProviderSpec {
  name: ProviderName;
  adapter: TtsAdapter;
  model: string;
  voice: string;
}

export const ALL_PROVIDERS: readonly ProviderSpec[] = [
  { name: 'cartesia', adapter: cartesiaTts, model: 'sonic-3', voice: '9626c31c-bec5-4cca-baa8-f8ba9e84c8bc' },
  { name: 'deepgram', adapter: deepgramTts, model: 'aura-2', voice: 'thalia' },
  { name: 'elevenlabs', adapter: elevenLabsTts, model: 'eleven_flash_v2_5', voice: 'Xb7hH8MSUJpSbSDYk0k2' },
  { name: 'openai', adapter: openAiTts, model: 'gpt-4o-mini-tts', voice: 'alloy' },
];

export const SCENARIOS = ['direct-cold', 'direct-warm', 'gateway-cold', 'gateway-warm-socket', 'gateway-prewarmed', 'gateway-pool'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/** The direct scenario each gateway scenario is compared with. */
export const REFERENCE: Partial<Record<ScenarioName, ScenarioName>> = {
  'gateway-cold': 'direct-cold',
  'gateway-warm-socket': 'direct-warm',
  'gateway-prewarmed': 'direct-warm',
  'gateway-pool': 'direct-warm',
};

export interface Sample extends Timed {
  /** the client's own socket connect, ms (NaN when the scenario opens none per generation) */
  connectMs: number;
}

export interface Scenario {
  setup(): Promise<void>;
  rep(): Promise<Sample>;
  teardown(): Promise<void>;
}

export interface ScenarioEnv {
  /** default config (pool on) */
  pooled: GatewayChild;
  /** tts.poolMaxPerKey 0 */
  noPool: GatewayChild;
  gapMs: number;
  prewarmMs: number;
  /** HTTP agents opened by scenarios (destroyed at cleanup) */
  agents: Set<http.Agent>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Direct {
  sock: Socket;
  codec: TtsWsCodec;
}

/** One provider's clients, direct and through the gateway. */
export class Ctx {
  readonly spec: ProviderSpec;
  readonly opts: TtsOptions;
  readonly endpoint: ProviderEndpoint;
  private readonly token: string;
  private readonly text: string;
  private readonly sampleRate: number;
  private genSeq = 0;

  constructor(spec: ProviderSpec, o: { token: string; port: number; text: string; sampleRate: number }) {
    this.spec = spec;
    this.token = o.token;
    this.text = o.text;
    this.sampleRate = o.sampleRate;
    this.opts = spec.adapter.validate({ model: spec.model, voice: spec.voice, language: 'en', sampleRate: o.sampleRate, extra: {} });
    this.endpoint = {
      apiKey: EMULATOR_KEYS[spec.name],
      baseUrl: spec.name === 'openai' ? `http://127.0.0.1:${o.port}/v1` : `http://127.0.0.1:${o.port}`,
      connectTimeoutMs: 10_000,
    };
  }

  get ws(): TtsWsAdapter {
    if (this.spec.adapter.kind !== 'ws') throw new Error('not a WebSocket provider');
    return this.spec.adapter;
  }

  // -- direct

  /** Open a provider socket and send its opening frames (ElevenLabs: the BOS). */
  async openDirect(): Promise<Direct> {
    const req = this.ws.request(this.opts, this.endpoint);
    const sock = await Socket.open(req.url.replace(/^http/, 'ws'), req.headers);
    const codec = this.ws.createCodec(this.opts);
    for (const m of codec.openMessages) sock.send(m);
    return { sock, codec };
  }

  /** One generation on an open provider socket; t0 = the text is sent. */
  directGeneration(d: Direct): Promise<Timed> {
    const gen = `bench_${++this.genSeq}_${process.pid}`;
    return d.sock.timed(codecKind(d.codec, gen), () => {
      const t0 = performance.now();
      for (const f of d.codec.text(gen, this.text, this.opts)) d.sock.send(f);
      for (const f of d.codec.end(gen, this.opts)) d.sock.send(f);
      return t0;
    });
  }

  httpSpec(): HttpRequestSpec {
    if (this.spec.adapter.kind !== 'http') throw new Error('not an HTTP provider');
    return this.spec.adapter.request(this.opts, this.text, this.endpoint);
  }

  // -- gateway: the LiveKit /v1/tts protocol as the Node 1.9 client speaks it

  get gatewayModel(): string {
    return `${this.spec.name}/${this.spec.model}`;
  }

  openGateway(gw: GatewayChild): Promise<Socket> {
    const url = `ws://127.0.0.1:${gw.port}/v1/tts?model=${encodeURIComponent(this.gatewayModel)}`;
    return Socket.open(url, { Authorization: `Bearer ${this.token}` });
  }

  create(sock: Socket): void {
    sock.send(
      JSON.stringify({
        type: 'session.create',
        sample_rate: String(this.sampleRate),
        encoding: 'pcm_s16le',
        model: this.gatewayModel,
        voice: this.spec.voice,
        language: 'en',
        extra: {},
        connection: { timeout: 10, retries: 3 },
      }),
    );
  }

  /** input_transcript + session.flush; t0 = the input_transcript is sent. */
  gatewayGeneration(sock: Socket): Promise<Timed> {
    const transcript = JSON.stringify({
      type: 'input_transcript',
      transcript: this.text,
      generation_config: { voice: this.spec.voice, model: this.gatewayModel, language: 'en' },
      extra: {},
    });
    return sock.timed(gatewayKind, () => {
      const t0 = performance.now();
      sock.send(transcript);
      sock.send('{"type":"session.flush"}');
      return t0;
    });
  }
}

const noop = async (): Promise<void> => {};

/** A fresh gateway socket per generation: create, [wait], text, done, close. */
function freshGatewaySocket(c: Ctx, gw: GatewayChild, waitMs: number): Scenario {
  return {
    setup: noop,
    rep: async () => {
      const c0 = performance.now();
      const sock = await c.openGateway(gw);
      const connectMs = performance.now() - c0;
      try {
        c.create(sock);
        if (waitMs > 0) await sleep(waitMs);
        return { ...(await c.gatewayGeneration(sock)), connectMs };
      } finally {
        await sock.close();
      }
    },
    teardown: noop,
  };
}

function directCold(c: Ctx): Scenario {
  if (c.spec.adapter.kind === 'http') {
    // agent: false = a new TCP connection per request (Connection: close)
    return { setup: noop, rep: async () => ({ ...(await httpTimed(c.httpSpec(), false)), connectMs: NaN }), teardown: noop };
  }
  return {
    setup: noop,
    rep: async () => {
      const t0 = performance.now();
      const d = await c.openDirect();
      const connectMs = d.sock.openedAt - t0;
      try {
        const r = await c.directGeneration(d);
        return { ttfaMs: r.ttfaMs + connectMs, totalMs: r.totalMs + connectMs, connectMs };
      } finally {
        await d.sock.close();
      }
    },
    teardown: noop,
  };
}

function directWarm(c: Ctx, env: ScenarioEnv): Scenario {
  if (c.spec.adapter.kind === 'http') {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    env.agents.add(agent);
    return {
      setup: async () => void (await httpTimed(c.httpSpec(), agent)), // opens the kept-alive connection
      rep: async () => ({ ...(await httpTimed(c.httpSpec(), agent)), connectMs: NaN }),
      teardown: async () => {
        agent.destroy();
        env.agents.delete(agent);
      },
    };
  }
  if (c.ws.reuse === 'one') {
    // One socket per generation (ElevenLabs): the next one is opened as soon as a generation
    // ends, as the gateway does; the gap passes before its text.
    let next: Promise<Direct> | null = null;
    const openNext = (): void => {
      next = c.openDirect();
      next.catch(() => {});
    };
    return {
      setup: async () => {
        openNext();
        await next;
      },
      rep: async () => {
        const pending = next ?? c.openDirect();
        next = null;
        let d: Direct;
        try {
          d = await pending;
        } catch (err) {
          openNext();
          throw err;
        }
        try {
          return { ...(await c.directGeneration(d)), connectMs: NaN };
        } finally {
          await d.sock.close();
          openNext();
        }
      },
      teardown: async () => {
        const d = await next?.catch(() => null);
        await d?.sock.close();
        next = null;
      },
    };
  }
  let d: Direct | null = null;
  return {
    setup: async () => {
      d = await c.openDirect();
      await c.directGeneration(d);
    },
    rep: async () => ({ ...(await c.directGeneration(d as Direct)), connectMs: NaN }),
    teardown: async () => {
      await d?.sock.close();
      d = null;
    },
  };
}

function gatewayWarmSocket(c: Ctx, gw: GatewayChild): Scenario {
  let sock: Socket | null = null;
  return {
    setup: async () => {
      sock = await c.openGateway(gw);
      c.create(sock);
      await c.gatewayGeneration(sock);
    },
    rep: async () => ({ ...(await c.gatewayGeneration(sock as Socket)), connectMs: NaN }),
    teardown: async () => {
      await sock?.close();
      sock = null;
    },
  };
}

export function scenario(name: ScenarioName, c: Ctx, env: ScenarioEnv): Scenario {
  switch (name) {
    case 'direct-cold':
      return directCold(c);
    case 'direct-warm':
      return directWarm(c, env);
    case 'gateway-cold':
      return freshGatewaySocket(c, env.noPool, 0);
    case 'gateway-prewarmed':
      return freshGatewaySocket(c, env.noPool, env.prewarmMs);
    case 'gateway-warm-socket':
      return gatewayWarmSocket(c, env.pooled);
    case 'gateway-pool': {
      const s = freshGatewaySocket(c, env.pooled, 0);
      // An earlier session leaves its idle upstream socket in the gateway's pool.
      return { ...s, setup: async () => void (await s.rep()) };
    }
  }
}
