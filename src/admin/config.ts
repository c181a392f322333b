import { z } from 'zod';
import type { FlagValue } from '../config/layers.js';
import { listenAddressSchema, type ListenAddress } from '../config/schemas.js';

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

export const ADMIN_FLAG_HELP = 'admin endpoint host:port (/healthz /readyz /metrics /v1/status; port 0: any), or "off" (overrides the config)';

/**
 * `--admin host:port|off` as config layers (src/config/layers.ts): "off" sets `admin` to false,
 * anything else sets `admin.listen`, validated with the rest of the config.
 */
export function adminFlag(value: string | undefined): FlagValue[] {
  const off = value === 'off' || value === 'false';
  return [
    { flag: '--admin', path: 'admin', value: off ? 'false' : undefined },
    { flag: '--admin', path: 'admin.listen', value: off ? undefined : value },
  ];
}
