import type { AuditLog } from '../src/audit/audit-log.js';
import { isPosternError } from '../src/errors.js';
import type { Logger } from '../src/log.js';
import { Session, type Clock, type FrameTransport, type GoAwayInfo, type IncomingOpen, type SessionOptions, type TimerHandle } from '../src/mux/index.js';
import { describeGoAwayReason } from '../src/protocol/reasons.js';
import { fullJitterDelay } from './backoff.js';

export interface TunnelStatus {
  relay: string;
  up: boolean;
  /** ISO-8601 time the live tunnel came up. */
  since?: string;
  /** Streams on this relay's sessions, the live one and any still draining after a GOAWAY. */
  streams: number;
}

export interface RelayTunnelOptions {
  /** The relay URL as configured (logs and status name it so). */
  relay: string;
  /** `org/id` of this connector, for audit events. */
  connector: string;
  /** One connection attempt: resolves with an open transport, rejects with why it failed. */
  connect: () => Promise<FrameTransport>;
  session: Omit<SessionOptions, 'role' | 'clock' | 'logger'>;
  reconnect: {
    initialDelayMs: number;
    maxDelayMs: number;
    resetAfterMs: number;
    /**
     * For `recoveryWindowMs` after a tunnel that was up is lost, retries wait at most this long
     * (a restarted relay is back in seconds; the connector must not sleep through it). Absent:
     * maxDelayMs throughout.
     */
    recoveryMaxDelayMs?: number;
    recoveryWindowMs?: number;
  };
  /** stop(): live streams get this long before they are reset with DRAIN_TIMEOUT. */
  shutdownGraceMs: number;
  onOpen: (incoming: IncomingOpen) => void;
  /** Each new tunnel session, once (the connector counts its bytes). */
  onSession?: (session: Session, transport: FrameTransport) => void;
  clock: Clock;
  random: () => number;
  logger: Logger;
  audit: AuditLog;
  /** Ids unique within the connector, so audit lines of two relays never collide. */
  nextTunnelId: () => string;
}

interface Live {
  readonly session: Session;
  readonly id: string;
  readonly upAt: number;
  readonly since: Date;
}

/**
 * The connector's tunnel to one relay: dials, holds one live session, and redials forever with
 * full-jitter exponential backoff — also when the very first attempt fails. The backoff restarts
 * from initialDelayMs only after a tunnel stayed up resetAfterMs, so a relay that accepts and
 * drops at once is not hammered. After a tunnel that was up is lost (closed or GOAWAY), retries
 * wait at most recoveryMaxDelayMs for recoveryWindowMs, so a relay restarted in seconds is used
 * again within about a second of coming back. A GOAWAY makes it dial a new tunnel at once while
 * the old session finishes its streams. A dead relay is found by the session's keepalive
 * (deadPeerTimeoutMs), which closes the session like any other failure.
 */
export class RelayTunnel {
  private readonly o: RelayTunnelOptions;
  private readonly log: Logger;
  private current: Live | undefined;
  private readonly draining = new Set<Live>();
  private attempt = 0;
  /** When a tunnel that was up was lost (clock time), until a new one is up. */
  private lostAt: number | undefined;
  private retryTimer: TimerHandle | undefined;
  private connecting: Promise<void> | undefined;
  private running = false;

  constructor(o: RelayTunnelOptions) {
    this.o = o;
    this.log = o.logger;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.dial();
  }

  /** Stops redialing; every session sends GOAWAY and closes once its streams end (or the grace ends). */
  async stop(): Promise<void> {
    this.running = false;
    if (this.retryTimer !== undefined) this.o.clock.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    await this.connecting;
    const lives = [...(this.current ? [this.current] : []), ...this.draining];
    await Promise.all(lives.map((live) => this.closeWithin(live.session)));
  }

  /**
   * Graceful close bounded twice: streams get shutdownGraceMs, then the WebSocket close
   * handshake as long again before the transport is torn down (a dead relay never answers it).
   */
  private async closeWithin(session: Session): Promise<void> {
    const { clock, shutdownGraceMs } = this.o;
    const timer = clock.setTimeout(() => session.destroy(), 2 * shutdownGraceMs);
    await session.close({ timeoutMs: shutdownGraceMs });
    clock.clearTimeout(timer);
  }

  status(): TunnelStatus {
    let streams = 0;
    for (const live of this.draining) streams += live.session.streamCount;
    if (this.current) streams += this.current.session.streamCount;
    return { relay: this.o.relay, up: this.current !== undefined, ...(this.current ? { since: this.current.since.toISOString() } : {}), streams };
  }

