import { isUtf8 } from 'node:buffer';
import { ProtocolError, type ErrorCode } from '../errors.js';
import {
  FRAME_TYPE_NAMES,
  FrameType,
  HEADER_SIZE,
  MAX_TEXT_BYTES,
  MAX_WINDOW,
  MIN_MAX_DATA,
  PING_PAYLOAD_SIZE,
  maxMessageSize,
  type DecodeLimits,
  type Frame,
} from './frames.js';
import { readMetadata } from './metadata.js';

/**
 * Decodes one message (= one frame). Pure: no I/O, no state. Sizes are checked against the
 * limits before anything is copied; a DATA payload is a view into `message`, not a copy.
 *
 * Throws ProtocolError with a specific code (POSTERN_ERR_PROTO_*) for anything malformed; a
 * MetadataError (a ProtocolError naming the stream) when only the metadata of an OPEN or an
 * OPEN_RESULT is bad, which the session answers at the stream level.
 */
export function decodeFrame(message: Buffer, limits: DecodeLimits): Frame {
  if (message.length < HEADER_SIZE) {
    throw fail('POSTERN_ERR_PROTO_FRAME_TRUNCATED', `frame of ${message.length} bytes is shorter than the ${HEADER_SIZE}-byte header`);
  }
  const cap = maxMessageSize(limits);
  if (message.length > cap) {
    throw fail('POSTERN_ERR_PROTO_FRAME_TOO_LARGE', `frame of ${message.length} bytes exceeds the frame cap of ${cap} bytes`);
  }
  const type = message[0]!;
  const name = FRAME_TYPE_NAMES[type];
  if (name === undefined) {
    throw fail('POSTERN_ERR_PROTO_UNKNOWN_FRAME_TYPE', `unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
  }
  const flags = message[1]!;
  const streamId = message.readUInt32BE(2);
  const where = `${name} on stream ${streamId}`;
  if (flags !== 0) throw fail('POSTERN_ERR_PROTO_MALFORMED_FRAME', `${where} has flags 0x${flags.toString(16)}; v1 defines none`);
  const sessionFrame = type === FrameType.PING || type === FrameType.PONG || type === FrameType.GOAWAY;
  if (sessionFrame && streamId !== 0) throw fail('POSTERN_ERR_PROTO_MALFORMED_FRAME', `${where}: ${name} belongs to stream 0`);
  if (!sessionFrame && streamId === 0) throw fail('POSTERN_ERR_PROTO_MALFORMED_FRAME', `${name} on stream 0: stream 0 is the session`);
  const body = message.length - HEADER_SIZE;
  const b = HEADER_SIZE;

  switch (type) {
    case FrameType.OPEN: {
      need(where, body, 8);
      const window = message.readUInt32BE(b);
      const maxData = message.readUInt32BE(b + 4);
      checkWindow(where, 'window', window);
      checkMaxData(where, maxData);
      const metadata = readMetadata(message, b + 8, message.length, limits, streamId);
      return { type: 'open', streamId, window, maxData, metadata };
    }
    case FrameType.OPEN_RESULT: {
      need(where, body, 12);
      const result = message.readUInt16BE(b);
      const window = message.readUInt32BE(b + 2);
      const maxData = message.readUInt32BE(b + 6);
      checkWindow(where, 'window', window);
      if (result === 0) checkMaxData(where, maxData);
      const textEnd = readTextEnd(message, b + 10, where);
      const text = decodeText(message, b + 12, textEnd, where);
      const metadata = readMetadata(message, textEnd, message.length, limits, streamId);
      return { type: 'open-result', streamId, result, window, maxData, message: text, metadata };
    }
    case FrameType.DATA:
      if (body > limits.maxFrameSize) {
        throw fail('POSTERN_ERR_PROTO_FRAME_TOO_LARGE', `${where} carries ${body} bytes, more than maxFrameSize (${limits.maxFrameSize})`);
      }
      return { type: 'data', streamId, payload: message.subarray(b) };
    case FrameType.WINDOW_UPDATE: {
      exact(where, body, 4);
      const increment = message.readUInt32BE(b);
      if (increment === 0 || increment > MAX_WINDOW) {
        throw fail('POSTERN_ERR_PROTO_MALFORMED_FRAME', `${where} has increment ${increment}; it must be 1..${MAX_WINDOW}`);
      }
      return { type: 'window-update', streamId, increment };
    }
    case FrameType.FIN:
      exact(where, body, 0);
      return { type: 'fin', streamId };
    case FrameType.RESET: {
      need(where, body, 4);
      const code = message.readUInt16BE(b);
      const textEnd = readTextEnd(message, b + 2, where);
      exact(where, message.length, textEnd);
      return { type: 'reset', streamId, code, message: decodeText(message, b + 4, textEnd, where) };
    }
    case FrameType.PING:
    case FrameType.PONG:
      exact(where, body, PING_PAYLOAD_SIZE);
      return { type: type === FrameType.PING ? 'ping' : 'pong', streamId: 0, payload: message.subarray(b) };
    default: {
      // GOAWAY: the only type left, FRAME_TYPE_NAMES having rejected unknown ones.
      need(where, body, 8);
      const lastStreamId = message.readUInt32BE(b);
      const reason = message.readUInt16BE(b + 4);
      const textEnd = readTextEnd(message, b + 6, where);
      exact(where, message.length, textEnd);
      return { type: 'goaway', streamId: 0, lastStreamId, reason, message: decodeText(message, b + 8, textEnd, where) };
    }
  }
}

/** Reads a u16 text length at `at` and returns where the text ends, checked against the frame. */
function readTextEnd(message: Buffer, at: number, where: string): number {
  const length = message.readUInt16BE(at);
  if (length > MAX_TEXT_BYTES) {
    throw fail('POSTERN_ERR_PROTO_MALFORMED_FRAME', `${where} declares a ${length}-byte text; the limit is ${MAX_TEXT_BYTES}`);
  }
  const end = at + 2 + length;
  if (end > message.length) {
    throw fail('POSTERN_ERR_PROTO_FRAME_TRUNCATED', `${where} declares a ${length}-byte text but only ${message.length - at - 2} bytes follow`);
  }
  return end;
}

function decodeText(message: Buffer, start: number, end: number, where: string): string {
  const bytes = message.subarray(start, end);
  if (!isUtf8(bytes)) throw fail('POSTERN_ERR_PROTO_MALFORMED_FRAME', `${where} carries text that is not valid UTF-8`);
  return bytes.toString('utf8');
}

function need(where: string, body: number, min: number): void {
  if (body < min) throw fail('POSTERN_ERR_PROTO_FRAME_TRUNCATED', `${where} has a ${body}-byte body; at least ${min} bytes are required`);
}

function exact(where: string, got: number, expected: number): void {
  if (got < expected) throw fail('POSTERN_ERR_PROTO_FRAME_TRUNCATED', `${where} is ${expected - got} bytes short`);
  if (got > expected) throw fail('POSTERN_ERR_PROTO_MALFORMED_FRAME', `${where} has ${got - expected} trailing bytes`);
}

function checkWindow(where: string, field: string, value: number): void {
  if (value > MAX_WINDOW) throw fail('POSTERN_ERR_PROTO_MALFORMED_FRAME', `${where} has ${field} ${value}; the limit is ${MAX_WINDOW}`);
}

function checkMaxData(where: string, value: number): void {
  if (value < MIN_MAX_DATA) throw fail('POSTERN_ERR_PROTO_MALFORMED_FRAME', `${where} declares maxData ${value}; it must be at least ${MIN_MAX_DATA}`);
}

function fail(code: ErrorCode, message: string): ProtocolError {
  return new ProtocolError(code, message);
}
