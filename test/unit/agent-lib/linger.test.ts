import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { lingerOnCleanClose } from '../../../agent-lib/linger.js';
import { Session, StreamError, type MuxStream } from '../../../src/mux/index.js';
import { ResetCode } from '../../../src/protocol/reasons.js';
import { memoryTransportPair, type MemoryPair } from '../../helpers/mux.js';

// Keepalive far away: these tests are about stream ends only.
const QUIET = { pingIntervalMs: 3_000_000, deadPeerTimeoutMs: 3_600_000 };
let pair: MemoryPair | undefined;

/** A stream between two in-memory sessions: `ours` plays the agent's side, `theirs` the relay's. */
async function streamPair(): Promise<{ ours: MuxStream; theirs: MuxStream }> {
  pair = memoryTransportPair();
  const client = new Session(pair.client, { role: 'client', ...QUIET });
  const server = new Session(pair.server, { role: 'server', ...QUIET });
  const accepted = new Promise<MuxStream>((resolve) => server.once('open', (incoming) => resolve(incoming.accept())));
  const ours = await client.open({ connector: 'hq', target: 'a.b:1' });
  return { ours, theirs: await accepted };
}

/** Our FIN is out and has reached the peer; the peer's FIN has not been sent yet. */
async function halfClosed(ours: MuxStream, theirs: MuxStream): Promise<void> {
  theirs.resume();
  const theirEnd = once(theirs, 'end');
  ours.end();
  await once(ours, 'finish');
  await theirEnd;
}

afterEach(async () => {
  await pair?.close();
  pair = undefined;
});

describe('lingerOnCleanClose', () => {
  it("a bare destroy after our FIN waits for the peer's FIN: the stream ends with FIN both ways, no RESET", async () => {
    const { ours, theirs } = await streamPair();
    lingerOnCleanClose(ours, 60_000);
    await halfClosed(ours, theirs);
    // What Node's TLS layer does when the TLS socket closes before the peer's FIN was read.
    ours.destroy();
    expect(ours.destroyed).toBe(false);
    // Both listeners first: theirs closes (FIN both ways) before ours has read the late bytes.
    const closed = Promise.all([once(ours, 'close'), once(theirs, 'close')]);
    theirs.end('late bytes are discarded');
    await closed;
    expect(ours.resetCode).toBeUndefined();
    expect(theirs.resetCode).toBeUndefined();
    expect(theirs.errored).toBeNull();
  });

  it('without the guard the same sequence sends RESET CANCEL (what the guard prevents)', async () => {
    const { ours, theirs } = await streamPair();
    await halfClosed(ours, theirs);
    const reset = new Promise<Error>((resolve) => theirs.once('error', resolve));
    ours.destroy();
    expect(await reset).toMatchObject({ resetCode: ResetCode.CANCEL });
  });

  it('a destroy with an error, or before our FIN, passes straight through as a RESET', async () => {
    for (const early of [true, false]) {
      const { ours, theirs } = await streamPair();
      lingerOnCleanClose(ours, 60_000);
      if (!early) await halfClosed(ours, theirs);
      const reset = new Promise<Error>((resolve) => theirs.once('error', resolve));
      ours.on('error', () => undefined);
      if (early) ours.destroy();
      else ours.destroy(Object.assign(new Error('peer gone'), { resetCode: ResetCode.PEER_GONE }));
      const err = await reset;
      expect(err).toBeInstanceOf(StreamError);
      expect((err as StreamError).resetCode).toBe(early ? ResetCode.CANCEL : ResetCode.PEER_GONE);
      await pair!.close();
    }
  });

  it('gives up after lingerMs and resets a peer that never sends its FIN', async () => {
    const { ours, theirs } = await streamPair();
    lingerOnCleanClose(ours, 1);
    await halfClosed(ours, theirs);
    const reset = new Promise<Error>((resolve) => theirs.once('error', resolve));
    ours.destroy();
    expect(await reset).toMatchObject({ resetCode: ResetCode.CANCEL });
  });
});
