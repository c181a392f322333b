import { domainToASCII } from 'node:url';
import { TargetError } from '../errors.js';
import { parseIpv4Any, parseIpv6, type IpAddress } from './ip.js';

export type TargetKind = 'dns' | 'ipv4' | 'ipv6';

/** A canonical target: the only form policy matching and the connector's dialer ever see. */
export interface Target {
  readonly kind: TargetKind;
  /** Canonical host: lowercase A-label name without trailing dot, dotted-quad IPv4, RFC 5952 IPv6 (no brackets). */
  readonly host: string;
  readonly port: number;
  /** `host:port`, IPv6 as `[addr]:port`. */
  readonly canonical: string;
}

/**
 * Longest input looked at. A canonical target is at most 253 + 1 + 5 characters; the margin
 * leaves room for Unicode names before IDNA, and the cap keeps IDNA work on peer input small.
 */
export const MAX_TARGET_INPUT_LENGTH = 1024;
export const MAX_NAME_LENGTH = 253;
export const MAX_LABEL_LENGTH = 63;

/** Reports why an input is refused; never returns. */
export type Fail = (why: string) => never;

export type CanonicalHost =
  | { readonly kind: 'dns'; readonly name: string }
  | { readonly kind: 'ipv4' | 'ipv6'; readonly addr: IpAddress };

/** Addresses of IP targets made by parseTarget, so matching never re-parses text. */
const addresses = new WeakMap<Target, IpAddress>();

/**
 * Parse a `host:port` target, canonicalizing the host (see docs/policy.md): names are lowercased,
 * lose one trailing dot and become IDNA A-labels; IP literals in any spelling become one address;
 * IPv4-mapped IPv6 is IPv4. Throws TargetError POSTERN_ERR_TARGET_INVALID naming the input and why.
 */
export function parseTarget(input: string): Target {
  const fail: Fail = (why) => {
    throw new TargetError('POSTERN_ERR_TARGET_INVALID', `target ${quote(String(input))} is invalid: ${why}`, {
      details: { input: printable(String(input)), why },
    });
  };
  if (typeof input !== 'string') fail('it is not a string');
  const { host, bracketed, port } = splitHostPort(input, fail);
  const parsed = bracketed ? parseBracketedHost(host, fail) : canonicalHost(host, fail);
  const portNumber = parsePort(port, fail);
  if (parsed.kind === 'dns') {
    return Object.freeze({ kind: 'dns', host: parsed.name, port: portNumber, canonical: `${parsed.name}:${portNumber}` });
  }
  const addr = parsed.addr;
  const canonical = addr.kind === 'ipv6' ? `[${addr.text}]:${portNumber}` : `${addr.text}:${portNumber}`;
  const target: Target = Object.freeze({ kind: addr.kind, host: addr.text, port: portNumber, canonical });
  addresses.set(target, addr);
  return target;
}

/**
 * The address of an IP target, or undefined for a name. A Target built by hand (not by
 * parseTarget) is accepted only when its host is already canonical, so a non-canonical
 * spelling can never match an IP pattern by accident.
 */
export function targetAddress(target: Target): IpAddress | undefined {
  if (target.kind === 'dns') return undefined;
  const known = addresses.get(target);
  if (known) return known;
  const addr = target.kind === 'ipv4' ? parseIpv4Any(target.host) : parseIpv6(target.host);
  return addr && addr.kind === target.kind && addr.text === target.host ? addr : undefined;
}

/**
 * Split `host:port` / `[v6]:port` without interpreting either part. A host holding a colon
 * outside brackets is refused: IPv6 literals must be bracketed so the port is never ambiguous.
 */
export function splitHostPort(input: string, fail: Fail): { host: string; bracketed: boolean; port: string } {
  if (input.length === 0) fail('it is empty');
  if (input.length > MAX_TARGET_INPUT_LENGTH) fail(`it is longer than ${MAX_TARGET_INPUT_LENGTH} characters`);
  if (input.startsWith('[')) {
    const close = input.indexOf(']');
    if (close === -1) fail('"[" opens an IPv6 address but no "]" closes it');
    const after = input.slice(close + 1);
    if (after === '') fail('no port: write [address]:port');
    if (!after.startsWith(':')) fail('"]" must be followed by ":port"');
    return { host: input.slice(1, close), bracketed: true, port: after.slice(1) };
  }
  const colon = input.lastIndexOf(':');
  if (colon === -1) fail('no port: write host:port');
  const host = input.slice(0, colon);
  if (host.includes(':')) fail('an IPv6 address must be written in brackets, e.g. [::1]:5432');
  if (host.includes('[') || host.includes(']')) fail('brackets may only enclose a whole IPv6 address');
  return { host, bracketed: false, port: input.slice(colon + 1) };
}

/** Ports are decimal digits only, 1–65535, without sign or leading zero (one spelling per port). */
export function parsePort(text: string, fail: Fail): number {
  if (text === '') fail('the port is empty');
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) fail(`port ${quote(text)} must be decimal digits only`);
  }
  if (text.length > 1 && text.startsWith('0')) fail(`port ${quote(text)} has a leading zero`);
  if (text.length > 5) fail(`port ${quote(text)} is out of range 1-65535`);
  const port = Number(text);
  if (port < 1 || port > 65535) fail(`port ${quote(text)} is out of range 1-65535`);
  return port;
}

