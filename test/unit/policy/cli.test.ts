import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { registerPolicy } from '../../../cli/policy.js';
import { FORBIDDEN_BLOCKS, type DecisionReason } from '../../../src/policy/index.js';

const EXAMPLE = resolve(import.meta.dirname, '../../../deployments/examples/policy.yaml');
const ALICE = 'spiffe://hospital.example/org/st-mary/user/alice';

/** Runs `postern <args>` in process; returns what it printed and the exit code it set. */
async function run(...args: string[]): Promise<{ out: string; err: string; code: number }> {
  let out = '';
  let err = '';
  const stdout = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => { out += String(chunk); return true; });
  const stderr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => { err += String(chunk); return true; });
  try {
    const program = new Command('postern').exitOverride();
    registerPolicy(program);
    await program.parseAsync(args, { from: 'user' });
    return { out, err, code: Number(process.exitCode ?? 0) };
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
    process.exitCode = undefined;
  }
}

describe('postern policy check', () => {
  let dir: string;
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'postern-policy-cli-')); });
  afterAll(async () => { await rm(dir, { recursive: true, force: true }); });
  afterEach(() => { process.exitCode = undefined; });

  it('passes the example policy shipped in deployments/examples', async () => {
    expect(await run('policy', 'check', EXAMPLE)).toEqual({ out: 'ok: 2 orgs, 3 connectors, 4 rules\n', err: '', code: 0 });
  });

  it('prints every problem as file:line:col: field: why and exits 2', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'version: 1\ntrustDomain: td.example\norgs:\n  a:\n    teams: {dba: [user/x]}\nrules:\n  - id: r\n    org: a\n    principals: [team/dbas]\n    connector: hq\n    targets: ["x:1"]\n    action: allow\n');
    const { out, err, code } = await run('policy', 'check', file);
    expect(out).toBe('');
    expect(err).toBe(`error POSTERN_ERR_POLICY_INVALID: ${file}:9:18: rules[0].principals[0]: unknown team "dbas" in org a\n${file}:10:16: rules[0].connector: unknown connector "hq" (org a declares no connectors)\n`);
    expect(code).toBe(2);
  });

  it('an unreadable file is POSTERN_ERR_FILE_READ, exit 1', async () => {
    const { err, code } = await run('policy', 'check', join(dir, 'missing.yaml'));
    expect(err).toMatch(/^error POSTERN_ERR_FILE_READ: cannot read policy file /);
    expect(code).toBe(1);
  });
});

describe('postern policy explain', () => {
  afterEach(() => { process.exitCode = undefined; });
  const explain = (...extra: string[]) => run('policy', 'explain', '--policy', EXAMPLE, ...extra);

  it('prints ALLOW, the rule id, the canonical target and the steps; exit 0', async () => {
    const { out, code } = await explain('--principal', ALICE, '--connector', 'hq', '--target', 'POSTGRES.internal.:5432');
    expect(code).toBe(0);
    expect(out.split('\n').slice(0, 6)).toEqual([
      'decision:  ALLOW',
      'rule:      dba-everything-hq',
      'target:    postgres.internal:5432',
      `principal: ${ALICE}`,
      'connector: hq',
      'explanation:',
    ]);
    expect(out).toMatch(/^ {2}1\. principal user\/alice of org st-mary/m);
    expect(out).toMatch(/^ {2}6\. allow: rule dba-everything-hq \(rules\[1\]\) matches/m);
  });

  it('prints DENY and "default deny"; exit 1', async () => {
    const { out, code } = await explain('--principal', 'spiffe://hospital.example/org/st-mary/user/mallory', '--connector', 'hq', '--target', '10.20.0.1:5432');
    expect(code).toBe(1);
    expect(out).toMatch(/^decision: {2}DENY\nrule: {6}default deny\ntarget: {4}10\.20\.0\.1:5432\n/);
  });

  it('names the reason when no rule decided (org isolation, relay identity)', async () => {
    const iso = await explain('--principal', 'spiffe://hospital.example/org/st-jude/user/erin', '--connector', 'hq', '--target', 'postgres.internal:5432');
    expect(iso.out).toMatch(/^rule: {6}none \(org-isolation\)$/m);
    const relay = await explain('--principal', 'spiffe://hospital.example/relay/r1', '--connector', 'hq', '--target', 'postgres.internal:5432');
    expect(relay.out).toMatch(/^rule: {6}none \(not-a-principal\)$/m);
    expect(relay.code).toBe(1);
  });

  it('--json prints the decision as JSON', async () => {
    const { out, code } = await explain('--principal', 'spiffe://hospital.example/org/st-mary/user/carol', '--connector', 'hq', '--target', 'postgres.internal:5432', '--json');
    expect(code).toBe(1);
    const report = JSON.parse(out) as Record<string, unknown>;
    expect(report).toMatchObject({
      decision: 'DENY', allow: false, reason: 'rule', ruleId: 'no-analysts-on-prod',
      principal: 'spiffe://hospital.example/org/st-mary/user/carol', connector: 'hq', target: 'postgres.internal:5432',
    });
    expect((report.explanation as string[]).at(-1)).toMatch(/^deny: rule no-analysts-on-prod/);
  });

  it('a malformed target or principal is an input error, exit 2', async () => {
    const badTarget = await explain('--principal', ALICE, '--connector', 'hq', '--target', 'foo.123:5432');
    expect([badTarget.err, badTarget.code]).toEqual(['error POSTERN_ERR_TARGET_INVALID: target "foo.123:5432" is invalid: "foo.123" ends in a numeric label but is not a valid IPv4 address\n', 2]);
    const badPrincipal = await explain('--principal', 'spiffe://hospital.example/org/st-mary/user/', '--connector', 'hq', '--target', 'db:1');
    expect(badPrincipal.err).toMatch(/^error POSTERN_ERR_ID_MALFORMED: /);
    expect(badPrincipal.code).toBe(2);
  });
});

describe('docs/policy.md', () => {
  const doc = readFileSync(resolve(import.meta.dirname, '../../../docs/policy.md'), 'utf8');

  /** The lines after a `$ postern …` command line in a fenced block, up to the fence. */
  function documentedOutput(command: string): string {
    const start = doc.indexOf(command);
    expect(start, command).toBeGreaterThan(-1);
    const afterCommand = doc.indexOf('\n', doc.indexOf(command.split('\n').at(-1)!, start)) + 1;
    return doc.slice(afterCommand, doc.indexOf('```', afterCommand));
  }

  it('shows the real output of check and explain on the example policy', async () => {
    expect(documentedOutput('$ postern policy check deployments/examples/policy.yaml')).toBe((await run('policy', 'check', EXAMPLE)).out);
    const explained = await run('policy', 'explain', '--policy', EXAMPLE, '--principal', ALICE, '--connector', 'hq', '--target', 'POSTGRES.internal.:5432');
    expect(documentedOutput('--principal spiffe://hospital.example/org/st-mary/user/alice --connector hq --target POSTGRES.internal.:5432')).toBe(explained.out);
  });

  it('documents every decision reason and every forbidden address class', () => {
    const reasons: DecisionReason[] = ['rule', 'default-deny', 'org-isolation', 'unknown-connector', 'connector-does-not-declare-target', 'wrong-trust-domain', 'not-a-principal'];
    for (const reason of reasons) expect(doc).toContain(`\`${reason}\``);
    for (const name of new Set(FORBIDDEN_BLOCKS.map((b) => b.name))) expect(doc).toContain(`| \`${name}\` |`);
  });
});
