/**
 * What a mux session needs from the connection under it: a message-oriented, ordered,
 * reliable pipe that carries one encoded frame per message (a WebSocket binary message in
 * production, an in-memory queue in tests). The session never sees `ws` itself.
 *
 * Backpressure: `send` always accepts the frame (the session bounds what it sends through
 * per-stream credit and a bounded control queue), but the session stops sending DATA while
 * `bufferedAmount` is above its high-water mark and resumes on the `drain` handler.
 */
/**
 * Bytes a sender may leave free in front of a frame it built, so that the transport can put
 * its own message header there and hand the socket one buffer: a WebSocket header is at most
 * 14 bytes. Two buffers written together to a TLS socket are joined by Node in a zeroed copy.
 */
export const FRAME_HEADROOM = 16;

/**
 * Frames whose FRAME_HEADROOM bytes just before them (in their ArrayBuffer) belong to them and
 * may be overwritten by the transport. A transport takes a frame out of the set when it sends it.
 */
export const framesWithHeadroom = new WeakSet<Buffer>();

export interface FrameTransport {
  /** Send one whole frame as one message. Must not be called after `close`/`destroy`. */
  send(frame: Buffer): void;
  /**
   * The frame size (header included) that fills whole records of the layer below when the
   * frame goes out alone (a WebSocket over TLS: 64 KiB less the WebSocket header, four full TLS
   * records). The session cuts DATA it gathers to this size when maxData allows it, so that no
   * frame leaves a record of a few bytes behind. Absent: no preference.
   */
  readonly preferredFrameSize?: number;
  /** Bytes accepted by `send` that the transport has not yet handed to the OS. */
  readonly bufferedAmount: number;
  /** Installs the session's handlers; called once, before any frame can arrive. */
  setHandlers(handlers: FrameTransportHandlers): void;
  /** Graceful close after queued frames are flushed. */
  close(code?: number, reason?: string): void;
  /** Immediate teardown; queued frames may be lost. */
  destroy(err?: Error): void;
}

export interface FrameTransportHandlers {
  /** One received message (= one frame). The buffer may be retained by the session. */
  frame(data: Buffer): void;
  /** `bufferedAmount` fell back below the transport's low-water mark. */
  drain(): void;
  /** The transport is gone (after close, destroy, or a network failure). Called once. */
  close(err?: Error): void;
}
