import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { request } from 'node:http';
import type { Duplex } from 'node:stream';
import { Agent } from '../../agent-lib/index.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { REPO_ROOT, stopAll, type ChildHandle } from '../helpers/processes.js';
import { echoServer } from '../helpers/relay-pool.js';
import { startStack, type Stack } from '../helpers/stack.js';
import { parsePromText, typesOf, valueOf, type Sample } from '../unit/admin/prom-text.js';

const VERSION = (JSON.parse(readFileSync(`${REPO_ROOT}/package.json`, 'utf8')) as { version: string }).version;

/** One GET on a fresh connection (no keep-alive: the process may be gone by the next one). */
function get(url: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end();
  });
}

async function metricsOf(base: string): Promise<{ text: string; samples: Sample[] }> {
  const reply = await get(`${base}/metrics`);
  expect(reply.status).toBe(200);
  expect(reply.type).toMatch(/^text\/plain; version=0\.0\.4/);
  return { text: reply.body, samples: parsePromText(reply.body) };
}

/** `http://host:port` of a child's admin endpoint, from its admin.listening log line. */
async function adminUrl(child: ChildHandle): Promise<string> {
  const line = await child.waitFor('admin.listening');
  return `http://${String(line['address'])}`;
}

/** A WebSocket upgrade on the agents' door with `cert`, by hand (the Agent refuses a non-agent certificate itself); resolves with the answer. */
function upgradeAsAgent(port: number, pki: TestPki, cert: { cert: string; key: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', cert: readFileSync(cert.cert), key: readFileSync(cert.key), ca: readFileSync(pki.ca) }, () => {
      socket.write(
        'GET /v1/agent HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: postern.v1\r\n\r\n`,
      );
    });
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => { answer += c; });
    socket.once('close', () => resolve(answer));
    socket.once('error', reject);
  });
}

function echoOnce(socket: Duplex, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
    socket.end(payload);
  });
}

