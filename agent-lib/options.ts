import { z } from 'zod';
import { sessionLimitsSchema, tlsFilesSchema, trustDomainSchema } from '../src/config/schemas.js';
import { proxyConfigSchema } from '../src/net/proxy-config.js';

/** Options of `new Agent(…)` and the `agent` section of agent.yaml. */
export const agentOptionsSchema = z.strictObject({
  trustDomain: trustDomainSchema,
  /** wss:// URL of a relay. */
  relay: z.string().url().refine((u) => u.startsWith('wss://'), 'expected a wss:// URL'),
  /**
   * Other relays of the same pool: a new relay session goes to the next one when a relay drains
   * (GOAWAY, a rolling restart) or cannot be reached.
   */
  relays: z.array(z.string().url().refine((u) => u.startsWith('wss://'), 'expected a wss:// URL')).optional(),
  /** The user or service certificate, used for both the relay and inner TLS. */
  tls: tlsFilesSchema,
  /** Inner trust bundle and CRL when they differ from the outer ones. */
  inner: z
    .strictObject({
      ca: z.string().min(1).optional(),
      crl: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    })
    .prefault({}),
  /**
   * HTTP CONNECT proxy towards the relays: `{ url: http://user:pass@proxy:3128, noProxy: [...] }`,
   * or `false` to ignore the environment. Absent: AgentDeps.env decides (the CLI passes
   * HTTPS_PROXY/NO_PROXY; a library user passes what it wants, nothing by default).
   */
  proxy: proxyConfigSchema.optional(),
  limits: z
    .strictObject({
      handshakeTimeoutMs: z.number().int().positive().default(10_000),
      /** From open request to the connector's "connected": relay, connector and target dial. */
      dialTimeoutMs: z.number().int().positive().default(20_000),
      session: sessionLimitsSchema.prefault({}),
    })
    .prefault({}),
});

export type AgentOptions = z.input<typeof agentOptionsSchema>;
export type ResolvedAgentOptions = z.output<typeof agentOptionsSchema>;
