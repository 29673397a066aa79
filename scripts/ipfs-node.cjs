#!/usr/bin/env node
// A private, offline js-ipfs node (npm `ipfs` 0.66.1) for tests: Kubo's HTTP RPC API
// (/api/v0) and a gateway (/ipfs/{cid}) on 127.0.0.1, no swarm transports, no peers.
//
//   node scripts/ipfs-node.cjs --repo DIR [--api-port N] [--gateway-port N]
//
// Ports default to 0 (the OS picks free ones). Once both servers listen, one JSON line
// {"api": "http://127.0.0.1:P", "gateway": "http://127.0.0.1:Q", "peer": "..."} goes to
// stdout. SIGTERM/SIGINT stop the node. Production (docker-compose) runs Kubo instead.
'use strict'
require('./promise-with-resolvers.cjs')

function parseArgs (argv) {
  const opts = { repo: null, apiPort: 0, gatewayPort: 0 }
  for (let i = 0; i < argv.length; i++) {
    const [key, value] = [argv[i], argv[i + 1]]
    if (key === '--repo') opts.repo = value
    else if (key === '--api-port') opts.apiPort = Number(value)
    else if (key === '--gateway-port') opts.gatewayPort = Number(value)
    else throw new Error(`unknown argument ${key}`)
    i++
  }
  if (!opts.repo) throw new Error('--repo DIR is required')
  for (const port of [opts.apiPort, opts.gatewayPort]) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad port ${port}`)
  }
  return opts
}

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const { Daemon } = await import('ipfs-daemon')
  const daemon = new Daemon({
    repo: opts.repo,
    repoAutoMigrate: false,
    start: false, // libp2p is never started: no transports, no dialling, no DHT, no bitswap
    preload: { enabled: false },
    silent: true,
    init: { algorithm: 'Ed25519' },
    config: {
      Addresses: {
        Swarm: [],
        Announce: [],
        NoAnnounce: [],
        API: `/ip4/127.0.0.1/tcp/${opts.apiPort}`,
        Gateway: `/ip4/127.0.0.1/tcp/${opts.gatewayPort}`,
        RPC: undefined,
        Delegates: []
      },
      Bootstrap: [],
      Discovery: { MDNS: { Enabled: false }, webRTCStar: { Enabled: false } },
      Pubsub: { Enabled: false },
      Routing: { Type: 'none' }
    }
  })
  await daemon.start()
  let stopping = false
  const stop = async (code) => {
    if (stopping) return
    stopping = true
    try { await daemon.stop() } finally { process.exit(code) }
  }
  process.on('SIGTERM', () => stop(0))
  process.on('SIGINT', () => stop(0))
  const id = await daemon._ipfs.id()
  const info = {
    api: daemon._httpApi._apiServers[0].info.uri,
    gateway: daemon._httpGateway._gatewayServers[0].info.uri,
    peer: id.id.toString()
  }
  process.stdout.write(JSON.stringify(info) + '\n')
}

main().catch((err) => {
  process.stderr.write(`ipfs-node: ${err && err.stack ? err.stack : err}\n`)
  process.exit(1)
})
