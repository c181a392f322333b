import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { isPosternError, ProxyError, type PosternError } from '../../../src/errors.js';
import { connectThroughProxy, parseConnectResponse, parseProxyUrl, type HttpProxy } from '../../../src/net/http-proxy.js';
import { noProxyMatches, parseNoProxyEntry, parseNoProxyList, proxyConfigSchema, proxyFor, resolveProxySettings } from '../../../src/net/proxy-config.js';
import { acceptUpgrade, connectWebSocket, createWebSocketServer } from '../../../src/mux/ws-transport.js';
import { loadLayeredConfig } from '../../../src/config/layers.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { agentOptionsSchema } from '../../../agent-lib/options.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { startTestProxy, type TestProxy } from '../../helpers/http-proxy.js';

const PASSWORD = 's3cr3t:p@ss/word';
const CREDS = { username: 'alice', password: PASSWORD };

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function expectCode(p: Promise<unknown>, code: string): Promise<PosternError> {
  const err = await p.then(
    () => {
      throw new Error(`expected ${code}, got success`);
    },
    (e: unknown) => e,
  );
  expect(isPosternError(err), String(err)).toBe(true);
  expect((err as PosternError).code, (err as Error).message).toBe(code);
  return err as PosternError;
}

/** A raw TCP server on 127.0.0.1 that runs `onSocket` for every connection. */
async function rawServer(onSocket: (s: Socket) => void): Promise<{ port: number }> {
  const sockets = new Set<Socket>();
  const server: Server = createNetServer((s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    onSocket(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, 'close');
  });
  return { port: (server.address() as AddressInfo).port };
}

/** A TCP echo target. */
function echoServer(): Promise<{ port: number }> {
  return rawServer((s) => s.pipe(s));
}

async function proxy(o: Parameters<typeof startTestProxy>[0] = {}): Promise<TestProxy> {
  const p = await startTestProxy(o);
  cleanups.push(() => p.close());
  return p;
}

function roundTrip(socket: Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    socket.on('data', (c: Buffer) => {
      got += c.toString();
      if (got.length >= text.length) resolve(got);
    });
    socket.once('error', reject);
    socket.resume();
    socket.write(text);
  });
}

describe('parseProxyUrl', () => {
  it('decodes Basic credentials and never shows the password', () => {
    const p = parseProxyUrl(`http://alice:${encodeURIComponent(PASSWORD)}@proxy.hospital.example:3128`, 'env HTTPS_PROXY');
    expect(p).toEqual({ host: 'proxy.hospital.example', port: 3128, username: 'alice', password: PASSWORD, display: 'http://alice@proxy.hospital.example:3128' });
  });

  it('takes a URL without a scheme, defaults the port to 80, brackets IPv6 in display', () => {
    expect(parseProxyUrl('proxy.example:8080', 'x')).toMatchObject({ host: 'proxy.example', port: 8080, display: 'http://proxy.example:8080' });
    expect(parseProxyUrl('http://proxy.example/', 'x')).toMatchObject({ port: 80 });
    expect(parseProxyUrl('http://[::1]:3128', 'x')).toMatchObject({ host: '::1', display: 'http://[::1]:3128' });
    expect(parseProxyUrl('http://bob@p:1', 'x')).toMatchObject({ username: 'bob', password: '' });
  });

  it.each([
    ['https://alice:hunter2@proxy:443', /only http proxies/],
    ['socks5://alice:hunter2@proxy:1080', /only http proxies/],
    ['http://alice:hunter2@proxy:3128/path', /no path/],
    ['http://alice:hunter2@proxy:3128/?q=1', /no path/],
    ['http://:hunter2@proxy:3128', /password without a user/],
    ['http://alice:hunter2%zz@proxy:3128', /percent-escape/],
    ['http://alice:hunter2@:3128', /not a valid URL|no proxy host/],
    ['   ', /empty/],
  ])('refuses %s naming the source, without the password', (raw, why) => {
    let err: unknown;
    try {
      parseProxyUrl(raw, 'env HTTPS_PROXY');
    } catch (e) {
      err = e;
    }
    expect(isPosternError(err, 'POSTERN_ERR_CONFIG_INVALID')).toBe(true);
    const message = (err as Error).message;
    expect(message).toMatch(/^env HTTPS_PROXY: /);
    expect(message).toMatch(why);
    expect(message).not.toContain('hunter2');
  });
});

