//! Reports checked, folded, summed and bounded, without a server around them.

use super::*;

const WEB: Sender<'static> = Sender {
    node: "web-1",
    service: "web",
};

/// A row with a histogram of `ms` over `bounds_ms`.
fn row(reporter: &str, service: &str, route: &str, bounds_ms: &[f64], ms: &[f64]) -> Traffic {
    let mut buckets = vec![0; bounds_ms.len() + 1];
    for v in ms {
        buckets[bounds_ms.partition_point(|b| b < v)] += 1;
    }
    Traffic {
        reporter: reporter.into(),
        service: service.into(),
        route: route.into(),
        requests: ms.len() as u64,
        errors: 1,
        bounds_ms: bounds_ms.to_vec(),
        buckets,
        sum_ms: ms.iter().sum(),
    }
}

fn istio() -> Vec<f64> {
    BOUNDS_US.iter().map(|us| *us as f64 / 1e3).collect()
}

fn report(rows: Vec<Traffic>) -> Report {
    Report { rows }
}

fn view(stats: &Stats, choice: Choice) -> serde_json::Value {
    let view = stats.view(Duration::from_secs(10), choice, Duration::from_secs(1));
    serde_json::to_value(&view).unwrap()
}

#[test]
fn quantiles_interpolate_like_prometheus() {
    let c = Counts::fold(&row("source", "s", "", &istio(), &[0.7, 2.0, 3.0, 4.0])).unwrap();
    // Ranks: p50 = 2 of 4 lands in (1, 5] holding 3: 1 + 4 * (1/3).
    let p50 = c.quantile(0.5).unwrap();
    assert!((p50 - (1.0 + 4.0 / 3.0)).abs() < 1e-9, "{p50}");
    assert_eq!(c.quantile(0.0), Some(0.5));
    // Past every bound: the highest bound.
    let c = Counts::fold(&row("source", "s", "", &istio(), &[4e6, 5e6])).unwrap();
    assert_eq!(c.quantile(0.99), Some(3.6e6));
    assert_eq!(Counts::default().quantile(0.5), None);
}

#[test]
fn reported_bounds_fold_into_the_servers_buckets() {
    // Istio's buckets in seconds, scaled to milliseconds as a proxy does, land on the
    // server's own bounds despite the float error of the scaling.
    let seconds: Vec<f64> = istio().iter().map(|ms| ms / 1000.0 * 1000.0).collect();
    let mut r = row("source", "s", "", &seconds, &[0.3, 0.4, 0.9, 70.0]);
    r.requests = 4;
    let c = Counts::fold(&r).unwrap();
    assert_eq!(c.buckets[..8], [2, 1, 0, 0, 0, 0, 1, 0]);
    // Other bounds: a count goes to the server bucket holding its upper bound; past
    // every bound the server has, past them all.
    let mut r = row("source", "s", "", &[2.0, 7.0, 1e9], &[1.0, 6.0, 8.0, 2e9]);
    r.requests = 4;
    let c = Counts::fold(&r).unwrap();
    assert_eq!((c.buckets[2], c.buckets[3]), (1, 1), "{c:?}");
    assert_eq!(c.buckets[BUCKETS - 1], 2, "{c:?}");
    // What passed a highest bound the server has goes to the server bucket above it.
    let mut r = row("source", "s", "", &[10.0, 100.0], &[120.0]);
    r.requests = 1;
    assert_eq!(Counts::fold(&r).unwrap().buckets[7], 1);
    // A histogram without bounds says nothing about latency.
    let r = row("source", "s", "", &[], &[120.0]);
    assert_eq!(Counts::fold(&r).unwrap().quantile(0.5), None);
    // However many bounds come, a slot keeps the same buckets.
    let many: Vec<f64> = (1..=64).map(|i| i as f64 * 3.7).collect();
    let r = row("source", "s", "", &many, &[1.0; 64]);
    assert_eq!(Counts::fold(&r).unwrap().buckets.len(), BUCKETS);
}

#[test]
fn reports_sum_per_service_and_prefer_the_destination_side() {
    let stats = Stats::new();
    let b = [1.0, 5.0, 10.0, 50.0];
    let caller = Sender {
        node: "caller-1",
        service: "shop",
    };
    let callee = |node| Sender {
        node,
        service: "bank",
    };
    stats.record(
        &caller,
        &report(vec![row("source", "bank", "api", &b, &[2.0, 3.0])]),
    );
    stats.record(
        &callee("callee-1"),
        &report(vec![
            row("destination", "bank", "api", &b, &[1.5, 2.5]),
            row("destination", "bank", "", &b, &[20.0]),
        ]),
    );
    stats.record(
        &callee("callee-2"),
        &report(vec![row("destination", "bank", "api", &b, &[4.0, 7.0])]),
    );
    stats.record(
        &caller,
        &report(vec![row("source", "other", "x", &b, &[1.0])]),
    );
    let json = view(&stats, Choice::Auto);
    let services = json["services"].as_array().unwrap();
    assert_eq!(services.len(), 2);
    let bank = &services[0];
    assert_eq!(bank["service"], "bank");
    assert_eq!(bank["reporter"], "destination");
    assert_eq!(bank["requests"], 5);
    assert_eq!(bank["errors"], 3);
    assert_eq!(bank["proxies"], 2);
    let routes = bank["routes"].as_array().unwrap();
    assert_eq!(routes[0]["route"], "");
    assert_eq!(routes[1]["route"], "api");
    assert_eq!(routes[1]["requests"], 4);
    assert_eq!(routes[1]["proxies"], 2);
    assert_eq!(services[1]["reporter"], "source");
    let source = view(&stats, Choice::Only(Reporter::Source));
    assert_eq!(source["services"][0]["requests"], 2);
    assert_eq!(source["services"][0]["proxies"], 1);
}

