// What `npm pack` puts in the package: everything a user needs to run it without
// Rust, and nothing of the sources, tests or build output that only the repository needs.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { nativeAddon } from '../src/index.js'

const root = join(__dirname, '..')

test('the packed package holds the compiled API, the CLI, the typings and the prebuilt binaries, and no sources', (t) => {
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' })) as Array<{
    files: Array<{ path: string }>
  }>
  const files = packed!.files.map((f) => f.path)
  for (const needed of ['package.json', 'README.md', 'LICENSE', 'bin/bifrost.js', 'dist/index.js', 'dist/index.d.ts', 'dist/native.js', 'dist/cli.js', 'index.d.ts']) {
    t.true(files.includes(needed), `${needed} is missing from the package`)
  }
  // The typings of dist/ import the generated index.d.ts at the root: it must ship.
  t.regex(readFileSync(join(root, 'dist', 'native.d.ts'), 'utf8'), /from '\.\.\/index\.js'/)
  const stray = files.filter((f) => /^(src|crates|__test__|benchmark|scripts|target|npm|docs)\//.test(f) || f.endsWith('.rs') || /^[^/]+\.node$/.test(f))
  t.deepEqual(stray, [], 'sources, tests, local builds and platform packages stay out')
  const prebuilds = files.filter((f) => f.startsWith('prebuilds/'))
  t.true(prebuilds.every((f) => /^prebuilds\/(linux|darwin|win32)-(x64|arm64)\/bifrost(\.glibc|\.musl)?\.node$/.test(f)), prebuilds.join(', '))
})

test('the addon this process loaded says where it came from', (t) => {
  t.true(['package', 'prebuilds', 'local'].includes(nativeAddon.from))
  t.regex(nativeAddon.platform, /^(linux|darwin|win32)-(x64|arm64)/)
  t.truthy(nativeAddon.path)
})
