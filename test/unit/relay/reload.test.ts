import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { copyFile, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { Agent } from '../../../agent-lib/index.js';
import { createConnector, type Connector } from '../../../connector/index.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { createRelay, type Relay } from '../../../relay/index.js';
import { relayConfigSchema } from '../../../relay/options.js';
import type { AuditEvent } from '../../../src/audit/events.js';
import { Session, type IncomingOpen } from '../../../src/mux/index.js';
import { connectWebSocket, wsTransport } from '../../../src/mux/ws-transport.js';
import { loadLayeredConfig } from '../../../src/config/layers.js';
import { validateOptions } from '../../../src/options.js';
import { clientTlsOptions, loadTlsMaterial } from '../../../src/pki/index.js';
import { DEFAULT_DECODE_LIMITS, maxMessageSize } from '../../../src/protocol/frames.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { captureAudit, captureLogger, tcpTarget, type LogLine, type Recorder } from '../connector/helpers.js';

/**
 * relay.reload() on an in-process relay with a real connector and agents: what each refused
 * file leaves in force, and the relay's own sweep (its CRL copy is updated while the
 * connector's is not, so the relay alone must act).
 */

async function replaceFile(path: string, data: string | Buffer): Promise<void> {
  const temp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  await writeFile(temp, data);
  await rename(temp, path);
}

/** Echoes `n` random bytes through `socket`. */
async function roundTrip(socket: TLSSocket, n = 1024): Promise<void> {
  const sent = randomBytes(n);
  const chunks: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (c: Buffer) => {
      chunks.push(c);
      size += c.length;
      if (size >= n) {
        socket.off('data', onData);
        socket.off('error', reject);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(sent);
  });
  expect(Buffer.concat(chunks).equals(sent)).toBe(true);
}

function ended(socket: TLSSocket): Promise<Error & { code?: string }> {
  return new Promise((resolve) => socket.once('error', resolve));
}

describe('relay.reload(): refused files keep the old ones, the relay sweeps on its own', () => {
  let pki: TestPki;
  let relay: Relay;
  let relayLog: Recorder<LogLine>;
  let relayAudit: Recorder<AuditEvent>;
  let connector: Connector;
  let connectorLog: Recorder<LogLine>;
  let connectorAudit: Recorder<AuditEvent>;
  let echo: Awaited<ReturnType<typeof tcpTarget>>;
  let echo2: Awaited<ReturnType<typeof tcpTarget>>;
  /** The connector's config file: its allowlist is re-read from it on reload, as the CLI does. */
  let connectorYaml: string;
  let setAllowlist: (targets: unknown[]) => Promise<void>;
  let url: string;
  let relayCrl: string;
  let relayCert: string;
  let relayKey: string;
  let policyPath: string;
  let policyText: string;
  const agents: Agent[] = [];

  const agentFor = (name: string): Agent => {
    const agent = new Agent({ trustDomain: pki.trustDomain, relay: url, tls: { ...pki.files('user', name), ca: pki.ca, crl: pki.crl } });
    agents.push(agent);
    return agent;
  };
  const target = () => `127.0.0.1:${echo.port}`;
  const target2 = () => `127.0.0.1:${echo2.port}`;

  beforeAll(async () => {
    pki = await makeTestPki();
    await pki.issue('user', 'mallory', { org: 'st-mary' });
    await pki.issue('user', 'trudy', { org: 'st-mary' });
    await pki.issue('relay', 'relay-2', { dns: ['localhost'] });
    await pki.issue('connector', 'slow', { org: 'st-mary' });
    echo = await tcpTarget((s) => s.pipe(s));
    echo2 = await tcpTarget((s) => s.pipe(s));
    connectorYaml = join(pki.dir, 'connector.yaml');
    // The relay's own copies, so each test decides what the relay sees (the connector keeps pki.crl).
    relayCrl = join(pki.dir, 'relay-crl.pem');
    relayCert = join(pki.dir, 'relay-live.crt');
    relayKey = join(pki.dir, 'relay-live.key');
    await copyFile(pki.crl, relayCrl);
    await copyFile(pki.files('relay', 'relay-1').cert, relayCert);
    await copyFile(pki.files('relay', 'relay-1').key, relayKey);
    policyPath = join(pki.dir, 'policy.yaml');
    policyText = `version: 1
trustDomain: "${pki.trustDomain}"
orgs:
  st-mary:
    connectors:
      hq: { targets: ["${target()}", "${target2()}"] }
      slow: { targets: ["${target()}"] }
rules:
  - { id: everyone, org: st-mary, principals: ["*"], connector: hq, targets: ["${target()}", "${target2()}"], action: allow }
  - { id: slow-echo, org: st-mary, principals: ["*"], connector: slow, targets: ["${target()}"], action: allow }
`;
    await writeFile(policyPath, policyText);

    const r = captureLogger();
    const ra = captureAudit();
    relayLog = r.lines;
    relayAudit = ra.events;
    relay = await createRelay(
      validateOptions(relayConfigSchema, {
        trustDomain: pki.trustDomain,
        listen: '127.0.0.1:0',
        tls: { cert: relayCert, key: relayKey, ca: pki.ca, crl: relayCrl },
        policy: { file: policyPath },
        admin: false,
        // Only explicit reload() calls in this file: the poller would race them.
        reload: { intervalMs: 3_600_000 },
      }, 'relay config'),
      { logger: r.logger, audit: ra.audit },
    );
    url = `wss://localhost:${(await relay.start()).port}`;

    // JSON is YAML. Paths are absolute; reload.intervalMs is long: only explicit reload() calls.
    const writeConnectorYaml = (targets: unknown[]) =>
      replaceFile(connectorYaml, JSON.stringify({
        trustDomain: pki.trustDomain,
        relays: [url],
        tls: { ...pki.files('connector', 'hq'), ca: pki.ca, crl: pki.crl },
        allowlist: { targets },
        admin: false,
        reload: { intervalMs: 3_600_000 },
        reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
      }));
    setAllowlist = writeConnectorYaml;
    await writeConnectorYaml([target(), target2()]);
    // What connector/cli.ts passes: the same layering (file < env < flags) re-run on reload.
    const connectorConfig = async () => (await loadLayeredConfig({ program: 'connector', schema: connectorConfigSchema, configFlag: connectorYaml, env: {}, cwd: pki.dir })).config;
    const c = captureLogger();
    const ca = captureAudit();
    connectorLog = c.lines;
    connectorAudit = ca.events;
    connector = createConnector(await connectorConfig(), { logger: c.logger, audit: ca.audit, configFile: connectorYaml, reloadConfig: connectorConfig });
    await connector.start();
    await connectorLog.waitFor((l) => l.event === 'tunnel.up');
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await connector?.stop();
    await relay?.stop(0);
    await Promise.all([echo?.close(), echo2?.close()]);
    await pki?.cleanup();
  });

  it('a truncated CRL is refused naming the file; the TLS files in force stay, the policy still reloads', async () => {
    const good = await readFile(relayCrl);
    await replaceFile(relayCrl, good.subarray(0, Math.floor(good.length / 2)));
    try {
      const outcome = await relay.reload();
      expect(outcome).toMatchObject({ tls: 'failed', policy: 'applied', streamsReset: 0, sessionsTerminated: 0 });
      expect(await relayLog.waitFor((l) => l.event === 'reload.failed' && l['group'] === 'tls')).toMatchObject({ file: relayCrl });
      expect(relay.status().reloads.failed).toBeGreaterThanOrEqual(1);
      // New handshakes still work with the old context.
      const socket = await agentFor('alice').dial({ connector: 'hq', target: target() });
      await roundTrip(socket);
      socket.destroy();
    } finally {
      await replaceFile(relayCrl, good);
    }
  });

  it('a certificate (and its key) naming another relay is refused: a reload never changes who the relay is', async () => {
    const before = { cert: await readFile(relayCert), key: await readFile(relayKey) };
    await replaceFile(relayKey, await readFile(pki.files('relay', 'relay-2').key));
    await replaceFile(relayCert, await readFile(pki.files('relay', 'relay-2').cert));
    try {
      const outcome = await relay.reload();
      expect(outcome.tls).toBe('failed');
      const line = await relayLog.waitFor((l) => l.event === 'reload.failed' && l['file'] === relayCert);
      expect(line).toMatchObject({ code: 'POSTERN_ERR_CONFIG_INVALID' });
      expect(String(line['err'])).toMatch(/relay-2.*relay-1.*restart/);
      expect(relay.status().identity).toMatch(/\/relay\/relay-1$/);
    } finally {
      await replaceFile(relayKey, before.key);
      await replaceFile(relayCert, before.cert);
    }
  });

  it('a policy of another trust domain is refused naming the field; the old policy keeps deciding', async () => {
    await replaceFile(policyPath, policyText.replace(`trustDomain: "${pki.trustDomain}"`, 'trustDomain: "elsewhere.example"'));
    try {
      const outcome = await relay.reload();
      expect(outcome).toMatchObject({ tls: 'applied', policy: 'failed' });
      const line = await relayLog.waitFor((l) => l.event === 'reload.failed' && l['group'] === 'policy');
      expect(line).toMatchObject({ file: policyPath, code: 'POSTERN_ERR_CONFIG_INVALID' });
      expect(String(line['err'])).toContain('"trustDomain"');
      const socket = await agentFor('alice').dial({ connector: 'hq', target: target() });
      await roundTrip(socket);
      socket.destroy();
    } finally {
      await replaceFile(policyPath, policyText);
    }
  });

  it('the relay alone (the connector\'s CRL is stale) resets a revoked agent\'s live stream REVOKED on both legs, and ends her session', async () => {
    const mallory = agentFor('mallory');
    const info = await mallory.dialWithInfo({ connector: 'hq', target: target() });
    await roundTrip(info.socket);
    const alice = await agentFor('alice').dial({ connector: 'hq', target: target() });
    await roundTrip(alice);
    const error = ended(info.socket);

    // Revoke in the CA; only the relay's copy of the CRL gets the new one.
    const connectorCrl = await readFile(pki.crl);
    await pki.revoke(pki.files('user', 'mallory').cert);
    await replaceFile(relayCrl, await readFile(pki.crl));
    await replaceFile(pki.crl, connectorCrl);

    const outcome = await relay.reload();
    expect(outcome).toMatchObject({ tls: 'applied', streamsReset: 1, sessionsTerminated: 1 });
    const err = await error;
    expect(err.code).toMatch(/^POSTERN_ERR_(STREAM|SESSION)_REVOKED$/);
    expect(err.message).toContain('/user/mallory');
    expect(await relayAudit.waitFor((e) => e.event === 'stream.reset' && e['correlationId'] === info.correlationId)).toMatchObject({ reason: 'revoked' });
    // The connector's leg got the relay's REVOKED, not a bare cancel.
    const close = await connectorAudit.waitFor((e) => e.event === 'stream.close' && e['correlationId'] === info.correlationId);
    expect(close).toMatchObject({ reason: 'agent: POSTERN_ERR_STREAM_REVOKED' });
    // alice and the tunnel are untouched.
    await roundTrip(alice);
    expect(connectorLog.count((l) => l.event === 'tunnel.down')).toBe(0);
    alice.destroy();
  });

  it('the connector alone (the relay\'s CRL is stale) resets a revoked agent\'s live stream REVOKED; the relay passes the reason on', async () => {
    const info = await agentFor('trudy').dialWithInfo({ connector: 'hq', target: target() });
    await roundTrip(info.socket);
    const error = ended(info.socket);
    await pki.revoke(pki.files('user', 'trudy').cert);
    const outcome = await connector.reload();
    expect(outcome).toMatchObject({ tls: 'applied', streamsReset: 1 });
    const err = await error;
    expect(err.code).toBe('POSTERN_ERR_STREAM_REVOKED');
    expect(err.message).toContain('/user/trudy');
    expect(await connectorAudit.waitFor((e) => e.event === 'stream.reset' && e['correlationId'] === info.correlationId)).toMatchObject({ reason: 'revoked' });
    expect(await relayAudit.waitFor((e) => e.event === 'stream.close' && e['correlationId'] === info.correlationId)).toMatchObject({ reason: 'connector: POSTERN_ERR_STREAM_REVOKED' });
  });

  it('a connector allowlist that drops a target resets the live streams to it (POLICY_CHANGED), not those to other targets', async () => {
    const kept = await agentFor('alice').dial({ connector: 'hq', target: target() });
    const cut = await agentFor('alice').dial({ connector: 'hq', target: target2() });
    await Promise.all([roundTrip(kept), roundTrip(cut)]);
    const error = ended(cut);
    await setAllowlist([target()]);
    try {
      const outcome = await connector.reload();
      expect(outcome).toMatchObject({ allowlist: 'applied', streamsReset: 1 });
      const err = await error;
      expect(err.code).toBe('POSTERN_ERR_STREAM_POLICY_CHANGED');
      expect(err.message).toContain('allowlist');
      await roundTrip(kept);
      await expect(agentFor('alice').dial({ connector: 'hq', target: target2() })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_ALLOWLIST_DENIED' });
    } finally {
      kept.destroy();
      await setAllowlist([target(), target2()]);
      expect((await connector.reload()).allowlist).toBe('applied');
    }
  });

  it('a malformed connector config is refused naming the file and the field; the allowlist in force stays', async () => {
    const live = await agentFor('alice').dial({ connector: 'hq', target: target2() });
    await roundTrip(live);
    await setAllowlist(['no-port-here']);
    try {
      const outcome = await connector.reload();
      expect(outcome).toMatchObject({ allowlist: 'failed', streamsReset: 0 });
      const line = await connectorLog.waitFor((l) => l.event === 'reload.failed' && l['group'] === 'allowlist');
      expect(line['file']).toBe(connectorYaml);
      expect(String(line['err'])).toContain('allowlist.targets');
      await roundTrip(live);
      const again = await agentFor('alice').dial({ connector: 'hq', target: target2() });
      await roundTrip(again);
      again.destroy();
    } finally {
      live.destroy();
      await setAllowlist([target(), target2()]);
      expect((await connector.reload()).allowlist).toBe('applied');
    }
  });

  it('an open the connector answers after a policy reload that denies it is reset POLICY_CHANGED at once (the sweep ran before it was live)', async () => {
    // A connector "slow" that holds each open until the test lets it answer.
    const slow = loadTlsMaterial({ ...pki.files('connector', 'slow'), ca: pki.ca, crl: pki.crl });
    const { ws } = await connectWebSocket(`${url}/v1/tunnel`, {
      tls: clientTlsOptions(slow, { trustDomain: pki.trustDomain, presentedAs: 'relay-server' }),
      maxPayload: maxMessageSize(DEFAULT_DECODE_LIMITS),
      handshakeTimeoutMs: 10_000,
    });
    const session = new Session(wsTransport(ws), { role: 'client' });
    try {
      const held = new Promise<IncomingOpen>((resolve) => session.once('open', resolve));
      await relayAudit.waitFor((e) => e.event === 'tunnel.up' && e['connector'] === 'st-mary/slow');
      const dial = agentFor('alice').dial({ connector: 'slow', target: target() });
      const incoming = await held;
      await replaceFile(policyPath, policyText.replace(/  - \{ id: slow-echo.*\n/, ''));
      expect((await relay.reload()).streamsReset).toBe(0);
      const stream = incoming.accept();
      const reset = new Promise<Error & { code?: string }>((resolve) => stream.once('error', resolve));
      await expect(dial).rejects.toMatchObject({ code: 'POSTERN_ERR_STREAM_POLICY_CHANGED' });
      expect((await reset).code).toBe('POSTERN_ERR_STREAM_POLICY_CHANGED');
      expect(await relayAudit.waitFor((e) => e.event === 'stream.reset' && e['reason'] === 'policy-changed')).toMatchObject({ principal: expect.stringContaining('/user/alice') });
    } finally {
      session.destroy();
      await replaceFile(policyPath, policyText);
      await relay.reload();
    }
  });

  it('a revoked connector certificate ends its tunnel (GOAWAY REVOKED) and keeps it out; opens for it find it offline', async () => {
    await pki.revoke(pki.files('connector', 'hq').cert);
    await replaceFile(relayCrl, await readFile(pki.crl));
    const outcome = await relay.reload();
    expect(outcome.sessionsTerminated).toBeGreaterThanOrEqual(1);
    expect(await connectorLog.waitFor((l) => l.event === 'tunnel.down')).toMatchObject({ code: 'POSTERN_ERR_SESSION_REVOKED' });
    expect(await relayAudit.waitFor((e) => e.event === 'handshake.refused' && e['code'] === 'POSTERN_ERR_TLS_CERT_REVOKED')).toMatchObject({ place: 'outer' });
    expect(relay.status().connectors).toEqual([]);
    await expect(agentFor('alice').dial({ connector: 'hq', target: target() })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_CONNECTOR_OFFLINE' });
  });
});

describe("connector.reload(): a CRL that revokes the relay's certificate", () => {
  let pki: TestPki;
  let relay: Relay | undefined;
  let connector: Connector | undefined;

  afterAll(async () => {
    await connector?.stop();
    await relay?.stop(0);
    await pki?.cleanup();
  });

  it('ends the tunnel to that relay and the redial is refused at the TLS handshake', async () => {
    pki = await makeTestPki();
    const policyFile = join(pki.dir, 'policy.yaml');
    await writeFile(policyFile, `version: 1\ntrustDomain: "${pki.trustDomain}"\norgs:\n  st-mary:\n    connectors:\n      hq: { targets: ["127.0.0.1:1"] }\nrules: []\n`);
    relay = await createRelay(
      validateOptions(relayConfigSchema, {
        trustDomain: pki.trustDomain,
        listen: '127.0.0.1:0',
        tls: { ...pki.files('relay', 'relay-1'), ca: pki.ca, crl: pki.crl },
        policy: { file: policyFile },
        admin: false,
        reload: { intervalMs: 3_600_000 },
      }, 'relay config'),
      { logger: captureLogger().logger, audit: captureAudit().audit },
    );
    const url = `wss://localhost:${(await relay.start()).port}`;
    // The connector's own CRL copy: only its reload learns of the revocation.
    const connectorCrl = join(pki.dir, 'connector-crl.pem');
    await copyFile(pki.crl, connectorCrl);
    const c = captureLogger();
    connector = createConnector(
      validateOptions(connectorConfigSchema, {
        trustDomain: pki.trustDomain,
        relays: [url],
        tls: { ...pki.files('connector', 'hq'), ca: pki.ca, crl: connectorCrl },
        allowlist: { targets: ['127.0.0.1:1'] },
        admin: false,
        reload: { intervalMs: 3_600_000 },
        reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
      }, 'connector config'),
      { logger: c.logger, audit: captureAudit().audit },
    );
    await connector.start();
    await c.lines.waitFor((l) => l.event === 'tunnel.up');

    await pki.revoke(pki.files('relay', 'relay-1').cert);
    await replaceFile(connectorCrl, await readFile(pki.crl));
    const outcome = await connector.reload();
    expect(outcome).toMatchObject({ tls: 'applied', tunnelsEnded: 1 });
    expect(await c.lines.waitFor((l) => l.event === 'tunnel.revoked')).toMatchObject({ relay: url });
    await c.lines.waitFor((l) => l.event === 'tunnel.down');
    expect(await c.lines.waitFor((l) => l.event === 'tunnel.retry' && l['error'] === 'POSTERN_ERR_TLS_CERT_REVOKED')).toBeDefined();
    expect(connector.status().tunnels[0]).toMatchObject({ up: false });
  });
});
