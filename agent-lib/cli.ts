import type { Command } from 'commander';
import { resolve } from 'node:path';
import { action } from '../src/cli/action.js';
import { stopOnSignals } from '../src/cli/lifecycle.js';
import { configEnvName, envName, loadLayeredConfig } from '../src/config/layers.js';
import { formatListenAddress, logSchema } from '../src/config/schemas.js';
import { ConfigError } from '../src/errors.js';
import { createLogger, type Logger } from '../src/log.js';
import { Agent } from './agent.js';
import { formatCheckReport, runCheck } from './check.js';
import { startForward } from './forward.js';
import { agentOptionsSchema, type AgentOptions } from './options.js';
import { startSocks, type SocksMapEntry } from './socks5.js';

interface CommonFlags {
  config?: string;
  /** Repeatable: the first is `relay`, the others `relays` (the failover pool). */
  relay?: string[];
  trustDomain?: string;
  cert?: string;
  key?: string;
  ca?: string;
  crl?: string[];
  innerCa?: string;
  innerCrl?: string[];
  logLevel?: string;
  logFormat?: 'json' | 'pretty';
}

interface ForwardFlags extends CommonFlags {
  listen: string;
  connector: string;
  target: string;
  maxConnections?: number;
}

interface SocksFlags extends CommonFlags {
  listen: string;
  connector?: string;
  map?: string[];
  maxConnections?: number;
}

interface CheckFlags extends CommonFlags {
  connector: string;
  target: string;
  json?: boolean;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

function positiveInt(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n <= 0) throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `${flag}: expected a positive integer, got "${value}"`);
    return n;
  };
}

function commonOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'agent.yaml (default: $POSTERN_AGENT_CONFIG); relative paths in it resolve against its directory; POSTERN_AGENT_* variables override it, flags override both')
    .option('--relay <url>', 'wss:// URL of a relay; repeat for a pool (the first is tried first, the others on a drain or failure); overrides relay and relays of the config', collect)
    .option('--trust-domain <td>', 'trust domain, e.g. hospital.example')
    .option('--cert <file>', 'the user or service certificate')
    .option('--key <file>', 'its private key')
    .option('--ca <file>', 'trust bundle for the relay (and for the connector unless --inner-ca)')
    .option('--crl <file>', 'CRL of a CA of the bundle (repeat for several)', collect)
    .option('--inner-ca <file>', 'trust bundle for connectors (inner TLS), when it differs')
    .option('--inner-crl <file>', 'CRL for the inner trust bundle (repeat for several)', collect)
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace (default: info; warn for check)')
    .option('--log-format <format>', 'json|pretty (default: the config, else pretty when stderr is a terminal)');
}

/** agent.yaml as the CLI reads it: the Agent's options plus how the CLI logs. */
export const agentCliConfigSchema = agentOptionsSchema.extend({ log: logSchema });

/**
 * Agent options from agent.yaml (--config or POSTERN_AGENT_CONFIG) < POSTERN_AGENT_* < flags,
 * validated once; flag paths resolve against the working directory, the file's against its
 * directory.
 */
async function agentOptions(flags: CommonFlags, defaultLevel: string): Promise<{ options: AgentOptions; baseDir: string; log: { level: string; format: 'json' | 'pretty' } }> {
  const path = (p: string | undefined): string | undefined => (p === undefined ? undefined : resolve(p));
  const given: Array<[flag: string, path: string, value: unknown]> = [
    ['--relay', 'relay', flags.relay?.[0]],
    ['--trust-domain', 'trustDomain', flags.trustDomain],
    ['--cert', 'tls.cert', path(flags.cert)],
    ['--key', 'tls.key', path(flags.key)],
    ['--ca', 'tls.ca', path(flags.ca)],
    ['--crl', 'tls.crl', flags.crl?.map((p) => resolve(p))],
    ['--inner-ca', 'inner.ca', path(flags.innerCa)],
    ['--inner-crl', 'inner.crl', flags.innerCrl?.map((p) => resolve(p))],
    ['--log-level', 'log.level', flags.logLevel],
    ['--log-format', 'log.format', flags.logFormat],
    // Flags name the whole pool: relays of the file or environment do not mix in.
    ['--relay', 'relays', flags.relay?.slice(1)],
  ];
  if (flags.config === undefined && process.env[configEnvName('agent')] === undefined) {
    // Without a file, the five settings an agent cannot do without come from flags or variables.
    const setByEnv = (p: string): boolean => {
      const parts = p.split('.');
      return process.env[envName('agent', parts)] !== undefined || process.env[envName('agent', parts.slice(0, 1))] !== undefined;
    };
    const missing = given.slice(0, 5).filter(([, p, value]) => value === undefined && !setByEnv(p)).map(([flag]) => flag);
    if (missing.length > 0) {
      throw new ConfigError('POSTERN_ERR_USAGE', `without --config, pass ${missing.join(', ')} (or all of them in agent.yaml with --config)`, { details: { missing } });
    }
  }
  const layered = await loadLayeredConfig({
    program: 'agent',
    schema: agentCliConfigSchema,
    configFlag: flags.config,
    env: process.env,
    cwd: process.cwd(),
    flags: given.map(([flag, p, value]) => ({ flag, path: p, value })),
  });
  const { log, ...options } = layered.config;
  return {
    options: options as AgentOptions,
    baseDir: layered.baseDir,
    log: {
      level: layered.isSet('log.level') ? log.level : defaultLevel,
      format: layered.isSet('log.format') ? log.format : process.stderr.isTTY ? 'pretty' : 'json',
    },
  };
}

