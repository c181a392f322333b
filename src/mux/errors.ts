import { PosternError, type ErrorCode, type PosternErrorOptions } from '../errors.js';

/** A session-level failure: closed, dead peer, overload, or the peer's GOAWAY with an error. */
export class SessionError extends PosternError {}

/**
 * An open that did not produce a stream. `result` is the OPEN_RESULT number (src/protocol/
 * reasons.ts): the peer's, or the one matching a local failure (OPEN_TIMEOUT, LIMIT_REACHED,
 * GOING_AWAY, CANCELLED). `message` is the peer's text when it sent one.
 */
export class OpenError extends PosternError {
  readonly result: number;

  constructor(code: ErrorCode, result: number, message: string, options: PosternErrorOptions = {}) {
    super(code, message, { ...options, details: { result, ...options.details } });
    this.result = result;
  }
}

/**
 * Why a stream ended abnormally. `resetCode` is the RESET number on the wire: the peer's
 * (code from the reason table), or the one this side sent after detecting a violation (code
 * POSTERN_ERR_PROTO_*) or after the session closed under the stream.
 */
export class StreamError extends PosternError {
  readonly resetCode: number;
  /** True when the peer sent the RESET; false when this side decided it. */
  readonly remote: boolean;

  constructor(code: ErrorCode, resetCode: number, remote: boolean, message: string, options: PosternErrorOptions = {}) {
    super(code, message, { ...options, details: { resetCode, remote, ...options.details } });
    this.resetCode = resetCode;
    this.remote = remote;
  }
}
