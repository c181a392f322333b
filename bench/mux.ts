/**
 * bench/mux: the multiplexed session over wss against raw ws messages and one plain TLS 1.3
 * socket, side by side in one run, on loopback. Every connection end is its own process so
 * CPU time is attributable. Not a test: `npm run bench:mux` (after a build), `--smoke` for a
 * run of seconds (CI), `--reps N`, `--out FILE` (default docs/benchmarks-mux.md for a full
 * run, nothing for a smoke run), `--cpu-prof DIR` to profile the mux processes.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { initPki, issueCertificate } from '../src/pki/index.js';
import { Peer } from './lib/peers.js';
import { median, spread, table } from './lib/stats.js';
import { WIDE_WINDOW, type Direction, type Kind, type Snapshot, type TlsFiles } from './lib/protocol.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const { values: args } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    reps: { type: 'string' },
    out: { type: 'string' },
    'cpu-prof': { type: 'string' },
  },
});

const smoke = args.smoke ?? false;
const config = {
  reps: Number(args.reps ?? 3),
  bulkBytes: smoke ? 16 * MiB : 512 * MiB,
  warmupBytes: smoke ? 2 * MiB : 32 * MiB,
  parallelStreams: 100,
  parallelBytes: smoke ? 16 * MiB : 512 * MiB,
  idleStreams: smoke ? 1000 : 10_000,
};
if (!Number.isInteger(config.reps) || config.reps < 1) throw new Error(`--reps must be a positive integer, got ${args.reps}`);
const outFile = args.out ?? (smoke ? undefined : new URL('../../docs/benchmarks-mux.md', import.meta.url).pathname);
const profDir = args['cpu-prof'];

const KINDS: readonly Kind[] = ['mux', 'mux-wide', 'ws', 'tls'];
/** Every pair the bulk runs go through: the one-stream comparison, then the relay splice. */
const BULK_KINDS: readonly Kind[] = [...KINDS, 'relay'];
const KIND_LABEL: Readonly<Record<Kind, string>> = {
  mux: 'wss + mux session (one stream)',
  'mux-wide': `same, stream window ${WIDE_WINDOW / MiB} MiB from the start (nothing to grow)`,
  ws: 'wss, raw binary messages (no mux)',
  tls: 'plain TLS 1.3 socket (reference)',
  relay: 'agent → relay splice → connector',
};

interface Pair {
  kind: Kind;
  server: Peer;
  client: Peer;
}

async function startPair(kind: Kind, files: { server: TlsFiles; client: TlsFiles }, maxStreams: number): Promise<Pair> {
  const prof = profDir && kind.startsWith('mux') ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [];
  const server = new Peer('server', prof);
  const client = new Peer('client', prof);
  const { port } = await server.request({ type: 'listen', kind, tls: files.server, maxStreams }, 'listening');
  await client.request({ type: 'connect', kind, tls: files.client, port, maxStreams }, 'connected');
  return { kind, server, client };
}

async function stopPair(p: Pair): Promise<void> {
  await p.client.stop();
  await p.server.stop();
}

async function snaps(p: Pair, gc: boolean): Promise<{ server: Snapshot; client: Snapshot }> {
  const server = (await p.server.request({ type: 'snap', gc }, 'snap')).snap;
  const client = (await p.client.request({ type: 'snap', gc }, 'snap')).snap;
  return { server, client };
}

const cpuSeconds = (a: Snapshot, b: Snapshot): number => (b.cpuUserUs + b.cpuSystemUs - a.cpuUserUs - a.cpuSystemUs) / 1e6;

interface BulkResult {
  mibps: number;
  /** CPU seconds per GiB moved, each process. */
  serverCpu: number;
  clientCpu: number;
}

async function bulk(p: Pair, dir: Direction, bytes: number, streams: number): Promise<BulkResult> {
  const before = await snaps(p, false);
  const done = await p.client.request({ type: 'bulk', dir, bytes, streams }, 'bulk-done');
  const after = await snaps(p, false);
  const gib = done.bytes / GiB;
  return {
    mibps: done.bytes / MiB / (done.ms / 1000),
    serverCpu: cpuSeconds(before.server, after.server) / gib,
    clientCpu: cpuSeconds(before.client, after.client) / gib,
  };
}

interface IdleResult {
  ms: number;
  opensPerSecond: number;
  /** Bytes per idle stream, each process. */
  serverRss: number;
  serverHeap: number;
  clientRss: number;
  clientHeap: number;
}

