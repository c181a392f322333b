import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import pg from 'pg';
import { Agent } from '../../agent-lib/index.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { startPostgres, type TestPostgres } from '../helpers/pg.js';
import { stopAll } from '../helpers/processes.js';
import { startStack, type Stack } from '../helpers/stack.js';

/** A TCP target on 127.0.0.1 that counts connections and runs `onSocket` for each. */
async function tcpTarget(onSocket: (s: Socket) => void): Promise<{ port: number; accepted: () => number; close(): Promise<void> }> {
  let accepted = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    onSocket(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    accepted: () => accepted,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** Everything `stream` sends until it ends. */
function readAll(stream: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

/** SHA-256 and size of what `psql … -c sql` prints, streamed (50 MB never sits in memory twice). */
function psqlDigest(port: number, sql: string): Promise<{ sha256: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
      env: { ...process.env, PGCONNECT_TIMEOUT: '10' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const hash = createHash('sha256');
    let bytes = 0;
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { hash.update(c); bytes += c.length; });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve({ sha256: hash.digest('hex'), bytes }) : reject(new Error(`psql exited ${code}: ${stderr}`))));
  });
}

describe('end to end: agent → relay → connector → target, real processes', () => {
  let pki: TestPki;
  let otherCa: TestPki;
  let postgres: TestPostgres;
  let stack: Stack;
  let echo: Awaited<ReturnType<typeof tcpTarget>>;
  let answerAfterEof: Awaited<ReturnType<typeof tcpTarget>>;
  let notAllowlisted: Awaited<ReturnType<typeof tcpTarget>>;
  const agents: Agent[] = [];

  const agentFor = (cert: { cert: string; key: string }): Agent => {
    const agent = new Agent({ trustDomain: pki.trustDomain, relay: stack.relayUrl, tls: { cert: cert.cert, key: cert.key, ca: pki.ca, crl: pki.crl } });
    agents.push(agent);
    return agent;
  };

  beforeAll(async () => {
    [pki, otherCa, postgres] = await Promise.all([makeTestPki(), makeTestPki(), startPostgres()]);
    echo = await tcpTarget((s) => s.pipe(s));
    answerAfterEof = await tcpTarget((s) => {
      const hash = createHash('sha256');
      s.on('data', (c: Buffer) => hash.update(c));
      s.once('end', () => s.end(hash.digest()));
    });
    notAllowlisted = await tcpTarget((s) => s.destroy());

    // mallory is revoked after the relay's copy of the CRL was taken: the relay (stale CRL) lets
    // her through, the connector (current CRL) must refuse her in the inner handshake.
    const mallory = await pki.issue('user', 'mallory', { org: 'st-mary' });
    const staleCrl = join(pki.dir, 'crl-before-mallory.pem');
    await copyFile(pki.crl, staleCrl);
    await pki.revoke(mallory.cert);
    // eve's certificate comes from another CA that the relay trusts but the connector does not.
    await otherCa.issue('user', 'eve', { org: 'st-mary' });
    const relayBundle = join(pki.dir, 'relay-bundle.pem');
    await writeFile(relayBundle, await pki.pki(['bundle', pki.ca, otherCa.ca]));

    const PG = postgres.port;
    const targets = [`postgres.internal:${PG}`, `127.0.0.1:${PG}`, `127.0.0.1:${echo.port}`, `127.0.0.1:${answerAfterEof.port}`];
    stack = await startStack({
      pki,
      relayCrl: [staleCrl, otherCa.crl],
      relayCa: relayBundle,
      hosts: { 'postgres.internal': '127.0.0.1' },
      allowlist: targets,
      policy: `
version: 1
trustDomain: "{{TD}}"
orgs:
  st-mary:
    teams:
      dba: [user/alice, user/mallory, user/eve]
    connectors:
      hq:
        targets: ${JSON.stringify([...targets, `127.0.0.1:${notAllowlisted.port}`])}
rules:
  - id: no-reports-on-db
    org: st-mary
    principals: [service/reports]
    connector: hq
    targets: ["postgres.internal:${PG}"]
    action: deny
  - id: dba-all
    org: st-mary
    principals: [team/dba]
    connector: hq
    targets: ${JSON.stringify([...targets, `127.0.0.1:${notAllowlisted.port}`])}
    action: allow
`,
    });
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await stack?.stop();
    await stopAll();
    await Promise.all([echo?.close(), answerAfterEof?.close(), notAllowlisted?.close()]);
    await postgres?.stop();
    await Promise.all([pki?.cleanup(), otherCa?.cleanup()]);
  });

  it('psql through `postern agent forward` runs select 1 and a 50 MB COPY whose checksum equals the direct one', async () => {
    const config = await stack.agentConfig(pki.files('user', 'alice'), 'alice');
    const { port } = await stack.forward({ config, connector: 'hq', target: `postgres.internal:${postgres.port}` });
    expect((await postgres.psql('select 1', { port })).trim()).toBe('1');

    const copy = "copy (select g, repeat(md5(g::text), 16) from generate_series(1, 100000) g) to stdout";
    const [direct, tunnelled] = await Promise.all([psqlDigest(postgres.port, copy), psqlDigest(port, copy)]);
    expect(direct.bytes).toBeGreaterThan(50_000_000);
    expect(tunnelled).toEqual(direct);
  });

  it('node-postgres runs queries through agent.socketFactory; POSTGRES.internal. is matched as postgres.internal', async () => {
    const agent = agentFor(pki.files('user', 'alice'));
    const client = new pg.Client({ host: 'POSTGRES.internal.', port: postgres.port, user: 'postgres', database: 'postgres', stream: agent.socketFactory({ connector: 'hq' }) });
    const audited = stack.relayAudit((l) => l['event'] === 'stream.open' && l['decision'] === 'allow' && l['target'] === `postgres.internal:${postgres.port}`);
    await client.connect();
    const result = await client.query('select $1::int + 1 as n, current_user as u', [41]);
    expect(result.rows).toEqual([{ n: 42, u: 'postgres' }]);
    await client.end();
    expect((await audited)['ruleId']).toBe('dba-all');
  });

  it('IP literals in any spelling are treated as the address they name', async () => {
    const agent = agentFor(pki.files('user', 'alice'));
    for (const host of ['[::ffff:127.0.0.1]', '2130706433', '0x7f.1']) {
      const audited = stack.relayAudit((l) => l['event'] === 'stream.open' && l['decision'] === 'allow' && l['detail'] === undefined && l['target'] === `127.0.0.1:${echo.port}`);
      const socket = await agent.dial({ connector: 'hq', target: `${host}:${echo.port}` });
      const marker = randomBytes(16);
      socket.end(marker);
      expect((await readAll(socket)).equals(marker)).toBe(true);
      await audited;
    }
  });

  it('a denied principal learns the rule that denied it', async () => {
    const agent = agentFor(pki.files('service', 'reports'));
    await expect(agent.dial({ connector: 'hq', target: `postgres.internal:${postgres.port}` })).rejects.toMatchObject({
      code: 'POSTERN_ERR_OPEN_POLICY_DENIED',
      message: expect.stringContaining('no-reports-on-db'),
    });
  });

  it("the connector's allowlist refuses a target the relay policy allows", async () => {
    const agent = agentFor(pki.files('user', 'alice'));
    await expect(agent.dial({ connector: 'hq', target: `127.0.0.1:${notAllowlisted.port}` })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_ALLOWLIST_DENIED' });
    expect(notAllowlisted.accepted()).toBe(0);
  });

  it('half-close: a target that answers only after the client EOF delivers its whole answer', async () => {
    const agent = agentFor(pki.files('user', 'alice'));
    const socket = await agent.dial({ connector: 'hq', target: `127.0.0.1:${answerAfterEof.port}` });
    const payload = randomBytes(2 * 1024 * 1024 + 7);
    const answer = readAll(socket);
    socket.end(payload);
    expect((await answer).equals(createHash('sha256').update(payload).digest())).toBe(true);
  });

  it('the relay forwards only inner-TLS ciphertext: no marker, TLS 1.3 records from the first byte', async () => {
    const agent = agentFor(pki.files('user', 'alice'));
    const marker = Buffer.from(`POSTERN-MARKER-${randomBytes(8).toString('hex')}`);
    const closed = stack.relayAudit((l) => l['event'] === 'stream.close' && l['target'] === `127.0.0.1:${echo.port}` && Number(l['bytesUp']) > 200);
    const socket = await agent.dial({ connector: 'hq', target: `127.0.0.1:${echo.port}` });
    socket.end(Buffer.concat([marker, marker, marker]));
    expect((await readAll(socket)).includes(marker)).toBe(true);
    const { correlationId } = (await closed) as { correlationId: string };

    const up = await readFile(join(stack.tapDir, `${correlationId}.agent-to-connector`));
    const down = await readFile(join(stack.tapDir, `${correlationId}.connector-to-agent`));
    for (const bytes of [up, down]) {
      expect(bytes.includes(marker)).toBe(false);
      expect(bytes.includes(marker.subarray(0, 8))).toBe(false);
      expect(bytes[0]).toBe(0x16); // handshake record
      expect(bytes[1]).toBe(0x03);
    }
    // TLS 1.3 hides everything after the hellos in application_data records (type 23).
    expect(up.includes(Buffer.from([0x17, 0x03, 0x03]))).toBe(true);
    expect(down.includes(Buffer.from([0x17, 0x03, 0x03]))).toBe(true);
    const names = await readdir(stack.tapDir);
    for (const name of names) expect((await readFile(join(stack.tapDir, name))).includes(marker)).toBe(false);
  });

  it('the connector refuses a revoked agent in the inner handshake even when the relay let it through; the target is never dialed', async () => {
    const before = echo.accepted();
    const agent = agentFor(pki.files('user', 'mallory'));
    const refused = stack.connector.waitFor((l) => l['event'] === 'handshake.refused' && l['code'] === 'POSTERN_ERR_TLS_CERT_REVOKED');
    await expect(agent.dial({ connector: 'hq', target: `127.0.0.1:${echo.port}` })).rejects.toMatchObject({ code: 'POSTERN_ERR_STREAM_INNER_TLS_FAILED' });
    await refused;
    expect(echo.accepted()).toBe(before);
  });

  it('the connector refuses an agent certificate from a CA it does not trust for inner TLS', async () => {
    const before = echo.accepted();
    const agent = agentFor(otherCa.files('user', 'eve'));
    const refused = stack.connector.waitFor((l) => l['event'] === 'handshake.refused' && l['code'] === 'POSTERN_ERR_TLS_CERT_UNTRUSTED');
    await expect(agent.dial({ connector: 'hq', target: `127.0.0.1:${echo.port}` })).rejects.toMatchObject({ code: 'POSTERN_ERR_STREAM_INNER_TLS_FAILED' });
    await refused;
    expect(echo.accepted()).toBe(before);
  });
});