/** The inside of `[...]`: an IPv6 literal, no zone. An IPv4-mapped address comes back as IPv4. */
export function parseBracketedHost(inner: string, fail: Fail): CanonicalHost {
  if (inner === '') fail('the brackets are empty');
  if (inner.includes('%')) fail('an IPv6 zone ("%…") is not allowed in a target');
  for (let i = 0; i < inner.length; i++) {
    const c = inner[i]!;
    if (!(isHexDigit(c) || c === ':' || c === '.')) fail(`character ${quote(c)} cannot appear in an IPv6 address`);
  }
  const addr = parseIpv6(inner);
  if (!addr) fail(`${quote(inner)} is not a valid IPv6 address`);
  return { kind: addr.kind, addr };
}

/**
 * Canonicalize an unbracketed host: a name (lowercase A-labels, one trailing dot removed) or an
 * IPv4 literal in any spelling. A host whose last label is numeric is an IPv4 literal or nothing
 * (as in the WHATWG URL standard): `foo.123` and `1.2.3.999` are refused, never resolved as names.
 */
export function canonicalHost(raw: string, fail: Fail): CanonicalHost {
  if (raw === '') fail('the host is empty');
  let host = raw;
  let unicode = false;
  for (const ch of raw) {
    const code = ch.codePointAt(0)!;
    if (code <= 0x20 || code === 0x7f) {
      fail('the host contains whitespace or a control character');
    } else if (code < 0x80) {
      if (!isNameChar(ch)) fail(`character ${quote(ch)} is not allowed in a host name (letters, digits, ".", "-", "_")`);
    } else if (/\s/u.test(ch)) {
      fail('the host contains whitespace');
    } else {
      unicode = true;
    }
  }
  if (unicode) {
    // Only non-ASCII text reaches the IDNA mapper: ASCII specials were refused above, so the
    // mapper cannot truncate at "/", "?" or "#" nor decode "%" escapes behind our back.
    const mapped = domainToASCII(raw);
    if (mapped === '') fail(`${quote(raw)} is not a valid internationalized domain name (IDNA)`);
    for (const ch of mapped) {
      if (!isNameChar(ch)) fail(`${quote(raw)} maps under IDNA to ${quote(mapped)}, which holds ${quote(ch)}`);
    }
    host = mapped;
  }
  host = host.toLowerCase();
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host === '') fail('the host is only a dot');
  if (host.endsWith('.')) fail('the host ends with more than one dot');
  const labels = host.split('.');
  if (labels.some((label) => label === '')) fail('the host has an empty label ("..")');

  if (looksNumeric(labels[labels.length - 1]!)) {
    const addr = parseIpv4Any(host);
    if (!addr) fail(`${quote(host)} ends in a numeric label but is not a valid IPv4 address`);
    return { kind: 'ipv4', addr };
  }

  if (host.length > MAX_NAME_LENGTH) fail(`the name is longer than ${MAX_NAME_LENGTH} characters`);
  for (const label of labels) {
    if (label.length > MAX_LABEL_LENGTH) fail(`label ${quote(label)} is longer than ${MAX_LABEL_LENGTH} characters`);
    if (label.startsWith('-') || label.endsWith('-')) fail(`label ${quote(label)} starts or ends with "-"`);
  }
  // An A-label (xn--…) must be valid Punycode that IDNA would produce itself.
  if (labels.some((label) => label.startsWith('xn--')) && domainToASCII(host) !== host) {
    fail(`${quote(host)} holds an invalid IDNA A-label ("xn--…")`);
  }
  return { kind: 'dns', name: host };
}

/** The WHATWG "ends in a number" test on the last label: all digits, or 0x followed by hex digits. */
function looksNumeric(label: string): boolean {
  if (label.startsWith('0x')) {
    for (let i = 2; i < label.length; i++) if (!isHexDigit(label[i]!)) return false;
    return true;
  }
  for (let i = 0; i < label.length; i++) {
    const c = label.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

function isHexDigit(c: string): boolean {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/** Letters, digits, "-", "." and "_" (internal hosts and service names use underscores). */
function isNameChar(c: string): boolean {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c === '-' || c === '.' || c === '_';
}

/** Input text as it may appear in a message or a log line: capped, controls and bidi marks escaped. */
export function printable(text: string): string {
  const cut = text.length > 200 ? `${text.slice(0, 200)}…` : text;
  let out = '';
  for (const ch of cut) {
    const code = ch.codePointAt(0)!;
    const unsafe = code < 0x20 || (code >= 0x7f && code <= 0x9f) || (code >= 0x200b && code <= 0x200f) || (code >= 0x202a && code <= 0x202e) || (code >= 0x2066 && code <= 0x2069);
    out += unsafe ? `\\u{${code.toString(16)}}` : ch;
  }
  return out;
}

export function quote(text: string): string {
  return `"${printable(text)}"`;
}
