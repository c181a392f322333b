import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';

// Enforces the import arrows of docs/architecture.md by reading import lines.
const ROOT = resolve(import.meta.dirname, '../..');
const APPS = ['relay', 'connector', 'agent-lib'];

function tsFiles(dir: string): string[] {
  let out: string[] = [];
  let entries: string[];
  try { entries = readdirSync(dir); } catch { return out; }
  for (const entry of entries) {
    const full = join(dir, entry);
    if (statSync(full).isDirectory()) out = out.concat(tsFiles(full));
    else if (entry.endsWith('.ts')) out.push(full);
  }
  return out;
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]/gm)) specs.push(m[1]!);
  for (const m of text.matchAll(/^\s*import\s+['"]([^'"]+)['"]/gm)) specs.push(m[1]!);
  for (const m of text.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)) specs.push(m[1]!);
  return specs;
}

/** Top-level folder a relative import lands in, or the package name for a bare import. */
function target(file: string, spec: string): { kind: 'local'; top: string; path: string } | { kind: 'pkg'; name: string } {
  if (spec.startsWith('.')) {
    const path = relative(ROOT, resolve(dirname(file), spec));
    return { kind: 'local', top: path.split('/')[0]!, path };
  }
  const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
  return { kind: 'pkg', name };
}

describe('import arrows', () => {
  it('src/ never imports relay/, connector/, agent-lib/ or cli/, nor reads argv', () => {
    for (const file of tsFiles(join(ROOT, 'src'))) {
      for (const spec of imports(file)) {
        const t = target(file, spec);
        if (t.kind === 'local') expect([file, t.top]).toEqual([file, 'src']);
      }
      expect(readFileSync(file, 'utf8'), file).not.toMatch(/process\.argv/);
    }
  });

  it('relay/, connector/, agent-lib/ import src/ but never each other', () => {
    for (const app of APPS) {
      for (const file of tsFiles(join(ROOT, app))) {
        for (const spec of imports(file)) {
          const t = target(file, spec);
          if (t.kind === 'local') expect([file, t.top]).toSatisfy(([, top]) => top === 'src' || top === app);
        }
      }
    }
  });

  it('src/protocol imports nothing but src/errors', () => {
    for (const file of tsFiles(join(ROOT, 'src/protocol'))) {
      for (const spec of imports(file)) {
        const t = target(file, spec);
        if (t.kind === 'pkg') expect([file, t.name]).toSatisfy(([, n]) => String(n).startsWith('node:'));
        else expect([file, t.path]).toSatisfy(([, p]) => String(p).startsWith('src/protocol') || p === 'src/errors.js');
      }
    }
  });

  it('ws is imported by one adapter file, pg only by PostgreSQL sources and sinks', () => {
    const wsUsers: string[] = [];
    for (const dir of ['src', ...APPS]) {
      for (const file of tsFiles(join(ROOT, dir))) {
        for (const spec of imports(file)) {
          const t = target(file, spec);
          if (t.kind === 'pkg' && t.name === 'ws') wsUsers.push(relative(ROOT, file));
          if (t.kind === 'pkg' && t.name === 'pg') expect(relative(ROOT, file)).toMatch(/(^|\/)(pg|postgres)[-\w]*\.ts$/);
        }
      }
    }
    expect(wsUsers.length).toBeLessThanOrEqual(1);
  });
});
