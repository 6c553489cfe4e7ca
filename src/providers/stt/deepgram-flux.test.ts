import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { SttEvent, SttOptions, SttSegment } from '../types.ts';
import { DeepgramFluxCodec, deepgramFluxStt, fluxSegment } from './deepgram-flux.ts';

function fixture(name: string): Buffer[] {
  return readFileSync(new URL(`../../../test/fixtures/stt/${name}`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => Buffer.from(l));
}

const opts = (extra: Record<string, unknown> = {}, model = 'flux-general-en', language: string | undefined = 'en', sampleRate = 16000): SttOptions => ({
  model,
  language,
  sampleRate,
  extra,
});
const endpoint = { apiKey: 'dg-secret-key', baseUrl: 'https://api.deepgram.com', connectTimeoutMs: 1000 };

function decodeAll(name: string, codec = new DeepgramFluxCodec(opts())): SttEvent[] {
  return fixture(name).flatMap((m) => codec.decode(m, false));
}

const seg = (e: SttEvent | undefined): SttSegment => (e as { segment: SttSegment }).segment;
const texts = (events: SttEvent[], type: SttEvent['type']) => events.filter((e) => e.type === type).map((e) => seg(e).text);

function query(o: SttOptions): URLSearchParams {
  return new URL(deepgramFluxStt.request(deepgramFluxStt.validate(o), endpoint).url).searchParams;
}

describe('deepgram flux decode', () => {
  it('maps a turn: StartOfTurn -> speech_started, Update -> interim, EagerEndOfTurn -> preflight, TurnResumed -> interim, EndOfTurn -> one final', () => {
    const events = decodeAll('deepgram-flux-turns.jsonl');
    expect(events.map((e) => e.type)).toEqual([
      // Connected and the empty Update before speech: nothing
      'speech_started',
      'interim', // StartOfTurn "Hello,"
      'interim',
      'interim',
      'preflight', // EagerEndOfTurn
      'interim', // TurnResumed
      'preflight',
      'final', // EndOfTurn (model)
      // turn 1: empty Update ignored
      'speech_started',
      'interim',
      'final', // EndOfTurn (timeout)
    ]);
    expect(texts(events, 'interim')).toEqual([
      'Hello,',
      'Hello, how can',
      'Hello, how can I help you?',
      'Hello, how can I help you today?',
      'Thanks.',
    ]);
    expect(texts(events, 'preflight')).toEqual(['Hello, how can I help you?', 'Hello, how can I help you today?']);
    const finals = events.filter((e) => e.type === 'final').map(seg);
    expect(finals.map((s) => [s.text, s.start, s.end])).toEqual([
      ['Hello, how can I help you today?', 0.24, 1.4],
      ['Thanks.', 2.3, 2.6],
    ]);
    expect(finals[0]!.words.map((w) => w.word)).toEqual(['Hello,', 'how', 'can', 'I', 'help', 'you', 'today?']);
    expect(finals[0]!.words[6]).toEqual({ word: 'today?', start: 1.14, end: 1.4, confidence: 0.95 });
    expect(finals[0]!.confidence).toBeCloseTo((0.96 + 0.98 + 0.99 + 0.97 + 0.99 + 0.98 + 0.95) / 7, 6);
    expect(finals[0]!.language).toBeUndefined();
    expect(events.some((e) => e.type === 'finalized')).toBe(false); // model/timeout endings are not finalize answers
  });

  it('acknowledges ForceEndTurn: EndOfTurn trigger "manual" -> final, then finalized', () => {
    const codec = new DeepgramFluxCodec(opts());
    const events = decodeAll('deepgram-flux-force-end.jsonl', codec);
    expect(events.map((e) => e.type)).toEqual(['speech_started', 'interim', 'interim', 'final', 'finalized']);
    expect(seg(events[3])).toMatchObject({ text: 'I want to book', start: 0.2, end: 0.7 });
    expect(codec.midUtterance).toBe(false);
    expect(codec.flush()).toEqual([]);
  });

  it('spreads words without times over the audio window and reports the detected language', () => {
    const events = decodeAll('deepgram-flux-multi-untimed.jsonl', new DeepgramFluxCodec(opts({}, 'flux-general-multi', 'multi')));
    expect(events.map((e) => e.type)).toEqual(['speech_started', 'interim', 'final']);
    expect(seg(events[1])).toMatchObject({ text: 'Hola', start: 0.5, end: 1, language: 'es' });
    const final = seg(events[2]);
    expect(final.text).toBe('Hola, ¿qué tal? Fine.');
    expect(final.language).toBe('es');
    expect(final.words.map((w) => [w.word, w.start, w.end])).toEqual([
      ['Hola,', 0.5, 0.75],
      ['¿qué', 0.75, 1],
      ['tal?', 1, 1.25],
      ['Fine.', 1.25, 1.5],
    ]);
    expect([final.start, final.end]).toEqual([0.5, 1.5]);
  });

  it('closes an opened turn with an (empty) final even when nothing was transcribed', () => {
    const codec = new DeepgramFluxCodec(opts());
    const m = (event: string, extra: Record<string, unknown> = {}) =>
      Buffer.from(JSON.stringify({ type: 'TurnInfo', event, turn_index: 3, audio_window_start: 4, audio_window_end: 4.5, transcript: '', words: [], ...extra }));
    expect(codec.decode(m('StartOfTurn'), false)).toEqual([{ type: 'speech_started' }]);
    expect(codec.midUtterance).toBe(false);
    const out = codec.decode(m('EndOfTurn', { trigger: 'timeout' }), false);
    expect(out).toEqual([{ type: 'final', segment: { text: '', start: 4, end: 4.5, confidence: 1, words: [] } }]);
    // an EndOfTurn without a turn (e.g. ForceEndTurn while idle) only acknowledges
    expect(codec.decode(m('EndOfTurn', { turn_index: 4, trigger: 'manual' }), false)).toEqual([{ type: 'finalized' }]);
  });

  it('flush finalizes the turn in progress; later messages of that turn only carry the new words', () => {
    const codec = new DeepgramFluxCodec(opts());
    const lines = fixture('deepgram-flux-turns.jsonl');
    for (const l of lines.slice(0, 4)) codec.decode(l, false); // up to "Hello, how can"
    expect(codec.midUtterance).toBe(true);
    const flushed = codec.flush();
    expect(flushed.map((e) => [e.type, seg(e).text])).toEqual([['final', 'Hello, how can']]);
    expect(codec.midUtterance).toBe(false);
    const rest = lines.slice(4, 9).flatMap((l) => codec.decode(l, false));
    expect(rest.map((e) => [e.type, seg(e).text])).toEqual([
      ['interim', 'I help you?'],
      ['preflight', 'I help you?'],
      ['interim', 'I help you today?'],
      ['preflight', 'I help you today?'],
      ['final', 'I help you today?'],
    ]);
    expect(seg(rest[4]).start).toBe(0.72);
    // the next turn is whole again
    const next = lines.slice(9).flatMap((l) => codec.decode(l, false));
    expect(texts(next, 'final')).toEqual(['Thanks.']);
  });

  it('reports Error and ConfigureFailure as provider errors; ignores ConfigureSuccess', () => {
    const events = decodeAll('deepgram-flux-errors.jsonl');
    expect(events.map((e) => e.type)).toEqual(['error', 'error']);
    const [configure, fatal] = events.map((e) => (e as { error: GatewayError }).error);
    expect(configure!.code).toBe('provider_error');
    expect(configure!.message).toMatch(/live configuration update/);
    expect(fatal!.code).toBe('provider_error');
    expect(fatal!.message).toBe('deepgram flux: provider error INTERNAL_SERVER_ERROR: An internal server error occurred.');
    expect(fatal!.fields).toEqual({ provider_code: 'INTERNAL_SERVER_ERROR' });
    expect(fatal!.retryable).toBe(true);
  });

  it('ignores garbage, binary frames, unknown types and unknown events', () => {
    const codec = new DeepgramFluxCodec(opts());
    expect(codec.decode(Buffer.from('not json{'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('null'), false)).toEqual([]);
    expect(codec.decode(Buffer.from([1, 2, 3]), true)).toEqual([]);
    expect(codec.decode(Buffer.from('{"type":"Warning","description":"x"}'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('{"type":"TurnInfo","event":"SomethingNew","transcript":"hi","words":[]}'), false)).toEqual([]);
  });

  it('fluxSegment is pure and tolerates missing fields', () => {
    expect(fluxSegment({})).toEqual({ text: '', start: 0, end: 0, confidence: 1, words: [] });
    expect(fluxSegment({ audio_window_start: 2, audio_window_end: 1, transcript: ' a ', words: [{ word: 'a' }] })).toEqual({
      text: 'a',
      start: 2,
      end: 2,
      confidence: 1,
      words: [{ word: 'a', start: 2, end: 2, confidence: 1 }],
    });
  });
});

describe('deepgram flux request and validation', () => {
  it('builds the v2/listen URL: model, linear16, rate, thresholds, repeated keyterms; the key only in the header', () => {
    const o = opts({ eot_threshold: 0.8, eager_eot_threshold: 0.5, eot_timeout_ms: 3000, keyterm: ['LiveKit', 'a&b=c d'], numerals: true, mip_opt_out: true, tag: 'prod', redact: ['numbers'] });
    const req = deepgramFluxStt.request(deepgramFluxStt.validate(o), endpoint);
    const url = new URL(req.url);
    expect(`${url.protocol}//${url.host}${url.pathname}`).toBe('https://api.deepgram.com/v2/listen');
    expect(req.errorHeader).toBe('dg-error');
    const q = url.searchParams;
    expect(q.get('model')).toBe('flux-general-en');
    expect(q.get('encoding')).toBe('linear16');
    expect(q.get('sample_rate')).toBe('16000');
    expect(q.get('eot_threshold')).toBe('0.8');
    expect(q.get('eager_eot_threshold')).toBe('0.5');
    expect(q.get('eot_timeout_ms')).toBe('3000');
    expect(q.getAll('keyterm')).toEqual(['LiveKit', 'a&b=c d']);
    expect(q.get('numerals')).toBe('true');
    expect(q.get('mip_opt_out')).toBe('true');
    expect(q.getAll('tag')).toEqual(['prod']);
    expect(q.getAll('redact')).toEqual(['numbers']);
    expect(q.has('language')).toBe(false);
    expect(req.url).not.toContain('a&b=c d');
    expect(req.url).not.toContain('dg-secret-key');
    expect(req.headers).toEqual({ Authorization: 'Token dg-secret-key' });
  });

  it('sends only model, encoding and rate by default; drops the empty keyterm the client injects', () => {
    const q = query(opts({ keyterm: [] }));
    expect([...q.keys()]).toEqual(['model', 'encoding', 'sample_rate']);
    const base = deepgramFluxStt.request(deepgramFluxStt.validate(opts()), { ...endpoint, baseUrl: 'http://127.0.0.1:9100/' });
    expect(base.url.startsWith('http://127.0.0.1:9100/v2/listen?')).toBe(true);
  });

  it('serves flux-general and flux as flux-general-en', () => {
    for (const alias of ['flux-general', 'flux']) {
      const v = deepgramFluxStt.validate(opts({}, alias));
      expect(v.model).toBe('flux-general-en');
      expect(query(opts({}, alias)).get('model')).toBe('flux-general-en');
    }
  });

  it('flux-general-multi: settings.language becomes a language_hint; an explicit language_hint wins', () => {
    expect(query(opts({}, 'flux-general-multi', 'es-MX')).getAll('language_hint')).toEqual(['es']);
    expect(query(opts({}, 'flux-general-multi', 'multi')).has('language_hint')).toBe(false);
    expect(query({ model: 'flux-general-multi', language: undefined, sampleRate: 16000, extra: {} }).has('language_hint')).toBe(false);
    expect(query(opts({ language_hint: ['de', 'en'] }, 'flux-general-multi', 'es')).getAll('language_hint')).toEqual(['de', 'en']);
    expect(query(opts({ detect_language: true }, 'flux-general-multi', 'multi')).has('detect_language')).toBe(false);
  });

  it('rejects out-of-range, unknown, refused and mistyped options with bad_request', () => {
    const cases: Array<[SttOptions, RegExp]> = [
      [opts({ eot_threshold: 0.4 }), /"eot_threshold" must be a number from 0.5 to 1/],
      [opts({ eot_threshold: 1.1 }), /eot_threshold/],
      [opts({ eager_eot_threshold: 0.95 }), /"eager_eot_threshold" must be a number from 0.3 to 0.9/],
      [opts({ eot_timeout_ms: 400 }), /"eot_timeout_ms" must be an integer from 500 to 60000/],
      [opts({ eot_timeout_ms: 1000.5 }), /eot_timeout_ms/],
      [opts({ numerals: 'yes' }), /"numerals" must be a boolean/],
      [opts({ keyterm: [''] }), /keyterm/],
      [opts({ keyterm: Array.from({ length: 101 }, (_, i) => `t${i}`) }), /at most 100/],
      [opts({ redact: 'pci' }), /"redact" entries must be one of numbers, aggressive_numbers/],
      [opts({ bogus: 1 }), /unknown option "bogus"; accepted: eot_threshold/],
      [opts({ endpointing: 300 }), /"endpointing" is not accepted: Flux detects turns itself/],
      [opts({ keywords: [['a', 2]] }), /keyterm only/],
      [opts({ encoding: 'mulaw' }), /encoding/],
      [opts({}, 'flux-general-en', 'fr'), /English only/],
      [opts({ language_hint: 'es' }), /only valid with flux-general-multi/],
      [opts({ detect_language: true }), /flux-general-multi/],
      [opts({}, 'flux-general-multi', 'zh'), /not supported by flux-general-multi/],
      [opts({ language_hint: ['xx'] }, 'flux-general-multi', 'multi'), /language_hint/],
      [opts({}, 'flux-general-en', 'en', 22050), /sample rate 22050/],
      [opts({}, 'nova-3'), /unknown model/],
    ];
    for (const [o, msg] of cases) {
      let err: unknown;
      try {
        deepgramFluxStt.validate(o);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(o)).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe('bad_request');
      expect((err as GatewayError).message).toMatch(msg);
    }
    expect(() => deepgramFluxStt.validate(opts({ eot_threshold: null, keyterm: 'one' }, 'flux-general-en', 'en-GB', 8000))).not.toThrow();
  });
});

describe('deepgram flux live update', () => {
  const codecFor = (extra: Record<string, unknown>, model = 'flux-general-en', language: string | undefined = 'en') =>
    new DeepgramFluxCodec(deepgramFluxStt.validate(opts(extra, model, language)));
  const update = (codec: DeepgramFluxCodec, extra: Record<string, unknown>, model = 'flux-general-en', language: string | undefined = 'en') =>
    codec.liveUpdate(deepgramFluxStt.validate(opts(extra, model, language)));
  const parse = (frames: string[] | null) => frames?.map((f) => JSON.parse(f) as Record<string, unknown>);

  it('sends one Configure with the changed thresholds and keyterms, then nothing for the same options', () => {
    const codec = codecFor({ eot_threshold: 0.7, keyterm: [] });
    const next = { eot_threshold: 0.9, eot_timeout_ms: 8000, eager_eot_threshold: 0.4, keyterm: ['Niamh'] };
    expect(parse(update(codec, next))).toEqual([
      { type: 'Configure', thresholds: { eot_threshold: 0.9, eager_eot_threshold: 0.4, eot_timeout_ms: 8000 }, keyterms: ['Niamh'] },
    ]);
    expect(update(codec, next)).toEqual([]);
    expect(parse(update(codec, { ...next, keyterm: [] }))).toEqual([{ type: 'Configure', keyterms: [] }]);
  });

  it('restores documented defaults for dropped thresholds, toggles numerals, and updates language hints', () => {
    const codec = codecFor({ eot_threshold: 0.9, eot_timeout_ms: 9000, numerals: true });
    expect(parse(update(codec, {}))).toEqual([{ type: 'Configure', thresholds: { eot_threshold: 0.7, eot_timeout_ms: 5000 }, numerals: false }]);
    const multi = codecFor({}, 'flux-general-multi', 'es');
    expect(parse(update(multi, {}, 'flux-general-multi', 'fr'))).toEqual([{ type: 'Configure', language_hints: ['fr'] }]);
  });

  it('needs a reconnect to drop eager_eot_threshold or to change fixed options, the model or the sample rate', () => {
    expect(update(codecFor({ eager_eot_threshold: 0.5 }), {})).toBeNull();
    expect(update(codecFor({}), { mip_opt_out: true })).toBeNull();
    expect(update(codecFor({}), { tag: ['x'] })).toBeNull();
    expect(update(codecFor({}), {}, 'flux-general-multi', 'multi')).toBeNull();
    const codec = codecFor({});
    expect(codec.liveUpdate({ ...deepgramFluxStt.validate(opts()), sampleRate: 24000 })).toBeNull();
    // a refused update leaves the codec's view unchanged
    expect(parse(update(codec, { eot_threshold: 0.8 }))).toEqual([{ type: 'Configure', thresholds: { eot_threshold: 0.8 } }]);
  });
});

describe('deepgram flux adapter declaration', () => {
  it('declares its models, capabilities and control frames', () => {
    expect(deepgramFluxStt.provider).toBe('deepgram');
    expect(deepgramFluxStt.models).toEqual(['flux-general-en', 'flux-general-multi', 'flux-general', 'flux']);
    expect(deepgramFluxStt.defaultModel).toBeUndefined();
    expect(deepgramFluxStt.capabilities).toEqual({
      wordTimings: true,
      diarization: false,
      startOfSpeech: true,
      preflight: true,
      liveUpdate: true,
      finalize: true,
      sampleRates: [8000, 16000, 24000, 44100, 48000],
    });
    const codec = deepgramFluxStt.createCodec(deepgramFluxStt.validate(opts()));
    expect(codec.finalizeMessage).toBe('{"type":"ForceEndTurn"}');
    expect(codec.closeMessage).toBe('{"type":"CloseStream"}');
    expect(codec.keepAlive).toBeNull();
    expect(codec.openMessages).toBeUndefined();
    const pcm = Buffer.alloc(320);
    expect(codec.encodeAudio(pcm)).toBe(pcm);
  });
});