async function openAgent(flags: CommonFlags, defaultLevel = 'info'): Promise<{ agent: Agent; logger: Logger }> {
  const { options, baseDir, log } = await agentOptions(flags, defaultLevel);
  const logger = createLogger({ name: 'agent', ...log });
  return { agent: new Agent(options, { logger, baseDir, env: process.env }), logger };
}

/** Opens the relay session at start, so a wrong relay or certificate shows at once (the listener keeps running; dials retry). */
function warmUp(agent: Agent, logger: Logger): void {
  agent.ping().then(
    (rttMs) => logger.info({ event: 'agent.ready', relay: agent.options.relay, rttMs: Math.round(rttMs * 100) / 100 }, 'relay session up'),
    (err: Error & { code?: string }) => logger.warn({ event: 'agent.relay-unreachable', code: err.code, reason: err.message }, `relay not reachable yet: ${err.message}`),
  );
}

/** `postern agent forward|socks|check` */
export function registerAgentCommand(program: Command): void {
  const agentCmd = program.command('agent').description('reach on-prem services through a relay: local forward, SOCKS5 proxy, path check');

  commonOptions(
    agentCmd
      .command('forward')
      .description('listen on a local port and forward each connection to a target through a connector')
      .requiredOption('--listen <host:port>', 'local address, e.g. 127.0.0.1:15432 (port 0: any free port)')
      .requiredOption('--connector <id>', 'connector id, e.g. hq')
      .requiredOption('--target <host:port>', 'target as the connector reaches it, e.g. postgres.internal:5432')
      .option('--max-connections <n>', 'local connections open at once', positiveInt('--max-connections')),
  ).action(
    action(async (flags: ForwardFlags) => {
      const { agent, logger } = await openAgent(flags);
      const forward = await startForward(agent, {
        listen: flags.listen,
        connector: flags.connector,
        target: flags.target,
        ...(flags.maxConnections === undefined ? {} : { maxConnections: flags.maxConnections }),
      });
      const local = formatListenAddress(forward.address);
      const lines = [`Forwarding ${local} → connector "${flags.connector}" → ${flags.target} (inner TLS 1.3 end to end; the relay sees ciphertext only).`];
      const { host, port } = forward.address;
      lines.push(flags.target.endsWith(':5432') ? `Connect with:  psql -h ${host} -p ${port} -U <user> <database>` : `Point your client at ${local}.`);
      process.stdout.write(`${lines.join('\n')}\n`);
      warmUp(agent, logger);
      stopOnSignals(async () => {
        await forward.close();
        await agent.close();
      }, logger);
    }),
  );

  commonOptions(
    agentCmd
      .command('socks')
      .description('run a local SOCKS5 proxy (no authentication, CONNECT) whose connections go through connectors')
      .requiredOption('--listen <host:port>', 'local address, e.g. 127.0.0.1:1080')
      .option('--connector <id>', 'connector for hosts no --map entry matches')
      .option('--map <pattern=connector>', 'route hosts to a connector, e.g. "*.st-mary.internal=hq" (repeat; first match wins)', collect)
      .option('--max-connections <n>', 'local connections open at once', positiveInt('--max-connections')),
  ).action(
    action(async (flags: SocksFlags) => {
      const map = (flags.map ?? []).map(parseMapFlag);
      if (flags.connector === undefined && map.length === 0) {
        throw new ConfigError('POSTERN_ERR_USAGE', 'pass --connector (the default connector) or at least one --map pattern=connector');
      }
      const { agent, logger } = await openAgent(flags);
      const socks = await startSocks(agent, {
        listen: flags.listen,
        map,
        ...(flags.connector === undefined ? {} : { connector: flags.connector }),
        ...(flags.maxConnections === undefined ? {} : { maxConnections: flags.maxConnections }),
      });
      const local = formatListenAddress(socks.address);
      process.stdout.write(`SOCKS5 proxy on ${local}; for example:  curl --proxy socks5h://${local} http://service.internal/\n`);
      warmUp(agent, logger);
      stopOnSignals(async () => {
        await socks.close();
        await agent.close();
      }, logger);
    }),
  );

  commonOptions(
    agentCmd
      .command('check')
      .description('dial a target once and print the evidence: relay and connector identities, TLS versions and ciphers, round-trip and set-up times')
      .requiredOption('--connector <id>', 'connector id')
      .requiredOption('--target <host:port>', 'target as the connector reaches it')
      .option('--json', 'print the report as JSON'),
  ).action(
    action(async (flags: CheckFlags) => {
      const { agent } = await openAgent(flags, 'warn');
      try {
        const report = await runCheck(agent, { connector: flags.connector, target: flags.target });
        process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatCheckReport(report));
      } finally {
        await agent.close();
      }
    }),
  );
}

function parseMapFlag(value: string): SocksMapEntry {
  const at = value.lastIndexOf('=');
  if (at <= 0 || at === value.length - 1) {
    throw new ConfigError('POSTERN_ERR_USAGE', `--map: expected pattern=connector (e.g. "*.st-mary.internal=hq"), got "${value}"`);
  }
  return { pattern: value.slice(0, at), connector: value.slice(at + 1) };
}
