import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { once, EventEmitter } from 'node:events';
import { createServer as createHttpsServer, request as httpsRequest, type Server } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  SUBPROTOCOL,
  acceptUpgrade,
  connectWebSocket,
  createWebSocketServer,
  refuseUpgrade,
  wsServerOptions,
  wsTransport,
  type WebSocket,
  type WsFrameTransport,
} from '../../../src/mux/ws-transport.js';
import type { FrameTransportHandlers } from '../../../src/mux/transport.js';
import { Session, type IncomingOpen } from '../../../src/mux/session.js';
import { isPosternError, type PosternError } from '../../../src/errors.js';
import { makeTestPki } from '../../helpers/pki.js';

interface Pem {
  caPem: string;
  relay: { cert: string; key: string };
  alice: { cert: string; key: string };
}

/** Certificates made by our own `postern pki` CLI, read into memory. */
async function testPki(): Promise<Pem & { cleanup(): Promise<void> }> {
  const made = await makeTestPki();
  const read = async (f: { cert: string; key: string }) => ({ cert: await readFile(f.cert, 'utf8'), key: await readFile(f.key, 'utf8') });
  return {
    caPem: await readFile(made.ca, 'utf8'),
    relay: await read(made.files('relay', 'relay-1')),
    alice: await read(made.files('user', 'alice')),
    cleanup: () => made.cleanup(),
  };
}

let pki: Pem;
beforeAll(async () => {
  const made = await testPki();
  pki = made;
  return () => made.cleanup();
});

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

interface TestServer {
  url: string;
  server: Server;
  /** Resolves with the next server-side WebSocket (or rejects with the next refusal). */
  next(): Promise<WebSocket>;
  handleUpgrade: ReturnType<typeof vi.fn>;
}

/**
 * A relay-shaped server: https with client certificates requested, the certificate checked in
 * the upgrade handler through the TLS socket's `authorized` flag BEFORE any WebSocket exists.
 */
async function startServer(o: { maxPayload?: number; onUpgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean } = {}): Promise<TestServer> {
  const server = createHttpsServer({
    cert: pki.relay.cert,
    key: pki.relay.key,
    ca: pki.caPem,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.3',
  });
  const wss = createWebSocketServer({ maxPayload: o.maxPayload ?? 64 * 1024 });
  const handleUpgrade = vi.spyOn(wss, 'handleUpgrade');
  const events = new EventEmitter();
  const sockets = new Set<Duplex>();
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    if (o.onUpgrade && !o.onUpgrade(req, socket, head)) return;
    const tlsSocket = socket as TLSSocket;
    if (!tlsSocket.authorized) {
      refuseUpgrade(socket, 401, 'POSTERN_ERR_TLS_CERT_UNTRUSTED', `a client certificate is required (${String(tlsSocket.authorizationError)})`);
      return;
    }
    acceptUpgrade(wss, req, socket, head).then(
      (ws) => events.emit('accepted', ws),
      (err: unknown) => events.emit('refused', err),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, 'close');
  });
  return {
    url: `wss://localhost:${port}/tunnel`,
    server,
    handleUpgrade,
    next: () =>
      new Promise<WebSocket>((resolve, reject) => {
        const onAccepted = (ws: WebSocket): void => {
          events.off('refused', onRefused);
          resolve(ws);
        };
        const onRefused = (err: unknown): void => {
          events.off('accepted', onAccepted);
          reject(err);
        };
        events.once('accepted', onAccepted);
        events.once('refused', onRefused);
      }),
  };
}

function clientTls(): { cert: string; key: string; ca: string } {
  return { cert: pki.alice.cert, key: pki.alice.key, ca: pki.caPem };
}

async function connectPair(server: TestServer, maxPayload = 64 * 1024): Promise<{ client: WebSocket; serverWs: WebSocket; socket: TLSSocket }> {
  const accepted = server.next();
  const { ws, socket } = await connectWebSocket(server.url, { tls: clientTls(), maxPayload, handshakeTimeoutMs: 10_000 });
  const serverWs = await accepted;
  cleanups.push(() => {
    ws.terminate();
    serverWs.terminate();
  });
  return { client: ws, serverWs, socket };
}

