/**
 * Run an emulator standalone:
 *
 *   npx node test/emulators/cli.ts deepgram --port 9100 [--key K]... [--tls] [--host H]
 *
 * Logs each connection and close on stderr; stops on SIGINT/SIGTERM. To add an emulator, add an
 * entry to EMULATORS (name -> start function).
 */
import { parseArgs } from 'node:util';
import { selfSignedCert, type ConnectionRecord, type EmulatorServer, type RejectedUpgrade, type TlsOptions } from './base.ts';
import { ANTHROPIC_REALISTIC_TIMING, startAnthropicEmulator } from './anthropic.ts';
import { startAssemblyAiEmulator } from './assemblyai.ts';
import { startCartesiaEmulator } from './cartesia.ts';
import { startDeepgramSpeakEmulator } from './deepgram-speak.ts';
import { startDeepgramEmulator } from './deepgram.ts';
import { startDeepgramFluxEmulator } from './deepgram-flux.ts';
import { startElevenLabsEmulator } from './elevenlabs.ts';
import { OPENAI_CHAT_REALISTIC_TIMING, startOpenAiChatEmulator, type ChatVendor } from './openai-chat.ts';
import { OPENAI_REALTIME_REALISTIC_TIMING, startOpenAiRealtimeEmulator } from './openai-realtime.ts';
import { OPENAI_SPEECH_REALISTIC_TIMING, startOpenAiSpeechEmulator } from './openai-speech.ts';

export interface CliOptions {
  port: number;
  host: string;
  keys: string[];
  tls?: TlsOptions;
}

export interface RunningEmulator {
  server: EmulatorServer;
  close(): Promise<void>;
  /** one line describing how to reach it */
  describe(): string;
}

