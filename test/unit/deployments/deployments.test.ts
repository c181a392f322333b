import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, posix, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { ADMIN_DEFAULT_LISTEN } from '../../../src/admin/config.js';
import { layerConfig } from '../../../src/config/layers.js';
import { parseYamlWithSchema } from '../../../src/config/yaml.js';
import { parsePolicy } from '../../../src/policy/index.js';
import { relayConfigSchema } from '../../../relay/options.js';
import { connectorConfigSchema } from '../../../connector/options.js';

const root = resolve(import.meta.dirname, '../../..');
const deployments = join(root, 'deployments');
type Doc = Record<string, any>;

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

/** Every document of a YAML file; a syntax error or a duplicate key fails the test, naming the file. */
function docs(path: string): Doc[] {
  const all = parseAllDocuments(readFileSync(path, 'utf8'), { uniqueKeys: true, merge: true }); // compose uses merge keys (<<)
  const list = Array.isArray(all) ? all : [all];
  for (const d of list) expect(d.errors.map((e) => `${relative(root, path)}: ${e.message}`)).toEqual([]);
  return list.map((d) => d.toJS() as Doc).filter((d) => d !== null);
}

const manifests = (file: string): Doc[] => docs(join(deployments, 'kubernetes', file));
const kind = (list: Doc[], k: string): Doc[] => list.filter((d) => d['kind'] === k);

/** `key=value` lines of a systemd unit, by key (a key may repeat). */
function unit(file: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const raw of readFileSync(join(deployments, 'systemd', file), 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith('[')) continue;
    const at = line.indexOf('=');
    const key = line.slice(0, at);
    out.set(key, [...(out.get(key) ?? []), line.slice(at + 1)]);
  }
  return out;
}

const drainGraceMs = relayConfigSchema.parse({ trustDomain: 'a.example', tls: { cert: 'c', key: 'k', ca: 'a' }, policy: { file: 'p' } }).drain.graceMs;

describe('every YAML file under deployments/', () => {
  const files = walk(deployments).filter((f) => /\.ya?ml$/.test(f));
  it('there are the expected ones', () => {
    const names = files.map((f) => relative(deployments, f).split('\\').join('/'));
    expect(names).toEqual(expect.arrayContaining([
      'examples/relay.yaml', 'examples/connector.yaml', 'examples/agent.yaml', 'examples/policy.yaml',
      'compose/compose.yaml', 'kubernetes/relay.yaml', 'kubernetes/connector.yaml',
      'kubernetes/relay-secret.template.yaml', 'kubernetes/connector-secret.template.yaml',
    ]));
  });
  it.each(files.map((f) => [relative(deployments, f), f]))('%s parses (every document, no duplicate key)', (_name, file) => {
    expect(docs(file).length).toBeGreaterThan(0);
  });
});