/** Handlers that record what the transport delivers; `closed` resolves with the close error. */
function recorder(): FrameTransportHandlers & { frames: Buffer[]; drains: number; closed: Promise<Error | undefined>; closeCalls: number } {
  let resolveClosed!: (err: Error | undefined) => void;
  const rec = {
    frames: [] as Buffer[],
    drains: 0,
    closeCalls: 0,
    closed: new Promise<Error | undefined>((r) => (resolveClosed = r)),
    frame(data: Buffer) {
      rec.frames.push(data);
    },
    drain() {
      rec.drains++;
    },
    close(err?: Error) {
      rec.closeCalls++;
      resolveClosed(err);
    },
  };
  return rec;
}

function frameOf(seq: number, size: number): Buffer {
  const buf = Buffer.alloc(size, seq & 0xff);
  buf.writeUInt32BE(seq, 0);
  return buf;
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<PosternError> {
  try {
    await promise;
  } catch (err) {
    expect(isPosternError(err), String(err)).toBe(true);
    expect((err as PosternError).code, (err as Error).message).toBe(code);
    return err as PosternError;
  }
  throw new Error(`expected a rejection with ${code}`);
}

describe('ws transport over real wss (mTLS, loopback)', () => {
  it('negotiates TLS 1.3, postern.v1 and no extension, and carries frames in order both ways', async () => {
    const server = await startServer();
    const { client, serverWs, socket } = await connectPair(server);
    expect(socket.getProtocol()).toBe('TLSv1.3');
    expect(client.protocol).toBe(SUBPROTOCOL);
    expect(serverWs.protocol).toBe(SUBPROTOCOL);
    expect(client.extensions).toBe('');
    expect(serverWs.extensions).toBe('');

    const a = wsTransport(client);
    const b = wsTransport(serverWs);
    const ra = recorder();
    const rb = recorder();
    a.setHandlers(ra);
    b.setHandlers(rb);

    const sizes = Array.from({ length: 300 }, (_, i) => 4 + ((i * 7919) % 60_000));
    const sent = sizes.map((size, seq) => frameOf(seq, size));
    const arrivedAtB = new Promise<void>((resolve) => {
      rb.frame = (data) => {
        rb.frames.push(data);
        if (rb.frames.length === sent.length) resolve();
      };
    });
    const arrivedAtA = new Promise<void>((resolve) => {
      ra.frame = (data) => {
        ra.frames.push(data);
        if (ra.frames.length === sent.length) resolve();
      };
    });
    for (const f of sent) {
      a.send(f);
      b.send(f);
    }
    await Promise.all([arrivedAtA, arrivedAtB]);
    expect(rb.frames.map((f) => f.readUInt32BE(0))).toEqual(sizes.map((_, i) => i));
    expect(rb.frames.every((f, i) => f.equals(sent[i]!))).toBe(true);
    expect(ra.frames.every((f, i) => f.equals(sent[i]!))).toBe(true);

    a.close();
    await expect(ra.closed).resolves.toBeUndefined();
    await expect(rb.closed).resolves.toBeUndefined();
    expect(ra.closeCalls).toBe(1);
    expect(rb.closeCalls).toBe(1);
  });

  it('keeps frames sent before the peer installed its handlers (the socket is handed over paused)', async () => {
    const server = await startServer();
    const accepted = server.next().then((ws) => {
      const t = wsTransport(ws);
      t.setHandlers(recorder());
      // Sent at once, typically in the same TCP segment as the 101 response.
      for (let i = 0; i < 50; i++) t.send(frameOf(i, 16));
      return ws;
    });
    const { ws } = await connectWebSocket(server.url, { tls: clientTls(), maxPayload: 1024, handshakeTimeoutMs: 10_000 });
    const serverWs = await accepted;
    cleanups.push(() => {
      ws.terminate();
      serverWs.terminate();
    });
    // Let any data already read be processed before the session shows up.
    await new Promise((r) => setImmediate(r));
    const t = wsTransport(ws);
    const rec = recorder();
    const all = new Promise<void>((resolve) => {
      rec.frame = (data) => {
        rec.frames.push(data);
        if (rec.frames.length === 50) resolve();
      };
    });
    t.setHandlers(rec);
    await all;
    expect(rec.frames.map((f) => f.readUInt32BE(0))).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('reports backpressure: bufferedAmount rises while the peer does not read, drain fires at the low-water mark and when empty', async () => {
    const server = await startServer({ maxPayload: 128 * 1024 });
    const { client, serverWs } = await connectPair(server, 128 * 1024);
    const sender = wsTransport(serverWs, { highWaterMark: 512 * 1024, lowWaterMark: 64 * 1024 });
    const senderRec = recorder();
    sender.setHandlers(senderRec);
    // The client's WebSocket stays paused (no handlers yet): nothing is read on that side.
    const frame = randomBytes(64 * 1024);
    let sentFrames = 0;
    while (sender.bufferedAmount <= sender.highWaterMark && sentFrames < 2048) {
      sender.send(frame);
      sentFrames++;
    }
    expect(sender.bufferedAmount).toBeGreaterThan(sender.highWaterMark);
    expect(senderRec.drains).toBe(0);

    const drainedAt: number[] = [];
    const emptied = new Promise<void>((resolve) => {
      senderRec.drain = () => {
        drainedAt.push(sender.bufferedAmount);
        if (sender.bufferedAmount === 0) resolve();
      };
    });
    const receiver = wsTransport(client);
    const rec = recorder();
    let received = 0;
    const allReceived = new Promise<void>((resolve) => {
      rec.frame = (data) => {
        expect(data.equals(frame)).toBe(true);
        if (++received === sentFrames) resolve();
      };
    });
    receiver.setHandlers(rec);
    await Promise.all([emptied, allReceived]);
    // Once at the low-water mark (the socket still has work), once more when empty: a session
    // pausing below lowWaterMark is woken too. Both may coincide in one write callback.
    expect(drainedAt[0]).toBeLessThanOrEqual(sender.lowWaterMark);
    expect(drainedAt.at(-1)).toBe(0);
    expect(drainedAt.length).toBeLessThanOrEqual(2);
  });

  it('a session pausing below the transport low-water mark still gets its drain (no deadlock)', async () => {
    const server = await startServer({ maxPayload: 128 * 1024 });
    const { client, serverWs } = await connectPair(server, 128 * 1024);
    // The session stops DATA at 16 KiB queued, far below the transport's 256 KiB low mark.
    const a = new Session(wsTransport(client), { role: 'client', transportHighWaterMark: 16 * 1024 });
    const b = new Session(wsTransport(serverWs), { role: 'server', transportHighWaterMark: 16 * 1024 });
    cleanups.push(() => {
      a.destroy();
      b.destroy();
    });
    const total = 8 * 1024 * 1024;
    const got = new Promise<number>((resolve) => {
      b.on('open', (o: IncomingOpen) => {
        const s = o.accept();
        let n = 0;
        s.on('data', (d: Buffer) => (n += d.length));
        s.on('end', () => resolve(n));
      });
    });
    const stream = await a.open({});
    const chunk = Buffer.alloc(64 * 1024, 7);
    for (let sent = 0; sent < total; sent += chunk.length) {
      if (!stream.write(chunk)) await once(stream, 'drain');
    }
    stream.end();
    expect(await got).toBe(total);
  });

  it('closes with a clear error on an oversized message, without crashing the process', async () => {
    const server = await startServer({ maxPayload: 1024 });
    const { client, serverWs } = await connectPair(server, 1024);
    const a = wsTransport(client);
    const b = wsTransport(serverWs);
    const ra = recorder();
    const rb = recorder();
    a.setHandlers(ra);
    b.setHandlers(rb);
    a.send(Buffer.alloc(1024, 1)); // exactly the cap: accepted
    a.send(Buffer.alloc(1025, 2)); // one byte over
    const serverErr = (await rb.closed) as PosternError;
    expect(serverErr.code).toBe('POSTERN_ERR_WS_MESSAGE_TOO_BIG');
    expect(serverErr.message).toMatch(/frame cap/);
    expect(rb.frames.map((f) => f.length)).toEqual([1024]);
    const clientErr = (await ra.closed) as PosternError;
    expect(clientErr.code).toBe('POSTERN_ERR_WS_CLOSED');
    expect(clientErr.details).toMatchObject({ closeCode: 1009 });
    expect(rb.closeCalls).toBe(1);
  });

  it('applies the cap on the client side too', async () => {
    const server = await startServer({ maxPayload: 64 * 1024 });
    const { client, serverWs } = await connectPair(server, 512);
    const a = wsTransport(client);
    const b = wsTransport(serverWs);
    const ra = recorder();
    a.setHandlers(ra);
    b.setHandlers(recorder());
    b.send(Buffer.alloc(513));
    expect(((await ra.closed) as PosternError).code).toBe('POSTERN_ERR_WS_MESSAGE_TOO_BIG');
  });

  it('refuses a text message with close code 1003', async () => {
    const server = await startServer();
    const { client, serverWs } = await connectPair(server);
    const b = wsTransport(serverWs);
    const rb = recorder();
    b.setHandlers(rb);
    client.resume();
    const clientClosed = once(client, 'close') as Promise<[number, Buffer]>;
    client.send('SELECT 1');
    const err = (await rb.closed) as PosternError;
    expect(err.code).toBe('POSTERN_ERR_WS_TEXT_MESSAGE');
    expect(rb.frames).toHaveLength(0);
    const [code, reason] = await clientClosed;
    expect(code).toBe(1003);
    expect(reason.toString()).toMatch(/binary/);
  });

  it('reports an abrupt loss as 1006 and destroy(err) as that error, asynchronously', async () => {
    const server = await startServer();
    const { client, serverWs } = await connectPair(server);
    const a = wsTransport(client);
    const b = wsTransport(serverWs);
    const ra = recorder();
    const rb = recorder();
    a.setHandlers(ra);
    b.setHandlers(rb);
    const reason = new Error('session gave up');
    b.destroy(reason);
    expect(rb.closeCalls).toBe(0); // not re-entrant
    expect(await rb.closed).toBe(reason);
    const err = (await ra.closed) as PosternError;
    expect(err.code).toBe('POSTERN_ERR_WS_CLOSED');
    expect(err.details).toMatchObject({ closeCode: 1006 });
  });

  it('passes an application close code and clamps a long reason to what a close frame holds', async () => {
    const server = await startServer();
    const { client, serverWs } = await connectPair(server);
    const a = wsTransport(client);
    const b = wsTransport(serverWs);
    const ra = recorder();
    const rb = recorder();
    a.setHandlers(ra);
    b.setHandlers(rb);
    a.close(4001, 'é'.repeat(100));
    const err = (await rb.closed) as PosternError;
    expect(err.code).toBe('POSTERN_ERR_WS_CLOSED');
    expect(err.details['closeCode']).toBe(4001);
    const reason = err.details['reason'] as string;
    expect(Buffer.byteLength(reason)).toBeLessThanOrEqual(123);
    expect(reason).toBe('é'.repeat(61));
    // The side that asked for the close sees a clean end.
    expect(await ra.closed).toBeUndefined();
  });

  it('refuses a client that does not offer postern.v1, before any WebSocket exists', async () => {
    const server = await startServer();
    const refused = expectCode(server.next(), 'POSTERN_ERR_WS_SUBPROTOCOL');
    const res = await rawUpgrade(server.url, { 'Sec-WebSocket-Protocol': 'postern.v0, chat' });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toEqual({
      code: 'POSTERN_ERR_WS_SUBPROTOCOL',
      message: 'this server speaks WebSocket subprotocol "postern.v1"; the client offered "postern.v0", "chat"',
    });
    await refused;
    expect(server.handleUpgrade).not.toHaveBeenCalled();
  });

  it('rejects an upgrade that ws finds malformed', async () => {
    const server = await startServer();
    const refused = expectCode(server.next(), 'POSTERN_ERR_WS_UPGRADE_INVALID');
    const res = await rawUpgrade(server.url, { 'Sec-WebSocket-Protocol': SUBPROTOCOL, 'Sec-WebSocket-Version': '99' });
    expect(res.status).toBe(400);
    await refused;
  });

  it('rejects (never hangs) when the client left while the upgrade handler was still authenticating', async () => {
    let late!: Promise<WebSocket>;
    const lateStarted = new Promise<void>((started) => {
      void startServer({
        onUpgrade: (req, socket, head) => {
          // An authentication that awaits (a CRL lookup, say) while the client disconnects:
          // by the time acceptUpgrade runs, the socket's 'close' has already fired.
          socket.on('error', () => {});
          socket.once('close', () => {
            late = acceptUpgrade(createWebSocketServer({ maxPayload: 1024 }), req, socket, head);
            started();
          });
          socket.destroy();
          return false;
        },
      }).then((server) => rawUpgrade(server.url, { 'Sec-WebSocket-Protocol': SUBPROTOCOL }).catch(() => undefined));
    });
    await lateStarted;
    await expectCode(late, 'POSTERN_ERR_WS_UPGRADE_INVALID');
  });

  it('refuses a client without a certificate at the upgrade, before any WebSocket exists', async () => {
    const server = await startServer();
    const err = await expectCode(
      connectWebSocket(server.url, { tls: { ca: pki.caPem }, maxPayload: 1024, handshakeTimeoutMs: 10_000 }),
      'POSTERN_ERR_TLS_CERT_UNTRUSTED',
    );
    expect(err.details).toMatchObject({ status: 401, remoteCode: 'POSTERN_ERR_TLS_CERT_UNTRUSTED' });
    expect(err.message).toMatch(/HTTP 401.*client certificate is required/);
    expect(server.handleUpgrade).not.toHaveBeenCalled();
  });

  it('surfaces a refusal without a code of ours as POSTERN_ERR_WS_UPGRADE_REFUSED with the body text', async () => {
    const server = await startServer({
      onUpgrade: (_req, socket) => {
        const body = 'relay draining\u0007';
        socket.end(`HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        return false;
      },
    });
    const err = await expectCode(
      connectWebSocket(server.url, { tls: clientTls(), maxPayload: 1024, handshakeTimeoutMs: 10_000 }),
      'POSTERN_ERR_WS_UPGRADE_REFUSED',
    );
    expect(err.details).toMatchObject({ status: 503, remoteMessage: 'relay draining' });
  });

  it('maps a server certificate from an unknown CA to POSTERN_ERR_TLS_INTERCEPTED', async () => {
    const server = await startServer();
    const other = await testPki();
    cleanups.push(() => other.cleanup());
    await expectCode(
      connectWebSocket(server.url, { tls: { cert: pki.alice.cert, key: pki.alice.key, ca: other.caPem }, maxPayload: 1024, handshakeTimeoutMs: 10_000 }),
      'POSTERN_ERR_TLS_INTERCEPTED',
    );
  });

  it('times out a handshake that never completes', async () => {
    const silent = createNetServer((socket) => {
      socket.on('error', () => socket.destroy());
      cleanups.push(() => socket.destroy());
    });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    cleanups.push(() => new Promise((r) => silent.close(r)));
    const { port } = silent.address() as AddressInfo;
    const err = await expectCode(
      connectWebSocket(`wss://127.0.0.1:${port}/`, { tls: clientTls(), maxPayload: 1024, handshakeTimeoutMs: 150 }),
      'POSTERN_ERR_WS_HANDSHAKE_TIMEOUT',
    );
    expect(err.message).toMatch(/handshakeTimeoutMs=150/);
  });

  it('reports a connection reset while connecting as POSTERN_ERR_WS_CONNECT', async () => {
    const rude = createNetServer((socket: Socket) => socket.resetAndDestroy());
    rude.listen(0, '127.0.0.1');
    await once(rude, 'listening');
    cleanups.push(() => new Promise((r) => rude.close(r)));
    const { port } = rude.address() as AddressInfo;
    await expectCode(
      connectWebSocket(`wss://127.0.0.1:${port}/`, { tls: clientTls(), maxPayload: 1024, handshakeTimeoutMs: 10_000 }),
      'POSTERN_ERR_WS_CONNECT',
    );
  });

  it('a relay that resets the connection after the TLS 1.3 handshake (our certificate refused): WS_CONNECT naming that likely cause', async () => {
    const server = await startServer();
    // As the relay does for a revoked client: TLS 1.3 lets the client finish first, then the server drops it.
    server.server.prependListener('secureConnection', (socket: TLSSocket) => socket.destroy());
    const err = await expectCode(connectWebSocket(server.url, { tls: clientTls(), maxPayload: 1024, handshakeTimeoutMs: 10_000 }), 'POSTERN_ERR_WS_CONNECT');
    expect(err.message).toMatch(/ECONNRESET/);
    expect(err.message).toContain('may be refusing our certificate');
  });

  it('validates its options and refuses a non-wss URL', async () => {
    await expectCode(connectWebSocket('ws://localhost:1/', { tls: clientTls(), maxPayload: 1024, handshakeTimeoutMs: 100 }), 'POSTERN_ERR_CONFIG_INVALID');
    await expectCode(connectWebSocket('not a url', { tls: clientTls(), maxPayload: 1024, handshakeTimeoutMs: 100 }), 'POSTERN_ERR_CONFIG_INVALID');
    await expectCode(connectWebSocket('wss://localhost:1/', { tls: clientTls(), maxPayload: 0, handshakeTimeoutMs: 100 }), 'POSTERN_ERR_CONFIG_INVALID');
    expect(() => wsServerOptions({ maxPayload: -1 })).toThrow(/maxPayload/);
    const opts = wsServerOptions({ maxPayload: 4096 });
    expect(opts).toMatchObject({ noServer: true, perMessageDeflate: false, maxPayload: 4096 });
    expect(opts.handleProtocols!(new Set(['x', SUBPROTOCOL]), {} as IncomingMessage)).toBe(SUBPROTOCOL);
    expect(opts.handleProtocols!(new Set(['x']), {} as IncomingMessage)).toBe(false);
  });

  it('refuses water marks in the wrong order', async () => {
    const server = await startServer();
    const { client } = await connectPair(server);
    expect(() => wsTransport(client, { highWaterMark: 1000, lowWaterMark: 1000 })).toThrow(/lowWaterMark/);
    let t: WsFrameTransport | undefined;
    expect(() => (t = wsTransport(client, { highWaterMark: 1000, lowWaterMark: 10 }))).not.toThrow();
    expect(t!.highWaterMark).toBe(1000);
  });

  it('refuseUpgrade only writes error statuses', () => {
    const fake = { on: vi.fn(), writable: true, destroy: vi.fn() } as unknown as Duplex;
    expect(() => refuseUpgrade(fake, 200, 'POSTERN_ERR_INTERNAL', 'no')).toThrow(/400-599/);
  });
});

/** An upgrade request written by hand, to offer what connectWebSocket never would. */
function rawUpgrade(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpsRequest({
      host: '127.0.0.1',
      servername: 'localhost',
      port: u.port,
      path: u.pathname,
      cert: pki.alice.cert,
      key: pki.alice.key,
      ca: pki.caPem,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        'Sec-WebSocket-Version': '13',
        ...headers,
      },
    });
    req.on('upgrade', () => reject(new Error('the server accepted the upgrade')));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}
