//! Why a filter could not be loaded, in words that say which file or filter failed
//! and how.

/// Why a filter could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not WebAssembly at all.
    #[error("{source_name}: not a WebAssembly file (no \\0asm header)")]
    NotWasm {
        /// Where the bytes came from.
        source_name: String,
    },
    /// A core module, not a component.
    #[error(
        "{source_name}: is a core WebAssembly module, not a component; build it with \
         `cargo build --target wasm32-wasip2` or `cargo component build`"
    )]
    CoreModule {
        /// Where the bytes came from.
        source_name: String,
    },
    /// The sha256 differs from the expected one.
    #[error("{source_name}: sha256 is {actual}, expected {expected}")]
    Integrity {
        /// Where the bytes came from.
        source_name: String,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
    /// wasmtime could not compile it.
    #[error("{source_name}: invalid component: {message}")]
    Compile {
        /// Where the bytes came from.
        source_name: String,
        /// wasmtime's reason.
        message: String,
    },
    /// It is a component, but not of the `weft:filter/filter-world` world.
    #[error("{source_name}: not a Weft filter (world weft:filter/filter-world@0.2.0): {message}")]
    WrongWorld {
        /// Where the bytes came from.
        source_name: String,
        /// wasmtime's reason.
        message: String,
    },
    /// The filter failed while starting.
    #[error("filter {filter:?} failed to start: {message}")]
    Start {
        /// The filter's name.
        filter: String,
        /// What happened.
        message: String,
    },
    /// The filter's `init` refused its configuration.
    #[error("filter {filter:?} rejected its config: {message}")]
    ConfigRejected {
        /// The filter's name.
        filter: String,
        /// The filter's own message.
        message: String,
    },
    /// The engine itself could not be set up.
    #[error("engine: {0}")]
    Engine(String),
}
