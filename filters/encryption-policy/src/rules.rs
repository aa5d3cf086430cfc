//! What the policy decides of one request, as a pure function of the caller's
//! proven identity, the method and the path: the part of the filter its unit tests
//! check natively, with no proxy.

use weft_sdk::serde::Deserialize;
use weft_sdk::spiffe;

/// Whether a caller must have proved an identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(crate = "weft_sdk::serde", rename_all = "lowercase")]
pub enum Mode {
    /// A caller without a proven identity goes on to the rules.
    #[default]
    Permissive,
    /// A caller without a proven identity is refused before any rule.
    Strict,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(crate = "weft_sdk::serde", rename_all = "lowercase")]
pub enum Effect {
    /// Let the request through (unless a deny rule matches too).
    Allow,
    /// Refuse it, whatever else matches.
    Deny,
}

/// A path condition: the path (without its query) is this one, or starts with
/// this prefix (written with a trailing `/*`, kept here with its `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPattern {
    /// `/orders`: this path only.
    Exact(String),
    /// `/orders/*`: every path under `/orders/`.
    Prefix(String),
}

impl PathPattern {
    /// Read a pattern from the configuration; the error says what is wrong.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err(format!("{pattern:?} does not start with `/`"));
        }
        if pattern.contains(['?', '#']) {
            return Err(format!(
                "{pattern:?} has a query or fragment; paths match without them"
            ));
        }
        let (body, prefix) = match pattern.strip_suffix('*') {
            Some(body) if body.ends_with('/') => (body, true),
            _ => (pattern, false),
        };
        if body.contains('*') {
            return Err(format!(
                "{pattern:?}: `*` is allowed only as a trailing `/*` (a prefix)"
            ));
        }
        Ok(if prefix {
            Self::Prefix(body.to_owned())
        } else {
            Self::Exact(body.to_owned())
        })
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// One authorization rule, checked. A condition left out holds for every request;
/// every condition given must hold for the rule to match.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Allow or deny.
    pub effect: Effect,
    /// SPIFFE patterns, one of which the caller's proven identity must match; none:
    /// any caller, with or without an identity.
    pub principals: Option<Vec<String>>,
    /// Paths, one of which the request's must be.
    pub paths: Option<Vec<PathPattern>>,
    /// Methods, one of which the request's must be (compared without case).
    pub methods: Option<Vec<String>>,
}

impl Rule {
    fn matches(&self, caller: Option<&str>, method: &str, path: &str) -> bool {
        let principal_ok = match (&self.principals, caller) {
            (None, _) => true,
            // A caller that proved nothing matches no pattern, not even `*`.
            (Some(_), None) => false,
            (Some(patterns), Some(id)) => patterns.iter().any(|p| spiffe::matches(p, id)),
        };
        principal_ok
            && self
                .paths
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p.matches(path)))
            && self
                .methods
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// Strict mode, and the caller proved no identity.
    MutualTlsRequired,
    /// This deny rule (its index in `rules`) matched.
    DeniedBy(usize),
    /// Allow rules exist and none matched.
    NoAllowMatched,
}

impl Denial {
    /// What the client reads in the 403's body.
    pub fn message(self) -> &'static str {
        match self {
            Self::MutualTlsRequired => "mutual TLS required",
            Self::DeniedBy(_) | Self::NoAllowMatched => "caller not allowed",
        }
    }

    /// The metric's `reason` label: one of two values, whatever the request.
    pub fn label(self) -> &'static str {
        match self {
            Self::MutualTlsRequired => "mutual_tls_required",
            Self::DeniedBy(_) | Self::NoAllowMatched => "caller_not_allowed",
        }
    }
}

/// The inbound half of the policy: mode and rules, checked.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Permissive or strict.
    pub mode: Mode,
    /// The rules, in the configuration's order.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Whether the request may go on, and if not, why. Strict mode first; then a
    /// matching deny rule refuses; then, once any allow rule exists, a request that
    /// matches none is refused.
    pub fn decide(&self, caller: Option<&str>, method: &str, path: &str) -> Result<(), Denial> {
        if self.mode == Mode::Strict && caller.is_none() {
            return Err(Denial::MutualTlsRequired);
        }
        let matching = |effect| {
            (self.rules.iter().enumerate())
                .filter(move |(_, r)| r.effect == effect)
                .find(|(_, r)| r.matches(caller, method, path))
        };
        if let Some((i, _)) = matching(Effect::Deny) {
            return Err(Denial::DeniedBy(i));
        }
        let any_allow = self.rules.iter().any(|r| r.effect == Effect::Allow);
        if any_allow && matching(Effect::Allow).is_none() {
            return Err(Denial::NoAllowMatched);
        }
        Ok(())
    }

    /// Whether the policy can refuse anything: without, the filter passes every
    /// request untouched and needs no fact of it.
    pub fn enforces(&self) -> bool {
        self.mode == Mode::Strict || !self.rules.is_empty()
    }
}
