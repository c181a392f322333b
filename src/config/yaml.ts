import { isMap, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { deepFreeze } from '../options.js';

/** A parsed YAML text that can still say where a field stands in it. */
export interface YamlSource {
  /** The document as plain data ({} for an empty document). */
  readonly data: unknown;
  /** `:line:col` of the deepest node that exists along `path` (the key itself when `keyOfLast`), or ''. */
  locate(path: ReadonlyArray<string | number>, keyOfLast?: boolean): string;
  /** Whether the document holds a node at exactly `path`. */
  has(path: ReadonlyArray<string | number>): boolean;
}

/**
 * Parse YAML text, refusing syntax errors and duplicate keys with `file:line:col`. A low alias
 * cap stops "billion laughs" documents from expanding without bound.
 */
export function parseYamlSource(text: string, sourceName: string): YamlSource {
  const { doc, lineCounter } = parseDoc(text, sourceName);
  const data: unknown = doc.toJS({ maxAliasCount: 100 }) ?? {};
  return {
    data,
    locate: (path, keyOfLast = false) => locate(doc, lineCounter, path, keyOfLast),
    has: (path) => doc.hasIn(path),
  };
}

/** One value in YAML flow syntax (`5000`, `true`, `[a, b]`, `{k: v}`), as an environment variable carries it. */
export function parseYamlValue(text: string, sourceName: string): unknown {
  return parseDoc(text, sourceName).doc.toJS({ maxAliasCount: 100 });
}

function parseDoc(text: string, sourceName: string): { doc: Document; lineCounter: LineCounter } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const pos = lineCounter.linePos(first.pos[0]);
    const where = `${sourceName}:${pos.line}:${pos.col}`;
    throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `${where}: invalid YAML: ${first.message.split('\n')[0]}`, {
      details: { source: sourceName, line: pos.line, col: pos.col },
    });
  }
  return { doc, lineCounter };
}

/**
 * Parse YAML text and validate it with a zod schema in one step, so every config file and
 * policy file reports problems the same way: `file:line:col: field "a.b[2]": what was
 * expected`. Unknown keys (zod strictObject) are POSTERN_ERR_CONFIG_UNKNOWN_KEY.
 */
export function parseYamlWithSchema<S extends z.ZodType>(text: string, sourceName: string, schema: S): Readonly<z.output<S>> {
  const source = parseYamlSource(text, sourceName);
  const parsed = schema.safeParse(source.data);
  if (parsed.success) return deepFreeze(parsed.data);

  const messages: string[] = [];
  let unknownKey = false;
  for (const issue of parsed.error.issues) {
    const path = issuePath(issue);
    if (issue.code === 'unrecognized_keys') {
      unknownKey = true;
      for (const key of issue.keys) {
        messages.push(`${sourceName}${source.locate([...path, key], true)}: unknown key "${formatPath([...path, key])}"`);
      }
    } else {
      messages.push(`${sourceName}${source.locate(path)}: field "${formatPath(path) || '(root)'}": ${issue.message}`);
    }
  }
  throw new ConfigError(unknownKey ? 'POSTERN_ERR_CONFIG_UNKNOWN_KEY' : 'POSTERN_ERR_CONFIG_INVALID', messages.join('\n'), {
    details: { source: sourceName, issues: messages },
  });
}

/** A zod issue's path with symbols spelled out (zod allows them; configs never use them). */
export function issuePath(issue: z.core.$ZodIssue): Array<string | number> {
  return issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
}

/** `rules[2].principals[0]` style path, as users read it in their YAML. */
export function formatPath(path: ReadonlyArray<string | number>): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out;
}

function locate(doc: Document, lineCounter: LineCounter, path: ReadonlyArray<string | number>, keyOfLast: boolean): string {
  let node: unknown = doc.contents;
  let found: YamlNode | undefined = doc.contents ?? undefined;
  for (let i = 0; i < path.length; i++) {
    const part = path[i]!;
    if (isMap(node)) {
      const pair = node.items.find((p) => (p.key as { value?: unknown } | null)?.value === part);
      if (!pair) break;
      const isLast = i === path.length - 1;
      found = (isLast && keyOfLast ? pair.key : (pair.value ?? pair.key)) as YamlNode;
      node = pair.value;
    } else if (isSeq(node) && typeof part === 'number') {
      const item = node.items[part];
      if (!item) break;
      found = item as YamlNode;
      node = item;
    } else {
      break;
    }
  }
  const offset = found?.range?.[0];
  if (offset === undefined) return '';
  const { line, col } = lineCounter.linePos(offset);
  return `:${line}:${col}`;
}
