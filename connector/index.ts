import { createAuditLog, pinoAuditSink, type AuditLog } from '../src/audit/audit-log.js';
import { resolveFrom } from '../src/config/load-file.js';
import { ConfigError, isPosternError } from '../src/errors.js';
import type { Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import { SESSION_DEFAULTS, Session, type Clock, type FrameTransport, type SessionOptions } from '../src/mux/index.js';
import { connectWebSocket, wsTransport } from '../src/mux/ws-transport.js';
import { compileAllowlist, parseTarget } from '../src/policy/index.js';
import { maxMessageSize } from '../src/protocol/frames.js';
import { loadConnectorMaterial } from './material.js';
import type { ConnectorConfig } from './options.js';
import { watchFiles } from './reload.js';
import { HandshakeGate, handleStream, type StreamContext } from './stream-handler.js';
import { createTargetDialer, type LookupFn } from './target-dialer.js';
import { RelayTunnel, type TunnelStatus } from './tunnel.js';

export interface ConnectorDeps {
  logger: Logger;
  audit?: AuditLog;
  /** Directory that relative file paths of the config resolve against. */
  baseDir?: string;
  /** Name resolution of targets; dns.lookup by default. */
  lookup?: LookupFn;
}

export interface ConnectorStatus {
  /** The connector's SPIFFE ID. */
  identity: string;
  tunnels: TunnelStatus[];
}

export interface Connector {
  readonly identity: Identity;
  /** Starts one tunnel per relay; resolves at once (tunnels come up, and retry, by themselves). */
  start(): Promise<void>;
  /** GOAWAY on every tunnel; live streams get limits.shutdownGraceMs; resolves once all are closed. */
  stop(): Promise<void>;
  status(): ConnectorStatus;
}

/**
 * Reconnect timers keep the process alive: a connector waiting for its relay must not exit
 * (the mux's system clock unrefs its timers, which is right for sessions but not for this).
 */
const processClock: Clock = Object.freeze({
  now: () => performance.now(),
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  clearTimeout: (handle: unknown) => clearTimeout(handle as NodeJS.Timeout),
  setInterval: (fn: () => void, ms: number) => setInterval(fn, ms).unref(),
  clearInterval: (handle: unknown) => clearInterval(handle as NodeJS.Timeout),
});

/**
 * The connector (docs/architecture.md, steps 1, 4, 6–8). Its identity (org, id) comes from its
 * own certificate. Loads and checks every file at once, so a bad config fails here, not at the
 * first stream.
 */
export function createConnector(config: ConnectorConfig, deps: ConnectorDeps): Connector {
  const log = deps.logger;
  const audit = deps.audit ?? createAuditLog('connector', [pinoAuditSink(log)]);
  const file = (p: string) => resolveFrom(deps.baseDir, p);
  let material = loadConnectorMaterial(config, file, { logger: log });
  const identity = material.identity;
  const connectorName = `${identity.org}/${identity.name}`;

  const allowlist = compileAllowlist(config.allowlist, 'allowlist');
  const hosts = compileHosts(config.hosts ?? {});
  const sessionOptions: Omit<SessionOptions, 'role' | 'clock' | 'logger'> = stripUndefined({ ...config.limits.session });
  checkSessionOptions(sessionOptions);
  const maxPayload = maxMessageSize({
    maxFrameSize: sessionOptions.maxFrameSize ?? SESSION_DEFAULTS.maxFrameSize,
    maxMetadataBytes: SESSION_DEFAULTS.maxMetadataBytes,
    maxMetadataEntries: SESSION_DEFAULTS.maxMetadataEntries,
  });

  const connect = async (relay: string): Promise<FrameTransport> => {
    const { ws } = await connectWebSocket(tunnelUrl(relay), { tls: material.relayTls, maxPayload, handshakeTimeoutMs: config.limits.handshakeTimeoutMs });
    return wsTransport(ws);
  };

  const ctx: StreamContext = {
    trustDomain: config.trustDomain,
    self: identity,
    connector: connectorName,
    innerTls: material.innerTls,
    innerTimeoutMs: config.limits.innerHandshakeTimeoutMs,
    allowlist,
    dial: createTargetDialer({
      allowlist,
      hosts,
      connectTimeoutMs: config.dial.connectTimeoutMs,
      keepAliveMs: config.dial.keepAliveMs,
      ...(deps.lookup ? { lookup: deps.lookup } : {}),
    }),
    gate: new HandshakeGate(config.limits.maxConcurrentHandshakes),
    audit,
    logger: log,
  };

  let tunnelSeq = 0;
  const tunnels = config.relays.map(
    (relay) =>
      new RelayTunnel({
        relay,
        connector: connectorName,
        connect: () => connect(relay),
        session: sessionOptions,
        reconnect: config.reconnect,
        shutdownGraceMs: config.limits.shutdownGraceMs,
        onOpen: (incoming) => {
          handleStream(incoming, ctx).catch((err: unknown) => {
            log.error({ err, event: 'stream.internal', streamId: incoming.id }, 'stream handling failed');
          });
        },
        clock: processClock,
        random: Math.random,
        logger: log,
        audit,
        nextTunnelId: () => `t${++tunnelSeq}`,
      }),
  );

  /** New tunnels and streams take the new material; live ones keep theirs. A failed reload keeps the old. */
  const reload = (): void => {
    try {
      material = loadConnectorMaterial(config, file, { keep: identity });
      ctx.innerTls = material.innerTls;
      log.info({ event: 'connector.reloaded', files: material.files }, 'TLS files reloaded');
    } catch (err) {
      log.warn({ event: 'connector.reload-failed', code: isPosternError(err) ? err.code : undefined, err: (err as Error).message }, 'TLS files changed but could not be loaded; keeping the previous ones');
    }
  };
  let unwatch: (() => void) | undefined;

  let state: 'new' | 'running' | 'stopped' = 'new';
  return {
    identity,
    async start() {
      if (state !== 'new') return;
      state = 'running';
      log.info({ event: 'connector.starting', identity: identity.uri, relays: config.relays }, `connector ${identity.uri} starting`);
      unwatch = watchFiles(material.files, config.reload.intervalMs, reload);
      for (const tunnel of tunnels) tunnel.start();
    },
    async stop() {
      if (state === 'stopped') return;
      state = 'stopped';
      unwatch?.();
      await Promise.all(tunnels.map((t) => t.stop()));
      log.info({ event: 'connector.stopped' }, 'connector stopped');
    },
    status() {
      return { identity: identity.uri, tunnels: tunnels.map((t) => t.status()) };
    },
  };
}

/** `wss://relay.example:443/` → `wss://relay.example:443/v1/tunnel` (a configured path prefix is kept). */
export function tunnelUrl(relay: string): string {
  return `${relay.replace(/\/+$/, '')}/v1/tunnel`;
}

/** `hosts` keys become canonical names, so they match targets whatever their spelling. */
function compileHosts(hosts: Readonly<Record<string, string>>): Map<string, string> {
  const out = new Map<string, string>();
  const problems: string[] = [];
  for (const [name, address] of Object.entries(hosts)) {
    try {
      const target = parseTarget(`${name}:1`);
      if (target.kind !== 'dns') problems.push(`hosts."${name}": is an IP address; hosts maps names to addresses`);
      else out.set(target.host, address);
    } catch (err) {
      if (!isPosternError(err)) throw err;
      problems.push(`hosts."${name}": not a valid host name (${err.message})`);
    }
  }
  if (problems.length > 0) throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', problems.join('\n'), { details: { issues: problems } });
  return out;
}

/**
 * The session checks its limits in its constructor (ranges, pingIntervalMs < deadPeerTimeoutMs);
 * building one over an inert transport makes a bad limit fail at start, not at every reconnect.
 */
function checkSessionOptions(options: Omit<SessionOptions, 'role' | 'clock' | 'logger'>): void {
  const inert: FrameTransport = { bufferedAmount: 0, send() {}, setHandlers() {}, close() {}, destroy() {} };
  try {
    new Session(inert, { ...options, role: 'client' }).destroy();
  } catch (err) {
    if (isPosternError(err)) throw new ConfigError(err.code, `limits.session: ${err.message}`, { cause: err, details: { ...err.details } });
    throw err;
  }
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

export type { ConnectorConfig, ConnectorConfigInput } from './options.js';
export { connectorConfigSchema } from './options.js';
export type { TunnelStatus } from './tunnel.js';
