import { describe, expect, it } from 'vitest';
import { SseParser } from './sse.ts';

const STREAM =
  ': keep-alive\n\n' +
  'data: {"a":1}\n\n' +
  'event: message_start\ndata: {"type":"message_start"}\n\n' +
  'data: line1\ndata: line2\n\n' +
  'id: 7\nretry: 100\nfoo: bar\ndata:nospace\n\n' +
  'data: [DONE]\n\n';

const EXPECTED = [
  { data: '{"a":1}' },
  { event: 'message_start', data: '{"type":"message_start"}' },
  { data: 'line1\nline2' },
  { data: 'nospace' },
  { data: '[DONE]' },
];

function parseInPieces(text: string, sizes: (i: number) => number): unknown[] {
  const p = new SseParser();
  const bytes = Buffer.from(text);
  const out: unknown[] = [];
  let i = 0;
  let k = 0;
  while (i < bytes.length) {
    const n = Math.max(1, sizes(k++));
    out.push(...p.push(bytes.subarray(i, i + n)));
    i += n;
  }
  out.push(...p.end());
  return out;
}

describe('SseParser', () => {
  it('parses a whole stream', () => {
    expect(parseInPieces(STREAM, () => 1 << 20)).toEqual(EXPECTED);
  });

  it('gives the same events for any split, byte by byte included', () => {
    expect(parseInPieces(STREAM, () => 1)).toEqual(EXPECTED);
    for (let seed = 1; seed < 30; seed++) {
      let x = seed;
      const rnd = (): number => {
        x = (x * 1103515245 + 12345) % 2147483648;
        return (x % 17) + 1;
      };
      expect(parseInPieces(STREAM, rnd)).toEqual(EXPECTED);
    }
  });

  it('accepts CRLF and CR line ends, split between CR and LF', () => {
    const crlf = STREAM.replace(/\n/g, '\r\n');
    expect(parseInPieces(crlf, () => 1)).toEqual(EXPECTED);
    expect(parseInPieces(crlf, () => 3)).toEqual(EXPECTED);
    expect(parseInPieces(STREAM.replace(/\n/g, '\r'), () => 2)).toEqual(EXPECTED);
  });

  it('keeps multi-byte UTF-8 intact across splits', () => {
    const text = 'data: {"content":"héllo 👋 世界"}\n\n';
    expect(parseInPieces(text, () => 1)).toEqual([{ data: '{"content":"héllo 👋 世界"}' }]);
  });

  it('dispatches a final event without its blank line at end of stream', () => {
    expect(parseInPieces('data: tail', () => 4)).toEqual([{ data: 'tail' }]);
  });

  it('bounds the size of one event', () => {
    const p = new SseParser({ maxEventBytes: 16 });
    expect(() => p.push(Buffer.from('data: ' + 'x'.repeat(40)))).toThrow(/larger than 16/);
  });
});
