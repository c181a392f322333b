/**
 * One side of a bench connection, run as its own process (forked by bench/mux.ts) so that
 * `process.cpuUsage()` and memory are attributable to one end. Driven over IPC (protocol.ts).
 */
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { acceptUpgrade, connectWebSocket, createWebSocketServer, wsTransport } from '../../src/mux/ws-transport.js';
import { MessagePeer, bulkDuplex, serveDuplex } from './bulk.js';
import { MuxRelay, muxClient, muxServer, type MuxClient } from './mux-kind.js';
import { CHUNK, WIDE_WINDOW, type FromPeer, type Kind, type Snapshot, type TlsFiles, type ToPeer } from './protocol.js';

/** Frame cap of the raw-ws comparison: one chunk plus room for a header. */
const RAW_WS_MAX_PAYLOAD = CHUNK + 1024;
const HANDSHAKE_TIMEOUT_MS = 10_000;

const role = process.argv[2];
if (role !== 'server' && role !== 'client') throw new Error(`usage: mux-peer.js server|client (got ${role})`);

function reply(m: FromPeer): void {
  process.send!(m);
}

/** A failure ends this peer: the orchestrator's pending request rejects on the message or the exit. */
function fail(err: unknown): void {
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  process.stderr.write(`bench ${role} peer: ${message}\n`);
  process.send!({ type: 'failed', message } satisfies FromPeer, () => process.exit(1));
}

/** On the server, a connection that ends is the client leaving (or failing, which it reports itself). */
function connectionGone(): void {
  streams = 0;
}

async function loadTls(files: TlsFiles): Promise<{ ca: string; cert: string; key: string }> {
  const [ca, cert, key] = await Promise.all([readFile(files.ca, 'utf8'), readFile(files.cert, 'utf8'), readFile(files.key, 'utf8')]);
  return { ca, cert, key };
}

let streams = 0;
let client: { kind: 'tls'; socket: TLSSocket } | { kind: 'ws'; peer: MessagePeer } | { kind: 'mux'; mux: MuxClient } | undefined;

const windowOf = (kind: Kind): number | undefined => (kind === 'mux-wide' ? WIDE_WINDOW : undefined);

async function listen(kind: Kind, files: TlsFiles, maxStreams: number): Promise<number> {
  const tls = { ...(await loadTls(files)), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' as const };
  if (kind === 'tls') {
    const server = createTlsServer(tls, (socket) => {
      socket.setNoDelay(true);
      streams++;
      serveDuplex(socket, connectionGone);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return (server.address() as AddressInfo).port;
  }
  const server = createHttpsServer(tls);
  const wss = createWebSocketServer({ maxPayload: kind === 'ws' ? RAW_WS_MAX_PAYLOAD : muxServer.maxPayload });
  const relay = kind === 'relay' ? new MuxRelay() : undefined;
  server.on('upgrade', (req, socket: Duplex, head: Buffer) => {
    acceptUpgrade(wss, req, socket, head).then((ws) => {
      const transport = wsTransport(ws);
      if (relay) {
        relay.attach(transport, maxStreams, fail);
        return;
      }
      if (kind === 'ws') {
        streams++;
        new MessagePeer(transport, true, connectionGone);
        return;
      }
      muxServer.serve(transport, maxStreams, windowOf(kind), {
        stream: (s) => {
          streams++;
          serveDuplex(s, connectionGone);
        },
        closed: () => streams--,
        gone: connectionGone,
      });
    }, fail);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

async function connect(kind: Kind, files: TlsFiles, port: number, maxStreams: number): Promise<void> {
  const tls = await loadTls(files);
  if (kind === 'tls') {
    const socket = tlsConnect({ ...tls, host: '127.0.0.1', port, servername: 'localhost', minVersion: 'TLSv1.3' });
    await once(socket, 'secureConnect');
    socket.setNoDelay(true);
    socket.on('error', fail);
    client = { kind, socket };
    return;
  }
  const maxPayload = kind === 'ws' ? RAW_WS_MAX_PAYLOAD : muxClient.maxPayload;
  const dial = async () => wsTransport((await connectWebSocket(`wss://127.0.0.1:${port}/`, { tls, maxPayload, handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS })).ws);
  if (kind === 'relay') {
    // The connector's session first (the relay takes the first arrival for it), then the agent's.
    muxClient.serve(await dial(), maxStreams, (s) => serveDuplex(s, fail), fail);
    client = { kind: 'mux', mux: muxClient.open(await dial(), maxStreams, undefined, fail) };
    return;
  }
  const transport = await dial();
  if (kind === 'ws') client = { kind, peer: new MessagePeer(transport, false, (err) => err && fail(err)) };
  else client = { kind: 'mux', mux: muxClient.open(transport, maxStreams, windowOf(kind), fail) };
}

function snapshot(gc: boolean): Snapshot {
  if (gc && global.gc) {
    // Twice: the first pass may only queue finalizers that free more on the second.
    global.gc();
    global.gc();
  }
  const cpu = process.cpuUsage();
  const mem = process.memoryUsage();
  return {
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    external: mem.external,
    arrayBuffers: mem.arrayBuffers,
    streams: client?.kind === 'mux' ? client.mux.openStreams() : streams,
  };
}

async function handle(m: ToPeer): Promise<void> {
  switch (m.type) {
    case 'listen':
      reply({ type: 'listening', port: await listen(m.kind, m.tls, m.maxStreams) });
      return;
    case 'connect':
      await connect(m.kind, m.tls, m.port, m.maxStreams);
      reply({ type: 'connected' });
      return;
    case 'snap':
      reply({ type: 'snap', snap: snapshot(m.gc) });
      return;
    case 'bulk': {
      if (!client) throw new Error('bulk before connect');
      const per = Math.floor(m.bytes / m.streams);
      const start = process.hrtime.bigint();
      if (client.kind === 'tls') await bulkDuplex(client.socket, m.dir, per);
      else if (client.kind === 'ws') await client.peer.bulk(m.dir, per);
      else {
        const mux = client.mux;
        await Promise.all(
          Array.from({ length: m.streams }, async () => {
            const s = await mux.openStream();
            await bulkDuplex(s, m.dir, per);
            s.end();
            s.resume();
          }),
        );
      }
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      reply({ type: 'bulk-done', ms, bytes: per * m.streams });
      return;
    }
    case 'idle': {
      if (client?.kind !== 'mux') throw new Error('idle streams are a mux measurement');
      const mux = client.mux;
      const start = process.hrtime.bigint();
      await Promise.all(Array.from({ length: m.count }, () => mux.openStream()));
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      reply({ type: 'idle-done', ms, count: m.count });
      return;
    }
    case 'exit':
      process.disconnect();
      process.exit(0);
  }
}

process.on('message', (m: ToPeer) => {
  handle(m).catch(fail);
});
