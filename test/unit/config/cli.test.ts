import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { makeTestPki, type TestPki } from '../../helpers/pki.js';
import { REPO_ROOT, runPostern, startPostern, stopAll } from '../../helpers/processes.js';

// These run the built CLI (dist/): `npm test` builds first. Errors in the layers come before any
// file other than the config is read, so the example configs serve as they are.
const examples = resolve(REPO_ROOT, 'deployments/examples');

describe('config layering in the three CLIs (real processes)', () => {
  it('relay: an unknown POSTERN_RELAY_* variable exits 2 naming it', async () => {
    const { code, stderr } = await runPostern(['relay', '--config', resolve(examples, 'relay.yaml')], { env: { POSTERN_RELAY_LISTN: '0.0.0.0:8443' } });
    expect(code).toBe(2);
    expect(stderr).toMatch(/^error POSTERN_ERR_CONFIG_UNKNOWN_KEY: env POSTERN_RELAY_LISTN: no setting "LISTN" at the top level/);
  });

  it('relay: a flag overrides a bad variable; a bad flag is named as the flag', async () => {
    const env = { POSTERN_RELAY_CONFIG: resolve(examples, 'relay.yaml'), POSTERN_RELAY_LISTEN: 'nowhere' };
    const bad = await runPostern(['relay', '--listen', 'still-nowhere'], { env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error POSTERN_ERR_CONFIG_INVALID: flag --listen: field "listen": expected "host:port"/);
    const badLevel = await runPostern(['relay', '--log-level', 'loud'], { env: { POSTERN_RELAY_CONFIG: env.POSTERN_RELAY_CONFIG } });
    expect(badLevel.code).toBe(2);
    expect(badLevel.stderr).toContain('flag --log-level: field "log.level"');
  });

  it('connector: a single underscore where nesting needs two exits 2 with the right name', async () => {
    const { code, stderr } = await runPostern(['connector', '--config', resolve(examples, 'connector.yaml')], { env: { POSTERN_CONNECTOR_LIMITS_SHUTDOWN_GRACE_MS: '1000' } });
    expect(code).toBe(2);
    expect(stderr).toContain('error POSTERN_ERR_CONFIG_UNKNOWN_KEY: env POSTERN_CONNECTOR_LIMITS_SHUTDOWN_GRACE_MS');
    expect(stderr).toContain('did you mean POSTERN_CONNECTOR_LIMITS__SHUTDOWN_GRACE_MS?');
  });

  it('agent: a bad POSTERN_AGENT_* value exits 2 naming the variable and the field', async () => {
    const { code, stderr } = await runPostern(['agent', 'check', '--connector', 'hq', '--target', 'postgres.internal:5432'], {
      env: { POSTERN_AGENT_CONFIG: resolve(examples, 'agent.yaml'), POSTERN_AGENT_RELAY: 'https://relay.hospital.example' },
    });
    expect(code).toBe(2);
    expect(stderr).toMatch(/^error POSTERN_ERR_CONFIG_INVALID: env POSTERN_AGENT_RELAY: field "relay": expected a wss:\/\/ URL/);
    const unknown = await runPostern(['agent', 'check', '--config', resolve(examples, 'agent.yaml'), '--connector', 'hq', '--target', 'a.b:1'], { env: { POSTERN_AGENT_LOG__LEVL: 'debug' } });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('env POSTERN_AGENT_LOG__LEVL: no setting "LEVL" in "log"');
  });

  it('agent: without a file, variables count as the flags they stand for', async () => {
    const { code, stderr } = await runPostern(['agent', 'check', '--connector', 'hq', '--target', 'a.b:1'], {
      env: { POSTERN_AGENT_RELAY: 'wss://relay.hospital.example', POSTERN_AGENT_TLS: '{cert: a.crt, key: a.key, ca: ca.crt}' },
    });
    expect(code).toBe(2);
    expect(stderr).toContain('error POSTERN_ERR_USAGE: without --config, pass --trust-domain (or all of them');
  });
});

describe('a relay configured from the environment alone', () => {
  let pki: TestPki;
  beforeAll(async () => {
    pki = await makeTestPki();
  });
  afterAll(async () => {
    await stopAll();
    await pki?.cleanup();
  });

  it('starts, and its config.loaded line names every override by source, never by value', async () => {
    const relayCert = pki.files('relay', 'relay-1');
    const relay = startPostern('relay', ['relay', '--log-format', 'json', '--listen', '127.0.0.1:0'], {
      env: {
        POSTERN_RELAY_TRUST_DOMAIN: pki.trustDomain,
        POSTERN_RELAY_TLS: JSON.stringify({ cert: relayCert.cert, key: relayCert.key, ca: pki.ca, crl: pki.crl }),
        POSTERN_RELAY_POLICY__FILE: resolve(examples, 'policy.yaml'),
        POSTERN_RELAY_LISTEN: '127.0.0.1:1', // the flag wins
        POSTERN_RELAY_ADMIN__LISTEN: '127.0.0.1:0', // a field of `false | { listen }`
        POSTERN_RELAY_LOG__LEVEL: 'debug',
      },
    });
    const listening = await relay.waitFor('relay.listening');
    expect(Number(listening['port'])).toBeGreaterThan(1);
    // The last line of start-up: signal handlers are installed by the time it is read.
    await relay.waitFor('admin.listening');
    const loaded = relay.lines.find((l) => l.event === 'config.loaded')!;
    expect(loaded['file']).toBeUndefined();
    expect(loaded['overrides']).toEqual(
      expect.arrayContaining([
        { field: 'tls', source: 'env POSTERN_RELAY_TLS' },
        { field: 'listen', source: 'flag --listen' },
        { field: 'log.level', source: 'env POSTERN_RELAY_LOG__LEVEL' },
        { field: 'admin.listen', source: 'env POSTERN_RELAY_ADMIN__LISTEN' },
      ]),
    );
    expect(JSON.stringify(loaded)).not.toContain(relayCert.key);
    expect(await relay.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });
});
