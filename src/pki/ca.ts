import { createPrivateKey, createPublicKey, KeyObject, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { PkiError } from '../errors.js';
import { assertTrustDomain, formatSpiffeId, type Role } from '../identity/spiffe.js';
import { certificateFacts, type CertificateFacts } from '../identity/certificate.js';
import { CERT_LABEL, encodePem } from './pem.js';
import { asn1X509, AsnConvert, EC_KEY_ALGORITHM, EC_SIGNING_ALGORITHM, subtle, x509 } from './x509.js';

type CryptoKeyT = Awaited<ReturnType<typeof subtle.importKey>>;
type CryptoKeyPairT = { privateKey: CryptoKeyT; publicKey: CryptoKeyT };

/** Validity in days when none is asked for: relays and connectors are long-lived machines, users short. */
export const DEFAULT_DAYS: Readonly<Record<Role | 'ca', number>> = Object.freeze({
  ca: 3650,
  relay: 397,
  connector: 397,
  service: 90,
  user: 30,
});
export const MAX_DAYS = 36_500;
/** Backdating absorbs clock skew between the workstation that issues and the machines that verify. */
export const BACKDATE_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

/** Certificates and CRLs carry whole seconds; rounding first makes what we print what we signed. */
export function wholeSecond(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

export const EKU_BY_ROLE: Readonly<Record<Role, readonly string[]>> = Object.freeze({
  relay: [asn1X509.id_kp_serverAuth],
  connector: [asn1X509.id_kp_clientAuth, asn1X509.id_kp_serverAuth],
  user: [asn1X509.id_kp_clientAuth],
  service: [asn1X509.id_kp_clientAuth],
});

/** A loaded CA: its certificate and the private key that signs leaves and CRLs. */
export interface CaMaterial {
  cert: x509.X509Certificate;
  certPem: string;
  facts: CertificateFacts;
  key: CryptoKeyT;
  trustDomain: string;
}

export function assertDays(days: number, field: string): void {
  if (!Number.isInteger(days) || days < 1 || days > MAX_DAYS) {
    throw new PkiError('POSTERN_ERR_USAGE', `${field} must be a whole number of days between 1 and ${MAX_DAYS}, got ${days}`, { details: { field, value: days } });
  }
}

/**
 * 16 random bytes as a positive DER INTEGER. The first byte is kept in 0x10..0x7f: positive, and
 * never a leading zero nibble, so every serial prints as exactly 32 hex digits everywhere.
 */
export function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = 0x10 + (bytes[0]! % 0x70);
  return bytes.toString('hex');
}

export async function generateKeyPair(): Promise<CryptoKeyPairT> {
  return (await subtle.generateKey(EC_KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPairT;
}

export function privateKeyPem(key: CryptoKeyT): string {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** Imports a PKCS#8 (or SEC1) PEM P-256 private key for signing; `where` names the file in errors. */
export async function importSigningKey(pem: string | Buffer, where: string): Promise<CryptoKeyT> {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${where} is not a PEM private key: ${(err as Error).message}`, { cause: err, details: { path: where } });
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${where} is not an ECDSA P-256 key (it is ${key.asymmetricKeyType ?? 'unknown'} ${key.asymmetricKeyDetails?.namedCurve ?? ''})`.trim(), { details: { path: where } });
  }
  const der = key.export({ type: 'pkcs8', format: 'der' });
  return subtle.importKey('pkcs8', der, EC_KEY_ALGORITHM, false, ['sign']);
}

/** True when `key` (a private key) is the one whose public half `certDer` certifies. */
export function keyMatchesCertificate(key: KeyObject | CryptoKeyT, certPem: string): boolean {
  const priv = key instanceof KeyObject ? key : KeyObject.from(key);
  const fromKey = createPublicKey(priv).export({ type: 'spki', format: 'der' });
  const fromCert = createPublicKey(certPem).export({ type: 'spki', format: 'der' });
  return fromKey.equals(fromCert);
}

export interface CreateCaOptions {
  trustDomain: string;
  days?: number;
  /** Adds a critical nameConstraints extension permitting only URIs of this trust domain. */
  nameConstraints?: boolean;
  now?: Date;
}

export interface CreatedCa {
  cert: x509.X509Certificate;
  certPem: string;
  keyPem: string;
}

/**
 * A self-signed ECDSA P-256 root: basicConstraints CA:true pathlen:0 (critical), keyCertSign +
 * cRLSign (critical), and a URI SAN `spiffe://TD` naming its trust domain (SPIFFE's convention
 * for signing certificates). The subject carries a random id so that two generations of CA in
 * one bundle never share a name, which would confuse OpenSSL's CRL lookup by issuer name.
 */
export async function createCa(o: CreateCaOptions): Promise<CreatedCa> {
  assertTrustDomain(o.trustDomain);
  const days = o.days ?? DEFAULT_DAYS.ca;
  assertDays(days, 'days');
  const now = wholeSecond(o.now ?? new Date());
  const keys = await generateKeyPair();
  const serial = randomSerial();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, 0, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${o.trustDomain}` }], false),
  ];
  if (o.nameConstraints) {
    const nc = new asn1X509.NameConstraints({
      permittedSubtrees: new asn1X509.GeneralSubtrees([
        new asn1X509.GeneralSubtree({ base: new asn1X509.GeneralName({ uniformResourceIdentifier: o.trustDomain }) }),
      ]),
    });
    extensions.push(new x509.Extension(asn1X509.id_ce_nameConstraints, true, AsnConvert.serialize(nc)));
  }
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial,
    name: [{ CN: [`Postern CA ${o.trustDomain} ${serial.slice(0, 8)}`] }, { O: [o.trustDomain] }],
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + days * DAY_MS),
    keys,
    signingAlgorithm: EC_SIGNING_ALGORITHM,
    extensions,
  });
  return { cert, certPem: encodePem(CERT_LABEL, cert.rawData), keyPem: privateKeyPem(keys.privateKey) };
}

/** Reads the trust domain a Postern CA certificate names in its `spiffe://TD` URI SAN. */
function caTrustDomain(facts: CertificateFacts, where: string): string {
  if (!facts.isCa) throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${where} is not a CA certificate (basicConstraints CA:true is missing)`, { details: { path: where } });
  const uri = facts.uris.find((u) => u.startsWith('spiffe://'));
  const td = uri?.slice('spiffe://'.length);
  if (td === undefined || td === '' || td.includes('/')) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${where} names no trust domain (no URI SAN spiffe://TD); it was not made by postern pki init`, { details: { path: where } });
  }
  return td;
}

/** Builds CaMaterial from PEM texts, checking that the key belongs to the certificate. */
export async function loadCaMaterial(certPem: string, keyPem: string | Buffer, where: { cert: string; key: string }): Promise<CaMaterial> {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(certPem);
  } catch (err) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${where.cert} is not a PEM certificate: ${(err as Error).message}`, { cause: err, details: { path: where.cert } });
  }
  const facts = certificateFacts(Buffer.from(cert.rawData));
  const trustDomain = caTrustDomain(facts, where.cert);
  const key = await importSigningKey(keyPem, where.key);
  if (!keyMatchesCertificate(createPrivateKey(keyPem), certPem)) {
    throw new PkiError('POSTERN_ERR_PKI_KEY_MISMATCH', `${where.key} is not the private key of ${where.cert}`, { details: { path: where.key } });
  }
  return { cert, certPem, facts, key, trustDomain };
}

export interface IssueOptions {
  role: Role;
  name: string;
  org?: string;
  dns?: readonly string[];
  ip?: readonly string[];
  days?: number;
  now?: Date;
}

export interface IssuedLeaf {
  spiffeId: string;
  serial: string;
  certPem: string;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
  /** True when the requested validity was cut to end with the CA's. */
  capped: boolean;
}

const DNS_NAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

function checkDns(name: string): string {
  const lower = name.toLowerCase().replace(/\.$/, '');
  if (lower.length > 253 || !DNS_NAME.test(lower)) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_NAME', `DNS name "${name}" is not a valid host name`, { details: { field: 'dns', value: name } });
  }
  return lower;
}

function checkIp(addr: string): string {
  if (isIP(addr) === 0) throw new PkiError('POSTERN_ERR_PKI_INVALID_NAME', `IP address "${addr}" is not an IPv4 or IPv6 address`, { details: { field: 'ip', value: addr } });
  return addr;
}

/**
 * Issues a leaf: exactly one URI SAN (the SPIFFE ID), DNS/IP SANs for relays only,
 * digitalSignature (critical), the role's EKU, CA:false (critical), a random 16-byte serial,
 * NotBefore backdated 5 minutes, NotAfter never past the CA's.
 */
export async function issueLeaf(ca: CaMaterial, o: IssueOptions): Promise<IssuedLeaf> {
  if (o.role === 'relay' && o.org !== undefined) {
    throw new PkiError('POSTERN_ERR_USAGE', 'a relay belongs to no org: drop --org', { details: { field: 'org' } });
  }
  if (o.role !== 'relay' && o.org === undefined) {
    throw new PkiError('POSTERN_ERR_USAGE', `a ${o.role} certificate needs --org`, { details: { field: 'org' } });
  }
  if (o.role !== 'relay' && ((o.dns?.length ?? 0) > 0 || (o.ip?.length ?? 0) > 0)) {
    throw new PkiError('POSTERN_ERR_USAGE', `--dns and --ip are for relay certificates; a ${o.role} is known by its SPIFFE ID only`, { details: { field: 'dns' } });
  }
  const spiffeId = formatSpiffeId({ trustDomain: ca.trustDomain, role: o.role, name: o.name, ...(o.org === undefined ? {} : { org: o.org }) });
  const days = o.days ?? DEFAULT_DAYS[o.role];
  assertDays(days, 'days');
  const dns = [...new Set((o.dns ?? []).map(checkDns))];
  const ips = [...new Set((o.ip ?? []).map(checkIp))];

  const now = wholeSecond(o.now ?? new Date());
  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  const wanted = new Date(now.getTime() + days * DAY_MS);
  const capped = wanted.getTime() > ca.facts.notAfter.getTime();
  const notAfter = capped ? ca.facts.notAfter : wanted;
  if (notAfter.getTime() <= now.getTime()) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `the CA expired on ${ca.facts.notAfter.toISOString()}; create a new one and bundle both`, { details: { notAfter: ca.facts.notAfter.toISOString() } });
  }

  const keys = await generateKeyPair();
  const serial = randomSerial();
  const caSki = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const subject: x509.JsonName = [{ CN: [o.name] }, { OU: [o.role] }, { O: [o.org ?? ca.trustDomain] }];
  const sans: x509.JsonGeneralNames = [
    { type: 'url', value: spiffeId },
    ...dns.map((value) => ({ type: 'dns' as const, value })),
    ...ips.map((value) => ({ type: 'ip' as const, value })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([...EKU_BY_ROLE[o.role]], false),
    new x509.SubjectAlternativeNameExtension(sans, false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (caSki) extensions.push(new x509.AuthorityKeyIdentifierExtension(caSki.keyId, false));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject,
    issuer: ca.cert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: EC_SIGNING_ALGORITHM,
    extensions,
  });
  return {
    spiffeId,
    serial,
    certPem: encodePem(CERT_LABEL, cert.rawData),
    keyPem: privateKeyPem(keys.privateKey),
    notBefore,
    notAfter,
    capped,
  };
}

/** True when `certDer` carries a valid signature of the CA and names it as issuer. */
export async function issuedBy(ca: Pick<CaMaterial, 'cert'>, certDer: Buffer): Promise<boolean> {
  const cert = new x509.X509Certificate(certDer);
  const sameName = Buffer.from(cert.issuerName.toArrayBuffer()).equals(Buffer.from(ca.cert.subjectName.toArrayBuffer()));
  if (!sameName) return false;
  return cert.verify({ publicKey: ca.cert.publicKey, signatureOnly: true });
}
