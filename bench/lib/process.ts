/**
 * External processes of a bench run (postern relay/connector/forward, sshd, ssh, stunnel,
 * postgres): their output read line by line so the bench awaits a line instead of sleeping,
 * and a registry so that every process started is stopped, whatever happens.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createServer } from 'node:net';

/** A line of output: the parsed object of a JSON line (pino), else `{ msg: line }`. */
export type Line = Record<string, unknown> & { msg?: string; event?: string };
type Match = (line: Line) => boolean;

/** Lines kept for the error message of a process that fails. */
const TAIL_LINES = 40;

export class Proc {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly tail: string[] = [];
  private readonly waiters = new Set<{ match: Match; resolve: (l: Line) => void }>();
  /** Lines matching `keep` are stored so that waitFor() also finds a line that came first. */
  private readonly kept: Line[] = [];

  constructor(
    readonly name: string,
    cmd: string,
    args: readonly string[],
    opts: SpawnOptions & { keep?: Match } = {},
  ) {
    const { keep, ...spawnOpts } = opts;
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...spawnOpts });
    this.exited = new Promise((resolve) => this.child.once('close', (code, signal) => resolve({ code, signal })));
    this.child.once('error', (err) => this.push(`spawn error: ${err.message}`, keep));
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let partial = '';
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        partial += chunk;
        for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
          this.push(partial.slice(0, nl), keep);
          partial = partial.slice(nl + 1);
        }
      });
    }
    running.add(this);
    void this.exited.then(() => running.delete(this));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private push(raw: string, keep: Match | undefined): void {
    this.tail.push(raw);
    if (this.tail.length > TAIL_LINES) this.tail.shift();
    if (this.waiters.size === 0 && !keep) return;
    let line: Line;
    try {
      const parsed: unknown = raw.startsWith('{') ? JSON.parse(raw) : undefined;
      line = parsed !== null && typeof parsed === 'object' ? (parsed as Line) : { msg: raw };
    } catch {
      line = { msg: raw };
    }
    let taken = false;
    for (const w of this.waiters) {
      if (w.match(line)) {
        this.waiters.delete(w);
        w.resolve(line);
        taken = true;
      }
    }
    if (!taken && keep?.(line)) this.kept.push(line);
  }

  /** The last lines of output, for an error message. */
  output(): string {
    return this.tail.join('\n');
  }

  /**
   * Resolves with the next line matching (or a kept one already seen); rejects when the process
   * exits first or after `timeoutMs`.
   */
  waitFor(match: Match | string | RegExp, timeoutMs = 30_000): Promise<Line> {
    const m: Match =
      typeof match === 'string' ? (l) => l.event === match : match instanceof RegExp ? (l) => match.test(l.msg ?? '') : match;
    const seen = this.kept.findIndex(m);
    if (seen >= 0) return Promise.resolve(this.kept.splice(seen, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`${this.name}: no line matching ${String(match)} within ${timeoutMs} ms; its output ends:\n${this.output()}`));
      }, timeoutMs);
      const waiter = {
        match: m,
        resolve: (l: Line) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      this.waiters.add(waiter);
      void this.exited.then(({ code, signal }) => {
        if (!this.waiters.delete(waiter)) return;
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code ?? signal}) before a line matching ${String(match)}; its output ends:\n${this.output()}`));
      });
    });
  }

  /** Sends `signal`, waits for the exit, SIGKILL after `graceMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
    if (this.alive) {
      this.child.kill(signal);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    await this.exited;
  }
}

const running = new Set<Proc>();

/** Stops every process still running (the bench's finally, and its signal handlers). */
export async function stopAllProcs(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop('SIGTERM', 5_000)));
}

/**
 * A port the kernel just handed out, for programs that cannot listen on port 0 and report it
 * (stunnel, sshd, postgres). Between close and the program's bind another process may take
 * it: callers retry on a bind failure, so the race costs a retry, never a wrong figure.
 */
export async function kernelPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** How many times a start that lost its port to another process is retried. */
export const BIND_ATTEMPTS = 5;

export const BIND_FAILURE = /address already in use|could not bind|cannot bind|bind\(\) failed|bind:/i;
