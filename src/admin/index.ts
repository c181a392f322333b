import type { Logger } from '../log.js';
import type { AdminConfig } from './config.js';
import { adminRoutes, type AdminSource } from './routes.js';
import { startAdminServer, type AdminServer } from './server.js';

export * from './certificates.js';
export * from './config.js';
export * from './routes.js';
export * from './server.js';
export { POSTERN_VERSION, VERSION_HEADER, peerVersion } from './version.js';

/** The admin endpoint of a relay or connector process as configured; undefined when `admin: false`. */
export async function startAdmin(config: AdminConfig, source: AdminSource, logger: Logger): Promise<AdminServer | undefined> {
  if (config === false) {
    logger.info({ event: 'admin.off' }, 'admin endpoint off (admin: false)');
    return undefined;
  }
  return startAdminServer({ listen: config.listen, routes: adminRoutes(source), logger });
}
