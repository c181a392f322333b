import { Duplex } from 'node:stream';
import type { ErrorCode } from '../errors.js';
import { PosternError } from '../errors.js';
import { MAX_WINDOW, type Metadata } from '../protocol/frames.js';
import { ResetCode, describeResetCode } from '../protocol/reasons.js';
import { StreamError } from './errors.js';

/**
 * What a stream may do to the session under it, and nothing more (CONVENTIONS habit 2): the
 * session hands these functions to each stream, tests hand a recorder.
 */
export interface StreamCapabilities {
  /** Payload already covered by the peer's credit; the session frames it in turn with other streams. */
  sendData(chunk: Buffer): void;
  /** FIN after the data handed so far; `sent` runs once it is on the transport. */
  sendFin(sent: () => void): void;
  /** RESET, dropping this stream's data not yet framed; the session forgets the stream. */
  sendReset(code: number, message: string): void;
  /** WINDOW_UPDATE: the application consumed `increment` bytes, the peer may send that much more. */
  grantCredit(increment: number): void;
}

export interface MuxStreamInit {
  id: number;
  /** The opener's metadata (from OPEN). */
  metadata: Metadata;
  /** The acceptor's metadata (from OPEN_RESULT OK). */
  resultMetadata: Metadata;
  /** Credit the peer granted with its OPEN or OPEN_RESULT: bytes this side may send. */
  sendWindow: number;
  /** Window this side announced: bytes the peer may send before a WINDOW_UPDATE. */
  receiveWindow: number;
  /**
   * Grows the receive window as the application consumes (the session's WindowTuner, which
   * starts at `receiveWindow`). Absent: the window stays `receiveWindow`.
   */
  windowTuner?: WindowGrowth;
  /** write() buffers at most this many bytes beyond credit before returning false. */
  writableHighWaterMark?: number;
  /**
   * Bytes handed to the session and not yet framed onto the transport. Bounds this stream's
   * share of the session's memory whatever credit the peer grants. Default 256 KiB.
   */
  maxUnsent?: number;
}

/** What a stream asks of its window tuner (src/mux/window-tuner.ts). */
export interface WindowGrowth {
  /** `bytes` were consumed and are about to be granted back; returns the growth to grant on top. */
  consumed(bytes: number): number;
}

type WriteCallback = (error?: Error | null) => void;

/**
 * One multiplexed stream: a real Node Duplex with per-direction flow control.
 *
 * Sending: a write covered by credit is handed to the session at once and completes; what
 * credit does not cover is held (and later writes buffer behind it) until WINDOW_UPDATE
 * arrives, so write() returns false exactly when this stream is out of credit and 'drain'
 * fires when credit returns. The same holds while `maxUnsent` bytes wait for the session to
 * frame them (a congested transport), so a large grant from the peer never turns into a
 * large buffer here. `end()` sends FIN; the other direction keeps flowing.
 *
 * Receiving: the peer may send at most the receive window beyond what the application has
 * consumed, so a stalled reader holds at most one window. Credit is granted from read(), i.e.
 * as the application consumes, in batches of a quarter window. The window starts at
 * `receiveWindow` and grows only when the tuner says so, on top of a grant: a reader that
 * does not consume never makes it grow.
 *
 * `destroy(err)` sends RESET with `err.resetCode` (CANCEL by default); a RESET from the peer
 * destroys the stream with a StreamError carrying the peer's `resetCode`.
 */
export class MuxStream extends Duplex {
  readonly id: number;
  readonly metadata: Metadata;
  /** The acceptor's metadata; empty while an opener's stream carries early data (Session.openStream). */
  resultMetadata: Metadata;
  /** RESET code that ended the stream, sent or received. */
  resetCode: number | undefined;

  private readonly caps: StreamCapabilities;
  private sendCredit: number;
  private unsent = 0;
  private readonly maxUnsent: number;
  /** Part of a write that credit did not cover, with the write's callback. */
  private held: { chunk: Buffer; callback: WriteCallback } | undefined;
  private window: number;
  private readonly tuner: WindowGrowth | undefined;
  /** Bytes the peer may still send before it needs more credit. */
  private recvCredit: number;
  private grantThreshold: number;
  private received = 0;
  private written = 0;
  private finSent = false;
  private finReceived = false;
  /** A RESET was sent or received, or the session is gone: nothing more goes on the wire. */
  private wireClosed = false;
  private pendingReset: { code: number; message: string } | undefined;
  private owesDrain = false;

