import { TargetError } from '../errors.js';
import { makePrefix, prefixContains, type IpPrefix } from './ip.js';
import {
  canonicalHost, parseBracketedHost, parsePort, printable, quote, splitHostPort, targetAddress,
  type CanonicalHost, type Fail, type Target,
} from './target.js';

export type HostPattern =
  /** Exactly this canonical name. */
  | { readonly kind: 'name'; readonly name: string }
  /** Any name strictly under `suffix` (`*.db.internal` matches `a.db.internal`, not `db.internal`). */
  | { readonly kind: 'suffix'; readonly suffix: string }
  /** Any IP address inside the prefix (a single address is a full-length prefix). */
  | { readonly kind: 'ip'; readonly prefix: IpPrefix };

export interface PortRange {
  readonly lo: number;
  readonly hi: number;
  /** Written as `*`: every port, on purpose. */
  readonly any: boolean;
}

export interface TargetPattern {
  /** The text as written. */
  readonly source: string;
  /** The canonical spelling (`postgres.internal:5432`, `10.0.0.0/8:5432-5440`, `[fd00::/8]:*`). */
  readonly canonical: string;
  readonly host: HostPattern;
  readonly ports: PortRange;
}

/**
 * Compile one target pattern (grammar in docs/policy.md). There is no host-wide wildcard and
 * no empty pattern: every pattern names a host, a `*.suffix` or an IP prefix, and a port, a port
 * range or an explicit `*`. Throws TargetError POSTERN_ERR_TARGET_PATTERN_INVALID.
 */
export function compileTargetPattern(text: string): TargetPattern {
  const fail: Fail = (why) => {
    throw new TargetError('POSTERN_ERR_TARGET_PATTERN_INVALID', `target pattern ${quote(String(text))} is invalid: ${why}`, {
      details: { pattern: printable(String(text)), why },
    });
  };
  if (typeof text !== 'string') fail('it is not a string');
  const { host, bracketed, port } = splitHostPort(text, fail);
  const hostPattern = bracketed ? bracketedHostPattern(host, fail) : plainHostPattern(host, fail);
  const ports = portRange(port, fail);
  return Object.freeze({ source: text, canonical: `${hostText(hostPattern)}:${portText(ports)}`, host: hostPattern, ports });
}

/** Whether `target` (canonical, from parseTarget) falls under `pattern`. */
export function matches(pattern: TargetPattern, target: Target): boolean {
  if (target.port < pattern.ports.lo || target.port > pattern.ports.hi) return false;
  const host = pattern.host;
  switch (host.kind) {
    case 'name':
      return target.kind === 'dns' && target.host === host.name;
    case 'suffix':
      // Both sides are canonical names, so a dot before the suffix means a whole-label match.
      return target.kind === 'dns' && target.host.length > host.suffix.length + 1
        && target.host.endsWith(host.suffix) && target.host[target.host.length - host.suffix.length - 1] === '.';
    case 'ip': {
      const addr = targetAddress(target);
      return addr !== undefined && prefixContains(host.prefix, addr);
    }
  }
}

/** The first pattern of `patterns` that `target` falls under. */
export function firstMatch(patterns: readonly TargetPattern[], target: Target): TargetPattern | undefined {
  for (const pattern of patterns) if (matches(pattern, target)) return pattern;
  return undefined;
}

function plainHostPattern(host: string, fail: Fail): HostPattern {
  if (host === '*') fail('"*" as the host would match every host; list hosts, a *.suffix or a CIDR');
  if (host.startsWith('*.')) {
    const rest = host.slice(2);
    if (rest.includes('*')) fail('a wildcard may only be the whole leftmost label ("*.suffix")');
    const suffix = canonicalHost(rest, fail);
    if (suffix.kind !== 'dns') fail(`the suffix after "*." must be a DNS name, not the IP address ${suffix.addr.text}`);
    return { kind: 'suffix', suffix: suffix.name };
  }
  if (host.includes('*')) fail('a wildcard may only be the whole leftmost label ("*.suffix")');
  const slash = host.indexOf('/');
  if (slash !== -1) {
    const base = canonicalHost(host.slice(0, slash), fail);
    if (base.kind !== 'ipv4') fail('a "/length" prefix needs an IPv4 address (write IPv6 prefixes as [addr/length])');
    return ipPattern(base, prefixLength(host.slice(slash + 1), 32, fail), 'ipv4', fail);
  }
  const parsed = canonicalHost(host, fail);
  return parsed.kind === 'dns' ? { kind: 'name', name: parsed.name } : ipPattern(parsed, 32, 'ipv4', fail);
}

function bracketedHostPattern(inner: string, fail: Fail): HostPattern {
  const slash = inner.indexOf('/');
  const base = parseBracketedHost(slash === -1 ? inner : inner.slice(0, slash), fail);
  const bits = slash === -1 ? 128 : prefixLength(inner.slice(slash + 1), 128, fail);
  return ipPattern(base, bits, 'ipv6', fail);
}

function ipPattern(base: CanonicalHost, bits: number, family: 'ipv4' | 'ipv6', fail: Fail): HostPattern {
  if (base.kind === 'dns') return fail('an IP prefix needs an IP address');
  const prefix = makePrefix(base.addr, bits, family);
  if (typeof prefix === 'string') fail(prefix);
  return { kind: 'ip', prefix };
}

function prefixLength(text: string, max: number, fail: Fail): number {
  const digitsOnly = text !== '' && [...text].every((c) => c >= '0' && c <= '9');
  if (!digitsOnly || (text.length > 1 && text.startsWith('0')) || text.length > 3 || Number(text) > max) {
    fail(`prefix length ${quote(text)} must be a decimal number 0-${max}`);
  }
  return Number(text);
}

function portRange(text: string, fail: Fail): PortRange {
  if (text === '*') return { lo: 1, hi: 65535, any: true };
  const dash = text.indexOf('-');
  if (dash === -1) {
    const port = parsePort(text, fail);
    return { lo: port, hi: port, any: false };
  }
  const lo = parsePort(text.slice(0, dash), fail);
  const hi = parsePort(text.slice(dash + 1), fail);
  if (lo > hi) fail(`port range ${quote(text)} runs backwards`);
  return { lo, hi, any: false };
}

function hostText(host: HostPattern): string {
  switch (host.kind) {
    case 'name': return host.name;
    case 'suffix': return `*.${host.suffix}`;
    case 'ip': return host.prefix.kind === 'ipv6' ? `[${host.prefix.text}]` : host.prefix.text;
  }
}

function portText(ports: PortRange): string {
  if (ports.any) return '*';
  return ports.lo === ports.hi ? String(ports.lo) : `${ports.lo}-${ports.hi}`;
}
