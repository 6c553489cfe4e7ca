import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { SttEvent, SttOptions, SttSegment } from '../types.ts';
import {
  CARTESIA_STT_API_VERSION,
  CartesiaTurnsCodec,
  CartesiaWhisperCodec,
  cartesiaStt,
  cartesiaTurnsStt,
  cartesiaWords,
} from './cartesia.ts';

function fixture(name: string): Buffer[] {
  return readFileSync(new URL(`../../../test/fixtures/stt/${name}`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => Buffer.from(l));
}

const whisper = (extra: Record<string, unknown> = {}, language: string | undefined = 'en', model = 'ink-whisper'): SttOptions => ({
  model,
  language,
  sampleRate: 16000,
  extra,
});
const turns = (extra: Record<string, unknown> = {}, language: string | undefined = 'en'): SttOptions => ({
  model: 'ink-2',
  language,
  sampleRate: 16000,
  extra,
});
const endpoint = { apiKey: 'cartesia-secret-key', baseUrl: 'https://api.cartesia.ai/', connectTimeoutMs: 1000 };
/** `seconds` of 16 kHz s16le silence */
const audio = (seconds: number): Buffer => Buffer.alloc(Math.round(seconds * 16000) * 2);
const seg = (e: SttEvent): SttSegment => (e as { segment: SttSegment }).segment;

function statusOf(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    return (err as GatewayError).status;
  }
  throw new Error('did not throw');
}

describe('cartesia stt: validate', () => {
  it('accepts the documented ink-whisper options and drops null and empty keyterm', () => {
    const v = cartesiaStt.validate(whisper({ min_volume: 0.3, max_silence_duration_secs: 0.8, keyterm: 'LiveKit', bogus_null: null }));
    expect(v.extra).toEqual({ min_volume: 0.3, max_silence_duration_secs: 0.8, keyterm: ['LiveKit'] });
    expect(cartesiaStt.validate(whisper({ keyterm: [] })).extra).toEqual({});
    expect(cartesiaStt.validate(whisper({}, 'pt-BR', 'ink-whisper-2025-06-04')).language).toBe('pt-BR');
    expect(cartesiaStt.validate({ ...whisper(), language: undefined }).language).toBeUndefined();
  });

  it('accepts the documented ink-2 turn options at the edges of their ranges', () => {
    const extra = { turn_start_threshold: 0.9, turn_eager_end_threshold: 0.3, turn_end_threshold: 0.05, turn_end_timeout_ms: 11200 };
    expect(cartesiaTurnsStt.validate(turns(extra)).extra).toEqual(extra);
    expect(cartesiaTurnsStt.validate(turns({ turn_end_timeout_ms: 640 }, 'en-US')).extra).toEqual({ turn_end_timeout_ms: 640 });
  });

  it.each([
    [{ min_volume: 1.5 }, /min_volume.*0 to 1/],
    [{ max_silence_duration_secs: 0 }, /max_silence_duration_secs/],
    [{ max_silence_duration_secs: '1' }, /max_silence_duration_secs/],
    [{ turn_end_threshold: 0.2 }, /turn detection options need cartesia\/ink-2/],
    [{ encoding: 'pcm_mulaw' }, /encoding.*not accepted/],
    [{ cartesia_version: '2024-06-10' }, /pins the API version/],
    [{ bogus: 1 }, /unknown option "bogus".*min_volume.*keyterm/],
    [{ keyterm: [''] }, /keyterm/],
    [{ keyterm: 42 }, /keyterm/],
    [{ keyterm: Array.from({ length: 101 }, (_, i) => `t${i}`) }, /at most 100/],
    [{ keyterm: ['x'.repeat(700), 'y'.repeat(501)] }, /1200 characters/],
  ])('ink-whisper rejects %j with a 400', (extra, re) => {
    expect(() => cartesiaStt.validate(whisper(extra))).toThrow(re);
    expect(statusOf(() => cartesiaStt.validate(whisper(extra)))).toBe(400);
  });

  it.each([
    [{ turn_start_threshold: 0.95 }, /turn_start_threshold.*0.5 to 0.9/],
    [{ turn_start_threshold: 0.45 }, /turn_start_threshold/],
    [{ turn_eager_end_threshold: 0.7 }, /turn_eager_end_threshold.*0.3 to 0.6/],
    [{ turn_end_threshold: 0.04 }, /turn_end_threshold.*0.05 to 0.5/],
    [{ turn_end_timeout_ms: 639 }, /turn_end_timeout_ms.*640 to 11200/],
    [{ turn_end_timeout_ms: 11201 }, /turn_end_timeout_ms/],
    [{ turn_end_timeout_ms: 1000.5 }, /integer/],
    [{ turn_end_threshold: 0.45 }, /turn_end_threshold < turn_eager_end_threshold/],
    [{ turn_eager_end_threshold: 0.3, turn_end_threshold: 0.3 }, /turn_end_threshold < turn_eager_end_threshold/],
    [{ turn_start_threshold: 0.5, turn_eager_end_threshold: 0.55 }, /< turn_start_threshold/],
    [{ min_volume: 0.5 }, /only for cartesia\/ink-whisper/],
    [{ max_silence_duration_secs: 1 }, /only for cartesia\/ink-whisper/],
  ])('ink-2 rejects %j with a 400 (never clamps)', (extra, re) => {
    expect(() => cartesiaTurnsStt.validate(turns(extra))).toThrow(re);
    expect(statusOf(() => cartesiaTurnsStt.validate(turns(extra)))).toBe(400);
  });

  it('rejects languages Cartesia cannot take', () => {
    expect(() => cartesiaStt.validate(whisper({}, 'multi'))).toThrow(/no automatic detection/);
    expect(() => cartesiaStt.validate(whisper({}, 'en us; drop'))).toThrow(/invalid language/);
    expect(() => cartesiaTurnsStt.validate(turns({}, 'de'))).toThrow(/ink-2 only supports English.*ink-whisper/);
  });
});

