import type { Command } from 'commander';
import { isPosternError, type ErrorCode } from '../src/errors.js';
import { parseSpiffeId } from '../src/identity/index.js';
import { authorize, loadPolicyFile, parseTarget, type CompiledPolicy, type Decision } from '../src/policy/index.js';
import { action, EXIT } from '../src/cli/action.js';

/** Errors that mean "your input is wrong" here: exit 2 like usage errors, not 1. */
const INPUT_ERRORS: readonly ErrorCode[] = [
  'POSTERN_ERR_POLICY_INVALID', 'POSTERN_ERR_TARGET_INVALID', 'POSTERN_ERR_ID_MALFORMED', 'POSTERN_ERR_ID_NOT_SPIFFE',
];

interface ExplainFlags {
  policy: string;
  principal: string;
  connector: string;
  target: string;
  json?: boolean;
}

/** `postern policy check FILE` and `postern policy explain …` (docs/policy.md). */
export function registerPolicy(program: Command): void {
  const policy = program.command('policy').description('check a relay policy file, explain a decision');

  policy.command('check')
    .description('validate a policy file; prints "ok: N orgs, N connectors, N rules" or every problem as file:line:col: field: why (exit 2)')
    .argument('<file>', 'policy YAML file')
    .action(action(inputErrorsExit2(async (file: string) => {
      const compiled = await loadPolicyFile(file);
      process.stdout.write(`${summary(compiled)}\n`);
    })));

  policy.command('explain')
    .description('show the decision for one principal, connector and target, step by step (exit 0 allow, 1 deny, 2 invalid input)')
    .requiredOption('--policy <file>', 'policy YAML file')
    .requiredOption('--principal <spiffe-id>', 'SPIFFE ID of the user or service, e.g. spiffe://hospital.example/org/st-mary/user/alice')
    .requiredOption('--connector <id>', 'connector id, e.g. hq')
    .requiredOption('--target <host:port>', 'target as the agent would write it, e.g. postgres.internal:5432')
    .option('--json', 'print the decision as JSON')
    .action(action(inputErrorsExit2(async (flags: ExplainFlags) => {
      const compiled = await loadPolicyFile(flags.policy);
      const principal = parseSpiffeId(flags.principal);
      const target = parseTarget(flags.target);
      const decision = authorize(compiled, { principal, connector: flags.connector, target });
      const report = {
        decision: decision.allow ? 'ALLOW' : 'DENY',
        allow: decision.allow,
        reason: decision.reason,
        ruleId: decision.ruleId ?? null,
        principal: principal.uri,
        connector: flags.connector,
        target: target.canonical,
        explanation: decision.explanation,
      };
      process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatExplain(report, decision));
      process.exitCode = decision.allow ? EXIT.OK : EXIT.FAILURE;
    })));
}

export function summary(policy: CompiledPolicy): string {
  return `ok: ${policy.orgs.size} orgs, ${policy.connectorCount} connectors, ${policy.rules.length} rules`;
}

function formatExplain(report: { decision: string; principal: string; connector: string; target: string }, decision: Decision): string {
  const rule = decision.ruleId ?? (decision.reason === 'default-deny' ? 'default deny' : `none (${decision.reason})`);
  const lines = [
    `decision:  ${report.decision}`,
    `rule:      ${rule}`,
    `target:    ${report.target}`,
    `principal: ${report.principal}`,
    `connector: ${report.connector}`,
    'explanation:',
    ...decision.explanation.map((step, i) => `  ${i + 1}. ${step}`),
  ];
  return `${lines.join('\n')}\n`;
}

function inputErrorsExit2<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      if (!isPosternError(err) || !INPUT_ERRORS.includes(err.code)) throw err;
      process.stderr.write(`error ${err.code}: ${err.message}\n`);
      process.exitCode = EXIT.USAGE;
    }
  };
}
