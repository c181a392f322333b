import { isIP } from 'node:net';
import { z } from 'zod';
import { ADMIN_DEFAULT_LISTEN, adminConfigSchema } from '../src/admin/config.js';
import { logSchema, sessionLimitsSchema, tlsFilesSchema, trustDomainSchema } from '../src/config/schemas.js';
import { proxyConfigSchema } from '../src/net/proxy-config.js';

const relayUrl = z
  .string()
  .url()
  .refine((u) => u.startsWith('wss://'), 'expected a wss:// URL (the tunnel is always TLS)');

const positiveMs = z.number().int().positive();

/** connector.yaml — see deployments/examples/connector.yaml and docs/operations.md. */
export const connectorConfigSchema = z.strictObject({
  trustDomain: trustDomainSchema,
  /** Every relay of the pool; the connector holds one tunnel to each. */
  relays: z
    .array(relayUrl)
    .min(1, 'name at least one relay')
    .refine((urls) => new Set(urls).size === urls.length, 'a relay is listed twice'),
  /** Outer TLS: the connector certificate presented to the relay, and the relay trust bundle. */
  tls: tlsFilesSchema,
  /**
   * Inner TLS (end to end with agents). Certificate and key default to the outer ones; the
   * trust bundle defaults to the outer one with its CRL. A separate `ca` takes only its own
   * `crl` (the outer CRL cannot cover another CA).
   */
  inner: z
    .strictObject({
      cert: z.string().min(1).optional(),
      key: z.string().min(1).optional(),
      ca: z.string().min(1).optional(),
      crl: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    })
    .refine((o) => (o.cert === undefined) === (o.key === undefined), 'give "cert" and "key" together, or neither')
    .prefault({}),
  /** The targets (and optionally principals) this connector will ever serve: the second key. */
  allowlist: z.strictObject({
    targets: z.array(z.string().min(1)).min(1, 'name at least one target pattern; there is no "allow all" default'),
    principals: z.array(z.string().min(1)).min(1).optional(),
  }),
  /**
   * Static name → IP address overrides, looked up before DNS (like /etc/hosts). The address
   * still meets the address guard: a name mapped to 127.0.0.1 needs a literal 127.0.0.1
   * allowlist entry.
   */
  hosts: z
    .record(
      z.string().min(1),
      z.string().refine((a) => isIP(a) !== 0, 'expected an IPv4 or IPv6 address'),
    )
    .optional(),
  dial: z
    .strictObject({
      connectTimeoutMs: positiveMs.default(10_000),
      /** TCP keepalive towards targets, so a dead database host is noticed. */
      keepAliveMs: positiveMs.default(30_000),
    })
    .prefault({}),
  reconnect: z
    .strictObject({
      initialDelayMs: positiveMs.default(250),
      maxDelayMs: positiveMs.default(30_000),
      /** A tunnel that stayed up this long starts the next reconnect from initialDelayMs again. */
      resetAfterMs: positiveMs.default(10_000),
      /**
       * For recoveryWindowMs after a tunnel that was up is lost, retries wait at most
       * recoveryMaxDelayMs: a relay restarted (or killed and restarted) is used again within
       * about a second of coming back, instead of after a long backoff step.
       */
      recoveryMaxDelayMs: positiveMs.default(1_000),
      recoveryWindowMs: positiveMs.default(30_000),
    })
    .refine((o) => o.initialDelayMs <= o.maxDelayMs, { message: 'initialDelayMs must not exceed maxDelayMs', path: ['initialDelayMs'] })
    .prefault({}),
  limits: z
    .strictObject({
      /** TCP connect, TLS handshake and WebSocket upgrade to a relay, together. */
      handshakeTimeoutMs: positiveMs.default(10_000),
      /** The inner TLS handshake with an agent; the inner request then has as long again. */
      innerHandshakeTimeoutMs: positiveMs.default(10_000),
      /** Streams between accept and the inner response (handshake, request, dial); more are refused with LIMIT_REACHED. */
      maxConcurrentHandshakes: z.number().int().positive().default(64),
      /** On stop, live streams get this long to finish before they are reset. */
      shutdownGraceMs: positiveMs.default(5_000),
      /**
       * A stream quiet both ways this long is reset with IDLE_TIMEOUT and its target connection
       * closed. 0 (the default) is off: a psql session idle for hours must survive.
       */
      streamIdleTimeoutMs: z.number().int().nonnegative().default(0),
      session: sessionLimitsSchema.prefault({}),
    })
    .prefault({}),
  /**
   * Certificate, key, trust bundle and CRL files are polled this often; a change (a re-signed
   * CRL, a renewed certificate) applies to new tunnels and streams without dropping live ones.
   */
  reload: z
    .strictObject({
      intervalMs: positiveMs.default(2_000),
    })
    .prefault({}),
  /**
   * HTTP CONNECT proxy towards the relays: `{ url: http://user:pass@proxy:3128, noProxy: [...] }`,
   * or `false` to ignore HTTPS_PROXY/NO_PROXY. Absent: those variables decide (docs/operations.md).
   */
  proxy: proxyConfigSchema.optional(),
  log: logSchema,
  /** /healthz, /readyz, /metrics and /v1/status over plain HTTP: loopback by default, `false` for none. */
  admin: adminConfigSchema(ADMIN_DEFAULT_LISTEN.connector),
});

export type ConnectorConfig = z.output<typeof connectorConfigSchema>;
/** What callers may pass: defaults filled in by the schema. */
export type ConnectorConfigInput = z.input<typeof connectorConfigSchema>;
