import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Agent, AgentDialError, type AgentOptions } from '../../../agent-lib/index.js';
import type { MuxStream } from '../../../src/mux/index.js';
import { splice } from '../../../src/net/splice.js';
import { GoAwayReason, OpenResult } from '../../../src/protocol/reasons.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { startPostgres, type TestPostgres } from '../../helpers/pg.js';
import { releasedPort } from '../../helpers/relay-pool.js';
import { connectorSide, material, startFakeRelay, type FakeRelay } from './fake-relay.js';

let pki: TestPki;
let relay: FakeRelay;
const agents: Agent[] = [];

function agentOptions(name = 'alice', extra: Partial<AgentOptions> = {}, role: 'user' | 'service' = 'user'): AgentOptions {
  return { trustDomain: pki.trustDomain, relay: relay.url, tls: { ...pki.files(role, name), ca: pki.ca, crl: pki.crl }, ...extra };
}

function newAgent(name = 'alice', extra: Partial<AgentOptions> = {}, role: 'user' | 'service' = 'user'): Agent {
  const agent = new Agent(agentOptions(name, extra, role));
  agents.push(agent);
  return agent;
}

function readAll(stream: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

/** Echo connector; the default behavior of the fake. */
const echo = () => connectorSide({ tls: material(pki, 'connector', 'hq'), accepted: relay.accepted });

beforeAll(async () => {
  pki = await makeTestPki();
  await pki.issue('connector', 'other', { org: 'st-mary' });
  await pki.issue('connector', 'foreign', { org: 'elsewhere' });
  const mallory = await pki.issue('user', 'mallory', { org: 'st-mary' });
  await pki.revoke(mallory.cert);
  relay = await startFakeRelay(pki, () => undefined);
  relay.behavior = echo();
});

afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.close()));
  relay.behavior = echo();
});

afterAll(async () => {
  await relay?.close();
  await pki?.cleanup();
});

describe('Agent.dial over a relay session', () => {
  it('carries bytes byte-exact both ways through inner TLS 1.3, with the canonical target in the open and inside TLS', async () => {
    let innerTarget = '';
    relay.behavior = connectorSide({
      tls: material(pki, 'connector', 'hq'),
      serve: (socket, target) => {
        innerTarget = target;
        socket.pipe(socket);
      },
    });
    const agent = newAgent();
    const info = await agent.dialWithInfo({ connector: 'hq', target: 'DB.Internal.:5432' });
    expect(relay.opens.at(-1)).toEqual({ connector: 'hq', target: 'db.internal:5432' });
    expect(innerTarget).toBe('db.internal:5432');
    expect(info.tlsVersion).toBe('TLSv1.3');
    expect(info.relayTlsVersion).toBe('TLSv1.3');
    expect(info.connectorIdentity.uri).toBe(`spiffe://${pki.trustDomain}/org/st-mary/connector/hq`);
    expect(info.relayIdentity.uri).toBe(`spiffe://${pki.trustDomain}/relay/relay-1`);
    expect(agent.identity.uri).toBe(`spiffe://${pki.trustDomain}/org/st-mary/user/alice`);

    const payload = randomBytes(3 * 1024 * 1024 + 11);
    const answer = readAll(info.socket);
    info.socket.end(payload);
    const back = await answer;
    expect(back.length).toBe(payload.length);
    expect(back.equals(payload)).toBe(true);
  });

  it('half-close: the agent ends its side and still receives an answer sent only after that EOF', async () => {
    relay.behavior = connectorSide({
      tls: material(pki, 'connector', 'hq'),
      serve: (socket) => {
        const hash = createHash('sha256');
        socket.on('data', (c: Buffer) => hash.update(c));
        socket.once('end', () => socket.end(hash.digest()));
      },
    });
    const socket = await newAgent().dial({ connector: 'hq', target: 'hashes.internal:1' });
    const payload = randomBytes(1024 * 1024 + 3);
    const answer = readAll(socket);
    socket.end(payload);
    expect((await answer).equals(createHash('sha256').update(payload).digest())).toBe(true);
  });

  it('a complete exchange ends with FIN both ways, never a RESET, whichever side ends first', async () => {
    const agent = newAgent();
    const runs = 25;
    for (const first of ['agent', 'connector'] as const) {
      const accepted: MuxStream[] = [];
      relay.behavior = connectorSide({
        tls: material(pki, 'connector', 'hq'),
        accepted,
        serve: first === 'agent' ? (socket) => socket.pipe(socket) : (socket) => socket.end('bye'),
      });
      for (let i = 0; i < runs; i++) {
        const socket = await agent.dial({ connector: 'hq', target: 'a.internal:1' });
        const errors: Error[] = [];
        socket.on('error', (e: Error) => errors.push(e));
        const closed = once(socket, 'close');
        socket.resume();
        if (first === 'agent') socket.end('hello');
        else socket.once('end', () => socket.end());
        await closed;
        const leg = accepted[i]!;
        if (!leg.destroyed) await once(leg, 'close');
        expect({ first, i, errors: errors.map((e) => e.message), resetCode: leg.resetCode }).toEqual({ first, i, errors: [], resetCode: undefined });
      }
    }
  });

  it('concurrent dials share one relay session, opened on the first dial', async () => {
    const before = relay.upgrades;
    const agent = newAgent();
    expect(relay.upgrades).toBe(before);
    const sockets = await Promise.all(Array.from({ length: 8 }, (_, i) => agent.dial({ connector: 'hq', target: `svc${i}.internal:80` })));
    expect(relay.upgrades).toBe(before + 1);
    for (const s of sockets) s.destroy();
  });

  it('after a GOAWAY the next dial opens a new session, while a stream of the old one keeps working', async () => {
    const agent = newAgent();
    const first = await agent.dial({ connector: 'hq', target: 'a.internal:1' });
    const session = relay.sessions.at(-1)!;
    const upgrades = relay.upgrades;
    session.goAway(GoAwayReason.DRAIN, 'rolling deploy');
    const second = await agent.dial({ connector: 'hq', target: 'b.internal:1' });
    expect(relay.upgrades).toBe(upgrades + 1);
    for (const [socket, marker] of [[first, 'old'], [second, 'new']] as const) {
      const answer = readAll(socket);
      socket.end(marker);
      expect((await answer).toString()).toBe(marker);
    }
  });

  it('after the relay drops the session the next dial reconnects', async () => {
    const agent = newAgent();
    (await agent.dial({ connector: 'hq', target: 'a.internal:1' })).destroy();
    const upgrades = relay.upgrades;
    relay.sessions.at(-1)!.destroy();
    const socket = await agent.dial({ connector: 'hq', target: 'a.internal:1' });
    expect(relay.upgrades).toBe(upgrades + 1);
    socket.destroy();
  });
});

