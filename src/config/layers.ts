import { dirname, resolve } from 'node:path';
import type { z } from 'zod';
import { ConfigError, PosternError } from '../errors.js';
import { scrubString } from '../log.js';
import { deepFreeze } from '../options.js';
import { envSegment, fieldAt, objectFields, takesTextOnly } from './fields.js';
import { readConfigText } from './load-file.js';
import { formatPath, issuePath, parseYamlSource, parseYamlValue, type YamlSource } from './yaml.js';

/**
 * Config layering: a program's settings come from its YAML file, then its environment
 * variables, then its flags, each layer overriding the one before, and are validated ONCE by
 * the program's zod schema. Every problem names where the value came from
 * (`relay.yaml:4:9`, `env POSTERN_RELAY_LISTEN`, `flag --listen`) and the field.
 *
 * Environment variables: `POSTERN_<PROGRAM>_<FIELD>` with nested fields joined by `__` and each
 * camelCase name in upper snake case (`limits.handshakeTimeoutMs` →
 * `POSTERN_CONNECTOR_LIMITS__HANDSHAKE_TIMEOUT_MS`). A variable under the program's prefix that
 * names no field is an error, never ignored. `POSTERN_<PROGRAM>_CONFIG` names the file when
 * --config is not given. Values are read as YAML flow (`5000`, `true`, `[a, b]`, `{k: v}`),
 * except for fields that take only text, which take the value verbatim. An empty value is an
 * error. Arrays and maps are set whole. This module reads no environment itself: the CLI
 * passes it in.
 */

export interface FlagValue {
  /** As typed on the command line, for messages: `--listen`. */
  flag: string;
  /** Dotted field path: `log.level`. */
  path: string;
  /** Undefined when the flag was not given. A string is read like an environment value. */
  value: unknown;
}

export interface LayeredConfigInput<S extends z.ZodType> {
  /** Program name as in the variables' prefix: relay → POSTERN_RELAY_… */
  program: string;
  schema: S;
  /** The --config flag, when given; otherwise POSTERN_<PROGRAM>_CONFIG, otherwise no file. */
  configFlag?: string | undefined;
  env: Readonly<Record<string, string | undefined>>;
  flags?: readonly FlagValue[];
  /** Resolves a relative config path; the base of relative paths when there is no file. */
  cwd: string;
}

export interface ConfigOverride {
  field: string;
  /** `env POSTERN_RELAY_LISTEN` or `flag --listen`; never the value (it may be a secret). */
  source: string;
}

export interface LayeredConfig<T> {
  config: Readonly<T>;
  /**
   * Relative paths resolve against this: the config file's directory, or the working directory
   * without a file. Environment values count as the file's (they patch it); flags that take a
   * path are made absolute against the working directory by the CLI, as a shell user expects.
   */
  baseDir: string;
  /** The config file read, as given; undefined when the settings came from env and flags only. */
  file: string | undefined;
  /** Fields set by environment variables and flags, in the order applied. */
  overrides: readonly ConfigOverride[];
  /** Whether a layer set the field (a default filled in by the schema does not count). */
  isSet(path: string): boolean;
}

interface Override {
  path: string[];
  source: string;
  value: unknown;
}

/** `POSTERN_CONNECTOR_LIMITS__HANDSHAKE_TIMEOUT_MS` for ('connector', ['limits', 'handshakeTimeoutMs']). */
export function envName(program: string, path: readonly string[]): string {
  return `${envPrefix(program)}${path.map(envSegment).join('__')}`;
}

/** The variable that names the config file when --config is not given. */
export function configEnvName(program: string): string {
  return `${envPrefix(program)}CONFIG`;
}

function envPrefix(program: string): string {
  return `POSTERN_${envSegment(program)}_`;
}

export async function loadLayeredConfig<S extends z.ZodType>(input: LayeredConfigInput<S>): Promise<LayeredConfig<z.output<S>>> {
  const { program, schema, env, cwd } = input;
  const configVar = configEnvName(program);
  const fromEnv = lookupEnv(env, configVar);
  if (input.configFlag === undefined && fromEnv !== undefined && fromEnv.value === '') {
    throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', `env ${fromEnv.name}: empty value; unset it or name the config file`);
  }
  const file = input.configFlag ?? fromEnv?.value;
  const text = file === undefined ? undefined : { name: file, text: await readConfigText(resolve(cwd, file)) };
  const layered = layerConfig(schema, program, text, env, input.flags ?? []);
  return { ...layered, baseDir: file === undefined ? cwd : dirname(resolve(cwd, file)), file };
}

/** The synchronous core of loadLayeredConfig, for callers that already hold the file's text. */
export function layerConfig<S extends z.ZodType>(
  schema: S,
  program: string,
  file: { name: string; text: string } | undefined,
  env: Readonly<Record<string, string | undefined>>,
  flags: readonly FlagValue[] = [],
): Omit<LayeredConfig<z.output<S>>, 'baseDir' | 'file'> {
  const source = file === undefined ? undefined : parseYamlSource(file.text, file.name);
  return layer(schema, program, source, file?.name, env, flags);
}

