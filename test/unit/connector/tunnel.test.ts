import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PosternError } from '../../../src/errors.js';
import { Session, type FrameTransport, type IncomingOpen } from '../../../src/mux/index.js';
import { GoAwayReason } from '../../../src/protocol/reasons.js';
import { fullJitterDelay } from '../../../connector/backoff.js';
import { RelayTunnel } from '../../../connector/tunnel.js';
import { FakeClock, memoryTransportPair, type MemoryPair } from '../../helpers/mux.js';
import { captureAudit, captureLogger, type LogLine, type Recorder } from './helpers.js';

const RECONNECT = { initialDelayMs: 100, maxDelayMs: 1_000, resetAfterMs: 5_000 };
/** Keepalive far away unless a test is about it. */
const QUIET = { pingIntervalMs: 1_000_000, deadPeerTimeoutMs: 2_000_000 };

/** One turn of the event loop: lets the in-memory link deliver what is queued. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('fullJitterDelay', () => {
  it('draws from [0, min(max, initial * 2^attempt)) with the injected random source', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 80 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 1, max: 1_000_000 }), (attempt, r, initial, extra) => {
        const max = initial + extra;
        const delay = fullJitterDelay(attempt, { initialDelayMs: initial, maxDelayMs: max, random: () => r });
        const ceiling = Math.min(max, initial * 2 ** attempt);
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThan(ceiling);
        expect(delay).toBe(Math.floor(r * ceiling));
      }),
    );
  });

  it('grows exponentially, then stays capped at maxDelayMs', () => {
    const almostOne = () => 0.9999;
    const delays = [0, 1, 2, 3, 4, 5, 60].map((a) => fullJitterDelay(a, { initialDelayMs: 100, maxDelayMs: 1_000, random: almostOne }));
    expect(delays).toEqual([99, 199, 399, 799, 999, 999, 999]);
  });
});

interface Harness {
  tunnel: RelayTunnel;
  clock: FakeClock;
  lines: Recorder<LogLine>;
  audit: ReturnType<typeof captureAudit>['events'];
  /** Server (relay) sessions, one per successful attempt. */
  relays: Session[];
  pairs: MemoryPair[];
  /** Attempts made so far. */
  attempts: () => number;
  /** What the next attempts do: 'fail' rejects, 'ok' connects. Default 'ok'. */
  plan: Array<'fail' | 'ok'>;
}

const harnesses: Harness[] = [];

function harness(session: Record<string, number> = QUIET, onOpen: (incoming: IncomingOpen) => void = (i) => i.reject(1, 'not in this test')): Harness {
  const clock = new FakeClock();
  const { logger, lines } = captureLogger();
  const { audit, events } = captureAudit();
  const relays: Session[] = [];
  const pairs: MemoryPair[] = [];
  const plan: Array<'fail' | 'ok'> = [];
  let attempts = 0;
  const connect = async (): Promise<FrameTransport> => {
    attempts++;
    if ((plan.shift() ?? 'ok') === 'fail') {
      throw new PosternError('POSTERN_ERR_WS_CONNECT', 'cannot connect to relay.test:443 (ECONNREFUSED)');
    }
    const pair = memoryTransportPair();
    pairs.push(pair);
    // The relay side keeps still time: it answers pings but never sends its own.
    relays.push(new Session(pair.server, { role: 'server', clock: new FakeClock(), ...QUIET }));
    return pair.client;
  };
  let seq = 0;
  const tunnel = new RelayTunnel({
    relay: 'wss://relay.test',
    connector: 'st-mary/hq',
    connect,
    session,
    reconnect: RECONNECT,
    shutdownGraceMs: 1_000,
    onOpen,
    clock,
    random: () => 0.5,
    logger,
    audit,
    nextTunnelId: () => `t${++seq}`,
  });
  const h: Harness = { tunnel, clock, lines, audit: events, relays, pairs, attempts: () => attempts, plan };
  harnesses.push(h);
  return h;
}

