// OPC UA security through the public API against third-party servers over
// loopback: node-opcua-server 2.186.4 (crates/bifrost-opcua/tests/peers/
// node_opcua_server.mjs with "secure") and open62541 1.5 (open62541_server.c
// with "secure": an RSA 4096 certificate naming 127.0.0.1). Both offer every
// policy we speak in Sign and SignAndEncrypt (open62541 the deprecated
// Basic128Rsa15 and Basic256 too), the user operator/secret-pw and certificate users. Each test keeps its certificate store in a folder of its own.
import test from 'ava'
import type { ExecutionContext } from 'ava'
import type { ChildProcess } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from '../src/index.js'
import type { ConnectOptions, Device } from '../src/index.js'
import { failure, freePort, peerTest, readFor, startProcess, stats, stopProcess } from './helpers.js'

const ROOT = join(__dirname, '..')
const NODE_OPCUA = join(ROOT, 'crates', 'bifrost-opcua', 'tests', 'peers', 'node_opcua_server.mjs')
const OPEN62541 = join(ROOT, 'target', 'open62541', 'bin', 'open62541_server')
const open62541 = { name: 'open62541 (node scripts/open62541.mjs builds it)', present: existsSync(OPEN62541) }
const nodeOpcua = { name: 'node-opcua-server (npm ci installs it)', present: existsSync(join(ROOT, 'node_modules', 'node-opcua-server')) }

const POLICIES = ['Basic256Sha256', 'Aes128_Sha256_RsaOaep', 'Aes256_Sha256_RsaPss'] as const
/** Deprecated (SHA-1): used only with allowDeprecatedSecurity. */
const DEPRECATED = ['Basic128Rsa15', 'Basic256'] as const
const MODES = ['Sign', 'SignAndEncrypt'] as const
const USER = { username: 'operator', password: 'secret-pw' }

const folders: string[] = []
const servers: ChildProcess[] = []

function folder(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `bifrost-${name}-`))
  folders.push(dir)
  return dir
}

test.after.always(async () => {
  await Promise.all(servers.map(stopProcess))
  for (const dir of folders) rmSync(dir, { recursive: true, force: true })
})

/** node-opcua-server in secure mode, started once; node-opcua writes its own PKI under HOME. */
let nodeOpcuaUrl: Promise<string> | undefined
function nodeOpcuaServer(): Promise<string> {
  nodeOpcuaUrl ??= (async () => {
    const port = await freePort()
    const env = { ...process.env, HOME: folder('node-opcua-home') }
    // Its first start makes an RSA key: give a busy machine time.
    servers.push(await startProcess(process.execPath, [NODE_OPCUA, String(port), 'secure'], `listening ${port}`, env, 90_000))
    return `opc.tcp://127.0.0.1:${port}/bifrost`
  })()
  return nodeOpcuaUrl
}

/**
 * open62541 in secure mode (or `plain`, for the endpoint it lacks; or a mode whose
 * certificate the checks must refuse: see open62541_server.c), each started once.
 */
const open62541Urls = new Map<string, Promise<string>>()
function open62541Server(mode: string): Promise<string> {
  let url = open62541Urls.get(mode)
  if (!url) {
    url = (async () => {
      const port = await freePort()
      const args = [String(port), '20', ...(mode === 'plain' ? [] : [mode])]
      servers.push(await startProcess(OPEN62541, args, `listening ${port}`, process.env, 90_000))
      return `opc.tcp://127.0.0.1:${port}`
    })()
    open62541Urls.set(mode, url)
  }
  return url
}

/**
 * A certificate store that trusts the server at `url`: the first connection is
 * refused and saves the server's certificate to rejected/certs, which is then
 * copied into trusted/certs, as a user would.
 */
async function trustingStore(url: string, options: ConnectOptions = {}): Promise<string> {
  const pkiDir = folder('pki')
  const refused = await failure(connect(url, { ...options, pkiDir, securityPolicy: 'Basic256Sha256' }))
  if (refused.statusName !== 'BadCertificateUntrusted') throw refused
  mkdirSync(join(pkiDir, 'trusted', 'certs'), { recursive: true })
  for (const file of readdirSync(join(pkiDir, 'rejected', 'certs'))) {
    copyFileSync(join(pkiDir, 'rejected', 'certs', file), join(pkiDir, 'trusted', 'certs', file))
  }
  return pkiDir
}

