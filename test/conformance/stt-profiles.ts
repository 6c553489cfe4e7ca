/**
 * One profile per STT adapter for the shared conformance suite (stt.case.ts): its emulator, the
 * gateway environment pointing at it, a model string, and the capabilities the suite expects.
 * A capability an adapter lacks carries its reason (the provider's API has no such feature).
 */
import { startAssemblyAiEmulator } from '../emulators/assemblyai.ts';
import { startCartesiaEmulator } from '../emulators/cartesia.ts';
import { startElevenLabsEmulator } from '../emulators/elevenlabs.ts';
import { startDeepgramEmulator } from '../emulators/deepgram.ts';
import { startDeepgramFluxEmulator } from '../emulators/deepgram-flux.ts';
import { startOpenAiRealtimeEmulator } from '../emulators/openai-realtime.ts';

export interface SttEmu {
  env: Record<string, string>;
  /** Extra config file content (e.g. a configured upstream). */
  file?: Record<string, unknown>;
  /** Upstream connections so far. */
  connections(): number;
  /** Whether the most recent upstream connection is closed. */
  lastClosed(): boolean;
  close(): Promise<void>;
}

export interface SttProfile {
  name: string;
  /** Model string as a client sends it. */
  model: string;
  /** Silence that surely ends an utterance for this provider (ms). */
  endOfUtteranceMs: number;
  capabilities: {
    wordTimings: true | string;
    startOfSpeech: true | string;
    finalize: true | string;
  };
  /** An `extra` the adapter must refuse (400). */
  badExtra: Record<string, unknown>;
  start(): Promise<SttEmu>;
}

const deepgram: SttProfile = {
  name: 'deepgram nova',
  model: 'deepgram/nova-3',
  endOfUtteranceMs: 1500,
  capabilities: { wordTimings: true, startOfSpeech: true, finalize: true },
  badExtra: { endpointing: 'soon' },
  async start() {
    const emu = await startDeepgramEmulator({ interimIntervalMs: 400 });
    return {
      env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: emu.url },
      connections: () => emu.connections.length,
      lastClosed: () => emu.connections.at(-1)?.record.closed ?? false,
      close: () => emu.close(),
    };
  },
};

const openAiRealtime: SttProfile = {
  name: 'openai-realtime (configured upstream)',
  model: 'whisper/gpt-4o-transcribe',
  endOfUtteranceMs: 1500,
  capabilities: {
    wordTimings: 'the Realtime transcription API returns no word timings',
    startOfSpeech: true,
    finalize: true,
  },
  badExtra: { vad_threshold: 7 },
  async start() {
    const emu = await startOpenAiRealtimeEmulator({ apiKeys: ['rt-key'] });
    return {
      env: { RT_KEY: 'rt-key' },
      file: {
        stt: { upstreams: { whisper: { protocol: 'openai-realtime', baseUrl: `${emu.url}/v1`, apiKey: 'env:RT_KEY', model: 'gpt-4o-transcribe' } } },
        pricing: { stt: { 'whisper/gpt-4o-transcribe': { usdPerMinute: 0.006 } } },
      },
      connections: () => emu.connections.length,
      lastClosed: () => emu.connections.at(-1)?.record.closed ?? false,
      close: () => emu.close(),
    };
  },
};

const flux: SttProfile = {
  name: 'deepgram flux',
  model: 'deepgram/flux-general-en',
  endOfUtteranceMs: 1500,
  capabilities: { wordTimings: true, startOfSpeech: true, finalize: true },
  badExtra: { eot_threshold: 0.2 },
  async start() {
    const emu = await startDeepgramFluxEmulator();
    return {
      env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: emu.url },
      connections: () => emu.connections.length,
      lastClosed: () => emu.connections.at(-1)?.record.closed ?? false,
      close: () => emu.close(),
    };
  },
};

const assemblyai: SttProfile = {
  name: 'assemblyai universal-streaming',
  model: 'assemblyai/universal-streaming',
  endOfUtteranceMs: 1500,
  capabilities: { wordTimings: true, startOfSpeech: true, finalize: true },
  badExtra: { end_of_turn_confidence_threshold: 3 },
  async start() {
    const emu = await startAssemblyAiEmulator();
    return {
      env: { ASSEMBLYAI_API_KEY: 'aai-test-key', ASSEMBLYAI_BASE_URL: emu.url },
      connections: () => emu.connections.length,
      lastClosed: () => emu.connections.at(-1)?.record.closed ?? false,
      close: () => emu.close(),
    };
  },
};

function cartesiaProfile(name: string, model: string, wordTimings: true | string, badExtra: Record<string, unknown>): SttProfile {
  return {
    name,
    model,
    endOfUtteranceMs: 1500,
    capabilities: { wordTimings, startOfSpeech: model.endsWith('ink-2') ? true : 'ink-whisper has no speech onset event', finalize: true },
    badExtra,
    async start() {
      const emu = await startCartesiaEmulator();
      return {
        env: { CARTESIA_API_KEY: 'cartesia-test-key', CARTESIA_BASE_URL: emu.url },
        connections: () => emu.sttConnections.length,
        lastClosed: () => emu.sttConnections.at(-1)?.record.closed ?? false,
        close: () => emu.close(),
      };
    },
  };
}

const scribe: SttProfile = {
  name: 'elevenlabs scribe',
  model: 'elevenlabs/scribe_v2_realtime',
  endOfUtteranceMs: 2000,
  capabilities: { wordTimings: true, startOfSpeech: 'Scribe has no speech onset event', finalize: true },
  badExtra: { vad_threshold: 5 },
  async start() {
    const emu = await startElevenLabsEmulator({ scribe: { processingStartSec: 0 } });
    return {
      env: { ELEVENLABS_API_KEY: 'el-test-key', ELEVENLABS_BASE_URL: emu.url },
      connections: () => emu.scribeConnections.length,
      lastClosed: () => emu.scribeConnections.at(-1)?.record.closed ?? false,
      close: () => emu.close(),
    };
  },
};

export const STT_PROFILES: readonly SttProfile[] = [
  deepgram,
  flux,
  assemblyai,
  cartesiaProfile('cartesia ink-whisper', 'cartesia/ink-whisper', true, { min_volume: 3 }),
  cartesiaProfile('cartesia ink-2 turns', 'cartesia/ink-2', 'the turns endpoint sends text without word timings', { turn_end_threshold: 7 }),
  scribe,
  openAiRealtime,
];
