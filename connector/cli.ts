import type { Command } from 'commander';
import { action } from '../src/cli/action.js';
import { reloadOnSignal, stopOnSignals } from '../src/cli/lifecycle.js';
import { loadConfigFile } from '../src/config/load-file.js';
import { ConfigError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { createConnector } from './index.js';
import { connectorConfigSchema } from './options.js';

interface ConnectorFlags {
  config: string;
  logLevel?: string;
  logFormat?: string;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const FORMATS = ['json', 'pretty'];

/** `postern connector --config connector.yaml` */
export function registerConnectorCommand(program: Command): void {
  program
    .command('connector')
    .description('run a connector: tunnels to every relay (reconnecting forever), the local allowlist, inner TLS 1.3 with agents, dialing targets')
    .requiredOption('--config <file>', 'connector.yaml (relative paths in it resolve against its directory)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (overrides the config)')
    .option('--log-format <format>', 'json|pretty (default: pretty on a terminal, else the config)')
    .action(
      action(async (flags: ConnectorFlags) => {
        if (flags.logLevel !== undefined && !LEVELS.includes(flags.logLevel)) {
          throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `--log-level: expected one of ${LEVELS.join('|')}, got "${flags.logLevel}"`);
        }
        if (flags.logFormat !== undefined && !FORMATS.includes(flags.logFormat)) {
          throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `--log-format: expected json or pretty, got "${flags.logFormat}"`);
        }
        const { config, baseDir } = await loadConfigFile(flags.config, connectorConfigSchema);
        const logger = createLogger({
          name: 'connector',
          level: flags.logLevel ?? config.log.level,
          format: (flags.logFormat as 'json' | 'pretty' | undefined) ?? (process.stderr.isTTY ? 'pretty' : config.log.format),
        });
        // A change of the config file (or SIGHUP) applies its allowlist without a restart.
        const reloadConfig = async () => (await loadConfigFile(flags.config, connectorConfigSchema)).config;
        const connector = createConnector(config, { logger, baseDir, configFile: flags.config, reloadConfig });
        await connector.start();
        logger.info({ event: 'connector.started', identity: connector.identity.uri, relays: config.relays }, 'connector started');
        stopOnSignals(() => connector.stop(), logger);
        reloadOnSignal(() => connector.reload(), logger);
      }),
    );
}
