// Runs every suite: cargo tests of the Rust crates, then the ava suites of the
// TypeScript API. Prints a closing "N passed, N failed" line for the JS suites,
// since CI reads that line (and cargo's own), not ava's summary.
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from './build.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const only = process.argv[2] // optional: "rust" or "js"

function run(cmd, args, onLine) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
    let pending = ''
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk)
      pending += chunk
      const lines = pending.split('\n')
      pending = lines.pop()
      for (const line of lines) onLine?.(line)
    })
    child.on('close', (code) => {
      if (pending) onLine?.(pending)
      resolve(code ?? 1)
    })
  })
}

build()
let failed = false

if (only !== 'js') {
  console.log('\n== Rust: cargo test ==')
  const code = await run('cargo', ['test', '--release', '-p', 'bifrost-core', '-p', 'bifrost-modbus'])
  failed ||= code !== 0
}

if (only !== 'rust') {
  console.log('\n== TypeScript API: ava ==')
  const counts = { pass: 0, fail: 0, skip: 0, todo: 0 }
  const code = await run('npx', ['ava', '--tap'], (line) => {
    const m = /^# (pass|fail|skip|todo) (\d+)/.exec(line)
    if (m) counts[m[1]] = Number(m[2])
  })
  if (code !== 0 && counts.fail === 0) counts.fail = 1 // ava itself failed (crash, timeout)
  failed ||= code !== 0
  console.log(`\n${counts.pass} passed, ${counts.fail} failed, ${counts.skip} skipped`)
}

process.exit(failed ? 1 : 0)
