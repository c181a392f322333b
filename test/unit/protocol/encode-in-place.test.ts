import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_DECODE_LIMITS, decodeFrame, encodeDataFrameInPlace, encodeFrame } from '../../../src/protocol/index.js';

describe('encodeDataFrameInPlace: a DATA frame around a received payload, no copy', () => {
  it('re-frames a decoded payload for another stream: same memory, same bytes as encodeFrame would produce', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0xffff_ffff }), fc.integer({ min: 1, max: 0xffff_ffff }), fc.uint8Array({ minLength: 1, maxLength: 4096 }), (from, to, bytes) => {
        const payload = Buffer.from(bytes);
        const received = decodeFrame(encodeFrame({ type: 'data', streamId: from, payload }), DEFAULT_DECODE_LIMITS);
        if (received.type !== 'data') throw new Error('expected DATA');
        const frame = encodeDataFrameInPlace(to, received.payload);
        expect(frame.buffer).toBe(received.payload.buffer);
        expect(frame.byteOffset + 6).toBe(received.payload.byteOffset);
        expect(frame).toEqual(encodeFrame({ type: 'data', streamId: to, payload }));
        expect(received.payload).toEqual(payload); // the payload itself is untouched
      }),
    );
  });

  it('refuses a payload with no room for the header before it, and a bad stream id', () => {
    const own = Buffer.alloc(64);
    expect(() => encodeDataFrameInPlace(1, own.subarray(0, 10))).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_PROTO_MALFORMED_FRAME', message: expect.stringContaining('no room') }));
    expect(() => encodeDataFrameInPlace(0, own.subarray(6))).toThrow(expect.objectContaining({ code: 'POSTERN_ERR_PROTO_MALFORMED_FRAME' }));
  });
});
