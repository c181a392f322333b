import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StreamError } from '../../../src/mux/errors.js';
import { MuxStream, type StreamCapabilities, type WindowGrowth } from '../../../src/mux/stream.js';
import { ReceiveBudget, WindowTuner, type RttEstimate } from '../../../src/mux/window-tuner.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A clock and an RTT the test sets by hand; counts the refreshes the tuner asks for. */
function rig(o: { initialWindow?: number; maxWindow?: number; rttMs?: number | undefined; budget?: ReceiveBudget } = {}) {
  let now = 0;
  const rtt = { sample: 'rttMs' in o ? o.rttMs : 50, refreshes: 0 };
  const estimate: RttEstimate = {
    rttMs: () => rtt.sample,
    refresh: () => {
      rtt.refreshes++;
    },
  };
  const budget = o.budget ?? new ReceiveBudget(2 ** 40);
  const tuner = new WindowTuner({ initialWindow: o.initialWindow ?? 256 * KiB, maxWindow: o.maxWindow ?? 4 * MiB, clock: { now: () => now }, rtt: estimate, budget });
  /** The reader consumes `windows` windows in quarter-window grants at `msPerWindow`; returns the windows seen after each grant. */
  const consume = (windows: number, msPerWindow: number): number[] => {
    const seen: number[] = [];
    for (let consumed = 0; consumed < windows * 4; consumed++) {
      const quarter = tuner.window / 4;
      now += msPerWindow / 4;
      const before = tuner.window;
      const growth = tuner.consumed(quarter);
      expect(tuner.window).toBe(before + growth);
      seen.push(tuner.window);
    }
    return seen;
  };
  return { tuner, rtt, budget, consume, advance: (ms: number) => (now += ms) };
}

describe('WindowTuner: when a window grows', () => {
  it('a reader consuming a window per RTT doubles it at each epoch, up to maxWindow and never beyond', () => {
    const { tuner, consume } = rig({ rttMs: 50 });
    const seen = consume(12, 50);
    expect([...new Set(seen)]).toEqual([256 * KiB, 512 * KiB, 1 * MiB, 2 * MiB, 4 * MiB]);
    expect(Math.max(...seen)).toBe(4 * MiB);
    expect(tuner.window).toBe(4 * MiB);
  });

  it('a reader at two RTTs per window or slower never makes it grow', () => {
    const { tuner, consume } = rig({ rttMs: 50 });
    expect(consume(20, 100)).toEqual(Array(80).fill(256 * KiB));
    expect(consume(20, 1_000)).toEqual(Array(80).fill(256 * KiB));
    expect(tuner.window).toBe(256 * KiB);
  });

  it('a reader at a pace between the two grows it only until two RTTs hold a window at that pace', () => {
    // 1.5 MiB per 100 ms (two RTTs): 256 KiB → 512 KiB → 1 MiB → 2 MiB, and 2 MiB is enough.
    const { tuner, advance } = rig({ rttMs: 50 });
    const pace = (1.5 * MiB) / 100; // bytes per ms
    for (let i = 0; i < 400; i++) {
      const quarter = tuner.window / 4;
      advance(quarter / pace);
      tuner.consumed(quarter);
    }
    expect(tuner.window).toBe(2 * MiB);
  });

  it('decides only once half a window has been consumed, and asks for a fresh RTT when it does', () => {
    const { tuner, rtt, advance } = rig({ rttMs: 50 });
    advance(1);
    expect(tuner.consumed(100 * KiB)).toBe(0);
    expect(rtt.refreshes).toBe(0);
    expect(tuner.consumed(28 * KiB)).toBe(256 * KiB); // 128 KiB in 1 ms: grows
    expect(rtt.refreshes).toBe(1);
  });

  it('without an RTT sample (or a zero one, as with a fake clock) it does not grow, but asks for a sample', () => {
    const none = rig({ rttMs: undefined });
    expect(none.consume(4, 1)).toEqual(Array(16).fill(256 * KiB));
    expect(none.rtt.refreshes).toBeGreaterThan(0);
    const zero = rig({ rttMs: 0 });
    expect(zero.consume(4, 0)).toEqual(Array(16).fill(256 * KiB));
    // The sample arrives: the next fast epoch grows.
    none.rtt.sample = 10;
    none.advance(1);
    none.tuner.consumed(64 * KiB);
    expect(none.tuner.consumed(64 * KiB)).toBe(256 * KiB);
    expect(none.tuner.window).toBe(512 * KiB);
  });

  it('a stalled reader consumes nothing and the tuner is never asked; at maxWindow it stops asking for RTTs', () => {
    const { tuner, rtt, consume } = rig({ initialWindow: 1 * MiB, maxWindow: 1 * MiB });
    consume(8, 1);
    expect(tuner.window).toBe(1 * MiB);
    expect(rtt.refreshes).toBe(0);
  });
});

