import { isUtf8 } from 'node:buffer';
import { ProtocolError } from '../errors.js';
import { MAX_METADATA_KEY_BYTES, type Metadata } from './frames.js';

/**
 * Open metadata: a small string→string map carried at the end of OPEN and OPEN_RESULT
 * (`connector`, `target`, `principal`, `correlation-id`, …). Encoded as a sequence of entries
 *
 *   key length u8 (1..64) | key (ASCII [a-z0-9][a-z0-9._-]*) | value length u16 BE | value (UTF-8)
 *
 * filling the rest of the frame. Keys are unique; count and total bytes are bounded.
 */

export interface MetadataLimits {
  maxMetadataBytes: number;
  maxMetadataEntries: number;
}

/** Keys cannot start with `_` or `.`, so `__proto__` can never be one. */
const KEY_PATTERN = /^[a-z0-9][a-z0-9._-]*$/;

/** Bad metadata in an OPEN or OPEN_RESULT: a stream-level violation, so it names the stream. */
export class MetadataError extends ProtocolError {
  readonly streamId: number;

  constructor(message: string, streamId: number) {
    super('POSTERN_ERR_PROTO_BAD_METADATA', message, { details: { streamId } });
    this.streamId = streamId;
  }
}

export function isValidMetadataKey(key: string): boolean {
  return key.length >= 1 && key.length <= MAX_METADATA_KEY_BYTES && KEY_PATTERN.test(key);
}

/**
 * Validates `metadata` against `limits` and returns its encoded size. Throws MetadataError
 * naming the offending key (streamId 0: raised locally, before anything is sent).
 */
export function metadataByteLength(metadata: Metadata, limits: MetadataLimits): number {
  const keys = Object.keys(metadata);
  if (keys.length > limits.maxMetadataEntries) {
    throw new MetadataError(`metadata has ${keys.length} entries, more than maxMetadataEntries (${limits.maxMetadataEntries})`, 0);
  }
  let total = 0;
  for (const key of keys) {
    if (!isValidMetadataKey(key)) {
      throw new MetadataError(`metadata key ${JSON.stringify(key)} is invalid: 1-${MAX_METADATA_KEY_BYTES} characters of [a-z0-9._-], starting with a letter or digit`, 0);
    }
    const value = metadata[key];
    if (typeof value !== 'string') throw new MetadataError(`metadata value of "${key}" is not a string`, 0);
    const valueBytes = Buffer.byteLength(value, 'utf8');
    if (valueBytes > 0xffff) throw new MetadataError(`metadata value of "${key}" is ${valueBytes} bytes, more than 65535`, 0);
    if (!isWellFormed(value)) {
      throw new MetadataError(`metadata value of "${key}" is not well-formed Unicode`, 0);
    }
    total += 1 + key.length + 2 + valueBytes;
  }
  if (total > limits.maxMetadataBytes) {
    throw new MetadataError(`metadata is ${total} bytes, more than maxMetadataBytes (${limits.maxMetadataBytes})`, 0);
  }
  return total;
}

/** Writes entries validated by metadataByteLength into `out` at `offset`; returns the end offset. */
export function writeMetadata(metadata: Metadata, out: Buffer, offset: number): number {
  let at = offset;
  for (const key of Object.keys(metadata)) {
    const value = metadata[key]!;
    out[at] = key.length;
    at += 1;
    at += out.write(key, at, 'latin1');
    const valueBytes = Buffer.byteLength(value, 'utf8');
    out.writeUInt16BE(valueBytes, at);
    at += 2;
    at += out.write(value, at, 'utf8');
  }
  return at;
}

/**
 * Decodes the entries in `buf[start, end)`. Every length is checked against the bytes left and
 * the limits before anything is copied out of the buffer.
 */
export function readMetadata(buf: Buffer, start: number, end: number, limits: MetadataLimits, streamId: number): Metadata {
  const size = end - start;
  if (size > limits.maxMetadataBytes) {
    throw new MetadataError(`metadata is ${size} bytes, more than maxMetadataBytes (${limits.maxMetadataBytes})`, streamId);
  }
  const out: Record<string, string> = {};
  let count = 0;
  let at = start;
  while (at < end) {
    if (++count > limits.maxMetadataEntries) {
      throw new MetadataError(`metadata has more than maxMetadataEntries (${limits.maxMetadataEntries}) entries`, streamId);
    }
    const keyLength = buf[at]!;
    at += 1;
    if (keyLength === 0 || keyLength > MAX_METADATA_KEY_BYTES) {
      throw new MetadataError(`metadata key length ${keyLength} is outside 1-${MAX_METADATA_KEY_BYTES}`, streamId);
    }
    if (at + keyLength + 2 > end) throw new MetadataError('metadata entry is truncated (key or value length past the end)', streamId);
    const key = buf.toString('latin1', at, at + keyLength);
    if (!KEY_PATTERN.test(key)) throw new MetadataError(`metadata key ${JSON.stringify(key)} is not [a-z0-9][a-z0-9._-]*`, streamId);
    if (Object.hasOwn(out, key)) throw new MetadataError(`metadata key "${key}" appears twice`, streamId);
    at += keyLength;
    const valueLength = buf.readUInt16BE(at);
    at += 2;
    if (at + valueLength > end) throw new MetadataError(`metadata value of "${key}" is truncated (${valueLength} bytes declared)`, streamId);
    const value = buf.subarray(at, at + valueLength);
    if (!isUtf8(value)) throw new MetadataError(`metadata value of "${key}" is not valid UTF-8`, streamId);
    out[key] = value.toString('utf8');
    at += valueLength;
  }
  return Object.freeze(out);
}

/** A string with lone surrogates would not survive a UTF-8 round trip. */
function isWellFormed(value: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(value);
}
