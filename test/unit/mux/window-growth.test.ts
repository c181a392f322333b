import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { Session, type SessionOptions } from '../../../src/mux/session.js';
import type { MuxStream } from '../../../src/mux/stream.js';
import type { FrameTransport, FrameTransportHandlers } from '../../../src/mux/transport.js';
import { FakeClock, SeededBytes } from '../../helpers/mux.js';

/**
 * Window auto-tuning end to end: two sessions over a simulated WAN link whose time is a fake
 * clock moved 1 ms per step. Each direction transmits `bytesPerMs` (frames wait in a send
 * queue, the transport's bufferedAmount) and delivers `oneWayMs` later, so round trips, the
 * bandwidth-delay product and queueing are those of a real path, and every figure is the
 * same on every run, whatever the machine's load.
 */

const KiB = 1024;
const MiB = 1024 * KiB;

interface LinkOptions {
  oneWayMs: number;
  bytesPerMs: number;
}

class SimEnd implements FrameTransport {
  peer!: SimEnd;
  private handlers: FrameTransportHandlers | undefined;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private readonly wire: Array<{ frame: Buffer; at: number }> = [];
  private allowance = 0;
  private waitingForDrain = false;
  private closed = false;

  constructor(private readonly link: LinkOptions) {}

  get bufferedAmount(): number {
    return this.queued;
  }

  setHandlers(handlers: FrameTransportHandlers): void {
    this.handlers = handlers;
  }

  send(frame: Buffer): void {
    if (this.closed) throw new Error('sim link: send() after close');
    this.queue.push(frame);
    this.queued += frame.length;
    this.waitingForDrain = true;
  }

  close(): void {
    this.shut(undefined);
  }

  destroy(err?: Error): void {
    this.shut(err);
  }

  /** One millisecond of the link: transmit up to bytesPerMs, then deliver what has arrived. */
  tick(now: number): void {
    this.allowance = Math.min(this.allowance + this.link.bytesPerMs, this.link.bytesPerMs);
    while (this.queue.length > 0 && this.allowance > 0) {
      const frame = this.queue.shift()!;
      this.queued -= frame.length;
      this.allowance -= frame.length;
      this.wire.push({ frame, at: now + this.link.oneWayMs });
    }
    if (this.waitingForDrain && this.queued === 0) {
      this.waitingForDrain = false;
      this.handlers?.drain();
    }
    while (this.wire.length > 0 && this.wire[0]!.at <= now && !this.peer.closed) this.peer.handlers?.frame(this.wire.shift()!.frame);
  }

  private shut(err: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.handlers?.close(err);
    // The far end learns it a turn later, as over a real connection.
    setImmediate(() => this.peer.shut(undefined));
  }
}

const QUIET: Partial<SessionOptions> = { pingIntervalMs: 3_000_000, deadPeerTimeoutMs: 3_600_000, openTimeoutMs: 3_000_000 };

function wan(link: LinkOptions, options: Partial<SessionOptions> = {}) {
  const clock = new FakeClock();
  const a = new SimEnd(link);
  const b = new SimEnd(link);
  a.peer = b;
  b.peer = a;
  const client = new Session(a, { role: 'client', clock, ...QUIET, ...options });
  const server = new Session(b, { role: 'server', clock, ...QUIET, maxOpensPerSecond: 1e6, ...options });
  const accepted: MuxStream[] = [];
  server.on('open', (o) => accepted.push(o.accept()));
  let steps = 0;
  /** One millisecond: timers, the link, then every callback that follows (no wall-clock wait). */
  const step = async (): Promise<void> => {
    clock.advance(1);
    steps++;
    a.tick(clock.now());
    b.tick(clock.now());
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
  };
  const runUntil = async (cond: () => boolean, what: string, maxSteps = 60_000, each?: () => void): Promise<void> => {
    for (let i = 0; i < maxSteps; i++) {
      if (cond()) return;
      await step();
      each?.();
    }
    throw new Error(`not within ${maxSteps} simulated ms: ${what}`);
  };
  const open = async (): Promise<{ writer: MuxStream; reader: MuxStream }> => {
    const opening = client.open({ target: 'postgres.internal:5432' });
    let writer: MuxStream | undefined;
    void opening.then((s) => (writer = s));
    const before = accepted.length;
    await runUntil(() => writer !== undefined && accepted.length > before, 'the stream opens');
    return { writer: writer!, reader: accepted[accepted.length - 1]! };
  };
  return { clock, client, server, step, runUntil, open, get ms() { return steps; } };
}

