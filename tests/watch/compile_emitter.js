// Recompile EventEmitter.sol into EventEmitter.json (ABI + creation bytecode) with the npm solc package:
//   node tests/watch/compile_emitter.js
const fs = require("fs");
const path = require("path");
const solc = require(path.resolve(__dirname, "../../node_modules/solc"));
const src = fs.readFileSync(path.join(__dirname, "EventEmitter.sol"), "utf8");
const input = {
  language: "Solidity",
  sources: { "EventEmitter.sol": { content: src } },
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
for (const e of out.errors || []) if (e.severity === "error") throw new Error(e.formattedMessage);
const c = out.contracts["EventEmitter.sol"].EventEmitter;
const artifact = { compiler: "solc-js " + solc.version(), abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
fs.writeFileSync(path.join(__dirname, "EventEmitter.json"), JSON.stringify(artifact, null, 1) + "\n");
console.log("wrote EventEmitter.json", artifact.compiler);
