//! Where log lines go: a bounded queue in front of a thread that writes
//! them to stderr in batches, so that no worker ever waits on a write.
//!
//! A worker formats its line and hands it to the queue; the writer thread
//! takes every line waiting, writes them through one buffer and flushes
//! when the queue is empty (one `write` for a burst instead of one per
//! line). When the queue is full the line is dropped and counted
//! ([`dropped_lines`], exported as `wsgate_log_lines_dropped_total`):
//! logging must never slow the relay. The guard returned with the writer
//! flushes what is queued when it is dropped, so the binary keeps it until
//! it exits.

use std::io::{BufWriter, Write};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines the queue holds before new ones are dropped: a burst of a few
/// thousand connections ending at once (a drain, a backend going away)
/// fits, and at a few hundred bytes a line it stays a few MiB at most.
pub const QUEUE_LINES: usize = 16_384;

/// Bytes gathered before the writer thread writes, when lines arrive
/// faster than it writes them.
const WRITE_BUFFER: usize = 64 * 1024;

static STDERR_DROPS: OnceLock<ErrorCounter> = OnceLock::new();

/// The process's log writer on stderr, and the guard that flushes it when
/// dropped. Its dropped lines are what [`dropped_lines`] reports.
pub fn stderr() -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = spawn(std::io::stderr(), QUEUE_LINES);
    // A second call (tests) keeps counting the first writer's drops.
    let _ = STDERR_DROPS.set(writer.error_counter());
    (writer, guard)
}

/// A lossy non-blocking writer in front of `out`, queueing at most `lines`
/// lines.
pub fn spawn<W: Write + Send + 'static>(out: W, lines: usize) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(lines)
        .thread_name("wsgate-log")
        .finish(BufWriter::with_capacity(WRITE_BUFFER, out))
}

/// Log lines dropped so far because the stderr writer fell behind; 0 when
/// the process logs elsewhere (the library in tests).
pub fn dropped_lines() -> u64 {
    STDERR_DROPS.get().map_or(0, |c| c.dropped_lines() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// Records what is written once `open` lets it through.
    struct Gate {
        open: mpsc::Receiver<()>,
        opened: bool,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.opened {
                // Bounded: the test opens the gate or drops its sender.
                let _ = self.open.recv_timeout(std::time::Duration::from_secs(30));
                self.opened = true;
            }
            self.seen.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Waits (bounded) until `seen` holds `lines` lines: the writer thread
    /// finishes on its own schedule, which a loaded machine may delay
    /// beyond the guard's wait.
    fn lines_seen(seen: &Mutex<Vec<u8>>, lines: usize) -> String {
        for _ in 0..3000 {
            let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
            if text.lines().count() >= lines {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the writer thread wrote fewer than {lines} lines in 30 s");
    }

    #[test]
    fn a_stuck_writer_drops_and_counts_lines_and_never_blocks_the_caller() {
        let (open, gate) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = Gate {
            open: gate,
            opened: false,
            seen: seen.clone(),
        };
        let (writer, guard) = spawn(out, 4);
        let drops = writer.error_counter();
        // A first line larger than the write buffer goes straight to the
        // stuck output, so the writer thread is stuck from the first line.
        let long = format!("line 0 {}\n", "x".repeat(WRITE_BUFFER));
        writer.make_writer().write_all(long.as_bytes()).unwrap();
        for i in 1..100 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        // Line 0 and at most the queue's 4 lines wait; the rest are gone.
        let dropped = drops.dropped_lines();
        assert!(dropped >= 95, "only {dropped} of 100 lines dropped");
        open.send(()).unwrap();
        drop(guard);
        drop(writer);
        let text = lines_seen(&seen, 100 - dropped);
        let kept: Vec<&str> = text.lines().collect();
        assert_eq!(kept.len() + dropped, 100);
        assert!(kept[0].starts_with("line 0 "));
        assert_eq!(drops.dropped_lines(), dropped);
    }

    #[test]
    fn every_queued_line_is_written_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = mpsc::channel();
        open.send(()).unwrap();
        let out = Gate {
            open: gate,
            opened: false,
            seen: seen.clone(),
        };
        let (writer, guard) = spawn(out, QUEUE_LINES);
        for i in 0..1000 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(writer.error_counter().dropped_lines(), 0);
        drop(guard);
        drop(writer);
        let text = lines_seen(&seen, 1000);
        let expected: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }
}
