import { Command } from 'commander';
import { PkiError } from '../src/errors.js';
import { isRole, ROLES } from '../src/identity/spiffe.js';
import type { CertificateReport, InspectReport } from '../src/pki/index.js';
import { action } from '../src/cli/action.js';

/** Loaded on use: @peculiar/x509 costs ~0.3 s of start-up that `postern relay --help` should not pay. */
const pkiLib = () => import('../src/pki/index.js');

function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** Parses a --days style flag; commander hands us strings and we want our own error format. */
function days(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new PkiError('POSTERN_ERR_USAGE', `${flag} must be a whole number of days, got "${value}"`, { details: { field: flag } });
  return Number(value);
}

function printCertificate(r: CertificateReport, indent = ''): void {
  const rows: [string, string | undefined][] = [
    ['spiffe id', r.spiffeId],
    ['role', r.role ?? (r.isCa ? 'ca' : undefined)],
    ['org', r.org],
    ['name', r.name],
    ['trust domain', r.trustDomain],
    ['identity problem', r.identityProblem],
    ['serial', r.serial],
    ['subject', r.subject],
    ['issuer', r.issuer],
    ['not before', r.notBefore],
    ['not after', r.notAfter],
    ['sha256', r.fingerprint],
    ['key usage', r.keyUsage.join(', ') || undefined],
    ['ext key usage', r.extKeyUsage.join(', ') || undefined],
    ['dns', r.dns.join(', ') || undefined],
    ['ip', r.ip.join(', ') || undefined],
    ['revoked', r.revoked === undefined ? undefined : r.revoked ? `true (${r.revokedAt})` : 'false'],
  ];
  for (const [k, v] of rows) if (v !== undefined) out(`${indent}${`${k}:`.padEnd(18)}${v}`);
}

function printReport(report: InspectReport): void {
  if (report.kind === 'certificate') return printCertificate(report);
  if (report.kind === 'bundle') {
    report.certificates.forEach((c, i) => {
      if (i > 0) out();
      out(`certificate ${i + 1} of ${report.certificates.length}`);
      printCertificate(c, '  ');
    });
    return;
  }
  out(`${'crl issuer:'.padEnd(18)}${report.issuer}`);
  if (report.crlNumber !== undefined) out(`${'crl number:'.padEnd(18)}${report.crlNumber}`);
  out(`${'this update:'.padEnd(18)}${report.thisUpdate}`);
  if (report.nextUpdate) out(`${'next update:'.padEnd(18)}${report.nextUpdate}`);
  out(`${'revoked:'.padEnd(18)}${report.revoked.length}`);
  for (const r of report.revoked) out(`  ${r.serial}  ${r.revokedAt}`);
}

