import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Agent, startForward } from '../agent-lib/index.js';
import { createConnector } from '../connector/index.js';
import { connectorConfigSchema } from '../connector/options.js';
import { createRelay } from '../relay/index.js';
import type { AdminConfig, AdminServer } from '../src/admin/index.js';
import { relayConfigSchema } from '../relay/options.js';
import { createAuditLog, pinoAuditSink } from '../src/audit/audit-log.js';
import { action } from '../src/cli/action.js';
import { stopOnSignals } from '../src/cli/lifecycle.js';
import { formatListenAddress, parseListenAddress } from '../src/config/schemas.js';
import { ConfigError, isPosternError } from '../src/errors.js';
import { createLogger, type Logger } from '../src/log.js';
import { validateOptions } from '../src/options.js';
import { initPki, issueCertificate, PKI_FILES, resignCrl } from '../src/pki/index.js';
import { parseTarget } from '../src/policy/index.js';

interface UpFlags {
  target: string;
  listen: string;
  dir: string;
  logLevel: string;
}

const TRUST_DOMAIN = 'postern.local';
const ORG = 'local';

/**
 * `postern up` — the embedded default behind `npm start`: a whole local stack in one process
 * (throwaway PKI and policy under ./.postern, a relay, a connector, an agent forward), with
 * both TLS layers exactly as in production, so `psql` through it shows the real path.
 */
export function registerUp(program: Command): void {
  program
    .command('up')
    .description('run a whole local stack (throwaway PKI, relay, connector, agent forward) and print how to connect')
    .option('--target <host:port>', 'the on-prem service to reach', '127.0.0.1:5432')
    .option('--listen <host:port>', 'local address of the forward', '127.0.0.1:15432')
    .option('--dir <dir>', 'where the throwaway PKI and configs live (reused on the next start)', '.postern')
    .option('--log-level <level>', 'log level of the components (logs go to stderr)', 'warn')
    .action(action(async (flags: UpFlags) => {
      const target = parseTarget(flags.target);
      const listen = parseListenAddress(flags.listen);
      if (!listen) throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `--listen: expected host:port, got "${flags.listen}"`);
      const dir = resolve(flags.dir);
      const logger = createLogger({ name: 'postern-up', level: flags.logLevel, format: process.stderr.isTTY ? 'pretty' : 'json' });

      const files = await preparePki(dir);
      await writeFile(join(dir, 'policy.yaml'), policyYaml(target.canonical));

      const relayConfig = validateOptions(relayConfigSchema, {
        trustDomain: TRUST_DOMAIN,
        listen: '127.0.0.1:0',
        tls: { ...files.relay, ca: files.ca, crl: files.crl },
        policy: { file: join(dir, 'policy.yaml') },
      }, 'postern up (relay)');
      let tunnelUp!: () => void;
      const tunnelReady = new Promise<void>((r) => { tunnelUp = r; });
      const relayAudit = createAuditLog('relay', [pinoAuditSink(logger.child({ component: 'relay' })), {
        write: (event) => { if (event.event === 'tunnel.up') tunnelUp(); },
      }]);
      const relay = await startWithAdmin('relay', relayConfig.admin, logger, (admin) =>
        createRelay({ ...relayConfig, admin }, { logger: logger.child({ component: 'relay' }), audit: relayAudit }));
      const { port } = relay.status().listening!;
      const relayUrl = `wss://localhost:${port}`;

      const connectorConfig = validateOptions(connectorConfigSchema, {
        trustDomain: TRUST_DOMAIN,
        relays: [relayUrl],
        tls: { ...files.connector, ca: files.ca, crl: files.crl },
        allowlist: { targets: [target.canonical] },
      }, 'postern up (connector)');
      const connector = await startWithAdmin('connector', connectorConfig.admin, logger, async (admin) =>
        createConnector({ ...connectorConfig, admin }, { logger: logger.child({ component: 'connector' }) }));
      await tunnelReady;

      const agent = new Agent({ trustDomain: TRUST_DOMAIN, relay: relayUrl, tls: { ...files.user, ca: files.ca, crl: files.crl } }, { logger: logger.child({ component: 'agent' }) });
      const forward = await startForward(agent, { listen: formatListenAddress(listen), connector: 'hq', target: target.canonical });
      const local = forward.address;

      process.stdout.write(
        [
          `Postern is up: agent ${formatListenAddress(local)} → relay ${relayUrl} → connector "hq" → ${target.canonical}`,
          `(inner TLS 1.3 from the agent to the connector; the relay forwards ciphertext only)`,
          '',
          'Connect through the tunnel, for example:',
          `  psql -h ${local.host} -p ${local.port} -U postgres`,
          '',
          `Check the path:  postern agent check --config ${join(dir, 'agent.yaml')} --connector hq --target ${target.canonical}`,
          ...adminLines([['relay', relay.admin], ['connector', connector.admin]]),
          'Ctrl-C stops everything.',
          '',
        ].join('\n'),
      );
      await writeFile(join(dir, 'agent.yaml'), `trustDomain: ${TRUST_DOMAIN}\nrelay: ${relayUrl}\ntls:\n  cert: ${files.user.cert}\n  key: ${files.user.key}\n  ca: ${files.ca}\n  crl: ${files.crl}\n`);

      stopOnSignals(async () => {
        await forward.close();
        await agent.close();
        await connector.stop();
        await relay.stop(2_000);
      }, logger);
    }));
}