#[test]
fn rows_the_server_cannot_use_are_named() {
    let b = [1.0, 5.0, 10.0, 50.0];
    let why = |r: &Traffic| sample(&WEB, r).err().unwrap_or_default();
    let mut r = row("inbound", "bank", "", &b, &[1.0]);
    assert!(why(&r).contains("neither destination nor source"));
    r.reporter = "source".into();
    assert!(sample(&WEB, &r).is_ok());
    r.errors = 5;
    assert!(why(&r).contains("5 errors out of 1"), "{}", why(&r));
    r.errors = 0;
    r.bounds_ms = vec![5.0, 1.0, 2.0, 3.0];
    assert!(why(&r).contains("increasing"));
    r.bounds_ms = vec![1.0, 2.0, 3.0];
    assert!(why(&r).contains("one bucket more"));
    r.bounds_ms = b.to_vec();
    r.buckets = vec![0, 0, 0, 0, 2];
    assert!(why(&r).contains("counts 2 requests of 1"), "{}", why(&r));
    r.buckets = vec![u64::MAX, 0, 0, 0, 2];
    r.requests = u64::MAX;
    assert!(why(&r).contains("requests of"), "{}", why(&r));
    r = row("source", "a\x1b[2J", "", &b, &[1.0]);
    assert!(why(&r).contains("control characters"));
    r.service = String::new();
    assert_eq!(why(&r), "a source row names no service");
}

#[test]
fn a_proxy_speaks_for_its_own_service_only() {
    let stats = Stats::new();
    let b = [10.0];
    let outcome = stats.record(
        &WEB,
        &report(vec![
            row("destination", "payments", "pay", &b, &[1.0, 2.0]),
            row("destination", "", "home", &b, &[1.0]),
            row("destination", "web", "home", &b, &[1.0]),
            row("source", "", "home", &b, &[1.0]),
        ]),
    );
    assert_eq!(outcome.dropped, 1);
    let json = view(&stats, Choice::Auto);
    let services = json["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{json:#}");
    assert_eq!(services[0]["service"], "web");
    assert_eq!(services[0]["requests"], 4);
    assert_eq!(json["relabelled_rows"], 2);
    assert_eq!(json["dropped"]["invalid"], 1);
}

#[test]
fn sums_saturate() {
    let stats = Stats::new();
    let mut huge = row("destination", "web", "", &[10.0], &[1.0]);
    huge.requests = u64::MAX;
    huge.errors = u64::MAX - 1;
    huge.buckets = vec![u64::MAX, 0];
    for _ in 0..3 {
        stats.record(&WEB, &report(vec![huge.clone()]));
    }
    let json = view(&stats, Choice::Auto);
    let web = &json["services"][0];
    assert_eq!(web["requests"], u64::MAX);
    assert_eq!(web["errors"], u64::MAX);
    assert_eq!(web["success_rate"], 0.0);
    assert!(web["latency_ms"]["p99"].as_f64().unwrap() <= 10.0);
}

#[test]
fn a_full_table_drops_rows_and_counts_them() {
    let stats = Stats::new();
    let rows = |from: usize| {
        (from..from + MAX_REPORT_ROWS)
            .map(|i| row("destination", "web", &format!("r{i}"), &[], &[]))
            .map(|mut r| {
                r.requests = 1;
                r
            })
            .collect()
    };
    for n in 0..MAX_ROWS / MAX_REPORT_ROWS {
        let outcome = stats.record(&WEB, &report(rows(n * MAX_REPORT_ROWS)));
        assert_eq!(outcome.dropped, 0);
    }
    let outcome = stats.record(&WEB, &report(rows(MAX_ROWS)));
    assert_eq!(outcome.dropped, MAX_REPORT_ROWS as u64);
    assert!(outcome.why.unwrap().contains("1000 services and routes"));
    let json = view(&stats, Choice::Auto);
    assert_eq!(json["dropped"]["full"], MAX_REPORT_ROWS);
    assert_eq!(json["services"][0]["requests"], MAX_ROWS);
    // Too long a report is dropped whole.
    let long = report(vec![
        row("destination", "web", "x", &[], &[]);
        MAX_REPORT_ROWS + 1
    ]);
    assert_eq!(
        stats.record(&WEB, &long).dropped,
        MAX_REPORT_ROWS as u64 + 1
    );
    assert_eq!(
        view(&stats, Choice::Auto)["dropped_rows"],
        2 * MAX_REPORT_ROWS + 1
    );
}

/// What the kept traffic may take at most, as the module's documentation and the
/// README say.
const MEMORY_BOUND: usize = 32 << 20;

#[test]
fn kept_traffic_fits_its_memory_bound() {
    use std::mem::size_of;
    // A full row: every slot (a deque grows to a power of two), its table entry with
    // two names, and its own empty map of proxies.
    let slots = MAX_SLOTS.next_power_of_two() * size_of::<Slot>();
    let table = 2 * (size_of::<(Key, Arc<Entry>)>() + 1);
    let row = slots + size_of::<Entry>() + 2 * size_of::<usize>() + table + 2 * MAX_NAME;
    // A hash map holds up to 8/7 slots per entry, and doubles when it grows.
    let sighting = (size_of::<(u64, u64)>() + 1) * 16 / 7 + 1;
    let total = MAX_ROWS * row + MAX_SIGHTINGS * sighting;
    assert!(
        total <= MEMORY_BOUND,
        "{total} bytes, over the {MEMORY_BOUND} documented"
    );
}
