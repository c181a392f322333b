import type { ConnectionOptions, TlsOptions } from 'node:tls';
import { ConfigError } from '../src/errors.js';
import { identityFromCertificate, type Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import { clientTlsOptions, loadTlsMaterial, serverTlsOptions, type TlsFiles } from '../src/pki/index.js';
import type { ConnectorConfig } from './options.js';

/** What the connector builds from its certificate, key, trust bundles and CRLs. */
export interface ConnectorMaterial {
  /** From the outer certificate: this connector's org and id. */
  identity: Identity;
  /** Options of every dial to a relay (the relay must present a relay certificate). */
  relayTls: ConnectionOptions;
  /** Options of the inner TLS server (serverTlsOptions of the inner material, half-open kept). */
  innerTls: TlsOptions;
  /** Every file read, so a watcher can reload when one changes. */
  files: string[];
}

/**
 * Loads and checks every TLS file of the config: the outer certificate must be a connector
 * client certificate, the inner one (by default the same) must name this very connector as a
 * server. With `keep`, a reload must not change the identity: a running connector's org and id
 * are fixed (agents ask for it by id; the relay registered it).
 */
export function loadConnectorMaterial(
  config: ConnectorConfig,
  resolve: (path: string) => string,
  o: { logger?: Logger; keep?: Identity } = {},
): ConnectorMaterial {
  const files = (f: { cert: string; key: string; ca: string; crl?: string | readonly string[] | undefined }): TlsFiles => ({
    cert: resolve(f.cert),
    key: resolve(f.key),
    ca: resolve(f.ca),
    ...(f.crl === undefined ? {} : { crl: typeof f.crl === 'string' ? resolve(f.crl) : f.crl.map(resolve) }),
  });
  const outerFiles = files(config.tls);
  const outer = loadTlsMaterial(outerFiles);
  const identity = identityFromCertificate(outer.cert, { trustDomain: config.trustDomain, presentedAs: 'connector-client' });
  if (o.keep && identity.uri !== o.keep.uri) {
    throw new ConfigError(
      'POSTERN_ERR_CONFIG_INVALID',
      `${outerFiles.cert} now names ${identity.uri}, but this connector runs as ${o.keep.uri}: restart it to change identity`,
      { details: { path: outerFiles.cert } },
    );
  }

  const inner = config.inner;
  const innerFiles = files({
    cert: inner.cert ?? config.tls.cert,
    key: inner.key ?? config.tls.key,
    ca: inner.ca ?? config.tls.ca,
    // The outer CRL covers the outer CA only: a separate inner CA brings its own CRL or none.
    crl: inner.ca === undefined ? (inner.crl ?? config.tls.crl) : inner.crl,
  });
  if (inner.ca !== undefined && inner.crl === undefined) {
    o.logger?.warn({ event: 'connector.inner-no-crl', ca: innerFiles.ca }, 'inner.ca has no inner.crl: revoked agent certificates of that CA are not refused');
  }
  const innerMaterial = loadTlsMaterial(innerFiles);
  // Agents require the inner certificate to name this very connector, as a server.
  identityFromCertificate(innerMaterial.cert, {
    trustDomain: config.trustDomain,
    presentedAs: 'connector-inner-server',
    ...(identity.org ? { org: identity.org } : {}),
    name: identity.name,
  });

  const paths = new Set<string>();
  for (const f of [outerFiles, innerFiles]) {
    paths.add(f.cert).add(f.key).add(f.ca);
    for (const crl of f.crl === undefined ? [] : Array.isArray(f.crl) ? f.crl : [f.crl]) paths.add(crl);
  }
  return {
    identity,
    relayTls: clientTlsOptions(outer, { trustDomain: config.trustDomain, presentedAs: 'relay-server' }),
    innerTls: { ...serverTlsOptions(innerMaterial, { handshakeTimeoutMs: config.limits.innerHandshakeTimeoutMs }), allowHalfOpen: true },
    files: [...paths],
  };
}
