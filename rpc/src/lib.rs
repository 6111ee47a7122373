//! JSON-RPC method dispatch shared by the stdio and WebSocket transports: the handshake state of a connection, the session registry, and the mapping of core errors to wire errors.