export const EMULATORS: Record<string, (o: CliOptions) => Promise<RunningEmulator>> = {
  deepgram: async (o) => {
    const emu = await startDeepgramEmulator({
      port: o.port,
      host: o.host,
      tls: o.tls,
      ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}),
    });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () =>
        `deepgram live STT v1 at ${emu.wsUrl}/v1/listen (keys: ${emu.options.apiKeys.join(', ')}; SDK baseUrl ${emu.url})`,
    };
  },
  assemblyai: async (o) => {
    const emu = await startAssemblyAiEmulator({ port: o.port, host: o.host, tls: o.tls, ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}) });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () =>
        `assemblyai streaming v3 at ${emu.streamingUrl}, tokens at GET ${emu.url}/v3/token (Authorization: ${emu.options.apiKeys.join(', ')}; the SDK needs --tls)`,
    };
  },
  'deepgram-flux': async (o) => {
    const emu = await startDeepgramFluxEmulator({ port: o.port, host: o.host, tls: o.tls, ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}) });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () => `deepgram Flux STT v2 at ${emu.wsUrl}/v2/listen (keys: ${emu.options.apiKeys.join(', ')}; SDK baseUrl ${emu.url})`,
    };
  },
  'deepgram-speak': async (o) => {
    const emu = await startDeepgramSpeakEmulator({ port: o.port, host: o.host, tls: o.tls, ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}) });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () =>
        `deepgram Aura TTS at ${emu.wsUrl}/v1/speak and POST ${emu.url}/v1/speak (keys: ${emu.options.apiKeys.join(', ')}; SDK baseUrl ${emu.url})`,
    };
  },
  cartesia: async (o) => {
    const emu = await startCartesiaEmulator({ port: o.port, host: o.host, tls: o.tls, ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}) });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () =>
        `cartesia TTS ${emu.ttsUrl}, STT ${emu.sttUrl} (ink-whisper, ink-2) and ${emu.sttTurnsUrl} (ink-2 turns) (X-API-Key or Bearer: ${emu.options.apiKeys.join(', ')}; Cartesia-Version required; SDK baseURL ${emu.url})`,
    };
  },
  elevenlabs: async (o) => {
    const emu = await startElevenLabsEmulator({ port: o.port, host: o.host, tls: o.tls, ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}) });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () =>
        `elevenlabs TTS at ${emu.wsUrl}/v1/text-to-speech/{voice_id}/stream-input and /multi-stream-input, REST POST ${emu.url}/v1/text-to-speech/{voice_id}/stream; Scribe STT at ${emu.scribeUrl({ model_id: 'scribe_v2_realtime' })} (keys: ${emu.options.apiKeys.join(', ')})`,
    };
  },
  'openai-chat': async (o) => {
    const emu = await startOpenAiChatEmulator({
      port: o.port,
      host: o.host,
      tls: o.tls,
      vendor: (process.env['EMULATOR_VENDOR'] ?? 'openai') as ChatVendor,
      ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}),
      ...(process.env['EMULATOR_REALISTIC'] === '1' ? OPENAI_CHAT_REALISTIC_TIMING : {}),
      log,
    });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () =>
        `openai chat completions (${emu.options.vendor}) at POST ${emu.chatUrl}, GET ${emu.baseUrl}/models (keys: ${emu.options.apiKeys.join(', ')}; SDK baseURL ${emu.baseUrl})`,
    };
  },
  anthropic: async (o) => {
    const emu = await startAnthropicEmulator({
      port: o.port,
      host: o.host,
      tls: o.tls,
      ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}),
      ...(process.env['EMULATOR_REALISTIC'] === '1' ? ANTHROPIC_REALISTIC_TIMING : {}),
      log,
    });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () => `anthropic messages at POST ${emu.messagesUrl} (x-api-key: ${emu.options.apiKeys.join(', ')}; SDK baseURL ${emu.baseUrl})`,
    };
  },
  'openai-realtime': async (o) => {
    const emu = await startOpenAiRealtimeEmulator({
      port: o.port,
      host: o.host,
      tls: o.tls,
      ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}),
      ...(process.env['EMULATOR_REALISTIC'] === '1' ? OPENAI_REALTIME_REALISTIC_TIMING : {}),
    });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () => `openai realtime transcription at ${emu.transcriptionUrl} (Bearer: ${emu.options.apiKeys.join(', ')}; pcm 24 kHz)`,
    };
  },
  'openai-speech': async (o) => {
    const emu = await startOpenAiSpeechEmulator({
      port: o.port,
      host: o.host,
      tls: o.tls,
      ...(o.keys.length > 0 ? { apiKeys: o.keys } : {}),
      ...(process.env['EMULATOR_REALISTIC'] === '1' ? OPENAI_SPEECH_REALISTIC_TIMING : {}),
      log,
    });
    return {
      server: emu.server,
      close: () => emu.close(),
      describe: () =>
        `openai speech at ${emu.speechUrl} (keys: ${emu.options.apiKeys.join(', ')}; first audio ${emu.options.firstAudioDelayMs} ms, ${emu.options.realtimeFactor}x real time; SDK baseURL ${emu.baseUrl})`,
    };
  },
};

function usage(): string {
  return `usage: node test/emulators/cli.ts <${Object.keys(EMULATORS).join('|')}> [--port N] [--host H] [--key K]... [--tls]`;
}

function log(line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

export async function main(argv: string[]): Promise<RunningEmulator | null> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      key: { type: 'string', multiple: true },
      tls: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const name = positionals[0];
  const start = name ? EMULATORS[name] : undefined;
  if (values.help || !start) {
    process.stderr.write(usage() + '\n');
    process.exitCode = values.help ? 0 : 2;
    return null;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad --port ${values.port}`);
  const running = await start({
    port,
    host: values.host,
    keys: values.key ?? [],
    tls: values.tls ? selfSignedCert() : undefined,
  });
  const s = running.server;
  s.on('connection', (c: ConnectionRecord) => log(`#${c.id} open ${c.url}`));
  s.on('connection-close', (c: ConnectionRecord) => {
    const frames = c.frames.length;
    log(`#${c.id} closed by ${c.close?.by} code=${c.close?.code} reason=${JSON.stringify(c.close?.reason ?? '')} audio=${c.audioSeconds.toFixed(2)}s frames=${frames}`);
  });
  s.on('rejected', (r: RejectedUpgrade) => log(`rejected ${r.url} -> ${r.status} ${r.body}`));
  log(running.describe());
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: stopping`);
    running.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log(`close failed: ${String(err)}`);
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  return running;
}

if (import.meta.main) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    log(`failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
