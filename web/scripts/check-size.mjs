// Fails the build when the JavaScript a first page load fetches (the entry chunk and what it
// imports statically, per Vite's manifest) exceeds the budget, gzipped. Lazy chunks (consoles,
// editor) are not counted: they load only on the pages that need them.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";

const BUDGET = 1024 * 1024;
const out = new URL("../../cloudlet/dashboard/", import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(join(out, ".vite/manifest.json"), "utf8"));
const entry = Object.values(manifest).find((chunk) => chunk.isEntry);
const seen = new Set();
const visit = (key) => {
  const chunk = manifest[key] ?? Object.values(manifest).find((c) => c.file === key);
  if (!chunk || seen.has(chunk.file)) return;
  seen.add(chunk.file);
  for (const imported of chunk.imports ?? []) visit(imported);
};
visit(Object.keys(manifest).find((key) => manifest[key] === entry));
let total = 0;
for (const file of seen) total += gzipSync(readFileSync(join(out, file))).length;
const lazy = Object.values(manifest).filter((c) => c.file.endsWith(".js") && !seen.has(c.file)).length;
console.log(`first load: ${(total / 1024).toFixed(1)} KiB of JavaScript gzipped in ${seen.size} chunk(s); ${lazy} lazy chunk(s)`);
if (total > BUDGET) {
  console.error(`over the budget of ${BUDGET / 1024} KiB`);
  process.exit(1);
}
