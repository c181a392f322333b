import { z } from 'zod';
import { logSchema, sessionLimitsSchema, tlsFilesSchema, trustDomainSchema } from '../src/config/schemas.js';

const relayUrl = z
  .string()
  .url()
  .refine((u) => u.startsWith('wss://'), 'expected a wss:// URL (the tunnel is always TLS)');

/** connector.yaml — see deployments/examples/connector.yaml and docs/operations.md. */
export const connectorConfigSchema = z.strictObject({
  trustDomain: trustDomainSchema,
  /** Every relay of the pool; the connector holds one tunnel to each. */
  relays: z.array(relayUrl).min(1, 'name at least one relay'),
  /** Outer TLS: the connector certificate presented to the relay, and the relay trust bundle. */
  tls: tlsFilesSchema,
  /**
   * Inner TLS (end to end with agents). Certificate and key default to the outer ones; the
   * trust bundle and CRL may differ (a hospital may keep its own CA for inner TLS).
   */
  inner: z
    .strictObject({
      cert: z.string().min(1).optional(),
      key: z.string().min(1).optional(),
      ca: z.string().min(1).optional(),
      crl: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    })
    .prefault({}),
  /** The targets (and optionally principals) this connector will ever serve: the second key. */
  allowlist: z.strictObject({
    targets: z.array(z.string().min(1)).min(1, 'name at least one target pattern; there is no "allow all" default'),
    principals: z.array(z.string().min(1)).min(1).optional(),
  }),
  dial: z
    .strictObject({
      connectTimeoutMs: z.number().int().positive().default(10_000),
      /** TCP keepalive towards targets, so a dead database host is noticed. */
      keepAliveMs: z.number().int().positive().default(30_000),
    })
    .prefault({}),
  reconnect: z
    .strictObject({
      initialDelayMs: z.number().int().positive().default(250),
      maxDelayMs: z.number().int().positive().default(30_000),
    })
    .prefault({}),
  limits: z
    .strictObject({
      handshakeTimeoutMs: z.number().int().positive().default(10_000),
      innerHandshakeTimeoutMs: z.number().int().positive().default(10_000),
      session: sessionLimitsSchema.prefault({}),
    })
    .prefault({}),
  log: logSchema,
});

export type ConnectorConfig = z.output<typeof connectorConfigSchema>;
