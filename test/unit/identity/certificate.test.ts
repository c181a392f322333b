import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { IdentityError, isPosternError } from '../../../src/errors.js';
import { certificateDer, identityFromCertificate, type IdentityExpectation, type Presentation } from '../../../src/identity/index.js';
import { createCa, generateKeyPair, issueLeaf, loadCaMaterial, randomSerial, type CaMaterial } from '../../../src/pki/index.js';
import { asn1X509, EC_SIGNING_ALGORITHM, x509 } from '../../../src/pki/x509.js';

const TD = 'hospital.example';
let ca: CaMaterial;
/** Real leaves issued by the library, by role. */
const leaves: Record<string, string> = {};

beforeAll(async () => {
  const created = await createCa({ trustDomain: TD });
  ca = await loadCaMaterial(created.certPem, created.keyPem, { cert: 'ca.crt', key: 'ca.key' });
  leaves.relay = (await issueLeaf(ca, { role: 'relay', name: 'relay-1', dns: ['localhost'], ip: ['127.0.0.1'] })).certPem;
  leaves.connector = (await issueLeaf(ca, { role: 'connector', name: 'hq', org: 'st-mary' })).certPem;
  leaves.user = (await issueLeaf(ca, { role: 'user', name: 'alice', org: 'st-mary' })).certPem;
  leaves.service = (await issueLeaf(ca, { role: 'service', name: 'reports', org: 'st-mary' })).certPem;
});

interface Odd {
  /** SAN extensions, each a list of general names; default one SAN with the URI of `uri`. */
  sans?: x509.JsonGeneralNames[];
  uri?: string;
  eku?: string[] | null;
  ku?: number | null;
  isCa?: boolean;
}

/** A certificate the library would never issue, signed by the test CA. */
async function odd(o: Odd): Promise<Buffer> {
  const keys = await generateKeyPair();
  const sans = o.sans ?? [[{ type: 'url', value: o.uri ?? `spiffe://${TD}/org/st-mary/user/alice` }]];
  const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(o.isCa ?? false, undefined, true)];
  if (o.ku !== null) extensions.push(new x509.KeyUsagesExtension(o.ku ?? x509.KeyUsageFlags.digitalSignature, true));
  if (o.eku !== null) extensions.push(new x509.ExtendedKeyUsageExtension(o.eku ?? [asn1X509.id_kp_clientAuth]));
  for (const names of sans) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: ['odd'] }],
    issuer: ca.cert.subjectName,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: EC_SIGNING_ALGORITHM,
    extensions,
  });
  return Buffer.from(cert.rawData);
}

function refusal(cert: Buffer | string, expect: Partial<IdentityExpectation> & { presentedAs: Presentation }): string {
  try {
    identityFromCertificate(cert, { trustDomain: TD, ...expect });
  } catch (err) {
    if (!(err instanceof IdentityError)) throw err;
    return err.code;
  }
  return 'accepted';
}

