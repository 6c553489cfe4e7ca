import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { SttEvent, SttOptions } from '../types.ts';
import { DeepgramCodec, deepgramListenV1 } from './deepgram.ts';

function fixture(name: string): Buffer[] {
  return readFileSync(new URL(`../../../test/fixtures/deepgram/${name}`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => Buffer.from(l));
}

function decodeAll(name: string): SttEvent[] {
  const codec = new DeepgramCodec();
  return fixture(name).flatMap((m) => codec.decode(m, false));
}

const opts = (extra: Record<string, unknown> = {}, model = 'nova-3', language: string | undefined = 'en'): SttOptions => ({
  model,
  language,
  sampleRate: 16000,
  extra,
});
const endpoint = { apiKey: 'dg-secret-key', baseUrl: 'http://127.0.0.1:9999', connectTimeoutMs: 1000 };

describe('deepgram decode', () => {
  it('joins is_final fragments into one final per utterance, with interims in between', () => {
    const events = decodeAll('utterance-two-fragments.jsonl');
    expect(events.map((e) => e.type)).toEqual([
      'speech_started',
      'interim',
      'interim',
      'interim', // is_final fragment: progress of the utterance
      'interim', // new window's interim joined with the finalized fragment
      'final', // speech_final
      'provider_usage',
    ]);
    const interims = events.filter((e) => e.type === 'interim').map((e) => (e as { segment: { text: string } }).segment.text);
    expect(interims).toEqual(['Another', 'Another big', 'Another big problem', 'Another big problem in']);
    const final = events.find((e) => e.type === 'final');
    expect(final).toMatchObject({
      segment: { text: 'Another big problem in the speech.', start: 0.48, end: 3.4 },
    });
    const seg = (final as { segment: { words: { word: string; start: number }[]; confidence: number } }).segment;
    expect(seg.words.map((w) => w.word)).toEqual(['Another', 'big', 'problem', 'in', 'the', 'speech.']);
    expect(seg.confidence).toBeCloseTo((0.97 + 0.93) / 2, 5);
    expect(events.at(-1)).toEqual({ type: 'provider_usage', audioSeconds: 5.3 });
  });

  it('from_finalize closes the utterance and acknowledges the finalize', () => {
    const events = decodeAll('finalize.jsonl');
    expect(events.map((e) => e.type)).toEqual(['interim', 'final', 'finalized', 'finalized']);
    expect(events[1]).toMatchObject({ segment: { text: 'Hello there.', start: 0.2, end: 1.1 } });
  });

  it('UtteranceEnd closes an utterance that endpointing missed; speakers become strings', () => {
    const events = decodeAll('diarized-utterance-end.jsonl');
    const finals = events.filter((e) => e.type === 'final');
    expect(finals).toHaveLength(1);
    const seg = (finals[0] as { segment: { text: string; speaker?: string; words: { speaker?: string }[] } }).segment;
    expect(seg.text).toBe('Good morning. Hi');
    expect(seg.speaker).toBe('0');
    expect(seg.words.map((w) => w.speaker)).toEqual(['0', '0', '1']);
  });

  it('flush turns pending text (including the live interim) into a final', () => {
    const codec = new DeepgramCodec();
    const [first] = fixture('utterance-two-fragments.jsonl').slice(1, 2);
    codec.decode(first as Buffer, false);
    expect(codec.midUtterance).toBe(true);
    const out = codec.flush();
    expect(out).toMatchObject([{ type: 'final', segment: { text: 'Another' } }]);
    expect(codec.midUtterance).toBe(false);
    expect(codec.flush()).toEqual([]);
  });

  it('ignores garbage, binary frames and unknown message types', () => {
    const codec = new DeepgramCodec();
    expect(codec.decode(Buffer.from('not json{'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('null'), false)).toEqual([]);
    expect(codec.decode(Buffer.from([1, 2, 3]), true)).toEqual([]);
    expect(codec.decode(Buffer.from('{"type":"Warning","description":"x"}'), false)).toEqual([]);
  });
});

describe('deepgram request', () => {
  it('builds the listen URL with defaults, escaping and repeated keyterm params', () => {
    const o = deepgramListenV1.validate(opts({ keyterm: ['LiveKit', 'a&b=c d'], endpointing: 300, smart_format: true }));
    const req = deepgramListenV1.request(o, endpoint);
    const url = new URL(req.url);
    expect(url.pathname).toBe('/v1/listen');
    expect(url.searchParams.get('model')).toBe('nova-3');
    expect(url.searchParams.get('encoding')).toBe('linear16');
    expect(url.searchParams.get('sample_rate')).toBe('16000');
    expect(url.searchParams.get('language')).toBe('en');
    expect(url.searchParams.get('endpointing')).toBe('300');
    expect(url.searchParams.get('smart_format')).toBe('true');
    expect(url.searchParams.get('interim_results')).toBe('true');
    expect(url.searchParams.get('vad_events')).toBe('true');
    expect(url.searchParams.getAll('keyterm')).toEqual(['LiveKit', 'a&b=c d']);
    expect(req.url).not.toContain('a&b=c d');
    expect(req.headers).toEqual({ Authorization: 'Token dg-secret-key' });
    // A refused upgrade's reason is in Deepgram's dg-error header (ws-upstream reads the header named here).
    expect(req.errorHeader).toBe('dg-error');
  });

  it('drops empty keyterm arrays (the client always injects keyterm: [])', () => {
    const req = deepgramListenV1.request(deepgramListenV1.validate(opts({ keyterm: [] })), endpoint);
    expect(new URL(req.url).searchParams.has('keyterm')).toBe(false);
  });

  it('rejects keywords on nova-3 with a clear 400, and maps them on nova-2', () => {
    const fn = () => deepgramListenV1.validate(opts({ keywords: [['LiveKit', 2]] }));
    expect(fn).toThrow(GatewayError);
    expect(fn).toThrow(/keywords are not supported for nova-3/);
    try {
      fn();
    } catch (err) {
      expect((err as GatewayError).status).toBe(400);
    }
    const req = deepgramListenV1.request(deepgramListenV1.validate(opts({ keywords: [['LiveKit', 2], 'agent:1.5'] }, 'nova-2')), endpoint);
    expect(new URL(req.url).searchParams.getAll('keywords')).toEqual(['LiveKit:2', 'agent:1.5']);
  });

  it('rejects unknown, refused and mistyped options', () => {
    expect(() => deepgramListenV1.validate(opts({ bogus: 1 }))).toThrow(/unknown option "bogus"/);
    expect(() => deepgramListenV1.validate(opts({ callback: 'http://evil' }))).toThrow(/callback/);
    expect(() => deepgramListenV1.validate(opts({ encoding: 'mulaw' }))).toThrow(/encoding/);
    expect(() => deepgramListenV1.validate(opts({ punctuate: 'yes' }))).toThrow(/boolean/);
    expect(() => deepgramListenV1.validate(opts({ endpointing: -5 }))).toThrow(/endpointing/);
    expect(() => deepgramListenV1.validate(opts({ keyterm: ['x'] }, 'nova-2'))).toThrow(/only available for nova-3/);
    expect(() => deepgramListenV1.validate(opts({ interim_results: false, utterance_end_ms: 1000 }))).toThrow(/interim_results/);
    expect(() => deepgramListenV1.validate(opts({}, 'nova-3', 'en us; drop'))).toThrow(/invalid language/);
  });

  it('omits utterance_end_ms when the client turns interim results off', () => {
    const req = deepgramListenV1.request(deepgramListenV1.validate(opts({ interim_results: false })), endpoint);
    const q = new URL(req.url).searchParams;
    expect(q.get('interim_results')).toBe('false');
    expect(q.has('utterance_end_ms')).toBe(false);
  });
});