describe('ReceiveBudget: the session-wide bound on growth', () => {
  it('initial windows always count; growth stops at the limit, partially if need be; release gives it back', () => {
    const budget = new ReceiveBudget(1 * MiB);
    const a = rig({ budget });
    const b = rig({ budget });
    expect(budget.used).toBe(512 * KiB);
    a.consume(8, 1); // wants 4 MiB, gets what the budget leaves: 256 KiB + 512 KiB
    expect(a.tuner.window).toBe(768 * KiB);
    expect(budget.used).toBe(1 * MiB);
    b.consume(8, 1);
    expect(b.tuner.window).toBe(256 * KiB);
    // More streams than the limit: their initial windows are granted anyway, growth is not.
    const c = rig({ budget });
    expect(budget.used).toBe(1 * MiB + 256 * KiB);
    c.consume(8, 1);
    expect(c.tuner.window).toBe(256 * KiB);
    a.tuner.release();
    a.tuner.release(); // idempotent
    expect(budget.used).toBe(512 * KiB);
    b.consume(4, 1);
    expect(b.tuner.window).toBe(768 * KiB);
    expect(a.tuner.consumed(1 * MiB)).toBe(0); // released: never grows again
  });

  it('property: windows stay within [initial, max], the budget is the sum of windows and growth never passes the limit', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 0, max: 16 * MiB }),
        fc.array(fc.record({ stream: fc.nat(7), bytes: fc.integer({ min: 1, max: 2 * MiB }), ms: fc.integer({ min: 0, max: 500 }), rtt: fc.option(fc.integer({ min: 0, max: 200 })) }), { maxLength: 200 }),
        (streams, limit, events) => {
          const budget = new ReceiveBudget(limit);
          const rigs = Array.from({ length: streams }, () => rig({ budget, initialWindow: 64 * KiB, maxWindow: 2 * MiB }));
          const initialSum = streams * 64 * KiB;
          for (const e of events) {
            const r = rigs[e.stream % streams]!;
            r.rtt.sample = e.rtt ?? undefined;
            r.advance(e.ms);
            const before = budget.used;
            const growth = r.tuner.consumed(Math.min(e.bytes, r.tuner.window));
            if (growth > 0) expect(budget.used).toBeLessThanOrEqual(Math.max(limit, before));
            expect(r.tuner.window).toBeGreaterThanOrEqual(64 * KiB);
            expect(r.tuner.window).toBeLessThanOrEqual(2 * MiB);
            expect(budget.used).toBe(rigs.reduce((n, x) => n + x.tuner.window, 0));
            expect(budget.used).toBeLessThanOrEqual(Math.max(limit, initialSum));
          }
          for (const r of rigs) r.tuner.release();
          expect(budget.used).toBe(0);
        },
      ),
    );
  });
});

/** Records grants; the tuner is a stub that grows by what the test queues. */
class Recorder implements StreamCapabilities {
  grants: number[] = [];
  resets: number[] = [];
  sendData(): void {}
  sendFin(): void {}
  sendReset(code: number): void {
    this.resets.push(code);
  }
  grantCredit(increment: number): void {
    this.grants.push(increment);
  }
}

function streamWithTuner(receiveWindow: number) {
  const rec = new Recorder();
  const growths: number[] = [];
  const asked: number[] = [];
  const tuner: WindowGrowth = {
    consumed: (bytes) => {
      asked.push(bytes);
      return growths.shift() ?? 0;
    },
  };
  const stream = new MuxStream({ id: 1, metadata: {}, resultMetadata: {}, sendWindow: 0, receiveWindow, windowTuner: tuner }, rec);
  return { rec, stream, growths, asked };
}

describe('MuxStream with a growing window', () => {
  it('the growth rides on the grant of the consumed bytes; the peer may then fill the larger window', () => {
    const { rec, stream, growths, asked } = streamWithTuner(4096);
    stream.receiveData(Buffer.alloc(4096));
    growths.push(4096);
    expect(stream.read(1024)).not.toBeNull();
    expect(asked).toEqual([1024]);
    expect(rec.grants).toEqual([1024 + 4096]);
    expect(stream.receiveWindow).toBe(8192);
    // 3072 unread + 5120 of credit = the new window.
    expect(stream.receiveData(Buffer.alloc(5120))).toBe(true);
    expect(stream.readableLength).toBe(8192);
    // Grants are now batched by a quarter of the new window.
    stream.read(1024);
    expect(rec.grants).toEqual([1024 + 4096]);
    stream.read(1024);
    expect(rec.grants).toEqual([1024 + 4096, 2048]);
  });

  it('a reader that stalls after growth holds at most its grown window: one byte more is a flow-control violation', async () => {
    const { rec, stream, growths } = streamWithTuner(4096);
    stream.receiveData(Buffer.alloc(4096));
    growths.push(4096, 8192);
    stream.read(4096);
    stream.receiveData(Buffer.alloc(8192));
    stream.read(8192);
    expect(stream.receiveWindow).toBe(16384);
    expect(rec.grants).toEqual([4096 + 4096, 8192 + 8192]);
    expect(stream.receiveData(Buffer.alloc(16384))).toBe(true); // the reader stalls from here
    expect(stream.readableLength).toBe(16384);
    const err = new Promise<StreamError>((resolve) => stream.once('error', resolve));
    expect(stream.receiveData(Buffer.alloc(1))).toBe(false);
    expect((await err).code).toBe('POSTERN_ERR_PROTO_FLOW_CONTROL');
  });
});