function layer<S extends z.ZodType>(
  schema: S,
  program: string,
  source: YamlSource | undefined,
  file: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  flags: readonly FlagValue[],
): Omit<LayeredConfig<z.output<S>>, 'baseDir' | 'file'> {
  const applied: Override[] = [];
  const base: unknown = source === undefined ? {} : structuredClone(source.data);
  const merged = isPlainObject(base) ? base : undefined;
  // Shallow variables first, so POSTERN_X_LIMITS__A refines a whole POSTERN_X_LIMITS; flags last.
  const overrides = [...envOverrides(schema, program, env).sort((a, b) => a.path.length - b.path.length), ...flagOverrides(schema, flags)];
  for (const override of overrides) {
    if (!merged) break; // the file is not a mapping: its own error says so below
    setPath(merged, override.path, override.value);
    // A value set whole replaces what earlier layers set inside it: it is now the only source.
    for (let i = applied.length - 1; i >= 0; i--) if (startsWith(applied[i]!.path, override.path)) applied.splice(i, 1);
    applied.push(override);
  }

  const parsed = schema.safeParse(merged ?? base);
  if (!parsed.success) throw describeFailure(parsed.error.issues, { program, source, file, applied, flags, merged: merged ?? base });
  return {
    config: deepFreeze(parsed.data),
    overrides: applied.map((o) => ({ field: o.path.join('.'), source: o.source })),
    isSet: (path) => getPath(merged ?? base, path.split('.')) !== undefined,
  };
}

function lookupEnv(env: Readonly<Record<string, string | undefined>>, wanted: string): { name: string; value: string } | undefined {
  for (const [name, value] of Object.entries(env)) if (value !== undefined && name.toUpperCase() === wanted) return { name, value };
  return undefined;
}

/** Every POSTERN_<PROGRAM>_* variable as an override; unknown names and empty values are refused together. */
function envOverrides(schema: z.ZodType, program: string, env: Readonly<Record<string, string | undefined>>): Override[] {
  const prefix = envPrefix(program);
  const out: Override[] = [];
  const unknown: string[] = [];
  const invalid: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    const upper = name.toUpperCase();
    if (raw === undefined || !upper.startsWith(prefix) || upper === configEnvName(program)) continue;
    const resolved = resolveEnvName(schema, prefix, upper.slice(prefix.length).split('__'));
    if (typeof resolved === 'string') {
      unknown.push(`env ${name}: ${resolved}`);
      continue;
    }
    const source = `env ${name}`;
    if (raw.trim() === '') {
      invalid.push(`${source}: empty value; unset the variable to keep the file's value or the default`);
      continue;
    }
    try {
      out.push({ path: resolved.path, source, value: readValue(resolved.field, raw, source) });
    } catch (err) {
      invalid.push((err as Error).message);
    }
  }
  if (unknown.length > 0) {
    throw new ConfigError('POSTERN_ERR_CONFIG_UNKNOWN_KEY', [...unknown, ...invalid].join('\n'), { details: { issues: [...unknown, ...invalid] } });
  }
  if (invalid.length > 0) throw new ConfigError('POSTERN_ERR_CONFIG_INVALID', invalid.join('\n'), { details: { issues: invalid } });
  return out;
}

/** The field a variable names, or why it names none (with the names that would have worked). */
function resolveEnvName(schema: z.ZodType, prefix: string, segments: string[]): { path: string[]; field: z.ZodType } | string {
  const path: string[] = [];
  let current = schema;
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!;
    const fields = objectFields(current);
    const here = `${prefix}${segments.slice(0, i).map((s) => `${s}__`).join('')}`;
    if (!fields) {
      return `"${path.join('.')}" is set whole (for example ${here.slice(0, -2)}='…'); it has no field "${segment}"`;
    }
    const match = Object.keys(fields).find((name) => envSegment(name) === segment);
    if (match === undefined) {
      const names = Object.keys(fields).map(envSegment);
      const nested = Object.entries(fields).find(([name, f]) => objectFields(f) && segment.startsWith(`${envSegment(name)}_`));
      const hint = nested ? `; nested fields are joined with "__": did you mean ${here}${envSegment(nested[0])}__${segment.slice(envSegment(nested[0]).length + 1)}?` : '';
      return `no setting "${segment}" ${path.length ? `in "${path.join('.')}"` : 'at the top level'} (known: ${names.join(', ')})${hint}`;
    }
    path.push(match);
    current = fields[match]!;
  }
  return { path, field: current };
}

