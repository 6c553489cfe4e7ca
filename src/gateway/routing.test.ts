import { describe, expect, it } from 'vitest';
import { fileSchema, resolveConfig } from '../config.ts';
import { GatewayError } from '../protocol/errors.ts';
import { normalizePath, requestMeta } from './http.ts';
import { parseModelString, resolveLlmRoute, resolveSttRoute } from './routing.ts';

const cfgWith = (env: Record<string, string>) => resolveConfig(fileSchema.parse({}), { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's', ...env });

describe('model strings', () => {
  it('parses provider/model[:lang], bare providers and auto', () => {
    expect(parseModelString('deepgram/nova-3')).toEqual({ provider: 'deepgram', model: 'nova-3', language: undefined });
    expect(parseModelString('deepgram/nova-3:en')).toEqual({ provider: 'deepgram', model: 'nova-3', language: 'en' });
    expect(parseModelString('deepgram')).toEqual({ provider: 'deepgram', model: undefined, language: undefined });
    expect(parseModelString('auto:pt')).toEqual({ provider: undefined, model: undefined, language: 'pt' });
    expect(parseModelString(undefined)).toEqual({ provider: undefined, model: undefined, language: undefined });
  });

  it('routes known models, bare providers and auto to a provider with credentials', () => {
    const cfg = cfgWith({ DEEPGRAM_API_KEY: 'dg' });
    expect(resolveSttRoute('deepgram/nova-2-phonecall', cfg).route.label).toBe('deepgram/nova-2-phonecall');
    expect(resolveSttRoute('deepgram', cfg).route.label).toBe('deepgram/nova-3');
    expect(resolveSttRoute(undefined, cfg).route.label).toBe('deepgram/nova-3');
    expect(resolveSttRoute('auto:en', cfg).language).toBe('en');
  });

  it('unknown provider or model -> 404; no credentials -> 400 naming the variable', () => {
    const cfg = cfgWith({ DEEPGRAM_API_KEY: 'dg' });
    const err = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return e as GatewayError;
      }
      throw new Error('did not throw');
    };
    expect(err(() => resolveSttRoute('nosuch/model', cfg)).status).toBe(404);
    const unknownModel = err(() => resolveSttRoute('deepgram/nova-99', cfg));
    expect(unknownModel.status).toBe(404);
    expect(unknownModel.message).toContain('nova-3');
    const noCreds = err(() => resolveSttRoute('deepgram/nova-3', cfgWith({})));
    expect(noCreds.status).toBe(400);
    expect(noCreds.message).toContain('DEEPGRAM_API_KEY');
  });
});

describe('http helpers', () => {
  it('normalizes doubled slashes, trailing slashes and queries', () => {
    expect(normalizePath('/v1//stt')).toBe('/v1/stt');
    expect(normalizePath('//v1///stt/?model=deepgram%2Fnova-3')).toBe('/v1/stt');
    expect(normalizePath('/')).toBe('/');
    expect(normalizePath(undefined)).toBe('/');
  });

  it('reads LiveKit metadata headers in either casing (node lowercases them)', () => {
    expect(requestMeta({ 'x-livekit-room-id': 'RM_1', 'x-livekit-job-id': 'AJ_1', 'x-livekit-session-id': 'inference_x' })).toEqual({
      roomId: 'RM_1',
      jobId: 'AJ_1',
      clientSessionId: 'inference_x',
    });
  });
});

