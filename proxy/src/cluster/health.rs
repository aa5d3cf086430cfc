//! Active health checks: every `interval`, each endpoint of a cluster gets a GET of
//! the check's path over its own pool; a 2xx within `timeout` passes. An endpoint that
//! fails `unhealthy_threshold` checks in a row stops getting traffic until it passes
//! `healthy_threshold` in a row.

use std::sync::{Arc, Weak};

use weft_config::HealthCheckConfig;

use super::upstream::Endpoint;
use super::{Attempt, Cluster};
use crate::body::ProxyBody;

/// Check a cluster's endpoints until the cluster is gone.
pub(super) async fn run(cluster: Weak<Cluster>, hc: HealthCheckConfig) {
    let mut tick = tokio::time::interval(hc.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else {
            return;
        };
        let set = c.set.load_full();
        let checks = set.endpoints.iter().map(|e| check(&c, e, &hc));
        futures_util::future::join_all(checks).await;
    }
}

async fn check(cluster: &Arc<Cluster>, endpoint: &Arc<Endpoint>, hc: &HealthCheckConfig) {
    let request = http::Request::get(hc.path.as_str())
        .header(http::header::HOST, endpoint.authority.as_str())
        .header(http::header::USER_AGENT, "weft-health-check")
        .body(())
        .map(|r| r.into_parts().0);
    let Ok(parts) = request else {
        return;
    };
    let mut attempt = Attempt::default();
    let send = cluster.send_to(endpoint, parts, ProxyBody::empty(), &mut attempt);
    let passed = match tokio::time::timeout(hc.timeout.0, send).await {
        Ok(Ok(resp)) => resp.status().is_success(),
        _ => false,
    };
    if endpoint
        .stats
        .checked(passed, hc.healthy_threshold, hc.unhealthy_threshold)
    {
        let now = if passed { "healthy" } else { "unhealthy" };
        tracing::warn!(
            cluster = cluster.name(),
            endpoint = %endpoint.authority,
            "endpoint is {now} by its health checks"
        );
    }
}
