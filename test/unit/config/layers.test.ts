import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { configEnvName, envName, layerConfig, loadLayeredConfig, type FlagValue } from '../../../src/config/layers.js';
import { envSegment, objectFields } from '../../../src/config/fields.js';
import { ConfigError } from '../../../src/errors.js';
import { relayConfigSchema } from '../../../relay/options.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { agentOptionsSchema } from '../../../agent-lib/options.js';

const RELAY_YAML = [
  'trustDomain: hospital.example',
  'listen: "0.0.0.0:8443"',
  'tls:',
  '  cert: pki/relay.crt',
  '  key: pki/relay.key',
  '  ca: pki/ca.crt',
  'policy:',
  '  file: policy.yaml',
  'limits:',
  '  handshakeTimeoutMs: 10000',
  '',
].join('\n');

const relayFile = { name: 'relay.yaml', text: RELAY_YAML };
const relayFlags = (values: { listen?: string; logLevel?: string; tapDir?: string } = {}): FlagValue[] => [
  { flag: '--listen', path: 'listen', value: values.listen },
  { flag: '--log-level', path: 'log.level', value: values.logLevel },
  { flag: '--tap-dir', path: 'tap.dir', value: values.tapDir },
];

function failure(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

/** Every field path of a schema, nested objects included. */
function fieldPaths(schema: z.ZodType, prefix: string[] = []): string[][] {
  const fields = objectFields(schema);
  if (!fields) return [];
  return Object.entries(fields).flatMap(([name, field]) => [[...prefix, name], ...fieldPaths(field, [...prefix, name])]);
}

describe('env names', () => {
  it('are POSTERN_<PROGRAM>_ + upper snake case, nesting joined by __', () => {
    expect(envName('connector', ['limits', 'handshakeTimeoutMs'])).toBe('POSTERN_CONNECTOR_LIMITS__HANDSHAKE_TIMEOUT_MS');
    expect(envName('relay', ['listen'])).toBe('POSTERN_RELAY_LISTEN');
    expect(envName('relay', ['limits', 'session', 'maxOpensPerSecond'])).toBe('POSTERN_RELAY_LIMITS__SESSION__MAX_OPENS_PER_SECOND');
    expect(configEnvName('agent')).toBe('POSTERN_AGENT_CONFIG');
    expect(envSegment('trustDomain')).toBe('TRUST_DOMAIN');
    expect(envSegment('ipv6Only')).toBe('IPV6_ONLY');
  });

  it.each([
    ['relay', relayConfigSchema],
    ['connector', connectorConfigSchema],
    ['agent', agentOptionsSchema],
  ] as const)('name every field of the %s schema unambiguously', (program, schema) => {
    const names = fieldPaths(schema).map((p) => envName(program, p));
    expect(new Set(names).size).toBe(names.length);
    expect(names).not.toContain(configEnvName(program));
  });

  it('a POSTERN_RELAY_* variable is either applied or refused, never ignored (fast-check)', () => {
    const known = fieldPaths(relayConfigSchema).map((p) => envName('relay', p));
    const segment = fc.oneof(fc.constantFrom(...known.map((n) => n.slice('POSTERN_RELAY_'.length))), fc.stringMatching(/^[A-Z][A-Z0-9_]{0,20}$/));
    fc.assert(
      fc.property(segment, fc.constantFrom('1', 'x', '[a]', '{a: 1}', 'true'), (rest, value) => {
        const name = `POSTERN_RELAY_${rest}`;
        fc.pre(name !== configEnvName('relay'));
        let applied = false;
        try {
          applied = layerConfig(relayConfigSchema, 'relay', relayFile, { [name]: value }).overrides.some((o) => o.source === `env ${name}`);
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
          expect((err as Error).message).toContain(name);
          return;
        }
        expect(applied).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('every field of every program, set from env', () => {
  const examples = resolve(import.meta.dirname, '../../../deployments/examples');
  it.each([
    ['relay', relayConfigSchema],
    ['connector', connectorConfigSchema],
    ['agent', agentOptionsSchema],
  ] as const)('%s: each variable, with each kind of value, is applied or refused naming itself', (program, schema) => {
    const file = { name: `${program}.yaml`, text: readFileSync(join(examples, `${program}.yaml`), 'utf8') };
    for (const path of fieldPaths(schema)) {
      const name = envName(program, path);
      for (const value of ['1', 'x', '[a]', '{a: 1}', 'true', 'false', '{}']) {
        let applied: boolean;
        try {
          applied = layerConfig(schema, program, file, { [name]: value }).overrides.some((o) => o.source === `env ${name}`);
        } catch (err) {
          expect(err, `${name}=${value}`).toBeInstanceOf(ConfigError);
          expect((err as Error).message, `${name}=${value}`).toContain(name);
          continue;
        }
        expect(applied, `${name}=${value}`).toBe(true);
      }
    }
  });

  it('a field that is false or an object (admin) is set whole or field by field', () => {
    const off = layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_ADMIN: 'false' });
    expect(off.config.admin).toBe(false);
    const listen = layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_ADMIN__LISTEN: '0.0.0.0:9090' });
    expect(listen.config.admin).toEqual({ listen: { host: '0.0.0.0', port: 9090 } });
    const err = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_ADMIN__LISTN: '0.0.0.0:9090' }));
    expect(err.message).toMatch(/^env POSTERN_RELAY_ADMIN__LISTN: no setting "LISTN" in "admin" \(known: LISTEN\)/);
  });
});

describe('layering: file, then env, then flags', () => {
  it('takes the file alone, with the schema defaults', () => {
    const { config, overrides, isSet } = layerConfig(relayConfigSchema, 'relay', relayFile, {});
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 8443 });
    expect(config.log).toEqual({ level: 'info', format: 'json' });
    expect(overrides).toEqual([]);
    expect(isSet('log.format')).toBe(false);
    expect(isSet('limits.handshakeTimeoutMs')).toBe(true);
    expect(Object.isFrozen(config.limits)).toBe(true);
  });

  it('env overrides the file and a flag overrides env', () => {
    const env = { POSTERN_RELAY_LISTEN: '127.0.0.1:9443', POSTERN_RELAY_LOG__LEVEL: 'debug', POSTERN_RELAY_LIMITS__HANDSHAKE_TIMEOUT_MS: '5000' };
    const envOnly = layerConfig(relayConfigSchema, 'relay', relayFile, env, relayFlags());
    expect(envOnly.config.listen).toEqual({ host: '127.0.0.1', port: 9443 });
    expect(envOnly.config.limits.handshakeTimeoutMs).toBe(5000);
    expect(envOnly.config.limits.maxSessions).toBe(10_000); // siblings in the file and defaults survive
    expect(envOnly.config.log.level).toBe('debug');

    const withFlags = layerConfig(relayConfigSchema, 'relay', relayFile, env, relayFlags({ listen: '[::1]:0', logLevel: 'warn' }));
    expect(withFlags.config.listen).toEqual({ host: '::1', port: 0 });
    expect(withFlags.config.log.level).toBe('warn');
    expect(withFlags.isSet('log.level')).toBe(true);
    // Sources are named, values never (they may be secrets).
    expect(withFlags.overrides).toEqual(expect.arrayContaining([
      { field: 'listen', source: 'flag --listen' },
      { field: 'log.level', source: 'flag --log-level' },
      { field: 'limits.handshakeTimeoutMs', source: 'env POSTERN_RELAY_LIMITS__HANDSHAKE_TIMEOUT_MS' },
    ]));
    expect(withFlags.overrides.some((o) => o.source === 'env POSTERN_RELAY_LISTEN')).toBe(false);
  });

  it('reads values as YAML flow, but text fields verbatim', () => {
    const { config } = layerConfig(connectorConfigSchema, 'connector', undefined, {
      POSTERN_CONNECTOR_TRUST_DOMAIN: 'hospital.example',
      POSTERN_CONNECTOR_RELAYS: '[wss://relay-1.example:443, "wss://relay-2.example:443"]',
      POSTERN_CONNECTOR_TLS: '{cert: c.crt, key: c.key, ca: ca.crt}',
      POSTERN_CONNECTOR_TLS__CRL: '[crl-a.pem, crl-b.pem]',
      POSTERN_CONNECTOR_ALLOWLIST__TARGETS: '["postgres.internal:5432", "*.db.internal:5432"]',
      POSTERN_CONNECTOR_HOSTS: '{postgres.internal: 10.20.1.15}',
      POSTERN_CONNECTOR_LIMITS__SESSION__MAX_STREAMS: '2048',
    });
    expect(config.relays).toEqual(['wss://relay-1.example:443', 'wss://relay-2.example:443']);
    expect(config.tls).toEqual({ cert: 'c.crt', key: 'c.key', ca: 'ca.crt', crl: ['crl-a.pem', 'crl-b.pem'] });
    expect(config.allowlist.targets).toHaveLength(2);
    expect(config.hosts).toEqual({ 'postgres.internal': '10.20.1.15' });
    expect(config.limits.session.maxStreams).toBe(2048);

    // A text field keeps "0123" and "true" as typed; a number field reads 0x10 as YAML does.
    const schema = z.strictObject({ name: z.string(), flag: z.boolean(), n: z.number(), level: z.enum(['a', 'true']) });
    const text = layerConfig(schema, 'x', undefined, { POSTERN_X_NAME: '0123', POSTERN_X_FLAG: 'true', POSTERN_X_N: '0x10', POSTERN_X_LEVEL: 'true' });
    expect(text.config).toEqual({ name: '0123', flag: true, n: 16, level: 'true' });
  });

  it('a deeper variable refines a whole object set by a shallower one, whatever their order', () => {
    const env = { POSTERN_RELAY_LIMITS__SESSION__MAX_STREAMS: '7', POSTERN_RELAY_LIMITS: '{maxSessions: 3, session: {maxStreams: 1, pingIntervalMs: 9}}' };
    const { config, overrides } = layerConfig(relayConfigSchema, 'relay', relayFile, env);
    expect(config.limits.maxSessions).toBe(3);
    expect(config.limits.handshakeTimeoutMs).toBe(10_000); // the whole object replaced the file's, the default came back
    expect(config.limits.session).toEqual({ maxStreams: 7, pingIntervalMs: 9 });
    expect(overrides.map((o) => o.field)).toEqual(['limits', 'limits.session.maxStreams']);
  });

  it('ignores other programs\' variables', () => {
    expect(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_CONNECTOR_NOPE: '1', POSTERN_RELAYS_X: '1', HOME: '/root' })).not.toThrow();
  });
});

