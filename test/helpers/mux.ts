import { createCipheriv, createHash } from 'node:crypto';
import type { Clock, TimerHandle } from '../../src/mux/clock.js';
import type { FrameTransport, FrameTransportHandlers } from '../../src/mux/transport.js';

/**
 * In-memory FrameTransport pairs for mux tests: ordered, reliable, message-oriented, with a
 * real bufferedAmount and drain, and knobs to make the link slow (bytes per turn) or stall it.
 * Delivery happens in "turns" (one setImmediate each); a turn moves at most `bytesPerTurn`
 * bytes each way, so link time can be counted in turns, independent of the machine's load.
 */
export interface MemoryLinkOptions {
  /** Bytes moved per direction per turn (at least one message). Default: everything queued. */
  bytesPerTurn?: number;
  /** drain fires when bufferedAmount falls to this after having been above it. Default 0. */
  lowWaterMark?: number;
}

export interface MemoryEnd extends FrameTransport {
  /** Bytes / messages this end sent, and bytes / messages delivered to it. */
  readonly sentBytes: number;
  readonly sentFrames: number;
  readonly receivedBytes: number;
  readonly receivedFrames: number;
  readonly closed: boolean;
  /** Close code and reason given to close(), if any. */
  readonly closeCode: number | undefined;
  /** Stop delivering what this end sends (it keeps buffering); resume() delivers again. */
  stall(): void;
  resume(): void;
}

export interface MemoryPair {
  client: MemoryEnd;
  server: MemoryEnd;
  /** Turns in which the link moved at least one message. */
  readonly turns: number;
  /** Destroys both ends if still open. */
  close(): Promise<void>;
}

