import type { Logger } from '../log.js';

/**
 * Runs a long-lived component until SIGTERM or SIGINT, then stops it and exits 0 (1 when the
 * stop failed). A second signal while stopping exits at once with 130: the operator insists.
 */
export function stopOnSignals(stop: () => Promise<void>, log: Logger): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ event: 'process.forced-exit', signal }, 'second signal: exiting now');
      process.exit(130);
    }
    stopping = true;
    log.info({ event: 'process.stopping', signal }, `${signal}: stopping`);
    stop().then(
      () => {
        log.info({ event: 'process.stopped' }, 'stopped');
        log.flush?.();
        process.exitCode = 0;
        setImmediate(() => process.exit(0));
      },
      (err: unknown) => {
        log.error({ err, event: 'process.stop-failed' }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/**
 * SIGHUP reloads (certificates, keys, trust bundles, CRLs, policy) without stopping: the
 * Unix convention for daemons. A reload refused for a bad file is logged by `reload` itself.
 */
export function reloadOnSignal(reload: () => Promise<unknown>, log: Logger): void {
  process.on('SIGHUP', () => {
    log.info({ event: 'process.reload', signal: 'SIGHUP' }, 'SIGHUP: reloading files');
    reload().catch((err: unknown) => log.error({ err, event: 'process.reload-failed' }, 'reload failed'));
  });
}
