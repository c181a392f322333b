import { PosternError, type ErrorCode, type PosternErrorOptions } from '../src/errors.js';

/** Where a dial failed: reaching the relay, the open, the inner TLS handshake, or the connector's answer. */
export type DialStage = 'session' | 'open' | 'inner-tls' | 'inner-response';

/** Errors of the agent itself (closed, local listeners, SOCKS clients). */
export class AgentError extends PosternError {}

/**
 * A dial that produced no socket. `code` is the most precise cause known (the relay's or the
 * connector's refusal, an identity refusal of the inner handshake, a timeout…); `details`
 * carries `connector`, `target` and `stage`.
 */
export class AgentDialError extends AgentError {
  readonly stage: DialStage;

  constructor(code: ErrorCode, stage: DialStage, message: string, options: PosternErrorOptions = {}) {
    super(code, message, { ...options, details: { stage, ...options.details } });
    this.stage = stage;
  }
}

export function agentClosedError(): AgentError {
  return new AgentError('POSTERN_ERR_AGENT_CLOSED', 'the agent is closed: create a new Agent to dial again');
}
