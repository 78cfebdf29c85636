//! Programs from Debian that some tests drive (redis-server, promtool,
//! Chromium). `cargo test` alone must work on a fresh machine, so a missing
//! program is installed here with apt-get when the tests run as root, as
//! `.ci/run` does beforehand; otherwise the test fails naming the package.

use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Makes sure `program` is on PATH, installing Debian's `package` when it
/// is not and the tests run as root. Panics with the install command when
/// that is impossible.
pub fn require_program(program: &str, package: &str) {
    // Tests of one binary run on threads: one apt-get at a time.
    static APT: Mutex<()> = Mutex::new(());
    let _one_at_a_time = APT.lock().unwrap_or_else(|e| e.into_inner());
    if on_path(program) {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    assert!(
        root,
        "`{program}` is missing: install it with `apt-get install {package}` \
         (or run .ci/run as root, which does)"
    );
    eprintln!("installing Debian's {package} for `{program}`");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(apt(&["update", "-qq"]), "apt-get update failed");
    assert!(
        apt(&["install", "-y", "-qq", "--no-install-recommends", package]),
        "apt-get install {package} failed"
    );
    assert!(
        on_path(program),
        "`{program}` still missing after installing {package}"
    );
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