/** Writes `bytes` seeded bytes in 64 KiB writes, honouring backpressure; the digest and a running count. */
function writer(stream: MuxStream, bytes: number, seed = 'wan') {
  const gen = new SeededBytes(seed);
  const hash = createHash('sha256');
  const state = { written: 0, done: false, digest: '' };
  void (async () => {
    for (let left = bytes; left > 0; ) {
      const chunk = gen.next(Math.min(64 * KiB, left));
      hash.update(chunk);
      left -= chunk.length;
      state.written += chunk.length;
      if (!stream.write(chunk)) await new Promise((resolve) => stream.once('drain', resolve));
    }
    stream.end();
    state.digest = hash.digest('hex');
    state.done = true;
  })();
  return state;
}

/** Reads in flowing mode (pause()/resume() stall and restart it); ends its own side at the peer's end. */
function reader(stream: MuxStream) {
  const hash = createHash('sha256');
  const state = { read: 0, ended: false, digest: '' };
  stream.on('data', (d: Buffer) => {
    hash.update(d);
    state.read += d.length;
  });
  stream.once('end', () => {
    state.ended = true;
    state.digest = hash.digest('hex');
    stream.end();
  });
  return state;
}

// 50 ms round trip, 64 KiB per ms (62.5 MiB/s): a bandwidth-delay product of 3.2 MiB.
const PATH: LinkOptions = { oneWayMs: 25, bytesPerMs: 64 * KiB };

const sessions: Session[] = [];
afterEach(() => {
  for (const s of sessions.splice(0)) s.destroy();
});
function track<T extends { client: Session; server: Session }>(w: T): T {
  sessions.push(w.client, w.server);
  return w;
}

