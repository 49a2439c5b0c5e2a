// The key set at the edge: fetched from the pool's JWKS URL and kept at module
// level, so every request an isolate serves shares it. The rules are the
// host's (host/src/keys/remote.rs):
// - fetched once, then served from the cache;
// - an unknown kid may refetch, at most once per cool-down (10 s), counted
//   from the last such refetch, so a key rotation is picked up by the first
//   token that uses the new key and a flood of random kids cannot become a
//   flood of fetches;
// - with no set cached, a failed fetch is remembered for 1 s;
// - concurrent fetches merge into one;
// - each fetch: 4 s in all, a 2xx status, no redirects, at most 64 KiB;
// - a failed refetch keeps the last good set; a set the policy refuses is a
//   failed fetch and never cached. Whether the policy accepts a set is asked
//   of the policy itself (`accepts`), as the host asks the guest's parser.

export const DEFAULT_LIMITS = Object.freeze({
  totalTimeoutMs: 4000,
  maxBodyBytes: 64 * 1024,
  refreshCooldownMs: 10_000,
  failureBackoffMs: 1000,
});

class FetchFailure extends Error {
  constructor(outcome, reason) {
    super(reason);
    this.outcome = outcome;
  }
}

/** The body as UTF-8 text, at most `max` bytes, or a FetchFailure. */
async function readCapped(response, max, url, signal) {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > max) {
    await response.body?.cancel().catch(() => {});
    throw new FetchFailure('too_large', `${url}: key set larger than ${max} bytes`);
  }
  const chunks = [];
  let length = 0;
  if (response.body) {
    const reader = response.body.getReader();
    const aborted = new Promise((_, reject) => {
      const fail = () => reject(new FetchFailure('unreachable', `reading ${url}: timed out`));
      if (signal.aborted) fail();
      signal.addEventListener('abort', fail, { once: true });
    });
    aborted.catch(() => {});
    for (;;) {
      const { done, value } = await Promise.race([reader.read(), aborted]);
      if (done) break;
      length += value.byteLength;
      if (length > max) {
        await reader.cancel().catch(() => {});
        throw new FetchFailure('too_large', `${url}: key set larger than ${max} bytes`);
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new FetchFailure('refused', `${url}: not UTF-8`);
  }
}

export class KeySetCache {
  /**
   * `accepts(json)`: whether the policy takes this document as a key set.
   * `fetchImpl` and `now` are the platform's unless a test replaces them.
   */
  constructor(url, accepts, { limits = DEFAULT_LIMITS, fetchImpl, now } = {}) {
    this.url = url;
    this.accepts = accepts;
    this.limits = limits;
    this.fetchImpl = fetchImpl ?? ((...args) => fetch(...args));
    this.now = now ?? Date.now;
    /** The cached JWKS document, or null. */
    this.keySet = null;
    /** Bumped when a fetched set is adopted. */
    this.generation = 0;
    this.lastRefresh = null;
    this.lastFailure = null;
    this.inflight = null;
    /** Fetches attempted (successful or not). */
    this.fetches = 0;
    this.outcomes = {};
  }

  /** With no set: may a request fetch now (not within the failure back-off)? */
  mayLoad() {
    if (this.keySet !== null) return false;
    const failed = this.lastFailure;
    return !(failed && this.now() - failed.at < this.limits.failureBackoffMs);
  }

  /** With a set: may an unknown kid refetch now (not within the cool-down)? */
  mayRefresh() {
    if (this.keySet === null) return this.mayLoad();
    return !(this.lastRefresh !== null && this.now() - this.lastRefresh < this.limits.refreshCooldownMs);
  }

  /** Why there is no set, for the guest's log (never the client). */
  unavailableReason() {
    return this.lastFailure ? this.lastFailure.reason : `no key set fetched yet from ${this.url}`;
  }

  /**
   * Fetches now, or joins the fetch under way. `refresh`: asked for by an
   * unknown kid (starts the cool-down). Never throws; the outcome is in the
   * cache's state.
   */
  async fetch(refresh) {
    if (refresh) this.lastRefresh = this.now();
    this.inflight ??= this.#fetchAndAdopt().finally(() => {
      this.inflight = null;
    });
    await this.inflight;
  }

  async #fetchAndAdopt() {
    this.fetches += 1;
    try {
      const json = await this.#fetchOnce();
      this.keySet = json;
      this.generation += 1;
      this.lastFailure = null;
      this.#count('ok');
    } catch (e) {
      const failure =
        e instanceof FetchFailure ? e : new FetchFailure('unreachable', `fetching ${this.url}: ${e}`);
      this.#count(failure.outcome);
      this.lastFailure = { at: this.now(), reason: failure.message };
      console.warn(`JWKS fetch failed (${failure.outcome}): ${failure.message}`);
    }
  }

  #count(outcome) {
    this.outcomes[outcome] = (this.outcomes[outcome] ?? 0) + 1;
  }

  async #fetchOnce() {
    const signal = AbortSignal.timeout(this.limits.totalTimeoutMs);
    let response;
    try {
      response = await this.fetchImpl(this.url, {
        redirect: 'manual',
        signal,
        headers: { accept: 'application/json' },
      });
    } catch (e) {
      throw new FetchFailure('unreachable', `fetching ${this.url}: ${e && e.message ? e.message : e}`);
    }
    if (response.status < 200 || response.status > 299) {
      await response.body?.cancel().catch(() => {});
      throw new FetchFailure('http_error', `fetching ${this.url}: HTTP ${response.status}`);
    }
    const json = await readCapped(response, this.limits.maxBodyBytes, this.url, signal);
    if (!this.accepts(json)) {
      throw new FetchFailure(
        'refused',
        `${this.url}: not a key set the policy accepts: a JSON object with one "keys" array, ` +
          'no repeated member, nested at most as deep as the policy parses',
      );
    }
    return json;
  }
}
