import { constants as cryptoConstants, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { PkiError, TlsError, isPosternError, type ErrorCode } from '../errors.js';
import { certificateFacts, identityFromCertificate, type CertificateFacts, type Identity, type IdentityExpectation } from '../identity/certificate.js';
import { keyMatchesCertificate } from './ca.js';
import { crlDerBlocks, crlFacts, type CrlFacts } from './crl.js';
import { CERT_LABEL, CRL_LABEL, decodePem, encodePem } from './pem.js';

/** Files of one TLS identity, as configured. */
export interface TlsFiles {
  cert: string;
  key: string;
  /** Trust bundle: one or several CA certificates (several during a CA rotation). */
  ca: string;
  /** CRL file(s); when given, every CA of the bundle needs its CRL here. */
  crl?: string | string[];
}

/** Loaded, validated PEM material. CRLs are relabelled `X509 CRL` (Node refuses `CRL`). */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer[];
  crl: Buffer[];
}

/** Node's default of 120 s lets a silent peer hold a socket for two minutes; ours is 10 s. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

function readNamed(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new PkiError('POSTERN_ERR_FILE_READ', `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err, details: { path } });
  }
}

function pemCertificates(data: Buffer, path: string, what: string): { pem: Buffer; facts: CertificateFacts }[] {
  const blocks = decodePem(data.toString('latin1')).filter((b) => b.label === CERT_LABEL);
  if (blocks.length === 0) throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${what} ${path} holds no PEM CERTIFICATE block`, { details: { path } });
  return blocks.map((b) => {
    try {
      return { pem: Buffer.from(encodePem(CERT_LABEL, b.der)), facts: certificateFacts(b.der) };
    } catch (err) {
      throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${what} ${path}: ${(err as Error).message}`, { cause: err, details: { path } });
    }
  });
}

/** True when `crl` was issued by the CA of `ca` (same name, and same key id when both carry one). */
function crlMatchesCa(crl: CrlFacts, ca: CertificateFacts): boolean {
  if (!crl.issuerDer.equals(ca.subjectDer)) return false;
  return crl.authorityKeyId === undefined || ca.subjectKeyId === undefined || crl.authorityKeyId === ca.subjectKeyId;
}

/**
 * Reads and validates certificate, key, trust bundle and CRLs, naming the file at fault:
 * POSTERN_ERR_FILE_READ, POSTERN_ERR_PKI_INVALID_CERT (not PEM, not a CA in the bundle),
 * POSTERN_ERR_PKI_KEY_MISMATCH, POSTERN_ERR_PKI_CRL_MISSING (a CA of the bundle without its CRL:
 * OpenSSL would refuse all its certificates), POSTERN_ERR_PKI_CRL_EXPIRED.
 */
