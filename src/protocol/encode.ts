import { ProtocolError } from '../errors.js';
import {
  DEFAULT_DECODE_LIMITS,
  FrameType,
  HEADER_SIZE,
  MAX_STREAM_ID,
  MAX_TEXT_BYTES,
  MAX_WINDOW,
  PING_PAYLOAD_SIZE,
  type Frame,
} from './frames.js';
import { metadataByteLength, writeMetadata, type MetadataLimits } from './metadata.js';

/**
 * Pure frame encoders. Each frame is one allocation of its exact size (a DATA frame around a
 * received payload, none: encodeDataFrameInPlace). Values out of range
 * are a bug of the caller and throw ProtocolError (POSTERN_ERR_PROTO_MALFORMED_FRAME) rather
 * than putting a frame on the wire that the peer must reject.
 */

export function encodeFrame(frame: Frame, limits: MetadataLimits = DEFAULT_DECODE_LIMITS): Buffer {
  switch (frame.type) {
    case 'open': {
      checkStreamId(frame.streamId, 'OPEN');
      checkRange('OPEN window', frame.window, 0, MAX_WINDOW);
      checkRange('OPEN maxData', frame.maxData, 0, 0xffff_ffff);
      const metaBytes = metadataByteLength(frame.metadata, limits);
      const out = header(FrameType.OPEN, frame.streamId, 8 + metaBytes);
      out.writeUInt32BE(frame.window, HEADER_SIZE);
      out.writeUInt32BE(frame.maxData, HEADER_SIZE + 4);
      writeMetadata(frame.metadata, out, HEADER_SIZE + 8);
      return out;
    }
    case 'open-result': {
      checkStreamId(frame.streamId, 'OPEN_RESULT');
      checkRange('OPEN_RESULT result', frame.result, 0, 0xffff);
      checkRange('OPEN_RESULT window', frame.window, 0, MAX_WINDOW);
      checkRange('OPEN_RESULT maxData', frame.maxData, 0, 0xffff_ffff);
      const text = textBytes(frame.message);
      const metaBytes = metadataByteLength(frame.metadata, limits);
      const out = header(FrameType.OPEN_RESULT, frame.streamId, 12 + text.length + metaBytes);
      let at = HEADER_SIZE;
      at = out.writeUInt16BE(frame.result, at);
      at = out.writeUInt32BE(frame.window, at);
      at = out.writeUInt32BE(frame.maxData, at);
      at = out.writeUInt16BE(text.length, at);
      at += text.copy(out, at);
      writeMetadata(frame.metadata, out, at);
      return out;
    }
    case 'data':
      return encodeDataFrame(frame.streamId, frame.payload);
    case 'window-update': {
      checkStreamId(frame.streamId, 'WINDOW_UPDATE');
      checkRange('WINDOW_UPDATE increment', frame.increment, 1, MAX_WINDOW);
      const out = header(FrameType.WINDOW_UPDATE, frame.streamId, 4);
      out.writeUInt32BE(frame.increment, HEADER_SIZE);
      return out;
    }
    case 'fin':
      checkStreamId(frame.streamId, 'FIN');
      return header(FrameType.FIN, frame.streamId, 0);
    case 'reset': {
      checkStreamId(frame.streamId, 'RESET');
      checkRange('RESET code', frame.code, 0, 0xffff);
      const text = textBytes(frame.message);
      const out = header(FrameType.RESET, frame.streamId, 4 + text.length);
      out.writeUInt16BE(frame.code, HEADER_SIZE);
      out.writeUInt16BE(text.length, HEADER_SIZE + 2);
      text.copy(out, HEADER_SIZE + 4);
      return out;
    }
    case 'ping':
    case 'pong': {
      if (frame.payload.length !== PING_PAYLOAD_SIZE) {
        throw new ProtocolError('POSTERN_ERR_PROTO_MALFORMED_FRAME', `cannot encode ${frame.type.toUpperCase()}: payload must be ${PING_PAYLOAD_SIZE} bytes, got ${frame.payload.length}`);
      }
      const out = header(frame.type === 'ping' ? FrameType.PING : FrameType.PONG, 0, PING_PAYLOAD_SIZE);
      frame.payload.copy(out, HEADER_SIZE);
      return out;
    }
    case 'goaway': {
      checkRange('GOAWAY lastStreamId', frame.lastStreamId, 0, MAX_STREAM_ID);
      checkRange('GOAWAY reason', frame.reason, 0, 0xffff);
      const text = textBytes(frame.message);
      const out = header(FrameType.GOAWAY, 0, 8 + text.length);
      out.writeUInt32BE(frame.lastStreamId, HEADER_SIZE);
      out.writeUInt16BE(frame.reason, HEADER_SIZE + 4);
      out.writeUInt16BE(text.length, HEADER_SIZE + 6);
      text.copy(out, HEADER_SIZE + 8);
      return out;
    }
  }
}

/** One DATA frame carrying `payload` (header and payload in one allocation). */
export function encodeDataFrame(streamId: number, payload: Buffer): Buffer {
  const out = allocDataFrame(streamId, payload.length);
  payload.copy(out, HEADER_SIZE);
  return out;
}

/**
 * A DATA frame with its header written and room for `length` payload bytes at HEADER_SIZE,
 * for a sender that gathers the payload from several chunks straight into the frame.
 */
export function allocDataFrame(streamId: number, length: number): Buffer {
  checkStreamId(streamId, 'DATA');
  return header(FrameType.DATA, streamId, length);
}

/**
 * A DATA frame around `payload` without copying it: the header is written into the
 * HEADER_SIZE bytes just before `payload` in its ArrayBuffer, which the caller must own and
 * no longer need (a received DATA payload is still preceded by its own, decoded header).
 */
export function encodeDataFrameInPlace(streamId: number, payload: Buffer): Buffer {
  checkStreamId(streamId, 'DATA');
  if (payload.byteOffset < HEADER_SIZE) {
    throw new ProtocolError('POSTERN_ERR_PROTO_MALFORMED_FRAME', `cannot frame in place: the payload starts at byte ${payload.byteOffset} of its buffer, leaving no room for the ${HEADER_SIZE}-byte header`);
  }
  const out = Buffer.from(payload.buffer, payload.byteOffset - HEADER_SIZE, HEADER_SIZE + payload.length);
  out[0] = FrameType.DATA;
  out[1] = 0;
  out.writeUInt32BE(streamId, 2);
  return out;
}

/** Length-prefixed form for byte streams (FrameStreamDecoder): u32 BE length, then the frame. */
export function encodeLengthPrefixed(frame: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + frame.length);
  out.writeUInt32BE(frame.length, 0);
  frame.copy(out, 4);
  return out;
}

/** UTF-8 bytes of a human-readable text, cut at a character boundary to MAX_TEXT_BYTES. */
export function textBytes(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= MAX_TEXT_BYTES) return bytes;
  let cut = MAX_TEXT_BYTES;
  while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--;
  return bytes.subarray(0, cut);
}

function header(type: number, streamId: number, bodyLength: number): Buffer {
  const out = Buffer.allocUnsafe(HEADER_SIZE + bodyLength);
  out[0] = type;
  out[1] = 0;
  out.writeUInt32BE(streamId, 2);
  return out;
}

function checkStreamId(id: number, what: string): void {
  checkRange(`${what} stream id`, id, 1, MAX_STREAM_ID);
}

function checkRange(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ProtocolError('POSTERN_ERR_PROTO_MALFORMED_FRAME', `cannot encode ${what} ${value}: must be an integer in ${min}..${max}`);
  }
}