describe('cartesia stt: request', () => {
  it('ink-whisper: /stt/websocket with model, encoding, rate, ISO-639-1 language, options and repeated keyterm', () => {
    const o = cartesiaStt.validate(whisper({ min_volume: 0.25, max_silence_duration_secs: 1.5, keyterm: ['LiveKit', 'a&b=c d'] }, 'en-GB'));
    const req = cartesiaStt.request(o, endpoint);
    const url = new URL(req.url);
    expect(`${url.origin}${url.pathname}`).toBe('https://api.cartesia.ai/stt/websocket');
    expect(Object.fromEntries(url.searchParams)).toMatchObject({
      model: 'ink-whisper',
      encoding: 'pcm_s16le',
      sample_rate: '16000',
      language: 'en',
      min_volume: '0.25',
      max_silence_duration_secs: '1.5',
    });
    expect(url.searchParams.getAll('keyterm')).toEqual(['LiveKit', 'a&b=c d']);
    expect(req.url).not.toContain('a&b=c d');
    expect(req.headers).toEqual({ Authorization: 'Bearer cartesia-secret-key', 'Cartesia-Version': CARTESIA_STT_API_VERSION });
    expect(CARTESIA_STT_API_VERSION).toBe('2026-08-14');
    expect(req.url).not.toContain('cartesia-secret-key');
  });

  it('ink-whisper without a language leaves Cartesia its default', () => {
    const req = cartesiaStt.request(cartesiaStt.validate({ ...whisper(), language: undefined }), { ...endpoint, baseUrl: 'http://127.0.0.1:9999' });
    const url = new URL(req.url);
    expect(url.origin).toBe('http://127.0.0.1:9999');
    expect(url.searchParams.has('language')).toBe(false);
  });

  it('ink-2: /stt/turns/websocket with turn_* query parameters and no language parameter', () => {
    const o = cartesiaTurnsStt.validate(turns({ turn_end_timeout_ms: 2000, turn_eager_end_threshold: 0.35, keyterm: ['Niamh'] }));
    const req = cartesiaTurnsStt.request(o, endpoint);
    const url = new URL(req.url);
    expect(url.pathname).toBe('/stt/turns/websocket');
    expect(Object.fromEntries(url.searchParams)).toEqual({
      model: 'ink-2',
      encoding: 'pcm_s16le',
      sample_rate: '16000',
      turn_eager_end_threshold: '0.35',
      turn_end_timeout_ms: '2000',
      keyterm: 'Niamh',
    });
    expect(req.headers.Authorization).toBe('Bearer cartesia-secret-key');
    expect(req.url).not.toContain('cartesia-secret-key');
  });
});

