import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * Zod fragments shared by the relay, connector and agent configs, so the same field is
 * spelled and validated the same way everywhere.
 */

/** `host:port` or `[v6]:port` for a listening socket; port 0 lets the kernel choose. */
export const listenAddressSchema = z.string().transform((value, ctx) => {
  const parsed = parseListenAddress(value);
  if (!parsed) {
    ctx.addIssue({ code: 'custom', message: `expected "host:port" or "[ipv6]:port" with a port 0-65535, got "${value}"` });
    return z.NEVER;
  }
  return parsed;
});

export interface ListenAddress {
  host: string;
  port: number;
}

export function parseListenAddress(value: string): ListenAddress | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(value);
  if (!m) return undefined;
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  if (m[1] !== undefined && isIP(host) !== 6) return undefined;
  return { host, port };
}

export function formatListenAddress(address: ListenAddress): string {
  return isIP(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

const filePath = z.string().min(1, 'expected a file path');

/** Certificate, key, trust bundle (one or several CAs) and optional CRL files. */
export const tlsFilesSchema = z.strictObject({
  cert: filePath,
  key: filePath,
  ca: filePath,
  crl: z.union([filePath, z.array(filePath).min(1)]).optional(),
});

export type TlsFilesConfig = z.output<typeof tlsFilesSchema>;

/** A lowercase DNS-like trust domain, as `postern pki init --trust-domain` accepts. */
export const trustDomainSchema = z
  .string()
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/, 'expected a lowercase trust domain such as "hospital.example"');

export const logSchema = z
  .strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    format: z.enum(['json', 'pretty']).default('json'),
  })
  .prefault({});

const positiveMs = z.number().int().positive();

/** Limits of one multiplexed session; each has a safe default in the mux layer. */
export const sessionLimitsSchema = z.strictObject({
  maxStreams: z.number().int().positive().optional(),
  maxPendingOpens: z.number().int().positive().optional(),
  maxOpensPerSecond: z.number().positive().optional(),
  openTimeoutMs: positiveMs.optional(),
  initialWindow: z.number().int().positive().optional(),
  maxWindow: z.number().int().positive().optional(),
  maxFrameSize: z.number().int().positive().optional(),
  pingIntervalMs: positiveMs.optional(),
  deadPeerTimeoutMs: positiveMs.optional(),
});

export type SessionLimitsConfig = z.output<typeof sessionLimitsSchema>;
