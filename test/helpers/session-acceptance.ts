import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { isPosternError } from '../../src/errors.js';
import { OpenError, SessionError, StreamError } from '../../src/mux/errors.js';
import { Session, type IncomingOpen, type SessionOptions } from '../../src/mux/session.js';
import type { MuxStream } from '../../src/mux/stream.js';
import type { FrameTransport } from '../../src/mux/transport.js';
import { DEFAULT_DECODE_LIMITS, EARLY_DATA_BYTES, decodeFrame, encodeFrame, type Frame } from '../../src/protocol/index.js';
import { GoAwayReason, OpenResult, ResetCode } from '../../src/protocol/reasons.js';
import { FakeClock, SeededBytes } from './mux.js';

/** A connected pair of frame transports (in memory, or both ends of a real wss connection). */
export interface TransportPair {
  client: FrameTransport;
  server: FrameTransport;
  close(): Promise<void>;
}

export interface AcceptanceOptions {
  /** Concurrent streams of the bulk test (default 1000). */
  bulkStreams?: number;
  /** Bytes each way per stream in the bulk test (default 1 MiB). */
  bulkBytes?: number;
}

type Find<T extends Frame['type']> = Extract<Frame, { type: T }>;

/** Keepalive far away unless a test is about it: fake time advanced for other timers must not kill sessions. */
const QUIET: Partial<SessionOptions> = { pingIntervalMs: 3_000_000, deadPeerTimeoutMs: 3_600_000 };

/** Waits, turn by turn of the event loop (never a timed sleep), until `cond` holds. */
export async function until(cond: () => boolean, what: string, maxTurns = 2_000_000): Promise<void> {
  for (let i = 0; i < maxTurns; i++) {
    if (cond()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`gave up waiting for: ${what}`);
}

export function onceDrain(stream: Duplex): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error('stream closed while waiting for drain'));
    stream.on('drain', onDrain);
    stream.on('close', onClose);
  });
}

/** Writes `size` seeded bytes in `chunk`-sized writes honouring backpressure, then ends; returns their SHA-256. */
export async function writeSeeded(stream: Duplex, seed: string, size: number, chunk = 64 * 1024, onWrite?: (n: number, accepted: boolean) => void): Promise<string> {
  const gen = new SeededBytes(seed);
  const hash = createHash('sha256');
  for (let left = size; left > 0; ) {
    const n = Math.min(chunk, left);
    const buf = gen.next(n);
    hash.update(buf);
    left -= n;
    const ok = stream.write(buf);
    onWrite?.(n, ok);
    if (!ok) await onceDrain(stream);
  }
  stream.end();
  return hash.digest('hex');
}

/** Reads a stream to its end; resolves with the SHA-256 and the byte count. */
export function readAll(stream: Duplex): Promise<{ digest: string; bytes: number; text: string }> {
  const hash = createHash('sha256');
  const head: Buffer[] = [];
  let bytes = 0;
  stream.on('data', (d: Buffer) => {
    hash.update(d);
    if (bytes < 4096) head.push(d);
    bytes += d.length;
  });
  return new Promise((resolve, reject) => {
    stream.once('end', () => resolve({ digest: hash.digest('hex'), bytes, text: Buffer.concat(head).toString('utf8').slice(0, 4096) }));
    stream.once('error', reject);
  });
}

function errorOf(stream: Duplex): Promise<Error> {
  return new Promise((resolve) => stream.once('error', resolve));
}

/** The far end of a transport driven by hand: decodes what the session sends, sends crafted frames. */
export class RawPeer {
  readonly frames: Frame[] = [];
  closed = false;
  closeError: Error | undefined;
  private cursor = 0;

  constructor(readonly transport: FrameTransport) {
    transport.setHandlers({
      frame: (data) => this.frames.push(decodeFrame(data, DEFAULT_DECODE_LIMITS)),
      drain: () => {},
      close: (err) => {
        this.closed = true;
        this.closeError = err;
      },
    });
  }

  send(frame: Frame | Buffer): void {
    this.transport.send(Buffer.isBuffer(frame) ? frame : encodeFrame(frame));
  }

  /** The next frame of `type` (after those already returned) that satisfies `match`. */
  async next<T extends Frame['type']>(type: T, match: (f: Find<T>) => boolean = () => true): Promise<Find<T>> {
    let found: Find<T> | undefined;
    await until(() => {
      for (let i = this.cursor; i < this.frames.length; i++) {
        const f = this.frames[i]!;
        if (f.type === type && match(f as Find<T>)) {
          found = f as Find<T>;
          this.cursor = i + 1;
          return true;
        }
      }
      return false;
    }, `a ${type} frame from the session`);
    return found!;
  }
}

/**
 * The session acceptance suite, for any transport: the in-memory pair (test/unit/mux) and a
 * real wss connection (the WebSocket adapter's tests) run the same cases.
 */
