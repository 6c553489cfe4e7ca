/**
 * A throwaway PostgreSQL server for tests: initdb into a temp directory, pg_ctl start on a free
 * port (127.0.0.1, trust auth, fsync off), torn down with the directory afterwards. Needs the
 * server binaries (Debian: `apt-get install -y postgresql`, which `.ci/run` does): found through
 * PG_BIN, `/usr/lib/postgresql/<version>/bin`, or PATH. Missing binaries are an error, not a
 * skip: CI installs them. As root, the server runs as the `postgres` user (PostgreSQL refuses
 * to run as root).
 */
import { execFile } from 'node:child_process';
import { accessSync, chmodSync, chownSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestPostgres {
  url: string;
  port: number;
  /** Stop the server (fast shutdown), keeping its data: an outage. */
  pause(): Promise<void>;
  /** Start it again on the same port. */
  resume(): Promise<void>;
  stop(): Promise<void>;
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Directory holding initdb and pg_ctl, or an error explaining how to get them. */
export function findPostgresBin(): string {
  const candidates: string[] = [];
  if (process.env.PG_BIN) candidates.push(process.env.PG_BIN);
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) candidates.push(join(debian, v, 'bin'));
  }
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir) candidates.push(dir);
  for (const dir of candidates) {
    if (isExecutable(join(dir, 'initdb')) && isExecutable(join(dir, 'pg_ctl'))) return dir;
  }
  throw new Error(
    'PostgreSQL server binaries (initdb, pg_ctl) not found: the PostgreSQL ledger tests need them. ' +
      'Install Debian\'s "postgresql" package (`apt-get install -y postgresql`, as .ci/run does) or set PG_BIN to their directory.',
  );
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** As root: the unprivileged user the server runs as. */
function serverUser(): { name: string; uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const [name, , uid, gid] = line.split(':');
    if (name === 'postgres') return { name, uid: Number(uid), gid: Number(gid) };
  }
  throw new Error('running as root but there is no "postgres" user to run the PostgreSQL server as (install Debian\'s postgresql package)');
}

export async function startPostgres(): Promise<TestPostgres> {
  const bin = findPostgresBin();
  const user = serverUser();
  const dir = mkdtempSync(join(tmpdir(), 'gw-pg-'));
  const data = join(dir, 'data');
  if (user) {
    chownSync(dir, user.uid, user.gid);
    chmodSync(dir, 0o700);
  }
  const exec = (cmd: string, args: string[]) =>
    user ? run('runuser', ['-u', user.name, '--', join(bin, cmd), ...args], { cwd: dir }) : run(join(bin, cmd), args, { cwd: dir });
  const dbUser = user ? 'postgres' : userInfo().username;
  try {
    await exec('initdb', ['-D', data, '-U', dbUser, '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`);
  }
  let lastErr = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const opts = `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir} -c fsync=off -c full_page_writes=off -c synchronous_commit=off`;
    try {
      await exec('pg_ctl', ['-D', data, '-o', opts, '-l', join(dir, 'log'), '-w', '-t', '30', 'start']);
    } catch (err) {
      // Another process may have taken the port between freePort() and the start.
      lastErr = (err as { stderr?: string }).stderr ?? (err as Error).message;
      continue;
    }
    const start = () => exec('pg_ctl', ['-D', data, '-o', opts, '-l', join(dir, 'log'), '-w', '-t', '30', 'start']);
    return {
      url: `postgresql://${dbUser}@127.0.0.1:${port}/postgres`,
      port,
      async pause() {
        await exec('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
      },
      async resume() {
        await start();
      },
      async stop() {
        await exec('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  let log = '';
  try {
    log = readFileSync(join(dir, 'log'), 'utf8').slice(-2000);
  } catch {
    // no log
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`pg_ctl start failed: ${lastErr}\n${log}`);
}
