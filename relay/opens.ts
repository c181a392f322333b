import { randomUUID } from 'node:crypto';
import type { AuditLog } from '../src/audit/audit-log.js';
import { isPosternError } from '../src/errors.js';
import type { Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import type { PosternMetrics } from '../src/metrics/index.js';
import { OpenError, StreamError, type IncomingOpen, type MuxStream } from '../src/mux/index.js';
import { describeOpenResult, OpenResult, ResetCode } from '../src/protocol/reasons.js';
import { authorize, parseTarget, type CompiledPolicy, type Decision, type Target } from '../src/policy/index.js';
import { watchIdle } from '../src/net/idle.js';
import { splice } from '../src/net/splice.js';
import type { CertificateRef } from '../src/pki/index.js';
import type { ConnectorRegistry, Tunnel } from './registry.js';
import { tapStream } from './tap.js';

export interface OpenContext {
  readonly policy: () => CompiledPolicy;
  readonly registry: ConnectorRegistry;
  readonly audit: AuditLog;
  readonly logger: Logger;
  readonly relayIdentity: Identity;
  readonly connectorOpenTimeoutMs: number;
  readonly draining: () => boolean;
  /** Live spliced streams, for status, drain and resets after a policy or CRL change. */
  readonly live: Set<LiveStream>;
  /** Auditor's tap (relay/tap.ts), when enabled. */
  readonly tap?: { dir: string; maxBytes: number } | undefined;
  /** The agent's certificate (serial, issuer), to find its streams when a reloaded CRL revokes it. */
  readonly principalCertificate: CertificateRef;
  /** A stream quiet both ways this long is reset with IDLE_TIMEOUT; 0 is off. */
  readonly streamIdleTimeoutMs: number;
  /** Opens by result, their latency, streams open. */
  readonly metrics: PosternMetrics;
}

/** Why the relay itself cuts a live stream: the RESET code both legs get, and the audit reason. */
export interface StreamEnd {
  code: number;
  /** Machine-readable: revoked, policy-changed, idle-timeout, drain-timeout. */
  reason: string;
  /** For the humans: sent with the RESET and written to the audit trail. */
  detail: string;
}

export interface LiveStream {
  readonly correlationId: string;
  readonly principal: Identity;
  readonly connector: string;
  readonly target: Target;
  readonly ruleId: string | undefined;
  readonly principalCertificate: CertificateRef;
  /** The connector tunnel the stream runs on. */
  readonly tunnel: Tunnel;
  readonly agentStream: MuxStream;
  readonly connectorStream: MuxStream;
  readonly startedAt: number;
  /** Resets both legs with `end.code` (once), audited as stream.reset and in the stream.close reason. */
  end(end: StreamEnd): void;
}

function ignoreError(): void {}

/** The policy's verdict on a live stream after a reload; denied streams are reset POLICY_CHANGED. */
export function decide(policy: CompiledPolicy, s: Pick<LiveStream, 'principal' | 'connector' | 'target'>): Decision {
  return authorize(policy, { principal: s.principal, connector: s.connector, target: s.target }, { explain: false });
}

/**
 * One agent open, decided and spliced: canonicalize the target, ask the policy, find a live
 * tunnel, open the connector leg with metadata only, then splice the two legs as opaque bytes.
 * Every decision is audited with its reason; every refusal reaches the agent with its code.
 */
export async function handleAgentOpen(incoming: IncomingOpen, principal: Identity, ctx: OpenContext): Promise<void> {
  const correlationId = randomUUID();
  const outcome = ctx.metrics.startOpen();
  const connector = incoming.metadata['connector'] ?? '';
  const rawTarget = incoming.metadata['target'] ?? '';
  const base = { correlationId, principal: principal.uri, connector, target: rawTarget };
  const refuse = (result: number, reason: string, message: string, ruleId?: string): void => {
    outcome(result);
    ctx.audit.emit({ event: 'stream.open', ...base, decision: 'deny', reason, detail: message, ...(ruleId ? { ruleId } : {}) });
    incoming.reject(result, message, { 'correlation-id': correlationId });
  };

  if (!connector || !rawTarget) {
    return refuse(OpenResult.METADATA_INVALID, 'metadata-invalid', 'an agent open must carry "connector" and "target" metadata');
  }
  if (ctx.draining()) return refuse(OpenResult.GOING_AWAY, 'draining', 'this relay is draining: reconnect to another relay');

  let target: Target;
  try {
    target = parseTarget(rawTarget);
  } catch (err) {
    if (!isPosternError(err)) throw err;
    return refuse(OpenResult.TARGET_INVALID, 'target-invalid', err.message);
  }
  base.target = target.canonical;

  const decidedWith = ctx.policy();
  const decision = decide(decidedWith, { principal, connector, target });
  if (!decision.allow) {
    // Whether another org owns that id is none of the agent's business: both read "unknown".
    if (decision.reason === 'unknown-connector' || decision.reason === 'org-isolation') {
      return refuse(OpenResult.UNKNOWN_CONNECTOR, decision.reason, `no connector "${connector}" in org ${principal.org}`);
    }
    const why = decision.ruleId ? `denied by rule "${decision.ruleId}"` : `denied (${decision.reason})`;
    return refuse(OpenResult.POLICY_DENIED, decision.reason, `${why}: ${principal.uri} → connector "${connector}" target ${target.canonical}`, decision.ruleId);
  }

  const tunnel = ctx.registry.pick(principal.org ?? '', connector);
  if (!tunnel) return refuse(OpenResult.CONNECTOR_OFFLINE, 'connector-offline', `connector "${connector}" has no live tunnel to this relay`, decision.ruleId);

  // The agent's early data (its inner ClientHello, protocol.md §4) goes on behind our own open:
  // the connector starts the inner handshake as it accepts, one round trip sooner. At most
  // EARLY_DATA_BYTES, which is also the early credit of the connector leg. Counted for the
  // close audit; the bytes themselves are kept only for the auditor's tap.
  const early: { bytes: number; chunks: Buffer[] | undefined } = { bytes: 0, chunks: ctx.tap ? [] : undefined };
  let connectorStream: MuxStream;
  try {
    const opening = tunnel.session.openStream(
      { target: target.canonical, principal: principal.uri, 'correlation-id': correlationId },
      { signal: incoming.signal, timeoutMs: ctx.connectorOpenTimeoutMs },
    );
    // A failed open rejects `opened` with the same error: that is where it is handled. A
    // module-level function: a closure made here would keep this whole frame alive with the stream.
    opening.stream.on('error', ignoreError);
    incoming.forwardEarlyData((chunk) => {
      early.bytes += chunk.length;
      early.chunks?.push(chunk);
      opening.stream.write(chunk);
    });
    connectorStream = await opening.opened;
    connectorStream.off('error', ignoreError);
  } catch (err) {
    if (incoming.signal.aborted) {
      outcome(OpenResult.CANCELLED);
      ctx.audit.emit({ event: 'stream.open', ...base, decision: 'deny', reason: 'cancelled', detail: 'the agent gave up before the connector answered', ruleId: decision.ruleId });
      return;
    }
    if (err instanceof OpenError) {
      const info = describeOpenResult(err.result);
      return refuse(err.result, info.name.toLowerCase().replaceAll('_', '-'), `connector "${connector}": ${err.message}`, decision.ruleId);
    }
    return refuse(OpenResult.CONNECTOR_OFFLINE, 'connector-offline', `connector "${connector}" tunnel failed: ${(err as Error).message}`, decision.ruleId);
  }

  let agentStream: MuxStream;
  try {
    agentStream = incoming.accept({ 'correlation-id': correlationId, relay: ctx.relayIdentity.uri });
  } catch {
    // The agent cancelled or its session ended while the connector answered.
    outcome(OpenResult.CANCELLED);
    connectorStream.destroy(Object.assign(new Error('the agent went away'), { resetCode: ResetCode.PEER_GONE }));
    return;
  }
  ctx.audit.emit({ event: 'stream.open', ...base, decision: 'allow', reason: 'rule', ruleId: decision.ruleId });
  outcome(OpenResult.OK);
  return runLive(ctx, { correlationId, principal, connector, target, ruleId: decision.ruleId, tunnel, agentStream, connectorStream }, base, decidedWith, early);
}

/**
 * The life of an accepted stream, in a scope of its own and without awaiting in the open's
 * frame: the closures a live stream keeps for hours (its end(), the idle watch, the close
 * audit) would otherwise keep everything the open needed (the incoming open with its pending
 * state, signal and timer, the refusal helpers, the context object): about 1 KB of the
 * relay's ~10 KiB per idle stream (bench: relay memory per stream).
 */
function runLive(
  ctx: OpenContext,
  s: Pick<LiveStream, 'correlationId' | 'principal' | 'connector' | 'target' | 'ruleId' | 'tunnel' | 'agentStream' | 'connectorStream'>,
  base: { correlationId: string; principal: string; connector: string; target: string },
  decidedWith: CompiledPolicy,
  /** The agent's early data, forwarded with the open: the first bytes agent → connector. */
  early: { bytes: number; chunks: Buffer[] | undefined },
): Promise<void> {
  const { audit, live: liveSet, streamIdleTimeoutMs } = ctx;
  const { correlationId, principal, agentStream, connectorStream } = s;
  // A number for the close audit: the bytes themselves are not kept for the stream's life.
  const earlyBytes = early.bytes;
  let ended: StreamEnd | undefined;
  const live: LiveStream = {
    ...s,
    principalCertificate: ctx.principalCertificate,
    startedAt: Date.now(),
    end(end) {
      if (ended || (agentStream.destroyed && connectorStream.destroyed)) return;
      ended = end;
      audit.emit({ event: 'stream.reset', correlationId, principal: principal.uri, reason: end.reason, detail: end.detail });
      // Both legs at once: each peer learns the relay's own reason, not a PEER_GONE echo.
      connectorStream.reset(end.code, end.detail);
      agentStream.reset(end.code, end.detail);
    },
  };
  liveSet.add(live);
  // A policy reloaded while the connector answered has not seen this stream in its sweep.
  if (ctx.policy() !== decidedWith) {
    const now = decide(ctx.policy(), live);
    if (!now.allow) live.end({ code: ResetCode.POLICY_CHANGED, reason: 'policy-changed', detail: policyChangedDetail(now, live) });
  }
  if (ctx.tap) tapStream(ctx.tap.dir, ctx.tap.maxBytes, correlationId, agentStream, connectorStream, early.chunks);
  const spliced = ctx.metrics.trackStream(splice(agentStream, connectorStream, { peerFailure: (side, cause) => legFailure(side, cause) }));
  watchIdle([agentStream, connectorStream], {
    timeoutMs: streamIdleTimeoutMs,
    onIdle: (idleMs) =>
      live.end({ code: ResetCode.IDLE_TIMEOUT, reason: 'idle-timeout', detail: `no byte either way for ${Math.round(idleMs)} ms (limits.streamIdleTimeoutMs=${streamIdleTimeoutMs})` }),
  });
  return spliced.then((result) => {
    liveSet.delete(live);
    audit.emit({
      event: 'stream.close',
      ...base,
      bytesUp: result.aToB + earlyBytes,
      bytesDown: result.bToA,
      durationMs: Date.now() - live.startedAt,
      reason: ended ? ended.reason : result.error ? closeReason(result.failedSide, result.error) : 'closed',
    });
  });
}

/** Why a reloaded policy no longer allows a live stream, for its RESET and the audit trail. */
export function policyChangedDetail(decision: Decision, s: Pick<LiveStream, 'principal' | 'connector' | 'target'>): string {
  const why = decision.ruleId ? `now denied by rule "${decision.ruleId}"` : `no longer allowed (${decision.reason})`;
  return `policy changed: ${s.principal.uri} → connector "${s.connector}" target ${s.target.canonical} is ${why}`;
}

/**
 * The error the surviving leg is reset with: a RESET the other leg's peer sent is passed on with
 * its code and text (the agent learns "inner TLS refused: certificate revoked" from the
 * connector), anything else becomes PEER_GONE.
 */
function legFailure(side: 'a' | 'b', cause: Error): Error {
  const from = side === 'a' ? 'agent' : 'connector';
  if (cause instanceof StreamError && cause.remote) {
    return Object.assign(new Error(cause.message), { resetCode: cause.resetCode });
  }
  return Object.assign(new Error(`the ${from} leg went away: ${cause.message}`), { resetCode: ResetCode.PEER_GONE });
}

function closeReason(side: 'a' | 'b' | undefined, err: Error): string {
  const leg = side === 'a' ? 'agent' : 'connector';
  const code = isPosternError(err) ? err.code : ((err as NodeJS.ErrnoException).code ?? 'error');
  return `${leg}: ${code}`;
}
