import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  authorize, compilePolicy, compileTargetPattern, findConnector, matches, parsePolicy, parseTarget, policyDeniedError,
  type AuthorizeRequest, type DecisionReason, type PolicyDocument, type PrincipalInput,
} from '../../../src/policy/index.js';

const example = parsePolicy(readFileSync(resolve(import.meta.dirname, '../../../deployments/examples/policy.yaml'), 'utf8'), 'policy.yaml');

function who(name: string, org = 'st-mary', role = 'user', trustDomain = 'hospital.example'): PrincipalInput {
  return { trustDomain, org, role, name };
}

describe('authorize on the example policy', () => {
  it.each<[string, PrincipalInput, string, string, boolean, DecisionReason, string | undefined]>([
    ['team member, declared target', who('alice'), 'hq', 'POSTGRES.internal.:5432', true, 'rule', 'dba-everything-hq'],
    ['service in the team', who('reports', 'st-mary', 'service'), 'hq', '10.20.3.4:5440', true, 'rule', 'dba-everything-hq'],
    ['user named directly', who('bob'), 'hq', 'a.db.st-mary.internal:5432', true, 'rule', 'dba-everything-hq'],
    ['first match wins: deny before a later allow', who('carol'), 'hq', 'postgres.internal:5432', false, 'rule', 'no-analysts-on-prod'],
    ['connector "*" rule', who('carol'), 'lab', '[fd00:20::5]:5432', true, 'rule', 'analysts-replicas'],
    ['principal named by no rule', who('mallory'), 'hq', 'postgres.internal:5432', false, 'default-deny', undefined],
    ['rule target the request misses', who('carol'), 'hq', '10.20.0.1:5432', false, 'default-deny', undefined],
    ['"*" principals of the org', who('anyone', 'st-jude'), 'jude-dc', 'postgres.st-jude.internal:5432', true, 'rule', 'jude-ops'],
    ['org isolation beats a "*" rule', who('alice'), 'jude-dc', 'postgres.st-jude.internal:5432', false, 'org-isolation', undefined],
    ['org isolation, other direction', who('erin', 'st-jude'), 'hq', 'postgres.internal:5432', false, 'org-isolation', undefined],
    ['unknown connector', who('alice'), 'nowhere', 'postgres.internal:5432', false, 'unknown-connector', undefined],
    ['target the connector does not declare', who('alice'), 'hq', 'postgres.internal:5433', false, 'connector-does-not-declare-target', undefined],
    ['suffix itself is not under *.suffix', who('alice'), 'hq', 'db.st-mary.internal:5432', false, 'connector-does-not-declare-target', undefined],
    ['a name is not its address', who('alice'), 'hq', '127.0.0.1:5432', false, 'connector-does-not-declare-target', undefined],
    ['another trust domain', who('alice', 'st-mary', 'user', 'evil.example'), 'hq', 'postgres.internal:5432', false, 'wrong-trust-domain', undefined],
    ['a connector is not a principal', who('hq', 'st-mary', 'connector'), 'hq', 'postgres.internal:5432', false, 'not-a-principal', undefined],
    ['a relay is not a principal', { trustDomain: 'hospital.example', role: 'relay', name: 'r1' }, 'hq', 'postgres.internal:5432', false, 'not-a-principal', undefined],
  ])('%s', (_name, principal, connector, target, allow, reason, ruleId) => {
    const d = authorize(example, { principal, connector, target: parseTarget(target) });
    expect({ allow: d.allow, reason: d.reason, ruleId: d.ruleId }).toEqual({ allow, reason, ruleId });
    expect(d.explanation.at(-1)).toMatch(allow ? /^allow: / : /^deny: /);
  });

  it('explains every step: who, connector, declared target, skipped rules and why, the match', () => {
    const d = authorize(example, { principal: who('alice'), connector: 'hq', target: parseTarget('postgres.internal:5432') });
    expect(d.explanation).toEqual([
      'principal user/alice of org st-mary (trust domain hospital.example)',
      'connector hq is declared by the principal\'s org st-mary',
      'target postgres.internal:5432 is declared by connector hq (pattern postgres.internal:5432)',
      '3 rule(s) of org st-mary name connector hq or "*"; the first that matches decides',
      'rule no-analysts-on-prod (rules[0]: analysts never reach the production database, even via another rule) skipped: principal user/alice is not among [team/analysts]',
      'allow: rule dba-everything-hq (rules[1]) matches (principal via team/dba, target via postgres.internal:5432)',
    ]);
    const miss = authorize(example, { principal: who('carol'), connector: 'hq', target: parseTarget('10.20.0.1:5432') });
    expect(miss.explanation).toContain('rule analysts-replicas (rules[2]) skipped: target 10.20.0.1:5432 matches none of [*.db.st-mary.internal:5432, [fd00:20::/64]:5432]');
    expect(miss.explanation.at(-1)).toBe('deny: no rule matched principal user/carol and target 10.20.0.1:5432 on connector hq (default deny)');
  });

  it('with explain: false gives the same decision and only the final step', () => {
    const request = { principal: who('carol'), connector: 'hq', target: parseTarget('x.db.st-mary.internal:5432') };
    const full = authorize(example, request);
    const lean = authorize(example, request, { explain: false });
    expect({ ...lean, explanation: undefined }).toEqual({ ...full, explanation: undefined });
    expect(lean.explanation).toEqual([full.explanation.at(-1)]);
  });

  it('a connector id means the principal\'s own org\'s connector when two orgs use it', () => {
    const twoHq = parsePolicy(`version: 1
trustDomain: hospital.example
orgs:
  st-mary: {connectors: {hq: {targets: ["db.mary:5432"]}}}
  st-jude: {connectors: {hq: {targets: ["db.jude:5432"]}}}
rules:
  - {id: mary, org: st-mary, principals: ["*"], connector: hq, targets: ["db.mary:5432"], action: allow}
  - {id: jude, org: st-jude, principals: ["*"], connector: hq, targets: ["db.jude:5432", "db.mary:5432"], action: allow}
`, 'two-hq.yaml');
    const ask = (org: string, target: string) => authorize(twoHq, { principal: who('x', org), connector: 'hq', target: parseTarget(target) });
    expect(ask('st-mary', 'db.mary:5432')).toMatchObject({ allow: true, ruleId: 'mary' });
    expect(ask('st-jude', 'db.jude:5432')).toMatchObject({ allow: true, ruleId: 'jude' });
    // st-jude's rule names db.mary, but st-jude's hq does not declare it: no way into st-mary.
    expect(ask('st-jude', 'db.mary:5432')).toMatchObject({ allow: false, reason: 'connector-does-not-declare-target' });
    expect(ask('st-luke', 'db.mary:5432')).toMatchObject({ allow: false, reason: 'org-isolation' });
  });

  it('policyDeniedError carries the reason and rule id', () => {
    const request = { principal: who('carol'), connector: 'hq', target: parseTarget('postgres.internal:5432') };
    const err = policyDeniedError(authorize(example, request), request);
    expect(err.code).toBe('POSTERN_ERR_POLICY_DENIED');
    expect(err.message).toBe('policy denied postgres.internal:5432 via connector "hq" (rule no-analysts-on-prod)');
    expect(err.details).toMatchObject({ reason: 'rule', ruleId: 'no-analysts-on-prod', connector: 'hq' });
  });
});

