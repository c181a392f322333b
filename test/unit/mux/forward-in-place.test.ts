import { afterEach, describe, expect, it } from 'vitest';
import { splice } from '../../../src/net/splice.js';
import { Session } from '../../../src/mux/session.js';
import type { MuxStream } from '../../../src/mux/stream.js';
import { FakeClock, SeededBytes, memoryTransportPair } from '../../helpers/mux.js';
import { readAll, until, writeSeeded } from '../../helpers/session-acceptance.js';

/**
 * A payload received on one stream and written unchanged to another (the relay's splice) is
 * framed in place: the new header goes into the bytes of the header it arrived with, so the
 * forwarding session neither allocates nor copies. These tests check the bytes that come out.
 */
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

function connect() {
  const pair = memoryTransportPair();
  const clock = new FakeClock();
  const client = new Session(pair.client, { role: 'client', clock });
  const server = new Session(pair.server, { role: 'server', clock, maxOpensPerSecond: 1e6 });
  cleanups.push(async () => {
    client.destroy();
    server.destroy();
    await pair.close();
  });
  return { client, server };
}

describe('forwarding a received payload without a copy', () => {
  it('a relay-style splice forwards both directions in place, byte-exact', async () => {
    const agentLeg = connect(); // agent (client) ⇄ relay (server)
    const connectorLeg = connect(); // relay (client) ⇄ connector (server)
    const relayIn = agentLeg.server;
    const relayOut = connectorLeg.client;
    relayIn.on('open', async (incoming) => {
      const toConnector = await relayOut.open({ ...incoming.metadata });
      void splice(incoming.accept(), toConnector);
    });
    const atConnector: MuxStream[] = [];
    connectorLeg.server.on('open', (o) => atConnector.push(o.accept()));
    const agent = await agentLeg.client.open({ target: 'postgres.internal:5432' });
    await until(() => atConnector.length === 1, 'the connector gets the stream');
    const target = atConnector[0]!;
    const size = 8 * 1024 * 1024;
    const [up, down, gotUp, gotDown] = await Promise.all([writeSeeded(agent, 'up', size), writeSeeded(target, 'down', size), readAll(target), readAll(agent)]);
    expect(gotUp.digest).toBe(up);
    expect(gotDown.digest).toBe(down);
    // Everything the relay forwarded went out in place; the ends wrote their own data, copied once into frames.
    const frames = size / (64 * 1024);
    expect(relayOut.stats.bytesOut).toBe(size);
    expect(relayIn.stats.bytesOut).toBe(size);
    expect(relayOut.stats.framesForwardedInPlace).toBeGreaterThanOrEqual(frames * 0.9);
    expect(relayIn.stats.framesForwardedInPlace).toBeGreaterThanOrEqual(frames * 0.9);
    expect(agentLeg.client.stats.framesForwardedInPlace).toBe(0);
    expect(connectorLeg.server.stats.framesForwardedInPlace).toBe(0);
    console.info(`splice: ${relayOut.stats.framesForwardedInPlace} of ${relayOut.stats.framesOut} frames agent→connector forwarded in place`);
  });

  it('a payload written to two streams (a tee) reaches both intact: in place once, copied the second time', async () => {
    const { client, server } = connect();
    const tees: MuxStream[] = [];
    client.on('open', (o) => tees.push(o.accept()));
    server.on('open', async (o) => {
      const source = o.accept();
      const [a, b] = await Promise.all([server.open({ tee: 'a' }), server.open({ tee: 'b' })]);
      source.on('data', (chunk: Buffer) => {
        a.write(chunk);
        b.write(chunk);
      });
      source.once('end', () => {
        a.end();
        b.end();
      });
    });
    const stream = await client.open({});
    await until(() => tees.length === 2, 'both tee streams opened');
    const results = Promise.all(tees.map((t) => readAll(t)));
    const sent = await writeSeeded(stream, 'tee', 2 * 1024 * 1024);
    const digests = (await results).map((r) => r.digest);
    expect(digests).toEqual([sent, sent]);
    expect(server.stats.framesForwardedInPlace).toBeGreaterThan(0);
    expect(server.stats.framesForwardedInPlace).toBeLessThanOrEqual(server.stats.framesIn);
    expect(server.stats.bytesOut).toBe(2 * 2 * 1024 * 1024);
  });

  it('small payloads (under 1 KiB) are not tracked: copied as before, intact', async () => {
    const { client, server } = connect();
    server.on('open', (o) => {
      const s = o.accept();
      s.pipe(s); // each received payload is written straight back
    });
    const stream = await client.open({});
    let echoed = Buffer.alloc(0);
    stream.on('data', (d: Buffer) => (echoed = Buffer.concat([echoed, d])));
    // One 1000-byte message at a time, as an interactive protocol sends them (writes in the
    // same tick would share a frame).
    const sent = new SeededBytes('small').next(200 * 1000);
    for (let i = 0; i < 200; i++) {
      stream.write(sent.subarray(i * 1000, (i + 1) * 1000));
      await until(() => echoed.length === (i + 1) * 1000, 'the echo');
    }
    expect(echoed).toEqual(sent);
    expect(server.stats.framesForwardedInPlace).toBe(0);
    expect(server.stats.bytesOut).toBe(200 * 1000);
  });

  it('a payload cut by the next stream (a smaller maxData there) is copied, and arrives intact', async () => {
    const { client, server } = connect();
    const small = memoryTransportPair();
    const clock = new FakeClock();
    const relayOut = new Session(small.client, { role: 'client', clock });
    const far = new Session(small.server, { role: 'server', clock, maxFrameSize: 16 * 1024, maxOpensPerSecond: 1e6 });
    cleanups.push(async () => {
      relayOut.destroy();
      far.destroy();
      await small.close();
    });
    const atFar: MuxStream[] = [];
    far.on('open', (o) => atFar.push(o.accept()));
    server.on('open', async (o) => {
      const next = await relayOut.open({});
      o.accept().pipe(next);
    });
    const stream = await client.open({});
    const sending = writeSeeded(stream, 'cut', 1024 * 1024);
    await until(() => atFar.length === 1, 'spliced');
    expect((await readAll(atFar[0]!)).digest).toBe(await sending);
    expect(relayOut.stats.framesForwardedInPlace).toBe(0);
    expect(relayOut.stats.framesOut).toBeGreaterThanOrEqual(64);
  });
});
