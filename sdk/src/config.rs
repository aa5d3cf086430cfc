//! Turning the JSON the proxy hands to `init` into the filter type.

use serde::de::DeserializeOwned;

/// Deserialize a filter's configuration. The proxy sends `null` when the operator gave
/// none; a type whose fields all have defaults then gets them, as from `{}`.
pub(crate) fn parse<F: DeserializeOwned>(config: &str) -> Result<F, String> {
    match from_json(config) {
        Ok(filter) => Ok(filter),
        Err(_) if config.trim() == "null" => {
            // "missing field `x`" helps the operator more than "expected struct".
            from_json("{}").map_err(|e| format!("no config given: {e}"))
        }
        Err(e) => Err(e),
    }
}

/// Like `serde_json::from_str`, but the error names the key that failed
/// (`routes[2].match.path`), which the operator can find in the YAML.
fn from_json<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = without_position(&e.into_inner());
        if path == "." || path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        }
    })?;
    de.end().map_err(|e| without_position(&e))?;
    Ok(value)
}

/// serde_json's message without " at line 1 column 57": the proxy wrote that JSON
/// from the operator's YAML, so positions in it point nowhere the operator can see.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    if e.line() == 0 {
        return message;
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Needs {
        #[allow(dead_code)]
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Defaults {
        #[serde(default)]
        on: bool,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[allow(dead_code)]
        items: Vec<Needs>,
    }

    #[test]
    fn null_falls_back_to_an_empty_map() {
        assert!(!parse::<Defaults>("null").unwrap().on);
        assert_eq!(
            parse::<Needs>("null").unwrap_err(),
            "no config given: missing field `name`"
        );
    }

    #[test]
    fn errors_name_the_key_without_positions() {
        let e = parse::<Outer>(r#"{"items":[{"name":"a"},{"name":"b","x":1}]}"#).unwrap_err();
        assert!(e.starts_with("items[1]"), "{e}");
        assert!(e.ends_with("unknown field `x`, expected `name`"), "{e}");
        let e = parse::<Defaults>(r#"{"on":1}"#).unwrap_err();
        assert!(e.starts_with("on: invalid type"), "{e}");
        assert!(!e.contains("line"), "{e}");
    }
}
