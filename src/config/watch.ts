import { unwatchFile, watchFile, type Stats } from 'node:fs';

/**
 * Calls `onChange` (once per burst) when any of `paths` changes: polling stat rather than
 * fs.watch, because `postern pki` replaces files by rename, which an inotify watch on the old
 * file never reports. Polling does not keep the process alive. Shared by the relay and the
 * connector (their certificate, key, trust bundle, CRL and policy files). Returns the function
 * that stops it.
 */
export function watchFiles(paths: readonly string[], intervalMs: number, onChange: () => void): () => void {
  let scheduled = false;
  const listener = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size) return;
    // A certificate and its key land one after the other: one reload for the burst.
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      onChange();
    });
  };
  const unique = [...new Set(paths)];
  for (const path of unique) watchFile(path, { interval: intervalMs, persistent: false }, listener);
  return () => {
    for (const path of unique) unwatchFile(path, listener);
  };
}
