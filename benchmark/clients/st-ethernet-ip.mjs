// st-ethernet-ip, used as its README shows: a Controller, and the tags read as
// one TagGroup (which it packs into Multiple Service Packets) per cycle.
import { createRequire } from 'node:module'
import { ENIP } from '../workloads.mjs'

const require = createRequire(import.meta.url)

export default {
  name: 'st-ethernet-ip',
  version: require('st-ethernet-ip/package.json').version,
  load: () => require('st-ethernet-ip'),
  async enipReader(lib, { host, port }) {
    // It dials 44818 unless its config says otherwise; connect(host, 0, false) skips its tag-list upload.
    require('st-ethernet-ip/dist/config').EIP_PORT = port
    const plc = new lib.Controller(true)
    await plc.connect(host, 0, false)
    const group = new lib.TagGroup()
    const tags = ENIP.tags.map((name) => new lib.Tag(name))
    for (const tag of tags) group.add(tag)
    const values = new Float64Array(tags.length)
    const read = async () => {
      await plc.readTagGroup(group)
      for (let i = 0; i < tags.length; i++) values[i] = tags[i].value
      return values
    }
    return { read, close: async () => plc.destroy() }
  },
}