  private dial(): void {
    if (!this.running || this.connecting) return;
    this.retryTimer = undefined;
    // `connecting` is cleared before the outcome is handled, so whatever the outcome schedules
    // (a retry timer, a GOAWAY's redial) never finds a stale attempt in flight.
    this.connecting = this.o
      .connect()
      .then(
        (transport) => {
          this.connecting = undefined;
          this.onConnected(transport);
        },
        (err: unknown) => {
          this.connecting = undefined;
          this.retryLater(err);
        },
      )
      .catch((err: unknown) => {
        // onConnected threw (a bug): count it as a failed attempt rather than stop for good.
        this.connecting = undefined;
        this.log.error({ err, event: 'tunnel.internal', relay: this.o.relay }, 'tunnel set-up failed');
        this.retryLater(err);
      });
  }

  private onConnected(transport: FrameTransport): void {
    if (!this.running) {
      transport.destroy();
      return;
    }
    const { clock, logger } = this.o;
    const session = new Session(transport, { ...this.o.session, role: 'client', clock, logger });
    const live: Live = { session, id: this.o.nextTunnelId(), upAt: clock.now(), since: new Date() };
    this.current = live;
    this.lostAt = undefined;
    session.on('open', (incoming) => this.o.onOpen(incoming));
    this.o.onSession?.(session, transport);
    session.once('goaway', (info) => this.onGoAway(live, info));
    session.once('close', (err) => this.onClosed(live, err));
    this.log.info({ event: 'tunnel.up', relay: this.o.relay, tunnelId: live.id }, `tunnel to ${this.o.relay} up`);
    this.o.audit.emit({ event: 'tunnel.up', connector: this.o.connector, tunnelId: live.id, relay: this.o.relay });
  }

  private onGoAway(live: Live, info: GoAwayInfo): void {
    const reason = describeGoAwayReason(info.reason).name;
    this.log.info(
      { event: 'tunnel.goaway', relay: this.o.relay, tunnelId: live.id, reason, message: info.message },
      `relay ${this.o.relay} sent GOAWAY (${reason}): opening a new tunnel, the old one finishes its streams`,
    );
    if (this.current === live) {
      this.current = undefined;
      this.lostAt ??= this.o.clock.now();
      this.draining.add(live);
    }
    // Our own GOAWAY, then the transport closes as soon as the last stream has ended.
    void live.session.close();
    // A relay being deployed refuses the redial for a while: back off from the start, not from
    // where failures long before this stable tunnel left the counter.
    if (this.o.clock.now() - live.upAt >= this.o.reconnect.resetAfterMs) this.attempt = 0;
    if (this.retryTimer !== undefined) this.o.clock.clearTimeout(this.retryTimer);
    this.dial();
  }

  private onClosed(live: Live, err: Error | undefined): void {
    this.draining.delete(live);
    if (this.current === live) {
      this.current = undefined;
      this.lostAt ??= this.o.clock.now();
    }
    const upMs = this.o.clock.now() - live.upAt;
    const code = errorCode(err);
    const reason = err ? `${code}: ${err.message}` : 'closed';
    this.log[err && this.running ? 'warn' : 'info'](
      { event: 'tunnel.down', relay: this.o.relay, tunnelId: live.id, reason, ...(err ? { code } : {}), upMs: Math.round(upMs) },
      `tunnel to ${this.o.relay} down`,
    );
    this.o.audit.emit({ event: 'tunnel.down', connector: this.o.connector, tunnelId: live.id, durationMs: Math.round(upMs), reason });
    if (!this.running) return;
    if (upMs >= this.o.reconnect.resetAfterMs) this.attempt = 0;
    // After a GOAWAY the replacement is already live, dialing or scheduled.
    if (this.current === undefined && this.connecting === undefined && this.retryTimer === undefined) this.retryLater(err);
  }

  private retryLater(err: unknown): void {
    if (!this.running) return;
    const attempt = this.attempt++;
    const { recoveryMaxDelayMs, recoveryWindowMs } = this.o.reconnect;
    const recovering = this.lostAt !== undefined && recoveryMaxDelayMs !== undefined && this.o.clock.now() - this.lostAt < (recoveryWindowMs ?? 0);
    const maxDelayMs = recovering ? Math.min(this.o.reconnect.maxDelayMs, recoveryMaxDelayMs) : this.o.reconnect.maxDelayMs;
    const delayMs = fullJitterDelay(attempt, { ...this.o.reconnect, maxDelayMs, random: this.o.random });
    const message = err instanceof Error ? err.message : 'the tunnel closed';
    this.log.warn(
      { event: 'tunnel.retry', relay: this.o.relay, delayMs, attempt: attempt + 1, error: errorCode(err), reason: message },
      `tunnel to ${this.o.relay}: retrying in ${delayMs} ms`,
    );
    this.retryTimer = this.o.clock.setTimeout(() => this.dial(), delayMs);
  }
}

function errorCode(err: unknown): string {
  if (err === undefined) return 'POSTERN_ERR_SESSION_CLOSED';
  if (isPosternError(err)) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'POSTERN_ERR_INTERNAL';
}
