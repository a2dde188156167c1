// Builds the shipped native binaries: stripped (`--profile dist`), one per Rust
// target, into both layouts: npm/<platform>/bifrost.<platform>.node (the napi-rs
// platform packages) and prebuilds/<os>-<arch>/bifrost[.glibc|.musl].node (the
// offline package). Linux targets are cross-built with zig (cargo-zigbuild), the
// glibc ones against glibc 2.28; macOS and Windows targets build with plain cargo
// on their own runners. Also compiles the TypeScript, so `npm pack` can follow.
//
//   node scripts/build-binaries.mjs                       the four Linux targets
//   node scripts/build-binaries.mjs --targets a,b         the given Rust targets
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, statSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildTypeScript, run } from './build.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

/** Rust target → where its binary goes. `libc` tells glibc and musl apart in prebuilds/. */
export const TARGETS = {
  'x86_64-unknown-linux-gnu': { platform: 'linux-x64-gnu', prebuild: 'linux-x64', libc: 'glibc', file: 'libbifrost_addon.so' },
  'aarch64-unknown-linux-gnu': { platform: 'linux-arm64-gnu', prebuild: 'linux-arm64', libc: 'glibc', file: 'libbifrost_addon.so' },
  'x86_64-unknown-linux-musl': { platform: 'linux-x64-musl', prebuild: 'linux-x64', libc: 'musl', file: 'libbifrost_addon.so' },
  'aarch64-unknown-linux-musl': { platform: 'linux-arm64-musl', prebuild: 'linux-arm64', libc: 'musl', file: 'libbifrost_addon.so' },
  'x86_64-apple-darwin': { platform: 'darwin-x64', prebuild: 'darwin-x64', file: 'libbifrost_addon.dylib' },
  'aarch64-apple-darwin': { platform: 'darwin-arm64', prebuild: 'darwin-arm64', file: 'libbifrost_addon.dylib' },
  'x86_64-pc-windows-msvc': { platform: 'win32-x64-msvc', prebuild: 'win32-x64', file: 'bifrost_addon.dll' },
  'aarch64-pc-windows-msvc': { platform: 'win32-arm64-msvc', prebuild: 'win32-arm64', file: 'bifrost_addon.dll' },
}

export const LINUX_TARGETS = Object.keys(TARGETS).filter((t) => t.includes('-linux-'))

/** The glibc the gnu binaries are built against: what Node 20's own binaries need. */
export const GLIBC_FLOOR = '2.28'

/** Where the binary of `target` lands in each layout. */
export function outputs(target) {
  const { platform, prebuild, libc } = TARGETS[target]
  return {
    npm: join(root, 'npm', platform, `bifrost.${platform}.node`),
    prebuild: join(root, 'prebuilds', prebuild, `bifrost${libc ? `.${libc}` : ''}.node`),
  }
}

/** Cargo's target folder, wherever CARGO_TARGET_DIR or a cargo config puts it. */
function targetDir() {
  const metadata = execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 })
  return JSON.parse(metadata).target_directory
}

function build(target) {
  const { file } = TARGETS[target]
  const cargo = ['--profile', 'dist', '-p', 'bifrost-addon', '--locked']
  if (target.includes('-linux-')) {
    // zig links against the glibc version named in the target, not this machine's.
    const zigTarget = target.endsWith('-gnu') ? `${target}.${GLIBC_FLOOR}` : target
    // musl targets link the C runtime statically by default, which a shared library cannot.
    const env = target.endsWith('-musl') ? { [`CARGO_TARGET_${target.toUpperCase().replaceAll('-', '_')}_RUSTFLAGS`]: '-C target-feature=-crt-static' } : {}
    run('cargo', ['zigbuild', ...cargo, '--target', zigTarget], env)
  } else {
    run('cargo', ['build', ...cargo, '--target', target])
  }
  const built = join(targetDir(), target, 'dist', file)
  for (const destination of Object.values(outputs(target))) {
    mkdirSync(dirname(destination), { recursive: true })
    copyFileSync(built, destination)
  }
  return statSync(built).size
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf('--targets')
  const targets = at > 0 ? process.argv[at + 1].split(',') : LINUX_TARGETS
  const unknown = targets.filter((t) => !TARGETS[t])
  if (unknown.length) {
    console.error(`unknown target(s): ${unknown.join(', ')}; known: ${Object.keys(TARGETS).join(', ')}`)
    process.exit(2)
  }
  console.log(`Building ${targets.length} native binaries (a few minutes each on two cores the first time)...`)
  targets.forEach((target, i) => {
    const started = Date.now()
    console.log(`\n[${i + 1}/${targets.length}] ${target}`)
    const size = build(target)
    console.log(`[${i + 1}/${targets.length}] ${target}: ${(size / 1e6).toFixed(1)} MB in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })
  buildTypeScript({ force: true })
}
