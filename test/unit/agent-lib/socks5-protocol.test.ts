import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_GREETING_BYTES, MAX_REQUEST_BYTES, Reply, Socks5Handshake, encodeReply, replyForError, type SocksAction } from '../../../agent-lib/socks5-protocol.js';

const b = (...bytes: number[]): Buffer => Buffer.from(bytes);
const GREETING = b(5, 1, 0);
const port = (p: number): number[] => [p >> 8, p & 0xff];
const domain = (name: string, p: number): Buffer => Buffer.concat([b(5, 1, 0, 3, Buffer.byteLength(name)), Buffer.from(name), b(...port(p))]);

function run(input: Buffer, splits: number[] = []): SocksAction[] {
  const hs = new Socks5Handshake();
  const actions: SocksAction[] = [];
  let at = 0;
  for (const cut of [...splits.filter((s) => s > 0 && s < input.length).sort((x, y) => x - y), input.length]) {
    actions.push(...hs.feed(input.subarray(at, cut)));
    at = cut;
  }
  return actions;
}

/** Actions with Buffers as arrays and errors as codes, for toEqual. */
function plain(actions: SocksAction[]): unknown[] {
  return actions.map((a) =>
    a.type === 'send' ? { send: [...a.bytes] } : a.type === 'fail' ? { fail: [...a.bytes], code: a.error.code } : { connect: a.request.target, type: a.request.addressType, rest: [...a.rest] },
  );
}

/** Bytes after the request arrive with whichever chunk completed it: compare without them. */
const withoutRest = (actions: unknown[]): unknown[] =>
  actions.map((x) => (typeof x === 'object' && x !== null && 'rest' in x ? { ...x, rest: undefined } : x));

const NO_METHOD = [5, 0xff];
const reply = (code: number): number[] => [...encodeReply(code)];

describe('SOCKS5 handshake (table)', () => {
  const cases: Array<[string, Buffer, unknown[]]> = [
    ['greeting with no-auth', GREETING, [{ send: [5, 0] }]],
    ['greeting offering GSSAPI and no-auth', b(5, 2, 1, 0), [{ send: [5, 0] }]],
    ['greeting without no-auth', b(5, 1, 2), [{ fail: NO_METHOD, code: 'POSTERN_ERR_SOCKS_UNSUPPORTED' }]],
    ['SOCKS4 client', b(4, 1, 0, 80, 127, 0, 0, 1, 0), [{ fail: NO_METHOD, code: 'POSTERN_ERR_SOCKS_PROTOCOL' }]],
    ['greeting with zero methods', b(5, 0), [{ fail: NO_METHOD, code: 'POSTERN_ERR_SOCKS_PROTOCOL' }]],
    ['incomplete greeting', b(5, 3, 0), []],
    ['CONNECT to IPv4', Buffer.concat([GREETING, b(5, 1, 0, 1, 10, 0, 0, 5, ...port(5432))]), [{ send: [5, 0] }, { connect: '10.0.0.5:5432', type: 'ipv4', rest: [] }]],
    ['CONNECT to a name', Buffer.concat([GREETING, domain('db.st-mary.internal', 5432)]), [{ send: [5, 0] }, { connect: 'db.st-mary.internal:5432', type: 'domain', rest: [] }]],
    [
      'CONNECT to IPv6 ::1',
      Buffer.concat([GREETING, b(5, 1, 0, 4, ...Array(15).fill(0), 1, ...port(443))]),
      [{ send: [5, 0] }, { connect: '[0:0:0:0:0:0:0:1]:443', type: 'ipv6', rest: [] }],
    ],
    ['client data sent ahead of the reply is kept', Buffer.concat([GREETING, domain('a.b', 1), b(1, 2, 3)]), [{ send: [5, 0] }, { connect: 'a.b:1', type: 'domain', rest: [1, 2, 3] }]],
    ['BIND', Buffer.concat([GREETING, b(5, 2, 0, 1, 1, 2, 3, 4, 0, 80)]), [{ send: [5, 0] }, { fail: reply(Reply.COMMAND_NOT_SUPPORTED), code: 'POSTERN_ERR_SOCKS_UNSUPPORTED' }]],
    ['UDP ASSOCIATE', Buffer.concat([GREETING, b(5, 3, 0, 1, 0, 0, 0, 0, 0, 0)]), [{ send: [5, 0] }, { fail: reply(Reply.COMMAND_NOT_SUPPORTED), code: 'POSTERN_ERR_SOCKS_UNSUPPORTED' }]],
    ['unknown address type', Buffer.concat([GREETING, b(5, 1, 0, 2, 0, 0)]), [{ send: [5, 0] }, { fail: reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED), code: 'POSTERN_ERR_SOCKS_UNSUPPORTED' }]],
    ['non-zero reserved byte', Buffer.concat([GREETING, b(5, 1, 7, 1, 1, 2, 3, 4, 0, 80)]), [{ send: [5, 0] }, { fail: reply(Reply.GENERAL_FAILURE), code: 'POSTERN_ERR_SOCKS_PROTOCOL' }]],
    ['request of another version', Buffer.concat([GREETING, b(4, 1, 0, 1)]), [{ send: [5, 0] }, { fail: reply(Reply.GENERAL_FAILURE), code: 'POSTERN_ERR_SOCKS_PROTOCOL' }]],
    ['empty name', Buffer.concat([GREETING, b(5, 1, 0, 3, 0, 0, 80)]), [{ send: [5, 0] }, { fail: reply(Reply.GENERAL_FAILURE), code: 'POSTERN_ERR_SOCKS_PROTOCOL' }]],
    ['name that is not UTF-8', Buffer.concat([GREETING, b(5, 1, 0, 3, 2, 0xc3, 0x28, 0, 80)]), [{ send: [5, 0] }, { fail: reply(Reply.GENERAL_FAILURE), code: 'POSTERN_ERR_SOCKS_PROTOCOL' }]],
    ['incomplete request', Buffer.concat([GREETING, b(5, 1, 0, 3, 10, 97, 98)]), [{ send: [5, 0] }]],
  ];

  it.each(cases)('%s', (_name, input, expected) => {
    expect(plain(run(input))).toEqual(expected);
  });

  it.each(cases)('%s, fed one byte at a time', (_name, input, expected) => {
    expect(withoutRest(plain(run(input, Array.from({ length: input.length }, (_, i) => i))))).toEqual(withoutRest(expected));
  });

  it('ignores everything once done', () => {
    const hs = new Socks5Handshake();
    hs.feed(Buffer.concat([GREETING, domain('a.b', 1)]));
    expect(hs.done).toBe(true);
    expect(hs.feed(b(5, 1, 0))).toEqual([]);
  });

  it('the largest greeting and request fit the documented bounds', () => {
    const greeting = b(5, 255, ...Array(255).fill(0));
    const request = domain('a'.repeat(255), 80);
    expect(greeting.length).toBe(MAX_GREETING_BYTES);
    expect(request.length).toBe(MAX_REQUEST_BYTES);
    expect(plain(run(Buffer.concat([greeting, request])))).toEqual([{ send: [5, 0] }, { connect: `${'a'.repeat(255)}:80`, type: 'domain', rest: [] }]);
  });

  it.each([
    ['POSTERN_ERR_OPEN_POLICY_DENIED', Reply.NOT_ALLOWED],
    ['POSTERN_ERR_OPEN_ALLOWLIST_DENIED', Reply.NOT_ALLOWED],
    ['POSTERN_ERR_STREAM_INNER_TLS_FAILED', Reply.NOT_ALLOWED],
    ['POSTERN_ERR_SOCKS_NO_CONNECTOR', Reply.NOT_ALLOWED],
    ['POSTERN_ERR_OPEN_TARGET_REFUSED', Reply.CONNECTION_REFUSED],
    ['POSTERN_ERR_OPEN_TARGET_UNREACHABLE', Reply.HOST_UNREACHABLE],
    ['POSTERN_ERR_OPEN_CONNECTOR_OFFLINE', Reply.NETWORK_UNREACHABLE],
    ['POSTERN_ERR_OPEN_UNKNOWN_CONNECTOR', Reply.NETWORK_UNREACHABLE],
    ['POSTERN_ERR_OPEN_TARGET_TIMEOUT', Reply.TTL_EXPIRED],
    ['POSTERN_ERR_AGENT_DIAL_TIMEOUT', Reply.TTL_EXPIRED],
    ['POSTERN_ERR_OPEN_TIMEOUT', Reply.TTL_EXPIRED],
    ['POSTERN_ERR_ID_WRONG_ROLE', Reply.GENERAL_FAILURE],
    [undefined, Reply.GENERAL_FAILURE],
  ] as const)('a dial failing with %s gets reply %i', (code, expected) => {
    expect(replyForError(code)).toBe(expected);
  });
});

