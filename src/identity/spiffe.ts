import { IdentityError, PkiError } from '../errors.js';

export type Role = 'relay' | 'connector' | 'user' | 'service';
export const ROLES: readonly Role[] = ['relay', 'connector', 'user', 'service'];

export interface SpiffeId {
  trustDomain: string;
  role: Role;
  /** Absent for relays, which belong to no org. */
  org?: string;
  name: string;
  uri: string;
}

/** SPIFFE caps an ID at 2048 bytes; a longer URI SAN is refused before any other parsing. */
export const MAX_SPIFFE_ID_LENGTH = 2048;
/** Longest org/name segment: keeps subjects within the 64-character CN limit. */
export const MAX_SEGMENT_LENGTH = 64;
const MAX_TRUST_DOMAIN_LENGTH = 253;

const SEGMENT = /^[a-z0-9][a-z0-9._-]*$/;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function isRole(value: string): value is Role {
  return (ROLES as readonly string[]).includes(value);
}

/** Why `td` is not a valid trust domain, or undefined when it is one. */
export function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return 'it is empty';
  if (td.length > MAX_TRUST_DOMAIN_LENGTH) return `it is longer than ${MAX_TRUST_DOMAIN_LENGTH} characters`;
  if (td !== td.toLowerCase()) return 'it must be lowercase';
  for (const label of td.split('.')) {
    if (!DNS_LABEL.test(label)) return `label "${label}" is not a DNS label of [a-z0-9-]`;
  }
  return undefined;
}

/** Why `segment` is not a valid org/name segment, or undefined when it is one. */
export function segmentProblem(segment: string): string | undefined {
  if (segment.length === 0) return 'it is empty';
  if (segment.length > MAX_SEGMENT_LENGTH) return `it is longer than ${MAX_SEGMENT_LENGTH} characters`;
  if (!SEGMENT.test(segment)) return 'it must match [a-z0-9][a-z0-9._-]* (lowercase, no "/", no leading ".")';
  return undefined;
}

/** Throws POSTERN_ERR_PKI_INVALID_NAME naming `field` when the trust domain is invalid. */
export function assertTrustDomain(td: string, field = 'trust domain'): void {
  const problem = trustDomainProblem(td);
  if (problem) throw new PkiError('POSTERN_ERR_PKI_INVALID_NAME', `${field} "${td}" is invalid: ${problem}`, { details: { field, value: td } });
}

/** Throws POSTERN_ERR_PKI_INVALID_NAME naming `field` when the org/name segment is invalid. */
export function assertSegment(segment: string, field: string): void {
  const problem = segmentProblem(segment);
  if (problem) throw new PkiError('POSTERN_ERR_PKI_INVALID_NAME', `${field} "${segment}" is invalid: ${problem}`, { details: { field, value: segment } });
}

/** Builds the SPIFFE ID URI of an identity, validating every part (POSTERN_ERR_PKI_INVALID_NAME). */
export function formatSpiffeId(id: Omit<SpiffeId, 'uri'>): string {
  assertTrustDomain(id.trustDomain);
  if (!isRole(id.role)) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_NAME', `role "${String(id.role)}" is not one of ${ROLES.join(', ')}`, { details: { field: 'role' } });
  }
  assertSegment(id.name, 'name');
  if (id.role === 'relay') {
    if (id.org !== undefined) {
      throw new PkiError('POSTERN_ERR_PKI_INVALID_NAME', `a relay belongs to no org, but org "${id.org}" was given`, { details: { field: 'org' } });
    }
    return `spiffe://${id.trustDomain}/relay/${id.name}`;
  }
  if (id.org === undefined) {
    throw new PkiError('POSTERN_ERR_PKI_INVALID_NAME', `a ${id.role} identity needs an org`, { details: { field: 'org' } });
  }
  assertSegment(id.org, 'org');
  return `spiffe://${id.trustDomain}/org/${id.org}/${id.role}/${id.name}`;
}