describe('receive-window auto-tuning over a simulated 50 ms path', () => {
  async function transfer(bytes: number, options: Partial<SessionOptions>) {
    const w = track(wan(PATH, options));
    const { writer: out, reader: inn } = await w.open();
    const start = w.ms;
    const sent = writer(out, bytes);
    const got = reader(inn);
    let maxWindow = 0;
    await w.runUntil(() => got.ended, 'the transfer ends', 60_000, () => {
      maxWindow = Math.max(maxWindow, inn.receiveWindow);
      expect(w.server.receiveWindowBytes).toBe(w.server.streamCount > 0 ? inn.receiveWindow : 0);
    });
    expect(got.digest).toBe(sent.digest);
    expect(w.client.stats.violations + w.server.stats.violations).toBe(0);
    return { ms: w.ms - start, maxWindow, w };
  }

  it('one stream grows its window to maxWindow and moves 16 MiB several times faster than with a fixed window', async () => {
    const fixed = await transfer(16 * MiB, { maxWindow: 256 * KiB });
    const tuned = await transfer(16 * MiB, {});
    console.info(
      `50 ms path, 62.5 MiB/s: 16 MiB in ${fixed.ms} ms with a fixed 256 KiB window (${((16 * 1000) / fixed.ms).toFixed(1)} MiB/s), ` +
        `${tuned.ms} ms with auto-tuning (${((16 * 1000) / tuned.ms).toFixed(1)} MiB/s), window grew to ${tuned.maxWindow / KiB} KiB`,
    );
    expect(fixed.maxWindow).toBe(256 * KiB);
    // A fixed window moves one window per round trip: ~5 MiB/s here, whatever the link.
    expect(fixed.ms).toBeGreaterThan((16 * MiB * 50) / (256 * KiB) - 100);
    expect(tuned.maxWindow).toBe(4 * MiB); // the default maxWindow, never more
    expect(tuned.ms * 4).toBeLessThan(fixed.ms);
    // Within 2x of the link's own time for the bytes plus a few round trips of growth.
    expect(tuned.ms).toBeLessThan((16 * MiB) / PATH.bytesPerMs + 10 * 50);
    // Streams forgotten: their windows went back to the session's budget.
    await tuned.w.runUntil(() => tuned.w.server.streamCount === 0, 'the stream is forgotten');
    expect(tuned.w.server.receiveWindowBytes).toBe(0);
  });

  it('a slow reader (less than half a window per round trip) never grows its window; a middling one only as far as its pace needs', async () => {
    const w = track(wan(PATH));
    const slow = await w.open();
    const medium = await w.open();
    writer(slow.writer, 64 * MiB, 'slow');
    writer(medium.writer, 64 * MiB, 'medium');
    // The slow reader takes 1 KiB per ms (256 KiB per 5 round trips), the middling one
    // 6 KiB per ms: it needs ~600 KiB to cover two round trips, so 1 MiB, not 4.
    const paces = new Map([
      [slow.reader, 1 * KiB],
      [medium.reader, 6 * KiB],
    ]);
    let slowMax = 0;
    for (let ms = 0; ms < 3_000; ms++) {
      await w.step();
      for (const [r, pace] of paces) r.read(Math.min(pace, r.readableLength));
      slowMax = Math.max(slowMax, slow.reader.receiveWindow);
      expect(slow.reader.readableLength).toBeLessThanOrEqual(slow.reader.receiveWindow);
    }
    expect(slowMax).toBe(256 * KiB);
    expect(medium.reader.receiveWindow).toBeGreaterThan(512 * KiB);
    expect(medium.reader.receiveWindow).toBeLessThanOrEqual(1 * MiB);
    expect(w.server.receiveWindowBytes).toBe(slow.reader.receiveWindow + medium.reader.receiveWindow);
  });

  it('a reader that stalls after its window grew holds at most that window, and its writer at most one write more', async () => {
    const w = track(wan(PATH));
    const { writer: out, reader: inn } = await w.open();
    const sent = writer(out, 256 * MiB, 'stall');
    const got = reader(inn);
    await w.runUntil(() => inn.receiveWindow === 4 * MiB && got.read > 8 * MiB, 'the window grows');
    inn.pause();
    let worstHeld = 0;
    let worstAhead = 0;
    const written = sent.written;
    // Ten round trips: the writer uses what credit it has, then waits.
    for (let i = 0; i < 500; i++) {
      await w.step();
      worstHeld = Math.max(worstHeld, inn.readableLength);
      worstAhead = Math.max(worstAhead, sent.written - got.read);
    }
    expect(sent.written).toBeGreaterThan(written);
    expect(out.credit).toBe(0);
    expect(inn.receiveWindow).toBe(4 * MiB); // a stalled reader makes it grow no further
    // It holds its window, less what was consumed before the stall and not yet granted back.
    expect(worstHeld).toBeLessThanOrEqual(4 * MiB);
    expect(worstHeld).toBeGreaterThanOrEqual(3 * MiB);
    expect(worstAhead).toBeLessThanOrEqual(4 * MiB + 64 * KiB);
    inn.resume();
    await w.runUntil(() => got.read >= 24 * MiB, 'it flows again');
  });

  it('the session bound: 16 fast streams that then stall hold at most maxSessionReceiveBuffer in all, and windows return to it', async () => {
    const budget = 8 * MiB;
    const w = track(wan(PATH, { maxSessionReceiveBuffer: budget }));
    const pairs: Array<{ writer: MuxStream; reader: MuxStream }> = [];
    for (let i = 0; i < 16; i++) pairs.push(await w.open());
    const states = pairs.map((p, i) => ({ sent: writer(p.writer, 64 * MiB, `s${i}`), got: reader(p.reader), p }));
    for (const p of pairs) p.reader.on('error', () => undefined); // the RESET that ends them below
    let worstSum = 0;
    const sumHeld = () => pairs.reduce((n, p) => n + p.reader.readableLength, 0);
    await w.runUntil(() => states.every((s) => s.got.read > 4 * MiB), 'every stream moves 4 MiB', 60_000, () => {
      worstSum = Math.max(worstSum, w.server.receiveWindowBytes);
    });
    expect(pairs.some((p) => p.reader.receiveWindow > 256 * KiB)).toBe(true);
    expect(worstSum).toBeLessThanOrEqual(budget);
    expect(w.server.receiveWindowBytes).toBe(pairs.reduce((n, p) => n + p.reader.receiveWindow, 0));
    // Every reader stalls: together they hold the sum of their windows, within the bound (not 16 × 4 MiB).
    for (const p of pairs) p.reader.pause();
    let worstHeld = 0;
    for (let i = 0; i < 500; i++) {
      await w.step();
      worstHeld = Math.max(worstHeld, sumHeld());
      expect(w.server.receiveWindowBytes).toBeLessThanOrEqual(budget);
    }
    expect(pairs.every((p) => p.writer.credit === 0)).toBe(true);
    expect(worstHeld).toBeLessThanOrEqual(w.server.receiveWindowBytes);
    expect(worstHeld).toBeGreaterThan(w.server.receiveWindowBytes - 16 * 1 * MiB / 4);
    // Streams end: their windows go back, and a new stream may grow to maxWindow again.
    for (const p of pairs) {
      p.writer.destroy();
      p.reader.resume();
    }
    await w.runUntil(() => w.server.streamCount === 0 && w.client.streamCount === 0, 'streams forgotten');
    expect(w.server.receiveWindowBytes).toBe(0);
    const again = await w.open();
    const sent = writer(again.writer, 24 * MiB, 'again');
    const got = reader(again.reader);
    let grew = 0;
    await w.runUntil(() => got.ended, 'the new stream finishes', 60_000, () => {
      grew = Math.max(grew, again.reader.receiveWindow);
    });
    expect(got.digest).toBe(sent.digest);
    expect(grew).toBe(4 * MiB);
    await w.runUntil(() => w.server.streamCount === 0, 'the stream is forgotten');
    expect(w.server.receiveWindowBytes).toBe(0);
  });
});
