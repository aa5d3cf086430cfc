//! A filter that fails on purpose, by path, so the tests can check the sandbox:
//! `/trap` traps, `/panic` panics, `/loop` never returns, `/grow` eats memory,
//! `/sleep` blocks on a timer, and `/escape` looks for the machine around it.

use weft_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Misbehave {
    #[serde(default)]
    reject: bool,
    #[serde(skip)]
    hoard: Vec<Vec<u8>>,
}

impl Filter for Misbehave {
    fn init(&mut self) -> Result<(), String> {
        if self.reject {
            return Err("rejected on purpose: reject is true".into());
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request, _: &Context) -> Action {
        match req.head().path() {
            "/trap" => trap(),
            "/panic" => panic!("filter exploded on purpose"),
            "/loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/grow" => loop {
                self.hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
            },
            "/sleep" => {
                // Blocks on a WASI clock: the host refuses to wait inside a hook.
                std::thread::sleep(std::time::Duration::from_secs(5));
                Action::Continue
            }
            "/escape" => {
                // What a filter can see of the machine: nothing.
                let env = std::env::vars().count();
                let fs = std::fs::read_dir("/").is_ok() || std::fs::read("/etc/hostname").is_ok();
                let net = std::net::TcpStream::connect("127.0.0.1:1").is_ok();
                println!("stdout works");
                eprintln!("stderr works");
                let _ = req.set_header("x-escape", &format!("env={env} fs={fs} net={net}"));
                Action::Continue
            }
            _ => {
                let _ = req.set_header("x-misbehave", "passed");
                Action::Continue
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    panic!("trap")
}

weft_sdk::export!(Misbehave);
