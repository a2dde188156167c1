// Checks the shipped Linux binaries that scripts/build-binaries.mjs wrote, so
// later work cannot quietly break them: each exists, is an ELF shared object for
// the right machine, is at most 10 MB, and (gnu) needs no non-weak glibc symbol
// newer than 2.28 (a weak one, such as `gettid@GLIBC_2.30`, is looked up at run
// time and does not raise the floor); musl binaries need no glibc symbol at all.
// Prints a table; exits 1 on any failure. `--targets a,b` checks only those.
import { execFileSync } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { relative } from 'node:path'
import { GLIBC_FLOOR, LINUX_TARGETS, outputs } from './build-binaries.mjs'

const MAX_BYTES = 10 * 1024 * 1024
const MACHINES = { x86_64: 'Advanced Micro Devices X86-64', aarch64: 'AArch64' }

/** `2.3.4` and `2.28` compared part by part. */
function versionKey(version) {
  const [major = 0, minor = 0, patch = 0] = version.split('.').map(Number)
  return (major * 1000 + minor) * 1000 + patch
}

/** The newest GLIBC_x.y among undefined symbols, strong and weak apart. */
function glibcNeeds(file) {
  const table = execFileSync('readelf', ['--dyn-syms', '--wide', file], { encoding: 'utf8' })
  const newest = { strong: undefined, weak: undefined }
  for (const line of table.split('\n')) {
    const m = /\s(GLOBAL|WEAK)\s+\S+\s+UND\s+(\S+)@GLIBC_([\d.]+)/.exec(line)
    if (!m) continue
    const kind = m[1] === 'WEAK' ? 'weak' : 'strong'
    if (!newest[kind] || versionKey(m[3]) > versionKey(newest[kind].version)) newest[kind] = { version: m[3], symbol: m[2] }
  }
  return newest
}

// `--targets a,b` checks only those (a CI job that built one); by default all four.
const at = process.argv.indexOf('--targets')
const targets = at > 0 ? process.argv[at + 1].split(',') : LINUX_TARGETS
const failures = targets.filter((t) => !LINUX_TARGETS.includes(t)).map((t) => `${t}: not a Linux target this script checks`)
const rows = []
for (const target of targets.filter((t) => LINUX_TARGETS.includes(t))) {
  for (const file of Object.values(outputs(target))) {
    const shown = relative(process.cwd(), file)
    if (!existsSync(file)) {
      failures.push(`${shown}: missing (run: node scripts/build-binaries.mjs)`)
      continue
    }
    const header = execFileSync('readelf', ['--file-header', '--wide', file], { encoding: 'utf8' })
    const machine = /Machine:\s+(.*)/.exec(header)?.[1]?.trim()
    const type = /Type:\s+(\S+)/.exec(header)?.[1]
    const expected = MACHINES[target.split('-')[0]]
    if (machine !== expected) failures.push(`${shown}: machine '${machine}', expected '${expected}'`)
    if (type !== 'DYN') failures.push(`${shown}: ELF type ${type}, expected DYN (a shared object)`)
    const size = statSync(file).size
    if (size > MAX_BYTES) failures.push(`${shown}: ${(size / 1e6).toFixed(1)} MB, over the 10 MB budget`)
    const symbols = execFileSync('readelf', ['--symbols', '--wide', file], { encoding: 'utf8' })
    if (/\s\.symtab\s|Symbol table '\.symtab'/.test(symbols)) failures.push(`${shown}: not stripped (a .symtab is present)`)
    const needs = glibcNeeds(file)
    let floor
    if (target.endsWith('-gnu')) {
      floor = needs.strong?.version ?? 'none'
      if (needs.strong && versionKey(needs.strong.version) > versionKey(GLIBC_FLOOR)) {
        failures.push(`${shown}: needs ${needs.strong.symbol}@GLIBC_${needs.strong.version}, newer than ${GLIBC_FLOOR}`)
      }
    } else {
      floor = 'musl'
      if (needs.strong || needs.weak) failures.push(`${shown}: a musl binary that needs glibc (${(needs.strong ?? needs.weak).symbol})`)
    }
    const weak = needs.weak ? ` (weak ${needs.weak.symbol}@${needs.weak.version})` : ''
    rows.push(`| ${shown} | ${machine} | ${(size / 1e6).toFixed(2)} MB | ${floor}${weak} |`)
  }
}
console.log('| binary | machine | size | glibc floor |\n| --- | --- | ---: | --- |')
console.log(rows.join('\n'))
if (failures.length) {
  console.error(`\n${failures.length} problem(s):\n${failures.map((f) => `- ${f}`).join('\n')}`)
  process.exit(1)
}
console.log(`\nall ${rows.length} binaries: right machine, stripped, at most 10 MB, glibc floor at most ${GLIBC_FLOOR}`)
