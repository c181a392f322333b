import { segmentProblem } from '../src/identity/index.js';
import { AgentError } from './errors.js';

/** Throws POSTERN_ERR_AGENT_CONNECTOR_INVALID, naming `where`, when `connector` cannot be a connector id. */
export function checkConnectorId(connector: string, where: string): void {
  const problem = typeof connector === 'string' ? segmentProblem(connector) : 'it is not a string';
  if (problem !== undefined) {
    throw new AgentError('POSTERN_ERR_AGENT_CONNECTOR_INVALID', `${where}: connector id "${String(connector)}" is invalid: ${problem}`, { details: { connector: String(connector) } });
  }
}
