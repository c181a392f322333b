export {
  type Target, type TargetKind, MAX_TARGET_INPUT_LENGTH, parseTarget, targetAddress,
} from './target.js';
export { type TargetPattern, type HostPattern, type PortRange, compileTargetPattern, matches, firstMatch } from './target-pattern.js';
export { type IpAddress, type IpPrefix } from './ip.js';
export {
  type PrincipalRole, type PrincipalInput, type AuthorizeRequest, type Decision, type DecisionReason, type RuleAction,
  type CompiledRule, type CompiledConnector, type CompiledOrg, type CompiledPolicy, type PolicySource,
} from './model.js';
export { type PolicyDocument, PolicyDocumentSchema } from './schema.js';
export { compilePolicy } from './compile.js';
export { type AuthorizeOptions, authorize, findConnector, policyDeniedError } from './authorize.js';
export { type PolicyFileOptions, DEFAULT_POLICY_MAX_BYTES, parsePolicy, loadPolicyFile, filePolicySource } from './source.js';
export { type AllowlistSpec, type CompiledAllowlist, type AllowlistCheck, compileAllowlist, checkAllowlist, allowlistDeniedError } from './allowlist.js';
export {
  type ForbiddenClass, type ForbiddenBlock, type AddressCheck, FORBIDDEN_BLOCKS, checkResolvedAddress, forbiddenAddressError,
} from './address-guard.js';
