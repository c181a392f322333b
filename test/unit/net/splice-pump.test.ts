import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { duplexPair } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { splice } from '../../../src/net/splice.js';

describe('splice pumps', () => {
  it('pauses the source while the other side does not read, then delivers every byte in order', async () => {
    const [a, aPeer] = duplexPair();
    const [b, bPeer] = duplexPair();
    const done = splice(a, b);
    bPeer.pause();
    const payload = randomBytes(1 << 20);
    const paused = once(a, 'pause');
    for (let at = 0; at < payload.length; at += 16 * 1024) aPeer.write(payload.subarray(at, at + 16 * 1024));
    aPeer.end();
    await paused;
    // Held back: no more than the streams' own buffers (16 KiB high-water marks) plus a chunk in flight.
    expect(bPeer.readableLength + b.writableLength).toBeLessThanOrEqual(64 * 1024);
    const received: Buffer[] = [];
    bPeer.on('data', (c: Buffer) => received.push(c));
    bPeer.resume();
    await once(bPeer, 'end');
    expect(Buffer.concat(received).equals(payload)).toBe(true);
    bPeer.end();
    aPeer.resume();
    const result = await done;
    expect(result).toMatchObject({ aToB: payload.length, bToA: 0 });
    expect(result.error).toBeUndefined();
  });

  it('starts a source that was paused before the splice (a socket accepted with pauseOnConnect)', async () => {
    const [a, aPeer] = duplexPair();
    const [b, bPeer] = duplexPair();
    a.pause();
    const done = splice(a, b);
    const got = once(bPeer, 'data');
    aPeer.write('hello');
    expect(String((await got)[0])).toBe('hello');
    aPeer.end();
    bPeer.end();
    aPeer.resume();
    bPeer.resume();
    expect((await done).aToB).toBe(5);
  });
});
