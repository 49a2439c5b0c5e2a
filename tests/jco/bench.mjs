// Benchmark: the policy's per-token verification under jco (Node), for
// comparison with wasmtime's portable build (`verify_ab`'s "token path").
// A benchmark, not a test (figures in BENCHMARKS.md):
//
//   node tests/jco/run.mjs        # transpiles into tests/jco/out/ (and checks)
//   node tests/jco/bench.mjs
//
// It runs the conformance set's `verify-valid` case (a valid RS256 token,
// key set and clock from cases.json) and an empty token on one instance, in
// alternating batches (40 batches of 200 calls), and prints the fastest and
// median batch per call and the token path (valid − empty). Each call also
// asks the host for the key set (a JS string), as under wasmtime.

import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { beginCase } from './host.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const cases = JSON.parse(await readFile(join(repo, 'tests/conformance/cases.json'), 'utf8')).cases;
const valid = cases.find((c) => c.name === 'verify-valid');
if (!valid) throw new Error('cases.json has no verify-valid case');

const { handler } = await import(pathToFileURL(join(here, 'out/policy.js')).href);
const settings = {
  issuer: valid.call.settings.issuer,
  audiences: valid.call.settings.audiences,
  leewaySeconds: valid.call.settings['leeway-seconds'],
  recordTtlSeconds: valid.call.settings['record-ttl-seconds'],
};
const now = BigInt(valid.call.now);
beginCase({ keySet: valid['key-set'], storeBefore: [] });

const verify = (token) => {
  try {
    return handler.verifyToken(token, now, settings);
  } catch (e) {
    return e.payload;
  }
};
const identity = verify(valid.call.token);
if (identity.sub !== 'alice') throw new Error(`not verified: ${JSON.stringify(identity)}`);
if (verify('') !== 'missing') throw new Error('the empty token is not refused as missing');

const BATCH = 200;
const BATCHES = 40;
const samples = { valid: [], empty: [] };
for (let batch = 0; batch < BATCHES + 5; batch += 1) {
  for (const [name, token] of [['valid', valid.call.token], ['empty', '']]) {
    const started = process.hrtime.bigint();
    for (let i = 0; i < BATCH; i += 1) verify(token);
    const perCall = Number(process.hrtime.bigint() - started) / BATCH / 1000;
    if (batch >= 5) samples[name].push(perCall); // the first five warm the JIT
  }
}
const stats = (xs) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)] };
};
const v = stats(samples.valid);
const e = stats(samples.empty);
const us = (x) => `${x.toFixed(1)} µs`;
console.log(`node ${process.version}, jco-transpiled ${join('tests/jco/out/policy.js')}`);
console.log(`valid token   fastest ${us(v.min)}  median ${us(v.median)}`);
console.log(`empty token   fastest ${us(e.min)}  median ${us(e.median)}`);
console.log(`token path (valid − empty)  fastest ${us(v.min - e.min)}  median ${us(v.median - e.median)}`);
