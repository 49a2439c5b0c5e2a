// The edge's configuration, from the host's variable names (host/src/settings.rs
// holds the same rules; messages name the variable as the host's do). Plain
// JavaScript with no Workers API, so scripts/edge-local checks it with Node
// before starting workerd.
//
// There is no dev mode at the edge: without a user pool every token would be
// refused, which is a mistyped deployment, not a safe default.

/** A configuration error; its message names the variable. */
export class ConfigError extends Error {}

/** The host's record TTL default; verify-token ignores it, the WIT wants one. */
const RECORD_TTL_SECONDS = 2 * 3600 + 5 * 60;
const U32_MAX = 4294967295;

/** The trimmed value, unless unset or blank (the host's `non_empty`). */
function nonEmpty(value) {
  if (value === undefined || value === null) return undefined;
  const trimmed = String(value).trim();
  return trimmed === '' ? undefined : trimmed;
}

/** `eu-west-1`, `us-gov-west-1`: lowercase words and a number. */
function isRegion(name) {
  const parts = name.split('-');
  if (parts.length < 3) return false;
  const last = parts[parts.length - 1];
  return (
    parts.slice(0, -1).every((p) => /^[a-z]+$/.test(p)) && /^[0-9]+$/.test(last)
  );
}

/** `COGNITO_CLIENT_ID`: one id or several separated by commas; no empty element. */
export function parseClientIds(list) {
  const ids = [];
  list.split(',').forEach((raw, index) => {
    const id = raw.trim();
    if (id === '') {
      throw new ConfigError(
        `COGNITO_CLIENT_ID ${JSON.stringify(list)}: element ${index + 1} is empty; give app ` +
          'client ids separated by single commas, e.g. webclientid,mobileclientid',
      );
    }
    if (!ids.includes(id)) ids.push(id);
  });
  return ids;
}

function validateUserPoolId(userPoolId, region) {
  const at = userPoolId.indexOf('_');
  const poolRegion = at < 0 ? '' : userPoolId.slice(0, at);
  const id = at < 0 ? '' : userPoolId.slice(at + 1);
  if (!isRegion(poolRegion) || !/^[A-Za-z0-9]+$/.test(id)) {
    throw new ConfigError(
      `COGNITO_USER_POOL_ID ${JSON.stringify(userPoolId)} is not a user pool id of the form ` +
        '<region>_<id>, e.g. eu-west-1_AbCdEf123',
    );
  }
  if (!isRegion(region)) {
    throw new ConfigError(
      `AWS_REGION ${JSON.stringify(region)} is not a region name such as eu-west-1`,
    );
  }
  if (poolRegion !== region) {
    throw new ConfigError(
      `COGNITO_USER_POOL_ID ${JSON.stringify(userPoolId)} belongs to region ${poolRegion}, ` +
        `but AWS_REGION is ${region}`,
    );
  }
}

function httpUrl(variable, value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${variable} ${JSON.stringify(value)} is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError(`${variable} must be an http(s) URL: ${value}`);
  }
  return url;
}

/**
 * `ORIGIN_URL`: the origin's WebSocket endpoint, `wss://` (API Gateway's
 * `wss://{api-id}.execute-api.{region}.amazonaws.com/{stage}`) or `ws://`
 * (a self-hosted gitgazer-ws's `/ws`); http(s) is taken as the same. Workers'
 * fetch speaks http(s), so the scheme is mapped. No query: the client's is
 * forwarded as it came.
 */
function originUrl(value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`ORIGIN_URL ${JSON.stringify(value)} is not a URL`);
  }
  const scheme = { 'wss:': 'https:', 'https:': 'https:', 'ws:': 'http:', 'http:': 'http:' }[
    url.protocol
  ];
  if (!scheme) {
    throw new ConfigError(`ORIGIN_URL must be a ws(s):// or http(s):// URL: ${value}`);
  }
  if (url.search !== '' || url.hash !== '') {
    throw new ConfigError(
      `ORIGIN_URL ${JSON.stringify(value)} carries a query or fragment; give the endpoint ` +
        "alone (the client's query is forwarded as it came)",
    );
  }
  // ws(s) and http(s) are all special schemes, so the swap keeps the rest.
  url.protocol = scheme;
  return url.href;
}

function leewaySeconds(value) {
  if (value === undefined) return 0;
  if (!/^[0-9]+$/.test(value) || Number(value) > U32_MAX) {
    throw new ConfigError(
      `JWT_LEEWAY_SECONDS ${JSON.stringify(value)} is not a number of seconds (0 to ${U32_MAX})`,
    );
  }
  return Number(value);
}

function instanceMode(value) {
  if (value === undefined) return 'reuse';
  if (value === 'reuse' || value === 'fresh') return value;
  throw new ConfigError(
    `EDGE_POLICY_INSTANCE ${JSON.stringify(value)} must be "reuse" (the default) or "fresh"`,
  );
}

/**
 * The edge's configuration from an environment (the Worker's `env`, or
 * `process.env`). Throws a ConfigError naming the variable.
 */
export function readConfig(env) {
  const get = (name) => nonEmpty(env[name]);
  const userPoolId = get('COGNITO_USER_POOL_ID');
  if (!userPoolId) {
    throw new ConfigError(
      'COGNITO_USER_POOL_ID is required: the edge verifies the id tokens of one Cognito user pool',
    );
  }
  const region = get('AWS_REGION');
  if (!region) throw new ConfigError('AWS_REGION is required when COGNITO_USER_POOL_ID is set');
  const clientIds = get('COGNITO_CLIENT_ID');
  if (!clientIds) {
    throw new ConfigError('COGNITO_CLIENT_ID is required when COGNITO_USER_POOL_ID is set');
  }
  const audiences = parseClientIds(clientIds);
  validateUserPoolId(userPoolId, region);
  const issuer = `https://cognito-idp.${region}.amazonaws.com/${userPoolId}`;
  const jwksUrl = httpUrl(
    'COGNITO_JWKS_URL',
    get('COGNITO_JWKS_URL') ?? `${issuer}/.well-known/jwks.json`,
  ).href;
  const origin = get('ORIGIN_URL');
  if (!origin) {
    throw new ConfigError(
      'ORIGIN_URL is required: the WebSocket endpoint valid upgrades are forwarded to ' +
        '(wss://… for API Gateway, ws://host:port/ws for a self-hosted gitgazer-ws)',
    );
  }
  return {
    settings: {
      issuer,
      audiences,
      leewaySeconds: leewaySeconds(get('JWT_LEEWAY_SECONDS')),
      recordTtlSeconds: RECORD_TTL_SECONDS,
    },
    jwksUrl,
    originUrl: originUrl(origin),
    instance: instanceMode(get('EDGE_POLICY_INSTANCE')),
  };
}
