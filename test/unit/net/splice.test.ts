import { afterEach, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { duplexPair } from 'node:stream';
import { splice } from '../../../src/net/splice.js';

const servers: Server[] = [];
const sockets = new Set<Socket>();
afterEach(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
});

/** A TCP server on 127.0.0.1:0; returns the port and the server-side sockets as they arrive. */
async function listen(onSocket: (s: Socket) => void): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (s) => { sockets.add(s); onSocket(s); });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => resolve(s));
    sockets.add(s);
    s.once('error', reject);
  });
}

describe('splice', () => {
  it('copies both ways byte-exact with half-close: an answer sent only after EOF arrives whole', async () => {
    // target: reads until EOF, then answers with the SHA-256 of what it got plus 1 MiB.
    const answer = randomBytes(1 << 20);
    const targetPort = await listen((s) => {
      const hash = createHash('sha256');
      s.on('data', (c) => hash.update(c));
      s.on('end', () => { s.write(hash.digest()); s.end(answer); });
    });
    // middle: accepts a client and splices it onto a fresh connection to the target.
    let middleResult: Promise<{ aToB: number; bToA: number; error?: Error }> | undefined;
    const middlePort = await listen((client) => {
      middleResult = dial(targetPort).then((upstream) => splice(client, upstream));
    });

    const client = await dial(middlePort);
    const payload = randomBytes(3 << 20);
    const received: Buffer[] = [];
    client.on('data', (c) => received.push(c));
    const ended = new Promise<void>((r) => client.once('end', () => r()));
    client.end(payload);
    await ended;
    client.destroy();

    const all = Buffer.concat(received);
    expect(all.subarray(0, 32)).toEqual(createHash('sha256').update(payload).digest());
    expect(all.subarray(32).equals(answer)).toBe(true);
    const result = await middleResult!;
    expect(result.error).toBeUndefined();
    expect(result.aToB).toBe(payload.length);
    expect(result.bToA).toBe(32 + answer.length);
  });

  it('destroys the other side when one side fails, with the mapped error', async () => {
    const [a] = duplexPair();
    const [b, bPeer] = duplexPair();
    const done = splice(a, b, { peerFailure: (side, cause) => new Error(`peer ${side} failed: ${cause.message}`) });
    const bError = new Promise<Error>((resolve) => b.once('error', resolve));
    a.destroy(new Error('boom'));
    const result = await done;
    expect(result.failedSide).toBe('a');
    expect(result.error?.message).toBe('boom');
    expect((await bError).message).toBe('peer a failed: boom');
    bPeer.destroy();
  });
});