describe('auto STT routing and configured upstreams', () => {
  const withFile = (file: unknown, env: Record<string, string>) => resolveConfig(fileSchema.parse(file), { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's', ...env });

  it('picks the first model of the language list whose provider has credentials', () => {
    const file = { stt: { auto: { default: ['deepgram/nova-3'], languages: { fr: ['openai/gpt-4o-transcribe', 'deepgram/nova-2'] } } } };
    expect(resolveSttRoute('auto:fr', withFile(file, { DEEPGRAM_API_KEY: 'dg' })).route.label).toBe('deepgram/nova-2');
    expect(resolveSttRoute('auto:fr-CA', withFile(file, { DEEPGRAM_API_KEY: 'dg', OPENAI_API_KEY: 'sk' })).route.label).toBe('openai/gpt-4o-transcribe');
    expect(resolveSttRoute('auto:de', withFile(file, { DEEPGRAM_API_KEY: 'dg' })).route.label).toBe('deepgram/nova-3');
    expect(() => resolveSttRoute('auto:fr', withFile(file, {}))).toThrow(/no STT provider has credentials for language "fr" \(candidates: openai\/gpt-4o-transcribe, deepgram\/nova-2\)/);
  });

  it('routes a configured upstream by id, with its default or a named model', () => {
    const file = {
      stt: { upstreams: { whisper: { protocol: 'openai-realtime', baseUrl: 'http://127.0.0.1:9000/v1', model: 'large-v3' } } },
      pricing: { stt: { 'whisper/*': { free: true } } },
    };
    const cfg = withFile(file, {});
    const r = resolveSttRoute('whisper', cfg).route;
    expect(r).toMatchObject({ provider: 'whisper', model: 'large-v3', label: 'whisper/large-v3' });
    expect(r.endpoint.baseUrl).toBe('http://127.0.0.1:9000/v1');
    expect(resolveSttRoute('whisper/distil:en', cfg)).toMatchObject({ route: { model: 'distil' }, language: 'en' });
    expect(() => withFile({ stt: { upstreams: { deepgram: { protocol: 'openai-realtime', baseUrl: 'http://x', model: 'm' } } } }, {})).toThrow(/built-in provider/);
    expect(() => fileSchema.parse({ stt: { upstreams: { x: { protocol: 'grpc', baseUrl: 'http://x', model: 'm' } } } })).toThrow();
  });
});

describe('bounded metric labels for client-chosen model ids', () => {
  const withFile = (file: unknown, env: Record<string, string>) => resolveConfig(fileSchema.parse(file), { LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's', ...env });

  it('LLM: a known model is its own label; a dated snapshot is its price key; any id of a provider/* price is "*"', () => {
    const cfg = withFile(
      { llm: { upstreams: { local: { baseUrl: 'http://127.0.0.1:8000/v1', models: ['llama-3.1-8b'] } } }, pricing: { llm: { 'local/*': { free: true } } } },
      { OPENAI_API_KEY: 'sk' },
    );
    expect(resolveLlmRoute('openai/gpt-4o', cfg).metricModel).toBe('gpt-4o');
    const dated = resolveLlmRoute('openai/gpt-4o-20991231', cfg);
    expect(dated).toMatchObject({ model: 'gpt-4o-20991231', metricModel: 'gpt-4o', label: 'openai/gpt-4o-20991231' });
    expect(resolveLlmRoute('local/llama-3.1-8b', cfg).metricModel).toBe('llama-3.1-8b');
    const anyId = resolveLlmRoute('local/random-model-123456', cfg);
    expect(anyId).toMatchObject({ model: 'random-model-123456', metricModel: '*' });
  });

  it('STT: a custom upstream labels its configured model as is, any other model id by its price key', () => {
    const cfg = withFile(
      {
        stt: { upstreams: { whisper: { protocol: 'openai-realtime', baseUrl: 'http://127.0.0.1:9000/v1', model: 'large-v3' } } },
        pricing: { stt: { 'whisper/*': { free: true }, 'whisper/distil': { usdPerMinute: 0.001 } } },
      },
      {},
    );
    expect(resolveSttRoute('whisper', cfg).route.metricModel).toBe('large-v3');
    expect(resolveSttRoute('whisper/distil', cfg).route.metricModel).toBe('distil');
    expect(resolveSttRoute('whisper/client-chosen-0001', cfg).route).toMatchObject({ model: 'client-chosen-0001', metricModel: '*' });
  });
});
