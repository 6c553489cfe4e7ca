/** Pure helpers: nearest-rank percentiles and Markdown tables. */

export interface Dist {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles of the finite values (NaN when there are none). */
export function dist(values: readonly number[]): Dist {
  const sorted = Float64Array.from(values.filter((v) => Number.isFinite(v))).sort();
  const n = sorted.length;
  const at = (p: number): number => (n === 0 ? NaN : (sorted[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))] as number));
  return { count: n, p50: at(0.5), p99: at(0.99), max: n === 0 ? NaN : (sorted[n - 1] as number) };
}

export function fmt(v: number | undefined, digits = 1): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  return v.toFixed(digits);
}

export function fmtSigned(v: number, digits = 1): string {
  if (!Number.isFinite(v)) return '-';
  return `${v >= 0 ? '+' : ''}${v.toFixed(digits)}`;
}

/** A Markdown table (also readable in a terminal). Right-aligns columns that look numeric. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => /^[-+]?[\d.]+%?$|^-$|^\d+\/\d+$/.test(r[i] ?? '')));
  const cell = (s: string, i: number): string => (numeric[i] ? s.padStart(widths[i] as number) : s.padEnd(widths[i] as number));
  const line = (cells: string[]): string => `| ${cells.map(cell).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (numeric[i] ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), sep, ...rows.map(line)].join('\n');
}