export function loadTlsMaterial(files: TlsFiles, now: Date = new Date()): TlsMaterial {
  const certData = readNamed(files.cert, 'certificate');
  const keyData = readNamed(files.key, 'private key');
  const caData = readNamed(files.ca, 'trust bundle');

  const chain = pemCertificates(certData, files.cert, 'certificate');
  let key;
  try {
    key = createPrivateKey(keyData);
  } catch (err) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `private key ${files.key} is not a PEM private key: ${(err as Error).message}`, { cause: err, details: { path: files.key } });
  }
  if (!keyMatchesCertificate(key, chain[0]!.pem.toString('latin1'))) {
    throw new PkiError('POSTERN_ERR_PKI_KEY_MISMATCH', `private key ${files.key} does not belong to certificate ${files.cert}`, { details: { path: files.key } });
  }

  const cas = pemCertificates(caData, files.ca, 'trust bundle');
  for (const ca of cas) {
    if (!ca.facts.isCa) {
      throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `trust bundle ${files.ca} holds certificate ${ca.facts.serial} (${ca.facts.subject}), which is not a CA`, { details: { path: files.ca } });
    }
  }

  const crlPaths = files.crl === undefined ? [] : Array.isArray(files.crl) ? files.crl : [files.crl];
  const crls: { pem: Buffer; facts: CrlFacts; path: string }[] = [];
  for (const path of crlPaths) {
    const ders = crlDerBlocks(readNamed(path, 'CRL'));
    if (ders.length === 0) throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `CRL ${path} holds no PEM X509 CRL block`, { details: { path } });
    for (const der of ders) {
      const facts = crlFacts(der, path);
      if (facts.nextUpdate !== undefined && facts.nextUpdate.getTime() <= now.getTime()) {
        throw new PkiError('POSTERN_ERR_PKI_CRL_EXPIRED', `CRL ${path} (${facts.issuer}) expired at ${facts.nextUpdate.toISOString()}; re-sign it with postern pki crl`, { details: { path } });
      }
      crls.push({ pem: Buffer.from(encodePem(CRL_LABEL, der)), facts, path });
    }
  }
  if (crls.length > 0) {
    for (const ca of cas) {
      if (!crls.some((c) => crlMatchesCa(c.facts, ca.facts))) {
        throw new PkiError(
          'POSTERN_ERR_PKI_CRL_MISSING',
          `CA ${ca.facts.subject} of trust bundle ${files.ca} has no CRL among ${crlPaths.join(', ')}; with CRLs configured every CA needs its own`,
          { details: { path: files.ca } },
        );
      }
    }
  }
  return {
    cert: Buffer.concat(chain.map((c) => c.pem)),
    key: keyData,
    ca: cas.map((c) => c.pem),
    crl: crls.map((c) => c.pem),
  };
}

const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const;

/**
 * Options of a mutual TLS 1.3 server: client certificates required and verified (chain and CRL).
 * Session resumption is off: a resumed session skips certificate verification, so a client
 * revoked after its first connection could come back on its ticket; every connection is a full
 * handshake against the current CRL instead (one ECDSA P-256 signature more per connection).
 */
export function serverTlsOptions(m: TlsMaterial, o: { handshakeTimeoutMs?: number } = {}): tls.TlsOptions {
  return {
    ...TLS13,
    secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
    cert: m.cert,
    key: m.key,
    ca: m.ca,
    ...(m.crl.length > 0 ? { crl: m.crl } : {}),
    requestCert: true,
    rejectUnauthorized: true,
    handshakeTimeout: o.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
  };
}

/**
 * Options of a TLS 1.3 client that presents its certificate and accepts a server only when its
 * chain verifies and `identityFromCertificate(raw, expectPeer)` accepts it. The host name is not
 * matched: the identity is the SPIFFE ID. The options carry a prebuilt `secureContext`, which
 * Node prefers over cert/key/ca/crl/min/maxVersion: to change any of those, build new options
 * from new material (overriding the fields by spreading would have no effect).
 */
export function clientTlsOptions(m: TlsMaterial, expectPeer: IdentityExpectation): tls.ConnectionOptions {
  const files = { ...TLS13, cert: m.cert, key: m.key, ca: m.ca, ...(m.crl.length > 0 ? { crl: m.crl } : {}) };
  return {
    ...files,
    // Built once here rather than by every tls.connect: parsing key, bundle and CRLs costs ~1.3 ms
    // of CPU, a quarter of an inner handshake. Build these options once per material (and reload).
    secureContext: tls.createSecureContext(files),
    rejectUnauthorized: true,
    checkServerIdentity: (_host, cert) => {
      try {
        identityFromCertificate(cert.raw, expectPeer);
        return undefined;
      } catch (err) {
        return err as Error;
      }
    },
  };
}

/**
 * The identity of the peer of an established TLS socket, read from its raw certificate. Refuses a
 * socket whose peer was not verified (fail closed even if someone turned rejectUnauthorized off).
 */
export function peerIdentity(socket: tls.TLSSocket, expect: IdentityExpectation): Identity {
  return identityFromCertificate(peerCertificateDer(socket), expect);
}

