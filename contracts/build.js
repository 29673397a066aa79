#!/usr/bin/env node
// Compiles contracts/{src,bench,test}/*.sol with the pinned npm `solc` and writes one
// artifact per contract to contracts/artifacts/. `--check` compiles in memory and exits
// 1 when the committed artifacts differ. Never downloads a compiler.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const solc = require('solc');

const ROOT = path.resolve(__dirname, '..');
const CONTRACTS = __dirname;
const OUT = path.join(CONTRACTS, 'artifacts');
const DIRS = ['src', 'bench', 'test'];
const SETTINGS = {
  optimizer: { enabled: true, runs: 10000 },
  evmVersion: 'cancun',
  viaIR: true,
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

const sha256 = (text) => crypto.createHash('sha256').update(text).digest('hex');

function resolveImport(name) {
  const file = name.startsWith('@') ? path.join(ROOT, 'node_modules', name) : path.join(CONTRACTS, name);
  return fs.existsSync(file) ? { contents: fs.readFileSync(file, 'utf8') } : { error: `not found: ${name}` };
}

function compile() {
  const sources = {};
  for (const dir of DIRS) {
    for (const f of fs.readdirSync(path.join(CONTRACTS, dir)).filter((n) => n.endsWith('.sol')).sort()) {
      sources[`${dir}/${f}`] = { content: fs.readFileSync(path.join(CONTRACTS, dir, f), 'utf8') };
    }
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: resolveImport }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  if (errors.length) {
    for (const e of errors) console.error(e.formattedMessage);
    process.exit(2);
  }
  for (const w of output.errors || []) if (!w.sourceLocation || !w.sourceLocation.file.startsWith('@')) console.error(w.formattedMessage);
  const hashes = {};
  for (const name of Object.keys(output.sources).sort()) {
    hashes[name] = sha256(sources[name] ? sources[name].content : resolveImport(name).contents);
  }
  const { outputSelection, ...settings } = SETTINGS;
  const artifacts = {};
  for (const [sourceName, contracts] of Object.entries(output.contracts)) {
    for (const [contractName, c] of Object.entries(contracts)) {
      if (!c.evm.bytecode.object || sourceName.startsWith('@')) continue; // interfaces, libraries
      artifacts[`${contractName}.json`] = JSON.stringify(
        {
          contractName,
          sourceName,
          abi: c.abi,
          bytecode: '0x' + c.evm.bytecode.object,
          deployedBytecode: '0x' + c.evm.deployedBytecode.object,
          compiler: { name: 'solc', version: solc.version(), settings },
          sources: hashes,
        },
        null,
        2,
      ) + '\n';
    }
  }
  return artifacts;
}

const artifacts = compile();
if (process.argv.includes('--check')) {
  const committed = fs.existsSync(OUT) ? fs.readdirSync(OUT).filter((n) => n.endsWith('.json')).sort() : [];
  const stale = Object.keys(artifacts).filter((n) => !fs.existsSync(path.join(OUT, n)) || fs.readFileSync(path.join(OUT, n), 'utf8') !== artifacts[n]);
  const extra = committed.filter((n) => !(n in artifacts));
  if (stale.length || extra.length) {
    console.error(`artifacts out of date: ${[...stale, ...extra].join(', ')} (run: node contracts/build.js)`);
    process.exit(1);
  }
  console.log(`artifacts up to date (${committed.length} contracts)`);
} else {
  fs.mkdirSync(OUT, { recursive: true });
  for (const [name, text] of Object.entries(artifacts)) fs.writeFileSync(path.join(OUT, name), text);
  console.log(`wrote ${Object.keys(artifacts).length} artifacts to ${path.relative(ROOT, OUT)}`);
}
