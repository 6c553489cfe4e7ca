import { describe, expect, it } from 'vitest';
import { DEFAULT_CHARS_PER_SECOND, lastSentenceStart, matchWords, resumePoint, sentenceEnds, type AlignedWord, type ResumeInput } from './tts-resume.ts';

const TEXT = 'The first sentence is here. The second one follows. And a third. ';
const S = 0.06; // seconds per character (the emulators' tone speech)

/** Word timings of text[from..] at `S` per character, like a provider reports them. */
function timings(text: string, from = 0): AlignedWord[] {
  const out: AlignedWord[] = [];
  for (const m of text.slice(from).matchAll(/\S+/g)) out.push({ word: m[0], start: (m.index as number) * S, end: ((m.index as number) + m[0].length) * S });
  return out;
}

function input(over: Partial<ResumeInput>): ResumeInput {
  return { text: TEXT, from: 0, sentSeconds: 0, words: [], marks: [], chunkEnds: [], rate: undefined, ...over };
}

describe('sentences and words', () => {
  it('finds sentence ends after punctuation, closing quotes and whitespace', () => {
    expect(sentenceEnds(TEXT, 0)).toEqual([28, 52, 65]);
    expect(sentenceEnds('He said "stop." Then left! ', 0)).toEqual([16, 27]);
    expect(sentenceEnds('no end yet', 0)).toEqual([]);
    expect(sentenceEnds(TEXT, 30)).toEqual([52, 65]);
  });

  it('matches aligned words in order and stops at a word the text does not have', () => {
    const m = matchWords(TEXT, 0, [
      { word: 'The', start: 0, end: 0.2 },
      { word: 'first', start: 0.2, end: 0.5 },
      { word: 'five', start: 0.5, end: 0.7 },
      { word: 'sentence', start: 0.7, end: 0.9 },
    ]);
    expect(m.map((x) => [x.start, x.end])).toEqual([
      [0, 3],
      [4, 9],
    ]);
  });
});

describe('resumePoint', () => {
  it('nothing sent: the whole text from the attempt start', () => {
    expect(resumePoint(input({ from: 0 }))).toEqual({ pos: 0, by: 'start' });
    expect(resumePoint(input({ from: 28 }))).toEqual({ pos: 28, by: 'start' });
  });

  it('alignment: continues at the first word whose audio was not completely sent', () => {
    const words = timings(TEXT);
    // 'sentence' (10..18) is half sent at 14 characters of audio.
    expect(resumePoint(input({ words, sentSeconds: 14 * S }))).toEqual({ pos: 10, by: 'alignment' });
    // Exactly at the end of 'first ' (10 characters): the next word starts there.
    expect(resumePoint(input({ words, sentSeconds: 10 * S, chunkEnds: [28, 52] })).pos).toBe(10);
    // Everything sent: the end of the text.
    expect(resumePoint(input({ words, sentSeconds: TEXT.length * S })).pos).toBe(TEXT.length);
  });

  it('alignment of a later attempt is relative to that attempt', () => {
    const words = timings(TEXT, 28);
    expect(resumePoint(input({ from: 28, words, sentSeconds: 5 * S }))).toEqual({ pos: 32, by: 'alignment' });
  });

  it('a timed piece that stops inside a word of the text does not count as that word', () => {
    const words = [...timings(TEXT.slice(0, 10)), { word: 'se', start: 10 * S, end: 12 * S }];
    expect(resumePoint(input({ words, sentSeconds: 12 * S }))).toEqual({ pos: 10, by: 'alignment' });
  });

  it('alignment that lags the audio: estimate past the last timed word, from the rate the words show', () => {
    // Timings only for the first sentence; audio of 40 characters sent (into the second sentence).
    const words = timings(TEXT.slice(0, 28));
    const r = resumePoint(input({ words, sentSeconds: 40 * S, chunkEnds: [28, 52, 65] }));
    expect(r).toEqual({ pos: 28, by: 'estimate' });
    // Audio of the whole second sentence sent: continue at the third.
    expect(resumePoint(input({ words, sentSeconds: 52 * S, chunkEnds: [28, 52, 65] })).pos).toBe(52);
  });

  it('voiced marks (HTTP chunks) are exact; the chunk in progress is spoken again', () => {
    const marks = [{ pos: 28, seconds: 28 * S }];
    expect(resumePoint(input({ marks, sentSeconds: 30 * S, chunkEnds: [28, 52, 65], rate: 1 / S }))).toEqual({ pos: 28, by: 'estimate' });
    expect(resumePoint(input({ marks, sentSeconds: 28 * S, chunkEnds: [28, 52, 65] }))).toEqual({ pos: 28, by: 'marks' });
  });

  it('no exact points: sentences fully reached at the measured rate are skipped', () => {
    expect(resumePoint(input({ sentSeconds: 30 * S, rate: 1 / S, chunkEnds: [28, 52, 65] }))).toEqual({ pos: 28, by: 'estimate' });
    expect(resumePoint(input({ sentSeconds: 27 * S, rate: 1 / S }))).toEqual({ pos: 0, by: 'estimate' });
    expect(resumePoint(input({ sentSeconds: 53 * S, rate: 1 / S })).pos).toBe(52);
  });

  it('the last sentence of the text (where an estimate of "all spoken" continues anyway)', () => {
    expect(lastSentenceStart(TEXT, 0, [])).toBe(52);
    expect(lastSentenceStart(TEXT, 0, [28, 52, 65])).toBe(52);
    expect(lastSentenceStart(TEXT, 55, [])).toBe(55);
    expect(lastSentenceStart('One sentence only. ', 0, [19])).toBe(0);
  });

  it('no rate measured: the default speech rate', () => {
    const secondsForFirst = 28 / DEFAULT_CHARS_PER_SECOND;
    expect(resumePoint(input({ sentSeconds: secondsForFirst + 0.01 })).pos).toBe(28);
    expect(resumePoint(input({ sentSeconds: secondsForFirst - 0.2 })).pos).toBe(0);
  });
});
