// Builds what is stale: the native addon (cargo via napi) and the TypeScript (tsc).
// Run directly or imported by the test and demo scripts.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

function newest(paths, filter) {
  let latest = 0
  const visit = (p) => {
    if (!existsSync(p)) return
    const st = statSync(p)
    if (st.isDirectory()) {
      for (const entry of readdirSync(p)) if (entry !== 'target' && entry !== 'node_modules') visit(join(p, entry))
    } else if (filter(p)) latest = Math.max(latest, st.mtimeMs)
  }
  for (const p of paths) visit(join(root, p))
  return latest
}

function addonPath() {
  const found = readdirSync(root).filter((f) => /^bifrost\..*\.node$/.test(f))
  return found.length ? join(root, found[0]) : undefined
}

/** Runs a command in the repository root, echoing it, with `env` added to the environment. */
export function run(cmd, args, env = {}) {
  console.log(`> ${cmd} ${args.join(' ')}`)
  execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env }, shell: process.platform === 'win32' })
}

export function build({ force = false } = {}) {
  const rustSources = newest(['Cargo.toml', 'Cargo.lock', 'build.rs', 'src', 'crates'], (p) => /\.(rs|toml|lock)$/.test(p))
  const addon = addonPath()
  if (force || !addon || statSync(addon).mtimeMs < rustSources) {
    console.log('Building the native addon (release; the first build takes a few minutes)...')
    run('npx', ['napi', 'build', '--platform', '--release', '--js', 'index.js', '--dts', 'index.d.ts'])
  }
  buildTypeScript({ force })
}

/** Compiles the TypeScript when a source is newer than dist/ (bin/ runs dist/). */
export function buildTypeScript({ force = false } = {}) {
  const tsSources = newest(['src', 'index.d.ts', 'tsconfig.json'], (p) => /\.ts$|tsconfig\.json$/.test(p))
  const output = join(root, 'dist', 'index.js')
  if (force || !existsSync(output) || statSync(output).mtimeMs < tsSources) {
    console.log('Compiling TypeScript...')
    run('npx', ['tsc', '-p', 'tsconfig.json'])
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  build({ force: process.argv.includes('--force') })
}
