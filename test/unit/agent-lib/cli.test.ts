import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { OpenResult } from '../../../src/protocol/reasons.js';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { runPostern, startPostern, stopAll } from '../../helpers/processes.js';
import { releasedPort } from '../../helpers/relay-pool.js';
import { connectorSide, material, startFakeRelay, type FakeRelay } from './fake-relay.js';

// These run the built CLI (dist/): `npm test` builds first.
const run = promisify(execFile);
let pki: TestPki;
let relay: FakeRelay;

const flags = (): string[] => [
  '--relay', relay.url,
  '--trust-domain', pki.trustDomain,
  '--cert', pki.files('user', 'alice').cert,
  '--key', pki.files('user', 'alice').key,
  '--ca', pki.ca,
  '--crl', pki.crl,
];

beforeAll(async () => {
  pki = await makeTestPki();
  relay = await startFakeRelay(pki, () => undefined);
  relay.behavior = connectorSide({ tls: material(pki, 'connector', 'hq') });
  // Relative paths, resolved against the config file's directory.
  await writeFile(
    join(pki.dir, 'agent.yaml'),
    `trustDomain: ${pki.trustDomain}\nrelay: ${relay.url}\ntls:\n  cert: user-alice.crt\n  key: user-alice.key\n  ca: ca.crt\n  crl: crl.pem\n`,
  );
});

afterEach(async () => {
  await stopAll();
  relay.behavior = connectorSide({ tls: material(pki, 'connector', 'hq') });
});

afterAll(async () => {
  await relay?.close();
  await pki?.cleanup();
});

describe('postern agent check', () => {
  it('prints the evidence as JSON: relay and connector identities, TLS 1.3 on both layers', async () => {
    const { code, stdout, stderr } = await runPostern(['agent', 'check', ...flags(), '--connector', 'hq', '--target', 'postgres.internal:5432', '--json']);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const report = JSON.parse(stdout) as Record<string, any>;
    expect(report['relay']).toMatchObject({ identity: `spiffe://${pki.trustDomain}/relay/relay-1`, tlsVersion: 'TLSv1.3' });
    expect(report['inner']).toMatchObject({ identity: `spiffe://${pki.trustDomain}/org/st-mary/connector/hq`, tlsVersion: 'TLSv1.3' });
    expect(report['sessionRttMs']).toHaveLength(3);
  });

  it('prints it as text with --config', async () => {
    const { code, stdout } = await runPostern(['agent', 'check', '--config', join(pki.dir, 'agent.yaml'), '--connector', 'hq', '--target', 'postgres.internal:5432']);
    expect(code).toBe(0);
    expect(stdout).toContain(`spiffe://${pki.trustDomain}/org/st-mary/connector/hq (inner TLSv1.3`);
  });

  it('--relay repeats for a pool: a first relay that cannot be reached is followed by the next', async () => {
    const down = `wss://localhost:${await releasedPort()}`;
    const pool = ['--relay', down, '--relay', relay.url, ...flags().slice(2)];
    const { code, stdout, stderr } = await runPostern(['agent', 'check', ...pool, '--connector', 'hq', '--target', 'postgres.internal:5432', '--json']);
    expect(code).toBe(0);
    // The skipped relay is named on stderr (a warning), the evidence on stdout is the next relay's.
    expect(stderr).toContain('agent.relay-failover');
    expect(stderr).toContain(down);
    expect((JSON.parse(stdout) as { relay: { identity: string } }).relay.identity).toBe(`spiffe://${pki.trustDomain}/relay/relay-1`);
  });

  it('exits 1 with the code and the rule when the relay refuses', async () => {
    relay.behavior = (incoming) => incoming.reject(OpenResult.POLICY_DENIED, 'denied by rule "no-db"');
    const { code, stderr } = await runPostern(['agent', 'check', ...flags(), '--connector', 'hq', '--target', 'postgres.internal:5432']);
    expect(code).toBe(1);
    expect(stderr).toMatch(/^error POSTERN_ERR_OPEN_POLICY_DENIED: .*no-db/);
  });

  it('exits 2 naming the missing flags without --config, and naming file:line of an unknown key', async () => {
    const missing = await runPostern(['agent', 'check', '--relay', relay.url, '--connector', 'hq', '--target', 'a.b:1']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('POSTERN_ERR_USAGE');
    expect(missing.stderr).toContain('--trust-domain, --cert, --key, --ca');
    const bad = join(pki.dir, 'bad-agent.yaml');
    await writeFile(bad, `trustDomain: ${pki.trustDomain}\nrelay: ${relay.url}\ntls:\n  cert: a\n  key: b\n  ca: c\n  crls: d\n`);
    const unknown = await runPostern(['agent', 'check', '--config', bad, '--connector', 'hq', '--target', 'a.b:1']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain(`error POSTERN_ERR_CONFIG_UNKNOWN_KEY: ${bad}:7:3: unknown key "tls.crls"`);
  });
});

describe('the library keeps no process alive for nothing', () => {
  it.each(['closed', 'unref'])('a script whose only stream is %s exits by itself without agent.close()', async (mode) => {
    const { stdout } = await run(process.execPath, [join(import.meta.dirname, 'exit-when-idle.mjs'), relay.url, pki.trustDomain, pki.files('user', 'alice').cert, pki.files('user', 'alice').key, pki.ca, mode], { timeout: 30_000 });
    expect(stdout).toBe(`dialed (${mode})\n`);
  });
});

describe('postern agent forward and socks', () => {
  it('forward logs forward.listening, prints how to connect, forwards, and exits 0 on SIGTERM', async () => {
    const child = startPostern('forward', ['agent', 'forward', '--config', join(pki.dir, 'agent.yaml'), '--listen', '127.0.0.1:0', '--connector', 'hq', '--target', 'postgres.internal:5432', '--log-format', 'json']);
    const line = await child.waitFor('forward.listening');
    const { port } = line['address'] as { host: string; port: number };
    await child.waitFor('agent.ready');
    expect(child.stdout).toContain(`psql -h 127.0.0.1 -p ${port}`);
    const payload = randomBytes(64 * 1024);
    const echoed = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const s = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => s.end(payload));
      s.on('data', (c: Buffer) => chunks.push(c));
      s.once('end', () => resolve(Buffer.concat(chunks)));
      s.once('error', reject);
    });
    expect(echoed.equals(payload)).toBe(true);
    expect(await child.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(child.lines.some((l) => l.event === 'process.stopped')).toBe(true);
  });

  it('socks serves a real client (curl) and exits 0 on SIGINT', async () => {
    relay.behavior = connectorSide({
      tls: material(pki, 'connector', 'hq'),
      serve: (socket, target) => socket.once('data', () => socket.end(`HTTP/1.1 200 OK\r\nContent-Length: ${target.length}\r\nConnection: close\r\n\r\n${target}`)),
    });
    const child = startPostern('socks', ['agent', 'socks', ...flags(), '--listen', '127.0.0.1:0', '--map', '*.st-mary.internal=hq', '--log-format', 'json']);
    const { port } = (await child.waitFor('socks.listening'))['address'] as { port: number };
    const { stdout } = await run('curl', ['--silent', '--show-error', '--max-time', '20', '--proxy', `socks5h://127.0.0.1:${port}`, 'http://wiki.st-mary.internal/']);
    expect(stdout).toBe('wiki.st-mary.internal:80');
    expect(await child.stop('SIGINT')).toEqual({ code: 0, signal: null });
  });
});