  /** Built by the session (or a test, with a recorder); applications get streams from Session. */
  constructor(init: MuxStreamInit, caps: StreamCapabilities) {
    super({
      allowHalfOpen: true,
      decodeStrings: true,
      readableHighWaterMark: Math.max(1, init.receiveWindow),
      writableHighWaterMark: init.writableHighWaterMark ?? 64 * 1024,
    });
    this.id = init.id;
    this.metadata = init.metadata;
    this.resultMetadata = init.resultMetadata;
    this.caps = caps;
    this.sendCredit = init.sendWindow;
    this.maxUnsent = init.maxUnsent ?? 256 * 1024;
    this.window = init.receiveWindow;
    this.tuner = init.windowTuner;
    this.recvCredit = init.receiveWindow;
    this.grantThreshold = Math.max(1, Math.floor(init.receiveWindow / 4));
  }

  /** Payload bytes received from the peer. */
  get bytesRead(): number {
    return this.received;
  }

  /** Payload bytes the application wrote that went out on credit. */
  get bytesWritten(): number {
    return this.written;
  }

  /** Bytes this side may still send without a WINDOW_UPDATE. */
  get credit(): number {
    return this.sendCredit;
  }

  /** The receive window now: the most the peer may have in flight or buffered here. */
  get receiveWindow(): number {
    return this.window;
  }

  /** Sends RESET with `code` (a ResetCode) and destroys the stream without an error. */
  reset(code: number, message = ''): void {
    if (!Number.isInteger(code) || code < 0 || code > 0xffff) {
      throw new PosternError('POSTERN_ERR_MUX_MISUSE', `reset(${code}): the code must be an integer in 0..65535`);
    }
    this.pendingReset = { code, message };
    this.destroy();
  }

  // --- driven by the session ------------------------------------------------------------

  /**
   * OPEN_RESULT OK for a stream opened with early data: the peer's window replaces the early
   * credit (`creditDelta` = window − EARLY_DATA_BYTES; what early data used stays used).
   */
  opened(creditDelta: number, resultMetadata: Metadata): void {
    this.resultMetadata = resultMetadata;
    this.sendCredit += creditDelta;
    this.releaseHeld();
  }

  /** Early data the application had forwarded before accepting (IncomingOpen.forwardEarlyData): received, and consumed already. */
  receiveTaken(n: number): void {
    this.recvCredit -= n;
    this.received += n;
  }

  /** A DATA frame for this stream. False when it broke the protocol (the stream is then reset). */
  receiveData(payload: Buffer): boolean {
    if (this.wireClosed) return true;
    if (this.finReceived) {
      return this.violate('POSTERN_ERR_PROTO_STREAM_CLOSED', ResetCode.STREAM_CLOSED, `DATA on stream ${this.id} after the peer's FIN`);
    }
    if (payload.length > this.recvCredit) {
      return this.violate(
        'POSTERN_ERR_PROTO_FLOW_CONTROL',
        ResetCode.FLOW_CONTROL_ERROR,
        `DATA of ${payload.length} bytes on stream ${this.id} exceeds the ${this.recvCredit} bytes of credit granted`,
      );
    }
    this.recvCredit -= payload.length;
    this.received += payload.length;
    if (payload.length > 0) this.push(payload);
    return true;
  }

  /** A WINDOW_UPDATE for this stream. False when it broke the protocol. */
  receiveWindowUpdate(increment: number): boolean {
    if (this.wireClosed) return true;
    if (this.sendCredit + increment > MAX_WINDOW) {
      return this.violate(
        'POSTERN_ERR_PROTO_FLOW_CONTROL',
        ResetCode.FLOW_CONTROL_ERROR,
        `WINDOW_UPDATE of ${increment} on stream ${this.id} takes the credit past ${MAX_WINDOW} (credit was ${this.sendCredit})`,
      );
    }
    this.sendCredit += increment;
    this.releaseHeld();
    return true;
  }

  /** The session framed `n` of the bytes handed to it: room for more. */
  receiveFramed(n: number): void {
    this.unsent -= n;
    this.releaseHeld();
  }

  /** FIN: the peer will send no more. False when it broke the protocol. */
  receiveFin(): boolean {
    if (this.wireClosed) return true;
    if (this.finReceived) {
      return this.violate('POSTERN_ERR_PROTO_STREAM_CLOSED', ResetCode.STREAM_CLOSED, `second FIN on stream ${this.id}`);
    }
    this.finReceived = true;
    this.push(null);
    return true;
  }

  /** RESET from the peer. */
  receiveReset(code: number, message: string): void {
    if (this.wireClosed) return;
    this.wireClosed = true;
    this.resetCode = code;
    const info = describeResetCode(code);
    this.destroy(new StreamError(info.code, code, true, `stream ${this.id} reset by the peer (${info.name})${message ? `: ${message}` : ''}`));
  }

