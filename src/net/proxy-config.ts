/**
 * Which HTTP CONNECT proxy (if any) carries the way to a relay: the `proxy` config section, or
 * the environment (HTTPS_PROXY, NO_PROXY) the CLI passes in. `src/` never reads process.env.
 *
 * Precedence (docs/operations.md, "Outbound proxy"):
 * - `proxy: false`: no proxy, whatever the environment says;
 * - `proxy: { url, noProxy }`: that proxy, with that exception list (default none); the
 *   environment is not read;
 * - no `proxy` section: `https_proxy`, else `HTTPS_PROXY`, with `no_proxy`, else `NO_PROXY`
 *   (lower case first, as curl reads them). An empty variable counts as unset. Relay URLs are
 *   `wss://`, so the https variable applies; HTTP_PROXY and ALL_PROXY are not read.
 *
 * NO_PROXY entries (curl's conventions, plus ports and CIDR ranges), separated by commas or
 * white space, matched without any DNS lookup:
 * - `*` matches every relay;
 * - a name matches itself and every name below it, case-insensitively, trailing dots ignored:
 *   `example.com`, `.example.com` and `*.example.com` all match `example.com` and
 *   `relay.example.com`, never `badexample.com`;
 * - an IP literal (`10.1.2.3`, `::1`, `[::1]`) or CIDR range (`10.0.0.0/8`, `fd00::/8`) matches a
 *   relay URL whose host is an IP literal in it (IPv4-mapped IPv6 counts as IPv4); names never
 *   match IP literals and IP entries never match names;
 * - a `:port` suffix (`relay.example.com:443`, `[::1]:8443`, `10.0.0.0/8:443`) restricts the entry
 *   to that port of the relay URL (443 when the URL names none).
 */
import ipaddr from 'ipaddr.js';
import { isIP } from 'node:net';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { parseProxyUrl, type HttpProxy } from './http-proxy.js';

/** The `proxy` section of connector.yaml and agent.yaml (and of the Agent's options). */
export const proxyConfigSchema = z.union([
  z.literal(false),
  z.strictObject({
    /** http://[user:password@]host:port */
    url: z.string().min(1),
    /** Relay hosts reached directly; see NO_PROXY above for the syntax of each entry. */
    noProxy: z.array(z.string().min(1)).default([]),
  }),
]);

export type ProxyConfig = z.output<typeof proxyConfigSchema>;
export type ProxyConfigInput = z.input<typeof proxyConfigSchema>;

/** A NO_PROXY entry, parsed once. */
export type NoProxyRule =
  | { kind: 'all' }
  | { kind: 'name'; name: string; port?: number }
  | { kind: 'ip'; range: [ipaddr.IPv4 | ipaddr.IPv6, number]; port?: number };

/** The proxy in force and its exceptions, resolved once at start. */
export interface ProxySettings {
  proxy: HttpProxy;
  noProxy: readonly NoProxyRule[];
  /** Where it came from, for logs: `config proxy.url`, `env HTTPS_PROXY`. */
  source: string;
}

/**
 * The proxy settings in force for `config` (already validated by proxyConfigSchema, or
 * undefined when the section is absent) and `env`. Undefined means: dial relays directly.
 * Throws ConfigError naming the config field or the variable; never repeats a password.
 */
export function resolveProxySettings(config: ProxyConfig | undefined, env: Readonly<Record<string, string | undefined>>): ProxySettings | undefined {
  if (config === false) return undefined;
  if (config !== undefined) {
    return {
      proxy: parseProxyUrl(config.url, 'config field "proxy.url"'),
      noProxy: config.noProxy.map((entry, i) => parseNoProxyEntry(entry, `config field "proxy.noProxy.${i}"`)),
      source: 'config proxy.url',
    };
  }
  const urlVar = firstSet(env, ['https_proxy', 'HTTPS_PROXY']);
  if (urlVar === undefined) return undefined;
  const noProxyVar = firstSet(env, ['no_proxy', 'NO_PROXY']);
  return {
    proxy: parseProxyUrl(env[urlVar]!, `env ${urlVar}`),
    noProxy: noProxyVar === undefined ? [] : parseNoProxyList(env[noProxyVar]!, `env ${noProxyVar}`),
    source: `env ${urlVar}`,
  };
}

