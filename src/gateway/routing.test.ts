import { describe, expect, it } from 'vitest';
import { fileSchema, resolveConfig } from '../config.ts';
import { GatewayError } from '../protocol/errors.ts';
import { normalizePath, requestMeta } from './http.ts';
import { parseModelString, resolveSttRoute } from './routing.ts';

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
