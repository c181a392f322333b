import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PkiError } from '../errors.js';
import { certificateFacts, normalizeSerial, type CertificateFacts } from '../identity/certificate.js';
import { assertTrustDomain, parseSpiffeId, type Role, type SpiffeId } from '../identity/spiffe.js';
import { assertDays, wholeSecond, createCa, issuedBy, issueLeaf, loadCaMaterial, type CaMaterial } from './ca.js';
import {
  addRevocation, crlDerBlocks, crlFacts, emptyRevocationState, formatRevocationState, parseRevocationState, signCrl,
  DEFAULT_CRL_DAYS, type CrlFacts, type RevocationState,
} from './crl.js';
import { exists, MODE_PRIVATE, MODE_PUBLIC, readFileNamed, writeFileAtomic } from './files.js';
import { CERT_LABEL, decodePem, encodePem } from './pem.js';

/** The layout of a CA directory. Only ca.key is secret; the directory never leaves the CA workstation. */
export const PKI_FILES = Object.freeze({
  caCert: 'ca.crt',
  caKey: 'ca.key',
  crl: 'crl.pem',
  revoked: 'revoked.json',
});

function paths(dir: string) {
  return {
    caCert: join(dir, PKI_FILES.caCert),
    caKey: join(dir, PKI_FILES.caKey),
    crl: join(dir, PKI_FILES.crl),
    revoked: join(dir, PKI_FILES.revoked),
  };
}

const LOCK_FILE = '.postern-pki.lock';

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Runs `fn` holding the CA directory's lock file (created O_EXCL, holding our pid), so two
 * `revoke`/`crl` runs cannot lose a revocation or reuse a CRL number. A lock whose process is
 * gone is broken; a live one is refused with POSTERN_ERR_PKI_LOCKED rather than waited for.
 */
async function withDirLock<T>(dir: string, fn: () => Promise<T>, retried = false): Promise<T> {
  const lock = join(dir, LOCK_FILE);
  try {
    await writeFile(lock, String(process.pid), { flag: 'wx', mode: MODE_PRIVATE });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new PkiError('POSTERN_ERR_FILE_WRITE', `cannot create lock ${lock}: ${(err as Error).message}`, { cause: err, details: { path: lock } });
    }
    const pid = Number.parseInt(await readFile(lock, 'utf8').catch(() => ''), 10);
    if (retried || (pid > 0 && processAlive(pid))) {
      throw new PkiError('POSTERN_ERR_PKI_LOCKED', `${dir} is being changed by another postern pki process (pid ${Number.isNaN(pid) ? 'unknown' : pid}); retry when it is done`, { details: { dir, pid } });
    }
    // The holder died: move its lock aside (only one breaker wins the rename) and try once more.
    const stale = `${lock}.${process.pid}.stale`;
    await rename(lock, stale).then(() => unlink(stale), () => undefined);
    return withDirLock(dir, fn, true);
  }
  try {
    return await fn();
  } finally {
    await unlink(lock).catch(() => undefined);
  }
}

export interface InitPkiOptions {
  dir: string;
  trustDomain: string;
  /** Replace an existing CA (every certificate it issued stops being trusted). */
  force?: boolean;
  /** CA validity in days (default 3650). */
  days?: number;
  /** CRL validity in days (default 7). */
  crlDays?: number;
  nameConstraints?: boolean;
  now?: Date;
}

export interface InitPkiResult {
  trustDomain: string;
  caCert: string;
  caKey: string;
  crl: string;
  serial: string;
  notAfter: Date;
}

