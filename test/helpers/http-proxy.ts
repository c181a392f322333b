import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, isIP, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Server as TlsServer, type TLSSocket } from 'node:tls';

/**
 * A small HTTP CONNECT proxy for tests, on 127.0.0.1 only, tunnelling only to loopback
 * addresses. Optionally demands Basic credentials, rewrites target hosts (its own "routes": a
 * host the client cannot reach directly), or inspects TLS: it then answers 200 and terminates
 * the client's TLS itself with the certificate given (one from another CA), as a corporate
 * TLS-inspecting middlebox does.
 */
export interface TestProxyOptions {
  auth?: { username: string; password: string };
  /** host → loopback address the proxy dials instead (`127.0.0.2` → `127.0.0.1`). */
  routes?: Record<string, string>;
  intercept?: { cert: string; key: string };
}

export interface TestProxy {
  port: number;
  url(credentials?: { username: string; password: string }): string;
  /** CONNECT requests received, with their target and whether they were let through. */
  readonly requests: ReadonlyArray<{ target: string; status: number }>;
  /** Tunnels carried to a target (status 200, not intercepted). */
  tunnels(): number;
  /** Resolves with the next request answered with `status`. */
  nextRequest(status: number): Promise<{ target: string; status: number }>;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export async function startTestProxy(o: TestProxyOptions = {}): Promise<TestProxy> {
  const requests: Array<{ target: string; status: number }> = [];
  const events = new EventEmitter();
  const sockets = new Set<Duplex>();
  let tunnels = 0;
  const track = (s: Duplex): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const expected = o.auth ? `Basic ${Buffer.from(`${o.auth.username}:${o.auth.password}`).toString('base64')}` : undefined;
  const interceptor = o.intercept ? new TlsServer({ cert: o.intercept.cert, key: o.intercept.key }) : undefined;
  interceptor?.on('secureConnection', (s: TLSSocket) => track(s));
  interceptor?.on('tlsClientError', () => undefined);

  const server: Server = createServer((_req, res) => res.writeHead(405).end());
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    track(client);
    const target = req.url ?? '';
    const answer = (status: number, text: string, headers = ''): void => {
      requests.push({ target, status });
      events.emit('request', { target, status });
      if (status !== 200) client.end(`HTTP/1.1 ${status} ${text}\r\n${headers}Content-Length: 0\r\nConnection: close\r\n\r\n`);
    };
    if (expected !== undefined && req.headers['proxy-authorization'] !== expected) {
      answer(407, 'Proxy Authentication Required', 'Proxy-Authenticate: Basic realm="test proxy"\r\n');
      return;
    }
    if (interceptor) {
      // It dials nothing: it plays the relay itself, with its own certificate.
      answer(200, 'Connection Established');
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) client.unshift(head);
      interceptor.emit('connection', client);
      return;
    }
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(target);
    const host = m ? (m[1] ?? m[2]!) : '';
    const dialHost = o.routes?.[host] ?? host;
    if (!m || !(LOOPBACK.has(dialHost) || (isIP(dialHost) === 4 && dialHost.startsWith('127.')))) {
      answer(403, 'Forbidden');
      return;
    }
    const upstream = connect({ host: dialHost, port: Number(m[3]) });
    track(upstream);
    upstream.once('connect', () => {
      tunnels++;
      answer(200, 'Connection Established');
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      client.pipe(upstream).pipe(client);
    });
    upstream.once('error', () => {
      if (!client.destroyed) answer(502, 'Bad Gateway');
    });
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: (c) => `http://${c ? `${encodeURIComponent(c.username)}:${encodeURIComponent(c.password)}@` : ''}127.0.0.1:${port}`,
    requests,
    tunnels: () => tunnels,
    nextRequest: (status) =>
      new Promise((resolve) => {
        const on = (r: { target: string; status: number }): void => {
          if (r.status !== status) return;
          events.off('request', on);
          resolve(r);
        };
        events.on('request', on);
      }),
    async close() {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}
