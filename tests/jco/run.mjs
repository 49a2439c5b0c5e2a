// Runs the policy conformance set (../conformance/cases.json) against the
// built policy component under jco on Node, and fails on any difference from
// the expected answers (the same file tests/e2e/conformance.rs runs under
// wasmtime).
//
//   npm ci --prefix tests/jco
//   node tests/jco/run.mjs [path/to/component.wasm]
//
// The component defaults to target/guest/wasm32-wasip2/release/gitgazer_ws_guest.wasm,
// the bytes the host embeds. It is transpiled into tests/jco/out/ with the
// world's imports mapped to ./host.mjs (plain JavaScript: an in-memory Map
// store); the component imports no WASI. Each case gets a fresh instance, as
// in the wasmtime host.

import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { transpile } from '@bytecodealliance/jco';
import { beginCase, endCase, recordFromCase } from './host.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const componentPath = resolve(
  process.argv[2] ?? join(repo, 'target/guest/wasm32-wasip2/release/gitgazer_ws_guest.wasm'),
);
const casesPath = join(repo, 'tests/conformance/cases.json');
const outDir = join(here, 'out');

const jcoVersion = JSON.parse(
  await readFile(join(here, 'node_modules/@bytecodealliance/jco/package.json'), 'utf8'),
).version;

// --- transpile -------------------------------------------------------------
const bytes = await readFile(componentPath);
const { files } = await transpile(bytes, {
  name: 'policy',
  // From out/policy.js: `import { jwks, connections, log } from '../host.mjs'`.
  map: { 'gitgazer:ws-handler/*': '../host.mjs#*' },
  quiet: true,
  noTypescript: true,
});
await rm(outDir, { recursive: true, force: true });
for (const [name, content] of Object.entries(files)) {
  const path = join(outDir, name);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, content);
}
const policyUrl = pathToFileURL(join(outDir, 'policy.js')).href;

/** A fresh instance: a new module URL evaluates (and instantiates) anew. */
let instances = 0;
async function freshHandler() {
  instances += 1;
  const module = await import(`${policyUrl}?instance=${instances}`);
  return module.handler;
}

// --- cases -----------------------------------------------------------------
const document = JSON.parse(await readFile(casesPath, 'utf8'));
const cases = document.cases;

const settingsOf = (s) => ({
  issuer: s.issuer,
  audiences: s.audiences,
  leewaySeconds: s['leeway-seconds'],
  recordTtlSeconds: s['record-ttl-seconds'],
});

async function runCase(testCase) {
  const handler = await freshHandler();
  const call = testCase.call;
  beginCase({
    keySet: testCase['key-set'],
    refreshedKeySet: testCase['refreshed-key-set'],
    storeBefore: testCase['store-before'],
    storeFailure: testCase['store-failure'],
    revocations: testCase.revocations,
  });
  let outcome;
  try {
    switch (call.op) {
      case 'connect': {
        const r = handler.handleConnect({
          connectionId: call['connection-id'],
          idToken: call['id-token'] ?? undefined,
          now: BigInt(call.now),
          settings: settingsOf(call.settings),
          endpoint: call.endpoint ?? undefined,
        });
        outcome = { response: { status: r.status, body: r.body } };
        break;
      }
      case 'refresh': {
        const r = handler.handleRefresh({
          connectionId: call['connection-id'],
          idToken: call['id-token'] ?? undefined,
          currentToken: call['current-token'] ?? undefined,
          currentRecord: call['current-record'] ? recordFromCase(call['current-record']) : undefined,
          now: BigInt(call.now),
          connectedAt: call['connected-at'],
          settings: settingsOf(call.settings),
          endpoint: call.endpoint ?? undefined,
        });
        outcome = {
          refresh: {
            code: r.code,
            body: r.body,
            'expires-at': r.expiresAt === undefined ? null : Number(r.expiresAt),
          },
        };
        break;
      }
      case 'disconnect': {
        const r = handler.handleDisconnect({ connectionId: call['connection-id'] });
        outcome = { response: { status: r.status, body: r.body } };
        break;
      }
      case 'verify-token': {
        try {
          const identity = handler.verifyToken(call.token, BigInt(call.now), settingsOf(call.settings));
          outcome = { verify: { ok: { sub: identity.sub, groups: identity.groups } } };
        } catch (e) {
          if (e && Object.hasOwn(e, 'payload')) {
            outcome = { verify: { error: e.payload } };
          } else {
            throw e;
          }
        }
        break;
      }
      default:
        throw new Error(`unknown op ${call.op}`);
    }
  } catch (e) {
    // A trap: the wasmtime host answers 500 to CONNECT/DISCONNECT.
    outcome = { trap: String(e && e.stack ? e.stack : e) };
  }
  const seen = endCase();
  return {
    observed: {
      expect: outcome,
      'expect-key-set-requests': seen.keySetRequests,
      'expect-store-after': seen.storeAfter,
    },
    logs: seen.logs,
  };
}

let passed = 0;
let failed = 0;
for (const testCase of cases) {
  const { observed, logs } = await runCase(testCase);
  const differences = [];
  for (const field of ['expect', 'expect-key-set-requests', 'expect-store-after']) {
    if (!isDeepStrictEqual(observed[field], testCase[field])) {
      differences.push(
        `  ${field}\n    expected ${JSON.stringify(testCase[field])}\n    observed ${JSON.stringify(observed[field])}`,
      );
    }
  }
  // The guest must never log a token.
  for (const token of [testCase.call['id-token'] ?? testCase.call.token, testCase.call['current-token']]) {
    if (token && token.length >= 16 && logs.some((l) => l.message.includes(token))) {
      differences.push('  a log line contains the token');
    }
  }
  if (differences.length === 0) {
    passed += 1;
  } else {
    failed += 1;
    console.error(`FAIL ${testCase.name}\n${differences.join('\n')}`);
  }
}

console.log(`jco ${jcoVersion}, component ${componentPath}, ${cases.length} cases`);
console.log(`${passed} passed, ${failed} failed`);
if (failed > 0 || cases.length === 0) process.exit(1);
