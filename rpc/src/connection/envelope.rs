//! Inbound message classification: the JSON-RPC envelope, what a message is, and error responses.

use std::borrow::Cow;

use jsonrpsee_core::server::MethodResponse;
use jsonrpsee_types::Id;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::Error;

/// The longest request `id` accepted, as JSON text: the server holds the id while the
/// request is in flight and echoes it in the response.
pub(crate) const MAX_ID_BYTES: usize = 1024;

/// `Some(raw)` for a field that is present, even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// The members of a JSON-RPC message this server looks at; the rest is ignored.
#[derive(Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

/// Just the id of a message, to answer an invalid request with its id when it has one.
#[derive(Deserialize)]
pub(super) struct IdOnly<'a> {
    #[serde(borrow)]
    id: Id<'a>,
}

/// What one inbound message is.
pub(super) enum Inbound<'a> {
    /// Answer this error and do nothing else.
    Invalid(Id<'a>, Error),
    /// A notification.
    Notification {
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    /// A request.
    Request {
        id: Id<'a>,
        method: Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
}

pub(super) fn classify(message: &[u8]) -> Inbound<'_> {
    let first = message.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(message) {
            Ok(_) => Inbound::Invalid(
                Id::Null,
                Error::InvalidRequest(
                    "batch requests are not supported; send one request per message".into(),
                ),
            ),
            Err(e) => Inbound::Invalid(Id::Null, Error::Parse(e.to_string())),
        };
    }
    let envelope: Envelope<'_> = match serde_json::from_slice(message) {
        Ok(envelope) => envelope,
        Err(e) if e.is_data() => {
            let id = serde_json::from_slice::<IdOnly<'_>>(message)
                .ok()
                .filter(|i| i.id.as_str().is_none_or(|s| s.len() <= MAX_ID_BYTES))
                .map_or(Id::Null, |i| i.id);
            return Inbound::Invalid(
                id,
                Error::InvalidRequest(format!("not a JSON-RPC request: {e}")),
            );
        }
        Err(e) => return Inbound::Invalid(Id::Null, Error::Parse(e.to_string())),
    };
    if envelope
        .id
        .is_some_and(|raw| raw.get().len() > MAX_ID_BYTES)
    {
        return Inbound::Invalid(
            Id::Null,
            Error::InvalidRequest(format!("`id` is longer than {MAX_ID_BYTES} bytes")),
        );
    }
    let id = match envelope
        .id
        .map(|raw| serde_json::from_str::<Id<'_>>(raw.get()))
    {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return Inbound::Invalid(
                Id::Null,
                Error::InvalidRequest(
                    "`id` must be a string, a non-negative integer or null".into(),
                ),
            );
        }
    };
    if envelope.jsonrpc.as_deref() != Some("2.0") {
        return Inbound::Invalid(
            id.unwrap_or(Id::Null),
            Error::InvalidRequest("`jsonrpc` must be \"2.0\"".into()),
        );
    }
    let Some(method) = envelope.method else {
        return Inbound::Invalid(
            id.unwrap_or(Id::Null),
            Error::InvalidRequest("`method` is missing".into()),
        );
    };
    match id {
        None => Inbound::Notification {
            method,
            params: envelope.params,
        },
        Some(id) => Inbound::Request {
            id,
            method,
            params: envelope.params,
        },
    }
}

/// The JSON text of an error response.
pub(super) fn error_json(id: Id<'_>, error: &Error) -> String {
    json_text(MethodResponse::error(id, error.to_error_object()))
}

fn json_text(response: MethodResponse) -> String {
    String::from(Box::<str>::from(response.into_json()))
}

/// At most 256 bytes of a client-supplied name, for messages.
pub(super) fn clip(s: &str) -> &str {
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec_server_protocol::notification;

    fn invalid(message: &str) -> (String, i32) {
        match classify(message.as_bytes()) {
            Inbound::Invalid(id, e) => (id.to_string(), e.code().code()),
            _ => panic!("{message} classified as valid"),
        }
    }

    #[test]
    fn malformed_messages_get_the_spec_codes() {
        assert_eq!(invalid("{\"jsonrpc\":").1, -32700);
        assert_eq!(invalid("not json").1, -32700);
        assert_eq!(invalid("{} x").1, -32700);
        assert_eq!(invalid("[1,2").1, -32700);
        assert_eq!(invalid("[]").1, -32600);
        assert_eq!(
            invalid("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}]").1,
            -32600
        );
        assert_eq!(invalid("5").1, -32600);
        assert_eq!(
            invalid("{\"jsonrpc\":\"2.0\",\"id\":7}"),
            ("7".into(), -32600)
        );
        assert_eq!(
            invalid("{\"jsonrpc\":\"1.0\",\"id\":7,\"method\":\"m\"}"),
            ("7".into(), -32600)
        );
        assert_eq!(
            invalid("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":5}"),
            ("a".into(), -32600)
        );
        assert_eq!(
            invalid("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"m\"}").1,
            -32600
        );
    }

    #[test]
    fn requests_and_notifications_are_told_apart() {
        match classify(br#"{"jsonrpc":"2.0","id":null,"method":"m","params":{"a":1}}"#) {
            Inbound::Request { id, method, params } => {
                assert_eq!(id, Id::Null);
                assert_eq!(method, "m");
                assert_eq!(params.map(RawValue::get), Some("{\"a\":1}"));
            }
            _ => panic!("not a request"),
        }
        let text = serde_json::json!({"jsonrpc": "2.0", "method": notification::INITIALIZED});
        match classify(text.to_string().as_bytes()) {
            Inbound::Notification { method, .. } => {
                assert_eq!(method, notification::INITIALIZED)
            }
            _ => panic!("not a notification"),
        }
    }
}
