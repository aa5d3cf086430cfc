//! What every Weft test harness shares, so that all of them wait alike and leave
//! nothing behind:
//!
//! - one time limit, [`LIMIT`], for anything a test waits for: a process, a port, a
//!   line of output, an answer, a condition;
//! - one bounded wait loop: [`eventually`] (blocking) and [`eventually_async`], and
//!   [`within`] for a single future;
//! - one way to run a child process: [`Process`], killed (by its PID) when dropped,
//!   its output read as it comes into a [`Log`]; [`output`] for a command that ends;
//! - one way to pick ports: bind [`ANY_PORT`] (127.0.0.1, port 0) and let the OS
//!   choose, with [`listener`] and [`refused`];
//! - temporary folders removed when dropped, [`TempDir`].
//!
//! ```no_run
//! use weft_testkit::*;
//! let dir = TempDir::new();
//! let mut server = Process::start(std::process::Command::new("server").arg(&dir.0));
//! let log = server.stderr();
//! let line = log.wait_for("listening on");
//! eventually("the server's pid file", || dir.0.join("pid").exists());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// The longest any test waits for anything: a process to start or end, a port to
/// answer, a line of output, a condition to hold. Generous, so a loaded machine does
/// not fail a test; a test that passes never waits this long.
pub const LIMIT: Duration = Duration::from_secs(60);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------
// Waits.

