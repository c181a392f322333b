import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { duplexPair } from 'node:stream';
import * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TlsError, isPosternError } from '../../../src/errors.js';
import type { Role } from '../../../src/identity/index.js';
import { bundleCaCertificates, initPki, issueCertificate, leafPrefix, loadCa, revokeCertificate, signCrl, emptyRevocationState } from '../../../src/pki/index.js';
import {
  acceptTlsOverDuplex, clientTlsOptions, connectTlsOverDuplex, loadTlsMaterial, mapTlsError, peerIdentity, serverTlsOptions,
  type TlsMaterial,
} from '../../../src/pki/tls.js';

const TD = 'hospital.example';
let root: string;
let dir1: string;
let dir2: string;

function files(dir: string, role: Role, name: string) {
  const prefix = leafPrefix(dir, role, name);
  return { cert: `${prefix}.crt`, key: `${prefix}.key` };
}

function material(dir: string, role: Role, name: string, extra: { ca?: string; crl?: string | string[] | null } = {}): TlsMaterial {
  const crl = extra.crl === null ? {} : { crl: extra.crl ?? join(dir, 'crl.pem') };
  return loadTlsMaterial({ ...files(dir, role, name), ca: extra.ca ?? join(dir, 'ca.crt'), ...crl });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'postern-tls-'));
  dir1 = join(root, 'ca1');
  dir2 = join(root, 'ca2');
  await initPki({ dir: dir1, trustDomain: TD });
  await issueCertificate({ dir: dir1, role: 'relay', name: 'relay-1', dns: ['localhost'], ip: ['127.0.0.1'] });
  await issueCertificate({ dir: dir1, role: 'connector', name: 'hq', org: 'st-mary' });
  await issueCertificate({ dir: dir1, role: 'user', name: 'alice', org: 'st-mary' });
  await issueCertificate({ dir: dir1, role: 'user', name: 'mallory', org: 'st-mary' });
  await issueCertificate({ dir: dir1, role: 'user', name: 'old', org: 'st-mary', days: 1, now: new Date(Date.now() - 3 * 86_400_000) });
  await revokeCertificate({ dir: dir1, certFile: files(dir1, 'user', 'mallory').cert });
  // CA rotation: a second CA of the same trust domain.
  await initPki({ dir: dir2, trustDomain: TD });
  await issueCertificate({ dir: dir2, role: 'user', name: 'bob', org: 'st-mary' });
  await writeFile(join(root, 'bundle.pem'), await bundleCaCertificates([join(dir1, 'ca.crt'), join(dir2, 'ca.crt')]));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const innerServer = { trustDomain: TD, presentedAs: 'connector-inner-server', org: 'st-mary', name: 'hq' } as const;
const innerClient = { trustDomain: TD, presentedAs: 'agent-inner-client', org: 'st-mary' } as const;

type ServerOutcome = { ok: true; socket: tls.TLSSocket } | { ok: false; error: TlsError };

