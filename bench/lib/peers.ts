/** The orchestrator's handle on one forked bench peer (bench/lib/mux-peer.ts). */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { FromPeer, ToPeer } from './protocol.js';

const PEER_SCRIPT = new URL('./mux-peer.js', import.meta.url);

export class Peer {
  private readonly child: ChildProcess;
  private pending: { type: FromPeer['type']; resolve: (m: FromPeer) => void; reject: (e: Error) => void } | undefined;
  private exited = false;

  constructor(role: 'server' | 'client', execArgv: string[]) {
    this.child = fork(PEER_SCRIPT, [role], { execArgv: ['--expose-gc', ...execArgv], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: FromPeer) => {
      const p = this.pending;
      this.pending = undefined;
      if (!p) return;
      if (m.type === 'failed') p.reject(new Error(`${role} peer failed: ${m.message}`));
      else if (m.type !== p.type) p.reject(new Error(`${role} peer answered ${m.type}, expected ${p.type}`));
      else p.resolve(m);
    });
    this.child.on('exit', (code) => {
      this.exited = true;
      this.pending?.reject(new Error(`${role} peer exited with code ${code}`));
      this.pending = undefined;
    });
  }

  /** One request at a time: every message to a peer has exactly one answer. */
  request<T extends FromPeer['type']>(m: ToPeer, type: T): Promise<Extract<FromPeer, { type: T }>> {
    if (this.pending) return Promise.reject(new Error('a request is already pending'));
    if (this.exited) return Promise.reject(new Error('the peer has exited'));
    return new Promise((resolve, reject) => {
      this.pending = { type, resolve: resolve as (m: FromPeer) => void, reject };
      this.child.send(m);
    });
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = once(this.child, 'exit');
    if (this.child.connected) this.child.send({ type: 'exit' } satisfies ToPeer);
    else this.child.kill();
    await exited;
  }
}
