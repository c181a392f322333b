import { z } from 'zod';
import { PkiError } from '../errors.js';
import { normalizeSerial, serialHex } from '../identity/certificate.js';
import { wholeSecond, type CaMaterial } from './ca.js';
import { decodePem, encodePem, CRL_LABEL } from './pem.js';
import { asn1X509, AsnConvert, EC_SIGNING_ALGORITHM, x509 } from './x509.js';

/** A week: long enough to survive a weekend without the CA workstation, short enough to matter. */
export const DEFAULT_CRL_DAYS = 7;
const DAY_MS = 24 * 60 * 60 * 1000;

const revokedEntrySchema = z.strictObject({
  serial: z.string().regex(/^[0-9a-f]+$/),
  revokedAt: z.iso.datetime(),
  /** The SPIFFE ID of the revoked certificate, when it was revoked from its file. */
  spiffeId: z.string().optional(),
});
const revocationStateSchema = z.strictObject({
  version: z.literal(1),
  /** Number of the last CRL signed; the next one gets crlNumber + 1 (RFC 5280 requires it to grow). */
  crlNumber: z.number().int().nonnegative(),
  revoked: z.array(revokedEntrySchema),
});

export type RevokedEntry = z.infer<typeof revokedEntrySchema>;
export type RevocationState = z.infer<typeof revocationStateSchema>;

export function emptyRevocationState(): RevocationState {
  return { version: 1, crlNumber: 0, revoked: [] };
}

/** Parses revoked.json; `where` names the file in POSTERN_ERR_PKI_STATE_INVALID. */
export function parseRevocationState(text: string, where: string): RevocationState {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PkiError('POSTERN_ERR_PKI_STATE_INVALID', `${where} is not JSON: ${(err as Error).message}`, { cause: err, details: { path: where } });
  }
  const parsed = revocationStateSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new PkiError('POSTERN_ERR_PKI_STATE_INVALID', `${where}: field "${issue?.path.join('.') ?? ''}": ${issue?.message ?? 'invalid'}`, { details: { path: where } });
  }
  return parsed.data;
}

export function formatRevocationState(state: RevocationState): string {
  return `${JSON.stringify(state, null, 2)}\n`;
}

/** Adds `serial` to the state unless present; returns the new state and whether it was already there. */
export function addRevocation(state: RevocationState, entry: RevokedEntry): { state: RevocationState; already?: RevokedEntry } {
  const serial = normalizeSerial(entry.serial);
  const already = state.revoked.find((e) => e.serial === serial);
  if (already) return { state, already };
  return { state: { ...state, revoked: [...state.revoked, { ...entry, serial }] } };
}

export interface SignCrlOptions {
  days?: number;
  now?: Date;
}

/**
 * Signs the CA's CRL listing every revoked serial with its date, the next CRL number and a
 * nextUpdate `days` ahead, with the AKI of the CA so verifiers pick the right CA in a bundle.
 * Returns the state with the number used, and the PEM labelled `X509 CRL` (what Node accepts).
 */
export async function signCrl(ca: CaMaterial, state: RevocationState, o: SignCrlOptions = {}): Promise<{ pem: string; state: RevocationState; nextUpdate: Date }> {
  const now = wholeSecond(o.now ?? new Date());
  const days = o.days ?? DEFAULT_CRL_DAYS;
  const crlNumber = state.crlNumber + 1;
  const nextUpdate = new Date(now.getTime() + days * DAY_MS);
  const extensions: x509.Extension[] = [
    new x509.Extension(asn1X509.id_ce_cRLNumber, false, AsnConvert.serialize(new asn1X509.CRLNumber(crlNumber))),
  ];
  const ski = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski) extensions.push(new x509.AuthorityKeyIdentifierExtension(ski.keyId, false));
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.cert.subjectName,
    thisUpdate: now,
    nextUpdate,
    signingKey: ca.key,
    signingAlgorithm: EC_SIGNING_ALGORITHM,
    extensions,
    entries: state.revoked.map((e) => ({ serialNumber: e.serial, revocationDate: new Date(e.revokedAt) })),
  });
  return { pem: encodePem(CRL_LABEL, crl.rawData), state: { ...state, crlNumber }, nextUpdate };
}

export interface CrlFacts {
  der: Buffer;
  issuer: string;
  /** DER of the issuer name, to match the CRL with its CA. */
  issuerDer: Buffer;
  /** Authority key identifier (hex), when present. */
  authorityKeyId?: string;
  crlNumber?: number;
  thisUpdate: Date;
  nextUpdate?: Date;
  revoked: { serial: string; revokedAt: Date }[];
}

/** DER blocks of every CRL in a PEM text (labelled `X509 CRL` or `CRL`), or the DER itself. */
export function crlDerBlocks(data: Buffer | string): Buffer[] {
  const text = typeof data === 'string' ? data : data.toString('latin1');
  if (text.includes('-----BEGIN')) {
    return decodePem(text).filter((b) => b.label === CRL_LABEL || b.label === 'CRL').map((b) => b.der);
  }
  return typeof data === 'string' ? [] : [data];
}

export function crlFacts(der: Buffer, where: string): CrlFacts {
  let list: asn1X509.CertificateList;
  try {
    list = AsnConvert.parse(der, asn1X509.CertificateList);
  } catch (err) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${where} is not a CRL: ${(err as Error).message}`, { cause: err, details: { path: where } });
  }
  const tbs = list.tbsCertList;
  const issuerDer = Buffer.from(AsnConvert.serialize(tbs.issuer));
  const facts: CrlFacts = {
    der,
    issuer: new x509.Name(issuerDer).toString(),
    issuerDer,
    thisUpdate: tbs.thisUpdate.getTime(),
    revoked: (tbs.revokedCertificates ?? []).map((r) => ({ serial: serialHex(r.userCertificate), revokedAt: r.revocationDate.getTime() })),
  };
  if (tbs.nextUpdate) facts.nextUpdate = tbs.nextUpdate.getTime();
  try {
    for (const ext of tbs.crlExtensions ?? []) {
      if (ext.extnID === asn1X509.id_ce_cRLNumber) facts.crlNumber = AsnConvert.parse(ext.extnValue.buffer, asn1X509.CRLNumber).value;
      if (ext.extnID === asn1X509.id_ce_authorityKeyIdentifier) {
        const kid = AsnConvert.parse(ext.extnValue.buffer, asn1X509.AuthorityKeyIdentifier).keyIdentifier;
        if (kid) facts.authorityKeyId = Buffer.from(kid.buffer).toString('hex');
      }
    }
  } catch (err) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${where} has an undecodable CRL extension: ${(err as Error).message}`, { cause: err, details: { path: where } });
  }
  return facts;
}
