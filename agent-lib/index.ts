/** The agent library (PRODUCT §10): `import { Agent } from 'postern/agent-lib'`. */
export { Agent, type AgentDeps, type DialRequest, type DialInfo, type SocketFactoryOptions } from './agent.js';
export { agentOptionsSchema, type AgentOptions, type ResolvedAgentOptions } from './options.js';
export { AgentError, AgentDialError, type DialStage } from './errors.js';
export { TunnelSocket } from './pg-socket.js';
export { startForward, FORWARD_DEFAULTS, type Forward, type ForwardOptions } from './forward.js';
export { startSocks, SOCKS_DEFAULTS, type SocksProxy, type SocksOptions, type SocksMapEntry } from './socks5.js';
export { runCheck, formatCheckReport, type CheckReport } from './check.js';
