//! Process lifecycle for exec-server: spawning with pipes or a pseudo-terminal, sequencing events, bounded retention, signals and cleanup. Knows nothing of JSON-RPC framing.