describe('identityFromCertificate accepts the certificates postern pki issues where they belong', () => {
  it.each([
    ['relay', 'relay-server', {}],
    ['relay', 'relay-server', { name: 'relay-1' }],
    ['connector', 'connector-client', { org: 'st-mary', name: 'hq' }],
    ['connector', 'connector-inner-server', { org: 'st-mary', name: 'hq' }],
    ['user', 'agent-client', {}],
    ['user', 'agent-inner-client', { org: 'st-mary' }],
    ['service', 'agent-client', { org: 'st-mary' }],
    ['service', 'agent-inner-client', { org: 'st-mary', name: 'reports' }],
  ] as const)('%s as %s %j', (role, presentedAs, extra) => {
    const id = identityFromCertificate(leaves[role]!, { trustDomain: TD, presentedAs, ...extra });
    expect(id.role).toBe(role);
    expect(id.trustDomain).toBe(TD);
    expect(id.serial).toMatch(/^[1-9a-f][0-9a-f]*$/);
    expect(id.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(id.notAfter.getTime()).toBeGreaterThan(Date.now());
  });

  it('reads PEM and DER alike', () => {
    const pem = leaves.user!;
    const der = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    const a = identityFromCertificate(pem, { trustDomain: TD, presentedAs: 'agent-client' });
    const b = identityFromCertificate(der, { trustDomain: TD, presentedAs: 'agent-client' });
    expect(a).toEqual(b);
    expect(a).toMatchObject({ uri: 'spiffe://hospital.example/org/st-mary/user/alice', org: 'st-mary', name: 'alice' });
  });

  it('refuses bytes that are not a certificate', () => {
    expect(refusal(Buffer.from('not a certificate'), { presentedAs: 'agent-client' })).toBe('POSTERN_ERR_PKI_INVALID_CERT');
    expect(refusal('-----BEGIN CRL-----\nAAAA\n-----END CRL-----\n', { presentedAs: 'agent-client' })).toBe('POSTERN_ERR_PKI_INVALID_CERT');
  });
});

describe('identityFromCertificate refuses, each with its own code', () => {
  const user = `spiffe://${TD}/org/st-mary/user/alice`;
  const cases: [string, () => Promise<Buffer | string>, Partial<IdentityExpectation> & { presentedAs: Presentation }, string][] = [
    ['no SAN at all', () => odd({ sans: [] }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_NO_URI_SAN'],
    ['a DNS SAN but no URI', () => odd({ sans: [[{ type: 'dns', value: 'alice.example' }]] }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_NO_URI_SAN'],
    ['two URI SANs', () => odd({ sans: [[{ type: 'url', value: user }, { type: 'url', value: `spiffe://${TD}/org/st-mary/user/bob` }]] }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MULTIPLE_URI_SANS'],
    ['the same URI twice', () => odd({ sans: [[{ type: 'url', value: user }, { type: 'url', value: user }]] }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MULTIPLE_URI_SANS'],
    ['two SAN extensions with one URI each', () => odd({ sans: [[{ type: 'url', value: user }], [{ type: 'url', value: `spiffe://${TD}/relay/r` }]] }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MULTIPLE_URI_SANS'],
    ['an http URI', () => odd({ uri: `http://${TD}/org/st-mary/user/alice` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_NOT_SPIFFE'],
    ['another trust domain', () => odd({ uri: 'spiffe://vendor.example/org/st-mary/user/alice' }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_WRONG_TRUST_DOMAIN'],
    ['an empty segment', () => odd({ uri: `spiffe://${TD}/org//user/alice` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['a ".." segment', () => odd({ uri: `spiffe://${TD}/org/st-mary/user/..` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['a "." segment', () => odd({ uri: `spiffe://${TD}/org/./user/alice` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['a trailing slash', () => odd({ uri: `${user}/` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['a percent-escape', () => odd({ uri: `spiffe://${TD}/org/st-mary/user/%61lice` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['a query', () => odd({ uri: `${user}?admin=1` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['a fragment', () => odd({ uri: `${user}#x` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['a port', () => odd({ uri: `spiffe://${TD}:8443/org/st-mary/user/alice` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['userinfo', () => odd({ uri: `spiffe://root@${TD}/org/st-mary/user/alice` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['an unknown layout', () => odd({ uri: `spiffe://${TD}/org/st-mary/admin/alice` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['a path without org', () => odd({ uri: `spiffe://${TD}/user/alice` }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_MALFORMED'],
    ['the CA certificate itself', async () => ca.certPem, { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_CA_AS_LEAF'],
    ['a CA:true certificate with a SPIFFE ID', () => odd({ isCa: true }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_CA_AS_LEAF'],
    ['no clientAuth EKU', () => odd({ eku: [asn1X509.id_kp_serverAuth] }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_KEY_USAGE'],
    ['no EKU extension', () => odd({ eku: null }), { presentedAs: 'agent-inner-client' }, 'POSTERN_ERR_ID_KEY_USAGE'],
    ['anyExtendedKeyUsage only', () => odd({ eku: [asn1X509.anyExtendedKeyUsage] }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_KEY_USAGE'],
    ['key usage without digitalSignature', () => odd({ ku: x509.KeyUsageFlags.keyEncipherment }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_KEY_USAGE'],
    ['a leaf with keyCertSign', () => odd({ ku: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign }), { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_KEY_USAGE'],
    ['a connector without serverAuth as inner server', () => odd({ uri: `spiffe://${TD}/org/st-mary/connector/hq`, eku: [asn1X509.id_kp_clientAuth] }), { presentedAs: 'connector-inner-server' }, 'POSTERN_ERR_ID_KEY_USAGE'],
    ['a connector without clientAuth dialing the relay', () => odd({ uri: `spiffe://${TD}/org/st-mary/connector/hq`, eku: [asn1X509.id_kp_serverAuth] }), { presentedAs: 'connector-client' }, 'POSTERN_ERR_ID_KEY_USAGE'],
    ['a relay without serverAuth', () => odd({ uri: `spiffe://${TD}/relay/relay-1`, eku: [asn1X509.id_kp_clientAuth] }), { presentedAs: 'relay-server' }, 'POSTERN_ERR_ID_KEY_USAGE'],
    ['relay certificate as agent-client', async () => leaves.relay!, { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['relay certificate as connector-client', async () => leaves.relay!, { presentedAs: 'connector-client' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['relay certificate as connector-inner-server', async () => leaves.relay!, { presentedAs: 'connector-inner-server' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['relay certificate as agent-inner-client', async () => leaves.relay!, { presentedAs: 'agent-inner-client' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['user certificate as connector-client', async () => leaves.user!, { presentedAs: 'connector-client' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['user certificate as relay-server', async () => leaves.user!, { presentedAs: 'relay-server' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['user certificate as connector-inner-server', async () => leaves.user!, { presentedAs: 'connector-inner-server' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['service certificate as connector-client', async () => leaves.service!, { presentedAs: 'connector-client' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['connector certificate as agent-client', async () => leaves.connector!, { presentedAs: 'agent-client' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['connector certificate as agent-inner-client', async () => leaves.connector!, { presentedAs: 'agent-inner-client' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['connector certificate as relay-server', async () => leaves.connector!, { presentedAs: 'relay-server' }, 'POSTERN_ERR_ID_WRONG_ROLE'],
    ['a user of another org at a connector', async () => leaves.user!, { presentedAs: 'agent-inner-client', org: 'general' }, 'POSTERN_ERR_ID_ORG_MISMATCH'],
    ['a connector id registered under another org', async () => leaves.connector!, { presentedAs: 'connector-client', org: 'general', name: 'hq' }, 'POSTERN_ERR_ID_ORG_MISMATCH'],
    ['a relay asked to be in an org', async () => leaves.relay!, { presentedAs: 'relay-server', org: 'st-mary' }, 'POSTERN_ERR_ID_ORG_MISMATCH'],
    ['another connector than the one asked for', async () => leaves.connector!, { presentedAs: 'connector-inner-server', org: 'st-mary', name: 'branch' }, 'POSTERN_ERR_ID_NAME_MISMATCH'],
    ['another relay than the one expected', async () => leaves.relay!, { presentedAs: 'relay-server', name: 'relay-2' }, 'POSTERN_ERR_ID_NAME_MISMATCH'],
  ];

  it.each(cases)('%s', async (_what, make, expect_, expected) => {
    expect(refusal(await make(), expect_)).toBe(expected);
  });

  it('names the reason and the identity in the message', async () => {
    try {
      identityFromCertificate(leaves.connector!, { trustDomain: TD, presentedAs: 'connector-inner-server', name: 'branch' });
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).toBe('spiffe://hospital.example/org/st-mary/connector/hq names connector "hq", expected "branch"');
    }
    try {
      identityFromCertificate(leaves.relay!, { trustDomain: TD, presentedAs: 'agent-client' });
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).toBe('spiffe://hospital.example/relay/relay-1 is a relay certificate; agent-client requires user or service');
    }
  });
});

describe('identityFromCertificate on random and corrupted bytes', () => {
  it('either yields an identity or throws a catalogued error, never anything else', () => {
    const der = certificateDer(leaves.connector!);
    const corrupted = fc.array(fc.tuple(fc.nat(der.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }).map((edits) => {
      const copy = Buffer.from(der);
      for (const [at, byte] of edits) copy[at] = byte;
      return copy;
    });
    const truncated = fc.nat(der.length - 1).map((n) => der.subarray(0, n));
    fc.assert(
      fc.property(fc.oneof(corrupted, truncated, fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b))), (bytes) => {
        try {
          const id = identityFromCertificate(bytes, { trustDomain: TD, presentedAs: 'connector-client' });
          expect(id.uri).toMatch(/^spiffe:\/\/hospital\.example\/org\/[a-z0-9._-]+\/connector\/[a-z0-9._-]+$/);
        } catch (err) {
          expect(isPosternError(err), String(err)).toBe(true);
        }
      }),
      { numRuns: 1500 },
    );
  });
});
