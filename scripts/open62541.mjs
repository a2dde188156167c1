// Builds open62541, the OPC UA peer the tests and the benchmark run against.
// It has no Debian package; its source is vendored in the crates.io crate
// open62541-sys, which `cargo vendor` fetches. cmake builds the library
// (with OpenSSL for the security policies), and gcc our peer programs from
// crates/bifrost-opcua/tests/peers/*.c. Everything lands in target/open62541
// and is rebuilt only when a peer's source is newer than its binary.
//
//   node scripts/open62541.mjs      build (if stale) and print the server's path
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
/** open62541-sys 0.6.6 vendors open62541 1.5.10. */
const CRATE_VERSION = '0.6.6'
const out = join(root, 'target', 'open62541')
const peers = join(root, 'crates', 'bifrost-opcua', 'tests', 'peers')

function run(cmd, args, options = {}) {
  execFileSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...options })
}

const newer = (source, binary) => !existsSync(binary) || statSync(source).mtimeMs > statSync(binary).mtimeMs

/** The library: fetched and built once. */
function library() {
  const install = join(out, 'install')
  const archive = join(install, 'lib', 'libopen62541.a')
  if (existsSync(archive)) return install
  const fetch = join(out, 'fetch')
  mkdirSync(join(fetch, 'src'), { recursive: true })
  writeFileSync(
    join(fetch, 'Cargo.toml'),
    `[package]\nname = "open62541-fetch"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\nopen62541-sys = "=${CRATE_VERSION}"\n\n[workspace]\n`,
  )
  writeFileSync(join(fetch, 'src', 'main.rs'), 'fn main() {}\n')
  console.log(`open62541: fetching its source (cargo vendor of open62541-sys ${CRATE_VERSION})...`)
  run('cargo', ['vendor', '--quiet', 'vendor'], { cwd: fetch })
  const source = join(fetch, 'vendor', 'open62541-sys', 'open62541')
  const build = join(out, 'build')
  console.log('open62541: building the library with cmake (OpenSSL for encryption; about a minute)...')
  run('cmake', ['-S', source, '-B', build, '-DCMAKE_BUILD_TYPE=Release', '-DUA_ENABLE_ENCRYPTION=OPENSSL', '-DUA_BUILD_EXAMPLES=OFF',
    '-DBUILD_SHARED_LIBS=OFF', '-DUA_FORCE_WERROR=OFF', `-DCMAKE_INSTALL_PREFIX=${install}`], { stdio: ['ignore', 'ignore', 'inherit'] })
  run('cmake', ['--build', build, '-j', '2'], { stdio: ['ignore', 'ignore', 'inherit'] })
  run('cmake', ['--install', build], { stdio: ['ignore', 'ignore', 'inherit'] })
  return install
}

/** Builds the library if needed and each peer program whose source changed; returns the programs' folder. */
export function buildOpen62541() {
  const bin = join(out, 'bin')
  const programs = readdirSync(peers).filter((f) => f.startsWith('open62541_') && f.endsWith('.c'))
  const stale = programs.filter((f) => newer(join(peers, f), join(bin, f.slice(0, -2))))
  if (stale.length === 0) return bin
  const install = library()
  mkdirSync(bin, { recursive: true })
  for (const program of stale) {
    console.log(`open62541: compiling ${program}`)
    run('gcc', ['-O2', '-o', join(bin, program.slice(0, -2)), join(peers, program), '-I', join(install, 'include'),
      join(install, 'lib', 'libopen62541.a'), '-lssl', '-lcrypto', '-lpthread', '-lm'])
  }
  return bin
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(join(buildOpen62541(), 'open62541_server'))
}
