import { certificateFacts } from '../identity/certificate.js';
import { crlDerBlocks, crlFacts } from './crl.js';

/** What a CRL entry names: a serial number under an issuer. */
export interface CertificateRef {
  /** Lowercase hex, no leading zeros (as Identity.serial). */
  serial: string;
  /** The issuer's distinguished name, rendered as CRL issuers are. */
  issuer: string;
}

/** The serial and issuer of a certificate (DER or PEM), to look it up in a RevocationIndex. */
export function certificateRef(cert: Buffer | Uint8Array | string): CertificateRef {
  const facts = certificateFacts(cert);
  return { serial: facts.serial, issuer: facts.issuer };
}

/**
 * The revoked serials of a set of CRLs, by issuer. TLS checks a CRL only at the handshake; the
 * relay and the connector use this after a CRL reload to find the live sessions and streams
 * whose peer certificate is now revoked. A serial counts only under its own issuer, so a
 * foreign CA reusing a serial never revokes someone else's certificate.
 */
export class RevocationIndex {
  private readonly byIssuer = new Map<string, Set<string>>();

  /** `crls`: PEM (or DER) CRL data, as TlsMaterial.crl holds it. Each is parsed; a bad one throws. */
  static fromCrls(crls: readonly (Buffer | string)[], where = 'CRL'): RevocationIndex {
    const index = new RevocationIndex();
    for (const data of crls) {
      for (const der of crlDerBlocks(data)) {
        const facts = crlFacts(der, where);
        let serials = index.byIssuer.get(facts.issuer);
        if (!serials) index.byIssuer.set(facts.issuer, (serials = new Set()));
        for (const entry of facts.revoked) serials.add(entry.serial);
      }
    }
    return index;
  }

  isRevoked(ref: CertificateRef): boolean {
    return this.byIssuer.get(ref.issuer)?.has(ref.serial) ?? false;
  }

  /** Revoked entries over all issuers. */
  get size(): number {
    let n = 0;
    for (const serials of this.byIssuer.values()) n += serials.size;
    return n;
  }
}
