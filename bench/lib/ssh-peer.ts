/**
 * The classic alternative Postern is measured against: an SSH reverse tunnel (`ssh -R` from
 * the "on-prem" side to an `sshd` of our own: own config, host key and client key in a temp
 * dir, loopback, a high port) with stunnel TLS 1.3 client and server around it for the
 * end-to-end layer. The configuration files are generated at run time under DIR/peer.
 *
 *   source → stunnel client → sshd (forwarded port) ⇒ ssh -R → stunnel server → sink
 *
 * Every ssh variant is its own `ssh` process; one stunnel server and one stunnel client carry
 * the services of all of them.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BIND_ATTEMPTS, BIND_FAILURE, Proc, kernelPort } from './process.js';

const run = promisify(execFile);

export const SSHD = '/usr/sbin/sshd';
const DEBIAN_PACKAGES = ['openssh-server', 'openssh-client', 'stunnel4'];

/** Which binaries the peer needs and does not find. */
function missingBinaries(): string[] {
  const found = (cmd: string): boolean => ['/usr/bin', '/usr/sbin', '/bin', '/sbin', '/usr/local/bin'].some((d) => existsSync(join(d, cmd)));
  return [
    ...(existsSync(SSHD) ? [] : ['sshd']),
    ...['ssh', 'ssh-keygen', 'stunnel4'].filter((c) => !found(c)),
  ];
}

/**
 * Installs the Debian packages of the peer when a binary is missing and we are root with apt;
 * resolves with why the peer cannot run, or undefined when it can.
 */
export async function ensurePeerPackages(log: (line: string) => void): Promise<string | undefined> {
  const missing = missingBinaries();
  if (missing.length === 0) return undefined;
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) {
    return `${missing.join(', ')} not installed, and installing ${DEBIAN_PACKAGES.join(' ')} needs root and apt-get`;
  }
  log(`peer: installing ${DEBIAN_PACKAGES.join(' ')} (missing: ${missing.join(', ')})`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    await run('apt-get', ['update', '-qq'], { env, maxBuffer: 64 * 1024 * 1024 });
    await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...DEBIAN_PACKAGES], { env, maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    return `installing ${DEBIAN_PACKAGES.join(' ')} failed: ${(err as Error).message.split('\n')[0]}`;
  }
  const still = missingBinaries();
  return still.length === 0 ? undefined : `${still.join(', ')} still missing after apt-get install`;
}

export interface PeerTlsFiles {
  ca: string;
  /** The stunnel server's certificate (DNS SAN localhost). */
  server: { cert: string; key: string };
  /** The stunnel client's certificate (a client certificate, as the inner TLS has). */
  client: { cert: string; key: string };
}

/**
 * An ssh client variant. `interactive`: a tty session (`-tt … sleep`) instead of `-N`, the
 * one way to get TCP_NODELAY on OpenSSH's transport sockets (it sets it for interactive
 * sessions only); `-N` leaves Nagle on.
 */
export interface SshVariant {
  name: string;
  cipher?: string;
  interactive: boolean;
}

export interface PeerOptions {
  dir: string;
  tls: PeerTlsFiles;
  /** Services of the sink the peer carries, by name (bulk, hello, pg…): their TCP ports. */
  services: Record<string, number>;
  variants: readonly SshVariant[];
  /** The variant whose forwarded ports are also reached without stunnel (the bare SSH tunnel). */
  bare: string;
}

export interface PeerPorts {
  /** Local entry through stunnel: ports[variant][service]. */
  stunnel: Record<string, Record<string, number>>;
  /** sshd's forwarded port straight to the sink (no stunnel) for the `bare` variant: ports[service]. */
  bare: Record<string, number>;
}

/** A line of stunnel that says every service is bound. */
const STUNNEL_READY = /Configuration successful/;
const ALLOCATED = /^Allocated port (\d+) for remote forward to ([^:]+):(\d+)/;

export class SshPeer {
  sshd!: Proc;
  readonly ssh = new Map<string, Proc>();
  stunnelServer!: Proc;
  stunnelClient!: Proc;
  readonly ports: PeerPorts = { stunnel: {}, bare: {} };
  private readonly dir: string;

