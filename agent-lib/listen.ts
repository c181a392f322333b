import type { AddressInfo, Server } from 'node:net';
import { parseListenAddress, type ListenAddress } from '../src/config/schemas.js';
import { ConfigError } from '../src/errors.js';
import { AgentError } from './errors.js';

/** Parses `host:port` / `[v6]:port` (port 0 lets the kernel choose), naming the field on error. */
export function listenAddress(value: string, field: string): ListenAddress {
  const parsed = parseListenAddress(value);
  if (!parsed) {
    throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `${field}: expected "host:port" or "[ipv6]:port" with a port 0-65535, got "${value}"`, { details: { field, value } });
  }
  return parsed;
}

/** Listens and resolves with the address really bound (the real port when 0 was asked). */
export function listenOn(server: Server, address: ListenAddress, what: string): Promise<ListenAddress> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new AgentError('POSTERN_ERR_AGENT_LISTEN', `${what} cannot listen on ${address.host}:${address.port}: ${err.code ?? err.message}`, { cause: err, details: { ...address, errno: err.code } }));
    };
    server.once('error', onError);
    server.listen(address.port, address.host, () => {
      server.off('error', onError);
      const bound = server.address() as AddressInfo;
      resolve({ host: bound.address, port: bound.port });
    });
  });
}