function firstSet(env: Readonly<Record<string, string | undefined>>, names: readonly string[]): string | undefined {
  return names.find((name) => (env[name] ?? '').trim() !== '');
}

/** A NO_PROXY value: entries separated by commas or white space; empty entries skipped. */
export function parseNoProxyList(value: string, where: string): NoProxyRule[] {
  return value
    .split(/[\s,]+/)
    .filter((entry) => entry !== '')
    .map((entry) => parseNoProxyEntry(entry, where));
}

const PORT = /^\d{1,5}$/;

/** One NO_PROXY entry; see the module comment for the syntax. */
export function parseNoProxyEntry(raw: string, where: string): NoProxyRule {
  const entry = raw.trim();
  const invalid = (why: string): ConfigError =>
    new ConfigError('POSTERN_ERR_CONFIG_INVALID', `${where}: no-proxy entry "${entry.slice(0, 80)}" ${why}`, { details: { where, entry: entry.slice(0, 80) } });
  if (entry === '*') return { kind: 'all' };
  let host = entry;
  let port: number | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  if (bracketed) {
    host = bracketed[1]!;
    if (bracketed[2] !== undefined) port = parsePort(bracketed[2], invalid);
  } else if (isIP(entry) !== 6 && !/^[0-9a-f:.]+\/\d+$/i.test(entry)) {
    // Not a bare IPv6 literal or range, whose colons are not a port separator.
    const colon = entry.lastIndexOf(':');
    if (colon >= 0) {
      const portText = entry.slice(colon + 1);
      if (!PORT.test(portText)) throw invalid('has a port that is not a number');
      port = parsePort(portText, invalid);
      host = entry.slice(0, colon);
    }
  }
  const withPort = <T extends object>(rule: T): T & { port?: number } => (port === undefined ? rule : { ...rule, port });
  if (host.includes('/')) {
    try {
      return withPort({ kind: 'ip' as const, range: ipaddr.parseCIDR(host) });
    } catch {
      throw invalid('is not a valid CIDR range (expected 10.0.0.0/8 or fd00::/8)');
    }
  }
  if (isIP(host) !== 0) {
    const addr = ipaddr.parse(host);
    return withPort({ kind: 'ip' as const, range: [addr, addr.kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number] });
  }
  const name = host.replace(/^\*?\./, '').replace(/\.$/, '').toLowerCase();
  if (name === '' || !/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(name)) throw invalid('is neither "*", a host name, an IP address nor a CIDR range');
  return withPort({ kind: 'name' as const, name });
}

function parsePort(text: string, invalid: (why: string) => Error): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid('has a port outside 1-65535');
  return port;
}

/**
 * The proxy to use for a relay URL (`wss://relay.example.com:443/…`), or undefined when there is
 * none or a NO_PROXY entry matches the URL's host (and port).
 */
export function proxyFor(settings: ProxySettings | undefined, relayUrl: string): HttpProxy | undefined {
  if (!settings) return undefined;
  const url = new URL(relayUrl);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? 443 : Number(url.port);
  return settings.noProxy.some((rule) => noProxyMatches(rule, host, port)) ? undefined : settings.proxy;
}

/** Whether one NO_PROXY rule covers `host` (a name, or an IP literal without brackets) and `port`. */
export function noProxyMatches(rule: NoProxyRule, host: string, port: number): boolean {
  if (rule.kind === 'all') return true;
  if (rule.port !== undefined && rule.port !== port) return false;
  if (rule.kind === 'ip') {
    if (isIP(host) === 0) return false;
    const addr = ipaddr.process(host);
    const [range, bits] = rule.range;
    const base = range.kind() === 'ipv6' && (range as ipaddr.IPv6).isIPv4MappedAddress() ? (range as ipaddr.IPv6).toIPv4Address() : range;
    const baseBits = base === range ? bits : bits - 96;
    return addr.kind() === base.kind() && baseBits >= 0 && addr.match(base, baseBits);
  }
  if (isIP(host) !== 0) return false;
  const name = host.replace(/\.$/, '').toLowerCase();
  return name === rule.name || name.endsWith(`.${rule.name}`);
}