/// What one look of a wait finds: done, with a value, or not yet, with what it saw
/// (shown if the wait runs out).
pub trait Outcome {
    /// What the wait returns once done.
    type Value;
    /// `Ok` when done; `Err` with what was seen when not yet.
    fn settled(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn settled(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

fn gave_up(what: &str, limit: Duration, seen: &str) -> String {
    if seen.is_empty() {
        format!("{what}: not within {limit:?}")
    } else {
        format!("{what}: not within {limit:?}; last seen:\n{seen}")
    }
}

/// Look with `check` every 20 ms until it finds what it waits for (`true`, `Some`,
/// `Ok`), and return that; panic with `what` and the last thing it saw (`Err`) once
/// [`LIMIT`] has passed. It looks at least once.
#[track_caller]
pub fn eventually<O: Outcome>(what: &str, check: impl FnMut() -> O) -> O::Value {
    eventually_within(LIMIT, what, check)
}

/// [`eventually`] with another limit, for a test whose point is how soon something
/// happens.
#[track_caller]
pub fn eventually_within<O: Outcome>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> O,
) -> O::Value {
    let deadline = Instant::now() + limit;
    loop {
        match check().settled() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => panic!("{}", gave_up(what, limit, &seen)),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// [`eventually`] for a check that awaits, on tokio's clock; a look that has not
/// finished by the limit fails the wait too.
pub async fn eventually_async<O: Outcome>(
    what: &str,
    mut check: impl AsyncFnMut() -> O,
) -> O::Value {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let seen = match tokio::time::timeout_at(deadline, check()).await {
            Ok(found) => match found.settled() {
                Ok(value) => return value,
                Err(seen) => seen,
            },
            Err(_) => String::from("(a look was still running)"),
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("{}", gave_up(what, LIMIT, &seen));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The output of `f`, which must come within [`LIMIT`].
pub async fn within<F: IntoFuture>(f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(output) => output,
        Err(_) => panic!("no answer within {LIMIT:?}"),
    }
}

// ---------------------------------------------------------------------------------
// Ports.

/// Where tests listen: 127.0.0.1, on a port the OS picks when it is bound.
pub const ANY_PORT: &str = "127.0.0.1:0";

/// A listener on 127.0.0.1, on a port the OS picked. Bound and kept, it also holds
/// the port: nothing else of the test run can be given it.
pub fn listener() -> std::net::TcpListener {
    std::net::TcpListener::bind(ANY_PORT).expect("bind 127.0.0.1:0")
}

/// An address on 127.0.0.1 where connections are refused, for as long as this lives:
/// its port stays bound (without listening), so no other socket of the test run (a
/// proxy's own listener, say) can be given it, as could happen to a port bound and
/// let go.
pub struct Refused {
    /// Where connections are refused.
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

/// Reserve an address where connections are refused.
pub fn refused() -> Refused {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(ANY_PORT.parse().expect("address"))
        .expect("bind");
    Refused {
        addr: socket.local_addr().expect("address"),
        _socket: socket,
    }
}

/// Send raw bytes on a fresh connection and read what comes back until the peer
/// closes the connection or stays silent for a second (at most [`LIMIT`] in all).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = within(tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the peer closes `stream` (EOF or reset) within `within`, reading and
/// discarding anything it sends first.
pub async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

// ---------------------------------------------------------------------------------
// Processes.

/// A child process, killed (SIGKILL to its PID) and reaped when dropped, whatever the
/// test did: no test leaves a process behind.
pub struct Process {
    child: Child,
    name: String,
}

impl Process {
    /// Spawn `cmd`; panics when it cannot start.
    #[track_caller]
    pub fn start(cmd: &mut Command) -> Self {
        let name = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its standard output (which must be piped), read line by line from now on.
    pub fn stdout(&mut self) -> Log {
        Log::new(
            self.child
                .stdout
                .take()
                .expect("stdout piped, and taken once"),
        )
    }

    /// Its standard error (which must be piped), read line by line from now on.
    pub fn stderr(&mut self) -> Log {
        Log::new(
            self.child
                .stderr
                .take()
                .expect("stderr piped, and taken once"),
        )
    }

    /// Send it `sig` (`-TERM`, `-INT`, `-STOP`, `-CONT` ...) by its PID.
    #[track_caller]
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let status = output(Command::new("kill").args([sig, &pid])).status;
        assert!(status.success(), "kill {sig} {pid} ({})", self.name);
    }

    /// How it exited, which must be within [`LIMIT`].
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        let what = format!("{} (pid {}) exits", self.name, self.pid());
        eventually(&what, || self.child.try_wait().expect("wait for a child"))
    }

    /// Kill it now (SIGKILL) and reap it; nothing happens if it has already been
    /// reaped.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `cmd` to its end, which must come within [`LIMIT`] (else it is killed and the
/// test fails): its status, standard output and standard error. Its standard input
/// is empty.
#[track_caller]
pub fn output(cmd: &mut Command) -> Output {
    output_with_input(cmd, &[])
}

/// [`output`], with `input` on its standard input.
#[track_caller]
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let stdin = if input.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    let mut process = Process::start(
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    if let Some(mut pipe) = process.child.stdin.take() {
        let input = input.to_vec();
        std::thread::spawn(move || pipe.write_all(&input));
    }
    let stdout = read_to_end(process.child.stdout.take().expect("stdout"));
    let stderr = read_to_end(process.child.stderr.take().expect("stderr"));
    let status = process.wait_exit();
    // A process it started may still hold the pipes: bounded too.
    let read = |pipe: mpsc::Receiver<Vec<u8>>| {
        pipe.recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("the output of {} did not end", process.name))
    };
    let (stdout, stderr) = (read(stdout), read(stderr));
    Output {
        status,
        stdout,
        stderr,
    }
}

fn read_to_end(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// What a child writes to a pipe, line by line, kept from a thread as it comes: a
/// test waits for a line and looks back at every line before it. The pipe is always
/// read, so the child never blocks on it.
#[derive(Clone)]
pub struct Log(Arc<Mutex<Lines>>);

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    /// The pipe closed: the child exited.
    closed: bool,
}

impl Log {
    /// Read `pipe` until it closes.
    pub fn new(pipe: impl Read + Send + 'static) -> Self {
        let log = Self(Arc::default());
        let shared = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                shared.lock().lines.push(line);
            }
            shared.lock().closed = true;
        });
        log
    }

    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every line so far, once `done` holds for them; panics if that is not within
    /// [`LIMIT`], or if the pipe closes first.
    #[track_caller]
    pub fn wait_until(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        eventually(what, || {
            let lines = self.lock();
            if done(&lines.lines) {
                return Ok(lines.lines.clone());
            }
            let seen = lines.lines.join("\n");
            assert!(!lines.closed, "{what}: the output ended; saw:\n{seen}");
            Err(seen)
        })
    }

    /// The first line that contains `marker`, waiting for it.
    #[track_caller]
    pub fn wait_for(&self, marker: &str) -> String {
        self.wait_line(&format!("a line with {marker:?}"), |l| l.contains(marker))
    }

    /// The first line for which `wanted` holds, waiting for it.
    #[track_caller]
    pub fn wait_line(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let lines = self.wait_until(what, |lines| lines.iter().any(|l| wanted(l)));
        lines.into_iter().find(|l| wanted(l)).expect("found")
    }

    /// Every line so far, once `n` of them contain every one of `markers`.
    #[track_caller]
    pub fn wait_count(&self, markers: &[&str], n: usize) -> Vec<String> {
        self.wait_until(&format!("{n} lines with {markers:?}"), |lines| {
            count(lines, markers) >= n
        })
    }

    /// Every line, once the pipe has closed (the child exited).
    #[track_caller]
    pub fn all(&self) -> Vec<String> {
        eventually("the end of the output", || {
            let lines = self.lock();
            lines.closed.then(|| lines.lines.clone())
        })
    }

    /// Every line so far.
    pub fn so_far(&self) -> Vec<String> {
        self.lock().lines.clone()
    }
}

/// How many of `lines` contain every one of `markers`.
pub fn count(lines: &[String], markers: &[&str]) -> usize {
    lines
        .iter()
        .filter(|l| markers.iter().all(|m| l.contains(m)))
        .count()
}

// ---------------------------------------------------------------------------------
// Files.

/// A temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty folder.
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "weft-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A YAML-safe path for a file holding `contents`, in a fresh temporary folder that
/// lives as long as the returned guard.
pub fn temp_file(name: &str, contents: &[u8]) -> (TempDir, String) {
    let dir = TempDir::new();
    let path = dir.0.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    let p = path.display().to_string();
    (dir, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_returns_what_it_found_and_gives_up_at_its_limit_with_what_it_saw() {
        let mut looks = 0;
        let found = eventually("the third look", || {
            looks += 1;
            if looks == 3 { Ok(looks) } else { Err(looks) }
        });
        assert_eq!(found, 3);
        let gave_up = std::panic::catch_unwind(|| {
            eventually_within(Duration::from_millis(50), "never", || Err::<(), _>("seen"))
        })
        .unwrap_err();
        let said = gave_up.downcast_ref::<String>().unwrap();
        assert!(
            said.starts_with("never: not within 50ms") && said.ends_with("seen"),
            "{said}"
        );
    }

    #[test]
    fn a_process_is_killed_when_dropped_and_its_output_read_as_it_comes() {
        let mut sleeper = Process::start(
            Command::new("sh")
                .args(["-c", "echo started; exec sleep 600"])
                .stdout(Stdio::piped()),
        );
        let pid = sleeper.pid();
        assert_eq!(sleeper.stdout().wait_for("started"), "started");
        drop(sleeper);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_command_runs_to_its_end_with_its_input() {
        let out = output_with_input(&mut Command::new("cat"), b"through");
        assert!(out.status.success());
        assert_eq!(out.stdout, b"through");
    }

    #[test]
    fn a_refused_port_refuses_while_it_is_held() {
        let closed = refused();
        let err = std::net::TcpStream::connect(closed.addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