describe('errors name the source and the field', () => {
  it('an unknown POSTERN_RELAY_* variable is an error naming it and the known settings', () => {
    const err = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_LISTN: '0.0.0.0:1' }));
    expect(err.code).toBe('POSTERN_ERR_CONFIG_UNKNOWN_KEY');
    expect(err.message).toMatch(/^env POSTERN_RELAY_LISTN: no setting "LISTN" at the top level \(known: TRUST_DOMAIN, LISTEN, TLS,/);
  });

  it('a single underscore where nesting needs two gets a hint', () => {
    const err = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_LIMITS_MAX_SESSIONS: '5' }));
    expect(err.code).toBe('POSTERN_ERR_CONFIG_UNKNOWN_KEY');
    expect(err.message).toContain('did you mean POSTERN_RELAY_LIMITS__MAX_SESSIONS?');
    const deeper = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_LIMITS__SESSION__MAX_STREEMS: '5' }));
    expect(deeper.message).toMatch(/POSTERN_RELAY_LIMITS__SESSION__MAX_STREEMS: no setting "MAX_STREEMS" in "limits\.session" \(known: MAX_STREAMS,/);
  });

  it('a variable reaching inside a field that is set whole is refused', () => {
    const err = failure(() => layerConfig(connectorConfigSchema, 'connector', undefined, { POSTERN_CONNECTOR_HOSTS__DB: '10.0.0.1' }));
    expect(err.code).toBe('POSTERN_ERR_CONFIG_UNKNOWN_KEY');
    expect(err.message).toContain('"hosts" is set whole (for example POSTERN_CONNECTOR_HOSTS=');
  });

  it('a bad value from env, a flag or the file names that source and the field', () => {
    const env = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_LISTEN: 'nowhere' }, relayFlags()));
    expect(env.code).toBe('POSTERN_ERR_CONFIG_INVALID');
    expect(env.message).toMatch(/^env POSTERN_RELAY_LISTEN: field "listen": expected "host:port"/);

    const flag = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_LISTEN: 'nowhere' }, relayFlags({ listen: 'still-nowhere' })));
    expect(flag.message).toMatch(/^flag --listen: field "listen": expected "host:port"/);

    const file = failure(() => layerConfig(relayConfigSchema, 'relay', { name: 'relay.yaml', text: RELAY_YAML.replace('10000', '-1') }, {}));
    expect(file.message).toMatch(/^relay\.yaml:10:23: field "limits\.handshakeTimeoutMs": /);

    const num = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_LIMITS__MAX_SESSIONS: 'many' }));
    expect(num.message).toMatch(/^env POSTERN_RELAY_LIMITS__MAX_SESSIONS: field "limits\.maxSessions": .*number/);
  });

  it('an unknown key inside a YAML value from env names the variable', () => {
    const err = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_TLS: '{cert: a, key: b, ca: c, crls: d}' }));
    expect(err.code).toBe('POSTERN_ERR_CONFIG_UNKNOWN_KEY');
    expect(err.message).toBe('env POSTERN_RELAY_TLS: unknown key "tls.crls"');
  });

  it('an unknown key in the file keeps its file:line:col', () => {
    const err = failure(() => layerConfig(relayConfigSchema, 'relay', { name: 'relay.yaml', text: `${RELAY_YAML}lsten: x\n` }, { POSTERN_RELAY_LISTEN: '127.0.0.1:1' }));
    expect(err.message).toBe('relay.yaml:11:1: unknown key "lsten"');
  });

  it('a missing field says how to set it in every layer', () => {
    const err = failure(() => layerConfig(relayConfigSchema, 'relay', undefined, { POSTERN_RELAY_TRUST_DOMAIN: 'hospital.example' }, relayFlags()));
    expect(err.code).toBe('POSTERN_ERR_CONFIG_INVALID');
    expect(err.message).toContain('relay settings (no config file): field "tls": missing (expected object); set it in a config file (--config or POSTERN_RELAY_CONFIG), or with env POSTERN_RELAY_TLS');
    const inFile = failure(() => layerConfig(relayConfigSchema, 'relay', { name: 'relay.yaml', text: RELAY_YAML.replace('  key: pki/relay.key\n', '') }, {}));
    expect(inFile.message).toBe('relay.yaml:4:3: field "tls.key": missing (expected string); set it in the config file, or with env POSTERN_RELAY_TLS__KEY');
  });

  it('a field missing from an object that variables created names those variables (regression: POSTERN_RELAY_TAP__MAX_BYTES=1 alone blamed relay.yaml:1:1)', () => {
    const err = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_TAP__MAX_BYTES: '1' }));
    expect(err.message).toBe('env POSTERN_RELAY_TAP__MAX_BYTES: field "tap.dir": missing (expected string); set it in the config file, or with env POSTERN_RELAY_TAP__DIR');
    const withFile = failure(() => layerConfig(relayConfigSchema, 'relay', { name: 'relay.yaml', text: `${RELAY_YAML}tap:\n  maxBytes: 5\n` }, { POSTERN_RELAY_TAP__MAX_BYTES: '1' }));
    expect(withFile.message).toMatch(/^relay\.yaml:12:3, env POSTERN_RELAY_TAP__MAX_BYTES: field "tap\.dir": missing/);
  });

  it('a rule comparing fields names the variable that set the other one (regression: POSTERN_CONNECTOR_RECONNECT__MAX_DELAY_MS=1)', () => {
    const file = { name: 'connector.yaml', text: readFileSync(resolve(import.meta.dirname, '../../../deployments/examples/connector.yaml'), 'utf8') };
    const err = failure(() => layerConfig(connectorConfigSchema, 'connector', file, { POSTERN_CONNECTOR_RECONNECT__MAX_DELAY_MS: '1' }));
    expect(err.message).toMatch(/^connector\.yaml:\d+:\d+, env POSTERN_CONNECTOR_RECONNECT__MAX_DELAY_MS: field "reconnect\.initialDelayMs": initialDelayMs must not exceed maxDelayMs$/);
  });

  it('an object-level rule names the variables inside it and the file', () => {
    const schema = z.strictObject({ inner: z.strictObject({ cert: z.string().optional(), key: z.string().optional() }).refine((o) => (o.cert === undefined) === (o.key === undefined), 'give "cert" and "key" together') });
    const err = failure(() => layerConfig(schema, 'x', { name: 'x.yaml', text: 'inner: {}\n' }, { POSTERN_X_INNER__CERT: 'a' }));
    expect(err.message).toBe('x.yaml:1:8, env POSTERN_X_INNER__CERT: field "inner": give "cert" and "key" together');
  });

  it('a refused value that the schema quotes is scrubbed of passwords and keys', () => {
    const schema = z.strictObject({ proxy: z.string().refine((u) => u.startsWith('http://'), { error: (i) => `expected an http:// URL, got "${String(i.input)}"` }) });
    const err = failure(() => layerConfig(schema, 'x', undefined, { POSTERN_X_PROXY: 'https://alice:s3cret@proxy.example:3128' }));
    expect(err.message).toBe('env POSTERN_X_PROXY: field "proxy": expected an http:// URL, got "https://alice:[redacted]@proxy.example:3128"');
    expect(JSON.stringify(err.details)).not.toContain('s3cret');
  });

  it('empty values and YAML errors are refused, without echoing the value', () => {
    const empty = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_LISTEN: '' }));
    expect(empty.message).toBe("env POSTERN_RELAY_LISTEN: empty value; unset the variable to keep the file's value or the default");
    const yaml = failure(() => layerConfig(relayConfigSchema, 'relay', relayFile, { POSTERN_RELAY_LIMITS: '{maxSessions: [s3cret' }));
    expect(yaml.message).toMatch(/^env POSTERN_RELAY_LIMITS:1:\d+: invalid YAML/);
    expect(yaml.message).not.toContain('s3cret');
  });
});