/** The DER of a verified peer's leaf certificate (same refusals as peerIdentity). */
export function peerCertificateDer(socket: tls.TLSSocket): Buffer {
  if (!socket.authorized) {
    throw mapTlsError(socket.authorizationError ?? new Error('the peer certificate was not verified'));
  }
  // Only the leaf (~20 µs). Not getPeerX509Certificate(): on Node 20 a server socket's first call
  // takes the certificate out of the peer chain, and every later call returns undefined.
  const raw = socket.getPeerCertificate(false).raw as Buffer | undefined;
  if (!raw) throw new TlsError('POSTERN_ERR_TLS_HANDSHAKE', 'the peer presented no certificate');
  return raw;
}

const UNTRUSTED = { code: 'POSTERN_ERR_TLS_CERT_UNTRUSTED', why: 'the peer certificate does not chain to the trust bundle' } as const;

/** What Node/OpenSSL report, mapped to our code and a reason a human can act on. */
const OPENSSL_CODES: Record<string, { code: ErrorCode; why: string }> = {
  CERT_REVOKED: { code: 'POSTERN_ERR_TLS_CERT_REVOKED', why: 'the peer certificate is revoked by a loaded CRL' },
  CERT_HAS_EXPIRED: { code: 'POSTERN_ERR_TLS_CERT_EXPIRED', why: 'the peer certificate has expired' },
  CERT_NOT_YET_VALID: { code: 'POSTERN_ERR_TLS_CERT_EXPIRED', why: 'the peer certificate is not valid yet (check both clocks)' },
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: UNTRUSTED,
  UNABLE_TO_GET_ISSUER_CERT: UNTRUSTED,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: UNTRUSTED,
  SELF_SIGNED_CERT_IN_CHAIN: UNTRUSTED,
  DEPTH_ZERO_SELF_SIGNED_CERT: UNTRUSTED,
  CERT_SIGNATURE_FAILURE: UNTRUSTED,
  CERT_UNTRUSTED: UNTRUSTED,
  CERT_REJECTED: UNTRUSTED,
  INVALID_CA: UNTRUSTED,
  PATH_LENGTH_EXCEEDED: UNTRUSTED,
  INVALID_PURPOSE: { code: 'POSTERN_ERR_TLS_CERT_UNTRUSTED', why: 'the peer certificate is not valid for this purpose (extended key usage)' },
  // OpenSSL reports the last of its errors: for a peer of an unknown CA, with CRLs loaded, that is
  // "no CRL for its issuer" rather than "unknown issuer". loadTlsMaterial guarantees a CRL for
  // every CA of the bundle, so this code means the issuer is not trusted.
  UNABLE_TO_GET_CRL: UNTRUSTED,
  CRL_HAS_EXPIRED: { code: 'POSTERN_ERR_PKI_CRL_EXPIRED', why: 'the CRL of the peer\'s CA is past its nextUpdate: re-sign it with postern pki crl' },
  CRL_SIGNATURE_FAILURE: { code: 'POSTERN_ERR_TLS_HANDSHAKE', why: 'a loaded CRL does not carry a valid signature of its CA' },
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: { code: 'POSTERN_ERR_TLS_HANDSHAKE', why: 'the client presented no certificate' },
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: { code: 'POSTERN_ERR_TLS_HANDSHAKE', why: 'the server requires a client certificate and none was sent' },
  ERR_SSL_UNSUPPORTED_PROTOCOL: { code: 'POSTERN_ERR_TLS_HANDSHAKE', why: 'the peer does not speak TLS 1.3' },
  ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: { code: 'POSTERN_ERR_TLS_HANDSHAKE', why: 'the peer does not speak TLS 1.3' },
  ERR_TLS_HANDSHAKE_TIMEOUT: { code: 'POSTERN_ERR_TLS_HANDSHAKE_TIMEOUT', why: 'the TLS handshake did not complete within the handshake timeout' },
};

