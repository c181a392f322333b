import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect as netConnect, createServer, type AddressInfo, type Socket } from 'node:net';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Agent, formatCheckReport, runCheck, startForward, startSocks, type Forward, type SocksProxy } from '../../../agent-lib/index.js';
import { createLogger, type Logger } from '../../../src/log.js';
import { OpenResult } from '../../../src/protocol/reasons.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { connectorSide, material, startFakeRelay, type FakeRelay } from './fake-relay.js';

const run = promisify(execFile);

let pki: TestPki;
let relay: FakeRelay;
const closers: Array<() => Promise<void>> = [];

type Line = Record<string, unknown>;

/** A logger whose JSON lines a test can await (never a sleep). */
function capture(): { logger: Logger; lines: Line[]; waitFor(match: (l: Line) => boolean): Promise<Line> } {
  const lines: Line[] = [];
  const waiters = new Set<{ match: (l: Line) => boolean; resolve: (l: Line) => void }>();
  const logger = createLogger({
    name: 'test',
    level: 'debug',
    destination: {
      write(text: string) {
        const line = JSON.parse(text) as Line;
        lines.push(line);
        for (const w of waiters) {
          if (w.match(line)) {
            waiters.delete(w);
            w.resolve(line);
          }
        }
      },
    },
  });
  return {
    logger,
    lines,
    waitFor: (match) => {
      const seen = lines.find(match);
      return seen ? Promise.resolve(seen) : new Promise((resolve) => waiters.add({ match, resolve }));
    },
  };
}

function newAgent(logger?: Logger): Agent {
  const agent = new Agent({ trustDomain: pki.trustDomain, relay: relay.url, tls: { ...pki.files('user', 'alice'), ca: pki.ca, crl: pki.crl } }, logger ? { logger } : {});
  closers.push(() => agent.close());
  return agent;
}

async function forwardOf(agent: Agent, o: Partial<Parameters<typeof startForward>[1]> = {}): Promise<Forward> {
  const f = await startForward(agent, { listen: '127.0.0.1:0', connector: 'hq', target: 'echo.internal:7', ...o });
  closers.push(() => f.close());
  return f;
}

async function socksOf(agent: Agent, o: Partial<Parameters<typeof startSocks>[1]> = {}): Promise<SocksProxy> {
  const s = await startSocks(agent, { listen: '127.0.0.1:0', connector: 'hq', ...o });
  closers.push(() => s.close());
  return s;
}

function dialLocal(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Everything the socket receives until it closes (errors end it too: the peer may reset). */
function received(socket: Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    // Half-open sockets stay open after the peer's EOF: end ours too, or 'close' never comes.
    socket.once('end', () => socket.end());
    socket.on('error', () => undefined);
    socket.once('close', () => resolve(Buffer.concat(chunks)));
    socket.resume();
  });
}

/** Reads exactly n bytes. */
function readExactly(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= n) {
        socket.off('data', onData);
        socket.off('close', onClose);
        socket.pause();
        if (buf.length > n) socket.unshift(buf.subarray(n));
        resolve(buf.subarray(0, n));
      }
    };
    const onClose = (): void => reject(new Error(`closed after ${buf.length} of ${n} bytes: ${buf.toString('hex')}`));
    socket.on('data', onData);
    socket.once('close', onClose);
    // readExactly pauses the socket when done, so a later reader must resume it.
    socket.resume();
  });
}

/** A SOCKS5 CONNECT by hand; resolves with the reply code (0 = connected). */
async function socksConnect(socket: Socket, atyp: number, address: Buffer, port: number): Promise<number> {
  socket.write(Buffer.from([5, 1, 0]));
  expect([...(await readExactly(socket, 2))]).toEqual([5, 0]);
  const p = Buffer.from([port >> 8, port & 0xff]);
  socket.write(Buffer.concat([Buffer.from([5, 1, 0, atyp]), atyp === 3 ? Buffer.from([address.length]) : Buffer.alloc(0), address, p]));
  const reply = await readExactly(socket, 10);
  expect(reply[0]).toBe(5);
  return reply[1]!;
}

beforeAll(async () => {
  pki = await makeTestPki();
  relay = await startFakeRelay(pki, () => undefined);
  relay.behavior = connectorSide({ tls: material(pki, 'connector', 'hq') });
});

afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
  relay.behavior = connectorSide({ tls: material(pki, 'connector', 'hq') });
});

afterAll(async () => {
  await relay?.close();
  await pki?.cleanup();
});

