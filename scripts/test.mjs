// Runs every suite: cargo tests of the Rust crates, then the ava suites of the
// TypeScript API once per I/O driver (BIFROST_DRIVER=event-loop, then runtime). Prints a closing "N passed, N failed, N skipped" line for the JS
// suites, since CI reads that line (and cargo's own), not ava's summary.
//
//   node scripts/test.mjs            build what is stale, cargo tests, then ava
//   node scripts/test.mjs rust       build what is stale, cargo tests only
//   node scripts/test.mjs js         build what is stale, ava only
//   node scripts/test.mjs portable   ava only, no cargo and no native build, with
//                                    BIFROST_PORTABLE=1: for machines without the
//                                    Debian peers (macOS, Windows, Alpine) that test
//                                    a prebuilt addon. Peer tests whose peer is
//                                    missing are left out and listed before the
//                                    closing line, never skipped silently.
import { spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build, buildTypeScript } from './build.mjs'
import { buildOpen62541 } from './open62541.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const only = process.argv[2] // optional: "rust", "js" or "portable"
const win = process.platform === 'win32' // npx is npx.cmd there: spawn it through the shell

if (only !== undefined && !['rust', 'js', 'portable'].includes(only)) {
  console.error(`note: unknown mode "${only}" (modes: rust, js, portable); running every suite`)
}
const portable = only === 'portable'

function run(cmd, args, onLine, env = process.env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'inherit'], shell: win })
    let pending = ''
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk)
      pending += chunk
      const lines = pending.split('\n')
      pending = lines.pop()
      for (const line of lines) onLine?.(line.replace(/\r$/, ''))
    })
    child.on('error', (error) => console.error(`${cmd}: ${error.message}`))
    child.on('close', (code) => {
      if (pending) onLine?.(pending.replace(/\r$/, ''))
      resolve(code ?? 1)
    })
  })
}

if (portable) {
  buildTypeScript() // no native build: portable mode tests a prebuilt addon
  if (!readdirSync(root).some((f) => /^bifrost\..*\.node$/.test(f)) && !existsSync(join(root, 'prebuilds'))) {
    console.log('note: no bifrost.<platform>.node in the repository root and no prebuilds/: the tests will load the addon from an installed platform package, or fail saying what they looked for')
  }
} else {
  build()
  try {
    buildOpen62541() // the OPC UA peer; a test that needs it fails if it is missing
  } catch (error) {
    console.error(`open62541 could not be built: ${error.message}`)
  }
}
let failed = false

if (only !== 'js' && !portable) {
  console.log('\n== Rust: cargo test ==')
  // Every protocol crate, present and future; the addon's own crate is tested through ava.
  const code = await run('cargo', ['test', '--release', '--workspace', '--exclude', 'bifrost-addon'])
  failed ||= code !== 0
}

if (only !== 'rust') {
  // Every suite runs once per I/O driver: the event-loop driver (Linux) and the runtime-thread driver.
  const drivers = process.platform === 'linux' ? ['event-loop', 'runtime'] : ['runtime']
  const counts = { pass: 0, fail: 0, skip: 0, todo: 0 }
  // A peer test left out in portable mode carries its peer in its title (see LEFT_OUT_MARK in
  // __test__/helpers.ts): "- [skip] peers › <title> [left out, needs: <peer>]".
  const leftOut = []
  for (const driver of drivers) {
    console.log(`\n== TypeScript API: ava, driver=${driver}${portable ? ' (portable: BIFROST_PORTABLE=1)' : ''} ==`)
    const env = { ...process.env, BIFROST_DRIVER: driver, ...(portable ? { BIFROST_PORTABLE: '1' } : {}) }
    const run_ = { pass: 0, fail: 0, skip: 0, todo: 0 }
    // ava's default reporter, one line per test. Not --tap: its reporter crashes on an error
    // whose stack has no frames (every error the addon rejects with), hiding which test failed.
    const code = await run('npx', ['ava'], (line) => {
      const m = /^ {2}(✔|✘ \[fail\]:|- \[skip\]|- \[todo\]) (.*)$/.exec(line)
      if (!m) return
      run_[{ '✔': 'pass', '✘ [fail]:': 'fail', '- [skip]': 'skip', '- [todo]': 'todo' }[m[1]]]++
      const left = /^(.*) \[left out, needs: (.*)\]$/.exec(m[2])
      if (left && m[1] === '- [skip]' && driver === drivers[0]) leftOut.push({ title: left[1], peer: left[2] })
    }, env)
    if (code !== 0 && run_.fail === 0) run_.fail = 1 // ava itself failed (crash, timeout)
    failed ||= code !== 0
    for (const key of Object.keys(counts)) counts[key] += run_[key]
  }
  if (portable || leftOut.length > 0) {
    console.log('')
    if (leftOut.length === 0) console.log('left out (needs a Debian peer): none')
    for (const { title, peer } of leftOut) console.log(`left out (needs a Debian peer): ${title} — ${peer}`)
  }
  console.log(`\n${counts.pass} passed, ${counts.fail} failed, ${counts.skip} skipped`)
}

process.exit(failed ? 1 : 0)