/**
 * Maps what Node reports of a failed handshake (an Error with an OpenSSL `code`, or the bare code
 * string of `authorizationError`) to a TlsError with a catalogue code. Identity refusals raised by
 * our own checkServerIdentity keep their POSTERN_ERR_ID_* code.
 */
export function mapTlsError(err: unknown): TlsError {
  if (err instanceof TlsError) return err;
  if (isPosternError(err)) return new TlsError(err.code, err.message, { cause: err, details: { ...err.details } });
  const e = typeof err === 'string' ? Object.assign(new Error(err), { code: err }) : (err as (Error & { code?: unknown }) | undefined);
  const osslCode = typeof e?.code === 'string' ? e.code : undefined;
  const known = osslCode === undefined ? undefined : OPENSSL_CODES[osslCode];
  const message = known ? `${known.why} (${osslCode})` : `TLS handshake failed: ${e?.message ?? String(err)}${osslCode && !e?.message?.includes(osslCode) ? ` (${osslCode})` : ''}`;
  return new TlsError(known?.code ?? 'POSTERN_ERR_TLS_HANDSHAKE', message, { cause: err, details: osslCode ? { opensslCode: osslCode } : {} });
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return new Promise<T>((resolve, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new TlsError('POSTERN_ERR_TLS_HANDSHAKE_TIMEOUT', `TLS handshake did not complete within ${timeoutMs} ms`, { details: { timeoutMs } }));
    }, timeoutMs);
    promise.then(resolve, reject);
  }).finally(() => clearTimeout(timer));
}

/**
 * Server side of TLS over any Duplex (the inner TLS over a mux stream). The duplex is handed to a
 * non-listening tls.Server with emit('connection'): `new TLSSocket(duplex, { isServer,
 * requestCert, rejectUnauthorized })` does NOT enforce client-certificate verification
 * (docs NODE-PITFALLS), the server path does. Resolves once the client is verified; rejects with a
 * TlsError (REVOKED, UNTRUSTED, EXPIRED, HANDSHAKE, HANDSHAKE_TIMEOUT) and destroys the duplex.
 */
export function acceptTlsOverDuplex(duplex: Duplex, options: tls.TlsOptions, o: { timeoutMs?: number } = {}): Promise<tls.TLSSocket> {
  const timeoutMs = o.timeoutMs ?? options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const server = takeServer(options, timeoutMs);
  let settled = false;
  const handshake = new Promise<tls.TLSSocket>((resolve, reject) => {
    // Every failure (refused certificate, peer gone, handshake timeout) ends in 'tlsClientError';
    // a refused certificate's reason is on the socket (authorizationError), not on the error.
    server.once('tlsClientError', (err: Error, s: tls.TLSSocket | undefined) => {
      server.removeAllListeners('secureConnection');
      settled = true;
      // The socket is destroyed and released from the server: it may serve the next handshake.
      returnServer(options, timeoutMs, server);
      duplex.destroy();
      reject(mapTlsError(s?.authorizationError ?? err));
    });
    server.once('secureConnection', (s: tls.TLSSocket) => {
      server.removeAllListeners('tlsClientError');
      settled = true;
      returnServer(options, timeoutMs, server);
      if (!s.authorized) {
        s.destroy();
        reject(mapTlsError(s.authorizationError ?? 'CERT_UNTRUSTED'));
        return;
      }
      resolve(s);
    });
  });
  server.emit('connection', duplex);
  return withTimeout(handshake, timeoutMs, () => {
    // The server goes back to the pool only once its socket has reported (tlsClientError above).
    if (!settled) server.removeAllListeners('secureConnection');
    duplex.destroy();
  });
}

