import { z } from 'zod';
import { listenAddressSchema, parseListenAddress, type ListenAddress } from '../config/schemas.js';
import { ConfigError } from '../errors.js';

/** Defaults: loopback only, one port per kind of process so a relay and a connector can share a host. */
export const ADMIN_DEFAULT_LISTEN = { relay: '127.0.0.1:9090', connector: '127.0.0.1:9091' } as const;

export type AdminConfig = false | { readonly listen: ListenAddress };

/** The `admin` section of relay.yaml / connector.yaml: `{ listen: "host:port" }` (port 0: any), or `false` for none. */
export function adminConfigSchema(defaultListen: string) {
  return z
    .union([z.literal(false), z.strictObject({ listen: listenAddressSchema.prefault(defaultListen) })], {
      error: 'expected false (no admin endpoint) or { listen: "host:port" } with a port 0-65535',
    })
    .prefault({});
}

/** `--admin host:port|off` on the command line. */
export function parseAdminFlag(value: string): AdminConfig {
  if (value === 'off' || value === 'false') return false;
  const listen = parseListenAddress(value);
  if (!listen) throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `--admin: expected host:port (port 0-65535) or "off", got "${value}"`);
  return { listen };
}
