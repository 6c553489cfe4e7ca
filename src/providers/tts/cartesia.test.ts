import { afterEach, describe, expect, it, vi } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { TtsOptions } from '../types.ts';
import { CARTESIA_API_VERSION, cartesiaTts, decodeCartesia } from './cartesia.ts';

const VOICE = '9626c31c-bec5-4cca-baa8-f8ba9e84c8bc';
const base: TtsOptions = { model: 'sonic-3', voice: VOICE, language: 'en', sampleRate: 24000, extra: {} };
const j = (o: unknown): Buffer => Buffer.from(JSON.stringify(o));

describe('cartesia tts: validate', () => {
  it('accepts the documented extras', () => {
    const v = cartesiaTts.validate({ ...base, extra: { speed: 1.1, volume: 1.5, emotion: 'happy', add_timestamps: true, max_buffer_delay_ms: 0 } });
    expect(v.extra).toEqual({ speed: 1.1, volume: 1.5, emotion: 'happy', add_timestamps: true, max_buffer_delay_ms: 0 });
    expect(cartesiaTts.validate({ ...base, extra: { speed: 'fast' } }).extra).toEqual({ speed: 'fast' });
  });

  it('drops null options', () => {
    expect(cartesiaTts.validate({ ...base, extra: { speed: null } }).extra).toEqual({});
  });

  it.each([
    [{ speed: 9 }, /speed.*0.6 to 1.5/],
    [{ speed: 'warp' }, /speed/],
    [{ volume: 'loud' }, /volume/],
    [{ add_timestamps: 'yes' }, /add_timestamps.*boolean/],
    [{ bogus: 1 }, /unknown option "bogus"/],
    [{ output_format: {} }, /output_format.*not accepted/],
    [{ max_buffer_delay_ms: 1.5 }, /integer/],
  ])('rejects %j', (extra, re) => {
    expect(() => cartesiaTts.validate({ ...base, extra })).toThrow(re);
  });

  it('rejects sonic-3 controls on older models and bad voice ids', () => {
    expect(() => cartesiaTts.validate({ ...base, model: 'sonic-2', extra: { emotion: 'sad' } })).toThrow(/needs a sonic-3/);
    expect(() => cartesiaTts.validate({ ...base, voice: 'a voice with spaces' })).toThrow(GatewayError);
  });
});

describe('cartesia tts: request and frames', () => {
  it('builds the URL and headers with the pinned version', () => {
    const r = cartesiaTts.request(base, { apiKey: 'ck', baseUrl: 'https://api.cartesia.ai/', connectTimeoutMs: 1000 });
    expect(r.url).toBe('https://api.cartesia.ai/tts/websocket');
    expect(r.headers).toEqual({ 'X-API-Key': 'ck', 'Cartesia-Version': CARTESIA_API_VERSION });
  });

  it('sends every chunk on the generation context with continue, then an empty final request', () => {
    const codec = cartesiaTts.createCodec(base);
    const opts = cartesiaTts.validate({ ...base, extra: { speed: 1.2, add_timestamps: true } });
    const [a] = codec.text('ctx1', 'Hello there! ', opts);
    const [b] = codec.text('ctx1', 'How are "you"? ', opts);
    const [end] = codec.end('ctx1', opts);
    expect(JSON.parse(a as string)).toEqual({
      model_id: 'sonic-3',
      voice: { mode: 'id', id: VOICE },
      output_format: { container: 'raw', encoding: 'pcm_s16le', sample_rate: 24000 },
      context_id: 'ctx1',
      language: 'en',
      generation_config: { speed: 1.2 },
      add_timestamps: true,
      transcript: 'Hello there! ',
      continue: true,
    });
    expect(JSON.parse(b as string)).toMatchObject({ transcript: 'How are "you"? ', continue: true, context_id: 'ctx1' });
    expect(JSON.parse(end as string)).toMatchObject({ transcript: '', continue: false, context_id: 'ctx1' });
    const [c] = codec.text('ctx2', 'Next.', { ...opts, voice: 'other-voice' });
    expect(JSON.parse(c as string)).toMatchObject({ context_id: 'ctx2', voice: { mode: 'id', id: 'other-voice' } });
  });
});

