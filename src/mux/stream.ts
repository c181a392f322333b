import { Duplex } from 'node:stream';
import type { Metadata } from '../protocol/frames.js';

/**
 * API published ahead of the implementation (which replaces this declaration in the next
 * commit) so that the WebSocket adapter and the apps can code against it.
 */
export declare class MuxStream extends Duplex {
  readonly id: number;
  /** The opener's metadata (OPEN). */
  readonly metadata: Metadata;
  /** The acceptor's metadata (OPEN_RESULT OK). */
  readonly resultMetadata: Metadata;
  /** Payload bytes delivered to / accepted from the application. */
  readonly bytesRead: number;
  readonly bytesWritten: number;
  /** RESET code that ended the stream, sent or received. */
  readonly resetCode: number | undefined;
  /** Sends RESET with `code` (ResetCode) and destroys the stream without an error. */
  reset(code: number, message?: string): void;
}
