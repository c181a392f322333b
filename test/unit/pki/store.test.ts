import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PkiError } from '../../../src/errors.js';
import { certificateFacts, identityFromCertificate } from '../../../src/identity/index.js';
import {
  BACKDATE_MS, crlDerBlocks, crlFacts, decodePem, generateKeyPair, initPki, inspectFile, issueCertificate, loadCa, randomSerial,
  resignCrl, revokeCertificate,
} from '../../../src/pki/index.js';
import { EC_SIGNING_ALGORITHM, x509 } from '../../../src/pki/x509.js';

const run = promisify(execFile);
const DAY = 86_400_000;
let root: string;
let n = 0;
const fresh = () => join(root, `pki-${++n}`);

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof PkiError) return err.code;
    return `other: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
  }
  return 'accepted';
}

async function crlOf(dir: string) {
  return crlFacts(crlDerBlocks(await readFile(join(dir, 'crl.pem')))[0]!, 'crl.pem');
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'postern-store-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('initPki', () => {
  it('writes a P-256 CA, its key 0600 in a 0700 directory, an empty store and a signed empty CRL', async () => {
    const dir = fresh();
    const r = await initPki({ dir, trustDomain: 'hospital.example', days: 100 });
    expect(((await stat(dir)).mode & 0o777).toString(8)).toBe('700');
    expect(((await stat(r.caKey)).mode & 0o777).toString(8)).toBe('600');
    const ca = await loadCa(dir);
    expect(ca.trustDomain).toBe('hospital.example');
    expect(ca.facts).toMatchObject({ isCa: true, uris: ['spiffe://hospital.example'] });
    expect(ca.facts.keyUsage?.sort()).toEqual(['crlSign', 'keyCertSign']);
    expect(ca.facts.notAfter.getTime() - ca.facts.notBefore.getTime()).toBe(100 * DAY + BACKDATE_MS);
    expect(JSON.parse(await readFile(join(dir, 'revoked.json'), 'utf8'))).toEqual({ version: 1, crlNumber: 1, revoked: [] });
    const crl = await crlOf(dir);
    expect(crl).toMatchObject({ crlNumber: 1, revoked: [], authorityKeyId: ca.facts.subjectKeyId });
    expect(crl.issuerDer.equals(ca.facts.subjectDer)).toBe(true);
    expect(crl.nextUpdate!.getTime() - crl.thisUpdate.getTime()).toBe(7 * DAY);
  });

  it('--force replaces the CA, resets the revocations, and writes the new key 0600 over a looser file', async () => {
    const dir = fresh();
    await initPki({ dir, trustDomain: 'hospital.example' });
    const first = await loadCa(dir);
    await issueCertificate({ dir, role: 'user', name: 'alice', org: 'st-mary' });
    await revokeCertificate({ dir, certFile: join(dir, 'user-alice.crt') });
    await chmod(join(dir, 'ca.key'), 0o644);
    expect(await codeOf(initPki({ dir, trustDomain: 'hospital.example' }))).toBe('POSTERN_ERR_PKI_EXISTS');
    await initPki({ dir, trustDomain: 'hospital.example', force: true });
    const second = await loadCa(dir);
    expect(second.facts.serial).not.toBe(first.facts.serial);
    // Two generations never share a subject: OpenSSL looks CRLs up by issuer name.
    expect(second.facts.subject).not.toBe(first.facts.subject);
    expect(((await stat(join(dir, 'ca.key'))).mode & 0o777).toString(8)).toBe('600');
    expect((await crlOf(dir)).revoked).toEqual([]);
  });

  it('validates the trust domain before touching the disk', async () => {
    const dir = fresh();
    expect(await codeOf(initPki({ dir, trustDomain: 'Hospital.Example' }))).toBe('POSTERN_ERR_PKI_INVALID_NAME');
    expect(await codeOf(stat(dir))).not.toBe('accepted');
    expect(await codeOf(initPki({ dir, trustDomain: 'hospital.example', days: 0 }))).toBe('POSTERN_ERR_USAGE');
  });

  it('refuses a CA key that does not match the certificate', async () => {
    const a = fresh();
    const b = fresh();
    await initPki({ dir: a, trustDomain: 'hospital.example' });
    await initPki({ dir: b, trustDomain: 'hospital.example' });
    await writeFile(join(a, 'ca.key'), await readFile(join(b, 'ca.key')));
    expect(await codeOf(loadCa(a))).toBe('POSTERN_ERR_PKI_KEY_MISMATCH');
    expect(await codeOf(loadCa(fresh()))).toBe('POSTERN_ERR_PKI_NOT_FOUND');
  });
});

describe('issueCertificate', () => {
  let dir: string;
  beforeAll(async () => {
    dir = fresh();
    await initPki({ dir, trustDomain: 'hospital.example', days: 200 });
  });

  it('gives each role its default validity, a 16-byte positive serial and a 5-minute backdate', async () => {
    const now = new Date('2030-01-01T00:00:00.000Z');
    const ca = fresh();
    await initPki({ dir: ca, trustDomain: 'hospital.example', now: new Date(now.getTime() - DAY) });
    const expected = { relay: 397, connector: 397, service: 90, user: 30 } as const;
    for (const [role, days] of Object.entries(expected) as [keyof typeof expected, number][]) {
      const r = await issueCertificate({ dir: ca, role, name: 'x', ...(role === 'relay' ? {} : { org: 'o' }), now });
      const facts = certificateFacts(await readFile(r.cert, 'utf8'));
      expect(facts.notBefore.getTime()).toBe(now.getTime() - BACKDATE_MS);
      expect(facts.notAfter.getTime()).toBe(now.getTime() + days * DAY);
      expect(facts.serial).toMatch(/^[1-7][0-9a-f]{31}$/);
      expect(r.serial).toBe(facts.serial);
      expect(r.capped).toBe(false);
    }
  });

  it('caps the validity at the CA expiry and says so', async () => {
    const r = await issueCertificate({ dir, role: 'relay', name: 'long', days: 1000 });
    const ca = await loadCa(dir);
    expect(r.capped).toBe(true);
    expect(r.notAfter.getTime()).toBe(ca.facts.notAfter.getTime());
  });

  it('writes to --out and never overwrites without force', async () => {
    const out = join(root, 'elsewhere');
    const r = await issueCertificate({ dir, role: 'service', name: 'reports', org: 'st-mary', out });
    expect([r.cert, r.key]).toEqual([`${out}.crt`, `${out}.key`]);
    expect(decodePem(await readFile(r.key, 'utf8')).map((b) => b.label)).toEqual(['PRIVATE KEY']);
    expect(await codeOf(issueCertificate({ dir, role: 'service', name: 'reports', org: 'st-mary', out }))).toBe('POSTERN_ERR_PKI_FILE_EXISTS');
    const again = await issueCertificate({ dir, role: 'service', name: 'reports', org: 'st-mary', out, force: true });
    expect(again.serial).not.toBe(r.serial);
  });

  it('keeps DNS and IP SANs for relays only, normalized and deduplicated', async () => {
    const r = await issueCertificate({ dir, role: 'relay', name: 'edge', dns: ['Relay.Example.', 'relay.example', '*.relays.example'], ip: ['::1', '192.0.2.1'] });
    const facts = certificateFacts(await readFile(r.cert, 'utf8'));
    expect(facts).toMatchObject({ uris: ['spiffe://hospital.example/relay/edge'], dns: ['relay.example', '*.relays.example'], ips: ['::1', '192.0.2.1'], extKeyUsage: ['serverAuth'] });
    expect(await codeOf(issueCertificate({ dir, role: 'relay', name: 'bad', dns: ['under_score.example'] }))).toBe('POSTERN_ERR_PKI_INVALID_NAME');
  });
});

describe('revocation store and CRL', () => {
  it('keeps every revocation across revoke and crl, with a growing CRL number', async () => {
    const dir = fresh();
    await initPki({ dir, trustDomain: 'hospital.example' });
    const a = await issueCertificate({ dir, role: 'user', name: 'a', org: 'o' });
    const b = await issueCertificate({ dir, role: 'user', name: 'b', org: 'o' });
    const r1 = await revokeCertificate({ dir, certFile: a.cert });
    expect(r1).toMatchObject({ serial: a.serial, spiffeId: 'spiffe://hospital.example/org/o/user/a', crlNumber: 2 });
    const r2 = await revokeCertificate({ dir, serial: `0x${b.serial.toUpperCase()}` });
    expect(r2).toMatchObject({ serial: b.serial, crlNumber: 3 });
    const r3 = await resignCrl({ dir, days: 2 });
    expect(r3).toMatchObject({ crlNumber: 4, revokedCount: 2 });
    const crl = await crlOf(dir);
    expect(crl.crlNumber).toBe(4);
    expect(crl.revoked.map((e) => e.serial).sort()).toEqual([a.serial, b.serial].sort());
    expect(crl.nextUpdate!.getTime() - crl.thisUpdate.getTime()).toBe(2 * DAY);
    const again = await revokeCertificate({ dir, certFile: a.cert });
    expect(again.alreadyRevokedAt).toBe(JSON.parse(await readFile(join(dir, 'revoked.json'), 'utf8')).revoked[0].revokedAt);
    expect((await crlOf(dir)).revoked).toHaveLength(2);
  });

  it('refuses a corrupt store, a bad serial, and both or neither of file and serial', async () => {
    const dir = fresh();
    await initPki({ dir, trustDomain: 'hospital.example' });
    expect(await codeOf(revokeCertificate({ dir, serial: 'xyz' }))).toBe('POSTERN_ERR_USAGE');
    expect(await codeOf(revokeCertificate({ dir }))).toBe('POSTERN_ERR_USAGE');
    expect(await codeOf(revokeCertificate({ dir, serial: '01', certFile: join(dir, 'ca.crt') }))).toBe('POSTERN_ERR_USAGE');
    await writeFile(join(dir, 'revoked.json'), '{"version":1,"crlNumber":-1,"revoked":[]}');
    expect(await codeOf(resignCrl({ dir }))).toBe('POSTERN_ERR_PKI_STATE_INVALID');
    await writeFile(join(dir, 'revoked.json'), '{not json');
    expect(await codeOf(revokeCertificate({ dir, serial: '01' }))).toBe('POSTERN_ERR_PKI_STATE_INVALID');
  });

  it('lets one writer at a time change the directory, and breaks the lock of a dead process', async () => {
    const dir = fresh();
    await initPki({ dir, trustDomain: 'hospital.example' });
    const lock = join(dir, '.postern-pki.lock');
    // A live holder (this very process) keeps others out, and nothing is changed meanwhile.
    await writeFile(lock, String(process.pid));
    expect(await codeOf(revokeCertificate({ dir, serial: '0a' }))).toBe('POSTERN_ERR_PKI_LOCKED');
    expect(await codeOf(resignCrl({ dir }))).toBe('POSTERN_ERR_PKI_LOCKED');
    expect(JSON.parse(await readFile(join(dir, 'revoked.json'), 'utf8'))).toMatchObject({ crlNumber: 1, revoked: [] });
    await rm(lock);
    expect((await revokeCertificate({ dir, serial: '0b' })).crlNumber).toBe(2);
    expect(await codeOf(stat(lock))).not.toBe('accepted');
    // A lock whose process is gone (pid of a child that has exited) is broken.
    const { stdout } = await run(process.execPath, ['-p', 'process.pid']);
    await writeFile(lock, stdout.trim());
    expect((await revokeCertificate({ dir, serial: '0c' })).crlNumber).toBe(3);
    expect(await codeOf(stat(lock))).not.toBe('accepted');
  });
});

describe('name constraints', () => {
  it('a constrained CA issues our leaves, and OpenSSL refuses a URI of another trust domain under it', async () => {
    const dir = fresh();
    await initPki({ dir, trustDomain: 'hospital.example', nameConstraints: true });
    const ok = await issueCertificate({ dir, role: 'user', name: 'alice', org: 'st-mary' });
    const verify = (file: string) => run('openssl', ['verify', '-CAfile', join(dir, 'ca.crt'), file]).then((r) => r.stdout, (e: { stdout: string; stderr: string }) => e.stdout + e.stderr);
    expect(await verify(ok.cert)).toContain(': OK');

    const ca = await loadCa(dir);
    const keys = await generateKeyPair();
    const rogue = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: [{ CN: ['rogue'] }],
      issuer: ca.cert.subjectName,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + DAY),
      publicKey: keys.publicKey,
      signingKey: ca.key,
      signingAlgorithm: EC_SIGNING_ALGORITHM,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://vendor.example/org/x/user/y' }])],
    });
    const file = join(dir, 'rogue.crt');
    await writeFile(file, rogue.toString('pem'));
    expect(await verify(file)).toMatch(/permitted subtree violation/);
  });
});

describe('inspectFile', () => {
  it('reads DER certificates and CRLs too, and reports revocation against --dir', async () => {
    const dir = fresh();
    await initPki({ dir, trustDomain: 'hospital.example' });
    const alice = await issueCertificate({ dir, role: 'user', name: 'alice', org: 'st-mary' });
    await revokeCertificate({ dir, certFile: alice.cert });
    const der = join(dir, 'alice.der');
    await writeFile(der, decodePem(await readFile(alice.cert, 'utf8'))[0]!.der);
    expect(await inspectFile({ file: der, dir })).toMatchObject({ kind: 'certificate', name: 'alice', revoked: true });
    const crlDer = join(dir, 'crl.der');
    await writeFile(crlDer, decodePem(await readFile(join(dir, 'crl.pem'), 'utf8'))[0]!.der);
    expect(await inspectFile({ file: crlDer })).toMatchObject({ kind: 'crl', crlNumber: 2, revoked: [{ serial: alice.serial }] });
    const ca = await inspectFile({ file: join(dir, 'ca.crt'), dir });
    expect(ca).toMatchObject({ kind: 'certificate', isCa: true, trustDomain: 'hospital.example', revoked: false });
    // The identity stays the one place that accepts it.
    expect(identityFromCertificate(await readFile(alice.cert), { trustDomain: 'hospital.example', presentedAs: 'agent-client' }).serial).toBe(alice.serial);
  });
});
