//! Hot reload: the one path that a file change, SIGHUP and `POST /reload`
//! all take. Load, validate exactly as `wsgate check` does, build the new
//! snapshot and swap it in; an invalid file is refused whole and the
//! running configuration stays.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tracing::{error, info, warn};

use crate::config::{self, Config, ConfigError};
use crate::server::{BindError, Shared};

/// How long the file must stay quiet before a change is acted on: editors
/// and ConfigMap updates touch several files in a burst.
const SETTLE: Duration = Duration::from_millis(150);

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy runs the built-in demo configuration: there is no file.
    #[error("no configuration file to reload (the demo runs its built-in configuration)")]
    NoFile,
    /// The file could not be read or is invalid.
    #[error("{0}")]
    Invalid(ConfigError),
    /// A new or moved listener could not be bound.
    #[error("{0}")]
    Bind(BindError),
}

impl ReloadError {
    /// One line per problem, for the log and `POST /reload`.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ReloadError::Invalid(e) => e.messages(),
            other => vec![other.to_string()],
        }
    }
}

/// Loads the configuration file and makes it the running configuration.
/// Reloads run one at a time; each is counted and logged with its version
/// or its errors.
pub async fn reload(shared: &Arc<Shared>) -> Result<u64, ReloadError> {
    let _one_at_a_time = shared.reload_lock.lock().await;
    let result = apply_file(shared).await;
    match &result {
        Ok(version) => {
            if let Some(m) = &shared.metrics {
                m.reload(true);
            }
            info!(version, "configuration reloaded");
        }
        Err(e) => {
            if let Some(m) = &shared.metrics {
                m.reload(false);
            }
            error!(errors = ?e.messages(), "configuration reload refused; the running configuration stays");
        }
    }
    result
}

async fn apply_file(shared: &Arc<Shared>) -> Result<u64, ReloadError> {
    let path = shared.config_path.as_deref().ok_or(ReloadError::NoFile)?;
    let config = config::load(path).map_err(ReloadError::Invalid)?;
    // New names resolve before the swap; known ones keep their last set.
    let metrics = shared.metrics.as_deref();
    shared.discovery.resolve(&config, true, metrics).await;
    shared.apply(config).await.map_err(ReloadError::Bind)
}

/// SIGHUP, listened for from the moment it is installed.
pub struct Hangups(Option<tokio::signal::unix::Signal>);

impl Hangups {
    /// Installs the handler; a failure is logged and leaves reloads to the
    /// file watcher and `POST /reload`.
    pub fn install() -> Hangups {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(s) => Hangups(Some(s)),
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; reload by file or POST /reload");
                Hangups(None)
            }
        }
    }
}

/// Reloads on every SIGHUP until the process ends.
pub async fn on_sighup(hangups: Hangups, shared: Arc<Shared>) {
    let Some(mut hangups) = hangups.0 else {
        return;
    };
    while hangups.recv().await.is_some() {
        info!("SIGHUP: reloading");
        let _ = reload(&shared).await;
    }
}

/// Watches the configuration file and the certificate files it names, and
/// reloads when their content changes. The watches are in place when this
/// returns; the task it starts acts on changes.
///
/// The folder is watched rather than the file: editors save by writing a
/// temporary file and renaming it over the original, and Kubernetes
/// ConfigMaps swap a `..data` symlink; both replace the file a watch would
/// be attached to. A burst of events settles for [`SETTLE`], then the
/// content is compared with what was last loaded, so touching a file or
/// saving it unchanged does nothing.
pub fn watch_file(shared: Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
    let path = shared.config_path.clone()?;
    let folder = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch the configuration file; reload with SIGHUP or POST /reload");
            return None;
        }
    };
    let mut watched = Vec::new();
    let mut last = fingerprint(&path, &shared.current.load().config);
    for dir in folders(&folder, &shared.current.load().config) {
        if watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
            watched.push(dir);
        }
    }
    info!(file = %path.display(), "watching the configuration file for changes");
    Some(tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let the burst settle.
            while let Ok(Some(())) = tokio::time::timeout(SETTLE, rx.recv()).await {}
            let now = fingerprint(&path, &shared.current.load().config);
            if now == last {
                continue;
            }
            last = now;
            info!(file = %path.display(), "configuration changed on disk: reloading");
            if reload(&shared).await.is_ok() {
                for dir in folders(&folder, &shared.current.load().config) {
                    if !watched.contains(&dir)
                        && watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok()
                    {
                        watched.push(dir);
                    }
                }
                last = fingerprint(&path, &shared.current.load().config);
            }
        }
    }))
}

/// The folders holding the configuration file and its certificates.
fn folders(config_folder: &Path, config: &Config) -> Vec<PathBuf> {
    let mut out = vec![config_folder.to_path_buf()];
    for file in cert_files(config) {
        if let Some(dir) = file.parent() {
            let dir = dir.to_path_buf();
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out
}

fn cert_files(config: &Config) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        out.push(tls.default.cert.clone());
        out.push(tls.default.key.clone());
        for sni in &tls.sni {
            out.push(sni.pair.cert.clone());
            out.push(sni.pair.key.clone());
        }
        out.extend(tls.client_auth.iter().map(|a| a.ca.clone()));
    }
    for tls in config.pools.iter().filter_map(|p| p.tls.as_ref()) {
        out.extend(tls.ca.iter().cloned());
        if let Some(pair) = &tls.client_cert {
            out.push(pair.cert.clone());
            out.push(pair.key.clone());
        }
    }
    out
}

/// A hash of the configuration file's content and of every certificate
/// and key it names; unreadable files hash as absent.
fn fingerprint(path: &Path, config: &Config) -> u64 {
    let mut hasher = DefaultHasher::new();
    std::fs::read(path).ok().hash(&mut hasher);
    for file in cert_files(config) {
        std::fs::read(&file).ok().hash(&mut hasher);
    }
    hasher.finish()
}