describe('kubernetes', () => {
  const relayDocs = manifests('relay.yaml');
  const connectorDocs = manifests('connector.yaml');
  const relayCm = kind(relayDocs, 'ConfigMap')[0]!;
  const relayConfig = parseYamlWithSchema(relayCm['data']['relay.yaml'], 'ConfigMap postern-relay relay.yaml', relayConfigSchema);
  const connectorCm = kind(connectorDocs, 'ConfigMap')[0]!;
  const connectorConfig = parseYamlWithSchema(connectorCm['data']['connector.yaml'], 'ConfigMap postern-connector connector.yaml', connectorConfigSchema);

  it('the configs embedded in the ConfigMaps validate against our schemas (and the policy compiles)', () => {
    const policy = parsePolicy(relayCm['data']['policy.yaml'], 'ConfigMap postern-relay policy.yaml');
    expect(policy.trustDomain).toBe(relayConfig.trustDomain);
    expect(connectorConfig.trustDomain).toBe(relayConfig.trustDomain);
  });

  it.each([
    ['relay', relayDocs, () => relayConfig.admin],
    ['connector', connectorDocs, () => connectorConfig.admin],
  ] as const)('%s Deployment: probes on /healthz and /readyz at the admin port the config listens on (0.0.0.0: the kubelet probes from outside the pod)', (_name, list, admin) => {
    const [deployment] = kind(list, 'Deployment');
    const container = deployment!['spec']['template']['spec']['containers'][0];
    const adminPort = container['ports'].find((p: Doc) => p['name'] === 'admin');
    expect(container['livenessProbe']['httpGet']).toEqual({ path: '/healthz', port: 'admin' });
    expect(container['readinessProbe']['httpGet']).toEqual({ path: '/readyz', port: 'admin' });
    const listen = admin();
    expect(listen).not.toBe(false);
    expect(listen && listen.listen).toEqual({ host: '0.0.0.0', port: adminPort['containerPort'] });
  });

  it.each([['relay', relayDocs], ['connector', connectorDocs]] as const)('%s Deployment runs as non-root, no privilege escalation, read-only root, no capability', (_name, list) => {
    const spec = kind(list, 'Deployment')[0]!['spec']['template']['spec'];
    expect(spec['securityContext']).toMatchObject({ runAsNonRoot: true, runAsUser: expect.any(Number) });
    expect(spec['securityContext']['runAsUser']).not.toBe(0);
    expect(spec['automountServiceAccountToken']).toBe(false);
    for (const c of spec['containers']) {
      expect(c['securityContext']).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    }
  });

  it('relay: 2 replicas, a LoadBalancer 443 → 8443 (the port it listens on), grace period longer than preStop + drain', () => {
    const deployment = kind(relayDocs, 'Deployment')[0]!;
    expect(deployment['spec']['replicas']).toBe(2);
    const spec = deployment['spec']['template']['spec'];
    const container = spec['containers'][0];
    const tunnel = container['ports'].find((p: Doc) => p['name'] === 'tunnel');
    expect(tunnel['containerPort']).toBe(relayConfig.listen.port);
    const [service] = kind(relayDocs, 'Service');
    expect(service!['spec']['type']).toBe('LoadBalancer');
    expect(service!['spec']['ports']).toEqual([{ name: 'tunnel', port: 443, targetPort: 'tunnel', protocol: 'TCP' }]);
    expect(service!['spec']['selector']).toEqual(deployment['spec']['selector']['matchLabels']);
    const preStopSeconds = Number(container['lifecycle']['preStop']['exec']['command'][1]);
    expect(spec['terminationGracePeriodSeconds'] * 1000).toBeGreaterThan(preStopSeconds * 1000 + relayConfig.drain.graceMs);
  });

  it('connector: grace period longer than shutdownGraceMs', () => {
    const spec = kind(connectorDocs, 'Deployment')[0]!['spec']['template']['spec'];
    expect(spec['terminationGracePeriodSeconds'] * 1000).toBeGreaterThan(connectorConfig.limits.shutdownGraceMs);
  });

  it.each([
    ['relay', relayDocs, 'relay-secret.template.yaml', () => relayConfig.tls],
    ['connector', connectorDocs, 'connector-secret.template.yaml', () => connectorConfig.tls],
  ] as const)('%s: the config names files of its ConfigMap and Secret mounts, and the Secret template holds every one', (_name, list, secretFile, tls) => {
    const spec = kind(list, 'Deployment')[0]!['spec']['template']['spec'];
    const mounts = new Map<string, string>(spec['containers'][0]['volumeMounts'].map((m: Doc) => [m['name'], m['mountPath']]));
    const volumes = new Map<string, Doc>(spec['volumes'].map((v: Doc) => [v['name'], v]));
    const [secret] = kind(manifests(secretFile), 'Secret');
    expect(volumes.get('pki')!['secret']['secretName']).toBe(secret!['metadata']['name']);
    const files = [tls().cert, tls().key, tls().ca, ...[tls().crl ?? []].flat()];
    for (const file of files) {
      expect(posix.dirname(file)).toBe(mounts.get('pki'));
      expect(Object.keys(secret!['stringData'])).toContain(posix.basename(file));
    }
    const cm = kind(list, 'ConfigMap')[0]!;
    expect(volumes.get('config')!['configMap']['name']).toBe(cm['metadata']['name']);
    const env = spec['containers'][0]['env'].find((e: Doc) => e['name'].endsWith('_CONFIG'));
    expect(Object.keys(cm['data'])).toContain(posix.basename(env['value']));
    expect(posix.dirname(env['value'])).toBe(mounts.get('config'));
  });

  it('the relay policy file is in the relay ConfigMap mount', () => {
    const spec = kind(relayDocs, 'Deployment')[0]!['spec']['template']['spec'];
    const config = spec['containers'][0]['volumeMounts'].find((m: Doc) => m['name'] === 'config');
    expect(posix.dirname(relayConfig.policy.file)).toBe(config['mountPath']);
    expect(Object.keys(relayCm['data'])).toContain(posix.basename(relayConfig.policy.file));
  });
});

