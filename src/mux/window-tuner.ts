import type { Clock } from './clock.js';

/**
 * Receive-window auto-tuning (docs/protocol.md §5): one stream moves at most one window per
 * round trip, so a fixed window caps a stream at window ÷ RTT (256 KiB over 50 ms: 5 MiB/s).
 * A stream's window starts at initialWindow and doubles, up to maxWindow, only while its
 * application consumes fast enough for the window to be the limit; a slow or stalled reader
 * never makes it grow. The rule is the one QUIC implementations use (quic-go's auto-tuning,
 * with a factor 2 instead of 4): once at least half a window has been consumed since the
 * epoch began, the window doubles when, at the pace of that epoch, a whole window would be
 * consumed in less than two round trips. The RTT is the session's latest PING measurement,
 * taken while data flows, so it includes the queues the credit loop goes through.
 */

/** The session's round-trip time, as a tuner sees it. */
export interface RttEstimate {
  /** Latest measured round-trip time (ms); undefined before the first PONG. */
  rttMs(): number | undefined;
  /** Asks the session for a fresh measurement (it sends a PING unless one is on its way). */
  refresh(): void;
}

/**
 * The bound on the sum of a session's receive windows (maxSessionReceiveBuffer). Initial
 * windows are always counted, never refused (they are promised in OPEN / OPEN_RESULT);
 * growth is granted only within the limit, so 1,000 streams that all grew and then stalled
 * hold at most max(limit, their initial windows) in all, not 1,000 × maxWindow.
 */
export class ReceiveBudget {
  private committed = 0;

  constructor(readonly limit: number) {}

  /** Sum of the windows counted now (bytes). */
  get used(): number {
    return this.committed;
  }

  /** Counts a window promised whatever the limit (a stream's initial window). */
  commit(bytes: number): void {
    this.committed += bytes;
  }

  /** Reserves up to `bytes` of growth within the limit; returns how much it reserved (maybe 0). */
  reserve(bytes: number): number {
    const granted = Math.max(0, Math.min(bytes, this.limit - this.committed));
    this.committed += granted;
    return granted;
  }

  release(bytes: number): void {
    this.committed -= bytes;
  }
}

export interface WindowTunerOptions {
  initialWindow: number;
  maxWindow: number;
  clock: Pick<Clock, 'now'>;
  rtt: RttEstimate;
  budget: ReceiveBudget;
}

/** One stream's receive window: its size, and the decision to grow it. */
export class WindowTuner {
  private size: number;
  private readonly maxWindow: number;
  private readonly clock: Pick<Clock, 'now'>;
  private readonly rtt: RttEstimate;
  private readonly budget: ReceiveBudget;
  private epochStart: number;
  private epochBytes = 0;
  private released = false;

  constructor(o: WindowTunerOptions) {
    this.size = o.initialWindow;
    this.maxWindow = o.maxWindow;
    this.clock = o.clock;
    this.rtt = o.rtt;
    this.budget = o.budget;
    this.budget.commit(this.size);
    this.epochStart = this.clock.now();
  }

  /** The current receive window (bytes). */
  get window(): number {
    return this.size;
  }

  /**
   * The application consumed `bytes` more, about to be granted back to the peer. Returns how
   * many bytes the window grows by now (to be granted on top): 0, or up to the current size
   * when the epoch shows the window is the bottleneck, within maxWindow and the budget.
   */
  consumed(bytes: number): number {
    if (this.released || this.size >= this.maxWindow) return 0;
    this.epochBytes += bytes;
    if (this.epochBytes * 2 < this.size) return 0;
    const now = this.clock.now();
    const elapsed = now - this.epochStart;
    const consumed = this.epochBytes;
    this.epochStart = now;
    this.epochBytes = 0;
    const rtt = this.rtt.rttMs();
    // A new sample for the next epoch: the path's queues change as windows grow.
    this.rtt.refresh();
    if (rtt === undefined) return 0;
    // At this epoch's pace a whole window takes elapsed × size ÷ consumed ms; grow below 2 RTT.
    if (elapsed * this.size >= 2 * rtt * consumed) return 0;
    const growth = this.budget.reserve(Math.min(this.size, this.maxWindow - this.size));
    this.size += growth;
    return growth;
  }

  /** Returns the window to the budget: the stream is gone. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.budget.release(this.size);
  }
}