export function runSessionAcceptance(makePair: () => Promise<TransportPair>, options: AcceptanceOptions = {}): void {
  const bulkStreams = options.bulkStreams ?? 1000;
  const bulkBytes = options.bulkBytes ?? 1024 * 1024;
  const cleanups: Array<() => Promise<void> | void> = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function sessions(clientOptions: Partial<SessionOptions> = {}, serverOptions: Partial<SessionOptions> = {}) {
    const pair = await makePair();
    const clock = new FakeClock();
    const client = new Session(pair.client, { role: 'client', clock, ...QUIET, ...clientOptions });
    const server = new Session(pair.server, { role: 'server', clock, ...QUIET, maxOpensPerSecond: 1e6, ...serverOptions });
    cleanups.push(async () => {
      client.destroy();
      server.destroy();
      await pair.close();
    });
    return { pair, client, server, clock };
  }

  /** A client session facing a hand-driven server end, with one healthy stream each way. */
  async function sessionAndRawPeer(clientOptions: Partial<SessionOptions> = {}) {
    const pair = await makePair();
    const clock = new FakeClock();
    const session = new Session(pair.client, { role: 'client', clock, ...QUIET, ...clientOptions });
    const raw = new RawPeer(pair.server);
    cleanups.push(async () => {
      session.destroy();
      await pair.close();
    });
    const incoming: IncomingOpen[] = [];
    let autoAccept = true;
    const accepted = new Map<number, MuxStream>();
    session.on('open', (o) => {
      incoming.push(o);
      if (autoAccept) accepted.set(o.id, o.accept().on('error', () => {}));
    });
    const opening = session.open({ target: 'a' });
    const open1 = await raw.next('open');
    raw.send({ type: 'open-result', streamId: open1.streamId, result: 0, window: 65536, maxData: 65536, message: '', metadata: {} });
    const local = (await opening).on('error', () => {});
    raw.send({ type: 'open', streamId: 2, window: 65536, maxData: 65536, metadata: { target: 'b' } });
    await raw.next('open-result', (f) => f.streamId === 2);
    const remote = accepted.get(2)!;
    const localErr = errorOf(local);
    const remoteErr = errorOf(remote);
    const received = new Map<number, string>();
    for (const s of [local, remote]) s.on('data', (d: Buffer) => received.set(s.id, (received.get(s.id) ?? '') + d.toString()));

    /** The healthy streams (1 opened by the session, 2 by the peer) still carry data both ways. */
    async function healthy(tag: string, ids: number[] = [1, 2]): Promise<void> {
      for (const id of ids) {
        raw.send({ type: 'data', streamId: id, payload: Buffer.from(`in-${tag}`) });
        (id === 1 ? local : remote).write(`out-${tag}`);
      }
      await until(() => ids.every((id) => (received.get(id) ?? '').endsWith(`in-${tag}`)), 'data on the healthy streams');
      for (const id of ids) await raw.next('data', (f) => f.streamId === id && f.payload.toString() === `out-${tag}`);
      expect(session.closed).toBe(false);
    }

    /** The session failed with GOAWAY `reason` and `code`, and its streams ended with that error. */
    async function failedWith(code: string, reason: number = GoAwayReason.PROTOCOL_ERROR): Promise<void> {
      const goaway = await raw.next('goaway');
      expect(goaway.reason).toBe(reason);
      expect(session.closed).toBe(true);
      const [a, b] = await Promise.all([localErr, remoteErr]);
      expect((a as SessionError).code).toBe(code);
      expect((b as SessionError).code).toBe(code);
      expect(session.stats.violations).toBeGreaterThan(0);
    }

    return {
      session,
      raw,
      clock,
      local,
      remote,
      incoming,
      healthy,
      failedWith,
      setAutoAccept: (v: boolean) => {
        autoAccept = v;
      },
    };
  }

  describe('opening streams', () => {
    it('opens with metadata both ways, carries data both ways, and closes cleanly', async () => {
      const { client, server } = await sessions();
      server.on('open', (o) => {
        expect(o.metadata).toEqual({ connector: 'hq', target: 'postgres.internal:5432' });
        const s = o.accept({ 'correlation-id': 'c-1' });
        s.pipe(s); // echo
      });
      const stream = await client.open({ connector: 'hq', target: 'postgres.internal:5432' });
      expect(stream.id % 2).toBe(1);
      expect(stream.resultMetadata).toEqual({ 'correlation-id': 'c-1' });
      const reply = readAll(stream);
      stream.end('hello through the tunnel');
      expect((await reply).text).toBe('hello through the tunnel');
      await until(() => client.streamCount === 0 && server.streamCount === 0, 'both sides forget the stream');
      expect(client.stats.streamsOpened).toBe(1);
      expect(server.stats.streamsAccepted).toBe(1);
    });

    it('the server side opens streams too, with even ids', async () => {
      const { client, server } = await sessions();
      client.on('open', (o) => o.accept().end(`hello ${o.id}`));
      const [a, b] = await Promise.all([server.open({}), server.open({})]);
      expect([a.id, b.id]).toEqual([2, 4]);
      a.end();
      b.end();
      expect((await readAll(a)).text).toBe('hello 2');
      expect((await readAll(b)).text).toBe('hello 4');
    });

    it('a refused open rejects with OpenError carrying the code, the result and the peer text', async () => {
      const { client, server } = await sessions();
      server.on('open', (o) => setImmediate(() => o.reject(OpenResult.POLICY_DENIED, 'denied by rule db-admins')));
      const err = (await client.open({ target: 'x' }).catch((e: unknown) => e)) as OpenError;
      expect(err).toBeInstanceOf(OpenError);
      expect(err.code).toBe('POSTERN_ERR_OPEN_POLICY_DENIED');
      expect(err.result).toBe(OpenResult.POLICY_DENIED);
      expect(err.message).toBe('denied by rule db-admins');
      expect(client.streamCount).toBe(0);
      await until(() => server.streamCount === 0, 'server forgets the refused stream');
    });

    it('a side with no open listener refuses every open', async () => {
      const { client } = await sessions();
      await expect(client.open({})).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_POLICY_DENIED', message: 'this side accepts no streams' });
    });

    it('deciding twice or with result 0 is a misuse; metadata over the limits is refused locally', async () => {
      const { client, server } = await sessions();
      const seen: IncomingOpen[] = [];
      server.on('open', (o) => {
        seen.push(o);
        o.accept();
      });
      await client.open({});
      expect(() => seen[0]!.accept()).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_MUX_MISUSE' }));
      expect(() => seen[0]!.reject(0)).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_MUX_MISUSE' }));
      await expect(client.open({ Bad: 'x' })).rejects.toMatchObject({ code: 'POSTERN_ERR_PROTO_BAD_METADATA' });
    });
  });

  describe('bulk and flow control', () => {
    it(`${bulkStreams} concurrent streams each carry ${bulkBytes} seeded bytes both ways, byte-exact`, async () => {
      const { client, server } = await sessions({ maxStreams: Math.max(1024, bulkStreams) }, { maxStreams: Math.max(1024, bulkStreams) });
      const serverSide: Array<Promise<{ id: number; sent: string; got: string }>> = [];
      server.on('open', (o) => {
        const s = o.accept();
        serverSide.push(Promise.all([writeSeeded(s, `s2c-${s.id}`, bulkBytes), readAll(s)]).then(([sent, got]) => ({ id: s.id, sent, got: got.digest })));
      });
      const streams = await Promise.all(Array.from({ length: bulkStreams }, (_, i) => client.open({ n: String(i) })));
      const clientSide = await Promise.all(
        streams.map((s) => Promise.all([writeSeeded(s, `c2s-${s.id}`, bulkBytes), readAll(s)]).then(([sent, got]) => ({ id: s.id, sent, got: got.digest }))),
      );
      const serverResults = new Map((await Promise.all(serverSide)).map((r) => [r.id, r]));
      expect(serverResults.size).toBe(bulkStreams);
      for (const c of clientSide) {
        const s = serverResults.get(c.id)!;
        expect(s.got).toBe(c.sent);
        expect(c.got).toBe(s.sent);
      }
      await until(() => client.streamCount === 0 && server.streamCount === 0, 'every stream closed on both sides');
      expect(client.stats.bytesOut).toBe(bulkStreams * bulkBytes);
      expect(client.stats.bytesIn).toBe(bulkStreams * bulkBytes);
    });

    it('a stalled reader holds at most its window; its writer gets false from write(); other streams are not blocked', async () => {
      const window = 256 * 1024;
      const frame = 64 * 1024;
      const { client, server } = await sessions({ initialWindow: window }, { initialWindow: window });
      const accepted: MuxStream[] = [];
      server.on('open', (o) => accepted.push(o.accept()));
      const stalled = await client.open({ role: 'stalled' });
      await until(() => accepted.length === 1, 'stalled stream accepted');
      const stalledServer = accepted[0]!;
      let written = 0;
      let consumed = 0;
      let worst = 0;
      let lastAccepted = true;
      const writerDone = writeSeeded(stalled, 'stalled', 2 * 1024 * 1024, 16 * 1024, (n, accepted) => {
        written += n;
        lastAccepted = accepted;
        worst = Math.max(worst, written - consumed);
      });
      await until(() => stalled.credit === 0 && stalledServer.readableLength === window, 'the stalled stream used its whole window');
      await until(() => !lastAccepted, 'write() returned false');
      expect(written).toBe(window + 16 * 1024); // the window, plus the one write that found no credit

      // 20 other streams carry 1 MiB each way to the end while the stalled one stays stalled.
      const others = await Promise.all(Array.from({ length: 20 }, () => client.open({ role: 'other' })));
      await until(() => accepted.length === 21, 'others accepted');
      const results = await Promise.all(
        others.map(async (s) => {
          const peer = accepted.find((a) => a.id === s.id)!;
          const [sent, got, back, echoGot] = await Promise.all([writeSeeded(s, `o-${s.id}`, 1 << 20), readAll(peer), writeSeeded(peer, `b-${s.id}`, 1 << 20), readAll(s)]);
          return sent === got.digest && back === echoGot.digest;
        }),
      );
      expect(results.every(Boolean)).toBe(true);
      expect(stalledServer.readableLength).toBeLessThanOrEqual(window);
      expect(worst).toBeLessThanOrEqual(window + frame);
      expect(written).toBeLessThan(2 * 1024 * 1024);

      // The reader resumes: everything arrives, byte-exact, and the writer's drain came back.
      stalledServer.on('data', (d: Buffer) => {
        consumed += d.length;
      });
      const got = await readAll(stalledServer);
      expect(got.digest).toBe(await writerDone);
      expect(worst).toBeLessThanOrEqual(window + frame);
    });
  });

  describe('half-close and reset', () => {
    it('half-close both ways: a peer that answers only after EOF gets its whole answer through', async () => {
      const { client, server } = await sessions();
      server.on('open', (o) => {
        const s = o.accept();
        readAll(s).then(({ digest, bytes }) => s.end(`${bytes}:${digest}`));
      });
      const stream = await client.open({});
      const answer = readAll(stream);
      const sent = await writeSeeded(stream, 'request', 3 * 1024 * 1024 + 7);
      expect((await answer).text).toBe(`${3 * 1024 * 1024 + 7}:${sent}`);
      await until(() => client.streamCount === 0 && server.streamCount === 0, 'stream closed');
    });

    it('the side that ends first still receives everything the other sends afterwards', async () => {
      const { client, server } = await sessions();
      let serverGot: Promise<{ digest: string }> | undefined;
      server.on('open', (o) => {
        const s = o.accept();
        s.end(); // nothing to say
        serverGot = readAll(s);
      });
      const stream = await client.open({});
      const clientGot = readAll(stream);
      expect((await clientGot).bytes).toBe(0);
      const sent = await writeSeeded(stream, 'late', 1024 * 1024);
      expect((await serverGot!).digest).toBe(sent);
    });

    it('reset(code, text) reaches the peer as a StreamError with that code', async () => {
      const { client, server } = await sessions();
      const accepted: MuxStream[] = [];
      server.on('open', (o) => accepted.push(o.accept()));
      const stream = await client.open({});
      await until(() => accepted.length === 1, 'accepted');
      const peerErr = errorOf(accepted[0]!);
      const closed = new Promise((resolve) => stream.once('close', resolve));
      stream.reset(ResetCode.POLICY_CHANGED, 'rule db-admins removed');
      await closed;
      const err = (await peerErr) as StreamError;
      expect(err).toBeInstanceOf(StreamError);
      expect(err.code).toBe('POSTERN_ERR_STREAM_POLICY_CHANGED');
      expect(err.resetCode).toBe(ResetCode.POLICY_CHANGED);
      expect(err.remote).toBe(true);
      expect(err.message).toContain('rule db-admins removed');
      expect(stream.resetCode).toBe(ResetCode.POLICY_CHANGED);
      expect(accepted[0]!.resetCode).toBe(ResetCode.POLICY_CHANGED);
      await until(() => server.streamCount === 0 && client.streamCount === 0, 'forgotten');
    });

    it('destroy(err) sends err.resetCode (PEER_GONE), plain destroy() sends CANCEL', async () => {
      const { client, server } = await sessions();
      const accepted: MuxStream[] = [];
      server.on('open', (o) => accepted.push(o.accept()));
      const [a, b] = await Promise.all([client.open({}), client.open({})]);
      await until(() => accepted.length === 2, 'accepted');
      const [ea, eb] = [errorOf(accepted.find((s) => s.id === a.id)!), errorOf(accepted.find((s) => s.id === b.id)!)];
      a.on('error', () => {});
      a.destroy(Object.assign(new Error('target connection died'), { resetCode: ResetCode.PEER_GONE }));
      b.destroy();
      expect(await ea).toMatchObject({ code: 'POSTERN_ERR_STREAM_PEER_GONE', resetCode: ResetCode.PEER_GONE });
      expect((await ea).message).toContain('target connection died');
      expect(await eb).toMatchObject({ code: 'POSTERN_ERR_STREAM_CANCELLED', resetCode: ResetCode.CANCEL });
    });
  });

  describe('GOAWAY and close', () => {
    it('GOAWAY lets live streams finish and refuses new ones both ways', async () => {
      const { client, server } = await sessions();
      const accepted: MuxStream[] = [];
      server.on('open', (o) => accepted.push(o.accept()));
      const live = await client.open({});
      await until(() => accepted.length === 1, 'accepted');
      const goaway = new Promise((resolve) => client.once('goaway', resolve));
      server.goAway(GoAwayReason.DRAIN, 'rolling deploy');
      expect(await goaway).toEqual({ lastStreamId: live.id, reason: GoAwayReason.DRAIN, message: 'rolling deploy' });
      await expect(client.open({})).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_GOING_AWAY', result: OpenResult.GOING_AWAY });
      await expect(server.open({})).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_GOING_AWAY' });
      expect(client.goingAway && server.goingAway).toBe(true);
      // The live stream still works both ways to its end.
      const peer = accepted[0]!;
      const [sent, got, back, got2] = await Promise.all([writeSeeded(live, 'live', 1 << 20), readAll(peer), writeSeeded(peer, 'back', 1 << 20), readAll(live)]);
      expect(got.digest).toBe(sent);
      expect(got2.digest).toBe(back);
      const clientClosed = new Promise<Error | undefined>((resolve) => client.once('close', resolve));
      await server.close();
      expect(await clientClosed).toBeUndefined();
    });

    it('close() waits for live streams, then closes; with timeoutMs it resets them with DRAIN_TIMEOUT', async () => {
      const { client, server, clock } = await sessions();
      const accepted: MuxStream[] = [];
      server.on('open', (o) => accepted.push(o.accept()));
      const stream = await client.open({});
      await until(() => accepted.length === 1, 'accepted');
      let closed = false;
      const closing = server.close({ timeoutMs: 30_000 }).then(() => {
        closed = true;
      });
      const err = errorOf(stream);
      await new Promise((resolve) => setImmediate(resolve));
      expect(closed).toBe(false);
      accepted[0]!.on('error', () => {});
      clock.advance(30_000);
      expect(await err).toMatchObject({ code: 'POSTERN_ERR_STREAM_DRAIN_TIMEOUT', resetCode: ResetCode.DRAIN_TIMEOUT });
      await closing;
      expect(server.closed).toBe(true);
    });

    it('terminate(REVOKED) ends the peer session and its streams with SESSION_REVOKED', async () => {
      const { client, server } = await sessions();
      server.on('open', (o) => o.accept().on('error', () => {}));
      const stream = await client.open({});
      const err = errorOf(stream);
      const closed = new Promise<Error | undefined>((resolve) => client.once('close', resolve));
      server.terminate(GoAwayReason.REVOKED, 'certificate serial 1f revoked');
      const closeErr = await closed;
      expect(closeErr).toMatchObject({ code: 'POSTERN_ERR_SESSION_REVOKED' });
      expect(closeErr?.message).toContain('certificate serial 1f revoked');
      expect(await err).toMatchObject({ code: 'POSTERN_ERR_SESSION_REVOKED' });
      await expect(client.open({})).rejects.toMatchObject({ code: 'POSTERN_ERR_SESSION_CLOSED' });
    });

    it('a transport that dies under live streams ends them with SESSION_CLOSED', async () => {
      const { client, server, pair } = await sessions();
      server.on('open', (o) => o.accept().on('error', () => {}));
      const stream = await client.open({});
      const err = errorOf(stream);
      const closed = new Promise((resolve) => client.once('close', resolve));
      pair.server.destroy(new Error('network gone'));
      await closed;
      expect(await err).toMatchObject({ code: 'POSTERN_ERR_SESSION_CLOSED' });
      expect(isPosternError(await err)).toBe(true);
    });

    it('every timer is cleared after close, including pending opens', async () => {
      const { client, server, clock } = await sessions();
      server.on('open', () => {}); // never decides: a pending open with its timer on both sides
      const pending = client.open({}).catch((e: unknown) => e);
      await until(() => server.streamCount === 1, 'open pending on the server');
      expect(clock.pendingTimers).toBeGreaterThanOrEqual(6); // 2 × (ping, dead peer) + 2 open timers
      client.destroy();
      expect(await pending).toBeInstanceOf(SessionError);
      await until(() => server.closed, 'server sees the close');
      expect(clock.pendingTimers).toBe(0);
    });

    it('stream ids run out: the open fails, GOAWAY IDS_EXHAUSTED tells the peer', async () => {
      const { client, server } = await sessions({ maxStreamId: 3 });
      server.on('open', (o) => o.accept());
      await client.open({});
      await client.open({});
      const goaway = new Promise<{ reason: number }>((resolve) => server.once('goaway', resolve));
      await expect(client.open({})).rejects.toMatchObject({ code: 'POSTERN_ERR_STREAM_IDS_EXHAUSTED', result: OpenResult.GOING_AWAY });
      expect((await goaway).reason).toBe(GoAwayReason.IDS_EXHAUSTED);
    });
  });

  describe('timeouts and keepalive (fake clock)', () => {
    it('ping() measures the round trip; keepalive PINGs keep a healthy idle session alive', async () => {
      const keepalive = { pingIntervalMs: 5_000, deadPeerTimeoutMs: 15_000 };
      const { client, server, clock } = await sessions(keepalive, keepalive);
      const rtt = client.ping();
      expect(await rtt).toBeGreaterThanOrEqual(0);
      for (let i = 0; i < 10; i++) {
        const seen = new Promise((resolve) => client.once('rtt', resolve));
        clock.advance(5_000);
        await seen;
      }
      expect(client.closed || server.closed).toBe(false);
      expect(client.rttMs).toBeDefined();
    });

    it('a peer that stops answering is declared dead exactly at deadPeerTimeoutMs', async () => {
      const { session, raw, clock } = await sessionAndRawPeer({ pingIntervalMs: 5_000, deadPeerTimeoutMs: 15_000 });
      clock.advance(14_999);
      await raw.next('ping');
      expect(session.closed).toBe(false);
      const closed = new Promise<Error | undefined>((resolve) => session.once('close', resolve));
      clock.advance(1);
      expect(await closed).toMatchObject({ code: 'POSTERN_ERR_SESSION_PING_TIMEOUT' });
    });

    it('any frame from the peer postpones the dead-peer verdict', async () => {
      const { session, raw, clock } = await sessionAndRawPeer({ pingIntervalMs: 5_000, deadPeerTimeoutMs: 15_000 });
      clock.advance(10_000);
      const before = session.stats.framesIn;
      raw.send({ type: 'data', streamId: 1, payload: Buffer.from('x') });
      await until(() => session.stats.framesIn === before + 1, 'frame delivered');
      clock.advance(14_000);
      expect(session.closed).toBe(false);
      clock.advance(1_000);
      expect(session.closed).toBe(true);
    });

    it('an open left unanswered times out: OPEN_TIMEOUT locally, RESET CANCEL to the peer', async () => {
      const { session, raw, clock } = await sessionAndRawPeer({ openTimeoutMs: 2_000 });
      const opening = session.open({}).catch((e: unknown) => e);
      const open = await raw.next('open');
      clock.advance(2_000);
      expect(await opening).toMatchObject({ code: 'POSTERN_ERR_OPEN_TIMEOUT', result: OpenResult.OPEN_TIMEOUT });
      const reset = await raw.next('reset', (f) => f.streamId === open.streamId);
      expect(reset.code).toBe(ResetCode.CANCEL);
      // Its late OPEN_RESULT is discarded, not a violation.
      raw.send({ type: 'open-result', streamId: open.streamId, result: 0, window: 1024, maxData: 1024, message: '', metadata: {} });
      await until(() => session.stats.framesDiscarded === 1, 'late OPEN_RESULT discarded');
      expect(session.stats.violations).toBe(0);
    });

    it('an incoming open not decided in time is refused with OPEN_TIMEOUT and its signal aborts', async () => {
      const { raw, clock, incoming, setAutoAccept } = await sessionAndRawPeer({ openTimeoutMs: 3_000 });
      setAutoAccept(false);
      raw.send({ type: 'open', streamId: 4, window: 1024, maxData: 1024, metadata: {} });
      await until(() => incoming.length === 2, 'open delivered');
      const pending = incoming[1]!;
      clock.advance(3_000);
      expect((await raw.next('open-result', (f) => f.streamId === 4)).result).toBe(OpenResult.OPEN_TIMEOUT);
      expect(pending.signal.aborted).toBe(true);
      expect(() => pending.accept()).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_OPEN_TIMEOUT' }));
    });

    it('an abort signal cancels an open: CANCELLED locally, RESET CANCEL to the peer', async () => {
      const { session, raw } = await sessionAndRawPeer();
      const ac = new AbortController();
      const opening = session.open({}, { signal: ac.signal }).catch((e: unknown) => e);
      const open = await raw.next('open');
      ac.abort();
      expect(await opening).toMatchObject({ code: 'POSTERN_ERR_OPEN_CANCELLED' });
      expect((await raw.next('reset', (f) => f.streamId === open.streamId)).code).toBe(ResetCode.CANCEL);
    });

    it('the opener cancelling a pending incoming open aborts its signal', async () => {
      const { raw, incoming, setAutoAccept, healthy } = await sessionAndRawPeer();
      setAutoAccept(false);
      raw.send({ type: 'open', streamId: 4, window: 1024, maxData: 1024, metadata: {} });
      await until(() => incoming.length === 2, 'open delivered');
      raw.send({ type: 'reset', streamId: 4, code: ResetCode.CANCEL, message: '' });
      await until(() => incoming[1]!.signal.aborted, 'signal aborted');
      expect(incoming[1]!.signal.reason).toMatchObject({ code: 'POSTERN_ERR_OPEN_CANCELLED' });
      await healthy('after-cancel');
    });
  });

  describe('limits (LIMIT_REACHED)', () => {
    it('maxStreams: the peer cannot open more live streams than the limit', async () => {
      const { raw, healthy } = await sessionAndRawPeer({ maxStreams: 1 });
      raw.send({ type: 'open', streamId: 4, window: 1024, maxData: 1024, metadata: {} });
      const refused = await raw.next('open-result', (f) => f.streamId === 4);
      expect(refused.result).toBe(OpenResult.LIMIT_REACHED);
      expect(refused.message).toMatch(/maxStreams \(1\)/);
      await healthy('max-streams');
    });

    it('maxStreams: this side cannot open more than the limit either', async () => {
      const { session } = await sessionAndRawPeer({ maxStreams: 1 });
      await expect(session.open({})).rejects.toMatchObject({ code: 'POSTERN_ERR_OPEN_LIMIT_REACHED', result: OpenResult.LIMIT_REACHED });
    });

    it('maxPendingOpens: undecided opens are bounded', async () => {
      const { raw, setAutoAccept, healthy } = await sessionAndRawPeer({ maxPendingOpens: 1 });
      setAutoAccept(false);
      raw.send({ type: 'open', streamId: 4, window: 1024, maxData: 1024, metadata: {} });
      raw.send({ type: 'open', streamId: 6, window: 1024, maxData: 1024, metadata: {} });
      const refused = await raw.next('open-result', (f) => f.streamId === 6);
      expect(refused.result).toBe(OpenResult.LIMIT_REACHED);
      expect(refused.message).toMatch(/maxPendingOpens \(1\)/);
      await healthy('pending');
    });

    it('maxOpensPerSecond: opens beyond the rate are refused until time passes', async () => {
      const { raw, clock, healthy } = await sessionAndRawPeer({ maxOpensPerSecond: 3 });
      // The healthy setup used one token; two remain in this second.
      for (const id of [4, 6, 8]) raw.send({ type: 'open', streamId: id, window: 1024, maxData: 1024, metadata: {} });
      const results = await Promise.all([4, 6, 8].map((id) => raw.next('open-result', (f) => f.streamId === id)));
      expect(results.map((r) => r.result)).toEqual([OpenResult.OK, OpenResult.OK, OpenResult.LIMIT_REACHED]);
      expect(results[2]!.message).toMatch(/maxOpensPerSecond \(3\)/);
      clock.advance(1_000);
      raw.send({ type: 'open', streamId: 10, window: 1024, maxData: 1024, metadata: {} });
      expect((await raw.next('open-result', (f) => f.streamId === 10)).result).toBe(OpenResult.OK);
      await healthy('rate');
    });

    it('an OPEN after this side sent GOAWAY is refused with GOING_AWAY', async () => {
      const { session, raw, healthy } = await sessionAndRawPeer();
      session.goAway();
      expect((await raw.next('goaway')).lastStreamId).toBe(2);
      raw.send({ type: 'open', streamId: 4, window: 1024, maxData: 1024, metadata: {} });
      expect((await raw.next('open-result', (f) => f.streamId === 4)).result).toBe(OpenResult.GOING_AWAY);
      await healthy('after-goaway');
    });

    it("a peer's GOAWAY fails this side's opens above its lastStreamId at once", async () => {
      const { session, raw, healthy } = await sessionAndRawPeer();
      const opening = session.open({}).catch((e: unknown) => e);
      await raw.next('open', (f) => f.streamId === 3);
      raw.send({ type: 'goaway', streamId: 0, lastStreamId: 1, reason: GoAwayReason.DRAIN, message: '' });
      expect(await opening).toMatchObject({ code: 'POSTERN_ERR_OPEN_GOING_AWAY' });
      await healthy('peer-goaway');
    });
  });

  describe('protocol violations (docs/protocol.md §9)', () => {
    const sessionLevel: Array<[string, Buffer | Frame, string, Partial<SessionOptions>?]> = [
      ['a truncated frame', Buffer.from('0300000000', 'hex'), 'POSTERN_ERR_PROTO_FRAME_TRUNCATED'],
      ['a DATA payload over maxFrameSize', encodeFrame({ type: 'data', streamId: 1, payload: Buffer.alloc(4097) }), 'POSTERN_ERR_PROTO_FRAME_TOO_LARGE', { maxFrameSize: 4096 }],
      ['an unknown frame type', Buffer.from('2a0000000001', 'hex'), 'POSTERN_ERR_PROTO_UNKNOWN_FRAME_TYPE'],
      ['non-zero flags', Buffer.from('030100000001ff', 'hex'), 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
      ['a RESET text that is not UTF-8', Buffer.from('06000000000100010002c328', 'hex'), 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
      ['an OPEN with an id of the wrong parity', { type: 'open', streamId: 5, window: 1024, maxData: 1024, metadata: {} }, 'POSTERN_ERR_PROTO_STREAM_ID_PARITY'],
      ['an OPEN reusing an id', { type: 'open', streamId: 2, window: 1024, maxData: 1024, metadata: {} }, 'POSTERN_ERR_PROTO_STREAM_ID_REUSED'],
      ['DATA on a stream never opened (peer parity)', { type: 'data', streamId: 100, payload: Buffer.from('x') }, 'POSTERN_ERR_PROTO_STREAM_UNKNOWN'],
      ['DATA on a stream never opened (own parity)', { type: 'data', streamId: 99, payload: Buffer.from('x') }, 'POSTERN_ERR_PROTO_STREAM_UNKNOWN'],
      ['an OPEN_RESULT on an open stream', { type: 'open-result', streamId: 1, result: 0, window: 1024, maxData: 1024, message: '', metadata: {} }, 'POSTERN_ERR_PROTO_UNEXPECTED_FRAME'],
      ['an OPEN_RESULT on a stream the peer opened', { type: 'open-result', streamId: 2, result: 0, window: 1024, maxData: 1024, message: '', metadata: {} }, 'POSTERN_ERR_PROTO_UNEXPECTED_FRAME'],
    ];
    it.each(sessionLevel)('%s closes the session with GOAWAY PROTOCOL_ERROR (%s)', async (_name, bytes, code, opts) => {
      const { raw, failedWith } = await sessionAndRawPeer(opts ?? {});
      raw.send(bytes);
      await failedWith(code);
    });

    const streamLevel: Array<[string, (ids: { local: number; remote: number }) => Frame, 'local' | 'remote', number, string]> = [
      ['DATA beyond the credit granted', ({ remote }) => ({ type: 'data', streamId: remote, payload: Buffer.alloc(EARLY_DATA_BYTES + 1) }), 'remote', ResetCode.FLOW_CONTROL_ERROR, 'POSTERN_ERR_PROTO_FLOW_CONTROL'],
      ['a WINDOW_UPDATE overflowing 2^31-1', ({ local }) => ({ type: 'window-update', streamId: local, increment: 0x7fff_ffff }), 'local', ResetCode.FLOW_CONTROL_ERROR, 'POSTERN_ERR_PROTO_FLOW_CONTROL'],
    ];
    it.each(streamLevel)('%s resets only that stream', async (_name, make, which, resetCode, code) => {
      const { session, raw, incoming, healthy } = await sessionAndRawPeer({ initialWindow: EARLY_DATA_BYTES });
      // A third and a fourth stream are the victims; the two healthy ones must not notice.
      raw.send({ type: 'open', streamId: 4, window: 65536, maxData: 65536, metadata: {} });
      await raw.next('open-result', (f) => f.streamId === 4);
      const theirs = await (async () => {
        await until(() => incoming.length === 2, 'stream 4 accepted');
        return incoming[1]!;
      })();
      const opening = session.open({});
      const open = await raw.next('open');
      raw.send({ type: 'open-result', streamId: open.streamId, result: 0, window: 65536, maxData: 65536, message: '', metadata: {} });
      const mine = (await opening).on('error', () => {});
      const victimId = which === 'remote' ? theirs.id : mine.id;
      raw.send(make({ local: mine.id, remote: theirs.id }));
      const reset = await raw.next('reset', (f) => f.streamId === victimId);
      expect(reset.code).toBe(resetCode);
      expect(reset.message).toMatch(/credit|WINDOW_UPDATE/);
      expect(session.stats.violations).toBe(1);
      await healthy(code);
      expect(session.streamCount).toBe(3);
    });

    it('DATA after the peer FIN resets the stream with STREAM_CLOSED', async () => {
      const { session, raw, remote, healthy } = await sessionAndRawPeer();
      const err = errorOf(remote);
      remote.resume();
      raw.send({ type: 'fin', streamId: 2 });
      raw.send({ type: 'data', streamId: 2, payload: Buffer.from('late') });
      expect((await raw.next('reset', (f) => f.streamId === 2)).code).toBe(ResetCode.STREAM_CLOSED);
      expect(await err).toMatchObject({ code: 'POSTERN_ERR_PROTO_STREAM_CLOSED', resetCode: ResetCode.STREAM_CLOSED, remote: false });
      expect(session.stats.violations).toBe(1);
      await healthy('after-fin', [1]);
    });

    it('FIN or WINDOW_UPDATE before OPEN_RESULT resets that stream with PROTOCOL_ERROR', async () => {
      const { raw, incoming, setAutoAccept, healthy } = await sessionAndRawPeer();
      setAutoAccept(false);
      raw.send({ type: 'open', streamId: 4, window: 65536, maxData: 65536, metadata: {} });
      raw.send({ type: 'fin', streamId: 4 });
      expect((await raw.next('reset', (f) => f.streamId === 4)).code).toBe(ResetCode.PROTOCOL_ERROR);
      await until(() => incoming.length === 2, 'open delivered');
      expect(incoming[1]!.signal.reason).toMatchObject({ code: 'POSTERN_ERR_PROTO_UNEXPECTED_FRAME' });
      raw.send({ type: 'open', streamId: 6, window: 65536, maxData: 65536, metadata: {} });
      raw.send({ type: 'window-update', streamId: 6, increment: 10 });
      expect((await raw.next('reset', (f) => f.streamId === 6)).code).toBe(ResetCode.PROTOCOL_ERROR);
      await healthy('before-result');
    });

    it('early DATA behind an OPEN is held until the decision: the accepted stream starts with it, within its window', async () => {
      const { session, raw, incoming, setAutoAccept, healthy } = await sessionAndRawPeer({ initialWindow: 65536 });
      setAutoAccept(false);
      raw.send({ type: 'open', streamId: 4, window: 65536, maxData: 65536, metadata: {} });
      raw.send({ type: 'data', streamId: 4, payload: Buffer.from('client ') });
      raw.send({ type: 'data', streamId: 4, payload: Buffer.from('hello') });
      await until(() => incoming.length === 2 && session.stats.bytesIn >= 12, 'open and early data delivered');
      const stream = incoming[1]!.accept();
      const overrun = errorOf(stream);
      raw.send({ type: 'data', streamId: 4, payload: Buffer.from(' and more') });
      const got: Buffer[] = [];
      stream.on('data', (d: Buffer) => got.push(d));
      await until(() => Buffer.concat(got).toString() === 'client hello and more', 'early data, then the rest');
      // The early bytes used the window announced in OPEN_RESULT: one frame of the rest of it plus one byte overruns it.
      const result = await raw.next('open-result', (f) => f.streamId === 4);
      raw.send({ type: 'data', streamId: 4, payload: Buffer.alloc(result.window - 21 + 1) });
      expect((await raw.next('reset', (f) => f.streamId === 4)).code).toBe(ResetCode.FLOW_CONTROL_ERROR);
      expect(await overrun).toMatchObject({ code: 'POSTERN_ERR_PROTO_FLOW_CONTROL', message: expect.stringMatching(new RegExp(`exceeds the ${result.window - 21} bytes`)) });
      await healthy('early-accepted');
    });

    it('forwardEarlyData hands over the early bytes so far and those that follow; the accepted stream carries only what came after', async () => {
      const { session, raw, incoming, setAutoAccept } = await sessionAndRawPeer();
      setAutoAccept(false);
      raw.send({ type: 'open', streamId: 4, window: 65536, maxData: 65536, metadata: {} });
      raw.send({ type: 'data', streamId: 4, payload: Buffer.from('Client') });
      await until(() => incoming.length === 2 && session.stats.bytesIn >= 6, 'early data delivered');
      const forwarded: string[] = [];
      incoming[1]!.forwardEarlyData((chunk) => forwarded.push(chunk.toString()));
      expect(forwarded).toEqual(['Client']);
      raw.send({ type: 'data', streamId: 4, payload: Buffer.from('Hello') });
      await until(() => forwarded.length === 2, 'the next early chunk forwarded as it came');
      const stream = incoming[1]!.accept();
      raw.send({ type: 'data', streamId: 4, payload: Buffer.from('after') });
      expect(stream.bytesRead).toBe(11);
      const got: Buffer[] = [];
      stream.on('data', (d: Buffer) => got.push(d));
      await until(() => Buffer.concat(got).toString() === 'after', 'only the bytes sent after the accept');
      expect(forwarded).toEqual(['Client', 'Hello']);
    });

    it('early DATA of a refused open is discarded, not a violation', async () => {
      const { session, raw, incoming, setAutoAccept, healthy } = await sessionAndRawPeer();
      setAutoAccept(false);
      raw.send({ type: 'open', streamId: 4, window: 65536, maxData: 65536, metadata: {} });
      raw.send({ type: 'data', streamId: 4, payload: Buffer.from('ClientHello') });
      await until(() => incoming.length === 2 && session.stats.bytesIn >= 11, 'early data delivered');
      incoming[1]!.reject(OpenResult.POLICY_DENIED, 'no');
      expect((await raw.next('open-result', (f) => f.streamId === 4)).result).toBe(OpenResult.POLICY_DENIED);
      raw.send({ type: 'data', streamId: 4, payload: Buffer.from('in flight') });
      await until(() => session.stats.framesDiscarded === 1, 'late early data discarded');
      expect(session.stats.violations).toBe(0);
      await healthy('early-refused');
    });

    it.each([
      ['more than EARLY_DATA_BYTES in all', Array.from({ length: EARLY_DATA_BYTES / 1024 + 1 }, () => 1024), /beyond 16384 bytes/],
      ['a frame above 1024 bytes', [1025], /at most 1024/],
    ])('early DATA of %s resets that stream with FLOW_CONTROL_ERROR', async (_name, sizes, text) => {
      const { raw, incoming, setAutoAccept, healthy } = await sessionAndRawPeer();
      setAutoAccept(false);
      raw.send({ type: 'open', streamId: 4, window: 65536, maxData: 65536, metadata: {} });
      for (const n of sizes) raw.send({ type: 'data', streamId: 4, payload: Buffer.alloc(n) });
      const reset = await raw.next('reset', (f) => f.streamId === 4);
      expect(reset.code).toBe(ResetCode.FLOW_CONTROL_ERROR);
      expect(reset.type === 'reset' ? reset.message : '').toMatch(text);
      await until(() => incoming.length === 2, 'open delivered');
      expect(incoming[1]!.signal.reason).toMatchObject({ code: 'POSTERN_ERR_PROTO_FLOW_CONTROL' });
      await healthy('early-overflow');
    });

    it('openStream sends early data right behind the OPEN, in frames of 1024 bytes at most; FIN waits for OPEN_RESULT; then the credit is the window minus the early bytes', async () => {
      const { session, raw } = await sessionAndRawPeer();
      const { stream, opened } = session.openStream({ target: 'early' });
      stream.write(Buffer.alloc(1500, 1));
      stream.end();
      const open = await raw.next('open', (f) => f.streamId === 3);
      expect((await raw.next('data', (f) => f.streamId === 3)).payload.length).toBe(1024);
      expect((await raw.next('data', (f) => f.streamId === 3)).payload.length).toBe(476);
      expect(stream.credit).toBe(EARLY_DATA_BYTES - 1500);
      expect(raw.frames.some((f) => f.type === 'fin' && f.streamId === 3)).toBe(false);
      raw.send({ type: 'open-result', streamId: open.streamId, result: 0, window: 65536, maxData: 65536, message: '', metadata: { who: 'peer' } });
      expect(await opened).toBe(stream);
      expect(stream.resultMetadata).toEqual({ who: 'peer' });
      await raw.next('fin', (f) => f.streamId === 3);
      expect(stream.credit).toBe(65536 - 1500);
    });

    it('openStream: destroying the stream while the open is in flight cancels it: RESET CANCEL, `opened` rejects OPEN_CANCELLED', async () => {
      const { session, raw, healthy } = await sessionAndRawPeer();
      const { stream, opened } = session.openStream({ target: 'early' });
      await raw.next('open', (f) => f.streamId === 3);
      stream.destroy();
      expect(await opened.catch((e: unknown) => e)).toMatchObject({ code: 'POSTERN_ERR_OPEN_CANCELLED' });
      expect((await raw.next('reset', (f) => f.streamId === 3)).code).toBe(ResetCode.CANCEL);
      expect(session.streamCount).toBe(2);
      await healthy('early-destroyed');
    });

    it('openStream: a refused open rejects `opened` and destroys the stream with the same error', async () => {
      const { session, raw, healthy } = await sessionAndRawPeer();
      const { stream, opened } = session.openStream({ target: 'early' });
      const streamErr = errorOf(stream);
      stream.write('ClientHello');
      const open = await raw.next('open', (f) => f.streamId === 3);
      raw.send({ type: 'open-result', streamId: open.streamId, result: OpenResult.POLICY_DENIED, window: 0, maxData: 0, message: 'denied by rule "x"', metadata: {} });
      const err = await opened.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenError);
      expect(err).toMatchObject({ code: 'POSTERN_ERR_OPEN_POLICY_DENIED', result: OpenResult.POLICY_DENIED });
      expect(await streamErr).toBe(err);
      await healthy('early-open-refused');
    });

    it('bad metadata in an OPEN refuses that open with METADATA_INVALID', async () => {
      const { raw, session, healthy } = await sessionAndRawPeer();
      raw.send(Buffer.from('010000000004' + '00000400' + '00000400' + '014b0000', 'hex')); // metadata key "K"
      const refused = await raw.next('open-result', (f) => f.streamId === 4);
      expect(refused.result).toBe(OpenResult.METADATA_INVALID);
      expect(refused.message).toMatch(/metadata key "K"/);
      expect(session.stats.violations).toBe(1);
      await healthy('bad-meta');
    });

    it('bad metadata in an OPEN_RESULT fails that open and resets the stream with PROTOCOL_ERROR', async () => {
      const { session, raw, healthy } = await sessionAndRawPeer();
      const opening = session.open({}).catch((e: unknown) => e);
      const open = await raw.next('open', (f) => f.streamId === 3);
      const good = encodeFrame({ type: 'open-result', streamId: open.streamId, result: 0, window: 1024, maxData: 1024, message: '', metadata: {} });
      raw.send(Buffer.concat([good, Buffer.from('016b0000016b0000', 'hex')])); // key "k" twice
      expect(await opening).toMatchObject({ code: 'POSTERN_ERR_PROTO_BAD_METADATA' });
      expect((await raw.next('reset', (f) => f.streamId === 3)).code).toBe(ResetCode.PROTOCOL_ERROR);
      await healthy('bad-result-meta');
    });

    it('frames for a closed stream are discarded silently', async () => {
      const { session, raw, local, healthy } = await sessionAndRawPeer();
      local.on('error', () => {});
      raw.send({ type: 'reset', streamId: 1, code: ResetCode.CANCEL, message: '' });
      await until(() => local.destroyed, 'stream 1 reset');
      raw.send({ type: 'data', streamId: 1, payload: Buffer.from('late') });
      raw.send({ type: 'window-update', streamId: 1, increment: 10 });
      raw.send({ type: 'fin', streamId: 1 });
      await until(() => session.stats.framesDiscarded === 3, 'late frames discarded');
      expect(session.stats.violations).toBe(0);
      await healthy('closed-stream', [2]);
    });

    it('a PONG answering no PING is ignored', async () => {
      const { raw, session, healthy } = await sessionAndRawPeer();
      raw.send({ type: 'pong', streamId: 0, payload: Buffer.alloc(8, 7) });
      await healthy('pong');
      expect(session.rttMs).toBeUndefined();
    });
  });
}