describe('parseConnectResponse', () => {
  const parse = (text: string, max?: number) => parseConnectResponse(Buffer.from(text, 'latin1'), max);

  it('parses a complete answer and says where the tunnel starts', () => {
    const head = 'HTTP/1.1 200 Connection established\r\nVia: 1.1 proxy\r\nX-Empty:\r\n\r\n';
    expect(parse(`${head}\x16\x03`)).toEqual({
      statusCode: 200,
      reason: 'Connection established',
      headers: [['via', '1.1 proxy'], ['x-empty', '']],
      headerBytes: head.length,
    });
    expect(parse('HTTP/1.0 200\r\n\r\n')).toMatchObject({ statusCode: 200, reason: '' });
    expect(parse('HTTP/1.1 407 Auth\r\nProxy-Authenticate:  Basic realm="x" \t\r\n\r\n')?.headers).toEqual([['proxy-authenticate', 'Basic realm="x"']]);
  });

  it('asks for more while the header is incomplete', () => {
    for (const partial of ['', 'H', 'HTTP/1.', 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK\r\n', 'HTTP/1.1 200 OK\r\nVia: x\r\n\r']) {
      expect(parse(partial)).toBeUndefined();
    }
  });

  it.each([
    ['\x15\x03\x03\x00\x02\x02\x28', /does not start with "HTTP\/1\."/],
    ['SSH-2.0-OpenSSH', /does not start with "HTTP\/1\."/],
    ['HTTP/2 200\r\n\r\n', /does not start/],
    ['HTTP/1.1 20 OK\r\n\r\n', /malformed status line/],
    ['HTTP/1.1 200OK\r\n\r\n', /malformed status line/],
    ['HTTP/1.1 600 Nope\r\n\r\n', /malformed status line/],
    ['HTTP/1.1 200 OK\nVia: x\r\n\r\n', /malformed status line/],
    ['HTTP/1.1 200 OK\r\nVia x\r\n\r\n', /malformed header line/],
    ['HTTP/1.1 200 OK\r\n folded\r\n\r\n', /malformed header line/],
    ['HTTP/1.1 200 OK\r\nVia: a\rb\r\n\r\n', /malformed header line/],
    ['HTTP/1.1 200 OK\r\n: empty name\r\n\r\n', /malformed header line/],
    ['HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n', /malformed header line/],
  ])('refuses %j', (text, why) => {
    expect(() => parse(text)).toThrow(why);
    try {
      parse(text);
    } catch (err) {
      expect(isPosternError(err, 'POSTERN_ERR_PROXY_PROTOCOL')).toBe(true);
    }
  });

  it('caps the header: a terminator beyond maxHeaderBytes does not count', () => {
    const big = `HTTP/1.1 200 OK\r\nX: ${'a'.repeat(100)}\r\n\r\n`;
    expect(() => parse(big, 64)).toThrow(/exceeds 64 bytes/);
    expect(() => parse(big.slice(0, 64), 64)).toThrow(/exceeds 64 bytes/);
    expect(parse(big.slice(0, 63), 64)).toBeUndefined();
    expect(parse(big, big.length)).toMatchObject({ statusCode: 200 });
  });

  it('arbitrary bytes: undefined, a parsed answer or a ProxyError, never another exception', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      // Mostly-valid answers with random damage, so the deeper branches are reached too.
      fc
        .tuple(fc.constantFrom('HTTP/1.1 ', 'HTTP/1.0 ', 'HTTP/1.', ''), fc.string({ maxLength: 40 }), fc.array(fc.string({ maxLength: 30 }), { maxLength: 5 }), fc.constantFrom('\r\n\r\n', '\r\n', '', '\n\n'))
        .map(([v, status, headers, end]) => new Uint8Array(Buffer.from(`${v}${status}\r\n${headers.join('\r\n')}${end}`, 'latin1'))),
    );
    fc.assert(
      fc.property(bytes, fc.integer({ min: 1, max: 400 }), (arr, max) => {
        const buf = Buffer.from(arr);
        let result: ReturnType<typeof parseConnectResponse>;
        try {
          result = parseConnectResponse(buf, max);
        } catch (err) {
          expect(err).toBeInstanceOf(ProxyError);
          expect((err as ProxyError).code).toBe('POSTERN_ERR_PROXY_PROTOCOL');
          return;
        }
        if (result === undefined) {
          expect(buf.length).toBeLessThan(max);
        } else {
          expect(result.headerBytes).toBeLessThanOrEqual(Math.min(max, buf.length));
          expect(result.statusCode).toBeGreaterThanOrEqual(100);
          expect(result.statusCode).toBeLessThanOrEqual(599);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('gives the same answer however the bytes are split', () => {
    const answer = fc
      .tuple(fc.integer({ min: 100, max: 599 }), fc.stringMatching(/^[A-Za-z ]{0,20}$/), fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,10}$/), fc.stringMatching(/^[ -~]{0,20}$/)), { maxLength: 4 }))
      .map(([status, reason, headers]) => Buffer.from(`HTTP/1.1 ${status}${reason ? ` ${reason}` : ''}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\nTUNNEL`, 'latin1'));
    fc.assert(
      fc.property(answer, fc.integer({ min: 0, max: 200 }), (buf, cut) => {
        const whole = parseConnectResponse(buf);
        expect(whole).toBeDefined();
        const first = parseConnectResponse(buf.subarray(0, Math.min(cut, buf.length)));
        if (first !== undefined) expect(first).toEqual(whole);
        expect(buf.subarray(whole!.headerBytes).toString()).toBe('TUNNEL');
      }),
    );
  });
});

describe('connectThroughProxy', () => {
  it('opens a tunnel with Basic credentials; the socket carries bytes both ways', async () => {
    const echo = await echoServer();
    const p = await proxy({ auth: CREDS });
    const socket = await connectThroughProxy({ proxy: parseProxyUrl(p.url(CREDS), 'test'), host: '127.0.0.1', port: echo.port, timeoutMs: 10_000 });
    cleanups.push(() => socket.destroy());
    expect(await roundTrip(socket, 'ping through the proxy')).toBe('ping through the proxy');
    expect(p.requests).toEqual([{ target: `127.0.0.1:${echo.port}`, status: 200 }]);
    expect(p.tunnels()).toBe(1);
  });

  it('sends IPv6 targets bracketed', async () => {
    const p = await proxy();
    const refused = p.nextRequest(403);
    await expectCode(connectThroughProxy({ proxy: parseProxyUrl(p.url(), 'test'), host: '2001:db8::1', port: 443, timeoutMs: 10_000 }), 'POSTERN_ERR_PROXY_REFUSED');
    expect((await refused).target).toBe('[2001:db8::1]:443');
  });

  it('hands bytes sent right after the answer header to the tunnel', async () => {
    const fake = await rawServer((s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nVia: fake\r\n\r\nEARLY');
        s.write('-AND-LATER');
      });
    });
    const socket = await connectThroughProxy({ proxy: parseProxyUrl(`http://127.0.0.1:${fake.port}`, 'test'), host: 'relay.example', port: 443, timeoutMs: 10_000 });
    cleanups.push(() => socket.destroy());
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString()));
    socket.resume();
    await new Promise<void>((resolve) => socket.on('data', () => got.length >= 15 && resolve()));
    expect(got).toBe('EARLY-AND-LATER');
  });

  it('407 without credentials: POSTERN_ERR_PROXY_AUTH_FAILED says how to give them', async () => {
    const p = await proxy({ auth: CREDS });
    const err = await expectCode(connectThroughProxy({ proxy: parseProxyUrl(p.url(), 'test'), host: '127.0.0.1', port: 1, timeoutMs: 10_000 }), 'POSTERN_ERR_PROXY_AUTH_FAILED');
    expect(err.message).toContain(`the HTTP proxy http://127.0.0.1:${p.port} requires authentication (it offers Basic)`);
    expect(err.message).toContain('http://user:password@');
  });

  it('407 with a wrong password: names the proxy and the user, never the password', async () => {
    const p = await proxy({ auth: CREDS });
    const wrong = { username: 'alice', password: 'not-the-password' };
    const err = await expectCode(connectThroughProxy({ proxy: parseProxyUrl(p.url(wrong), 'test'), host: '127.0.0.1', port: 1, timeoutMs: 10_000 }), 'POSTERN_ERR_PROXY_AUTH_FAILED');
    expect(err.message).toContain(`http://alice@127.0.0.1:${p.port}`);
    expect(err.message).toContain('refused the credentials of user "alice"');
    expect(JSON.stringify({ ...err.toJSON(), message: err.message })).not.toContain('not-the-password');
  });

  it('another non-2xx: POSTERN_ERR_PROXY_REFUSED with the status', async () => {
    const p = await proxy();
    const err = await expectCode(connectThroughProxy({ proxy: parseProxyUrl(p.url(), 'test'), host: 'db.example', port: 443, timeoutMs: 10_000 }), 'POSTERN_ERR_PROXY_REFUSED');
    expect(err.message).toMatch(/refused the CONNECT to db\.example:443 with HTTP 403 Forbidden: it does not allow/);
    expect(err.details).toMatchObject({ status: 403 });
  });

  it('nothing listening: POSTERN_ERR_PROXY_UNREACHABLE naming the proxy', async () => {
    const closed = await rawServer((s) => s.destroy());
    const err = await expectCode(connectThroughProxy({ proxy: parseProxyUrl(`http://127.0.0.1:${closed.port}`, 'test'), host: 'r', port: 443, timeoutMs: 10_000 }), 'POSTERN_ERR_PROXY_UNREACHABLE');
    expect(err.message).toContain(`http://127.0.0.1:${closed.port}`);
  });

  it('a proxy that never answers: POSTERN_ERR_PROXY_TIMEOUT', async () => {
    const silent = await rawServer(() => undefined);
    const err = await expectCode(connectThroughProxy({ proxy: parseProxyUrl(`http://127.0.0.1:${silent.port}`, 'test'), host: 'r', port: 443, timeoutMs: 100 }), 'POSTERN_ERR_PROXY_TIMEOUT');
    expect(err.message).toMatch(/did not answer the CONNECT to r:443 within 100 ms/);
  });

  it('an endless header: POSTERN_ERR_PROXY_PROTOCOL at the cap, without waiting for the timeout', async () => {
    const flood = await rawServer((s) => s.once('data', () => s.write(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(70_000)}`)));
    const err = await expectCode(
      connectThroughProxy({ proxy: parseProxyUrl(`http://127.0.0.1:${flood.port}`, 'test'), host: 'r', port: 443, timeoutMs: 600_000 }),
      'POSTERN_ERR_PROXY_PROTOCOL',
    );
    expect(err.message).toMatch(/exceeds 16384 bytes/);
  });

  it('whatever a peer answers and however it closes: a ProxyError, never a hang or another exception', async () => {
    let answer = Buffer.alloc(0);
    const fake = await rawServer((s) => s.once('data', () => s.end(answer)));
    const target = parseProxyUrl(`http://127.0.0.1:${fake.port}`, 'test');
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
        answer = Buffer.from(bytes);
        const outcome = await connectThroughProxy({ proxy: target, host: 'r', port: 443, timeoutMs: 30_000 }).then(
          (s) => {
            s.destroy();
            return 'tunnel';
          },
          (err: unknown) => err,
        );
        if (outcome === 'tunnel') {
          // Only a complete 2xx header can open a tunnel.
          expect(parseConnectResponse(answer)?.statusCode).toBeGreaterThanOrEqual(200);
          return;
        }
        expect(outcome).toBeInstanceOf(ProxyError);
        expect(['POSTERN_ERR_PROXY_PROTOCOL', 'POSTERN_ERR_PROXY_UNREACHABLE', 'POSTERN_ERR_PROXY_AUTH_FAILED', 'POSTERN_ERR_PROXY_REFUSED']).toContain((outcome as ProxyError).code);
      }),
      { numRuns: 40 },
    );
  });
});

