import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer, type Server } from 'node:net';
import { join, resolve } from 'node:path';
import { createConnector, type Connector } from '../../../connector/index.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { DENIAL_RESULTS } from '../../../connector/stream-handler.js';
import { createRelay, type Relay } from '../../../relay/index.js';
import { relayConfigSchema } from '../../../relay/options.js';
import { layerConfig } from '../../../src/config/layers.js';
import { isPosternError } from '../../../src/errors.js';
import { validateOptions } from '../../../src/options.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { captureLogger, startFakeRelay, type FakeRelay } from '../connector/helpers.js';
import { parsePromText, valueOf } from './prom-text.js';

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolveReply, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.once('end', () => resolveReply({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

/** A port something else holds: the admin endpoint must not start there. */
async function takenPort(): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, close: () => new Promise((r) => server.close(() => r())) };
}

describe('admin config through the layers: YAML < env', () => {
  const RELAY_YAML = 'trustDomain: hospital.example\ntls:\n  cert: r.crt\n  key: r.key\n  ca: ca.crt\npolicy:\n  file: policy.yaml\n';
  const CONNECTOR_YAML = 'trustDomain: hospital.example\nrelays: ["wss://relay.example"]\ntls:\n  cert: c.crt\n  key: c.key\n  ca: ca.crt\nallowlist:\n  targets: ["db:5432"]\n';

  it('defaults 127.0.0.1:9090 (relay) and :9091 (connector); env sets the address or turns it off', () => {
    const relay = (env: Record<string, string>) => layerConfig(relayConfigSchema, 'relay', { name: 'relay.yaml', text: RELAY_YAML }, env).config.admin;
    const connector = (env: Record<string, string>) => layerConfig(connectorConfigSchema, 'connector', { name: 'connector.yaml', text: CONNECTOR_YAML }, env).config.admin;
    expect(relay({})).toEqual({ listen: { host: '127.0.0.1', port: 9090 } });
    expect(connector({})).toEqual({ listen: { host: '127.0.0.1', port: 9091 } });
    expect(relay({ POSTERN_RELAY_ADMIN__LISTEN: '[::1]:0' })).toEqual({ listen: { host: '::1', port: 0 } });
    expect(relay({ POSTERN_RELAY_ADMIN: 'false' })).toBe(false);
    expect(connector({ POSTERN_CONNECTOR_ADMIN__LISTEN: '127.0.0.1:9200' })).toEqual({ listen: { host: '127.0.0.1', port: 9200 } });
    expect(() => relay({ POSTERN_RELAY_ADMIN__LISTEN: '9090' })).toThrow(/POSTERN_RELAY_ADMIN__LISTEN/);
  });
});

describe('connector: every audited refusal reason counts under its OPEN_RESULT', () => {
  it('the reasons deny() is called with in stream-handler.ts, and the target dialer reasons, are all mapped', () => {
    const root = resolve(import.meta.dirname, '../../..');
    const handler = readFileSync(join(root, 'connector/stream-handler.ts'), 'utf8');
    const dialer = readFileSync(join(root, 'connector/target-dialer.ts'), 'utf8');
    const reasons = new Set<string>();
    for (const m of handler.matchAll(/deny\('([a-z-]+)'/g)) reasons.add(m[1]!);
    for (const m of handler.matchAll(/'(inner-request-[a-z]+)'/g)) reasons.add(m[1]!);
    for (const m of dialer.matchAll(/new DialError\([^,]+, OpenResult\.([A-Z_]+), '([a-z-]+)'/g)) {
      reasons.add(m[2]!);
      expect(DENIAL_RESULTS[m[2]!], m[2]).toBeDefined();
    }
    expect(reasons.size).toBeGreaterThan(12);
    for (const reason of reasons) expect(DENIAL_RESULTS[reason], reason).toBeDefined();
  });
});

describe('admin endpoint of an in-process relay and connector', () => {
  let pki: TestPki;
  let fakeRelay: FakeRelay;
  const relays: Relay[] = [];
  const connectors: Connector[] = [];

  beforeAll(async () => {
    pki = await makeTestPki();
    fakeRelay = await startFakeRelay(pki);
    await writeFile(
      join(pki.dir, 'policy.yaml'),
      `version: 1\ntrustDomain: ${pki.trustDomain}\norgs:\n  st-mary:\n    connectors:\n      hq:\n        targets: ["db.internal:5432"]\nrules: []\n`,
    );
  });

  afterAll(async () => {
    await Promise.all([...relays.map((r) => r.stop(0)), ...connectors.map((c) => c.stop())]);
    await fakeRelay?.close();
    await pki?.cleanup();
  });

  const relayConfig = (admin: unknown) => {
    const cert = pki.files('relay', 'relay-1');
    return validateOptions(relayConfigSchema, {
      trustDomain: pki.trustDomain,
      listen: '127.0.0.1:0',
      tls: { cert: cert.cert, key: cert.key, ca: pki.ca, crl: pki.crl },
      policy: { file: join(pki.dir, 'policy.yaml') },
      admin,
    }, 'test');
  };

  const connectorConfig = (relaysList: string[], admin: unknown) => {
    const cert = pki.files('connector', 'hq');
    return validateOptions(connectorConfigSchema, {
      trustDomain: pki.trustDomain,
      relays: relaysList,
      tls: { cert: cert.cert, key: cert.key, ca: pki.ca, crl: pki.crl },
      allowlist: { targets: ['db.internal:5432'] },
      reconnect: { initialDelayMs: 1, maxDelayMs: 4, recoveryMaxDelayMs: 4 },
      admin,
    }, 'test');
  };

  it('relay: logs the address it got, ready while listening, not ready from the first moment of stop(), closed after it', async () => {
    const { logger, lines } = captureLogger('info');
    const relay = await createRelay(relayConfig({ listen: '127.0.0.1:0' }), { logger });
    relays.push(relay);
    expect(relay.readiness()).toEqual({ ready: false, reason: 'not listening yet' });
    await relay.start();
    const listening = await lines.waitFor((l) => l.event === 'admin.listening');
    expect(relay.admin?.url).toBe(`http://${String(listening['address'])}`);
    expect(await get(`${relay.admin!.url}/readyz`)).toEqual({ status: 200, body: '{"ready":true}\n' });
    const status = JSON.parse((await get(`${relay.admin!.url}/v1/status`)).body) as Record<string, unknown>;
    expect(status).toMatchObject({ component: 'relay', draining: false, connectors: [], liveStreams: 0, policy: { source: expect.stringContaining('policy.yaml') } });
    expect(Object.keys(status['certificates'] as object).sort()).toEqual(['ca', 'cert']);

    const url = relay.admin!.url;
    const stopped = relay.stop(0);
    expect(relay.readiness()).toEqual({ ready: false, reason: expect.stringContaining('draining') });
    await stopped;
    await expect(get(`${url}/healthz`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('relay: an admin address in use stops the start with POSTERN_ERR_ADMIN_LISTEN and leaves nothing listening', async () => {
    const taken = await takenPort();
    try {
      const relay = await createRelay(relayConfig({ listen: `127.0.0.1:${taken.port}` }), { logger: captureLogger('fatal').logger });
      const err: unknown = await relay.start().then(() => undefined, (e: unknown) => e);
      expect(isPosternError(err, 'POSTERN_ERR_ADMIN_LISTEN')).toBe(true);
      expect((err as Error).message).toContain(`127.0.0.1:${taken.port}`);
      expect(relay.status().listening).toBeUndefined();
      expect(relay.admin).toBeUndefined();
    } finally {
      await taken.close();
    }
  });

  it('relay: admin false starts none; reloads are counted by result', async () => {
    const { logger, lines } = captureLogger('info');
    const relay = await createRelay(relayConfig(false), { logger });
    relays.push(relay);
    await relay.start();
    expect(relay.admin).toBeUndefined();
    expect(lines.count((l) => l.event === 'admin.off')).toBe(1);
    expect(relay.readiness()).toEqual({ ready: true });

    expect(await relay.reload()).toMatchObject({ tls: 'applied', policy: 'applied' });
    const policyFile = join(pki.dir, 'policy.yaml');
    const good = readFileSync(policyFile, 'utf8');
    await writeFile(policyFile, 'version: 1\nrules: [\n');
    try {
      expect(await relay.reload()).toMatchObject({ tls: 'applied', policy: 'failed' });
    } finally {
      await writeFile(policyFile, good);
    }
    const samples = parsePromText(await relay.metrics.text());
    expect(valueOf(samples, 'postern_policy_reloads_total', { result: 'ok' })).toBe(1);
    expect(valueOf(samples, 'postern_policy_reloads_total', { result: 'rejected' })).toBe(1);
    expect(valueOf(samples, 'postern_tls_reloads_total', { result: 'ok' })).toBe(2);
    expect(valueOf(samples, 'postern_tls_reloads_total', { result: 'rejected' })).toBe(0);
  });

  it('connector: not ready without a tunnel; redials are counted, refused TCP connects are not handshake failures', async () => {
    const closed = await takenPort();
    const closedUrl = `wss://127.0.0.1:${closed.port}`;
    await closed.close();
    const { logger, lines } = captureLogger('info');
    const connector = createConnector(connectorConfig([closedUrl], { listen: '127.0.0.1:0' }), { logger });
    connectors.push(connector);
    await connector.start();
    const ready = await get(`${connector.admin!.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.body)).toEqual({ ready: false, reason: `no tunnel up (relays: ${closedUrl})` });

    // The third retry is scheduled after the third failed dial: two of those were redials.
    await lines.waitFor((l) => l.event === 'tunnel.retry' && l['attempt'] === 3);
    const samples = parsePromText((await get(`${connector.admin!.url}/metrics`)).body);
    expect(valueOf(samples, 'postern_reconnects_total')).toBeGreaterThanOrEqual(2);
    expect(valueOf(samples, 'postern_tunnels_up')).toBe(0);
    expect(samples.filter((s) => s.name === 'postern_handshake_failures_total')).toEqual([]);
    await connector.stop();
    await expect(get(`${connector.admin!.url}/healthz`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('connector: ready once its tunnel is up; /v1/status lists it with the outer certificate and CA only', async () => {
    const { logger, lines } = captureLogger('info');
    const connector = createConnector(connectorConfig([fakeRelay.url], { listen: '127.0.0.1:0' }), { logger });
    connectors.push(connector);
    await connector.start();
    await lines.waitFor((l) => l.event === 'tunnel.up');
    expect(await get(`${connector.admin!.url}/readyz`)).toEqual({ status: 200, body: '{"ready":true}\n' });
    const status = JSON.parse((await get(`${connector.admin!.url}/v1/status`)).body) as Record<string, unknown>;
    expect(status).toMatchObject({ component: 'connector', tunnels: [{ relay: fakeRelay.url, up: true, since: expect.any(String), streams: 0 }], liveStreams: 0 });
    expect(Object.keys(status['certificates'] as object).sort()).toEqual(['ca', 'cert']);
    const samples = parsePromText(await connector.metrics.text());
    expect(valueOf(samples, 'postern_tunnels_up')).toBe(1);
    expect(valueOf(samples, 'postern_certificate_expiry_timestamp_seconds', { kind: 'cert' })).toBeGreaterThan(Date.now() / 1000);
  });
});
