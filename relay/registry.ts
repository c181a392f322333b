import type { Session } from '../src/mux/index.js';
import type { Identity } from '../src/identity/index.js';
import type { CertificateRef } from '../src/pki/index.js';

export interface Tunnel {
  readonly id: string;
  readonly session: Session;
  readonly identity: Identity;
  /** The connector's certificate (serial, issuer): a reloaded CRL that revokes it ends the tunnel. */
  readonly certificate: CertificateRef;
  readonly remote: string | undefined;
  readonly since: Date;
  /** The Postern version the connector announced (VERSION_HEADER), when it did. */
  readonly version: string | undefined;
}

/**
 * Live connector tunnels by `org/connector-id`. A connector may hold several (one per relay of
 * its pool, or more during a reconnect); opens go to the least-loaded one not draining.
 */
export class ConnectorRegistry {
  private readonly byConnector = new Map<string, Set<Tunnel>>();

  add(tunnel: Tunnel): void {
    const key = keyOf(tunnel.identity.org ?? '', tunnel.identity.name);
    let set = this.byConnector.get(key);
    if (!set) this.byConnector.set(key, (set = new Set()));
    set.add(tunnel);
  }

  remove(tunnel: Tunnel): void {
    const key = keyOf(tunnel.identity.org ?? '', tunnel.identity.name);
    const set = this.byConnector.get(key);
    if (!set) return;
    set.delete(tunnel);
    if (set.size === 0) this.byConnector.delete(key);
  }

  pick(org: string, connector: string): Tunnel | undefined {
    let best: Tunnel | undefined;
    for (const tunnel of this.byConnector.get(keyOf(org, connector)) ?? []) {
      if (tunnel.session.goingAway || tunnel.session.closed) continue;
      if (!best || tunnel.session.streamCount < best.session.streamCount) best = tunnel;
    }
    return best;
  }

  all(): Tunnel[] {
    return [...this.byConnector.values()].flatMap((set) => [...set]);
  }

  get size(): number {
    return this.byConnector.size;
  }
}

function keyOf(org: string, connector: string): string {
  return `${org}/${connector}`;
}
