import { request, Agent as HttpAgent } from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { adminRoutes, jsonReply, startAdmin, startAdminServer, type AdminServer, type Readiness } from '../../../src/admin/index.js';
import { isPosternError } from '../../../src/errors.js';
import { createLogger } from '../../../src/log.js';
import { createMetrics } from '../../../src/metrics/index.js';
import { parsePromText, valueOf } from './prom-text.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function fetchRaw(url: string, o: { method?: string; headers?: Record<string, string>; body?: string; agent?: HttpAgent } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? 'GET', headers: o.headers, agent: o.agent ?? false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end(o.body);
  });
}

/** Writes `raw` on a plain TCP connection and resolves with everything the server sent before it closed. */
function rawExchange(port: number, raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => { got += c; });
    socket.once('close', () => resolve(got));
    socket.once('error', reject);
    socket.write(raw);
  });
}

function logLines(): { logger: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ name: 'test', level: 'debug', destination: { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) } });
  return { logger, lines };
}

const servers: AdminServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(routes: Parameters<typeof startAdminServer>[0]['routes'], limits?: Parameters<typeof startAdminServer>[0]['limits']) {
  const { logger, lines } = logLines();
  const server = await startAdminServer({ listen: { host: '127.0.0.1', port: 0 }, routes, logger, ...(limits ? { limits } : {}) });
  servers.push(server);
  return { server, lines };
}

