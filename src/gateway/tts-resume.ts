/**
 * Where a TTS generation continues after its upstream failed mid-audio (docs/failover.md,
 * "TTS: continuing a generation"). Pure: the session passes what it knows about the failed
 * attempt, this returns the first position of the generation's text that the next candidate
 * must speak.
 *
 * "Spoken" means: its audio was sent to the client (the client plays everything it receives).
 * What is known, best first:
 * 1. Alignment (word timings of the failed attempt): a word is spoken when its end time is
 *    within the audio sent. The continuation starts at the first word not fully sent (a word
 *    cut in the middle is spoken again, in full: at most one word repeats).
 * 2. Voiced marks (an HTTP provider's request for a chunk finished and all its audio was sent):
 *    exact positions on chunk boundaries.
 * 3. Beyond the last exact point, an estimate: characters = seconds x rate (the rate this
 *    session measured on the candidate, else from the exact points of the attempt, else
 *    `DEFAULT_CHARS_PER_SECOND`). The continuation starts at the start of the first sentence
 *    whose end the estimate has not reached (a sentence partly spoken is spoken again). An
 *    estimate that reaches the end of the text is not trusted to have finished it: see
 *    `lastSentenceStart`.
 *
 * Positions are UTF-16 indexes into the generation's text.
 */

/**
 * Speech rate assumed when nothing was measured: a little slower than typical TTS voices (about
 * 13-16 characters per second in English), so an estimate errs towards repeating a sentence
 * rather than skipping one.
 */
export const DEFAULT_CHARS_PER_SECOND = 12;

/** Time slack for alignment: audio sent within this much of a word's end counts as the whole word. */
const ALIGN_EPS_S = 0.005;

export interface AlignedWord {
  word: string;
  /** Seconds from the start of the failed attempt's audio. */
  start: number;
  end: number;
}

export interface ResumeInput {
  /** The generation's text so far. */
  text: string;
  /** Where the failed attempt's text started. */
  from: number;
  /** Seconds of the failed attempt's audio sent to the client. */
  sentSeconds: number;
  /** Word timings the failed attempt reported (in order, possibly partial). */
  words: readonly AlignedWord[];
  /** Exact points: text up to `pos` was fully voiced by `seconds` of the attempt's audio. */
  marks: readonly { pos: number; seconds: number }[];
  /** End positions of the client's chunks (sentence ends for LiveKit clients). */
  chunkEnds: readonly number[];
  /** Measured rate for this candidate (chars per second of audio), if any. */
  rate: number | undefined;
}

export interface ResumePoint {
  pos: number;
  /** How `pos` was decided (logs, tests). */
  by: 'start' | 'alignment' | 'marks' | 'estimate';
}

/**
 * Match aligned words to the text from `from` on: each word is searched a short distance ahead
 * of the previous one (providers may normalize text, e.g. "$5" -> "five dollars"); matching
 * stops at the first word that cannot be found.
 */
export function matchWords(text: string, from: number, words: readonly AlignedWord[]): { start: number; end: number; word: AlignedWord }[] {
  const out: { start: number; end: number; word: AlignedWord }[] = [];
  let cursor = from;
  for (const w of words) {
    const needle = w.word.trim();
    if (needle === '') continue;
    const at = text.indexOf(needle, cursor);
    // Only whitespace and punctuation may lie between two words.
    if (at < 0 || /[\p{L}\p{N}]/u.test(text.slice(cursor, at))) break;
    out.push({ start: at, end: at + needle.length, word: w });
    cursor = at + needle.length;
  }
  return out;
}

const SENTENCE_END = /[.!?…。！？]+["'”’)\]]*\s+/gu;

/** Positions just after each sentence end (punctuation, closing quotes, whitespace) in text[from..]. */
export function sentenceEnds(text: string, from: number): number[] {
  const out: number[] = [];
  SENTENCE_END.lastIndex = from;
  for (let m = SENTENCE_END.exec(text); m !== null; m = SENTENCE_END.exec(text)) out.push(m.index + m[0].length);
  return out;
}

/**
 * Start of the last sentence of text[from..end): where a generation whose audio an estimate says
 * is complete continues anyway (repeating one sentence is better than losing it).
 */
export function lastSentenceStart(text: string, from: number, chunkEnds: readonly number[]): number {
  const end = text.trimEnd().length;
  let start = from;
  for (const e of [...sentenceEnds(text, from), ...chunkEnds]) if (e > start && e < end) start = e;
  return start;
}

export function resumePoint(input: ResumeInput): ResumePoint {
  const { text, from, sentSeconds } = input;
  if (sentSeconds <= 0) return { pos: from, by: 'start' };

  // Exact anchors (pos, seconds), from the attempt's start on.
  let anchor = { pos: from, seconds: 0 };
  let by: ResumePoint['by'] = 'start';
  const matched = matchWords(text, from, input.words);
  for (const m of matched) {
    // A timed piece that ends inside a word of the text (a provider cut mid-word) is not a whole word.
    const whole = m.end >= text.length || !/[\p{L}\p{N}]/u.test(text[m.end] as string);
    if (whole && m.word.end <= sentSeconds + ALIGN_EPS_S) {
      anchor = { pos: m.end, seconds: m.word.end };
      by = 'alignment';
      continue;
    }
    // The first word whose audio was not completely sent: continue from its start.
    return { pos: Math.max(from, m.start), by: 'alignment' };
  }
  for (const mk of input.marks) {
    if (mk.seconds <= sentSeconds + ALIGN_EPS_S && mk.pos > anchor.pos) {
      anchor = { pos: mk.pos, seconds: mk.seconds };
      by = 'marks';
    }
  }
  // Spaces after the last exact point are spoken with it (nothing to hear in them).
  let exact = anchor.pos;
  while (exact < text.length && /\s/.test(text[exact] as string)) exact++;
  const left = sentSeconds - anchor.seconds;
  if (left <= ALIGN_EPS_S || exact >= text.length) return { pos: Math.min(exact, text.length), by };

  // Estimate beyond the last exact point.
  let rate = input.rate;
  if (rate === undefined && anchor.pos - from >= 20 && anchor.seconds >= 0.5) rate = (anchor.pos - from) / anchor.seconds;
  const reached = exact + left * (rate ?? DEFAULT_CHARS_PER_SECOND);
  const ends = [...new Set([...sentenceEnds(text, exact), ...input.chunkEnds.filter((e) => e > exact)])].sort((a, b) => a - b);
  let pos = exact;
  for (const e of ends) {
    if (e <= reached + 1e-9) pos = e;
    else break;
  }
  return { pos: Math.min(pos, text.length), by: 'estimate' };
}
