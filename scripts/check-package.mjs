// Checks that the packed package installs and runs where no Rust exists: after
// `node scripts/build-binaries.mjs`, it packs the package and installs it into
// empty projects with cargo and rustc off PATH, offline, then runs a CommonJS and
// an ESM script that start the simulator and read a tag, and the `bifrost` CLI.
//  1. the offline package (`npm pack` at the root, carrying prebuilds/): loads from prebuilds/;
//  2. the registry layout: the root packed without prebuilds/, with the
//     npm/linux-x64-gnu package beside it: loads from the platform package, and
//     the install for one platform stays within 15 MB;
//  3. the root alone, with no binary anywhere: fails with an error naming the
//     platform and libc it looked for.
// Linux x64 glibc only (the machine this runs on). Exits 1 on any failure.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const work = mkdtempSync(join(tmpdir(), 'bifrost-package-'))
const MAX_INSTALL_BYTES = 15 * 1024 * 1024
const failures = []

// PATH without any folder holding cargo or rustc: the install must not need them.
const noRust = process.env.PATH.split(delimiter)
  .filter((dir) => !['cargo', 'rustc', 'rustup'].some((tool) => existsSync(join(dir, tool))))
  .join(delimiter)
const env = { ...process.env, PATH: noRust, CARGO: '', RUSTC: '', npm_config_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false' }
if (spawnSync('cargo', ['--version'], { env }).status === 0) failures.push('cargo is still on the trimmed PATH')

function pack(dir, into) {
  const [{ filename }] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', into, dir], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }))
  const tarball = join(into, filename)
  console.log(`packed ${tarball}: ${(statSync(tarball).size / 1e6).toFixed(2)} MB`)
  return tarball
}

function size(path) {
  const st = statSync(path)
  return st.isDirectory() ? readdirSync(path).reduce((sum, entry) => sum + size(join(path, entry)), 0) : st.size
}

const SCRIPT = `
const { startSimulator, connect, nativeAddon } = require('@bifrost/protocols')
const { execFileSync } = require('node:child_process')
;(async () => {
  const sim = await startSimulator()
  const dev = await connect(sim.url)
  const value = await dev.read('holding-register:42:UINT')
  const cli = execFileSync(require('node:path').join('node_modules', '.bin', 'bifrost'), ['read', sim.url, 'holding-register:7:UINT'], { encoding: 'utf8' })
  await dev.close()
  sim.stop()
  console.log(JSON.stringify({ value, from: nativeAddon.from, cli: cli.trim() }))
})().catch((e) => { console.error(e.message); process.exit(1) })
`
const ESM = `
import { startSimulator, connect, nativeAddon } from '@bifrost/protocols'
const sim = await startSimulator()
const dev = await connect(sim.url)
console.log(JSON.stringify({ value: await dev.read('holding-register:43:UINT'), from: nativeAddon.from }))
await dev.close()
sim.stop()
`

/** Installs the tarballs into a new empty project and runs the scripts there. */
function tryInstall(name, tarballs) {
  const project = join(work, name)
  mkdirSync(project)
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: `try-${name}`, version: '1.0.0', private: true }))
  writeFileSync(join(project, 'read.cjs'), SCRIPT)
  writeFileSync(join(project, 'read.mjs'), ESM)
  execFileSync('npm', ['install', '--no-save', ...tarballs], { cwd: project, env, stdio: 'inherit' })
  const run = (file) => spawnSync(process.execPath, [file], { cwd: project, env, encoding: 'utf8', timeout: 60_000 })
  return { project, cjs: run('read.cjs'), esm: run('read.mjs') }
}

function expectReads(name, result, from) {
  for (const [kind, run, value] of [['CommonJS', result.cjs, 42], ['ESM', result.esm, 43]]) {
    let out
    try {
      out = JSON.parse(run.stdout.trim().split('\n').at(-1))
    } catch {
      failures.push(`${name} (${kind}): the script failed: ${run.stderr || run.stdout}`)
      continue
    }
    if (out.value !== value) failures.push(`${name} (${kind}): read ${out.value}, expected ${value}`)
    if (out.from !== from) failures.push(`${name} (${kind}): loaded from ${out.from}, expected ${from}`)
    if (kind === 'CommonJS' && !/holding-register:7:UINT\s+7/.test(out.cli)) failures.push(`${name}: the bifrost CLI printed '${out.cli}'`)
    if (!failures.length) console.log(`${name} (${kind}): read ${out.value} through ${out.from}`)
  }
}

try {
  const offline = pack(root, work)
  expectReads('offline package', tryInstall('offline', [offline]), 'prebuilds')

  const prebuilds = join(root, 'prebuilds')
  const aside = join(root, 'prebuilds.packing')
  renameSync(prebuilds, aside)
  let registryRoot
  try {
    mkdirSync(join(work, 'registry-root'))
    registryRoot = pack(root, join(work, 'registry-root'))
  } finally {
    renameSync(aside, prebuilds)
  }
  const platform = pack(join(root, 'npm', 'linux-x64-gnu'), work)
  const registry = tryInstall('registry', [registryRoot, platform])
  expectReads('registry layout', registry, 'package')
  const installed = size(join(registry.project, 'node_modules', '@bifrost'))
  console.log(`registry layout: installed size for one platform ${(installed / 1e6).toFixed(2)} MB`)
  if (installed > MAX_INSTALL_BYTES) failures.push(`the install for one platform is ${(installed / 1e6).toFixed(1)} MB, over 15 MB`)

  const bare = tryInstall('no-binary', [registryRoot])
  const message = bare.cjs.stderr
  if (bare.cjs.status === 0) failures.push('with no binary anywhere the script still ran')
  else if (!/linux x64 with glibc/.test(message) || !/@bifrost\/protocols-linux-x64-gnu/.test(message)) {
    failures.push(`the missing-binary error does not name the platform and libc:\n${message}`)
  } else console.log('no binary: the error names the platform, the libc and the fixes')
} finally {
  rmSync(work, { recursive: true, force: true })
}

if (failures.length) {
  console.error(`\n${failures.length} problem(s):\n${failures.map((f) => `- ${f}`).join('\n')}`)
  process.exit(1)
}
console.log('\nthe package installs and runs without Rust, offline, in both layouts')
