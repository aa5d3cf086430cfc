//! Weft's config server: the control plane that stores filters and mesh configs,
//! checks every change by loading it, and streams snapshots to the proxies.
//!
//! 1. [`start`] with [`Options`]: the data folder is created (0700) or loaded, an API
//!    token is created on first start, and one port serves both the HTTP JSON API
//!    (described by `GET /v1/openapi.yaml`) and the gRPC `Control` service.
//! 2. Push filters (`PUT /v1/filters/{name}`) and apply a mesh config
//!    (`PUT /v1/mesh`). Each change is checked the way a proxy would load it (every
//!    module compiled, every filter's `init` given its config) and stored only if it
//!    passes; each accepted change is a new numbered version.
//! 3. Proxies subscribe over gRPC: each gets the current snapshot for the group that
//!    selects it, with the modules it lacks, and every later version; their ACKs and
//!    NACKs show in `GET /v1/proxies`.
//! 4. [`RunningServer::shutdown`] ends the proxies' streams (they reconnect to the
//!    next server) and stops.
//!
//! ```no_run
//! # async fn run() -> Result<(), weft_config_server::ServerError> {
//! let server = weft_config_server::start(weft_config_server::Options::new(
//!     "127.0.0.1:7070".parse().unwrap(),
//!     "/var/lib/weft".into(),
//! ))
//! .await?;
//! if let Some(token) = server.created_token() {
//!     println!("API token (kept in {}): {token}", server.token_file().display());
//! }
//! println!("serving on {}", server.addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api;
mod auth;
mod changes;
mod error;
mod store;
mod stream;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weft_config::MeshConfig;
use weft_engine::Engine;

pub use error::ServerError;
use store::{State, Store, Version};

/// How long [`RunningServer::shutdown`] waits for connections to close before it
/// drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to run the config server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to serve HTTP and gRPC; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where filters, versions and the token are kept.
    pub data_dir: PathBuf,
    /// The API token; none: the token file's, created on first start.
    pub token: Option<String>,
    /// Largest filter module accepted, in bytes.
    pub max_filter_size: usize,
}

impl Options {
    /// Default largest filter module: 16 MiB.
    pub const DEFAULT_MAX_FILTER_SIZE: usize = 16 << 20;

    /// Options with the token from the data folder and the default size limit.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            token: None,
            max_filter_size: Self::DEFAULT_MAX_FILTER_SIZE,
        }
    }
}

/// A running config server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    token_file: PathBuf,
    created_token: Option<String>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Where it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token, only when this start created it, so it is shown once.
    pub fn created_token(&self) -> Option<&str> {
        self.created_token.as_deref()
    }

    /// The file the token is kept in.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// End every proxy stream, let requests in flight finish, and stop.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
            task.abort();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // A server dropped without shutdown() still stops, in the background.
        self.stop.send_replace(true);
    }
}

/// What readers see: the stored state and the live version, replaced as a whole on
/// every change so a reader never sees half of one.
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub state: State,
    pub current: Option<Arc<Current>>,
}

/// The live version with its mesh config parsed once.
#[derive(Debug)]
pub(crate) struct Current {
    pub version: Arc<Version>,
    pub mesh: MeshConfig,
}

impl Current {
    fn parse(version: Arc<Version>) -> Result<Self, String> {
        let mesh =
            MeshConfig::parse(&version.mesh, &version.mesh_file).map_err(|e| e.to_string())?;
        Ok(Self { version, mesh })
    }
}

/// What every handler and stream shares.
pub(crate) struct Shared {
    pub store: Store,
    pub engine: Engine,
    pub token: String,
    pub max_filter_size: usize,
    /// Readers borrow; writers replace under `write`. Streams wait on it for new
    /// versions.
    pub published: watch::Sender<Arc<Published>>,
    /// Changes are checked and stored one at a time.
    pub write: tokio::sync::Mutex<()>,
    pub proxies: stream::Registry,
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Published> {
        self.published.borrow().clone()
    }
}

/// Load the data folder, bind, and serve until [`RunningServer::shutdown`].
pub async fn start(opts: Options) -> Result<RunningServer, ServerError> {
    let data_dir = opts.data_dir.clone();
    let token_file = data_dir.join("token");
    let loaded = {
        let token_file = token_file.clone();
        let given = opts.token.clone();
        tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
            let store = Store::open(&data_dir)?;
            let (token, created) = auth::load_token(given, &data_dir, &token_file)?;
            let state = store.load()?;
            let current = match state.current() {
                Some(v) => Some(Arc::new(Current::parse(v.clone()).map_err(|message| {
                    ServerError::CorruptState {
                        path: store.state_file(),
                        message: format!("version {}: {message}", v.version),
                    }
                })?)),
                None => None,
            };
            let engine = Engine::new()?;
            Ok((store, token, created, state, current, engine))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??
    };
    let (store, token, created, state, current, engine) = loaded;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: opts.listen,
        source,
    })?;
    let (stop, stop_rx) = watch::channel(false);
    let versions = state.versions.len();
    let shared = Arc::new(Shared {
        store,
        engine,
        token: token.clone(),
        max_filter_size: opts.max_filter_size,
        published: watch::Sender::new(Arc::new(Published { state, current })),
        write: tokio::sync::Mutex::new(()),
        proxies: stream::Registry::default(),
        stop: stop_rx.clone(),
    });
    let app = api::router(shared.clone())
        .merge(stream::router(shared))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed);
    let mut stopped = stop_rx;
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stopped.wait_for(|s| *s).await;
    });
    let task = tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::error!("config server stopped: {e}");
        }
    });
    tracing::info!(%addr, data_dir = %opts.data_dir.display(), versions, "config server started");
    Ok(RunningServer {
        addr,
        token_file,
        created_token: created.then_some(token),
        stop,
        task: Some(task),
    })
}
