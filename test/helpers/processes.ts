import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
export const POSTERN_BIN = resolve(REPO_ROOT, 'dist/cli/postern.js');

/** One JSON log line of a child (pino), or `{ msg: line }` for a plain line. */
export type LogLine = Record<string, unknown> & { msg?: string; event?: string };

/**
 * A real child process of ours (`postern …`), with its output kept as parsed lines so a test
 * can await an event instead of sleeping. Every process started here is registered and killed
 * by `stopAll()`, which e2e files call in afterAll/afterEach.
 */
export class ChildHandle {
  readonly lines: LogLine[] = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters = new Set<{ match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }>();

  constructor(readonly name: string, readonly child: ChildProcess) {
    this.exited = new Promise((resolveExit) => child.once('close', (code, signal) => resolveExit({ code, signal })));
    const consume = (stream: 'stdout' | 'stderr') => {
      let partial = '';
      child[stream]?.setEncoding('utf8');
      child[stream]?.on('data', (chunk: string) => {
        this[stream] += chunk;
        partial += chunk;
        let nl: number;
        while ((nl = partial.indexOf('\n')) >= 0) {
          this.push(partial.slice(0, nl));
          partial = partial.slice(nl + 1);
        }
      });
    };
    consume('stdout');
    consume('stderr');
  }

  private push(raw: string): void {
    let line: LogLine;
    try {
      const parsed: unknown = JSON.parse(raw);
      line = parsed !== null && typeof parsed === 'object' ? (parsed as LogLine) : { msg: raw };
    } catch {
      line = { msg: raw };
    }
    this.lines.push(line);
    for (const waiter of this.waiters) {
      if (waiter.match(line)) {
        this.waiters.delete(waiter);
        waiter.resolve(line);
      }
    }
  }

  /** Resolves with the first line (already seen or future) matching; rejects if the process exits first or on timeout. */
  waitFor(match: ((line: LogLine) => boolean) | string, timeoutMs = 20_000): Promise<LogLine> {
    const predicate = typeof match === 'string' ? (l: LogLine) => l.event === match || l.msg === match : match;
    const seen = this.lines.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolveLine, reject) => {
      const waiter = { match: predicate, resolve: (line: LogLine) => { clearTimeout(timer); resolveLine(line); } };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`${this.name}: no line matching ${String(match)} within ${timeoutMs} ms\nstderr:\n${this.stderr.slice(-4000)}`));
      }, timeoutMs);
      this.waiters.add(waiter);
      void this.exited.then(({ code, signal }) => {
        if (this.waiters.delete(waiter)) {
          clearTimeout(timer);
          reject(new Error(`${this.name} exited (${code ?? signal}) before a line matching ${String(match)}\nstderr:\n${this.stderr.slice(-4000)}`));
        }
      });
    });
  }

  /** Sends `signal` and waits for the exit; SIGKILL after `graceMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill(signal);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      const result = await this.exited;
      clearTimeout(timer);
      return result;
    }
    return this.exited;
  }
}

const running = new Set<ChildHandle>();

/** Starts `node dist/cli/postern.js ...args`. */
export function startPostern(name: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildHandle {
  return startProcess(name, process.execPath, [POSTERN_BIN, ...args], opts);
}

export function startProcess(name: string, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildHandle {
  const child = spawn(cmd, args, { cwd: opts.cwd ?? REPO_ROOT, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  const handle = new ChildHandle(name, child);
  running.add(handle);
  void handle.exited.then(() => running.delete(handle));
  return handle;
}

/** Runs `postern ...args` to completion. */
export async function runPostern(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const handle = startPostern(`postern ${args[0] ?? ''}`, args, opts);
  handle.child.stdin?.end(opts.input ?? '');
  const { code } = await handle.exited;
  return { code, stdout: handle.stdout, stderr: handle.stderr };
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((h) => h.stop('SIGKILL')));
}