function flagOverrides(schema: z.ZodType, flags: readonly FlagValue[]): Override[] {
  const out: Override[] = [];
  for (const flag of flags) {
    if (flag.value === undefined) continue;
    const path = flag.path.split('.');
    const field = fieldAt(schema, path);
    if (!field) throw new PosternError('POSTERN_ERR_INTERNAL', `flag ${flag.flag} maps to "${flag.path}", which the schema does not define`);
    const source = `flag ${flag.flag}`;
    out.push({ path, source, value: typeof flag.value === 'string' ? readValue(field, flag.value, source) : flag.value });
  }
  return out;
}

function readValue(field: z.ZodType, raw: string, source: string): unknown {
  return takesTextOnly(field) ? raw : parseYamlValue(raw, source);
}

interface FailureContext {
  program: string;
  source: YamlSource | undefined;
  file: string | undefined;
  applied: readonly Override[];
  flags: readonly FlagValue[];
  merged: unknown;
}

function describeFailure(issues: readonly z.core.$ZodIssue[], ctx: FailureContext): ConfigError {
  const messages: string[] = [];
  let unknownKey = false;
  for (const issue of issues) {
    const path = issuePath(issue);
    if (issue.code === 'unrecognized_keys') {
      unknownKey = true;
      for (const key of issue.keys) messages.push(`${where(ctx, [...path, key], true)}: unknown key "${formatPath([...path, key])}"`);
    } else if (issue.code === 'invalid_type' && getPath(ctx.merged, path) === undefined && path.length > 0) {
      // A missing field is blamed on whatever built the object it is missing from: the file, or
      // the variables that created that object (POSTERN_RELAY_TAP__MAX_BYTES without a tap.dir).
      messages.push(`${where(ctx, path, false, path.slice(0, -1))}: field "${formatPath(path)}": missing (expected ${issue.expected}); ${howToSet(ctx, path)}`);
    } else if (issue.code === 'custom') {
      // A refinement compares fields of the object around `path` (maxDelayMs against
      // initialDelayMs): a variable that set any of them is named.
      messages.push(`${where(ctx, path, false, path.slice(0, -1))}: field "${formatPath(path) || '(root)'}": ${issue.message}`);
    } else {
      messages.push(`${where(ctx, path, false)}: field "${formatPath(path) || '(root)'}": ${issue.message}`);
    }
  }
  // A schema's message may quote the value it refused: a proxy URL's password or a key pasted
  // into a variable must not reach the terminal or a log that way.
  const safe = messages.map(scrubString);
  return new ConfigError(unknownKey ? 'POSTERN_ERR_CONFIG_UNKNOWN_KEY' : 'POSTERN_ERR_CONFIG_INVALID', safe.join('\n'), {
    details: { issues: safe },
  });
}

/**
 * Where the value at `path` came from: the override that set it (or a whole object around it),
 * else the overrides inside `within` (by default `path` itself) and the file where it stands.
 * The top level is never `within`: there every override would be named.
 */
function where(ctx: FailureContext, path: ReadonlyArray<string | number>, keyOfLast: boolean, within = path): string {
  let covering: Override | undefined;
  for (const o of ctx.applied) if (startsWith(path, o.path) && (!covering || o.path.length > covering.path.length)) covering = o;
  if (covering) return covering.source;
  const scope = within.length > 0 ? within : path;
  const inside = ctx.applied.filter((o) => startsWith(o.path, scope)).map((o) => o.source);
  const fileWhere = ctx.file === undefined ? undefined : `${ctx.file}${ctx.source?.locate(path, keyOfLast) ?? ''}`;
  if (inside.length === 0) return fileWhere ?? `${ctx.program} settings (no config file)`;
  return ctx.source?.has(scope) && fileWhere ? [fileWhere, ...inside].join(', ') : inside.join(', ');
}

function howToSet(ctx: FailureContext, path: ReadonlyArray<string | number>): string {
  const names = path.filter((p): p is string => typeof p === 'string');
  const ways = [ctx.file === undefined ? `a config file (--config or ${configEnvName(ctx.program)})` : `the config file`];
  if (names.length === path.length) ways.push(`env ${envName(ctx.program, names)}`);
  const flag = ctx.flags.find((f) => f.path === names.join('.'));
  if (flag) ways.push(`flag ${flag.flag}`);
  return `set it in ${ways.join(', or with ')}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function setPath(root: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = root;
  for (const part of path.slice(0, -1)) {
    const next = node[part];
    if (isPlainObject(next)) node = next;
    else node = node[part] = {};
  }
  node[path[path.length - 1]!] = value;
}

function getPath(root: unknown, path: ReadonlyArray<string | number>): unknown {
  let node = root;
  for (const part of path) {
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, part)) return undefined;
    node = (node as Record<string | number, unknown>)[part];
  }
  return node;
}

function startsWith(path: ReadonlyArray<string | number>, prefix: ReadonlyArray<string | number>): boolean {
  return prefix.length <= path.length && prefix.every((p, i) => path[i] === p);
}
