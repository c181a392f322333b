import type { Command } from 'commander';
import { action } from '../src/cli/action.js';
import { stopOnSignals } from '../src/cli/lifecycle.js';
import { loadConfigFile } from '../src/config/load-file.js';
import { parseListenAddress } from '../src/config/schemas.js';
import { ConfigError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { createRelay } from './index.js';
import { relayConfigSchema } from './options.js';

interface RelayFlags {
  config: string;
  listen?: string;
  logLevel?: string;
  logFormat?: 'json' | 'pretty';
}

/** `postern relay --config relay.yaml` */
export function registerRelay(program: Command): void {
  program
    .command('relay')
    .description('run a relay: one TLS 1.3 port for connector tunnels and agent sessions')
    .requiredOption('--config <file>', 'relay.yaml')
    .option('--listen <host:port>', 'override "listen" of the config')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace (overrides the config)')
    .option('--log-format <format>', 'json|pretty (default: pretty on a terminal)')
    .action(action(async (flags: RelayFlags) => {
      const { config, baseDir } = await loadConfigFile(flags.config, relayConfigSchema);
      const listen = flags.listen === undefined ? config.listen : parseListenAddress(flags.listen);
      if (!listen) throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `--listen: expected host:port, got "${flags.listen}"`);
      const logger = createLogger({
        name: 'relay',
        level: flags.logLevel ?? config.log.level,
        format: flags.logFormat ?? (process.stderr.isTTY ? 'pretty' : config.log.format),
      });
      const relay = await createRelay({ ...config, listen }, { logger, baseDir });
      await relay.start();
      stopOnSignals(() => relay.stop(), logger);
    }));
}
