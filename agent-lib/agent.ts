import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { resolveFrom } from '../src/config/load-file.js';
import { IdentityError, isPosternError } from '../src/errors.js';
import { identityFromCertificate, type Identity, type IdentityExpectation } from '../src/identity/index.js';
import { silentLogger, type Logger } from '../src/log.js';
import { validateOptions } from '../src/options.js';
import { clientTlsOptions, loadTlsMaterial, type TlsMaterial } from '../src/pki/index.js';
import { resolveProxySettings } from '../src/net/proxy-config.js';
import { parseTarget } from '../src/policy/index.js';
import { dialError, dialOnSession, retryOnNewSession, type InnerDialResult } from './dial.js';
import { AgentDialError, AgentError, agentClosedError, type DialStage } from './errors.js';
import { agentOptionsSchema, type AgentOptions, type ResolvedAgentOptions } from './options.js';
import { TunnelSocket } from './pg-socket.js';
import { RelaySessions } from './relay-session.js';
import { checkConnectorId } from './validate.js';

export interface AgentDeps {
  logger?: Logger;
  /** Relative certificate, key, CA and CRL paths resolve against this (the config file's directory). */
  baseDir?: string;
  /**
   * The environment a proxy is taken from (https_proxy/HTTPS_PROXY, no_proxy/NO_PROXY) when the
   * options have no `proxy`; none by default (a library reads no environment by itself).
   */
  env?: Readonly<Record<string, string | undefined>>;
}

export interface DialRequest {
  /** Connector id, as in its certificate (`spiffe://TD/org/ORG/connector/ID`). */
  connector: string;
  /** `host:port` or `[ipv6]:port` as the connector should reach it; canonicalized before it is sent. */
  target: string;
  signal?: AbortSignal;
}

/** A dial's socket with the evidence `postern agent check` prints. */
export interface DialInfo extends InnerDialResult {
  connector: string;
  /** The canonical target sent to relay and connector. */
  target: string;
  /** The relay's identity, from its certificate on the outer TLS. */
  relayIdentity: Identity;
  relayTlsVersion: string;
  relayCipher: string;
  /** From dial() to the connector's "connected", in ms (includes opening the relay session when there was none). */
  setupMs: number;
}

export interface SocketFactoryOptions {
  connector: string;
}

/** Most per-connector inner TLS option sets kept (each holds a prebuilt secure context). */
const MAX_CACHED_CONNECTORS = 64;
const RETRY_ATTEMPTS = 2;

/**
 * The library side of Postern (PRODUCT §10): one multiplexed relay session, opened on the first
 * dial and shared by all, and per dial an inner TLS 1.3 session with the connector, which must
 * present exactly `spiffe://TD/org/<this agent's org>/connector/<the id asked for>`.
 */
export class Agent {
  readonly options: Readonly<ResolvedAgentOptions>;
  /** This agent's own identity (a user or service), read from its certificate. */
  readonly identity: Identity;
  readonly logger: Logger;

  private readonly sessions: RelaySessions;
  private readonly innerMaterial: TlsMaterial;
  private readonly innerOptions = new Map<string, { tls: ConnectionOptions; expect: IdentityExpectation }>();
  private readonly pending = new Set<AbortController>();
  private closed = false;

  constructor(options: AgentOptions, deps: AgentDeps = {}) {
    this.options = validateOptions(agentOptionsSchema, options, 'agent options');
    this.logger = deps.logger ?? silentLogger();
    const o = this.options;
    const file = (path: string): string => resolveFrom(deps.baseDir, path);
    const files = (list: string | readonly string[] | undefined): string[] | undefined =>
      list === undefined ? undefined : (typeof list === 'string' ? [list] : [...list]).map(file);

    const outer = loadTlsMaterial({ cert: file(o.tls.cert), key: file(o.tls.key), ca: file(o.tls.ca), crl: files(o.tls.crl) });
    // The inner CRL follows the inner CA: the outer CRL cannot cover a different inner CA.
    this.innerMaterial =
      o.inner.ca === undefined && o.inner.crl === undefined
        ? outer
        : loadTlsMaterial({
            cert: file(o.tls.cert),
            key: file(o.tls.key),
            ca: file(o.inner.ca ?? o.tls.ca),
            crl: files(o.inner.crl ?? (o.inner.ca === undefined ? o.tls.crl : undefined)),
          });
    try {
      this.identity = identityFromCertificate(outer.cert, { trustDomain: o.trustDomain, presentedAs: 'agent-client' });
    } catch (err) {
      if (!isPosternError(err)) throw err;
      throw new IdentityError(err.code, `agent certificate ${file(o.tls.cert)} cannot be used by an agent: ${err.message}`, { cause: err, details: { ...err.details } });
    }
    this.sessions = new RelaySessions({
      relay: o.relay,
      fallbacks: o.relays ?? [],
      proxy: resolveProxySettings(o.proxy, deps.env ?? {}),
      trustDomain: o.trustDomain,
      tls: clientTlsOptions(outer, { trustDomain: o.trustDomain, presentedAs: 'relay-server' }),
      handshakeTimeoutMs: o.limits.handshakeTimeoutMs,
      session: o.limits.session,
      logger: this.logger.child({ scope: 'agent' }),
    });
  }

