// The edge's configuration rules (src/config.mjs): the host's names and
// checks, messages naming the variable. `node --test edge/cloudflare/test/`.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, readConfig } from '../src/config.mjs';

const BASE = {
  AWS_REGION: 'eu-west-1',
  COGNITO_USER_POOL_ID: 'eu-west-1_AbC123',
  COGNITO_CLIENT_ID: 'web',
  ORIGIN_URL: 'wss://abc.execute-api.eu-west-1.amazonaws.com/prod',
};

test('the host settings, the pool key set and the origin as an https URL', () => {
  const config = readConfig({ ...BASE, COGNITO_CLIENT_ID: ' web , mobile,web', JWT_LEEWAY_SECONDS: '30' });
  assert.deepEqual(config.settings.audiences, ['web', 'mobile']);
  assert.equal(config.settings.issuer, 'https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123');
  assert.equal(config.settings.leewaySeconds, 30);
  assert.equal(config.jwksUrl, `${config.settings.issuer}/.well-known/jwks.json`);
  assert.equal(config.originUrl, 'https://abc.execute-api.eu-west-1.amazonaws.com/prod');
  assert.equal(config.instance, 'reuse');
  const local = readConfig({ ...BASE, ORIGIN_URL: 'ws://127.0.0.1:8081/ws', COGNITO_JWKS_URL: 'http://127.0.0.1:9/k' });
  assert.equal(local.originUrl, 'http://127.0.0.1:8081/ws');
  assert.equal(local.jwksUrl, 'http://127.0.0.1:9/k');
});

test('every error names its variable', () => {
  for (const [change, variable, words] of [
    [{ COGNITO_USER_POOL_ID: undefined }, 'COGNITO_USER_POOL_ID', 'required'],
    [{ COGNITO_USER_POOL_ID: ' ' }, 'COGNITO_USER_POOL_ID', 'required'],
    [{ AWS_REGION: null }, 'AWS_REGION', 'required'],
    [{ COGNITO_CLIENT_ID: '' }, 'COGNITO_CLIENT_ID', 'required'],
    [{ COGNITO_CLIENT_ID: 'a,,b' }, 'COGNITO_CLIENT_ID', 'element 2 is empty'],
    [{ COGNITO_CLIENT_ID: 'a,' }, 'COGNITO_CLIENT_ID', 'element 2 is empty'],
    [{ COGNITO_USER_POOL_ID: 'eu-west-1' }, 'COGNITO_USER_POOL_ID', '<region>_<id>'],
    [{ COGNITO_USER_POOL_ID: 'eu-west-1_a-b' }, 'COGNITO_USER_POOL_ID', '<region>_<id>'],
    [{ AWS_REGION: 'us-east-1' }, 'AWS_REGION', 'AWS_REGION is us-east-1'],
    [{ COGNITO_JWKS_URL: 'file:///etc/passwd' }, 'COGNITO_JWKS_URL', 'http(s)'],
    [{ ORIGIN_URL: undefined }, 'ORIGIN_URL', 'required'],
    [{ ORIGIN_URL: 'ftp://origin' }, 'ORIGIN_URL', 'ws(s)://'],
    [{ ORIGIN_URL: 'wss://origin/ws?x=1' }, 'ORIGIN_URL', 'query'],
    [{ JWT_LEEWAY_SECONDS: '-1' }, 'JWT_LEEWAY_SECONDS', 'seconds'],
    [{ JWT_LEEWAY_SECONDS: '4294967296' }, 'JWT_LEEWAY_SECONDS', 'seconds'],
    [{ EDGE_POLICY_INSTANCE: 'shared' }, 'EDGE_POLICY_INSTANCE', 'reuse'],
  ]) {
    assert.throws(
      () => readConfig({ ...BASE, ...change }),
      (e) => e instanceof ConfigError && e.message.includes(variable) && e.message.includes(words),
      JSON.stringify(change),
    );
  }
});
