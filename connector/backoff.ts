/**
 * Reconnect delays: exponential backoff with FULL jitter (a delay drawn uniformly from
 * [0, min(maxDelayMs, initialDelayMs · 2^attempt))). Full jitter spreads the reconnects of many
 * connectors after a relay restart over the whole window instead of bunching them at its end.
 * Our own ten lines rather than the exponential-backoff package: the tunnel drives its timers
 * from an injectable clock and never gives up, and the random source must be injectable too.
 */
export interface BackoffOptions {
  initialDelayMs: number;
  maxDelayMs: number;
  /** Uniform in [0, 1); Math.random by default. */
  random?: () => number;
}

export function fullJitterDelay(attempt: number, o: BackoffOptions): number {
  // 2^attempt overflows to Infinity for large attempts; min() keeps the ceiling at maxDelayMs.
  const ceiling = Math.min(o.maxDelayMs, o.initialDelayMs * 2 ** Math.max(0, attempt));
  return Math.floor((o.random ?? Math.random)() * ceiling);
}
