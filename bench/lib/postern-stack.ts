/**
 * Postern as it runs in production, for the bench: `postern relay`, `postern connector` and
 * `postern agent forward` as real processes of the built CLI, with certificates from our own
 * PKI code. The only additions are the gc hook (bench/lib/gc-hook.ts, to read memory after a
 * full GC) and, on request, `--cpu-prof`.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentOptions } from '../../agent-lib/index.js';
import { Proc, type Line } from './process.js';

const POSTERN_BIN = new URL('../../cli/postern.js', import.meta.url).pathname;
const GC_HOOK = new URL('./gc-hook.js', import.meta.url).href;

export const TRUST_DOMAIN = 'bench.example';
export const ORG = 'bench';
export const CONNECTOR = 'hq';
/** Every target the bench reaches is a loopback port of its own processes. */
const TARGETS = ['127.0.0.1:1024-65535'];

/**
 * Limits the bench must lift, and only those: streams per session and opens per second (the
 * scale run holds tens of thousands of streams on one tunnel, opened as fast as they go).
 * Windows, frame sizes, timeouts and everything else keep the product's defaults.
 */
export function sessionLimits(maxStreams: number): { maxStreams: number; maxOpensPerSecond: number } {
  return { maxStreams, maxOpensPerSecond: 1_000_000 };
}

export interface StackFiles {
  ca: string;
  crl: string;
  relay: { cert: string; key: string };
  connector: { cert: string; key: string };
  user: { cert: string; key: string };
}

export interface StackOptions {
  dir: string;
  files: StackFiles;
  maxStreams: number;
  /** Directory for `--cpu-prof` profiles of relay, connector and forwards; none when unset. */
  cpuProfDir?: string;
}

/** Config files are YAML; JSON is YAML. */
const yaml = (value: unknown): string => `${JSON.stringify(value, null, 2)}\n`;

export class PosternStack {
  relay!: Proc;
  connector!: Proc;
  relayPort = 0;
  readonly forwards: Proc[] = [];
  private relaySeq = 0;

  constructor(private readonly o: StackOptions) {}

  get relayUrl(): string {
    return `wss://127.0.0.1:${this.relayPort}`;
  }

  /** Options of an in-process Agent (the source's) on this stack. */
  agentOptions(): AgentOptions {
    const f = this.o.files;
    return {
      trustDomain: TRUST_DOMAIN,
      relay: this.relayUrl,
      tls: { cert: f.user.cert, key: f.user.key, ca: f.ca, crl: f.crl },
      limits: { session: sessionLimits(this.o.maxStreams) },
    };
  }

  private node(name: string, args: string[]): Proc {
    const prof = this.o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${this.o.cpuProfDir}`, `--cpu-prof-name=${name}.${Date.now()}.cpuprofile`] : [];
    return new Proc(name, process.execPath, ['--expose-gc', '--import', GC_HOOK, ...prof, POSTERN_BIN, ...args, '--log-format', 'json'], {
      cwd: this.o.dir,
      keep: (l: Line) => l.event === 'tunnel.up' && l['audit'] !== true,
    });
  }

  async start(): Promise<void> {
    const { dir, files: f, maxStreams } = this.o;
    await writeFile(
      join(dir, 'policy.yaml'),
      yaml({
        version: 1,
        trustDomain: TRUST_DOMAIN,
        orgs: { [ORG]: { connectors: { [CONNECTOR]: { targets: TARGETS } } } },
        rules: [{ id: 'bench', org: ORG, principals: ['user/bench'], connector: CONNECTOR, targets: TARGETS, action: 'allow' }],
      }),
    );
    await writeFile(
      join(dir, 'relay.yaml'),
      yaml({
        trustDomain: TRUST_DOMAIN,
        listen: '127.0.0.1:0',
        tls: { ...f.relay, ca: f.ca, crl: f.crl },
        policy: { file: 'policy.yaml' },
        limits: { session: sessionLimits(maxStreams) },
        // The bench stops the relay only when its streams are gone: no reason to wait 30 s.
        drain: { graceMs: 1_000 },
        // Served as in production (its metrics cost CPU too), on a port of its own: the defaults
        // would collide with a `postern up` or another bench on the same host.
        admin: { listen: '127.0.0.1:0' },
      }),
    );
    await this.startRelay('127.0.0.1:0');
    await writeFile(
      join(dir, 'connector.yaml'),
      yaml({
        trustDomain: TRUST_DOMAIN,
        relays: [this.relayUrl],
        tls: { ...f.connector, ca: f.ca, crl: f.crl },
        allowlist: { targets: TARGETS },
        limits: { session: sessionLimits(maxStreams), shutdownGraceMs: 1_000 },
        admin: { listen: '127.0.0.1:0' },
      }),
    );
    await writeFile(join(dir, 'agent.yaml'), yaml(this.agentOptions()));
    this.connector = this.node('connector', ['connector', '--config', join(dir, 'connector.yaml')]);
    await this.tunnelUp();
  }

  /** Starts the relay on `listen` (the first time port 0; after a kill, the port it had). */
  async startRelay(listen: string): Promise<void> {
    this.relay = this.node(`relay-${++this.relaySeq}`, ['relay', '--config', join(this.o.dir, 'relay.yaml'), '--listen', listen]);
    const line = await this.relay.waitFor('relay.listening');
    this.relayPort = Number(line['port']);
  }

  /** Resolves when the connector reports its (next) tunnel up. */
  tunnelUp(): Promise<Line> {
    return this.connector.waitFor('tunnel.up');
  }

  /** `postern agent forward` to `target`; resolves with its local port once its relay session is up. */
  async forward(target: string): Promise<number> {
    const p = this.node(`forward-${this.forwards.length + 1}`, [
      'agent', 'forward', '--config', join(this.o.dir, 'agent.yaml'), '--listen', '127.0.0.1:0', '--connector', CONNECTOR, '--target', target,
    ]);
    this.forwards.push(p);
    const [line] = await Promise.all([p.waitFor('forward.listening'), p.waitFor('agent.ready')]);
    const address = line['address'] as { port: number };
    return address.port;
  }

  /** Memory of one of these processes after a full GC (the gc hook answers SIGUSR2). */
  async gcMemory(p: Proc): Promise<{ rss: number; heapUsed: number }> {
    const answer = p.waitFor('bench.gc');
    p.child.kill('SIGUSR2');
    const l = await answer;
    return { rss: Number(l['rss']), heapUsed: Number(l['heapUsed']) };
  }

  async stop(): Promise<void> {
    await Promise.all(this.forwards.map((p) => p.stop()));
    await this.connector?.stop();
    await this.relay?.stop();
  }
}
