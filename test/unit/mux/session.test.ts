import { pipeline } from 'node:stream/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Session, type SessionOptions } from '../../../src/mux/session.js';
import type { MuxStream } from '../../../src/mux/stream.js';
import { GoAwayReason, OpenResult } from '../../../src/protocol/reasons.js';
import { FakeClock, memoryTransportPair, type MemoryLinkOptions } from '../../helpers/mux.js';
import { RawPeer, readAll, runSessionAcceptance, until, writeSeeded } from '../../helpers/session-acceptance.js';

describe('session acceptance over the in-memory transport', () => {
  runSessionAcceptance(async () => memoryTransportPair());
});

describe('session over a slow in-memory link', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  function connect(link: MemoryLinkOptions, options: Partial<SessionOptions> = {}) {
    const pair = memoryTransportPair(link);
    const clock = new FakeClock();
    const client = new Session(pair.client, { role: 'client', clock, ...options });
    const server = new Session(pair.server, { role: 'server', clock, maxOpensPerSecond: 1e6, ...options });
    const accepted: MuxStream[] = [];
    server.on('open', (o) => accepted.push(o.accept().on('error', () => {})));
    cleanups.push(async () => {
      client.destroy();
      server.destroy();
      await pair.close();
    });
    return { pair, client, server, accepted };
  }

  /**
   * Link turns (not wall-clock time: the machine is shared and noisy) needed for `streams`
   * streams to carry `bytes` each from client to server; with `stalled`, one more stream whose
   * reader never reads keeps writing the whole time.
   */
  async function turnsFor(streams: number, bytes: number, stalled: boolean): Promise<{ turns: number; ms: number; stalledHeld: number; window: number }> {
    const window = 256 * 1024;
    const { pair, client, accepted } = connect({ bytesPerTurn: 256 * 1024 }, { initialWindow: window, transportHighWaterMark: 512 * 1024 });
    const start = pair.turns;
    const t0 = performance.now();
    let stalledStream: MuxStream | undefined;
    let stalledWritten = 0;
    if (stalled) {
      stalledStream = await client.open({ role: 'stalled' });
      void writeSeeded(stalledStream, 'stalled', 64 * 1024 * 1024, 16 * 1024, (n) => {
        stalledWritten += n;
      }).catch(() => undefined);
    }
    const streamsOpen = await Promise.all(Array.from({ length: streams }, () => client.open({})));
    await until(() => accepted.length === streams + (stalled ? 1 : 0), 'accepted');
    const results = await Promise.all(
      streamsOpen.map(async (s) => {
        const peer = accepted.find((a) => a.id === s.id)!;
        const [sent, got] = await Promise.all([writeSeeded(s, `f-${s.id}`, bytes), readAll(peer)]);
        return sent === got.digest;
      }),
    );
    expect(results.every(Boolean)).toBe(true);
    const turns = pair.turns - start;
    const ms = performance.now() - t0;
    const stalledHeld = stalledStream ? accepted.find((a) => a.id === stalledStream!.id)!.readableLength : 0;
    if (stalledStream) {
      expect(stalledWritten).toBeLessThanOrEqual(window + 64 * 1024);
      stalledStream.on('error', () => {});
      stalledStream.destroy();
    }
    return { turns, ms, stalledHeld, window };
  }

  it('one stalled stream does not slow 20 others below 90 % of their throughput without it', async () => {
    const without = await turnsFor(20, 2 * 1024 * 1024, false);
    const withStalled = await turnsFor(20, 2 * 1024 * 1024, true);
    const ratio = without.turns / withStalled.turns;
    console.info(
      `fairness: 20 × 2 MiB in ${without.turns} link turns (${without.ms.toFixed(0)} ms) alone, ` +
        `${withStalled.turns} turns (${withStalled.ms.toFixed(0)} ms) beside a stalled stream: ratio ${ratio.toFixed(3)}`,
    );
    expect(ratio).toBeGreaterThanOrEqual(0.9);
    expect(withStalled.stalledHeld).toBeLessThanOrEqual(withStalled.window);
    expect(withStalled.stalledHeld).toBeGreaterThan(0);
  });

  it('DATA is scheduled round-robin: a greedy stream does not hold back a later small one', async () => {
    const { pair, client, accepted } = connect({ bytesPerTurn: 64 * 1024 }, { initialWindow: 16 * 1024 * 1024, maxWindow: 16 * 1024 * 1024, transportHighWaterMark: 128 * 1024 });
    const greedy = await client.open({});
    const small = await client.open({});
    await until(() => accepted.length === 2, 'accepted');
    const finishedAt = new Map<number, number>();
    for (const s of accepted) readAll(s).then(() => finishedAt.set(s.id, pair.turns));
    // The greedy stream has 8 MiB of credit and starts writing before the small one.
    const greedyDone = writeSeeded(greedy, 'greedy', 8 * 1024 * 1024, 1024 * 1024);
    await new Promise((resolve) => setImmediate(resolve));
    await writeSeeded(small, 'small', 256 * 1024);
    await greedyDone;
    await until(() => finishedAt.size === 2, 'both read to the end');
    // 8 MiB at 64 KiB a turn is 128 turns; round-robin finishes 256 KiB in about 8 turns.
    expect(finishedAt.get(small.id)!).toBeLessThan(finishedAt.get(greedy.id)! / 4);
  });

  it('a peer flooding PINGs while not reading its connection overflows maxControlQueue: OVERLOADED', async () => {
    const pair = memoryTransportPair();
    const clock = new FakeClock();
    const session = new Session(pair.client, { role: 'client', clock, maxControlQueue: 16, transportHighWaterMark: 1024 });
    const raw = new RawPeer(pair.server);
    cleanups.push(async () => {
      session.destroy();
      await pair.close();
    });
    const closed = new Promise<Error | undefined>((resolve) => session.once('close', resolve));
    pair.client.stall(); // nothing the session sends reaches the peer: its buffer only grows
    for (let i = 0; i < 400; i++) raw.send({ type: 'ping', streamId: 0, payload: Buffer.alloc(8, i) });
    const err = await closed;
    expect(err).toMatchObject({ code: 'POSTERN_ERR_SESSION_OVERLOADED' });
    expect(session.stats.framesIn).toBeLessThan(400);
    pair.client.resume();
    const goaway = await raw.next('goaway');
    expect(goaway.reason).toBe(GoAwayReason.OVERLOADED);
  });

  it('DATA waits while the transport is above its high-water mark and resumes on drain', async () => {
    const { pair, client, accepted } = connect({}, { transportHighWaterMark: 256 * 1024 });
    const s = await client.open({});
    await until(() => accepted.length === 1, 'accepted');
    pair.client.stall();
    const done = writeSeeded(s, 'hwm', 4 * 1024 * 1024);
    await until(() => s.credit === 0 || pair.client.bufferedAmount >= 256 * 1024, 'the transport filled');
    for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    // At most one frame past the mark, whatever the stream's credit.
    expect(pair.client.bufferedAmount).toBeLessThan(256 * 1024 + 64 * 1024 + 100);
    pair.client.resume();
    const got = await readAll(accepted[0]!);
    expect(got.digest).toBe(await done);
  });

  it('a relay-style splice (pipeline both ways) keeps the middle bounded when the far reader stalls, and delivers byte-exact', async () => {
    const window = 128 * 1024;
    const opts = { initialWindow: window };
    // agent ⇄ relay (pair A), relay ⇄ connector (pair B); the relay pipes one stream into the other.
    const a = connect({}, opts);
    const b = connect({}, opts);
    const relayLegs: Array<{ agentSide: MuxStream; connectorSide: MuxStream }> = [];
    a.server.removeAllListeners('open');
    a.server.on('open', async (incoming) => {
      const connectorSide = await b.client.open({ target: incoming.metadata.target! });
      const agentSide = incoming.accept();
      relayLegs.push({ agentSide, connectorSide });
      void pipeline(agentSide, connectorSide).catch(() => undefined);
      void pipeline(connectorSide, agentSide).catch(() => undefined);
    });
    const agent = await a.client.open({ target: 'postgres.internal:5432' });
    await until(() => b.accepted.length === 1 && relayLegs.length === 1, 'spliced');
    const target = b.accepted[0]!; // the connector's end: it does not read yet
    const sending = writeSeeded(agent, 'splice', 8 * 1024 * 1024, 16 * 1024);
    const { agentSide, connectorSide } = relayLegs[0]!;
    const middle = () => agentSide.readableLength + connectorSide.writableLength;
    await until(() => target.readableLength === window && agent.credit === 0, 'both windows full');
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(target.readableLength).toBe(window);
    expect(middle()).toBeLessThanOrEqual(window + 64 * 1024);
    // The connector answers while its own reading is still stalled: the other direction flows.
    const answer = readAll(agent);
    await writeSeeded(target, 'answer', 1024 * 1024);
    const got = await readAll(target);
    expect(got.digest).toBe(await sending);
    expect((await answer).bytes).toBe(1024 * 1024);
  });

  it('options are validated once, naming the field', () => {
    const pair = memoryTransportPair();
    cleanups.push(() => pair.close());
    expect(() => new Session(pair.client, { role: 'client', initialWindow: 1 << 20, maxWindow: 1 << 19 })).toThrow(/initialWindow.*must not exceed maxWindow/);
    expect(() => new Session(pair.client, { role: 'client', maxStream: 3 } as unknown as SessionOptions)).toThrow(
      expect.objectContaining({ code: 'POSTERN_ERR_CONFIG_UNKNOWN_KEY', message: expect.stringContaining('"maxStream"') }),
    );
    expect(() => new Session(pair.client, { role: 'client', pingIntervalMs: 20_000 })).toThrow(/pingIntervalMs.*below deadPeerTimeoutMs/);
    expect(() => new Session(pair.client, { role: 'client', maxFrameSize: 100 })).toThrow(/field "maxFrameSize"/);
  });

  it("an 'open' listener that throws refuses the stream with INTERNAL instead of breaking the session", async () => {
    const { client, server } = connect({});
    server.removeAllListeners('open');
    server.on('open', () => {
      throw new Error('handler bug');
    });
    await expect(client.open({})).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_INTERNAL', result: OpenResult.INTERNAL });
    expect(server.closed).toBe(false);
  });

  it('a huge grant from the peer does not become a huge buffer here while the transport is congested', async () => {
    const pair = memoryTransportPair();
    const session = new Session(pair.client, { role: 'client', clock: new FakeClock(), transportHighWaterMark: 64 * 1024, maxStreamSendBuffer: 128 * 1024 });
    const raw = new RawPeer(pair.server);
    cleanups.push(async () => {
      session.destroy();
      await pair.close();
    });
    const opening = session.open({});
    const open = await raw.next('open');
    raw.send({ type: 'open-result', streamId: open.streamId, result: 0, window: 0x7fff_ffff, maxData: 65536, message: '', metadata: {} });
    const stream = await opening;
    pair.client.stall();
    let accepted = 0;
    const block = Buffer.alloc(16 * 1024);
    while (stream.write(block)) accepted += block.length;
    accepted += block.length;
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(stream.credit).toBeGreaterThan(0x7000_0000);
    expect(accepted - session.stats.bytesOut).toBeLessThanOrEqual(128 * 1024 + 16 * 1024);
    expect(pair.client.bufferedAmount).toBeLessThan(64 * 1024 + 65536 + 100);
    pair.client.resume();
    await until(() => session.stats.bytesOut === accepted, 'everything written goes out once the transport drains');
  });

  it('throughput of one stream in memory (figure for the report)', async () => {
    const { client, accepted } = connect({});
    const s = await client.open({});
    await until(() => accepted.length === 1, 'accepted');
    const bytes = 256 * 1024 * 1024;
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const [sent, got] = await Promise.all([writeSeededFast(s, bytes), readAll(accepted[0]!)]);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    console.info(
      `in-memory: ${(bytes / 1048576 / seconds).toFixed(0)} MiB/s through one stream, ` +
        `${((cpu.user + cpu.system) / 1e6 / (bytes / 2 ** 30)).toFixed(2)} CPU s/GiB (incl. SHA-256 of the receiver)`,
    );
    expect(got.bytes).toBe(sent);
  });
});

/** Writes the same 64 KiB block repeatedly (no generation cost), honouring backpressure. */
async function writeSeededFast(stream: MuxStream, bytes: number): Promise<number> {
  const block = Buffer.alloc(64 * 1024, 0x5a);
  let left = bytes;
  while (left > 0) {
    left -= block.length;
    if (!stream.write(block)) await new Promise((resolve) => stream.once('drain', resolve));
  }
  stream.end();
  return bytes;
}
