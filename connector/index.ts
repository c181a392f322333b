import { certificateReport, earliestExpiry, POSTERN_VERSION, startAdmin, VERSION_HEADER, type AdminServer, type Readiness } from '../src/admin/index.js';
import { createAuditLog, pinoAuditSink, type AuditLog } from '../src/audit/audit-log.js';
import { resolveFrom } from '../src/config/load-file.js';
import { watchFiles } from '../src/config/watch.js';
import { ConfigError, isPosternError } from '../src/errors.js';
import type { Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import { createMetrics, type PosternMetrics } from '../src/metrics/index.js';
import { SESSION_DEFAULTS, Session, type Clock, type FrameTransport, type SessionOptions } from '../src/mux/index.js';
import { connectWebSocket, wsTransport } from '../src/mux/ws-transport.js';
import { proxyFor, resolveProxySettings } from '../src/net/proxy-config.js';
import { certificateRef, peerCertificateDer, RevocationIndex, type CertificateRef } from '../src/pki/index.js';
import { checkAllowlist, compileAllowlist, parseTarget, type CompiledAllowlist } from '../src/policy/index.js';
import { maxMessageSize } from '../src/protocol/frames.js';
import { GoAwayReason, ResetCode } from '../src/protocol/reasons.js';
import { loadConnectorMaterial, type ConnectorMaterial } from './material.js';
import type { ConnectorConfig } from './options.js';
import { HandshakeGate, handleStream, type ConnectorLiveStream, type StreamContext } from './stream-handler.js';
import { createTargetDialer, type LookupFn } from './target-dialer.js';
import { RelayTunnel, type TunnelStatus } from './tunnel.js';

export interface ConnectorDeps {
  logger: Logger;
  audit?: AuditLog;
  /** Directory that relative file paths of the config resolve against. */
  baseDir?: string;
  /** Name resolution of targets; dns.lookup by default. */
  lookup?: LookupFn;
  /**
   * The config file, watched with the TLS files: a change (or SIGHUP) re-reads it through
   * `reloadConfig` and applies its `allowlist`. Other fields need a restart.
   */
  configFile?: string;
  reloadConfig?: () => Promise<ConnectorConfig>;
  /** Where the connector counts (shown on the admin endpoint); by default its own registry, with Node's metrics unless `admin: false`. */
  metrics?: PosternMetrics;
  /**
   * The environment a proxy is taken from (https_proxy/HTTPS_PROXY, no_proxy/NO_PROXY) when the
   * config has no `proxy` section; the CLI passes process.env, nothing is read by default.
   */
  env?: Readonly<Record<string, string | undefined>>;
}

/** What one reload did; a group that fails to load keeps the old one in force. */
export interface ConnectorReloadOutcome {
  tls: 'applied' | 'failed';
  /** 'unchanged' without a reloadConfig. */
  allowlist: 'applied' | 'failed' | 'unchanged';
  /** Live streams reset because the new CRL revokes the agent or the new allowlist denies it. */
  streamsReset: number;
  /** Tunnels ended because the new CRL revokes the certificate of the relay they lead to. */
  tunnelsEnded: number;
}

export interface ConnectorStatus {
  /** The connector's SPIFFE ID. */
  identity: string;
  tunnels: TunnelStatus[];
  /** Streams spliced to their target now. */
  liveStreams: number;
}

export interface Connector {
  readonly identity: Identity;
  /** Starts one tunnel per relay; resolves at once (tunnels come up, and retry, by themselves). */
  start(): Promise<void>;
  /** GOAWAY on every tunnel; live streams get limits.shutdownGraceMs; resolves once all are closed. */
  stop(): Promise<void>;
  /**
   * Re-reads the TLS files (and the config's allowlist with deps.reloadConfig); done by itself
   * when a watched file changes, and on SIGHUP through the CLI. New tunnels and streams use the
   * new material; live streams of an agent the new CRL revokes are reset REVOKED, those the new
   * allowlist no longer allows POLICY_CHANGED. A file that does not load is refused with a
   * `reload.failed` log line naming it, and the old material stays.
   */
  reload(): Promise<ConnectorReloadOutcome>;
  status(): ConnectorStatus;
  /** /readyz: ready while at least one tunnel is up. */
  readiness(): Readiness;
  readonly metrics: PosternMetrics;
  /** The admin endpoint (config `admin`) once started; undefined with `admin: false`. Closed last by stop(). */
  readonly admin: AdminServer | undefined;
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
  // Node's process metrics only when something can read them (each set samples GC and the event loop).
  const metrics = deps.metrics ?? createMetrics('connector', { defaultMetrics: config.admin !== false });
  let admin: AdminServer | undefined;

  const allowlist = compileAllowlist(config.allowlist, 'allowlist');
  const hosts = compileHosts(config.hosts ?? {});
  const sessionOptions: Omit<SessionOptions, 'role' | 'clock' | 'logger'> = stripUndefined({ ...config.limits.session });
  checkSessionOptions(sessionOptions);
  const maxPayload = maxMessageSize({
    maxFrameSize: sessionOptions.maxFrameSize ?? SESSION_DEFAULTS.maxFrameSize,
    maxMetadataBytes: SESSION_DEFAULTS.maxMetadataBytes,
    maxMetadataEntries: SESSION_DEFAULTS.maxMetadataEntries,
  });

  const proxySettings = resolveProxySettings(config.proxy, deps.env ?? {});
  const proxies = new Map(config.relays.map((relay) => [relay, proxyFor(proxySettings, relay)] as const));
  if (proxySettings) {
    const via = config.relays.filter((relay) => proxies.get(relay) !== undefined);
    log.info({ event: 'proxy.configured', proxy: proxySettings.proxy.display, source: proxySettings.source, via, direct: config.relays.filter((r) => !via.includes(r)) }, `relays reached through the HTTP proxy ${proxySettings.proxy.display}: ${via.length} of ${config.relays.length}`);
  }

  /** The relay certificate each tunnel was opened with, so a reloaded CRL that revokes it ends the tunnel. */
  const relayCertificates = new WeakMap<FrameTransport, CertificateRef>();
  /** Live tunnel sessions, with the relay and the certificate it presented. */
  const tunnelSessions = new Map<Session, { relay: string; certificate: CertificateRef }>();

  const attempts = new Map<string, number>();
  const connect = async (relay: string): Promise<FrameTransport> => {
    const attempt = attempts.get(relay) ?? 0;
    attempts.set(relay, attempt + 1);
    if (attempt > 0) metrics.reconnect();
    try {
      const proxy = proxies.get(relay);
      const { ws, socket } = await connectWebSocket(tunnelUrl(relay), {
        tls: material.relayTls,
        maxPayload,
        handshakeTimeoutMs: config.limits.handshakeTimeoutMs,
        // The relay's /v1/status shows it per tunnel: mixed versions during an upgrade are visible.
        headers: { [VERSION_HEADER]: POSTERN_VERSION },
        ...(proxy ? { proxy } : {}),
      });
      let certificate: CertificateRef;
      try {
        certificate = certificateRef(peerCertificateDer(socket));
      } catch (err) {
        ws.terminate();
        throw err;
      }
      const transport = wsTransport(ws);
      relayCertificates.set(transport, certificate);
      return transport;
    } catch (err) {
      if (isPosternError(err) && isHandshakeFailure(err.code)) metrics.handshakeFailure('tunnel', err.code);
      throw err;
    }
  };

  const dialer = (list: CompiledAllowlist) =>
    createTargetDialer({
      allowlist: list,
      hosts,
      connectTimeoutMs: config.dial.connectTimeoutMs,
      keepAliveMs: config.dial.keepAliveMs,
      ...(deps.lookup ? { lookup: deps.lookup } : {}),
    });
  const live = new Set<ConnectorLiveStream>();
  const ctx: StreamContext = {
    trustDomain: config.trustDomain,
    self: identity,
    connector: connectorName,
    innerTls: material.innerTls,
    innerTimeoutMs: config.limits.innerHandshakeTimeoutMs,
    allowlist,
    dial: dialer(allowlist),
    gate: new HandshakeGate(config.limits.maxConcurrentHandshakes),
    audit,
    logger: log,
    live,
    streamIdleTimeoutMs: config.limits.streamIdleTimeoutMs,
    metrics,
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
        // What a tunnel receives goes up towards the target.
        onSession: (session, transport) => {
          metrics.countBytes(session, 'up');
          metrics.countLimits(session);
          const certificate = relayCertificates.get(transport);
          if (certificate === undefined) return;
          tunnelSessions.set(session, { relay, certificate });
          session.once('close', () => tunnelSessions.delete(session));
        },
        clock: processClock,
        random: Math.random,
        logger: log,
        audit,
        nextTunnelId: () => `t${++tunnelSeq}`,
      }),
  );

  /** Reloads are serialized: a burst of changes never runs two sweeps over half-applied state. */
  let reloading: Promise<unknown> = Promise.resolve();
  const reload = (): Promise<ConnectorReloadOutcome> => {
    const next = reloading.then(reloadNow);
    reloading = next.catch(() => undefined);
    return next;
  };
  const reloadNow = async (): Promise<ConnectorReloadOutcome> => {
    const outcome: ConnectorReloadOutcome = { tls: 'applied', allowlist: 'unchanged', streamsReset: 0, tunnelsEnded: 0 };
    const refuse = (group: 'tls' | 'allowlist', err: unknown, fallback: string): void => {
      if (!isPosternError(err)) throw err;
      outcome[group] = 'failed';
      const details = err.details as { path?: unknown; source?: unknown };
      const failed = typeof details.path === 'string' ? details.path : typeof details.source === 'string' ? details.source : fallback;
      log.error({ event: 'reload.failed', group, code: err.code, file: failed, err: err.message }, `reload refused, the previous ${group === 'tls' ? 'TLS files stay' : 'allowlist stays'} in force: ${err.message}`);
    };
    try {
      material = loadConnectorMaterial(config, file, { keep: identity });
      ctx.innerTls = material.innerTls;
      metrics.tlsReload('ok');
      const revocation = RevocationIndex.fromCrls(innerCrls(material));
      log.info({ event: 'reload.applied', group: 'tls', files: material.files, revoked: revocation.size }, 'TLS files reloaded: new tunnels and streams use them');
      for (const s of [...live]) {
        if (!revocation.isRevoked(s.certificate)) continue;
        s.end({ code: ResetCode.REVOKED, reason: 'revoked', detail: `the certificate of ${s.identity.uri} (serial ${s.certificate.serial}) is revoked by the reloaded CRL` });
        outcome.streamsReset++;
      }
      // A relay whose certificate is now revoked loses its tunnels; the redial is refused at its
      // TLS handshake by the new CRL, so the tunnel stays down until the relay has a new certificate.
      const outerRevocation = RevocationIndex.fromCrls(crlsOf(material.relayTls.crl));
      for (const [session, t] of [...tunnelSessions]) {
        if (!outerRevocation.isRevoked(t.certificate)) continue;
        log.warn({ event: 'tunnel.revoked', relay: t.relay, serial: t.certificate.serial }, `the certificate of relay ${t.relay} (serial ${t.certificate.serial}) is revoked by the reloaded CRL: tunnel ended`);
        session.terminate(GoAwayReason.REVOKED, `the relay certificate (serial ${t.certificate.serial}) is revoked`);
        outcome.tunnelsEnded++;
      }
    } catch (err) {
      if (isPosternError(err)) metrics.tlsReload('rejected');
      refuse('tls', err, file(config.tls.cert));
    }
    if (deps.reloadConfig) {
      try {
        const next = compileAllowlist((await deps.reloadConfig()).allowlist, 'allowlist');
        ctx.allowlist = next;
        ctx.dial = dialer(next);
        outcome.allowlist = 'applied';
        log.info({ event: 'reload.applied', group: 'allowlist', file: deps.configFile }, 'allowlist reloaded: new streams use it');
        for (const s of [...live]) {
          const check = checkAllowlist(next, s.identity, s.target);
          if (check.allow) continue;
          s.end({ code: ResetCode.POLICY_CHANGED, reason: 'policy-changed', detail: `connector allowlist changed: ${check.reason}` });
          outcome.streamsReset++;
        }
      } catch (err) {
        refuse('allowlist', err, deps.configFile ?? 'config');
      }
    }
    if (outcome.streamsReset > 0) log.warn({ event: 'reload.reset', streams: outcome.streamsReset }, `reload: ${outcome.streamsReset} stream(s) reset`);
    return outcome;
  };
  let unwatch: (() => void) | undefined;

  const status = (): ConnectorStatus => ({ identity: identity.uri, tunnels: tunnels.map((t) => t.status()), liveStreams: live.size });
  const tunnelsUp = () => tunnels.filter((t) => t.status().up).length;
  const readiness = (): Readiness =>
    tunnelsUp() > 0 ? { ready: true } : { ready: false, reason: `no tunnel up (relays: ${config.relays.join(', ')})` };
  const certificates = () => certificateReport(certificateInputs(material));
  metrics.readGauges({ tunnelsUp, certificateExpiry: () => earliestExpiry(certificates()) });

  let state: 'new' | 'running' | 'stopped' = 'new';
  return {
    identity,
    metrics,
    get admin() {
      return admin;
    },
    async start() {
      if (state !== 'new') return;
      state = 'running';
      log.info({ event: 'connector.starting', identity: identity.uri, relays: config.relays }, `connector ${identity.uri} starting`);
      admin = await startAdmin(config.admin, { metrics, readiness, status: () => ({ ...status(), certificates: certificates() }) }, log);
      unwatch = watchFiles([...material.files, ...(deps.configFile && deps.reloadConfig ? [deps.configFile] : [])], config.reload.intervalMs, () => {
        reload().catch((err: unknown) => log.error({ err, event: 'connector.reload-internal' }, 'reload failed unexpectedly'));
      });
      for (const tunnel of tunnels) tunnel.start();
    },
    async stop() {
      if (state === 'stopped') return;
      state = 'stopped';
      unwatch?.();
      await Promise.all(tunnels.map((t) => t.stop()));
      await admin?.close();
      log.info({ event: 'connector.stopped' }, 'connector stopped');
    },
    reload,
    status,
    readiness,
  };
}

