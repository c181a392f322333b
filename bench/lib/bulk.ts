/**
 * The bulk exchange used by every bench kind, over a byte Duplex (a TLS socket or a mux
 * stream) and over raw WebSocket messages (a FrameTransport). The client writes a header
 * (direction, byte count); "up" then sends that many bytes and the server answers one byte
 * once it has them all; "down" has the server send them and end.
 */
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import type { FrameTransport } from '../../src/mux/transport.js';
import { BULK_HEADER_SIZE, CHUNK, bulkHeader, parseBulkHeader, type Direction } from './protocol.js';

/** One reusable payload: the bench measures transport, not allocation. */
const PAYLOAD = Buffer.alloc(CHUNK, 0x5a);
const ACK = Buffer.from('k');

async function writeBytes(d: Duplex, bytes: number): Promise<void> {
  let left = bytes;
  while (left > 0) {
    const n = Math.min(left, CHUNK);
    left -= n;
    if (!d.write(n === CHUNK ? PAYLOAD : PAYLOAD.subarray(0, n))) await once(d, 'drain');
  }
}

/** Server side over a Duplex: serve bulk requests one after another; the stream stays open. */
export function serveDuplex(d: Duplex, onError: (err: Error) => void): void {
  let header = Buffer.alloc(0);
  let want = -1;
  let got = 0;
  d.on('error', onError);
  const onData = (chunk: Buffer): void => {
    if (want < 0) {
      header = Buffer.concat([header, chunk]);
      if (header.length < BULK_HEADER_SIZE) return;
      const { dir, bytes } = parseBulkHeader(header.subarray(0, BULK_HEADER_SIZE));
      const rest = header.subarray(BULK_HEADER_SIZE);
      header = Buffer.alloc(0);
      if (dir === 'down') {
        writeBytes(d, bytes).catch(onError);
        return;
      }
      want = bytes;
      chunk = rest;
    }
    got += chunk.length;
    if (got === want) {
      d.write(ACK);
      want = -1;
      got = 0;
    }
  };
  d.on('data', onData);
  // The client half-closes when done; answer in kind so the stream ends cleanly.
  d.once('end', () => d.end());
}

/** Client side over a Duplex: one bulk request; resolves when the last byte is confirmed. */
export async function bulkDuplex(d: Duplex, dir: Direction, bytes: number): Promise<void> {
  d.write(bulkHeader(dir, bytes));
  if (dir === 'up') {
    const acked = once(d, 'data');
    await writeBytes(d, bytes);
    await acked;
    return;
  }
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      got += chunk.length;
      if (got >= bytes) {
        d.off('data', onData);
        d.off('error', reject);
        resolve();
      }
    };
    d.on('data', onData);
    d.once('error', reject);
  });
}

/**
 * Raw WebSocket messages, no mux: the same exchange with one message per chunk, pausing on
 * the transport's high-water mark as the session would.
 */
export class MessagePeer {
  private want = -1;
  private got = 0;
  private waiter: (() => void) | undefined;
  private drainWaiter: (() => void) | undefined;

  constructor(
    private readonly t: FrameTransport & { highWaterMark: number },
    private readonly isServer: boolean,
    onClose: (err?: Error) => void,
  ) {
    t.setHandlers({
      frame: (data) => this.frame(data),
      drain: () => {
        const w = this.drainWaiter;
        this.drainWaiter = undefined;
        w?.();
      },
      close: onClose,
    });
  }

  private frame(data: Buffer): void {
    if (this.isServer && this.want < 0) {
      const { dir, bytes } = parseBulkHeader(data);
      if (dir === 'down') {
        void this.sendBytes(bytes);
        return;
      }
      this.want = bytes;
      this.got = 0;
      return;
    }
    if (!this.isServer && this.want < 0) {
      // The ack of an upload.
      this.waiter?.();
      return;
    }
    this.got += data.length;
    if (this.got >= this.want) {
      this.want = -1;
      if (this.isServer) this.t.send(ACK);
      else this.waiter?.();
    }
  }

  private async sendBytes(bytes: number): Promise<void> {
    let left = bytes;
    while (left > 0) {
      const n = Math.min(left, CHUNK);
      left -= n;
      this.t.send(n === CHUNK ? PAYLOAD : PAYLOAD.subarray(0, n));
      if (this.t.bufferedAmount > this.t.highWaterMark) await new Promise<void>((r) => (this.drainWaiter = r));
    }
  }

  async bulk(dir: Direction, bytes: number): Promise<void> {
    const done = new Promise<void>((r) => (this.waiter = r));
    if (dir === 'down') {
      this.want = bytes;
      this.got = 0;
    }
    this.t.send(bulkHeader(dir, bytes));
    if (dir === 'up') await this.sendBytes(bytes);
    await done;
    this.waiter = undefined;
  }
}
