import { ProtocolError } from '../errors.js';
import { maxMessageSize, type DecodeLimits, type Frame } from './frames.js';
import { decodeFrame } from './decode.js';

/**
 * Decodes frames from a byte stream that carries them length-prefixed (u32 BE length, then
 * the frame), as a raw TCP/TLS stream would, whatever the chunk boundaries. A declared length
 * is checked against the frame cap before a single byte of the frame is buffered, so the
 * decoder never holds more than one capped frame plus one chunk.
 */
export class FrameStreamDecoder {
  private readonly limits: DecodeLimits;
  private readonly cap: number;
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Length of the frame being assembled, once its prefix has been read. */
  private expected: number | undefined;

  constructor(limits: DecodeLimits) {
    this.limits = limits;
    this.cap = maxMessageSize(limits);
  }

  /** Bytes received and not yet decoded. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Feeds one chunk; returns the frames it completes. Throws ProtocolError on bad input. */
  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.expected === undefined) {
        if (this.buffered < 4) break;
        const length = this.take(4).readUInt32BE(0);
        if (length > this.cap) {
          throw new ProtocolError('POSTERN_ERR_PROTO_FRAME_TOO_LARGE', `length prefix announces a ${length}-byte frame; the frame cap is ${this.cap} bytes`);
        }
        this.expected = length;
      }
      if (this.buffered < this.expected) break;
      const message = this.take(this.expected);
      this.expected = undefined;
      frames.push(decodeFrame(message, this.limits));
    }
    return frames;
  }

  /** Declares the end of the byte stream: leftover bytes are a truncated frame. */
  end(): void {
    if (this.buffered > 0 || this.expected !== undefined) {
      throw new ProtocolError('POSTERN_ERR_PROTO_FRAME_TRUNCATED', `byte stream ended inside a frame (${this.buffered} bytes left over)`);
    }
  }

  /** Removes `n` buffered bytes, as a view when they lie in one chunk. */
  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const head = this.chunks[0]!;
        const used = head.copy(out, at, 0, Math.min(head.length, n - at));
        at += used;
        if (used === head.length) this.chunks.shift();
        else this.chunks[0] = head.subarray(used);
      }
    }
    this.buffered -= n;
    return out;
  }
}