describe('NO_PROXY and the proxy in force', () => {
  const settings = (noProxy: string) => resolveProxySettings(undefined, { HTTPS_PROXY: 'http://proxy:3128', NO_PROXY: noProxy })!;
  const direct = (noProxy: string, url: string): boolean => proxyFor(settings(noProxy), url) === undefined;

  it.each([
    ['*', 'wss://relay.example.com', true],
    ['example.com', 'wss://relay.example.com', true],
    ['example.com', 'wss://example.com', true],
    ['.example.com', 'wss://example.com:443', true],
    ['*.example.com', 'wss://a.b.example.com', true],
    ['EXAMPLE.com.', 'wss://Relay.Example.COM./x', true],
    ['example.com', 'wss://badexample.com', false],
    ['relay.example.com', 'wss://example.com', false],
    ['example.com:443', 'wss://relay.example.com', true],
    ['example.com:8443', 'wss://relay.example.com', false],
    ['example.com:8443', 'wss://relay.example.com:8443', true],
    ['10.0.0.0/8', 'wss://10.1.2.3:443', true],
    ['10.0.0.0/8', 'wss://11.1.2.3', false],
    ['10.1.2.3', 'wss://10.1.2.3', true],
    ['10.1.2.3', 'wss://0x0a.1.2.3', true],
    ['10.0.0.0/8:443', 'wss://10.1.2.3', true],
    ['10.0.0.0/8:443', 'wss://10.1.2.3:8443', false],
    ['::1', 'wss://[::1]:443', true],
    ['[::1]:8443', 'wss://[::1]:8443', true],
    ['[::1]:8443', 'wss://[::1]', false],
    ['fd00::/8', 'wss://[fd12::1]', true],
    ['10.0.0.0/8', 'wss://[::ffff:10.0.0.1]', true],
    ['localhost', 'wss://127.0.0.1', false],
    ['127.0.0.1', 'wss://localhost', false],
    ['other.example, example.com', 'wss://relay.example.com', true],
    ['other.example example.org', 'wss://relay.example.com', false],
  ])('NO_PROXY=%j, %s: direct=%s', (noProxy, url, expected) => {
    expect(direct(noProxy, url)).toBe(expected);
  });

  it('refuses malformed entries, naming the source', () => {
    expect(() => parseNoProxyList('ok.example, bad/entry', 'env NO_PROXY')).toThrow(/env NO_PROXY: no-proxy entry "bad\/entry" is not a valid CIDR range/);
    expect(() => parseNoProxyEntry('host:99999', 'x')).toThrow(/port outside 1-65535/);
    expect(() => parseNoProxyEntry('host:https', 'x')).toThrow(/port that is not a number/);
    expect(() => parseNoProxyEntry('a b', 'x')).toThrow(/neither/);
    expect(noProxyMatches(parseNoProxyEntry('*', 'x'), '10.0.0.1', 1)).toBe(true);
  });

  it('config false ignores the environment; a config object ignores it too; else https_proxy before HTTPS_PROXY', () => {
    const env = { https_proxy: 'http://lower:1', HTTPS_PROXY: 'http://upper:2', no_proxy: 'lower.example', NO_PROXY: 'upper.example' };
    expect(resolveProxySettings(false, env)).toBeUndefined();
    const fromConfig = resolveProxySettings(proxyConfigSchema.parse({ url: 'http://cfg:3', noProxy: ['cfg.example'] }), env)!;
    expect(fromConfig.proxy.display).toBe('http://cfg:3');
    expect(fromConfig.source).toBe('config proxy.url');
    expect(proxyFor(fromConfig, 'wss://r.upper.example')).toBeDefined();
    expect(proxyFor(fromConfig, 'wss://r.cfg.example')).toBeUndefined();
    const fromEnv = resolveProxySettings(undefined, env)!;
    expect(fromEnv).toMatchObject({ source: 'env https_proxy', proxy: { host: 'lower', port: 1 } });
    expect(proxyFor(fromEnv, 'wss://r.lower.example')).toBeUndefined();
    expect(proxyFor(fromEnv, 'wss://r.upper.example')).toBeDefined();
    expect(resolveProxySettings(undefined, { https_proxy: ' ', HTTPS_PROXY: 'http://upper:2' })).toMatchObject({ source: 'env HTTPS_PROXY' });
    expect(resolveProxySettings(undefined, { HTTP_PROXY: 'http://p:1', ALL_PROXY: 'http://p:1' })).toBeUndefined();
    expect(() => resolveProxySettings(undefined, { HTTPS_PROXY: 'ftp://alice:hunter2@p:1' })).toThrow(/^env HTTPS_PROXY: scheme "ftp"/);
    expect(() => resolveProxySettings(proxyConfigSchema.parse({ url: 'http://p:1', noProxy: ['ok', '1.2.3.4/99'] }), {})).toThrow(/config field "proxy.noProxy.1"/);
  });

  it('connector.yaml and agent.yaml take the section, also from POSTERN_* variables field by field', async () => {
    const base = { POSTERN_CONNECTOR_TRUST_DOMAIN: 'h.example', POSTERN_CONNECTOR_RELAYS: '[wss://r:443]', POSTERN_CONNECTOR_TLS__CERT: 'a', POSTERN_CONNECTOR_TLS__KEY: 'b', POSTERN_CONNECTOR_TLS__CA: 'c', POSTERN_CONNECTOR_ALLOWLIST__TARGETS: '[x:1]' };
    const load = async (env: Record<string, string>) => (await loadLayeredConfig({ program: 'connector', schema: connectorConfigSchema, env: { ...base, ...env }, cwd: '/' })).config.proxy;
    expect(await load({})).toBeUndefined();
    expect(await load({ POSTERN_CONNECTOR_PROXY: 'false' })).toBe(false);
    expect(await load({ POSTERN_CONNECTOR_PROXY__URL: 'http://u:p@proxy:3128', POSTERN_CONNECTOR_PROXY__NO_PROXY: '[relay.lan, 10.0.0.0/8]' })).toEqual({ url: 'http://u:p@proxy:3128', noProxy: ['relay.lan', '10.0.0.0/8'] });
    await expect(load({ POSTERN_CONNECTOR_PROXY__URLS: 'http://p:1' })).rejects.toThrow(/POSTERN_CONNECTOR_PROXY__URLS/);
    expect(agentOptionsSchema.parse({ trustDomain: 'h.example', relay: 'wss://r', tls: { cert: 'a', key: 'b', ca: 'c' }, proxy: { url: 'http://p:1' } }).proxy).toEqual({ url: 'http://p:1', noProxy: [] });
  });

  it('the schema: false or a strict object', () => {
    expect(proxyConfigSchema.parse({ url: 'http://p:1' })).toEqual({ url: 'http://p:1', noProxy: [] });
    expect(proxyConfigSchema.safeParse({ url: 'http://p:1', noproxy: [] }).success).toBe(false);
    expect(proxyConfigSchema.safeParse(true).success).toBe(false);
  });
});