async function idle(files: { server: TlsFiles; client: TlsFiles }, count: number): Promise<IdleResult> {
  const p = await startPair('mux', files, count + 16);
  try {
    const base = await snaps(p, true);
    const done = await p.client.request({ type: 'idle', count }, 'idle-done');
    const after = await snaps(p, true);
    if (after.server.streams < count || after.client.streams < count) {
      throw new Error(`idle streams: expected ${count} open, server holds ${after.server.streams}, client ${after.client.streams}`);
    }
    return {
      ms: done.ms,
      opensPerSecond: count / (done.ms / 1000),
      serverRss: (after.server.rss - base.server.rss) / count,
      serverHeap: (after.server.heapUsed - base.server.heapUsed) / count,
      clientRss: (after.client.rss - base.client.rss) / count,
      clientHeap: (after.client.heapUsed - base.client.heapUsed) / count,
    };
  } finally {
    await stopPair(p);
  }
}

// --- statistics and formatting -----------------------------------------------------------

/** Cores a process kept busy during the transfer (median): throughput × CPU time per byte. */
function busy(rs: readonly BulkResult[], side: 'clientCpu' | 'serverCpu'): string {
  return median(rs.map((x) => (x.mibps / 1024) * x[side])).toFixed(2);
}

// --- the run -------------------------------------------------------------------------------

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'postern-bench-mux-'));
  const pairs: Pair[] = [];
  try {
    await initPki({ dir, trustDomain: 'bench.example' });
    const relay = await issueCertificate({ dir, role: 'relay', name: 'relay-1', dns: ['localhost'], ip: ['127.0.0.1'] });
    const connector = await issueCertificate({ dir, role: 'connector', name: 'hq', org: 'st-mary' });
    const ca = join(dir, 'ca.crt');
    const files = { server: { ca, cert: relay.cert, key: relay.key }, client: { ca, cert: connector.cert, key: connector.key } };

    process.stderr.write(`bench/mux ${smoke ? '(smoke) ' : ''}reps=${config.reps} bulk=${config.bulkBytes / MiB} MiB\n`);
    for (const kind of BULK_KINDS) pairs.push(await startPair(kind, files, 256));
    for (const p of pairs) await bulk(p, 'up', config.warmupBytes, 1);

    // Interleaved by repetition so that a noisy neighbour hits every kind alike.
    const results: Record<Direction, Record<Kind, BulkResult[]>> = {
      up: { mux: [], 'mux-wide': [], ws: [], tls: [], relay: [] },
      down: { mux: [], 'mux-wide': [], ws: [], tls: [], relay: [] },
    };
    for (const dirn of ['up', 'down'] as const) {
      for (let rep = 0; rep < config.reps; rep++) {
        for (const p of pairs) {
          const r = await bulk(p, dirn, config.bulkBytes, 1);
          results[dirn][p.kind].push(r);
          process.stderr.write(`  ${dirn} ${p.kind} rep ${rep + 1}: ${r.mibps.toFixed(0)} MiB/s\n`);
        }
      }
    }
    const mux = pairs.find((p) => p.kind === 'mux')!;
    const parallel: BulkResult[] = [];
    for (let rep = 0; rep < config.reps; rep++) {
      const r = await bulk(mux, 'up', config.parallelBytes, config.parallelStreams);
      parallel.push(r);
      process.stderr.write(`  ${config.parallelStreams} streams rep ${rep + 1}: ${r.mibps.toFixed(0)} MiB/s\n`);
    }
    for (const p of pairs.splice(0)) await stopPair(p);

    const idleRuns: IdleResult[] = [];
    for (let rep = 0; rep < config.reps; rep++) {
      const r = await idle(files, config.idleStreams);
      idleRuns.push(r);
      process.stderr.write(`  ${config.idleStreams} idle streams rep ${rep + 1}: ${r.ms.toFixed(0)} ms\n`);
    }

    const report = render(results, parallel, idleRuns);
    process.stdout.write(`${report}\n`);
    if (outFile) {
      await writeFile(outFile, report + '\n');
      process.stderr.write(`wrote ${outFile}\n`);
    }
  } finally {
    for (const p of pairs) await stopPair(p);
    await rm(dir, { recursive: true, force: true });
  }
}

