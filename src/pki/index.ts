export {
  DEFAULT_DAYS, MAX_DAYS, BACKDATE_MS, EKU_BY_ROLE, createCa, issueLeaf, loadCaMaterial, issuedBy, randomSerial,
  generateKeyPair, privateKeyPem, importSigningKey, keyMatchesCertificate,
  type CaMaterial, type CreateCaOptions, type CreatedCa, type IssueOptions, type IssuedLeaf,
} from './ca.js';
export {
  DEFAULT_CRL_DAYS, signCrl, crlFacts, crlDerBlocks, emptyRevocationState, parseRevocationState, formatRevocationState, addRevocation,
  type CrlFacts, type RevocationState, type RevokedEntry,
} from './crl.js';
export {
  PKI_FILES, initPki, loadCa, issueCertificate, leafPrefix, revokeCertificate, resignCrl, inspectFile, bundleCaCertificates,
  readCertificatesFile, parseCertificates,
  type InitPkiOptions, type InitPkiResult, type IssueCertificateOptions, type IssuedCertificate, type RevokeOptions,
  type RevokeResult, type ResignCrlResult, type CertificateReport, type CrlReport, type InspectReport,
} from './store.js';
export { decodePem, encodePem, CRL_LABEL, CERT_LABEL, type PemBlock } from './pem.js';
export {
  DEFAULT_HANDSHAKE_TIMEOUT_MS, loadTlsMaterial, serverTlsOptions, clientTlsOptions, peerIdentity, peerCertificateDer, acceptTlsOverDuplex, connectTlsOverDuplex,
  mapTlsError, type TlsFiles, type TlsMaterial,
} from './tls.js';
export { RevocationIndex, certificateRef, type CertificateRef } from './revocation.js';