describe('loadLayeredConfig', () => {
  it('reads --config, else POSTERN_<PROGRAM>_CONFIG, relative to the working directory; baseDir is the file\'s', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'postern-layers-'));
    try {
      await writeFile(join(dir, 'relay.yaml'), RELAY_YAML);
      await writeFile(join(dir, 'other.yaml'), RELAY_YAML.replace('0.0.0.0:8443', '127.0.0.1:1'));
      const viaEnv = await loadLayeredConfig({ program: 'relay', schema: relayConfigSchema, env: { POSTERN_RELAY_CONFIG: 'relay.yaml' }, cwd: dir });
      expect(viaEnv.file).toBe('relay.yaml');
      expect(viaEnv.baseDir).toBe(dir);
      expect(viaEnv.config.listen.port).toBe(8443);
      const viaFlag = await loadLayeredConfig({ program: 'relay', schema: relayConfigSchema, configFlag: join(dir, 'other.yaml'), env: { POSTERN_RELAY_CONFIG: 'relay.yaml' }, cwd: '/' });
      expect(viaFlag.config.listen.port).toBe(1);

      const none = await loadLayeredConfig({ program: 'relay', schema: z.strictObject({ a: z.number().default(1) }), env: {}, cwd: dir });
      expect(none).toMatchObject({ file: undefined, baseDir: dir, config: { a: 1 } });

      await expect(loadLayeredConfig({ program: 'relay', schema: relayConfigSchema, env: { POSTERN_RELAY_CONFIG: 'missing.yaml' }, cwd: dir })).rejects.toMatchObject({
        code: 'POSTERN_ERR_FILE_READ',
        message: expect.stringContaining('missing.yaml: ENOENT'),
      });
      await expect(loadLayeredConfig({ program: 'relay', schema: relayConfigSchema, env: { POSTERN_RELAY_CONFIG: '' }, cwd: dir })).rejects.toMatchObject({
        code: 'POSTERN_ERR_CONFIG_INVALID',
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a flag naming a field the schema lacks is a bug, reported as one', () => {
    const err = (() => {
      try {
        layerConfig(relayConfigSchema, 'relay', relayFile, {}, [{ flag: '--nope', path: 'no.such', value: 'x' }]);
      } catch (e) {
        return e as { code: string };
      }
      return undefined;
    })();
    expect(err?.code).toBe('POSTERN_ERR_INTERNAL');
  });
});
