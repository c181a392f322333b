import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TargetError } from '../../../src/errors.js';
import { compileTargetPattern, matches, parseTarget, type TargetPattern } from '../../../src/policy/index.js';

function compiled(text: string): TargetPattern | string {
  try {
    return compileTargetPattern(text);
  } catch (err) {
    if (err instanceof TargetError && err.code === 'POSTERN_ERR_TARGET_PATTERN_INVALID') return err.code;
    throw err;
  }
}

const m = (pattern: string, target: string): boolean => matches(compileTargetPattern(pattern), parseTarget(target));

describe('compileTargetPattern: canonical forms', () => {
  it.each([
    ['postgres.internal:5432', 'postgres.internal:5432', 'name'],
    ['POSTGRES.Internal.:5432', 'postgres.internal:5432', 'name'],
    ['*.DB.st-mary.internal.:5432', '*.db.st-mary.internal:5432', 'suffix'],
    ['*.bücher.example:1', '*.xn--bcher-kva.example:1', 'suffix'],
    ['postgres.internal:*', 'postgres.internal:*', 'name'],
    ['10.20.0.0/16:5432-5440', '10.20.0.0/16:5432-5440', 'ip'],
    ['10.0.0.0/8:5432-5432', '10.0.0.0/8:5432', 'ip'],
    ['012.0.0.0/8:1', '10.0.0.0/8:1', 'ip'],
    ['10.0.0.1:1', '10.0.0.1:1', 'ip'],
    ['10.0.0.1/32:1', '10.0.0.1:1', 'ip'],
    ['0.0.0.0/0:5432', '0.0.0.0/0:5432', 'ip'],
    ['2130706433:1', '127.0.0.1:1', 'ip'],
    ['[fd00::/8]:5432', '[fd00::/8]:5432', 'ip'],
    ['[FD00:0::/8]:5432', '[fd00::/8]:5432', 'ip'],
    ['[::1]:5432', '[::1]:5432', 'ip'],
    ['[::1/128]:5432', '[::1]:5432', 'ip'],
    ['[::ffff:10.0.0.0/104]:1', '10.0.0.0/8:1', 'ip'],
    ['[::ffff:127.0.0.1]:1', '127.0.0.1:1', 'ip'],
    ['[::/0]:1', '[::/0]:1', 'ip'],
  ])('%s → %s', (text, canonical, kind) => {
    const p = compileTargetPattern(text);
    expect([p.canonical, p.host.kind, p.source]).toEqual([canonical, kind, text]);
    expect(compileTargetPattern(p.canonical).canonical).toBe(canonical);
  });

  it.each([
    ['', /is empty/],
    ['*', /no port/],
    ['*:5432', /would match every host/],
    ['*:*', /would match every host/],
    ['postgres.internal', /no port/],
    ['postgres.internal:', /port is empty/],
    ['a*.example:1', /whole leftmost label/],
    ['*.*.example:1', /whole leftmost label/],
    ['x.*.example:1', /whole leftmost label/],
    ['*.:1', /only a dot|host is empty/],
    ['*.10.0.0.1:1', /must be a DNS name/],
    ['10.0.0.1/8:1', /host bits are set \(the network of \/8 is 10\.0\.0\.0\)/],
    ['10.0.0.0/33:1', /prefix length "33" must be a decimal number 0-32/],
    ['10.0.0.0/08:1', /prefix length/],
    ['10.0.0.0/:1', /prefix length/],
    ['10.0.0.0/+8:1', /prefix length/],
    ['db.internal/8:1', /needs an IPv4 address/],
    ['[fd00::/129]:1', /0-128/],
    ['[fd00::1/8]:1', /host bits are set/],
    ['fd00::/8:1', /brackets/],
    ['x:10-5', /runs backwards/],
    ['x:0-5', /out of range/],
    ['x:5-', /port is empty/],
    ['x:-5', /port is empty/],
    ['x:1-2-3', /decimal digits only/],
    ['x:**', /decimal digits only/],
    ['x:1,2', /decimal digits only/],
    ['[fe80::1%eth0]:1', /zone/],
  ])('%j is refused', (text, why) => {
    let err: unknown;
    try { compileTargetPattern(text); } catch (e) { err = e; }
    expect((err as TargetError).code).toBe('POSTERN_ERR_TARGET_PATTERN_INVALID');
    expect((err as Error).message).toMatch(why);
  });
});

describe('matches', () => {
  it.each([
    ['postgres.internal:5432', 'POSTGRES.internal.:5432', true],
    ['postgres.internal:5432', 'postgres.internal:5433', false],
    ['postgres.internal:5432', 'postgres.internal.evil:5432', false],
    ['postgres.internal:*', 'postgres.internal:1', true],
    ['*.db.internal:5432', 'a.db.internal:5432', true],
    ['*.db.internal:5432', 'a.b.db.internal:5432', true],
    ['*.db.internal:5432', 'db.internal:5432', false],
    ['*.db.internal:5432', 'xdb.internal:5432', false],
    ['*.db.internal:5432', 'a.db.internal.evil:5432', false],
    ['10.20.0.0/16:5432-5440', '10.20.255.1:5440', true],
    ['10.20.0.0/16:5432-5440', '10.20.255.1:5441', false],
    ['10.20.0.0/16:5432-5440', '10.21.0.1:5432', false],
    ['10.20.0.0/16:5432', '[::ffff:10.20.0.9]:5432', true],
    ['10.20.0.0/16:5432', '0xa.0x14.9:5432', true],
    ['[::ffff:10.20.0.0/112]:5432', '10.20.3.4:5432', true],
    ['127.0.0.1:5432', '2130706433:5432', true],
    ['127.0.0.1:5432', 'localhost:5432', false],
    ['[fd00::/8]:5432', '[fd12::1]:5432', true],
    ['[fd00::/8]:5432', '[fe00::1]:5432', false],
    ['[::/0]:1', '10.0.0.1:1', true],
    ['0.0.0.0/0:1', '[::1]:1', false],
    ['0.0.0.0/0:1', 'db.internal:1', false],
    ['db.internal:1', '10.0.0.1:1', false],
  ])('%s vs %s → %s', (pattern, target, expected) => {
    expect(m(pattern, target)).toBe(expected);
  });
});

