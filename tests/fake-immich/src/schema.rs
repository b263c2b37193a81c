//! The Immich v2.4.1 OpenAPI contract: loading the spec, converting its
//! OpenAPI 3.0 schemas to JSON Schema, and checking bodies against them.
//!
//! OpenAPI 3.0 is not JSON Schema: `nullable: true` has no meaning there.
//! Every schema object carrying it becomes
//! `{"anyOf": [<the schema without nullable>, {"type": "null"}]}`, which also
//! covers the `{"allOf": [{"$ref": ...}], "nullable": true}` wrappers the
//! spec uses for nullable references. `#/components/schemas/X` references
//! become `#/$defs/X`, and every check compiles
//! `{"$defs": <converted components>, "allOf": [<target schema>]}` as draft
//! 2020-12 with format checks on (`date-time`, `uuid`, `email`, ...).
//!
//! Responses are checked strictly: an object schema with `properties` also
//! gets `additionalProperties: false`, so the fake cannot send a field the
//! real server does not document. Requests are checked leniently, as
//! Immich's `ValidationPipe({ whitelist: true })` strips unknown fields.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde_json::{Map, Value, json};

use crate::util;

/// The environment variable naming the spec file, if not the default.
pub const SPEC_ENV: &str = "FAKE_IMMICH_SPEC";

/// Where the spec is read from: `$FAKE_IMMICH_SPEC`, or
/// `shared/immich/immich-openapi-specs.json` beside the repository.
#[must_use]
pub fn spec_path() -> PathBuf {
    match std::env::var_os(SPEC_ENV) {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/immich/immich-openapi-specs.json"),
    }
}

/// Checks a response body against the schema the spec documents for
/// `method`, `path` (a template such as `/assets/{id}`, with or without the
/// `/api` prefix) and `status`.
///
/// Error statuses the spec does not document are accepted (Immich documents
/// no error bodies); an undocumented success status is an error. `POST
/// /assets` answering 200 (a duplicate) is checked against its 201 schema:
/// the 2.4.1 server answers 200 there, the spec only documents it later.
///
/// # Errors
///
/// What does not match, in one line per problem, or why nothing could be
/// checked (no spec file, no such operation).
pub fn validate_response(
    method: &str,
    path: &str,
    status: u16,
    body: &Value,
) -> Result<(), String> {
    let spec = spec()?;
    let template = strip_api(path);
    let operation = spec.operation(method, template)?;
    let responses = operation
        .get("responses")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{method} {template} documents no responses"))?;
    let response = match responses.get(&status.to_string()) {
        Some(response) => response,
        None if status == 200 && method.eq_ignore_ascii_case("POST") && template == "/assets" => {
            responses
                .get("201")
                .ok_or_else(|| "POST /assets documents no 201 response".to_owned())?
        }
        None if status >= 400 => return Ok(()),
        None => {
            let documented: Vec<&str> = responses.keys().map(String::as_str).collect();
            return Err(format!(
                "{method} {template}: status {status} is not documented (documented: {})",
                documented.join(", ")
            ));
        }
    };
    match response.pointer("/content/application~1json/schema") {
        Some(schema) => {
            let key = format!("response {method} {template} {status}");
            spec.check(&key, schema, true, body)
                .map_err(|e| format!("{method} {template} {status}: {e}"))
        }
        None if body.is_null() => Ok(()),
        None => Err(format!(
            "{method} {template} {status}: the spec documents no JSON body, but one was sent"
        )),
    }
}

/// Checks a JSON request body against the operation's request schema,
/// leniently (unknown properties are allowed, as Immich strips them).
///
/// # Errors
///
/// What does not match, or why nothing could be checked.
pub fn validate_request_body(method: &str, path: &str, body: &Value) -> Result<(), String> {
    let spec = spec()?;
    let template = strip_api(path);
    let schema = spec
        .operation(method, template)?
        .pointer("/requestBody/content/application~1json/schema")
        .ok_or_else(|| format!("{method} {template} takes no JSON body"))?;
    let key = format!("request {method} {template}");
    spec.check(&key, schema, false, body)
        .map_err(|e| format!("{method} {template} request: {e}"))
}

