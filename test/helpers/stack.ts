import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTestPki, type TestPki } from './pki.js';
import { startPostern, type ChildHandle, type LogLine } from './processes.js';

/** A whole local Postern: a test PKI, a relay and a connector as real child processes. */
export interface Stack {
  pki: TestPki;
  dir: string;
  relay: ChildHandle;
  relayPort: number;
  relayUrl: string;
  connector: ChildHandle;
  tapDir: string;
  /** Writes an agent.yaml for a certificate of the PKI and returns its path. */
  agentConfig(cert: { cert: string; key: string }, name?: string): Promise<string>;
  /** Starts `postern agent forward` and resolves with the local port once it listens. */
  forward(opts: { config: string; connector: string; target: string }): Promise<{ handle: ChildHandle; port: number }>;
  /** Resolves with the relay's audit line matching. */
  relayAudit(match: (line: LogLine) => boolean): Promise<LogLine>;
  stop(): Promise<void>;
}

export interface StackOptions {
  /** Relay policy YAML text; `{{TD}}` is replaced by the trust domain. */
  policy: string;
  /** The connector's allowlist targets. */
  allowlist: string[];
  /** Static name → address overrides of the connector (its `hosts`). */
  hosts?: Record<string, string>;
  /** CRL file(s) the relay loads (default: the PKI's current one). */
  relayCrl?: string | string[];
  /** Trust bundle the relay loads for clients (default: the PKI's CA). */
  relayCa?: string;
  pki?: TestPki;
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const pki = opts.pki ?? (await makeTestPki());
  const dir = join(pki.dir, 'stack');
  const tapDir = join(dir, 'tap');
  await mkdir(tapDir, { recursive: true });
  const relayCert = pki.files('relay', 'relay-1');
  const connectorCert = pki.files('connector', 'hq');

  await writeFile(join(dir, 'policy.yaml'), opts.policy.replaceAll('{{TD}}', pki.trustDomain));
  await writeFile(
    join(dir, 'relay.yaml'),
    yaml({
      trustDomain: pki.trustDomain,
      listen: '127.0.0.1:0',
      tls: { cert: relayCert.cert, key: relayCert.key, ca: opts.relayCa ?? pki.ca, crl: opts.relayCrl ?? pki.crl },
      policy: { file: 'policy.yaml' },
      tap: { dir: tapDir },
      // Any free port (its address is in the admin.listening line): stacks run side by side.
      admin: { listen: '127.0.0.1:0' },
    }),
  );
  const relay = startPostern('relay', ['relay', '--config', join(dir, 'relay.yaml'), '--log-format', 'json', '--log-level', 'debug']);
  const listening = await relay.waitFor('relay.listening');
  const relayPort = Number(listening['port']);
  const relayUrl = `wss://localhost:${relayPort}`;

  await writeFile(
    join(dir, 'connector.yaml'),
    yaml({
      trustDomain: pki.trustDomain,
      relays: [relayUrl],
      tls: { cert: connectorCert.cert, key: connectorCert.key, ca: pki.ca, crl: pki.crl },
      allowlist: { targets: opts.allowlist },
      ...(opts.hosts ? { hosts: opts.hosts } : {}),
      admin: { listen: '127.0.0.1:0' },
    }),
  );
  const connector = startPostern('connector', ['connector', '--config', join(dir, 'connector.yaml'), '--log-format', 'json']);
  const children: ChildHandle[] = [relay, connector];
  await relay.waitFor((l) => l.event === 'tunnel.up');

  return {
    pki,
    dir,
    relay,
    relayPort,
    relayUrl,
    connector,
    tapDir,
    async agentConfig(cert, name = 'agent') {
      const path = join(dir, `${name}.yaml`);
      await writeFile(path, yaml({ trustDomain: pki.trustDomain, relay: relayUrl, tls: { cert: cert.cert, key: cert.key, ca: pki.ca, crl: pki.crl } }));
      return path;
    },
    async forward(f) {
      const handle = startPostern('forward', ['agent', 'forward', '--config', f.config, '--listen', '127.0.0.1:0', '--connector', f.connector, '--target', f.target, '--log-format', 'json']);
      children.push(handle);
      const line = await handle.waitFor('forward.listening');
      const address = line['address'] as { port: number } | string;
      const port = typeof address === 'string' ? Number(address.slice(address.lastIndexOf(':') + 1)) : address.port;
      return { handle, port };
    },
    relayAudit: (match) => relay.waitFor((l) => l['audit'] === true && match(l)),
    async stop() {
      await Promise.all(children.map((c) => c.stop('SIGTERM')));
      if (!opts.pki) await pki.cleanup();
    },
  };
}

/** Config files are YAML; JSON is YAML, and needs no extra code here. */
function yaml(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