/** Creates ca.crt, ca.key (0600), an empty revoked.json and a signed empty crl.pem in `dir`. */
export async function initPki(o: InitPkiOptions): Promise<InitPkiResult> {
  assertTrustDomain(o.trustDomain);
  if (o.days !== undefined) assertDays(o.days, 'days');
  if (o.crlDays !== undefined) assertDays(o.crlDays, 'crl days');
  const p = paths(o.dir);
  // 0700: the directory holds the CA key and is for the administrator alone.
  await mkdir(o.dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
    throw new PkiError('POSTERN_ERR_FILE_WRITE', `cannot create ${o.dir}: ${(err as Error).message}`, { cause: err, details: { path: o.dir } });
  });
  return withDirLock(o.dir, async () => {
    if (!o.force && ((await exists(p.caCert)) || (await exists(p.caKey)))) {
      throw new PkiError('POSTERN_ERR_PKI_EXISTS', `a CA already exists in ${o.dir} (${PKI_FILES.caCert}/${PKI_FILES.caKey}); pass --force to replace it`, { details: { dir: o.dir } });
    }
    const created = await createCa({
      trustDomain: o.trustDomain,
      ...(o.days === undefined ? {} : { days: o.days }),
      ...(o.nameConstraints === undefined ? {} : { nameConstraints: o.nameConstraints }),
      ...(o.now === undefined ? {} : { now: o.now }),
    });
    const ca = await loadCaMaterial(created.certPem, created.keyPem, { cert: p.caCert, key: p.caKey });
    const signed = await signCrl(ca, emptyRevocationState(), { days: o.crlDays ?? DEFAULT_CRL_DAYS, ...(o.now ? { now: o.now } : {}) });
    // Key first: a crash never leaves a certificate without its key.
    await writeFileAtomic(p.caKey, created.keyPem, MODE_PRIVATE);
    await writeFileAtomic(p.caCert, created.certPem, MODE_PUBLIC);
    await writeFileAtomic(p.revoked, formatRevocationState(signed.state), MODE_PUBLIC);
    await writeFileAtomic(p.crl, signed.pem, MODE_PUBLIC);
    return { trustDomain: o.trustDomain, caCert: p.caCert, caKey: p.caKey, crl: p.crl, serial: ca.facts.serial, notAfter: ca.facts.notAfter };
  });
}

/** Loads the CA of `dir`; POSTERN_ERR_PKI_NOT_FOUND when there is none. */
export async function loadCa(dir: string): Promise<CaMaterial> {
  const p = paths(dir);
  if (!(await exists(p.caCert)) || !(await exists(p.caKey))) {
    throw new PkiError('POSTERN_ERR_PKI_NOT_FOUND', `no CA in ${dir}: ${PKI_FILES.caCert} and ${PKI_FILES.caKey} are required (run postern pki init)`, { details: { dir } });
  }
  const certPem = (await readFileNamed(p.caCert, 'CA certificate')).toString('utf8');
  const keyPem = await readFileNamed(p.caKey, 'CA key');
  return loadCaMaterial(certPem, keyPem, { cert: p.caCert, key: p.caKey });
}

async function loadState(dir: string): Promise<RevocationState> {
  const p = paths(dir);
  if (!(await exists(p.revoked))) return emptyRevocationState();
  return parseRevocationState((await readFileNamed(p.revoked, 'revocation store')).toString('utf8'), p.revoked);
}

export interface IssueCertificateOptions {
  dir: string;
  role: Role;
  name: string;
  org?: string;
  dns?: readonly string[];
  ip?: readonly string[];
  days?: number;
  /** Write PREFIX.crt and PREFIX.key instead of DIR/ROLE-NAME.{crt,key}. */
  out?: string;
  force?: boolean;
  now?: Date;
}

export interface IssuedCertificate {
  spiffeId: string;
  serial: string;
  cert: string;
  key: string;
  notBefore: Date;
  notAfter: Date;
  /** True when the validity was cut to end with the CA's. */
  capped: boolean;
}

/** Default output prefix of a leaf: DIR/ROLE-NAME. */
export function leafPrefix(dir: string, role: Role, name: string): string {
  return join(dir, `${role}-${name}`);
}