describe('Agent with a pool of relays (relays)', () => {
  let second: FakeRelay;
  beforeAll(async () => {
    second = await startFakeRelay(pki, () => undefined);
    second.behavior = connectorSide({ tls: material(pki, 'connector', 'hq') });
  });
  afterAll(async () => {
    await second?.close();
  });

  const roundTrip = async (agent: Agent, marker: string): Promise<string> => {
    const socket = await agent.dial({ connector: 'hq', target: 'a.internal:1' });
    const answer = readAll(socket);
    socket.end(marker);
    return (await answer).toString();
  };

  it('a GOAWAY sends the next session to the next relay of the pool, and round the pool', async () => {
    const agent = newAgent('alice', { relays: [second.url] });
    const [firstBefore, secondBefore] = [relay.upgrades, second.upgrades];
    expect(await roundTrip(agent, 'one')).toBe('one');
    expect([relay.upgrades - firstBefore, second.upgrades - secondBefore]).toEqual([1, 0]);
    relay.sessions.at(-1)!.goAway(GoAwayReason.DRAIN, 'rolling deploy');
    expect(await roundTrip(agent, 'two')).toBe('two');
    expect([relay.upgrades - firstBefore, second.upgrades - secondBefore]).toEqual([1, 1]);
    second.sessions.at(-1)!.goAway(GoAwayReason.DRAIN, 'rolling deploy');
    expect(await roundTrip(agent, 'three')).toBe('three');
    expect([relay.upgrades - firstBefore, second.upgrades - secondBefore]).toEqual([2, 1]);
  });

  it('after a session is lost (the relay crashed), the next session starts with the next relay', async () => {
    const agent = newAgent('alice', { relays: [second.url] });
    expect(await roundTrip(agent, 'one')).toBe('one');
    const [firstBefore, secondBefore] = [relay.upgrades, second.upgrades];
    relay.sessions.at(-1)!.destroy();
    expect(await roundTrip(agent, 'two')).toBe('two');
    expect([relay.upgrades - firstBefore, second.upgrades - secondBefore]).toEqual([0, 1]);
  });

  it('a relay that cannot be reached, or refuses the session, is followed by the next one', async () => {
    const down = `wss://localhost:${await releasedPort()}`;
    // The fake refuses any path but /v1/agent (404), as a draining relay refuses with 503.
    const refusing = `${second.url}/elsewhere`;
    const before = relay.upgrades;
    const agent = newAgent('alice', { relay: down, relays: [refusing, relay.url] });
    expect(await roundTrip(agent, 'hello')).toBe('hello');
    expect(relay.upgrades).toBe(before + 1);
  });

  it("when no relay of the pool answers, the dial fails with the first relay's error", async () => {
    const [a, b] = [await releasedPort(), await releasedPort()];
    const agent = newAgent('alice', { relay: `wss://localhost:${a}`, relays: [`wss://localhost:${b}`] });
    const err = await agent.dial({ connector: 'hq', target: 'a.internal:1' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'POSTERN_ERR_WS_CONNECT', stage: 'session' });
    expect((err as Error).message).toContain(String(a));
  });
});