/** `wss://relay.example:443/` → `wss://relay.example:443/v1/tunnel` (a configured path prefix is kept). */
export function tunnelUrl(relay: string): string {
  return `${relay.replace(/\/+$/, '')}/v1/tunnel`;
}

/** Failed tunnel dials that are a TLS, certificate or upgrade refusal (not a refused TCP connect or a timeout). */
function isHandshakeFailure(code: string): boolean {
  return /^POSTERN_ERR_(TLS|PKI|ID)_/.test(code) || code === 'POSTERN_ERR_WS_UPGRADE_REFUSED';
}

/** The certificates whose expiry /v1/status and postern_certificate_expiry_timestamp_seconds show. */
function certificateInputs(material: ConnectorMaterial) {
  const { cert, ca } = material.relayTls;
  const inner = material.innerTls;
  return {
    cert: pem(cert),
    ca: pem(ca),
    // The inner files default to the outer ones (loaded twice): listed apart only when they differ.
    ...(samePem(inner.cert, cert) ? {} : { inner_cert: pem(inner.cert) }),
    ...(samePem(inner.ca, ca) ? {} : { inner_ca: pem(inner.ca) }),
  };
}

function samePem(a: unknown, b: unknown): boolean {
  const text = (v: unknown) => [pem(v) ?? []].flat().map((x) => x.toString()).join('');
  return text(a) === text(b);
}

function pem(value: unknown): string | Buffer | (string | Buffer)[] | undefined {
  if (typeof value === 'string' || Buffer.isBuffer(value)) return value;
  if (Array.isArray(value)) return value.filter((v): v is string | Buffer => typeof v === 'string' || Buffer.isBuffer(v));
  return undefined;
}

/** The inner CRLs in force (agents' certificates are checked against these). */
function innerCrls(material: ConnectorMaterial): Buffer[] {
  return crlsOf(material.innerTls.crl);
}

function crlsOf(crl: string | Buffer | readonly (string | Buffer)[] | undefined): Buffer[] {
  const list = crl === undefined ? [] : Array.isArray(crl) ? crl : [crl];
  return list.map((c: string | Buffer) => (typeof c === 'string' ? Buffer.from(c) : Buffer.from(c)));
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