describe('cartesia stt: codec frames', () => {
  it('ink-whisper: binary audio untouched, bare text commands, text keep-alive under the 20 s idle limit', () => {
    const codec = cartesiaStt.createCodec(whisper());
    const pcm = audio(0.05);
    expect(codec.encodeAudio(pcm)).toBe(pcm);
    expect(codec.finalizeMessage).toBe('finalize');
    expect(codec.closeMessage).toBe('close');
    expect(codec.keepAlive).toEqual({ message: 'finalize', idleMs: 10_000 });
    expect(codec.openMessages ?? []).toEqual([]);
    expect(codec.liveUpdate(whisper({ min_volume: 0.1 }))).toBeNull();
  });

  it('ink-2: JSON close, no finalize command, config keep-alive', () => {
    const codec = cartesiaTurnsStt.createCodec(turns());
    expect(codec.finalizeMessage).toBeNull();
    expect(codec.closeMessage).toBe('{"type":"close"}');
    expect(codec.keepAlive).toEqual({ message: '{"type":"config"}', idleMs: 10_000 });
  });

  it('ink-2: turn settings change live with a config command carrying every value; other changes reconnect', () => {
    const first = cartesiaTurnsStt.validate(turns({ turn_end_timeout_ms: 2000 }));
    const codec = cartesiaTurnsStt.createCodec(first);
    const frames = codec.liveUpdate(cartesiaTurnsStt.validate(turns({ turn_end_threshold: 0.1 })));
    expect(frames).toHaveLength(1);
    expect(JSON.parse(frames![0]!)).toEqual({
      type: 'config',
      turn: { start_threshold: 0.8, eager_end_threshold: 0.4, end_threshold: 0.1, end_timeout_ms: 5600 },
    });
    expect(codec.liveUpdate(cartesiaTurnsStt.validate(turns({ turn_end_threshold: 0.1, keyterm: ['x'] })))).toBeNull();
    expect(codec.liveUpdate({ ...turns({ turn_end_threshold: 0.1 }), sampleRate: 24000 })).toBeNull();
  });
});

