import { describe, expect, it } from 'vitest';
import { ConfigError, fileSchema, resolveConfig } from '../config.ts';
import { GatewayError } from '../protocol/errors.ts';
import { sttPlan, type SttPlanInput } from './routing.ts';

const KEYS = { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's', DEEPGRAM_API_KEY: 'dg', ASSEMBLYAI_API_KEY: 'aai' };
const cfgWith = (file: unknown = {}, env: Record<string, string> = KEYS) => resolveConfig(fileSchema.parse(file), env);
const input = (o: Partial<SttPlanInput>): SttPlanInput => ({ model: 'deepgram/nova-3', language: undefined, extra: {}, sampleRate: 16000, ...o });
const labels = (p: ReturnType<typeof sttPlan>): string[] => p.candidates.map((c) => c.route.label);

function thrown(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (e) {
    if (e instanceof GatewayError) return e;
    throw e;
  }
  throw new Error('did not throw');
}

describe('sttPlan: ordered STT candidates', () => {
  it('the model alone: one candidate with the client options and the default failover timeouts', () => {
    const p = sttPlan(input({ extra: { keyterm: ['LiveKit'] }, language: 'en' }), cfgWith());
    expect(labels(p)).toEqual(['deepgram/nova-3']);
    expect(p.candidates[0]?.clientOptions).toBe(true);
    expect(p.candidates[0]?.opts).toMatchObject({ model: 'nova-3', language: 'en', extra: { keyterm: ['LiveKit'] } });
    expect(p).toMatchObject({ deadAirMs: 2000, firstResultMs: 10_000, connectTimeoutMs: undefined });
  });

  it('client fallback models come next, each with its own extra; unknown or credential-less ones are skipped', () => {
    const p = sttPlan(
      input({
        extra: { keyterm: ['LiveKit'] },
        fallback: [
          { model: 'cartesia/ink-whisper', extra: {} },
          { model: 'nosuch/model', extra: {} },
          { model: 'assemblyai/universal-streaming', extra: { end_of_turn_confidence_threshold: 0.6 } },
        ],
      }),
      cfgWith(),
    );
    expect(labels(p)).toEqual(['deepgram/nova-3', 'assemblyai/universal-streaming']);
    expect(p.candidates[1]).toMatchObject({ clientOptions: false, opts: { extra: { end_of_turn_confidence_threshold: 0.6 } } });
    expect(p.skipped.map((s) => s.model)).toEqual(['cartesia/ink-whisper', 'nosuch/model']);
    expect(p.skipped[0]?.reason).toMatch(/CARTESIA_API_KEY/);
  });

  it('a primary without credentials is skipped when a fallback has them; with none left, its own error', () => {
    const cfg = cfgWith({}, { ...KEYS, DEEPGRAM_API_KEY: '' });
    const p = sttPlan(input({ fallback: [{ model: 'assemblyai/universal-streaming' }] }), cfg);
    expect(labels(p)).toEqual(['assemblyai/universal-streaming']);
    const err = thrown(() => sttPlan(input({}), cfg));
    expect(err.status).toBe(400);
    expect(err.message).toMatch(/DEEPGRAM_API_KEY/);
  });

  it('the client\'s own mistakes are errors even with fallbacks: unknown primary model (404), options the first candidate refuses (400)', () => {
    const cfg = cfgWith();
    const fallback = [{ model: 'assemblyai/universal-streaming' }];
    expect(thrown(() => sttPlan(input({ model: 'deepgram/nova-99', fallback }), cfg)).status).toBe(404);
    expect(thrown(() => sttPlan(input({ extra: { endpointing: 'soon' }, fallback }), cfg)).status).toBe(400);
    // A fallback whose options its adapter refuses is left out instead.
    const p = sttPlan(input({ fallback: [{ model: 'assemblyai/universal-streaming', extra: { end_of_turn_confidence_threshold: 7 } }] }), cfg);
    expect(labels(p)).toEqual(['deepgram/nova-3']);
    expect(p.skipped[0]?.model).toBe('assemblyai/universal-streaming');
  });

  it('a configured route for the model replaces it: its candidates in order, its timeouts; the client extra only reaches the same provider', () => {
    const cfg = cfgWith({
      routes: {
        stt: {
          'deepgram/nova-3': {
            candidates: [{ model: 'deepgram/nova-3', extra: { endpointing: 300 } }, 'assemblyai/universal-streaming'],
            connectTimeoutS: 2,
            deadAirS: 1.5,
            firstResultS: 0,
          },
        },
      },
    });
    const p = sttPlan(input({ model: 'deepgram/nova-3:en-GB', extra: { keyterm: ['Niamh'] }, fallback: [{ model: 'assemblyai/universal-streaming' }] }), cfg);
    expect(labels(p)).toEqual(['deepgram/nova-3', 'assemblyai/universal-streaming']); // the duplicate fallback is dropped
    expect(p.candidates[0]?.opts).toMatchObject({ language: 'en-GB', extra: { endpointing: 300, keyterm: ['Niamh'] } });
    expect(p.candidates[1]?.opts.extra).toEqual({});
    expect(p).toMatchObject({ connectTimeoutMs: 2000, deadAirMs: 1500, firstResultMs: 0 });
  });

  it('an alias (not a provider) expands to its candidates, the client extra applying to each', () => {
    const cfg = cfgWith({ routes: { stt: { 'fast-en': { candidates: ['assemblyai/universal-streaming', 'deepgram/nova-3'] } } } });
    const p = sttPlan(input({ model: 'fast-en', extra: { vad_threshold: 0.4 } }), cfg);
    expect(labels(p)).toEqual(['assemblyai/universal-streaming']); // deepgram refuses vad_threshold: skipped (not first)
    expect(p.candidates[0]?.opts.extra).toEqual({ vad_threshold: 0.4 });
    const plain = sttPlan(input({ model: 'fast-en:en-US' }), cfg);
    expect(labels(plain)).toEqual(['assemblyai/universal-streaming', 'deepgram/nova-3']);
    expect(plain.candidates.every((c) => c.clientOptions && c.opts.language === 'en-US')).toBe(true);
  });

  it('auto: every credentialed model of the language list, in order', () => {
    const p = sttPlan(input({ model: undefined, language: 'en' }), cfgWith());
    expect(labels(p)).toEqual(['deepgram/nova-3', 'assemblyai/universal-streaming']);
    const none = thrown(() => sttPlan(input({ model: 'auto:en' }), cfgWith({}, { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's' })));
    expect(none.message).toMatch(/no STT provider has credentials/);
  });

  it('a route candidate naming an unknown provider is a configuration error at startup', () => {
    expect(() => cfgWith({ routes: { stt: { fast: { candidates: ['deepgramm/nova-3'] } } } })).toThrow(ConfigError);
    expect(() => cfgWith({ routes: { stt: { fast: { candidates: [] } } } })).toThrow();
  });
});
