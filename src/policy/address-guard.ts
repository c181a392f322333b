import { PolicyError } from '../errors.js';
import type { CompiledAllowlist } from './allowlist.js';
import { makePrefix, parseIpv4Any, parseIpv6, parseSystemAddress, prefixContains, samePrefix, type IpPrefix } from './ip.js';
import { printable, targetAddress, type Target } from './target.js';

export type ForbiddenClass = 'unspecified' | 'loopback' | 'link-local' | 'multicast' | 'broadcast' | 'cloud-metadata';

export interface ForbiddenBlock {
  readonly name: ForbiddenClass;
  readonly prefix: IpPrefix;
}

export interface AddressCheck {
  readonly allow: boolean;
  readonly reason: string;
  /** The forbidden block the address fell in (allowed or not). */
  readonly block?: ForbiddenClass;
}

/** A built-in prefix written as `addr/len` in its own family. */
function prefixOf(cidr: string): IpPrefix {
  const slash = cidr.indexOf('/');
  const text = cidr.slice(0, slash);
  const family = text.includes(':') ? 'ipv6' : 'ipv4';
  const addr = family === 'ipv6' ? parseIpv6(text) : parseIpv4Any(text);
  const prefix = addr && makePrefix(addr, Number(cidr.slice(slash + 1)), family);
  if (!prefix || typeof prefix === 'string') throw new Error(`bad built-in prefix ${cidr}`);
  return prefix;
}

function block(name: ForbiddenClass, cidr: string): ForbiddenBlock {
  return { name, prefix: prefixOf(cidr) };
}

const IPV4_BLOCKS: readonly ForbiddenBlock[] = [
  block('cloud-metadata', '169.254.169.254/32'), // AWS, GCP, Azure, OCI instance metadata
  block('cloud-metadata', '100.100.100.200/32'), // Alibaba Cloud instance metadata
  block('unspecified', '0.0.0.0/8'),
  block('loopback', '127.0.0.0/8'),
  block('link-local', '169.254.0.0/16'),
  block('multicast', '224.0.0.0/4'),
  block('broadcast', '255.255.255.255/32'),
];

/**
 * The same IPv4 block behind the NAT64 well-known prefix (RFC 6052): a name resolving to
 * 64:ff9b::a9fe:a9fe reaches 169.254.169.254 through the gateway.
 */
function behindNat64(b: ForbiddenBlock): ForbiddenBlock {
  return { name: b.name, prefix: prefixOf(`64:ff9b::${[...b.prefix.bytes.subarray(12)].join('.')}/${b.prefix.bits}`) };
}

/**
 * Addresses a connector never dials unless its allowlist names them: ordered most specific
 * first, so 169.254.169.254 is reported (and must be allowed) as cloud metadata, not merely
 * link-local.
 */
export const FORBIDDEN_BLOCKS: readonly ForbiddenBlock[] = Object.freeze([
  block('cloud-metadata', 'fd00:ec2::254/128'), // AWS instance metadata over IPv6
  ...IPV4_BLOCKS,
  block('unspecified', '::/128'),
  block('loopback', '::1/128'),
  block('link-local', 'fe80::/10'),
  block('multicast', 'ff00::/8'),
  ...IPV4_BLOCKS.map(behindNat64),
]);

/**
 * The connector's last check, on the address it is about to connect to (the one result of its
 * single DNS resolution, or the literal of an IP target). Refuses loopback, link-local,
 * unspecified, multicast, broadcast and cloud-metadata addresses (also behind NAT64) unless an
 * allowlist entry is a literal IP pattern containing the address, lying inside the forbidden
 * block, and covering the target's port: `127.0.0.1:5432` or `127.0.0.0/8:5432` admit
 * loopback, `0.0.0.0/0:*` does not, and `169.254.0.0/16:*` does not admit the metadata address.
 */
export function checkResolvedAddress(address: string, target: Target, allowlist: CompiledAllowlist): AddressCheck {
  const addr = parseSystemAddress(address);
  if (!addr) return { allow: false, reason: `"${printable(address)}" is not an IP address` };
  const literal = targetAddress(target);
  if (target.kind !== 'dns' && (!literal || !samePrefix(literal.bytes, addr.bytes, 128))) {
    return { allow: false, reason: `address ${addr.text} is not the target's own literal ${target.host}` };
  }
  const hits = FORBIDDEN_BLOCKS.filter((b) => prefixContains(b.prefix, addr));
  if (hits.length === 0) return { allow: true, reason: `address ${addr.text} is in no forbidden block` };
  const name = hits[0]!.name;
  const exempt = allowlist.targets.find((p) => p.host.kind === 'ip' && target.port >= p.ports.lo && target.port <= p.ports.hi
    && hits.every((b) => p.host.kind === 'ip' && p.host.prefix.bits >= b.prefix.bits && prefixContains(p.host.prefix, addr)));
  if (exempt) {
    return { allow: true, reason: `address ${addr.text} is ${name}, allowed by the literal allowlist entry ${exempt.canonical}`, block: name };
  }
  return {
    allow: false,
    reason: `${target.canonical} resolved to ${addr.text}, a ${name} address (${hits[0]!.prefix.text}); list it as a literal IP in the connector allowlist to allow it`,
    block: name,
  };
}

/** PolicyError POSTERN_ERR_TARGET_FORBIDDEN_ADDRESS for a refused check. */
export function forbiddenAddressError(check: AddressCheck, target: Target): PolicyError {
  return new PolicyError('POSTERN_ERR_TARGET_FORBIDDEN_ADDRESS', `connector refused to dial ${target.canonical}: ${check.reason}`, {
    details: { target: target.canonical, block: check.block, reason: check.reason },
  });
}