describe('admin endpoints of a real relay and connector', () => {
  let pki: TestPki;
  let stack: Stack;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let relayAdmin: string;
  let connectorAdmin: string;
  const agents: Agent[] = [];

  const agentFor = (cert: { cert: string; key: string }): Agent => {
    const agent = new Agent({ trustDomain: pki.trustDomain, relay: stack.relayUrl, tls: { cert: cert.cert, key: cert.key, ca: pki.ca, crl: pki.crl } });
    agents.push(agent);
    return agent;
  };

  beforeAll(async () => {
    [pki, echo] = await Promise.all([makeTestPki(), echoServer()]);
    const target = `127.0.0.1:${echo.port}`;
    stack = await startStack({
      pki,
      allowlist: [target],
      policy: `
version: 1
trustDomain: "{{TD}}"
orgs:
  st-mary:
    connectors:
      hq:
        targets: ["${target}"]
rules:
  - id: no-reports
    org: st-mary
    principals: [service/reports]
    connector: hq
    targets: ["${target}"]
    action: deny
  - id: alice-echo
    org: st-mary
    principals: [user/alice]
    connector: hq
    targets: ["${target}"]
    action: allow
`,
    });
    [relayAdmin, connectorAdmin] = await Promise.all([adminUrl(stack.relay), adminUrl(stack.connector)]);
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await stack?.stop();
    await stopAll();
    await echo?.close();
    await pki?.cleanup();
  });

  it('listen on the port the kernel gave (admin.listen 127.0.0.1:0), loopback only', () => {
    for (const url of [relayAdmin, connectorAdmin]) expect(url).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*$/);
    expect(relayAdmin).not.toBe(connectorAdmin);
  });

  it('after one allowed and one denied stream: /metrics, /v1/status, /readyz and /healthz of both', async () => {
    const target = `127.0.0.1:${echo.port}`;
    const relayClosed = stack.relayAudit((l) => l['event'] === 'stream.close' && l['target'] === target);
    const connectorClosed = stack.connector.waitFor((l) => l['audit'] === true && l['event'] === 'stream.close');
    const payload = randomBytes(64 * 1024);
    const socket = await agentFor(pki.files('user', 'alice')).dial({ connector: 'hq', target });
    expect((await echoOnce(socket, payload)).equals(payload)).toBe(true);
    await expect(agentFor(pki.files('service', 'reports')).dial({ connector: 'hq', target })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_POLICY_DENIED' });
    // A connector certificate knocking on the agents' door is refused there: a handshake failure.
    const doorRefused = stack.relayAudit((l) => l['event'] === 'handshake.refused' && l['place'] === 'agent');
    expect(await upgradeAsAgent(stack.relayPort, pki, pki.files('connector', 'hq'))).toMatch(/^HTTP\/1\.1 403 /);
    const refusedCode = String((await doorRefused)['code']);
    await Promise.all([relayClosed, connectorClosed]);

    const relay = await metricsOf(relayAdmin);
    const r = (name: string, labels: Record<string, string> = {}) => valueOf(relay.samples, name, labels);
    expect(r('postern_streams_total', { result: 'ok' })).toBe(1);
    expect(r('postern_streams_total', { result: 'policy_denied' })).toBe(1);
    expect(r('postern_streams_total', { result: 'connector_offline' })).toBe(0);
    expect(r('postern_streams_open')).toBe(0);
    expect(r('postern_tunnels_up')).toBe(1);
    // alice's and the service's sessions, unless an agent already let its idle session go.
    expect(r('postern_agent_sessions')).toBeLessThanOrEqual(2);
    expect(r('postern_open_duration_seconds_count')).toBe(1);
    expect(r('postern_open_duration_seconds_sum')).toBeGreaterThan(0);
    // Inner TLS ciphertext: the payload both ways plus the handshake and record overhead.
    expect(r('postern_stream_bytes_total', { direction: 'up' })).toBeGreaterThan(payload.length);
    expect(r('postern_stream_bytes_total', { direction: 'down' })).toBeGreaterThan(payload.length);
    expect(r('postern_policy_reloads_total', { result: 'ok' })).toBe(0);
    expect(r('postern_limits_hit_total', { limit: 'maxSessions' })).toBe(0);
    expect(r('postern_certificate_expiry_timestamp_seconds', { kind: 'cert' })).toBeGreaterThan(Date.now() / 1000);
    expect(r('postern_certificate_expiry_timestamp_seconds', { kind: 'ca' })).toBeGreaterThan(Date.now() / 1000);
    expect(typesOf(relay.text).get('postern_handshake_failures_total')).toBe('counter');
    expect(r('postern_handshake_failures_total', { place: 'agent', code: refusedCode })).toBe(1);
    expect(r('process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(relay.samples.some((s) => s.name.startsWith('nodejs_eventloop_lag'))).toBe(true);
    // Label values come from closed lists: no identity, target or address ever becomes a label.
    for (const s of relay.samples) {
      for (const value of Object.values(s.labels)) expect(value).not.toMatch(/spiffe|127\.0\.0\.1|alice|hq/);
    }

    const connector = await metricsOf(connectorAdmin);
    const c = (name: string, labels: Record<string, string> = {}) => valueOf(connector.samples, name, labels);
    expect(c('postern_tunnels_up')).toBe(1);
    expect(c('postern_streams_total', { result: 'ok' })).toBe(1);
    // The relay refused the denied open: the connector never saw it.
    expect(c('postern_streams_total', { result: 'policy_denied' })).toBe(0);
    expect(c('postern_streams_open')).toBe(0);
    expect(c('postern_open_duration_seconds_count')).toBe(1);
    expect(c('postern_stream_bytes_total', { direction: 'up' })).toBeGreaterThan(payload.length);
    expect(c('postern_stream_bytes_total', { direction: 'down' })).toBeGreaterThan(payload.length);
    expect(c('postern_reconnects_total')).toBe(0);
    expect(c('postern_limits_hit_total', { limit: 'maxConcurrentHandshakes' })).toBe(0);
    expect(c('postern_certificate_expiry_timestamp_seconds', { kind: 'cert' })).toBeGreaterThan(Date.now() / 1000);
    expect(typesOf(connector.text).has('postern_agent_sessions')).toBe(false);

    const relayStatus = await get(`${relayAdmin}/v1/status`);
    expect(relayStatus.status).toBe(200);
    const rs = JSON.parse(relayStatus.body) as Record<string, unknown> & { connectors: Array<{ connector: string; tunnels: Array<{ since: string; streams: number; version?: string }> }> };
    expect(rs).toMatchObject({
      component: 'relay',
      version: VERSION,
      identity: `spiffe://${pki.trustDomain}/relay/relay-1`,
      draining: false,
      liveStreams: 0,
      reloads: { applied: 0, failed: 0 },
    });
    expect(rs.connectors).toHaveLength(1);
    expect(rs.connectors[0]!.connector).toBe('st-mary/hq');
    expect(rs.connectors[0]!.tunnels).toHaveLength(1);
    expect(Date.parse(rs.connectors[0]!.tunnels[0]!.since)).toBeLessThanOrEqual(Date.now());
    expect(rs.connectors[0]!.tunnels[0]).toMatchObject({ version: VERSION, streams: 0 });
    const certs = rs['certificates'] as Record<string, Array<{ uri?: string; notAfter: string }>>;
    expect(certs['cert']![0]!.uri).toBe(`spiffe://${pki.trustDomain}/relay/relay-1`);
    expect(Date.parse(certs['ca']![0]!.notAfter)).toBeGreaterThan(Date.now());

    const connectorStatus = JSON.parse((await get(`${connectorAdmin}/v1/status`)).body) as Record<string, unknown> & { tunnels: Array<Record<string, unknown>> };
    expect(connectorStatus).toMatchObject({ component: 'connector', version: VERSION, identity: `spiffe://${pki.trustDomain}/org/st-mary/connector/hq`, liveStreams: 0 });
    expect(connectorStatus.tunnels).toEqual([{ relay: stack.relayUrl, up: true, since: expect.any(String), streams: 0 }]);
    expect((connectorStatus['certificates'] as Record<string, unknown[]>)['cert']).toHaveLength(1);

    for (const base of [relayAdmin, connectorAdmin]) {
      expect(await get(`${base}/readyz`)).toMatchObject({ status: 200, body: '{"ready":true}\n' });
      expect(await get(`${base}/healthz`)).toMatchObject({ status: 200 });
    }
  });

  it("SIGTERM: the relay's /readyz answers 503 while a live stream holds the drain; the connector's once its tunnel is gone", async () => {
    const target = `127.0.0.1:${echo.port}`;
    const socket = await agentFor(pki.files('user', 'alice')).dial({ connector: 'hq', target });
    const first = Buffer.from('still here');
    socket.write(first);
    await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    expect(valueOf((await metricsOf(relayAdmin)).samples, 'postern_streams_open')).toBe(1);

    stack.relay.child.kill('SIGTERM');
    await stack.relay.waitFor('relay.draining');
    const during = await get(`${relayAdmin}/readyz`);
    expect(during.status).toBe(503);
    expect(JSON.parse(during.body)).toEqual({ ready: false, reason: expect.stringMatching(/draining/) });
    expect(JSON.parse((await get(`${relayAdmin}/v1/status`)).body)).toMatchObject({ draining: true, liveStreams: 1 });
    expect((await get(`${relayAdmin}/healthz`)).status).toBe(200);

    // The stream ends by itself: the drain completes and the relay exits cleanly.
    await echoOnce(socket, Buffer.alloc(0));
    expect(await stack.relay.exited).toEqual({ code: 0, signal: null });
    await expect(get(`${relayAdmin}/readyz`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    await stack.connector.waitFor((l) => l.event === 'tunnel.down' && l['audit'] !== true);
    const connectorReady = await get(`${connectorAdmin}/readyz`);
    expect(connectorReady.status).toBe(503);
    expect(JSON.parse(connectorReady.body)).toEqual({ ready: false, reason: expect.stringMatching(/no tunnel up/) });
  });
});
