import { EventEmitter } from 'node:events';
import { z } from 'zod';
import { PosternError, ProtocolError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { validateOptions } from '../options.js';
import { decodeFrame } from '../protocol/decode.js';
import { allocDataFrame, encodeDataFrameInPlace, encodeFrame } from '../protocol/encode.js';
import {
  EARLY_DATA_BYTES,
  FrameType,
  HEADER_SIZE,
  MAX_STREAM_ID,
  MAX_WINDOW,
  MIN_MAX_DATA,
  maxMessageSize,
  type DecodeLimits,
  type Frame,
  type GoAwayFrame,
  type Metadata,
  type OpenFrame,
  type OpenResultFrame,
} from '../protocol/frames.js';
import { MetadataError, metadataByteLength } from '../protocol/metadata.js';
import { GoAwayReason, OpenResult, ResetCode, describeGoAwayReason, describeOpenResult, describeResetCode } from '../protocol/reasons.js';
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import { OpenError, SessionError, StreamError } from './errors.js';
import { Queue } from './queue.js';
import { MuxStream, type StreamCapabilities } from './stream.js';
import type { FrameTransport } from './transport.js';
import { ReceiveBudget, WindowTuner, type RttEstimate } from './window-tuner.js';

export interface SessionOptions {
  /** 'client' dialled the WebSocket and opens odd stream ids; 'server' opens even ones. */
  role: 'client' | 'server';
  /** Receive window each stream starts with (bytes). Default 256 KiB, at least 16 KiB (EARLY_DATA_BYTES). */
  initialWindow?: number;
  /**
   * Largest receive window a stream may grow to (bytes): a window doubles while its reader
   * consumes a whole window in under two round trips (src/mux/window-tuner.ts). Default 4 MiB,
   * enough for 80 MiB/s over a 50 ms path; a stalled reader holds at most this much. Equal to
   * initialWindow: no growth.
   */
  maxWindow?: number;
  /**
   * Sum of the receive windows of all streams above which no window grows (bytes). Initial
   * windows always count and are always granted; only growth is refused. Default 32 MiB.
   */
  maxSessionReceiveBuffer?: number;
  /** Largest DATA payload per frame, sent and accepted. Default 64 KiB. */
  maxFrameSize?: number;
  /** Live streams per direction (opened by the peer / by this side). Default 1024. */
  maxStreams?: number;
  /** Incoming opens waiting for the application's decision. Default 256. */
  maxPendingOpens?: number;
  /** Incoming opens accepted per second (token bucket, burst = one second's worth). Default 500. */
  maxOpensPerSecond?: number;
  /** Time for an open to be decided, both directions. Default 10 s. */
  openTimeoutMs?: number;
  /** PING period. Default 5 s. */
  pingIntervalMs?: number;
  /** The session is declared dead when no frame at all arrives for this long. Default 15 s. */
  deadPeerTimeoutMs?: number;
  /** Control frames queued while the transport is congested. Default 8192. */
  maxControlQueue?: number;
  /** Encoded open metadata, bytes. Default 4096. */
  maxMetadataBytes?: number;
  /** Open metadata entries. Default 32. */
  maxMetadataEntries?: number;
  /** DATA stops while transport.bufferedAmount is at or above this (bytes). Default 1 MiB. */
  transportHighWaterMark?: number;
  /** Bytes a stream may hand over before they are framed (its share while the transport is congested). Default 256 KiB. */
  maxStreamSendBuffer?: number;
  /** Highest stream id this side may use (tests lower it to reach exhaustion). Default 2^32-1. */
  maxStreamId?: number;
  clock?: Clock;
  logger?: Logger;
}

type NumericOptions = Required<Omit<SessionOptions, 'role' | 'clock' | 'logger'>>;

export const SESSION_DEFAULTS: Readonly<NumericOptions> = Object.freeze({
  initialWindow: 256 * 1024,
  maxWindow: 4 * 1024 * 1024,
  maxSessionReceiveBuffer: 32 * 1024 * 1024,
  maxFrameSize: 64 * 1024,
  maxStreams: 1024,
  maxPendingOpens: 256,
  maxOpensPerSecond: 500,
  openTimeoutMs: 10_000,
  pingIntervalMs: 5_000,
  deadPeerTimeoutMs: 15_000,
  maxControlQueue: 8192,
  maxMetadataBytes: 4096,
  maxMetadataEntries: 32,
  transportHighWaterMark: 1024 * 1024,
  maxStreamSendBuffer: 256 * 1024,
  maxStreamId: MAX_STREAM_ID,
});

const int = (min: number, max: number) => z.number().int().min(min).max(max).optional();
const OPTIONS_SCHEMA = z
  .strictObject({
    role: z.enum(['client', 'server']),
    // At least the early data an opener may send before it learns the window.
    initialWindow: int(EARLY_DATA_BYTES, MAX_WINDOW),
    maxWindow: int(EARLY_DATA_BYTES, MAX_WINDOW),
    maxSessionReceiveBuffer: int(MIN_MAX_DATA, Number.MAX_SAFE_INTEGER),
    maxFrameSize: int(MIN_MAX_DATA, 16 * 1024 * 1024),
    maxStreams: int(1, 1 << 24),
    maxPendingOpens: int(1, 1 << 24),
    maxOpensPerSecond: z.number().min(1).max(1e9).optional(),
    openTimeoutMs: int(1, 3_600_000),
    pingIntervalMs: int(1, 3_600_000),
    deadPeerTimeoutMs: int(1, 3_600_000),
    maxControlQueue: int(16, 1 << 24),
    maxMetadataBytes: int(0, 60_000),
    maxMetadataEntries: int(0, 255),
    transportHighWaterMark: int(1, 1 << 30),
    maxStreamSendBuffer: int(1, 1 << 30),
    maxStreamId: int(2, MAX_STREAM_ID),
  })
  .refine((o) => (o.initialWindow ?? SESSION_DEFAULTS.initialWindow) <= (o.maxWindow ?? SESSION_DEFAULTS.maxWindow), {
    message: 'initialWindow must not exceed maxWindow',
    path: ['initialWindow'],
  })
  .refine((o) => (o.pingIntervalMs ?? SESSION_DEFAULTS.pingIntervalMs) < (o.deadPeerTimeoutMs ?? SESSION_DEFAULTS.deadPeerTimeoutMs), {
    message: 'pingIntervalMs must be below deadPeerTimeoutMs, or a healthy idle peer would be declared dead',
    path: ['pingIntervalMs'],
  });

export interface OpenOptions {
  signal?: AbortSignal;
  /** Overrides openTimeoutMs for this open. */
  timeoutMs?: number;
}

export interface CloseOptions {
  /** After this, streams still live are reset with DRAIN_TIMEOUT. Default: wait for them. */
  timeoutMs?: number;
}

/**
 * A stream this side is opening: `stream` takes early data at once (up to EARLY_DATA_BYTES,
 * sent right behind the OPEN), and the rest once the peer accepts. `opened` resolves with the
 * same stream on OPEN_RESULT OK; when the open fails it rejects and `stream` is destroyed with
 * the same error, so the caller listens to both.
 */
export interface OpeningStream {
  readonly stream: MuxStream;
  readonly opened: Promise<MuxStream>;
}

/** An OPEN from the peer, waiting for the application to accept or reject it. */
export interface IncomingOpen {
  readonly id: number;
  readonly metadata: Metadata;
  /**
   * Hands the early data (DATA sent behind the OPEN) to `write` instead of the stream: what
   * arrived so far at once, later chunks as they arrive, until the open is decided. The stream
   * `accept()` returns starts after them. The relay passes them on behind its own open to the
   * connector. No-op once decided.
   */
  forwardEarlyData(write: (chunk: Buffer) => void): void;
  /** Aborted (reason: an OpenError) when the opener cancels, the open times out (OPEN_TIMEOUT is sent) or the session ends. */
  readonly signal: AbortSignal;
  /** Sends OPEN_RESULT OK and returns the stream. Throws the abort reason when the open was aborted. */
  accept(resultMetadata?: Record<string, string>): MuxStream;
  /** Sends OPEN_RESULT `result` (a non-zero OpenResult) with a human-readable text. No-op once aborted. */
  reject(result: number, message?: string, resultMetadata?: Record<string, string>): void;
}

export interface GoAwayInfo {
  lastStreamId: number;
  reason: number;
  message: string;
}

export interface SessionStats {
  /** DATA payload bytes received / sent. */
  bytesIn: number;
  bytesOut: number;
  framesIn: number;
  framesOut: number;
  /** Streams this side opened that the peer accepted. */
  streamsOpened: number;
  /** Streams the peer opened that this side accepted. */
  streamsAccepted: number;
  /** Incoming opens refused (by the application or a limit). */
  opensRefused: number;
  resetsSent: number;
  resetsReceived: number;
  /** Peer protocol violations seen (stream- or session-level). */
  violations: number;
  /** Late frames for streams already closed, dropped as the protocol says. */
  framesDiscarded: number;
  /** DATA frames sent around a received payload, without allocating or copying (a splice forwarding). */
  framesForwardedInPlace: number;
}

/** The session options that refuse a peer's open with LIMIT_REACHED. */
export type SessionLimit = 'maxStreams' | 'maxPendingOpens' | 'maxOpensPerSecond';

export interface Session {
  on(event: 'open', listener: (incoming: IncomingOpen) => void): this;
  on(event: 'goaway', listener: (info: GoAwayInfo) => void): this;
  on(event: 'rtt', listener: (ms: number) => void): this;
  on(event: 'close', listener: (err?: Error) => void): this;
  /** A peer's open refused LIMIT_REACHED, with the option that refused it (for metrics). */
  on(event: 'limit', listener: (limit: SessionLimit) => void): this;
  once(event: 'open', listener: (incoming: IncomingOpen) => void): this;
  once(event: 'goaway', listener: (info: GoAwayInfo) => void): this;
  once(event: 'rtt', listener: (ms: number) => void): this;
  once(event: 'close', listener: (err?: Error) => void): this;
}

interface Opening {
  /** Created with the OPEN, carrying early data until OPEN_RESULT. */
  stream: MuxStream;
  /** Handed to the application (openStream): a failed open destroys it with the error, else quietly. */
  exposed: boolean;
  resolve(stream: MuxStream): void;
  reject(err: Error): void;
  timer: TimerHandle;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

interface Pending {
  frame: OpenFrame;
  controller: AbortController;
  timer: TimerHandle;
  decided: boolean;
  /** Early data held until the decision: dropped on a refusal, the stream's first bytes on accept. */
  early: Buffer[];
  /** Early payload bytes received in all: those still in `early` and those forwarded. */
  earlyBytes: number;
  /** Set by forwardEarlyData: early chunks go here, not into the stream. */
  earlySink: ((chunk: Buffer) => void) | undefined;
}

/** The session's record of one stream; the stream itself never sees it. */
interface Entry {
  readonly id: number;
  /** Opened by this side. */
  readonly local: boolean;
  /** 'opening': our OPEN awaits OPEN_RESULT; 'pending': the peer's OPEN awaits our decision. */
  state: 'opening' | 'pending' | 'open';
  removed: boolean;
  stream: MuxStream | undefined;
  opening: Opening | undefined;
  pending: Pending | undefined;
  /** Credited payload not yet framed. */
  sendQueue: Queue<Buffer>;
  queuedBytes: number;
  /** Set when FIN waits behind the queued data. */
  finCallback: (() => void) | undefined;
  finSent: boolean;
  finReceived: boolean;
  inRing: boolean;
  /** Credit granted but not yet sent: one WINDOW_UPDATE per stream waits in the control queue. */
  pendingGrant: number;
  grantQueued: boolean;
  /** Largest DATA payload to send on this stream: ours and the peer's cap, whichever is smaller. */
  maxData: number;
  /** This side's receive window, once the stream exists. */
  tuner: WindowTuner | undefined;
}

const EMPTY_METADATA: Metadata = Object.freeze({});

/** A failed open: its promise rejects, and its early stream ends (with the error when the application holds it). */
function failOpening(opening: Opening, err: Error): void {
  opening.reject(err);
  opening.stream.abort(opening.exposed ? err : undefined);
}

/**
 * DATA payloads received by any session of this process, each still preceded in its message
 * by the HEADER_SIZE bytes of its own header, which the session owns and no longer needs.
 * When the application writes such a payload unchanged to a stream (the relay's splice does,
 * chunk for chunk), the frame reuses those bytes for its header: no allocation, no copy.
 * Used once: a payload written twice (a tee) is copied the second time.
 */
const forwardable = new WeakSet<Buffer>();
/**
 * Smaller payloads are not tracked: measured here, the set's bookkeeping (~50 ns) costs what
 * allocating and copying 64 bytes does, while 4 KiB costs ~2 µs to copy and 64 KiB ~13 µs.
 */
const FORWARD_IN_PLACE_MIN_BYTES = 1024;
const MAX_PINGS_IN_FLIGHT = 16;
const WS_CLOSE_NORMAL = 1000;
const WS_CLOSE_PROTOCOL = 1002;
const WS_CLOSE_POLICY = 1008;
const WS_CLOSE_INTERNAL = 1011;
let quietLogger: Logger | undefined;

/**
 * A multiplexed session over one FrameTransport (docs/protocol.md). Either side may open
 * streams; each stream has its own credit window, so a stalled stream never blocks another.
 *
 * Sending is two-level: control frames (OPEN, OPEN_RESULT, WINDOW_UPDATE, RESET, PING, PONG,
 * GOAWAY) go first, through a queue bounded by maxControlQueue; DATA and FIN go round-robin
 * over the streams that have something to send, one frame per turn, and only while the
 * transport's bufferedAmount is below transportHighWaterMark. Nothing grows without bound:
 * per-stream send queues hold only credited bytes, receive buffers at most one window.
 */
export class Session extends EventEmitter {
  readonly role: 'client' | 'server';
  readonly stats: SessionStats = {
    bytesIn: 0,
    bytesOut: 0,
    framesIn: 0,
    framesOut: 0,
    streamsOpened: 0,
    streamsAccepted: 0,
    opensRefused: 0,
    resetsSent: 0,
    resetsReceived: 0,
    violations: 0,
    framesDiscarded: 0,
    framesForwardedInPlace: 0,
  };

  private readonly transport: FrameTransport;
  private readonly o: Readonly<NumericOptions>;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly limits: DecodeLimits;
  private readonly streams = new Map<number, Entry>();
  private nextLocalId: number;
  private lastLocalId = 0;
  private lastRemoteId = 0;
  private localLive = 0;
  private remoteLive = 0;
  private pendingIncoming = 0;
  private readonly control = new Queue<Buffer | Entry>();
  private readonly ring = new Queue<Entry>();
  private flushScheduled = false;
  private goAwaySent = false;
  private peerGoAway: GoAwayInfo | undefined;
  private peerGoAwayError: SessionError | undefined;
  private finished = false;
  private closing = false;
  private transportClosing = false;
  /** close() or destroy() was called on the transport: nothing more may be sent. */
  private transportDone = false;
  private closeCheckScheduled = false;
  private pingTimer: TimerHandle | undefined;
  private deadTimer: TimerHandle | undefined;
  private closeTimer: TimerHandle | undefined;
  private lastFrameAt: number;
  private readonly pings = new Map<number, { sentAt: number; waiter: { resolve(ms: number): void; reject(err: Error): void } | undefined }>();
  private pingSeq = 0;
  private rtt: number | undefined;
  /** A PING asked for by window tuning is on its way. */
  private probing = false;
  private readonly rttEstimate: RttEstimate;
  private readonly receiveBudget: ReceiveBudget;
  private tokens: number;
  private tokensAt: number;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  constructor(transport: FrameTransport, options: SessionOptions) {
    super();
    const { clock, logger, ...numeric } = options;
    const valid = validateOptions(OPTIONS_SCHEMA, numeric, 'session options');
    this.role = valid.role;
    this.o = Object.freeze({ ...SESSION_DEFAULTS, ...stripUndefined(valid) });
    this.clock = clock ?? systemClock;
    this.log = (logger ?? (quietLogger ??= silentLogger())).child({ scope: 'mux', role: this.role });
    this.limits = Object.freeze({
      maxFrameSize: this.o.maxFrameSize,
      maxMetadataBytes: this.o.maxMetadataBytes,
      maxMetadataEntries: this.o.maxMetadataEntries,
    });
    this.transport = transport;
    this.nextLocalId = this.role === 'client' ? 1 : 2;
    this.lastFrameAt = this.clock.now();
    this.tokens = Math.max(1, this.o.maxOpensPerSecond);
    this.tokensAt = this.lastFrameAt;
    this.receiveBudget = new ReceiveBudget(this.o.maxSessionReceiveBuffer);
    this.rttEstimate = { rttMs: () => this.rtt, refresh: () => this.probeRtt() };
    this.closedPromise = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    transport.setHandlers({
      frame: (data) => this.onMessage(data),
      drain: () => this.flush(),
      close: (err) => this.onTransportClose(err),
    });
    this.pingTimer = this.clock.setInterval(() => this.keepalive(), this.o.pingIntervalMs);
    this.deadTimer = this.clock.setTimeout(() => this.checkDeadPeer(), this.o.deadPeerTimeoutMs);
  }

  /** Latest round-trip time measured by PING/PONG, in ms. */
  get rttMs(): number | undefined {
    return this.rtt;
  }

  /**
   * Sum of this side's receive windows over its streams (bytes): what the peers may have in
   * flight or buffered here. Grows with window tuning up to maxSessionReceiveBuffer (initial
   * windows count and are never refused).
   */
  get receiveWindowBytes(): number {
    return this.receiveBudget.used;
  }

  /** Streams known to the session: open, being opened, or waiting for a decision. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** True once either side sent GOAWAY: no new stream will be opened on this session. */
  get goingAway(): boolean {
    return this.goAwaySent || this.peerGoAway !== undefined;
  }

  get closed(): boolean {
    return this.finished;
  }

  /** Largest message this session accepts: the WebSocket adapter's maxPayload must be at least this. */
  get maxMessageSize(): number {
    return maxMessageSize(this.limits);
  }

  /**
   * Opens a stream. Resolves when the peer accepts (OPEN_RESULT OK; the peer's metadata is in
   * `stream.resultMetadata`). Rejects with OpenError (refused by the peer with its result and
   * text, or locally: LIMIT_REACHED, GOING_AWAY, OPEN_TIMEOUT, CANCELLED), StreamError (the
   * peer reset the stream before answering), MetadataError, or SessionError (session ended).
   */
  open(metadata: Record<string, string>, options: OpenOptions = {}): Promise<MuxStream> {
    try {
      return this.startOpen(metadata, options, false).opened;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Opens a stream that can carry early data: what is written to `stream` before the peer
   * answers (up to EARLY_DATA_BYTES) goes out right behind the OPEN, so a protocol whose client
   * speaks first (a TLS ClientHello) saves the round trip of the open. Throws at once what
   * open() would reject with before sending anything; later failures reject `opened`.
   */
  openStream(metadata: Record<string, string>, options: OpenOptions = {}): OpeningStream {
    return this.startOpen(metadata, options, true);
  }

  private startOpen(metadata: Record<string, string>, options: OpenOptions, exposed: boolean): OpeningStream {
    if (this.finished) throw new SessionError('POSTERN_ERR_SESSION_CLOSED', 'cannot open a stream: the session is closed');
    if (this.goingAway) {
      const by = this.goAwaySent ? 'this side sent GOAWAY' : 'the peer sent GOAWAY';
      throw new OpenError('POSTERN_ERR_OPEN_GOING_AWAY', OpenResult.GOING_AWAY, `cannot open a stream: the session is going away (${by}); open on a new connection`);
    }
    if (options.signal?.aborted) {
      throw new OpenError('POSTERN_ERR_OPEN_CANCELLED', OpenResult.CANCELLED, 'open cancelled before it started', { cause: options.signal.reason });
    }
    if (this.localLive >= this.o.maxStreams) {
      throw new OpenError('POSTERN_ERR_OPEN_LIMIT_REACHED', OpenResult.LIMIT_REACHED, `cannot open a stream: maxStreams (${this.o.maxStreams}) streams opened by this side are live`);
    }
    const frozen = Object.freeze({ ...metadata });
    metadataByteLength(frozen, this.limits);
    const id = this.nextLocalId;
    if (id > this.o.maxStreamId) {
      this.goAway(GoAwayReason.IDS_EXHAUSTED, 'stream ids exhausted');
      throw new OpenError('POSTERN_ERR_STREAM_IDS_EXHAUSTED', OpenResult.GOING_AWAY, `cannot open a stream: every stream id up to ${this.o.maxStreamId} is used; open on a new connection`);
    }
    this.nextLocalId += 2;
    this.lastLocalId = id;
    const entry = this.addEntry(id, true, 'opening');
    // Until OPEN_RESULT: credit for the early data only, in frames any peer accepts.
    entry.maxData = MIN_MAX_DATA;
    const stream = this.createStream(entry, frozen, EMPTY_METADATA, EARLY_DATA_BYTES);
    const timeoutMs = options.timeoutMs ?? this.o.openTimeoutMs;
    const opened = new Promise<MuxStream>((resolve, reject) => {
      const opening: Opening = { stream, exposed, resolve, reject, timer: undefined, signal: options.signal, onAbort: undefined };
      opening.timer = this.clock.setTimeout(
        () => this.cancelOpen(entry, new OpenError('POSTERN_ERR_OPEN_TIMEOUT', OpenResult.OPEN_TIMEOUT, `no OPEN_RESULT for stream ${id} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      if (options.signal) {
        const signal = options.signal;
        opening.onAbort = () =>
          this.cancelOpen(entry, new OpenError('POSTERN_ERR_OPEN_CANCELLED', OpenResult.CANCELLED, `open of stream ${id} cancelled`, { cause: signal.reason }));
        signal.addEventListener('abort', opening.onAbort, { once: true });
      }
      entry.opening = opening;
    });
    // Sent by the next flush, with the early data the caller writes in this same tick (a
    // ClientHello is written synchronously by tls.connect), so the peer gets both in one read.
    // Not bounded by maxControlQueue: local opens are bounded by maxStreams.
    this.control.push(encodeFrame({ type: 'open', streamId: id, window: this.o.initialWindow, maxData: this.o.maxFrameSize, metadata: frozen }, this.limits));
    this.scheduleFlush();
    return { stream, opened };
  }

  /**
   * Sends GOAWAY: this side accepts no new stream (later OPENs are refused with GOING_AWAY) and
   * opens none; live streams finish. Sent once.
   */
  goAway(reason: number = GoAwayReason.NORMAL, message = ''): void {
    checkU16('goAway reason', reason);
    if (this.finished || this.goAwaySent) return;
    this.goAwaySent = true;
    this.enqueueControl(encodeFrame({ type: 'goaway', streamId: 0, lastStreamId: this.lastRemoteId, reason, message }));
  }

  /**
   * Ends the session at once for a reason the peer must learn (REVOKED, PROTOCOL_ERROR, …):
   * GOAWAY with `reason`, every stream ended with the reason's error, transport closed.
   */
  terminate(reason: number, message = ''): void {
    checkU16('terminate reason', reason);
    const info = describeGoAwayReason(reason);
    this.fail(new SessionError(info.code, `session terminated by this side (${info.name})${message ? `: ${message}` : ''}`), reason, message);
  }

  /**
   * Graceful close: GOAWAY, wait until every stream has ended (or reset those still live after
   * `timeoutMs` with DRAIN_TIMEOUT), then close the transport. Resolves once it is closed.
   */
  close(options: CloseOptions = {}): Promise<void> {
    if (this.finished || this.closing) return this.closedPromise;
    this.closing = true;
    this.goAway(GoAwayReason.NORMAL, 'closing');
    if (options.timeoutMs !== undefined) this.closeTimer = this.clock.setTimeout(() => this.drainTimeout(), options.timeoutMs);
    this.maybeFinishClose();
    return this.closedPromise;
  }

  /**
   * Immediate teardown; the transport is destroyed. Streams are destroyed with `err`, or
   * without an error when none is given (like http2); pending opens reject with SESSION_CLOSED.
   */
  destroy(err?: Error): void {
    if (this.finished) return;
    this.finalize(err, err === undefined ? 'quiet' : undefined);
    this.transportDone = true;
    this.transport.destroy(err);
  }

  /** Sends a PING and resolves with the round-trip time in ms. */
  ping(): Promise<number> {
    if (this.finished) return Promise.reject(new SessionError('POSTERN_ERR_SESSION_CLOSED', 'cannot ping: the session is closed'));
    if (this.pings.size >= MAX_PINGS_IN_FLIGHT) {
      return Promise.reject(new PosternError('POSTERN_ERR_MUX_MISUSE', `cannot ping: ${MAX_PINGS_IN_FLIGHT} pings are already in flight`));
    }
    return new Promise((resolve, reject) => this.sendPing({ resolve, reject }));
  }

  // --- receiving ------------------------------------------------------------------------

  private onMessage(data: Buffer): void {
    if (this.finished) return;
    this.lastFrameAt = this.clock.now();
    this.stats.framesIn++;
    let frame: Frame;
    try {
      frame = decodeFrame(data, this.limits);
    } catch (err) {
      if (err instanceof MetadataError) this.onBadMetadata(data[0]!, err);
      else if (err instanceof ProtocolError) this.violation(err);
      else this.fail(new SessionError('POSTERN_ERR_INTERNAL', `decoding a frame failed unexpectedly: ${String(err)}`, { cause: err }), GoAwayReason.INTERNAL);
      return;
    }
    switch (frame.type) {
      case 'data': {
        const entry = this.route(frame.streamId, 'DATA');
        if (entry === undefined) return;
        this.stats.bytesIn += frame.payload.length;
        if (entry.pending) return this.onEarlyData(entry, entry.pending, frame.payload);
        if (entry.state !== 'open') return this.streamViolation(entry, `DATA on stream ${entry.id} before OPEN_RESULT`);
        if (frame.payload.length >= FORWARD_IN_PLACE_MIN_BYTES) forwardable.add(frame.payload);
        if (!entry.stream!.receiveData(frame.payload)) this.stats.violations++;
        return;
      }
      case 'window-update': {
        const entry = this.route(frame.streamId, 'WINDOW_UPDATE');
        if (entry === undefined) return;
        if (entry.state !== 'open') return this.streamViolation(entry, `WINDOW_UPDATE on stream ${entry.id} before OPEN_RESULT`);
        if (!entry.stream!.receiveWindowUpdate(frame.increment)) this.stats.violations++;
        return;
      }
      case 'fin': {
        const entry = this.route(frame.streamId, 'FIN');
        if (entry === undefined) return;
        if (entry.state !== 'open') return this.streamViolation(entry, `FIN on stream ${entry.id} before OPEN_RESULT`);
        if (!entry.stream!.receiveFin()) {
          this.stats.violations++;
          return;
        }
        entry.finReceived = true;
        if (entry.finSent) this.remove(entry);
        return;
      }
      case 'reset':
        return this.onReset(frame.streamId, frame.code, frame.message);
      case 'open':
        return this.onOpen(frame);
      case 'open-result':
        return this.onOpenResult(frame);
      case 'ping':
        return this.enqueueControl(encodeFrame({ type: 'pong', streamId: 0, payload: frame.payload }));
      case 'pong':
        return this.onPong(frame.payload);
      case 'goaway':
        return this.onGoAway(frame);
    }
  }

  /** The live entry a stream frame is for, or undefined once the frame has been dealt with. */
  private route(id: number, what: string): Entry | undefined {
    const entry = this.streams.get(id);
    if (entry !== undefined) return entry;
    if (id <= (this.isLocalId(id) ? this.lastLocalId : this.lastRemoteId)) {
      // A stream that existed and is closed: late frames are expected after a RESET.
      this.stats.framesDiscarded++;
      return undefined;
    }
    this.violation(new ProtocolError('POSTERN_ERR_PROTO_STREAM_UNKNOWN', `${what} on stream ${id}, which was never opened`));
    return undefined;
  }

  private onOpen(frame: OpenFrame): void {
    const id = frame.streamId;
    if (!this.takeRemoteId(id)) return;
    if (this.goAwaySent) return this.refuse(id, OpenResult.GOING_AWAY, 'this side sent GOAWAY and accepts no new stream');
    if (this.remoteLive >= this.o.maxStreams) return this.refuseLimit(id, 'maxStreams', `maxStreams (${this.o.maxStreams}) streams opened by the peer are live`);
    if (this.pendingIncoming >= this.o.maxPendingOpens) {
      return this.refuseLimit(id, 'maxPendingOpens', `maxPendingOpens (${this.o.maxPendingOpens}) opens are waiting for a decision`);
    }
    if (!this.takeOpenToken()) return this.refuseLimit(id, 'maxOpensPerSecond', `more than maxOpensPerSecond (${this.o.maxOpensPerSecond}) opens per second`);
    if (this.listenerCount('open') === 0) return this.refuse(id, OpenResult.POLICY_DENIED, 'this side accepts no streams');

    const entry = this.addEntry(id, false, 'pending');
    const pending: Pending = {
      frame,
      controller: new AbortController(),
      timer: this.clock.setTimeout(() => this.pendingTimeout(entry), this.o.openTimeoutMs),
      decided: false,
      early: [],
      earlyBytes: 0,
      earlySink: undefined,
    };
    entry.pending = pending;
    this.pendingIncoming++;
    const incoming: IncomingOpen = {
      id,
      metadata: frame.metadata,
      signal: pending.controller.signal,
      forwardEarlyData: (write) => {
        if (pending.decided || pending.controller.signal.aborted) return;
        pending.earlySink = write;
        const held = pending.early;
        pending.early = [];
        for (const chunk of held) write(chunk);
      },
      accept: (resultMetadata = {}) => this.acceptIncoming(entry, pending, resultMetadata),
      reject: (result, message = '', resultMetadata = {}) => this.rejectIncoming(entry, pending, result, message, resultMetadata),
    };
    try {
      this.emit('open', incoming);
    } catch (err) {
      this.log.error({ err, streamId: id }, "the session's 'open' listener threw; refusing the stream");
      if (!pending.decided && !pending.controller.signal.aborted) incoming.reject(OpenResult.INTERNAL, 'the open handler failed');
    }
  }

  private acceptIncoming(entry: Entry, pending: Pending, resultMetadata: Record<string, string>): MuxStream {
    if (pending.controller.signal.aborted) throw pending.controller.signal.reason;
    if (pending.decided) throw new PosternError('POSTERN_ERR_MUX_MISUSE', `open of stream ${entry.id} was already decided`);
    const meta = Object.freeze({ ...resultMetadata });
    metadataByteLength(meta, this.limits);
    pending.decided = true;
    this.clock.clearTimeout(pending.timer);
    entry.pending = undefined;
    this.pendingIncoming--;
    entry.state = 'open';
    entry.maxData = Math.min(this.o.maxFrameSize, pending.frame.maxData);
    const stream = this.createStream(entry, pending.frame.metadata, meta, pending.frame.window);
    this.stats.streamsAccepted++;
    this.enqueueControl(
      encodeFrame({ type: 'open-result', streamId: entry.id, result: OpenResult.OK, window: this.o.initialWindow, maxData: this.o.maxFrameSize, message: '', metadata: meta }, this.limits),
    );
    // The early data counts against the window just announced: forwarded bytes as consumed, the rest as received.
    pending.earlySink = undefined;
    const held = pending.early.reduce((n, chunk) => n + chunk.length, 0);
    if (pending.earlyBytes > held) stream.receiveTaken(pending.earlyBytes - held);
    for (const chunk of pending.early) stream.receiveData(chunk);
    pending.early = [];
    return stream;
  }

  private rejectIncoming(entry: Entry, pending: Pending, result: number, message: string, resultMetadata: Record<string, string>): void {
    if (!Number.isInteger(result) || result < 1 || result > 0xffff) {
      throw new PosternError('POSTERN_ERR_MUX_MISUSE', `reject(${result}): the result must be a non-zero OpenResult in 1..65535`);
    }
    if (pending.controller.signal.aborted) return;
    if (pending.decided) throw new PosternError('POSTERN_ERR_MUX_MISUSE', `open of stream ${entry.id} was already decided`);
    const meta = Object.freeze({ ...resultMetadata });
    metadataByteLength(meta, this.limits);
    pending.decided = true;
    this.remove(entry);
    this.refuse(entry.id, result, message, meta);
  }

  /** DATA behind a peer's OPEN we have not decided yet: held, within EARLY_DATA_BYTES. */
  private onEarlyData(entry: Entry, pending: Pending, payload: Buffer): void {
    if (payload.length > MIN_MAX_DATA || pending.earlyBytes + payload.length > EARLY_DATA_BYTES) {
      const message =
        payload.length > MIN_MAX_DATA
          ? `early DATA frame of ${payload.length} bytes on stream ${entry.id}; before OPEN_RESULT a frame carries at most ${MIN_MAX_DATA}`
          : `early DATA on stream ${entry.id} beyond ${EARLY_DATA_BYTES} bytes before OPEN_RESULT`;
      this.stats.violations++;
      this.log.warn({ code: 'POSTERN_ERR_PROTO_FLOW_CONTROL', streamId: entry.id }, message);
      this.resetEntry(entry, ResetCode.FLOW_CONTROL_ERROR, message);
      pending.controller.abort(new ProtocolError('POSTERN_ERR_PROTO_FLOW_CONTROL', message));
      return;
    }
    pending.earlyBytes += payload.length;
    if (payload.length === 0) return;
    if (pending.earlySink) pending.earlySink(payload);
    else pending.early.push(payload);
  }

  private pendingTimeout(entry: Entry): void {
    const pending = entry.pending;
    if (pending === undefined || pending.decided) return;
    const text = `not decided within openTimeoutMs (${this.o.openTimeoutMs} ms)`;
    this.remove(entry);
    pending.controller.abort(new OpenError('POSTERN_ERR_OPEN_TIMEOUT', OpenResult.OPEN_TIMEOUT, `open of stream ${entry.id} ${text}`));
    this.refuse(entry.id, OpenResult.OPEN_TIMEOUT, text);
  }

  private onOpenResult(frame: OpenResultFrame): void {
    const entry = this.route(frame.streamId, 'OPEN_RESULT');
    if (entry === undefined) return;
    if (entry.state !== 'opening') {
      return this.violation(new ProtocolError('POSTERN_ERR_PROTO_UNEXPECTED_FRAME', `OPEN_RESULT on stream ${entry.id}, which is not waiting for one`));
    }
    const opening = entry.opening!;
    if (frame.result !== OpenResult.OK) {
      this.remove(entry);
      const info = describeOpenResult(frame.result);
      failOpening(opening, new OpenError(info.code, frame.result, frame.message || info.text));
      return;
    }
    this.clearOpening(opening);
    entry.opening = undefined;
    entry.state = 'open';
    entry.maxData = Math.min(this.o.maxFrameSize, frame.maxData);
    // The stream was given EARLY_DATA_BYTES of credit with the OPEN: the peer's window replaces it.
    opening.stream.opened(frame.window - EARLY_DATA_BYTES, frame.metadata);
    this.stats.streamsOpened++;
    if (entry.queuedBytes > 0 || entry.finCallback !== undefined) this.markReady(entry);
    opening.resolve(opening.stream);
  }

  private onBadMetadata(type: number, err: MetadataError): void {
    const id = err.streamId;
    if (type === FrameType.OPEN) {
      if (!this.takeRemoteId(id)) return;
      this.stats.violations++;
      this.log.warn({ code: err.code, streamId: id }, err.message);
      return this.refuse(id, OpenResult.METADATA_INVALID, err.message);
    }
    const entry = this.route(id, 'OPEN_RESULT');
    if (entry === undefined) return;
    if (entry.state !== 'opening') {
      return this.violation(new ProtocolError('POSTERN_ERR_PROTO_UNEXPECTED_FRAME', `OPEN_RESULT on stream ${id}, which is not waiting for one`));
    }
    this.stats.violations++;
    const opening = entry.opening!;
    this.resetEntry(entry, ResetCode.PROTOCOL_ERROR, err.message);
    failOpening(opening, err);
  }

  private onReset(id: number, code: number, message: string): void {
    const entry = this.route(id, 'RESET');
    if (entry === undefined) return;
    this.stats.resetsReceived++;
    const { opening, pending, stream } = entry;
    this.remove(entry);
    const info = describeResetCode(code);
    const text = `stream ${id} reset by the peer (${info.name})${message ? `: ${message}` : ''}`;
    if (opening) failOpening(opening, new StreamError(info.code, code, true, text));
    else if (pending) pending.controller.abort(new OpenError('POSTERN_ERR_OPEN_CANCELLED', OpenResult.CANCELLED, `the opener cancelled stream ${id} (${info.name})`));
    else stream?.receiveReset(code, message);
  }

  private onPong(payload: Buffer): void {
    const seq = payload.readUInt32BE(0) * 2 ** 32 + payload.readUInt32BE(4);
    const ping = this.pings.get(seq);
    if (ping === undefined) return;
    this.pings.delete(seq);
    const rtt = this.clock.now() - ping.sentAt;
    this.rtt = rtt;
    ping.waiter?.resolve(rtt);
    this.emit('rtt', rtt);
  }

  private onGoAway(frame: GoAwayFrame): void {
    const lastStreamId = Math.min(frame.lastStreamId, this.peerGoAway?.lastStreamId ?? MAX_STREAM_ID);
    const info = describeGoAwayReason(frame.reason);
    this.peerGoAway = { lastStreamId, reason: frame.reason, message: frame.message };
    if (!info.graceful) {
      this.peerGoAwayError = new SessionError(info.code, `the peer closed the session (GOAWAY ${info.name})${frame.message ? `: ${frame.message}` : ''}`);
    }
    // Our opens above lastStreamId were not processed and never will be: safe to retry elsewhere.
    for (const entry of [...this.streams.values()]) {
      if (entry.state === 'opening' && entry.id > lastStreamId) {
        const opening = entry.opening!;
        this.remove(entry);
        failOpening(opening, new OpenError('POSTERN_ERR_OPEN_GOING_AWAY', OpenResult.GOING_AWAY, `the peer sent GOAWAY before processing stream ${entry.id}; open on a new connection`));
      }
    }
    this.log.info({ lastStreamId, reason: info.name, message: frame.message }, 'peer sent GOAWAY');
    this.emit('goaway', { ...this.peerGoAway });
  }

  // --- violations and teardown ----------------------------------------------------------

  /** Checks the id of a peer's OPEN (parity, strictly increasing); the session fails otherwise. */
  private takeRemoteId(id: number): boolean {
    if (this.isLocalId(id)) {
      const own = this.role === 'client' ? 'odd' : 'even';
      this.violation(new ProtocolError('POSTERN_ERR_PROTO_STREAM_ID_PARITY', `the peer opened stream ${id}, but ${own} ids belong to this side (${this.role})`));
      return false;
    }
    if (id <= this.lastRemoteId) {
      this.violation(new ProtocolError('POSTERN_ERR_PROTO_STREAM_ID_REUSED', `the peer opened stream ${id}, not above its previous id ${this.lastRemoteId}`));
      return false;
    }
    this.lastRemoteId = id;
    return true;
  }

  /** A frame its stream's state forbids: only that stream is reset with PROTOCOL_ERROR. */
  private streamViolation(entry: Entry, message: string): void {
    this.stats.violations++;
    this.log.warn({ code: 'POSTERN_ERR_PROTO_UNEXPECTED_FRAME', streamId: entry.id }, message);
    const err = new ProtocolError('POSTERN_ERR_PROTO_UNEXPECTED_FRAME', message);
    const { opening, pending } = entry;
    this.resetEntry(entry, ResetCode.PROTOCOL_ERROR, message);
    if (opening) failOpening(opening, err);
    if (pending) pending.controller.abort(err);
  }

  private violation(err: ProtocolError): void {
    this.stats.violations++;
    this.fail(err, GoAwayReason.PROTOCOL_ERROR);
  }

  /** Fatal: GOAWAY with `reason`, every stream ended with `err`, transport closed. */
  private fail(err: PosternError, reason: number, wireMessage = err.message): void {
    if (this.finished) return;
    this.log.warn({ code: err.code, reason: describeGoAwayReason(reason).name }, err.message);
    this.transmit(encodeFrame({ type: 'goaway', streamId: 0, lastStreamId: this.lastRemoteId, reason, message: wireMessage }));
    this.finalize(err);
    this.transportDone = true;
    if (reason === GoAwayReason.PING_TIMEOUT) {
      // Nothing arrives from the peer: a close handshake would only wait for it.
      this.transport.destroy(err);
    } else {
      const wsCode = reason === GoAwayReason.PROTOCOL_ERROR ? WS_CLOSE_PROTOCOL : reason === GoAwayReason.INTERNAL ? WS_CLOSE_INTERNAL : WS_CLOSE_POLICY;
      this.transport.close(wsCode, `postern: ${describeGoAwayReason(reason).name}`);
    }
  }

  private onTransportClose(err: Error | undefined): void {
    if (this.finished) return;
    if (this.peerGoAwayError) return this.finalize(this.peerGoAwayError);
    // Streams report one code for a lost connection, whatever the transport said; the
    // session's 'close' event carries the transport's own error.
    const live = this.streams.size;
    const streamErr = new SessionError('POSTERN_ERR_SESSION_CLOSED', `the tunnel connection closed with ${live} stream(s) still open${err ? `: ${err.message}` : ''}`, {
      cause: err,
    });
    this.finalize(err, streamErr);
  }

  /**
   * Everything ends: timers cleared, streams and pending opens failed, 'close' emitted.
   * Streams end with `streamErr` (default: `err`, or SESSION_CLOSED), or quietly with 'quiet'.
   */
  private finalize(err: Error | undefined, streamErrOrQuiet?: Error | 'quiet'): void {
    if (this.finished) return;
    this.finished = true;
    this.clearTimers();
    const live = this.streams.size;
    const quietStreams = streamErrOrQuiet === 'quiet';
    const streamErr =
      streamErrOrQuiet instanceof Error
        ? streamErrOrQuiet
        : err instanceof PosternError
          ? err
          : new SessionError('POSTERN_ERR_SESSION_CLOSED', `the session closed with ${live} stream(s) still open${err ? `: ${err.message}` : ''}`, { cause: err });
    for (const entry of [...this.streams.values()]) {
      const { opening, pending, stream } = entry;
      this.remove(entry);
      if (opening) failOpening(opening, streamErr);
      else if (pending) pending.controller.abort(streamErr);
      else stream?.abort(quietStreams ? undefined : streamErr);
    }
    this.ring.clear();
    this.control.clear();
    for (const ping of this.pings.values()) ping.waiter?.reject(new SessionError('POSTERN_ERR_SESSION_CLOSED', 'the session closed before the PONG arrived', { cause: err }));
    this.pings.clear();
    this.emit('close', err);
    this.resolveClosed();
  }

  private clearTimers(): void {
    if (this.pingTimer !== undefined) this.clock.clearInterval(this.pingTimer);
    if (this.deadTimer !== undefined) this.clock.clearTimeout(this.deadTimer);
    if (this.closeTimer !== undefined) this.clock.clearTimeout(this.closeTimer);
    this.pingTimer = this.deadTimer = this.closeTimer = undefined;
  }

  /** Checked after the current synchronous work, so a RESET or refusal sent with the last removal goes out first. */
  private maybeFinishClose(): void {
    if (!this.closing || this.closeCheckScheduled) return;
    this.closeCheckScheduled = true;
    queueMicrotask(() => {
      this.closeCheckScheduled = false;
      this.finishClose();
    });
  }

  private finishClose(): void {
    if (!this.closing || this.finished || this.transportClosing || this.streams.size > 0) return;
    this.transportClosing = true;
    if (this.closeTimer !== undefined) this.clock.clearTimeout(this.closeTimer);
    this.closeTimer = undefined;
    // The last RESETs, WINDOW_UPDATEs and the GOAWAY itself go out before the transport closes.
    while (this.control.length > 0) this.transmitControl(this.control.shift()!);
    this.transportDone = true;
    this.transport.close(WS_CLOSE_NORMAL, 'postern: session closed');
  }

  private drainTimeout(): void {
    this.closeTimer = undefined;
    for (const entry of [...this.streams.values()]) {
      const text = `stream ${entry.id} still live when the close grace period ended`;
      if (entry.opening) this.cancelOpen(entry, new OpenError('POSTERN_ERR_OPEN_GOING_AWAY', OpenResult.GOING_AWAY, text));
      else if (entry.stream) entry.stream.destroy(new StreamError('POSTERN_ERR_STREAM_DRAIN_TIMEOUT', ResetCode.DRAIN_TIMEOUT, false, text));
      else if (entry.pending) {
        const pending = entry.pending;
        this.remove(entry);
        pending.controller.abort(new OpenError('POSTERN_ERR_OPEN_GOING_AWAY', OpenResult.GOING_AWAY, text));
        this.refuse(entry.id, OpenResult.GOING_AWAY, 'the session is closing');
      }
    }
    this.maybeFinishClose();
  }

  private checkDeadPeer(): void {
    this.deadTimer = undefined;
    if (this.finished) return;
    const idle = this.clock.now() - this.lastFrameAt;
    if (idle >= this.o.deadPeerTimeoutMs) {
      this.fail(
        new SessionError('POSTERN_ERR_SESSION_PING_TIMEOUT', `no frame from the peer for ${Math.round(idle)} ms (deadPeerTimeoutMs ${this.o.deadPeerTimeoutMs})`),
        GoAwayReason.PING_TIMEOUT,
      );
      return;
    }
    this.deadTimer = this.clock.setTimeout(() => this.checkDeadPeer(), this.o.deadPeerTimeoutMs - idle);
  }

  // --- streams --------------------------------------------------------------------------

  private addEntry(id: number, local: boolean, state: Entry['state']): Entry {
    const entry: Entry = {
      id,
      local,
      state,
      removed: false,
      stream: undefined,
      opening: undefined,
      pending: undefined,
      sendQueue: new Queue<Buffer>(),
      queuedBytes: 0,
      finCallback: undefined,
      finSent: false,
      finReceived: false,
      inRing: false,
      pendingGrant: 0,
      grantQueued: false,
      maxData: this.o.maxFrameSize,
      tuner: undefined,
    };
    this.streams.set(id, entry);
    if (local) this.localLive++;
    else this.remoteLive++;
    return entry;
  }

  /** Forgets a stream: counters, timers of a pending open, queued data. */
  private remove(entry: Entry): void {
    if (entry.removed) return;
    entry.removed = true;
    this.streams.delete(entry.id);
    if (entry.local) this.localLive--;
    else this.remoteLive--;
    if (entry.opening) this.clearOpening(entry.opening);
    entry.opening = undefined;
    if (entry.pending) {
      this.clock.clearTimeout(entry.pending.timer);
      this.pendingIncoming--;
      entry.pending = undefined;
    }
    entry.sendQueue.clear();
    entry.queuedBytes = 0;
    entry.finCallback = undefined;
    entry.tuner?.release();
    this.maybeFinishClose();
  }

  private clearOpening(opening: Opening): void {
    this.clock.clearTimeout(opening.timer);
    if (opening.onAbort) opening.signal?.removeEventListener('abort', opening.onAbort);
  }

  private cancelOpen(entry: Entry, err: Error): void {
    const opening = entry.opening;
    if (entry.removed || opening === undefined) return;
    this.resetEntry(entry, ResetCode.CANCEL, err.message);
    failOpening(opening, err);
  }

  private createStream(entry: Entry, metadata: Metadata, resultMetadata: Metadata, sendWindow: number): MuxStream {
    const caps: StreamCapabilities = {
      sendData: (chunk) => this.queueData(entry, chunk),
      sendFin: (sent) => this.queueFin(entry, sent),
      sendReset: (code, message) => {
        // The application destroyed a stream it holds while the open is in flight (openStream).
        const opening = entry.opening;
        this.resetEntry(entry, code, message);
        opening?.reject(new OpenError('POSTERN_ERR_OPEN_CANCELLED', OpenResult.CANCELLED, `open of stream ${entry.id} cancelled: the stream was destroyed`));
      },
      grantCredit: (increment) => this.queueGrant(entry, increment),
    };
    const tuner = new WindowTuner({
      initialWindow: this.o.initialWindow,
      maxWindow: this.o.maxWindow,
      clock: this.clock,
      rtt: this.rttEstimate,
      budget: this.receiveBudget,
    });
    entry.tuner = tuner;
    const stream = new MuxStream(
      {
        id: entry.id,
        metadata,
        resultMetadata,
        sendWindow,
        receiveWindow: this.o.initialWindow,
        windowTuner: tuner,
        writableHighWaterMark: this.o.maxFrameSize,
        maxUnsent: this.o.maxStreamSendBuffer,
      },
      caps,
    );
    entry.stream = stream;
    return stream;
  }

  private refuse(id: number, result: number, message: string, metadata: Metadata = EMPTY_METADATA): void {
    this.stats.opensRefused++;
    this.enqueueControl(encodeFrame({ type: 'open-result', streamId: id, result, window: 0, maxData: 0, message, metadata }, this.limits));
  }

  private refuseLimit(id: number, limit: SessionLimit, message: string): void {
    this.refuse(id, OpenResult.LIMIT_REACHED, message);
    this.emit('limit', limit);
  }

  /** Sends RESET for a live stream and forgets it. */
  private resetEntry(entry: Entry, code: number, message: string): void {
    if (entry.removed || this.finished) return;
    this.remove(entry);
    this.stats.resetsSent++;
    this.enqueueControl(encodeFrame({ type: 'reset', streamId: entry.id, code, message }));
  }

  private queueData(entry: Entry, chunk: Buffer): void {
    if (entry.removed || this.finished) return;
    entry.sendQueue.push(chunk);
    entry.queuedBytes += chunk.length;
    this.markReady(entry);
  }

  private queueFin(entry: Entry, sent: () => void): void {
    if (entry.removed || this.finished) return;
    entry.finCallback = sent;
    this.markReady(entry);
  }

  private queueGrant(entry: Entry, increment: number): void {
    if (entry.removed || this.finished) return;
    entry.pendingGrant += increment;
    if (entry.grantQueued) return;
    entry.grantQueued = true;
    this.enqueueControl(entry);
  }

  private markReady(entry: Entry): void {
    if (!entry.inRing) {
      entry.inRing = true;
      this.ring.push(entry);
    }
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Writes made in the same tick share frames and turns.
      queueMicrotask(() => this.flush());
    }
  }

  // --- sending --------------------------------------------------------------------------

  private enqueueControl(item: Buffer | Entry): void {
    if (this.finished || this.transportDone) return;
    if (this.control.length === 0 && this.transport.bufferedAmount < this.o.transportHighWaterMark) {
      this.transmitControl(item);
      return;
    }
    if (this.control.length >= this.o.maxControlQueue) {
      this.fail(
        new SessionError('POSTERN_ERR_SESSION_OVERLOADED', `more than maxControlQueue (${this.o.maxControlQueue}) control frames wait while the peer does not read`),
        GoAwayReason.OVERLOADED,
      );
      return;
    }
    this.control.push(item);
  }

  private transmitControl(item: Buffer | Entry): void {
    if (Buffer.isBuffer(item)) {
      this.transmit(item);
      return;
    }
    item.grantQueued = false;
    const increment = item.pendingGrant;
    item.pendingGrant = 0;
    if (!item.removed && increment > 0) this.transmit(encodeFrame({ type: 'window-update', streamId: item.id, increment }));
  }

  /** Control first, then one DATA or FIN frame per stream per turn while the transport has room. */
  private flush(): void {
    this.flushScheduled = false;
    if (this.finished) return;
    const hwm = this.o.transportHighWaterMark;
    while (this.control.length > 0) {
      if (this.transport.bufferedAmount >= hwm) return;
      this.transmitControl(this.control.shift()!);
    }
    while (this.ring.length > 0 && this.transport.bufferedAmount < hwm && !this.finished) {
      const entry = this.ring.shift()!;
      entry.inRing = false;
      if (entry.removed) continue;
      this.sendNext(entry);
      // sendNext may have queued the entry again already (a held write released by the framing).
      if (!entry.removed && !entry.inRing && (entry.queuedBytes > 0 || (entry.finCallback !== undefined && entry.state === 'open'))) {
        entry.inRing = true;
        this.ring.push(entry);
      }
    }
  }

  private sendNext(entry: Entry): void {
    if (entry.queuedBytes > 0) {
      const head = entry.sendQueue.peek()!;
      if (head.length <= entry.maxData && forwardable.delete(head)) {
        entry.sendQueue.shift();
        this.sendData(entry, encodeDataFrameInPlace(entry.id, head), head.length);
        this.stats.framesForwardedInPlace++;
        return;
      }
      const n = Math.min(entry.queuedBytes, entry.maxData);
      const frame = allocDataFrame(entry.id, n);
      const end = HEADER_SIZE + n;
      let at = HEADER_SIZE;
      while (at < end) {
        const chunk = entry.sendQueue.peek()!;
        const take = Math.min(chunk.length, end - at);
        chunk.copy(frame, at, 0, take);
        at += take;
        if (take === chunk.length) entry.sendQueue.shift();
        else entry.sendQueue.replaceHead(chunk.subarray(take));
      }
      this.sendData(entry, frame, n);
      return;
    }
    const sent = entry.finCallback;
    // FIN waits for OPEN_RESULT (early data is DATA only); onOpenResult makes the entry ready again.
    if (sent === undefined || entry.state !== 'open') return;
    entry.finCallback = undefined;
    entry.finSent = true;
    this.transmit(encodeFrame({ type: 'fin', streamId: entry.id }));
    if (entry.finReceived) this.remove(entry);
    sent();
  }

  private sendData(entry: Entry, frame: Buffer, n: number): void {
    entry.queuedBytes -= n;
    this.stats.bytesOut += n;
    this.transmit(frame);
    entry.stream?.receiveFramed(n);
  }

  private transmit(frame: Buffer): void {
    if (this.transportDone) return;
    this.stats.framesOut++;
    this.transport.send(frame);
  }

  private keepalive(): void {
    if (this.pings.size < MAX_PINGS_IN_FLIGHT) this.sendPing(undefined);
  }

  /**
   * A round-trip sample for window tuning, taken while data flows so that it includes the
   * queues the credit loop goes through. One such PING at a time: at most one per round trip.
   */
  private probeRtt(): void {
    if (this.probing || this.finished || this.transportDone || this.pings.size >= MAX_PINGS_IN_FLIGHT) return;
    this.probing = true;
    const done = (): void => {
      this.probing = false;
    };
    this.sendPing({ resolve: done, reject: done });
  }

  private sendPing(waiter: { resolve(ms: number): void; reject(err: Error): void } | undefined): void {
    const seq = ++this.pingSeq;
    const payload = Buffer.allocUnsafe(8);
    payload.writeUInt32BE(Math.floor(seq / 2 ** 32), 0);
    payload.writeUInt32BE(seq >>> 0, 4);
    this.pings.set(seq, { sentAt: this.clock.now(), waiter });
    this.enqueueControl(encodeFrame({ type: 'ping', streamId: 0, payload }));
  }

  private takeOpenToken(): boolean {
    const now = this.clock.now();
    const rate = this.o.maxOpensPerSecond;
    this.tokens = Math.min(Math.max(1, rate), this.tokens + ((now - this.tokensAt) * rate) / 1000);
    this.tokensAt = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private isLocalId(id: number): boolean {
    return (id % 2 === 1) === (this.role === 'client');
  }
}

function checkU16(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new PosternError('POSTERN_ERR_MUX_MISUSE', `${what} ${value}: must be an integer in 0..65535`);
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

