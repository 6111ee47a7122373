//! A typed async Rust client for exec-server over stdio or WebSocket (not written yet).
