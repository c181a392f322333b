import { isPosternError, PolicyError } from '../errors.js';
import { segmentProblem, trustDomainProblem } from '../identity/index.js';
import type { CompiledConnector, CompiledOrg, CompiledPolicy, CompiledRule } from './model.js';
import type { PolicyDocument } from './schema.js';
import { compileTargetPattern, type TargetPattern } from './target-pattern.js';
import { quote } from './target.js';

export type PolicyPath = ReadonlyArray<string | number>;

/** Line and column (1-based) of a field in the source text; undefined when the source has no positions. */
export type Locate = (path: PolicyPath, atKey: boolean) => { line: number; col: number } | undefined;

export interface PolicyIssue {
  readonly path: PolicyPath;
  readonly message: string;
  /** The problem is the key itself (an org or team name), not its value. */
  readonly atKey: boolean;
}

/** Messages are capped so a file with thousands of broken lines still yields a readable error. */
export const MAX_REPORTED_ISSUES = 50;
export const MAX_RULE_ID_LENGTH = 128;

/** `rules[2].principals[0]`, as users read it in their YAML. */
export function formatPath(path: PolicyPath): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out || '(root)';
}

/**
 * One PolicyError POSTERN_ERR_POLICY_INVALID listing every issue as `source:line:col: path: message`,
 * in the order they appear in the source.
 */
export function policyInvalid(issues: readonly PolicyIssue[], sourceName: string, locate: Locate): PolicyError {
  const placed = issues.map((issue) => ({ issue, at: locate(issue.path, issue.atKey) }));
  placed.sort((a, b) => (a.at?.line ?? Infinity) - (b.at?.line ?? Infinity) || (a.at?.col ?? 0) - (b.at?.col ?? 0));
  const lines = placed.slice(0, MAX_REPORTED_ISSUES).map(({ issue, at }) => {
    const where = at ? `${sourceName}:${at.line}:${at.col}` : sourceName;
    return `${where}: ${formatPath(issue.path)}: ${issue.message}`;
  });
  if (issues.length > MAX_REPORTED_ISSUES) lines.push(`… and ${issues.length - MAX_REPORTED_ISSUES} more problems`);
  return new PolicyError('POSTERN_ERR_POLICY_INVALID', lines.join('\n'), {
    details: { source: sourceName, issues: lines },
  });
}

/**
 * Check every name and reference of a shape-valid document and compile it for authorize():
 * teams expanded into member sets, patterns compiled once, each connector given the ordered list
 * of the rules that can apply to it. Throws PolicyError POSTERN_ERR_POLICY_INVALID naming
 * every problem with its place in the source.
 */