  constructor(private readonly o: PeerOptions) {
    this.dir = join(o.dir, 'peer');
  }

  /** Every process of the peer by role, for CPU accounting (sshd: with its per-connection children). */
  get procs(): { sshd: Proc; ssh: Map<string, Proc>; stunnelServer: Proc; stunnelClient: Proc } {
    return { sshd: this.sshd, ssh: this.ssh, stunnelServer: this.stunnelServer, stunnelClient: this.stunnelClient };
  }

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    // sshd's privilege separation directory (Debian creates it at boot through systemd only).
    if (process.getuid?.() === 0) await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    const hostKey = join(this.dir, 'host_ed25519');
    const userKey = join(this.dir, 'user_ed25519');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', userKey]);
    await writeFile(join(this.dir, 'authorized_keys'), await readFile(`${userKey}.pub`));
    const sshdPort = await this.startSshd(hostKey);

    // stunnel server: TLS in from the tunnel, plain TCP out to the sink.
    const serverPorts = await this.startStunnel('server', (ports) =>
      Object.entries(this.o.services).map(([svc, sinkPort]) => ({
        name: svc,
        accept: ports[svc]!,
        connect: sinkPort,
        client: false,
      })),
      Object.keys(this.o.services),
    );

    // One ssh per variant: every stunnel server port, and for the bare variant every sink port.
    const forwarded: Record<string, Record<string, number>> = {};
    for (const v of this.o.variants) {
      const targets: Record<string, number> = {};
      for (const [svc, port] of Object.entries(serverPorts)) targets[`tls-${svc}`] = port;
      if (v.name === this.o.bare) for (const [svc, port] of Object.entries(this.o.services)) targets[`bare-${svc}`] = port;
      forwarded[v.name] = await this.startSsh(v, sshdPort, userKey, targets);
      this.ports.stunnel[v.name] = {};
    }
    for (const svc of Object.keys(this.o.services)) this.ports.bare[svc] = forwarded[this.o.bare]![`bare-${svc}`]!;

