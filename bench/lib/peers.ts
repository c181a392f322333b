/** The orchestrator's handle on one forked bench peer (bench/lib/mux-peer.ts). */
import { IpcChild } from './ipc-child.js';
import type { FromPeer, ToPeer } from './protocol.js';

const PEER_SCRIPT = new URL('./mux-peer.js', import.meta.url);

export class Peer extends IpcChild<ToPeer, FromPeer> {
  constructor(role: 'server' | 'client', execArgv: string[]) {
    super(`${role} peer`, PEER_SCRIPT, [role], ['--expose-gc', ...execArgv]);
  }
}
