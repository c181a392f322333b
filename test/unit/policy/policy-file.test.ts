import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { isPosternError, PolicyError } from '../../../src/errors.js';
import { filePolicySource, findConnector, loadPolicyFile, parsePolicy } from '../../../src/policy/index.js';

const EXAMPLE = resolve(import.meta.dirname, '../../../deployments/examples/policy.yaml');

const BASE = `version: 1
trustDomain: hospital.example
orgs:
  st-mary:
    teams:
      dba: [user/alice, service/reports]
    connectors:
      hq:
        targets: ["postgres.internal:5432"]
  st-jude:
    connectors:
      jude:
        targets: ["db.jude:5432"]
rules:
  - id: r1
    org: st-mary
    principals: [team/dba]
    connector: hq
    targets: ["postgres.internal:5432"]
    action: allow
`;

function problem(text: string): string {
  try {
    parsePolicy(text, 'policy.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    expect((err as PolicyError).code).toBe('POSTERN_ERR_POLICY_INVALID');
    return (err as Error).message;
  }
  throw new Error('the policy was accepted');
}

describe('parsePolicy', () => {
  it('compiles a valid policy: counts, connectors with their org, per-connector rule lists', () => {
    const p = parsePolicy(BASE, 'policy.yaml');
    expect([p.orgs.size, p.connectorCount, p.rules.length, p.trustDomain, p.source]).toEqual([2, 2, 1, 'hospital.example', 'policy.yaml']);
    expect(findConnector(p, 'st-mary', 'hq')).toMatchObject({ org: 'st-mary', rules: [{ id: 'r1' }] });
    expect(findConnector(p, 'st-jude', 'jude')!.rules).toEqual([]);
    expect(findConnector(p, 'st-jude', 'hq')).toBeUndefined();
    expect([...p.rules[0]!.members]).toEqual([['user/alice', 'team/dba'], ['service/reports', 'team/dba']]);
    expect(Object.isFrozen(p)).toBe(true);
  });

  it('connector ids are per org: two orgs may both have an "hq"', () => {
    const p = parsePolicy(BASE.replace('      jude:', '      hq:'), 'policy.yaml');
    expect(p.connectorCount).toBe(2);
    expect(p.connectorOrgs.get('hq')).toEqual(['st-mary', 'st-jude']);
    expect(findConnector(p, 'st-jude', 'hq')!.rules).toEqual([]);
    expect(findConnector(p, 'st-mary', 'hq')!.rules.map((r) => r.id)).toEqual(['r1']);
  });

  it('accepts an empty rule list (everything is then denied)', () => {
    expect(parsePolicy('version: 1\ntrustDomain: td.example\norgs: {}\nrules: []\n', 'p').rules).toEqual([]);
  });

  it.each([
    ['YAML syntax', 'version: 1\norgs: [\n', /^policy\.yaml:3:1: invalid YAML: /],
    ['duplicate YAML key', BASE.replace('version: 1\n', 'version: 1\nversion: 1\n'), /^policy\.yaml:2:1: invalid YAML: Map keys must be unique/],
    ['unknown root key', `${BASE}extra: 1\n`, /^policy\.yaml:21:1: extra: unknown key "extra"$/],
    ['unknown org key', BASE.replace('    teams:', '    teamz:'), /^policy\.yaml:5:5: orgs\.st-mary\.teamz: unknown key "teamz"$/m],
    ['unknown rule key', BASE.replace('    action: allow', '    action: allow\n    prio: 1'), /^policy\.yaml:21:5: rules\[0\]\.prio: unknown key "prio"$/],
    ['unknown connector key', BASE.replace('        targets: ["postgres', '        port: 1\n        targets: ["postgres'), /^policy\.yaml:9:9: orgs\.st-mary\.connectors\.hq\.port: unknown key "port"$/],
    ['wrong version', BASE.replace('version: 1', 'version: 2'), /^policy\.yaml:1:10: version: must be 1/],
    ['missing rules', BASE.slice(0, BASE.indexOf('rules:')), /^policy\.yaml:1:1: rules: /],
    ['wrong type', BASE.replace('connector: hq', 'connector: [hq]'), /^policy\.yaml:18:16: rules\[0\]\.connector: .*expected string/],
    ['bad action', BASE.replace('action: allow', 'action: permit'), /^policy\.yaml:20:13: rules\[0\]\.action: must be "allow" or "deny"$/],
    ['empty principals', BASE.replace('principals: [team/dba]', 'principals: []'), /^policy\.yaml:17:17: rules\[0\]\.principals: must list at least one entry/],
    ['empty rule targets', BASE.replace('    targets: ["postgres.internal:5432"]\n    action', '    targets: []\n    action'), /^policy\.yaml:19:14: rules\[0\]\.targets: must list at least one entry/],
    ['empty connector targets', BASE.replace('targets: ["db.jude:5432"]', 'targets: []'), /^policy\.yaml:13:18: orgs\.st-jude\.connectors\.jude\.targets: must list at least one entry/],
    ['unknown team', BASE.replace('principals: [team/dba]', 'principals: [user/bob, team/dbas]'), /^policy\.yaml:17:28: rules\[0\]\.principals\[1\]: unknown team "dbas" in org st-mary$/],
    ['unknown org', BASE.replace('    org: st-mary', '    org: st-marx'), /^policy\.yaml:16:10: rules\[0\]\.org: unknown org "st-marx"$/],
    ['unknown connector', BASE.replace('connector: hq', 'connector: hx'), /^policy\.yaml:18:16: rules\[0\]\.connector: unknown connector "hx" \(org st-mary declares "hq"\)$/],
    ['connector of another org', BASE.replace('connector: hq', 'connector: jude'), /^policy\.yaml:18:16: rules\[0\]\.connector: connector "jude" is not in org "st-mary" \(only in "st-jude"\): a rule only governs its own org's connectors$/],
    ['duplicate rule id', `${BASE}  - id: r1\n    org: st-mary\n    principals: ["*"]\n    connector: "*"\n    targets: ["x:1"]\n    action: deny\n`, /^policy\.yaml:21:9: rules\[1\]\.id: duplicate rule id "r1" \(first used by rules\[0\]\)$/],
    ['bad rule id', BASE.replace('id: r1', 'id: "r 1"'), /rules\[0\]\.id: rule id "r 1" may only hold/],
    ['star with others', BASE.replace('principals: [team/dba]', 'principals: ["*", user/bob]'), /rules\[0\]\.principals\[0\]: "\*" \(any principal of the org\) must be the only entry/],
    ['duplicate principal', BASE.replace('principals: [team/dba]', 'principals: [user/bob, user/bob]'), /rules\[0\]\.principals\[1\]: "user\/bob" is listed twice/],
    ['bad principal form', BASE.replace('principals: [team/dba]', 'principals: [group/dba]'), /rules\[0\]\.principals\[0\]: "group\/dba" must be "user\/NAME", "service\/NAME", "team\/NAME" or "\*"/],
    ['SPIFFE ID as principal', BASE.replace('principals: [team/dba]', 'principals: ["spiffe://hospital.example/org/st-mary/user/bob"]'), /must be "user\/NAME"/],
    ['bad principal name', BASE.replace('principals: [team/dba]', 'principals: [user/Bob]'), /rules\[0\]\.principals\[0\]: user name "Bob" is invalid/],
    ['team of teams', BASE.replace('dba: [user/alice, service/reports]', 'dba: [team/x]'), /^policy\.yaml:6:13: orgs\.st-mary\.teams\.dba\[0\]: "team\/x" must be "user\/NAME" or "service\/NAME"$/],
    ['bad rule pattern', BASE.replace('targets: ["postgres.internal:5432"]\n    action', 'targets: ["postgres.internal:5432", "*:5432"]\n    action'), /^policy\.yaml:19:41: rules\[0\]\.targets\[1\]: target pattern "\*:5432" is invalid: "\*" as the host would match every host/],
    ['bad connector pattern', BASE.replace('["db.jude:5432"]', '["db.jude"]'), /^policy\.yaml:13:19: orgs\.st-jude\.connectors\.jude\.targets\[0\]: target pattern "db\.jude" is invalid: no port/],
    ['bad org name', BASE.replace('  st-jude:', '  St Jude:'), /^policy\.yaml:10:3: orgs\.St Jude: org name "St Jude" is invalid/],
    ['bad team name', BASE.replace('      dba:', '      DBA:'), /^policy\.yaml:6:7: orgs\.st-mary\.teams\.DBA: team name "DBA" is invalid/],
    ['bad connector id', BASE.replace('      jude:', '      ju/de:'), /orgs\.st-jude\.connectors\.ju\/de: connector id "ju\/de" is invalid/],
    ['bad trust domain', BASE.replace('trustDomain: hospital.example', 'trustDomain: Hospital.Example'), /^policy\.yaml:2:14: trustDomain: trust domain "Hospital\.Example" is invalid/],
  ])('%s is refused with file:line:col and the field', (_name, text, expected) => {
    expect(problem(text)).toMatch(expected);
  });

  it('reports every problem at once, capped', () => {
    const rules = Array.from({ length: 80 }, (_, i) => `  - {id: r${i}, org: nowhere, principals: ["*"], connector: "*", targets: ["x:1"], action: allow}`).join('\n');
    const message = problem(`version: 1\ntrustDomain: td.example\norgs: {}\nrules:\n${rules}\n`);
    expect(message.split('\n')).toHaveLength(51);
    expect(message).toMatch(/… and 30 more problems$/);
    expect(message.split('\n')[1]).toMatch(/^policy\.yaml:6:\d+: rules\[1\]\.org: unknown org "nowhere"$/);
  });

  it('refuses a YAML alias bomb', () => {
    const bomb = ['version: 1', 'trustDomain: td.example', 'a: &a ["x:1","x:1","x:1","x:1","x:1","x:1","x:1","x:1","x:1","x:1"]'];
    for (let i = 0; i < 6; i++) bomb.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(',')}]`);
    expect(problem(`${bomb.join('\n')}\norgs: {}\nrules: []\n`)).toMatch(/invalid YAML|alias/i);
  });
});

describe('loadPolicyFile and filePolicySource', () => {
  let dir: string;
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'postern-policy-')); });
  afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

  it('loads the example policy shipped in deployments/examples', async () => {
    const p = await loadPolicyFile(EXAMPLE);
    expect([p.orgs.size, p.connectorCount, p.rules.length]).toEqual([2, 3, 4]);
  });

  it('names the file in errors and refuses files over maxBytes', async () => {
    const file = join(dir, 'big.yaml');
    await writeFile(file, BASE);
    await expect(loadPolicyFile(file, { maxBytes: 100 })).rejects.toThrow(/is \d+ bytes, over the limit of 100 \(option maxBytes\)/);
    await writeFile(file, BASE.replace('connector: hq', 'connector: hx'));
    await expect(loadPolicyFile(file)).rejects.toThrow(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:18:16: `));
  });

  it('a missing file is POSTERN_ERR_FILE_READ', async () => {
    const err = await loadPolicyFile(join(dir, 'missing.yaml')).catch((e: unknown) => e);
    expect(isPosternError(err, 'POSTERN_ERR_FILE_READ')).toBe(true);
  });

  it('a file source reads the file anew at each load', async () => {
    const file = join(dir, 'source.yaml');
    await writeFile(file, BASE);
    const source = filePolicySource(file);
    expect((await source.load()).rules).toHaveLength(1);
    await writeFile(file, BASE.replace(/rules:[\s\S]*$/, 'rules: []\n'));
    expect((await source.load()).rules).toHaveLength(0);
  });
});
