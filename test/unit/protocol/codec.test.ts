import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ProtocolError } from '../../../src/errors.js';
import {
  DEFAULT_DECODE_LIMITS,
  FrameStreamDecoder,
  MAX_STREAM_ID,
  MAX_TEXT_BYTES,
  MAX_WINDOW,
  MetadataError,
  decodeFrame,
  encodeFrame,
  encodeLengthPrefixed,
  maxMessageSize,
  textBytes,
  type DecodeLimits,
  type Frame,
} from '../../../src/protocol/index.js';

const LIMITS = DEFAULT_DECODE_LIMITS;

// ---------------------------------------------------------------------------------------
// A deliberately naive reference decoder, written from docs/protocol.md only: bytes become a
// plain array of numbers read with a cursor, big-endian by multiplication, no Buffer views.
// It returns the frame or the name of the rule broken; it must agree with decodeFrame.
// ---------------------------------------------------------------------------------------
type RefResult = { ok: true; frame: Frame } | { ok: false; code: string };

function referenceDecode(message: Buffer, limits: DecodeLimits): RefResult {
  const b = Array.from(message);
  const failWith = (code: string): RefResult => ({ ok: false, code });
  if (b.length < 6) return failWith('POSTERN_ERR_PROTO_FRAME_TRUNCATED');
  const controlMax = 12 + 1024 + limits.maxMetadataBytes;
  if (b.length > 6 + Math.max(limits.maxFrameSize, controlMax)) return failWith('POSTERN_ERR_PROTO_FRAME_TOO_LARGE');
  let pos = 0;
  const u8 = () => b[pos++]!;
  const u16 = () => u8() * 256 + u8();
  const u32 = () => u16() * 65536 + u16();
  const type = u8();
  const flags = u8();
  const streamId = u32();
  if (type < 1 || type > 9) return failWith('POSTERN_ERR_PROTO_UNKNOWN_FRAME_TYPE');
  if (flags !== 0) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
  const sessionType = type === 7 || type === 8 || type === 9;
  if (sessionType !== (streamId === 0)) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
  const left = () => b.length - pos;
  const utf8 = (start: number, end: number): string | undefined => {
    const bytes = Buffer.from(b.slice(start, end));
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      return undefined;
    }
  };
  const readText = (): { text: string } | RefResult => {
    const n = u16();
    if (n > 1024) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
    if (left() < n) return failWith('POSTERN_ERR_PROTO_FRAME_TRUNCATED');
    const text = utf8(pos, pos + n);
    pos += n;
    if (text === undefined) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
    return { text };
  };
  const readMeta = (): { meta: Record<string, string> } | RefResult => {
    if (left() > limits.maxMetadataBytes) return failWith('POSTERN_ERR_PROTO_BAD_METADATA');
    const meta: Record<string, string> = {};
    let count = 0;
    while (left() > 0) {
      count++;
      if (count > limits.maxMetadataEntries) return failWith('POSTERN_ERR_PROTO_BAD_METADATA');
      const kl = u8();
      if (kl < 1 || kl > 64 || left() < kl + 2) return failWith('POSTERN_ERR_PROTO_BAD_METADATA');
      let key = '';
      for (let i = 0; i < kl; i++) key += String.fromCharCode(u8());
      if (!/^[a-z0-9][a-z0-9._-]*$/.test(key) || key in meta) return failWith('POSTERN_ERR_PROTO_BAD_METADATA');
      const vl = u16();
      if (left() < vl) return failWith('POSTERN_ERR_PROTO_BAD_METADATA');
      const value = utf8(pos, pos + vl);
      pos += vl;
      if (value === undefined) return failWith('POSTERN_ERR_PROTO_BAD_METADATA');
      meta[key] = value;
    }
    return { meta };
  };
  switch (type) {
    case 1: {
      if (left() < 8) return failWith('POSTERN_ERR_PROTO_FRAME_TRUNCATED');
      const window = u32();
      const maxData = u32();
      if (window > 2147483647 || maxData < 1024) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
      const m = readMeta();
      if ('ok' in m) return m;
      return { ok: true, frame: { type: 'open', streamId, window, maxData, metadata: m.meta } };
    }
    case 2: {
      if (left() < 12) return failWith('POSTERN_ERR_PROTO_FRAME_TRUNCATED');
      const result = u16();
      const window = u32();
      const maxData = u32();
      if (window > 2147483647 || (result === 0 && maxData < 1024)) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
      const t = readText();
      if ('ok' in t) return t;
      const m = readMeta();
      if ('ok' in m) return m;
      return { ok: true, frame: { type: 'open-result', streamId, result, window, maxData, message: t.text, metadata: m.meta } };
    }
    case 3:
      if (left() > limits.maxFrameSize) return failWith('POSTERN_ERR_PROTO_FRAME_TOO_LARGE');
      return { ok: true, frame: { type: 'data', streamId, payload: Buffer.from(b.slice(pos)) } };
    case 4: {
      if (left() < 4) return failWith('POSTERN_ERR_PROTO_FRAME_TRUNCATED');
      if (left() > 4) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
      const increment = u32();
      if (increment === 0 || increment > 2147483647) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
      return { ok: true, frame: { type: 'window-update', streamId, increment } };
    }
    case 5:
      if (left() > 0) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
      return { ok: true, frame: { type: 'fin', streamId } };
    case 6: {
      if (left() < 4) return failWith('POSTERN_ERR_PROTO_FRAME_TRUNCATED');
      const code = u16();
      const t = readText();
      if ('ok' in t) return t;
      if (left() > 0) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
      return { ok: true, frame: { type: 'reset', streamId, code, message: t.text } };
    }
    case 7:
    case 8:
      if (left() < 8) return failWith('POSTERN_ERR_PROTO_FRAME_TRUNCATED');
      if (left() > 8) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
      return { ok: true, frame: { type: type === 7 ? 'ping' : 'pong', streamId: 0, payload: Buffer.from(b.slice(pos)) } };
    default: {
      if (left() < 8) return failWith('POSTERN_ERR_PROTO_FRAME_TRUNCATED');
      const lastStreamId = u32();
      const reason = u16();
      const t = readText();
      if ('ok' in t) return t;
      if (left() > 0) return failWith('POSTERN_ERR_PROTO_MALFORMED_FRAME');
      return { ok: true, frame: { type: 'goaway', streamId: 0, lastStreamId, reason, message: t.text } };
    }
  }
}

