#!/usr/bin/env node
// solc-wrapper: makes solc-js (npm `solc`) behave like a native `solc` for py-solc-x,
// ape-solidity and forge. No native solc can be downloaded on our machines.
//
// Imports resolve against --base-path, each --include-path, then the project root (for node_modules).
// Supported:  --version | --standard-json [--base-path DIR] [--include-path DIR]... [--allow-paths ...]
// Standard-JSON input comes on stdin; the JSON output (and nothing else) goes to stdout.
'use strict';
const fs = require('fs');
const path = require('path');

// Resolve `solc` from the project that installed this wrapper (CHRYSALIS_NODE_MODULES) or next to it.
const roots = [process.env.CHRYSALIS_NODE_MODULES, path.join(__dirname, '..', '..', 'node_modules')].filter(Boolean);
let solc;
for (const root of roots) {
  try { solc = require(path.join(root, 'solc')); break; } catch (e) { /* try next */ }
}
if (!solc) {
  process.stderr.write('solc-wrapper: cannot find the npm package `solc`; run `make setup`.\n');
  process.exit(2);
}

const args = process.argv.slice(2);
if (args.includes('--version')) {
  process.stdout.write('solc, the solidity compiler commandline interface\nVersion: ' + solc.version() + '\n');
  process.exit(0);
}
if (!args.includes('--standard-json')) {
  process.stderr.write('solc-wrapper: only --version and --standard-json are supported (got: ' + args.join(' ') + ')\n');
  process.exit(2);
}

const searchPaths = [];
for (let i = 0; i < args.length; i++) {
  if ((args[i] === '--base-path' || args[i] === '--include-path') && args[i + 1]) searchPaths.push(args[++i]);
  else if (args[i].startsWith('--base-path=') || args[i].startsWith('--include-path=')) searchPaths.push(args[i].split('=')[1]);
}
if (searchPaths.length === 0) searchPaths.push(process.cwd());
// Last, the project that installed this wrapper: ape-config.yaml remaps `@openzeppelin/contracts` to its
// `node_modules/@openzeppelin/contracts`, which Ape's isolated build folder does not copy.
searchPaths.push(path.resolve(__dirname, '..', '..'));

function findImports(importPath) {
  const candidates = path.isAbsolute(importPath) ? [importPath] : searchPaths.map((p) => path.resolve(p, importPath));
  for (const candidate of candidates) {
    try { return { contents: fs.readFileSync(candidate, 'utf8') }; } catch (e) { /* next */ }
  }
  return { error: 'File not found: ' + importPath + ' (searched ' + searchPaths.join(', ') + ')' };
}

const input = JSON.parse(fs.readFileSync(0, 'utf8'));
// Inline `urls` sources: solc-js has no filesystem access of its own.
for (const [name, source] of Object.entries(input.sources || {})) {
  if (source.content === undefined && Array.isArray(source.urls)) {
    const found = source.urls.map(findImports).find((r) => r.contents !== undefined);
    if (found) input.sources[name] = { content: found.contents };
  }
}
process.stdout.write(solc.compile(JSON.stringify(input), { import: findImports }));
