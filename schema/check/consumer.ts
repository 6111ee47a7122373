// A small client written against the generated declarations. `tsc --strict`
// compiles it in CI, so a broken or incomplete `exec-server.d.ts` fails the build.
// The `@ts-expect-error` lines prove that the string unions really are unions.

import type {
  ExecServerProtocol,
  InitializeParams,
  ProcessExitedNotification,
  ProcessOutputNotification,
  ProcessReadResult,
  ProcessStartParams,
  Signal,
  Stream,
  WriteStatus,
} from "../exec-server";

type Methods = ExecServerProtocol["methods"];
type MethodName = keyof Methods;
type ServerNotifications = ExecServerProtocol["serverNotifications"];

interface Request<M extends MethodName> {
  jsonrpc: "2.0";
  id: number;
  method: M;
  params: Methods[M]["params"];
}

function request<M extends MethodName>(id: number, method: M, params: Methods[M]["params"]): Request<M> {
  return { jsonrpc: "2.0", id, method, params };
}

function onNotification<N extends keyof ServerNotifications>(
  method: N,
  params: ServerNotifications[N]["params"],
): string {
  return `${method} seq=${params.seq} process=${params.processId}`;
}

const hello: InitializeParams = { clientName: "ts-check" };
const start: ProcessStartParams = {
  processId: "p1",
  argv: ["sh", "-c", "echo hi"],
  cwd: "/tmp",
  env: { PATH: "/usr/bin:/bin" },
  tty: true,
  size: { rows: 24, cols: 80 },
};

const messages = [
  request(1, "initialize", hello),
  request(2, "process/start", start),
  request(3, "process/read", { processId: "p1", afterSeq: 0, waitMs: 1000 }),
  request(4, "process/write", { processId: "p1", chunk: "aGkK", writeId: "w1" }),
  request(5, "process/signal", { processId: "p1", signal: "SIGINT" }),
  request(6, "process/resize", { processId: "p1", rows: 40, cols: 120 }),
  request(7, "process/terminate", { processId: "p1", graceMs: 0 }),
  request(8, "process/list", {}),
  request(9, "process/closeStdin", { processId: "p1" }),
];

function describeRead(result: ProcessReadResult): string {
  const streams: Stream[] = result.chunks.map((c) => c.stream);
  const code: number | null = result.exitCode;
  const lost = result.truncated ? ` (lost ${result.evictedBytes} bytes)` : "";
  return `${streams.join(",")} next=${result.nextSeq} exit=${code ?? "running"}${lost}`;
}

function statusText(status: WriteStatus): string {
  switch (status) {
    case "accepted":
      return "ok";
    case "unknownProcess":
      return "no such process";
    case "stdinClosed":
      return "stdin closed";
    case "starting":
      return "starting";
  }
}

const output: ProcessOutputNotification = { processId: "p1", seq: 1, stream: "pty", chunk: "aGkK" };
const exited: ProcessExitedNotification = { processId: "p1", seq: 2, exitCode: 130, signal: "SIGINT" };
const signals: Signal[] = ["SIGHUP", "SIGINT", "SIGTERM", "SIGKILL", "SIGWINCH"];

// @ts-expect-error: not a stream name
const badStream: Stream = "stdlog";
// @ts-expect-error: not a signal the protocol sends
const badSignal: Signal = "SIGSEGV";
// @ts-expect-error: not a write status
const badStatus: WriteStatus = "ok";
// @ts-expect-error: not a method
request(10, "process/kill", {});
// @ts-expect-error: argv must be an array of strings
const badStart: ProcessStartParams = { processId: "p", argv: "ls", cwd: "/", env: {} };

const version: ExecServerProtocol["protocolVersion"] = 1;

export const summary = [
  messages.length,
  describeRead({
    chunks: [],
    nextSeq: 1,
    exited: false,
    exitCode: null,
    signal: null,
    closed: false,
    truncated: false,
    evictedBytes: 0,
    failure: null,
  }),
  statusText("accepted"),
  onNotification("process/output", output),
  onNotification("process/exited", exited),
  signals.length,
  version,
  badStream,
  badSignal,
  badStatus,
  badStart,
];
