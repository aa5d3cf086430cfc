//! Weft end to end: real proxies, real backends, real filter components, on loopback.

mod config_errors;
mod fault;
mod grpc;
mod hardening;
mod limits;
mod protocols;
mod routing;
mod sandbox;
mod sdk;
