import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { SttCodec, SttEvent, SttOptions, SttSegment } from '../types.ts';
import { ELEVENLABS_STT_SAMPLE_RATES, ElevenLabsSttCodec, elevenLabsStt, elevenLabsSttCloseError, scribeWords } from './elevenlabs.ts';

function fixture(name: string): Buffer[] {
  return readFileSync(new URL(`../../../test/fixtures/stt/${name}`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => Buffer.from(l));
}

const opts = (extra: Record<string, unknown> = {}, language: string | null = 'en', sampleRate = 16000): SttOptions => ({
  model: 'scribe_v2_realtime',
  language: language ?? undefined,
  sampleRate,
  extra,
});
const endpoint = { apiKey: 'el-secret-key', baseUrl: 'https://api.elevenlabs.io/', connectTimeoutMs: 1000 };

function codecFor(o: SttOptions): ElevenLabsSttCodec {
  return elevenLabsStt.createCodec(elevenLabsStt.validate(o)) as ElevenLabsSttCodec;
}

function decodeAll(codec: ElevenLabsSttCodec, name: string): SttEvent[] {
  return fixture(name).flatMap((m) => codec.decode(m, false));
}

const segOf = (e: SttEvent | undefined): SttSegment => (e as { segment: SttSegment }).segment;
const buf = (o: unknown): Buffer => Buffer.from(JSON.stringify(o));

describe('elevenlabs decode', () => {
  it('timestamps mode: interims from partials, one final per commit from the _with_timestamps twin, then finalized', () => {
    const events = decodeAll(codecFor(opts()), 'elevenlabs-vad-timestamps.jsonl');
    expect(events.map((e) => e.type)).toEqual([
      'interim', 'interim', 'interim', // the empty partial is skipped
      'final', 'finalized',
      'interim', 'interim',
      'final', 'finalized',
    ]);
    const finals = events.filter((e) => e.type === 'final').map(segOf);
    expect(finals.map((s) => s.text)).toEqual(['Hello, how are you today?', 'I need a table for two.']);
    const first = finals[0]!;
    expect(first.words.map((w) => w.word)).toEqual(['Hello,', 'how', 'are', 'you', 'today?']); // spacing dropped
    expect(first).toMatchObject({ start: 0.42, end: 1.9, language: 'en' });
    expect(first.words[0]!.confidence).toBeCloseTo(Math.exp(-0.02), 9);
    expect(first.confidence).toBeCloseTo([-0.02, -0.11, -0.05, -0.01, -0.3].reduce((s, l) => s + Math.exp(l), 0) / 5, 9);
    // word times are on the session timeline: the second utterance starts at 4.1 s
    expect(finals[1]).toMatchObject({ start: 4.1, end: 5.5 });
    expect(events.filter((e) => e.type === 'interim').map((e) => segOf(e).text)).toEqual([
      'Hello', 'Hello, how are', 'Hello, how are you today', 'I need', 'I need a table for two',
    ]);
  });

  it('timestamps mode: works when the twin comes first, and a lost twin still ends the utterance on flush', () => {
    const codec = codecFor(opts());
    const words = [{ text: 'hi', start: 0.1, end: 0.3, type: 'word' }];
    expect(codec.decode(buf({ message_type: 'committed_transcript_with_timestamps', text: 'hi', words }), false).map((e) => e.type)).toEqual(['final', 'finalized']);
    expect(codec.decode(buf({ message_type: 'committed_transcript', text: 'hi' }), false)).toEqual([]);
    expect(codec.midUtterance).toBe(false);
    // a plain commit whose twin never comes
    expect(codec.decode(buf({ message_type: 'committed_transcript', text: 'lost twin' }), false)).toEqual([]);
    expect(codec.midUtterance).toBe(true);
    const flushed = codec.flush();
    expect(flushed.map((e) => e.type)).toEqual(['final']);
    expect(segOf(flushed[0]).text).toBe('lost twin');
    expect(codec.midUtterance).toBe(false);
    expect(codec.flush()).toEqual([]);
    // two plain commits in a row: the older one is not lost
    codec.decode(buf({ message_type: 'committed_transcript', text: 'one' }), false);
    const second = codec.decode(buf({ message_type: 'committed_transcript', text: 'two' }), false);
    expect(second.map((e) => segOf(e).text)).toEqual(['one']);
    const twin = codec.decode(buf({ message_type: 'committed_transcript_with_timestamps', text: 'two', words: null }), false);
    expect(twin.map((e) => e.type)).toEqual(['final', 'finalized']);
    expect(segOf(twin[0])).toMatchObject({ text: 'two', words: [] });
  });

  it('plain mode (include_timestamps false): committed_transcript is the final; an empty commit only acknowledges', () => {
    const codec = codecFor(opts({ include_timestamps: false, commit_strategy: 'manual' }, 'fr', 24000));
    const pcm = Buffer.alloc(24000 * 2); // 1 s of audio at 24 kHz
    codec.encodeAudio(pcm);
    const events = decodeAll(codec, 'elevenlabs-manual-commit.jsonl');
    expect(events.map((e) => e.type)).toEqual(['interim', 'interim', 'final', 'finalized', 'finalized', 'interim']);
    // no word times: the segment spans the audio sent since the previous commit
    expect(segOf(events[2])).toMatchObject({ text: 'Bonjour tout le monde.', start: 0, end: 1, words: [], confidence: 1 });
    codec.encodeAudio(pcm.subarray(0, 24000)); // +0.5 s
    expect(segOf(events[5]).start).toBe(1);
    expect(codec.midUtterance).toBe(true);
    const flushed = codec.flush();
    expect(segOf(flushed[0])).toMatchObject({ text: 'Merci', start: 1, end: 1.5 });
    // the _with_timestamps twin is not expected in this mode and is dropped
    expect(codec.decode(buf({ message_type: 'committed_transcript_with_timestamps', text: 'x', words: [] }), false)).toEqual([]);
  });

  it('maps every documented error message type to an error event with our code', () => {
    const events = decodeAll(codecFor(opts()), 'elevenlabs-errors.jsonl');
    expect(events.every((e) => e.type === 'error')).toBe(true);
    const errors = events.map((e) => (e as { error: GatewayError }).error);
    expect(errors.map((e) => [e.fields?.['provider_error'], e.code])).toEqual([
      ['auth_error', 'unauthorized'],
      ['quota_exceeded', 'rate_limited'],
      ['rate_limited', 'rate_limited'],
      ['commit_throttled', 'rate_limited'],
      ['queue_overflow', 'rate_limited'],
      ['resource_exhausted', 'unavailable'],
      ['unaccepted_terms', 'forbidden'],
      ['input_error', 'bad_request'],
      ['invalid_request', 'bad_request'],
      ['chunk_size_exceeded', 'bad_request'],
      ['insufficient_audio_activity', 'provider_error'],
      ['session_time_limit_exceeded', 'provider_error'],
      ['transcriber_error', 'provider_error'],
      ['error', 'provider_error'],
    ]);
    expect(errors[0]!.message).toBe('elevenlabs: You must be authenticated to use this endpoint. (auth_error)');
    expect(errors[0]!.status).toBe(401);
    expect(errors[13]!.message).toBe('elevenlabs: Internal server error - try again (error)');
    expect(errors[13]!.retryable).toBe(true);
  });

  it('ignores garbage, binary frames, session_started and unknown message types', () => {
    const codec = codecFor(opts());
    expect(codec.decode(Buffer.from('not json{'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('null'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('{"text":"no type"}'), false)).toEqual([]);
    expect(codec.decode(Buffer.from([1, 2, 3]), true)).toEqual([]);
    expect(codec.decode(buf({ message_type: 'committed_transcript_entities', entities: [] }), false)).toEqual([]);
    expect(codec.decode(fixture('elevenlabs-vad-timestamps.jsonl')[0]!, false)).toEqual([]);
  });

  it('scribeWords keeps words only, trims text, turns logprob into confidence and speaker ids into strings', () => {
    expect(scribeWords([
      { text: ' hi ', start: 1, end: 1.2, type: 'word', logprob: 0, speaker_id: 'speaker_0' },
      { text: ' ', start: 1.2, end: 1.3, type: 'spacing' },
      { text: '(laughs)', start: 1.3, end: 1.8, type: 'audio_event' },
      { text: 'there', start: 1.3, end: 1.6 },
    ])).toEqual([
      { word: 'hi', start: 1, end: 1.2, confidence: 1, speaker: 'speaker_0' },
      { word: 'there', start: 1.3, end: 1.6, confidence: 1 },
    ]);
    expect(scribeWords(null)).toEqual([]);
  });
});

describe('elevenlabs codec frames', () => {
  it('encodes audio as input_audio_chunk JSON with base64 PCM; finalize is an empty commit; no close message or keep-alive', () => {
    const codec = codecFor(opts({}, 'en', 22050));
    const pcm = Buffer.from([1, 2, 3, 4, 250, 255]);
    const frame = codec.encodeAudio(pcm);
    expect(JSON.parse(frame)).toEqual({ message_type: 'input_audio_chunk', audio_base_64: pcm.toString('base64'), commit: false, sample_rate: 22050 });
    expect(JSON.parse(codec.finalizeMessage)).toEqual({ message_type: 'input_audio_chunk', audio_base_64: '', commit: true, sample_rate: 22050 });
    expect(codec.closeMessage).toBeNull();
    expect(codec.keepAlive).toBeNull();
    expect((codec as SttCodec).openMessages).toBeUndefined();
    expect(codec.liveUpdate()).toBeNull();
    expect(codec.midUtterance).toBe(false);
  });
});

describe('elevenlabs request', () => {
  it('builds the realtime URL with defaults (vad, timestamps) and the xi-api-key header only', () => {
    const o = elevenLabsStt.validate(opts({ keyterms: ['LiveKit', 'a&b=c d'], vad_silence_threshold_secs: 0.8, min_silence_duration_ms: 300 }, 'en-US'));
    const req = elevenLabsStt.request(o, endpoint);
    const url = new URL(req.url);
    expect(`${url.protocol}//${url.host}${url.pathname}`).toBe('https://api.elevenlabs.io/v1/speech-to-text/realtime');
    expect(Object.fromEntries([...url.searchParams].filter(([k]) => k !== 'keyterms'))).toEqual({
      model_id: 'scribe_v2_realtime',
      audio_format: 'pcm_16000',
      commit_strategy: 'vad',
      include_timestamps: 'true',
      language_code: 'en',
      vad_silence_threshold_secs: '0.8',
      min_silence_duration_ms: '300',
    });
    expect(url.searchParams.getAll('keyterms')).toEqual(['LiveKit', 'a&b=c d']);
    expect(req.url).not.toContain('a&b=c d');
    expect(req.headers).toEqual({ 'xi-api-key': 'el-secret-key' });
    expect(req.url).not.toContain('el-secret-key');
  });

  it('asks for language detection when no language is set (or multi); forwards manual commits and every documented option', () => {
    for (const language of [null, 'multi']) {
      const q = new URL(elevenLabsStt.request(elevenLabsStt.validate(opts({}, language)), endpoint).url).searchParams;
      expect(q.has('language_code')).toBe(false);
      expect(q.get('include_language_detection')).toBe('true');
    }
    const o = opts({
      commit_strategy: 'manual',
      include_timestamps: false,
      include_language_detection: false,
      vad_threshold: 0.5,
      min_speech_duration_ms: 100,
      no_verbatim: true,
      enable_logging: false,
      language_code: 'deu',
      keyterms: [],
    }, null, 48000);
    const q = new URL(elevenLabsStt.request(elevenLabsStt.validate(o), endpoint).url).searchParams;
    expect(Object.fromEntries(q)).toEqual({
      model_id: 'scribe_v2_realtime',
      audio_format: 'pcm_48000',
      commit_strategy: 'manual',
      include_timestamps: 'false',
      language_code: 'deu',
      vad_threshold: '0.5',
      min_speech_duration_ms: '100',
      no_verbatim: 'true',
      enable_logging: 'false',
    });
  });

  it('rejects unknown, refused, mistyped and out-of-range options with a 400 naming the option', () => {
    const bad = (extra: Record<string, unknown>, language: string | null = 'en', rate = 16000) => () => elevenLabsStt.validate(opts(extra, language, rate));
    const cases: Array<[() => unknown, RegExp]> = [
      [bad({ bogus: 1 }), /unknown option "bogus"/],
      [bad({ audio_format: 'ulaw_8000' }), /option "audio_format" is not accepted/],
      [bad({ model_id: 'x' }), /model_id/],
      [bad({ token: 'x' }), /token/],
      [bad({ commit_strategy: 'auto' }), /commit_strategy" must be one of manual, vad/],
      [bad({ include_timestamps: 'yes' }), /include_timestamps" must be a boolean/],
      [bad({ vad_silence_threshold_secs: 0.2 }), /vad_silence_threshold_secs" must be a number from 0.3 to 3/],
      [bad({ vad_silence_threshold_secs: 3.5 }), /vad_silence_threshold_secs/],
      [bad({ vad_threshold: 0.95 }), /vad_threshold" must be a number from 0.1 to 0.9/],
      [bad({ min_speech_duration_ms: 20 }), /min_speech_duration_ms" must be an integer from 50 to 2000/],
      [bad({ min_silence_duration_ms: 2500 }), /min_silence_duration_ms/],
      [bad({ min_silence_duration_ms: 100.5 }), /min_silence_duration_ms/],
      [bad({ keyterms: 'x'.repeat(21) }), /keyterms" must be a string or an array of at most 50/],
      [bad({ keyterms: Array.from({ length: 51 }, (_, i) => `k${i}`) }), /keyterms/],
      [bad({ keyterms: ['ok', 3] }), /keyterms/],
      [bad({ keyterms: [' '] }), /keyterms/],
      [bad({ language_code: 'english' }), /option "language_code" must be an ISO 639-1 or 639-3 code/],
      [bad({ language_code: 'fr' }, 'en'), /contradicts settings.language/],
      [bad({}, 'en us; drop'), /language must be an ISO 639/],
      [bad({}, 'en', 11025), /sample rate 11025 is not supported/],
    ];
    for (const [fn, re] of cases) {
      expect(fn).toThrow(GatewayError);
      expect(fn).toThrow(re);
      try {
        fn();
      } catch (err) {
        expect((err as GatewayError).status).toBe(400);
      }
    }
    // boundaries are accepted; null unsets an option
    expect(() => elevenLabsStt.validate(opts({ vad_silence_threshold_secs: 0.3, vad_threshold: 0.9, min_speech_duration_ms: 2000, min_silence_duration_ms: 50, keyterms: 'x'.repeat(20), language_code: 'EN', bogus: null }))).not.toThrow();
  });
});

describe('elevenlabs capabilities and closes', () => {
  it('declares what the adapter delivers', () => {
    expect(elevenLabsStt.provider).toBe('elevenlabs');
    expect(elevenLabsStt.models).toEqual(['scribe_v2_realtime']);
    expect(elevenLabsStt.defaultModel).toBe('scribe_v2_realtime');
    expect(elevenLabsStt.capabilities).toEqual({
      wordTimings: true,
      diarization: false,
      startOfSpeech: false,
      preflight: false,
      liveUpdate: false,
      finalize: true,
      sampleRates: [8000, 16000, 22050, 24000, 44100, 48000],
    });
    for (const rate of ELEVENLABS_STT_SAMPLE_RATES) {
      expect(new URL(elevenLabsStt.request(elevenLabsStt.validate(opts({}, 'en', rate)), endpoint).url).searchParams.get('audio_format')).toBe(`pcm_${rate}`);
    }
  });

  it('maps an unrequested close by its code', () => {
    expect(elevenLabsSttCloseError(1008, 'policy')).toMatchObject({ code: 'bad_request', fields: { provider_close: 1008 } });
    expect(elevenLabsSttCloseError(1013, '').code).toBe('unavailable');
    const e = elevenLabsSttCloseError(1000, '');
    expect(e.code).toBe('provider_error');
    expect(e.retryable).toBe(true);
    expect(e.message).toBe('elevenlabs: provider ended the session (close 1000)');
    expect(elevenLabsSttCloseError(1011, 'x'.repeat(500)).message.length).toBeLessThan(300);
  });
});
