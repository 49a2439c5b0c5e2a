// Builds the edge Worker into dist/: the policy component the host embeds,
// transpiled by jco (instantiation mode `sync`: the Worker instantiates it
// itself, from three core modules workerd and wrangler load as compiled wasm),
// beside the Worker's own modules from src/. dist/component.json records what
// went in (the component's SHA-256 and size, every file's SHA-256);
// tests/e2e/edge.rs checks it against the bytes the host embeds.
//
//   node edge/cloudflare/build.mjs [--if-needed] [--component FILE]
//
// The component: --component, else GITGAZER_WS_GUEST_WASM (what the host's
// build script embeds when set), else target/guest/wasm32-wasip2/release/
// gitgazer_ws_guest.wasm under CARGO_TARGET_DIR or the repository's target/
// (the portable build the host's build script makes and embeds).
// --if-needed: do nothing when dist/ already holds exactly this build.

import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transpileBytes } from '@bytecodealliance/jco-transpile';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const dist = join(here, 'dist');
const src = join(here, 'src');

function usage(message) {
  console.error(`build.mjs: ${message}\nusage: node build.mjs [--if-needed] [--component FILE]`);
  process.exit(2);
}

const args = process.argv.slice(2);
let ifNeeded = false;
let componentArg;
while (args.length > 0) {
  const arg = args.shift();
  if (arg === '--if-needed') ifNeeded = true;
  else if (arg === '--component') componentArg = args.shift() ?? usage('--component needs a file');
  else usage(`unknown argument ${arg}`);
}

const targetDir = process.env.CARGO_TARGET_DIR
  ? resolve(process.env.CARGO_TARGET_DIR)
  : join(repo, 'target');
const componentPath = resolve(
  componentArg ??
    process.env.GITGAZER_WS_GUEST_WASM ??
    join(targetDir, 'guest/wasm32-wasip2/release/gitgazer_ws_guest.wasm'),
);

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

let component;
try {
  component = await readFile(componentPath);
} catch (e) {
  console.error(
    `build.mjs: the policy component ${componentPath} cannot be read (${e.code ?? e.message}); ` +
      'build it first: scripts/build (or cargo build --release), which builds the component the host embeds',
  );
  process.exit(1);
}

const transpiler = JSON.parse(
  await readFile(join(here, 'node_modules/@bytecodealliance/jco-transpile/package.json'), 'utf8'),
);
const sources = (await readdir(src)).filter((name) => name.endsWith('.mjs')).sort();
const sourceBytes = Object.fromEntries(
  await Promise.all(sources.map(async (name) => [name, await readFile(join(src, name))])),
);

/** What a build from these inputs records; equal records mean an equal build. */
function inputsOf(manifest) {
  return JSON.stringify([
    manifest.component.sha256,
    manifest.transpiler,
    Object.entries(manifest.files)
      .filter(([name]) => name.endsWith('.mjs'))
      .sort(),
  ]);
}

const wanted = {
  component: { sha256: sha256(component), bytes: component.length },
  transpiler: `${transpiler.name} ${transpiler.version}`,
  files: Object.fromEntries(sources.map((name) => [name, sha256(sourceBytes[name])])),
};

if (ifNeeded) {
  try {
    const built = JSON.parse(await readFile(join(dist, 'component.json'), 'utf8'));
    let intact = inputsOf(built) === inputsOf(wanted);
    for (const [name, digest] of Object.entries(built.files)) {
      if (!intact) break;
      intact = sha256(await readFile(join(dist, name))) === digest;
    }
    if (intact) process.exit(0);
  } catch {
    // No build yet, or an unreadable one: build.
  }
}

const { files } = await transpileBytes(component, {
  name: 'policy',
  instantiation: 'sync',
  noTypescript: true,
  emitTypescriptDeclarations: false,
  quiet: true,
});
const expected = ['policy.core.wasm', 'policy.core2.wasm', 'policy.core3.wasm', 'policy.js'];
const names = Object.keys(files).sort();
if (JSON.stringify(names) !== JSON.stringify(expected)) {
  console.error(
    `build.mjs: jco made ${names.join(', ')}, not ${expected.join(', ')}; ` +
      'src/component.mjs and workerd.capnp name these files',
  );
  process.exit(1);
}

// Into a fresh directory, then swapped in: a failed build leaves the old one.
const staging = `${dist}.tmp-${process.pid}`;
await rm(staging, { recursive: true, force: true });
await mkdir(staging, { recursive: true });
const manifest = {
  description: 'What build.mjs transpiled; tests/e2e/edge.rs checks it against the host',
  component: {
    path: relative(repo, componentPath),
    ...wanted.component,
  },
  transpiler: wanted.transpiler,
  instantiation: 'sync',
  files: {},
};
for (const [name, content] of [...Object.entries(files), ...Object.entries(sourceBytes)]) {
  await writeFile(join(staging, name), content);
  manifest.files[name] = sha256(content);
}
manifest.files = Object.fromEntries(Object.entries(manifest.files).sort());
await writeFile(join(staging, 'component.json'), `${JSON.stringify(manifest, null, 2)}\n`);
await rm(dist, { recursive: true, force: true });
await rename(staging, dist);
console.error(
  `build.mjs: ${relative(repo, componentPath)} (${component.length} bytes) -> ${relative(repo, dist)}/`,
);