/**
 * Idle non-listening servers for acceptTlsOverDuplex, by options object and handshake timeout.
 * A tls.Server builds its SecureContext (key, chain, trust bundle, CRLs) when created: ~3 ms of
 * CPU, measured as 9 % of the connector's CPU while streams open, paid on every inner handshake
 * when each got a fresh server. A server serves one handshake at a time (its events then belong
 * to that handshake) and goes back here when the handshake is settled. Keyed by the options
 * object itself: a reload builds new options, hence new servers with the new CRLs, and the old
 * ones go with their options.
 */
const serverPools = new WeakMap<tls.TlsOptions, Map<number, tls.Server[]>>();
/** Idle servers kept per options and timeout; more concurrent handshakes create more, then drop them. */
const MAX_IDLE_SERVERS = 64;

function takeServer(options: tls.TlsOptions, timeoutMs: number): tls.Server {
  const idle = serverPools.get(options)?.get(timeoutMs)?.pop();
  // Fail closed: whatever the caller passed, this path verifies the client.
  return idle ?? tls.createServer({ ...options, requestCert: true, rejectUnauthorized: true, handshakeTimeout: timeoutMs });
}

function returnServer(options: tls.TlsOptions, timeoutMs: number, server: tls.Server): void {
  let byTimeout = serverPools.get(options);
  if (!byTimeout) serverPools.set(options, (byTimeout = new Map()));
  let idle = byTimeout.get(timeoutMs);
  if (!idle) byTimeout.set(timeoutMs, (idle = []));
  if (idle.length < MAX_IDLE_SERVERS) idle.push(server);
}

/**
 * Node's client asks for the peer's whole chain, rendered to JS with every field and three
 * fingerprints per certificate (getPeerCertificate(true), ~1 ms of CPU per handshake on the
 * critical path of every dial), only to hand it to checkServerIdentity, whose check (ours)
 * reads the leaf's DER alone. Until the handshake settles, this socket renders the leaf only;
 * the own property is then removed and getPeerCertificate is Node's again.
 */
function leafOnlyDuringHandshake(socket: tls.TLSSocket): void {
  const full = socket.getPeerCertificate;
  socket.getPeerCertificate = function leafOnly(this: tls.TLSSocket) {
    return full.call(this, false);
  } as tls.TLSSocket['getPeerCertificate'];
}

/**
 * Client side of TLS over any Duplex. `options` should come from clientTlsOptions (chain and
 * SPIFFE identity checked during the handshake). Rejects with a mapped TlsError (identity
 * refusals keep their POSTERN_ERR_ID_* code) and destroys the duplex.
 */
export function connectTlsOverDuplex(
  duplex: Duplex,
  options: tls.ConnectionOptions,
  o: {
    timeoutMs?: number;
    /**
     * The handshake timeout starts once this resolves (the open of a stream whose early data
     * carries the ClientHello); when it rejects, the handshake fails with the stream it ran on.
     */
    timerStartsWith?: Promise<unknown>;
  } = {},
): Promise<tls.TLSSocket> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const socket = tls.connect({ ...options, socket: duplex, rejectUnauthorized: true });
  leafOnlyDuringHandshake(socket);
  const handshake = new Promise<tls.TLSSocket>((resolve, reject) => {
    const onSecure = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err: Error) => {
      cleanup();
      socket.destroy();
      duplex.destroy();
      reject(mapTlsError(err));
    };
    const onClose = () => onError(new Error('the peer closed the stream during the TLS handshake (with TLS 1.3 a refused client certificate looks like this)'));
    const cleanup = () => {
      delete (socket as { getPeerCertificate?: unknown }).getPeerCertificate;
      socket.off('secureConnect', onSecure);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    socket.once('secureConnect', onSecure);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
  const onTimeout = (): void => {
    socket.destroy();
    duplex.destroy();
  };
  if (o.timerStartsWith === undefined) return withTimeout(handshake, timeoutMs, onTimeout);
  // The handshake may fail before the open settles: that rejection is returned below, not lost.
  handshake.catch(() => {});
  return o.timerStartsWith.then(
    () => withTimeout(handshake, timeoutMs, onTimeout),
    () => handshake,
  );
}
