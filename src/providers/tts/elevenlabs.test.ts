import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { TtsEvent, TtsOptions } from '../types.ts';
import { ElevenLabsCodec, elevenLabsCloseError, elevenLabsError, elevenLabsTts } from './elevenlabs.ts';

function fixture(name: string): Buffer[] {
  return readFileSync(new URL(`../../../test/fixtures/tts/${name}`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => Buffer.from(l));
}

const VOICE = 'Xb7hH8MSUJpSbSDYk0k2';
const opts = (over: Partial<TtsOptions> = {}): TtsOptions => ({
  model: 'eleven_flash_v2_5',
  voice: VOICE,
  language: undefined,
  sampleRate: 24000,
  extra: {},
  ...over,
});
const endpoint = { apiKey: 'xi-secret-key', baseUrl: 'https://api.elevenlabs.io', connectTimeoutMs: 1000 };

function rejects(o: TtsOptions): GatewayError {
  try {
    elevenLabsTts.validate(o);
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('bad_request');
    return err as GatewayError;
  }
  throw new Error('expected validate to throw');
}

function query(o: TtsOptions): Record<string, string> {
  const url = new URL(elevenLabsTts.request(elevenLabsTts.validate(o), endpoint).url);
  return Object.fromEntries(url.searchParams);
}

/** Alignment words of a list of events, rounded to the millisecond. */
function words(events: TtsEvent[]): { word: string; start: number; end: number }[] {
  const r = (n: number) => Math.round(n * 1000) / 1000;
  return events.flatMap((e) =>
    e.type === 'alignment' ? (e.alignment.words ?? []).map((w) => ({ word: w.word, start: r(w.start), end: r(w.end) })) : [],
  );
}

function message(pcmBytes: number, chars: string, stepMs: number, startMs = 0): Buffer {
  const a = { chars: [...chars], charStartTimesMs: [...chars].map((_, i) => startMs + i * stepMs), charDurationsMs: [...chars].map(() => stepMs) };
  return Buffer.from(JSON.stringify({ audio: Buffer.alloc(pcmBytes).toString('base64'), normalizedAlignment: a, alignment: a }));
}

describe('elevenlabs validate', () => {
  it('accepts every documented option', () => {
    const extra = {
      inactivity_timeout: 60,
      sync_alignment: true,
      auto_mode: false,
      apply_text_normalization: 'on',
      enable_ssml_parsing: true,
      enable_logging: false,
      language_code: 'de',
      stability: 0.5,
      similarity_boost: 0.75,
      style: 0,
      use_speaker_boost: true,
      speed: 1.1,
      chunk_length_schedule: [120, 160, 250, 290],
      preferred_alignment: 'original',
    };
    expect(elevenLabsTts.validate(opts({ extra })).extra).toEqual(extra);
  });

  it('rejects unknown, out-of-range and gateway-owned options, naming them', () => {
    expect(rejects(opts({ extra: { seedling: 1 } })).message).toMatch(/unknown option "seedling"/);
    expect(rejects(opts({ extra: { inactivity_timeout: 200 } })).message).toMatch(/"inactivity_timeout" must be an integer from 5 to 180/);
    expect(rejects(opts({ extra: { inactivity_timeout: 4 } })).message).toMatch(/"inactivity_timeout"/);
    expect(rejects(opts({ extra: { stability: 1.5 } })).message).toMatch(/"stability" must be a number from 0 to 1/);
    expect(rejects(opts({ extra: { speed: 2 } })).message).toMatch(/"speed" must be a number from 0.7 to 1.2/);
    expect(rejects(opts({ extra: { apply_text_normalization: 'yes' } })).message).toMatch(/one of auto, on, off/);
    expect(rejects(opts({ extra: { chunk_length_schedule: [120, 160, 250, 290, 300] } })).message).toMatch(/at most 4 numbers from 50 to 500/);
    expect(rejects(opts({ extra: { chunk_length_schedule: [20] } })).message).toMatch(/"chunk_length_schedule"/);
    expect(rejects(opts({ extra: { preferred_alignment: 'both' } })).message).toMatch(/"preferred_alignment" must be one of normalized, original/);
    expect(rejects(opts({ extra: { output_format: 'mp3_44100_128' } })).message).toMatch(/"output_format" is not accepted/);
    expect(rejects(opts({ extra: { xi_api_key: 'k' } })).message).toMatch(/"xi_api_key" is not accepted/);
  });

  it('rejects bad voices and languages the model cannot take', () => {
    expect(rejects(opts({ voice: '../v1/user' })).message).toMatch(/voice must be an ElevenLabs voice id/);
    expect(rejects(opts({ language: 'english!' })).message).toMatch(/language must be an ISO 639-1 code/);
    expect(rejects(opts({ extra: { language_code: 'deutsch' } })).message).toMatch(/option "language_code" must be an ISO 639-1 code/);
    expect(rejects(opts({ model: 'eleven_flash_v2', language: 'de' })).message).toMatch(/eleven_flash_v2 is English only/);
    expect(rejects(opts({ model: 'eleven_turbo_v2', extra: { language_code: 'fr' } })).message).toMatch(/English only \(option "language_code"/);
  });
});

describe('elevenlabs request', () => {
  it('builds the stream-input URL with defaults and keeps the key in the header only', () => {
    const o = elevenLabsTts.validate(opts({ language: 'en-US' }));
    const req = elevenLabsTts.request(o, endpoint);
    expect(req.url).toBe(
      `https://api.elevenlabs.io/v1/text-to-speech/${VOICE}/stream-input?model_id=eleven_flash_v2_5&output_format=pcm_24000&language_code=en&inactivity_timeout=180&auto_mode=true`,
    );
    expect(req.headers).toEqual({ 'xi-api-key': 'xi-secret-key' });
    expect(elevenLabsTts.connectionKey(o)).not.toContain('xi-secret-key');
    expect(elevenLabsTts.createCodec(o).openMessages.join()).not.toContain('xi-secret-key');
  });

  it('maps query options; the language_code option beats the session language', () => {
    expect(
      query(
        opts({
          language: 'en',
          sampleRate: 16000,
          extra: { language_code: 'de', inactivity_timeout: 30, sync_alignment: true, apply_text_normalization: 'off', enable_ssml_parsing: true, enable_logging: false },
        }),
      ),
    ).toEqual({
      model_id: 'eleven_flash_v2_5',
      output_format: 'pcm_16000',
      language_code: 'de',
      inactivity_timeout: '30',
      sync_alignment: 'true',
      apply_text_normalization: 'off',
      enable_ssml_parsing: 'true',
      enable_logging: 'false',
      auto_mode: 'true',
    });
  });

  it('turns auto_mode on only when the client left buffering alone', () => {
    expect(query(opts()).auto_mode).toBe('true');
    expect(query(opts({ extra: { auto_mode: false } })).auto_mode).toBe('false');
    expect(query(opts({ extra: { chunk_length_schedule: [50, 120] } })).auto_mode).toBeUndefined();
    expect(query(opts({ extra: { chunk_length_schedule: [] } })).auto_mode).toBe('true');
  });

  it('sends no language_code to English-only models', () => {
    expect(query(opts({ model: 'eleven_turbo_v2', language: 'en' })).language_code).toBeUndefined();
    expect(query(opts({ model: 'eleven_multilingual_v2', language: 'pt-BR' })).language_code).toBe('pt');
  });

  it('keys sockets by everything fixed at connect: voice, model, format, query, BOS settings, alignment choice', () => {
    const key = (o: Partial<TtsOptions>) => elevenLabsTts.connectionKey(elevenLabsTts.validate(opts(o)));
    const base = key({});
    expect(key({})).toBe(base);
    expect(key({ voice: 'EXAVITQu4vr4xnSDxMaL' })).not.toBe(base);
    expect(key({ model: 'eleven_turbo_v2_5' })).not.toBe(base);
    expect(key({ sampleRate: 16000 })).not.toBe(base);
    expect(key({ extra: { sync_alignment: true } })).not.toBe(base);
    expect(key({ extra: { stability: 0.3 } })).not.toBe(base);
    expect(key({ extra: { preferred_alignment: 'original' } })).not.toBe(base);
  });

  it('declares one generation per socket, word alignment behind sync_alignment, pcm rates', () => {
    expect(elevenLabsTts.reuse).toBe('one');
    expect(elevenLabsTts.capabilities).toEqual({
      alignment: { kind: 'words', flag: 'sync_alignment' },
      sampleRates: [8000, 16000, 22050, 24000, 44100],
    });
    expect(elevenLabsTts.models).toContain(elevenLabsTts.defaultModel);
    expect(() => elevenLabsTts.validate(opts({ model: elevenLabsTts.defaultModel, voice: elevenLabsTts.defaultVoice }))).not.toThrow();
  });
});

describe('elevenlabs codec frames', () => {
  it('opens with a bare BOS when no settings were given', () => {
    const codec = elevenLabsTts.createCodec(elevenLabsTts.validate(opts()));
    expect(codec.openMessages).toEqual(['{"text":" "}']);
    expect(codec.keepAlive).toEqual({ message: '{"text":" "}', idleMs: 60000 });
  });

  it('puts only the given voice settings and the schedule in the BOS', () => {
    const o = elevenLabsTts.validate(
      opts({ extra: { stability: 0.4, speed: 0.9, use_speaker_boost: false, chunk_length_schedule: [50, 90], inactivity_timeout: 6 } }),
    );
    const codec = elevenLabsTts.createCodec(o);
    expect(codec.openMessages).toEqual([
      '{"text":" ","voice_settings":{"stability":0.4,"use_speaker_boost":false,"speed":0.9},"generation_config":{"chunk_length_schedule":[50,90]}}',
    ]);
    expect(codec.keepAlive).toEqual({ message: '{"text":" "}', idleMs: 2000 });
  });

  it('sends chunks verbatim, never an empty text before the end, and EOS at the end', () => {
    const o = opts();
    const codec = elevenLabsTts.createCodec(o);
    expect(codec.text('g1', 'Hello "world". ', o)).toEqual(['{"text":"Hello \\"world\\". "}']);
    expect(codec.text('g1', '<break time="1s"/> ', o)).toEqual(['{"text":"<break time=\\"1s\\"/> "}']);
    expect(codec.text('g1', '', o)).toEqual([]);
    expect(codec.end('g1', o)).toEqual(['{"text":""}']);
  });
});

describe('elevenlabs decode', () => {
  it('decodes audio and done; no alignment without sync_alignment', () => {
    const codec = new ElevenLabsCodec(opts({ sampleRate: 8000 }));
    const events = fixture('elevenlabs-two-chunks.jsonl').flatMap((m) => codec.decode(m, false));
    expect(events.map((e) => e.type)).toEqual(['audio', 'audio', 'done']);
    expect(events.map((e) => (e.type === 'audio' ? e.pcm.length : 0))).toEqual([4000, 6400, 0]);
  });

  it('turns normalized alignment into words on the generation timeline', () => {
    const codec = new ElevenLabsCodec(opts({ sampleRate: 8000, extra: { sync_alignment: true } }));
    const events = fixture('elevenlabs-two-chunks.jsonl').flatMap((m) => codec.decode(m, false));
    expect(events.map((e) => e.type)).toEqual(['audio', 'alignment', 'audio', 'alignment', 'done']);
    // The second message starts 4000 bytes = 0.25 s into the generation at 8 kHz.
    expect(words(events)).toEqual([
      { word: 'Hi', start: 0.018, end: 0.054 },
      { word: 'there.', start: 0.072, end: 0.18 },
      { word: "It's", start: 0.25, end: 0.33 },
      { word: 'five', start: 0.35, end: 0.43 },
      { word: 'dollars.', start: 0.45, end: 0.61 },
    ]);
  });

  it('uses the original alignment when asked', () => {
    const codec = new ElevenLabsCodec(opts({ sampleRate: 8000, extra: { sync_alignment: true, preferred_alignment: 'original' } }));
    const events = fixture('elevenlabs-two-chunks.jsonl').flatMap((m) => codec.decode(m, false));
    expect(words(events)).toEqual([
      { word: 'Hi', start: 0, end: 0.04 },
      { word: 'there.', start: 0.06, end: 0.18 },
      { word: "It's", start: 0.25, end: 0.41 },
      { word: '$5.', start: 0.45, end: 0.57 },
    ]);
  });

  it('keeps the offset across several chunks and joins a word split between messages', () => {
    const codec = new ElevenLabsCodec(opts({ sampleRate: 16000, extra: { sync_alignment: true } }));
    const events = [
      message(16000, 'One two ', 50), // 0.5 s at 16 kHz
      message(32000, 'three fo', 50), // 1.0 s, ends inside a word
      message(8000, 'ur. ', 40), // 0.25 s
      message(8000, 'Bye.', 50), // no trailing space: closed by isFinal
      Buffer.from('{"isFinal":true}'),
    ].flatMap((m) => codec.decode(m, false));
    expect(words(events)).toEqual([
      { word: 'One', start: 0, end: 0.15 },
      { word: 'two', start: 0.2, end: 0.35 },
      { word: 'three', start: 0.5, end: 0.75 },
      { word: 'four.', start: 0.8, end: 1.62 },
      { word: 'Bye.', start: 1.75, end: 1.95 },
    ]);
    expect(events.at(-1)).toEqual({ type: 'done', gen: null });
    expect(events.at(-2)?.type).toBe('alignment');
  });

  it('falls back to the other alignment when the preferred one is missing', () => {
    const codec = new ElevenLabsCodec(opts({ sampleRate: 8000, extra: { sync_alignment: true } }));
    const msg = { audio: Buffer.alloc(800).toString('base64'), alignment: { chars: ['O', 'k', ' '], charStartTimesMs: [0, 10, 20], charDurationsMs: [10, 10, 10] } };
    expect(words(codec.decode(Buffer.from(JSON.stringify(msg)), false))).toEqual([{ word: 'Ok', start: 0, end: 0.02 }]);
  });

  it('maps the input timeout message to a provider_timeout with the provider text', () => {
    const codec = new ElevenLabsCodec(opts());
    const [m] = fixture('elevenlabs-input-timeout.jsonl');
    const events = codec.decode(m as Buffer, false);
    expect(events).toHaveLength(1);
    const ev = events[0] as { type: string; error: GatewayError };
    expect(ev.type).toBe('error');
    expect(ev.error.code).toBe('provider_timeout');
    expect(ev.error.message).toMatch(/^elevenlabs: Have not received a new text input within the timeout/);
    expect(ev.error.message).toMatch(/\(input_timeout_exceeded\)$/);
  });

  it('maps in-band error codes', () => {
    expect(elevenLabsError('quota_exceeded', 'This request exceeds your quota.').code).toBe('rate_limited');
    expect(elevenLabsError('invalid_api_key', 'Invalid API key').code).toBe('unauthorized');
    expect(elevenLabsError('voice_not_found', 'A voice with voice_id x was not found.').code).toBe('bad_request');
    expect(elevenLabsError(undefined, 'We are sorry, something went wrong.').code).toBe('provider_error');
    expect(elevenLabsError('toString', 'x').code).toBe('provider_error');
  });

  it('reports garbage as an error and ignores binary frames', () => {
    const codec = new ElevenLabsCodec(opts());
    expect(codec.decode(Buffer.from([1, 2]), true)).toEqual([]);
    const [ev] = codec.decode(Buffer.from('{nope'), false);
    expect((ev as { error: GatewayError }).error.code).toBe('provider_error');
  });
});

describe('elevenlabs close', () => {
  it('classifies 1008 closes by their reason', () => {
    expect(elevenLabsCloseError(1008, 'This request exceeds your quota of 10000. You have 3 credits remaining.').code).toBe('rate_limited');
    expect(elevenLabsCloseError(1008, 'Invalid API key').code).toBe('unauthorized');
    expect(elevenLabsCloseError(1008, 'Have not received a new text input within the timeout of 20 seconds.').code).toBe('provider_timeout');
    expect(elevenLabsCloseError(1008, 'Invalid model_id').code).toBe('bad_request');
    expect(elevenLabsCloseError(1008, 'We are sorry, something went wrong. You are not charged for this request.').code).toBe('provider_error');
  });

  it('treats any other unrequested close, 1000 included, as the stream ending early', () => {
    const err = elevenLabsCloseError(1000, '');
    expect(err.code).toBe('provider_error');
    expect(err.message).toMatch(/before the generation finished \(close 1000\)/);
    expect(elevenLabsCloseError(1011, 'internal').fields).toEqual({ provider_close: 1011 });
  });
});
