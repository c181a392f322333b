import { z } from 'zod';
import {
  listenAddressSchema, logSchema, sessionLimitsSchema, tlsFilesSchema, trustDomainSchema,
} from '../src/config/schemas.js';

/** relay.yaml — see deployments/examples/relay.yaml and docs/operations.md. */
export const relayConfigSchema = z.strictObject({
  trustDomain: trustDomainSchema,
  /** The one public port for connectors and agents (TLS 1.3 + WebSocket). */
  listen: listenAddressSchema.default({ host: '0.0.0.0', port: 8443 }),
  tls: tlsFilesSchema,
  policy: z.strictObject({ file: z.string().min(1) }),
  limits: z
    .strictObject({
      /** TLS + WebSocket upgrade must complete within this time. */
      handshakeTimeoutMs: z.number().int().positive().default(10_000),
      /** Live WebSocket sessions (connectors + agents) this relay accepts. */
      maxSessions: z.number().int().positive().default(10_000),
      /** Streams a connector answers to open before the relay gives up on it. */
      connectorOpenTimeoutMs: z.number().int().positive().default(15_000),
      session: sessionLimitsSchema.prefault({}),
    })
    .prefault({}),
  log: logSchema,
  /**
   * Auditor's tap: write the first bytes of every spliced stream, both ways, to files in `dir`
   * (relay/tap.ts) to show that the relay forwards only ciphertext. Off unless set.
   */
  tap: z.strictObject({ dir: z.string().min(1), maxBytes: z.number().int().positive().max(16 * 1024 * 1024).default(65_536) }).optional(),
});

export type RelayConfig = z.output<typeof relayConfigSchema>;
