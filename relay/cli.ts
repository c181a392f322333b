import type { Command } from 'commander';
import { resolve } from 'node:path';
import { action } from '../src/cli/action.js';
import { reloadOnSignal, stopOnSignals } from '../src/cli/lifecycle.js';
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
  tapDir?: string;
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
    .option('--tap-dir <dir>', 'auditor\'s tap: write the first 64 KiB of each spliced stream, both ways, to files in <dir>')
    .action(action(async (flags: RelayFlags) => {
      const { config, baseDir } = await loadConfigFile(flags.config, relayConfigSchema);
      const listen = flags.listen === undefined ? config.listen : parseListenAddress(flags.listen);
      if (!listen) throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `--listen: expected host:port, got "${flags.listen}"`);
      const logger = createLogger({
        name: 'relay',
        level: flags.logLevel ?? config.log.level,
        format: flags.logFormat ?? (process.stderr.isTTY ? 'pretty' : config.log.format),
      });
      const tap = flags.tapDir === undefined ? config.tap : { dir: resolve(flags.tapDir), maxBytes: config.tap?.maxBytes ?? 65_536 };
      const relay = await createRelay({ ...config, listen, tap }, { logger, baseDir });
      await relay.start();
      // SIGTERM/SIGINT drain for drain.graceMs (a second signal exits at once); SIGHUP reloads.
      stopOnSignals(() => relay.stop(), logger);
      reloadOnSignal(() => relay.reload(), logger);
    }));
}
