/**
 * Finds and loads the native addon for this platform: the platform package a
 * registry install brings (`@bifrost/protocols-linux-x64-gnu`, ...), then the
 * offline `prebuilds/` folder, then a local source build (first, in a source
 * checkout). If none fits, the error says which platform and libc it looked for
 * and what to do.
 * @packageDocumentation
 */

import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type * as Binding from '../index.js'
import { BifrostError } from './errors.js'

/** Where the native addon was loaded from. */
export interface NativeAddon {
  /** `package`: the platform package; `prebuilds`: the offline folder; `local`: a build from source. */
  readonly from: 'package' | 'prebuilds' | 'local'
  /** The file or package that was loaded. */
  readonly path: string
  /** The napi-rs platform name, e.g. `linux-x64-gnu`. */
  readonly platform: string
}

const root = join(__dirname, '..')

/** Whether this Linux runs on musl (Alpine) rather than glibc. */
function isMusl(): boolean {
  if (process.platform !== 'linux') return false
  try {
    // Fast and exact on common distributions: ldd is a script naming its libc.
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header
    return !header?.glibcVersionRuntime
  }
}

/** The platform as napi-rs names it (`linux-x64-gnu`) and as prebuildify lays it out (`linux-x64`, `glibc`). */
function platformNames(): { platform: string; prebuildDir: string; libc?: 'glibc' | 'musl' } {
  const base = `${process.platform}-${process.arch}`
  if (process.platform === 'linux') {
    const musl = isMusl()
    return { platform: `${base}-${musl ? 'musl' : 'gnu'}`, prebuildDir: base, libc: musl ? 'musl' : 'glibc' }
  }
  return { platform: process.platform === 'win32' ? `${base}-msvc` : base, prebuildDir: base }
}

function load(): { binding: typeof Binding; addon: NativeAddon } {
  const { platform, prebuildDir, libc } = platformNames()
  const local = { from: 'local' as const, path: join(root, `bifrost.${platform}.node`) }
  const candidates: Array<{ from: NativeAddon['from']; path: string }> = [
    { from: 'package', path: `@bifrost/protocols-${platform}` },
    { from: 'prebuilds', path: join(root, 'prebuilds', prebuildDir, `bifrost${libc ? `.${libc}` : ''}.node`) },
  ]
  // In a source checkout (Cargo.toml ships in no package) the build you just made comes first.
  if (existsSync(join(root, 'Cargo.toml'))) candidates.unshift(local)
  else candidates.push(local)
  const tried: string[] = []
  for (const candidate of candidates) {
    if (candidate.from !== 'package' && !existsSync(candidate.path)) {
      tried.push(`${candidate.path}: not there`)
      continue
    }
    try {
      const binding = require(candidate.path) as typeof Binding
      return { binding, addon: { from: candidate.from, path: candidate.path, platform } }
    } catch (e) {
      const error = e as NodeJS.ErrnoException
      const missing = candidate.from === 'package' && error.code === 'MODULE_NOT_FOUND' && error.message.includes(candidate.path)
      tried.push(`${candidate.path}: ${missing ? 'not installed' : error.message.split('\n')[0]}`)
    }
  }
  const what = libc ? `${process.platform} ${process.arch} with ${libc}` : `${process.platform} ${process.arch}`
  throw new BifrostError(
    'ENOTFOUND',
    [
      `@bifrost/protocols has no native binary for ${what} (napi platform ${platform}). It looked for:`,
      ...tried.map((line) => `  - ${line}`),
      'To fix it, one of:',
      `  - install the platform package: npm install @bifrost/protocols-${platform} (an install with --omit=optional, or a lockfile made on another platform, leaves it out)`,
      `  - use the offline package, which carries prebuilds/${prebuildDir}/`,
      '  - build from source in a clone of the repository: npm install && npm run build (needs Rust)',
    ].join('\n'),
  )
}

const loaded = load()
// Errors the addon makes are BifrostErrors.
loaded.binding.setErrorClass(BifrostError)

/** The native addon's bindings. @internal */
export const native: typeof Binding = loaded.binding

/** Where this process loaded the native addon from: useful when an install misbehaves. */
export const nativeAddon: NativeAddon = loaded.addon
