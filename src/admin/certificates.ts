import { certificateFacts } from '../identity/certificate.js';
import type { CertificateKind } from '../metrics/definitions.js';
import { CERT_LABEL, decodePem } from '../pki/pem.js';

/** What /v1/status says of one certificate in use: enough to plan a renewal, nothing secret. */
export interface CertificateSummary {
  subject: string;
  /** The SPIFFE ID, for a leaf. */
  uri?: string;
  serial: string;
  notBefore: string;
  notAfter: string;
}

/** PEM text or bytes as TLS options hold them: one value or several. */
export type PemInput = string | Buffer | readonly (string | Buffer)[];

export type CertificateReport = Partial<Record<CertificateKind, CertificateSummary[]>>;

// Material is rebuilt (new Buffers) on reload, so caching by the Buffer parses each file once per load.
const cache = new WeakMap<Buffer, CertificateSummary[]>();

/** Every certificate of each input, in file order (a leaf file: the leaf first, then its chain). */
export function certificateReport(inputs: Partial<Record<CertificateKind, PemInput | undefined>>): CertificateReport {
  const report: CertificateReport = {};
  for (const [kind, input] of Object.entries(inputs) as [CertificateKind, PemInput | undefined][]) {
    if (input !== undefined) report[kind] = (Array.isArray(input) ? input : [input]).flatMap((pem: string | Buffer) => summarize(pem));
  }
  return report;
}

/** The earliest expiry of each kind: what an alert on postern_certificate_expiry_timestamp_seconds watches. */
export function earliestExpiry(report: CertificateReport): Partial<Record<CertificateKind, Date>> {
  const out: Partial<Record<CertificateKind, Date>> = {};
  for (const [kind, certs] of Object.entries(report) as [CertificateKind, CertificateSummary[]][]) {
    for (const cert of certs) {
      const notAfter = new Date(cert.notAfter);
      if (!out[kind] || notAfter < out[kind]) out[kind] = notAfter;
    }
  }
  return out;
}

function summarize(pem: string | Buffer): CertificateSummary[] {
  const cached = Buffer.isBuffer(pem) ? cache.get(pem) : undefined;
  if (cached) return cached;
  const text = Buffer.isBuffer(pem) ? pem.toString('latin1') : pem;
  const summaries = decodePem(text)
    .filter((block) => block.label === CERT_LABEL)
    .map((block) => {
      const facts = certificateFacts(block.der);
      return {
        subject: facts.subject,
        ...(facts.uris.length === 1 ? { uri: facts.uris[0]! } : {}),
        serial: facts.serial,
        notBefore: facts.notBefore.toISOString(),
        notAfter: facts.notAfter.toISOString(),
      };
    });
  if (Buffer.isBuffer(pem)) cache.set(pem, summaries);
  return summaries;
}
