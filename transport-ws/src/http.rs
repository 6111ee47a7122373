//! The HTTP side of the server: `/healthz`, Origin (403), token (401) and connection-limit (503) checks, then the WebSocket upgrade.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, ORIGIN, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use tokio::sync::OwnedSemaphorePermit;

use crate::server::Shared;

/// The response body type of every HTTP answer.
pub(crate) type Body = Full<Bytes>;

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers one HTTP request; an accepted upgrade spawns the WebSocket connection.
pub(crate) async fn route(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(route_inner(&shared, request))
}

fn route_inner(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    if path == "/healthz" && request.method() == Method::GET {
        return text(StatusCode::OK, "ok");
    }
    if let Some(origin) = request.headers().get(ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| {
            let o = o.trim_end_matches('/');
            shared
                .config
                .allowed_origins
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
        });
        if !allowed {
            tracing::info!(origin = ?origin, "refused a foreign Origin");
            return text(
                StatusCode::FORBIDDEN,
                "origin not allowed (see --allow-origin)\n",
            );
        }
    }
    if !shared
        .config
        .auth
        .allows(request.headers(), request.uri().query())
    {
        let mut response = text(StatusCode::UNAUTHORIZED, "missing or wrong token\n");
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        return response;
    }
    if path != "/" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !soketto::handshake::http::is_upgrade_request(&request) {
        return text(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint\n",
        );
    }
    let permit: OwnedSemaphorePermit = match shared.connections.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            tracing::warn!(
                max = shared.config.max_connections,
                "refused a connection: too many connections"
            );
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "limit reached: too many connections (--max-connections)\n",
            );
        }
    };
    let mut handshake = soketto::handshake::http::Server::new();
    match handshake.receive_request(&request) {
        Ok(response) => {
            let shared = shared.clone();
            tokio::spawn(async move {
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        crate::connection::run(shared, handshake, upgraded).await;
                    }
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
                drop(permit);
            });
            response.map(|()| Full::default())
        }
        Err(e) => {
            tracing::debug!("bad upgrade request: {e}");
            text(StatusCode::BAD_REQUEST, "bad WebSocket upgrade request\n")
        }
    }
}
