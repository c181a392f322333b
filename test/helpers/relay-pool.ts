import { mkdir, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { TestPki } from './pki.js';
import { startPostern, type ChildHandle, type LogLine } from './processes.js';

/**
 * Relays, a connector and `postern agent forward` as real processes, for the drain and restart
 * tests: unlike startStack, relays can be several, stopped and started again on the same port,
 * and the connector can start before any relay exists.
 */
export interface PoolRelay {
  name: string;
  /** 0 until the first start: the port the kernel gave it, kept for every restart. */
  port: number;
  url: string;
  handle: ChildHandle | undefined;
}

export interface PoolOptions {
  pki: TestPki;
  /** Sub-directory of the PKI's temp dir for this pool's files. */
  name: string;
  /** Targets the policy and the connector's allowlist both name (host:port). */
  targets: string[];
  /** drain.graceMs of every relay. */
  graceMs?: number;
}

export interface Pool {
  dir: string;
  relays: PoolRelay[];
  /** Adds a relay to the pool (not started). `port` fixes its port (a released reservation). */
  addRelay(name: string, port?: number): PoolRelay;
  /** Starts (or restarts, on the same port) a relay; resolves with its relay.listening line. */
  startRelay(relay: PoolRelay): Promise<LogLine>;
  /** Starts the connector with a tunnel to every relay of `relays`. */
  startConnector(relays: PoolRelay[]): Promise<ChildHandle>;
  /** Starts `postern agent forward` as alice with `relay` = the first, `relays` = the others. */
  forward(relays: PoolRelay[], target: string): Promise<{ handle: ChildHandle; port: number }>;
  stop(): Promise<void>;
}

export async function startPool(o: PoolOptions): Promise<Pool> {
  const { pki } = o;
  const dir = join(pki.dir, o.name);
  await mkdir(dir, { recursive: true });
  const children = new Set<ChildHandle>();
  const spawn = (name: string, args: string[]): ChildHandle => {
    const handle = startPostern(name, args);
    children.add(handle);
    return handle;
  };
  await writeFile(
    join(dir, 'policy.yaml'),
    yaml({
      version: 1,
      trustDomain: pki.trustDomain,
      orgs: { 'st-mary': { connectors: { hq: { targets: o.targets } } } },
      rules: [{ id: 'alice-hq', org: 'st-mary', principals: ['user/alice'], connector: 'hq', targets: o.targets, action: 'allow' }],
    }),
  );
  const relays: PoolRelay[] = [];
  const alice = pki.files('user', 'alice');

  const pool: Pool = {
    dir,
    relays,
    addRelay(name, port = 0) {
      const relay: PoolRelay = { name, port, url: `wss://localhost:${port}`, handle: undefined };
      relays.push(relay);
      return relay;
    },
    async startRelay(relay) {
      const cert = pki.files('relay', 'relay-1');
      const file = join(dir, `${relay.name}.yaml`);
      await writeFile(
        file,
        yaml({
          trustDomain: pki.trustDomain,
          listen: `127.0.0.1:${relay.port}`,
          tls: { cert: cert.cert, key: cert.key, ca: pki.ca, crl: pki.crl },
          policy: { file: 'policy.yaml' },
          drain: { graceMs: o.graceMs ?? 20_000 },
          admin: false,
        }),
      );
      relay.handle = spawn(relay.name, ['relay', '--config', file, '--log-format', 'json', '--log-level', 'debug']);
      const listening = await relay.handle.waitFor('relay.listening');
      relay.port = Number(listening['port']);
      relay.url = `wss://localhost:${relay.port}`;
      return listening;
    },
    async startConnector(list) {
      const cert = pki.files('connector', 'hq');
      const file = join(dir, 'connector.yaml');
      await writeFile(
        file,
        yaml({
          trustDomain: pki.trustDomain,
          relays: list.map((r) => r.url),
          tls: { cert: cert.cert, key: cert.key, ca: pki.ca, crl: pki.crl },
          allowlist: { targets: o.targets },
          admin: false,
        }),
      );
      return spawn('connector', ['connector', '--config', file, '--log-format', 'json', '--log-level', 'debug']);
    },
    async forward(list, target) {
      const file = join(dir, 'agent.yaml');
      const [first, ...others] = list;
      await writeFile(
        file,
        yaml({
          trustDomain: pki.trustDomain,
          relay: first!.url,
          ...(others.length > 0 ? { relays: others.map((r) => r.url) } : {}),
          tls: { cert: alice.cert, key: alice.key, ca: pki.ca, crl: pki.crl },
        }),
      );
      const handle = spawn('forward', ['agent', 'forward', '--config', file, '--listen', '127.0.0.1:0', '--connector', 'hq', '--target', target, '--log-format', 'json', '--log-level', 'debug']);
      const line = await handle.waitFor('forward.listening');
      return { handle, port: (line['address'] as { port: number }).port };
    },
    async stop() {
      await Promise.all([...children].map((c) => c.stop('SIGTERM')));
    },
  };
  return pool;
}

/** The first line matching `match` that `handle` prints from now on (earlier lines do not count). */
export function nextLine(handle: ChildHandle, match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine> {
  const from = handle.lines.length;
  return handle.waitFor((l) => match(l) && handle.lines.indexOf(l) >= from, timeoutMs);
}

/** A TCP echo server on 127.0.0.1 (the tunnel's target for round trips); half-close is echoed too. */
export async function echoServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * One new connection to the forward's local port (so one new dial through the tunnel): sends
 * `payload`, resolves true when the same bytes came back, false when the connection ended or
 * failed before that.
 */
export function echoRoundTrip(port: number, payload: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const socket = connect({ host: '127.0.0.1', port, noDelay: true }, () => socket.write(payload));
    const finish = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= payload.length) finish(Buffer.concat(chunks).equals(payload));
    });
    socket.once('error', () => finish(false));
    socket.once('close', () => finish(got >= payload.length && Buffer.concat(chunks).equals(payload)));
  });
}

/** Reserves a port from the kernel and releases it (for "the relay does not exist yet"). */
export async function releasedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Config files are YAML; JSON is YAML. */
function yaml(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
