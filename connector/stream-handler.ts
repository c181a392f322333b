import type { Socket } from 'node:net';
import type { TLSSocket, TlsOptions } from 'node:tls';
import type { AuditLog } from '../src/audit/audit-log.js';
import { PosternError, isPosternError } from '../src/errors.js';
import { identityFromCertificate, type Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import type { PosternMetrics } from '../src/metrics/index.js';
import { StreamError, type IncomingOpen, type MuxStream } from '../src/mux/index.js';
import { watchIdle } from '../src/net/idle.js';
import { readMessage } from '../src/net/read-message.js';
import { splice } from '../src/net/splice.js';
import { certificateRef, peerCertificateDer, type CertificateRef } from '../src/pki/index.js';
import { allowlistDeniedError, checkAllowlist, firstMatch, parseTarget, type CompiledAllowlist, type Target } from '../src/policy/index.js';
import { decodeInnerRequest, encodeInnerResponse, type InnerRequest } from '../src/protocol/inner.js';
import { OpenResult, ResetCode } from '../src/protocol/reasons.js';
import { acceptInnerTls, type InnerSession } from './inner-tls.js';
import { DialError, type TargetDialer } from './target-dialer.js';

/** Counts streams between accept and their inner response; beyond `max` opens are refused. */
export class HandshakeGate {
  private count = 0;

  constructor(readonly max: number) {}

  get active(): number {
    return this.count;
  }

  tryEnter(): boolean {
    if (this.count >= this.max) return false;
    this.count++;
    return true;
  }

  leave(): void {
    this.count--;
  }
}

export interface StreamContext {
  trustDomain: string;
  /** This connector's own identity (from its certificate). */
  self: Identity;
  /** `org/id`, as audit events name connectors. */
  connector: string;
  /** serverTlsOptions of the inner material, allowHalfOpen on. */
  innerTls: TlsOptions;
  /** Bound on the inner handshake, on the inner request after it, and on a refused agent's goodbye. */
  innerTimeoutMs: number;
  allowlist: CompiledAllowlist;
  dial: TargetDialer;
  gate: HandshakeGate;
  audit: AuditLog;
  logger: Logger;
  /** Streams spliced to their target, for the resets after a CRL or allowlist reload. */
  live: Set<ConnectorLiveStream>;
  /** A stream quiet both ways this long is reset with IDLE_TIMEOUT; 0 is off. */
  streamIdleTimeoutMs: number;
  /** Opens by result, their latency, streams open, limits hit, inner handshake failures. */
  metrics: PosternMetrics;
}

/**
 * The OPEN_RESULT each audited refusal reason answers with (as the agent reads it), for
 * postern_streams_total{result}; a reason missing here counts as `unknown`.
 */
export const DENIAL_RESULTS: Readonly<Record<string, number>> = Object.freeze({
  'metadata-invalid': OpenResult.METADATA_INVALID,
  'target-invalid': OpenResult.TARGET_INVALID,
  'allowlist-denied': OpenResult.ALLOWLIST_DENIED,
  'limit-reached': OpenResult.LIMIT_REACHED,
  cancelled: OpenResult.CANCELLED,
  internal: OpenResult.INTERNAL,
  'inner-tls-failed': OpenResult.INNER_TLS_FAILED,
  'identity-mismatch': OpenResult.METADATA_INVALID,
  'target-mismatch': OpenResult.METADATA_INVALID,
  'inner-request-timeout': OpenResult.OPEN_TIMEOUT,
  'inner-request-closed': OpenResult.CANCELLED,
  'inner-request-invalid': OpenResult.METADATA_INVALID,
  'forbidden-address': OpenResult.ALLOWLIST_DENIED,
  'target-refused': OpenResult.TARGET_REFUSED,
  'target-unreachable': OpenResult.TARGET_UNREACHABLE,
  'target-timeout': OpenResult.TARGET_TIMEOUT,
});

/** Why the connector itself cuts a live stream: the RESET code and the audit reason. */
export interface StreamEnd {
  code: number;
  /** Machine-readable: revoked, policy-changed, idle-timeout. */
  reason: string;
  detail: string;
}

/** A stream spliced to its target, as a reload sweep sees it. */
export interface ConnectorLiveStream {
  readonly correlationId: string;
  /** The agent's identity from the inner TLS handshake. */
  readonly identity: Identity;
  /** The agent's inner certificate (serial, issuer), to find it in a reloaded CRL. */
  readonly certificate: CertificateRef;
  readonly target: Target;
  /** Resets the agent's stream with `end.code` and closes the target connection (once); audited. */
  end(end: StreamEnd): void;
}

/** What the audit events of one stream share. */
interface StreamFacts {
  correlationId: string;
  principal: string;
  connector: string;
  target: string;
}

interface Established {
  inner: InnerSession;
  tls: TLSSocket;
  target: Socket;
  identity: Identity;
  certificate: CertificateRef;
}

/**
 * One stream the relay opened on a tunnel (steps 4, 6, 7, 8 of docs/architecture.md). Before
 * accepting: the relay's metadata must name a valid target that the allowlist covers. After:
 * inner TLS 1.3 with the agent; the agent's identity comes from that handshake alone and must
 * equal the principal the relay named; the target the agent names inside TLS must equal the
 * relay's; the allowlist is checked again with the principal; then the target is resolved once,
 * guarded, dialed, and spliced. Every refusal is audited with a specific reason.
 */
export async function handleStream(incoming: IncomingOpen, ctx: StreamContext): Promise<void> {
  const meta = incoming.metadata;
  const rawTarget = meta['target'];
  const claimed = meta['principal'];
  const correlationId = meta['correlation-id'];
  const facts: StreamFacts = { correlationId: correlationId ?? '', principal: claimed ?? '', connector: ctx.connector, target: rawTarget ?? '' };
  const outcome = ctx.metrics.startOpen();
  const deny = (reason: string, detail: string): void => {
    outcome(DENIAL_RESULTS[reason] ?? 'unknown');
    ctx.audit.emit({ event: 'stream.open', ...facts, decision: 'deny', reason, detail });
  };

  if (rawTarget === undefined || claimed === undefined || correlationId === undefined) {
    const missing = (['target', 'principal', 'correlation-id'] as const).filter((k) => meta[k] === undefined);
    const message = `the relay's open lacks metadata ${missing.map((k) => `"${k}"`).join(', ')}`;
    incoming.reject(OpenResult.METADATA_INVALID, message);
    return deny('metadata-invalid', message);
  }
  let target: Target;
  try {
    target = parseTarget(rawTarget);
  } catch (err) {
    if (!isPosternError(err)) throw err;
    incoming.reject(OpenResult.TARGET_INVALID, err.message);
    return deny('target-invalid', err.message);
  }
  facts.target = target.canonical;
  // The first key turned early: the principal is not known before the inner handshake.
  if (!firstMatch(ctx.allowlist.targets, target)) {
    const message = `connector allowlist denied ${target.canonical}: the target is not in the connector allowlist`;
    incoming.reject(OpenResult.ALLOWLIST_DENIED, message);
    return deny('allowlist-denied', message);
  }
  if (!ctx.gate.tryEnter()) {
    ctx.metrics.limitHit('maxConcurrentHandshakes');
    const message = `the connector is busy: ${ctx.gate.max} streams are setting up (limits.maxConcurrentHandshakes)`;
    incoming.reject(OpenResult.LIMIT_REACHED, message);
    return deny('limit-reached', message);
  }

  let established: Established | undefined;
  const startedAt = Date.now();
  try {
    let stream: MuxStream;
    try {
      stream = incoming.accept();
    } catch (err) {
      return deny('cancelled', `the open ended before it was accepted: ${(err as Error).message}`);
    }
    try {
      established = await establish(stream, target, claimed, facts, deny, ctx);
    } catch (err) {
      // A bug, not a refusal: the agent learns INTERNAL rather than waiting for a stream that never answers.
      stream.destroy(Object.assign(new Error('the connector failed internally'), { resetCode: ResetCode.INTERNAL }));
      deny('internal', (err as Error).message);
      throw err;
    }
  } finally {
    ctx.gate.leave();
  }
  if (established) {
    outcome(OpenResult.OK);
    await relay(established, target, facts, startedAt, ctx);
  }
}

async function establish(
  stream: MuxStream,
  target: Target,
  claimed: string,
  facts: StreamFacts,
  deny: (reason: string, detail: string) => void,
  ctx: StreamContext,
): Promise<Established | undefined> {
  const log = ctx.logger;
  // Until TLS wraps it; afterwards the TLS socket forwards the stream's errors to its own listeners.
  stream.on('error', (err) => log.debug({ event: 'stream.error', correlationId: facts.correlationId, err: err.message }, 'stream error'));

  let inner: InnerSession;
  try {
    inner = await acceptInnerTls(stream, ctx.innerTls, { timeoutMs: ctx.innerTimeoutMs, lingerMs: ctx.innerTimeoutMs });
  } catch (err) {
    const e = err as PosternError;
    if (e.code.startsWith('POSTERN_ERR_STREAM_') || e.code.startsWith('POSTERN_ERR_SESSION_')) {
      // The relay reset the stream or the tunnel ended mid-handshake: nobody was refused.
      deny('cancelled', `${e.code}: ${e.message}`);
      return undefined;
    }
    ctx.audit.emit({ event: 'handshake.refused', place: 'inner', code: e.code, reason: e.message });
    ctx.metrics.handshakeFailure('inner', e.code);
    deny('inner-tls-failed', `${e.code}: ${e.message}`);
    return undefined;
  }
  const { tls } = inner;
  tls.on('error', (err) => log.debug({ event: 'inner.error', correlationId: facts.correlationId, err: err.message }, 'inner TLS error'));

  let identity: Identity;
  let der: Buffer;
  try {
    der = peerCertificateDer(tls);
    identity = identityFromCertificate(der, { trustDomain: ctx.trustDomain, presentedAs: 'agent-inner-client', ...(ctx.self.org ? { org: ctx.self.org } : {}) });
  } catch (err) {
    if (!isPosternError(err)) throw err;
    ctx.audit.emit({ event: 'handshake.refused', place: 'inner', code: err.code, reason: err.message, ...subjectOf(err) });
    ctx.metrics.handshakeFailure('inner', err.code);
    deny('inner-tls-failed', `${err.code}: ${err.message}`);
    inner.reset(ResetCode.INNER_TLS_FAILED, err.message);
    tls.destroy();
    return undefined;
  }
  facts.principal = identity.uri;

  if (identity.uri !== claimed) {
    const err = new PosternError(
      'POSTERN_ERR_CONNECTOR_PRINCIPAL_MISMATCH',
      `the relay named principal ${claimed}, but the agent's inner TLS certificate is ${identity.uri}; the stream is refused`,
      { details: { relaySaid: claimed, innerSaid: identity.uri } },
    );
    log.warn({ event: 'stream.mismatch', code: err.code, correlationId: facts.correlationId }, err.message);
    ctx.audit.emit({ event: 'identity.mismatch', correlationId: facts.correlationId, field: 'principal', relaySaid: claimed, innerSaid: identity.uri });
    deny('identity-mismatch', err.message);
    refuse(inner, OpenResult.METADATA_INVALID, err.message, ctx.innerTimeoutMs);
    return undefined;
  }

  let request: InnerRequest;
  try {
    request = await readMessage(tls, decodeInnerRequest, { timeoutMs: ctx.innerTimeoutMs, what: 'inner request' });
  } catch (err) {
    const e = err as PosternError;
    const reason = e.code === 'POSTERN_ERR_INNER_TIMEOUT' ? 'inner-request-timeout' : e.code === 'POSTERN_ERR_INNER_CLOSED' ? 'inner-request-closed' : 'inner-request-invalid';
    deny(reason, `${e.code ?? 'error'}: ${e.message}`);
    inner.reset(reason === 'inner-request-invalid' ? ResetCode.PROTOCOL_ERROR : ResetCode.CANCEL, e.message);
    tls.destroy();
    return undefined;
  }

  let named: Target;
  try {
    named = parseTarget(request.target);
  } catch (err) {
    if (!isPosternError(err)) throw err;
    deny('target-invalid', `inner request: ${err.message}`);
    refuse(inner, OpenResult.TARGET_INVALID, err.message, ctx.innerTimeoutMs);
    return undefined;
  }
  if (named.canonical !== target.canonical) {
    const err = new PosternError(
      'POSTERN_ERR_CONNECTOR_TARGET_MISMATCH',
      `the relay asked for target ${target.canonical}, but the agent named ${named.canonical} inside inner TLS; the stream is refused`,
      { details: { relaySaid: target.canonical, innerSaid: named.canonical } },
    );
    log.warn({ event: 'stream.mismatch', code: err.code, correlationId: facts.correlationId }, err.message);
    ctx.audit.emit({ event: 'identity.mismatch', correlationId: facts.correlationId, field: 'target', relaySaid: target.canonical, innerSaid: named.canonical });
    deny('target-mismatch', err.message);
    refuse(inner, OpenResult.METADATA_INVALID, err.message, ctx.innerTimeoutMs);
    return undefined;
  }

  const check = checkAllowlist(ctx.allowlist, identity, target);
  if (!check.allow) {
    const message = allowlistDeniedError(check, target).message;
    deny('allowlist-denied', message);
    refuse(inner, OpenResult.ALLOWLIST_DENIED, message, ctx.innerTimeoutMs);
    return undefined;
  }

  let socket: Socket;
  let address: string;
  try {
    ({ socket, address } = await ctx.dial(target));
  } catch (err) {
    if (!(err instanceof DialError)) throw err;
    deny(err.reason, err.message);
    refuse(inner, err.result, err.message, ctx.innerTimeoutMs);
    return undefined;
  }
  if (tls.destroyed) {
    // The agent or the relay gave up while the target was being dialed.
    socket.destroy();
    deny('cancelled', `the agent went away while ${target.canonical} was dialed`);
    return undefined;
  }
  tls.write(encodeInnerResponse({ status: OpenResult.OK, message: 'connected' }));
  ctx.audit.emit({ event: 'stream.open', ...facts, decision: 'allow', reason: 'allowlist', detail: `${check.reason}; dialed ${address}` });
  return { inner, tls, target: socket, identity, certificate: certificateRef(der) };
}

/** Splices the inner TLS session with the target socket and audits the close. */
async function relay(e: Established, target: Target, facts: StreamFacts, startedAt: number, ctx: StreamContext): Promise<void> {
  let ended: StreamEnd | undefined;
  const live: ConnectorLiveStream = {
    correlationId: facts.correlationId,
    identity: e.identity,
    certificate: e.certificate,
    target,
    end(end) {
      if (ended || (e.tls.destroyed && e.target.destroyed)) return;
      ended = end;
      ctx.audit.emit({ event: 'stream.reset', correlationId: facts.correlationId, principal: facts.principal, reason: end.reason, detail: end.detail });
      // The RESET carries the reason to the agent; TLS and the target connection go with it.
      e.inner.reset(end.code, end.detail);
      e.tls.destroy();
      e.target.destroy();
    },
  };
  ctx.live.add(live);
  const spliced = ctx.metrics.trackStream(splice(e.tls, e.target, {
    peerFailure: (side, cause) => {
      // The target failed: the agent learns PEER_GONE (not a bare CANCEL) before TLS tears the stream down.
      if (side === 'b') e.inner.reset(ResetCode.PEER_GONE, `target ${target.canonical}: ${cause.message}`);
      return cause;
    },
  }));
  watchIdle([e.tls, e.target], {
    timeoutMs: ctx.streamIdleTimeoutMs,
    onIdle: (idleMs) =>
      live.end({ code: ResetCode.IDLE_TIMEOUT, reason: 'idle-timeout', detail: `no byte either way for ${Math.round(idleMs)} ms (limits.streamIdleTimeoutMs=${ctx.streamIdleTimeoutMs})` }),
  });
  const result = await spliced;
  ctx.live.delete(live);
  // A CANCEL after both close_notify were exchanged ends a complete conversation: an agent whose
  // TLS layer drops the stream on our close_notify, before its own FIN went out, lost no byte.
  const complete = e.tls.readableEnded && e.tls.writableEnded && result.failedSide === 'a' && result.error !== undefined && isCancel(result.error);
  const reason = ended ? ended.reason : result.error && !complete ? `${result.failedSide === 'a' ? 'agent' : 'target'}: ${errorName(result.error)}` : 'closed';
  ctx.audit.emit({
    event: 'stream.close',
    ...facts,
    bytesUp: result.aToB,
    bytesDown: result.bToA,
    durationMs: Date.now() - startedAt,
    reason,
  });
}

function isCancel(err: Error): boolean {
  return err instanceof StreamError && err.remote && err.resetCode === ResetCode.CANCEL;
}

/** Ends the inner session with a refusal status; a refused agent that never closes is cut after `lingerMs`. */
function refuse(inner: InnerSession, status: number, message: string, lingerMs: number): void {
  const { tls } = inner;
  const timer = setTimeout(() => {
    inner.reset(ResetCode.CANCEL, 'the agent did not close the stream after its refusal');
    tls.destroy();
  }, lingerMs).unref();
  tls.once('close', () => clearTimeout(timer));
  tls.end(encodeInnerResponse({ status, message }));
  // Read (and drop) whatever the agent still sends, so its end is seen and the stream closes.
  tls.resume();
}

function errorName(err: Error): string {
  if (isPosternError(err)) return err.code;
  const code = (err as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? code : err.message;
}

function subjectOf(err: PosternError): { subject?: string } {
  const uri = err.details['uri'];
  return typeof uri === 'string' ? { subject: uri } : {};
}