describe('Agent.dial refusals carry the precise code', () => {
  it('a relay that terminates inner TLS itself fails the connector check: POSTERN_ERR_ID_WRONG_ROLE', async () => {
    relay.behavior = connectorSide({ tls: material(pki, 'relay', 'relay-1') });
    const err = await newAgent().dial({ connector: 'hq', target: 'db.internal:5432' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentDialError);
    expect(err).toMatchObject({ code: 'POSTERN_ERR_ID_WRONG_ROLE', stage: 'inner-tls' });
  });

  it('another connector of the same CA and org answering for "hq": POSTERN_ERR_ID_NAME_MISMATCH', async () => {
    relay.behavior = connectorSide({ tls: material(pki, 'connector', 'other') });
    await expect(newAgent().dial({ connector: 'hq', target: 'db.internal:5432' })).rejects.toMatchObject({ code: 'POSTERN_ERR_ID_NAME_MISMATCH', stage: 'inner-tls' });
  });

  it("a connector of another org answering: POSTERN_ERR_ID_ORG_MISMATCH (orgs are isolated end to end)", async () => {
    relay.behavior = connectorSide({ tls: material(pki, 'connector', 'foreign') });
    await expect(newAgent().dial({ connector: 'hq', target: 'db.internal:5432' })).rejects.toMatchObject({ code: 'POSTERN_ERR_ID_ORG_MISMATCH', stage: 'inner-tls' });
  });

  it("the relay's policy refusal: POSTERN_ERR_OPEN_POLICY_DENIED with the rule id in the message", async () => {
    relay.behavior = (incoming) => incoming.reject(OpenResult.POLICY_DENIED, 'denied by rule "no-reports-on-db": spiffe://… → connector "hq"');
    const err = (await newAgent('reports', {}, 'service').dial({ connector: 'hq', target: 'db.internal:5432' }).catch((e: unknown) => e)) as AgentDialError;
    expect(err.code).toBe('POSTERN_ERR_OPEN_POLICY_DENIED');
    expect(err.stage).toBe('open');
    expect(err.message).toContain('no-reports-on-db');
  });

  it("the connector's inner status TARGET_REFUSED: POSTERN_ERR_OPEN_TARGET_REFUSED with the connector's text", async () => {
    relay.behavior = connectorSide({ tls: material(pki, 'connector', 'hq'), status: OpenResult.TARGET_REFUSED, message: 'connect ECONNREFUSED 10.0.0.5:5432' });
    const err = (await newAgent().dial({ connector: 'hq', target: 'db.internal:5432' }).catch((e: unknown) => e)) as AgentDialError;
    expect(err).toMatchObject({ code: 'POSTERN_ERR_OPEN_TARGET_REFUSED', stage: 'inner-response' });
    expect(err.message).toContain('ECONNREFUSED 10.0.0.5:5432');
  });

  it('the connector refusing a revoked agent certificate: POSTERN_ERR_STREAM_INNER_TLS_FAILED with its reason', async () => {
    relay.behavior = connectorSide({ tls: material(pki, 'connector', 'hq') });
    const err = (await newAgent('mallory').dial({ connector: 'hq', target: 'db.internal:5432' }).catch((e: unknown) => e)) as AgentDialError;
    expect(err.code).toBe('POSTERN_ERR_STREAM_INNER_TLS_FAILED');
    expect(err.message).toMatch(/revoked/);
  });

  it('the whole dial is bounded by limits.dialTimeoutMs, and the open is cancelled at the relay', async () => {
    let cancelled!: Promise<unknown>;
    relay.behavior = (incoming) => {
      cancelled = once(incoming.signal, 'abort');
    };
    const agent = newAgent('alice', { limits: { dialTimeoutMs: 300 } });
    await expect(agent.dial({ connector: 'hq', target: 'slow.internal:1' })).rejects.toMatchObject({ code: 'POSTERN_ERR_AGENT_DIAL_TIMEOUT', stage: 'open' });
    await cancelled;
  });

  it("the caller's abort signal cancels the dial: POSTERN_ERR_OPEN_CANCELLED", async () => {
    const controller = new AbortController();
    relay.behavior = () => controller.abort();
    await expect(newAgent().dial({ connector: 'hq', target: 'a.internal:1', signal: controller.signal })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_CANCELLED' });
  });

  it('refuses a malformed connector id or target before anything goes on the wire', async () => {
    const agent = newAgent();
    const opens = relay.opens.length;
    await expect(agent.dial({ connector: 'HQ/../x', target: 'a.internal:1' })).rejects.toMatchObject({ code: 'POSTERN_ERR_AGENT_CONNECTOR_INVALID' });
    await expect(agent.dial({ connector: 'hq', target: 'no-port.internal' })).rejects.toMatchObject({ code: 'POSTERN_ERR_TARGET_INVALID' });
    expect(relay.opens.length).toBe(opens);
  });

  it('an unreachable relay: the transport code, stage "session"', async () => {
    const agent = newAgent('alice', { relay: 'wss://127.0.0.1:1' });
    await expect(agent.dial({ connector: 'hq', target: 'a.internal:1' })).rejects.toMatchObject({ code: 'POSTERN_ERR_WS_CONNECT', stage: 'session' });
  });
});

describe('Agent lifecycle and options', () => {
  it('close() fails pending dials with POSTERN_ERR_AGENT_CLOSED, refuses new ones, and closes the session', async () => {
    let opened!: () => void;
    const seen = new Promise<void>((r) => (opened = r));
    relay.behavior = () => opened();
    const agent = newAgent();
    const pending = agent.dial({ connector: 'hq', target: 'a.internal:1' }).catch((e: unknown) => e);
    await seen;
    const session = relay.sessions.at(-1)!;
    const sessionClosed = once(session, 'close');
    await agent.close();
    expect(await pending).toMatchObject({ code: 'POSTERN_ERR_AGENT_CLOSED' });
    await expect(agent.dial({ connector: 'hq', target: 'a.internal:1' })).rejects.toMatchObject({ code: 'POSTERN_ERR_AGENT_CLOSED' });
    await sessionClosed;
  });

  it('validates options once, naming the field', () => {
    expect(() => new Agent({ ...agentOptions(), relay: 'https://relay.example' })).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_CONFIG_INVALID', message: expect.stringContaining('relay') }));
    expect(() => new Agent({ ...agentOptions(), limits: { dialTimeoutMs: 10, retries: 3 } } as AgentOptions)).toThrow(
      expect.objectContaining({ code: 'POSTERN_ERR_CONFIG_UNKNOWN_KEY', message: expect.stringContaining('limits.retries') }),
    );
  });

  it('refuses a certificate that is not a user or service certificate', () => {
    expect(() => new Agent({ ...agentOptions(), tls: { ...pki.files('connector', 'hq'), ca: pki.ca } })).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_ID_WRONG_ROLE' }));
  });

  it('resolves relative certificate paths against baseDir', async () => {
    const agent = new Agent({ trustDomain: pki.trustDomain, relay: relay.url, tls: { cert: 'user-alice.crt', key: 'user-alice.key', ca: 'ca.crt', crl: 'crl.pem' } }, { baseDir: pki.dir });
    agents.push(agent);
    (await agent.dial({ connector: 'hq', target: 'a.internal:1' })).destroy();
  });
});

describe('Agent.socketFactory for node-postgres', () => {
  let postgres: TestPostgres;
  beforeAll(async () => {
    postgres = await startPostgres();
  });
  afterAll(async () => {
    await postgres?.stop();
  });

  it('runs queries through the tunnel with new pg.Client({ stream: agent.socketFactory(…) })', async () => {
    const targets: string[] = [];
    relay.behavior = connectorSide({
      tls: material(pki, 'connector', 'hq'),
      serve: (socket, target) => {
        targets.push(target);
        const db = netConnect(postgres.port, '127.0.0.1');
        db.setNoDelay(true);
        void splice(socket, db);
      },
    });
    const agent = newAgent();
    const client = new pg.Client({ host: 'postgres.internal', port: 5432, user: 'postgres', database: 'postgres', stream: agent.socketFactory({ connector: 'hq' }) });
    await client.connect();
    expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
    // A result larger than every window on the path, to exercise backpressure through the facade.
    const big = await client.query("select string_agg(md5(g::text), '') as s from generate_series(1, 200000) g");
    expect((big.rows[0] as { s: string }).s.length).toBe(200_000 * 32);
    await client.end();
    expect(targets).toEqual(['postgres.internal:5432']);
  });

  it("a failed dial reaches pg as the connection's error, with its code", async () => {
    relay.behavior = (incoming) => incoming.reject(OpenResult.CONNECTOR_OFFLINE, 'connector "hq" has no live tunnel to this relay');
    const agent = newAgent();
    const client = new pg.Client({ host: 'postgres.internal', port: 5432, user: 'postgres', stream: agent.socketFactory({ connector: 'hq' }) });
    await expect(client.connect()).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_CONNECTOR_OFFLINE' });
  });
});