  /** The session ended under the stream: nothing can be sent any more. */
  abort(err: Error | undefined): void {
    this.wireClosed = true;
    this.destroy(err);
  }

  // --- Duplex internals -----------------------------------------------------------------

  // Data is pushed as frames arrive; credit is granted in read(), after consumption.
  override _read(): void {}

  override read(size?: number): unknown {
    const chunk: unknown = super.read(size);
    this.grant(chunk === null);
    return chunk;
  }

  override write(chunk: unknown, encoding?: BufferEncoding | WriteCallback, callback?: WriteCallback): boolean {
    const accepted = super.write(chunk, encoding as BufferEncoding, callback);
    // Node computes write()'s answer from the bytes buffered before _write runs and cannot know
    // about credit. What limits this stream is credit: true when everything written so far
    // went out on credit, false when something waits for WINDOW_UPDATE ('drain' follows).
    if (!accepted) return this.writable && this.held === undefined && this.writableLength === 0;
    if (this.held === undefined) return true;
    // Node did not reach its high-water mark, so it will not emit 'drain': this stream owes it.
    this.owesDrain = true;
    return false;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: WriteCallback): void {
    const rest = this.sendCovered(chunk);
    if (rest === undefined) callback();
    else this.held = { chunk: rest, callback };
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.caps.sendFin(() => {
      this.finSent = true;
      callback();
    });
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    const held = this.held;
    this.held = undefined;
    if (!this.wireClosed && !(this.finSent && this.finReceived)) {
      this.wireClosed = true;
      const reset = this.pendingReset ?? { code: resetCodeOf(err) ?? ResetCode.CANCEL, message: err?.message ?? '' };
      this.resetCode = reset.code;
      this.caps.sendReset(reset.code, reset.message);
    }
    this.wireClosed = true;
    held?.callback(err ?? new StreamError('POSTERN_ERR_STREAM_CANCELLED', this.resetCode ?? ResetCode.CANCEL, false, `stream ${this.id} destroyed with a write pending`));
    callback(err);
  }

  // --- helpers --------------------------------------------------------------------------

  /** The 'drain' promised by a false write() that Node itself will not emit. */
  private payDrain(): void {
    if (!this.owesDrain || this.destroyed || this.held !== undefined || this.writableLength > 0) return;
    this.owesDrain = false;
    if (!this.writableNeedDrain) this.emit('drain');
  }

  /** Sends what credit and room now cover of a held write; completes it when all went. */
  private releaseHeld(): void {
    const held = this.held;
    if (held === undefined || this.wireClosed) return;
    const rest = this.sendCovered(held.chunk);
    if (rest !== undefined) {
      held.chunk = rest;
      return;
    }
    this.held = undefined;
    held.callback();
    if (this.owesDrain) process.nextTick(() => this.payDrain());
  }

  /**
   * Hands over as much of `chunk` as credit and room cover; returns the rest, or undefined
   * when all went.
   */
  private sendCovered(chunk: Buffer): Buffer | undefined {
    if (chunk.length === 0) return undefined;
    const n = Math.min(chunk.length, this.sendCredit, this.maxUnsent - this.unsent);
    if (n <= 0) return chunk;
    this.sendCredit -= n;
    this.unsent += n;
    this.written += n;
    this.caps.sendData(n === chunk.length ? chunk : chunk.subarray(0, n));
    return n === chunk.length ? undefined : chunk.subarray(n);
  }

  /**
   * Grants the credit the application freed by consuming, plus the window's growth if the
   * tuner grows it now. Batched to a quarter window, except when the reader found nothing to
   * read while the peer has no credit left (it would wait forever otherwise).
   */
  private grant(starved: boolean): void {
    if (this.wireClosed || this.finReceived) return;
    const consumed = this.window - this.recvCredit - this.readableLength;
    if (consumed >= this.grantThreshold || (starved && consumed > 0 && this.recvCredit === 0)) {
      const growth = this.tuner?.consumed(consumed) ?? 0;
      if (growth > 0) {
        this.window += growth;
        this.grantThreshold = Math.max(1, Math.floor(this.window / 4));
      }
      this.recvCredit += consumed + growth;
      this.caps.grantCredit(consumed + growth);
    }
  }

  private violate(code: ErrorCode, resetCode: number, message: string): false {
    this.destroy(new StreamError(code, resetCode, false, message));
    return false;
  }
}

function resetCodeOf(err: Error | null): number | undefined {
  const code = (err as { resetCode?: unknown } | null)?.resetCode;
  return typeof code === 'number' && Number.isInteger(code) && code >= 0 && code <= 0xffff ? code : undefined;
}
