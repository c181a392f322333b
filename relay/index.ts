import { createServer, type Server } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { createAuditLog, pinoAuditSink, type AuditLog } from '../src/audit/audit-log.js';
import { resolveFrom } from '../src/config/load-file.js';
import { ConfigError, isPosternError } from '../src/errors.js';
import { identityFromCertificate, type Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import { Session, SESSION_DEFAULTS } from '../src/mux/index.js';
import { acceptUpgrade, createWebSocketServer, refuseUpgrade, wsTransport } from '../src/mux/ws-transport.js';
import { loadTlsMaterial, mapTlsError, serverTlsOptions } from '../src/pki/index.js';
import { loadPolicyFile, type CompiledPolicy } from '../src/policy/index.js';
import { GoAwayReason, OpenResult } from '../src/protocol/reasons.js';
import { maxMessageSize } from '../src/protocol/frames.js';
import { admit } from './door.js';
import { handleAgentOpen, type LiveStream } from './opens.js';
import type { RelayConfig } from './options.js';
import { ConnectorRegistry, type Tunnel } from './registry.js';

export interface RelayDeps {
  logger: Logger;
  audit?: AuditLog;
  /** Directory that relative file paths of the config resolve against. */
  baseDir?: string;
}

export interface RelayStatus {
  identity: string;
  listening: { host: string; port: number } | undefined;
  draining: boolean;
  connectors: Array<{ connector: string; tunnels: Array<{ id: string; since: string; streams: number; remote?: string }> }>;
  agentSessions: number;
  liveStreams: number;
}

export interface Relay {
  start(): Promise<{ host: string; port: number }>;
  /** GOAWAY to every session, stop accepting, let live streams finish within `graceMs`, then close. */
  stop(graceMs?: number): Promise<void>;
  status(): RelayStatus;
  readonly identity: Identity;
}

export async function createRelay(config: RelayConfig, deps: RelayDeps): Promise<Relay> {
  const log = deps.logger;
  const audit = deps.audit ?? createAuditLog('relay', [pinoAuditSink(log)]);
  const file = (p: string) => resolveFrom(deps.baseDir, p);
  const material = loadTlsMaterial({
    cert: file(config.tls.cert),
    key: file(config.tls.key),
    ca: file(config.tls.ca),
    ...(config.tls.crl ? { crl: Array.isArray(config.tls.crl) ? config.tls.crl.map(file) : file(config.tls.crl) } : {}),
  });
  const identity = identityFromCertificate(material.cert, { trustDomain: config.trustDomain, presentedAs: 'relay-server' });
  const policyPath = file(config.policy.file);
  let policy: CompiledPolicy = await loadPolicyFile(policyPath);
  if (policy.trustDomain !== config.trustDomain) {
    throw new ConfigError(
      'POSTERN_ERR_CONFIG_INVALID',
      `${policyPath}: field "trustDomain" is "${policy.trustDomain}" but the relay's is "${config.trustDomain}"`,
    );
  }

  const sessionOptions = { ...config.limits.session };
  const maxPayload = maxMessageSize({
    maxFrameSize: sessionOptions.maxFrameSize ?? SESSION_DEFAULTS.maxFrameSize,
    maxMetadataBytes: SESSION_DEFAULTS.maxMetadataBytes,
    maxMetadataEntries: SESSION_DEFAULTS.maxMetadataEntries,
  });
  const wss = createWebSocketServer({ maxPayload });
  const registry = new ConnectorRegistry();
  const agentSessions = new Set<Session>();
  const live = new Set<LiveStream>();
  const sockets = new Set<Socket>();
  let draining = false;
  let sessionCount = 0;
  let tunnelSeq = 0;

  const server: Server = createServer({ ...serverTlsOptions(material, { handshakeTimeoutMs: config.limits.handshakeTimeoutMs }) }, (_req, res) => {
    res.writeHead(426, { 'content-type': 'application/json', connection: 'close' });
    res.end(JSON.stringify({ code: 'POSTERN_ERR_USAGE', message: 'this port speaks WebSocket (postern.v1) only' }));
  });
  server.headersTimeout = config.limits.handshakeTimeoutMs;
  server.requestTimeout = config.limits.handshakeTimeoutMs;
  server.on('connection', (socket: Socket) => {
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
    const mapped = mapTlsError(socket?.authorizationError ?? err);
    const remote = socket?.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : undefined;
    audit.emit({ event: 'handshake.refused', place: 'outer', code: mapped.code, reason: mapped.message, ...(remote ? { remote } : {}) });
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
      return refuseUpgrade(socket, admission.status, admission.code, admission.message);
    }
    if (draining) return refuseUpgrade(socket, 503, 'POSTERN_ERR_OPEN_GOING_AWAY', 'this relay is draining: use another relay');
    if (sessionCount >= config.limits.maxSessions) {
      log.warn({ event: 'limit.hit', limit: 'maxSessions', value: config.limits.maxSessions }, 'session limit reached');
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
    if (admission.door === 'connector') return onTunnel(session, peer, remote);

    agentSessions.add(session);
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
      }).catch((err: unknown) => log.error({ err, event: 'relay.open-failed' }, 'open handling failed'));
    });
    session.once('close', (err) => {
      agentSessions.delete(session);
      log.info({ event: 'agent.disconnected', principal: peer.uri, reason: err?.message ?? 'closed' }, 'agent session down');
    });
  }

  function onTunnel(session: Session, peer: Identity, remote: string): void {
    const tunnel: Tunnel = { id: `t${++tunnelSeq}`, session, identity: peer, remote, since: new Date() };
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
      return address;
    },
    async stop(graceMs = 10_000) {
      draining = true;
      server.close();
      const sessions = [...registry.all().map((t) => t.session), ...agentSessions];
      for (const session of sessions) session.goAway(GoAwayReason.DRAIN, 'relay stopping');
      await Promise.all(sessions.map((s) => s.close({ timeoutMs: graceMs }).catch(() => undefined)));
      for (const socket of sockets) socket.destroy();
      log.info({ event: 'relay.stopped' }, 'relay stopped');
    },
    status() {
      const byConnector = new Map<string, RelayStatus['connectors'][number]>();
      for (const t of registry.all()) {
        const key = `${t.identity.org}/${t.identity.name}`;
        let entry = byConnector.get(key);
        if (!entry) byConnector.set(key, (entry = { connector: key, tunnels: [] }));
        entry.tunnels.push({ id: t.id, since: t.since.toISOString(), streams: t.session.streamCount, ...(t.remote ? { remote: t.remote } : {}) });
      }
      return {
        identity: identity.uri,
        listening: address,
        draining,
        connectors: [...byConnector.values()],
        agentSessions: agentSessions.size,
        liveStreams: live.size,
      };
    },
  };
}

export type { RelayConfig } from './options.js';
export { relayConfigSchema } from './options.js';
