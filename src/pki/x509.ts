// The one door to @peculiar/x509: tsyringe inside it needs the reflect polyfill loaded first,
// and it must use Node's WebCrypto. Everything else imports x509 (and its ASN.1 helpers) from here.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import * as asn1X509 from '@peculiar/asn1-x509';
import { AsnConvert } from '@peculiar/asn1-schema';
import { webcrypto } from 'node:crypto';

x509.cryptoProvider.set(webcrypto as unknown as ReturnType<typeof x509.cryptoProvider.get>);

export { x509, asn1X509, AsnConvert };
export const subtle = webcrypto.subtle;

/** ECDSA P-256 with SHA-256: the only key and signature algorithm Postern issues. */
export const EC_KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
export const EC_SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
