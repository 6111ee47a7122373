//! The stdio transport: newline-delimited JSON-RPC on stdin and stdout, bound to the shared dispatch.
