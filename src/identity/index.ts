export {
  type Role, type SpiffeId, ROLES, MAX_SPIFFE_ID_LENGTH, MAX_SEGMENT_LENGTH,
  isRole, parseSpiffeId, formatSpiffeId, trustDomainProblem, segmentProblem, assertTrustDomain, assertSegment,
} from './spiffe.js';
export {
  type Identity, type Presentation, type IdentityExpectation, type CertificateFacts,
  identityFromCertificate, certificateFacts, certificateDer, serialHex, normalizeSerial,
} from './certificate.js';
