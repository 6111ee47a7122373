//! The JSON Schema bundle: `$defs` for every wire type plus the method and notification maps.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::fs::FileErrorData;
use crate::names::ErrorCode;
use crate::table::{Direction, Method, Notification, TableVisitor, visit};
use crate::types::{PROTOCOL_VERSION, SpawnErrorData};

/// The draft the bundle is written in.
pub const SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Builds the schema bundle of protocol version 1.
///
/// Its `$defs` hold every params, result and notification type (and the types
/// they use); `properties.methods` maps each method name to its params and result
/// types, `properties.clientNotifications` and `properties.serverNotifications`
/// map each notification name to its params type.
pub fn schema_bundle() -> Value {
    struct Build {
        generator: SchemaGenerator,
        methods: Map<String, Value>,
        client: Map<String, Value>,
        server: Map<String, Value>,
    }

    fn reference<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
        generator.subschema_for::<T>().to_value()
    }

    fn entry(description: String, fields: Vec<(&str, Value)>) -> Value {
        let required: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        let properties: Map<String, Value> = fields
            .into_iter()
            .map(|(name, schema)| (name.to_owned(), schema))
            .collect();
        json!({
            "description": description,
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        })
    }

    impl TableVisitor for Build {
        fn method<M: Method>(&mut self) {
            let params = reference::<M::Params>(&mut self.generator);
            let result = reference::<M::Result>(&mut self.generator);
            self.methods.insert(
                M::NAME.to_owned(),
                entry(
                    format!("The `{}` request.", M::NAME),
                    vec![("params", params), ("result", result)],
                ),
            );
        }
        fn notification<N: Notification>(&mut self) {
            let params = reference::<N::Params>(&mut self.generator);
            let map = match N::DIRECTION {
                Direction::ClientToServer => &mut self.client,
                Direction::ServerToClient => &mut self.server,
            };
            map.insert(
                N::NAME.to_owned(),
                entry(
                    format!("The `{}` notification.", N::NAME),
                    vec![("params", params)],
                ),
            );
        }
    }

    let mut build = Build {
        generator: SchemaSettings::draft2020_12().into_generator(),
        methods: Map::new(),
        client: Map::new(),
        server: Map::new(),
    };
    visit(&mut build);
    // The `data` of error responses that carry one.
    let error_data: Map<String, Value> = [
        (
            ErrorCode::SpawnFailed.code().to_string(),
            reference::<SpawnErrorData>(&mut build.generator),
        ),
        (
            ErrorCode::FileError.code().to_string(),
            reference::<FileErrorData>(&mut build.generator),
        ),
    ]
    .into_iter()
    .collect();
    let mut defs = Value::Object(build.generator.take_definitions(true));
    wrap_annotated_refs(&mut defs);

    let names = |map: &Map<String, Value>| map.keys().cloned().collect::<Vec<_>>();
    let error_codes: Map<String, Value> = ErrorCode::ALL
        .into_iter()
        .map(|c| (c.code().to_string(), Value::from(c.name())))
        .collect();

    json!({
        "$schema": SCHEMA_DIALECT,
        "title": "ExecServerProtocol",
        "description": "exec-server wire protocol version 1: every request's params and result type and every notification's params type. JSON-RPC 2.0; byte payloads are standard base64.",
        "type": "object",
        "properties": {
            "protocolVersion": { "description": "The protocol version.", "const": PROTOCOL_VERSION },
            "methods": {
                "description": "Request methods (client to server): params and result types.",
                "type": "object",
                "properties": build.methods.clone(),
                "required": names(&build.methods),
                "additionalProperties": false,
            },
            "clientNotifications": {
                "description": "Notifications the client sends.",
                "type": "object",
                "properties": build.client.clone(),
                "required": names(&build.client),
                "additionalProperties": false,
            },
            "serverNotifications": {
                "description": "Notifications the server sends.",
                "type": "object",
                "properties": build.server.clone(),
                "required": names(&build.server),
                "additionalProperties": false,
            },
        },
        "required": ["protocolVersion", "methods", "clientNotifications", "serverNotifications"],
        "additionalProperties": false,
        "x-errorCodes": error_codes,
        "x-errorData": error_data,
        "$defs": defs,
    })
}

/// Rewrites `{"$ref": R, "description": D}` as `{"allOf": [{"$ref": R}], "description": D}`.
///
/// The two mean the same, but TypeScript generators turn a `$ref` with sibling
/// keywords into a fresh alias per field (`Base64Bytes1`, `Base64Bytes2`, …),
/// while the `allOf` form keeps the one named type and the field's description.
fn wrap_annotated_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.len() > 1
                && let Some(reference) = map.remove("$ref")
            {
                map.insert("allOf".to_owned(), json!([{ "$ref": reference }]));
            }
            map.values_mut().for_each(wrap_annotated_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(wrap_annotated_refs),
        _ => {}
    }
}

/// The schema bundle as the committed file holds it: pretty JSON with a final newline.
pub fn schema_bundle_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema_bundle()).unwrap_or_default();
    text.push('\n');
    text
}