/** A proper reply this proxy may send: method selection, or a request reply with a defined code. */
function isProperReply(bytes: Buffer): boolean {
  if (bytes.length === 2) return bytes[0] === 5 && (bytes[1] === 0 || bytes[1] === 0xff);
  if (bytes.length === 10) return bytes[0] === 5 && bytes[1]! >= 1 && bytes[1]! <= 8 && bytes.subarray(2).equals(b(0, 1, 0, 0, 0, 0, 0, 0));
  return false;
}

describe('SOCKS5 handshake (random input)', () => {
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    // Mostly well-formed prefixes, to reach the request states often.
    fc.tuple(fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ maxLength: 300 })).map(([head, tail]) => Uint8Array.from([5, 1, 0, 5, ...head, ...tail])),
  );
  const splits = fc.array(fc.nat({ max: 600 }), { maxLength: 8 });

  it('answers arbitrary bytes only with proper replies, ends at most once, never throws', () => {
    fc.assert(
      fc.property(bytes, splits, (raw, cuts) => {
        const input = Buffer.from(raw);
        const actions = run(input, cuts);
        const terminal = actions.findIndex((a) => a.type !== 'send');
        if (terminal >= 0) expect(terminal).toBe(actions.length - 1);
        expect(actions.filter((a) => a.type === 'send').length).toBeLessThanOrEqual(1);
        for (const a of actions) {
          if (a.type === 'send') expect([...a.bytes]).toEqual([5, 0]);
          if (a.type === 'fail') expect(isProperReply(a.bytes)).toBe(true);
          if (a.type === 'connect') expect(a.rest.length).toBeLessThan(input.length);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('gives the same answer however the bytes are split', () => {
    fc.assert(
      fc.property(bytes, splits, (raw, cuts) => {
        const input = Buffer.from(raw);
        const whole = plain(run(input));
        expect(withoutRest(plain(run(input, cuts)))).toEqual(withoutRest(whole));
      }),
      { numRuns: 1000 },
    );
  });
});