/// Checks a value against `#/components/schemas/<name>`; `strict` also
/// rejects properties the schema does not list.
///
/// # Errors
///
/// What does not match, or why nothing could be checked.
pub fn validate_component(name: &str, value: &Value, strict: bool) -> Result<(), String> {
    let spec = spec()?;
    if spec.defs(false).get(name).is_none() {
        return Err(format!("the spec has no schema {name}"));
    }
    let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
    spec.check(&format!("component {name}"), &schema, strict, value)
}

/// The messages Immich's class-validator would answer a JSON request body
/// with (`"albumName must be a string"`, `"each value in ids must be a
/// UUID"`, ...), derived from the request schema: required properties,
/// types, enums, `uuid` and `date-time` formats, minimum and maximum.
/// Empty when the body would pass.
///
/// # Errors
///
/// Why nothing could be checked (no spec file, no such operation).
pub fn request_messages(method: &str, path: &str, body: &Value) -> Result<Vec<String>, String> {
    let spec = spec()?;
    let template = strip_api(path);
    let Some(raw) = spec
        .operation(method, template)?
        .pointer("/requestBody/content/application~1json/schema")
    else {
        return Ok(Vec::new());
    };
    let schema = convert(raw, false);
    let mut out = Vec::new();
    spec.walk(&schema, body, "", &mut out);
    Ok(out)
}

/// Whether the spec has `method` on `path` (a template, e.g. `/albums/{id}`).
#[must_use]
pub fn has_operation(method: &str, path: &str) -> bool {
    spec().is_ok_and(|spec| spec.operation(method, strip_api(path)).is_ok())
}

fn strip_api(path: &str) -> &str {
    path.strip_prefix("/api")
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or(path)
}

struct Spec {
    paths: Value,
    defs_lenient: Value,
    defs_strict: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

static SPEC: OnceLock<Result<Spec, String>> = OnceLock::new();

fn spec() -> Result<&'static Spec, String> {
    SPEC.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Spec, String> {
    let path = spec_path();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the Immich spec {}: {e}", path.display()))?;
    let document: Value = serde_json::from_str(&text)
        .map_err(|e| format!("the Immich spec {} is not JSON: {e}", path.display()))?;
    let schemas = document.pointer("/components/schemas").ok_or_else(|| {
        format!(
            "the Immich spec {} has no components.schemas",
            path.display()
        )
    })?;
    let paths = document
        .get("paths")
        .cloned()
        .ok_or_else(|| format!("the Immich spec {} has no paths", path.display()))?;
    Ok(Spec {
        paths,
        defs_lenient: convert(schemas, false),
        defs_strict: convert(schemas, true),
        validators: Mutex::new(HashMap::new()),
    })
}

/// OpenAPI 3.0 schema → JSON Schema 2020-12 (see the module docs).
fn convert(schema: &Value, strict: bool) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut nullable = false;
            for (key, value) in map {
                match key.as_str() {
                    "nullable" => nullable = value.as_bool() == Some(true),
                    "example" => {}
                    "$ref" => {
                        let target = value.as_str().map_or_else(
                            || value.clone(),
                            |r| Value::from(r.replace("#/components/schemas/", "#/$defs/")),
                        );
                        out.insert(key.clone(), target);
                    }
                    "properties" => {
                        // A map of property names: the names are not keywords.
                        let properties = match value {
                            Value::Object(properties) => Value::Object(
                                properties
                                    .iter()
                                    .map(|(name, property)| {
                                        (name.clone(), convert(property, strict))
                                    })
                                    .collect(),
                            ),
                            other => other.clone(),
                        };
                        out.insert(key.clone(), properties);
                    }
                    _ => {
                        out.insert(key.clone(), convert(value, strict));
                    }
                }
            }
            if strict && out.contains_key("properties") && !out.contains_key("additionalProperties")
            {
                out.insert("additionalProperties".to_owned(), Value::Bool(false));
            }
            let converted = Value::Object(out);
            if nullable {
                json!({ "anyOf": [converted, { "type": "null" }] })
            } else {
                converted
            }
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| convert(item, strict)).collect())
        }
        other => other.clone(),
    }
}

