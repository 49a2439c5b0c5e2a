// Test-only Worker: runs the conformance set's verify-token cases
// (tests/conformance/cases.json, POSTed by tests/e2e/edge.rs) inside workerd,
// through the edge's own wrapper of the component (src/component.mjs), and
// answers what it observed in the cases' own terms. Each case runs twice:
// with a fresh instance, and on one instance reused across every case (the
// edge's default), which must not change an answer.

import { instanceCount, verifyToken } from './component.mjs';

const settingsOf = (s) => ({
  issuer: s.issuer,
  audiences: s.audiences,
  leewaySeconds: s['leeway-seconds'],
  recordTtlSeconds: s['record-ttl-seconds'],
});

function runCase(testCase, mode) {
  const call = testCase.call;
  const requests = [];
  const keySet = (refresh) => {
    requests.push(refresh);
    const answer = refresh
      ? (testCase['refreshed-key-set'] ?? testCase['key-set'])
      : testCase['key-set'];
    return 'ok' in answer ? answer.ok : { error: answer.error };
  };
  const verdict = verifyToken(call.token, call.now, settingsOf(call.settings), keySet, mode);
  let expect;
  if (verdict.identity) expect = { verify: { ok: verdict.identity } };
  else if (verdict.rejection) expect = { verify: { error: verdict.rejection } };
  else expect = { trap: String(verdict.trap) };
  const token = call.token;
  return {
    name: testCase.name,
    mode,
    observed: { expect, 'expect-key-set-requests': requests },
    tokenLogged: token.length >= 16 && verdict.logs.some((l) => l.message.includes(token)),
  };
}

export default {
  async fetch(request) {
    if (request.method !== 'POST') return new Response('POST the conformance set', { status: 405 });
    const document = await request.json();
    const cases = document.cases.filter((c) => c.call.op === 'verify-token');
    const before = instanceCount();
    const results = [];
    for (const mode of ['fresh', 'reuse']) {
      for (const testCase of cases) results.push(runCase(testCase, mode));
    }
    return Response.json({
      runtime: `workerd ${navigator.userAgent}`,
      results,
      instances: instanceCount() - before,
    });
  },
};
