// The `fs/*` methods (SPEC section 12) written against the generated declarations;
// `tsc --strict` compiles it with consumer.ts, so a missing or mistyped field fails CI.

import type {
  ExecServerProtocol,
  FileErrorData,
  FileKind,
  FsEntry,
  FsStatResult,
  FsWriteParams,
} from "../exec-server";

type Methods = ExecServerProtocol["methods"];
type FsMethod = Extract<keyof Methods, `fs/${string}`>;

function fsRequest<M extends FsMethod>(id: number, method: M, params: Methods[M]["params"]) {
  return { jsonrpc: "2.0" as const, id, method, params };
}

const atomicWrite: FsWriteParams = { path: "/tmp/a", data: "aGkK", atomic: true, mode: 0o600 };

const fsMessages = [
  fsRequest(1, "fs/read", { path: "/tmp/a", offset: 0, maxBytes: 4096 }),
  fsRequest(2, "fs/write", atomicWrite),
  fsRequest(3, "fs/write", { path: "/tmp/a", data: "", offset: 10, truncate: false, create: false }),
  fsRequest(4, "fs/stat", { path: "/tmp/link", followSymlinks: false }),
  fsRequest(5, "fs/list", { path: "/tmp" }),
  fsRequest(6, "fs/mkdir", { path: "/tmp/x/y", parents: true, mode: 0o755 }),
  fsRequest(7, "fs/remove", { path: "/tmp/x", recursive: true }),
  fsRequest(8, "fs/rename", { from: "/tmp/a", to: "/tmp/b" }),
];

function kindText(kind: FileKind): string {
  switch (kind) {
    case "file":
      return "-";
    case "dir":
      return "d";
    case "symlink":
      return "l";
    case "other":
      return "?";
  }
}

function describeEntry(entry: FsEntry): string {
  return `${kindText(entry.kind)} ${entry.name}${entry.lossy ? " (not UTF-8)" : ""}`;
}

function describeStat(stat: FsStatResult): string {
  const target: string | null = stat.target;
  return `${kindText(stat.kind)} ${stat.mode.toString(8)} ${stat.size} ${stat.mtimeMs}${target === null ? "" : ` -> ${target}`}`;
}

function errnoOf(error: { code: number; data?: unknown }): string | undefined {
  if (error.code !== -32020) return undefined;
  return (error.data as FileErrorData).errno;
}

const readResult: Methods["fs/read"]["result"] = { data: "aGkK", eof: true, size: 3 };
const listResult: Methods["fs/list"]["result"] = {
  entries: [{ name: "caf\ufffd", kind: "file", lossy: true }],
};

// @ts-expect-error: not a file kind
const badKind: FileKind = "fifo";
// @ts-expect-error: `from` and `to`, not `path`
fsRequest(9, "fs/rename", { path: "/tmp/a" });
// @ts-expect-error: data is base64 text, not bytes
const badWrite: FsWriteParams = { path: "/tmp/a", data: [1, 2, 3] };
// @ts-expect-error: target is always present in a stat result
const badStat: FsStatResult = { kind: "file", size: 0, mode: 0o644, mtimeMs: 0 };

export const fsSummary = [
  fsMessages.length,
  listResult.entries.map(describeEntry),
  describeStat({ kind: "symlink", size: 6, mode: 0o777, mtimeMs: 0, target: "/tmp/a" }),
  errnoOf({ code: -32020, data: { errno: "ENOENT" } }),
  readResult.eof,
  badKind,
  badWrite,
  badStat,
];
