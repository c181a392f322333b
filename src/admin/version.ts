import { readFileSync } from 'node:fs';

/**
 * Postern's version, from the package.json found upwards from this module: it sits two levels up
 * when run from src/ (tests) and three when built into dist/. `unknown` when none is found.
 */
export const POSTERN_VERSION: string = findVersion();

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
