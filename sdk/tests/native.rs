//! A filter's own tests, as its author writes them: `cargo test` on the host, where
//! no proxy answers the filter's calls.

use weft_sdk::metrics::Counter;
use weft_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde")]
struct KeyCheck {
    #[serde(default)]
    exempt_paths: Vec<String>,
    #[serde(skip)]
    refused: Option<Counter>,
}

impl Filter for KeyCheck {
    fn init(&mut self) -> Result<(), String> {
        // As the metrics docs say to: define in init, keep the handle.
        let refused = Counter::define("refused_total", "Requests refused.", &["path"])
            .map_err(|e| format!("cannot define a metric: {e:?}"))?;
        refused
            .inc(&["/"])
            .map_err(|e| format!("cannot count: {e:?}"))?;
        weft_sdk::log::info("key check ready");
        weft_sdk::state::increment("inits", 1).map_err(|e| format!("{e:?}"))?;
        self.refused = Some(refused);
        Ok(())
    }

    fn on_request(&mut self, _: &Request, _: &Context) -> Action {
        Action::Continue
    }
}

weft_sdk::export!(KeyCheck);

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde")]
struct Tolerant {
    #[serde(default)]
    exempt_paths: Vec<String>,
}

impl Filter for Tolerant {
    const STRICT_CONFIG: bool = false;
    fn on_request(&mut self, _: &Request, _: &Context) -> Action {
        Action::Continue
    }
}

#[test]
fn init_may_use_the_hosts_services_in_a_native_test() {
    let f: KeyCheck = weft_sdk::from_config(r#"{"exempt_paths":["/health"]}"#).unwrap();
    assert_eq!(f.exempt_paths, ["/health"]);
    assert!(f.refused.is_some());
    let again: KeyCheck = weft_sdk::from_config("null").unwrap();
    assert!(again.exempt_paths.is_empty());
    assert!(matches!(weft_sdk::state::increment("inits", 0), Ok(2)));
    let t = weft_sdk::time::wall();
    assert!(t > std::time::UNIX_EPOCH);
}

#[test]
fn a_misspelled_key_is_an_error_unless_the_filter_tolerates_it() {
    let e = weft_sdk::from_config::<KeyCheck>(r#"{"exempt_pathz":["/health"]}"#)
        .err()
        .expect("refused");
    assert_eq!(e, "exempt_pathz: unknown key");
    let t: Tolerant = weft_sdk::from_config(r#"{"exempt_pathz":["/health"]}"#).unwrap();
    assert!(t.exempt_paths.is_empty());
}
