import { ProtocolError } from '../errors.js';

/**
 * The inner request: the first application bytes of the inner TLS session (docs/protocol.md,
 * "Inner request"). The agent names the target end to end, so a relay cannot redirect a stream
 * to another target the connector happens to allow; the connector answers with a status once
 * it has dialed (or failed to dial) the target. All integers big-endian.
 *
 *   request  (agent → connector): version u8 = 1 | target length u16 | target (UTF-8)
 *   response (connector → agent): version u8 = 1 | status u8 | message length u16 | message (UTF-8)
 *
 * status 0 means connected; any other value is an OPEN_RESULT code (src/protocol/reasons.ts).
 */
export const INNER_VERSION = 1;
/** A canonical target is at most 253 + ":" + 5 characters (IPv6 adds brackets); room to spare. */
export const MAX_INNER_TARGET_BYTES = 512;
export const MAX_INNER_MESSAGE_BYTES = 1024;

export interface InnerRequest {
  target: string;
}

export interface InnerResponse {
  status: number;
  message: string;
}

/** Result of an incremental decode: the value and the bytes it took, or `undefined` for "need more". */
export type Decoded<T> = { value: T; length: number } | undefined;

export function encodeInnerRequest(request: InnerRequest): Buffer {
  const target = Buffer.from(request.target, 'utf8');
  if (target.length === 0 || target.length > MAX_INNER_TARGET_BYTES) {
    throw new ProtocolError('POSTERN_ERR_PROTO_INNER_INVALID', `inner request: target must be 1..${MAX_INNER_TARGET_BYTES} bytes, got ${target.length}`);
  }
  const out = Buffer.allocUnsafe(3 + target.length);
  out.writeUInt8(INNER_VERSION, 0);
  out.writeUInt16BE(target.length, 1);
  target.copy(out, 3);
  return out;
}

export function decodeInnerRequest(buf: Buffer): Decoded<InnerRequest> {
  if (buf.length < 3) return undefined;
  checkVersion(buf[0]!, 'request');
  const length = buf.readUInt16BE(1);
  if (length === 0 || length > MAX_INNER_TARGET_BYTES) {
    throw new ProtocolError('POSTERN_ERR_PROTO_INNER_INVALID', `inner request: target length ${length} outside 1..${MAX_INNER_TARGET_BYTES}`);
  }
  if (buf.length < 3 + length) return undefined;
  return { value: { target: utf8(buf.subarray(3, 3 + length), 'target') }, length: 3 + length };
}

export function encodeInnerResponse(response: InnerResponse): Buffer {
  let message = Buffer.from(response.message, 'utf8');
  if (message.length > MAX_INNER_MESSAGE_BYTES) message = Buffer.from(response.message.slice(0, MAX_INNER_MESSAGE_BYTES / 4), 'utf8');
  if (!Number.isInteger(response.status) || response.status < 0 || response.status > 255) {
    throw new ProtocolError('POSTERN_ERR_PROTO_INNER_INVALID', `inner response: status ${response.status} is not a u8`);
  }
  const out = Buffer.allocUnsafe(4 + message.length);
  out.writeUInt8(INNER_VERSION, 0);
  out.writeUInt8(response.status, 1);
  out.writeUInt16BE(message.length, 2);
  message.copy(out, 4);
  return out;
}

export function decodeInnerResponse(buf: Buffer): Decoded<InnerResponse> {
  if (buf.length < 4) return undefined;
  checkVersion(buf[0]!, 'response');
  const length = buf.readUInt16BE(2);
  if (length > MAX_INNER_MESSAGE_BYTES) {
    throw new ProtocolError('POSTERN_ERR_PROTO_INNER_INVALID', `inner response: message length ${length} above ${MAX_INNER_MESSAGE_BYTES}`);
  }
  if (buf.length < 4 + length) return undefined;
  return { value: { status: buf[1]!, message: utf8(buf.subarray(4, 4 + length), 'message') }, length: 4 + length };
}

function checkVersion(version: number, what: string): void {
  if (version !== INNER_VERSION) {
    throw new ProtocolError('POSTERN_ERR_PROTO_INNER_INVALID', `inner ${what}: version ${version}, this side speaks ${INNER_VERSION}`);
  }
}

function utf8(bytes: Buffer, what: string): string {
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  if (text.includes('\uFFFD')) throw new ProtocolError('POSTERN_ERR_PROTO_INNER_INVALID', `inner ${what} is not valid UTF-8`);
  return text;
}
