//! The WebSocket transport: jsonrpsee's server with token auth, Origin checks, /healthz, limits and session resume.