/** A real mTLS server on 127.0.0.1:0; `next()` resolves with the server-side outcome of the next handshake. */
async function startServer(m: TlsMaterial) {
  const outcomes: ServerOutcome[] = [];
  const waiters: ((o: ServerOutcome) => void)[] = [];
  const push = (o: ServerOutcome) => {
    const w = waiters.shift();
    if (w) w(o);
    else outcomes.push(o);
  };
  const server = tls.createServer(serverTlsOptions(m), (socket) => {
    push({ ok: true, socket });
    socket.on('error', () => undefined);
  });
  server.on('tlsClientError', (err, socket) => push({ ok: false, error: mapTlsError(socket?.authorizationError ?? err) }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    next: () => new Promise<ServerOutcome>((resolve) => {
      const o = outcomes.shift();
      if (o) resolve(o);
      else waiters.push(resolve);
    }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Connects and resolves when the client socket is finished: with the bytes it received, or its error. */
function dial(port: number, options: tls.ConnectionOptions): Promise<{ secure: boolean; data: string; error?: Error }> {
  return new Promise((resolve) => {
    let data = '';
    let secure = false;
    let error: Error | undefined;
    const socket = tls.connect({ ...options, host: '127.0.0.1', port });
    socket.setEncoding('utf8');
    socket.on('secureConnect', () => { secure = true; });
    socket.on('data', (d: string) => { data += d; });
    socket.on('error', (e) => { error = e; });
    socket.on('close', () => resolve({ secure, data, ...(error ? { error } : {}) }));
  });
}

describe('serverTlsOptions / clientTlsOptions on a real listening server', () => {
  it('accepts a valid user certificate; both sides learn the other identity from the SPIFFE ID', async () => {
    const server = await startServer(material(dir1, 'connector', 'hq'));
    try {
      const client = dial(server.port, clientTlsOptions(material(dir1, 'user', 'alice'), innerServer));
      const outcome = await server.next();
      expect(outcome.ok).toBe(true);
      if (!outcome.ok) return;
      expect(outcome.socket.getProtocol()).toBe('TLSv1.3');
      expect(peerIdentity(outcome.socket, innerClient)).toMatchObject({ role: 'user', org: 'st-mary', name: 'alice', uri: 'spiffe://hospital.example/org/st-mary/user/alice' });
      outcome.socket.end('hello alice');
      expect(await client).toEqual({ secure: true, data: 'hello alice' });
    } finally {
      await server.close();
    }
  });

  it('never resumes a session: every connection verifies the certificate against the current CRL', async () => {
    const server = await startServer(material(dir1, 'connector', 'hq'));
    try {
      const options = clientTlsOptions(material(dir1, 'user', 'alice'), innerServer);
      const reused: boolean[] = [];
      let session: Buffer | undefined;
      for (let i = 0; i < 2; i++) {
        // The second connection offers the session the first one received.
        expect(session !== undefined).toBe(i === 1);
        const socket = tls.connect({ ...options, host: '127.0.0.1', port: server.port, ...(session ? { session } : {}) });
        socket.on('session', (s: Buffer) => { session = s; });
        socket.on('secureConnect', () => reused.push(socket.isSessionReused()));
        socket.on('data', () => undefined);
        const closed = new Promise((resolve) => socket.on('close', resolve));
        const outcome = await server.next();
        expect(outcome.ok).toBe(true);
        if (outcome.ok) outcome.socket.end('x');
        await closed;
      }
      expect(reused).toEqual([false, false]);
    } finally {
      await server.close();
    }
  });

  it('refuses a TLS 1.2-only client', async () => {
    const server = await startServer(material(dir1, 'connector', 'hq'));
    try {
      // Without the prebuilt secureContext, so that the version override applies.
      const { secureContext: _ctx, ...base } = clientTlsOptions(material(dir1, 'user', 'alice'), innerServer);
      const client = await dial(server.port, { ...base, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
      const outcome = await server.next();
      expect(outcome.ok).toBe(false);
      expect(client.secure).toBe(false);
      expect(client.error?.message).toMatch(/protocol version|unsupported protocol/i);
      if (!outcome.ok) expect(outcome.error.code).toBe('POSTERN_ERR_TLS_HANDSHAKE');
    } finally {
      await server.close();
    }
  });

  it('refuses a client without a certificate', async () => {
    const server = await startServer(material(dir1, 'connector', 'hq'));
    try {
      const { cert: _c, key: _k, secureContext: _ctx, ...noCert } = clientTlsOptions(material(dir1, 'user', 'alice'), innerServer);
      const client = dial(server.port, noCert);
      const outcome = await server.next();
      expect(outcome.ok).toBe(false);
      if (!outcome.ok) expect(outcome.error).toMatchObject({ code: 'POSTERN_ERR_TLS_HANDSHAKE', message: expect.stringContaining('the client presented no certificate') });
      expect((await client).data).toBe('');
    } finally {
      await server.close();
    }
  });

  it('refuses a revoked client certificate (CRL loaded)', async () => {
    const server = await startServer(material(dir1, 'connector', 'hq'));
    try {
      const client = dial(server.port, clientTlsOptions(material(dir1, 'user', 'mallory'), innerServer));
      const outcome = await server.next();
      expect(outcome.ok).toBe(false);
      if (!outcome.ok) expect(outcome.error.code).toBe('POSTERN_ERR_TLS_CERT_REVOKED');
      expect((await client).data).toBe('');
    } finally {
      await server.close();
    }
  });

  it('the client refuses a server whose SPIFFE ID is not the one expected, during the handshake', async () => {
    const server = await startServer(material(dir1, 'connector', 'hq'));
    try {
      const client = await dial(server.port, clientTlsOptions(material(dir1, 'user', 'alice'), { ...innerServer, name: 'branch' }));
      expect(client.secure).toBe(false);
      expect(isPosternError(client.error, 'POSTERN_ERR_ID_NAME_MISMATCH')).toBe(true);
      expect(mapTlsError(client.error).code).toBe('POSTERN_ERR_ID_NAME_MISMATCH');
      await server.next();
    } finally {
      await server.close();
    }
  });
});

/** A duplex pair where destroying one side destroys the other, as a mux stream reset does. */
function linkedPair() {
  const [a, b] = duplexPair();
  a.once('close', () => b.destroy());
  b.once('close', () => a.destroy());
  return [a, b] as const;
}

describe('TLS over a duplex (inner TLS)', () => {
  async function handshake(serverMat: TlsMaterial, clientMat: TlsMaterial, expectServer: Parameters<typeof clientTlsOptions>[1] = innerServer) {
    const [a, b] = linkedPair();
    const accepted = acceptTlsOverDuplex(a, serverTlsOptions(serverMat));
    const connected = connectTlsOverDuplex(b, clientTlsOptions(clientMat, expectServer));
    const [s, c] = await Promise.allSettled([accepted, connected]);
    return { s, c, a, b };
  }
  const cleanup = (...settled: PromiseSettledResult<tls.TLSSocket>[]) => {
    for (const r of settled) if (r.status === 'fulfilled') r.value.destroy();
  };

  it('carries data both ways once both identities are verified', async () => {
    const { s, c } = await handshake(material(dir1, 'connector', 'hq'), material(dir1, 'user', 'alice'));
    expect(s.status).toBe('fulfilled');
    expect(c.status).toBe('fulfilled');
    if (s.status !== 'fulfilled' || c.status !== 'fulfilled') return;
    expect(peerIdentity(s.value, innerClient).name).toBe('alice');
    expect(peerIdentity(c.value, innerServer).name).toBe('hq');
    const got = new Promise<string>((resolve) => s.value.once('data', (d: Buffer) => resolve(d.toString())));
    c.value.write('SELECT 1');
    expect(await got).toBe('SELECT 1');
    const back = new Promise<string>((resolve) => c.value.once('data', (d: Buffer) => resolve(d.toString())));
    s.value.write('1 row');
    expect(await back).toBe('1 row');
    cleanup(s, c);
  });

  it("renders only the leaf for Node's identity check during the handshake, and the whole chain again after it", async () => {
    const { s, c } = await handshake(material(dir1, 'connector', 'hq'), material(dir1, 'user', 'alice'));
    expect(c.status).toBe('fulfilled');
    if (c.status !== 'fulfilled') return cleanup(s, c);
    expect(Object.hasOwn(c.value, 'getPeerCertificate')).toBe(false);
    const detailed = c.value.getPeerCertificate(true);
    expect(detailed.subjectaltname).toContain('/connector/hq');
    expect(detailed.issuerCertificate?.raw).toBeInstanceOf(Buffer);
    // peerIdentity reads the leaf as often as asked (getPeerX509Certificate would give it once).
    expect(peerIdentity(c.value, innerServer).name).toBe('hq');
    expect(peerIdentity(c.value, innerServer).name).toBe('hq');
    cleanup(s, c);
  });

  it('refuses a revoked client certificate (the tls.Server path, not new TLSSocket, enforces it)', async () => {
    const { s, c } = await handshake(material(dir1, 'connector', 'hq'), material(dir1, 'user', 'mallory'));
    expect(s.status).toBe('rejected');
    if (s.status === 'rejected') {
      expect(s.reason).toBeInstanceOf(TlsError);
      expect(s.reason.code).toBe('POSTERN_ERR_TLS_CERT_REVOKED');
    }
    cleanup(c);
  });

  it('refuses an expired client certificate', async () => {
    const { s, c } = await handshake(material(dir1, 'connector', 'hq'), material(dir1, 'user', 'old'));
    expect(s.status === 'rejected' && s.reason.code).toBe('POSTERN_ERR_TLS_CERT_EXPIRED');
    cleanup(c);
  });

  it('refuses a client of a CA that is not in the bundle, with and without CRLs', async () => {
    // bob trusts both CAs, the server only the first.
    const bob = loadTlsMaterial({ ...files(dir2, 'user', 'bob'), ca: join(root, 'bundle.pem') });
    for (const crl of [undefined, null] as const) {
      const { s, c } = await handshake(material(dir1, 'connector', 'hq', { crl }), bob);
      expect(s.status === 'rejected' && s.reason.code).toBe('POSTERN_ERR_TLS_CERT_UNTRUSTED');
      cleanup(c);
    }
  });

  it("the agent refuses the relay's own certificate as the inner server, and another connector", async () => {
    const relay = await handshake(material(dir1, 'relay', 'relay-1'), material(dir1, 'user', 'alice'));
    expect(relay.c.status === 'rejected' && relay.c.reason.code).toBe('POSTERN_ERR_ID_WRONG_ROLE');
    expect(relay.s.status === 'rejected' && relay.s.reason.code).toBe('POSTERN_ERR_TLS_HANDSHAKE');
    const other = await handshake(material(dir1, 'connector', 'hq'), material(dir1, 'user', 'alice'), { ...innerServer, name: 'branch' });
    expect(other.c.status === 'rejected' && other.c.reason.code).toBe('POSTERN_ERR_ID_NAME_MISMATCH');
    expect(other.s.status).toBe('rejected');
  });

  it('a CA rotation bundle (two CAs, each with its CRL) accepts certificates of both', async () => {
    const bundle = join(root, 'bundle.pem');
    const crls = [join(dir1, 'crl.pem'), join(dir2, 'crl.pem')];
    const server = loadTlsMaterial({ ...files(dir1, 'connector', 'hq'), ca: bundle, crl: crls });
    expect(server.ca).toHaveLength(2);
    for (const [dir, name] of [[dir1, 'alice'], [dir2, 'bob']] as const) {
      const clientMat = loadTlsMaterial({ ...files(dir, 'user', name), ca: bundle, crl: crls });
      const { s, c } = await handshake(server, clientMat);
      expect(s.status === 'fulfilled' && peerIdentity(s.value, innerClient).name).toBe(name);
      expect(c.status).toBe('fulfilled');
      cleanup(s, c);
    }
    // Revocation still holds with two CAs.
    const { s, c } = await handshake(server, loadTlsMaterial({ ...files(dir1, 'user', 'mallory'), ca: bundle, crl: crls }));
    expect(s.status === 'rejected' && s.reason.code).toBe('POSTERN_ERR_TLS_CERT_REVOKED');
    cleanup(c);
  });

  it('times out a handshake the peer never starts', async () => {
    const [a] = duplexPair();
    await expect(acceptTlsOverDuplex(a, serverTlsOptions(material(dir1, 'connector', 'hq')), { timeoutMs: 150 })).rejects.toMatchObject({ code: 'POSTERN_ERR_TLS_HANDSHAKE_TIMEOUT' });
    const [, b] = duplexPair();
    await expect(connectTlsOverDuplex(b, clientTlsOptions(material(dir1, 'user', 'alice'), innerServer), { timeoutMs: 150 })).rejects.toMatchObject({ code: 'POSTERN_ERR_TLS_HANDSHAKE_TIMEOUT' });
  });
});

describe('loadTlsMaterial', () => {
  const errorOf = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return { code: (err as TlsError).code, message: (err as Error).message };
    }
    return { code: 'accepted', message: '' };
  };

  it('names the missing or invalid file', async () => {
    const f = files(dir1, 'user', 'alice');
    expect(errorOf(() => loadTlsMaterial({ ...f, ca: join(root, 'nope.pem') }))).toEqual({ code: 'POSTERN_ERR_FILE_READ', message: `cannot read trust bundle ${join(root, 'nope.pem')}: ENOENT` });
    expect(errorOf(() => loadTlsMaterial({ ...f, ca: f.key }))).toMatchObject({ code: 'POSTERN_ERR_PKI_INVALID_CERT', message: expect.stringContaining(f.key) });
    expect(errorOf(() => loadTlsMaterial({ ...f, ca: f.cert }))).toMatchObject({ code: 'POSTERN_ERR_PKI_INVALID_CERT', message: expect.stringContaining('which is not a CA') });
    expect(errorOf(() => loadTlsMaterial({ ...f, key: f.cert, ca: join(dir1, 'ca.crt') }))).toMatchObject({ code: 'POSTERN_ERR_PKI_INVALID_CERT', message: expect.stringContaining(f.cert) });
    expect(errorOf(() => loadTlsMaterial({ ...f, key: files(dir1, 'user', 'mallory').key, ca: join(dir1, 'ca.crt') }))).toMatchObject({ code: 'POSTERN_ERR_PKI_KEY_MISMATCH' });
    expect(errorOf(() => loadTlsMaterial({ ...f, ca: join(dir1, 'ca.crt'), crl: f.cert }))).toMatchObject({ code: 'POSTERN_ERR_PKI_INVALID_CERT', message: expect.stringContaining('holds no PEM X509 CRL') });
  });

  it('refuses a bundle with a CA whose CRL is missing, and an expired CRL', async () => {
    const f = files(dir1, 'connector', 'hq');
    expect(errorOf(() => loadTlsMaterial({ ...f, ca: join(root, 'bundle.pem'), crl: join(dir1, 'crl.pem') })).code).toBe('POSTERN_ERR_PKI_CRL_MISSING');
    // Without any CRL there is nothing to miss (revocation is then off, by configuration).
    expect(loadTlsMaterial({ ...f, ca: join(root, 'bundle.pem') }).crl).toEqual([]);
    const ca = await loadCa(dir1);
    const stale = await signCrl(ca, emptyRevocationState(), { days: 1, now: new Date(Date.now() - 2 * 86_400_000) });
    await writeFile(join(root, 'stale.pem'), stale.pem);
    expect(errorOf(() => loadTlsMaterial({ ...f, ca: join(dir1, 'ca.crt'), crl: join(root, 'stale.pem') })).code).toBe('POSTERN_ERR_PKI_CRL_EXPIRED');
  });

  it('relabels a "BEGIN CRL" file as X509 CRL, which Node then enforces', async () => {
    const crl = (await readFile(join(dir1, 'crl.pem'), 'utf8')).replaceAll('X509 CRL', 'CRL');
    await writeFile(join(root, 'plain-label.crl'), crl);
    const m = material(dir1, 'connector', 'hq', { crl: join(root, 'plain-label.crl') });
    expect(m.crl[0]!.toString()).toMatch(/^-----BEGIN X509 CRL-----\n/);
    const [a, b] = duplexPair();
    const accepted = acceptTlsOverDuplex(a, serverTlsOptions(m));
    const connected = connectTlsOverDuplex(b, clientTlsOptions(material(dir1, 'user', 'mallory'), innerServer));
    await expect(accepted).rejects.toMatchObject({ code: 'POSTERN_ERR_TLS_CERT_REVOKED' });
    (await connected.catch(() => undefined))?.destroy();
  });
});

describe('serverTlsOptions', () => {
  it('pins TLS 1.3, client certificates, verification and a 10 s handshake timeout', () => {
    const o = serverTlsOptions(material(dir1, 'connector', 'hq'));
    expect(o).toMatchObject({ minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', requestCert: true, rejectUnauthorized: true, handshakeTimeout: 10_000 });
    expect(o.crl).toHaveLength(1);
    expect(serverTlsOptions(material(dir1, 'connector', 'hq', { crl: null }), { handshakeTimeoutMs: 2_000 })).toMatchObject({ handshakeTimeout: 2_000 });
    expect('crl' in serverTlsOptions(material(dir1, 'connector', 'hq', { crl: null }))).toBe(false);
  });
});

describe('mapTlsError', () => {
  it.each([
    ['CERT_REVOKED', 'POSTERN_ERR_TLS_CERT_REVOKED'],
    ['CERT_HAS_EXPIRED', 'POSTERN_ERR_TLS_CERT_EXPIRED'],
    ['CERT_NOT_YET_VALID', 'POSTERN_ERR_TLS_CERT_EXPIRED'],
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'POSTERN_ERR_TLS_CERT_UNTRUSTED'],
    ['SELF_SIGNED_CERT_IN_CHAIN', 'POSTERN_ERR_TLS_CERT_UNTRUSTED'],
    ['DEPTH_ZERO_SELF_SIGNED_CERT', 'POSTERN_ERR_TLS_CERT_UNTRUSTED'],
    ['UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'POSTERN_ERR_TLS_CERT_UNTRUSTED'],
    ['UNABLE_TO_GET_CRL', 'POSTERN_ERR_TLS_CERT_UNTRUSTED'],
    ['CRL_HAS_EXPIRED', 'POSTERN_ERR_PKI_CRL_EXPIRED'],
    ['ERR_TLS_HANDSHAKE_TIMEOUT', 'POSTERN_ERR_TLS_HANDSHAKE_TIMEOUT'],
    ['ECONNRESET', 'POSTERN_ERR_TLS_HANDSHAKE'],
  ])('%s -> %s', (osslCode, expected) => {
    expect(mapTlsError(Object.assign(new Error('x'), { code: osslCode })).code).toBe(expected);
    expect(mapTlsError(osslCode).code).toBe(expected);
  });
});
