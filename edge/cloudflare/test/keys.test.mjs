// The edge's key-set cache (src/keys.mjs) with a fake fetch and clock:
// merged fetches, the cool-down, the failure back-off, the size cap, the
// timeout, and refused sets never cached. `node --test edge/cloudflare/test/`
// (scripts/test runs it); tests/e2e/edge.rs runs the same rules under workerd.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_LIMITS, KeySetCache } from '../src/keys.mjs';

const GOOD = '{"keys":[]}';
const URL = 'https://keys.example/jwks.json';

/** A cache over a fake server whose answers a test sets; counts fetches. */
function setup({ limits = DEFAULT_LIMITS, accepts = (json) => json === GOOD } = {}) {
  const clock = { now: 1_000_000 };
  const server = { answer: () => new Response(GOOD), requests: 0 };
  const cache = new KeySetCache(URL, accepts, {
    limits,
    now: () => clock.now,
    fetchImpl: async (url, init) => {
      server.requests += 1;
      assert.equal(url, URL);
      assert.equal(init.redirect, 'manual');
      return server.answer(init);
    },
  });
  return { cache, clock, server };
}

test('concurrent fetches merge into one', async () => {
  const { cache, server } = setup();
  let release;
  const held = new Promise((resolve) => {
    release = resolve;
  });
  server.answer = async () => {
    await held;
    return new Response(GOOD);
  };
  const all = Array.from({ length: 10 }, () => cache.fetch(false));
  release();
  await Promise.all(all);
  assert.equal(server.requests, 1);
  assert.equal(cache.keySet, GOOD);
});

test('an unknown kid refetches at most once per cool-down, counted from the last refetch', async () => {
  const { cache, clock, server } = setup();
  await cache.fetch(false);
  assert.equal(cache.mayRefresh(), true, 'the first refresh may go at once');
  await cache.fetch(true);
  assert.equal(server.requests, 2);
  clock.now += DEFAULT_LIMITS.refreshCooldownMs - 1;
  assert.equal(cache.mayRefresh(), false);
  clock.now += 1;
  assert.equal(cache.mayRefresh(), true);
});

test('with no set, a failure is remembered for the back-off; a failed refetch keeps the good set', async () => {
  const { cache, clock, server } = setup();
  server.answer = () => new Response('', { status: 503 });
  await cache.fetch(false);
  assert.equal(cache.keySet, null);
  assert.match(cache.unavailableReason(), /HTTP 503/);
  assert.equal(cache.mayLoad(), false);
  clock.now += DEFAULT_LIMITS.failureBackoffMs;
  assert.equal(cache.mayLoad(), true);
  server.answer = () => new Response(GOOD);
  await cache.fetch(false);
  assert.equal(cache.keySet, GOOD);
  const generation = cache.generation;
  server.answer = () => new Response('', { status: 500 });
  await cache.fetch(true);
  assert.equal(cache.keySet, GOOD);
  assert.equal(cache.generation, generation);
});

test('a redirect, an oversize body (declared or streamed), bad UTF-8 and a refused set are failed fetches', async () => {
  const small = { ...DEFAULT_LIMITS, maxBodyBytes: 64 };
  const streamed = (bytes) =>
    new ReadableStream({
      start(controller) {
        for (let i = 0; i < bytes; i += 16) controller.enqueue(new Uint8Array(16).fill(32));
        controller.close();
      },
    });
  for (const [why, answer, outcome] of [
    ['redirect', () => new Response(null, { status: 302, headers: { location: URL } }), 'http_error'],
    ['declared size', () => new Response('x'.repeat(65)), 'too_large'],
    ['streamed size', () => new Response(streamed(80)), 'too_large'],
    ['bad UTF-8', () => new Response(new Uint8Array([0xff, 0xfe])), 'refused'],
    ['refused by the policy', () => new Response('{"keys":[],"keys":[]}'), 'refused'],
  ]) {
    const { cache, server } = setup({ limits: small });
    server.answer = answer;
    await cache.fetch(false);
    assert.equal(cache.keySet, null, why);
    assert.deepEqual(cache.outcomes, { [outcome]: 1 }, why);
  }
});

// Node's AbortSignal.timeout does not keep the process alive; a timer does.
async function awake(work) {
  const timer = setTimeout(() => {}, 5000);
  try {
    await work();
  } finally {
    clearTimeout(timer);
  }
}

test('a fetch that does not finish in time fails', () => awake(async () => {
  const { cache, server } = setup({ limits: { ...DEFAULT_LIMITS, totalTimeoutMs: 50 } });
  server.answer = (init) =>
    new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(init.signal.reason)));
  await cache.fetch(false);
  assert.equal(cache.keySet, null);
  assert.deepEqual(cache.outcomes, { unreachable: 1 });
}));

test('a body that stops arriving fails at the same deadline', () => awake(async () => {
  const { cache, server } = setup({ limits: { ...DEFAULT_LIMITS, totalTimeoutMs: 50 } });
  server.answer = () =>
    new Response(
      new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('{"keys":'));
        },
      }),
    );
  await cache.fetch(false);
  assert.equal(cache.keySet, null);
  assert.deepEqual(cache.outcomes, { unreachable: 1 });
}));