describe('compose', () => {
  const compose = docs(join(deployments, 'compose', 'compose.yaml'))[0]!;
  const services = compose['services'] as Record<string, Doc>;
  const composeDir = join(deployments, 'compose');

  it('runs a one-shot PKI init, a relay, a connector and a PostgreSQL target in order', () => {
    expect(Object.keys(services).sort()).toEqual(['connector', 'pki-init', 'postgres', 'relay']);
    expect(services['pki-init']!['restart']).toBe('no');
    expect(services['pki-init']!['command'][0]).toContain('pki init');
    expect(services['relay']!['depends_on']).toEqual({ 'pki-init': { condition: 'service_completed_successfully' } });
    expect(services['connector']!['depends_on']['relay']).toEqual({ condition: 'service_healthy' });
    expect(services['postgres']!['image']).toMatch(/^postgres:/);
    expect(services['postgres']!['ports']).toBeUndefined(); // reached through the connector only
  });

  it('builds the image from deployments/container/Dockerfile with the repository as context', () => {
    const build = services['relay']!['build'];
    expect(existsSync(join(resolve(composeDir, build['context']), build['dockerfile']))).toBe(true);
    expect(resolve(composeDir, build['context'])).toBe(root);
  });

  it.each([
    ['relay', relayConfigSchema],
    ['connector', connectorConfigSchema],
  ] as const)('%s: the mounted example config with the service\'s POSTERN_* variables validates', (program, schema) => {
    const service = services[program]!;
    const mount = (service['volumes'] as string[]).find((v) => v.endsWith(`/etc/postern/${program}.yaml:ro`))!;
    const file = resolve(composeDir, mount.split(':')[0]!);
    const env = Object.fromEntries(Object.entries((service['environment'] ?? {}) as Record<string, string>).filter(([k]) => k.startsWith('POSTERN_') && k !== 'POSTERN_HEALTHCHECK_URL'));
    const { config } = layerConfig(schema, program, { name: file, text: readFileSync(file, 'utf8') }, env);
    if (program === 'connector') {
      expect((config as { relays: string[] }).relays).toEqual(['wss://relay:8443']);
      expect(services['postgres']!['networks']['default']['aliases']).toContain('postgres.internal');
    }
  });

  it('the relay gets longer to stop than its drain grace; the PKI files the configs name are the ones pki-init copies', () => {
    expect(Number.parseInt(services['relay']!['stop_grace_period'], 10) * 1000).toBeGreaterThan(drainGraceMs);
    const script = services['pki-init']!['command'][0] as string;
    const relay = parseYamlWithSchema(readFileSync(join(deployments, 'examples/relay.yaml'), 'utf8'), 'relay.yaml', relayConfigSchema);
    const connector = parseYamlWithSchema(readFileSync(join(deployments, 'examples/connector.yaml'), 'utf8'), 'connector.yaml', connectorConfigSchema);
    for (const f of [relay.tls.cert, relay.tls.key, connector.tls.cert, connector.tls.key]) expect(script).toContain(basename(f));
  });
});

