import { ConfigError, isPosternError } from '../src/errors.js';
import { identityFromCertificate, type Identity } from '../src/identity/index.js';
import type { Logger } from '../src/log.js';
import type { Session } from '../src/mux/index.js';
import { loadTlsMaterial, RevocationIndex, type CertificateRef, type TlsMaterial } from '../src/pki/index.js';
import { loadPolicyFile, type CompiledPolicy } from '../src/policy/index.js';
import { GoAwayReason, ResetCode } from '../src/protocol/reasons.js';
import { decide, policyChangedDetail, type LiveStream } from './opens.js';
import type { RelayConfig } from './options.js';
import type { Tunnel } from './registry.js';

/** The relay's TLS files, loaded and checked, with what a reload sweep needs. */
export interface RelayTls {
  material: TlsMaterial;
  identity: Identity;
  /** The CRLs' revoked serials, to find live peers a new CRL revokes. */
  revocation: RevocationIndex;
  /** Every file read (certificate, key, bundle, CRLs), for the watcher. */
  files: string[];
}

/**
 * Loads certificate, key, trust bundle and CRLs; the certificate must be a relay server
 * certificate. With `keep`, a reload must not change the relay's identity (agents read it as
 * evidence; audit lines name it): restart to rename a relay.
 */
export function loadRelayTls(config: RelayConfig, file: (p: string) => string, keep?: Identity): RelayTls {
  const crl = config.tls.crl === undefined ? undefined : Array.isArray(config.tls.crl) ? config.tls.crl.map(file) : [file(config.tls.crl)];
  const files = { cert: file(config.tls.cert), key: file(config.tls.key), ca: file(config.tls.ca), ...(crl ? { crl } : {}) };
  const material = loadTlsMaterial(files);
  const identity = identityFromCertificate(material.cert, { trustDomain: config.trustDomain, presentedAs: 'relay-server' });
  if (keep && identity.uri !== keep.uri) {
    throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `${files.cert} now names ${identity.uri}, but this relay runs as ${keep.uri}: restart it to change identity`, {
      details: { path: files.cert },
    });
  }
  return { material, identity, revocation: RevocationIndex.fromCrls(material.crl), files: [files.cert, files.key, files.ca, ...(crl ?? [])] };
}

/** Loads the policy file; its trust domain must be the relay's. */
export async function loadRelayPolicy(path: string, trustDomain: string): Promise<CompiledPolicy> {
  const policy = await loadPolicyFile(path);
  if (policy.trustDomain !== trustDomain) {
    throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `${path}: field "trustDomain" is "${policy.trustDomain}" but the relay's is "${trustDomain}"`, {
      details: { path, field: 'trustDomain' },
    });
  }
  return policy;
}

/** The file a failed load names: the one the error is about, else the group's first. */
export function failedFile(err: unknown, fallback: string): string {
  if (!isPosternError(err)) return fallback;
  const { path, source } = err.details as { path?: unknown; source?: unknown };
  return typeof path === 'string' ? path : typeof source === 'string' ? source : fallback;
}

/** An agent session, with the certificate it presented at the door. */
export interface AgentSessionRecord {
  readonly session: Session;
  readonly identity: Identity;
  readonly certificate: CertificateRef;
}

export interface SweepTargets {
  live: Iterable<LiveStream>;
  tunnels: Iterable<Tunnel>;
  agentSessions: Iterable<AgentSessionRecord>;
}

export interface SweepResult {
  streamsReset: number;
  sessionsTerminated: number;
}

/**
 * After a CRL reload: every live stream whose agent or connector certificate is now revoked is
 * reset with REVOKED (both legs, so each peer reads the reason), then every agent session and
 * tunnel presented with a revoked certificate is terminated with GOAWAY REVOKED. Streams first:
 * their RESETs leave before the GOAWAY that ends the rest.
 */
export function resetRevoked(revocation: RevocationIndex, t: SweepTargets, log: Logger): SweepResult {
  let streamsReset = 0;
  let sessionsTerminated = 0;
  for (const s of [...t.live]) {
    const who = revocation.isRevoked(s.principalCertificate)
      ? `the certificate of ${s.principal.uri} (serial ${s.principalCertificate.serial})`
      : revocation.isRevoked(s.tunnel.certificate)
        ? `the certificate of connector ${s.tunnel.identity.uri} (serial ${s.tunnel.certificate.serial})`
        : undefined;
    if (who === undefined) continue;
    s.end({ code: ResetCode.REVOKED, reason: 'revoked', detail: `${who} is revoked by the reloaded CRL` });
    streamsReset++;
  }
  const sessions: Array<{ session: Session; identity: Identity; certificate: CertificateRef; kind: string }> = [
    ...[...t.agentSessions].map((a) => ({ ...a, kind: 'agent session' })),
    ...[...t.tunnels].map((tn) => ({ session: tn.session, identity: tn.identity, certificate: tn.certificate, kind: 'tunnel' })),
  ];
  for (const s of sessions) {
    if (s.session.closed || !revocation.isRevoked(s.certificate)) continue;
    const message = `the certificate of ${s.identity.uri} (serial ${s.certificate.serial}) is revoked`;
    log.warn({ event: 'session.revoked', kind: s.kind, peer: s.identity.uri, serial: s.certificate.serial }, `${s.kind} terminated: ${message}`);
    s.session.terminate(GoAwayReason.REVOKED, message);
    sessionsTerminated++;
  }
  return { streamsReset, sessionsTerminated };
}

/** After a policy reload: every live stream the new policy denies is reset with POLICY_CHANGED. */
export function resetDisallowed(policy: CompiledPolicy, live: Iterable<LiveStream>): number {
  let n = 0;
  for (const s of [...live]) {
    const decision = decide(policy, s);
    if (decision.allow) continue;
    s.end({ code: ResetCode.POLICY_CHANGED, reason: 'policy-changed', detail: policyChangedDetail(decision, s) });
    n++;
  }
  return n;
}
