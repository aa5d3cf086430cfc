//! The handles of the resources the host lends a filter (`request`, `response`,
//! `context`), apart from everything else so the generated bindings can name them
//! without reaching into the host's implementation.

/// Marker for the `request` resource: the host lends one exchange at a time, kept in
/// [`HostState`](crate::HostState), so the handle needs no table entry.
pub struct RequestRef;
/// Marker for the `response` resource; see [`RequestRef`].
pub struct ResponseRef;
/// Marker for the `context` resource; see [`RequestRef`].
pub struct ContextRef;