function decodeOrCode(message: Buffer, limits: DecodeLimits = LIMITS): RefResult {
  try {
    return { ok: true, frame: decodeFrame(message, limits) };
  } catch (err) {
    expect(err).toBeInstanceOf(ProtocolError);
    return { ok: false, code: (err as ProtocolError).code };
  }
}

// --- arbitraries ---------------------------------------------------------------------------
const streamIdArb = fc.integer({ min: 1, max: MAX_STREAM_ID });
const windowArb = fc.integer({ min: 0, max: MAX_WINDOW });
const maxDataArb = fc.integer({ min: 1024, max: 0xffff_ffff });
const textArb = fc.string({ unit: 'grapheme', maxLength: 60 });
const keyArb = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/);
const metadataArb = fc.dictionary(keyArb, fc.string({ unit: 'grapheme', maxLength: 40 }), { maxKeys: 6 });
const u16Arb = fc.integer({ min: 0, max: 0xffff });
const bytesArb = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ type: fc.constant('open' as const), streamId: streamIdArb, window: windowArb, maxData: maxDataArb, metadata: metadataArb }),
  fc.oneof(
    fc.record({ type: fc.constant('open-result' as const), streamId: streamIdArb, result: fc.constant(0), window: windowArb, maxData: maxDataArb, message: textArb, metadata: metadataArb }),
    fc.record({ type: fc.constant('open-result' as const), streamId: streamIdArb, result: fc.integer({ min: 1, max: 0xffff }), window: fc.constant(0), maxData: fc.constant(0), message: textArb, metadata: metadataArb }),
  ),
  fc.record({ type: fc.constant('data' as const), streamId: streamIdArb, payload: bytesArb(3000) }),
  fc.record({ type: fc.constant('window-update' as const), streamId: streamIdArb, increment: fc.integer({ min: 1, max: MAX_WINDOW }) }),
  fc.record({ type: fc.constant('fin' as const), streamId: streamIdArb }),
  fc.record({ type: fc.constant('reset' as const), streamId: streamIdArb, code: u16Arb, message: textArb }),
  fc.record({ type: fc.constantFrom('ping' as const, 'pong' as const), streamId: fc.constant(0 as const), payload: fc.uint8Array({ minLength: 8, maxLength: 8 }).map((a) => Buffer.from(a)) }),
  fc.record({ type: fc.constant('goaway' as const), streamId: fc.constant(0 as const), lastStreamId: fc.integer({ min: 0, max: MAX_STREAM_ID }), reason: u16Arb, message: textArb }),
);

