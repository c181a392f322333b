import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { runPostern, startPostern, stopAll } from '../../helpers/processes.js';
import { startFakeRelay, type FakeRelay } from './helpers.js';

describe('postern connector (real process)', () => {
  let pki: TestPki;
  let relay: FakeRelay;
  let dir: string;

  beforeAll(async () => {
    pki = await makeTestPki();
    relay = await startFakeRelay(pki);
    // The config refers to its files relative to its own directory, not to the working directory.
    dir = join(pki.dir, 'site');
    await mkdir(join(dir, 'pki'), { recursive: true });
    const conn = pki.files('connector', 'hq');
    await Promise.all([
      copyFile(conn.cert, join(dir, 'pki/connector.crt')),
      copyFile(conn.key, join(dir, 'pki/connector.key')),
      copyFile(pki.ca, join(dir, 'pki/ca.crt')),
      copyFile(pki.crl, join(dir, 'pki/crl.pem')),
    ]);
    await writeFile(
      join(dir, 'connector.yaml'),
      [
        `trustDomain: ${pki.trustDomain}`,
        `relays: ["${relay.url}"]`,
        'tls: { cert: pki/connector.crt, key: pki/connector.key, ca: pki/ca.crt, crl: pki/crl.pem }',
        'allowlist:',
        '  targets: ["127.0.0.1:5432"]',
        // Not the default 127.0.0.1:9091: test files run side by side.
        'admin: false',
        '',
      ].join('\n'),
    );
  });

  afterAll(async () => {
    await stopAll();
    await relay?.close();
    await pki?.cleanup();
  });

  it('starts, holds a tunnel, and stops cleanly on SIGTERM (exit 0, tunnel closed)', async () => {
    const child = startPostern('connector', ['connector', '--config', join(dir, 'connector.yaml'), '--log-format', 'json'], { cwd: pki.dir });
    expect(await child.waitFor('connector.started')).toMatchObject({ identity: `spiffe://${pki.trustDomain}/org/st-mary/connector/hq`, relays: [relay.url] });
    await child.waitFor((l) => l.event === 'tunnel.up' && l['audit'] === undefined);
    expect(await child.waitFor((l) => l.event === 'tunnel.up' && l['audit'] === true)).toMatchObject({ connector: 'st-mary/hq', relay: relay.url });
    const session = await relay.sessions.waitFor(() => true);
    const closed = new Promise<void>((resolve) => (session.closed ? resolve() : session.once('close', () => resolve())));
    expect(await child.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    await closed;
    expect(child.lines.some((l) => l.event === 'process.stopped')).toBe(true);
  });

  it('refuses a config with an unknown key, naming file, line and key (exit 2)', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, `trustDomain: ${pki.trustDomain}\nrelays: ["${relay.url}"]\ntls: { cert: a, key: b, ca: c }\nallowlist: { targets: ["127.0.0.1:5432"] }\nreconect: {}\n`);
    const result = await runPostern(['connector', '--config', bad]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('POSTERN_ERR_CONFIG_UNKNOWN_KEY');
    expect(result.stderr).toContain(`${bad}:5:1: unknown key "reconect"`);
  });

  it('refuses a certificate that is not a connector certificate, naming why (exit 1)', async () => {
    const user = pki.files('user', 'alice');
    const wrong = join(dir, 'wrong-cert.yaml');
    await writeFile(wrong, `trustDomain: ${pki.trustDomain}\nrelays: ["${relay.url}"]\ntls: { cert: "${user.cert}", key: "${user.key}", ca: "${pki.ca}" }\nallowlist: { targets: ["127.0.0.1:5432"] }\n`);
    const result = await runPostern(['connector', '--config', wrong]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/POSTERN_ERR_ID_WRONG_ROLE: .*user certificate; connector-client requires connector/);
  });
});