// --- random policies against a naive reference evaluator --------------------------------

const TD = 'td.example';
const PATTERNS = ['db.internal:5432', '*.db.internal:5432', '10.0.0.0/8:5432-5440', '10.1.2.3:*', '[fd00::/8]:5432', 'db.internal:*', '0.0.0.0/0:5432'];
const TARGETS = ['db.internal:5432', 'DB.internal.:5433', 'x.db.internal:5432', 'db.internal.x:5432', '10.1.2.3:5432', '10.9.9.9:5441', '[fd00::1]:5432', '[::ffff:10.0.0.1]:5435', 'other:5432', '0x7f.1:5432'];
const MEMBERS = ['user/u1', 'user/u2', 'service/s1'];

const subset = <T>(items: readonly T[], min = 1) => fc.subarray([...items], { minLength: min });

const IDS = ['c0', 'c1', 'c2'];

/** Two orgs, each with two teams and a subset of the connector ids (the same id may be in both). */
const policyDoc: fc.Arbitrary<PolicyDocument> = fc.record({
  connectors: fc.record({ a: subset(IDS, 0), b: subset(IDS, 0) }),
  targets: fc.array(subset(PATTERNS), { minLength: 6, maxLength: 6 }),
  teams: fc.record({ a: fc.array(subset(MEMBERS, 0), { minLength: 2, maxLength: 2 }), b: fc.array(subset(MEMBERS, 0), { minLength: 2, maxLength: 2 }) }),
  rules: fc.array(fc.record({
    org: fc.constantFrom('a', 'b'),
    connectorPick: fc.nat({ max: 3 }),
    star: fc.boolean(),
    principals: subset([...MEMBERS, 'team/t0', 'team/t1']),
    targets: subset(PATTERNS),
    action: fc.constantFrom('allow', 'deny') as fc.Arbitrary<'allow' | 'deny'>,
  }), { maxLength: 8 }),
}).map(({ connectors, targets, teams, rules }) => {
  const orgs: PolicyDocument['orgs'] = {};
  (['a', 'b'] as const).forEach((org, o) => {
    orgs[org] = {
      teams: { t0: teams[org][0]!, t1: teams[org][1]! },
      connectors: Object.fromEntries(connectors[org].map((id) => [id, { targets: targets[o * 3 + IDS.indexOf(id)]! }])),
    };
  });
  return {
    version: 1 as const,
    trustDomain: TD,
    orgs,
    rules: rules.map((r, i) => {
      const own = connectors[r.org as 'a' | 'b'];
      const connector = r.connectorPick < own.length ? own[r.connectorPick]! : '*';
      return { id: `r${i}`, org: r.org, principals: r.star ? ['*'] : r.principals, connector, targets: r.targets, action: r.action };
    }),
  };
});

