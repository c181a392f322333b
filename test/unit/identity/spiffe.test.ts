import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IdentityError, PkiError } from '../../../src/errors.js';
import { formatSpiffeId, parseSpiffeId, type Role } from '../../../src/identity/index.js';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as IdentityError).code;
  }
  return 'accepted';
}

describe('parseSpiffeId', () => {
  it('parses the four layouts', () => {
    expect(parseSpiffeId('spiffe://hospital.example/relay/relay-1')).toEqual({ trustDomain: 'hospital.example', role: 'relay', name: 'relay-1', uri: 'spiffe://hospital.example/relay/relay-1' });
    for (const role of ['connector', 'user', 'service'] as const) {
      const uri = `spiffe://hospital.example/org/st-mary/${role}/a.b_c-1`;
      expect(parseSpiffeId(uri, 'hospital.example')).toEqual({ trustDomain: 'hospital.example', role, org: 'st-mary', name: 'a.b_c-1', uri });
    }
  });

  it.each([
    ['http://hospital.example/org/st-mary/user/alice', 'POSTERN_ERR_ID_NOT_SPIFFE'],
    ['urn:spiffe:hospital.example', 'POSTERN_ERR_ID_NOT_SPIFFE'],
    ['hospital.example/org/st-mary/user/alice', 'POSTERN_ERR_ID_NOT_SPIFFE'],
    ['', 'POSTERN_ERR_ID_NOT_SPIFFE'],
    ['SPIFFE://hospital.example/org/st-mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe:/hospital.example/org/st-mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/user/alice/', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org//user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example//org/st-mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/user/..', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/./user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/../other/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/user/%61lice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/user/alice?x=1', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/user/alice#frag', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example:443/org/st-mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://admin@hospital.example/org/st-mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://Hospital.example/org/st-mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital..example/org/st-mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe:///org/st-mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/St-Mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st mary/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/admin/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/user', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/user/alice/extra', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/relay/a/b', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/user/alice', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/relay/r1', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/user/alice\u0000', 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://hospital.example/org/st-mary/user/ålice', 'POSTERN_ERR_ID_MALFORMED'],
    [`spiffe://hospital.example/org/st-mary/user/${'a'.repeat(2100)}`, 'POSTERN_ERR_ID_MALFORMED'],
    ['spiffe://other.example/org/st-mary/user/alice', 'POSTERN_ERR_ID_WRONG_TRUST_DOMAIN'],
    ['spiffe://hospital.example.evil/org/st-mary/user/alice', 'POSTERN_ERR_ID_WRONG_TRUST_DOMAIN'],
  ])('%s is refused with %s', (uri, expected) => {
    expect(code(() => parseSpiffeId(uri, 'hospital.example'))).toBe(expected);
  });

  it('error messages escape control characters of peer input', () => {
    try {
      parseSpiffeId('spiffe://hospital.example/org/x/user/a\u001b[31m', 'hospital.example');
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).toContain('\\x1b');
      expect((err as Error).message).not.toContain('\u001b');
    }
  });
});

describe('formatSpiffeId', () => {
  it('formats and validates', () => {
    expect(formatSpiffeId({ trustDomain: 'hospital.example', role: 'connector', org: 'st-mary', name: 'hq' })).toBe('spiffe://hospital.example/org/st-mary/connector/hq');
    expect(formatSpiffeId({ trustDomain: 'hospital.example', role: 'relay', name: 'relay-1' })).toBe('spiffe://hospital.example/relay/relay-1');
    const bad: Parameters<typeof formatSpiffeId>[0][] = [
      { trustDomain: 'Hospital.example', role: 'user', org: 'o', name: 'n' },
      { trustDomain: 'hospital.example', role: 'user', org: 'o', name: '..' },
      { trustDomain: 'hospital.example', role: 'user', org: 'a/b', name: 'n' },
      { trustDomain: 'hospital.example', role: 'user', org: '', name: 'n' },
      { trustDomain: 'hospital.example', role: 'user', name: 'n' },
      { trustDomain: 'hospital.example', role: 'relay', org: 'o', name: 'n' },
      { trustDomain: 'hospital.example', role: 'admin' as Role, org: 'o', name: 'n' },
    ];
    for (const id of bad) {
      expect(() => formatSpiffeId(id), JSON.stringify(id)).toThrow(PkiError);
      expect(code(() => formatSpiffeId(id))).toBe('POSTERN_ERR_PKI_INVALID_NAME');
    }
  });
});

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/);
const trustDomain = fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));
const segment = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/);
const role = fc.constantFrom<Role>('relay', 'connector', 'user', 'service');

describe('SPIFFE ID properties', () => {
  it('format then parse gives back the same identity', () => {
    fc.assert(
      fc.property(trustDomain, role, segment, segment, (td, r, org, name) => {
        const id = r === 'relay' ? { trustDomain: td, role: r, name } : { trustDomain: td, role: r, org, name };
        const uri = formatSpiffeId(id);
        expect(parseSpiffeId(uri, td)).toEqual({ ...id, uri });
      }),
    );
  });

  it('arbitrary input is accepted only in its one canonical spelling, or refused with an identity code', () => {
    const codes = new Set(['POSTERN_ERR_ID_NOT_SPIFFE', 'POSTERN_ERR_ID_MALFORMED', 'POSTERN_ERR_ID_WRONG_TRUST_DOMAIN']);
    const near = fc.tuple(fc.constantFrom('spiffe://', 'SPIFFE://', 'spiffe:', 'http://', ''), fc.string({ unit: 'binary', maxLength: 60 }))
      .map(([p, s]) => p + s);
    const mutated = fc.tuple(trustDomain, segment, segment, fc.constantFrom('/', '//', '/./', '/../', '%2f', '?', '#', ':1', '@', 'A', ' '), fc.nat(60))
      .map(([td, org, name, junk, at]) => {
        const uri = `spiffe://${td}/org/${org}/user/${name}`;
        const i = at % (uri.length + 1);
        return uri.slice(0, i) + junk + uri.slice(i);
      });
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 80 }), near, mutated), (uri) => {
        let id;
        try {
          id = parseSpiffeId(uri);
        } catch (err) {
          expect(err).toBeInstanceOf(IdentityError);
          expect(codes).toContain((err as IdentityError).code);
          return;
        }
        expect(formatSpiffeId(id)).toBe(uri);
      }),
      { numRuns: 2000 },
    );
  });
});
