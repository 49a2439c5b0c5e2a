// The policy component inside the Worker: its instance, its imports, and one
// call of its `verify-token` export.
//
// `policy.js` and the three core modules come from `build.mjs` (jco transpile
// of the component the host embeds, instantiation mode `sync`); the .wasm
// imports are WebAssembly.Module objects (workerd `wasm` modules, wrangler's
// CompiledWasm rule), which Workers may instantiate but never compile at run
// time.
//
// Reusing one instance across requests is safe here, and the default:
// - the guest keeps no state between calls by design (docs/design.md: `now`,
//   the settings and the key set come in with every call);
// - a call runs synchronously to its end (no import is async), so two
//   requests can never be inside the instance at once;
// - after a trap jco marks the instance trapped; it is dropped here and the
//   next call gets a fresh one, as the wasmtime host drops a trapped instance.
// What reuse gives up is the host's per-request reset of memory: freed bytes
// of an earlier token stay in the instance's linear memory until overwritten.
// The guest only ever returns a verdict, so they are not reachable from
// outside without a guest bug; EDGE_POLICY_INSTANCE=fresh trades about 2 ms
// a request for the host's model (docs/edge.md).

import { instantiate } from './policy.js';
import core from './policy.core.wasm';
import core2 from './policy.core2.wasm';
import core3 from './policy.core3.wasm';

const CORE_MODULES = {
  'policy.core.wasm': core,
  'policy.core2.wasm': core2,
  'policy.core3.wasm': core3,
};

/** The WIT's `token-rejection` names: a thrown string in this set is a verdict. */
export const REJECTIONS = new Set([
  'missing',
  'too-large',
  'malformed',
  'unsupported-algorithm',
  'bad-header',
  'unknown-key',
  'unusable-key',
  'bad-signature',
  'wrong-issuer',
  'wrong-audience',
  'wrong-token-use',
  'expired',
  'not-yet-valid',
  'bad-claims',
  'key-set-unavailable',
]);

// What the running call's `jwks.key-set` answers and where its log lines go:
// set just around each (synchronous) call, so an import outside a call is
// refused.
let keySetOfCall = null;
let logsOfCall = null;
/** The host's cap on the guest's lines per request. */
const MAX_LOG_LINES = 32;

const refuseStore = () => ({
  tag: 'err',
  val: { tag: 'other', val: 'the edge has no connection store' },
});

const imports = {
  'gitgazer:ws-handler/jwks': {
    keySet(refresh) {
      if (!keySetOfCall) return { tag: 'err', val: 'key set asked for outside a call' };
      const answer = keySetOfCall(refresh);
      return typeof answer === 'string' ? answer : { tag: 'err', val: answer.error };
    },
  },
  // verify-token never touches the store; deny by default should it try.
  'gitgazer:ws-handler/connections': {
    putAll: refuseStore,
    keysOf: refuseStore,
    delete: refuseStore,
    revokedBefore: refuseStore,
  },
  // Kept with the call's verdict: the caller prints those of the call it
  // acts on (a call made again with a fetched key set replaces the first).
  'gitgazer:ws-handler/log': {
    log(level, message) {
      if (logsOfCall && logsOfCall.length < MAX_LOG_LINES) logsOfCall.push({ level, message });
    },
  },
};

let reused = null;
let instances = 0;

function newInstance() {
  instances += 1;
  return instantiate((name) => CORE_MODULES[name], imports);
}

/** How many instances this isolate has made (for tests and measurements). */
export function instanceCount() {
  return instances;
}

/**
 * One `verify-token` call. `keySet(refresh)` answers the guest's key set
 * requests: a JWKS string, or `{ error }`. `mode`: 'reuse' or 'fresh'.
 * Returns `{ identity }`, `{ rejection }` (a token-rejection name) or
 * `{ trap }` (a guest failure; never a verdict on the token), with `logs`:
 * the guest's lines (`{ level, message }`; it never logs a token).
 */
export function verifyToken(token, now, settings, keySet, mode) {
  const logs = [];
  keySetOfCall = keySet;
  logsOfCall = logs;
  let instance = null;
  try {
    instance = mode === 'fresh' ? newInstance() : (reused ??= newInstance());
    const identity = instance.handler.verifyToken(token, BigInt(now), settings);
    return { identity: { sub: identity.sub, groups: [...identity.groups] }, logs };
  } catch (e) {
    // jco throws a `result`'s error payload as it is: the rejection's name.
    if (typeof e === 'string' && REJECTIONS.has(e)) return { rejection: e, logs };
    if (instance === reused) reused = null;
    return { trap: e, logs };
  } finally {
    keySetOfCall = null;
    logsOfCall = null;
  }
}
