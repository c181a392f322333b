import type { ConnectionOptions, TLSSocket } from 'node:tls';
import type { SessionLimitsConfig } from '../src/config/schemas.js';
import type { Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import { SESSION_DEFAULTS, Session } from '../src/mux/index.js';
import { connectWebSocket, wsTransport } from '../src/mux/ws-transport.js';
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
 */
export class RelaySessions {
  private current: RelayConnection | undefined;
  private connecting: Promise<RelayConnection> | undefined;
  private readonly live = new Set<RelayConnection>();
  private closed = false;
  private readonly url: string;
  private readonly maxPayload: number;

  constructor(private readonly o: RelaySessionsOptions) {
    this.url = `${o.relay.replace(/\/+$/, '')}/v1/agent`;
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

  private async connect(): Promise<RelayConnection> {
    const log = this.o.logger;
    const { ws, socket } = await connectWebSocket(this.url, {
      tls: this.o.tls,
      maxPayload: this.maxPayload,
      handshakeTimeoutMs: this.o.handshakeTimeoutMs,
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
    log.info({ event: 'agent.session.up', relay: this.url, relayIdentity: relayIdentity.uri, tlsVersion: conn.tlsVersion }, 'relay session up');
    session.on('goaway', (info) => {
      if (this.current === conn) this.current = undefined;
      log.info({ event: 'agent.session.goaway', relay: this.url, reason: info.reason, message: info.message }, 'relay sent GOAWAY: new dials use a new session');
      void session.close();
    });
    session.once('close', (err?: Error) => {
      this.live.delete(conn);
      if (this.current === conn) this.current = undefined;
      log.info({ event: 'agent.session.down', relay: this.url, reason: err?.message ?? 'closed' }, 'relay session down');
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

