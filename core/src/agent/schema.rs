//! A small JSON Schema validator for tool arguments: the subset the tools'
//! input schemas use (`type`, `properties`, `required`,
//! `additionalProperties: false`, `enum`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `items`, `minItems`/`maxItems`). Errors name the
//! argument by its path, e.g. `limit: 0 is below the minimum 1`.
use serde_json::Value;

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15),
        _ => true,
    }
}

fn what(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}...", &s[..s.char_indices().nth(37).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

/// Check `v` against `schema`; the error names the field (`path`).
pub fn validate(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    let name = if path.is_empty() { "arguments" } else { path };
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| type_ok(t, v)) {
            return Err(format!("{name}: expected {}, got {}", types.join(" or "), what(v)));
        }
    }
    if let Some(e) = schema.get("enum").and_then(|e| e.as_array()) {
        if !e.contains(v) {
            let allowed: Vec<String> = e.iter().map(|x| x.to_string()).collect();
            return Err(format!("{name}: {} is not allowed: one of {}", what(v), allowed.join(", ")));
        }
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(|m| m.as_f64()) {
            if x < min {
                return Err(format!("{name}: {} is below the minimum {min}", what(v)));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(|m| m.as_f64()) {
            if x > max {
                return Err(format!("{name}: {} is above the maximum {max}", what(v)));
            }
        }
    }
    if let Some(s) = v.as_str() {
        let n = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(|m| m.as_u64()) {
            if n < min {
                return Err(format!("{name}: shorter than {min} characters"));
            }
        }
        if let Some(max) = schema.get("maxLength").and_then(|m| m.as_u64()) {
            if n > max {
                return Err(format!("{name}: longer than {max} characters"));
            }
        }
    }
    if let Some(a) = v.as_array() {
        if let Some(min) = schema.get("minItems").and_then(|m| m.as_u64()) {
            if (a.len() as u64) < min {
                return Err(format!("{name}: {} items, at least {min} required", a.len()));
            }
        }
        if let Some(max) = schema.get("maxItems").and_then(|m| m.as_u64()) {
            if (a.len() as u64) > max {
                return Err(format!("{name}: {} items, at most {max} allowed", a.len()));
            }
        }
        if let Some(items) = schema.get("items") {
            for (i, x) in a.iter().enumerate() {
                validate(items, x, &format!("{name}[{i}]"))?;
            }
        }
    }
    if let Some(o) = v.as_object() {
        let props = schema.get("properties").and_then(|p| p.as_object());
        if let Some(req) = schema.get("required").and_then(|r| r.as_array()) {
            for r in req.iter().filter_map(|r| r.as_str()) {
                if !o.contains_key(r) {
                    let p = if path.is_empty() { r.to_string() } else { format!("{path}.{r}") };
                    return Err(format!("{p}: required"));
                }
            }
        }
        for (k, x) in o {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(s, x, &p)?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    let known: Vec<&str> = props.map(|p| p.keys().map(|k| k.as_str()).collect()).unwrap_or_default();
                    return Err(format!("{p}: unknown argument; known: {}", known.join(", ")));
                }
                None => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_field() {
        let s = json!({"type": "object", "additionalProperties": false, "required": ["gate"],
            "properties": {"gate": {"type": "string", "enum": ["score"]}, "limit": {"type": "integer", "minimum": 1, "maximum": 10},
                "vector": {"type": "array", "items": {"type": "integer", "minimum": -128}, "minItems": 2, "maxItems": 2}}});
        assert!(validate(&s, &json!({"gate": "score", "limit": 3}), "").is_ok());
        assert_eq!(validate(&s, &json!({}), ""), Err("gate: required".to_string()));
        assert!(validate(&s, &json!({"gate": "score", "limit": 0}), "").unwrap_err().starts_with("limit: 0 is below"));
        assert!(validate(&s, &json!({"gate": "score", "limit": "x"}), "")
            .unwrap_err()
            .starts_with("limit: expected integer"));
        assert!(validate(&s, &json!({"gate": "nov"}), "").unwrap_err().starts_with("gate: \"nov\" is not allowed"));
        assert!(validate(&s, &json!({"gate": "score", "x": 1}), "").unwrap_err().starts_with("x: unknown argument"));
        assert!(validate(&s, &json!({"gate": "score", "vector": [1, -200]}), "")
            .unwrap_err()
            .starts_with("vector[1]:"));
    }
}
