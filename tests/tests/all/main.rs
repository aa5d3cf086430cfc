//! Weft end to end: real proxies, real backends, real filter components, on loopback.

mod admin;
mod balance;
mod capture;
mod config_errors;
mod connect;
mod discovery;
mod encryption_policy;
mod examples;
mod fault;
mod frozen_contract;
mod grpc;
mod hardening;
mod hostile;
mod interop;
mod limits;
mod mesh_ca;
mod mtls;
mod protocols;
mod retry;
mod routing;
mod sandbox;
mod sdk;
mod state;
mod stories;
mod telemetry;
mod zero_trust;
