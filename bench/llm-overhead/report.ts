/**
 * What the bench measured, per scenario and target, and how it is printed: the latency table
 * (with the added p50/p99 against direct), the CPU table and, for sequential scenarios, where the
 * time goes (request leg, first-token leg, end leg). Pure: no I/O.
 */
import type { Result, TargetName } from './client.ts';
import { dist, fmt, fmtSigned, table, type Dist } from './stats.ts';

export interface Scenario {
  id: string;
  label: string;
  stream: boolean;
  width: number;
  n: number;
  rounds: number;
}

export interface Cell {
  results: Result[];
  wallMs: number;
  proxyCpuS: number;
  emuCpuS: number;
  clientCpuS: number;
  /** highest other-process load of any block, % of one core */
  otherPeakPct: number;
  peakInFlight: number;
  emuOutcomes: Record<string, number>;
  errors: Map<string, number>;
  /**
   * Sequential blocks only (requests paired with the emulator's records by order), ms:
   * reqLeg = client start -> emulator receives; firstLeg = emulator writes the first content chunk
   * -> client has it; endLeg = emulator ends the response -> client has [DONE] (or the whole body).
   */
  reqLeg: number[];
  firstLeg: number[];
  endLeg: number[];
}

export function newCell(): Cell {
  return {
    results: [],
    wallMs: 0,
    proxyCpuS: 0,
    emuCpuS: 0,
    clientCpuS: 0,
    otherPeakPct: 0,
    peakInFlight: 0,
    emuOutcomes: {},
    errors: new Map(),
    reqLeg: [],
    firstLeg: [],
    endLeg: [],
  };
}

export interface Row {
  scenario: Scenario;
  target: TargetName;
  cell: Cell;
  ok: number;
  ttft: Dist;
  total: Dist;
}

export function rowsOf(s: Scenario, cells: Map<TargetName, Cell>): Row[] {
  return [...cells].map(([target, cell]) => {
    const ok = cell.results.filter((r) => r.ok);
    return { scenario: s, target, cell, ok: ok.length, ttft: dist(ok.map((r) => r.ttftMs)), total: dist(ok.map((r) => r.totalMs)) };
  });
}

export function report(all: Row[][], header: string[]): string {
  const latency: string[][] = [];
  const resources: string[][] = [];
  const errors: string[] = [];
  for (const rows of all) {
    const direct = rows.find((r) => r.target === 'direct') as Row;
    for (const r of rows) {
      const s = r.scenario;
      const isDirect = r.target === 'direct';
      const added = (a: number, b: number): string => (isDirect ? '-' : fmtSigned(a - b));
      latency.push([
        s.label,
        r.target,
        `${r.ok}/${r.cell.results.length}`,
        fmt(r.ttft.p50),
        fmt(r.ttft.p99),
        fmt(r.total.p50),
        fmt(r.total.p99),
        s.stream ? added(r.ttft.p50, direct.ttft.p50) : '-',
        s.stream ? added(r.ttft.p99, direct.ttft.p99) : '-',
        added(r.total.p50, direct.total.p50),
        added(r.total.p99, direct.total.p99),
        fmt((1000 * r.cell.results.length) / r.cell.wallMs, 0),
      ]);
      const perReq = (cpuS: number): string => fmt((1000 * cpuS) / Math.max(1, r.cell.results.length), 3);
      resources.push([
        s.label,
        r.target,
        isDirect ? '-' : perReq(r.cell.proxyCpuS),
        perReq(r.cell.emuCpuS),
        perReq(r.cell.clientCpuS),
        String(r.cell.peakInFlight),
        fmt(r.cell.otherPeakPct, 0),
      ]);
      const notCompleted = Object.entries(r.cell.emuOutcomes).filter(([k]) => k !== 'completed');
      if (r.cell.errors.size > 0 || notCompleted.length > 0) {
        const errs = [...r.cell.errors].map(([e, c]) => `${c} x ${e}`).join('; ');
        const outs = notCompleted.map(([k, v]) => `${k} ${v}`).join(', ');
        errors.push(`- ${s.label} / ${r.target}: ${errs || 'client saw no error'}${outs ? ` (emulator: ${outs})` : ''}`);
      }
    }
  }
  const legs: string[][] = [];
  for (const rows of all) {
    for (const r of rows) {
      if (r.scenario.width !== 1) continue;
      const q = dist(r.cell.reqLeg);
      const f = dist(r.cell.firstLeg);
      const e = dist(r.cell.endLeg);
      legs.push([
        r.scenario.label,
        r.target,
        String(q.count),
        fmt(q.p50, 2),
        fmt(q.p99, 2),
        r.scenario.stream ? fmt(f.p50, 2) : '-',
        r.scenario.stream ? fmt(f.p99, 2) : '-',
        fmt(e.p50, 2),
        fmt(e.p99, 2),
      ]);
    }
  }
  const out = [
    ...header,
    '',
    'Latency, ms (client side; "+" columns: this target minus direct at the same percentile, same run):',
    '',
    table(
      ['scenario', 'target', 'ok', 'TTFT p50', 'TTFT p99', 'total p50', 'total p99', '+TTFT p50', '+TTFT p99', '+total p50', '+total p99', 'req/s'],
      latency,
    ),
    '',
    'CPU per request, ms (proxy from /proc, emulator and client from process.cpuUsage), peak requests in flight at the emulator, and',
    'the most CPU other processes on the machine used during any block of the row (% of one core):',
    '',
    table(['scenario', 'target', 'proxy CPU/req', 'emulator CPU/req', 'client CPU/req', 'peak upstream', 'other load %'], resources),
  ];
  if (legs.length > 0) {
    out.push(
      '',
      'Where the time goes, sequential requests, ms (client and emulator timestamps on one monotonic clock, paired by order):',
      'request leg = client sends -> emulator receives; first token = emulator writes the first content chunk -> client has it;',
      'end = emulator ends the response -> client has [DONE] (non-stream: the whole body). Direct is the floor of each leg.',
      '',
      table(['scenario', 'target', 'paired', 'request p50', 'request p99', 'first token p50', 'first token p99', 'end p50', 'end p99'], legs),
    );
  }
  if (errors.length > 0) out.push('', 'Failed requests:', ...errors);
  return out.join('\n');
}