export function memoryTransportPair(options: MemoryLinkOptions = {}): MemoryPair {
  const bytesPerTurn = options.bytesPerTurn ?? Infinity;
  const lowWaterMark = options.lowWaterMark ?? 0;
  let turns = 0;
  let scheduled = false;
  const ends: MemoryEndImpl[] = [];

  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(turn);
  };

  const turn = () => {
    scheduled = false;
    let moved = false;
    for (const end of ends) moved = end.deliver(bytesPerTurn) || moved;
    if (moved) turns++;
    if (ends.some((end) => end.hasDeliverable())) schedule();
  };

  const a = new MemoryEndImpl(schedule, lowWaterMark);
  const b = new MemoryEndImpl(schedule, lowWaterMark);
  a.peer = b;
  b.peer = a;
  ends.push(a, b);
  return {
    client: a,
    server: b,
    get turns() {
      return turns;
    },
    async close() {
      for (const end of ends) if (!end.closed) end.destroy();
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}

class MemoryEndImpl implements MemoryEnd {
  peer!: MemoryEndImpl;
  sentBytes = 0;
  sentFrames = 0;
  receivedBytes = 0;
  receivedFrames = 0;
  closed = false;
  closeCode: number | undefined;
  private handlers: FrameTransportHandlers | undefined;
  private readonly queue: Buffer[] = [];
  private head = 0;
  private buffered = 0;
  private stalled = false;
  private waitingForDrain = false;
  /** Graceful close requested: deliver what is queued, then close both ends. */
  private closeAfterFlush: { code: number | undefined; reason: string | undefined } | undefined;
  private closeNotified = false;

  constructor(
    private readonly schedule: () => void,
    private readonly lowWaterMark: number,
  ) {}

  get bufferedAmount(): number {
    return this.buffered;
  }

  setHandlers(handlers: FrameTransportHandlers): void {
    this.handlers = handlers;
  }

  send(frame: Buffer): void {
    if (this.closed || this.closeAfterFlush) throw new Error('memory transport: send() after close()/destroy()');
    this.queue.push(frame);
    this.buffered += frame.length;
    this.sentBytes += frame.length;
    this.sentFrames++;
    if (this.buffered > this.lowWaterMark) this.waitingForDrain = true;
    this.schedule();
  }

  close(code?: number, reason?: string): void {
    if (this.closed || this.closeAfterFlush) return;
    this.closeCode = code;
    this.closeAfterFlush = { code, reason };
    this.schedule();
  }

  destroy(err?: Error): void {
    if (this.closed) return;
    this.dropQueue();
    this.closed = true;
    this.notifyClose(err);
    if (!this.peer.closed) {
      this.peer.closed = true;
      this.peer.dropQueue();
      setImmediate(() => this.peer.notifyClose(new Error('memory transport: connection reset by peer')));
    }
  }

  stall(): void {
    this.stalled = true;
  }

  resume(): void {
    this.stalled = false;
    this.schedule();
  }

  hasDeliverable(): boolean {
    return !this.stalled && !this.closed && (this.head < this.queue.length || this.closeAfterFlush !== undefined);
  }

  /** Moves up to `budget` bytes (at least one message) to the peer. True when something moved. */
  deliver(budget: number): boolean {
    if (!this.hasDeliverable()) return false;
    let moved = 0;
    let count = 0;
    while (this.head < this.queue.length && (count === 0 || moved < budget) && !this.closed && !this.peer.closed) {
      const frame = this.queue[this.head]!;
      (this.queue as Array<Buffer | undefined>)[this.head] = undefined;
      this.head++;
      this.buffered -= frame.length;
      moved += frame.length;
      count++;
      this.peer.receivedBytes += frame.length;
      this.peer.receivedFrames++;
      this.peer.handlers?.frame(frame);
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    }
    if (this.waitingForDrain && this.buffered <= this.lowWaterMark && !this.closed) {
      this.waitingForDrain = false;
      this.handlers?.drain();
    }
    if (this.closeAfterFlush && this.head === this.queue.length && !this.closed) {
      const { code, reason } = this.closeAfterFlush;
      this.closed = true;
      this.notifyClose(undefined);
      if (!this.peer.closed) {
        this.peer.closed = true;
        this.peer.dropQueue();
        const err = code === undefined || code === 1000 ? undefined : new Error(`memory transport: closed by the peer with ${code} ${reason ?? ''}`);
        this.peer.notifyClose(err);
      }
    }
    return count > 0;
  }

  private dropQueue(): void {
    this.queue.length = 0;
    this.head = 0;
    this.buffered = 0;
  }

  private notifyClose(err: Error | undefined): void {
    if (this.closeNotified) return;
    this.closeNotified = true;
    this.handlers?.close(err);
  }
}

/** A clock whose time moves only when the test says so; counts its live timers. */
export class FakeClock implements Clock {
  private time = 0;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void; every: number | undefined }>();

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { at: this.time + Math.max(0, ms), fn, every: undefined });
    return id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers.delete(handle as number);
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { at: this.time + Math.max(1, ms), fn, every: Math.max(1, ms) });
    return id;
  }

  clearInterval(handle: TimerHandle): void {
    this.timers.delete(handle as number);
  }

  /** Timers scheduled and not cleared (intervals count until cleared). */
  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, running every timer that falls due, in time order. */
  advance(ms: number): void {
    const target = this.time + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void; every: number | undefined }] | undefined;
      for (const entry of this.timers) if (entry[1].at <= target && (next === undefined || entry[1].at < next[1].at)) next = entry;
      if (next === undefined) break;
      const [id, timer] = next;
      this.time = timer.at;
      if (timer.every === undefined) this.timers.delete(id);
      else timer.at += timer.every;
      timer.fn();
    }
    this.time = target;
  }
}

/** Deterministic pseudo-random bytes: AES-256-CTR keystream keyed by the seed. */
export class SeededBytes {
  private readonly cipher;
  private static readonly zeros = Buffer.alloc(1024 * 1024);

  constructor(seed: string) {
    const key = createHash('sha256').update(seed).digest();
    this.cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  }

  next(n: number): Buffer {
    const out: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const take = Math.min(left, SeededBytes.zeros.length);
      out.push(this.cipher.update(SeededBytes.zeros.subarray(0, take)));
      left -= take;
    }
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }
}
