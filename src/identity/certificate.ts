import { createHash } from 'node:crypto';
import { IdentityError } from '../errors.js';
import { asn1X509, AsnConvert, x509 } from '../pki/x509.js';
import { parseSpiffeId, type Role, type SpiffeId } from './spiffe.js';

export interface Identity extends SpiffeId {
  /** Serial number, lowercase hex without leading zeros. */
  serial: string;
  /** SHA-256 of the DER certificate, lowercase hex. */
  fingerprint: string;
  notAfter: Date;
}

/** Where a certificate is presented; each place admits certain roles and usages. */
export type Presentation =
  /** The relay's certificate, seen by a connector or an agent. */
  | 'relay-server'
  /** A connector dialing the relay. */
  | 'connector-client'
  /** A user or service dialing the relay. */
  | 'agent-client'
  /** The connector's certificate in the inner TLS session. */
  | 'connector-inner-server'
  /** A user or service certificate in the inner TLS session. */
  | 'agent-inner-client';

export interface IdentityExpectation {
  trustDomain: string;
  presentedAs: Presentation;
  /** When given, the certificate must belong to this org. */
  org?: string;
  /** When given, the certificate must carry this name (a connector id, a relay name…). */
  name?: string;
}

const PRESENTATIONS: Record<Presentation, { roles: readonly Role[]; eku: 'serverAuth' | 'clientAuth' }> = {
  'relay-server': { roles: ['relay'], eku: 'serverAuth' },
  'connector-client': { roles: ['connector'], eku: 'clientAuth' },
  'agent-client': { roles: ['user', 'service'], eku: 'clientAuth' },
  'connector-inner-server': { roles: ['connector'], eku: 'serverAuth' },
  'agent-inner-client': { roles: ['user', 'service'], eku: 'clientAuth' },
};

const EKU_OID = { serverAuth: asn1X509.id_kp_serverAuth, clientAuth: asn1X509.id_kp_clientAuth } as const;
const EKU_NAMES: Record<string, string> = {
  [asn1X509.id_kp_serverAuth]: 'serverAuth',
  [asn1X509.id_kp_clientAuth]: 'clientAuth',
  [asn1X509.id_kp_codeSigning]: 'codeSigning',
  [asn1X509.id_kp_emailProtection]: 'emailProtection',
  [asn1X509.id_kp_timeStamping]: 'timeStamping',
  [asn1X509.id_kp_OCSPSigning]: 'OCSPSigning',
  [asn1X509.anyExtendedKeyUsage]: 'anyExtendedKeyUsage',
};

