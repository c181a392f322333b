import type { Target } from './target.js';
import type { TargetPattern } from './target-pattern.js';

/** Roles that may open streams. Relays and connectors are identities but never principals. */
export type PrincipalRole = 'user' | 'service';

/**
 * Who asks. Shaped like the SpiffeId that src/identity returns, so a parsed peer identity can
 * be passed as it is; a role other than user/service is denied as "not-a-principal".
 */
export interface PrincipalInput {
  readonly trustDomain: string;
  readonly org?: string;
  readonly role: string;
  readonly name: string;
}

export interface AuthorizeRequest {
  readonly principal: PrincipalInput;
  /** Connector id as the agent asked for it; always looked up in the principal's own org. */
  readonly connector: string;
  /** Canonical target, from parseTarget. */
  readonly target: Target;
}

export type DecisionReason =
  | 'rule'
  | 'default-deny'
  | 'org-isolation'
  | 'unknown-connector'
  | 'connector-does-not-declare-target'
  | 'wrong-trust-domain'
  | 'not-a-principal';

export interface Decision {
  readonly allow: boolean;
  /** The rule that decided, when reason is "rule". */
  readonly ruleId?: string;
  readonly reason: DecisionReason;
  /** Human steps: what was checked, which rules were skipped and why, which one matched. */
  readonly explanation: string[];
}

export type RuleAction = 'allow' | 'deny';

export interface CompiledRule {
  readonly id: string;
  /** Position in the file's `rules` list (0-based), for messages: `rules[3]`. */
  readonly index: number;
  readonly org: string;
  /** A connector id of the rule's org, or "*" for every connector of that org. */
  readonly connector: string;
  readonly action: RuleAction;
  readonly description?: string;
  /** `["*"]`: any principal of the rule's org. */
  readonly anyPrincipal: boolean;
  /** `role/name` → the entry that brought it in (`team/dba`, `user/bob`); teams are expanded here. */
  readonly members: ReadonlyMap<string, string>;
  /** The principal entries as written, for explanations. */
  readonly principalEntries: readonly string[];
  readonly targets: readonly TargetPattern[];
}

export interface CompiledConnector {
  readonly id: string;
  readonly org: string;
  readonly targets: readonly TargetPattern[];
  /** The org's rules that name this connector or "*", in file order: all authorize ever walks. */
  readonly rules: readonly CompiledRule[];
}

export interface CompiledOrg {
  readonly name: string;
  /** Team name → members as `user/NAME` / `service/NAME`. */
  readonly teams: ReadonlyMap<string, readonly string[]>;
  /**
   * Connector id → connector. Ids are per org, like SPIFFE IDs (`…/org/ORG/connector/ID`):
   * two orgs may both call theirs "hq", and an agent's "hq" always means its own org's.
   */
  readonly connectors: ReadonlyMap<string, CompiledConnector>;
}

export interface CompiledPolicy {
  /** Where it came from (file path, "postgresql", …), for messages. */
  readonly source: string;
  readonly trustDomain: string;
  readonly orgs: ReadonlyMap<string, CompiledOrg>;
  /** Connector id → the orgs that declare it, to tell org isolation from an unknown id. */
  readonly connectorOrgs: ReadonlyMap<string, readonly string[]>;
  readonly connectorCount: number;
  readonly rules: readonly CompiledRule[];
}

/** Something that yields a compiled policy: a YAML file now, a PostgreSQL store later. */
export interface PolicySource {
  load(): Promise<CompiledPolicy>;
}