/**
 * Starts a component with its admin endpoint on the default port (relay 9090, connector 9091);
 * when that port is taken (a second `postern up`, a Prometheus server) it starts without one
 * and says so: `postern up` is a demo, not a service whose probes depend on it.
 */
async function startWithAdmin<T extends { start(): Promise<unknown> }>(
  name: string,
  admin: AdminConfig,
  log: Logger,
  create: (admin: AdminConfig) => Promise<T>,
): Promise<T> {
  const component = await create(admin);
  try {
    await component.start();
    return component;
  } catch (err) {
    if (!isPosternError(err, 'POSTERN_ERR_ADMIN_LISTEN')) throw err;
    log.warn({ event: 'admin.unavailable', component: name, code: err.code, err: err.message }, `${name} runs without its admin endpoint: ${err.message}`);
  }
  const without = await create(false);
  await without.start();
  return without;
}

function adminLines(admins: Array<[string, AdminServer | undefined]>): string[] {
  return [
    'Admin endpoints (Prometheus metrics, status JSON, readiness):',
    ...admins.map(([name, admin]) => `  ${name}: ${admin ? `${admin.url}/metrics  ${admin.url}/v1/status  ${admin.url}/readyz` : 'off (its default port is taken; see the log)'}`),
  ];
}

/**
 * Creates the CA on the first start and reuses it afterwards; leaves are re-issued and the CRL
 * re-signed on every start, so a stack left for weeks never fails on an expired file.
 */
async function preparePki(dir: string) {
  if (!existsSync(join(dir, PKI_FILES.caCert))) await initPki({ dir, trustDomain: TRUST_DOMAIN });
  await resignCrl({ dir });
  const relay = await issueCertificate({ dir, role: 'relay', name: 'local', dns: ['localhost'], ip: ['127.0.0.1', '::1'], force: true });
  const connector = await issueCertificate({ dir, role: 'connector', name: 'hq', org: ORG, force: true });
  const user = await issueCertificate({ dir, role: 'user', name: 'operator', org: ORG, force: true });
  return {
    ca: join(dir, PKI_FILES.caCert),
    crl: join(dir, PKI_FILES.crl),
    relay: { cert: relay.cert, key: relay.key },
    connector: { cert: connector.cert, key: connector.key },
    user: { cert: user.cert, key: user.key },
  };
}

function policyYaml(target: string): string {
  return `# Generated by postern up: the local operator may reach ${target} through connector hq.
version: 1
trustDomain: ${TRUST_DOMAIN}
orgs:
  ${ORG}:
    connectors:
      hq:
        targets: ["${target}"]
rules:
  - id: operator-local
    org: ${ORG}
    principals: [user/operator]
    connector: hq
    targets: ["${target}"]
    action: allow
`;
}
