//! `Base64Bytes`: binary payloads carried as standard base64 (with padding) on the wire.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use base64::Engine as _;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes that travel as a standard base64 string with padding.
///
/// The bytes are reference counted, so cloning a value (for example to keep one
/// copy in retention and push another) never copies the payload.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Base64Bytes(Arc<[u8]>);

impl Base64Bytes {
    /// Wraps already shared bytes without copying them.
    pub fn from_shared(bytes: Arc<[u8]>) -> Self {
        Self(bytes)
    }

    /// The shared bytes.
    pub fn shared(&self) -> &Arc<[u8]> {
        &self.0
    }

    /// The bytes as a slice.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The number of bytes (not the length of the base64 text).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for Base64Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Base64Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Base64Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v.into())
    }
}

impl From<&[u8]> for Base64Bytes {
    fn from(v: &[u8]) -> Self {
        Self(v.into())
    }
}

impl<const N: usize> From<&[u8; N]> for Base64Bytes {
    fn from(v: &[u8; N]) -> Self {
        Self(v.as_slice().into())
    }
}

impl From<&str> for Base64Bytes {
    fn from(v: &str) -> Self {
        Self(v.as_bytes().into())
    }
}

impl From<Arc<[u8]>> for Base64Bytes {
    fn from(v: Arc<[u8]>) -> Self {
        Self(v)
    }
}

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) if text.len() <= 64 => write!(f, "Base64Bytes({text:?})"),
            _ => write!(f, "Base64Bytes({} bytes)", self.0.len()),
        }
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Encodes straight into the output: no intermediate String.
        serializer.collect_str(&Base64Display::new(&self.0, &STANDARD))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct B64Visitor;
        impl Visitor<'_> for B64Visitor {
            type Value = Base64Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a standard base64 string with padding")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Base64Bytes, E> {
                STANDARD
                    .decode(v)
                    .map(Base64Bytes::from)
                    .map_err(|e| E::custom(format_args!("invalid base64: {e}")))
            }
        }
        deserializer.deserialize_str(B64Visitor)
    }
}

impl JsonSchema for Base64Bytes {
    fn schema_name() -> Cow<'static, str> {
        "Base64Bytes".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "title": "Base64Bytes",
            "description": "Bytes encoded as standard base64 with padding (RFC 4648 section 4).",
            "type": "string",
            "contentEncoding": "base64",
            "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_input() {
        let b = Base64Bytes::from("hi\n");
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, "\"aGkK\"");
        let back: Base64Bytes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        let err = serde_json::from_str::<Base64Bytes>("\"a\"").unwrap_err();
        assert!(err.to_string().contains("invalid base64"), "{err}");
        assert!(serde_json::from_str::<Base64Bytes>("\"aGkK\\n\"").is_err());
        assert!(serde_json::from_str::<Base64Bytes>("12").is_err());
    }
}
