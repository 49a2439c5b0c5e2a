// The world's imports (`jwks`, `connections`, `log`) in plain JavaScript, for
// the transpiled policy component. jco maps `gitgazer:ws-handler/*` here
// (see run.mjs); these are the component's only imports (no WASI).
//
// State is per case: run.mjs calls `beginCase` before each call into the
// guest and `endCase` after it.
//
// jco's conventions for imports: a `result<T, E>` import returns T on
// success and throws to fail; a thrown object with an own `payload` property
// (like jco's ComponentError) carries E. Variants are `{ tag, val }`, enums
// are strings ('debug', ...), u64 values are BigInt.

/** Carries a WIT `result` error payload out of a host import. */
export class ComponentError extends Error {
  constructor(payload) {
    super(typeof payload === 'string' ? payload : JSON.stringify(payload));
    Object.defineProperty(this, 'payload', { value: payload, enumerable: true });
  }
}

let current = null;

const keyOf = (integrationId, connectionId) => JSON.stringify([integrationId, connectionId]);

/**
 * Starts a case: its key sets (`{ ok }` or `{ error }`), the store's records
 * (kebab-case, as in cases.json), its revocations (`{ sub, 'revoked-before' }`)
 * and an optional injected store failure.
 */
export function beginCase({ keySet, refreshedKeySet, storeBefore, storeFailure, revocations }) {
  const records = new Map();
  for (const r of storeBefore) {
    records.set(keyOf(r['integration-id'], r['connection-id']), recordFromCase(r));
  }
  current = {
    keySet,
    refreshedKeySet: refreshedKeySet ?? keySet,
    records,
    revocations: new Map((revocations ?? []).map((r) => [r.sub, BigInt(r['revoked-before'])])),
    failure: storeFailure ?? null,
    keySetRequests: [],
    logs: [],
  };
}

/** A kebab-case record (as in cases.json) as jco passes it to the guest. */
export function recordFromCase(r) {
  return {
    integrationId: r['integration-id'],
    connectionId: r['connection-id'],
    sub: r.sub,
    connectedAt: r['connected-at'],
    expiresAt: BigInt(r['expires-at']),
    endpoint: r.endpoint,
    authExpiresAt: r['auth-expires-at'] === undefined ? undefined : BigInt(r['auth-expires-at']),
    authIssuedAt: r['auth-issued-at'] === undefined ? undefined : BigInt(r['auth-issued-at']),
  };
}

/** Ends a case: what the imports saw, with the store as sorted kebab-case records. */
export function endCase() {
  const state = current;
  current = null;
  const storeAfter = [...state.records.values()]
    .sort((a, b) =>
      a.integrationId < b.integrationId ? -1 : a.integrationId > b.integrationId ? 1
        : a.connectionId < b.connectionId ? -1 : a.connectionId > b.connectionId ? 1 : 0)
    .map((r) => ({
      'integration-id': r.integrationId,
      'connection-id': r.connectionId,
      sub: r.sub,
      'connected-at': r.connectedAt,
      'expires-at': Number(r.expiresAt),
      // Only when set, as the wasmtime runner writes it.
      ...(r.endpoint === undefined ? {} : { endpoint: r.endpoint }),
      ...(r.authExpiresAt === undefined ? {} : { 'auth-expires-at': Number(r.authExpiresAt) }),
      ...(r.authIssuedAt === undefined ? {} : { 'auth-issued-at': Number(r.authIssuedAt) }),
    }));
  return { storeAfter, keySetRequests: state.keySetRequests, logs: state.logs };
}

function state() {
  if (!current) throw new Error('a host import was called outside a case');
  return current;
}

function failIfInjected(operation) {
  const { failure } = state();
  if (failure && failure.operation === operation) {
    throw new ComponentError({ tag: failure.kind, val: failure.detail });
  }
}

export const jwks = {
  keySet(refresh) {
    const s = state();
    s.keySetRequests.push(refresh);
    const answer = refresh ? s.refreshedKeySet : s.keySet;
    if ('ok' in answer) return answer.ok;
    throw new ComponentError(answer.error);
  },
};

export const connections = {
  putAll(records) {
    failIfInjected('put-all');
    const s = state();
    for (const r of records) {
      s.records.set(keyOf(r.integrationId, r.connectionId), { ...r });
    }
  },
  keysOf(connectionId) {
    failIfInjected('keys-of');
    return [...state().records.values()]
      .filter((r) => r.connectionId === connectionId)
      .map((r) => ({ integrationId: r.integrationId, connectionId: r.connectionId }));
  },
  delete(keys) {
    failIfInjected('delete');
    const s = state();
    let removed = 0;
    for (const k of keys) {
      if (s.records.delete(keyOf(k.integrationId, k.connectionId))) removed += 1;
    }
    return removed;
  },
  revokedBefore(sub) {
    failIfInjected('revoked-before');
    return state().revocations.get(sub);
  },
};

export const log = {
  log(level, message) {
    state().logs.push({ level, message });
    if (process.env.GITGAZER_JCO_LOG) console.error(`[guest ${level}] ${message}`);
  },
};