// Labels that read as numbers (decimal, or 0x-prefixed hex such as "0x") make an IPv4 spelling, not a name.
const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9_-]{0,8}[a-z0-9])?$/)
  .filter((l) => !/^(?:[0-9]+|0x[0-9a-f]*)$/.test(l) && !l.startsWith('xn--'));
const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((ls) => ls.join('.'));
const port = fc.integer({ min: 1, max: 65535 });

function v4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

describe('matches: properties against naive oracles', () => {
  it('*.suffix matches exactly the names with more labels whose trailing labels are the suffix', () => {
    fc.assert(fc.property(name, name, fc.boolean(), port, (suffix, prefix, related, p) => {
      const host = related ? `${prefix}.${suffix}` : prefix;
      const oracle = (() => {
        const h = host.split('.');
        const s = suffix.split('.');
        return h.length > s.length && s.every((l, i) => h[h.length - s.length + i] === l);
      })();
      expect(m(`*.${suffix}:${p}`, `${host}:${p}`)).toBe(oracle);
      expect(m(`${suffix}:${p}`, `${host}:${p}`)).toBe(host === suffix);
    }), { numRuns: 2000 });
  });

  it('IPv4 CIDR matches by arithmetic, the same in IPv4 and IPv4-mapped spellings', () => {
    fc.assert(fc.property(fc.nat({ max: 0xffffffff }), fc.integer({ min: 0, max: 32 }), fc.nat({ max: 0xffffffff }), fc.boolean(), (net, bits, addr, near) => {
      const mask = bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(32 - bits);
      const network = Number(BigInt(net) & mask);
      // Half the time, pick an address inside the network so both outcomes are exercised.
      const a = near ? Number((BigInt(addr) & ~mask & 0xffffffffn) | BigInt(network)) : addr;
      const oracle = (BigInt(a) & mask) === BigInt(network);
      expect(m(`${v4(network)}/${bits}:1`, `${v4(a)}:1`)).toBe(oracle);
      expect(m(`[::ffff:${v4(network)}/${96 + bits}]:1`, `${v4(a)}:1`)).toBe(oracle);
      expect(m(`${v4(network)}/${bits}:1`, `[::ffff:${v4(a)}]:1`)).toBe(oracle);
      expect(m(`${v4(network)}/${bits}:1`, `${a}:1`)).toBe(oracle);
    }), { numRuns: 2000 });
  });

  it('IPv6 prefixes match by arithmetic', () => {
    const big = (text: string): bigint => {
      const t = parseTarget(`[${text}]:1`);
      const hex = t.kind === 'ipv4' ? `ffff${t.host.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join('')}` : (() => {
        const [head, tail] = t.host.includes('::') ? t.host.split('::') : [t.host, undefined];
        const h = head ? head.split(':') : [];
        const tl = tail ? tail.split(':') : [];
        const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl];
        return groups.map((g) => g.padStart(4, '0')).join('');
      })();
      return BigInt(`0x${hex}`);
    };
    fc.assert(fc.property(fc.ipV6(), fc.ipV6(), fc.integer({ min: 0, max: 128 }), (netText, addrText, bits) => {
      const mask = bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(128 - bits);
      const network = big(netText) & mask;
      const hex = network.toString(16).padStart(32, '0').match(/.{4}/g)!.join(':');
      const oracle = (big(addrText) & mask) === network;
      expect(m(`[${hex}/${bits}]:1`, `[${addrText}]:1`)).toBe(oracle);
      expect(m(`[${hex}/${bits}]:1`, `[${hex}]:1`)).toBe(true);
    }), { numRuns: 1000 });
  });

  it('a port range matches exactly the ports inside it; "*" matches every port', () => {
    fc.assert(fc.property(port, port, port, (a, b, p) => {
      const [lo, hi] = a <= b ? [a, b] : [b, a];
      expect(m(`db:${lo}-${hi}`, `db:${p}`)).toBe(p >= lo && p <= hi);
      expect(m('db:*', `db:${p}`)).toBe(true);
    }));
  });

  it('canonical patterns compile to themselves; arbitrary text gives a pattern or a TargetError', () => {
    const patternish = fc.oneof(
      fc.tuple(name, port).map(([n, p]) => `${n}:${p}`),
      fc.tuple(name, port, port).map(([n, a, b]) => `*.${n.toUpperCase()}:${Math.min(a, b)}-${Math.max(a, b)}`),
      fc.tuple(fc.ipV4Extended(), fc.integer({ min: 0, max: 32 })).map(([a, b]) => `${a}/${b}:*`),
      fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([a, b]) => `[${a}/${b}]:1`),
      fc.array(fc.constantFrom('a', '0', '1', 'f', '.', ':', '[', ']', '/', '-', '*', '%', 'x', '９'), { maxLength: 25 }).map((cs) => cs.join('')),
      fc.string({ unit: 'grapheme', maxLength: 30 }),
    );
    fc.assert(fc.property(patternish, (text) => {
      const p = compiled(text);
      if (typeof p === 'string') return;
      expect(compileTargetPattern(p.canonical).canonical).toBe(p.canonical);
    }), { numRuns: 4000 });
  });
});