describe('admin server', () => {
  it('serves its routes with GET, logs the address it got for port 0, and answers 404 elsewhere', async () => {
    const { server, lines } = await start({ '/hello': () => jsonReply(200, { hi: true }) });
    expect(server.address.port).toBeGreaterThan(0);
    expect(lines.find((l) => l['event'] === 'admin.listening')).toMatchObject({ address: `127.0.0.1:${server.address.port}`, port: server.address.port });

    const ok = await fetchRaw(`${server.url}/hello?verbose=1`);
    expect(ok).toMatchObject({ status: 200, body: '{"hi":true}\n' });
    expect(ok.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(ok.headers['cache-control']).toBe('no-store');

    for (const path of ['/', '/hello/', '/HELLO', '/metrics', '/hello%00']) {
      const missing = await fetchRaw(`${server.url}${path}`);
      expect(missing.status, path).toBe(404);
      expect(JSON.parse(missing.body)).toMatchObject({ code: 'not_found' });
    }
    // A request target in absolute form is not a path of ours.
    expect(await rawExchange(server.address.port, 'GET http://x/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 404 /);
  });

  it('answers 405 with Allow: GET to other methods, and closes the connection', async () => {
    const { server } = await start({ '/hello': () => jsonReply(200, {}) });
    for (const method of ['POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS']) {
      const reply = await fetchRaw(`${server.url}/hello`, { method, ...(method === 'POST' ? { body: 'x'.repeat(1000), headers: { 'content-length': '1000' } } : {}) });
      expect(reply.status, method).toBe(405);
      expect(reply.headers['allow']).toBe('GET');
      expect(reply.headers['connection']).toBe('close');
    }
  });

  it('reads no request body: a GET announcing one gets 413 and a closed connection', async () => {
    let called = 0;
    const { server } = await start({ '/hello': () => { called++; return jsonReply(200, {}); } });
    const reply = await fetchRaw(`${server.url}/hello`, { body: 'y'.repeat(10_000), headers: { 'content-type': 'text/plain', 'content-length': '10000' } });
    expect(reply.status).toBe(413);
    expect(reply.headers['connection']).toBe('close');
    // A pipelined request hidden in the body is never run.
    const smuggled = await rawExchange(server.address.port, 'GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(smuggled.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    expect(called).toBe(0);
  });

  it('bounds headers (431), slow headers (408) and answers (500 instead of an oversized one)', async () => {
    const { server, lines } = await start(
      { '/big': () => jsonReply(200, { data: 'z'.repeat(2000) }), '/small': () => jsonReply(200, {}) },
      { maxHeaderBytes: 1024, headersTimeoutMs: 200, requestTimeoutMs: 400, maxResponseBytes: 1000 },
    );
    const overflow = await rawExchange(server.address.port, `GET /small HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(4000)}\r\n\r\n`);
    expect(overflow).toMatch(/^HTTP\/1\.1 431 /);

    // Headers never finished: the server ends the connection by itself (the test only awaits its close).
    const slow = await rawExchange(server.address.port, 'GET /small HTTP/1.1\r\nHost: x\r\n');
    expect(slow).toMatch(/^HTTP\/1\.1 408 /);

    const big = await fetchRaw(`${server.url}/big`);
    expect(big.status).toBe(500);
    expect(big.body.length).toBeLessThan(1000);
    expect(lines.find((l) => l['event'] === 'admin.response-too-large')).toMatchObject({ path: '/big', maxResponseBytes: 1000 });
  });

  it('a route that throws answers 500 with a code and logs the error, and the server keeps serving', async () => {
    const { server, lines } = await start({ '/boom': () => { throw new Error('kaboom'); }, '/ok': () => jsonReply(200, {}) });
    const reply = await fetchRaw(`${server.url}/boom`);
    expect(reply.status).toBe(500);
    expect(JSON.parse(reply.body)).toMatchObject({ code: 'POSTERN_ERR_INTERNAL' });
    expect(reply.body).not.toContain('kaboom');
    expect(lines.find((l) => l['event'] === 'admin.internal')).toBeDefined();
    expect((await fetchRaw(`${server.url}/ok`)).status).toBe(200);
  });

  it('refuses to start on an address in use with POSTERN_ERR_ADMIN_LISTEN naming it', async () => {
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const port = (holder.address() as AddressInfo).port;
    try {
      const err = await startAdminServer({ listen: { host: '127.0.0.1', port }, routes: {} }).catch((e: unknown) => e);
      expect(isPosternError(err, 'POSTERN_ERR_ADMIN_LISTEN')).toBe(true);
      expect((err as Error).message).toContain(`127.0.0.1:${port}`);
      expect((err as Error).message).toContain('EADDRINUSE');
    } finally {
      await new Promise((r) => holder.close(r));
    }
  });

  it('close() ends idle keep-alive connections at once and is idempotent', async () => {
    const { server } = await start({ '/ok': () => jsonReply(200, {}) });
    const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
    try {
      expect((await fetchRaw(`${server.url}/ok`, { agent })).status).toBe(200);
      await Promise.all([server.close(), server.close()]);
      await expect(fetchRaw(`${server.url}/ok`)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    } finally {
      agent.destroy();
    }
  });

  it('warns when it listens beyond loopback', async () => {
    const { logger, lines } = logLines();
    const server = await startAdminServer({ listen: { host: '0.0.0.0', port: 0 }, routes: {}, logger });
    servers.push(server);
    expect(lines.find((l) => l['event'] === 'admin.exposed')).toBeDefined();
    const local = await start({});
    expect(local.lines.find((l) => l['event'] === 'admin.exposed')).toBeUndefined();
  });
});

describe('admin routes', () => {
  it('/healthz, /readyz flipping with the readiness, /metrics as Prometheus text, /v1/status with the version', async () => {
    const metrics = createMetrics('relay');
    metrics.readGauges({ tunnelsUp: () => 3 });
    let readiness: Readiness = { ready: false, reason: 'not listening yet' };
    const { logger } = logLines();
    const server = (await startAdmin({ listen: { host: '127.0.0.1', port: 0 } }, { metrics, readiness: () => readiness, status: () => ({ draining: false }) }, logger))!;
    servers.push(server);

    expect(await fetchRaw(`${server.url}/healthz`)).toMatchObject({ status: 200 });

    let ready = await fetchRaw(`${server.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.body)).toEqual({ ready: false, reason: 'not listening yet' });
    readiness = { ready: true };
    ready = await fetchRaw(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({ ready: true });
    readiness = { ready: false, reason: 'draining' };
    expect((await fetchRaw(`${server.url}/readyz`)).status).toBe(503);

    const scraped = await fetchRaw(`${server.url}/metrics`);
    expect(scraped.status).toBe(200);
    expect(scraped.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(valueOf(parsePromText(scraped.body), 'postern_tunnels_up')).toBe(3);

    const status = await fetchRaw(`${server.url}/v1/status`);
    expect(status.status).toBe(200);
    const pkg = (await import('../../../package.json', { with: { type: 'json' } })).default as { version: string };
    expect(JSON.parse(status.body)).toMatchObject({ component: 'relay', version: pkg.version, node: process.version, draining: false });
  });

  it('admin: false starts nothing and says so', async () => {
    const { logger, lines } = logLines();
    const server = await startAdmin(false, { metrics: createMetrics('connector'), readiness: () => ({ ready: true }), status: () => ({}) }, logger);
    expect(server).toBeUndefined();
    expect(lines.find((l) => l['event'] === 'admin.off')).toBeDefined();
  });

  it('routes cover exactly the four endpoints', () => {
    const routes = adminRoutes({ metrics: createMetrics('agent'), readiness: () => ({ ready: true }), status: () => ({}) });
    expect(Object.keys(routes).sort()).toEqual(['/healthz', '/metrics', '/readyz', '/v1/status']);
  });
});