/** Issues a leaf with the CA of `dir` and writes PREFIX.crt and PREFIX.key (0600). */
export async function issueCertificate(o: IssueCertificateOptions): Promise<IssuedCertificate> {
  const ca = await loadCa(o.dir);
  const leaf = await issueLeaf(ca, {
    role: o.role,
    name: o.name,
    ...(o.org === undefined ? {} : { org: o.org }),
    ...(o.dns === undefined ? {} : { dns: o.dns }),
    ...(o.ip === undefined ? {} : { ip: o.ip }),
    ...(o.days === undefined ? {} : { days: o.days }),
    ...(o.now === undefined ? {} : { now: o.now }),
  });
  const prefix = o.out ?? leafPrefix(o.dir, o.role, o.name);
  const cert = `${prefix}.crt`;
  const key = `${prefix}.key`;
  if (!o.force) {
    for (const file of [cert, key]) {
      if (await exists(file)) throw new PkiError('POSTERN_ERR_PKI_FILE_EXISTS', `${file} already exists; pass --force to replace it or --out to write elsewhere`, { details: { path: file } });
    }
  }
  await writeFileAtomic(key, leaf.keyPem, MODE_PRIVATE);
  await writeFileAtomic(cert, leaf.certPem, MODE_PUBLIC);
  return { spiffeId: leaf.spiffeId, serial: leaf.serial, cert, key, notBefore: leaf.notBefore, notAfter: leaf.notAfter, capped: leaf.capped };
}

export interface RevokeOptions {
  dir: string;
  /** A certificate file issued by this CA… */
  certFile?: string;
  /** …or a serial number in hex. */
  serial?: string;
  crlDays?: number;
  now?: Date;
}

export interface RevokeResult {
  serial: string;
  spiffeId?: string;
  /** Set when the serial was already revoked (the CRL is re-signed anyway). */
  alreadyRevokedAt?: string;
  crl: string;
  crlNumber: number;
  nextUpdate: Date;
}

/** Adds a certificate to revoked.json and re-signs crl.pem. */
export async function revokeCertificate(o: RevokeOptions): Promise<RevokeResult> {
  if ((o.certFile === undefined) === (o.serial === undefined)) {
    throw new PkiError('POSTERN_ERR_USAGE', 'revoke needs either a certificate file or --serial HEX, not both');
  }
  const ca = await loadCa(o.dir);
  let serial: string;
  let spiffeId: string | undefined;
  if (o.certFile !== undefined) {
    const facts = await readCertificateFile(o.certFile);
    if (!(await issuedBy(ca, facts.der))) {
      throw new PkiError('POSTERN_ERR_PKI_NOT_ISSUED_BY_CA', `${o.certFile} (issuer ${facts.issuer}) was not issued by the CA in ${o.dir}`, { details: { path: o.certFile } });
    }
    serial = facts.serial;
    spiffeId = facts.uris.length === 1 ? facts.uris[0] : undefined;
  } else {
    const raw = o.serial!;
    if (!/^(0x)?[0-9a-fA-F:]+$/.test(raw.trim())) {
      throw new PkiError('POSTERN_ERR_USAGE', `--serial "${raw}" is not a hexadecimal serial number`, { details: { field: 'serial' } });
    }
    serial = normalizeSerial(raw);
  }
  const now = wholeSecond(o.now ?? new Date());
  if (o.crlDays !== undefined) assertDays(o.crlDays, 'crl days');
  return withDirLock(o.dir, async () => {
    const before = await loadState(o.dir);
    const { state, already } = addRevocation(before, { serial, revokedAt: now.toISOString(), ...(spiffeId ? { spiffeId } : {}) });
    const signed = await signCrl(ca, state, { days: o.crlDays ?? DEFAULT_CRL_DAYS, now });
    const p = paths(o.dir);
    // The store first: if the CRL write fails, the next `crl` re-signs from it and loses nothing.
    await writeFileAtomic(p.revoked, formatRevocationState(signed.state), MODE_PUBLIC);
    await writeFileAtomic(p.crl, signed.pem, MODE_PUBLIC);
    const result: RevokeResult = { serial, crl: p.crl, crlNumber: signed.state.crlNumber, nextUpdate: signed.nextUpdate };
    if (spiffeId) result.spiffeId = spiffeId;
    if (already) result.alreadyRevokedAt = already.revokedAt;
    return result;
  });
}

