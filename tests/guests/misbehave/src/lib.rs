//! A filter that fails on purpose, by path, so the tests can check the sandbox:
//! `/trap` traps, `/panic` panics, `/loop` never returns, `/grow` eats memory.

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

    fn on_request(&mut self, req: &Request) -> Action {
        match req.path().as_str() {
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
