/**
 * A forked bench process driven over the IPC channel: one request at a time, each answered by
 * exactly one message (or by `{ type: 'failed' }`). Shared by bench/mux.ts (its peers) and
 * bench/run.ts (its source and sink).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

export interface IpcMessage {
  type: string;
}

type Failed = { type: 'failed'; message: string };

export class IpcChild<To extends IpcMessage, From extends IpcMessage> {
  private readonly child: ChildProcess;
  private pending: { type: string; resolve: (m: From) => void; reject: (e: Error) => void } | undefined;
  private exited = false;

  constructor(
    private readonly name: string,
    script: URL,
    args: string[],
    execArgv: string[],
  ) {
    this.child = fork(script, args, { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: From | Failed) => {
      const p = this.pending;
      this.pending = undefined;
      if (!p) return;
      if (m.type === 'failed') p.reject(new Error(`${name} failed: ${(m as Failed).message}`));
      else if (m.type !== p.type) p.reject(new Error(`${name} answered ${m.type}, expected ${p.type}`));
      else p.resolve(m as From);
    });
    this.child.on('exit', (code) => {
      this.exited = true;
      this.pending?.reject(new Error(`${name} exited with code ${code}`));
      this.pending = undefined;
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** One request at a time: every message to a child has exactly one answer. */
  request<T extends From['type']>(m: To, type: T): Promise<Extract<From, { type: T }>> {
    if (this.pending) return Promise.reject(new Error(`${this.name}: a request is already pending`));
    if (this.exited) return Promise.reject(new Error(`${this.name} has exited`));
    return new Promise((resolve, reject) => {
      this.pending = { type, resolve: resolve as (m: From) => void, reject };
      this.child.send(m);
    });
  }

  /** Asks the child to exit (`{ type: 'exit' }`), or kills it when the channel is gone. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = once(this.child, 'exit');
    if (this.child.connected) this.child.send({ type: 'exit' });
    else this.child.kill();
    await exited;
  }
}
