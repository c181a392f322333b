/**
 * Audit events: the trail an auditor reads. Relay and connector each write their own, linked
 * by the stream's correlation id. Events carry identities and metadata, never payload.
 */
export type AuditEvent =
  | { event: 'tunnel.up'; connector: string; tunnelId: string; remote?: string; relay?: string }
  | { event: 'tunnel.down'; connector: string; tunnelId: string; durationMs: number; reason: string }
  | {
      event: 'stream.open';
      correlationId: string;
      principal: string;
      connector: string;
      target: string;
      decision: 'allow' | 'deny';
      /** The policy rule that decided, absent for default deny and non-policy refusals. */
      ruleId?: string;
      /** Machine-readable reason: rule, default-deny, connector-offline, allowlist-denied, … */
      reason: string;
      detail?: string;
    }
  | {
      event: 'stream.close';
      correlationId: string;
      principal: string;
      connector: string;
      target: string;
      /** Bytes from the agent towards the target. */
      bytesUp: number;
      /** Bytes from the target towards the agent. */
      bytesDown: number;
      durationMs: number;
      reason: string;
    }
  | { event: 'stream.reset'; correlationId: string; principal: string; reason: string; detail?: string }
  | {
      /** The relay's metadata disagrees with what the connector learned end to end. */
      event: 'identity.mismatch';
      correlationId: string;
      field: 'principal' | 'target';
      relaySaid: string;
      innerSaid: string;
    }
  | { event: 'handshake.refused'; place: string; code: string; reason: string; remote?: string; subject?: string };

export type AuditEventName = AuditEvent['event'];

/** Where audit events go: pino always; PostgreSQL optionally. A sink must never throw. */
export interface AuditSink {
  write(event: AuditEvent & { component: string; /** ISO-8601; pino adds its own epoch `time` too. */ at: string }): void;
}
