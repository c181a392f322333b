import { z } from 'zod';
import { ADMIN_DEFAULT_LISTEN, adminConfigSchema } from '../src/admin/config.js';
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
      /**
       * A spliced stream that carries no byte in either direction for this long is reset with
       * IDLE_TIMEOUT. 0 (the default) is off: a psql session idle for hours must survive.
       */
      streamIdleTimeoutMs: z.number().int().nonnegative().default(0),
      /**
       * TCP keepalive on every accepted connection: probes start after this much silence, so
       * the kernel drops a peer that vanished (and a NAT keeps the mapping) even before the
       * mux's PING (limits.session.deadPeerTimeoutMs) runs, e.g. during a stalled upgrade.
       */
      tcpKeepAliveMs: z.number().int().positive().default(30_000),
      session: sessionLimitsSchema.prefault({}),
    })
    .prefault({}),
  /** SIGTERM/SIGINT: GOAWAY everywhere, refuse new sessions and opens, let live streams finish. */
  drain: z
    .strictObject({
      /** Live streams get this long to finish; those left are then reset with DRAIN_TIMEOUT. */
      graceMs: z.number().int().nonnegative().default(30_000),
    })
    .prefault({}),
  /**
   * Certificate, key, trust bundle, CRL and policy files are polled this often (and reloaded on
   * SIGHUP); a change applies without dropping tunnels, and live streams the new CRL or policy
   * no longer allow are reset.
   */
  reload: z
    .strictObject({
      intervalMs: z.number().int().positive().default(2_000),
    })
    .prefault({}),
  log: logSchema,
  /** /healthz, /readyz, /metrics and /v1/status over plain HTTP: loopback by default, `false` for none. */
  admin: adminConfigSchema(ADMIN_DEFAULT_LISTEN.relay),
  /**
   * Auditor's tap: write the first bytes of every spliced stream, both ways, to files in `dir`
   * (relay/tap.ts) to show that the relay forwards only ciphertext. Off unless set.
   */
  tap: z.strictObject({ dir: z.string().min(1), maxBytes: z.number().int().positive().max(16 * 1024 * 1024).default(65_536) }).optional(),
});

export type RelayConfig = z.output<typeof relayConfigSchema>;
