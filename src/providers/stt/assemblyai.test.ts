import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../protocol/errors.ts';
import type { SttEvent, SttOptions, SttSegment } from '../types.ts';
import { AssemblyAiCodec, assemblyAiStt } from './assemblyai.ts';

function fixture(name: string): Buffer[] {
  return readFileSync(new URL(`../../../test/fixtures/stt/${name}`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => Buffer.from(l));
}

const opts = (extra: Record<string, unknown> = {}, model = 'universal-streaming', language: string | undefined = 'en', sampleRate = 16000): SttOptions => ({
  model,
  language,
  sampleRate,
  extra,
});
const endpoint = { apiKey: 'aai-secret-key', baseUrl: 'wss://streaming.assemblyai.com', connectTimeoutMs: 1000 };

function decodeAll(name: string, o: SttOptions): { codec: AssemblyAiCodec; events: SttEvent[] } {
  const codec = new AssemblyAiCodec(assemblyAiStt.validate(o));
  return { codec, events: fixture(name).flatMap((m) => codec.decode(m, false)) };
}

const seg = (e: SttEvent | undefined): SttSegment => (e as { segment: SttSegment }).segment;
const texts = (events: SttEvent[], type: string) => events.filter((e) => e.type === type).map((e) => seg(e).text);

function query(o: SttOptions): URLSearchParams {
  return new URL(assemblyAiStt.request(assemblyAiStt.validate(o), endpoint).url).searchParams;
}

describe('assemblyai decode', () => {
  it('format_turns: interims with every word, the unformatted end of turn as preflight, one formatted final per turn', () => {
    const { events } = decodeAll('assemblyai-universal-format-turns.jsonl', opts({ format_turns: true }));
    expect(events.map((e) => e.type)).toEqual([
      'speech_started', // the first words of turn 0 (universal-streaming has no SpeechStarted)
      'interim', // hi
      'interim', // hi my
      'interim', // hi my name is sonny
      'preflight', // unformatted end of turn 0
      'final',
      'finalized',
      'speech_started',
      'interim', // i am a voice agen
      'preflight', // utterance "I am a voice agent."
      'interim',
      'preflight', // unformatted end of turn 1
      'final',
      'finalized',
      'provider_usage',
    ]);
    expect(texts(events, 'interim')).toEqual(['hi', 'hi my', 'hi my name is sonny', 'i am a voice agen', 'i am a voice agent']);
    expect(texts(events, 'preflight')).toEqual(['hi my name is sonny', 'I am a voice agent.', 'i am a voice agent']);
    expect(texts(events, 'final')).toEqual(['Hi, my name is Sonny.', 'I am a voice agent.']);
    const first = seg(events.find((e) => e.type === 'final'));
    expect(first.start).toBeCloseTo(1.92, 9);
    expect(first.end).toBeCloseTo(3.84, 9);
    expect(first.words.map((w) => [w.word, w.start, w.end])).toEqual([
      ['Hi,', 1.92, 2],
      ['my', 2.8, 2.88],
      ['name', 2.96, 3.04],
      ['is', 3.04, 3.12],
      ['Sonny.', 3.6, 3.84],
    ]);
    expect(first.confidence).toBeCloseTo((0.874618 + 0.812831 + 0.999999 + 0.795226 + 0.822963) / 5, 9);
    expect(first.extra).toEqual({ end_of_turn_confidence: 0.5005 });
    // the utterance preflight carries only the finalized words
    const utt = seg(events.filter((e) => e.type === 'preflight')[1]);
    expect(utt.words.map((w) => w.word)).toEqual(['i', 'am', 'a', 'voice']);
    expect(events.at(-1)).toEqual({ type: 'provider_usage', audioSeconds: 7 });
  });

  it('without format_turns the unformatted end of turn is the final and a formatted copy is dropped', () => {
    const { events } = decodeAll('assemblyai-universal-format-turns.jsonl', opts());
    expect(texts(events, 'final')).toEqual(['hi my name is sonny', 'i am a voice agent']);
    expect(events.filter((e) => e.type === 'finalized')).toHaveLength(2);
    expect(texts(events, 'preflight')).toEqual(['I am a voice agent.']);
  });

  it('u3-rt-pro: SpeechStarted, a silence partial, the formatted end of turn as the final', () => {
    const { events } = decodeAll('assemblyai-u3-rt-pro.jsonl', opts({}, 'u3-rt-pro'));
    expect(events.map((e) => e.type)).toEqual(['speech_started', 'interim', 'final', 'finalized', 'provider_usage']);
    expect(seg(events[1]).text).toBe('My name is—');
    const final = seg(events[2]);
    expect(final).toMatchObject({ text: 'My name is Sonny.', language: 'en', extra: { end_of_turn_confidence: 1, language_confidence: 0.97 } });
    expect(final.start).toBeCloseTo(1.216, 9);
    expect(final.end).toBeCloseTo(4.155, 9);
  });

  it('multilingual + diarization: speakers as strings, language, duplicate end of turn dropped, held turn released by the next, in-band Error', () => {
    const { events } = decodeAll('assemblyai-multilingual-diarized.jsonl', opts({ format_turns: true, speaker_labels: true }, 'universal-streaming-multilingual', 'es'));
    expect(events.map((e) => e.type)).toEqual([
      'speech_started',
      'interim',
      'preflight',
      'final',
      'finalized',
      'speech_started',
      'interim', // turn 1
      'preflight', // its unformatted end of turn
      'final', // released when turn 2 starts (no formatted copy came)
      'finalized',
      'speech_started',
      'interim', // turn 2
      'error',
    ]);
    const finals = events.filter((e) => e.type === 'final').map(seg);
    expect(finals.map((s) => [s.text, s.speaker, s.language])).toEqual([
      ['Hola, ¿qué tal?', 'A', 'es'],
      ['bien gracias', 'B', undefined],
    ]);
    expect(finals[0]!.words.map((w) => w.speaker)).toEqual(['A', 'A', 'A']);
    expect(seg(events[6]).speaker).toBe('B'); // speaker_label UNKNOWN -> the words' label
    const err = (events.at(-1) as { error: GatewayError }).error;
    expect(err).toBeInstanceOf(GatewayError);
    expect(err.code).toBe('provider_error');
    expect(err.message).toBe('assemblyai: provider cancelled the session (server error) (error 3005: Session Cancelled: server error)');
    expect(err.fields).toEqual({ provider_code: 3005 });
  });

  it('ForceEndpoint: the forced end of turn is the final, then finalized; a late partial of that turn is ignored', () => {
    const { codec, events } = decodeAll('assemblyai-force-endpoint.jsonl', opts());
    expect(events.map((e) => e.type)).toEqual(['speech_started', 'interim', 'final', 'finalized', 'provider_usage']);
    expect(seg(events[2]).text).toBe('hello world');
    expect(codec.midUtterance).toBe(false);
  });

  it('an end of turn with no text still answers a finalize', () => {
    const codec = new AssemblyAiCodec(opts());
    const eot = { type: 'Turn', turn_order: 3, turn_is_formatted: false, end_of_turn: true, transcript: '', end_of_turn_confidence: 0, words: [] };
    expect(codec.decode(Buffer.from(JSON.stringify(eot)), false)).toEqual([{ type: 'finalized' }]);
  });

  it('flush turns the partial or a held end of turn into a final, once', () => {
    const lines = fixture('assemblyai-universal-format-turns.jsonl');
    const a = new AssemblyAiCodec(opts({ format_turns: true }));
    a.decode(lines[3]!, false);
    expect(a.midUtterance).toBe(true);
    expect(a.flush()).toMatchObject([{ type: 'final', segment: { text: 'hi my name is sonny' } }]);
    expect(a.flush()).toEqual([]);
    expect(a.decode(lines[5]!, false)).toEqual([]); // a late formatted copy of the flushed turn
    const b = new AssemblyAiCodec(opts({ format_turns: true }));
    b.decode(lines[4]!, false); // unformatted end of turn: held
    expect(b.midUtterance).toBe(true);
    expect(b.flush()).toMatchObject([{ type: 'final', segment: { text: 'hi my name is sonny' } }]);
    expect(b.midUtterance).toBe(false);
    // flushing a turn that has no text yet does not close it
    const c = new AssemblyAiCodec(opts());
    c.decode(Buffer.from('{"type":"Turn","turn_order":0,"end_of_turn":false,"transcript":"","words":[]}'), false);
    expect(c.flush()).toEqual([]);
    expect(c.decode(lines[4]!, false).map((e) => e.type)).toEqual(['final', 'finalized']);
  });

  it('maps close codes and in-band errors to gateway errors with the provider reason', () => {
    const close = (code: number, reason: string) => assemblyAiStt.closeError!(code, reason);
    expect(close(1008, 'Unauthorized Connection: Missing Authorization header')).toMatchObject({ code: 'unauthorized', fields: { provider_close: 1008 } });
    expect(close(1008, 'Unauthorized connection: Too many concurrent sessions').code).toBe('rate_limited');
    expect(close(3005, 'Session Cancelled: server error').code).toBe('provider_error');
    const c3007 = close(3007, 'Input duration violation: 20 ms. Expected between 50 and 1000 ms');
    expect(c3007.code).toBe('provider_error');
    expect(c3007.message).toContain('Input duration violation: 20 ms');
    expect(close(3008, 'Session Expired: Maximum session duration exceeded').retryable).toBe(true);
    expect(close(3009, 'Too many concurrent sessions').code).toBe('rate_limited');
    expect(close(4001, 'Not Authorized').code).toBe('unauthorized');
    expect(close(4002, 'Insufficient funds').code).toBe('forbidden');
    expect(close(4000, 'Sample rate must be a positive integer').code).toBe('bad_request');
    expect(close(1000, '').message).toBe('assemblyai: provider closed the stream (close 1000)');
    const codec = new AssemblyAiCodec(opts());
    const [ev] = codec.decode(Buffer.from('{"type":"Error","error":"something odd"}'), false);
    expect(ev).toMatchObject({ type: 'error', error: { code: 'provider_error', message: 'assemblyai: provider reported an error (error: something odd)' } });
  });

  it('ignores garbage, binary frames and unknown message types', () => {
    const codec = new AssemblyAiCodec(opts());
    expect(codec.decode(Buffer.from('not json{'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('null'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('[1]'), false)).toEqual([]);
    expect(codec.decode(Buffer.from([1, 2, 3]), true)).toEqual([]);
    expect(codec.decode(Buffer.from('{"type":"Heartbeat","total_audio_received_ms":100}'), false)).toEqual([]);
    expect(codec.decode(Buffer.from('{"type":"Begin","id":"x","expires_at":1}'), false)).toEqual([]);
  });
});

describe('assemblyai audio framing (50-1000 ms per message)', () => {
  it('passes 50 ms frames through untouched and holds shorter ones until 50 ms', () => {
    const codec = new AssemblyAiCodec(opts());
    const f50 = Buffer.alloc(1600, 1);
    expect(codec.encodeAudio(f50)).toBe(f50);
    const f20 = Buffer.alloc(640, 2);
    expect(codec.encodeAudio(f20)).toBeNull();
    expect(codec.encodeAudio(f20)).toBeNull();
    const out = codec.encodeAudio(f20);
    expect(out?.length).toBe(1920);
    expect(codec.flushAudio()).toBeNull();
  });

  it('cuts input over 1000 ms and sends the rest with the next call', () => {
    const codec = new AssemblyAiCodec(opts());
    const big = Buffer.alloc(64000 + 1600); // 2.05 s
    expect(codec.encodeAudio(big)?.length).toBe(32000);
    expect(codec.encodeAudio(Buffer.alloc(1600))?.length).toBe(32000); // 33600 + 1600 held -> 1000 ms out
    expect(codec.encodeAudio(Buffer.alloc(1600))?.length).toBe(4800); // 3200 + 1600: everything
    expect(codec.flushAudio()).toBeNull();
  });

  it('keeps an odd trailing byte with the next audio', () => {
    const codec = new AssemblyAiCodec(opts());
    const a = Buffer.alloc(1601, 7);
    a[1600] = 0x34;
    expect(codec.encodeAudio(a)?.length).toBe(1600);
    expect(codec.flushAudio()).toBeNull(); // a lone byte is not a sample
    const b = Buffer.alloc(1599, 0);
    b[0] = 0x12;
    const out = codec.encodeAudio(b)!;
    expect(out.length).toBe(1600);
    expect(out.readUInt16LE(0)).toBe(0x1234);
  });

  it('flushAudio pads held audio to 50 ms with silence and shifts later provider times back', () => {
    const codec = new AssemblyAiCodec(opts({}, 'universal-streaming', 'en', 8000)); // 50 ms = 800 bytes
    expect(codec.encodeAudio(Buffer.alloc(8000, 1))?.length).toBe(8000); // 0.5 s
    expect(codec.encodeAudio(Buffer.alloc(320, 1))).toBeNull(); // 20 ms held
    const padded = codec.flushAudio()!;
    expect(padded.length).toBe(800);
    expect(padded.subarray(0, 320).every((x) => x === 1)).toBe(true);
    expect(padded.subarray(320).every((x) => x === 0)).toBe(true);
    // upstream timeline: 0-0.52 audio, 0.52-0.55 padding, then audio again
    const turn = {
      type: 'Turn',
      turn_order: 0,
      end_of_turn: true,
      turn_is_formatted: false,
      transcript: 'a b c',
      words: [
        { text: 'a', start: 400, end: 500, confidence: 1, word_is_final: true },
        { text: 'b', start: 530, end: 700, confidence: 1, word_is_final: true },
        { text: 'c', start: 750, end: 900, confidence: 1, word_is_final: true },
      ],
    };
    const [final] = codec.decode(Buffer.from(JSON.stringify(turn)), false);
    const words = seg(final).words.map((w) => [w.start, w.end]);
    expect(words[0]).toEqual([0.4, 0.5]);
    expect(words[1]![0]).toBeCloseTo(0.52, 9); // inside the padding -> where the padding started
    expect(words[1]![1]).toBeCloseTo(0.67, 9);
    expect(words[2]![0]).toBeCloseTo(0.72, 9);
    expect(words[2]![1]).toBeCloseTo(0.87, 9);
  });
});

describe('assemblyai request', () => {
  it('builds the v3 URL with speech_model, rate, encoding and format_turns; raw key in Authorization', () => {
    const req = assemblyAiStt.request(assemblyAiStt.validate(opts({ format_turns: true, end_of_turn_confidence_threshold: 0.5, max_turn_silence: 1000 })), endpoint);
    const url = new URL(req.url);
    expect(`${url.protocol}//${url.host}${url.pathname}`).toBe('wss://streaming.assemblyai.com/v3/ws');
    expect(Object.fromEntries(url.searchParams)).toEqual({
      speech_model: 'universal-streaming-english',
      sample_rate: '16000',
      encoding: 'pcm_s16le',
      format_turns: 'true',
      end_of_turn_confidence_threshold: '0.5',
      max_turn_silence: '1000',
    });
    expect(req.headers).toEqual({ Authorization: 'aai-secret-key' });
    expect(req.url).not.toContain('aai-secret-key');
  });

  it('defaults: format_turns=false on universal models, language_detection on multilingual/u3, keyterms as JSON', () => {
    expect(query(opts()).get('format_turns')).toBe('false');
    expect(query(opts()).has('language_detection')).toBe(false);
    const multi = query(opts({ keyterms_prompt: ['LiveKit', 'Kelly Byrne-Donoghue'] }, 'universal-streaming-multilingual', 'multi', 24000));
    expect(multi.get('speech_model')).toBe('universal-streaming-multilingual');
    expect(multi.get('sample_rate')).toBe('24000');
    expect(multi.get('language_detection')).toBe('true');
    expect(JSON.parse(multi.get('keyterms_prompt')!)).toEqual(['LiveKit', 'Kelly Byrne-Donoghue']);
    const u3 = query(opts({ agent_context: 'What is your name?', min_end_of_turn_silence_when_confident: 200, language_detection: false }, 'u3-rt-pro'));
    expect(u3.get('speech_model')).toBe('u3-rt-pro');
    expect(u3.has('format_turns')).toBe(false);
    expect(u3.get('language_detection')).toBe('false');
    expect(u3.get('min_turn_silence')).toBe('200');
    expect(u3.has('min_end_of_turn_silence_when_confident')).toBe(false);
    expect(u3.get('agent_context')).toBe('What is your name?');
    const u35 = query(opts({ mode: 'min_latency', voice_focus: 'near-field' }, 'universal-3-5-pro', 'fr-CA'));
    expect(u35.get('language_codes')).toBe('["fr"]');
    expect(u35.get('mode')).toBe('min_latency');
    expect(u35.get('voice_focus')).toBe('near-field');
  });

  it('drops the empty keyterms_prompt the clients always inject', () => {
    expect(query(opts({ keyterms_prompt: [] })).has('keyterms_prompt')).toBe(false);
  });

  it('accepts ws(s) and http(s) base URLs, with or without the /v3/ws path', () => {
    const o = assemblyAiStt.validate(opts());
    const url = (baseUrl: string) => assemblyAiStt.request(o, { ...endpoint, baseUrl }).url.split('?')[0];
    expect(url('http://127.0.0.1:9000/')).toBe('http://127.0.0.1:9000/v3/ws');
    expect(url('wss://streaming.eu.assemblyai.com')).toBe('wss://streaming.eu.assemblyai.com/v3/ws');
    expect(url('wss://streaming.assemblyai.com/v3/ws')).toBe('wss://streaming.assemblyai.com/v3/ws');
    expect(url('https://proxy.example/aai/v3/ws/')).toBe('https://proxy.example/aai/v3/ws');
  });
});

describe('assemblyai validate', () => {
  const fails = (o: SttOptions, re: RegExp) => {
    let err: unknown;
    try {
      assemblyAiStt.validate(o);
    } catch (e) {
      err = e;
    }
    expect(err, re.source).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).status).toBe(400);
    expect((err as GatewayError).message).toMatch(re);
  };

  it('rejects unknown, refused and out-of-range options with clear messages', () => {
    fails(opts({ bogus: 1 }), /unknown option "bogus"/);
    fails(opts({ sample_rate: 8000 }), /sample_rate.*settings\.sample_rate/);
    fails(opts({ webhook_url: 'http://x' }), /webhook_url/);
    fails(opts({ end_of_turn_confidence_threshold: 1.5 }), /end_of_turn_confidence_threshold" must be a number from 0 to 1/);
    fails(opts({ max_turn_silence: -1 }), /max_turn_silence/);
    fails(opts({ max_turn_silence: 12.5 }), /max_turn_silence" must be an integer/);
    fails(opts({ format_turns: 'yes' }), /format_turns" must be a boolean/);
    fails(opts({ inactivity_timeout: 4 }), /inactivity_timeout" must be an integer from 5 to 3600/);
    fails(opts({ max_speakers: 11, speaker_labels: true }), /max_speakers/);
    fails(opts({ max_speakers: 2 }), /needs speaker_labels/);
    fails(opts({ min_turn_silence: 100, min_end_of_turn_silence_when_confident: 100 }), /either/);
    fails(opts({ min_turn_silence: 900, max_turn_silence: 500 }), /must not exceed/);
  });

  it('checks keyterms_prompt against the documented limits (100 terms, 50 characters)', () => {
    fails(opts({ keyterms_prompt: 'LiveKit' }), /array/);
    fails(opts({ keyterms_prompt: Array.from({ length: 101 }, (_, i) => `t${i}`) }), /at most 100/);
    fails(opts({ keyterms_prompt: ['x'.repeat(51)] }), /at most 50 characters/);
    fails(opts({ keyterms_prompt: [''] }), /non-empty/);
    expect(() => assemblyAiStt.validate(opts({ keyterms_prompt: Array.from({ length: 100 }, () => 'y'.repeat(50)) }))).not.toThrow();
  });

  it('keeps u3-only options to the u3 family; prompt excludes keyterms; agent_context <= 1750 chars', () => {
    fails(opts({ agent_context: 'hi' }), /only supported by u3-rt-pro and universal-3-5-pro/);
    fails(opts({ mode: 'balanced' }, 'universal-streaming-multilingual', 'es'), /mode/);
    fails(opts({ agent_context: 'x'.repeat(1751) }, 'u3-rt-pro'), /agent_context" must be a string of at most 1750/);
    fails(opts({ prompt: 'Transcribe verbatim.', keyterms_prompt: ['a'] }, 'u3-rt-pro'), /cannot be used together/);
    fails(opts({ voice_focus: 'mid-field' }, 'u3-rt-pro'), /voice_focus/);
    expect(() => assemblyAiStt.validate(opts({ agent_context: 'x'.repeat(1750), prompt: 'Be brief.', keyterms_prompt: [] }, 'u3-rt-pro'))).not.toThrow();
  });

  it('checks the language against the model', () => {
    fails(opts({}, 'universal-streaming', 'fr'), /English only/);
    fails(opts({ language_detection: true }), /language_detection/);
    fails(opts({}, 'universal-streaming-multilingual', 'ja'), /en, es, fr, de, it and pt/);
    fails(opts({}, 'u3-rt-pro', 'en us; x'), /invalid language/);
    fails(opts({}, 'universal-99'), /unknown model/);
    for (const [model, lang] of [
      ['universal-streaming', 'en-US'],
      ['universal-streaming', undefined],
      ['universal-streaming-multilingual', 'multi'],
      ['universal-streaming-multilingual', 'pt-BR'],
      ['u3-rt-pro', 'de'],
      ['universal-3-5-pro', 'ja'],
    ] as const) {
      expect(() => assemblyAiStt.validate(opts({}, model, lang))).not.toThrow();
    }
  });
});

describe('assemblyai live update and keep-alive', () => {
  const codecFor = (o: SttOptions) => new AssemblyAiCodec(assemblyAiStt.validate(o));
  const update = (codec: AssemblyAiCodec, o: SttOptions) => {
    const frames = codec.liveUpdate(assemblyAiStt.validate(o));
    return frames === null ? null : frames.map((f) => JSON.parse(f) as Record<string, unknown>);
  };

  it('sends UpdateConfiguration for turn detection, keyterms, prompt and agent_context', () => {
    const codec = codecFor(opts({ keyterms_prompt: [] }, 'u3-rt-pro'));
    expect(update(codec, opts({ keyterms_prompt: [] }, 'u3-rt-pro'))).toEqual([]);
    expect(update(codec, opts({ keyterms_prompt: ['Niamh'] }, 'u3-rt-pro'))).toEqual([{ type: 'UpdateConfiguration', keyterms_prompt: ['Niamh'] }]);
    expect(update(codec, opts({ keyterms_prompt: ['Niamh'], agent_context: 'Your name?', min_end_of_turn_silence_when_confident: 300, max_turn_silence: 2000 }, 'u3-rt-pro'))).toEqual([
      { type: 'UpdateConfiguration', agent_context: 'Your name?', min_turn_silence: 300, max_turn_silence: 2000 },
    ]);
    // removing the keyterms clears them ([] is documented); the silences stay
    expect(update(codec, opts({ agent_context: 'Your name?', min_turn_silence: 300, max_turn_silence: 2000 }, 'u3-rt-pro'))).toEqual([
      { type: 'UpdateConfiguration', keyterms_prompt: [] },
    ]);
  });

  it('needs a reconnect for connection-only options, removed settings, model, language or rate changes', () => {
    const codec = codecFor(opts({ max_turn_silence: 1000 }));
    expect(update(codec, opts({ max_turn_silence: 1000, speaker_labels: true }))).toBeNull();
    expect(update(codec, opts({}))).toBeNull(); // no documented way back to the default
    expect(update(codec, opts({ max_turn_silence: 1000 }, 'universal-streaming', 'en-US'))).toBeNull();
    expect(update(codec, opts({ max_turn_silence: 1000 }, 'universal-streaming-multilingual'))).toBeNull();
    expect(update(codec, opts({ max_turn_silence: 1000 }, 'universal-streaming', 'en', 8000))).toBeNull();
    expect(update(codec, opts({ max_turn_silence: 1000, end_of_turn_confidence_threshold: 0.7, format_turns: true }))).toEqual([
      { type: 'UpdateConfiguration', end_of_turn_confidence_threshold: 0.7, format_turns: true },
    ]);
  });

  it('a live format_turns switch changes which end of turn is the final', () => {
    const codec = codecFor(opts());
    update(codec, opts({ format_turns: true }));
    const lines = fixture('assemblyai-universal-format-turns.jsonl');
    expect(codec.decode(lines[4]!, false).map((e) => e.type)).toEqual(['preflight']);
    expect(codec.decode(lines[5]!, false).map((e) => e.type)).toEqual(['final', 'finalized']);
  });

  it('sends KeepAlive only when inactivity_timeout is set', () => {
    expect(codecFor(opts()).keepAlive).toBeNull();
    expect(codecFor(opts({ inactivity_timeout: 30 })).keepAlive).toEqual({ message: '{"type":"KeepAlive"}', idleMs: 15000 });
  });
});

describe('assemblyai adapter', () => {
  it('declares its models, default and capabilities; control frames', () => {
    expect(assemblyAiStt.provider).toBe('assemblyai');
    expect(assemblyAiStt.models).toEqual(['universal-streaming', 'universal-streaming-english', 'universal-streaming-multilingual', 'u3-rt-pro', 'universal-3-5-pro']);
    expect(assemblyAiStt.defaultModel).toBe('universal-streaming');
    expect(assemblyAiStt.capabilities).toEqual({
      wordTimings: true,
      diarization: true,
      startOfSpeech: true,
      preflight: true,
      liveUpdate: true,
      finalize: true,
    });
    const codec = assemblyAiStt.createCodec(assemblyAiStt.validate(opts()));
    expect(codec.finalizeMessage).toBe('{"type":"ForceEndpoint"}');
    expect(codec.closeMessage).toBe('{"type":"Terminate"}');
    expect(codec.openMessages).toBeUndefined();
  });
});
