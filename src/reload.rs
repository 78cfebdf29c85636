//! The reload triggers: SIGHUP and a watch on the configuration file and
//! the files it names. Each calls [`Shared::reload`], the path that
//! `POST /reload` takes too: load, validate exactly as `wsgate check`
//! does, build the new snapshot and swap it in; an invalid file is refused
//! whole and the running configuration stays.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::Config;
use crate::server::Shared;

/// How long the watched files must stay quiet before a change is acted
/// on: editors and ConfigMap updates touch several files in a burst.
const SETTLE: Duration = Duration::from_millis(150);

/// The longest a change waits for the burst to settle: files that keep
/// changing must not postpone a reload for ever.
const SETTLE_MAX: Duration = Duration::from_millis(500);

/// The name Kubernetes gives the symlink it swaps to update a ConfigMap
/// volume; the files seen through it change without an event of their own.
const CONFIGMAP_LINK: &str = "..data";

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
        let _ = shared.reload().await;
    }
}

/// Watches the configuration file and the certificate files it names, and
/// reloads when their content changes. The watches are in place when this
/// returns; the task it starts acts on changes.
///
/// The folder is watched rather than the file: editors save by writing a
/// temporary file and renaming it over the original, and Kubernetes
/// ConfigMaps swap a `..data` symlink; both replace the file a watch would
/// be attached to. Only events naming those files (or the `..data` link)
/// count, so a log file written beside them changes nothing. A burst
/// settles for [`SETTLE`], but never longer than [`SETTLE_MAX`] after its
/// first event; then the content is compared with what was last loaded,
/// so touching a file or saving it unchanged does nothing.
pub fn watch_file(shared: Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
    let path = shared.config_path.clone()?;
    let folder = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let names = Arc::new(Mutex::new(watched_names(
        &path,
        &shared.current.load().config,
    )));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let filter = names.clone();
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let names = filter.lock().expect("not poisoned");
            let matters = event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.contains(n)));
            if matters {
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
            let give_up = Instant::now() + SETTLE_MAX;
            loop {
                let quiet_until = (Instant::now() + SETTLE).min(give_up);
                match tokio::time::timeout_at(quiet_until, rx.recv()).await {
                    Ok(Some(())) if Instant::now() < give_up => {}
                    Ok(None) => return,
                    _ => break,
                }
            }
            let now = fingerprint(&path, &shared.current.load().config);
            if now == last {
                continue;
            }
            last = now;
            info!(file = %path.display(), "configuration changed on disk: reloading");
            if shared.reload().await.is_ok() {
                let config = &shared.current.load().config;
                *names.lock().expect("not poisoned") = watched_names(&path, config);
                for dir in folders(&folder, config) {
                    if !watched.contains(&dir)
                        && watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok()
                    {
                        watched.push(dir);
                    }
                }
                last = fingerprint(&path, config);
            }
        }
    }))
}

/// The file names whose events matter: the configuration file, every file
/// it names, and the ConfigMap link.
fn watched_names(path: &Path, config: &Config) -> HashSet<OsString> {
    let mut names: HashSet<OsString> = std::iter::once(path.to_path_buf())
        .chain(cert_files(config))
        .filter_map(|p| p.file_name().map(OsString::from))
        .collect();
    names.insert(OsString::from(CONFIGMAP_LINK));
    names
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
    // JWKS and secret files of routes' `auth`: re-read like certificates.
    for route in &config.routes {
        if let Some(crate::config::Auth::Jwt(jwt)) = &route.auth {
            out.extend(jwt.file.clone());
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
