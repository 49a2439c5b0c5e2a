# Test-only: the conformance runner (conformance.mjs) beside the edge's own
# wrapper of the component and the component from ../dist/ (build.mjs).
# tests/e2e/edge.rs runs it with --socket-addr http=127.0.0.1:<port>.

using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "conformance", worker = .conformance)],
  sockets = [(name = "http", address = "127.0.0.1:8788", http = (), service = "conformance")],
);

const conformance :Workerd.Worker = (
  modules = [
    (name = "conformance.mjs", esModule = embed "conformance.mjs"),
    (name = "component.mjs", esModule = embed "../dist/component.mjs"),
    (name = "policy.js", esModule = embed "../dist/policy.js"),
    (name = "policy.core.wasm", wasm = embed "../dist/policy.core.wasm"),
    (name = "policy.core2.wasm", wasm = embed "../dist/policy.core2.wasm"),
    (name = "policy.core3.wasm", wasm = embed "../dist/policy.core3.wasm"),
  ],
  compatibilityDate = "2026-05-01",
);
