/**
 * CPU used on the machine by processes outside the bench (other tenants of a shared machine):
 * machine-wide busy time from /proc/stat minus the CPU of this process and its children
 * (/proc/<pid>/stat). Linux only; NaN elsewhere. A disturbance indicator, not a measurement.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clkTck = 100;
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  /* Linux default */
}

function machineBusyS(): number {
  try {
    const f = (readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
    return (user + nice + system + irq + softirq + steal) / clkTck;
  } catch {
    return NaN;
  }
}

function pidCpuS(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clkTck;
  } catch {
    return 0; // gone: its CPU is lost from both sides of the subtraction
  }
}

export interface LoadMark {
  at: number;
  machine: number;
  ours: number;
}

export function loadMark(childPids: number[]): LoadMark {
  const self = process.cpuUsage();
  let ours = (self.user + self.system) / 1e6;
  for (const pid of childPids) ours += pidCpuS(pid);
  return { at: performance.now(), machine: machineBusyS(), ours };
}

/** CPU used by everything else between two marks, in % of one core. */
export function otherLoadPct(a: LoadMark, b: LoadMark): number {
  const wall = (b.at - a.at) / 1000;
  return wall > 0 ? (100 * Math.max(0, b.machine - a.machine - (b.ours - a.ours))) / wall : NaN;
}
