/**
 * The gateway code a run measures: a private copy of src/ (from the working tree, or from git HEAD
 * with `--source head`) with links to the repository's package.json and node_modules. The gateway
 * child starts from it, so a run measures one version of the code even when the working tree
 * changes meanwhile (other work in progress), and the report names it: HEAD commit + a hash of
 * the copied src/ tree. Same approach as bench/stt-proxy.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PREFIX = 'llm-overhead-src-';

/** Snapshots left by runs that were killed (their pid is gone). */
function removeStale(): void {
  for (const name of readdirSync(tmpdir())) {
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(name);
    if (!m) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch {
      rmSync(join(tmpdir(), name), { recursive: true, force: true });
    }
  }
}

export interface SourceSnapshot {
  /** directory to start the gateway in (`src/main.ts` relative to it) */
  root: string;
  /** e.g. "HEAD 8b61754, src 1a2b3c4d5e6f" */
  description: string;
  remove(): void;
}

export function snapshotSource(repoRoot: string, from: 'worktree' | 'head'): SourceSnapshot {
  removeStale();
  const root = mkdtempSync(join(tmpdir(), `${PREFIX}${process.pid}-`));
  try {
    if (from === 'head') {
      const tar = execFileSync('git', ['archive', '--format=tar', 'HEAD', 'src'], { cwd: repoRoot, maxBuffer: 256 * 2 ** 20 });
      execFileSync('tar', ['-x', '-C', root], { input: tar });
    } else {
      cpSync(join(repoRoot, 'src'), join(root, 'src'), { recursive: true });
    }
    symlinkSync(join(repoRoot, 'package.json'), join(root, 'package.json'));
    symlinkSync(join(repoRoot, 'node_modules'), join(root, 'node_modules'), 'dir');
  } catch (err) {
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  const hash = createHash('sha256');
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) hash.update(p.slice(root.length)).update(readFileSync(p));
    }
  };
  walk(join(root, 'src'));
  let commit = 'no git';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    /* not a checkout */
  }
  const description = `${from === 'head' ? `HEAD ${commit}` : `working tree (HEAD ${commit})`}, src ${hash.digest('hex').slice(0, 12)}`;
  return { root, description, remove: () => rmSync(root, { recursive: true, force: true }) };
}
