//! What the `weft` binary's tests share: the binary, and a guard that ends it.

use std::process::{Child, Command};
use std::time::Duration;

/// The longest any wait of these tests may take.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Ends the child when the test ends, whatever happened.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `weft` binary, without the environment a developer's shell may set for it.
pub fn weft() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.env_remove("WEFT_TOKEN")
        .env_remove("WEFT_SERVER")
        .env_remove("WEFT_PROXY_TOKEN")
        .env_remove("WEFT_DRAIN_DELAY");
    cmd
}