function render(results: Record<Direction, Record<Kind, BulkResult[]>>, parallel: BulkResult[], idleRuns: IdleResult[]): string {
  const cpu = cpus();
  const machine = `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${(totalmem() / GiB).toFixed(1)} GiB RAM, Node ${process.version}, ${process.platform}/${process.arch}`;
  const lines: string[] = [
    '# Benchmarks: the mux over wss',
    '',
    `Generated by \`npm run bench:mux\`${smoke ? ' --smoke' : ''} on ${new Date().toISOString()}; do not edit by hand.`,
    '',
    `Machine: ${machine}.`,
    '',
    `Loopback, mTLS with certificates made by our own PKI code, TLS 1.3, permessage-deflate off, bufferutil on. ` +
      `Every connection end runs in its own process; CPU is \`process.cpuUsage()\` (user + system) of each process over the transfer. ` +
      `Figures are medians of ${config.reps} repetitions with (min–max); the paths are interleaved within each repetition. ` +
      `Writes are ${64} KiB; the mux uses the session's defaults (64 KiB DATA frames, a stream window of 256 KiB that doubles up to 4 MiB while the reader keeps up, transport high-water mark 1 MiB) ` +
      `except streams per session and opens per second, lifted for the idle-stream test.`,
    '',
  ];
  lines.push(
    'A path whose two processes keep less than a core busy each is not CPU-bound: it waits (flow-control credit, ' +
      'round trips). The `mux-wide` row starts every stream at the largest window, to show what growing the window from 256 KiB still costs.',
    '',
  );
  const mib = config.bulkBytes / MiB;
  for (const dirn of ['up', 'down'] as const) {
    const r = results[dirn];
    const med = (k: Kind): number => median(r[k].map((x) => x.mibps));
    lines.push(
      `## One stream, ${mib} MiB, ${dirn === 'up' ? 'client → server (the WebSocket client masks)' : 'server → client'}`,
      '',
      table(
        ['path', 'MiB/s', 'vs TLS socket', 'client CPU s/GiB', 'server CPU s/GiB', 'cores busy client + server'],
        KINDS.map((k) => [
          KIND_LABEL[k],
          spread(r[k].map((x) => x.mibps)),
          (med(k) / med('tls')).toFixed(2),
          spread(r[k].map((x) => x.clientCpu), 2),
          spread(r[k].map((x) => x.serverCpu), 2),
          `${busy(r[k], 'clientCpu')} + ${busy(r[k], 'serverCpu')}`,
        ]),
      ),
      '',
      `mux / raw ws = **${(med('mux') / med('ws')).toFixed(2)}** (with the ${WIDE_WINDOW / MiB} MiB window: ${(med('mux-wide') / med('ws')).toFixed(2)}); ` +
        `raw ws / TLS = ${(med('ws') / med('tls')).toFixed(2)}.`,
      '',
    );
  }
  const relayRow = (dirn: Direction): string[] => {
    const r = results[dirn].relay;
    const mibps = median(r.map((x) => x.mibps));
    return [
      dirn === 'up' ? 'agent → connector' : 'connector → agent',
      spread(r.map((x) => x.mibps)),
      (mibps / median(results[dirn].mux.map((x) => x.mibps))).toFixed(2),
      spread(r.map((x) => x.serverCpu), 2),
      spread(r.map((x) => x.clientCpu), 2),
    ];
  };
  lines.push(
    `## One stream through a relay, ${mib} MiB`,
    '',
    'The client process holds a connector\'s session and an agent\'s, each on its own wss connection to the server process, ' +
      'which splices every agent stream to a stream it opens on the connector\'s session, as the relay does (`src/net/splice.ts`, ' +
      'policy left out). A payload the relay forwards is framed in place, without a copy. Relay CPU is the server process; the client process runs both ends.',
    '',
    table(['direction', 'MiB/s', 'vs one stream direct', 'relay CPU s/GiB', 'agent + connector CPU s/GiB'], [relayRow('up'), relayRow('down')]),
    '',
  );
  const oneUp = median(results.up.mux.map((x) => x.mibps));
  lines.push(
    `## ${config.parallelStreams} streams in parallel on one session, ${config.parallelBytes / MiB} MiB in all, client → server`,
    '',
    table(
      ['aggregate MiB/s', 'vs one stream', 'client CPU s/GiB', 'server CPU s/GiB'],
      [
        [
          spread(parallel.map((x) => x.mibps)),
          (median(parallel.map((x) => x.mibps)) / oneUp).toFixed(2),
          spread(parallel.map((x) => x.clientCpu), 2),
          spread(parallel.map((x) => x.serverCpu), 2),
        ],
      ],
    ),
    '',
    `## ${config.idleStreams.toLocaleString('en')} idle streams on one session`,
    '',
    'Memory per stream = (after − before) / streams, each measured after two full GCs (`--expose-gc`), on both ends.',
    '',
    table(
      ['time to open all (ms)', 'opens/s', 'client RSS KiB/stream', 'client heap KiB/stream', 'server RSS KiB/stream', 'server heap KiB/stream'],
      [
        [
          spread(idleRuns.map((x) => x.ms)),
          spread(idleRuns.map((x) => x.opensPerSecond)),
          spread(idleRuns.map((x) => x.clientRss / 1024), 2),
          spread(idleRuns.map((x) => x.clientHeap / 1024), 2),
          spread(idleRuns.map((x) => x.serverRss / 1024), 2),
          spread(idleRuns.map((x) => x.serverHeap / 1024), 2),
        ],
      ],
    ),
    '',
    'Bar set by the prototypes (NODE-PITFALLS.md): ~293 MiB/s through one stream on wss, raw ws ~418 MiB/s; 2–7 KiB per idle stream.',
  );
  return lines.join('\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/mux failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
