import { createServer, type Server } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { certificateReport, earliestExpiry, peerVersion, startAdmin, VERSION_HEADER, type AdminServer, type Readiness } from '../src/admin/index.js';
import { createAuditLog, pinoAuditSink, type AuditLog } from '../src/audit/audit-log.js';
import { resolveFrom } from '../src/config/load-file.js';
import { watchFiles } from '../src/config/watch.js';
import { isPosternError } from '../src/errors.js';
import type { Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import { createMetrics, type PosternMetrics } from '../src/metrics/index.js';
import { Session, SESSION_DEFAULTS } from '../src/mux/index.js';
import { acceptUpgrade, createWebSocketServer, refuseUpgrade, wsTransport } from '../src/mux/ws-transport.js';
import { certificateRef, mapTlsError, peerCertificateDer, serverTlsOptions, type CertificateRef } from '../src/pki/index.js';
import type { CompiledPolicy } from '../src/policy/index.js';
import { GoAwayReason, OpenResult, ResetCode } from '../src/protocol/reasons.js';
import { maxMessageSize } from '../src/protocol/frames.js';
import { admit } from './door.js';
import { handleAgentOpen, type LiveStream } from './opens.js';
import type { RelayConfig } from './options.js';
import { ConnectorRegistry, type Tunnel } from './registry.js';
import {
  failedFile, loadRelayPolicy, loadRelayTls, resetDisallowed, resetRevoked, type AgentSessionRecord, type RelayTls,
} from './reload.js';

export interface RelayDeps {
  logger: Logger;
  audit?: AuditLog;
  /** Directory that relative file paths of the config resolve against. */
  baseDir?: string;
  /** Where the relay counts (shown on the admin endpoint); by default its own registry, with Node's metrics unless `admin: false`. */
  metrics?: PosternMetrics;
}

export interface RelayStatus {
  identity: string;
  listening: { host: string; port: number } | undefined;
  draining: boolean;
  connectors: Array<{ connector: string; tunnels: Array<{ id: string; since: string; streams: number; remote?: string; version?: string }> }>;
  agentSessions: number;
  liveStreams: number;
  /** The policy in force: its source and when it was loaded. */
  policy: { source: string; loadedAt: string };
  /** Reloads applied and refused since start (file changes and SIGHUP). */
  reloads: { applied: number; failed: number };
}

/** What one reload did: each group of files applied, unchanged-but-reread, or refused (old kept). */
export interface ReloadOutcome {
  tls: 'applied' | 'failed';
  policy: 'applied' | 'failed';
  /** Live streams reset because the new CRL revokes a peer or the new policy denies them. */
  streamsReset: number;
  /** Agent sessions and tunnels terminated because the new CRL revokes their certificate. */
  sessionsTerminated: number;
}

export interface Relay {
  start(): Promise<{ host: string; port: number }>;
  /**
   * Graceful drain: GOAWAY(DRAIN) on every tunnel and agent session, new sessions and opens
   * refused with GOING_AWAY, live streams get `graceMs` (default drain.graceMs) to finish, those
   * left are reset with DRAIN_TIMEOUT; then the listener and every connection close.
   */
  stop(graceMs?: number): Promise<void>;
  /**
   * Re-reads certificate, key, trust bundle, CRLs and the policy (done by itself when one of
   * them changes, and on SIGHUP through the CLI). A group that fails to load is refused with
   * a `reload.failed` log line naming the file, and the old one stays in force. New TLS
   * handshakes use the new material; live streams and sessions the new CRL or policy no longer
   * allow are reset (REVOKED, POLICY_CHANGED) or terminated (GOAWAY REVOKED).
   */
  reload(): Promise<ReloadOutcome>;
  status(): RelayStatus;
  /** /readyz: ready once listening with a policy loaded, and no longer from the start of stop(). */
  readiness(): Readiness;
  /** True from the start of stop(): readiness probes should fail. */
  readonly draining: boolean;
  readonly identity: Identity;
  readonly metrics: PosternMetrics;
  /** The admin endpoint (config `admin`) once started; undefined with `admin: false`. Closed last by stop(). */
  readonly admin: AdminServer | undefined;
}

/**
 * After the grace period: sessions cancel what is still pending this much later, and their
 * sockets are cut twice as late (a peer that never answers the WebSocket close handshake).
 */
const DRAIN_CLOSE_BOUND_MS = 1_000;

export async function createRelay(config: RelayConfig, deps: RelayDeps): Promise<Relay> {
  const log = deps.logger;
  const audit = deps.audit ?? createAuditLog('relay', [pinoAuditSink(log)]);
  const file = (p: string) => resolveFrom(deps.baseDir, p);
  let tls: RelayTls = loadRelayTls(config, file);
  const identity = tls.identity;
  const policyPath = file(config.policy.file);
  let policy: CompiledPolicy = await loadRelayPolicy(policyPath, config.trustDomain);
  let policyLoadedAt = new Date();
  const reloads = { applied: 0, failed: 0 };
  // Node's process metrics only when something can read them (each set samples GC and the event loop).
  const metrics = deps.metrics ?? createMetrics('relay', { defaultMetrics: config.admin !== false });
  let admin: AdminServer | undefined;

  const sessionOptions = { ...config.limits.session };
  const maxPayload = maxMessageSize({
    maxFrameSize: sessionOptions.maxFrameSize ?? SESSION_DEFAULTS.maxFrameSize,
    maxMetadataBytes: SESSION_DEFAULTS.maxMetadataBytes,
    maxMetadataEntries: SESSION_DEFAULTS.maxMetadataEntries,
  });
  const wss = createWebSocketServer({ maxPayload });
  const registry = new ConnectorRegistry();
  const agentSessions = new Map<Session, AgentSessionRecord>();
  const live = new Set<LiveStream>();
  const sockets = new Set<Socket>();
  let draining = false;
  let stopping: Promise<void> | undefined;
  let unwatch: (() => void) | undefined;
  let sessionCount = 0;
  let tunnelSeq = 0;

  const tlsOptions = (t: RelayTls) => serverTlsOptions(t.material, { handshakeTimeoutMs: config.limits.handshakeTimeoutMs });
  const server: Server = createServer(tlsOptions(tls), (_req, res) => {
    res.writeHead(426, { 'content-type': 'application/json', connection: 'close' });
    res.end(JSON.stringify({ code: 'POSTERN_ERR_USAGE', message: 'this port speaks WebSocket (postern.v1) only' }));
  });
  server.headersTimeout = config.limits.handshakeTimeoutMs;
  server.requestTimeout = config.limits.handshakeTimeoutMs;
  server.on('connection', (socket: Socket) => {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, config.limits.tcpKeepAliveMs);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
    const mapped = mapTlsError(socket?.authorizationError ?? err);
    const remote = socket?.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : undefined;
    audit.emit({ event: 'handshake.refused', place: 'outer', code: mapped.code, reason: mapped.message, ...(remote ? { remote } : {}) });
    metrics.handshakeFailure('outer', mapped.code);
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    onUpgrade(req, socket, head).catch((err: unknown) => {
      log.error({ err, event: 'relay.upgrade-failed' }, 'upgrade failed');
      socket.destroy();
    });
  });

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const admission = admit(req, config.trustDomain);
    if (!admission.ok) {
      audit.emit({ event: 'handshake.refused', place: admission.door ?? 'upgrade', code: admission.code, reason: admission.message, remote });
      metrics.handshakeFailure(admission.door ?? 'upgrade', admission.code);
      return refuseUpgrade(socket, admission.status, admission.code, admission.message);
    }
    if (draining) return refuseUpgrade(socket, 503, 'POSTERN_ERR_OPEN_GOING_AWAY', 'this relay is draining (shutting down): use another relay');
    const certificate: CertificateRef = certificateRef(peerCertificateDer(req.socket as TLSSocket));
    if (sessionCount >= config.limits.maxSessions) {
      log.warn({ event: 'limit.hit', limit: 'maxSessions', value: config.limits.maxSessions }, 'session limit reached');
      metrics.limitHit('maxSessions');
      return refuseUpgrade(socket, 503, 'POSTERN_ERR_OPEN_LIMIT_REACHED', `this relay holds its maximum of ${config.limits.maxSessions} sessions`);
    }
    let ws;
    try {
      ws = await acceptUpgrade(wss, req, socket, head);
    } catch (err) {
      log.warn({ event: 'relay.upgrade-refused', remote, code: isPosternError(err) ? err.code : undefined, err: (err as Error).message }, 'upgrade refused');
      return;
    }
    const session = new Session(wsTransport(ws), { role: 'server', ...sessionOptions, logger: log });
    sessionCount++;
    session.once('close', () => sessionCount--);
    const peer = admission.identity;
    if (draining) {
      // The drain began while this upgrade completed: the peer learns it at once.
      session.goAway(GoAwayReason.DRAIN, 'relay draining: reconnect to another relay');
      void session.close();
      return;
    }
    if (tls.revocation.isRevoked(certificate)) {
      // Its handshake ran against the CRL a reload has just replaced.
      session.terminate(GoAwayReason.REVOKED, `the certificate of ${peer.uri} (serial ${certificate.serial}) is revoked`);
      return;
    }
    if (admission.door === 'connector') return onTunnel(session, peer, certificate, remote, peerVersion(req.headers[VERSION_HEADER]));

    agentSessions.set(session, { session, identity: peer, certificate });
    // What an agent session receives goes up towards the target (each byte also crosses a tunnel: counted once, here).
    metrics.countBytes(session, 'up');
    metrics.countLimits(session);
    log.info({ event: 'agent.connected', principal: peer.uri, remote }, 'agent session up');
    session.on('open', (incoming) => {
      handleAgentOpen(incoming, peer, {
        policy: () => policy,
        registry,
        audit,
        logger: log,
        relayIdentity: identity,
        connectorOpenTimeoutMs: config.limits.connectorOpenTimeoutMs,
        draining: () => draining,
        live,
        tap: config.tap ? { dir: file(config.tap.dir), maxBytes: config.tap.maxBytes } : undefined,
        principalCertificate: certificate,
        streamIdleTimeoutMs: config.limits.streamIdleTimeoutMs,
        metrics,
      }).catch((err: unknown) => log.error({ err, event: 'relay.open-failed' }, 'open handling failed'));
    });
    session.once('close', (err) => {
      agentSessions.delete(session);
      log.info({ event: 'agent.disconnected', principal: peer.uri, reason: err?.message ?? 'closed' }, 'agent session down');
    });
  }

  function onTunnel(session: Session, peer: Identity, certificate: CertificateRef, remote: string, version: string | undefined): void {
    const tunnel: Tunnel = { id: `t${++tunnelSeq}`, session, identity: peer, certificate, remote, since: new Date(), version };
    const connector = `${peer.org}/${peer.name}`;
    if (!policy.orgs.get(peer.org ?? '')?.connectors.has(peer.name)) {
      log.warn({ event: 'tunnel.undeclared', connector: peer.uri }, 'connector is not declared in the policy: no open will reach it until it is');
    }
    registry.add(tunnel);
    audit.emit({ event: 'tunnel.up', connector, tunnelId: tunnel.id, remote, relay: identity.uri });
    // Connectors serve streams; they never open them towards the relay.
    session.on('open', (incoming) => incoming.reject(OpenResult.POLICY_DENIED, 'connectors cannot open streams through the relay'));
    session.once('close', (err) => {
      registry.remove(tunnel);
      audit.emit({ event: 'tunnel.down', connector, tunnelId: tunnel.id, durationMs: Date.now() - tunnel.since.getTime(), reason: err?.message ?? 'closed' });
    });
  }

  let address: { host: string; port: number } | undefined;

  /** Reloads are serialized: a burst of changes never runs two sweeps over half-applied state. */
  let reloading: Promise<unknown> = Promise.resolve();
  function reload(): Promise<ReloadOutcome> {
    const next = reloading.then(reloadNow);
    reloading = next.catch(() => undefined);
    return next;
  }

  async function reloadNow(): Promise<ReloadOutcome> {
    const outcome: ReloadOutcome = { tls: 'applied', policy: 'applied', streamsReset: 0, sessionsTerminated: 0 };
    const refuse = (group: 'tls' | 'policy', err: unknown, fallback: string): void => {
      if (!isPosternError(err)) throw err;
      outcome[group] = 'failed';
      reloads.failed++;
      metrics[group === 'tls' ? 'tlsReload' : 'policyReload']('rejected');
      const failed = failedFile(err, fallback);
      log.error({ event: 'reload.failed', group, code: err.code, file: failed, err: err.message }, `reload refused, the previous ${group === 'tls' ? 'TLS files stay' : 'policy stays'} in force: ${err.message}`);
    };
    try {
      const next = loadRelayTls(config, file, identity);
      server.setSecureContext(tlsOptions(next));
      tls = next;
      reloads.applied++;
      metrics.tlsReload('ok');
      log.info({ event: 'reload.applied', group: 'tls', files: next.files, revoked: next.revocation.size }, 'TLS files reloaded: new handshakes use them');
      const swept = resetRevoked(tls.revocation, { live, tunnels: registry.all(), agentSessions: agentSessions.values() }, log);
      outcome.streamsReset += swept.streamsReset;
      outcome.sessionsTerminated += swept.sessionsTerminated;
    } catch (err) {
      refuse('tls', err, file(config.tls.cert));
    }
    try {
      const next = await loadRelayPolicy(policyPath, config.trustDomain);
      policy = next;
      policyLoadedAt = new Date();
      reloads.applied++;
      metrics.policyReload('ok');
      log.info({ event: 'reload.applied', group: 'policy', file: policyPath, rules: next.rules.length }, 'policy reloaded: new opens use it');
      outcome.streamsReset += resetDisallowed(policy, live);
    } catch (err) {
      refuse('policy', err, policyPath);
    }
    if (outcome.streamsReset > 0 || outcome.sessionsTerminated > 0) {
      log.warn({ event: 'reload.reset', streams: outcome.streamsReset, sessions: outcome.sessionsTerminated }, `reload: ${outcome.streamsReset} stream(s) reset, ${outcome.sessionsTerminated} session(s) terminated`);
    }
    return outcome;
  }

  /** See Relay.stop(). Resolves once the listener and every connection are closed. */
  async function drain(graceMs: number): Promise<void> {
    draining = true;
    unwatch?.();
    const startedAt = Date.now();
    const sessions = [...registry.all().map((t) => t.session), ...agentSessions.keys()];
    log.info(
      { event: 'relay.draining', graceMs, liveStreams: live.size, tunnels: registry.all().length, agentSessions: agentSessions.size },
      `draining: GOAWAY sent, ${live.size} live stream(s) get up to ${graceMs} ms`,
    );
    for (const session of sessions) session.goAway(GoAwayReason.DRAIN, 'relay draining: reconnect to another relay');
    // Each session closes once its last stream has ended (an idle one at once); what its own
    // drain timeout still finds a little after the grace (opens pending) it cancels.
    const closed = Promise.all(sessions.map((s) => s.close({ timeoutMs: graceMs + DRAIN_CLOSE_BOUND_MS })));
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs);
    });
    const first = await Promise.race([closed.then(() => 'closed' as const), graceOver]);
    clearTimeout(timer);
    let reset = 0;
    if (first === 'timeout') {
      for (const s of [...live]) {
        s.end({ code: ResetCode.DRAIN_TIMEOUT, reason: 'drain-timeout', detail: `the relay is stopping and drain.graceMs (${graceMs} ms) is over` });
        reset++;
      }
      // A peer that never answers the WebSocket close handshake is cut by the socket teardown below.
      await Promise.race([closed, new Promise<void>((resolve) => setTimeout(resolve, 2 * DRAIN_CLOSE_BOUND_MS).unref())]);
    }
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
    // Last, so /readyz answers 503 (draining) to probes for the whole drain.
    await admin?.close();
    log.info({ event: 'relay.stopped', durationMs: Date.now() - startedAt, streamsReset: reset }, 'relay stopped');
  }

  function readiness(): Readiness {
    if (draining) return { ready: false, reason: 'draining: the relay is shutting down' };
    if (!address || !server.listening) return { ready: false, reason: 'not listening yet' };
    return { ready: true };
  }

  function status(): RelayStatus {
    const byConnector = new Map<string, RelayStatus['connectors'][number]>();
    for (const t of registry.all()) {
      const key = `${t.identity.org}/${t.identity.name}`;
      let entry = byConnector.get(key);
      if (!entry) byConnector.set(key, (entry = { connector: key, tunnels: [] }));
      entry.tunnels.push({
        id: t.id,
        since: t.since.toISOString(),
        streams: t.session.streamCount,
        ...(t.remote ? { remote: t.remote } : {}),
        ...(t.version ? { version: t.version } : {}),
      });
    }
    return {
      identity: identity.uri,
      listening: address,
      draining,
      connectors: [...byConnector.values()],
      agentSessions: agentSessions.size,
      liveStreams: live.size,
      policy: { source: policy.source, loadedAt: policyLoadedAt.toISOString() },
      reloads: { ...reloads },
    };
  }

  const certificates = () => certificateReport({ cert: tls.material.cert, ca: tls.material.ca });
  metrics.readGauges({
    tunnelsUp: () => registry.all().length,
    agentSessions: () => agentSessions.size,
    certificateExpiry: () => earliestExpiry(certificates()),
  });

  return {
    identity,
    async start() {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.listen.port, config.listen.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      const info = server.address() as AddressInfo;
      address = { host: info.address, port: info.port };
      log.info({ event: 'relay.listening', ...address, identity: identity.uri, policy: policy.source }, `relay listening on ${info.address}:${info.port}`);
      try {
        admin = await startAdmin(config.admin, { metrics, readiness, status: () => ({ ...status(), certificates: certificates() }) }, log);
      } catch (err) {
        // The relay does not run half-configured: it was told to serve probes and metrics.
        await new Promise<void>((resolve) => server.close(() => resolve()));
        address = undefined;
        throw err;
      }
      unwatch = watchFiles([...tls.files, policyPath], config.reload.intervalMs, () => {
        reload().catch((err: unknown) => log.error({ err, event: 'relay.reload-internal' }, 'reload failed unexpectedly'));
      });
      return address;
    },
    stop(graceMs = config.drain.graceMs) {
      stopping ??= drain(graceMs);
      return stopping;
    },
    reload,
    get draining() {
      return draining;
    },
    status,
    readiness,
    metrics,
    get admin() {
      return admin;
    },
  };
}

export type { RelayConfig } from './options.js';
export { relayConfigSchema } from './options.js';
