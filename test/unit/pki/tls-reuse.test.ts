/**
 * acceptTlsOverDuplex reuses its non-listening servers (one SecureContext per options object)
 * and certificateFacts caches parses by DER: both must stay exact when handshakes overlap,
 * fail, or time out, and a cached result must not be shared mutable state.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { duplexPair } from 'node:stream';
import type * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certificateFacts, type Role } from '../../../src/identity/index.js';
import { initPki, issueCertificate, leafPrefix, revokeCertificate } from '../../../src/pki/index.js';
import { acceptTlsOverDuplex, clientTlsOptions, connectTlsOverDuplex, loadTlsMaterial, peerIdentity, serverTlsOptions, type TlsMaterial } from '../../../src/pki/tls.js';

const TD = 'hospital.example';
let root: string;
let dir1: string;
let dir2: string;

const files = (dir: string, role: Role, name: string) => {
  const prefix = leafPrefix(dir, role, name);
  return { cert: `${prefix}.crt`, key: `${prefix}.key` };
};
const material = (dir: string, role: Role, name: string, caDir = dir): TlsMaterial =>
  loadTlsMaterial({ ...files(dir, role, name), ca: join(caDir, 'ca.crt'), crl: join(caDir, 'crl.pem') });

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'postern-tls-reuse-'));
  dir1 = join(root, 'ca1');
  dir2 = join(root, 'ca2');
  await initPki({ dir: dir1, trustDomain: TD });
  await issueCertificate({ dir: dir1, role: 'connector', name: 'hq', org: 'st-mary' });
  await issueCertificate({ dir: dir1, role: 'user', name: 'alice', org: 'st-mary' });
  await issueCertificate({ dir: dir1, role: 'user', name: 'mallory', org: 'st-mary' });
  await revokeCertificate({ dir: dir1, certFile: files(dir1, 'user', 'mallory').cert });
  await initPki({ dir: dir2, trustDomain: TD });
  await issueCertificate({ dir: dir2, role: 'user', name: 'bob', org: 'st-mary' });
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const innerServer = { trustDomain: TD, presentedAs: 'connector-inner-server', org: 'st-mary', name: 'hq' } as const;
const innerClient = { trustDomain: TD, presentedAs: 'agent-inner-client', org: 'st-mary' } as const;

function linkedPair() {
  const [a, b] = duplexPair();
  a.once('close', () => b.destroy());
  b.once('close', () => a.destroy());
  return [a, b] as const;
}

/** One handshake against the shared server options; the server side's outcome as a name or a code. */
async function handshake(serverOptions: tls.TlsOptions, client: TlsMaterial): Promise<string> {
  const [a, b] = linkedPair();
  const accepted = acceptTlsOverDuplex(a, serverOptions);
  const connected = connectTlsOverDuplex(b, clientTlsOptions(client, innerServer));
  const [s, c] = await Promise.allSettled([accepted, connected]);
  if (c.status === 'fulfilled') c.value.destroy();
  if (s.status === 'rejected') return (s.reason as { code: string }).code;
  const name = peerIdentity(s.value, innerClient).name;
  s.value.destroy();
  return name;
}

describe('acceptTlsOverDuplex with one options object for many handshakes', () => {
  it('gives every overlapping handshake its own outcome', async () => {
    const options = serverTlsOptions(material(dir1, 'connector', 'hq'));
    const alice = material(dir1, 'user', 'alice');
    const mallory = material(dir1, 'user', 'mallory');
    // Trusts the server's CA, presents a certificate of another CA.
    const bob = material(dir2, 'user', 'bob', dir1);
    const clients = [alice, mallory, bob, alice, mallory, alice, bob, alice];
    const outcomes = await Promise.all(clients.map((c) => handshake(options, c)));
    expect(outcomes).toEqual([
      'alice', 'POSTERN_ERR_TLS_CERT_REVOKED', 'POSTERN_ERR_TLS_CERT_UNTRUSTED', 'alice',
      'POSTERN_ERR_TLS_CERT_REVOKED', 'alice', 'POSTERN_ERR_TLS_CERT_UNTRUSTED', 'alice',
    ]);
  });

  it('refuses a revoked client after serving a good one, and serves a good one after a refusal', async () => {
    const options = serverTlsOptions(material(dir1, 'connector', 'hq'));
    const outcomes: string[] = [];
    for (const c of ['alice', 'mallory', 'alice', 'mallory']) outcomes.push(await handshake(options, material(dir1, 'user', c)));
    expect(outcomes).toEqual(['alice', 'POSTERN_ERR_TLS_CERT_REVOKED', 'alice', 'POSTERN_ERR_TLS_CERT_REVOKED']);
  });

  it('serves the next handshake after one timed out', async () => {
    const options = serverTlsOptions(material(dir1, 'connector', 'hq'));
    const [silent] = duplexPair();
    await expect(acceptTlsOverDuplex(silent, options, { timeoutMs: 100 })).rejects.toMatchObject({ code: 'POSTERN_ERR_TLS_HANDSHAKE_TIMEOUT' });
    expect(await handshake(options, material(dir1, 'user', 'alice'))).toBe('alice');
  });
});

describe('certificateFacts cache', () => {
  it('returns equal facts for the same bytes, and a copy the caller may change', async () => {
    const pem = await import('node:fs/promises').then((fs) => fs.readFile(files(dir1, 'user', 'alice').cert));
    const first = certificateFacts(pem);
    const uri = first.uris[0];
    expect(uri).toContain('alice');
    first.uris.push('spiffe://evil.example/user/x');
    first.keyUsage?.sort();
    const second = certificateFacts(pem);
    expect(second.uris).toEqual([uri]);
    expect(second.fingerprint).toBe(first.fingerprint);
  });

  it('keeps its own copy of the DER, whatever the caller does with its buffer', async () => {
    const pem = await import('node:fs/promises').then((fs) => fs.readFile(files(dir1, 'user', 'mallory').cert));
    const der = Buffer.from(certificateFacts(pem).der);
    const scratch = Buffer.from(der);
    const fromScratch = certificateFacts(scratch);
    scratch.fill(0);
    expect(certificateFacts(der).der.equals(der)).toBe(true);
    expect(fromScratch.serial).toBe(certificateFacts(der).serial);
  });
});
