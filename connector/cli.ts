import type { Command } from 'commander';
import { ADMIN_FLAG_HELP, adminFlag } from '../src/admin/config.js';
import { action } from '../src/cli/action.js';
import { reloadOnSignal, stopOnSignals } from '../src/cli/lifecycle.js';
import { resolve } from 'node:path';
import { configEnvName, loadLayeredConfig, type LayeredConfigInput } from '../src/config/layers.js';
import { createLogger } from '../src/log.js';
import { createConnector } from './index.js';
import { connectorConfigSchema } from './options.js';

interface ConnectorFlags {
  config?: string;
  logLevel?: string;
  logFormat?: string;
  admin?: string;
}

/** `postern connector --config connector.yaml` */
export function registerConnectorCommand(program: Command): void {
  program
    .command('connector')
    .description('run a connector: tunnels to every relay (reconnecting forever), the local allowlist, inner TLS 1.3 with agents, dialing targets')
    .option('--config <file>', `connector.yaml (default: $${configEnvName('connector')}); relative paths in it resolve against its directory; POSTERN_CONNECTOR_* variables override it, flags override both`)
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (overrides the config)')
    .option('--log-format <format>', 'json|pretty (default: the config, else pretty when stderr is a terminal)')
    .option('--admin <host:port|off>', ADMIN_FLAG_HELP)
    .action(
      action(async (flags: ConnectorFlags) => {
        // YAML file < POSTERN_CONNECTOR_* < flags, validated once.
        const input: LayeredConfigInput<typeof connectorConfigSchema> = {
          program: 'connector',
          schema: connectorConfigSchema,
          configFlag: flags.config,
          env: { ...process.env },
          cwd: process.cwd(),
          flags: [
            { flag: '--log-level', path: 'log.level', value: flags.logLevel },
            { flag: '--log-format', path: 'log.format', value: flags.logFormat },
            ...adminFlag(flags.admin),
          ],
        };
        const layered = await loadLayeredConfig(input);
        const { config, baseDir } = layered;
        const logger = createLogger({
          name: 'connector',
          level: config.log.level,
          format: layered.isSet('log.format') ? config.log.format : process.stderr.isTTY ? 'pretty' : 'json',
        });
        logger.info({ event: 'config.loaded', file: layered.file, overrides: layered.overrides }, 'configuration loaded');
        // A change of the config file (or SIGHUP) applies its allowlist without a restart; the
        // same variables and flags as at start apply over the new file.
        const reloadConfig = async () => (await loadLayeredConfig(input)).config;
        const configFile = layered.file === undefined ? undefined : resolve(layered.file);
        const connector = createConnector(config, { logger, baseDir, ...(configFile === undefined ? {} : { configFile }), reloadConfig, env: process.env });
        // Signals are handled before start() completes, so a SIGTERM right after start still drains.
        const started = connector.start();
        stopOnSignals(async () => {
          await started.catch(() => undefined);
          await connector.stop();
        }, logger);
        reloadOnSignal(async () => {
          await started;
          return connector.reload();
        }, logger);
        await started;
        logger.info({ event: 'connector.started', identity: connector.identity.uri, relays: config.relays }, 'connector started');
      }),
    );
}