function malformed(uri: string, why: string): IdentityError {
  return new IdentityError('POSTERN_ERR_ID_MALFORMED', `SPIFFE ID "${printable(uri)}" is malformed: ${why}`, { details: { uri: printable(uri) } });
}

/** Peer-controlled text in messages and logs: capped and with control characters escaped. */
function printable(text: string): string {
  const cut = text.length > 300 ? `${text.slice(0, 300)}…` : text;
  return cut.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * Parses a SPIFFE ID strictly: `spiffe://TD/relay/NAME` or `spiffe://TD/org/ORG/{connector,user,service}/ID`.
 * Anything else (other scheme, port or userinfo, escapes, dot segments, query, fragment, unknown
 * layout) is refused rather than normalized, so one identity has exactly one spelling.
 */
export function parseSpiffeId(uri: string, expectedTrustDomain?: string): SpiffeId {
  if (typeof uri !== 'string') throw new IdentityError('POSTERN_ERR_ID_NOT_SPIFFE', 'the URI SAN is not a string');
  if (uri.length > MAX_SPIFFE_ID_LENGTH) throw malformed(uri, `longer than ${MAX_SPIFFE_ID_LENGTH} characters`);
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(uri)?.[1];
  if (scheme === undefined || scheme.toLowerCase() !== 'spiffe') {
    throw new IdentityError('POSTERN_ERR_ID_NOT_SPIFFE', `URI SAN "${printable(uri)}" is not a spiffe:// URI`, { details: { uri: printable(uri) } });
  }
  if (scheme !== 'spiffe') throw malformed(uri, 'the scheme must be lowercase "spiffe"');
  if (!uri.startsWith('spiffe://')) throw malformed(uri, 'it must start with "spiffe://"');
  if (uri.includes('?')) throw malformed(uri, 'it carries a query');
  if (uri.includes('#')) throw malformed(uri, 'it carries a fragment');
  if (uri.includes('%')) throw malformed(uri, 'percent-escapes are not allowed');

  const rest = uri.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  if (authority.includes('@')) throw malformed(uri, 'userinfo is not allowed in the trust domain');
  if (authority.includes(':')) throw malformed(uri, 'a port is not allowed in the trust domain');
  const tdProblem = trustDomainProblem(authority);
  if (tdProblem) throw malformed(uri, `trust domain "${printable(authority)}": ${tdProblem}`);

  if (path === '' || path === '/') throw malformed(uri, 'it has no path');
  if (path.endsWith('/')) throw malformed(uri, 'it ends with a slash');
  const segments = path.slice(1).split('/');
  for (const segment of segments) {
    if (segment === '') throw malformed(uri, 'it has an empty path segment');
    if (segment === '.' || segment === '..') throw malformed(uri, `dot segment "${segment}"`);
    const problem = segmentProblem(segment);
    if (problem) throw malformed(uri, `segment "${printable(segment)}": ${problem}`);
  }

  let id: SpiffeId;
  const [first, second, third, fourth] = segments;
  if (segments.length === 2 && first === 'relay') {
    id = { trustDomain: authority, role: 'relay', name: second!, uri };
  } else if (segments.length === 4 && first === 'org' && (third === 'connector' || third === 'user' || third === 'service')) {
    id = { trustDomain: authority, role: third, org: second!, name: fourth!, uri };
  } else {
    throw malformed(uri, 'the path is neither /relay/NAME nor /org/ORG/{connector,user,service}/ID');
  }

  if (expectedTrustDomain !== undefined && authority !== expectedTrustDomain) {
    throw new IdentityError(
      'POSTERN_ERR_ID_WRONG_TRUST_DOMAIN',
      `SPIFFE ID "${uri}" belongs to trust domain "${authority}", expected "${expectedTrustDomain}"`,
      { details: { uri, trustDomain: authority, expected: expectedTrustDomain } },
    );
  }
  return id;
}
