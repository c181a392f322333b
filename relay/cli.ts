import type { Command } from 'commander';
import { resolve } from 'node:path';
import { ADMIN_FLAG_HELP, adminFlag } from '../src/admin/config.js';
import { action } from '../src/cli/action.js';
import { reloadOnSignal, stopOnSignals } from '../src/cli/lifecycle.js';
import { configEnvName, loadLayeredConfig } from '../src/config/layers.js';
import { createLogger } from '../src/log.js';
import { createRelay } from './index.js';
import { relayConfigSchema } from './options.js';

interface RelayFlags {
  config?: string;
  listen?: string;
  logLevel?: string;
  logFormat?: 'json' | 'pretty';
  tapDir?: string;
  admin?: string;
}

/** `postern relay --config relay.yaml` */
export function registerRelay(program: Command): void {
  program
    .command('relay')
    .description('run a relay: one TLS 1.3 port for connector tunnels and agent sessions')
    .option('--config <file>', `relay.yaml (default: $${configEnvName('relay')}); POSTERN_RELAY_* variables override it, flags override both`)
    .option('--listen <host:port>', 'override "listen" of the config')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (overrides the config)')
    .option('--log-format <format>', 'json|pretty (default: the config, else pretty when stderr is a terminal)')
    .option('--tap-dir <dir>', 'auditor\'s tap: write the first 64 KiB of each spliced stream, both ways, to files in <dir>')
    .option('--admin <host:port|off>', ADMIN_FLAG_HELP)
    .action(action(async (flags: RelayFlags) => {
      // YAML file < POSTERN_RELAY_* < flags, validated once; a flag's path is relative to the working directory.
      const layered = await loadLayeredConfig({
        program: 'relay',
        schema: relayConfigSchema,
        configFlag: flags.config,
        env: process.env,
        cwd: process.cwd(),
        flags: [
          { flag: '--listen', path: 'listen', value: flags.listen },
          { flag: '--log-level', path: 'log.level', value: flags.logLevel },
          { flag: '--log-format', path: 'log.format', value: flags.logFormat },
          { flag: '--tap-dir', path: 'tap.dir', value: flags.tapDir === undefined ? undefined : resolve(flags.tapDir) },
          ...adminFlag(flags.admin),
        ],
      });
      const { config, baseDir } = layered;
      const logger = createLogger({
        name: 'relay',
        level: config.log.level,
        format: layered.isSet('log.format') ? config.log.format : process.stderr.isTTY ? 'pretty' : 'json',
      });
      logger.info({ event: 'config.loaded', file: layered.file, overrides: layered.overrides }, 'configuration loaded');
      const relay = await createRelay(config, { logger, baseDir });
      // Signals are handled from before the listening line: an orchestrator may send SIGTERM as
      // soon as it sees the port, and the default action would kill the relay without a drain.
      // SIGTERM/SIGINT drain for drain.graceMs (a second signal exits at once); SIGHUP reloads.
      const started = relay.start();
      stopOnSignals(async () => {
        await started.catch(() => undefined);
        await relay.stop();
      }, logger);
      reloadOnSignal(async () => {
        await started;
        return relay.reload();
      }, logger);
      await started;
    }));
}