/** What a certificate says about itself, read from the raw DER (never from Node's text rendering). */
export interface CertificateFacts {
  der: Buffer;
  serial: string;
  fingerprint: string;
  subject: string;
  /** DER of the subject name: matched against a CRL's issuer. */
  subjectDer: Buffer;
  /** Subject key identifier (hex), when present. */
  subjectKeyId?: string;
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  isCa: boolean;
  /** Key usage names (digitalSignature, keyCertSign, crlSign…); undefined when the extension is absent. */
  keyUsage?: string[];
  /** Extended key usage names (serverAuth, clientAuth, or the OID when unnamed); undefined when absent. */
  extKeyUsage?: string[];
  uris: string[];
  dns: string[];
  ips: string[];
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/;

/** DER bytes of a certificate given as DER or as PEM text or bytes (the first CERTIFICATE block). */
export function certificateDer(cert: Buffer | Uint8Array | string): Buffer {
  const bytes = typeof cert === 'string' ? undefined : Buffer.from(cert.buffer, cert.byteOffset, cert.byteLength);
  // A DER certificate starts with a SEQUENCE tag (0x30), never with "-----BEGIN".
  const text = bytes === undefined ? (cert as string) : bytes.subarray(0, 10).toString('latin1') === '-----BEGIN' ? bytes.toString('latin1') : undefined;
  if (text !== undefined) {
    const body = PEM_CERT.exec(text)?.[1];
    if (body === undefined) throw new IdentityError('POSTERN_ERR_PKI_INVALID_CERT', 'the text holds no PEM CERTIFICATE block');
    return Buffer.from(body.replace(/\s+/g, ''), 'base64');
  }
  return bytes!;
}

/** Lowercase hex of a DER INTEGER's content octets, leading zero octets removed. */
export function serialHex(bytes: ArrayBuffer | Uint8Array): string {
  const hex = Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString('hex');
  return normalizeSerial(hex);
}

/** Canonical spelling of a serial given as hex (any case, optional colons or 0x, leading zeros). */
export function normalizeSerial(hex: string): string {
  const clean = hex.trim().toLowerCase().replace(/^0x/, '').replace(/:/g, '');
  const stripped = clean.replace(/^0+/, '');
  return stripped === '' ? '0' : stripped;
}

function nameToString(name: asn1X509.Name): string {
  return new x509.Name(AsnConvert.serialize(name)).toString();
}

/**
 * Facts of the certificates seen last, by DER. Every inner TLS handshake checks its peer's
 * certificate on both ends, and the ASN.1 parse costs ~3 ms of CPU (measured: 17 % of the
 * connector's CPU during a burst of new streams) for the same few certificates over and over.
 * Bounded because the certificates are the peers' input; the oldest entry goes first.
 */
const FACTS_CACHE_SIZE = 256;
const factsCache = new Map<string, CertificateFacts>();

/**
 * Parses a certificate's facts from DER or PEM; throws POSTERN_ERR_PKI_INVALID_CERT when it is not one.
 */
export function certificateFacts(cert: Buffer | Uint8Array | string): CertificateFacts {
  const der = certificateDer(cert);
  const key = der.toString('base64');
  const seen = factsCache.get(key);
  if (seen !== undefined) {
    // Most recently used last, so the oldest is the first key.
    factsCache.delete(key);
    factsCache.set(key, seen);
    return copyFacts(seen);
  }
  // A copy: `der` may be a view of the caller's (possibly pooled) buffer.
  const facts = parseCertificateFacts(Buffer.from(der));
  if (factsCache.size >= FACTS_CACHE_SIZE) factsCache.delete(factsCache.keys().next().value!);
  factsCache.set(key, facts);
  return copyFacts(facts);
}

function parseCertificateFacts(der: Buffer): CertificateFacts {
  let parsed: asn1X509.Certificate;
  try {
    parsed = AsnConvert.parse(der, asn1X509.Certificate);
  } catch (err) {
    throw new IdentityError('POSTERN_ERR_PKI_INVALID_CERT', `not a DER X.509 certificate: ${(err as Error).message}`, { cause: err });
  }
  const tbs = parsed.tbsCertificate;
  const facts: CertificateFacts = {
    der,
    serial: serialHex(tbs.serialNumber),
    fingerprint: createHash('sha256').update(der).digest('hex'),
    subject: nameToString(tbs.subject),
    subjectDer: Buffer.from(AsnConvert.serialize(tbs.subject)),
    issuer: nameToString(tbs.issuer),
    notBefore: tbs.validity.notBefore.getTime(),
    notAfter: tbs.validity.notAfter.getTime(),
    isCa: false,
    uris: [],
    dns: [],
    ips: [],
  };
  try {
    for (const ext of tbs.extensions ?? []) {
      const value = ext.extnValue.buffer;
      switch (ext.extnID) {
        case asn1X509.id_ce_basicConstraints:
          facts.isCa = AsnConvert.parse(value, asn1X509.BasicConstraints).cA;
          break;
        case asn1X509.id_ce_keyUsage:
          facts.keyUsage = AsnConvert.parse(value, asn1X509.KeyUsage).toJSON();
          break;
        case asn1X509.id_ce_extKeyUsage:
          facts.extKeyUsage = Array.from(AsnConvert.parse(value, asn1X509.ExtendedKeyUsage), (oid) => EKU_NAMES[oid] ?? oid);
          break;
        case asn1X509.id_ce_subjectAltName:
          // Every SAN extension counts: a second one must not hide a second URI.
          for (const gn of AsnConvert.parse(value, asn1X509.SubjectAlternativeName)) {
            if (gn.uniformResourceIdentifier !== undefined) facts.uris.push(gn.uniformResourceIdentifier);
            if (gn.dNSName !== undefined) facts.dns.push(gn.dNSName);
            if (gn.iPAddress !== undefined) facts.ips.push(gn.iPAddress);
          }
          break;
        case asn1X509.id_ce_subjectKeyIdentifier:
          facts.subjectKeyId = Buffer.from(AsnConvert.parse(value, asn1X509.SubjectKeyIdentifier).buffer).toString('hex');
          break;
        default:
          break;
      }
    }
  } catch (err) {
    throw new IdentityError('POSTERN_ERR_PKI_INVALID_CERT', `certificate ${facts.serial} has an undecodable extension: ${(err as Error).message}`, { cause: err });
  }
  return facts;
}

/** A copy the caller may change without touching the cached facts (the Buffers are not changed by anyone). */
function copyFacts(f: CertificateFacts): CertificateFacts {
  return {
    ...f,
    uris: [...f.uris],
    dns: [...f.dns],
    ips: [...f.ips],
    ...(f.keyUsage ? { keyUsage: [...f.keyUsage] } : {}),
    ...(f.extKeyUsage ? { extKeyUsage: [...f.extKeyUsage] } : {}),
  };
}

/**
 * The only place a certificate becomes an Identity. Checks, in order: leaf (not CA), exactly one
 * URI SAN, a well-formed SPIFFE ID of the expected trust domain, a role that fits where the
 * certificate is presented, key usages for that place, then the org and name when expected.
 * Chain, validity dates and revocation are TLS's job and are not re-checked here.
 */
export function identityFromCertificate(cert: Buffer | Uint8Array | string, expect: IdentityExpectation): Identity {
  const facts = certificateFacts(cert);
  const place = PRESENTATIONS[expect.presentedAs];
  if (place === undefined) throw new IdentityError('POSTERN_ERR_INTERNAL', `unknown presentation "${String(expect.presentedAs)}"`);
  const details = { serial: facts.serial, presentedAs: expect.presentedAs };

  if (facts.isCa) {
    throw new IdentityError('POSTERN_ERR_ID_CA_AS_LEAF', `certificate ${facts.serial} (${facts.subject}) is a CA certificate, presented as ${expect.presentedAs}`, { details });
  }
  if (facts.uris.length === 0) {
    throw new IdentityError('POSTERN_ERR_ID_NO_URI_SAN', `certificate ${facts.serial} (${facts.subject}) carries no URI SAN (SPIFFE ID)`, { details });
  }
  if (facts.uris.length > 1) {
    throw new IdentityError('POSTERN_ERR_ID_MULTIPLE_URI_SANS', `certificate ${facts.serial} carries ${facts.uris.length} URI SANs; exactly one SPIFFE ID is required`, { details });
  }
  const id = parseSpiffeId(facts.uris[0]!, expect.trustDomain);

  if (!place.roles.includes(id.role)) {
    throw new IdentityError(
      'POSTERN_ERR_ID_WRONG_ROLE',
      `${id.uri} is a ${id.role} certificate; ${expect.presentedAs} requires ${place.roles.join(' or ')}`,
      { details: { ...details, uri: id.uri, role: id.role } },
    );
  }
  if (facts.keyUsage !== undefined && !facts.keyUsage.includes('digitalSignature')) {
    throw new IdentityError('POSTERN_ERR_ID_KEY_USAGE', `${id.uri}: key usage lacks digitalSignature`, { details: { ...details, uri: id.uri } });
  }
  if (facts.keyUsage?.some((u) => u === 'keyCertSign' || u === 'crlSign')) {
    throw new IdentityError('POSTERN_ERR_ID_KEY_USAGE', `${id.uri}: a leaf certificate must not carry keyCertSign or cRLSign`, { details: { ...details, uri: id.uri } });
  }
  // An absent EKU would mean "any purpose"; Postern issues it always and requires it.
  if (facts.extKeyUsage === undefined || !facts.extKeyUsage.includes(place.eku)) {
    throw new IdentityError(
      'POSTERN_ERR_ID_KEY_USAGE',
      `${id.uri}: extended key usage ${facts.extKeyUsage ? `[${facts.extKeyUsage.join(', ')}]` : 'is absent and'} lacks ${place.eku} (OID ${EKU_OID[place.eku]}), required for ${expect.presentedAs}`,
      { details: { ...details, uri: id.uri } },
    );
  }
  if (expect.org !== undefined && id.org !== expect.org) {
    throw new IdentityError(
      'POSTERN_ERR_ID_ORG_MISMATCH',
      `${id.uri} belongs to org "${id.org ?? '(none)'}", expected org "${expect.org}"`,
      { details: { ...details, uri: id.uri, org: id.org, expected: expect.org } },
    );
  }
  if (expect.name !== undefined && id.name !== expect.name) {
    throw new IdentityError(
      'POSTERN_ERR_ID_NAME_MISMATCH',
      `${id.uri} names ${id.role} "${id.name}", expected "${expect.name}"`,
      { details: { ...details, uri: id.uri, name: id.name, expected: expect.name } },
    );
  }
  return { ...id, serial: facts.serial, fingerprint: facts.fingerprint, notAfter: facts.notAfter };
}
