/**
 * One profile per TTS provider for the shared conformance suite: how to start its emulator,
 * the gateway environment pointing at it, a model string, and the few provider-side facts the
 * suite checks (upstream connections, characters received, cancellation).
 */
import { startCartesiaEmulator, type CartesiaEmulator } from '../emulators/cartesia.ts';
import { startDeepgramSpeakEmulator, type DeepgramSpeakEmulator } from '../emulators/deepgram-speak.ts';
import { startElevenLabsEmulator, type ElevenLabsEmulator } from '../emulators/elevenlabs.ts';
import { startOpenAiSpeechEmulator, type OpenAiSpeechEmulator } from '../emulators/openai-speech.ts';

export const MS_PER_CHAR = 60;

export interface TtsEmu {
  env: Record<string, string>;
  /** Upstream WebSocket connections opened, or HTTP requests made. */
  upstreamCount(): number;
  /** Characters the provider received, over everything. */
  charsReceived(): number;
  /** Resolves once the most recent upstream unit was cut by the gateway (socket closed / request aborted). */
  waitCancelled(timeoutMs?: number): Promise<void>;
  /** Every upstream connection/request is refused with this HTTP status (null: stop refusing). */
  setRefusal(status: number | null): void;
  /** Every generation from now on waits this long before its first audio. */
  setFirstAudioDelay(ms: number): void;
  close(): Promise<void>;
}

export interface TtsProfile {
  provider: string;
  /** Model string as a client sends it. */
  model: string;
  /** Extra that turns alignment on, when the provider has it. */
  alignmentExtra: Record<string, unknown> | null;
  /** Alignment granularity the gateway emits for this provider. */
  alignmentKind: 'words' | 'chars' | null;
  /** A provider socket serves many generations (else one socket or request per generation). */
  reusesSocket: boolean;
  start(): Promise<TtsEmu>;
}

const cartesia: TtsProfile = {
  provider: 'cartesia',
  model: 'cartesia/sonic-3:9626c31c-bec5-4cca-baa8-f8ba9e84c8bc',
  alignmentExtra: { add_timestamps: true },
  alignmentKind: 'words',
  reusesSocket: true,
  async start() {
    const emu: CartesiaEmulator = await startCartesiaEmulator({ msPerChar: MS_PER_CHAR });
    return {
      env: { CARTESIA_API_KEY: 'cartesia-test-key', CARTESIA_BASE_URL: emu.url },
      upstreamCount: () => emu.connections.length,
      charsReceived: () => emu.connections.reduce((n, c) => n + c.charsReceived, 0),
      async waitCancelled(timeoutMs = 3000) {
        await emu.waitFor(
          () => emu.connections.some((c) => c.record.closed && c.contexts.some((x) => x.chars > 0 && x.doneAt === null)),
          timeoutMs,
          'cartesia socket closed with a context still generating',
        );
      },
      setRefusal: (status) => {
        emu.faults.refuseUpgrade = status === null ? null : { status };
      },
      setFirstAudioDelay: (ms) => {
        (emu.options as { firstAudioDelayMs: number }).firstAudioDelayMs = ms;
      },
      close: () => emu.close(),
    };
  },
};

const deepgram: TtsProfile = {
  provider: 'deepgram',
  model: 'deepgram/aura-2:thalia',
  alignmentExtra: null,
  alignmentKind: null,
  reusesSocket: true,
  async start() {
    const emu: DeepgramSpeakEmulator = await startDeepgramSpeakEmulator({ msPerChar: MS_PER_CHAR });
    return {
      env: { DEEPGRAM_API_KEY: 'dg-test-key', DEEPGRAM_BASE_URL: emu.url },
      upstreamCount: () => emu.connections.length,
      charsReceived: () => emu.connections.reduce((n, c) => n + c.charsReceived, 0),
      async waitCancelled(timeoutMs = 3000) {
        await emu.waitFor(
          () => emu.connections.some((c) => c.record.closed && c.buffer.length > 0),
          timeoutMs,
          'deepgram socket closed with text still buffered',
        );
      },
      setRefusal: (status) => {
        emu.faults.refuseUpgrade = status === null ? null : { status };
      },
      setFirstAudioDelay: (ms) => {
        (emu.options as { firstAudioDelayMs: number }).firstAudioDelayMs = ms;
        for (const c of emu.connections) c.timing.firstAudioDelayMs = ms;
      },
      close: () => emu.close(),
    };
  },
};

const elevenlabs: TtsProfile = {
  provider: 'elevenlabs',
  model: 'elevenlabs/eleven_flash_v2_5:Xb7hH8MSUJpSbSDYk0k2',
  alignmentExtra: { sync_alignment: true },
  alignmentKind: 'words',
  reusesSocket: false,
  async start() {
    const emu: ElevenLabsEmulator = await startElevenLabsEmulator({ msPerChar: MS_PER_CHAR, authFailure: 401 });
    return {
      env: { ELEVENLABS_API_KEY: 'el-test-key', ELEVENLABS_BASE_URL: emu.url },
      upstreamCount: () => emu.connections.length,
      charsReceived: () => emu.connections.reduce((n, c) => n + c.characters, 0),
      async waitCancelled(timeoutMs = 3000) {
        await emu.waitFor(
          () => emu.connections.find((c) => c.characters > 0 && c.record.closed && c.isFinal === 0),
          timeoutMs,
          'elevenlabs socket with text closed before isFinal',
        );
      },
      setRefusal: (status) => {
        emu.faults.refuseUpgrade = status === null ? null : { status };
      },
      setFirstAudioDelay: (ms) => {
        (emu.options as { firstAudioDelayMs: number }).firstAudioDelayMs = ms;
      },
      close: () => emu.close(),
    };
  },
};

const openai: TtsProfile = {
  provider: 'openai',
  model: 'openai/gpt-4o-mini-tts:alloy',
  alignmentExtra: null,
  alignmentKind: null,
  reusesSocket: false,
  async start() {
    const emu: OpenAiSpeechEmulator = await startOpenAiSpeechEmulator({ msPerChar: MS_PER_CHAR });
    return {
      env: { OPENAI_API_KEY: 'sk-test-key', OPENAI_BASE_URL: `${emu.url}/v1` },
      upstreamCount: () => emu.requests.length,
      charsReceived: () => emu.requests.reduce((n, r) => n + [...r.text].length, 0),
      async waitCancelled(timeoutMs = 3000) {
        await emu.waitFor(() => emu.requests.some((r) => r.outcome === 'aborted'), timeoutMs, 'openai request aborted');
      },
      setRefusal: (status) => {
        emu.faults.status = status;
      },
      setFirstAudioDelay: (ms) => {
        emu.faults.firstAudioDelayMs = ms;
      },
      close: () => emu.close(),
    };
  },
};

export const TTS_PROFILES: readonly TtsProfile[] = [cartesia, deepgram, elevenlabs, openai];
