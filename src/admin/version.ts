import { readFileSync } from 'node:fs';

/**
 * Postern's version, from the package.json found upwards from this module: it sits two levels up
 * when run from src/ (tests) and three when built into dist/. `unknown` when none is found.
 */
export const POSTERN_VERSION: string = findVersion();

/** Upgrade request header in which a connector names its version, for the relay's /v1/status. */
export const VERSION_HEADER = 'postern-version';

/** A peer's version header as status may show it: a short version string, else nothing (the peer chose the bytes). */
export function peerVersion(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && /^[0-9A-Za-z][0-9A-Za-z.+-]{0,39}$/.test(value) ? value : undefined;
}

function findVersion(): string {
  let dir = new URL('.', import.meta.url);
  for (let level = 0; level < 4; level++) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'postern' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // No (readable) package.json at this level: look one level up.
    }
    dir = new URL('..', dir);
  }
  return 'unknown';
}
