/** The machine the bench runs on: description, fd limit, and machine-wide CPU time (/proc/stat). */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

export function describeMachine(): string {
  const cpus = os.cpus();
  return `${cpus.length} x ${cpus[0]?.model.trim() ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, node ${process.version}`;
}

/** `ulimit -n` of this process (children inherit it); Node cannot read or raise it itself. */
export function fdLimit(): number {
  try {
    return Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());
  } catch {
    return NaN;
  }
}

let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  /* Linux default */
}
export const CLK_TCK = clkTck;

export interface CpuTimes {
  /** CPU-seconds spent by anything (user, nice, system, irq, softirq, steal), all CPUs */
  busyS: number;
  /** busy + idle + iowait */
  totalS: number;
}

/** Machine-wide CPU time from the first line of /proc/stat (os.cpus() as a fallback). */
export function machineCpu(): CpuTimes {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
    const busy = user + nice + system + irq + softirq + steal;
    return { busyS: busy / CLK_TCK, totalS: (busy + idle + iowait) / CLK_TCK };
  } catch {
    let busy = 0;
    let total = 0;
    for (const c of os.cpus()) {
      const t = c.times;
      busy += t.user + t.nice + t.sys + t.irq;
      total += t.user + t.nice + t.sys + t.irq + t.idle;
    }
    return { busyS: busy / 1000, totalS: total / 1000 };
  }
}