    // stunnel client: plain TCP in from the source, TLS out into the sshd's forwarded port.
    const clientServices = this.o.variants.flatMap((v) => Object.keys(this.o.services).map((svc) => ({ v: v.name, svc, name: `${v.name}-${svc}` })));
    const clientPorts = await this.startStunnel('client', (ports) =>
      clientServices.map((c) => ({ name: c.name, accept: ports[c.name]!, connect: forwarded[c.v]![`tls-${c.svc}`]!, client: true })),
      clientServices.map((c) => c.name),
    );
    for (const c of clientServices) this.ports.stunnel[c.v]![c.svc] = clientPorts[c.name]!;
  }

  private async startSshd(hostKey: string): Promise<number> {
    const user = userInfo().username;
    for (let attempt = 1; ; attempt++) {
      const port = await kernelPort();
      const config = join(this.dir, 'sshd_config');
      await writeFile(
        config,
        [
          `ListenAddress 127.0.0.1`,
          `Port ${port}`,
          `HostKey ${hostKey}`,
          `PidFile ${join(this.dir, 'sshd.pid')}`,
          `AuthorizedKeysFile ${join(this.dir, 'authorized_keys')}`,
          `AuthenticationMethods publickey`,
          `PasswordAuthentication no`,
          `KbdInteractiveAuthentication no`,
          `PermitRootLogin prohibit-password`,
          `AllowUsers ${user}`,
          `StrictModes no`,
          `UsePAM no`,
          `AllowTcpForwarding yes`,
          `GatewayPorts no`,
          `PermitTTY yes`,
          `PrintMotd no`,
          `PrintLastLog no`,
          `UseDNS no`,
          `MaxSessions 64`,
          `LogLevel INFO`,
          '',
        ].join('\n'),
      );
      const p = new Proc('sshd', SSHD, ['-D', '-e', '-f', config]);
      try {
        await p.waitFor(/Server listening on 127\.0\.0\.1 port/);
        this.sshd = p;
        return port;
      } catch (err) {
        await p.stop('SIGKILL');
        if (attempt >= BIND_ATTEMPTS || !BIND_FAILURE.test(p.output())) throw err;
      }
    }
  }

  /** ssh -R 0:127.0.0.1:PORT for every target; resolves with the port sshd allocated for each. */
  private async startSsh(v: SshVariant, sshdPort: number, userKey: string, targets: Record<string, number>): Promise<Record<string, number>> {
    const names = Object.keys(targets);
    const args = [
      '-F', '/dev/null',
      '-i', userKey,
      '-p', String(sshdPort),
      '-o', 'BatchMode=yes',
      '-o', 'IdentitiesOnly=yes',
      '-o', 'StrictHostKeyChecking=no',
      '-o', `UserKnownHostsFile=${join(this.dir, 'known_hosts')}`,
      '-o', 'ExitOnForwardFailure=yes',
      '-o', 'LogLevel=INFO',
      ...(v.cipher ? ['-c', v.cipher] : []),
      ...names.flatMap((n) => ['-R', `0:127.0.0.1:${targets[n]}`]),
      ...(v.interactive ? ['-tt'] : ['-N']),
      `${userInfo().username}@127.0.0.1`,
      // A session that lasts as long as the bench; the tty is what turns TCP_NODELAY on.
      ...(v.interactive ? ['exec sleep 86400'] : []),
    ];
    const p = new Proc(`ssh-${v.name}`, 'ssh', args, { keep: (l) => ALLOCATED.test(l.msg ?? '') });
    this.ssh.set(v.name, p);
    const byTarget = new Map<number, number>();
    for (let i = 0; i < names.length; i++) {
      const line = await p.waitFor(ALLOCATED, 20_000);
      const m = ALLOCATED.exec(line.msg!)!;
      byTarget.set(Number(m[3]), Number(m[1]));
    }
    const out: Record<string, number> = {};
    for (const n of names) {
      const port = byTarget.get(targets[n]!);
      if (port === undefined) throw new Error(`ssh-${v.name}: no remote forward allocated for ${n} (127.0.0.1:${targets[n]})`);
      out[n] = port;
    }
    return out;
  }

  private async startStunnel(
    side: 'server' | 'client',
    services: (ports: Record<string, number>) => { name: string; accept: number; connect: number; client: boolean }[],
    names: string[],
  ): Promise<Record<string, number>> {
    const t = this.o.tls;
    const own = side === 'server' ? t.server : t.client;
    for (let attempt = 1; ; attempt++) {
      const ports: Record<string, number> = {};
      for (const n of names) ports[n] = await kernelPort();
      const config = join(this.dir, `stunnel-${side}.conf`);
      const lines = [
        'foreground = yes',
        'pid =',
        'debug = 5',
        'syslog = no',
        // TCP_NODELAY both ways, as Postern sets it on every socket.
        'socket = l:TCP_NODELAY=1',
        'socket = r:TCP_NODELAY=1',
      ];
      for (const s of services(ports)) {
        lines.push(
          '',
          `[${s.name}]`,
          `client = ${s.client ? 'yes' : 'no'}`,
          `accept = 127.0.0.1:${s.accept}`,
          `connect = 127.0.0.1:${s.connect}`,
          `cert = ${own.cert}`,
          `key = ${own.key}`,
          `CAfile = ${t.ca}`,
          // Both ends verify each other, as the inner TLS does.
          'verifyChain = yes',
          'sslVersionMin = TLSv1.3',
          'sslVersionMax = TLSv1.3',
          ...(s.client ? ['checkHost = localhost'] : []),
        );
      }
      await writeFile(config, `${lines.join('\n')}\n`);
      const p = new Proc(`stunnel-${side}`, 'stunnel4', [config]);
      try {
        await p.waitFor(STUNNEL_READY, 20_000);
        if (side === 'server') this.stunnelServer = p;
        else this.stunnelClient = p;
        return ports;
      } catch (err) {
        await p.stop('SIGKILL');
        if (attempt >= BIND_ATTEMPTS || !/bind|Address already in use/i.test(p.output())) throw err;
      }
    }
  }

  async stop(): Promise<void> {
    await Promise.all([this.stunnelClient?.stop(), ...[...this.ssh.values()].map((p) => p.stop()), this.stunnelServer?.stop()]);
    await this.sshd?.stop();
  }
}
