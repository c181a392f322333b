import { describe, expect, it } from 'vitest';
import { StreamError } from '../../../src/mux/errors.js';
import { MuxStream, type StreamCapabilities } from '../../../src/mux/stream.js';
import { ResetCode } from '../../../src/protocol/reasons.js';

/** Records what the stream asks of its session; FIN is "sent" when the test says so. */
class Recorder implements StreamCapabilities {
  data: Buffer[] = [];
  grants: number[] = [];
  resets: Array<{ code: number; message: string }> = [];
  fins: Array<() => void> = [];
  log: string[] = [];
  sendData(chunk: Buffer): void {
    this.data.push(chunk);
    this.log.push(`data ${chunk.length}`);
  }
  sendFin(sent: () => void): void {
    this.fins.push(sent);
    this.log.push('fin');
  }
  sendReset(code: number, message: string): void {
    this.resets.push({ code, message });
    this.log.push(`reset ${code}`);
  }
  grantCredit(increment: number): void {
    this.grants.push(increment);
    this.log.push(`grant ${increment}`);
  }
  get sent(): number {
    return this.data.reduce((n, b) => n + b.length, 0);
  }
}

function make(o: { sendWindow?: number; receiveWindow?: number; maxUnsent?: number } = {}) {
  const rec = new Recorder();
  const stream = new MuxStream(
    { id: 7, metadata: { target: 't' }, resultMetadata: {}, sendWindow: o.sendWindow ?? 1000, receiveWindow: o.receiveWindow ?? 4096, maxUnsent: o.maxUnsent ?? 1 << 30 },
    rec,
  );
  return { rec, stream };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('MuxStream sending (credit)', () => {
  it('a write covered by credit is handed over as is (no copy) and write() returns true', () => {
    const { rec, stream } = make({ sendWindow: 1000 });
    const chunk = Buffer.alloc(600, 1);
    expect(stream.write(chunk)).toBe(true);
    expect(rec.data).toEqual([chunk]);
    expect(rec.data[0]).toBe(chunk);
    expect(stream.credit).toBe(400);
    expect(stream.bytesWritten).toBe(600);
  });

  it('write() returns false exactly when credit runs out; WINDOW_UPDATE sends the rest and brings drain', async () => {
    const { rec, stream } = make({ sendWindow: 1000 });
    expect(stream.write(Buffer.alloc(1000))).toBe(true);
    expect(stream.write(Buffer.alloc(10))).toBe(false);
    expect(rec.sent).toBe(1000);
    let drained = 0;
    stream.on('drain', () => drained++);
    expect(stream.receiveWindowUpdate(4)).toBe(true);
    expect(rec.sent).toBe(1004);
    await tick();
    expect(drained).toBe(0);
    stream.receiveWindowUpdate(100);
    expect(rec.sent).toBe(1010);
    await tick();
    expect(drained).toBe(1);
    expect(stream.credit).toBe(94);
  });

  it('a large write on partial credit goes out in the covered part first', async () => {
    const { rec, stream } = make({ sendWindow: 100 });
    expect(stream.write(Buffer.alloc(250, 2))).toBe(false);
    expect(rec.data.map((b) => b.length)).toEqual([100]);
    stream.receiveWindowUpdate(100);
    stream.receiveWindowUpdate(100);
    expect(rec.data.map((b) => b.length)).toEqual([100, 100, 50]);
    expect(Buffer.concat(rec.data)).toEqual(Buffer.alloc(250, 2));
  });

  it('with credit to spare, write() still returns false once maxUnsent bytes wait to be framed', async () => {
    const { rec, stream } = make({ sendWindow: 1 << 20, maxUnsent: 300 });
    expect(stream.write(Buffer.alloc(200))).toBe(true);
    expect(stream.write(Buffer.alloc(200))).toBe(false);
    expect(rec.sent).toBe(300);
    let drained = 0;
    stream.on('drain', () => drained++);
    stream.receiveFramed(200);
    expect(rec.sent).toBe(400);
    await tick();
    expect(drained).toBe(1);
    expect(stream.credit).toBe((1 << 20) - 400);
  });

  it('end() asks for FIN after the data; finish waits until FIN is sent', async () => {
    const { rec, stream } = make({ sendWindow: 10 });
    let finished = false;
    stream.on('finish', () => {
      finished = true;
    });
    stream.end(Buffer.alloc(15));
    await tick();
    expect(rec.log).toEqual(['data 10']);
    stream.receiveWindowUpdate(5);
    await tick();
    expect(rec.log).toEqual(['data 10', 'data 5', 'fin']);
    expect(finished).toBe(false);
    rec.fins[0]!();
    await tick();
    expect(finished).toBe(true);
  });

  it('a WINDOW_UPDATE overflowing 2^31-1 resets the stream with FLOW_CONTROL_ERROR', async () => {
    const { rec, stream } = make({ sendWindow: 10 });
    const err = new Promise<StreamError>((resolve) => stream.once('error', resolve));
    expect(stream.receiveWindowUpdate(0x7fff_fff6)).toBe(false);
    expect((await err).code).toBe('POSTERN_ERR_PROTO_FLOW_CONTROL');
    expect(rec.resets).toEqual([{ code: ResetCode.FLOW_CONTROL_ERROR, message: expect.stringContaining('WINDOW_UPDATE') }]);
  });
});

describe('MuxStream receiving (grants follow consumption)', () => {
  it('a reader that never reads gets no grant, and holds at most the window', async () => {
    const { rec, stream } = make({ receiveWindow: 4096 });
    for (let i = 0; i < 4; i++) expect(stream.receiveData(Buffer.alloc(1024))).toBe(true);
    await tick();
    expect(rec.grants).toEqual([]);
    expect(stream.readableLength).toBe(4096);
    const err = new Promise<StreamError>((resolve) => stream.once('error', resolve));
    expect(stream.receiveData(Buffer.alloc(1))).toBe(false); // beyond credit
    expect((await err).code).toBe('POSTERN_ERR_PROTO_FLOW_CONTROL');
    expect(rec.resets[0]!.code).toBe(ResetCode.FLOW_CONTROL_ERROR);
  });

  it('grants are sent as the application reads, batched by a quarter window', async () => {
    const { rec, stream } = make({ receiveWindow: 4096 });
    for (let i = 0; i < 4; i++) stream.receiveData(Buffer.alloc(1024));
    stream.read(512);
    expect(rec.grants).toEqual([]); // 512 < 1024
    stream.read(512);
    expect(rec.grants).toEqual([1024]);
    stream.read(3072);
    expect(rec.grants).toEqual([1024, 3072]);
  });

  it('a flowing reader keeps data moving through a window much smaller than the transfer', async () => {
    const { rec, stream } = make({ receiveWindow: 4096 });
    let credit = 4096;
    let got = 0;
    stream.on('data', (d: Buffer) => {
      got += d.length;
    });
    const originalGrant = rec.grantCredit.bind(rec);
    rec.grantCredit = (n) => {
      credit += n;
      originalGrant(n);
    };
    for (let sent = 0; sent < 1 << 20; ) {
      const n = Math.min(credit, 700);
      if (n === 0) {
        await tick();
        continue;
      }
      expect(stream.receiveData(Buffer.alloc(n))).toBe(true);
      credit -= n;
      sent += n;
    }
    await tick();
    expect(got).toBe(1 << 20);
  });

  it('a starved reader gets its last bytes granted even below the batch size', async () => {
    const { rec, stream } = make({ receiveWindow: 4096 });
    stream.receiveData(Buffer.alloc(4096)); // the peer has no credit left
    expect(stream.read(4000)).not.toBeNull();
    expect(rec.grants).toEqual([4000]);
    expect(stream.read(200)).toBeNull(); // wants more than the 96 bytes there
    expect(rec.grants).toEqual([4000]);
  });

  it('FIN ends the readable side; DATA or FIN after it resets with STREAM_CLOSED', async () => {
    const { rec, stream } = make();
    stream.receiveData(Buffer.from('abc'));
    expect(stream.receiveFin()).toBe(true);
    const ended = new Promise((resolve) => stream.once('end', resolve));
    stream.resume();
    await ended;
    const err = new Promise<StreamError>((resolve) => stream.once('error', resolve));
    expect(stream.receiveData(Buffer.from('x'))).toBe(false);
    expect(await err).toMatchObject({ code: 'POSTERN_ERR_PROTO_STREAM_CLOSED', resetCode: ResetCode.STREAM_CLOSED, remote: false });
    expect(rec.resets.map((r) => r.code)).toEqual([ResetCode.STREAM_CLOSED]);
  });
});

describe('MuxStream reset and destroy', () => {
  it('destroy() sends CANCEL; destroy(err) sends err.resetCode; reset() sends its code and text', () => {
    const a = make();
    a.stream.destroy();
    expect(a.rec.resets).toEqual([{ code: ResetCode.CANCEL, message: '' }]);
    const b = make();
    b.stream.on('error', () => {});
    b.stream.destroy(Object.assign(new Error('target died'), { resetCode: ResetCode.PEER_GONE }));
    expect(b.rec.resets).toEqual([{ code: ResetCode.PEER_GONE, message: 'target died' }]);
    const c = make();
    c.stream.reset(ResetCode.REVOKED, 'certificate revoked');
    expect(c.rec.resets).toEqual([{ code: ResetCode.REVOKED, message: 'certificate revoked' }]);
    expect(c.stream.resetCode).toBe(ResetCode.REVOKED);
    expect(() => make().stream.reset(70_000)).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_MUX_MISUSE' }));
  });

  it('a RESET from the peer destroys with a StreamError carrying its code, and sends nothing back', async () => {
    const { rec, stream } = make();
    const err = new Promise<StreamError>((resolve) => stream.once('error', resolve));
    stream.receiveReset(ResetCode.IDLE_TIMEOUT, 'idle for 30 min');
    const e = await err;
    expect(e).toBeInstanceOf(StreamError);
    expect(e).toMatchObject({ code: 'POSTERN_ERR_STREAM_IDLE_TIMEOUT', resetCode: ResetCode.IDLE_TIMEOUT, remote: true });
    expect(e.message).toContain('idle for 30 min');
    expect(rec.resets).toEqual([]);
  });

  it('an unknown RESET code maps to the generic POSTERN_ERR_STREAM_RESET', async () => {
    const { stream } = make();
    const err = new Promise<StreamError>((resolve) => stream.once('error', resolve));
    stream.receiveReset(999, '');
    expect(await err).toMatchObject({ code: 'POSTERN_ERR_STREAM_RESET', resetCode: 999 });
  });

  it('no RESET once both FINs are done, nor when the session is gone', async () => {
    const { rec, stream } = make();
    stream.receiveFin();
    stream.end();
    await tick();
    rec.fins[0]!();
    stream.resume();
    await new Promise((resolve) => stream.once('close', resolve));
    expect(rec.resets).toEqual([]);

    const gone = make();
    const closed = new Promise((resolve) => gone.stream.once('close', resolve));
    gone.stream.abort(undefined);
    await closed;
    expect(gone.rec.resets).toEqual([]);
  });

  it('a write waiting for credit fails when the stream is destroyed', async () => {
    const { stream } = make({ sendWindow: 0 });
    stream.on('error', () => {});
    const result = new Promise<Error | null | undefined>((resolve) => stream.write(Buffer.alloc(10), resolve));
    stream.destroy();
    expect(await result).toBeInstanceOf(Error);
  });
});
