import { describe, expect, it } from 'vitest';
import { fileSchema, resolveConfig } from '../config.ts';
import { GatewayError } from '../protocol/errors.ts';
import { allCandidatesFailed, llmPlan, ttsPlan, type TtsPlanInput } from './routing.ts';

const ENV = { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's', CARTESIA_API_KEY: 'c', DEEPGRAM_API_KEY: 'd', OPENAI_API_KEY: 'o', GROQ_API_KEY: 'g' };
const cfgWith = (file: unknown = {}, env: Record<string, string> = ENV) => resolveConfig(fileSchema.parse(file), env);
const VOICE = '9626c31c-bec5-4cca-baa8-f8ba9e84c8bc';

function input(over: Partial<TtsPlanInput>): TtsPlanInput {
  return { model: `cartesia/sonic-3:${VOICE}`, voice: undefined, language: 'en', extra: {}, sampleRate: 24000, ...over };
}

const plain = (p: ReturnType<typeof ttsPlan>) => p.candidates.map((c) => ({ label: c.route.label, voice: c.opts.voice, extra: c.opts.extra, rate: c.opts.sampleRate }));

describe('ttsPlan', () => {
  it('the client model, then fallback.models with their own voice and extra', () => {
    const p = ttsPlan(
      input({
        extra: { speed: 1.1 },
        fallback: [
          { model: 'deepgram/aura-2', voice: 'orion', extra: { mip_opt_out: true } },
          { model: 'openai/tts-1:nova', voice: '', extra: {} },
        ],
      }),
      cfgWith(),
    );
    expect(plain(p)).toEqual([
      { label: 'cartesia/sonic-3', voice: VOICE, extra: { speed: 1.1 }, rate: 24000 },
      { label: 'deepgram/aura-2', voice: 'orion', extra: { mip_opt_out: true }, rate: 24000 },
      { label: 'openai/tts-1', voice: 'nova', extra: {}, rate: 24000 },
    ]);
    expect(p.firstAudioMs).toBe(5000);
    expect(p.deadAirMs).toBe(3000);
  });

  it('fallbacks that cannot serve here are skipped (unknown, no credentials, refused voice); the client model is strict', () => {
    const p = ttsPlan(
      input({
        fallback: [
          { model: 'rime/coda', voice: 'celeste' },
          { model: 'elevenlabs/eleven_flash_v2_5', voice: 'Xb7hH8MSUJpSbSDYk0k2' },
          { model: 'openai/tts-1', voice: 'not-a-voice' },
          { model: 'deepgram/aura-2', voice: 'thalia' },
        ],
      }),
      cfgWith(),
    );
    expect(p.candidates.map((c) => c.route.label)).toEqual(['cartesia/sonic-3', 'deepgram/aura-2']);
    expect(p.skipped.map((s) => s.model)).toEqual(['rime/coda', 'elevenlabs/eleven_flash_v2_5', 'openai/tts-1']);
    expect(() => ttsPlan(input({ model: 'cartesia/sonic-99' }), cfgWith())).toThrow(GatewayError);
    expect(() => ttsPlan(input({ extra: { speed: 9 } }), cfgWith())).toThrow(/speed/);
  });

  it('a route by model string: the client voice and extra go to candidates of its provider; the route timeouts apply', () => {
    const cfg = cfgWith({
      routes: {
        tts: {
          'cartesia/sonic-3': {
            candidates: ['cartesia/sonic-3', { model: 'deepgram/aura-2', voice: 'orion' }],
            firstAudioS: 2,
            deadAirS: 1,
            connectTimeoutS: 3,
          },
        },
      },
    });
    const p = ttsPlan(input({ extra: { speed: 1.2 }, fallback: [{ model: 'openai/tts-1', voice: 'alloy' }] }), cfg);
    expect(plain(p)).toEqual([
      { label: 'cartesia/sonic-3', voice: VOICE, extra: { speed: 1.2 }, rate: 24000 },
      { label: 'deepgram/aura-2', voice: 'orion', extra: {}, rate: 24000 },
      { label: 'openai/tts-1', voice: 'alloy', extra: {}, rate: 24000 },
    ]);
    expect(p).toMatchObject({ firstAudioMs: 2000, deadAirMs: 1000, connectTimeoutMs: 3000 });
  });

  it('an alias: its candidates in order, default voices where none is configured, duplicates dropped', () => {
    const cfg = cfgWith({ routes: { tts: { calm: { candidates: ['deepgram/aura-2', 'openai/tts-1:sage', 'deepgram/aura-2'] } } } });
    const p = ttsPlan(input({ model: 'calm', fallback: [{ model: 'openai/tts-1', voice: 'sage' }] }), cfg);
    expect(plain(p).map((c) => [c.label, c.voice])).toEqual([
      ['deepgram/aura-2', 'thalia'],
      ['openai/tts-1', 'sage'],
    ]);
  });

  it('config refuses route candidates that name no TTS provider or model', () => {
    expect(() => cfgWith({ routes: { tts: { x: { candidates: ['cartesia/sonic-99'] } } } })).toThrow(/routes\.tts\.x\.candidates\.0/);
    expect(() => cfgWith({ routes: { tts: { x: { candidates: ['nosuch/voice'] } } } })).toThrow(/not a known TTS provider/);
    expect(() => cfgWith({ routes: { llm: { x: { candidates: ['nosuch/model'] } } } })).toThrow(/routes\.llm\.x\.candidates\.0/);
  });
});

