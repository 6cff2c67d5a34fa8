// Bundles src/ into dist/ (index.html, app.js, app.css). `npm run build`.
// Everything the page needs is in dist/: nothing is fetched from a CDN at run time.
import { copyFile, mkdir, readFile, rm } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const outdir = new URL("./dist/", import.meta.url);
await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });

await esbuild.build({
  entryPoints: { app: "src/main.ts" },
  outdir: "dist",
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  legalComments: "eof",
  logLevel: "warning",
});
await copyFile(new URL("./index.html", import.meta.url), new URL("index.html", outdir));

for (const name of ["index.html", "app.js", "app.css"]) {
  const bytes = await readFile(new URL(name, outdir));
  console.log(`dist/${name.padEnd(10)} ${String(bytes.length).padStart(8)} B  ${String(gzipSync(bytes).length).padStart(7)} B gzip`);
}
