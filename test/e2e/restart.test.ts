import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { stopAll, type ChildHandle } from '../helpers/processes.js';
import { echoRoundTrip, echoServer, nextLine, releasedPort, startPool, type Pool, type PoolRelay } from '../helpers/relay-pool.js';

/** What the issue allows between a killed relay's restart and the first successful dial. */
const BACK_WITHIN_MS = 3_000;

describe('relay restarts, real processes', () => {
  let pki: TestPki;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let pool: Pool | undefined;
  let target: string;

  beforeAll(async () => {
    [pki, echo] = await Promise.all([makeTestPki(), echoServer()]);
    target = `127.0.0.1:${echo.port}`;
  });

  afterEach(async () => {
    await pool?.stop();
    pool = undefined;
    await stopAll();
  });

  afterAll(async () => {
    await echo?.close();
    await pki?.cleanup();
  });

  /** The relay's audit line for a connector tunnel registered from now on. */
  const tunnelUp = (relay: PoolRelay): Promise<unknown> => relay.handle!.waitFor((l) => l.event === 'tunnel.up' && l['audit'] === true, 30_000);

  it('a rolling restart of two relays costs no dial: every new dial in a loop succeeds', async () => {
    pool = await startPool({ pki, name: 'rolling', targets: [target], graceMs: 20_000 });
    const relays = [pool.addRelay('relay-1'), pool.addRelay('relay-2')];
    for (const relay of relays) await pool.startRelay(relay);
    await pool.startConnector(relays);
    await Promise.all(relays.map(tunnelUp));
    const forward = await pool.forward(relays, target);

    // Sequential new dials, each a fresh stream with a round trip to the echo target, all along.
    let running = true;
    const outcomes: Array<{ ok: boolean; phase: string }> = [];
    let phase = 'before';
    let waiting: { count: number; resolve: () => void } | undefined;
    const loop = (async () => {
      for (let i = 0; running; i++) {
        const ok = await echoRoundTrip(forward.port, randomBytes(64 + (i % 512)));
        outcomes.push({ ok, phase });
        if (waiting && outcomes.length >= waiting.count) waiting.resolve();
      }
    })();
    const dialsIn = (p: string): number => outcomes.filter((o) => o.phase === p).length;
    /** Resolves once the loop has done `n` more dials. */
    const someDials = (n: number): Promise<void> => new Promise((resolve) => (waiting = { count: outcomes.length + n, resolve }));

    try {
      await someDials(5);
      // SIGTERM for one, SIGINT for the other: both drain.
      for (const [relay, signal] of [[relays[0]!, 'SIGTERM'], [relays[1]!, 'SIGINT']] as const) {
        phase = `${relay.name} restarting`;
        const handle: ChildHandle = relay.handle!;
        handle.child.kill(signal);
        expect(await handle.exited).toEqual({ code: 0, signal: null });
        expect(handle.lines.find((l) => l.event === 'process.stopping')?.['signal']).toBe(signal);
        expect(handle.lines.some((l) => l.event === 'relay.draining')).toBe(true);
        await pool.startRelay(relay);
        await tunnelUp(relay);
        phase = `${relay.name} back`;
        await someDials(5);
      }
    } finally {
      // Also when a step failed: the loop must not outlive the test.
      running = false;
      await loop;
    }

    const failures = outcomes.filter((o) => !o.ok);
    expect(failures).toEqual([]);
    expect(outcomes.length).toBeGreaterThanOrEqual(25);
    // Dials ran while each relay was draining, down and starting again, not only around it.
    for (const relay of relays) expect(dialsIn(`${relay.name} restarting`)).toBeGreaterThanOrEqual(3);
    expect(forward.handle.lines.filter((l) => l.event === 'forward.dial-failed')).toEqual([]);
    // The agent moved: its sessions went to both relays.
    const sessionRelays = new Set(forward.handle.lines.filter((l) => l.event === 'agent.session.up').map((l) => l['relay']));
    expect(sessionRelays.size).toBe(2);
  });

  it(`SIGKILL, then the relay restarted on the same port: the connector is back and a dial succeeds within ${BACK_WITHIN_MS} ms`, async () => {
    pool = await startPool({ pki, name: 'killed', targets: [target] });
    const relay = pool.addRelay('relay-1');
    await pool.startRelay(relay);
    const connector = await pool.startConnector([relay]);
    await tunnelUp(relay);
    const forward = await pool.forward([relay], target);
    expect(await echoRoundTrip(forward.port, randomBytes(100))).toBe(true);

    const down = nextLine(connector, (l) => l.event === 'tunnel.down');
    relay.handle!.child.kill('SIGKILL');
    await relay.handle!.exited;
    await down;
    // Down for a while, as a crashed relay would be: the connector's retries keep going meanwhile.
    await nextLine(connector, (l) => l.event === 'tunnel.retry');
    await nextLine(connector, (l) => l.event === 'tunnel.retry');

    const listening = await pool.startRelay(relay);
    await tunnelUp(relay);
    expect(await echoRoundTrip(forward.port, randomBytes(100))).toBe(true);
    const backAfterMs = Date.now() - Number(listening['time']);
    expect(backAfterMs).toBeLessThanOrEqual(BACK_WITHIN_MS);
    // The retries after the loss were capped at reconnect.recoveryMaxDelayMs (1 s by default).
    const retryDelays = connector.lines.filter((l) => l.event === 'tunnel.retry').map((l) => Number(l['delayMs']));
    expect(Math.max(...retryDelays)).toBeLessThan(1_000);
  });

  it('a connector started before its relay exists connects once the relay appears', async () => {
    pool = await startPool({ pki, name: 'late', targets: [target] });
    const relay = pool.addRelay('relay-1', await releasedPort());
    const connector = await pool.startConnector([relay]);
    const failed = await connector.waitFor((l) => l.event === 'tunnel.retry');
    expect(failed['error']).toBe('POSTERN_ERR_WS_CONNECT');

    await pool.startRelay(relay);
    await tunnelUp(relay);
    await connector.waitFor((l) => l.event === 'tunnel.up', 30_000);
    const forward = await pool.forward([relay], target);
    expect(await echoRoundTrip(forward.port, randomBytes(100))).toBe(true);
  });
});
