import { execFile } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTestPki, postern, type TestPki } from '../../helpers/pki.js';
import { POSTERN_BIN } from '../../helpers/processes.js';

// Spawns the built CLI (dist/): `npm test` builds first; alone, run `npx tsc -p .` before.
const run = promisify(execFile);

async function openssl(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run('openssl', args);
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: e.stdout + e.stderr };
  }
}

/** Runs a `postern` command expected to fail; returns its exit code and stderr. */
async function fails(args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, [POSTERN_BIN, ...args]);
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
  throw new Error(`postern ${args.join(' ')} succeeded but should have failed`);
}

describe('postern pki (spawned CLI, checked with openssl)', () => {
  let pki: TestPki;
  beforeAll(async () => {
    pki = await makeTestPki();
  });
  afterAll(async () => {
    await pki?.cleanup();
  });

  it('issues exactly one SPIFFE URI SAN, chains to the CA, and writes keys 0600', async () => {
    const alice = pki.files('user', 'alice');
    const san = await openssl(['x509', '-in', alice.cert, '-noout', '-ext', 'subjectAltName']);
    expect(san.code).toBe(0);
    expect(san.out.trim().split('\n').map((l) => l.trim())).toEqual(['X509v3 Subject Alternative Name:', 'URI:spiffe://hospital.example/org/st-mary/user/alice']);
    expect((await openssl(['verify', '-CAfile', pki.ca, alice.cert])).out).toContain(': OK');

    const relay = await openssl(['x509', '-in', pki.files('relay', 'relay-1').cert, '-noout', '-ext', 'subjectAltName,extendedKeyUsage,basicConstraints,keyUsage']);
    expect(relay.out).toContain('URI:spiffe://hospital.example/relay/relay-1, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(relay.out).toMatch(/Extended Key Usage:\s*\n\s*TLS Web Server Authentication\s*\n/);
    expect(relay.out).toMatch(/Basic Constraints: critical\s*\n\s*CA:FALSE/);
    const connector = await openssl(['x509', '-in', pki.files('connector', 'hq').cert, '-noout', '-ext', 'extendedKeyUsage']);
    expect(connector.out).toContain('TLS Web Client Authentication, TLS Web Server Authentication');
    const ca = await openssl(['x509', '-in', pki.ca, '-noout', '-ext', 'basicConstraints,keyUsage']);
    expect(ca.out).toMatch(/Basic Constraints: critical\s*\n\s*CA:TRUE, pathlen:0/);
    expect(ca.out).toMatch(/Key Usage: critical\s*\n\s*Certificate Sign, CRL Sign/);

    for (const key of [join(pki.dir, 'ca.key'), alice.key, pki.files('relay', 'relay-1').key]) {
      expect(((await stat(key)).mode & 0o777).toString(8)).toBe('600');
    }
    const text = await readFile(alice.key, 'utf8');
    expect(text).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
  });

  it('revoke puts the serial in crl.pem, openssl then refuses the certificate, inspect reports it', async () => {
    const alice = pki.files('user', 'alice');
    const serial = JSON.parse((await postern(['pki', 'inspect', alice.cert, '--json'])).stdout).serial as string;
    const before = await openssl(['verify', '-crl_check', '-CRLfile', pki.crl, '-CAfile', pki.ca, alice.cert]);
    expect(before.out).toContain(': OK');

    await pki.revoke(alice.cert);

    const crl = await openssl(['crl', '-in', pki.crl, '-noout', '-text']);
    expect(crl.out).toContain(`Serial Number: ${serial.toUpperCase()}`);
    expect(crl.out).toMatch(/X509v3 CRL Number:\s*\n\s*2\b/);
    expect(await readFile(pki.crl, 'utf8')).toMatch(/^-----BEGIN X509 CRL-----\n/);
    const after = await openssl(['verify', '-crl_check', '-CRLfile', pki.crl, '-CAfile', pki.ca, alice.cert]);
    expect(after.code).not.toBe(0);
    expect(after.out).toContain('certificate revoked');
    const other = await openssl(['verify', '-crl_check', '-CRLfile', pki.crl, '-CAfile', pki.ca, pki.files('service', 'reports').cert]);
    expect(other.out).toContain(': OK');

    const report = JSON.parse((await postern(['pki', 'inspect', alice.cert, '--dir', pki.dir, '--json'])).stdout);
    expect(report).toMatchObject({ kind: 'certificate', spiffeId: 'spiffe://hospital.example/org/st-mary/user/alice', role: 'user', org: 'st-mary', name: 'alice', serial, revoked: true });
    const reports = JSON.parse((await postern(['pki', 'inspect', pki.files('service', 'reports').cert, '--dir', pki.dir, '--json'])).stdout);
    expect(reports).toMatchObject({ role: 'service', revoked: false });

    // `crl` re-signs with a new number and keeps the revoked entry.
    await pki.pki(['crl', '--dir', pki.dir, '--days', '3']);
    const resigned = JSON.parse((await postern(['pki', 'inspect', pki.crl, '--json'])).stdout);
    expect(resigned).toMatchObject({ kind: 'crl', crlNumber: 3, revoked: [{ serial }] });
    expect(Date.parse(resigned.nextUpdate) - Date.parse(resigned.thisUpdate)).toBe(3 * 24 * 3600 * 1000);
    expect((await openssl(['verify', '-crl_check', '-CRLfile', pki.crl, '-CAfile', pki.ca, alice.cert])).out).toContain('certificate revoked');

    // Revoking by serial is idempotent.
    expect((await postern(['pki', 'revoke', '--serial', serial.toUpperCase(), '--dir', pki.dir])).stdout).toContain('already revoked');
  });

  it('refuses to overwrite a CA or a certificate without --force', async () => {
    const init = await fails(['pki', 'init', '--trust-domain', 'hospital.example', '--dir', pki.dir]);
    expect(init.code).toBe(1);
    expect(init.stderr).toMatch(/^error POSTERN_ERR_PKI_EXISTS: /);
    const again = await fails(['pki', 'issue', 'user', 'alice', '--org', 'st-mary', '--dir', pki.dir]);
    expect(again.stderr).toMatch(/^error POSTERN_ERR_PKI_FILE_EXISTS: .*user-alice\.crt/);
  });

  it('validates roles, orgs and names', async () => {
    const cases: [string[], RegExp][] = [
      [['issue', 'relay', 'r2', '--org', 'st-mary'], /POSTERN_ERR_USAGE: a relay belongs to no org/],
      [['issue', 'user', 'bob'], /POSTERN_ERR_USAGE: a user certificate needs --org/],
      [['issue', 'user', 'Bob', '--org', 'st-mary'], /POSTERN_ERR_PKI_INVALID_NAME: name "Bob"/],
      [['issue', 'user', '..', '--org', 'st-mary'], /POSTERN_ERR_PKI_INVALID_NAME: name "\.\."/],
      [['issue', 'service', 'a/b', '--org', 'st-mary'], /POSTERN_ERR_PKI_INVALID_NAME: name "a\/b"/],
      [['issue', 'user', 'bob', '--org', ''], /POSTERN_ERR_PKI_INVALID_NAME: org ""/],
      [['issue', 'admin', 'bob', '--org', 'st-mary'], /POSTERN_ERR_USAGE: role "admin"/],
      [['issue', 'user', 'bob', '--org', 'st-mary', '--days', '0'], /POSTERN_ERR_USAGE: days must be/],
      [['issue', 'user', 'bob', '--org', 'st-mary', '--dns', 'x.example'], /POSTERN_ERR_USAGE: --dns and --ip are for relay/],
      [['issue', 'relay', 'r2', '--ip', '300.1.1.1'], /POSTERN_ERR_PKI_INVALID_NAME: IP address "300\.1\.1\.1"/],
    ];
    for (const [args, expected] of cases) {
      const r = await fails(['pki', ...args, '--dir', pki.dir]);
      expect(r.stderr, args.join(' ')).toMatch(expected);
    }
    const upper = await fails(['pki', 'init', '--trust-domain', 'Hospital.example', '--dir', join(pki.dir, 'other')]);
    expect(upper.stderr).toMatch(/POSTERN_ERR_PKI_INVALID_NAME: trust domain "Hospital\.example" is invalid: it must be lowercase/);
    const missing = await fails(['pki', 'issue', 'user', 'bob', '--org', 'st-mary', '--dir', join(pki.dir, 'nowhere')]);
    expect(missing.stderr).toMatch(/POSTERN_ERR_PKI_NOT_FOUND/);
  });

  it('bundles CA certificates (deduplicated), refuses leaves, and refuses to revoke a foreign certificate', async () => {
    const other = await makeTestPki({ trustDomain: 'vendor.example', org: 'acme' });
    try {
      const { stdout } = await postern(['pki', 'bundle', pki.ca, other.ca, pki.ca]);
      expect(stdout.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(2);
      const bundle = join(other.dir, 'trust.pem');
      await writeFile(bundle, stdout);
      const report = JSON.parse((await postern(['pki', 'inspect', bundle, '--json'])).stdout);
      expect(report.kind).toBe('bundle');
      expect(report.certificates.map((c: { trustDomain: string }) => c.trustDomain)).toEqual(['hospital.example', 'vendor.example']);
      // Both CAs in one bundle verify certificates of each.
      for (const cert of [pki.files('service', 'reports').cert, other.files('user', 'alice').cert]) {
        expect((await openssl(['verify', '-CAfile', bundle, cert])).out).toContain(': OK');
      }

      const leaf = await fails(['pki', 'bundle', pki.ca, pki.files('user', 'alice').cert]);
      expect(leaf.stderr).toMatch(/POSTERN_ERR_PKI_INVALID_CERT: .*user-alice\.crt.*is not a CA certificate/);
      const foreign = await fails(['pki', 'revoke', other.files('user', 'alice').cert, '--dir', pki.dir]);
      expect(foreign.stderr).toMatch(/POSTERN_ERR_PKI_NOT_ISSUED_BY_CA/);
      const notCert = await fails(['pki', 'inspect', join(pki.dir, 'revoked.json')]);
      expect(notCert.stderr).toMatch(/POSTERN_ERR_PKI_INVALID_CERT/);
    } finally {
      await other.cleanup();
    }
  });
});
