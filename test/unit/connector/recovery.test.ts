import { afterEach, describe, expect, it } from 'vitest';
import { PosternError } from '../../../src/errors.js';
import { GoAwayReason } from '../../../src/protocol/reasons.js';
import { Session, type FrameTransport } from '../../../src/mux/index.js';
import { RelayTunnel } from '../../../connector/tunnel.js';
import { FakeClock, memoryTransportPair, type MemoryPair } from '../../helpers/mux.js';
import { captureAudit, captureLogger, type LogLine } from './helpers.js';

const QUIET = { pingIntervalMs: 1_000_000, deadPeerTimeoutMs: 2_000_000 };
const turn = () => new Promise((resolve) => setImmediate(resolve));
const stops: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

/** A tunnel on a fake clock whose relay is "up" or "down" as the test says; random fixed near 1 (the worst case). */
function harness(reconnect: ConstructorParameters<typeof RelayTunnel>[0]['reconnect']) {
  const clock = new FakeClock();
  const { logger, lines } = captureLogger();
  const pairs: MemoryPair[] = [];
  const relaySessions: Session[] = [];
  let relayUp = true;
  const connect = async (): Promise<FrameTransport> => {
    if (!relayUp) throw new PosternError('POSTERN_ERR_WS_CONNECT', 'cannot connect to relay.test:443 (ECONNREFUSED)');
    const pair = memoryTransportPair();
    pairs.push(pair);
    relaySessions.push(new Session(pair.server, { role: 'server', clock: new FakeClock(), ...QUIET }));
    return pair.client;
  };
  let seq = 0;
  const tunnel = new RelayTunnel({
    relay: 'wss://relay.test',
    connector: 'st-mary/hq',
    connect,
    session: QUIET,
    reconnect,
    shutdownGraceMs: 1_000,
    onOpen: (i) => i.reject(1, 'not in this test'),
    clock,
    random: () => 0.9999,
    logger,
    audit: captureAudit().audit,
    nextTunnelId: () => `t${++seq}`,
  });
  stops.push(async () => {
    const stopping = tunnel.stop();
    for (let i = 0; i < 10; i++) {
      clock.advance(1_000);
      await turn();
    }
    await stopping;
    await Promise.all(pairs.map((p) => p.close()));
  });
  return {
    tunnel,
    clock,
    lines,
    setRelay: (up: boolean) => {
      relayUp = up;
    },
    /** The relay process dies: its end of the live link goes away. */
    kill: () => pairs.at(-1)!.close(),
    /** The relay starts draining: GOAWAY on the live tunnel. */
    goAway: () => relaySessions.at(-1)!.goAway(GoAwayReason.DRAIN, 'relay draining'),
  };
}

/** Delays of the retries logged after the loss, until the relay is back and the tunnel up again. */
async function outage(h: ReturnType<typeof harness>, downForMs: number): Promise<number[]> {
  const retries = (): LogLine[] => h.lines.items.filter((l) => l.event === 'tunnel.retry');
  const before = retries().length;
  const downs = h.lines.count((l) => l.event === 'tunnel.down');
  h.setRelay(false);
  await h.kill();
  await h.lines.waitFor((l) => l.event === 'tunnel.down', downs + 1);
  let elapsed = 0;
  while (elapsed < downForMs) {
    h.clock.advance(100);
    elapsed += 100;
    await turn();
  }
  h.setRelay(true);
  const upsBefore = h.lines.count((l) => l.event === 'tunnel.up');
  let waited = 0;
  while (h.lines.count((l) => l.event === 'tunnel.up') === upsBefore) {
    h.clock.advance(10);
    waited += 10;
    await turn();
  }
  return [...retries().slice(before).map((l) => Number(l['delayMs'])), waited];
}

describe('RelayTunnel after losing a tunnel that was up (a relay killed and restarted)', () => {
  const reconnect = { initialDelayMs: 250, maxDelayMs: 30_000, resetAfterMs: 10_000, recoveryMaxDelayMs: 1_000, recoveryWindowMs: 30_000 };

  it('caps every retry at recoveryMaxDelayMs within the recovery window, so it is back within ~1 s of the relay', async () => {
    const h = harness(reconnect);
    h.tunnel.start();
    await h.lines.waitFor((l) => l.event === 'tunnel.up');
    // Up for 2 s only (short of resetAfterMs): the backoff counter is not reset by the loss.
    h.clock.advance(2_000);
    const [...delays] = await outage(h, 8_000);
    const waited = delays.pop()!;
    expect(delays.length).toBeGreaterThan(5);
    expect(Math.max(...delays)).toBeLessThan(1_000);
    expect(waited).toBeLessThanOrEqual(1_000);
  });

  it('a GOAWAY (the relay drains, then restarts) redials at once, and the refused redials are capped the same way', async () => {
    const h = harness(reconnect);
    h.tunnel.start();
    await h.lines.waitFor((l) => l.event === 'tunnel.up');
    h.clock.advance(2_000);
    // The draining relay refuses the redial (503), then is gone while it restarts.
    h.setRelay(false);
    h.goAway();
    await h.lines.waitFor((l) => l.event === 'tunnel.goaway');
    await h.lines.waitFor((l) => l.event === 'tunnel.retry');
    for (let elapsed = 0; elapsed < 8_000; elapsed += 100) {
      h.clock.advance(100);
      await turn();
    }
    const delays = h.lines.items.filter((l) => l.event === 'tunnel.retry').map((l) => Number(l['delayMs']));
    expect(delays.length).toBeGreaterThan(5);
    expect(Math.max(...delays)).toBeLessThan(1_000);
    h.setRelay(true);
    const ups = h.lines.count((l) => l.event === 'tunnel.up');
    let waited = 0;
    while (h.lines.count((l) => l.event === 'tunnel.up') === ups) {
      h.clock.advance(10);
      waited += 10;
      await turn();
    }
    expect(waited).toBeLessThanOrEqual(1_000);
  });

  it('after the window the usual exponential backoff applies again (a relay down for long is not hammered)', async () => {
    const h = harness({ ...reconnect, recoveryWindowMs: 5_000 });
    h.tunnel.start();
    await h.lines.waitFor((l) => l.event === 'tunnel.up');
    const delays = await outage(h, 40_000);
    delays.pop();
    expect(delays.slice(0, 3).every((d) => d < 1_000)).toBe(true);
    expect(Math.max(...delays)).toBeGreaterThan(4_000);
  });

  it('without the recovery options the exponential backoff runs from the loss on (as configured before)', async () => {
    const h = harness({ initialDelayMs: 250, maxDelayMs: 30_000, resetAfterMs: 10_000 });
    h.tunnel.start();
    await h.lines.waitFor((l) => l.event === 'tunnel.up');
    const delays = await outage(h, 10_000);
    delays.pop();
    expect(Math.max(...delays)).toBeGreaterThan(1_000);
  });
});
