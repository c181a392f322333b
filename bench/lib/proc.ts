/**
 * CPU time and memory of any process on this machine, read from /proc (Linux), so that a
 * process the bench did not write (sshd, stunnel, postgres) is measured exactly like ours.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of the utime/stime fields (USER_HZ: 100 on every Linux seen). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface Stat {
  ppid: number;
  /** utime + stime of every thread of the process, in seconds. */
  cpu: number;
}

function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // gone
  }
  // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
  return { ppid: Number(rest[1]), cpu: (Number(rest[11]) + Number(rest[12])) / CLK_TCK };
}

/** CPU seconds (user + system) a live process has used so far; 0 when it is gone. */
export function cpuSeconds(pid: number): number {
  return readStat(pid)?.cpu ?? 0;
}

/** The pid and every live descendant of it (sshd forks a process per connection). */
export function withDescendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const s = readStat(pid);
    if (s) parent.set(pid, s.ppid);
  }
  const out = [root];
  for (const pid of parent.keys()) {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        out.push(pid);
        break;
      }
    }
  }
  return out;
}

/** Resident set size in bytes (VmRSS), or NaN when the process is gone. */
export function rssBytes(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/**
 * A named group of processes on a path (e.g. "sshd" = the listener and its per-connection
 * children), resolved afresh at every reading since children come and go.
 */
export interface ProcGroup {
  name: string;
  pids(): number[];
}

export type CpuReading = Map<string, number>;

export function readCpu(groups: readonly ProcGroup[]): CpuReading {
  const r: CpuReading = new Map();
  for (const g of groups) r.set(g.name, g.pids().reduce((sum, pid) => sum + cpuSeconds(pid), 0));
  return r;
}

/** CPU seconds each group used between two readings. */
export function cpuDelta(before: CpuReading, after: CpuReading): Map<string, number> {
  const d = new Map<string, number>();
  for (const [name, v] of after) d.set(name, v - (before.get(name) ?? 0));
  return d;
}