describe('frame codec', () => {
  it('decode(encode(frame)) equals the frame, and the naive reference decoder agrees', () => {
    fc.assert(
      fc.property(frameArb, (frame) => {
        const bytes = encodeFrame(frame);
        expect(decodeFrame(bytes, LIMITS)).toEqual(frame);
        expect(referenceDecode(bytes, LIMITS)).toEqual({ ok: true, frame });
      }),
      { numRuns: 2000 },
    );
  });

  it('arbitrary bytes: decodeFrame throws only ProtocolError, with the same verdict as the reference', () => {
    // Bytes that start like a frame (a valid type and small stream id) reach the body checks.
    const framelike = fc
      .tuple(fc.integer({ min: 0, max: 11 }), fc.constantFrom(0, 0, 0, 1), fc.integer({ min: 0, max: 3 }), bytesArb(80))
      .map(([type, flags, id, body]) => Buffer.concat([Buffer.from([type, flags, 0, 0, 0, id]), body]));
    fc.assert(
      fc.property(fc.oneof(bytesArb(100), framelike), (bytes) => {
        expect(decodeOrCode(bytes)).toEqual(referenceDecode(bytes, LIMITS));
      }),
      { numRuns: 5000 },
    );
  });

  it('mutated valid frames: same verdict as the reference, only ProtocolError', () => {
    fc.assert(
      fc.property(frameArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), fc.nat(), (frame, edits, cut) => {
        const bytes = Buffer.from(encodeFrame(frame));
        for (const [at, value] of edits) bytes[at % bytes.length] = value;
        const mutated = cut % 3 === 0 ? bytes.subarray(0, cut % (bytes.length + 1)) : bytes;
        expect(decodeOrCode(mutated)).toEqual(referenceDecode(mutated, LIMITS));
      }),
      { numRuns: 3000 },
    );
  });

  it('decodes the example of docs/protocol.md byte for byte', () => {
    const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
    const open = hex('01 00 00000001  00040000 00010000  09 636f6e6e6563746f72 0002 6871  06 746172676574 0016 706f7374677265732e696e7465726e616c3a35343332');
    expect(decodeFrame(open, LIMITS)).toEqual({
      type: 'open',
      streamId: 1,
      window: 256 * 1024,
      maxData: 65536,
      metadata: { connector: 'hq', target: 'postgres.internal:5432' },
    });
    expect(encodeFrame({ type: 'open', streamId: 1, window: 256 * 1024, maxData: 65536, metadata: { connector: 'hq', target: 'postgres.internal:5432' } })).toEqual(open);
    const result = hex('02 00 00000001  0000 00040000 00010000 0000');
    expect(decodeFrame(result, LIMITS)).toEqual({ type: 'open-result', streamId: 1, result: 0, window: 262144, maxData: 65536, message: '', metadata: {} });
    expect(decodeFrame(hex('03 00 00000001 68656c6c6f'), LIMITS)).toEqual({ type: 'data', streamId: 1, payload: Buffer.from('hello') });
    expect(decodeFrame(hex('05 00 00000001'), LIMITS)).toEqual({ type: 'fin', streamId: 1 });
  });

  it('a DATA payload is a view of the received message, not a copy', () => {
    const message = encodeFrame({ type: 'data', streamId: 7, payload: Buffer.from('abcdef') });
    const frame = decodeFrame(message, LIMITS);
    expect(frame.type === 'data' && frame.payload.buffer).toBe(message.buffer);
  });

  it.each<[string, string, string]>([
    ['empty message', '', 'POSTERN_ERR_PROTO_FRAME_TRUNCATED'],
    ['5-byte header', '0300000000', 'POSTERN_ERR_PROTO_FRAME_TRUNCATED'],
    ['unknown type 0x0a', '0a0000000001', 'POSTERN_ERR_PROTO_UNKNOWN_FRAME_TYPE'],
    ['unknown type 0x00', '000000000001', 'POSTERN_ERR_PROTO_UNKNOWN_FRAME_TYPE'],
    ['non-zero flags', '030100000001', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['DATA on stream 0', '030000000000', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['PING on stream 1', '07000000000100000000000000000', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['PING with 7 bytes', '07000000000000000000000000', 'POSTERN_ERR_PROTO_FRAME_TRUNCATED'],
    ['PING with 9 bytes', '070000000000000000000000000000', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['WINDOW_UPDATE of 0', '04000000000100000000', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['WINDOW_UPDATE of 2^31', '04000000000180000000', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['WINDOW_UPDATE truncated', '040000000001000001', 'POSTERN_ERR_PROTO_FRAME_TRUNCATED'],
    ['FIN with a body', '05000000000100', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['OPEN window 2^31', '010000000001800000000000040000', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['OPEN maxData 1023', '0100000000010000100000000003ff', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['OPEN truncated', '01000000000100001000', 'POSTERN_ERR_PROTO_FRAME_TRUNCATED'],
    ['RESET text longer than declared bytes', '060000000001000100056869', 'POSTERN_ERR_PROTO_FRAME_TRUNCATED'],
    ['RESET text not UTF-8', '06000000000100010002c328', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['RESET trailing byte', '0600000000010001000000', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['RESET text over 1024 bytes', '060000000001000104010000', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
    ['GOAWAY on stream 3', '090000000003000000000000' + '0000', 'POSTERN_ERR_PROTO_MALFORMED_FRAME'],
  ])('%s → %s', (_name, hex, code) => {
    const bytes = Buffer.from(hex.length % 2 ? `${hex}0` : hex, 'hex');
    expect(decodeOrCode(bytes)).toEqual({ ok: false, code });
    expect(referenceDecode(bytes, LIMITS)).toEqual({ ok: false, code });
  });

  it('rejects a message over the cap and a DATA payload over maxFrameSize before reading it', () => {
    const limits = { ...LIMITS, maxFrameSize: 2048 };
    const cap = maxMessageSize(limits);
    const tooBig = Buffer.alloc(cap + 1);
    tooBig[0] = 0x03;
    tooBig[5] = 1;
    expect(decodeOrCode(tooBig, limits)).toEqual({ ok: false, code: 'POSTERN_ERR_PROTO_FRAME_TOO_LARGE' });
    const data = encodeFrame({ type: 'data', streamId: 1, payload: Buffer.alloc(2049) });
    expect(data.length).toBeLessThanOrEqual(cap);
    expect(decodeOrCode(data, limits)).toEqual({ ok: false, code: 'POSTERN_ERR_PROTO_FRAME_TOO_LARGE' });
    expect(decodeFrame(encodeFrame({ type: 'data', streamId: 1, payload: Buffer.alloc(2048) }), limits).type).toBe('data');
  });

  it('texts are cut at a character boundary to 1024 bytes by the encoder', () => {
    const long = 'é'.repeat(600); // 1200 bytes
    expect(textBytes(long).length).toBe(1024);
    const odd = `a${'é'.repeat(600)}`; // the cut would fall inside a character
    const cut = textBytes(odd);
    expect(cut.length).toBe(1023);
    const frame = decodeFrame(encodeFrame({ type: 'reset', streamId: 1, code: 1, message: odd }), LIMITS);
    expect(frame.type === 'reset' && Buffer.byteLength(frame.message)).toBeLessThanOrEqual(MAX_TEXT_BYTES);
  });

  it('the encoder refuses out-of-range values instead of writing a frame the peer must reject', () => {
    expect(() => encodeFrame({ type: 'window-update', streamId: 1, increment: 0 })).toThrow(ProtocolError);
    expect(() => encodeFrame({ type: 'fin', streamId: 0 })).toThrow(/stream id 0/);
    expect(() => encodeFrame({ type: 'open', streamId: 1, window: MAX_WINDOW + 1, maxData: 1024, metadata: {} })).toThrow(ProtocolError);
    expect(() => encodeFrame({ type: 'ping', streamId: 0, payload: Buffer.alloc(7) })).toThrow(/8 bytes/);
  });
});

describe('open metadata', () => {
  const open = (metadata: Record<string, string>) => ({ type: 'open' as const, streamId: 1, window: 1024, maxData: 1024, metadata });

  it.each<[string, Record<string, string>, RegExp]>([
    ['an uppercase key', { Target: 'x' }, /key "Target" is invalid/],
    ['a key starting with _', { __proto__x: 'x' }, /is invalid/],
    ['a 65-byte key', { ['k'.repeat(65)]: 'x' }, /is invalid/],
    ['33 entries', Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v'])), /33 entries, more than maxMetadataEntries \(32\)/],
    ['4097 bytes', { big: 'x'.repeat(4097 - 6) }, /4097 bytes, more than maxMetadataBytes \(4096\)/],
    ['a lone surrogate', { k: '\uD800' }, /not well-formed/],
  ])('the encoder refuses %s with MetadataError naming it', (_name, metadata, message) => {
    expect(() => encodeFrame(open(metadata))).toThrow(MetadataError);
    expect(() => encodeFrame(open(metadata))).toThrow(message);
  });

  it.each<[string, string]>([
    ['duplicate key', '016b0000016b0000'],
    ['empty key', '000000'],
    ['uppercase key', '014b0000'],
    ['value past the end', '016b0005616263'],
    ['key past the end', '056b6579'],
    ['invalid UTF-8 value', '016b0001ff'],
  ])('the decoder refuses %s as a stream-level MetadataError naming the stream', (_name, metaHex) => {
    const bytes = Buffer.concat([Buffer.from('01000000000b0000040000000400', 'hex'), Buffer.from(metaHex, 'hex')]);
    let caught: unknown;
    try {
      decodeFrame(bytes, LIMITS);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(MetadataError);
    expect((caught as MetadataError).code).toBe('POSTERN_ERR_PROTO_BAD_METADATA');
    expect((caught as MetadataError).streamId).toBe(11);
    expect(referenceDecode(bytes, LIMITS)).toEqual({ ok: false, code: 'POSTERN_ERR_PROTO_BAD_METADATA' });
  });

  it('the decoder applies its own limits (entries and bytes)', () => {
    const bytes = encodeFrame(open({ a: '1', b: '2', c: '3' }));
    expect(() => decodeFrame(bytes, { ...LIMITS, maxMetadataEntries: 2 })).toThrow(/more than maxMetadataEntries \(2\)/);
    expect(() => decodeFrame(bytes, { ...LIMITS, maxMetadataBytes: 14 })).toThrow(/15 bytes, more than maxMetadataBytes \(14\)/);
  });

  it('decoded metadata is frozen and cannot carry __proto__', () => {
    const frame = decodeFrame(encodeFrame(open({ constructor: 'x', target: 'y' })), LIMITS);
    expect(frame.type === 'open' && Object.isFrozen(frame.metadata)).toBe(true);
    expect(frame.type === 'open' && frame.metadata).toEqual({ constructor: 'x', target: 'y' });
  });
});

describe('FrameStreamDecoder (length-prefixed byte streams)', () => {
  it('the same byte stream split at random points yields the same frames', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 20 }), fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 50 }), (frames, cuts) => {
        const stream = Buffer.concat(frames.map((f) => encodeLengthPrefixed(encodeFrame(f))));
        const decoder = new FrameStreamDecoder(LIMITS);
        const out: Frame[] = [];
        let at = 0;
        let i = 0;
        while (at < stream.length) {
          const n = cuts[i++ % cuts.length]!;
          out.push(...decoder.push(stream.subarray(at, at + n)));
          at += n;
        }
        decoder.end();
        expect(out).toEqual(frames);
      }),
      { numRuns: 500 },
    );
  });

  it('refuses a length prefix over the cap before buffering any of the frame', () => {
    const decoder = new FrameStreamDecoder(LIMITS);
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(0xffff_ffff);
    expect(() => decoder.push(prefix)).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_PROTO_FRAME_TOO_LARGE' }));
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('arbitrary byte streams: only ProtocolError, and never more than one capped frame plus one chunk buffered', () => {
    const cap = maxMessageSize(LIMITS);
    fc.assert(
      fc.property(fc.array(bytesArb(5000), { maxLength: 30 }), (chunks) => {
        const decoder = new FrameStreamDecoder(LIMITS);
        try {
          for (const chunk of chunks) {
            decoder.push(chunk);
            expect(decoder.bufferedBytes).toBeLessThanOrEqual(4 + cap + chunk.length);
          }
          decoder.end();
        } catch (err) {
          expect(err).toBeInstanceOf(ProtocolError);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('a stream that ends inside a frame is truncated', () => {
    const decoder = new FrameStreamDecoder(LIMITS);
    const bytes = encodeLengthPrefixed(encodeFrame({ type: 'fin', streamId: 3 }));
    expect(decoder.push(bytes.subarray(0, 7))).toEqual([]);
    expect(() => decoder.end()).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_PROTO_FRAME_TRUNCATED' }));
  });

  it('a zero length prefix is a truncated frame', () => {
    expect(() => new FrameStreamDecoder(LIMITS).push(Buffer.alloc(4))).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_PROTO_FRAME_TRUNCATED' }));
  });
});
