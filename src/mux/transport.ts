/**
 * What a mux session needs from the connection under it: a message-oriented, ordered,
 * reliable pipe that carries one encoded frame per message (a WebSocket binary message in
 * production, an in-memory queue in tests). The session never sees `ws` itself.
 *
 * Backpressure: `send` always accepts the frame (the session bounds what it sends through
 * per-stream credit and a bounded control queue), but the session stops sending DATA while
 * `bufferedAmount` is above its high-water mark and resumes on the `drain` handler.
 */
export interface FrameTransport {
  /** Send one whole frame as one message. Must not be called after `close`/`destroy`. */
  send(frame: Buffer): void;
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
