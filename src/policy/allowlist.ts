import { ConfigError, isPosternError, PolicyError } from '../errors.js';
import { parseSpiffeId, segmentProblem } from '../identity/index.js';
import type { PrincipalInput } from './model.js';
import { compileTargetPattern, firstMatch, type TargetPattern } from './target-pattern.js';
import { quote, type Target } from './target.js';

/** The connector-local allowlist as written in the connector's config. */
export interface AllowlistSpec {
  /** Targets this connector will ever dial; required and non-empty. */
  readonly targets: readonly string[];
  /**
   * Principals it will ever serve: SPIFFE IDs of users/services, or `user/NAME`, `service/NAME`
   * (any org: the connector's inner TLS already admits only its own org). Omitted: any principal
   * its inner TLS admits. An empty list is refused rather than read as "everyone" or "no one".
   */
  readonly principals?: readonly string[];
}

export interface CompiledAllowlist {
  readonly targets: readonly TargetPattern[];
  /** undefined: no principal restriction. Keys are SPIFFE IDs or `role/name`. */
  readonly principals?: ReadonlySet<string>;
}

export interface AllowlistCheck {
  readonly allow: boolean;
  readonly reason: string;
  /** The allowlist entry the target fell under, when it did. */
  readonly pattern?: string;
}

/**
 * Validate and compile an allowlist once, at config load. Throws ConfigError
 * POSTERN_ERR_CONFIG_INVALID naming each bad entry as `<where>.targets[2]: …`.
 */
export function compileAllowlist(spec: AllowlistSpec, where = 'allowlist'): CompiledAllowlist {
  const problems: string[] = [];
  const targets: TargetPattern[] = [];
  if (spec.targets.length === 0) problems.push(`${where}.targets: must list at least one target pattern (an empty list never means "everything")`);
  spec.targets.forEach((text, i) => {
    try {
      targets.push(compileTargetPattern(text));
    } catch (err) {
      if (!isPosternError(err, 'POSTERN_ERR_TARGET_PATTERN_INVALID')) throw err;
      problems.push(`${where}.targets[${i}]: ${err.message}`);
    }
  });
  let principals: Set<string> | undefined;
  if (spec.principals !== undefined) {
    principals = new Set();
    if (spec.principals.length === 0) {
      problems.push(`${where}.principals: is empty; omit the key to serve any principal of the connector's org`);
    }
    spec.principals.forEach((entry, i) => {
      const key = principalKey(entry);
      if (typeof key === 'string') principals!.add(key);
      else problems.push(`${where}.principals[${i}]: ${key.problem}`);
    });
  }
  if (problems.length > 0) {
    throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', problems.join('\n'), { details: { where, issues: problems } });
  }
  return Object.freeze({ targets: Object.freeze(targets), ...(principals ? { principals } : {}) });
}

/**
 * The connector's own check, made with the identity from the inner TLS handshake (never from
 * anything the relay says): the target must fall under an allowlist pattern and, when the
 * allowlist names principals, the principal must be one of them.
 */
export function checkAllowlist(allowlist: CompiledAllowlist, principal: PrincipalInput, target: Target): AllowlistCheck {
  const who = `${principal.role}/${principal.name}`;
  if (principal.role !== 'user' && principal.role !== 'service') {
    return { allow: false, reason: `a ${principal.role} identity is not a principal` };
  }
  if (allowlist.principals) {
    const uri = principal.org === undefined ? undefined : `spiffe://${principal.trustDomain}/org/${principal.org}/${who}`;
    if (!allowlist.principals.has(who) && (uri === undefined || !allowlist.principals.has(uri))) {
      return { allow: false, reason: `principal ${uri ?? who} is not in the connector allowlist` };
    }
  }
  const pattern = firstMatch(allowlist.targets, target);
  if (!pattern) return { allow: false, reason: `target ${target.canonical} is not in the connector allowlist` };
  return { allow: true, reason: `target ${target.canonical} is allowed by allowlist entry ${pattern.canonical}`, pattern: pattern.canonical };
}

/** PolicyError POSTERN_ERR_ALLOWLIST_DENIED for a refused check. */
export function allowlistDeniedError(check: AllowlistCheck, target: Target): PolicyError {
  return new PolicyError('POSTERN_ERR_ALLOWLIST_DENIED', `connector allowlist denied ${target.canonical}: ${check.reason}`, {
    details: { target: target.canonical, reason: check.reason },
  });
}

/** The key a principal entry is stored under, or why it is malformed. */
function principalKey(entry: string): string | { problem: string } {
  if (entry.startsWith('spiffe:')) {
    try {
      const id = parseSpiffeId(entry);
      if (id.role !== 'user' && id.role !== 'service') return { problem: `${quote(entry)} is a ${id.role} identity, not a user or service` };
      return id.uri;
    } catch (err) {
      if (!isPosternError(err)) throw err;
      return { problem: err.message };
    }
  }
  const slash = entry.indexOf('/');
  const role = entry.slice(0, Math.max(slash, 0));
  if (role !== 'user' && role !== 'service') return { problem: `${quote(entry)} must be a SPIFFE ID, "user/NAME" or "service/NAME"` };
  const problem = segmentProblem(entry.slice(slash + 1));
  return problem ? { problem: `${quote(entry)}: ${problem}` } : entry;
}
