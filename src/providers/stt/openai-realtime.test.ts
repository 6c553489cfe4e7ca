import { describe, expect, it } from 'vitest';
import type { SttOptions } from '../types.ts';
import { openAiRealtimeStt } from './openai-realtime.ts';

const opts: SttOptions = { model: 'gpt-4o-transcribe', language: 'en-US', sampleRate: 24000, extra: {} };
const j = (o: unknown): Buffer => Buffer.from(JSON.stringify(o));

describe('openai realtime transcription adapter', () => {
  it('validates options and builds the request', () => {
    expect(openAiRealtimeStt.validate({ ...opts, extra: { silence_duration_ms: 300, prompt: 'names' } }).extra).toEqual({ silence_duration_ms: 300, prompt: 'names' });
    expect(() => openAiRealtimeStt.validate({ ...opts, extra: { vad_threshold: 2 } })).toThrow(/vad_threshold/);
    expect(() => openAiRealtimeStt.validate({ ...opts, extra: { format: 'x' } })).toThrow(/not accepted/);
    expect(openAiRealtimeStt.request(opts, { apiKey: 'sk', baseUrl: 'https://api.openai.com/v1/', connectTimeoutMs: 1 })).toEqual({
      url: 'https://api.openai.com/v1/realtime?intent=transcription',
      headers: { Authorization: 'Bearer sk' },
    });
    expect(openAiRealtimeStt.request(opts, { apiKey: '', baseUrl: 'http://h:8000/v1', connectTimeoutMs: 1 }).headers).toEqual({});
    expect(openAiRealtimeStt.capabilities.sampleRates).toEqual([24000]);
  });

  it('configures the session on open and wraps audio', () => {
    const c = openAiRealtimeStt.createCodec(openAiRealtimeStt.validate({ ...opts, extra: { silence_duration_ms: 400 } }));
    expect(JSON.parse(c.openMessages?.[0] ?? '')).toEqual({
      type: 'session.update',
      session: {
        type: 'transcription',
        audio: { input: { format: { type: 'audio/pcm', rate: 24000 }, transcription: { model: 'gpt-4o-transcribe', language: 'en' }, turn_detection: { type: 'server_vad', silence_duration_ms: 400 } } },
      },
    });
    expect(JSON.parse(c.encodeAudio(Buffer.from([1, 2, 3, 4])) as string)).toEqual({ type: 'input_audio_buffer.append', audio: 'AQIDBA==' });
    const manual = openAiRealtimeStt.createCodec({ ...opts, extra: { server_vad: false } });
    expect(JSON.parse(manual.openMessages?.[0] ?? '').session.audio.input.turn_detection).toBeNull();
  });

  it('turns VAD events and transcription deltas into start_of_speech, interims and one final per item', () => {
    const c = openAiRealtimeStt.createCodec(opts);
    expect(c.decode(j({ type: 'input_audio_buffer.speech_started', audio_start_ms: 500, item_id: 'i1' }), false)).toEqual([{ type: 'speech_started' }]);
    expect(c.decode(j({ type: 'input_audio_buffer.speech_stopped', audio_end_ms: 1700, item_id: 'i1' }), false)).toEqual([]);
    expect(c.decode(j({ type: 'input_audio_buffer.committed', item_id: 'i1' }), false)).toEqual([]);
    expect(c.midUtterance).toBe(true);
    const [d1] = c.decode(j({ type: 'conversation.item.input_audio_transcription.delta', item_id: 'i1', delta: 'Hello' }), false);
    expect(d1).toMatchObject({ type: 'interim', segment: { text: 'Hello', start: 0.5, end: 1.7 } });
    const [d2] = c.decode(j({ type: 'conversation.item.input_audio_transcription.delta', item_id: 'i1', delta: ' world' }), false);
    expect(d2).toMatchObject({ type: 'interim', segment: { text: 'Hello world' } });
    expect(c.decode(j({ type: 'conversation.item.input_audio_transcription.completed', item_id: 'i1', transcript: 'Hello world.' }), false)).toEqual([
      { type: 'final', segment: { text: 'Hello world.', start: 0.5, end: 1.7, confidence: 1, words: [], language: 'en-US' } },
    ]);
    expect(c.midUtterance).toBe(false);
  });

  it('answers a finalize: the commit it triggers, or an empty buffer', () => {
    const c = openAiRealtimeStt.createCodec(opts);
    c.decode(j({ type: 'input_audio_buffer.speech_started', audio_start_ms: 0 }), false);
    expect(c.flushAudio?.()).toBeNull();
    c.decode(j({ type: 'input_audio_buffer.committed', item_id: 'i2' }), false);
    expect(c.decode(j({ type: 'conversation.item.input_audio_transcription.completed', item_id: 'i2', transcript: 'Done' }), false).map((e) => e.type)).toEqual([
      'final',
      'finalized',
    ]);
    c.flushAudio?.();
    expect(c.decode(j({ type: 'error', error: { type: 'invalid_request_error', code: 'input_audio_buffer_commit_empty', message: 'empty' } }), false)).toEqual([{ type: 'finalized' }]);
    const [err] = c.decode(j({ type: 'error', error: { type: 'authentication_error', message: 'bad key' } }), false);
    expect(err).toMatchObject({ type: 'error' });
    expect((err as { error: { status: number } }).error.status).toBe(401);
  });
});
