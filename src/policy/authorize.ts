import { PolicyError } from '../errors.js';
import type { AuthorizeRequest, CompiledConnector, CompiledPolicy, CompiledRule, Decision, DecisionReason } from './model.js';
import { firstMatch } from './target-pattern.js';
import { printable, quote } from './target.js';

export interface AuthorizeOptions {
  /**
   * Build the step-by-step explanation (default true). The relay's hot path may pass false:
   * the explanation then holds only the final step, and the decision itself is the same.
   */
  explain?: boolean;
}

/** Longest list of patterns or principals spelled out in one explanation step. */
const LIST_LIMIT = 10;

/**
 * Decide whether a principal may open a stream to `target` through `connector`. Pure and
 * synchronous. Order: trust domain, principal role, connector known, org isolation (a principal
 * never reaches another org's connector, whatever the rules say), target declared by the
 * connector, then the rules that apply to that connector in file order (first match wins),
 * and default deny.
 */
export function authorize(policy: CompiledPolicy, request: AuthorizeRequest, options: AuthorizeOptions = {}): Decision {
  const explain = options.explain !== false;
  const steps: string[] = [];
  const { principal, target } = request;
  const done = (allow: boolean, reason: DecisionReason, final: string, ruleId?: string): Decision => {
    steps.push(final);
    return ruleId === undefined ? { allow, reason, explanation: steps } : { allow, reason, ruleId, explanation: steps };
  };

  if (principal.trustDomain !== policy.trustDomain) {
    return done(false, 'wrong-trust-domain', `deny: the principal's trust domain ${quote(principal.trustDomain)} is not the policy's ${quote(policy.trustDomain)}`);
  }
  if ((principal.role !== 'user' && principal.role !== 'service') || principal.org === undefined) {
    return done(false, 'not-a-principal', `deny: a ${principal.role} identity is not a principal; only users and services of an org open streams`);
  }
  const who = `${principal.role}/${principal.name}`;
  if (explain) steps.push(`principal ${who} of org ${principal.org} (trust domain ${principal.trustDomain})`);

  const connector = findConnector(policy, principal.org, request.connector);
  if (!connector) {
    const owners = policy.connectorOrgs.get(request.connector);
    if (owners) {
      return done(false, 'org-isolation', `deny: connector ${quote(request.connector)} belongs to org ${owners.join(', ')}, not to the principal's org ${principal.org}; orgs are isolated whatever the rules say`);
    }
    return done(false, 'unknown-connector', `deny: connector ${quote(request.connector)} is not declared in the policy`);
  }
  if (explain) steps.push(`connector ${connector.id} is declared by the principal's org ${connector.org}`);

  const declared = firstMatch(connector.targets, target);
  if (!declared) {
    return done(false, 'connector-does-not-declare-target', `deny: connector ${connector.id} does not declare target ${target.canonical} (it declares ${list(connector.targets.map((p) => p.canonical))})`);
  }
  if (explain) {
    steps.push(`target ${target.canonical} is declared by connector ${connector.id} (pattern ${declared.canonical})`);
    steps.push(`${connector.rules.length} rule(s) of org ${connector.org} name connector ${connector.id} or "*"; the first that matches decides`);
  }

  for (const rule of connector.rules) {
    const via = rule.anyPrincipal ? '*' : rule.members.get(who);
    if (via === undefined) {
      if (explain) steps.push(`${label(rule)} skipped: principal ${who} is not among ${list(rule.principalEntries)}`);
      continue;
    }
    const pattern = firstMatch(rule.targets, target);
    if (!pattern) {
      if (explain) steps.push(`${label(rule)} skipped: target ${target.canonical} matches none of ${list(rule.targets.map((p) => p.canonical))}`);
      continue;
    }
    return done(rule.action === 'allow', 'rule', `${rule.action}: ${label(rule)} matches (principal via ${via}, target via ${pattern.canonical})`, rule.id);
  }
  return done(false, 'default-deny', `deny: no rule matched principal ${who} and target ${target.canonical} on connector ${connector.id} (default deny)`);
}

/**
 * The connector `id` of `org`, if the policy declares it. The relay can use it to check that a
 * connector presenting `spiffe://TD/org/ORG/connector/ID` is one the policy knows.
 */
export function findConnector(policy: CompiledPolicy, org: string, id: string): CompiledConnector | undefined {
  return policy.orgs.get(org)?.connectors.get(id);
}

/**
 * The PolicyError POSTERN_ERR_POLICY_DENIED that stands for a deny decision, for callers that
 * surface a denial as an error (its details carry the reason and rule id for the audit log).
 */
export function policyDeniedError(decision: Decision, request: AuthorizeRequest): PolicyError {
  const rule = decision.ruleId === undefined ? decision.reason : `${decision.reason} ${decision.ruleId}`;
  return new PolicyError('POSTERN_ERR_POLICY_DENIED', `policy denied ${request.target.canonical} via connector ${quote(request.connector)} (${rule})`, {
    details: { reason: decision.reason, ruleId: decision.ruleId, connector: request.connector, target: request.target.canonical },
  });
}

function label(rule: CompiledRule): string {
  return `rule ${rule.id} (rules[${rule.index}]${rule.description === undefined ? '' : `: ${printable(rule.description)}`})`;
}

function list(items: readonly string[]): string {
  if (items.length === 0) return '[]';
  const shown = items.slice(0, LIST_LIMIT).join(', ');
  return items.length > LIST_LIMIT ? `[${shown}, … ${items.length - LIST_LIMIT} more]` : `[${shown}]`;
}
