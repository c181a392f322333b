import { EventEmitter } from 'node:events';
import type { Logger } from '../log.js';
import type { Metadata } from '../protocol/frames.js';
import type { Clock } from './clock.js';
import type { MuxStream } from './stream.js';
import type { FrameTransport } from './transport.js';

export interface SessionOptions {
  /** 'client' dialled the WebSocket and opens odd stream ids; 'server' opens even ones. */
  role: 'client' | 'server';
  /** Receive window each stream starts with (bytes). Default 256 KiB. */
  initialWindow?: number;
  /** Largest receive window a stream may reach. Default 16 MiB. */
  maxWindow?: number;
  /** Largest DATA payload per frame, sent and accepted. Default 64 KiB. */
  maxFrameSize?: number;
  /** Live streams per direction (opened by the peer / by this side). Default 1024. */
  maxStreams?: number;
  /** Incoming opens waiting for the application's decision. Default 256. */
  maxPendingOpens?: number;
  /** Incoming opens accepted per second (token bucket, burst = one second). Default 500. */
  maxOpensPerSecond?: number;
  /** Time for an open to be decided, both directions. Default 10 s. */
  openTimeoutMs?: number;
  /** PING period. Default 5 s. */
  pingIntervalMs?: number;
  /** Session declared dead when no frame at all arrives for this long. Default 15 s. */
  deadPeerTimeoutMs?: number;
  /** Control frames queued while the transport is congested. Default 8192. */
  maxControlQueue?: number;
  /** Encoded open metadata, bytes. Default 4096. */
  maxMetadataBytes?: number;
  /** Open metadata entries. Default 32. */
  maxMetadataEntries?: number;
  /** DATA stops while transport.bufferedAmount is at or above this. Default 1 MiB. */
  transportHighWaterMark?: number;
  /** Highest stream id this side may use (tests lower it to reach exhaustion). Default 2^32-1. */
  maxStreamId?: number;
  clock?: Clock;
  logger?: Logger;
}

export interface OpenOptions {
  signal?: AbortSignal;
  /** Overrides openTimeoutMs for this open. */
  timeoutMs?: number;
}

export interface CloseOptions {
  /** After this, streams still live are reset with DRAIN_TIMEOUT. Default: wait for them. */
  timeoutMs?: number;
}

/** An OPEN from the peer, waiting for the application to accept or reject it. */
export interface IncomingOpen {
  readonly id: number;
  readonly metadata: Metadata;
  /** Aborted when the opener cancels, the open times out (OPEN_TIMEOUT is sent) or the session ends. */
  readonly signal: AbortSignal;
  /** Sends OPEN_RESULT OK and returns the stream. Throws OpenError when the open was aborted. */
  accept(resultMetadata?: Record<string, string>): MuxStream;
  /** Sends OPEN_RESULT with `result` (non-zero OpenResult) and an optional human-readable text. */
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
}

/**
 * API published ahead of the implementation (which replaces this declaration in the next
 * commit). Events: 'open' (IncomingOpen), 'goaway' (GoAwayInfo), 'rtt' (ms), 'close' (err?).
 */
export declare class Session extends EventEmitter {
  constructor(transport: FrameTransport, options: SessionOptions);
  open(metadata: Record<string, string>, options?: OpenOptions): Promise<MuxStream>;
  goAway(reason?: number, message?: string): void;
  close(options?: CloseOptions): Promise<void>;
  destroy(err?: Error): void;
  /** Sends a PING and resolves with the round-trip time in ms. */
  ping(): Promise<number>;
  readonly role: 'client' | 'server';
  readonly rttMs: number | undefined;
  readonly streamCount: number;
  readonly stats: Readonly<SessionStats>;
  /** True once either side sent GOAWAY: no new stream will be opened on this session. */
  readonly goingAway: boolean;
  readonly closed: boolean;
  /** Largest message this session accepts: the WebSocket adapter's maxPayload must be at least this. */
  readonly maxMessageSize: number;
}
