/**
 * The two ends of every path bench/run.ts measures, each its own process (forked, driven over
 * IPC: endpoint-protocol.ts) so that their CPU is counted apart from the tunnel between them.
 * `endpoint.js sink`: the target services. `endpoint.js source`: the client of every run.
 */
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  connect as tlsConnect,
  createSecureContext,
  createServer as createTlsServer,
  type SecureContext,
  type TLSSocket,
} from 'node:tls';
import { Agent } from '../../agent-lib/index.js';
import { bulkDuplex, serveDuplex } from './bulk.js';
import { bulkHeader, type TlsFiles } from './protocol.js';
import type { FromSink, FromSource, SinkPorts, Target, ToSink, ToSource } from './endpoint-protocol.js';

const role = process.argv[2];
if (role !== 'source' && role !== 'sink') throw new Error(`usage: endpoint.js source|sink (got ${role})`);

/** The connector the bench stack runs (bench/lib/postern-stack.ts). */
const CONNECTOR = 'hq';
const HELLO = Buffer.from('h');
/** A stalled download asks for more than any buffer on the path can hold. */
const STALLED_BYTES = 2 ** 40;
/** What the stalled reader takes before it stops, so the stream is known to be flowing first. */
const STALL_AFTER = 256 * 1024;

function send(m: FromSource | FromSink): void {
  process.send!(m);
}

function fail(err: unknown): void {
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  process.stderr.write(`bench ${role}: ${message}\n`);
  send({ type: 'failed', message });
}

async function loadTls(files: TlsFiles): Promise<{ ca: string; cert: string; key: string }> {
  const [ca, cert, key] = await Promise.all([readFile(files.ca, 'utf8'), readFile(files.cert, 'utf8'), readFile(files.key, 'utf8')]);
  return { ca, cert, key };
}

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

// --- sink ----------------------------------------------------------------------------------

/** Open hello connections: the far ends of idle streams. */
let helloOpen = 0;
let helloWaiter: { atMost: number; resolve: () => void } | undefined;

function helloClosed(): void {
  helloOpen--;
  if (helloWaiter && helloOpen <= helloWaiter.atMost) {
    helloWaiter.resolve();
    helloWaiter = undefined;
  }
}

/** A peer that leaves mid-transfer (the fairness run's stalled reader) is expected. */
const ignore = (): void => {};