describe('container image', () => {
  const dockerfile = readFileSync(join(deployments, 'container', 'Dockerfile'), 'utf8');
  const lines = dockerfile.split('\n').filter((l) => !l.trim().startsWith('#'));

  it('is multi-stage on node:20-bookworm-slim, installs production dependencies only, runs as a numeric non-root user', () => {
    expect(lines.filter((l) => /^FROM node:20-bookworm-slim AS \w+/.test(l))).toHaveLength(2);
    expect(dockerfile).toContain('npm ci --omit=dev --ignore-scripts');
    expect(dockerfile).toMatch(/COPY --from=build \/src\/dist \.\/dist/);
    const user = lines.filter((l) => l.startsWith('USER ')).at(-1)!;
    expect(user).toMatch(/^USER [1-9]\d*:[1-9]\d*$/);
  });

  it('copies every directory the compiler builds (a new one would otherwise be missing from the image)', () => {
    const tsconfig = JSON.parse(readFileSync(join(root, 'tsconfig.json'), 'utf8')) as { include: string[] };
    const ignore = readFileSync(join(deployments, 'container', 'Dockerfile.dockerignore'), 'utf8');
    for (const dir of tsconfig.include) {
      expect(dockerfile).toContain(`COPY ${dir} ./${dir}`);
      expect(ignore).toContain(`!${dir}/`);
    }
  });

  it('checks health on the admin /healthz, from inside the container, at the default address', () => {
    const check = lines.find((l) => l.includes('CMD ["node", "-e"'))!;
    expect(dockerfile).toMatch(/^HEALTHCHECK /m);
    expect(check).toContain(`http://${ADMIN_DEFAULT_LISTEN.relay}/healthz`);
    const connector = docs(join(deployments, 'compose', 'compose.yaml'))[0]!['services']['connector'];
    expect(connector['environment']['POSTERN_HEALTHCHECK_URL']).toBe(`http://${ADMIN_DEFAULT_LISTEN.connector}/healthz`);
  });
});

describe('systemd units', () => {
  const hardening: Array<[string, string]> = [
    ['User', 'postern'],
    ['NoNewPrivileges', 'yes'],
    ['ProtectSystem', 'strict'],
    ['ProtectHome', 'yes'],
    ['PrivateTmp', 'yes'],
    ['CapabilityBoundingSet', ''],
    ['AmbientCapabilities', ''],
    ['ExecReload', '/bin/kill -HUP $MAINPID'],
    ['KillSignal', 'SIGTERM'],
  ];

  it.each([
    ['postern-relay.service', 'relay', drainGraceMs],
    ['postern-connector.service', 'connector', parseYamlWithSchema(readFileSync(join(deployments, 'examples/connector.yaml'), 'utf8'), 'c', connectorConfigSchema).limits.shutdownGraceMs],
  ] as const)('%s is hardened, reloads on HUP and outlasts its drain', (file, program, graceMs) => {
    const u = unit(file);
    for (const [key, value] of hardening) expect(u.get(key), key).toEqual([value]);
    expect(u.get('ReadOnlyPaths')![0]).toContain('/etc/postern');
    expect(Number(u.get('TimeoutStopSec')![0]) * 1000).toBeGreaterThan(graceMs);
    expect(u.get('ExecStart')![0]).toMatch(new RegExp(`dist/cli/postern\\.js ${program}\\b`));
    expect(u.get('Environment')).toContain(`POSTERN_${program.toUpperCase()}_CONFIG=/etc/postern/${program}.yaml`);
  });

  it('the connector always restarts; the user comes from the sysusers file', () => {
    expect(unit('postern-connector.service').get('Restart')).toEqual(['always']);
    expect(readFileSync(join(deployments, 'systemd', 'postern.sysusers.conf'), 'utf8')).toMatch(/^u postern /m);
  });

  const analyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));
  it.skipIf(analyze === undefined)('systemd-analyze verify finds nothing to say about either unit', async () => {
    const units = ['postern-relay.service', 'postern-connector.service'].map((f) => join(deployments, 'systemd', f));
    const { stderr } = await promisify(execFile)(analyze!, ['verify', '--man=no', ...units], { timeout: 60_000, cwd: dirname(units[0]!) });
    expect(stderr).toBe('');
  });
});
