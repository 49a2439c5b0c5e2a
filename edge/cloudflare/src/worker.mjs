// gitgazer-ws at the edge: a Cloudflare Worker that guards a WebSocket origin
// with the same policy component the host runs. `GET /ws` with a token (as
// the host takes it) is decided by the policy's `verify-token` here; a refusal
// is answered with the host's status and body and never reaches the origin; a
// valid token's upgrade is forwarded to ORIGIN_URL unchanged, and the origin
// runs its own CONNECT (the edge only sheds bad traffic). docs/edge.md.

import { ConfigError, readConfig } from './config.mjs';
import { verifyToken } from './component.mjs';
import { KeySetCache } from './keys.mjs';

// The host's bodies (guest/src/handler.rs, the README's response table).
const BODY = {
  noToken: 'Unauthorized: No authentication token provided',
  invalidToken: 'Unauthorized: Invalid authentication token',
  noGroups: 'Connection denied: No authorized groups found',
  internal: 'Internal server error.',
};

const BEARER = 'bearer';

// A well-formed RS256 token shape that reaches the key lookup, so that the
// policy parses a fetched key set: `key-set-unavailable` means it refuses it.
const PROBE_TOKEN = `${b64('{"alg":"RS256","kid":"gitgazer-ws-edge-key-set-probe"}')}.${b64('{}')}.AA`;

function b64(text) {
  return btoa(text).replaceAll('+', '-').replaceAll('/', '_').replaceAll('=', '');
}

function text(status, body) {
  return new Response(body, {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8' },
  });
}

// Parsed once per `env` object (one per isolate in practice).
const configs = new WeakMap();

function configOf(env) {
  let config = configs.get(env);
  if (!config) {
    config = readConfig(env);
    configs.set(env, config);
  }
  return config;
}

// Module level: shared by every request this isolate serves.
const keySets = new Map();

function keySetFor(config) {
  let cache = keySets.get(config.jwksUrl);
  if (!cache) {
    const accepts = (json) => {
      const now = Math.floor(Date.now() / 1000);
      const probe = verifyToken(PROBE_TOKEN, now, config.settings, () => json, config.instance);
      return !probe.trap && probe.rejection !== 'key-set-unavailable';
    };
    cache = new KeySetCache(config.jwksUrl, accepts);
    keySets.set(config.jwksUrl, cache);
  }
  return cache;
}

/**
 * The token of an upgrade request as the host reads it (host/event's
 * `offered_bearer_token`): when `bearer` is among the offered subprotocols,
 * the one after it (none: no token), else the query's `idToken`.
 */
export function upgradeToken(request, url) {
  const offered = (request.headers.get('sec-websocket-protocol') ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  const at = offered.findIndex((p) => p.toLowerCase() === BEARER);
  if (at >= 0) return offered[at + 1] ?? null;
  return url.searchParams.get('idToken');
}

/**
 * The policy's verdict on a token with this isolate's key set. The guest's
 * imports are synchronous, so a key set it asks for and the cache cannot give
 * now (none yet, or a refetch for an unknown kid) is fetched after the call
 * and the call made once more with it: at most one fetch and two calls per
 * request.
 */
async function verify(token, config) {
  const keys = keySetFor(config);
  const now = Math.floor(Date.now() / 1000);
  let fetched = false;
  for (;;) {
    let wanted = null;
    const answer = (refresh) => {
      if (keys.keySet === null) {
        if (!fetched && keys.mayLoad()) wanted = 'load';
        return { error: keys.unavailableReason() };
      }
      if (refresh && !fetched && keys.mayRefresh()) wanted = 'refresh';
      return keys.keySet;
    };
    const verdict = verifyToken(token ?? '', now, config.settings, answer, config.instance);
    if (wanted === null) return verdict;
    fetched = true;
    const generation = keys.generation;
    await keys.fetch(wanted === 'refresh');
    // A failed or refused refetch keeps the set the verdict was made with.
    if (keys.generation === generation && wanted === 'refresh') return verdict;
  }
}

/** The host's CONNECT answer for a verdict; null when the upgrade may go on. */
function refusal(verdict) {
  // Debug and info lines would be one per refused token in a flood.
  for (const { level, message } of verdict.logs) {
    if (level === 'warn' || level === 'error') console.warn(`policy ${level}: ${message}`);
  }
  if (verdict.trap) {
    console.error(`policy trap: ${verdict.trap}`);
    return text(500, BODY.internal);
  }
  switch (verdict.rejection) {
    case undefined:
      return verdict.identity.groups.length === 0 ? text(401, BODY.noGroups) : null;
    case 'missing':
      return text(401, BODY.noToken);
    // Not the client's fault, as in the host: the key set could not be had.
    case 'key-set-unavailable':
      return text(500, BODY.internal);
    default:
      return text(401, BODY.invalidToken);
  }
}

export async function handle(request, env) {
  const url = new URL(request.url);
  if (url.pathname !== '/ws') return text(404, 'Not found.');
  if (request.method !== 'GET') return text(405, 'Method not allowed.');
  let config;
  try {
    config = configOf(env);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(`configuration: ${e.message}`);
    return text(500, BODY.internal);
  }
  // As the host: not an upgrade, no decision (and nothing for the origin).
  if ((request.headers.get('upgrade') ?? '').toLowerCase() !== 'websocket') {
    return text(426, 'Expected a WebSocket upgrade.');
  }
  // The host's query parser refuses a repeated idToken before any decision.
  if (url.searchParams.getAll('idToken').length > 1) {
    return text(400, 'Failed to deserialize query string: duplicate field `idToken`');
  }
  const refused = refusal(await verify(upgradeToken(request, url), config));
  if (refused) return refused;
  const origin = new URL(config.originUrl);
  origin.search = url.search;
  try {
    return await fetch(new Request(origin, request));
  } catch (e) {
    // Not the error's message: it could quote the URL, and so the token.
    console.error(`origin ${config.originUrl} unreachable (${e && e.name})`);
    return text(502, 'Bad gateway.');
  }
}

export default {
  fetch: (request, env) => handle(request, env),
};