export function registerPki(program: Command): void {
  const pki = program
    .command('pki')
    .description('The offline CA: create it, issue and revoke certificates, sign CRLs. Run it on an administrator workstation, never on a relay or connector.');

  pki
    .command('init')
    .description('Create a CA (ca.crt, ca.key 0600), an empty revocation store and a signed empty crl.pem')
    .requiredOption('--trust-domain <td>', 'SPIFFE trust domain, lowercase DNS-like (e.g. hospital.example)')
    .option('--dir <dir>', 'CA directory', './pki')
    .option('--days <n>', 'CA validity in days (default 3650)')
    .option('--crl-days <n>', 'validity of the signed CRL in days (default 7)')
    .option('--name-constraints', 'add a critical nameConstraints extension permitting only URIs of this trust domain')
    .option('--force', 'replace an existing CA (every certificate it issued stops being trusted)')
    .action(action(async (o: { trustDomain: string; dir: string; days?: string; crlDays?: string; nameConstraints?: boolean; force?: boolean }) => {
      const r = await (await pkiLib()).initPki({
        dir: o.dir,
        trustDomain: o.trustDomain,
        force: o.force === true,
        nameConstraints: o.nameConstraints === true,
        ...(o.days === undefined ? {} : { days: days(o.days, '--days')! }),
        ...(o.crlDays === undefined ? {} : { crlDays: days(o.crlDays, '--crl-days')! }),
      });
      out(`created CA for trust domain ${r.trustDomain} (serial ${r.serial}, valid until ${r.notAfter.toISOString()})`);
      out(`  certificate  ${r.caCert}`);
      out(`  key          ${r.caKey} (mode 0600: keep it offline)`);
      out(`  crl          ${r.crl}`);
    }));

  pki
    .command('issue')
    .description(`Issue a certificate for a ${ROLES.join(', ')}`)
    .argument('<role>', ROLES.join('|'))
    .argument('<name>', 'relay name, connector id, user or service name ([a-z0-9][a-z0-9._-]*)')
    .option('--dir <dir>', 'CA directory', './pki')
    .option('--org <org>', 'org of a connector, user or service (refused for relays)')
    .option('--dns <name...>', 'DNS SAN(s) of a relay')
    .option('--ip <addr...>', 'IP SAN(s) of a relay')
    .option('--days <n>', 'validity in days (default: relay/connector 397, service 90, user 30)')
    .option('--out <prefix>', 'write PREFIX.crt and PREFIX.key instead of DIR/ROLE-NAME.{crt,key}')
    .option('--force', 'overwrite existing files')
    .action(action(async (role: string, name: string, o: { dir: string; org?: string; dns?: string[]; ip?: string[]; days?: string; out?: string; force?: boolean }) => {
      if (!isRole(role)) throw new PkiError('POSTERN_ERR_USAGE', `role "${role}" is not one of ${ROLES.join(', ')}`, { details: { field: 'role' } });
      const r = await (await pkiLib()).issueCertificate({
        dir: o.dir,
        role,
        name,
        force: o.force === true,
        ...(o.org === undefined ? {} : { org: o.org }),
        ...(o.dns === undefined ? {} : { dns: o.dns }),
        ...(o.ip === undefined ? {} : { ip: o.ip }),
        ...(o.days === undefined ? {} : { days: days(o.days, '--days')! }),
        ...(o.out === undefined ? {} : { out: o.out }),
      });
      out(`issued ${r.spiffeId}`);
      out(`  certificate  ${r.cert}`);
      out(`  key          ${r.key} (mode 0600)`);
      out(`  serial       ${r.serial}`);
      out(`  valid until  ${r.notAfter.toISOString()}${r.capped ? ' (capped at the CA\'s own expiry)' : ''}`);
    }));

  pki
    .command('revoke')
    .description('Revoke a certificate (by file or serial) and re-sign crl.pem')
    .argument('[cert-file]', 'certificate issued by this CA')
    .option('--serial <hex>', 'serial number to revoke, in hex')
    .option('--dir <dir>', 'CA directory', './pki')
    .option('--crl-days <n>', 'validity of the re-signed CRL in days (default 7)')
    .action(action(async (certFile: string | undefined, o: { serial?: string; dir: string; crlDays?: string }) => {
      const r = await (await pkiLib()).revokeCertificate({
        dir: o.dir,
        ...(certFile === undefined ? {} : { certFile }),
        ...(o.serial === undefined ? {} : { serial: o.serial }),
        ...(o.crlDays === undefined ? {} : { crlDays: days(o.crlDays, '--crl-days')! }),
      });
      out(r.alreadyRevokedAt ? `serial ${r.serial} was already revoked on ${r.alreadyRevokedAt}` : `revoked serial ${r.serial}${r.spiffeId ? ` (${r.spiffeId})` : ''}`);
      out(`  crl          ${r.crl} (number ${r.crlNumber}, next update ${r.nextUpdate.toISOString()})`);
      out('  ship crl.pem to every relay and connector; they reload it without restart');
    }));

  pki
    .command('crl')
    .description('Re-sign crl.pem unchanged: a new CRL number and nextUpdate (run it before nextUpdate passes)')
    .option('--dir <dir>', 'CA directory', './pki')
    .option('--days <n>', 'validity of the CRL in days (default 7)')
    .action(action(async (o: { dir: string; days?: string }) => {
      const r = await (await pkiLib()).resignCrl({ dir: o.dir, ...(o.days === undefined ? {} : { days: days(o.days, '--days')! }) });
      out(`signed ${r.crl}: number ${r.crlNumber}, ${r.revokedCount} revoked, next update ${r.nextUpdate.toISOString()}`);
    }));

  pki
    .command('inspect')
    .description('Describe a certificate, a bundle or a CRL; with --dir, also whether it is revoked')
    .argument('<file>', 'PEM (or DER) certificate, bundle or CRL')
    .option('--dir <dir>', 'CA directory to check issuance and revocation against')
    .option('--json', 'print JSON')
    .action(action(async (file: string, o: { dir?: string; json?: boolean }) => {
      const report = await (await pkiLib()).inspectFile({ file, ...(o.dir === undefined ? {} : { dir: o.dir }) });
      if (o.json) out(JSON.stringify(report, null, 2));
      else printReport(report);
    }));

  pki
    .command('bundle')
    .description('Concatenate CA certificates into one trust bundle on stdout (deduplicated); for CA rotation')
    .argument('<ca-files...>', 'CA certificate files (each must be a CA)')
    .action(action(async (files: string[]) => {
      process.stdout.write(await (await pkiLib()).bundleCaCertificates(files));
    }));
}
