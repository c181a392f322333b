import ipaddr from 'ipaddr.js';

/**
 * IP addresses and prefixes in one 128-bit space: an IPv4 address a.b.c.d is the IPv4-mapped
 * IPv6 address ::ffff:a.b.c.d, so `[::ffff:127.0.0.1]` and `127.0.0.1` are the same address and
 * an IPv4 CIDR is an IPv6 prefix of length 96 + n. Matching compares bits, never strings.
 */
export interface IpAddress {
  readonly kind: 'ipv4' | 'ipv6';
  /** 16 bytes; IPv4 addresses in IPv4-mapped form. */
  readonly bytes: Uint8Array;
  /** Canonical text: dotted quad for IPv4, RFC 5952 for IPv6 (no brackets). */
  readonly text: string;
}

export interface IpPrefix {
  readonly kind: 'ipv4' | 'ipv6';
  /** Network address, 16 bytes, host bits zero. */
  readonly bytes: Uint8Array;
  /** Prefix length in the 128-bit space (IPv4 /n is 96 + n). */
  readonly bits: number;
  /** Canonical text: `10.0.0.0/8`, `fd00::/8`; a full-length prefix is written as the bare address. */
  readonly text: string;
}

const MAPPED_PREFIX = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

function isMapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 12; i++) if (bytes[i] !== MAPPED_PREFIX[i]) return false;
  return true;
}

function fromBytes(bytes: Uint8Array): IpAddress {
  if (isMapped(bytes)) {
    return { kind: 'ipv4', bytes, text: `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}` };
  }
  return { kind: 'ipv6', bytes, text: ipaddr.fromByteArray([...bytes]).toString() };
}

function toBytes(addr: ipaddr.IPv4 | ipaddr.IPv6): Uint8Array {
  const raw = addr.toByteArray();
  if (raw.length === 16) return Uint8Array.from(raw);
  const out = new Uint8Array(16);
  out.set(MAPPED_PREFIX, 0);
  out.set(raw, 12);
  return out;
}

/**
 * IPv4 in every spelling inet_aton and URL parsers accept: dotted, short (`127.1`), one
 * integer (`2130706433`), octal (`0177.0.0.1`), hex (`0x7f.1`). Undefined when not an IPv4
 * literal. The caller has already restricted the characters to [0-9a-fx.].
 */
export function parseIpv4Any(text: string): IpAddress | undefined {
  if (!ipaddr.IPv4.isValid(text)) return undefined;
  return fromBytes(toBytes(ipaddr.IPv4.parse(text)));
}

/** An IPv6 literal without brackets and without a zone; IPv4-mapped addresses come back as IPv4. */
export function parseIpv6(text: string): IpAddress | undefined {
  const hex = hexOnlyIpv6(text);
  if (hex === undefined || hex.includes('%') || !ipaddr.IPv6.isValid(hex)) return undefined;
  return fromBytes(toBytes(ipaddr.IPv6.parse(hex)));
}

/**
 * Rewrite a trailing dotted IPv4 part (`::ffff:1.2.3.4`) as two hex groups, as RFC 4291 and
 * the WHATWG URL parser read it: four decimal numbers 0-255 without leading zeros. ipaddr.js
 * is not used for this part because it reads `::1.2.3.4` as `::ffff:1.2.3.4` (another address)
 * and accepts hex and leading-zero octets there.
 */
function hexOnlyIpv6(text: string): string | undefined {
  const dot = text.indexOf('.');
  if (dot === -1) return text;
  const colon = text.lastIndexOf(':');
  if (colon === -1 || colon > dot) return undefined;
  const octets = text.slice(colon + 1).split('.');
  if (octets.length !== 4) return undefined;
  const values: number[] = [];
  for (const octet of octets) {
    if (octet === '' || octet.length > 3 || (octet.length > 1 && octet.startsWith('0'))) return undefined;
    for (const c of octet) if (c < '0' || c > '9') return undefined;
    const value = Number(octet);
    if (value > 255) return undefined;
    values.push(value);
  }
  const [a, b, c, d] = values as [number, number, number, number];
  return `${text.slice(0, colon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}

/**
 * An address as the operating system reports it (dns.lookup, socket.remoteAddress): plain
 * dotted IPv4 or IPv6, possibly with a zone (which does not change the address bytes).
 * Undefined when it is neither.
 */
export function parseSystemAddress(text: string): IpAddress | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return fromBytes(toBytes(ipaddr.IPv4.parse(text)));
  const percent = text.indexOf('%');
  if (percent === text.length - 1) return undefined;
  return parseIpv6(percent === -1 ? text : text.slice(0, percent));
}

/** Whether the first `bits` bits of `a` and `b` are equal. */
export function samePrefix(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  const whole = bits >> 3;
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false;
  const rest = bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((a[whole]! ^ b[whole]!) & mask) === 0;
}

export function prefixContains(prefix: IpPrefix, addr: IpAddress): boolean {
  return samePrefix(prefix.bytes, addr.bytes, prefix.bits);
}

/**
 * A prefix from an address and a length written in that address's family (0–32 for IPv4,
 * 0–128 for IPv6). An IPv6 prefix that lies inside ::ffff:0:0/96 becomes the IPv4 prefix it is.
 * Returns a reason string instead when host bits are set: `10.0.0.1/8` is refused rather than
 * silently widened, since it usually hides a typo.
 */
export function makePrefix(addr: IpAddress, familyBits: number, family: 'ipv4' | 'ipv6'): IpPrefix | string {
  const bits = family === 'ipv4' ? familyBits + 96 : familyBits;
  const network = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    network[i] = addr.bytes[i]! & ((0xff << (8 - keep)) & 0xff);
  }
  if (!samePrefix(network, addr.bytes, 128)) {
    return `host bits are set (the network of /${familyBits} is ${fromBytes(network).text})`;
  }
  const base = fromBytes(network);
  const asV4 = bits >= 96 && isMapped(network);
  const kind = asV4 ? 'ipv4' : 'ipv6';
  const shown = asV4 ? bits - 96 : bits;
  const text = bits === 128 ? base.text : `${base.text}/${shown}`;
  return { kind, bytes: network, bits, text };
}