describe('llmPlan', () => {
  it('the model alone without a route; a route or alias lists candidates, skipping those without credentials', () => {
    const cfg = cfgWith({ routes: { llm: { 'openai/gpt-4.1-mini': { candidates: ['openai/gpt-4.1-mini', 'google/gemini-2.5-flash', 'groq/llama-3.3-70b-versatile'], firstTokenS: 4 } } } });
    expect(llmPlan('openai/gpt-4.1', cfg).candidates.map((c) => c.label)).toEqual(['openai/gpt-4.1']);
    const p = llmPlan('openai/gpt-4.1-mini', cfg);
    expect(p.candidates.map((c) => c.label)).toEqual(['openai/gpt-4.1-mini', 'groq/llama-3.3-70b-versatile']);
    expect(p.skipped.map((s) => s.model)).toEqual(['google/gemini-2.5-flash']);
    expect(p.firstEventMs).toBe(4000);
    expect(llmPlan('openai/gpt-4.1', cfg).firstEventMs).toBe(30_000);
    expect(() => llmPlan('nosuch/model', cfg)).toThrow(/unknown LLM provider/);
  });
});

describe('allCandidatesFailed', () => {
  it('one attempt keeps its error; several list every cause in order, with a common or retryable code', () => {
    const a = new GatewayError('provider_error', 'cartesia: closed');
    const b = new GatewayError('unauthorized', 'deepgram: bad key');
    expect(allCandidatesFailed('TTS', [{ label: 'cartesia/sonic-3', error: a }])).toBe(a);
    const e = allCandidatesFailed('TTS', [
      { label: 'cartesia/sonic-3', error: a },
      { label: 'deepgram/aura-2', error: b },
    ]);
    // Mixed codes, one retryable: 502 (the LiveKit client retries).
    expect(e.code).toBe('provider_error');
    expect(e.message).toBe('every TTS candidate failed (2 attempts): cartesia: closed; deepgram: bad key');
    expect(e.fields?.attempts).toEqual([
      { model: 'cartesia/sonic-3', code: 502, message: 'cartesia: closed' },
      { model: 'deepgram/aura-2', code: 401, message: 'deepgram: bad key' },
    ]);
    const same = allCandidatesFailed('LLM', [
      { label: 'openai/gpt-4.1', error: b },
      { label: 'groq/llama-3.3-70b-versatile', error: new GatewayError('unauthorized', 'groq: bad key') },
    ]);
    expect(same.code).toBe('unauthorized');
    expect(allCandidatesFailed('LLM', [], ['openai/gpt-4.1']).message).toBe('no LLM candidate available (circuit open: openai/gpt-4.1)');
  });
});