/** Mostly `usual`, sometimes one of `rare`: most requests get as far as the rules. */
const mostly = <T>(usual: fc.Arbitrary<T>, ...rare: T[]) => fc.oneof({ arbitrary: usual, weight: 12 }, { arbitrary: fc.constantFrom(...rare), weight: 1 });

const request: fc.Arbitrary<AuthorizeRequest> = fc.record({
  trustDomain: mostly(fc.constant(TD), 'other.example'),
  role: mostly(fc.constantFrom('user', 'service'), 'connector', 'relay'),
  org: mostly(fc.constantFrom('a', 'b'), undefined),
  name: fc.constantFrom('u1', 'u2', 's1', 'u3'),
  connector: mostly(fc.constantFrom('c0', 'c1', 'c2'), 'zz'),
  target: fc.constantFrom(...TARGETS),
}).map(({ trustDomain, role, org, name, connector, target }) => ({
  principal: org === undefined ? { trustDomain, role, name } : { trustDomain, role, org, name },
  connector,
  target: parseTarget(target),
}));

/** Straight from the document, no compilation, no indexes: the slow oracle. */
function reference(doc: PolicyDocument, req: AuthorizeRequest): { allow: boolean; reason: DecisionReason; ruleId?: string } {
  const p = req.principal;
  if (p.trustDomain !== doc.trustDomain) return { allow: false, reason: 'wrong-trust-domain' };
  if ((p.role !== 'user' && p.role !== 'service') || p.org === undefined) return { allow: false, reason: 'not-a-principal' };
  const org = doc.orgs[p.org];
  if (!org || !Object.keys(org.connectors ?? {}).includes(req.connector)) {
    const elsewhere = Object.values(doc.orgs).some((o) => Object.keys(o.connectors ?? {}).includes(req.connector));
    return { allow: false, reason: elsewhere ? 'org-isolation' : 'unknown-connector' };
  }
  const anyMatch = (patterns: readonly string[]) => patterns.some((text) => matches(compileTargetPattern(text), req.target));
  if (!anyMatch(org.connectors![req.connector]!.targets)) return { allow: false, reason: 'connector-does-not-declare-target' };
  const key = `${p.role}/${p.name}`;
  for (const rule of doc.rules) {
    if (rule.org !== p.org || (rule.connector !== '*' && rule.connector !== req.connector)) continue;
    const principalOk = rule.principals.some((entry) => entry === '*' || entry === key
      || (entry.startsWith('team/') && (org.teams?.[entry.slice(5)] ?? []).includes(key)));
    if (principalOk && anyMatch(rule.targets)) return { allow: rule.action === 'allow', reason: 'rule', ruleId: rule.id };
  }
  return { allow: false, reason: 'default-deny' };
}

describe('authorize: properties', () => {
  it('agrees with a naive evaluator of the document on random policies and requests', () => {
    fc.assert(fc.property(policyDoc, fc.array(request, { minLength: 1, maxLength: 20 }), (doc, requests) => {
      const policy = compilePolicy(doc, 'random');
      for (const req of requests) {
        const d = authorize(policy, req);
        const lean = authorize(policy, req, { explain: false });
        const expected = reference(doc, req);
        expect({ allow: d.allow, reason: d.reason, ruleId: d.ruleId }).toEqual({ ruleId: undefined, ...expected });
        expect({ allow: lean.allow, reason: lean.reason, ruleId: lean.ruleId }).toEqual({ allow: d.allow, reason: d.reason, ruleId: d.ruleId });
      }
    }), { numRuns: 500 });
  });

  it('without allow rules nothing is ever allowed (default deny)', () => {
    fc.assert(fc.property(policyDoc, fc.array(request, { minLength: 1, maxLength: 20 }), (doc, requests) => {
      const denyOnly = compilePolicy({ ...doc, rules: doc.rules.map((r) => ({ ...r, action: 'deny' as const })) }, 'deny-only');
      for (const req of requests) expect(authorize(denyOnly, req).allow).toBe(false);
    }), { numRuns: 200 });
  });

  it('a principal never reaches a connector of another org, whatever the rules say', () => {
    fc.assert(fc.property(policyDoc, request, (doc, req) => {
      const allowAll = compilePolicy({
        ...doc,
        rules: ['a', 'b'].map((org) => ({ id: `all-${org}`, org, principals: ['*'], connector: '*', targets: PATTERNS, action: 'allow' as const })),
      }, 'allow-all');
      const d = authorize(allowAll, req);
      const own = req.principal.org === undefined ? undefined : findConnector(allowAll, req.principal.org, req.connector);
      if (d.allow) expect(own?.org).toBe(req.principal.org);
      const elsewhere = allowAll.connectorOrgs.has(req.connector);
      if (!own && elsewhere && req.principal.org !== undefined && req.principal.trustDomain === TD && (req.principal.role === 'user' || req.principal.role === 'service')) {
        expect(d.reason).toBe('org-isolation');
      }
    }), { numRuns: 500 });
  });
});
