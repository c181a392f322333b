import { open } from 'node:fs/promises';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { PolicyError, PosternError } from '../errors.js';
import { compilePolicy, policyInvalid, type Locate, type PolicyIssue, type PolicyPath } from './compile.js';
import type { CompiledPolicy, PolicySource } from './model.js';
import { PolicyDocumentSchema } from './schema.js';

export interface PolicyFileOptions {
  /** Largest policy file read, in bytes (default 8 MiB): a policy is text an operator writes. */
  maxBytes?: number;
}

export const DEFAULT_POLICY_MAX_BYTES = 8 * 1024 * 1024;
/** YAML aliases expanded at most this many times (a "billion laughs" file is refused). */
const MAX_ALIAS_COUNT = 100;

/**
 * Parse and compile policy YAML. Every problem is reported as `source:line:col: field: why`
 * in one PolicyError POSTERN_ERR_POLICY_INVALID: YAML syntax, duplicate keys, unknown keys,
 * missing or mistyped fields, and broken references between orgs, teams, connectors and rules.
 */
export function parsePolicy(text: string, sourceName: string): CompiledPolicy {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const problems = [...doc.errors, ...doc.warnings];
  if (problems.length > 0) {
    const lines = problems.map((p) => {
      const { line, col } = lineCounter.linePos(p.pos[0]);
      return `${sourceName}:${line}:${col}: invalid YAML: ${p.message.split('\n')[0]}`;
    });
    throw new PolicyError('POSTERN_ERR_POLICY_INVALID', lines.join('\n'), { details: { source: sourceName, issues: lines } });
  }
  const locate = yamlLocator(doc, lineCounter);
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    throw new PolicyError('POSTERN_ERR_POLICY_INVALID', `${sourceName}: invalid YAML: ${(err as Error).message}`, { cause: err, details: { source: sourceName } });
  }
  const parsed = PolicyDocumentSchema.safeParse(data ?? {});
  if (!parsed.success) {
    const issues: PolicyIssue[] = [];
    for (const issue of parsed.error.issues) {
      const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) issues.push({ path: [...path, key], message: `unknown key ${JSON.stringify(key)}`, atKey: true });
      } else {
        issues.push({ path, message: issue.message, atKey: false });
      }
    }
    throw policyInvalid(issues, sourceName, locate);
  }
  return compilePolicy(parsed.data, sourceName, locate);
}

/** Read, parse and compile a policy file (POSTERN_ERR_FILE_READ when it cannot be read). */
export async function loadPolicyFile(path: string, options: PolicyFileOptions = {}): Promise<CompiledPolicy> {
  const maxBytes = options.maxBytes ?? DEFAULT_POLICY_MAX_BYTES;
  let text: string;
  try {
    const handle = await open(path, 'r');
    try {
      const { size } = await handle.stat();
      if (size > maxBytes) {
        throw new PolicyError('POSTERN_ERR_POLICY_INVALID', `${path}: the policy file is ${size} bytes, over the limit of ${maxBytes} (option maxBytes)`, {
          details: { source: path, size, maxBytes },
        });
      }
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (err instanceof PosternError) throw err;
    throw new PolicyError('POSTERN_ERR_FILE_READ', `cannot read policy file ${path}: ${(err as Error).message}`, { cause: err, details: { path } });
  }
  return parsePolicy(text, path);
}

/** A PolicySource over one YAML file, read anew at each load() (reload on change is the caller's). */
export function filePolicySource(path: string, options: PolicyFileOptions = {}): PolicySource {
  return { load: () => loadPolicyFile(path, options) };
}

/** Maps a field path to the line and column of its node (or of the deepest existing ancestor). */
function yamlLocator(doc: Document, lineCounter: LineCounter): Locate {
  return (path: PolicyPath, atKey: boolean) => {
    let node: unknown = doc.contents;
    let offset: number | undefined = (doc.contents as { range?: [number] } | null)?.range?.[0];
    for (let i = 0; i < path.length; i++) {
      const part = path[i]!;
      let next: unknown;
      let keyNode: unknown;
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(part));
        if (!pair) break;
        next = pair.value;
        keyNode = pair.key;
      } else if (isSeq(node) && typeof part === 'number') {
        next = node.items[part];
      } else {
        break;
      }
      const target = i === path.length - 1 && atKey && keyNode ? keyNode : (next ?? keyNode);
      const start = (target as { range?: [number] } | null | undefined)?.range?.[0];
      if (start === undefined) break;
      offset = start;
      node = next;
    }
    return offset === undefined ? undefined : lineCounter.linePos(offset);
  };
}
