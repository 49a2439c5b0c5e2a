# The edge Worker under workerd (Cloudflare's open-source Workers runtime), as
# scripts/edge-local runs it:
#
#   workerd serve edge/cloudflare/workerd.capnp --socket-addr http=127.0.0.1:8787
#
# Run `node edge/cloudflare/build.mjs` first: the modules come from dist/.
# The configuration comes from the process's environment, under the host's
# names (an unset variable is null, which the Worker reports by name).

using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    # The Worker fetches two URLs, both from its configuration: the key set
    # and the origin. Locally either may be on this machine or a private
    # network (a self-hosted gitgazer-ws), so those are allowed besides the
    # public internet; clients choose neither URL.
    (name = "internet", network = (allow = ["public", "private"])),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:8787", http = (), service = "edge"),
  ],
);

const edge :Workerd.Worker = (
  modules = [
    (name = "worker.mjs", esModule = embed "dist/worker.mjs"),
    (name = "config.mjs", esModule = embed "dist/config.mjs"),
    (name = "keys.mjs", esModule = embed "dist/keys.mjs"),
    (name = "component.mjs", esModule = embed "dist/component.mjs"),
    (name = "policy.js", esModule = embed "dist/policy.js"),
    (name = "policy.core.wasm", wasm = embed "dist/policy.core.wasm"),
    (name = "policy.core2.wasm", wasm = embed "dist/policy.core2.wasm"),
    (name = "policy.core3.wasm", wasm = embed "dist/policy.core3.wasm"),
  ],
  compatibilityDate = "2026-05-01",
  bindings = [
    (name = "AWS_REGION", fromEnvironment = "AWS_REGION"),
    (name = "COGNITO_USER_POOL_ID", fromEnvironment = "COGNITO_USER_POOL_ID"),
    (name = "COGNITO_CLIENT_ID", fromEnvironment = "COGNITO_CLIENT_ID"),
    (name = "COGNITO_JWKS_URL", fromEnvironment = "COGNITO_JWKS_URL"),
    (name = "JWT_LEEWAY_SECONDS", fromEnvironment = "JWT_LEEWAY_SECONDS"),
    (name = "ORIGIN_URL", fromEnvironment = "ORIGIN_URL"),
    (name = "EDGE_POLICY_INSTANCE", fromEnvironment = "EDGE_POLICY_INSTANCE"),
  ],
);