describe('cartesia stt: ink-whisper decode', () => {
  function run(name: string, secondsBefore = 0.5): { codec: CartesiaWhisperCodec; events: SttEvent[] } {
    const codec = new CartesiaWhisperCodec(whisper());
    const events: SttEvent[] = [];
    for (const line of fixture(name)) {
      codec.encodeAudio(audio(secondsBefore));
      events.push(...codec.decode(line, false));
    }
    return { codec, events };
  }

  it('every is_final transcript is one final; interims in between; flush_done -> finalized', () => {
    const { events, codec } = run('cartesia-whisper-utterances.jsonl');
    expect(events.map((e) => e.type)).toEqual(['interim', 'interim', 'final', 'interim', 'final', 'finalized']);
    expect(events.filter((e) => e.type === 'interim').map((e) => seg(e).text)).toEqual(['How are', 'How are you doing today?', "I'm planning"]);
    const [f1, f2] = events.filter((e) => e.type === 'final').map(seg);
    expect(f1).toMatchObject({ text: 'How are you doing today?', start: 0.42, end: 1.82, language: 'en', confidence: 1 });
    expect(f1!.words.map((w) => w.word)).toEqual(['How', 'are', 'you', 'doing', 'today?']);
    // the SDK's WordTimestamps shape (parallel arrays) is read as well
    expect(f2).toMatchObject({ text: "I'm planning to visit the museum.", start: 3.1, end: 4.71 });
    expect(f2!.words).toHaveLength(6);
    expect(f2!.words[5]).toEqual({ word: 'museum.', start: 4.3, end: 4.71, confidence: 1 });
    expect(codec.midUtterance).toBe(false);
  });

  it('flush_done before the final (2025 order) waits for the final', () => {
    const { events } = run('cartesia-whisper-flush-first.jsonl', 1);
    expect(events.map((e) => e.type)).toEqual(['interim', 'final', 'finalized', 'finalized']);
    // no words: the segment runs from the previous final's end for `duration` seconds
    expect(seg(events[1]!)).toMatchObject({ start: 0, end: 1.7, words: [] });
  });

  it('segments without words start at the previous final and are capped by the audio sent', () => {
    const codec = new CartesiaWhisperCodec(whisper());
    codec.encodeAudio(audio(1));
    const [a] = codec.decode(Buffer.from('{"type":"transcript","text":"one","is_final":true,"duration":0.6}'), false);
    expect(seg(a!)).toMatchObject({ start: 0, end: 0.6 });
    codec.encodeAudio(audio(1));
    const [b] = codec.decode(Buffer.from('{"type":"transcript","text":" two","is_final":true,"duration":5}'), false);
    expect(seg(b!)).toMatchObject({ text: 'two', start: 0.6, end: 2 });
    const [c] = codec.decode(Buffer.from('{"type":"transcript","text":"three","is_final":true}'), false);
    expect(seg(c!)).toMatchObject({ start: 2, end: 2 });
  });

  it('empty transcripts emit nothing; flush turns the pending interim into a final', () => {
    const codec = new CartesiaWhisperCodec(whisper({}, 'fr'));
    expect(codec.decode(Buffer.from('{"type":"transcript","text":"","is_final":true}'), false)).toEqual([]);
    codec.encodeAudio(audio(0.4));
    codec.decode(Buffer.from('{"type":"transcript","text":" Bonjour","is_final":false}'), false);
    expect(codec.midUtterance).toBe(true);
    const out = codec.flush();
    expect(out).toMatchObject([{ type: 'final', segment: { text: 'Bonjour', language: 'fr', start: 0, end: 0.4 } }]);
    expect(codec.midUtterance).toBe(false);
    expect(codec.flush()).toEqual([]);
  });

  it('maps in-band errors to gateway errors by status', () => {
    const codec = new CartesiaWhisperCodec(whisper());
    const errs = fixture('cartesia-errors.jsonl').flatMap((l) => codec.decode(l, false));
    expect(errs.map((e) => e.type)).toEqual(['error', 'error', 'error', 'error']);
    const ge = errs.map((e) => (e as { error: GatewayError }).error);
    expect(ge.map((e) => e.code)).toEqual(['bad_request', 'rate_limited', 'provider_error', 'provider_error']);
    expect(ge[0]!.message).toBe('cartesia: Invalid request: sample_rate must be between 8000 and 48000 (status 400)');
    expect(ge[0]!.fields).toEqual({ provider_status: 400, provider_code: 'invalid_request' });
    expect(ge[1]!.retryable).toBe(true);
    expect(ge[3]!.message).toContain('legacy shape');
  });

  it('ignores garbage, binary frames, done and unknown types', () => {
    const codec = new CartesiaWhisperCodec(whisper());
    expect(codec.decode(Buffer.from('not json{'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('null'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('[1]'), false)).toEqual([]);
    expect(codec.decode(Buffer.from([1, 2, 3]), true)).toEqual([]);
    expect(codec.decode(Buffer.from('{"type":"done","request_id":"x"}'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('{"type":"something_new"}'), false)).toEqual([]);
  });

  it('cartesiaWords skips malformed entries', () => {
    expect(cartesiaWords(null)).toEqual([]);
    expect(cartesiaWords([{ word: 'a', start: 0 }, 7, { word: ' b', start: 0.1, end: 0.2, probability: 0.5 }])).toEqual([
      { word: 'b', start: 0.1, end: 0.2, confidence: 0.5 },
    ]);
    expect(cartesiaWords([{ words: ['x', 'y'], start: [0, 'bad'], end: [0.1, 0.3] }])).toEqual([{ word: 'x', start: 0, end: 0.1, confidence: 1 }]);
  });
});

describe('cartesia stt: ink-2 turns decode', () => {
  it('turn events -> speech_started, cumulative interims, preflight, resume interim, one final per turn', () => {
    const codec = new CartesiaTurnsCodec(turns());
    const events: SttEvent[] = [];
    for (const line of fixture('cartesia-turns.jsonl')) {
      codec.encodeAudio(audio(0.5));
      events.push(...codec.decode(line, false));
    }
    expect(events.map((e) => e.type)).toEqual([
      'speech_started',
      'interim', // Hello,
      'interim', // Hello, I'd like (the repeated update is dropped)
      'preflight',
      'interim', // turn.resume re-sends the turn's text
      'interim',
      'preflight',
      'final',
      'speech_started',
      'final', // an empty turn still ends the speaking state
    ]);
    expect(events.filter((e) => e.type === 'interim').map((e) => seg(e).text)).toEqual([
      'Hello,',
      "Hello, I'd like",
      "Hello, I'd like",
      "Hello, I'd like to book a table.",
    ]);
    const finals = events.filter((e) => e.type === 'final').map(seg);
    // no timestamps: previous turn end .. audio sent when turn.end arrived
    expect(finals[0]).toEqual({ text: "Hello, I'd like to book a table.", start: 0, end: 5, confidence: 1, language: 'en', words: [] });
    expect(finals[1]).toMatchObject({ text: '', start: 5, end: 6 });
    expect(codec.midUtterance).toBe(false);
  });

  it('flush ends a turn in progress with its text; turn.end keeps the last text when its own is empty', () => {
    const codec = new CartesiaTurnsCodec(turns());
    codec.encodeAudio(audio(1));
    expect(codec.decode(Buffer.from('{"type":"turn.update","transcript":"Hi there"}'), false).map((e) => e.type)).toEqual([
      'speech_started',
      'interim',
    ]);
    expect(codec.midUtterance).toBe(true);
    expect(codec.flush()).toMatchObject([{ type: 'final', segment: { text: 'Hi there', start: 0, end: 1 } }]);
    expect(codec.flush()).toEqual([]);
    codec.decode(Buffer.from('{"type":"turn.start"}'), false);
    codec.decode(Buffer.from('{"type":"turn.update","transcript":"Again"}'), false);
    expect(codec.decode(Buffer.from('{"type":"turn.end","transcript":""}'), false)).toMatchObject([{ type: 'final', segment: { text: 'Again' } }]);
    expect(codec.decode(Buffer.from('{"type":"turn.end","transcript":""}'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('{"type":"turn.resume"}'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('{"type":"turn.eager_end","transcript":"x"}'), false)).toEqual([]);
  });

  it('errors on the turns endpoint', () => {
    const codec = new CartesiaTurnsCodec(turns());
    const [e] = codec.decode(Buffer.from('{"type":"error","title":"Unauthorized","message":"bad key","status_code":401}'), false);
    expect((e as { error: GatewayError }).error.code).toBe('unauthorized');
  });
});

describe('cartesia stt: adapters', () => {
  it('declare two endpoints of one provider with their capabilities', () => {
    expect(cartesiaStt.provider).toBe('cartesia');
    expect(cartesiaTurnsStt.provider).toBe('cartesia');
    expect(cartesiaStt.models).toEqual(['ink-whisper', 'ink-whisper-2025-06-04']);
    expect(cartesiaTurnsStt.models).toEqual(['ink-2']);
    expect(cartesiaTurnsStt.defaultModel).toBe('ink-2');
    expect(cartesiaStt.defaultModel).toBeUndefined();
    expect(cartesiaStt.capabilities).toEqual({
      wordTimings: true,
      diarization: false,
      startOfSpeech: false,
      preflight: false,
      liveUpdate: false,
      finalize: true,
    });
    expect(cartesiaTurnsStt.capabilities).toEqual({
      wordTimings: false,
      diarization: false,
      startOfSpeech: true,
      preflight: true,
      liveUpdate: true,
      finalize: false,
    });
    expect(cartesiaStt.createCodec(whisper())).toBeInstanceOf(CartesiaWhisperCodec);
    expect(cartesiaTurnsStt.createCodec(turns())).toBeInstanceOf(CartesiaTurnsCodec);
  });
});
