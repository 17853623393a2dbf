// Run real MicroPython (the WebAssembly port from npm) as a line-oriented co-process.
//
//   node hil/mpwasm.mjs '{"mounts": [["/fw", "firmware"]], "heapsize": 262144}'
//
// Each host directory's *.py and *.json files are copied into the MicroPython VFS and the
// VFS directories are put on sys.path. Then every stdin line is a JSON request
// {"code": "<python source>"}; the code is executed and one JSON line is written back:
// {"ok": true|false, "out": "<what the code printed>", "error": "<traceback>"}.
// Python state persists between requests, so a caller can load the firmware once and
// drive it step by step.
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.join(here, "..", "firmware", "node_modules", "@micropython",
  "micropython-webassembly-pyscript", "micropython.mjs");
const { loadMicroPython } = await import(pkg);

const opts = JSON.parse(process.argv[2] || "{}");
let captured = [];
const mp = await loadMicroPython({
  heapsize: opts.heapsize || 256 * 1024,
  linebuffer: false,
  stdout: (data) => captured.push(typeof data === "string" ? data : new TextDecoder().decode(data)),
  stderr: (data) => captured.push(typeof data === "string" ? data : new TextDecoder().decode(data)),
});

const paths = [];
for (const [vfsDir, hostDir] of opts.mounts || []) {
  mp.FS.mkdirTree(vfsDir);
  for (const name of fs.readdirSync(hostDir)) {
    if (name.endsWith(".py") || name.endsWith(".json")) {
      mp.FS.writeFile(path.posix.join(vfsDir, name), fs.readFileSync(path.join(hostDir, name)));
    }
  }
  paths.push(vfsDir);
}
if (opts.workdir) {
  mp.FS.mkdirTree(opts.workdir);
}
mp.runPython("import sys\n" + paths.map((p) => `sys.path.append(${JSON.stringify(p)})\n`).join("") +
  (opts.workdir ? `import os\nos.chdir(${JSON.stringify(opts.workdir)})\n` : ""));

const rl = readline.createInterface({ input: process.stdin, terminal: false });
for await (const line of rl) {
  if (!line.trim()) continue;
  let reply;
  captured = [];
  try {
    const req = JSON.parse(line);
    mp.runPython(req.code);
    reply = { ok: true, out: captured.join("") };
  } catch (err) {
    reply = { ok: false, out: captured.join(""), error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
