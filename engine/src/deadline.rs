//! Hook deadlines, counted in the CPU time a hook used rather than the wall time that
//! passed while it ran.
//!
//! A clock thread bumps wasmtime's epoch every [`EPOCH_TICK`], and a hook's store gets a
//! deadline a few ticks away: checking it costs guest code a load and a compare. The
//! ticks are wall time, so on a busy machine a hook the OS descheduled would be charged
//! for time it did not run. So when the deadline passes, the store's callback reads the
//! thread's CPU clock: a hook that has not used its budget gets more ticks and runs on.
//! The CPU clock is a system call (about a microsecond in a VM), more than a whole warm
//! hook call, so it is read when a deadline passes, and at a hook's start only when the
//! thread's last reading is older than [`SAMPLE_AGE`].
//!
//! A hook starved of CPU forever must still end: past [`WALL_FACTOR`] times its budget
//! in wall time, it is stopped whatever it used.
//!
//! The clock ticks only while a hook runs. Each thread that runs hooks raises a flag of
//! its own for the length of a call (a store to a cache line no other thread writes);
//! the clock thread looks at the flags when it wakes and, seeing none raised, sleeps
//! [`IDLE_TICK`] instead of [`EPOCH_TICK`]. An idle proxy (or one serving a hundred
//! requests a second, whose hooks take microseconds) then wakes the clock 20 times a
//! second instead of 200: each wake-up is a context switch, which in a VM costs more
//! CPU than a request's hooks. The price: a runaway hook that starts while the clock
//! sleeps is stopped up to [`IDLE_TICK`] later than its budget says.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};
use wasmtime::{Store, UpdateDeadline};

/// How often the deadline clock ticks. Hook deadlines are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How long the clock sleeps while no hook runs.
pub const IDLE_TICK: Duration = Duration::from_millis(50);

/// How old the thread's CPU reading may be when a hook starts. A hook is charged from
/// that reading, so it may be charged this much CPU time that went to something else.
const SAMPLE_AGE: Duration = Duration::from_millis(1);

/// How many times its budget a hook may take in wall time, however little CPU it got:
/// a hook on a machine so loaded that it gets a tenth of a core still finishes, one
/// that gets less is stopped.
pub(crate) const WALL_FACTOR: u32 = 10;

thread_local! {
    /// This thread's last CPU clock reading, and when it was taken.
    static SAMPLE: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
    /// Raised while this thread runs a hook; the clock thread reads it.
    static RUNNING: Arc<AtomicBool> = {
        let flag = Arc::new(AtomicBool::new(false));
        RUNNERS.lock().unwrap_or_else(PoisonError::into_inner).push(flag.clone());
        flag
    };
}

/// The flags of every thread that has run a hook.
static RUNNERS: Mutex<Vec<Arc<AtomicBool>>> = Mutex::new(Vec::new());

/// Raise or lower this thread's flag.
fn running(on: bool) {
    RUNNING.with(|flag| flag.store(on, Ordering::Relaxed));
}

/// Raises this thread's flag while it lives: for code that runs guest code outside a
/// hook (an instance's `init`), so the clock ticks for its deadline too.
pub(crate) struct Busy(());

impl Busy {
    pub(crate) fn new() -> Self {
        running(true);
        Self(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        running(false);
    }
}

/// Whether any thread runs a hook now; forgets the flags of threads that are gone.
fn any_running() -> bool {
    let mut runners = RUNNERS.lock().unwrap_or_else(PoisonError::into_inner);
    runners.retain(|flag| Arc::strong_count(flag) > 1);
    runners.iter().any(|flag| flag.load(Ordering::Relaxed))
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Ticks until a deadline `d` away, at least one.
pub(crate) fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(EPOCH_TICK.as_micros()))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The ticks to a hook's first deadline: one more than its budget, as the first tick
/// may come at once.
pub(crate) fn first_ticks(budget: Duration) -> u64 {
    ticks(budget).saturating_add(1)
}

/// The hook running in a store, if any: what the deadline callback weighs.
#[derive(Debug, Default)]
pub(crate) struct HookDeadline {
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    budget: Duration,
    started: Instant,
    /// The thread's CPU time at (or shortly before) the hook's start.
    cpu_at_start: Duration,
}

impl HookDeadline {
    /// A hook with `budget` of CPU time starts on this thread at `started`; its
    /// store's deadline is [`first_ticks`] of the budget away.
    pub(crate) fn start(&mut self, budget: Duration, started: Instant) {
        let cpu_at_start = SAMPLE.with(|sample| match sample.get() {
            Some((at, cpu)) if started.duration_since(at) <= SAMPLE_AGE => cpu,
            _ => {
                let cpu = thread_cpu();
                sample.set(Some((started, cpu)));
                cpu
            }
        });
        self.running = Some(Running {
            budget,
            started,
            cpu_at_start,
        });
        running(true);
    }

    /// The hook returned; a deadline passing now (while an instance starts) stops it.
    pub(crate) fn stop(&mut self) {
        self.running = None;
        running(false);
    }

    /// What to do when the store's epoch deadline passed.
    fn passed(&self) -> UpdateDeadline {
        let Some(run) = &self.running else {
            return UpdateDeadline::Interrupt;
        };
        let (now, cpu) = (Instant::now(), thread_cpu());
        SAMPLE.with(|sample| sample.set(Some((now, cpu))));
        let used = cpu.saturating_sub(run.cpu_at_start);
        let waited = now.duration_since(run.started);
        let wall_bound = run.budget.saturating_mul(WALL_FACTOR);
        if used >= run.budget || waited >= wall_bound {
            return UpdateDeadline::Interrupt;
        }
        // It cannot use more than its budget left before the next look, nor run past
        // the wall bound by more than a tick.
        let left = (run.budget - used).min(wall_bound - waited);
        UpdateDeadline::Continue(ticks(left))
    }
}

/// Make epoch deadlines in `store` weigh the CPU time of the hook `deadline` finds in
/// the store's data; with no hook running, a passed deadline traps.
pub(crate) fn install<T: 'static>(store: &mut Store<T>, deadline: fn(&T) -> &HookDeadline) {
    store.epoch_deadline_callback(move |cx| Ok(deadline(cx.data()).passed()));
}

/// The deadline clock: an OS thread, not a task, so a hook that hogs a runtime worker
/// can still be interrupted. It stops when the engine is dropped.
pub(crate) fn start_ticker(engine: wasmtime::EngineWeak) {
    let spawned = std::thread::Builder::new()
        .name("weft-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(if any_running() { EPOCH_TICK } else { IDLE_TICK });
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
    if let Err(e) = spawned {
        // Without the clock, deadlines never fire; say so loudly but keep serving.
        tracing::error!("cannot start the filter deadline clock: {e}");
    }
}

#[cfg(test)]
mod tests;