describe('connectWebSocket through a proxy', () => {
  let pki: TestPki;
  let other: TestPki;
  let tls: { cert: string; key: string; ca: string };
  let relayPem: { cert: string; key: string };
  let otherRelayPem: { cert: string; key: string };

  beforeAll(async () => {
    [pki, other] = [await makeTestPki(), await makeTestPki()];
    const read = async (f: { cert: string; key: string }) => ({ cert: await readFile(f.cert, 'utf8'), key: await readFile(f.key, 'utf8') });
    const alice = await read(pki.files('user', 'alice'));
    tls = { ...alice, ca: await readFile(pki.ca, 'utf8') };
    relayPem = await read(pki.files('relay', 'relay-1'));
    otherRelayPem = await read(other.files('relay', 'relay-1'));
  }, 120_000);
  afterAll(async () => {
    await pki?.cleanup();
    await other?.cleanup();
  });

  /** A relay-shaped wss server on 127.0.0.1 recording the SNI each TLS client sent. */
  async function wssServer(): Promise<{ port: number; servernames: Array<string | false | null> }> {
    const servernames: Array<string | false | null> = [];
    const server = createHttpsServer({ ...relayPem, ca: tls.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' });
    const wss = createWebSocketServer({ maxPayload: 1024 });
    const sockets = new Set<Duplex>();
    server.on('secureConnection', (s: TLSSocket) => servernames.push(s.servername));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      sockets.add(socket);
      acceptUpgrade(wss, req, socket, head).then((ws) => ws.resume(), () => undefined);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(async () => {
      for (const s of sockets) s.destroy();
      server.close();
      server.closeAllConnections();
      await once(server, 'close');
    });
    return { port: (server.address() as AddressInfo).port, servernames };
  }

  it('runs TLS over the tunnel with the relay name as SNI; the proxy saw one CONNECT', async () => {
    const server = await wssServer();
    const p = await proxy({ auth: CREDS, routes: { 'relay.hospital.example': '127.0.0.1' } });
    const via: HttpProxy = parseProxyUrl(p.url(CREDS), 'test');
    // Postern matches the relay's SPIFFE ID, not its host name: this check only records the name.
    const checkedNames: string[] = [];
    const checkServerIdentity = (host: string): undefined => void checkedNames.push(host);
    const url = `wss://relay.hospital.example:${server.port}/v1/connector`;
    const { ws, socket } = await connectWebSocket(url, { tls: { ...tls, checkServerIdentity }, maxPayload: 1024, handshakeTimeoutMs: 10_000, proxy: via });
    cleanups.push(() => ws.terminate());
    expect(socket.getProtocol()).toBe('TLSv1.3');
    expect(socket.authorized).toBe(true);
    expect(server.servernames).toEqual(['relay.hospital.example']);
    expect(checkedNames).toEqual(['relay.hospital.example']);
    expect(p.requests).toEqual([{ target: `relay.hospital.example:${server.port}`, status: 200 }]);

    // Node's own host name check, too, is made against the relay's name, never the proxy's.
    const err = await expectCode(connectWebSocket(url, { tls, maxPayload: 1024, handshakeTimeoutMs: 10_000, proxy: via }), 'POSTERN_ERR_ID_NAME_MISMATCH');
    expect(err.message).toMatch(/Host: relay\.hospital\.example\. is not in the cert's altnames/);
  });

  it('a proxy error keeps its code (here the proxy cannot reach the relay)', async () => {
    const p = await proxy();
    const err = await expectCode(
      connectWebSocket('wss://relay.hospital.example:443/', { tls, maxPayload: 1024, handshakeTimeoutMs: 10_000, proxy: parseProxyUrl(p.url(), 'test') }),
      'POSTERN_ERR_PROXY_REFUSED',
    );
    expect(err.message).toContain('relay.hospital.example:443');
  });

  it('one deadline covers the CONNECT and the TLS and WebSocket handshakes after it', async () => {
    // Answers 200, then the "relay" behind it never speaks.
    const blackHole = await rawServer((s) => s.once('data', () => s.write('HTTP/1.1 200 OK\r\n\r\n')));
    const err = await expectCode(
      connectWebSocket('wss://relay.hospital.example:443/', { tls, maxPayload: 1024, handshakeTimeoutMs: 300, proxy: parseProxyUrl(`http://127.0.0.1:${blackHole.port}`, 'test') }),
      'POSTERN_ERR_WS_HANDSHAKE_TIMEOUT',
    );
    expect(err.message).toContain(`relay.hospital.example (through the HTTP proxy http://127.0.0.1:${blackHole.port}) within handshakeTimeoutMs=300 (proxy CONNECT, TCP connect`);
  });

  it('a TLS-inspecting proxy: POSTERN_ERR_TLS_INTERCEPTED names the proxy as the likely cause', async () => {
    const p = await proxy({ intercept: otherRelayPem });
    const err = await expectCode(
      connectWebSocket('wss://relay.hospital.example:443/', { tls, maxPayload: 1024, handshakeTimeoutMs: 10_000, proxy: parseProxyUrl(p.url(), 'test') }),
      'POSTERN_ERR_TLS_INTERCEPTED',
    );
    expect(err.message).toContain(`through the HTTP proxy http://127.0.0.1:${p.port}`);
    expect(err.message).toMatch(/TLS-inspecting proxy that replaced the relay's certificate/);
    expect(err.details).toMatchObject({ proxy: `http://127.0.0.1:${p.port}` });
  });
});
