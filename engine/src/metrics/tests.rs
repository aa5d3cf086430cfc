//! Filters' own metrics through the hub, as `/metrics` and the config-server report
//! read them: definition, encoding, bounds, expiry and lifetime.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::bindings::host_api::{MetricError, MetricKind};

fn encode(hub: &Arc<MetricsHub>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(hub.clone()));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

fn labels(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn define_count_and_encode() {
    let hub = Arc::new(MetricsHub::default());
    let m = hub.filter_metrics("stamp", "d1", &MetricsSpec::default());
    let counter = MetricKind::Counter;
    let id = m
        .define(counter, "hits_total", "Hits.", labels(&["path"]), None)
        .unwrap();
    assert_eq!(
        m.define(counter, "hits_total", "Hits.", labels(&["path"]), None)
            .unwrap(),
        id
    );
    assert!(matches!(
        m.define(MetricKind::Gauge, "hits_total", "Hits.", vec![], None),
        Err(MetricError::Conflict)
    ));
    assert!(matches!(
        m.define(MetricKind::Gauge, "Bad-Name", "", vec![], None),
        Err(MetricError::InvalidName)
    ));
    assert!(matches!(
        m.define(MetricKind::Gauge, "twice", "", labels(&["a", "a"]), None),
        Err(MetricError::InvalidName)
    ));
    m.add(id, labels(&["/a"]), 3).unwrap();
    m.add(id, labels(&["/a"]), 2).unwrap();
    assert!(matches!(
        m.add(id, vec![], 1),
        Err(MetricError::LabelMismatch)
    ));
    assert!(matches!(
        m.add(7, vec![], 1),
        Err(MetricError::UnknownMetric)
    ));
    let out = encode(&hub);
    assert!(
        out.contains(r#"weft_filter_hits_total{filter="stamp",path="/a"} 5"#),
        "{out}"
    );
    // A hostile label value cannot break the exposition.
    m.add(id, labels(&["a\"b\nc"]), 1).unwrap();
    assert!(encode(&hub).contains(r#"path="a\"b\nc"} 1"#));
}

#[test]
fn histograms_take_their_bounds_and_prefix() {
    let hub = Arc::new(MetricsHub::default());
    let spec = MetricsSpec {
        prefix: "istio_".into(),
        ..Default::default()
    };
    let m = hub.filter_metrics("telemetry", "d1", &spec);
    let bad = m.define(MetricKind::Histogram, "x", "", vec![], Some(vec![5.0, 1.0]));
    assert!(matches!(bad, Err(MetricError::InvalidName)));
    let h = m
        .define(
            MetricKind::Histogram,
            "request_duration_milliseconds",
            "Latency.",
            labels(&["code"]),
            Some(vec![1.0, 5.0, 10.0]),
        )
        .unwrap();
    for v in [0.5, 1.0, 3.0, 7.0, 50.0] {
        m.observe(h, labels(&["200"]), v).unwrap();
    }
    let out = encode(&hub);
    for line in [
        r#"istio_request_duration_milliseconds_bucket{le="1.0",filter="telemetry",code="200"} 2"#,
        r#"istio_request_duration_milliseconds_bucket{le="5.0",filter="telemetry",code="200"} 3"#,
        r#"istio_request_duration_milliseconds_bucket{le="10.0",filter="telemetry",code="200"} 4"#,
        r#"istio_request_duration_milliseconds_bucket{le="+Inf",filter="telemetry",code="200"} 5"#,
        r#"istio_request_duration_milliseconds_count{filter="telemetry",code="200"} 5"#,
        r#"istio_request_duration_milliseconds_sum{filter="telemetry",code="200"} 61.5"#,
    ] {
        assert!(out.contains(line), "{line} not in {out}");
    }
    let mut read = Vec::new();
    hub.read_defined(|s| {
        let SeriesValue::Histogram {
            bounds,
            buckets,
            sum,
        } = s.value
        else {
            panic!("not a histogram: {s:?}");
        };
        read.push((
            s.filter.to_owned(),
            s.name.to_owned(),
            s.label("code").map(str::to_owned),
            bounds.to_vec(),
            buckets.to_vec(),
            sum,
        ));
    });
    assert_eq!(
        read,
        [(
            "telemetry".to_owned(),
            "istio_request_duration_milliseconds".to_owned(),
            Some("200".to_owned()),
            vec![1.0, 5.0, 10.0],
            vec![2, 1, 1, 1],
            61.5
        )]
    );
}

#[test]
fn label_sets_are_bounded_and_idle_ones_expire() {
    let hub = Arc::new(MetricsHub::default());
    let spec = MetricsSpec {
        max_series: 3,
        expire_after: Duration::from_millis(200),
        ..Default::default()
    };
    let m = hub.filter_metrics("t", "d1", &spec);
    let id = m
        .define(
            MetricKind::Counter,
            "req_total",
            "",
            labels(&["host"]),
            None,
        )
        .unwrap();
    for i in 0..10 {
        m.add(id, vec![format!("h{i}")], 1).unwrap();
    }
    // A series that exists still counts at the limit.
    m.add(id, labels(&["h0"]), 1).unwrap();
    let out = encode(&hub);
    assert_eq!(out.matches("weft_filter_req_total{").count(), 4, "{out}");
    assert!(
        out.contains(r#"weft_filter_req_total{filter="t",host="overflow"} 7"#),
        "{out}"
    );
    assert!(
        out.contains(r#"weft_engine_filter_metric_dropped_total{filter="t",metric="req_total"} 7"#),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(250));
    // Idle ones make room for a new one, then leave at the next scrape.
    m.add(id, labels(&["h0"]), 1).unwrap();
    m.add(id, labels(&["new"]), 1).unwrap();
    let out = encode(&hub);
    assert!(
        out.contains(r#"weft_filter_req_total{filter="t",host="h0"} 3"#),
        "{out}"
    );
    assert!(out.contains(r#"host="new"} 1"#), "{out}");
    assert!(!out.contains(r#"host="h1""#), "{out}");
    std::thread::sleep(Duration::from_millis(250));
    assert!(!encode(&hub).contains("weft_filter_req_total{"));
}

#[test]
fn a_full_metric_counts_new_label_sets_in_its_overflow_series() {
    let hub = Arc::new(MetricsHub::default());
    let spec = MetricsSpec {
        max_series: 2,
        ..Default::default()
    };
    let m = hub.filter_metrics("t", "d1", &spec);
    let c = m
        .define(
            MetricKind::Counter,
            "n_total",
            "",
            labels(&["host", "code"]),
            None,
        )
        .unwrap();
    let h = m
        .define(
            MetricKind::Histogram,
            "s",
            "",
            labels(&["host"]),
            Some(vec![1.0]),
        )
        .unwrap();
    m.add(c, labels(&["a", "200"]), 1).unwrap();
    m.add(c, labels(&["b", "200"]), 1).unwrap();
    // Past the limit, by labels or by handle, every new label set is one series.
    m.add(c, labels(&["c", "503"]), 2).unwrap();
    let d = m.series(c, labels(&["d", "503"])).unwrap();
    let e = m.series(c, labels(&["e", "503"])).unwrap();
    assert_eq!(d, e, "one overflow series");
    m.series_add(d, 1).unwrap();
    m.series_add(e, 1).unwrap();
    m.add(c, labels(&["a", "200"]), 1).unwrap();
    for host in ["a", "b", "c", "d"] {
        m.observe(h, labels(&[host]), 0.5).unwrap();
    }
    let out = encode(&hub);
    for line in [
        r#"weft_filter_n_total{filter="t",host="a",code="200"} 2"#,
        r#"weft_filter_n_total{filter="t",host="b",code="200"} 1"#,
        r#"weft_filter_n_total{filter="t",host="overflow",code="overflow"} 4"#,
        r#"weft_filter_s_count{filter="t",host="overflow"} 2"#,
        r#"weft_engine_filter_metric_dropped_total{filter="t",metric="n_total"} 3"#,
        r#"weft_engine_filter_metric_dropped_total{filter="t",metric="s"} 2"#,
    ] {
        assert!(out.contains(line), "{line} not in {out}");
    }
    assert_eq!(out.matches("weft_filter_n_total{").count(), 3, "{out}");
    let mut total = 0;
    hub.read_defined(|s| {
        if let SeriesValue::Counter(n) = s.value {
            total += n;
        }
    });
    assert_eq!(total, 7, "every update counted");
}

#[test]
fn series_handles_update_without_labels_until_the_series_expires() {
    let hub = Arc::new(MetricsHub::default());
    let spec = MetricsSpec {
        expire_after: Duration::from_millis(200),
        ..Default::default()
    };
    let m = hub.filter_metrics("t", "d1", &spec);
    let c = m
        .define(MetricKind::Counter, "n_total", "", labels(&["k"]), None)
        .unwrap();
    let h = m
        .define(
            MetricKind::Histogram,
            "ms",
            "",
            labels(&["k"]),
            Some(vec![1.0]),
        )
        .unwrap();
    let a = m.series(c, labels(&["a"])).unwrap();
    assert_eq!(
        m.series(c, labels(&["a"])).unwrap(),
        a,
        "one handle per series"
    );
    let b = m.series(h, labels(&["a"])).unwrap();
    assert_ne!(a, b);
    m.series_add(a, 2).unwrap();
    m.add(c, labels(&["a"]), 1).unwrap();
    m.series_observe(b, 0.5).unwrap();
    assert!(matches!(
        m.series_observe(a, 1.0),
        Err(MetricError::Conflict)
    ));
    assert!(matches!(
        m.series_add(0, 1),
        Err(MetricError::UnknownMetric)
    ));
    assert!(matches!(
        m.series_add(a + 7, 1),
        Err(MetricError::UnknownMetric)
    ));
    let out = encode(&hub);
    assert!(
        out.contains(r#"weft_filter_n_total{filter="t",k="a"} 3"#),
        "{out}"
    );
    assert!(
        out.contains(r#"weft_filter_ms_bucket{le="1.0",filter="t",k="a"} 1"#),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(250));
    encode(&hub);
    // Expired: the handle fails; resolving again gives a new series and handle.
    assert!(matches!(
        m.series_add(a, 1),
        Err(MetricError::UnknownMetric)
    ));
    let again = m.series(c, labels(&["a"])).unwrap();
    assert_ne!(again, a);
    m.series_add(again, 1).unwrap();
    assert!(encode(&hub).contains(r#"weft_filter_n_total{filter="t",k="a"} 1"#));
}

#[test]
fn metrics_live_as_long_as_their_filter() {
    let hub = Arc::new(MetricsHub::default());
    let spec = MetricsSpec::default();
    let a = hub.filter_metrics("f", "d1", &spec);
    let id = a
        .define(MetricKind::Counter, "n_total", "", vec![], None)
        .unwrap();
    a.add(id, vec![], 2).unwrap();
    // The same module loaded again (a reload) counts on.
    let again = hub.filter_metrics("f", "d1", &spec);
    assert!(Arc::ptr_eq(&a, &again));
    // Another filter may share the name only the same way.
    let other = hub.filter_metrics("g", "d2", &spec);
    assert!(matches!(
        other.define(MetricKind::Gauge, "n_total", "", vec![], None),
        Err(MetricError::Conflict)
    ));
    let id2 = other
        .define(MetricKind::Counter, "n_total", "", vec![], None)
        .unwrap();
    other.add(id2, vec![], 1).unwrap();
    let out = encode(&hub);
    assert!(
        out.contains(r#"weft_filter_n_total{filter="f"} 2"#),
        "{out}"
    );
    assert!(
        out.contains(r#"weft_filter_n_total{filter="g"} 1"#),
        "{out}"
    );
    assert_eq!(
        out.matches("# TYPE weft_filter_n counter").count(),
        1,
        "{out}"
    );
    drop((a, again));
    let out = encode(&hub);
    assert!(!out.contains(r#"filter="f""#), "{out}");
    assert!(
        out.contains(r#"weft_filter_n_total{filter="g"} 1"#),
        "{out}"
    );
}
