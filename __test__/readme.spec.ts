// The README's Modbus example is run as written, so the documentation cannot rot.
import test from 'ava'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { run } from './helpers.js'

test('the README Modbus example runs and prints what it promises', async (t) => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
  const example = /```ts\n(import \{ connect, startSimulator[\s\S]*?)```/.exec(readme)?.[1]
  t.truthy(example, 'the README has a Modbus example')
  const file = join(__dirname, '.readme-example.mts')
  writeFileSync(file, example!)
  try {
    const output = await run(process.execPath, ['--import', 'tsx', file])
    t.regex(output, /^21\.5$/m)
    t.regex(output, /holding-register:20:UINT\[10\] good \[\s*20, 21, 22/)
    t.regex(output, /^coil:5 good true$/m)
    t.regex(output, /^400021:UINT good 20$/m)
    t.regex(output, /^EADDRESS .*column 18/m)
  } finally {
    rmSync(file, { force: true })
  }
})