async function readWith(url: string, options: ConnectOptions, tags: string[]): Promise<unknown[]> {
  const dev = await connect(url, options)
  try {
    return (await dev.readTags(tags)).map((r) => r.error?.message ?? r.value)
  } finally {
    await dev.close()
  }
}

/** A certificate and key a user may present: another store's application certificate, made by connecting once. */
async function userCertificate(url: string, options: ConnectOptions): Promise<ConnectOptions> {
  const pkiDir = folder('user')
  const dev = await connect(url, { ...options, pkiDir, acceptServerCertificate: true, securityPolicy: 'Basic256Sha256' })
  await dev.close()
  return { userCertificate: join(pkiDir, 'own', 'certs', 'bifrost.der'), userPrivateKey: join(pkiDir, 'own', 'private', 'bifrost.pem') }
}

// node-opcua names its host and the machine's addresses in its certificate, not 127.0.0.1:
// its tests dial 127.0.0.1 with checkHostName false (open62541's certificate names 127.0.0.1).
const NODE_OPCUA_HOST = { checkHostName: false }

peerTest('node-opcua-server: an untrusted server certificate is refused and saved to rejected; copied into trusted it connects; acceptServerCertificate connects once without trusting it', nodeOpcua, async (t) => {
  const url = await nodeOpcuaServer()
  const pkiDir = folder('pki')
  const options = { ...NODE_OPCUA_HOST, pkiDir, securityPolicy: 'Basic256Sha256', securityMode: 'SignAndEncrypt' }
  const refused = await failure(connect(url, options))
  t.is(refused.code, 'OPCUA_STATUS')
  t.is(refused.statusName, 'BadCertificateUntrusted')
  const rejected = readdirSync(join(pkiDir, 'rejected', 'certs'))
  t.is(rejected.length, 1)
  t.true(refused.message.includes(join(pkiDir, 'rejected', 'certs', rejected[0]!)), refused.message)
  t.true(refused.message.includes(join(pkiDir, 'trusted', 'certs')), 'the error says where to copy it')
  // Our application certificate was made on first use.
  t.true(existsSync(join(pkiDir, 'own', 'certs', 'bifrost.der')) && existsSync(join(pkiDir, 'own', 'private', 'bifrost.pem')))

  t.deepEqual(await readWith(url, { ...options, acceptServerCertificate: true }, ['ns=2;s=Speed']), [12.5])
  t.false(existsSync(join(pkiDir, 'trusted', 'certs')), 'accepting once trusts nothing for later')
  t.is((await failure(connect(url, options))).statusName, 'BadCertificateUntrusted')

  mkdirSync(join(pkiDir, 'trusted', 'certs'), { recursive: true })
  copyFileSync(join(pkiDir, 'rejected', 'certs', rejected[0]!), join(pkiDir, 'trusted', 'certs', 'node-opcua.der'))
  t.deepEqual(await readWith(url, options, ['ns=2;s=Speed', 'ns=2;s=Name']), [12.5, 'line 1'])
})

peerTest('node-opcua-server: every policy in Sign and SignAndEncrypt, as anonymous, a user name and a user certificate', nodeOpcua, async (t) => {
  const url = await nodeOpcuaServer()
  const pkiDir = await trustingStore(url, NODE_OPCUA_HOST)
  const certificateUser = await userCertificate(url, NODE_OPCUA_HOST)
  const identities = { anonymous: {}, userName: USER, certificate: certificateUser }
  const results: Record<string, unknown[]> = {}
  for (const securityPolicy of POLICIES) {
    for (const securityMode of MODES) {
      for (const [identity, credentials] of Object.entries(identities)) {
        const options = { ...NODE_OPCUA_HOST, pkiDir, securityPolicy, securityMode, ...credentials }
        results[`${securityPolicy} ${securityMode} ${identity}`] = await readWith(url, options, ['ns=2;s=Speed', 'ns=2;s=Name', 'i=2259'])
      }
    }
  }
  t.is(Object.keys(results).length, 18)
  for (const [combination, values] of Object.entries(results)) t.deepEqual(values, [12.5, 'line 1', 0], combination)
})

