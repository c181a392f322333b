/**
 * The frames of tunnel protocol v1 (docs/protocol.md is the normative description). One frame
 * travels as one WebSocket binary message; its length comes from the message.
 *
 *   offset 0  type      u8
 *   offset 1  flags     u8   (no flag is defined in v1: must be 0)
 *   offset 2  stream id u32 big-endian (0 = the session itself)
 *   offset 6  body      type-specific
 */

/** WebSocket subprotocol naming this version; a peer that does not offer it is refused at the upgrade. */
export const SUBPROTOCOL = 'postern.v1';
export const PROTOCOL_VERSION = 1;

export const HEADER_SIZE = 6;

/** Wire numbers of the frame types. Never reused. */
export const FrameType = {
  OPEN: 0x01,
  OPEN_RESULT: 0x02,
  DATA: 0x03,
  WINDOW_UPDATE: 0x04,
  FIN: 0x05,
  RESET: 0x06,
  PING: 0x07,
  PONG: 0x08,
  GOAWAY: 0x09,
} as const;
export type FrameTypeNumber = (typeof FrameType)[keyof typeof FrameType];

export const FRAME_TYPE_NAMES: Readonly<Record<number, string>> = Object.freeze({
  [FrameType.OPEN]: 'OPEN',
  [FrameType.OPEN_RESULT]: 'OPEN_RESULT',
  [FrameType.DATA]: 'DATA',
  [FrameType.WINDOW_UPDATE]: 'WINDOW_UPDATE',
  [FrameType.FIN]: 'FIN',
  [FrameType.RESET]: 'RESET',
  [FrameType.PING]: 'PING',
  [FrameType.PONG]: 'PONG',
  [FrameType.GOAWAY]: 'GOAWAY',
});

/** Largest window, credit or credit increment (2^31-1), as in HTTP/2. */
export const MAX_WINDOW = 0x7fff_ffff;
/** Largest stream id. Odd ids belong to the side that dialled the WebSocket, even ids to the other. */
export const MAX_STREAM_ID = 0xffff_ffff;
/** Smallest per-stream DATA payload cap a receiver may declare in OPEN / OPEN_RESULT. */
export const MIN_MAX_DATA = 1024;
/**
 * Early data (docs/protocol.md §4): DATA payload bytes an opener may send after its OPEN and
 * before OPEN_RESULT, in all, in frames of at most MIN_MAX_DATA bytes. Room for a TLS 1.3
 * ClientHello, even one with a post-quantum key share, so the inner handshake starts with the
 * open instead of one round trip through the relay later. Also the least initial window.
 */
export const EARLY_DATA_BYTES = 16 * 1024;
/** Human-readable text (OPEN_RESULT, RESET, GOAWAY) is at most this many UTF-8 bytes. */
export const MAX_TEXT_BYTES = 1024;
export const PING_PAYLOAD_SIZE = 8;
/** Metadata keys: 1-64 bytes of [a-z0-9._-], starting with a letter or digit. */
export const MAX_METADATA_KEY_BYTES = 64;

export type Metadata = Readonly<Record<string, string>>;

export interface OpenFrame {
  type: 'open';
  streamId: number;
  /** Bytes the opener lets the acceptor send before any WINDOW_UPDATE. */
  window: number;
  /** Largest DATA payload the opener accepts on this stream. */
  maxData: number;
  metadata: Metadata;
}

export interface OpenResultFrame {
  type: 'open-result';
  streamId: number;
  /** 0 = OK; any other value refuses the stream (OpenResult in reasons.ts). */
  result: number;
  /** Acceptor's initial window; 0 when refused. */
  window: number;
  /** Acceptor's DATA payload cap; 0 when refused. */
  maxData: number;
  message: string;
  metadata: Metadata;
}

export interface DataFrame {
  type: 'data';
  streamId: number;
  payload: Buffer;
}

export interface WindowUpdateFrame {
  type: 'window-update';
  streamId: number;
  increment: number;
}

export interface FinFrame {
  type: 'fin';
  streamId: number;
}

export interface ResetFrame {
  type: 'reset';
  streamId: number;
  code: number;
  message: string;
}

export interface PingFrame {
  type: 'ping' | 'pong';
  streamId: 0;
  /** 8 opaque bytes, echoed in the PONG. */
  payload: Buffer;
}

export interface GoAwayFrame {
  type: 'goaway';
  streamId: 0;
  /** Highest stream id opened by the receiver of this frame that the sender processed. */
  lastStreamId: number;
  reason: number;
  message: string;
}

export type Frame =
  | OpenFrame
  | OpenResultFrame
  | DataFrame
  | WindowUpdateFrame
  | FinFrame
  | ResetFrame
  | PingFrame
  | GoAwayFrame;

/** Limits a receiver applies while decoding. Every one is an option of the session. */
export interface DecodeLimits {
  /** Largest DATA payload accepted (the session's maxFrameSize). */
  maxFrameSize: number;
  /** Largest encoded metadata block (sum of its entries' bytes). */
  maxMetadataBytes: number;
  /** Largest number of metadata entries. */
  maxMetadataEntries: number;
}

export const DEFAULT_DECODE_LIMITS: Readonly<DecodeLimits> = Object.freeze({
  maxFrameSize: 64 * 1024,
  maxMetadataBytes: 4096,
  maxMetadataEntries: 32,
});

/** Fixed part of the largest control frame: OPEN_RESULT's result, window, max data, text length. */
const OPEN_RESULT_FIXED = 2 + 4 + 4 + 2;

/**
 * The largest message a receiver with these limits can accept: the WebSocket adapter's
 * `maxPayload` must be at least this.
 */
export function maxMessageSize(limits: DecodeLimits): number {
  const control = OPEN_RESULT_FIXED + MAX_TEXT_BYTES + limits.maxMetadataBytes;
  return HEADER_SIZE + Math.max(limits.maxFrameSize, control);
}

/** Stream ids: odd for the client (dialled the WebSocket), even for the server; 0 is the session. */
export function isClientStreamId(id: number): boolean {
  return id % 2 === 1;
}