export interface ResignCrlResult {
  crl: string;
  crlNumber: number;
  nextUpdate: Date;
  revokedCount: number;
}

/** Re-signs crl.pem from revoked.json with a new CRL number and nextUpdate. */
export async function resignCrl(o: { dir: string; days?: number; now?: Date }): Promise<ResignCrlResult> {
  const ca = await loadCa(o.dir);
  if (o.days !== undefined) assertDays(o.days, 'days');
  return withDirLock(o.dir, async () => {
    const state = await loadState(o.dir);
    const signed = await signCrl(ca, state, { days: o.days ?? DEFAULT_CRL_DAYS, ...(o.now ? { now: o.now } : {}) });
    const p = paths(o.dir);
    await writeFileAtomic(p.revoked, formatRevocationState(signed.state), MODE_PUBLIC);
    await writeFileAtomic(p.crl, signed.pem, MODE_PUBLIC);
    return { crl: p.crl, crlNumber: signed.state.crlNumber, nextUpdate: signed.nextUpdate, revokedCount: state.revoked.length };
  });
}

/** Every certificate of a PEM (or DER) file, in order; POSTERN_ERR_PKI_INVALID_CERT naming the file. */
export async function readCertificatesFile(file: string): Promise<CertificateFacts[]> {
  const data = await readFileNamed(file, 'certificate');
  return parseCertificates(data, file);
}

export function parseCertificates(data: Buffer, where: string): CertificateFacts[] {
  const text = data.toString('latin1');
  const ders = text.includes('-----BEGIN') ? decodePem(text).filter((b) => b.label === CERT_LABEL).map((b) => b.der) : [data];
  if (ders.length === 0) throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${where} holds no PEM CERTIFICATE block`, { details: { path: where } });
  return ders.map((der) => {
    try {
      return certificateFacts(der);
    } catch (err) {
      throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${where}: ${(err as Error).message}`, { cause: err, details: { path: where } });
    }
  });
}

