import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';
import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AuditEvent } from '../../../src/audit/events.js';
import { validateOptions } from '../../../src/options.js';
import type { Session } from '../../../src/mux/index.js';
import type { TlsMaterial } from '../../../src/pki/index.js';
import { OpenResult, ResetCode } from '../../../src/protocol/reasons.js';
import { createConnector, type Connector } from '../../../connector/index.js';
import { connectorConfigSchema, type ConnectorConfigInput } from '../../../connector/options.js';
import type { LookupFn } from '../../../connector/target-dialer.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { SeededBytes } from '../../helpers/mux.js';
import {
  agentMaterial, captureAudit, captureLogger, closeRefused, openAsAgent, readAll, startFakeRelay, tcpTarget,
  type FakeRelay, type LogLine, type Recorder,
} from './helpers.js';

type Target = Awaited<ReturnType<typeof tcpTarget>>;

describe('connector: tunnel, inner TLS, allowlist, dialing (fake relay over real wss, real targets)', () => {
  let pki: TestPki;
  let otherCa: TestPki;
  let relay: FakeRelay;
  let echo: Target;
  let answerAfterEof: Target;
  let closedPort: number;
  const agents: Record<'alice' | 'reports' | 'mallory' | 'eve' | 'oscar', TlsMaterial> = {} as never;
  const principal = (role: 'user' | 'service', name: string, org = 'st-mary'): string => `spiffe://${pki.trustDomain}/org/${org}/${role}/${name}`;
  const started: Connector[] = [];

  /** Starts a connector on the fake relay; resolves once its tunnel is up, with the relay's session of it. */
  async function startConnector(overrides: Partial<ConnectorConfigInput> = {}, lookup?: LookupFn) {
    const { logger, lines } = captureLogger();
    const { audit, events } = captureAudit();
    const conn = pki.files('connector', 'hq');
    const config = validateOptions(connectorConfigSchema, {
      trustDomain: pki.trustDomain,
      relays: [relay.url],
      tls: { cert: conn.cert, key: conn.key, ca: pki.ca, crl: pki.crl },
      allowlist: { targets: [`127.0.0.1:${echo.port}`, `127.0.0.1:${answerAfterEof.port}`, `127.0.0.1:${closedPort}`] },
      // Not the default 127.0.0.1:9091: test files run side by side.
      admin: false,
      ...overrides,
    }, 'test');
    const nth = relay.sessions.items.length + 1;
    const connector = createConnector(config, { logger, audit, ...(lookup ? { lookup } : {}) });
    started.push(connector);
    await connector.start();
    const session = await relay.sessions.waitFor(() => true, nth, 'relay session');
    await lines.waitFor((l) => l.event === 'tunnel.up');
    return { connector, session, lines, events };
  }

  let main: { connector: Connector; session: Session; lines: Recorder<LogLine>; events: Recorder<AuditEvent> };

  beforeAll(async () => {
    [pki, otherCa] = await Promise.all([makeTestPki(), makeTestPki()]);
    const mallory = await pki.issue('user', 'mallory', { org: 'st-mary' });
    await pki.revoke(mallory.cert);
    const oscar = await pki.issue('user', 'oscar', { org: 'other-org' });
    const eve = await otherCa.issue('user', 'eve', { org: 'st-mary' });
    agents.alice = agentMaterial(pki, pki.files('user', 'alice'));
    agents.reports = agentMaterial(pki, pki.files('service', 'reports'));
    agents.mallory = agentMaterial(pki, mallory);
    agents.oscar = agentMaterial(pki, oscar);
    // eve's certificate is of another CA; she trusts the connector's CA.
    agents.eve = agentMaterial(pki, eve);

    echo = await tcpTarget((s) => s.pipe(s));
    answerAfterEof = await tcpTarget((s) => {
      const hash = createHash('sha256');
      s.on('data', (c: Buffer) => hash.update(c));
      s.once('end', () => s.end(hash.digest()));
    });
    // A port nothing listens on: taken from the kernel, then released.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    closedPort = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));

    relay = await startFakeRelay(pki);
    main = await startConnector();
  });

  afterAll(async () => {
    await Promise.all(started.map((c) => c.stop()));
    await relay?.close();
    await Promise.all([echo?.close(), answerAfterEof?.close()]);
    await Promise.all([pki?.cleanup(), otherCa?.cleanup()]);
  });

  const open = (session: Session, agent: TlsMaterial, o: { target: string; principal: string; correlationId?: string; innerTarget?: string }) =>
    openAsAgent(session, agent, { trustDomain: pki.trustDomain, ...o });

  it('dials <relay>/v1/tunnel with its connector certificate and reports the tunnel in status()', () => {
    expect(relay.upgrades[0]).toEqual({ path: '/v1/tunnel', peer: `spiffe://${pki.trustDomain}/org/st-mary/connector/hq`, refused: false });
    expect(main.connector.identity.uri).toBe(`spiffe://${pki.trustDomain}/org/st-mary/connector/hq`);
    expect(main.connector.status()).toMatchObject({
      identity: main.connector.identity.uri,
      tunnels: [{ relay: relay.url, up: true, since: expect.any(String), streams: 0 }],
    });
    expect(main.events.items[0]).toMatchObject({ event: 'tunnel.up', connector: 'st-mary/hq', relay: relay.url });
  });

  it('carries bytes exactly both ways and audits open and close with the relay correlation id', async () => {
    const size = 3 * 1024 * 1024 + 17;
    const { tls, response } = await open(main.session, agents.alice, { target: `127.0.0.1:${echo.port}`, principal: principal('user', 'alice'), correlationId: 'cid-bytes' });
    expect(response).toEqual({ status: OpenResult.OK, message: 'connected' });
    const data = new SeededBytes('bytes').next(size);
    const back = readAll(tls);
    tls.end(data);
    const received = await back;
    expect(received.length).toBe(size);
    expect(createHash('sha256').update(received).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));

    const close = await main.events.waitFor((e) => e.event === 'stream.close' && e.correlationId === 'cid-bytes');
    expect(close).toMatchObject({ principal: principal('user', 'alice'), connector: 'st-mary/hq', target: `127.0.0.1:${echo.port}`, bytesUp: size, bytesDown: size, reason: 'closed' });
    expect(main.events.items.find((e) => e.event === 'stream.open' && e.correlationId === 'cid-bytes')).toMatchObject({ decision: 'allow', reason: 'allowlist' });
  });

  it('keeps half-close: a target that answers only after the agent EOF delivers its whole answer', async () => {
    const accepted = answerAfterEof.accepted();
    const { tls, response } = await open(main.session, agents.alice, { target: `127.0.0.1:${answerAfterEof.port}`, principal: principal('user', 'alice'), correlationId: 'cid-half' });
    expect(response.status).toBe(OpenResult.OK);
    const data = new SeededBytes('half').next(512 * 1024);
    const answer = readAll(tls);
    tls.end(data);
    expect((await answer).equals(createHash('sha256').update(data).digest())).toBe(true);
    expect(answerAfterEof.accepted()).toBe(accepted + 1);
    expect(await main.events.waitFor((e) => e.event === 'stream.close' && e.correlationId === 'cid-half')).toMatchObject({ bytesUp: data.length, bytesDown: 32, reason: 'closed' });
  });

  describe.each([
    ['revoked', 'mallory', 'POSTERN_ERR_TLS_CERT_REVOKED'],
    ['issued by another CA', 'eve', 'POSTERN_ERR_TLS_CERT_UNTRUSTED'],
    ['of another org', 'oscar', 'POSTERN_ERR_ID_ORG_MISMATCH'],
  ] as const)('an agent certificate %s', (_what, who, code) => {
    it(`fails the inner handshake with ${code}: the stream is reset INNER_TLS_FAILED, the target is never dialed`, async () => {
      const before = echo.accepted();
      const cid = `cid-${who}`;
      const claimed = who === 'oscar' ? principal('user', 'oscar', 'other-org') : principal('user', who);
      const attempt = open(main.session, agents[who], { target: `127.0.0.1:${echo.port}`, principal: claimed, correlationId: cid });
      await expect(attempt).rejects.toMatchObject({ code: 'POSTERN_ERR_STREAM_INNER_TLS_FAILED' });
      const refused = await main.events.waitFor((e) => e.event === 'handshake.refused' && e.code === code);
      expect(refused).toMatchObject({ place: 'inner' });
      expect(await main.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === cid)).toMatchObject({ decision: 'deny', reason: 'inner-tls-failed' });
      expect(echo.accepted()).toBe(before);
    });
  });

  it('the reset carries the reason, so the agent reads why it was refused', async () => {
    const attempt = open(main.session, agents.mallory, { target: `127.0.0.1:${echo.port}`, principal: principal('user', 'mallory') });
    await expect(attempt).rejects.toThrow(/revoked/);
  });

  it('refuses at open a target its allowlist does not name; no handshake, nothing dialed', async () => {
    const before = echo.accepted();
    await expect(main.session.open({ target: `127.0.0.2:${echo.port}`, principal: principal('user', 'alice'), 'correlation-id': 'cid-deny' })).rejects.toMatchObject({
      code: 'POSTERN_ERR_OPEN_ALLOWLIST_DENIED',
      result: OpenResult.ALLOWLIST_DENIED,
    });
    expect(await main.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === 'cid-deny')).toMatchObject({ decision: 'deny', reason: 'allowlist-denied', target: `127.0.0.2:${echo.port}` });
    expect(echo.accepted()).toBe(before);
  });

  it('refuses malformed relay metadata: an invalid target, a missing principal', async () => {
    await expect(main.session.open({ target: 'no-port', principal: principal('user', 'alice'), 'correlation-id': 'cid-inv' })).rejects.toMatchObject({ result: OpenResult.TARGET_INVALID });
    await expect(main.session.open({ target: `127.0.0.1:${echo.port}`, 'correlation-id': 'cid-nometa' })).rejects.toMatchObject({ result: OpenResult.METADATA_INVALID });
    expect(await main.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === 'cid-nometa')).toMatchObject({ reason: 'metadata-invalid' });
  });

  it('trusts the inner identity, not the relay: a relay naming another principal is refused and audited as identity.mismatch', async () => {
    const before = echo.accepted();
    const { response, tls } = await open(main.session, agents.alice, { target: `127.0.0.1:${echo.port}`, principal: principal('service', 'reports'), correlationId: 'cid-who' });
    expect(response.status).toBe(OpenResult.METADATA_INVALID);
    expect(response.message).toContain(principal('user', 'alice'));
    await closeRefused(tls);
    expect(await main.events.waitFor((e) => e.event === 'identity.mismatch' && e.correlationId === 'cid-who')).toEqual({
      event: 'identity.mismatch', correlationId: 'cid-who', field: 'principal', relaySaid: principal('service', 'reports'), innerSaid: principal('user', 'alice'),
    });
    expect(await main.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === 'cid-who')).toMatchObject({ decision: 'deny', reason: 'identity-mismatch' });
    expect(echo.accepted()).toBe(before);
  });

  it('refuses when the target the agent names inside TLS differs from the relay one (both allowlisted, neither dialed)', async () => {
    const before = [echo.accepted(), answerAfterEof.accepted()];
    const { response, tls } = await open(main.session, agents.alice, {
      target: `127.0.0.1:${echo.port}`, innerTarget: `127.0.0.1:${answerAfterEof.port}`, principal: principal('user', 'alice'), correlationId: 'cid-where',
    });
    expect(response.status).toBe(OpenResult.METADATA_INVALID);
    await closeRefused(tls);
    expect(await main.events.waitFor((e) => e.event === 'identity.mismatch' && e.correlationId === 'cid-where')).toMatchObject({
      field: 'target', relaySaid: `127.0.0.1:${echo.port}`, innerSaid: `127.0.0.1:${answerAfterEof.port}`,
    });
    expect([echo.accepted(), answerAfterEof.accepted()]).toEqual(before);
  });

  it('accepts the inner target in any spelling of the same address', async () => {
    const { response, tls } = await open(main.session, agents.alice, {
      target: `127.0.0.1:${echo.port}`, innerTarget: `[::ffff:127.0.0.1]:${echo.port}`, principal: principal('user', 'alice'),
    });
    expect(response.status).toBe(OpenResult.OK);
    tls.end();
    await readAll(tls);
  });

  it('answers TARGET_REFUSED when nothing listens on the target port', async () => {
    const { response, tls } = await open(main.session, agents.alice, { target: `127.0.0.1:${closedPort}`, principal: principal('user', 'alice'), correlationId: 'cid-closed' });
    expect(response.status).toBe(OpenResult.TARGET_REFUSED);
    expect(response.message).toMatch(/refused/);
    await closeRefused(tls);
    expect(await main.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === 'cid-closed')).toMatchObject({ decision: 'deny', reason: 'target-refused' });
  });

  it('resets the agent stream with PEER_GONE when the target dies mid-stream', async () => {
    const dying = await tcpTarget((s) => s.once('data', () => s.resetAndDestroy()));
    const c = await startConnector({ allowlist: { targets: [`127.0.0.1:${dying.port}`] } });
    try {
      const { tls, response } = await open(c.session, agents.alice, { target: `127.0.0.1:${dying.port}`, principal: principal('user', 'alice'), correlationId: 'cid-gone' });
      expect(response.status).toBe(OpenResult.OK);
      tls.write('hello');
      await expect(readAll(tls)).rejects.toMatchObject({ code: 'POSTERN_ERR_STREAM_PEER_GONE' });
      expect(await c.events.waitFor((e) => e.event === 'stream.close' && e.correlationId === 'cid-gone')).toMatchObject({ reason: 'target: ECONNRESET' });
    } finally {
      await c.connector.stop();
      await dying.close();
    }
  });

  it('closes the target connection when the agent side resets mid-stream, and audits why', async () => {
    let targetEnded!: Promise<void>;
    const held = await tcpTarget((socket) => {
      targetEnded = new Promise((resolve) => socket.once('end', () => resolve()));
      socket.resume();
    });
    const c = await startConnector({ allowlist: { targets: [`127.0.0.1:${held.port}`] } });
    try {
      const { stream, response } = await open(c.session, agents.alice, { target: `127.0.0.1:${held.port}`, principal: principal('user', 'alice'), correlationId: 'cid-abort' });
      expect(response.status).toBe(OpenResult.OK);
      stream.on('error', () => undefined);
      stream.reset(ResetCode.PEER_GONE, 'the agent went away');
      await targetEnded;
      expect(await c.events.waitFor((e) => e.event === 'stream.close' && e.correlationId === 'cid-abort')).toMatchObject({ reason: 'agent: POSTERN_ERR_STREAM_PEER_GONE' });
    } finally {
      await c.connector.stop();
      await held.close();
    }
  });

  it('never dials a name that resolves to the cloud metadata address, even when its allowlist names the name', async () => {
    const asked: string[] = [];
    const c = await startConnector({ allowlist: { targets: ['metadata.internal:80'] } }, async (host) => {
      asked.push(host);
      return [{ address: '169.254.169.254', family: 4 }];
    });
    try {
      const { response, tls } = await open(c.session, agents.alice, { target: 'METADATA.internal.:80', principal: principal('user', 'alice'), correlationId: 'cid-imds' });
      expect(response.status).toBe(OpenResult.ALLOWLIST_DENIED);
      expect(response.message).toMatch(/169\.254\.169\.254, a cloud-metadata address/);
      await closeRefused(tls);
      expect(asked).toEqual(['metadata.internal']);
      expect(await c.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === 'cid-imds')).toMatchObject({ reason: 'forbidden-address', target: 'metadata.internal:80' });
    } finally {
      await c.connector.stop();
    }
  });

  describe('a connector whose allowlist names principals and names', () => {
    let second: Awaited<ReturnType<typeof startConnector>>;
    beforeAll(async () => {
      second = await startConnector({
        allowlist: {
          targets: [`localhost:${echo.port}`, `db.internal:${echo.port}`, `db.internal:${answerAfterEof.port}`, `127.0.0.1:${answerAfterEof.port}`],
          principals: ['user/alice'],
        },
        hosts: { 'DB.Internal.': '127.0.0.1' },
      });
    });

    it('refuses a principal the allowlist does not name, after the inner handshake; nothing dialed', async () => {
      const before = answerAfterEof.accepted();
      const { response, tls } = await open(second.session, agents.reports, { target: `127.0.0.1:${answerAfterEof.port}`, principal: principal('service', 'reports'), correlationId: 'cid-p' });
      expect(response.status).toBe(OpenResult.ALLOWLIST_DENIED);
      await closeRefused(tls);
      expect(response.message).toMatch(/service\/reports is not in the connector allowlist/);
      expect(await second.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === 'cid-p')).toMatchObject({ decision: 'deny', reason: 'allowlist-denied', principal: principal('service', 'reports') });
      expect(answerAfterEof.accepted()).toBe(before);
    });

    it.each([['localhost (system resolver)', 'localhost'], ['a hosts entry', 'db.internal']])(
      'refuses a name resolving to loopback through %s unless the allowlist names the address literally',
      async (_how, host) => {
        const before = echo.accepted();
        const cid = `cid-loop-${host}`;
        const { response, tls } = await open(second.session, agents.alice, { target: `${host}:${echo.port}`, principal: principal('user', 'alice'), correlationId: cid });
        expect(response.status).toBe(OpenResult.ALLOWLIST_DENIED);
        await closeRefused(tls);
        expect(response.message).toMatch(/loopback/);
        expect(await second.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === cid)).toMatchObject({ decision: 'deny', reason: 'forbidden-address' });
        expect(echo.accepted()).toBe(before);
      },
    );

    it('dials a name resolving to loopback when the allowlist names that address literally', async () => {
      const before = answerAfterEof.accepted();
      const { response, tls } = await open(second.session, agents.alice, { target: `db.internal:${answerAfterEof.port}`, principal: principal('user', 'alice') });
      expect(response.status).toBe(OpenResult.OK);
      const answer = readAll(tls);
      tls.end('x');
      expect((await answer).length).toBe(32);
      expect(answerAfterEof.accepted()).toBe(before + 1);
    });
  });

  it('bounds the streams setting up at once (limits.maxConcurrentHandshakes)', async () => {
    const c = await startConnector({ limits: { maxConcurrentHandshakes: 1 } });
    try {
      const meta = { target: `127.0.0.1:${echo.port}`, principal: principal('user', 'alice') };
      // The first stream is accepted and then sits in its inner handshake (the agent says nothing).
      const silent = await c.session.open({ ...meta, 'correlation-id': 'cid-silent' });
      await expect(c.session.open({ ...meta, 'correlation-id': 'cid-busy' })).rejects.toMatchObject({ result: OpenResult.LIMIT_REACHED });
      expect(await c.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === 'cid-busy')).toMatchObject({ reason: 'limit-reached' });
      // The agent gives up; its slot is free again.
      const freed = c.events.waitFor((e) => e.event === 'stream.open' && e.correlationId === 'cid-silent');
      silent.destroy();
      expect(await freed).toMatchObject({ decision: 'deny', reason: 'cancelled', detail: expect.stringMatching(/^POSTERN_ERR_STREAM_CANCELLED/) });
      // The agent went away; nobody's certificate was refused.
      expect(c.events.count((e) => e.event === 'handshake.refused')).toBe(0);
      const { response, tls } = await open(c.session, agents.alice, { ...meta });
      expect(response.status).toBe(OpenResult.OK);
      tls.end();
      await readAll(tls);
    } finally {
      await c.connector.stop();
    }
  });

  it('reloads changed TLS files without dropping its tunnel: a bad file is refused (old material kept), a re-signed CRL applies to the next stream', async () => {
    const bob = await pki.issue('user', 'bob', { org: 'st-mary' });
    const bobAgent = agentMaterial(pki, bob);
    const crl = join(pki.dir, 'reload-crl.pem');
    await copyFile(pki.crl, crl);
    const conn = pki.files('connector', 'hq');
    const c = await startConnector({ tls: { cert: conn.cert, key: conn.key, ca: pki.ca, crl }, reload: { intervalMs: 20 } });
    const asBob = { target: `127.0.0.1:${echo.port}`, principal: principal('user', 'bob') };
    try {
      const first = await open(c.session, bobAgent, asBob);
      expect(first.response.status).toBe(OpenResult.OK);
      first.tls.end();
      await readAll(first.tls);

      const failed = c.lines.waitFor((l) => l.event === 'reload.failed');
      await writeFile(crl, 'not a CRL\n');
      expect(await failed).toMatchObject({ code: 'POSTERN_ERR_PKI_INVALID_CERT' });
      const still = await open(c.session, bobAgent, asBob);
      expect(still.response.status).toBe(OpenResult.OK);
      still.tls.end();
      await readAll(still.tls);

      const reloaded = c.lines.waitFor((l) => l.event === 'reload.applied' && l.group === 'tls');
      await pki.revoke(bob.cert);
      await copyFile(pki.crl, crl);
      await reloaded;
      await expect(open(c.session, bobAgent, { ...asBob, correlationId: 'cid-bob' })).rejects.toMatchObject({ code: 'POSTERN_ERR_STREAM_INNER_TLS_FAILED' });
      expect(await c.events.waitFor((e) => e.event === 'handshake.refused' && e.code === 'POSTERN_ERR_TLS_CERT_REVOKED')).toMatchObject({ place: 'inner' });
      expect(c.lines.count((l) => l.event === 'tunnel.down')).toBe(0);
      expect(c.connector.status().tunnels[0]).toMatchObject({ up: true });
    } finally {
      await c.connector.stop();
    }
  });

  describe('refuses a bad configuration at creation, not at the first tunnel or stream', () => {
    const create = (overrides: Partial<ConnectorConfigInput>) => {
      const conn = pki.files('connector', 'hq');
      return () =>
        createConnector(
          validateOptions(connectorConfigSchema, {
            trustDomain: pki.trustDomain,
            relays: [relay.url],
            tls: { cert: conn.cert, key: conn.key, ca: pki.ca, crl: pki.crl },
            allowlist: { targets: ['127.0.0.1:5432'] },
            ...overrides,
          }, 'test'),
          { logger: captureLogger().logger },
        );
    };

    it('session limits the mux refuses (keepalive slower than dead-peer detection)', () => {
      expect(create({ limits: { session: { pingIntervalMs: 20_000, deadPeerTimeoutMs: 15_000 } } })).toThrow(/limits\.session: .*pingIntervalMs/);
    });

    it('a hosts key that is an address', () => {
      expect(create({ hosts: { '10.0.0.1': '10.0.0.2' } })).toThrow(/hosts\."10\.0\.0\.1": is an IP address/);
    });

    it('an inner certificate of another connector', async () => {
      const branch = await pki.issue('connector', 'branch', { org: 'st-mary' });
      expect(create({ inner: { cert: branch.cert, key: branch.key } })).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_ID_NAME_MISMATCH' }));
    });

    it('an allowlist entry that does not parse', () => {
      expect(create({ allowlist: { targets: ['127.0.0.1:5432', 'bad target'] } })).toThrow(/allowlist\.targets\[1\]/);
    });
  });

  it('stop() gives a live stream limits.shutdownGraceMs, then resets it DRAIN_TIMEOUT and closes the target connection', async () => {
    let targetClosed!: Promise<void>;
    const held = await tcpTarget((socket) => {
      // The connector's side closes: the target sees EOF (it keeps half-open sockets, so no 'close' by itself).
      targetClosed = new Promise((resolve) => socket.once('end', () => resolve()));
      socket.resume();
    });
    const c = await startConnector({ allowlist: { targets: [`127.0.0.1:${held.port}`] }, limits: { shutdownGraceMs: 50 } });
    try {
      const { tls, response } = await open(c.session, agents.alice, { target: `127.0.0.1:${held.port}`, principal: principal('user', 'alice'), correlationId: 'cid-drain' });
      expect(response.status).toBe(OpenResult.OK);
      const cut = readAll(tls).then(() => 'ended', (err: unknown) => err);
      await c.connector.stop();
      expect(await cut).toMatchObject({ code: 'POSTERN_ERR_STREAM_DRAIN_TIMEOUT' });
      await targetClosed;
      expect(await c.events.waitFor((e) => e.event === 'stream.close' && e.correlationId === 'cid-drain')).toMatchObject({ reason: 'agent: POSTERN_ERR_STREAM_DRAIN_TIMEOUT' });
      expect(c.connector.status().tunnels[0]).toMatchObject({ up: false, streams: 0 });
    } finally {
      await held.close();
    }
  });

  it('stop() closes its tunnels: the relay sees the session end, status() shows it down', async () => {
    const c = await startConnector();
    await c.connector.stop();
    await new Promise<void>((resolve) => (c.session.closed ? resolve() : c.session.once('close', () => resolve())));
    expect(c.connector.status().tunnels).toEqual([{ relay: relay.url, up: false, streams: 0 }]);
    expect(c.events.items.map((e) => e.event)).toEqual(['tunnel.up', 'tunnel.down']);
  });
});
