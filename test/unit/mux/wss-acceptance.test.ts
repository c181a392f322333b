import { afterAll, beforeAll, describe } from 'vitest';
import { EventEmitter, once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { acceptUpgrade, connectWebSocket, createWebSocketServer, refuseUpgrade, wsTransport, type WebSocket } from '../../../src/mux/ws-transport.js';
import type { FrameTransport } from '../../../src/mux/transport.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { runSessionAcceptance, type TransportPair } from '../../helpers/session-acceptance.js';

/**
 * The session acceptance suite over a real wss connection on 127.0.0.1: TLS 1.3 with client
 * certificates from `postern pki` (connector hq dialling relay-1), the certificate checked at
 * the upgrade, one FrameTransport per end. The suite's fake clock drives only session timers;
 * the bytes travel through the kernel, TLS and ws for real.
 *
 * The frame cap is generous here (not the session's maxMessageSize) so that the suite's
 * oversized-frame cases reach the session's own checks instead of ws's maxPayload (which the
 * adapter's tests cover).
 */
const MAX_PAYLOAD = 4 * 1024 * 1024;

let pki: TestPki;
let server: Server;
let url: string;
let clientTls: { ca: string; cert: string; key: string };
const accepted = new EventEmitter();
const sockets = new Set<Duplex>();

beforeAll(async () => {
  pki = await makeTestPki();
  const relay = pki.files('relay', 'relay-1');
  const hq = pki.files('connector', 'hq');
  const ca = await readFile(pki.ca, 'utf8');
  clientTls = { ca, cert: await readFile(hq.cert, 'utf8'), key: await readFile(hq.key, 'utf8') };
  server = createHttpsServer({
    ca,
    cert: await readFile(relay.cert, 'utf8'),
    key: await readFile(relay.key, 'utf8'),
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.3',
  });
  const wss = createWebSocketServer({ maxPayload: MAX_PAYLOAD });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    if (!(socket as TLSSocket).authorized) {
      refuseUpgrade(socket, 401, 'POSTERN_ERR_TLS_CERT_UNTRUSTED', 'a client certificate is required');
      return;
    }
    acceptUpgrade(wss, req, socket, head).then(
      (ws) => accepted.emit('ws', ws),
      (err: unknown) => accepted.emit('error', err),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `wss://localhost:${(server.address() as AddressInfo).port}/v1/tunnel`;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  server.close();
  await once(server, 'close');
  await pki.cleanup();
});

/** Resolves when the transport's WebSocket has closed (its 'close' event). */
function closedSocket(ws: WebSocket): Promise<void> {
  return ws.readyState === ws.CLOSED ? Promise.resolve() : once(ws, 'close').then(() => undefined);
}

async function wssPair(): Promise<TransportPair> {
  const serverSide = once(accepted, 'ws') as Promise<[WebSocket]>;
  const { ws: clientWs } = await connectWebSocket(url, { tls: clientTls, maxPayload: MAX_PAYLOAD, handshakeTimeoutMs: 10_000 });
  const [serverWs] = await serverSide;
  const client: FrameTransport = wsTransport(clientWs);
  const serverT: FrameTransport = wsTransport(serverWs);
  return {
    client,
    server: serverT,
    close: async () => {
      clientWs.terminate();
      serverWs.terminate();
      await Promise.all([closedSocket(clientWs), closedSocket(serverWs)]);
    },
  };
}

describe('session acceptance over real wss (mTLS, 127.0.0.1)', () => {
  // Fewer bulk streams than in memory: every byte crosses TLS twice on a shared 2-core machine.
  runSessionAcceptance(wssPair, { bulkStreams: 100, bulkBytes: 256 * 1024 });
});
