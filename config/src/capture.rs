//! A capture listener's settings (`listeners[].capture`): what `weft init`'s
//! redirected connections need to be routed by their original destination.

use std::collections::HashSet;

use crate::{CaptureConfig, CaptureDirection, Config, ConfigError, canonical};

impl Config {
    /// Listener `i`'s `capture`: declared services are outbound, each an `ip:port`
    /// once, of a cluster that exists.
    pub(crate) fn validate_capture(
        &self,
        i: usize,
        c: &CaptureConfig,
        clusters: &HashSet<&str>,
    ) -> Result<(), ConfigError> {
        if c.connect_timeout.0.is_zero() {
            return self.invalid(
                &c.direction.referenced,
                self.listener_key(i, ".capture.connect_timeout"),
                "must be above 0",
            );
        }
        let mut seen = HashSet::new();
        for (j, s) in c.services.iter().enumerate() {
            let key = |k: &str| self.listener_key(i, &format!(".capture.services[{j}]{k}"));
            if c.direction.value == CaptureDirection::Inbound {
                return self.invalid(
                    &s.referenced,
                    key(""),
                    "services route the workload's outbound calls; an inbound capture \
                     listener sends each connection to 127.0.0.1:<its original port>",
                );
            }
            let Ok(addr) = s.value.address.parse::<std::net::SocketAddr>() else {
                return self.invalid(
                    &s.referenced,
                    key(".address"),
                    format!("{:?} is not ip:port", s.value.address),
                );
            };
            if !seen.insert(canonical(addr)) {
                return self.invalid(
                    &s.referenced,
                    key(".address"),
                    format!("{} is declared twice", s.value.address),
                );
            }
            if !clusters.contains(s.value.cluster.as_str()) {
                return self.invalid(
                    &s.referenced,
                    key(".cluster"),
                    format!("no cluster named {:?}", s.value.cluster),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{CaptureDirection, Config, Passthrough};

    fn config(capture: &str) -> Result<Config, String> {
        let yaml = format!(
            "clusters:\n  - name: web\n    endpoints: [\"10.0.0.2:8080\"]\n\
             listeners:\n  - name: out\n    address: 0.0.0.0:15001\n    capture: {capture}\n"
        );
        Config::from_str(&yaml, "weft.yaml", None).map_err(|e| e.to_string())
    }

    #[test]
    fn a_capture_listener_reads_its_direction_passthrough_and_services() {
        let c = config(
            "{ direction: outbound, passthrough: refuse, \
             services: [{ address: \"10.96.0.10:80\", cluster: web }] }",
        )
        .unwrap();
        let capture = c.listeners[0].capture.as_ref().unwrap();
        assert_eq!(capture.direction.value, CaptureDirection::Outbound);
        assert_eq!(capture.passthrough, Some(Passthrough::Refuse));
        assert!(!capture.allows_passthrough());
        assert_eq!(capture.services[0].value.cluster, "web");
        assert_eq!(capture.connect_timeout.0, std::time::Duration::from_secs(2));
        // Unsaid, outbound lets the rest through and inbound does not.
        let out = config("{ direction: outbound }").unwrap();
        assert!(
            out.listeners[0]
                .capture
                .as_ref()
                .unwrap()
                .allows_passthrough()
        );
        let inbound = config("{ direction: inbound }").unwrap();
        assert!(
            !inbound.listeners[0]
                .capture
                .as_ref()
                .unwrap()
                .allows_passthrough()
        );
    }

    #[test]
    fn capture_errors_name_the_key_at_fault() {
        let e = config("{ direction: sideways }").unwrap_err();
        assert!(
            e.starts_with("weft.yaml:7:") && e.contains("sideways"),
            "{e}"
        );
        let e = config("{ direction: outbound, passthru: allow }").unwrap_err();
        assert!(e.contains("passthru"), "{e}");
        let e = config("{ direction: outbound, services: [{ address: web, cluster: web }] }")
            .unwrap_err();
        assert!(
            e.contains("listeners[0].capture.services[0].address: \"web\" is not ip:port"),
            "{e}"
        );
        let e = config(
            "{ direction: outbound, services: [{ address: \"10.96.0.1:80\", cluster: db }] }",
        )
        .unwrap_err();
        assert!(
            e.contains("listeners[0].capture.services[0].cluster: no cluster named \"db\""),
            "{e}"
        );
        let twice = "{ address: \"10.96.0.1:80\", cluster: web }";
        let e = config(&format!(
            "{{ direction: outbound, services: [{twice}, {twice}] }}"
        ))
        .unwrap_err();
        assert!(
            e.contains("services[1].address: 10.96.0.1:80 is declared twice"),
            "{e}"
        );
        let e = config(&format!("{{ direction: inbound, services: [{twice}] }}")).unwrap_err();
        assert!(e.contains("capture.services[0]: services route"), "{e}");
        let e = config("{ direction: outbound, connect_timeout: 0s }").unwrap_err();
        assert!(
            e.contains("capture.connect_timeout: must be above 0"),
            "{e}"
        );
    }

    #[test]
    fn a_port_no_cluster_names_gets_a_cluster_of_defaults() {
        let c =
            crate::ClusterConfig::of_endpoint("inbound:8080", "127.0.0.1:8080".parse().unwrap())
                .unwrap();
        assert_eq!(c.name.value, "inbound:8080");
        assert_eq!(c.endpoints[0].value.address(), "127.0.0.1:8080");
        assert!(c.tls.is_none());
    }
}
