// Builds this listener into a component: node build.mjs [OUTPUT.wasm]
// The Lockstep WIT is copied into wit/deps first (a symlink would point outside the folder
// the componentizer may read).
import { componentize } from '@bytecodealliance/componentize-js';
import { cp, mkdir, writeFile } from 'node:fs/promises';

const out = process.argv[2] ?? 'protect_accounts_js.wasm';
await mkdir('wit/deps/lockstep-listener', { recursive: true });
await cp('../../wit/v0.1.0/listener.wit', 'wit/deps/lockstep-listener/listener.wit');
const { component } = await componentize({
  sourcePath: 'app.js',
  witPath: 'wit',
  worldName: 'protect-accounts',
  // No fetch(), no incoming HTTP: the listener needs neither, so it imports neither.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
