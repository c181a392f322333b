import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ConfigError } from '../../../src/errors.js';
import {
  allowlistDeniedError, checkAllowlist, checkResolvedAddress, compileAllowlist, forbiddenAddressError, parseTarget,
  type PrincipalInput,
} from '../../../src/policy/index.js';

const alice: PrincipalInput = { trustDomain: 'hospital.example', org: 'st-mary', role: 'user', name: 'alice' };
const reports: PrincipalInput = { trustDomain: 'hospital.example', org: 'st-mary', role: 'service', name: 'reports' };

function configProblem(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('POSTERN_ERR_CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error('accepted');
}

describe('compileAllowlist', () => {
  it.each([
    [{ targets: [] }, /^allowlist\.targets: must list at least one target pattern/],
    [{ targets: ['db:1', '*:5432'] }, /^allowlist\.targets\[1\]: target pattern "\*:5432" is invalid/],
    [{ targets: ['db:1'], principals: [] }, /^allowlist\.principals: is empty; omit the key/],
    [{ targets: ['db:1'], principals: ['user/alice', 'group/x'] }, /^allowlist\.principals\[1\]: "group\/x" must be a SPIFFE ID, "user\/NAME" or "service\/NAME"/],
    [{ targets: ['db:1'], principals: ['user/Alice'] }, /^allowlist\.principals\[0\]: "user\/Alice": it must match/],
    [{ targets: ['db:1'], principals: ['spiffe://hospital.example/org/st-mary/connector/hq'] }, /is a connector identity, not a user or service/],
    [{ targets: ['db:1'], principals: ['spiffe://hospital.example/org/st-mary/user/a/b'] }, /^allowlist\.principals\[0\]: SPIFFE ID .* is malformed/],
  ])('%j is refused naming the entry', (spec, why) => {
    expect(configProblem(() => compileAllowlist(spec))).toMatch(why);
  });

  it('names the config field given as `where` and reports every problem', () => {
    const message = configProblem(() => compileAllowlist({ targets: ['a', 'b'] }, 'connector.yaml: allowlist'));
    expect(message.split('\n')).toEqual([
      'connector.yaml: allowlist.targets[0]: target pattern "a" is invalid: no port: write host:port',
      'connector.yaml: allowlist.targets[1]: target pattern "b" is invalid: no port: write host:port',
    ]);
  });
});

describe('checkAllowlist', () => {
  const targetsOnly = compileAllowlist({ targets: ['postgres.internal:5432', '10.20.0.0/16:5432-5440'] });
  const withPrincipals = compileAllowlist({
    targets: ['postgres.internal:5432'],
    principals: ['spiffe://hospital.example/org/st-mary/user/alice', 'service/reports'],
  });

  it.each([
    [targetsOnly, alice, 'POSTGRES.internal.:5432', true, /allowed by allowlist entry postgres\.internal:5432/],
    [targetsOnly, alice, '[::ffff:10.20.1.1]:5440', true, /10\.20\.0\.0\/16:5432-5440/],
    [targetsOnly, alice, 'postgres.internal:5433', false, /^target postgres\.internal:5433 is not in the connector allowlist$/],
    [targetsOnly, alice, '10.21.0.1:5432', false, /not in the connector allowlist/],
    [withPrincipals, alice, 'postgres.internal:5432', true, /allowed/],
    [withPrincipals, reports, 'postgres.internal:5432', true, /allowed/],
    [withPrincipals, { ...alice, name: 'bob' }, 'postgres.internal:5432', false, /^principal spiffe:\/\/hospital\.example\/org\/st-mary\/user\/bob is not in the connector allowlist$/],
    [withPrincipals, { ...alice, trustDomain: 'other.example' }, 'postgres.internal:5432', false, /not in the connector allowlist/],
    [withPrincipals, { ...reports, role: 'user' }, 'postgres.internal:5432', false, /not in the connector allowlist/],
    [targetsOnly, { ...alice, role: 'connector' }, 'postgres.internal:5432', false, /connector identity is not a principal/],
  ])('%#: %j → %s', (allowlist, principal, target, allow, why) => {
    const check = checkAllowlist(allowlist, principal, parseTarget(target));
    expect(check.allow).toBe(allow);
    expect(check.reason).toMatch(why);
  });

  it('allowlistDeniedError carries the reason', () => {
    const target = parseTarget('x:1');
    const err = allowlistDeniedError(checkAllowlist(targetsOnly, alice, target), target);
    expect([err.code, err.message]).toEqual(['POSTERN_ERR_ALLOWLIST_DENIED', 'connector allowlist denied x:1: target x:1 is not in the connector allowlist']);
  });
});

describe('checkResolvedAddress', () => {
  const plain = compileAllowlist({ targets: ['postgres.internal:5432', '*.db.internal:*', '0.0.0.0/0:5432', '[::/0]:5432', '169.254.0.0/16:5432'] });
  const db = parseTarget('postgres.internal:5432');

  it.each([
    ['10.20.0.5', true, undefined],
    ['192.168.1.9', true, undefined],
    ['8.8.8.8', true, undefined],
    ['fd12::1', true, undefined],
    ['2001:db8::1', true, undefined],
    ['127.0.0.1', false, 'loopback'],
    ['127.53.0.1', false, 'loopback'],
    ['::1', false, 'loopback'],
    ['::ffff:127.0.0.1', false, 'loopback'],
    ['0.0.0.0', false, 'unspecified'],
    ['0.1.2.3', false, 'unspecified'],
    ['::', false, 'unspecified'],
    ['169.254.10.1', true, 'link-local'],
    ['fe80::1', false, 'link-local'],
    ['fe80::1%eth0', false, 'link-local'],
    ['febf::1', false, 'link-local'],
    ['224.0.0.1', false, 'multicast'],
    ['239.255.255.250', false, 'multicast'],
    ['ff02::1', false, 'multicast'],
    ['255.255.255.255', false, 'broadcast'],
    ['169.254.169.254', false, 'cloud-metadata'],
    ['100.100.100.200', false, 'cloud-metadata'],
    ['fd00:ec2::254', false, 'cloud-metadata'],
    ['64:ff9b::a9fe:a9fe', false, 'cloud-metadata'],
    ['64:ff9b::7f00:1', false, 'loopback'],
    ['64:ff9b::a14:5', true, undefined],
  ])('%s → allow %s (%s)', (address, allow, block) => {
    const check = checkResolvedAddress(address, db, plain);
    expect({ allow: check.allow, block: check.block }).toEqual({ allow, block });
    if (!allow) expect(check.reason).toMatch(/^postgres\.internal:5432 resolved to .*, a [a-z-]+ address .*list it as a literal IP/);
  });

  it('refuses what is not an IP address', () => {
    for (const bad of ['', 'localhost', '127.1', '0x7f.0.0.1', '010.0.0.1', '::1%', '1.2.3.4:80']) {
      expect(checkResolvedAddress(bad, db, plain).allow, bad).toBe(false);
    }
  });

  it('a literal IP entry inside the forbidden block, covering the port, admits the address', () => {
    const loop = compileAllowlist({ targets: ['127.0.0.1:5432', '[::1]:5432', '127.0.0.0/8:6000-6001', '169.254.169.254:80', '[fd00:ec2::254]:80'] });
    const at = (t: string) => parseTarget(t);
    expect(checkResolvedAddress('127.0.0.1', at('postgres.internal:5432'), loop)).toMatchObject({ allow: true, block: 'loopback' });
    expect(checkResolvedAddress('127.0.0.1', at('postgres.internal:5433'), loop).allow).toBe(false);
    expect(checkResolvedAddress('127.0.0.2', at('postgres.internal:5432'), loop).allow).toBe(false);
    expect(checkResolvedAddress('127.9.9.9', at('localhost:6001'), loop).allow).toBe(true);
    expect(checkResolvedAddress('::1', at('localhost:5432'), loop).allow).toBe(true);
    expect(checkResolvedAddress('::ffff:127.0.0.1', at('localhost:5432'), loop).allow).toBe(true);
    expect(checkResolvedAddress('169.254.169.254', at('metadata:80'), loop).allow).toBe(true);
    expect(checkResolvedAddress('fd00:ec2::254', at('metadata:80'), loop).allow).toBe(true);
    // Broad or neighbouring entries do not: 0.0.0.0/0 and 169.254.0.0/16 are wider than the block.
    expect(checkResolvedAddress('127.0.0.1', at('postgres.internal:5432'), plain).allow).toBe(false);
    expect(checkResolvedAddress('169.254.169.254', at('postgres.internal:5432'), plain).allow).toBe(false);
    // A name in the allowlist never admits a forbidden address, whatever it resolves to.
    expect(checkResolvedAddress('127.0.0.1', at('x.db.internal:5432'), compileAllowlist({ targets: ['*.db.internal:*'] })).allow).toBe(false);
  });

  it('an IP target is dialed as its own literal only', () => {
    const list = compileAllowlist({ targets: ['10.0.0.0/8:5432', '127.0.0.1:5432'] });
    expect(checkResolvedAddress('10.0.0.1', parseTarget('10.1:5432'), list).allow).toBe(true);
    expect(checkResolvedAddress('10.0.0.2', parseTarget('10.0.0.1:5432'), list)).toMatchObject({ allow: false, reason: 'address 10.0.0.2 is not the target\'s own literal 10.0.0.1' });
    expect(checkResolvedAddress('::ffff:127.0.0.1', parseTarget('2130706433:5432'), list).allow).toBe(true);
  });

  it('agrees with a numeric oracle on random IPv4 addresses', () => {
    const forbidden = (n: number) => n >>> 24 === 0 || n >>> 24 === 127 || n >>> 16 === 0xa9fe || n >>> 28 === 0xe
      || n === 0xffffffff || n === 0x646464c8;
    const list = compileAllowlist({ targets: ['postgres.internal:5432'] });
    const interesting = fc.oneof(
      fc.nat({ max: 0xffffffff }),
      fc.constantFrom(0, 0x7f000001, 0xa9fea9fe, 0xe0000000, 0xefffffff, 0xf0000000, 0xffffffff, 0xfffffffe, 0x646464c8, 0x646464c9, 0x00ffffff, 0x01000000, 0x80000000, 0xa9fd0000, 0xa9ff0000),
    );
    fc.assert(fc.property(interesting, (n) => {
      const text = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
      expect(checkResolvedAddress(text, db, list).allow).toBe(!forbidden(n));
      expect(checkResolvedAddress(`::ffff:${text}`, db, list).allow).toBe(!forbidden(n));
      expect(checkResolvedAddress(`64:ff9b::${text}`, db, list).allow).toBe(!forbidden(n));
    }), { numRuns: 3000 });
  });

  it('forbiddenAddressError carries the block', () => {
    const check = checkResolvedAddress('127.0.0.1', db, plain);
    const err = forbiddenAddressError(check, db);
    expect(err.code).toBe('POSTERN_ERR_TARGET_FORBIDDEN_ADDRESS');
    expect(err.details).toMatchObject({ block: 'loopback', target: 'postgres.internal:5432' });
  });
});