describe('startForward', () => {
  it('forwards a local connection end to end, byte-exact, with half-close; reports the real port', async () => {
    const log = capture();
    const forward = await forwardOf(newAgent(log.logger));
    expect(forward.address.port).toBeGreaterThan(0);
    expect((await log.waitFor((l) => l['event'] === 'forward.listening'))['address']).toEqual(forward.address);
    const local = await dialLocal(forward.address.port);
    const payload = randomBytes(2 * 1024 * 1024 + 5);
    const back = received(local);
    local.end(payload);
    expect((await back).equals(payload)).toBe(true);
    expect(relay.opens.at(-1)).toEqual({ connector: 'hq', target: 'echo.internal:7' });
  });

  it('a failed dial closes the local connection and logs the code and the reason', async () => {
    relay.behavior = (incoming) => incoming.reject(OpenResult.POLICY_DENIED, 'denied by rule "no-db"');
    const log = capture();
    const forward = await forwardOf(newAgent(log.logger));
    const local = await dialLocal(forward.address.port);
    expect((await received(local)).length).toBe(0);
    const line = await log.waitFor((l) => l['event'] === 'forward.dial-failed');
    expect(line).toMatchObject({ code: 'POSTERN_ERR_OPEN_POLICY_DENIED', connector: 'hq', target: 'echo.internal:7' });
    expect(String(line['reason'])).toContain('no-db');
  });

  it('bounds local connections by maxConnections and logs the refusal', async () => {
    const log = capture();
    const forward = await forwardOf(newAgent(log.logger), { maxConnections: 1 });
    const first = await dialLocal(forward.address.port);
    const firstBack = received(first);
    // The first connection is live end to end before the second arrives.
    first.write('ping');
    await once(first, 'data');
    const second = await dialLocal(forward.address.port);
    expect((await received(second)).length).toBe(0);
    expect(await log.waitFor((l) => l['event'] === 'forward.refused')).toMatchObject({ code: 'POSTERN_ERR_AGENT_CONNECTION_LIMIT', maxConnections: 1 });
    first.end();
    await firstBack;
  });

  it('close() stops listening and closes live connections', async () => {
    const forward = await startForward(newAgent(), { listen: '127.0.0.1:0', connector: 'hq', target: 'echo.internal:7' });
    const local = await dialLocal(forward.address.port);
    local.write('x');
    await once(local, 'data');
    const closed = received(local);
    await forward.close();
    await closed;
    expect(forward.connections).toBe(0);
    await expect(dialLocal(forward.address.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('refuses bad options at start, naming them', async () => {
    const agent = newAgent();
    await expect(startForward(agent, { listen: '127.0.0.1:0', connector: 'hq', target: 'no-port' })).rejects.toMatchObject({ code: 'POSTERN_ERR_TARGET_INVALID' });
    await expect(startForward(agent, { listen: '127.0.0.1:0', connector: 'H Q', target: 'a.b:1' })).rejects.toMatchObject({ code: 'POSTERN_ERR_AGENT_CONNECTOR_INVALID' });
    await expect(startForward(agent, { listen: 'localhost', connector: 'hq', target: 'a.b:1' })).rejects.toMatchObject({ code: 'POSTERN_ERR_CONFIG_INVALID' });
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const { port } = taken.address() as AddressInfo;
    await expect(startForward(agent, { listen: `127.0.0.1:${port}`, connector: 'hq', target: 'a.b:1' })).rejects.toMatchObject({ code: 'POSTERN_ERR_AGENT_LISTEN' });
    await new Promise((r) => taken.close(r));
  });
});

describe('startSocks', () => {
  it('CONNECTs to a name, an IPv4 and an IPv6 address, with canonical targets, and carries the bytes', async () => {
    const socks = await socksOf(newAgent());
    const cases: Array<[number, Buffer, number, string]> = [
      [3, Buffer.from('DB.St-Mary.Internal.'), 5432, 'db.st-mary.internal:5432'],
      [1, Buffer.from([10, 1, 2, 3]), 80, '10.1.2.3:80'],
      [4, Buffer.from([...Array(15).fill(0), 1]), 443, '[::1]:443'],
    ];
    for (const [atyp, address, port, canonical] of cases) {
      const local = await dialLocal(socks.address.port);
      expect(await socksConnect(local, atyp, address, port)).toBe(0);
      expect(relay.opens.at(-1)).toEqual({ connector: 'hq', target: canonical });
      const marker = randomBytes(1000);
      const back = received(local);
      local.end(marker);
      expect((await back).equals(marker)).toBe(true);
    }
  });

  it('routes by the map, first match first, and refuses a host no entry matches without a default (0x02)', async () => {
    const log = capture();
    const socks = await socksOf(newAgent(log.logger), {
      connector: undefined,
      map: [
        { pattern: 'special.st-mary.internal', connector: 'other' },
        { pattern: '*.St-Mary.internal', connector: 'hq' },
      ],
    });
    for (const [host, connector] of [['db.st-mary.internal', 'hq'], ['special.st-mary.internal', 'other']] as const) {
      relay.behavior = (incoming) => incoming.reject(OpenResult.CONNECTOR_OFFLINE, 'offline');
      const local = await dialLocal(socks.address.port);
      expect(await socksConnect(local, 3, Buffer.from(host), 1)).toBe(0x03);
      expect(relay.opens.at(-1)).toEqual({ connector, target: `${host}:1` });
      local.destroy();
    }
    const opens = relay.opens.length;
    const local = await dialLocal(socks.address.port);
    expect(await socksConnect(local, 3, Buffer.from('st-mary.internal'), 1)).toBe(0x02);
    expect(relay.opens.length).toBe(opens);
    expect(await log.waitFor((l) => l['event'] === 'socks.no-connector')).toMatchObject({ code: 'POSTERN_ERR_SOCKS_NO_CONNECTOR' });
  });

  it("maps dial failures to SOCKS replies: policy 0x02, target refused 0x05, relay's connector offline 0x03", async () => {
    const socks = await socksOf(newAgent());
    const cases: Array<[() => void, number]> = [
      [() => (relay.behavior = (incoming) => incoming.reject(OpenResult.POLICY_DENIED, 'denied by rule "x"')), 0x02],
      [() => (relay.behavior = connectorSide({ tls: material(pki, 'connector', 'hq'), status: OpenResult.TARGET_REFUSED, message: 'ECONNREFUSED' })), 0x05],
      [() => (relay.behavior = (incoming) => incoming.reject(OpenResult.CONNECTOR_OFFLINE, 'no tunnel')), 0x03],
    ];
    for (const [arrange, code] of cases) {
      arrange();
      const local = await dialLocal(socks.address.port);
      expect(await socksConnect(local, 3, Buffer.from('db.internal'), 5432)).toBe(code);
      await received(local);
    }
  });

  it('works with a real client: curl through socks5h', async () => {
    relay.behavior = connectorSide({
      tls: material(pki, 'connector', 'hq'),
      serve: (socket, target) => {
        socket.once('data', () => socket.end(`HTTP/1.1 200 OK\r\nContent-Length: ${target.length}\r\nConnection: close\r\n\r\n${target}`));
      },
    });
    const socks = await socksOf(newAgent());
    const { stdout } = await run('curl', ['--silent', '--show-error', '--max-time', '20', '--proxy', `socks5h://127.0.0.1:${socks.address.port}`, 'http://web.st-mary.internal:8080/']);
    expect(stdout).toBe('web.st-mary.internal:8080');
  });

  it('answers arbitrary bytes from clients only with proper SOCKS replies or a close, and keeps serving', async () => {
    const socks = await socksOf(newAgent(), { handshakeTimeoutMs: 5_000 });
    const input = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 300 }),
      fc.uint8Array({ maxLength: 300 }).map((tail) => Uint8Array.from([5, 1, 0, ...tail])),
      fc.uint8Array({ maxLength: 40 }).map((tail) => Uint8Array.from([5, 1, 0, 5, 1, 0, 3, ...tail])),
    );
    await fc.assert(
      fc.asyncProperty(input, async (bytes) => {
        const local = await dialLocal(socks.address.port);
        const back = received(local);
        local.end(Buffer.from(bytes));
        const answer = await back;
        expect(answer.length === 0 || answer.length === 2 || answer.length >= 12).toBe(true);
        if (answer.length > 0) {
          expect(answer[0]).toBe(5);
          expect([0, 0xff]).toContain(answer[1]);
        }
        if (answer.length >= 12) {
          expect(answer[2]).toBe(5);
          expect(answer[3]).toBeLessThanOrEqual(8);
        }
      }),
      { numRuns: 150 },
    );
    const local = await dialLocal(socks.address.port);
    expect(await socksConnect(local, 3, Buffer.from('still.alive'), 1)).toBe(0);
    local.destroy();
  });
});

describe('runCheck', () => {
  it('reports both identities, both TLS versions, session RTTs and the stream set-up time', async () => {
    const report = await runCheck(newAgent(), { connector: 'hq', target: 'DB.internal:5432' });
    expect(report).toMatchObject({
      connector: 'hq',
      target: 'db.internal:5432',
      agent: `spiffe://${pki.trustDomain}/org/st-mary/user/alice`,
      relay: { identity: `spiffe://${pki.trustDomain}/relay/relay-1`, tlsVersion: 'TLSv1.3' },
      inner: { identity: `spiffe://${pki.trustDomain}/org/st-mary/connector/hq`, tlsVersion: 'TLSv1.3' },
    });
    expect(report.inner.cipher).toMatch(/^TLS_/);
    expect(report.sessionRttMs).toHaveLength(3);
    expect(report.streamSetupMs).toBeGreaterThan(0);
    expect(report.correlationId).toMatch(/^corr-\d+$/);
    const text = formatCheckReport(report);
    expect(text).toContain(report.inner.identity);
    expect(text).toContain('TLSv1.3');
    expect(text).toContain(report.correlationId!);
  });

  it('fails with the dial code when the path is refused', async () => {
    relay.behavior = connectorSide({ tls: material(pki, 'relay', 'relay-1') });
    await expect(runCheck(newAgent(), { connector: 'hq', target: 'db.internal:5432' })).rejects.toMatchObject({ code: 'POSTERN_ERR_ID_WRONG_ROLE' });
  });
});
