// Validate an AsyncAPI document with the official parser (@asyncapi/parser): the spec's JSON Schema plus its
// semantic rules. Usage: node validate.mjs FILE. Prints the diagnostics as JSON; exits 1 on any error.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const text = readFileSync(process.argv[2], "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const errors = diagnostics.filter((d) => d.severity === 0);
console.log(JSON.stringify({ version: document?.version() ?? null, diagnostics }, null, 1));
process.exit(document && errors.length === 0 ? 0 : 1);