impl Spec {
    fn operation(&self, method: &str, template: &str) -> Result<&Value, String> {
        self.paths
            .get(template)
            .and_then(|item| item.get(method.to_ascii_lowercase().as_str()))
            .ok_or_else(|| format!("{method} {template} is not an operation of the Immich API"))
    }

    fn defs(&self, strict: bool) -> &Value {
        if strict {
            &self.defs_strict
        } else {
            &self.defs_lenient
        }
    }

    fn validator(
        &self,
        key: &str,
        raw: &Value,
        strict: bool,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        let cache_key = format!("{}|{key}", if strict { "strict" } else { "lenient" });
        let mut cache = self
            .validators
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(validator) = cache.get(&cache_key) {
            return Ok(Arc::clone(validator));
        }
        let root = json!({
            "$defs": self.defs(strict).clone(),
            "allOf": [convert(raw, strict)],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("cannot compile the schema for {key}: {e}"))?;
        let validator = Arc::new(validator);
        cache.insert(cache_key, Arc::clone(&validator));
        Ok(validator)
    }

    fn check(&self, key: &str, raw: &Value, strict: bool, value: &Value) -> Result<(), String> {
        let validator = self.validator(key, raw, strict)?;
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|error| {
                let location = error.instance_path().to_string();
                let location = if location.is_empty() {
                    "/".to_owned()
                } else {
                    location
                };
                let message: String = error.to_string().chars().take(400).collect();
                format!("at {location}: {message}")
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Follows `$ref`, single-entry `allOf` wrappers and nullable `anyOf`s.
    fn resolve<'a>(&'a self, schema: &'a Value) -> (&'a Value, bool) {
        let mut schema = schema;
        let mut nullable = false;
        for _ in 0..32 {
            if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
                let name = reference.trim_start_matches("#/$defs/");
                match self.defs_lenient.get(name) {
                    Some(target) => {
                        schema = target;
                        continue;
                    }
                    None => break,
                }
            }
            if let Some([only]) = schema
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                schema = only;
                continue;
            }
            if let Some([inner, null]) = schema
                .get("anyOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                && null.get("type").and_then(Value::as_str) == Some("null")
            {
                nullable = true;
                schema = inner;
                continue;
            }
            break;
        }
        (schema, nullable)
    }

    /// class-validator style messages for `value` at `name`.
    fn walk(&self, schema: &Value, value: &Value, name: &str, out: &mut Vec<String>) {
        let (schema, _nullable) = self.resolve(schema);
        if value.is_null() {
            // Immich's `@Optional()` treats null like a missing value.
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                out.push(format!(
                    "{name} must be one of the following values: {}",
                    enum_list(allowed)
                ));
            }
            return;
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => self.walk_object(schema, value, name, out),
            Some("array") => self.walk_array(schema, value, name, out),
            Some("string") => {
                let Some(text) = value.as_str() else {
                    out.push(format!("{name} must be a string"));
                    return;
                };
                match schema.get("format").and_then(Value::as_str) {
                    Some("uuid") if !util::is_uuid_v4(text) => {
                        out.push(format!("{name} must be a UUID"))
                    }
                    Some("date-time") if util::parse_date(text).is_none() => {
                        out.push(format!("{name} must be a date string"));
                    }
                    _ => {}
                }
            }
            Some("boolean") if !value.is_boolean() => {
                out.push(format!("{name} must be a boolean value"));
            }
            Some("boolean") => {}
            Some(kind @ ("integer" | "number")) => {
                let Some(number) = value.as_f64() else {
                    out.push(format!(
                        "{name} must be a number conforming to the specified constraints"
                    ));
                    return;
                };
                if kind == "integer" && value.as_i64().is_none() && value.as_u64().is_none() {
                    out.push(format!("{name} must be an integer number"));
                }
                if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64)
                    && number < minimum
                {
                    out.push(format!("{name} must not be less than {minimum}"));
                }
                if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64)
                    && number > maximum
                {
                    out.push(format!("{name} must not be greater than {maximum}"));
                }
            }
            _ => {}
        }
    }

    fn walk_object(&self, schema: &Value, value: &Value, name: &str, out: &mut Vec<String>) {
        let Some(object) = value.as_object() else {
            let label = if name.is_empty() { "body" } else { name };
            out.push(format!(
                "nested property {label} must be either object or array"
            ));
            return;
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (property, property_schema) in properties {
            let child = if name.is_empty() {
                property.clone()
            } else {
                format!("{name}.{property}")
            };
            match object.get(property) {
                Some(child_value) => self.walk(property_schema, child_value, &child, out),
                None if required.contains(&property.as_str()) => {
                    self.missing(property_schema, &child, out)
                }
                None => {}
            }
        }
    }

    fn walk_array(&self, schema: &Value, value: &Value, name: &str, out: &mut Vec<String>) {
        let Some(items) = value.as_array() else {
            out.push(format!("{name} must be an array"));
            return;
        };
        let Some(item_schema) = schema.get("items") else {
            return;
        };
        let (resolved, _) = self.resolve(item_schema);
        if resolved.get("type").and_then(Value::as_str) == Some("object") {
            for (index, item) in items.iter().enumerate() {
                self.walk(item_schema, item, &format!("{name}.{index}"), out);
            }
            return;
        }
        let mut inner = Vec::new();
        for item in items {
            self.walk(item_schema, item, "", &mut inner);
        }
        inner.sort();
        inner.dedup();
        for message in inner {
            out.push(format!("each value in {name} {}", message.trim_start()));
        }
    }

    fn missing(&self, schema: &Value, name: &str, out: &mut Vec<String>) {
        let (schema, _) = self.resolve(schema);
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            out.push(format!(
                "{name} must be one of the following values: {}",
                enum_list(allowed)
            ));
        } else {
            match schema.get("type").and_then(Value::as_str) {
                Some("string") => out.push(format!("{name} must be a string")),
                Some("array") => out.push(format!("{name} must be an array")),
                Some("boolean") => out.push(format!("{name} must be a boolean value")),
                Some("integer" | "number") => {
                    out.push(format!(
                        "{name} must be a number conforming to the specified constraints"
                    ));
                }
                _ => {}
            }
        }
        out.push(format!("{name} should not be empty"));
    }
}

fn enum_list(values: &[Value]) -> String {
    values
        .iter()
        .map(|value| {
            value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_becomes_any_of() {
        let converted = convert(
            &json!({"allOf": [{"$ref": "#/components/schemas/UserLicense"}], "nullable": true}),
            false,
        );
        assert_eq!(
            converted,
            json!({"anyOf": [{"allOf": [{"$ref": "#/$defs/UserLicense"}]}, {"type": "null"}]})
        );
    }

    #[test]
    fn strict_objects_reject_unknown_properties() {
        let converted = convert(
            &json!({"type": "object", "properties": {"nullable": {"type": "string", "nullable": true}}}),
            true,
        );
        assert_eq!(
            converted,
            json!({
                "type": "object",
                "properties": {"nullable": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                "additionalProperties": false,
            })
        );
    }

    #[test]
    fn api_prefix_is_optional() {
        assert_eq!(strip_api("/api/assets/{id}"), "/assets/{id}");
        assert_eq!(strip_api("/assets"), "/assets");
        assert_eq!(strip_api("/apiary"), "/apiary");
    }
}
