import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { connect, Socket, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { createConnector, type Connector } from '../../../connector/index.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { createTargetDialer } from '../../../connector/target-dialer.js';
import { createRelay, type Relay } from '../../../relay/index.js';
import { relayConfigSchema, type RelayConfig } from '../../../relay/options.js';
import { SESSION_DEFAULTS, Session, type MuxStream, type SessionOptions } from '../../../src/mux/index.js';
import { acceptUpgrade, connectWebSocket, createWebSocketServer } from '../../../src/mux/ws-transport.js';
import { watchIdle } from '../../../src/net/idle.js';
import { validateOptions } from '../../../src/options.js';
import { clientTlsOptions, loadTlsMaterial, serverTlsOptions } from '../../../src/pki/index.js';
import { compileAllowlist, parseTarget } from '../../../src/policy/index.js';
import { DEFAULT_DECODE_LIMITS, maxMessageSize } from '../../../src/protocol/frames.js';
import { FakeClock, memoryTransportPair } from '../../helpers/mux.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { captureAudit, captureLogger, Recorder, tcpTarget } from '../connector/helpers.js';

/**
 * Liveness without killing databases (issue 4, item 5): a dead path is found by the tunnel's
 * PINGs within a bound (15 s by default, configurable), sockets to targets and the relay's
 * accepted sockets run TCP keepalive, and a stream idle for hours is never cut by default.
 */

/** One turn of the event loop: lets the in-memory link deliver what is queued. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

/** Moves fake time in 1 s steps, letting the link carry the sessions' PINGs in between. */
async function pass(clock: FakeClock, ms: number): Promise<void> {
  for (let t = 0; t < ms; t += 1_000) {
    clock.advance(Math.min(1_000, ms - t));
    await turn();
    await turn();
  }
}

const TD = 'hospital.example';
const minimalRelay = (extra: Record<string, unknown> = {}): RelayConfig =>
  validateOptions(relayConfigSchema, { trustDomain: TD, tls: { cert: 'r.crt', key: 'r.key', ca: 'ca.crt' }, policy: { file: 'policy.yaml' }, ...extra }, 'relay config');
const minimalConnector = (extra: Record<string, unknown> = {}) =>
  validateOptions(connectorConfigSchema, { trustDomain: TD, relays: ['wss://relay.example'], tls: { cert: 'c.crt', key: 'c.key', ca: 'ca.crt' }, allowlist: { targets: ['db.internal:5432'] }, ...extra }, 'connector config');

/** The session options the relay builds from its config (relay/index.ts: `{ role, ...config.limits.session }`). */
const relaySessionOptions = (config: RelayConfig): Omit<SessionOptions, 'role'> => ({ ...config.limits.session });

/**
 * Two sessions on a fake clock with the given options, advanced in 1 s steps. Returns how long
 * after `stall()` (the server's frames stop arriving: a dead path) the client declared it dead.
 */
async function detectionAfterStall(options: Omit<SessionOptions, 'role'>, healthyMs: number): Promise<{ detectedAfterMs: number; code: string | undefined; aliveWhileHealthy: boolean }> {
  const clock = new FakeClock();
  const pair = memoryTransportPair();
  const client = new Session(pair.client, { role: 'client', ...options, clock });
  const server = new Session(pair.server, { role: 'server', ...options, clock });
  let closedWith: (Error & { code?: string }) | undefined;
  let closed = false;
  client.once('close', (err) => {
    closed = true;
    closedWith = err;
  });
  // Healthy but idle: no stream, only the sessions' own PINGs.
  await pass(clock, healthyMs);
  const aliveWhileHealthy = !closed && !client.closed && !server.closed;
  pair.server.stall();
  const stalledAt = clock.now();
  for (let i = 0; i < 600 && !closed; i++) {
    clock.advance(100);
    await turn();
  }
  const detectedAfterMs = clock.now() - stalledAt;
  client.destroy();
  server.destroy();
  await pair.close();
  return { detectedAfterMs, code: closedWith?.code, aliveWhileHealthy };
}

describe('tunnel PINGs detect a dead path', () => {
  it('by default within 15 s: the relay and the connector leave ping and dead-peer times to the mux defaults', async () => {
    const relay = minimalRelay();
    const connector = minimalConnector();
    expect(relay.limits.session.pingIntervalMs).toBeUndefined();
    expect(relay.limits.session.deadPeerTimeoutMs).toBeUndefined();
    expect(connector.limits.session.pingIntervalMs).toBeUndefined();
    expect(connector.limits.session.deadPeerTimeoutMs).toBeUndefined();
    expect(SESSION_DEFAULTS.deadPeerTimeoutMs).toBeLessThanOrEqual(15_000);

    // An hour of a healthy idle tunnel, then the path dies.
    const r = await detectionAfterStall(relaySessionOptions(relay), 3_600_000);
    expect(r.aliveWhileHealthy).toBe(true);
    expect(r.code).toBe('POSTERN_ERR_SESSION_PING_TIMEOUT');
    expect(r.detectedAfterMs).toBeLessThanOrEqual(15_000);
    // Not before the bound less one PING period: a slow but live peer is not declared dead.
    expect(r.detectedAfterMs).toBeGreaterThanOrEqual(SESSION_DEFAULTS.deadPeerTimeoutMs - SESSION_DEFAULTS.pingIntervalMs);
  });

  it('within the configured bound (limits.session.deadPeerTimeoutMs)', async () => {
    const relay = minimalRelay({ limits: { session: { pingIntervalMs: 1_000, deadPeerTimeoutMs: 4_000 } } });
    const r = await detectionAfterStall(relaySessionOptions(relay), 60_000);
    expect(r.aliveWhileHealthy).toBe(true);
    expect(r.code).toBe('POSTERN_ERR_SESSION_PING_TIMEOUT');
    expect(r.detectedAfterMs).toBeLessThanOrEqual(4_000);
  });

  it('a bound at or below the PING period is refused at start, naming the field', () => {
    expect(() => new Session(memoryTransportPair().client, { role: 'client', ...relaySessionOptions(minimalRelay({ limits: { session: { pingIntervalMs: 5_000, deadPeerTimeoutMs: 5_000 } } })) })).toThrow(/pingIntervalMs/);
  });
});

describe('the running relay and connector apply the configured bound to their sessions', () => {
  let pki: TestPki;
  let relay: Relay;
  let relayLines: ReturnType<typeof captureLogger>['lines'];
  let relayPort: number;
  const keepAliveCalls = new Recorder<{ socket: Socket; enable: boolean | undefined; delay: number | undefined }>();

  beforeAll(async () => {
    pki = await makeTestPki();
    const policy = join(pki.dir, 'policy.yaml');
    await writeFile(policy, `version: 1\ntrustDomain: "${pki.trustDomain}"\norgs:\n  st-mary:\n    connectors:\n      hq: { targets: ["db.internal:5432"] }\nrules: []\n`);
    // Which accepted socket got keepalive, and with what: only recorded, the real call still runs.
    const real = Socket.prototype.setKeepAlive;
    vi.spyOn(Socket.prototype, 'setKeepAlive').mockImplementation(function (this: Socket, enable?: boolean, delay?: number) {
      keepAliveCalls.push({ socket: this, enable, delay });
      return real.call(this, enable, delay);
    });
    const captured = captureLogger();
    relayLines = captured.lines;
    relay = await createRelay(
      validateOptions(relayConfigSchema, {
        trustDomain: pki.trustDomain,
        listen: '127.0.0.1:0',
        tls: { ...pki.files('relay', 'relay-1'), ca: pki.ca, crl: pki.crl },
        policy: { file: policy },
        admin: false,
        limits: { session: { pingIntervalMs: 100, deadPeerTimeoutMs: 700 } },
      }, 'relay config'),
      { logger: captured.logger, audit: captureAudit().audit },
    );
    relayPort = (await relay.start()).port;
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    await relay?.stop(0);
    await pki?.cleanup();
  });

  it('relay: a peer that completes the upgrade and then says nothing is dropped with PING_TIMEOUT, after deadPeerTimeoutMs', async () => {
    const agent = loadTlsMaterial({ ...pki.files('user', 'alice'), ca: pki.ca, crl: pki.crl });
    const { ws } = await connectWebSocket(`wss://localhost:${relayPort}/v1/agent`, {
      tls: clientTlsOptions(agent, { trustDomain: pki.trustDomain, presentedAs: 'relay-server' }),
      maxPayload: maxMessageSize(DEFAULT_DECODE_LIMITS),
      handshakeTimeoutMs: 10_000,
    });
    // No mux session on this side (and the socket stays paused): the relay's PINGs go
    // unanswered, as over a dead path.
    const down = await relayLines.waitFor((l) => l.event === 'agent.disconnected');
    expect(String(down['reason'])).toMatch(/no frame from the peer for \d+ ms \(deadPeerTimeoutMs 700\)/);
    ws.terminate();
  });

  it('connector: a relay that accepts the tunnel and then says nothing is dropped with PING_TIMEOUT (and redialed)', async () => {
    const silent = await startSilentRelay(pki);
    const { logger, lines } = captureLogger();
    const connector: Connector = createConnector(
      validateOptions(connectorConfigSchema, {
        trustDomain: pki.trustDomain,
        relays: [silent.url],
        tls: { ...pki.files('connector', 'hq'), ca: pki.ca, crl: pki.crl },
        allowlist: { targets: ['db.internal:5432'] },
        admin: false,
        limits: { session: { pingIntervalMs: 100, deadPeerTimeoutMs: 700 } },
      }, 'connector config'),
      { logger, audit: captureAudit().audit },
    );
    try {
      await connector.start();
      const down = await lines.waitFor((l) => l.event === 'tunnel.down');
      expect(down).toMatchObject({ code: 'POSTERN_ERR_SESSION_PING_TIMEOUT' });
      expect(await lines.waitFor((l) => l.event === 'tunnel.retry')).toMatchObject({ error: 'POSTERN_ERR_SESSION_PING_TIMEOUT' });
    } finally {
      await connector.stop();
      await silent.close();
    }
  });

  it.skipIf(!existsSync('/proc/net/tcp'))('relay: every accepted TCP connection runs keepalive (limits.tcpKeepAliveMs, 30 s by default), seen in the kernel', async () => {
    expect(minimalRelay().limits.tcpKeepAliveMs).toBe(30_000);
    const client = connect({ host: '127.0.0.1', port: relayPort });
    await new Promise((resolve) => client.once('connect', resolve));
    // The relay's 'connection' handler may run after the client's 'connect': await its call.
    const accepted = await keepAliveCalls.waitFor((c) => c.socket.remotePort === client.localPort, 1, 'setKeepAlive on the accepted socket');
    expect(accepted).toMatchObject({ enable: true, delay: 30_000 });
    // The kernel's view of the relay's end (no byte sent yet): the keepalive timer is armed for ~30 s.
    const timer = tcpTimer(relayPort, client.localPort!);
    expect(timer).toMatchObject({ active: 'keepalive' });
    expect(timer!.seconds).toBeGreaterThan(20);
    expect(timer!.seconds).toBeLessThanOrEqual(30);
    client.destroy();
  });

  it.skipIf(!existsSync('/proc/net/tcp'))('connector: its connection to a target runs keepalive (dial.keepAliveMs, 30 s by default), seen in the kernel', async () => {
    expect(minimalConnector().dial.keepAliveMs).toBe(30_000);
    const target = await tcpTarget(() => undefined);
    try {
      const dial = createTargetDialer({ allowlist: compileAllowlist({ targets: [`127.0.0.1:${target.port}`] }), hosts: new Map(), connectTimeoutMs: 5_000, keepAliveMs: 30_000 });
      const { socket } = await dial(parseTarget(`127.0.0.1:${target.port}`));
      const timer = tcpTimer(socket.localPort!, target.port);
      socket.destroy();
      expect(timer).toMatchObject({ active: 'keepalive' });
      expect(timer!.seconds).toBeGreaterThan(20);
      expect(timer!.seconds).toBeLessThanOrEqual(30);
    } finally {
      await target.close();
    }
  });
});

describe('streams have no idle timeout by default: a session idle for hours survives', () => {
  it('relay and connector default limits.streamIdleTimeoutMs to 0 (off)', () => {
    expect(minimalRelay().limits.streamIdleTimeoutMs).toBe(0);
    expect(minimalConnector().limits.streamIdleTimeoutMs).toBe(0);
  });

  it('a mux stream with no byte either way for 3 hours is still open (default session options, fake clock, PINGs flowing)', async () => {
    const clock = new FakeClock();
    const pair = memoryTransportPair();
    const client = new Session(pair.client, { role: 'client', ...relaySessionOptions(minimalRelay()), clock });
    const server = new Session(pair.server, { role: 'server', ...relaySessionOptions(minimalRelay()), clock });
    const accepted = new Promise<MuxStream>((resolve) => server.once('open', (incoming) => resolve(incoming.accept())));
    const opening = client.open({ target: 'db.internal:5432' });
    await turn();
    await turn();
    const [local, remote] = await Promise.all([opening, accepted]);
    let idleFired = false;
    // The relay's and connector's idle watch, as they start it, with the default limit.
    const stop = watchIdle([local, remote], { timeoutMs: minimalRelay().limits.streamIdleTimeoutMs, onIdle: () => { idleFired = true; }, clock });
    await pass(clock, 3 * 3_600_000);
    expect(idleFired).toBe(false);
    expect(local.destroyed || remote.destroyed).toBe(false);
    expect(client.closed || server.closed).toBe(false);
    // And it still carries bytes.
    const got = new Promise<Buffer>((resolve) => remote.once('data', resolve));
    local.write(Buffer.from('SELECT 1'));
    await turn();
    await turn();
    expect((await got).toString()).toBe('SELECT 1');
    stop();
    client.destroy();
    server.destroy();
    await pair.close();
  });

  it('when set, the idle timeout counts traffic in either direction and fires once after quiet both ways', async () => {
    const clock = new FakeClock();
    const pair = memoryTransportPair();
    const client = new Session(pair.client, { role: 'client', clock });
    const server = new Session(pair.server, { role: 'server', clock });
    const accepted = new Promise<MuxStream>((resolve) => server.once('open', (incoming) => resolve(incoming.accept())));
    const opening = client.open({ target: 'db.internal:5432' });
    await turn();
    await turn();
    const [local, remote] = await Promise.all([opening, accepted]);
    remote.resume();
    local.resume();
    const fired: number[] = [];
    // As at the relay: the two readables of the spliced legs, one per direction.
    watchIdle([local, remote], { timeoutMs: 60_000, onIdle: (idleMs) => fired.push(idleMs), clock });
    // Only the "down" direction (server → client) is busy, every 50 s: never idle.
    for (let i = 0; i < 10; i++) {
      await pass(clock, 50_000);
      remote.write(Buffer.from('row'));
      await turn();
      await turn();
    }
    expect(fired).toEqual([]);
    // Then only "up" for a while: still not idle.
    for (let i = 0; i < 3; i++) {
      await pass(clock, 50_000);
      local.write(Buffer.from('q'));
      await turn();
      await turn();
    }
    expect(fired).toEqual([]);
    // Quiet both ways: fires once, at the limit.
    await pass(clock, 60_000);
    expect(fired).toHaveLength(1);
    await pass(clock, 600_000);
    expect(fired).toHaveLength(1);
    expect(fired[0]).toBeGreaterThanOrEqual(60_000);
    client.destroy();
    server.destroy();
    await pair.close();
  });
});

/**
 * The kernel's timer on the TCP connection local:localPort → 127.0.0.1:remotePort, from
 * /proc/net/tcp: "keepalive" is the socket timer (tr=2) that SO_KEEPALIVE arms on an idle
 * connection; with no keepalive and nothing in flight no timer runs (tr=0).
 */
function tcpTimer(localPort: number, remotePort: number): { active: 'none' | 'retransmit' | 'keepalive' | 'other'; seconds: number } | undefined {
  const hex = (port: number) => port.toString(16).toUpperCase().padStart(4, '0');
  const local = `0100007F:${hex(localPort)}`;
  const remote = `0100007F:${hex(remotePort)}`;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] !== local || f[2] !== remote) continue;
    const [tr, when] = f[5]!.split(':');
    const active = tr === '00' ? 'none' : tr === '01' ? 'retransmit' : tr === '02' ? 'keepalive' : 'other';
    // In clock ticks (USER_HZ, 100 on Linux).
    return { active, seconds: parseInt(when!, 16) / 100 };
  }
  return undefined;
}

/** A TLS + WebSocket server that accepts a connector's tunnel upgrade and then never speaks. */
async function startSilentRelay(pki: TestPki): Promise<{ url: string; close(): Promise<void> }> {
  const relay = loadTlsMaterial({ ...pki.files('relay', 'relay-1'), ca: pki.ca });
  const server: HttpsServer = createHttpsServer(serverTlsOptions(relay));
  const wss = createWebSocketServer({ maxPayload: maxMessageSize(DEFAULT_DECODE_LIMITS) });
  const sockets = new Set<Duplex>();
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    acceptUpgrade(wss, req, socket, head).catch(() => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `wss://localhost:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