peerTest('node-opcua-server: a wrong password is BadUserAccessDenied; a password travels encrypted on a None channel too; credentials in the URL work and never show', nodeOpcua, async (t) => {
  const url = await nodeOpcuaServer()
  const pkiDir = await trustingStore(url, NODE_OPCUA_HOST)
  const wrong = await failure(connect(url, { ...NODE_OPCUA_HOST, pkiDir, securityPolicy: 'Basic256Sha256', username: 'operator', password: 'not-it-4711' }))
  t.is(wrong.code, 'OPCUA_STATUS')
  t.is(wrong.statusName, 'BadUserAccessDenied')
  t.false(wrong.message.includes('not-it-4711'))
  // Security None: the server's user token policy asks for the password encrypted with its key.
  t.deepEqual(await readWith(url, { ...NODE_OPCUA_HOST, pkiDir, ...USER }, ['ns=2;s=Count']), [42])
  t.is((await failure(connect(url, { ...NODE_OPCUA_HOST, pkiDir, username: 'operator', password: 'not-it-4711' }))).statusName, 'BadUserAccessDenied')
  const inUrl = url.replace('opc.tcp://', 'opc.tcp://operator:secret-pw@')
  t.deepEqual(await readWith(inUrl, { ...NODE_OPCUA_HOST, pkiDir, securityMode: 'Sign' }, ['ns=2;s=Count']), [42])
  const refused = await failure(connect('opc.tcp://operator:secret-pw@127.0.0.1:1/x', { pkiDir, securityPolicy: 'Basic256Sha256' }))
  t.is(refused.code, 'ECONNREFUSED')
  t.false(refused.message.includes('secret-pw'), refused.message)
})

peerTest('node-opcua-server: a subscription delivers under SignAndEncrypt', nodeOpcua, async (t) => {
  const url = await nodeOpcuaServer()
  const pkiDir = await trustingStore(url, NODE_OPCUA_HOST)
  const dev = await connect(url, { ...NODE_OPCUA_HOST, pkiDir, securityPolicy: 'Aes256_Sha256_RsaPss', ...USER })
  const counts: number[] = []
  for await (const batch of dev.subscribe(['ns=2;s=Counter'], { intervalMs: 100 })) {
    for (const change of batch) counts.push(change.value as number)
    if (counts.length >= 5) break
  }
  t.true(counts.every((n, i) => i === 0 || n > counts[i - 1]!), counts.join(' '))
  t.is(stats(dev).connects, 1)
  await dev.close()
})

async function open62541Matrix(t: ExecutionContext, url: string, pkiDir: string): Promise<void> {
  const certificateUser = await userCertificate(url, {})
  const identities = { anonymous: {}, userName: USER, certificate: certificateUser }
  let combinations = 0
  for (const securityPolicy of [...POLICIES, ...DEPRECATED]) {
    const optIn = (DEPRECATED as readonly string[]).includes(securityPolicy) ? { allowDeprecatedSecurity: true } : {}
    for (const securityMode of MODES) {
      for (const [identity, credentials] of Object.entries(identities)) {
        const options = { pkiDir, securityPolicy, securityMode, ...optIn, ...credentials }
        const values = await readWith(url, options, ['ns=2;s=V0', 'ns=2;s=V4', 'i=2259'])
        t.deepEqual(values, [0, 'v4', 0], `${securityPolicy} ${securityMode} ${identity}`)
        combinations++
      }
    }
  }
  t.is(combinations, 30)
  for (const securityPolicy of DEPRECATED) {
    const refused = await failure(connect(url, { pkiDir, securityPolicy }))
    t.is(refused.code, 'EINVAL')
    t.regex(refused.message, /deprecated policy \(SHA-1\): connect with allowDeprecatedSecurity true/)
  }
}