  /** Opens a stream to `target` through `connector`; resolves with the inner TLS socket once the connector is connected. */
  async dial(req: DialRequest): Promise<TLSSocket> {
    return (await this.dialWithInfo(req)).socket;
  }

  /** As dial(), with the identities, TLS parameters and set-up time of the path. */
  async dialWithInfo(req: DialRequest): Promise<DialInfo> {
    const started = performance.now();
    if (this.closed) throw agentClosedError();
    let target: string;
    try {
      checkConnectorId(req.connector, 'dial');
      target = parseTarget(req.target).canonical;
    } catch (err) {
      // Refused here, before anything went on the wire.
      if (!isPosternError(err)) throw err;
      throw new AgentDialError(err.code, 'open', err.message, { cause: err, details: { connector: String(req.connector), target: String(req.target) } });
    }
    const r = { connector: req.connector, target };
    const dialTimeoutMs = this.options.limits.dialTimeoutMs;
    const progress: { stage: DialStage } = { stage: 'session' };
    const controller = new AbortController();
    const timer = setTimeout(() => {
      controller.abort(
        new AgentDialError('POSTERN_ERR_AGENT_DIAL_TIMEOUT', progress.stage, `connector "${r.connector}" target ${target}: not connected within limits.dialTimeoutMs=${dialTimeoutMs} (stuck at ${progress.stage})`, {
          details: { ...r, dialTimeoutMs },
        }),
      );
    }, dialTimeoutMs);
    const onCallerAbort = (): void => {
      controller.abort(new AgentDialError('POSTERN_ERR_OPEN_CANCELLED', progress.stage, `dial of connector "${r.connector}" target ${target} cancelled by the caller`, { cause: req.signal?.reason, details: r }));
    };
    if (req.signal?.aborted) onCallerAbort();
    else req.signal?.addEventListener('abort', onCallerAbort, { once: true });
    this.pending.add(controller);
    try {
      for (let attempt = 1; ; attempt++) {
        progress.stage = 'session';
        const conn = await abortable(this.sessions.acquire(), controller.signal).catch((err: unknown) => {
          throw controller.signal.aborted ? controller.signal.reason : dialError(err, 'session', r);
        });
        const inner = this.innerFor(r.connector);
        try {
          const result = await dialOnSession(conn, r, {
            tls: inner.tls,
            expect: inner.expect,
            handshakeTimeoutMs: this.options.limits.handshakeTimeoutMs,
            deadline: started + dialTimeoutMs,
            signal: controller.signal,
            progress,
          });
          return {
            ...result,
            ...r,
            relayIdentity: conn.relayIdentity,
            relayTlsVersion: conn.tlsVersion,
            relayCipher: conn.cipher,
            setupMs: performance.now() - started,
          };
        } catch (err) {
          if (attempt < RETRY_ATTEMPTS && retryOnNewSession(err) && !controller.signal.aborted) {
            this.logger.debug({ event: 'agent.dial.retry', code: (err as AgentDialError).code, ...r }, 'open refused before any connector saw it: retrying on a new relay session');
            continue;
          }
          throw err;
        }
      }
    } finally {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onCallerAbort);
      this.pending.delete(controller);
    }
  }

  /**
   * A `stream` factory for node-postgres: `new pg.Client({ host, port, stream: agent.socketFactory({ connector }) })`.
   * Each call returns a socket-like Duplex that dials `host:port` through `connector` when pg calls connect().
   */
  socketFactory(o: SocketFactoryOptions): (config?: unknown) => TunnelSocket {
    checkConnectorId(o.connector, 'socketFactory');
    return () => new TunnelSocket((target, signal) => this.dial({ connector: o.connector, target, signal }));
  }

  /** Round-trip time of the relay session (a PING), opening the session when there is none. */
  async ping(): Promise<number> {
    const conn = await this.sessions.acquire();
    // Held while the PING is out: an idle session's socket is unref'd, and a script that only
    // awaits this PING would otherwise exit before the PONG (exit code 13).
    const release = conn.hold();
    try {
      return await conn.session.ping();
    } finally {
      release();
    }
  }

  /**
   * Closes the relay session(s): pending dials fail with POSTERN_ERR_AGENT_CLOSED, open streams
   * get `graceMs` (default 0) to finish before they are reset. Leaves no timer behind.
   */
  async close(o: { graceMs?: number } = {}): Promise<void> {
    this.closed = true;
    for (const controller of this.pending) controller.abort(agentClosedError());
    await this.sessions.close(o.graceMs ?? 0);
  }

  private innerFor(connector: string): { tls: ConnectionOptions; expect: IdentityExpectation } {
    let entry = this.innerOptions.get(connector);
    if (entry === undefined) {
      const expect: IdentityExpectation = { trustDomain: this.options.trustDomain, presentedAs: 'connector-inner-server', org: this.identity.org!, name: connector };
      entry = { tls: clientTlsOptions(this.innerMaterial, expect), expect };
      if (this.innerOptions.size >= MAX_CACHED_CONNECTORS) this.innerOptions.delete(this.innerOptions.keys().next().value!);
      this.innerOptions.set(connector, entry);
    }
    return entry;
  }
}

/** `promise`, or the signal's reason as soon as it is aborted (the work itself goes on for others). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
