// Runs every case of a corpus directory through the npm packages asl-validator and
// aws-local-stepfunctions, printing one JSON object: {caseName: {valid, errors,
// output | error, cause}}. Used by the Go differential test (corpus_test.go).
//
// Usage: node run-corpus.mjs <tools/node dir> <corpus dir>
import { createRequire } from "node:module";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

// aws-local-stepfunctions 3 uses Promise.withResolvers (Node >= 22); supply it on older Node.
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
    return { promise, resolve, reject };
  };
}

const [nodeDir, corpusDir] = process.argv.slice(2);
const require = createRequire(path.resolve(nodeDir, "package.json"));
const aslValidator = require("asl-validator");
const { StateMachine, ExecutionError } = require("aws-local-stepfunctions");

// Task behaviours a corpus case can give a Resource; the Go test implements the same.
function handlerFor(spec, counters, resource) {
  return async (input) => {
    switch (spec.kind) {
      case "echo":
        return input;
      case "const":
        return spec.value;
      case "add":
        return input.a + input.b;
      case "fail": {
        const e = new Error(spec.cause ?? "");
        e.name = spec.error;
        throw e;
      }
      case "failTimes": {
        const n = (counters[resource] = (counters[resource] ?? 0) + 1);
        if (n <= spec.times) {
          const e = new Error(spec.cause ?? `attempt ${n}`);
          e.name = spec.error;
          throw e;
        }
        return { attempts: n, input };
      }
      default:
        throw new Error(`unknown task kind ${spec.kind}`);
    }
  };
}

// Collects the Task, Wait and retryable states of a machine and its sub-machines.
function walk(machine, visit) {
  for (const [name, st] of Object.entries(machine.States ?? {})) {
    visit(name, st);
    for (const b of st.Branches ?? []) walk(b, visit);
    if (st.Iterator) walk(st.Iterator, visit);
    if (st.ItemProcessor) walk(st.ItemProcessor, visit);
  }
}

async function runCase(c) {
  const res = {};
  // asl-validator adds QueryLanguage to the states it checks: give it a copy.
  const v = aslValidator(structuredClone(c.definition), { checkArn: false, checkPaths: true });
  res.valid = v.isValid;
  if (!v.isValid) res.errors = v.errors.map((e) => e.message ?? e.Message ?? JSON.stringify(e));
  if (!v.isValid || c.valid === false) return res;
  const counters = {};
  const taskHandlers = {};
  const waits = {};
  const retries = {};
  walk(c.definition, (name, st) => {
    if (st.Type === "Task") {
      const spec = c.tasks?.[st.Resource] ?? { kind: "echo" };
      taskHandlers[name] = handlerFor(spec, counters, st.Resource);
    }
    if (st.Type === "Wait") waits[name] = 0;
    if (st.Retry) retries[name] = 0;
  });
  try {
    const sm = new StateMachine(c.definition, { validationOptions: { noValidate: true } }); // validated above
    const exec = sm.run(c.input ?? {}, {
      overrides: { taskResourceLocalHandlers: taskHandlers, waitTimeOverrides: waits, retryIntervalOverrides: retries },
    });
    res.output = await exec.result;
  } catch (e) {
    const cause = e instanceof ExecutionError ? e.cause : e;
    res.error = cause?.name ?? String(e);
    res.cause = cause?.message ?? "";
  }
  return res;
}

const out = {};
for (const f of readdirSync(corpusDir).filter((f) => f.endsWith(".json")).sort()) {
  const c = JSON.parse(readFileSync(path.join(corpusDir, f), "utf8"));
  const t0 = Date.now();
  out[f.replace(/\.json$/, "")] = await runCase(c);
  if (process.env.TIMING) process.stderr.write(`${f} ${Date.now() - t0}ms\n`);
}
process.stdout.write(JSON.stringify(out));