async function readCertificateFile(file: string): Promise<CertificateFacts> {
  const all = await readCertificatesFile(file);
  if (all.length !== 1) throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${file} holds ${all.length} certificates; give the one to act on`, { details: { path: file } });
  return all[0]!;
}

export interface CertificateReport {
  kind: 'certificate';
  spiffeId?: string;
  role?: Role;
  org?: string;
  name?: string;
  trustDomain?: string;
  /** Why the URI SAN is not a Postern identity, when it is not one. */
  identityProblem?: string;
  serial: string;
  subject: string;
  issuer: string;
  notBefore: string;
  notAfter: string;
  fingerprint: string;
  isCa: boolean;
  keyUsage: string[];
  extKeyUsage: string[];
  dns: string[];
  ip: string[];
  /** Present when a CA directory was given. */
  revoked?: boolean;
  revokedAt?: string;
}

export interface CrlReport {
  kind: 'crl';
  issuer: string;
  crlNumber?: number;
  thisUpdate: string;
  nextUpdate?: string;
  revoked: { serial: string; revokedAt: string }[];
}

export type InspectReport = CertificateReport | CrlReport | { kind: 'bundle'; certificates: CertificateReport[] };

function describeIdentity(facts: CertificateFacts): Partial<CertificateReport> {
  const uri = facts.uris[0];
  if (facts.isCa) {
    return uri?.startsWith('spiffe://') ? { spiffeId: uri, trustDomain: uri.slice('spiffe://'.length) } : {};
  }
  if (facts.uris.length !== 1) return { identityProblem: facts.uris.length === 0 ? 'no URI SAN' : `${facts.uris.length} URI SANs` };
  try {
    const id: SpiffeId = parseSpiffeId(uri!);
    return { spiffeId: uri!, role: id.role, ...(id.org === undefined ? {} : { org: id.org }), name: id.name, trustDomain: id.trustDomain };
  } catch (err) {
    return { spiffeId: uri!, identityProblem: (err as Error).message };
  }
}

function describeCertificate(facts: CertificateFacts): CertificateReport {
  return {
    kind: 'certificate',
    ...describeIdentity(facts),
    serial: facts.serial,
    subject: facts.subject,
    issuer: facts.issuer,
    notBefore: facts.notBefore.toISOString(),
    notAfter: facts.notAfter.toISOString(),
    fingerprint: facts.fingerprint,
    isCa: facts.isCa,
    keyUsage: facts.keyUsage ?? [],
    extKeyUsage: facts.extKeyUsage ?? [],
    dns: facts.dns,
    ip: facts.ips,
  };
}

function describeCrl(facts: CrlFacts): CrlReport {
  const report: CrlReport = {
    kind: 'crl',
    issuer: facts.issuer,
    thisUpdate: facts.thisUpdate.toISOString(),
    revoked: facts.revoked.map((r) => ({ serial: r.serial, revokedAt: r.revokedAt.toISOString() })),
  };
  if (facts.crlNumber !== undefined) report.crlNumber = facts.crlNumber;
  if (facts.nextUpdate) report.nextUpdate = facts.nextUpdate.toISOString();
  return report;
}

/**
 * Describes a certificate, a bundle of certificates, or a CRL. With `dir`, each certificate is
 * checked against that CA (POSTERN_ERR_PKI_NOT_ISSUED_BY_CA otherwise) and its revocation status
 * is read from the CA's revocation store.
 */
export async function inspectFile(o: { file: string; dir?: string }): Promise<InspectReport> {
  const data = await readFileNamed(o.file, 'file');
  const crls = crlDerBlocks(data);
  const text = data.toString('latin1');
  const looksLikeCrl = text.includes('-----BEGIN') ? crls.length > 0 && !text.includes(`-----BEGIN ${CERT_LABEL}-----`) : isDerCrl(data);
  if (looksLikeCrl) return describeCrl(crlFacts(crls[0]!, o.file));

  const certs = parseCertificates(data, o.file);
  const reports = certs.map(describeCertificate);
  if (o.dir !== undefined) {
    const ca = await loadCa(o.dir);
    const state = await loadState(o.dir);
    for (const [i, facts] of certs.entries()) {
      if (!(await issuedBy(ca, facts.der))) {
        throw new PkiError('POSTERN_ERR_PKI_NOT_ISSUED_BY_CA', `${o.file} (issuer ${facts.issuer}) was not issued by the CA in ${o.dir}`, { details: { path: o.file } });
      }
      const entry = state.revoked.find((e) => e.serial === facts.serial);
      reports[i]!.revoked = entry !== undefined;
      if (entry) reports[i]!.revokedAt = entry.revokedAt;
    }
  }
  return reports.length === 1 ? reports[0]! : { kind: 'bundle', certificates: reports };
}

function isDerCrl(der: Buffer): boolean {
  try {
    crlFacts(der, 'input');
    return true;
  } catch {
    return false;
  }
}

/**
 * Concatenates the CA certificates of `files` into one trust bundle (PEM), deduplicated by
 * fingerprint; a file holding a non-CA certificate is refused so a leaf never becomes a trust anchor.
 */
export async function bundleCaCertificates(files: readonly string[]): Promise<string> {
  if (files.length === 0) throw new PkiError('POSTERN_ERR_USAGE', 'bundle needs at least one CA certificate file');
  const seen = new Set<string>();
  let out = '';
  for (const file of files) {
    for (const facts of await readCertificatesFile(file)) {
      if (!facts.isCa) {
        throw new PkiError('POSTERN_ERR_PKI_INVALID_CERT', `${file}: certificate ${facts.serial} (${facts.subject}) is not a CA certificate`, { details: { path: file } });
      }
      if (seen.has(facts.fingerprint)) continue;
      seen.add(facts.fingerprint);
      out += encodePem(CERT_LABEL, facts.der);
    }
  }
  return out;
}
