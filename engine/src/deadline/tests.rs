//! Deadlines on small core modules: a loop is stopped once it used its CPU budget, a
//! hook off the CPU is not charged for the time it waited, and one that waits forever
//! is still stopped.

use std::time::{Duration, Instant};

use wasmtime::{Caller, Config, Engine, Linker, Module, Store, Trap};

use super::*;

/// `(func (export "spin") (loop br 0))`
const SPIN: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: [] -> []
    0x03, 0x02, 0x01, 0x00, // one function
    0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
    0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop br 0
];

/// Imports `host.nap`; `naps` calls it three times, each followed by a call of an
/// empty function (whose entry checks the deadline); `forever` calls it in a loop.
const NAPS: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: [] -> []
    0x02, 0x0c, 0x01, 0x04, b'h', b'o', b's', b't', 0x03, b'n', b'a', b'p', 0x00, 0x00, 0x03, 0x04,
    0x03, 0x00, 0x00, 0x00, // three functions
    0x07, 0x12, 0x02, // two exports
    0x04, b'n', b'a', b'p', b's', 0x00, 0x02, // "naps"
    0x07, b'f', b'o', b'r', b'e', b'v', b'e', b'r', 0x00, 0x03, // "forever"
    0x0a, 0x1d, 0x03, // three bodies
    0x02, 0x00, 0x0b, // empty
    0x0e, 0x00, 0x10, 0x00, 0x10, 0x01, 0x10, 0x00, 0x10, 0x01, 0x10, 0x00, 0x10, 0x01,
    0x0b, // naps
    0x09, 0x00, 0x03, 0x40, 0x10, 0x00, 0x0c, 0x00, 0x0b, 0x0b, // forever
];

fn engine() -> Engine {
    let mut config = Config::new();
    config.epoch_interruption(true);
    Engine::new(&config).unwrap()
}

fn trapped(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
}

/// A store whose hook has `budget`, with `host.nap` sleeping `nap` off the CPU and
/// moving the epoch on by as much, as the clock thread would.
fn hook(
    engine: &Engine,
    bytes: &[u8],
    budget: Duration,
    nap: Duration,
) -> (Store<HookDeadline>, wasmtime::Instance) {
    let module = Module::new(engine, bytes).unwrap();
    let mut linker = Linker::new(engine);
    linker
        .func_wrap("host", "nap", move |caller: Caller<'_, HookDeadline>| {
            std::thread::sleep(nap);
            for _ in 0..ticks(nap) {
                caller.engine().increment_epoch();
            }
        })
        .unwrap();
    let mut store = Store::new(engine, HookDeadline::default());
    install(&mut store, |d| d);
    let instance = linker.instantiate(&mut store, &module).unwrap();
    store.data_mut().start(budget, Instant::now());
    store.set_epoch_deadline(first_ticks(budget));
    (store, instance)
}

#[test]
fn a_loop_is_stopped_once_it_used_its_cpu_budget() {
    let engine = engine();
    start_ticker(engine.weak());
    let budget = Duration::from_millis(20);
    let (mut store, instance) = hook(&engine, SPIN, budget, Duration::ZERO);
    let spin = instance
        .get_typed_func::<(), ()>(&mut store, "spin")
        .unwrap();
    let (cpu, wall) = (thread_cpu(), Instant::now());
    let e = spin.call(&mut store, ()).unwrap_err();
    assert!(trapped(&e), "{e:?}");
    let (used, waited) = (thread_cpu() - cpu, wall.elapsed());
    assert!(
        used >= budget || waited >= budget * WALL_FACTOR,
        "stopped after {used:?} of CPU in {waited:?}"
    );
}

#[test]
fn time_off_the_cpu_is_not_charged() {
    let engine = engine();
    let budget = Duration::from_millis(20);
    let nap = budget + EPOCH_TICK;
    // Counted in wall time, the naps run past the deadline.
    let (mut store, instance) = hook(&engine, NAPS, budget, nap);
    store.epoch_deadline_trap();
    let naps = instance
        .get_typed_func::<(), ()>(&mut store, "naps")
        .unwrap();
    let e = naps.call(&mut store, ()).unwrap_err();
    assert!(trapped(&e), "{e:?}");
    // Counted in CPU time, they are well within it.
    let (mut store, instance) = hook(&engine, NAPS, budget, nap);
    let naps = instance
        .get_typed_func::<(), ()>(&mut store, "naps")
        .unwrap();
    let wall = Instant::now();
    naps.call(&mut store, ()).unwrap();
    assert!(wall.elapsed() >= 3 * nap);
}

#[test]
fn a_hook_starved_forever_is_stopped_at_its_wall_bound() {
    let engine = engine();
    let budget = Duration::from_millis(10);
    let (mut store, instance) = hook(&engine, NAPS, budget, EPOCH_TICK);
    let forever = instance
        .get_typed_func::<(), ()>(&mut store, "forever")
        .unwrap();
    let wall = Instant::now();
    let e = forever.call(&mut store, ()).unwrap_err();
    assert!(trapped(&e), "{e:?}");
    assert!(
        wall.elapsed() >= budget * WALL_FACTOR,
        "{:?}",
        wall.elapsed()
    );
}

#[test]
fn with_no_hook_running_a_passed_deadline_stops_the_guest() {
    let engine = engine();
    start_ticker(engine.weak());
    let (mut store, instance) = hook(&engine, SPIN, Duration::from_secs(60), Duration::ZERO);
    store.data_mut().stop();
    store.set_epoch_deadline(2);
    let spin = instance
        .get_typed_func::<(), ()>(&mut store, "spin")
        .unwrap();
    let wall = Instant::now();
    let e = spin.call(&mut store, ()).unwrap_err();
    assert!(trapped(&e), "{e:?}");
    assert!(wall.elapsed() < Duration::from_secs(30));
}
