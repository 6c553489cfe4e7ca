/** Pure helpers: nearest-rank percentiles and a Markdown table. */

/** Nearest-rank percentile of the finite values (NaN when there are none). */
export function percentile(values: readonly number[], p: number): number {
  const xs = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (xs.length === 0) return NaN;
  return xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(p * xs.length) - 1))] as number;
}

export function fmt(v: number, digits = 1): string {
  return Number.isFinite(v) ? v.toFixed(digits) : '-';
}

export function fmtSigned(v: number, digits = 1): string {
  return Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${v.toFixed(digits)}` : '';
}

/** A Markdown table (also readable in a terminal); numeric-looking columns are right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => /^[-+]?[\d.]+$|^-?$/.test(r[i] ?? '')));
  const cell = (s: string, i: number): string => (numeric[i] ? s.padStart(widths[i] as number) : s.padEnd(widths[i] as number));
  const line = (cells: string[]): string => `| ${cells.map(cell).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (numeric[i] ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), sep, ...rows.map(line)].join('\n');
}