afterEach(async () => {
  for (const h of harnesses.splice(0)) {
    const stopping = h.tunnel.stop();
    // The graceful close waits on fake time and on the link: give it both.
    for (let i = 0; i < 20; i++) {
      h.clock.advance(1_000);
      await turn();
    }
    await stopping;
    await Promise.all(h.pairs.map((p) => p.close()));
  }
});

const event = (name: string) => (l: LogLine) => l.event === name;

describe('RelayTunnel', () => {
  it('retries with backoff when the very first attempt fails (relay not started yet), then comes up', async () => {
    const h = harness();
    h.plan.push('fail', 'fail');
    h.tunnel.start();
    const retry1 = await h.lines.waitFor(event('tunnel.retry'));
    expect(retry1).toMatchObject({ relay: 'wss://relay.test', delayMs: 50, error: 'POSTERN_ERR_WS_CONNECT', attempt: 1 });
    expect(h.tunnel.status()).toEqual({ relay: 'wss://relay.test', up: false, streams: 0 });

    // Nothing happens before the delay is over.
    h.clock.advance(49);
    await turn();
    expect(h.attempts()).toBe(1);
    h.clock.advance(1);
    const retry2 = await h.lines.waitFor(event('tunnel.retry'), 2);
    expect(retry2).toMatchObject({ delayMs: 100, attempt: 2 });
    expect(h.attempts()).toBe(2);

    h.clock.advance(100);
    await h.lines.waitFor(event('tunnel.up'));
    expect(h.attempts()).toBe(3);
    expect(h.tunnel.status()).toMatchObject({ up: true, streams: 0, since: expect.any(String) });
    expect(h.audit.items).toMatchObject([{ event: 'tunnel.up', connector: 'st-mary/hq', tunnelId: 't1', relay: 'wss://relay.test' }]);
  });

  it('redials when the relay drops; the backoff keeps growing across short-lived tunnels and resets after a stable one', async () => {
    const h = harness();
    h.tunnel.start();
    await h.lines.waitFor(event('tunnel.up'));

    // Up for 10 ms only: the next delay continues the sequence (attempt 1, not 0).
    h.clock.advance(10);
    h.pairs[0]!.server.destroy();
    const down = await h.lines.waitFor(event('tunnel.down'));
    expect(down).toMatchObject({ relay: 'wss://relay.test', tunnelId: 't1', upMs: 10 });
    expect(String(down['reason'])).toMatch(/reset by peer/);
    expect(await h.lines.waitFor(event('tunnel.retry'))).toMatchObject({ delayMs: 50, attempt: 1 });
    h.clock.advance(50);
    await h.lines.waitFor(event('tunnel.up'), 2);
    h.clock.advance(10);
    h.pairs[1]!.server.destroy();
    expect(await h.lines.waitFor(event('tunnel.retry'), 2)).toMatchObject({ delayMs: 100, attempt: 2 });
    h.clock.advance(100);
    await h.lines.waitFor(event('tunnel.up'), 3);

    // Up for resetAfterMs: the backoff starts over.
    h.clock.advance(RECONNECT.resetAfterMs);
    h.pairs[2]!.server.destroy();
    expect(await h.lines.waitFor(event('tunnel.retry'), 3)).toMatchObject({ delayMs: 50, attempt: 1 });
    h.clock.advance(50);
    await h.lines.waitFor(event('tunnel.up'), 4);
    expect(h.audit.items.map((e) => e.event)).toEqual(['tunnel.up', 'tunnel.down', 'tunnel.up', 'tunnel.down', 'tunnel.up', 'tunnel.down', 'tunnel.up']);
  });

  it('a GOAWAY opens a new tunnel at once, before the old one closes; the old one finishes its streams', async () => {
    // The connector side echoes every stream.
    const h = harness(QUIET, (incoming) => {
      const s = incoming.accept();
      s.pipe(s);
    });
    h.tunnel.start();
    await h.lines.waitFor(event('tunnel.up'));
    const oldRelay = h.relays[0]!;
    const stream = await oldRelay.open({ target: 'x:1' });
    expect(h.tunnel.status().streams).toBe(1);

    oldRelay.goAway(GoAwayReason.DRAIN, 'relay stopping');
    expect(await h.lines.waitFor(event('tunnel.goaway'))).toMatchObject({ reason: 'DRAIN', tunnelId: 't1' });
    // No clock advance: the new attempt is immediate, and the old session is still open.
    await h.lines.waitFor(event('tunnel.up'), 2);
    expect(h.attempts()).toBe(2);
    expect(oldRelay.closed).toBe(false);
    expect(h.tunnel.status()).toMatchObject({ up: true, streams: 1 });
    await expect(oldRelay.open({ target: 'x:1' })).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_GOING_AWAY' });

    // The old stream still carries data both ways; once it ends, the old tunnel closes by itself.
    const back = new Promise<Buffer>((resolve) => stream.once('data', resolve));
    stream.write('still here');
    expect((await back).toString()).toBe('still here');
    stream.end();
    stream.resume();
    expect(await h.lines.waitFor(event('tunnel.down'))).toMatchObject({ tunnelId: 't1', reason: 'closed' });
    expect(h.lines.count(event('tunnel.retry'))).toBe(0);
    expect(h.tunnel.status()).toMatchObject({ up: true, streams: 0 });
  });

  it('after a stable tunnel, a GOAWAY whose redial is refused backs off from initialDelayMs again', async () => {
    const h = harness();
    h.plan.push('fail', 'fail', 'ok');
    h.tunnel.start();
    await h.lines.waitFor(event('tunnel.retry'));
    h.clock.advance(50);
    await h.lines.waitFor(event('tunnel.retry'), 2);
    h.clock.advance(100);
    await h.lines.waitFor(event('tunnel.up'));
    h.clock.advance(RECONNECT.resetAfterMs);
    h.plan.push('fail');
    h.relays[0]!.goAway(GoAwayReason.DRAIN, 'deploying');
    expect(await h.lines.waitFor(event('tunnel.retry'), 3)).toMatchObject({ delayMs: 50, attempt: 1 });
  });

  it('a dead relay (nothing arrives for deadPeerTimeoutMs) is detected by the keepalive and redialed', async () => {
    const h = harness({ pingIntervalMs: 1_000, deadPeerTimeoutMs: 3_000 });
    h.tunnel.start();
    await h.lines.waitFor(event('tunnel.up'));
    // A healthy but idle relay: pings and pongs keep the tunnel up across many periods.
    for (let i = 0; i < 10; i++) {
      h.clock.advance(1_000);
      await turn();
      await turn();
    }
    expect(h.lines.count(event('tunnel.down'))).toBe(0);
    // The path dies silently: the relay's frames stop arriving.
    h.pairs[0]!.server.stall();
    h.clock.advance(3_000);
    const down = await h.lines.waitFor(event('tunnel.down'));
    expect(down).toMatchObject({ code: 'POSTERN_ERR_SESSION_PING_TIMEOUT' });
    expect(await h.lines.waitFor(event('tunnel.retry'))).toMatchObject({ error: 'POSTERN_ERR_SESSION_PING_TIMEOUT' });
    h.clock.advance(100);
    await h.lines.waitFor(event('tunnel.up'), 2);
  });

  it('stop() ends the retries and closes the live session with a GOAWAY', async () => {
    const h = harness();
    h.plan.push('fail');
    h.tunnel.start();
    await h.lines.waitFor(event('tunnel.retry'));
    h.clock.advance(50);
    await h.lines.waitFor(event('tunnel.up'));
    const relay = h.relays[0]!;
    const goaway = new Promise((resolve) => relay.once('goaway', resolve));
    const stopping = h.tunnel.stop();
    await goaway;
    for (let i = 0; i < 5 && !relay.closed; i++) await turn();
    await stopping;
    expect(relay.closed).toBe(true);
    expect(await h.lines.waitFor(event('tunnel.down'))).toMatchObject({ reason: 'closed' });
    h.clock.advance(1_000_000);
    await turn();
    expect(h.attempts()).toBe(2);
    expect(h.lines.count(event('tunnel.retry'))).toBe(1);
    expect(h.tunnel.status()).toEqual({ relay: 'wss://relay.test', up: false, streams: 0 });
  });
});
