import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { POSTERN_BIN, REPO_ROOT, startPostern, stopAll } from '../../helpers/processes.js';

// Docker does not run here: this runs the compose stack's own pieces as plain processes (the
// pki-init script, the example configs with the compose environment, the image's HEALTHCHECK
// command) to show that they fit together. Uses the built CLI (dist/).
const run = promisify(execFile);
const deployments = join(REPO_ROOT, 'deployments');
const compose = parseAllDocuments(readFileSync(join(deployments, 'compose/compose.yaml'), 'utf8'), { merge: true });
const services = (Array.isArray(compose) ? compose[0]! : compose).toJS()['services'] as Record<string, any>;
const dockerfile = readFileSync(join(deployments, 'container/Dockerfile'), 'utf8');
/** The image's HEALTHCHECK command: ["node", "-e", "…"]. */
const healthcheck = JSON.parse(/^\s*CMD (\[.*\])$/m.exec(dockerfile)![1]!) as string[];

let dir: string;

/** The pki-init script with the image's paths mapped into `dir`; compose's `$$` is a literal `$`. */
async function pkiInit(): Promise<void> {
  const script = (services['pki-init']['command'][0] as string)
    .replaceAll('$$', '$')
    .replaceAll('/var/lib/postern', dir)
    .replaceAll('node /app/dist/cli/postern.js', `"${process.execPath}" "${POSTERN_BIN}"`);
  await run('/bin/sh', ['-ec', script], { timeout: 120_000 });
}

async function etc(program: 'relay' | 'connector', files: string[]): Promise<string> {
  const at = join(dir, `etc-${program}`);
  await mkdir(at, { recursive: true });
  for (const f of files) await copyFile(join(deployments, 'examples', f), join(at, f));
  await symlink(join(dir, `${program}-pki`), join(at, 'pki'));
  return join(at, `${program}.yaml`);
}

async function healthy(url: string): Promise<number> {
  try {
    await run(healthcheck[0] === 'node' ? process.execPath : healthcheck[0]!, healthcheck.slice(1), { env: { ...process.env, POSTERN_HEALTHCHECK_URL: url }, timeout: 30_000 });
    return 0;
  } catch (err) {
    return (err as { code: number }).code;
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postern-compose-'));
  for (const d of ['ca', 'relay-pki', 'connector-pki', 'agent-pki']) await mkdir(join(dir, d));
});

afterAll(async () => {
  await stopAll();
  await rm(dir, { recursive: true, force: true });
});

describe('the compose stack, without Docker', () => {
  it('pki-init issues into each volume only its own key, and a second run only re-signs the CRL', async () => {
    await pkiInit();
    const { stdout } = await run(process.execPath, [POSTERN_BIN, 'pki', 'inspect', join(dir, 'relay-pki/relay-relay-1.crt'), '--json'], { timeout: 60_000 });
    expect(stdout).toContain('spiffe://hospital.example/relay/relay-1');
    const ca = readFileSync(join(dir, 'ca/ca.crt'), 'utf8');
    await pkiInit();
    expect(readFileSync(join(dir, 'relay-pki/ca.crt'), 'utf8')).toBe(ca);
    expect(existsSync(join(dir, 'relay-pki/ca.key'))).toBe(false);
    expect(existsSync(join(dir, 'relay-pki/connector-hq.key'))).toBe(false);
    expect(existsSync(join(dir, 'connector-pki/relay-relay-1.key'))).toBe(false);
  }, 180_000);

  it('relay and connector start from the example configs with the compose environment; the HEALTHCHECK passes on both', async () => {
    const relayConfig = await etc('relay', ['relay.yaml', 'policy.yaml']);
    const relay = startPostern('relay', ['relay', '--log-format', 'json'], {
      // Loopback and free ports here instead of the container's 0.0.0.0:8443 and 9090.
      env: { POSTERN_RELAY_CONFIG: relayConfig, POSTERN_RELAY_LISTEN: '127.0.0.1:0', POSTERN_RELAY_ADMIN__LISTEN: '127.0.0.1:0' },
    });
    const port = Number((await relay.waitFor('relay.listening'))['port']);
    const relayAdmin = (await relay.waitFor('admin.listening'))['address'] as string;
    expect(await healthy(`http://${relayAdmin}/healthz`)).toBe(0);

    const connectorConfig = await etc('connector', ['connector.yaml']);
    const env = { ...(services['connector']['environment'] as Record<string, string>) };
    expect(env['POSTERN_CONNECTOR_RELAYS']).toBe('[wss://relay:8443]');
    const connector = startPostern('connector', ['connector', '--log-format', 'json'], {
      env: {
        ...env,
        POSTERN_CONNECTOR_CONFIG: connectorConfig,
        POSTERN_CONNECTOR_RELAYS: `[wss://localhost:${port}]`, // "relay" is a Docker network name
        POSTERN_CONNECTOR_ADMIN__LISTEN: '127.0.0.1:0',
      },
    });
    const connectorAdmin = (await connector.waitFor('admin.listening'))['address'] as string;
    await relay.waitFor((l) => l.event === 'tunnel.up');
    expect(await healthy(`http://${connectorAdmin}/healthz`)).toBe(0);
    expect(await healthy('http://127.0.0.1:9/healthz')).toBe(1); // nothing listens there: the check fails

    expect(await connector.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(await relay.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  }, 120_000);
});