export function compilePolicy(doc: PolicyDocument, sourceName: string, locate: Locate = () => undefined): CompiledPolicy {
  const issues: PolicyIssue[] = [];
  const report = (path: PolicyPath, message: string, atKey = false): void => {
    issues.push({ path, message, atKey });
  };

  const tdProblem = trustDomainProblem(doc.trustDomain);
  if (tdProblem) report(['trustDomain'], `trust domain ${quote(doc.trustDomain)} is invalid: ${tdProblem}`);

  const orgs = new Map<string, { teams: Map<string, string[]>; connectors: Map<string, TargetPattern[]> }>();

  for (const [orgName, org] of Object.entries(doc.orgs)) {
    const orgPath = ['orgs', orgName];
    const orgProblem = segmentProblem(orgName);
    if (orgProblem) report(orgPath, `org name ${quote(orgName)} is invalid: ${orgProblem}`, true);
    const teams = new Map<string, string[]>();
    for (const [teamName, members] of Object.entries(org.teams ?? {})) {
      const teamPath = [...orgPath, 'teams', teamName];
      const teamProblem = segmentProblem(teamName);
      if (teamProblem) report(teamPath, `team name ${quote(teamName)} is invalid: ${teamProblem}`, true);
      const seen = new Set<string>();
      members.forEach((member, i) => {
        const problem = memberProblem(member);
        if (problem) report([...teamPath, i], problem);
        else if (seen.has(member)) report([...teamPath, i], `${quote(member)} is listed twice`);
        seen.add(member);
      });
      teams.set(teamName, [...seen]);
    }
    const connectors = new Map<string, TargetPattern[]>();
    for (const [id, connector] of Object.entries(org.connectors ?? {})) {
      const path = [...orgPath, 'connectors', id];
      const idProblem = segmentProblem(id);
      if (idProblem) report(path, `connector id ${quote(id)} is invalid: ${idProblem}`, true);
      connectors.set(id, compilePatterns(connector.targets, [...path, 'targets'], report));
    }
    orgs.set(orgName, { teams, connectors });
  }

  const rules: CompiledRule[] = [];
  const ruleIds = new Map<string, number>();
  doc.rules.forEach((rule, index) => {
    const path = ['rules', index];
    const idProblem = ruleIdProblem(rule.id);
    if (idProblem) report([...path, 'id'], idProblem);
    const first = ruleIds.get(rule.id);
    if (first !== undefined) report([...path, 'id'], `duplicate rule id ${quote(rule.id)} (first used by rules[${first}])`);
    else ruleIds.set(rule.id, index);

    const org = orgs.get(rule.org);
    if (!org) {
      report([...path, 'org'], `unknown org ${quote(rule.org)}`);
      return;
    }
    if (rule.connector !== '*' && !org.connectors.has(rule.connector)) {
      const others = [...orgs].filter(([, o]) => o.connectors.has(rule.connector)).map(([name]) => name);
      report([...path, 'connector'], others.length > 0
        ? `connector ${quote(rule.connector)} is not in org ${quote(rule.org)} (only in ${others.map((o) => quote(o)).join(', ')}): a rule only governs its own org's connectors`
        : `unknown connector ${quote(rule.connector)} (org ${rule.org} declares ${listOrNone([...org.connectors.keys()])})`);
    }

    const members = new Map<string, string>();
    let anyPrincipal = false;
    const seen = new Set<string>();
    rule.principals.forEach((entry, i) => {
      const at = [...path, 'principals', i];
      if (seen.has(entry)) {
        report(at, `${quote(entry)} is listed twice`);
        return;
      }
      seen.add(entry);
      if (entry === '*') {
        if (rule.principals.length > 1) report(at, '"*" (any principal of the org) must be the only entry');
        anyPrincipal = true;
        return;
      }
      if (entry.startsWith('team/')) {
        const team = org.teams.get(entry.slice('team/'.length));
        if (!team) {
          report(at, `unknown team ${quote(entry.slice('team/'.length))} in org ${rule.org}`);
          return;
        }
        for (const member of team) if (!members.has(member)) members.set(member, entry);
        return;
      }
      const problem = memberProblem(entry, true);
      if (problem) report(at, problem);
      else if (!members.has(entry)) members.set(entry, entry);
    });

    const targets = compilePatterns(rule.targets, [...path, 'targets'], report);
    rules.push(Object.freeze({
      id: rule.id,
      index,
      org: rule.org,
      connector: rule.connector,
      action: rule.action,
      ...(rule.description === undefined ? {} : { description: rule.description }),
      anyPrincipal,
      members,
      principalEntries: Object.freeze([...rule.principals]),
      targets: Object.freeze(targets),
    }));
  });

  if (issues.length > 0) throw policyInvalid(issues, sourceName, locate);

  const compiledOrgs = new Map<string, CompiledOrg>();
  const connectorOrgs = new Map<string, string[]>();
  let connectorCount = 0;
  for (const [name, org] of orgs) {
    const compiled = new Map<string, CompiledConnector>();
    for (const [id, targets] of org.connectors) {
      const applicable = rules.filter((r) => r.org === name && (r.connector === '*' || r.connector === id));
      compiled.set(id, Object.freeze({ id, org: name, targets: Object.freeze(targets), rules: Object.freeze(applicable) }));
      connectorOrgs.set(id, [...(connectorOrgs.get(id) ?? []), name]);
      connectorCount++;
    }
    compiledOrgs.set(name, Object.freeze({ name, teams: org.teams, connectors: compiled }));
  }
  return Object.freeze({
    source: sourceName,
    trustDomain: doc.trustDomain,
    orgs: compiledOrgs,
    connectorOrgs,
    connectorCount,
    rules: Object.freeze(rules),
  });
}

function compilePatterns(texts: readonly string[], path: PolicyPath, report: (path: PolicyPath, message: string) => void): TargetPattern[] {
  const out: TargetPattern[] = [];
  texts.forEach((text, i) => {
    try {
      out.push(compileTargetPattern(text));
    } catch (err) {
      if (!isPosternError(err, 'POSTERN_ERR_TARGET_PATTERN_INVALID')) throw err;
      report([...path, i], err.message);
    }
  });
  return out;
}

/** Why a team member (or, with `inRule`, a rule principal entry) is malformed. */
function memberProblem(entry: string, inRule = false): string | undefined {
  const slash = entry.indexOf('/');
  const role = slash === -1 ? '' : entry.slice(0, slash);
  const allowed = inRule ? '"user/NAME", "service/NAME", "team/NAME" or "*"' : '"user/NAME" or "service/NAME"';
  if (role !== 'user' && role !== 'service') return `${quote(entry)} must be ${allowed}`;
  const name = entry.slice(slash + 1);
  const problem = segmentProblem(name);
  return problem ? `${role} name ${quote(name)} is invalid: ${problem}` : undefined;
}

function ruleIdProblem(id: string): string | undefined {
  if (id.length === 0) return 'the rule id is empty';
  if (id.length > MAX_RULE_ID_LENGTH) return `the rule id is longer than ${MAX_RULE_ID_LENGTH} characters`;
  for (const c of id) {
    const ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c === '-' || c === '_' || c === '.' || c === ':';
    if (!ok) return `rule id ${quote(id)} may only hold letters, digits, "-", "_", "." and ":" (it appears in logs and audit events)`;
  }
  return undefined;
}

function listOrNone(items: readonly string[]): string {
  return items.length === 0 ? 'no connectors' : items.map((i) => quote(i)).join(', ');
}