peerTest('open62541: every policy in Sign and SignAndEncrypt (its key is RSA 4096; Basic128Rsa15 and Basic256 only when allowed), as anonymous, a user name and a user certificate; its certificate names the host dialled', open62541, async (t) => {
  const url = await open62541Server('secure')
  const pkiDir = await trustingStore(url)
  await open62541Matrix(t, url, pkiDir)
  // Another loopback address reaches the same server, but its certificate does not name it.
  const elsewhere = await failure(connect(url.replace('127.0.0.1', '127.0.0.2'), { pkiDir, securityPolicy: 'Basic256Sha256' }))
  t.is(elsewhere.statusName, 'BadCertificateHostNameInvalid')
  t.regex(elsewhere.message, /does not name the host '127\.0\.0\.2' \(it names localhost, 127\.0\.0\.1\)/)
})

peerTest('open62541: a wrong password is BadUserAccessDenied; a server without the endpoint asked for is BadSecurityPolicyRejected, naming what it offers', open62541, async (t) => {
  const url = await open62541Server('secure')
  const pkiDir = await trustingStore(url)
  const wrong = await failure(connect(url, { pkiDir, securityPolicy: 'Aes128_Sha256_RsaOaep', username: 'operator', password: 'nope' }))
  t.is(wrong.statusName, 'BadUserAccessDenied')
  t.deepEqual(await readWith(url, { pkiDir, ...USER }, ['ns=2;s=V1']), [1], 'a None channel with an encrypted password')
  const plain = await open62541Server('plain')
  const missing = await failure(connect(plain, { pkiDir, securityPolicy: 'Basic256Sha256', securityMode: 'Sign' }))
  t.is(missing.statusName, 'BadSecurityPolicyRejected')
  t.regex(missing.message, /no endpoint with Basic256Sha256 Sign \(it offers: None None\)/)
})

peerTest('open62541: under SignAndEncrypt, a channel token of 2 s is renewed (new keys each time): reads go on for 5 s on one connection', open62541, async (t) => {
  const url = await open62541Server('secure')
  const pkiDir = await trustingStore(url)
  const dev: Device = await connect(url, { pkiDir, securityPolicy: 'Basic256Sha256', channelLifetime: 2000 })
  const { reads, errors } = await readFor(dev, 'ns=2;s=V0', 5000)
  t.deepEqual(errors, [])
  t.true(reads >= 10, `${reads} reads`)
  t.is(stats(dev).connects, 1, 'one connection all along')
  await dev.close()
})

peerTest('open62541: server certificates are checked: a chain to a trusted CA passes (the CA alone trusted); an expired one is BadCertificateTimeInvalid and one naming another application BadCertificateUriInvalid, even accepted once', open62541, async (t) => {
  const ca = join(folder('ca'), 'ca.der')
  const chained = await open62541Server(`secure-ca:${ca}`)
  const pkiDir = folder('pki')
  const options = { pkiDir, securityPolicy: 'Basic256Sha256' }
  t.is((await failure(connect(chained, options))).statusName, 'BadCertificateUntrusted', 'its CA is not trusted yet')
  mkdirSync(join(pkiDir, 'trusted', 'certs'), { recursive: true })
  copyFileSync(ca, join(pkiDir, 'trusted', 'certs', 'plant-ca.der'))
  t.deepEqual(await readWith(chained, options, ['ns=2;s=V4']), ['v4'], 'the server is trusted through its CA')

  const expired = await failure(connect(await open62541Server('secure-expired'), { ...options, acceptServerCertificate: true }))
  t.is(expired.statusName, 'BadCertificateTimeInvalid')
  t.regex(expired.message, /is valid from .* to .*, not now/)
  const elsewhere = await failure(connect(await open62541Server('secure-wrong-uri'), { ...options, acceptServerCertificate: true }))
  t.is(elsewhere.statusName, 'BadCertificateUriInvalid')
  t.regex(elsewhere.message, /names the application URI \["urn:elsewhere"\], but the server says it is 'urn:bifrost:open62541'/)
})
