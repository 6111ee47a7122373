//! The shared behavioural suite (`common/suite.rs`) against both backends: in this
//! process (`LocalBackend`) and on a WebSocket server (`RemoteBackend`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use exec_server_client::{Client, ConnectOptions, ExecBackend, LocalBackend, RemoteBackend};

mod local {
    use super::*;

    async fn make() -> (Arc<dyn ExecBackend>, ()) {
        (Arc::new(LocalBackend::new()), ())
    }

    crate::backend_suite!(make);
}

mod remote_ws {
    use super::*;
    use crate::common::TestServer;

    async fn make() -> (Arc<dyn ExecBackend>, TestServer) {
        let server = TestServer::start().await;
        let client = Client::connect(&server.url, ConnectOptions::default())
            .await
            .expect("connect");
        // The whole suite runs over binary output frames (SPEC section 11).
        assert!(client.binary_output());
        (Arc::new(RemoteBackend::new(client)), server)
    }

    crate::backend_suite!(make);
}

mod remote_ws_json {
    use super::*;
    use crate::common::TestServer;

    /// Output as base64 JSON notifications even if the server offers binary frames.
    async fn make() -> (Arc<dyn ExecBackend>, TestServer) {
        let server = TestServer::start().await;
        let client = Client::connect(&server.url, ConnectOptions::default().binary_output(false))
            .await
            .expect("connect");
        assert!(!client.binary_output());
        (Arc::new(RemoteBackend::new(client)), server)
    }

    crate::backend_suite!(make; output_and_exit_status, slow_consumer_loses_nothing);
}
