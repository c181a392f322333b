import { once } from 'node:events';
import { Duplex, duplexPair } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { TunnelSocket } from '../../../agent-lib/pg-socket.js';
import { PosternError } from '../../../src/errors.js';

/** A dialer whose outcome the test decides; the "inner socket" is one end of an in-memory pair. */
function controlledDialer() {
  const [inner, far] = duplexPair({ highWaterMark: 16 * 1024 });
  const refs: string[] = [];
  Object.assign(inner, { ref: () => refs.push('ref'), unref: () => refs.push('unref') });
  let settle!: { resolve: (s: TLSSocket) => void; reject: (e: Error) => void };
  const calls: Array<{ target: string; signal: AbortSignal }> = [];
  const dialer = (target: string, signal: AbortSignal): Promise<TLSSocket> => {
    calls.push({ target, signal });
    return new Promise((resolve, reject) => (settle = { resolve, reject }));
  };
  return { inner, far, refs, calls, dialer, connect: () => settle.resolve(inner as unknown as TLSSocket), fail: (e: Error) => settle.reject(e) };
}

function readBytes(stream: Duplex, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      got += c.length;
      if (got >= n) {
        stream.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    stream.on('data', onData);
  });
}

describe('TunnelSocket (the socket node-postgres gets)', () => {
  it("dials host:port on connect(), holds writes made before the dial, emits 'connect', then carries bytes both ways", async () => {
    const d = controlledDialer();
    const socket = new TunnelSocket(d.dialer);
    expect(socket.setNoDelay(true)).toBe(socket);
    socket.connect(5432, 'postgres.internal');
    expect(socket.connecting).toBe(true);
    expect(d.calls.map((c) => c.target)).toEqual(['postgres.internal:5432']);
    socket.write('early');
    const connected = once(socket, 'connect');
    const farGot = readBytes(d.far, 10);
    d.connect();
    await connected;
    expect(socket.connecting).toBe(false);
    socket.write('later');
    expect((await farGot).toString()).toBe('earlylater');
    const back = readBytes(socket, 4);
    d.far.write('pong');
    expect((await back).toString()).toBe('pong');
  });

  it('brackets an IPv6 host', () => {
    const d = controlledDialer();
    new TunnelSocket(d.dialer).connect(5432, '::1');
    expect(d.calls[0]!.target).toBe('[::1]:5432');
  });

  it("a failed dial is the socket's 'error' and 'close'; 'connect' never fires", async () => {
    const d = controlledDialer();
    const socket = new TunnelSocket(d.dialer);
    let connected = false;
    socket.on('connect', () => (connected = true));
    socket.connect(5432, 'db');
    const failure = new PosternError('POSTERN_ERR_OPEN_TARGET_REFUSED', 'refused');
    const errored = once(socket, 'error');
    // events.once would reject on 'error': listen to 'close' by hand.
    const closed = new Promise((resolve) => socket.once('close', resolve));
    d.fail(failure);
    expect((await errored)[0]).toBe(failure);
    await closed;
    expect(connected).toBe(false);
  });

  it('destroy() during the dial aborts it, and a dial that still succeeds is closed at once', async () => {
    const d = controlledDialer();
    const socket = new TunnelSocket(d.dialer);
    socket.connect(5432, 'db');
    socket.destroy();
    expect(d.calls[0]!.signal.aborted).toBe(true);
    d.connect();
    await once(d.inner, 'close');
  });

  it('write backpressure: write() turns false when the far end does not read, and drains when it does', async () => {
    const d = controlledDialer();
    const socket = new TunnelSocket(d.dialer);
    socket.connect(1, 'x');
    d.connect();
    await once(socket, 'connect');
    const chunk = Buffer.alloc(8 * 1024, 1);
    let accepted = 0;
    while (socket.write(chunk)) accepted += chunk.length;
    // Bounded by the inner socket's buffer plus the facade's: nowhere near "everything".
    expect(accepted).toBeLessThan(256 * 1024);
    const drained = once(socket, 'drain');
    d.far.resume();
    await drained;
  });

  it('read backpressure: a reader that stops reading pauses the inner socket, so the far end sees write() false', async () => {
    const d = controlledDialer();
    const socket = new TunnelSocket(d.dialer);
    socket.connect(1, 'x');
    d.connect();
    await once(socket, 'connect');
    // Nobody reads the facade: it fills to its high-water mark and pauses the inner socket.
    const chunk = Buffer.alloc(8 * 1024, 2);
    let sent = 0;
    while (sent < 8 * 1024 * 1024 && d.far.write(chunk)) {
      sent += chunk.length;
      await new Promise((r) => setImmediate(r));
    }
    expect(sent).toBeLessThan(512 * 1024);
    const drained = once(d.far, 'drain');
    let got = 0;
    socket.on('data', (c: Buffer) => (got += c.length));
    await drained;
    expect(got).toBeGreaterThan(0);
  });

  it("the far end's EOF ends the socket, which ends its own side (net.Socket's allowHalfOpen false)", async () => {
    const d = controlledDialer();
    const socket = new TunnelSocket(d.dialer);
    socket.connect(1, 'x');
    d.connect();
    await once(socket, 'connect');
    socket.resume();
    const farEnded = once(d.far, 'end');
    d.far.resume();
    d.far.end();
    await once(socket, 'end');
    await farEnded;
  });

  it('unref() and ref() reach the inner socket, also when called before the dial completed', async () => {
    const d = controlledDialer();
    const socket = new TunnelSocket(d.dialer);
    socket.unref();
    socket.connect(1, 'x');
    d.connect();
    await once(socket, 'connect');
    socket.ref();
    expect(d.refs).toEqual(['unref', 'ref']);
  });
});
