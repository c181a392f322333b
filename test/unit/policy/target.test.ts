import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isPosternError, TargetError } from '../../../src/errors.js';
import { parseTarget, targetAddress, type Target } from '../../../src/policy/index.js';

/** parseTarget's result, or the error code it threw; anything else fails the test. */
function outcome(input: string): Target | string {
  try {
    return parseTarget(input);
  } catch (err) {
    if (err instanceof TargetError && err.code === 'POSTERN_ERR_TARGET_INVALID') return err.code;
    throw err;
  }
}

function dotted(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

describe('parseTarget: accepted spellings', () => {
  it.each([
    ['postgres.internal:5432', 'dns', 'postgres.internal:5432'],
    ['POSTGRES.internal.:5432', 'dns', 'postgres.internal:5432'],
    ['Bücher.example:443', 'dns', 'xn--bcher-kva.example:443'],
    ['xn--bcher-kva.example:443', 'dns', 'xn--bcher-kva.example:443'],
    ['ＤＢ．example:1', 'dns', 'db.example:1'],
    ['faß.de:1', 'dns', 'xn--fa-hia.de:1'],
    ['sql_server01.corp:1433', 'dns', 'sql_server01.corp:1433'],
    ['localhost:5432', 'dns', 'localhost:5432'],
    ['1e3:80', 'dns', '1e3:80'],
    ['123.example:80', 'dns', '123.example:80'],
    ['a.b-c.d:65535', 'dns', 'a.b-c.d:65535'],
    ['127.0.0.1:5432', 'ipv4', '127.0.0.1:5432'],
    ['2130706433:5432', 'ipv4', '127.0.0.1:5432'],
    ['0177.0.0.1:5432', 'ipv4', '127.0.0.1:5432'],
    ['0x7f.1:5432', 'ipv4', '127.0.0.1:5432'],
    ['0X7F.0.0.1:5432', 'ipv4', '127.0.0.1:5432'],
    ['127.1:5432', 'ipv4', '127.0.0.1:5432'],
    ['0x7f000001:5432', 'ipv4', '127.0.0.1:5432'],
    ['127.0.0.1.:5432', 'ipv4', '127.0.0.1:5432'],
    ['１２７.０.０.１:5432', 'ipv4', '127.0.0.1:5432'],
    ['010.0.0.1:1', 'ipv4', '8.0.0.1:1'],
    ['[::ffff:127.0.0.1]:5432', 'ipv4', '127.0.0.1:5432'],
    ['[::FFFF:7f00:1]:5432', 'ipv4', '127.0.0.1:5432'],
    ['[0:0:0:0:0:ffff:7f00:0001]:5432', 'ipv4', '127.0.0.1:5432'],
    ['[::1]:5432', 'ipv6', '[::1]:5432'],
    ['[0:0:0:0:0:0:0:1]:5432', 'ipv6', '[::1]:5432'],
    ['[2001:DB8:0:0:1:0:0:1]:1', 'ipv6', '[2001:db8::1:0:0:1]:1'],
    ['[::1.2.3.4]:1', 'ipv6', '[::102:304]:1'],
    ['[64:ff9b::169.254.169.254]:80', 'ipv6', '[64:ff9b::a9fe:a9fe]:80'],
  ])('%s → %s %s', (input, kind, canonical) => {
    const t = parseTarget(input);
    expect([t.kind, t.canonical]).toEqual([kind, canonical]);
    expect(t.canonical).toBe(t.kind === 'ipv6' ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`);
    expect(Object.isFrozen(t)).toBe(true);
  });
});

describe('parseTarget: refused inputs name the input and why', () => {
  it.each([
    ['', /is empty/],
    ['postgres.internal', /no port/],
    ['postgres.internal:', /port is empty/],
    [':5432', /host is empty/],
    ['postgres.internal:0', /out of range/],
    ['postgres.internal:65536', /out of range/],
    ['postgres.internal:99999999999', /out of range/],
    ['postgres.internal:05432', /leading zero/],
    ['postgres.internal:+5432', /decimal digits only/],
    ['postgres.internal:-1', /decimal digits only/],
    ['postgres.internal:0x10', /decimal digits only/],
    ['postgres.internal:5432 ', /decimal digits only/],
    ['postgres.internal:５４３２', /decimal digits only/],
    [' postgres.internal:5432', /whitespace/],
    ['post gres:5432', /whitespace/],
    ['postgres\t.internal:5432', /whitespace/],
    ['postgres\u3000internal:5432', /whitespace/],
    ['a..b:1', /empty label/],
    ['.a:1', /empty label/],
    ['a..:1', /more than one dot/],
    ['.:1', /only a dot/],
    ['-a.example:1', /starts or ends with "-"/],
    ['a-.example:1', /starts or ends with "-"/],
    [`${'a'.repeat(64)}.example:1`, /longer than 63/],
    [`${'abcdefghi.'.repeat(26)}com:1`, /longer than 253/],
    ['a/b:1', /character "\/"/],
    ['a%41:1', /character "%"/],
    ['user@host:1', /character "@"/],
    ['a*b:1', /character "\*"/],
    ['ä/b:1', /character "\/"/],
    ['a／b.com:1', /IDNA/],
    ['xn--zz.example:1', /invalid IDNA A-label/],
    ['foo.123:1', /numeric label but is not a valid IPv4/],
    ['1.2.3.999:1', /not a valid IPv4/],
    ['1.2.3.4.5:1', /not a valid IPv4/],
    ['08.0.0.1:1', /not a valid IPv4/],
    ['4294967296:1', /not a valid IPv4/],
    ['foo.0x:1', /not a valid IPv4/],
    ['ä.１２３:1', /IDNA/],
    ['::1:5432', /must be written in brackets/],
    ['::1', /must be written in brackets/],
    ['[::1]', /no port/],
    ['[::1]5432', /followed by ":port"/],
    ['[::1:5432', /no "\]" closes it/],
    ['[]:1', /brackets are empty/],
    ['[127.0.0.1]:1', /not a valid IPv6/],
    ['[fe80::1%eth0]:1', /zone/],
    ['[::g]:1', /cannot appear in an IPv6/],
    ['a]:1', /brackets may only enclose/],
    ['x'.repeat(2000), /longer than 1024/],
  ])('%j is refused', (input, why) => {
    let err: unknown;
    try { parseTarget(input); } catch (e) { err = e; }
    expect(isPosternError(err, 'POSTERN_ERR_TARGET_INVALID')).toBe(true);
    expect((err as Error).message).toMatch(why);
    expect((err as Error).message).toMatch(/^target ".*" is invalid: /s);
  });

  it('escapes control and bidi characters of the input in the message', () => {
    let message = '';
    try { parseTarget('a\u0000\u202eb:1'); } catch (e) { message = (e as Error).message; }
    expect(message).toContain('\\u{0}');
    expect(message).not.toContain('\u202e');
  });
});

/** One IPv4 address (as a number) in a random one of the spellings inet_aton and URL parsers accept. */
const ipv4Spelling = fc.tuple(fc.nat({ max: 0xffffffff }), fc.integer({ min: 1, max: 4 }), fc.array(fc.constantFrom('dec', 'oct', 'hex', 'HEX'), { minLength: 4, maxLength: 4 }))
  .map(([n, parts, styles]) => {
    const bytes = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
    const values = parts === 4 ? bytes
      : parts === 3 ? [bytes[0]!, bytes[1]!, bytes[2]! * 256 + bytes[3]!]
        : parts === 2 ? [bytes[0]!, ((bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0]
          : [n];
    const spelled = values.map((v, i) => {
      const style = styles[i]!;
      if (style === 'oct') return `0${v.toString(8)}`;
      if (style === 'hex') return `0x${v.toString(16)}`;
      if (style === 'HEX') return `0X${v.toString(16).toUpperCase()}`;
      return String(v);
    });
    return { n, text: spelled.join('.') };
  });

const ipv4Mapped = fc.tuple(fc.nat({ max: 0xffffffff }), fc.constantFrom('dotted', 'hex', 'full', 'upper'))
  .map(([n, style]) => {
    const hi = (n >>> 16).toString(16);
    const lo = (n & 0xffff).toString(16);
    const text = style === 'dotted' ? `::ffff:${dotted(n)}`
      : style === 'hex' ? `::ffff:${hi}:${lo}`
        : style === 'full' ? `0:0:0:0:0:ffff:${hi.padStart(4, '0')}:${lo.padStart(4, '0')}`
          : `::FFFF:${hi.toUpperCase()}:${lo.toUpperCase()}`;
    return { n, text: `[${text}]` };
  });

const port = fc.integer({ min: 1, max: 65535 });

/** Inputs that are often valid: names, IPv4 spellings, IPv6, with noise. */
const targetish = fc.oneof(
  fc.tuple(fc.domain(), port).map(([d, p]) => `${d}:${p}`),
  fc.tuple(fc.domain(), port).map(([d, p]) => `${d.toUpperCase()}.:${p}`),
  fc.tuple(ipv4Spelling, port).map(([a, p]) => `${a.text}:${p}`),
  fc.tuple(ipv4Mapped, port).map(([a, p]) => `${a.text}:${p}`),
  fc.tuple(fc.ipV6(), port).map(([a, p]) => `[${a}]:${p}`),
  fc.tuple(fc.ipV4Extended(), port).map(([a, p]) => `${a}:${p}`),
  fc.tuple(fc.string({ unit: 'grapheme', maxLength: 20 }), fc.string({ maxLength: 7 })).map(([h, p]) => `${h}:${p}`),
);

describe('parseTarget: properties', () => {
  it('every spelling of one IPv4 address gives the same canonical target', () => {
    fc.assert(fc.property(ipv4Spelling, port, (addr, p) => {
      expect(parseTarget(`${addr.text}:${p}`).canonical).toBe(`${dotted(addr.n)}:${p}`);
    }), { numRuns: 2000 });
    fc.assert(fc.property(ipv4Mapped, port, (addr, p) => {
      const t = parseTarget(`${addr.text}:${p}`);
      expect([t.kind, t.canonical]).toEqual(['ipv4', `${dotted(addr.n)}:${p}`]);
    }), { numRuns: 1000 });
  });

  it('all spellings of 127.0.0.1 meet in 127.0.0.1', () => {
    for (const s of ['127.0.0.1', '127.1', '127.0.1', '2130706433', '0177.0.0.1', '0177.1', '0x7f.1', '0x7f000001', '017700000001', '0x7F.0x0.0x0.0x1', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '１２７.０.０.１', '127.0.0.1.']) {
      expect(parseTarget(`${s}:5432`).canonical, s).toBe('127.0.0.1:5432');
    }
  });

  it('agrees with the WHATWG URL host parser on numeric hosts (the slow oracle)', () => {
    fc.assert(fc.property(fc.oneof(fc.ipV4Extended(), ipv4Spelling.map((a) => a.text)), (host) => {
      let oracle: string | undefined;
      try { oracle = new URL(`http://${host}/`).hostname; } catch { oracle = undefined; }
      const ours = outcome(`${host}:1`);
      if (typeof ours === 'string') return; // refusing is always safe; accepting differently is not
      expect(ours.host).toBe(oracle);
    }), { numRuns: 3000 });
    fc.assert(fc.property(fc.ipV6(), (host) => {
      const ours = parseTarget(`[${host}]:1`);
      const oracle = new URL(`http://[${host}]/`).hostname.slice(1, -1);
      if (ours.kind === 'ipv6') {
        expect(ours.host).toBe(oracle);
        return;
      }
      // IPv4-mapped: the oracle writes ::ffff:HHHH:LLLL, we write the IPv4 address it maps.
      expect(oracle.startsWith('::ffff:')).toBe(true);
      const [hi, lo] = oracle.slice('::ffff:'.length).split(':');
      expect(ours.host).toBe(dotted(parseInt(hi!, 16) * 65536 + parseInt(lo!, 16)));
    }), { numRuns: 2000 });
  });

  it('is idempotent: parsing the canonical form gives the same target', () => {
    fc.assert(fc.property(targetish, (input) => {
      const first = outcome(input);
      if (typeof first === 'string') return;
      const again = parseTarget(first.canonical);
      expect(again).toEqual(first);
      expect(again.canonical).toBe(first.canonical);
    }), { numRuns: 3000 });
  });

  it('arbitrary strings give a Target or a TargetError, nothing else', () => {
    const noisy = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.string({ unit: 'grapheme', maxLength: 40 }),
      fc.array(fc.constantFrom('a', 'Z', '0', '9', 'x', '.', ':', '[', ']', '%', '-', '_', '*', '/', ' ', 'ä', '．', '０', 'f', ':'), { maxLength: 30 }).map((cs) => cs.join('')),
      targetish,
    );
    fc.assert(fc.property(noisy, (input) => {
      const result = outcome(input);
      if (typeof result !== 'string') {
        expect(result.port).toBeGreaterThanOrEqual(1);
        expect(result.port).toBeLessThanOrEqual(65535);
        expect(result.host).toBe(result.host.toLowerCase());
        expect(result.host.endsWith('.')).toBe(false);
      }
    }), { numRuns: 5000 });
  });

  it('ports: exactly 1-65535 in plain decimal', () => {
    fc.assert(fc.property(fc.integer({ min: -100, max: 200000 }), (p) => {
      const result = outcome(`db:${p}`);
      if (p >= 1 && p <= 65535) expect(result).toMatchObject({ port: p });
      else expect(result).toBe('POSTERN_ERR_TARGET_INVALID');
    }));
  });
});

describe('targetAddress', () => {
  it('gives the address of IP targets and nothing for names', () => {
    expect(targetAddress(parseTarget('[::ffff:10.0.0.1]:1'))?.text).toBe('10.0.0.1');
    expect(targetAddress(parseTarget('[::1]:1'))?.kind).toBe('ipv6');
    expect(targetAddress(parseTarget('db:1'))).toBeUndefined();
  });

  it('accepts a hand-built target only when its host is canonical', () => {
    expect(targetAddress({ kind: 'ipv4', host: '10.0.0.1', port: 1, canonical: '10.0.0.1:1' })?.text).toBe('10.0.0.1');
    expect(targetAddress({ kind: 'ipv4', host: '10.1', port: 1, canonical: '10.1:1' })).toBeUndefined();
    expect(targetAddress({ kind: 'ipv6', host: '::FFFF:a00:1', port: 1, canonical: '' })).toBeUndefined();
  });
});
