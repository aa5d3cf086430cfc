//! Turning the JSON the proxy hands to `init` into the filter type.
//!
//! Keys the type does not know are refused unless the filter says otherwise
//! ([`crate::Filter::STRICT_CONFIG`]): a misspelled key is a setting the operator
//! believes is on, and a misspelled deny rule is a hole.

use serde::de::DeserializeOwned;

/// Deserialize a filter's configuration. The proxy sends `null` when the operator gave
/// none; a type whose fields all have defaults then gets them, as from `{}`. With
/// `strict`, a key the type ignores is an error naming it.
pub(crate) fn parse<F: DeserializeOwned>(config: &str, strict: bool) -> Result<F, String> {
    match from_json(config, strict) {
        Ok(filter) => Ok(filter),
        Err(_) if config.trim() == "null" => {
            // "missing field `x`" helps the operator more than "expected struct".
            from_json("{}", strict).map_err(|e| format!("no config given: {e}"))
        }
        Err(e) => Err(e),
    }
}

/// Like `serde_json::from_str`, but the error names the key that failed
/// (`routes[2].match.path`), which the operator can find in the YAML.
fn from_json<T: DeserializeOwned>(json: &str, strict: bool) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(key_path(&path));
    let ignoring = serde_ignored::Deserializer::new(&mut de, &mut note);
    let value = serde_path_to_error::deserialize(ignoring).map_err(|e| {
        let path = e.path().to_string();
        let message = without_position(e.inner());
        if path == "." || path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        }
    })?;
    de.end().map_err(|e| without_position(&e))?;
    if strict && let Some((first, rest)) = unknown.split_first() {
        let mut message = format!("{first}: unknown key");
        if !rest.is_empty() {
            message.push_str(&format!(" (so are {})", rest.join(", ")));
        }
        return Err(message);
    }
    Ok(value)
}

/// A path as serde_path_to_error writes it, and filters name keys in their errors:
/// `routes[0].rewrite.host`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
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
        assert!(!parse::<Defaults>("null", true).unwrap().on);
        assert_eq!(
            parse::<Needs>("null", true).unwrap_err(),
            "no config given: missing field `name`"
        );
    }

    #[test]
    fn errors_name_the_key_without_positions() {
        let e = parse::<Outer>(r#"{"items":[{"name":"a"},{"name":"b","x":1}]}"#, true).unwrap_err();
        assert!(e.starts_with("items[1]"), "{e}");
        assert!(e.ends_with("unknown field `x`, expected `name`"), "{e}");
        let e = parse::<Defaults>(r#"{"on":1}"#, true).unwrap_err();
        assert!(e.starts_with("on: invalid type"), "{e}");
        assert!(!e.contains("line"), "{e}");
    }

    #[derive(Debug, Deserialize)]
    struct Lenient {
        #[serde(default)]
        exempt_paths: Vec<String>,
        #[serde(default)]
        rules: Vec<Lenient2>,
    }

    #[derive(Debug, Deserialize)]
    struct Lenient2 {
        #[allow(dead_code)]
        deny: String,
    }

    #[test]
    fn unknown_keys_are_refused_unless_the_filter_allows_them() {
        let json = r#"{"exempt_pathz":["/health"],"rules":[{"deny":"/a","dney":"/b"}],"x":1}"#;
        let e = parse::<Lenient>(json, true).unwrap_err();
        assert_eq!(e, "exempt_pathz: unknown key (so are rules[0].dney, x)");
        let lenient = parse::<Lenient>(json, false).unwrap();
        assert!(lenient.exempt_paths.is_empty());
        assert_eq!(lenient.rules.len(), 1);
        // Keys the type knows are fine either way.
        assert!(parse::<Lenient>(r#"{"exempt_paths":["/h"]}"#, true).is_ok());
    }
}
