import type { Readable } from 'node:stream';
import { systemClock, type Clock, type TimerHandle } from '../mux/clock.js';

export interface IdleWatchOptions {
  /** Idle time after which `onIdle` runs once; 0 turns the watch off. */
  timeoutMs: number;
  onIdle: (idleMs: number) => void;
  clock?: Clock;
}

/**
 * Runs `onIdle` once when none of `sources` has delivered a byte for `timeoutMs`: a stream
 * is idle only when it is quiet in BOTH directions (pass the readable of each direction). A
 * chunk only stamps the time; one timer re-arms itself for the time left, so a busy stream
 * costs no timer churn. Stops by itself when every source has closed; returns the stop function.
 */
export function watchIdle(sources: readonly Readable[], o: IdleWatchOptions): () => void {
  if (o.timeoutMs <= 0) return () => undefined;
  const clock = o.clock ?? systemClock;
  let last = clock.now();
  let timer: TimerHandle | undefined;
  let open = sources.length;
  const touch = (): void => {
    last = clock.now();
  };
  const stop = (): void => {
    if (timer !== undefined) clock.clearTimeout(timer);
    timer = undefined;
    for (const source of sources) {
      source.off('data', touch);
      source.off('close', onClose);
    }
  };
  const onClose = (): void => {
    if (--open === 0) stop();
  };
  const check = (): void => {
    const idle = clock.now() - last;
    if (idle >= o.timeoutMs) {
      stop();
      o.onIdle(idle);
      return;
    }
    timer = clock.setTimeout(check, o.timeoutMs - idle);
  };
  for (const source of sources) {
    source.on('data', touch);
    source.once('close', onClose);
  }
  timer = clock.setTimeout(check, o.timeoutMs);
  return stop;
}