async function sinkListen(files: TlsFiles): Promise<SinkPorts> {
  const tls = { ...(await loadTls(files)), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' as const };
  const hello = (s: Socket | TLSSocket): void => {
    helloOpen++;
    s.once('close', helloClosed);
    s.on('error', ignore);
    s.write(HELLO);
    s.resume();
  };
  const bulkServer = createNetServer({ noDelay: true }, (s) => serveDuplex(s, ignore));
  const bulkTlsServer = createTlsServer(tls, (s) => {
    s.setNoDelay(true);
    serveDuplex(s, ignore);
  });
  const helloServer = createNetServer({ noDelay: true }, hello);
  const helloTlsServer = createTlsServer(tls, (s) => {
    s.setNoDelay(true);
    hello(s);
  });
  for (const server of [bulkServer, bulkTlsServer, helloServer, helloTlsServer]) server.on('error', fail);
  return {
    bulk: await listen(bulkServer),
    bulkTls: await listen(bulkTlsServer),
    hello: await listen(helloServer),
    helloTls: await listen(helloTlsServer),
  };
}

async function sink(m: ToSink): Promise<void> {
  switch (m.type) {
    case 'listen':
      send({ type: 'listening', ports: await sinkListen(m.tls) });
      return;
    case 'await-hello':
      if (helloOpen > m.atMost) await new Promise<void>((resolve) => (helloWaiter = { atMost: m.atMost, resolve }));
      send({ type: 'hello-count', count: helloOpen });
      return;
    case 'exit':
      process.exit(0);
  }
}

// --- source --------------------------------------------------------------------------------

let tlsContext: SecureContext | undefined;
let agent: Agent | undefined;
const held: Duplex[] = [];

/** A connection to `to`, resolved once it can carry bytes (TCP connected, TLS handshake done, dial connected). */
async function open(to: Target): Promise<Duplex> {
  switch (to.kind) {
    case 'tcp': {
      const s = netConnect({ host: '127.0.0.1', port: to.port, noDelay: true });
      await once(s, 'connect');
      return s;
    }
    case 'tls': {
      if (!tlsContext) throw new Error('tls target before init');
      const s = tlsConnect({ host: '127.0.0.1', port: to.port, servername: 'localhost', secureContext: tlsContext, minVersion: 'TLSv1.3' });
      await once(s, 'secureConnect');
      s.setNoDelay(true);
      return s;
    }
    case 'dial':
      if (!agent) throw new Error('dial target before init');
      return agent.dial({ connector: CONNECTOR, target: to.target });
  }
}

/** connect → first byte of the hello service, in ms. */
async function firstByte(to: Target): Promise<number> {
  const start = performance.now();
  const s = await open(to);
  await once(s, 'data');
  const ms = performance.now() - start;
  s.destroy();
  return ms;
}

async function bulk(to: Target, dir: 'up' | 'down', bytes: number, streams: number): Promise<{ ms: number; bytes: number }> {
  const per = Math.floor(bytes / streams);
  const conns = await Promise.all(Array.from({ length: streams }, () => open(to)));
  const start = performance.now();
  await Promise.all(conns.map((c) => bulkDuplex(c, dir, per)));
  const ms = performance.now() - start;
  for (const c of conns) c.destroy();
  return { ms, bytes: per * streams };
}

/** A download whose reader stops once it has seen it flow. */
async function stalledDownload(to: Target): Promise<{ socket: Duplex; received: () => number }> {
  const s = await open(to);
  let got = 0;
  s.on('error', ignore);
  s.write(bulkHeader('down', STALLED_BYTES));
  await new Promise<void>((resolve) => {
    const onData = (chunk: Buffer): void => {
      got += chunk.length;
      if (got >= STALL_AFTER) {
        s.off('data', onData);
        s.pause();
        resolve();
      }
    };
    s.on('data', onData);
  });
  return { socket: s, received: () => got };
}

async function fair(to: Target, busy: number, bytesEach: number, stalled: boolean): Promise<FromSource> {
  const stall = stalled ? await stalledDownload(to) : undefined;
  try {
    const r = await bulk(to, 'down', bytesEach * busy, busy);
    return { type: 'fair-done', ...r, stalledBytes: stall?.received() ?? 0 };
  } finally {
    stall?.socket.destroy();
  }
}

async function idleOpen(to: Target, count: number, concurrency: number): Promise<number> {
  const start = performance.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      const s = await open(to);
      s.on('error', ignore);
      s.resume();
      held.push(s);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return performance.now() - start;
}

async function probe(to: Target, retryMs: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (let attempts = 1; ; attempts++) {
    try {
      await firstByte(to);
      return attempts;
    } catch (err) {
      if (performance.now() > deadline) throw new Error(`no dial succeeded within ${timeoutMs} ms (${attempts} attempts)`, { cause: err });
      // The relay is down or the connector not back yet: a short, fixed pause bounds the resolution.
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  }
}

function gcMemory(): { rss: number; heapUsed: number } {
  if (global.gc) {
    global.gc();
    global.gc();
  }
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed };
}

async function source(m: ToSource): Promise<void> {
  switch (m.type) {
    case 'init': {
      tlsContext = createSecureContext({ ...(await loadTls(m.tls)), minVersion: 'TLSv1.3' });
      agent = new Agent(m.agent);
      await agent.ping();
      send({ type: 'ready' });
      return;
    }
    case 'bulk':
      send({ type: 'bulk-done', ...(await bulk(m.to, m.dir, m.bytes, m.streams)) });
      return;
    case 'setup': {
      const ms: number[] = [];
      for (let i = 0; i < m.count; i++) ms.push(await firstByte(m.to));
      send({ type: 'setup-done', ms });
      return;
    }
    case 'fair':
      send(await fair(m.to, m.busy, m.bytesEach, m.stalled));
      return;
    case 'idle-open':
      send({ type: 'idle-opened', ms: await idleOpen(m.to, m.count, m.concurrency), count: m.count });
      return;
    case 'idle-close':
      for (const s of held.splice(0)) s.destroy();
      send({ type: 'idle-closed' });
      return;
    case 'probe':
      send({ type: 'probe-done', attempts: await probe(m.to, m.retryMs, m.timeoutMs) });
      return;
    case 'mem':
      send({ type: 'mem', ...gcMemory() });
      return;
    case 'exit':
      await agent?.close();
      process.exit(0);
  }
}

process.on('message', (m: ToSource | ToSink) => {
  (role === 'sink' ? sink(m as ToSink) : source(m as ToSource)).catch(fail);
});
