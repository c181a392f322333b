import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { Agent } from '../../agent-lib/index.js';
import { startTestProxy, type TestProxy } from '../helpers/http-proxy.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { startPostern, stopAll, type ChildHandle, type LogLine } from '../helpers/processes.js';
import { startStack, type Stack } from '../helpers/stack.js';

/**
 * Issue 4 item 6: the connector and the agent reach the relay through an HTTP CONNECT proxy
 * with Basic authentication. The relay listens on 127.0.0.1 only; connectors and agents here
 * name it `wss://127.0.0.2:PORT`, which refuses a direct connection: only the test proxy knows
 * the way (its route 127.0.0.2 → 127.0.0.1), so a tunnel that comes up went through it.
 */

const PASSWORD = 'p@ss:w/rd%42';
const CREDS = { username: 'svc-postern', password: PASSWORD };
/** Every spelling of the password a log line could carry. */
const SECRETS = [PASSWORD, encodeURIComponent(PASSWORD), Buffer.from(`${CREDS.username}:${PASSWORD}`).toString('base64')];
/** Variables a developer's shell may hold, cleared so that only what a test sets applies. */
const NO_PROXY_ENV = { HTTPS_PROXY: '', https_proxy: '', NO_PROXY: '', no_proxy: '' };

describe('e2e: connector and agent through an HTTP CONNECT proxy', () => {
  let pki: TestPki;
  let otherCa: TestPki;
  let stack: Stack;
  let echo: { port: number; server: Server; sockets: Set<Socket> };
  let proxies: TestProxy[] = [];
  const agents: Agent[] = [];
  let hidden: string;

  const startProxy = async (o: Parameters<typeof startTestProxy>[0] = {}): Promise<TestProxy> => {
    const p = await startTestProxy({ ...o, routes: { '127.0.0.2': '127.0.0.1' } });
    proxies.push(p);
    return p;
  };

  /** A connector process `id` reaching the relay at the hidden address; `proxy` goes in its config. */
  const startConnector = async (id: string, o: { proxy?: unknown; env?: NodeJS.ProcessEnv }): Promise<ChildHandle> => {
    const cert = pki.files('connector', id);
    const path = join(stack.dir, `connector-${id}.yaml`);
    const config = {
      trustDomain: pki.trustDomain,
      relays: [hidden],
      tls: { cert: cert.cert, key: cert.key, ca: pki.ca, crl: pki.crl },
      allowlist: { targets: [`127.0.0.1:${echo.port}`] },
      admin: false,
      ...(o.proxy === undefined ? {} : { proxy: o.proxy }),
    };
    await writeFile(path, `${JSON.stringify(config, null, 2)}\n`);
    return startPostern(`connector ${id}`, ['connector', '--config', path, '--log-format', 'json', '--log-level', 'debug'], { env: { ...NO_PROXY_ENV, ...o.env } });
  };

  const agent = (): Agent => {
    const alice = pki.files('user', 'alice');
    const a = new Agent({ trustDomain: pki.trustDomain, relay: stack.relayUrl, tls: { cert: alice.cert, key: alice.key, ca: pki.ca, crl: pki.crl } });
    agents.push(a);
    return a;
  };

  const echoThrough = async (socket: Duplex, text: string): Promise<string> => {
    let got = '';
    const done = new Promise<void>((resolve, reject) => {
      socket.on('data', (c: Buffer) => {
        got += c.toString();
        if (got.length >= text.length) resolve();
      });
      socket.once('error', reject);
    });
    socket.write(text);
    await done;
    return got;
  };

  const output = (h: ChildHandle): string => h.stdout + h.stderr;
  const expectNoSecret = (h: ChildHandle): void => {
    for (const secret of SECRETS) expect(output(h), `${h.name} logged a form of the proxy password`).not.toContain(secret);
  };
  const retryWith = (code: string) => (l: LogLine) => l.event === 'tunnel.retry' && l['error'] === code;

  beforeAll(async () => {
    pki = await makeTestPki();
    otherCa = await makeTestPki();
    for (const id of ['via-config', 'via-env', 'wrong-pass', 'inspected']) await pki.issue('connector', id, { org: 'st-mary' });
    const sockets = new Set<Socket>();
    const server = createServer((s) => {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
      s.pipe(s);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    echo = { port: (server.address() as { port: number }).port, server, sockets };
    const target = `127.0.0.1:${echo.port}`;
    stack = await startStack({
      pki,
      allowlist: [target],
      policy: `
version: 1
trustDomain: "{{TD}}"
orgs:
  st-mary:
    teams:
      staff: [user/alice]
    connectors:
      hq: { targets: ["${target}"] }
      via-config: { targets: ["${target}"] }
      via-env: { targets: ["${target}"] }
rules:
  - id: staff-echo
    org: st-mary
    principals: [team/staff]
    connector: "*"
    targets: ["${target}"]
    action: allow
`,
    });
    hidden = `wss://127.0.0.2:${stack.relayPort}`;
  }, 180_000);

  afterEach(async () => {
    for (const a of agents.splice(0)) await a.close();
    for (const p of proxies.splice(0)) await p.close();
  });

  afterAll(async () => {
    await stack?.stop();
    await stopAll();
    for (const s of echo?.sockets ?? []) s.destroy();
    echo?.server.close();
    await pki?.cleanup();
    await otherCa?.cleanup();
  });

  it('premise: the hidden relay address refuses a direct connection', async () => {
    const socket = connect({ host: '127.0.0.2', port: stack.relayPort });
    const [err] = (await once(socket, 'error')) as [Error & { code?: string }];
    expect(err.code).toBe('ECONNREFUSED');
  });

  it('config proxy.url with Basic credentials: the tunnel comes up through the proxy and a dial works', async () => {
    const proxy = await startProxy({ auth: CREDS });
    const connector = await startConnector('via-config', { proxy: { url: proxy.url(CREDS) } });
    await connector.waitFor('tunnel.up', 30_000);
    expect(proxy.requests).toContainEqual({ target: `127.0.0.2:${stack.relayPort}`, status: 200 });
    expect(proxy.tunnels()).toBeGreaterThanOrEqual(1);
    expect(await connector.waitFor('proxy.configured')).toMatchObject({ proxy: `http://${CREDS.username}@127.0.0.1:${proxy.port}`, source: 'config proxy.url' });

    const socket = await agent().dial({ connector: 'via-config', target: `127.0.0.1:${echo.port}` });
    expect(await echoThrough(socket, 'hello via the proxy')).toBe('hello via the proxy');
    socket.destroy();
    await connector.stop('SIGTERM');
    expectNoSecret(connector);
  });

  it('HTTPS_PROXY from the environment (NO_PROXY naming other hosts): the same, without a proxy section', async () => {
    const proxy = await startProxy({ auth: CREDS });
    const connector = await startConnector('via-env', { env: { HTTPS_PROXY: proxy.url(CREDS), NO_PROXY: 'localhost,10.0.0.0/8,127.0.0.2:1' } });
    await connector.waitFor('tunnel.up', 30_000);
    expect(proxy.requests).toContainEqual({ target: `127.0.0.2:${stack.relayPort}`, status: 200 });
    expect(await connector.waitFor('proxy.configured')).toMatchObject({ source: 'env HTTPS_PROXY', via: [hidden] });

    const socket = await agent().dial({ connector: 'via-env', target: `127.0.0.1:${echo.port}` });
    expect(await echoThrough(socket, 'hello via HTTPS_PROXY')).toBe('hello via HTTPS_PROXY');
    socket.destroy();
    await connector.stop('SIGTERM');
    expectNoSecret(connector);
  });

  it('a wrong password: POSTERN_ERR_PROXY_AUTH_FAILED naming the proxy, no password in any line, and retries', async () => {
    const proxy = await startProxy({ auth: CREDS });
    const wrong = { username: CREDS.username, password: `${PASSWORD}-old` };
    const connector = await startConnector('wrong-pass', { proxy: { url: proxy.url(wrong) } });
    const first = await connector.waitFor(retryWith('POSTERN_ERR_PROXY_AUTH_FAILED'), 30_000);
    expect(first['reason']).toContain(`the HTTP proxy http://${CREDS.username}@127.0.0.1:${proxy.port} refused the credentials of user "${CREDS.username}"`);
    // It keeps trying (the proxy may be fixed, or the password rotated back), with its backoff.
    await connector.waitFor((l) => retryWith('POSTERN_ERR_PROXY_AUTH_FAILED')(l) && l['attempt'] === 2, 30_000);
    expect(proxy.requests.filter((r) => r.status === 407).length).toBeGreaterThanOrEqual(2);
    expect(connector.lines.some((l) => l.event === 'tunnel.up')).toBe(false);
    await connector.stop('SIGTERM');
    expectNoSecret(connector);
    expect(output(connector)).not.toContain(wrong.password);
    expect(output(connector)).not.toContain(encodeURIComponent(wrong.password));
  });

  it('a TLS-inspecting proxy (relay certificate from another CA): POSTERN_ERR_TLS_INTERCEPTED names it as the likely cause', async () => {
    const [cert, key] = await Promise.all([readFile(otherCa.files('relay', 'relay-1').cert, 'utf8'), readFile(otherCa.files('relay', 'relay-1').key, 'utf8')]);
    const proxy = await startProxy({ intercept: { cert, key } });
    const connector = await startConnector('inspected', { env: { https_proxy: proxy.url() } });
    const line = await connector.waitFor(retryWith('POSTERN_ERR_TLS_INTERCEPTED'), 30_000);
    expect(line['reason']).toContain(`through the HTTP proxy http://127.0.0.1:${proxy.port}`);
    expect(line['reason']).toMatch(/most likely a TLS-inspecting proxy that replaced the relay's certificate/);
    expect(connector.lines.some((l) => l.event === 'tunnel.up')).toBe(false);
    await connector.stop('SIGTERM');
  });

  it('the Agent library: the proxy option carries its session; a noProxy entry sends another relay direct', async () => {
    const proxy = await startProxy({ auth: CREDS });
    const alice = pki.files('user', 'alice');
    const tls = { cert: alice.cert, key: alice.key, ca: pki.ca, crl: pki.crl };
    const viaProxy = new Agent({ trustDomain: pki.trustDomain, relay: hidden, tls, proxy: { url: proxy.url(CREDS) } });
    agents.push(viaProxy);
    const socket = await viaProxy.dial({ connector: 'hq', target: `127.0.0.1:${echo.port}` });
    expect(await echoThrough(socket, 'library via the proxy')).toBe('library via the proxy');
    socket.destroy();
    expect(proxy.requests).toEqual([{ target: `127.0.0.2:${stack.relayPort}`, status: 200 }]);

    const direct = new Agent({ trustDomain: pki.trustDomain, relay: stack.relayUrl, tls, proxy: { url: proxy.url(CREDS), noProxy: ['localhost'] } }, { env: { HTTPS_PROXY: proxy.url(CREDS) } });
    agents.push(direct);
    const socket2 = await direct.dial({ connector: 'hq', target: `127.0.0.1:${echo.port}` });
    expect(await echoThrough(socket2, 'library direct')).toBe('library direct');
    socket2.destroy();
    expect(proxy.requests).toHaveLength(1);
  });

  it('the agent CLI through the proxy (HTTPS_PROXY): postern agent forward reaches the connector', async () => {
    const proxy = await startProxy({ auth: CREDS });
    const alice = pki.files('user', 'alice');
    const config = join(stack.dir, 'agent-via-proxy.yaml');
    await writeFile(config, `${JSON.stringify({ trustDomain: pki.trustDomain, relay: hidden, tls: { cert: alice.cert, key: alice.key, ca: pki.ca, crl: pki.crl } }, null, 2)}\n`);
    const forward = startPostern('forward via proxy', ['agent', 'forward', '--config', config, '--listen', '127.0.0.1:0', '--connector', 'hq', '--target', `127.0.0.1:${echo.port}`, '--log-format', 'json'], {
      env: { ...NO_PROXY_ENV, HTTPS_PROXY: proxy.url(CREDS) },
    });
    const listening = await forward.waitFor('forward.listening', 30_000);
    const address = listening['address'] as { port: number } | string;
    const port = typeof address === 'string' ? Number(address.slice(address.lastIndexOf(':') + 1)) : address.port;
    const local = connect({ host: '127.0.0.1', port });
    await once(local, 'connect');
    expect(await echoThrough(local, 'psql would say hello')).toBe('psql would say hello');
    local.destroy();
    expect(proxy.requests).toContainEqual({ target: `127.0.0.2:${stack.relayPort}`, status: 200 });
    const up = await forward.waitFor('agent.session.up');
    expect(up['proxy']).toBe(`http://${CREDS.username}@127.0.0.1:${proxy.port}`);
    await forward.stop('SIGTERM');
    expectNoSecret(forward);
  });
});
