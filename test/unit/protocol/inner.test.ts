import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PassThrough } from 'node:stream';
import {
  decodeInnerRequest, decodeInnerResponse, encodeInnerRequest, encodeInnerResponse, MAX_INNER_TARGET_BYTES,
} from '../../../src/protocol/inner.js';
import { ProtocolError } from '../../../src/errors.js';
import { readMessage } from '../../../src/net/read-message.js';

describe('inner request/response codec', () => {
  it('round-trips requests and responses, and asks for more on every prefix', () => {
    fc.assert(fc.property(fc.string({ minLength: 1, maxLength: 100 }), fc.integer({ min: 0, max: 255 }), fc.string({ maxLength: 200 }), (target, status, message) => {
      const req = encodeInnerRequest({ target });
      expect(decodeInnerRequest(req)).toEqual({ value: { target }, length: req.length });
      for (let i = 0; i < req.length; i++) expect(decodeInnerRequest(req.subarray(0, i))).toBeUndefined();
      const res = encodeInnerResponse({ status, message });
      expect(decodeInnerResponse(res)?.value.status).toBe(status);
      for (let i = 0; i < res.length; i++) expect(decodeInnerResponse(res.subarray(0, i))).toBeUndefined();
    }));
  });

  it('arbitrary bytes give a value, "need more" or a ProtocolError, nothing else', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      for (const decode of [decodeInnerRequest, decodeInnerResponse]) {
        try { decode(Buffer.from(bytes)); } catch (err) { expect(err).toBeInstanceOf(ProtocolError); }
      }
    }));
  });

  it('refuses oversized targets before buffering them, wrong versions, bad UTF-8', () => {
    const big = Buffer.from([1, 0xff, 0xff]);
    expect(() => decodeInnerRequest(big)).toThrow(/outside 1\.\.512/);
    expect(() => encodeInnerRequest({ target: 'x'.repeat(MAX_INNER_TARGET_BYTES + 1) })).toThrow(ProtocolError);
    expect(() => decodeInnerRequest(Buffer.from([2, 0, 1, 0x61]))).toThrow(/version 2/);
    expect(() => decodeInnerRequest(Buffer.from([1, 0, 1, 0xff]))).toThrow(/UTF-8/);
  });
});

describe('readMessage', () => {
  it('reads one message split across chunks and leaves the following bytes in the stream', async () => {
    const stream = new PassThrough();
    const bytes = Buffer.concat([encodeInnerRequest({ target: 'postgres.internal:5432' }), Buffer.from('payload')]);
    const reading = readMessage(stream, decodeInnerRequest, { timeoutMs: 5000, what: 'inner request' });
    for (const b of bytes) stream.write(Buffer.from([b]));
    expect(await reading).toEqual({ target: 'postgres.internal:5432' });
    stream.end();
    const rest: Buffer[] = [];
    for await (const chunk of stream) rest.push(chunk as Buffer);
    expect(Buffer.concat(rest).toString()).toBe('payload');
  });

  it('fails with a specific error when the stream ends first', async () => {
    const stream = new PassThrough();
    const reading = readMessage(stream, decodeInnerRequest, { timeoutMs: 5000, what: 'inner request' });
    stream.end(Buffer.from([1, 0]));
    await expect(reading).rejects.toMatchObject({ code: 'POSTERN_ERR_INNER_CLOSED' });
  });
});