describe('cartesia tts: decode', () => {
  it('decodes chunks, timestamps, done and ignores flush_done', () => {
    const pcm = Buffer.from([1, 0, 2, 0, 3, 0]);
    expect(decodeCartesia(j({ type: 'chunk', context_id: 'c', status_code: 206, done: false, data: pcm.toString('base64'), step_time: 12 }), false)).toEqual([
      { type: 'audio', gen: 'c', pcm },
    ]);
    expect(
      decodeCartesia(j({ type: 'timestamps', context_id: 'c', word_timestamps: { words: ['Hello', 'there'], start: [0, 0.4], end: [0.35, 0.8] } }), false),
    ).toEqual([
      {
        type: 'alignment',
        gen: 'c',
        alignment: {
          words: [
            { word: 'Hello', start: 0, end: 0.35 },
            { word: 'there', start: 0.4, end: 0.8 },
          ],
        },
      },
    ]);
    expect(decodeCartesia(j({ type: 'done', context_id: 'c', status_code: 206, done: true }), false)).toEqual([{ type: 'done', gen: 'c' }]);
    expect(decodeCartesia(j({ type: 'flush_done', context_id: 'c', flush_done: true, flush_id: 1 }), false)).toEqual([]);
  });

  it('maps errors by status code, both documented shapes', () => {
    const [e1] = decodeCartesia(j({ type: 'error', context_id: 'c', status_code: 400, done: true, error: 'invalid voice' }), false);
    expect(e1).toMatchObject({ type: 'error', gen: 'c' });
    const err1 = (e1 as { error: GatewayError }).error;
    expect(err1.status).toBe(400);
    expect(err1.message).toContain('invalid voice');
    const [e2] = decodeCartesia(j({ type: 'error', title: 'Too many', message: 'concurrency limit', status_code: 429 }), false);
    expect((e2 as { error: GatewayError }).error.status).toBe(429);
    expect((e2 as { gen: string | null }).gen).toBeNull();
  });

  it('reports a non-JSON frame as a provider error', () => {
    const [e] = decodeCartesia(Buffer.from('garbage'), false);
    expect((e as { error: GatewayError }).error.status).toBe(502);
  });
});

describe('cartesia tts: continuation contexts', () => {
  afterEach(() => vi.useRealTimers());

  it('moves the rest of a generation to a new context after a pause past the expiry, on one timeline', () => {
    vi.useFakeTimers();
    const codec = cartesiaTts.createCodec(base);
    const opts = { ...base, sampleRate: 16000 };
    const [a] = codec.text('g1', 'One. ', opts);
    expect(JSON.parse(a as string).context_id).toBe('g1');
    // 1 s of audio for the first sentence.
    const pcm = Buffer.alloc(32000);
    expect(codec.decode(j({ type: 'chunk', context_id: 'g1', data: pcm.toString('base64') }), false)).toEqual([{ type: 'audio', gen: 'g1', pcm }]);
    vi.advanceTimersByTime(1500);
    const [b] = codec.text('g1', 'Two. ', opts);
    expect(JSON.parse(b as string)).toMatchObject({ context_id: 'g1-c1', transcript: 'Two. ', continue: true });
    const [end] = codec.end('g1', opts);
    expect(JSON.parse(end as string)).toMatchObject({ context_id: 'g1-c1', continue: false });
    // The expired context's error or done is not the generation's; the continuation's are.
    expect(codec.decode(j({ type: 'error', context_id: 'g1', status_code: 400, error: 'expired' }), false)).toEqual([]);
    expect(codec.decode(j({ type: 'done', context_id: 'g1' }), false)).toEqual([]);
    const [ts] = codec.decode(j({ type: 'timestamps', context_id: 'g1-c1', word_timestamps: { words: ['Two.'], start: [0], end: [0.3] } }), false);
    expect(ts).toEqual({ type: 'alignment', gen: 'g1', alignment: { words: [{ word: 'Two.', start: 1, end: 1.3 }] } });
    expect(codec.decode(j({ type: 'done', context_id: 'g1-c1' }), false)).toEqual([{ type: 'done', gen: 'g1' }]);
  });

  it('keeps one context when the text keeps coming', () => {
    vi.useFakeTimers();
    const codec = cartesiaTts.createCodec(base);
    codec.text('g1', 'One. ', base);
    codec.decode(j({ type: 'chunk', context_id: 'g1', data: Buffer.alloc(480).toString('base64') }), false);
    vi.advanceTimersByTime(300);
    const [b] = codec.text('g1', 'Two. ', base);
    expect(JSON.parse(b as string).context_id).toBe('g1');
    const [c] = codec.text('g2', 'Next. ', base);
    expect(JSON.parse(c as string).context_id).toBe('g2');
  });
});
