import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseYamlWithSchema } from '../../../src/config/yaml.js';
import { validateOptions } from '../../../src/options.js';
import { compileAllowlist } from '../../../src/policy/index.js';
import { tunnelUrl } from '../../../connector/index.js';
import { connectorConfigSchema } from '../../../connector/options.js';

const EXAMPLE = resolve(import.meta.dirname, '../../../deployments/examples/connector.yaml');
const minimal = {
  trustDomain: 'hospital.example',
  relays: ['wss://relay.example'],
  tls: { cert: 'c', key: 'k', ca: 'ca' },
  allowlist: { targets: ['postgres.internal:5432'] },
};
const parse = (input: unknown) => validateOptions(connectorConfigSchema, input, 'connector.yaml');

describe('connector config', () => {
  it('deployments/examples/connector.yaml is schema-valid and its allowlist compiles', () => {
    const config = parseYamlWithSchema(readFileSync(EXAMPLE, 'utf8'), EXAMPLE, connectorConfigSchema);
    expect(config.relays).toHaveLength(2);
    expect(() => compileAllowlist(config.allowlist)).not.toThrow();
  });

  it('fills safe defaults for every limit', () => {
    expect(parse(minimal)).toMatchObject({
      inner: {},
      dial: { connectTimeoutMs: 10_000, keepAliveMs: 30_000 },
      reconnect: { initialDelayMs: 250, maxDelayMs: 30_000, resetAfterMs: 10_000 },
      limits: { handshakeTimeoutMs: 10_000, innerHandshakeTimeoutMs: 10_000, maxConcurrentHandshakes: 64, shutdownGraceMs: 5_000, session: {} },
      reload: { intervalMs: 2_000 },
      log: { level: 'info', format: 'json' },
    });
  });

  it.each([
    ['a misspelled key', { ...minimal, relay: ['wss://x'] }, 'POSTERN_ERR_CONFIG_UNKNOWN_KEY', /"relay"/],
    ['a ws:// relay', { ...minimal, relays: ['ws://relay.example'] }, 'POSTERN_ERR_CONFIG_INVALID', /relays\.0.*wss:\/\//],
    ['a relay listed twice', { ...minimal, relays: ['wss://a', 'wss://a'] }, 'POSTERN_ERR_CONFIG_INVALID', /listed twice/],
    ['an empty allowlist', { ...minimal, allowlist: { targets: [] } }, 'POSTERN_ERR_CONFIG_INVALID', /allowlist\.targets.*no "allow all"/],
    ['an inner cert without its key', { ...minimal, inner: { cert: 'x' } }, 'POSTERN_ERR_CONFIG_INVALID', /inner.*together/],
    ['a hosts entry that is not an address', { ...minimal, hosts: { 'db.internal': 'db2.internal' } }, 'POSTERN_ERR_CONFIG_INVALID', /hosts\.db\.internal.*IPv4 or IPv6/],
    ['initialDelayMs above maxDelayMs', { ...minimal, reconnect: { initialDelayMs: 5_000, maxDelayMs: 1_000 } }, 'POSTERN_ERR_CONFIG_INVALID', /reconnect\.initialDelayMs/],
    ['a zero handshake bound', { ...minimal, limits: { maxConcurrentHandshakes: 0 } }, 'POSTERN_ERR_CONFIG_INVALID', /limits\.maxConcurrentHandshakes/],
  ])('refuses %s, naming the field', (_what, input, code, message) => {
    let caught: unknown;
    try {
      parse(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toMatchObject({ code });
    expect((caught as Error).message).toMatch(message);
  });

  it('dials the tunnel path of each relay URL, keeping a path prefix', () => {
    expect(tunnelUrl('wss://relay.example')).toBe('wss://relay.example/v1/tunnel');
    expect(tunnelUrl('wss://relay.example:8443/')).toBe('wss://relay.example:8443/v1/tunnel');
    expect(tunnelUrl('wss://gw.example/postern/')).toBe('wss://gw.example/postern/v1/tunnel');
  });
});
