import type { ConnectionOptions, TLSSocket } from 'node:tls';
import type { SessionLimitsConfig } from '../src/config/schemas.js';
import type { Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import { SESSION_DEFAULTS, Session } from '../src/mux/index.js';
import { connectWebSocket, wsTransport } from '../src/mux/ws-transport.js';
import { proxyFor, type ProxySettings } from '../src/net/proxy-config.js';
import { peerIdentity } from '../src/pki/index.js';
import { maxMessageSize } from '../src/protocol/frames.js';
import { agentClosedError } from './errors.js';

/** One live WebSocket session to the relay, shared by every stream the agent opens on it. */
export interface RelayConnection {
  readonly session: Session;
  /** The relay's identity, read from its certificate on the outer TLS. */
  readonly relayIdentity: Identity;
  /** Outer TLS version and cipher (TLSv1.3 is enforced by connectWebSocket). */
  readonly tlsVersion: string;
  readonly cipher: string;
  /**
   * Keeps the process alive while held: the WebSocket's TCP socket is ref'd while at least one
   * hold is live and unref'd otherwise, so an idle agent never keeps a process running (as Node's
   * http.Agent does with its free sockets). Returns the release function (idempotent).
   */
  hold(): () => void;
}

export interface RelaySessionsOptions {
  /** wss:// URL of the relay (without the /v1/agent path). */
  relay: string;
  /** Other relays of the same pool, tried in turn when one drains (GOAWAY) or cannot be reached. */
  fallbacks?: readonly string[];
  /** The HTTP CONNECT proxy in force (NO_PROXY decides per relay); undefined: direct. */
  proxy?: ProxySettings | undefined;
  trustDomain: string;
  /** Outer TLS options from clientTlsOptions(material, { presentedAs: 'relay-server' }). */
  tls: ConnectionOptions;
  handshakeTimeoutMs: number;
  session: SessionLimitsConfig;
  logger: Logger;
}

/**
 * The agent's relay connection: opened lazily by the first caller, shared by concurrent callers
 * (one connect promise), replaced on the next call once it closed or got a GOAWAY. A session
 * that got a GOAWAY is closed gracefully: its live streams finish, no new one goes there.
 * With several relays, a new session goes first to the relay after the one that sent the
 * GOAWAY (it is draining), and a relay that cannot be reached or refuses the session is
 * followed by the next, so a rolling restart of the pool costs no dial.
 */
export class RelaySessions {
  private current: RelayConnection | undefined;
  private connecting: Promise<RelayConnection> | undefined;
  private readonly live = new Set<RelayConnection>();
  private closed = false;
  private readonly urls: string[];
  /** Index in `urls` of the relay a new session tries first. */
  private preferred = 0;
  private readonly maxPayload: number;

  constructor(private readonly o: RelaySessionsOptions) {
    this.urls = [o.relay, ...(o.fallbacks ?? [])].map((relay) => `${relay.replace(/\/+$/, '')}/v1/agent`);
    this.maxPayload = maxMessageSize({
      maxFrameSize: o.session.maxFrameSize ?? SESSION_DEFAULTS.maxFrameSize,
      maxMetadataBytes: SESSION_DEFAULTS.maxMetadataBytes,
      maxMetadataEntries: SESSION_DEFAULTS.maxMetadataEntries,
    });
  }

  /** The usable session, connecting first when there is none. */
  acquire(): Promise<RelayConnection> {
    if (this.closed) return Promise.reject(agentClosedError());
    const current = this.current;
    if (current && !current.session.closed && !current.session.goingAway) return Promise.resolve(current);
    this.current = undefined;
    this.connecting ??= this.connect().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** Live sessions (the current one and those draining after a GOAWAY). */
  get size(): number {
    return this.live.size;
  }

  /**
   * Closes every session: GOAWAY, then streams still live after `graceMs` are reset. Resolves
   * once every transport is closed; no timer is left behind.
   */
  async close(graceMs: number): Promise<void> {
    this.closed = true;
    this.current = undefined;
    await this.connecting?.catch(() => undefined);
    await Promise.all([...this.live].map((c) => c.session.close({ timeoutMs: graceMs })));
  }

  /** Each relay once, starting with the preferred one; the first failure is what callers see. */
  private async connect(): Promise<RelayConnection> {
    let first: unknown;
    for (let i = 0; i < this.urls.length; i++) {
      const index = (this.preferred + i) % this.urls.length;
      try {
        const conn = await this.connectTo(index);
        this.preferred = index;
        return conn;
      } catch (err) {
        if (this.closed) throw err;
        first ??= err;
        if (this.urls.length > 1) {
          const code = (err as { code?: unknown }).code;
          this.o.logger.warn({ event: 'agent.relay-failover', relay: this.urls[index], code, reason: (err as Error).message }, 'relay unavailable: trying the next one');
        }
      }
    }
    throw first;
  }

  private async connectTo(index: number): Promise<RelayConnection> {
    const log = this.o.logger;
    const url = this.urls[index]!;
    const proxy = proxyFor(this.o.proxy, url);
    const { ws, socket } = await connectWebSocket(url, {
      tls: this.o.tls,
      maxPayload: this.maxPayload,
      handshakeTimeoutMs: this.o.handshakeTimeoutMs,
      ...(proxy ? { proxy } : {}),
    });
    let relayIdentity: Identity;
    try {
      // Already checked by checkServerIdentity during the handshake; read again for the evidence.
      relayIdentity = peerIdentity(socket, { trustDomain: this.o.trustDomain, presentedAs: 'relay-server' });
    } catch (err) {
      ws.terminate();
      throw err;
    }
    const session = new Session(wsTransport(ws), { role: 'client', ...this.o.session, logger: log });
    if (this.closed) {
      session.destroy();
      throw agentClosedError();
    }
    const conn: RelayConnection = {
      session,
      relayIdentity,
      tlsVersion: socket.getProtocol() ?? 'unknown',
      cipher: socket.getCipher()?.standardName ?? 'unknown',
      hold: holdCounter(socket),
    };
    this.live.add(conn);
    this.current = conn;
    log.info({ event: 'agent.session.up', relay: url, relayIdentity: relayIdentity.uri, tlsVersion: conn.tlsVersion, ...(proxy ? { proxy: proxy.display } : {}) }, 'relay session up');
    session.on('goaway', (info) => {
      if (this.current === conn) this.current = undefined;
      // A draining relay refuses new sessions: the next one of the pool goes first.
      if (this.preferred === index) this.preferred = (index + 1) % this.urls.length;
      log.info({ event: 'agent.session.goaway', relay: url, reason: info.reason, message: info.message }, 'relay sent GOAWAY: new dials use a new session');
      void session.close();
    });
    session.once('close', (err?: Error) => {
      this.live.delete(conn);
      if (this.current === conn) this.current = undefined;
      // Lost (a crash, a dead path) rather than closed: the next session starts with the next
      // relay, so a blackholed one costs no handshake timeout.
      if (err !== undefined && !this.closed && this.preferred === index) this.preferred = (index + 1) % this.urls.length;
      log.info({ event: 'agent.session.down', relay: url, reason: err?.message ?? 'closed' }, 'relay session down');
    });
    return conn;
  }
}

function holdCounter(socket: TLSSocket): () => () => void {
  let holds = 0;
  socket.unref();
  return () => {
    if (holds++ === 0) socket.ref();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--holds === 0) socket.unref();
    };
  };
}

