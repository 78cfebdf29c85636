//! Allocations made by the proxy, counted exactly: per ws and wss handshake
//! cycle, and held per idle connection, with the held bytes broken down by
//! allocation size (docs/benchmarks.md, "Allocations per handshake").
//!
//! The proxy runs in-process on its own one-worker runtime whose threads
//! are marked; a counting global allocator counts only marked threads, so
//! the client and the echo backend (on the main thread) do not appear. The
//! counts do not depend on CPU load, which makes them usable on a busy
//! machine where CPU time is not.
//!
//! `cargo bench --bench alloc -- [CYCLES] [IDLE] [SITES]` (default 1000,
//! 1000 and 0). With SITES > 0, SITES more cycles of each kind are run
//! with a backtrace taken at every allocation, then SITES idle connections
//! opened keeping a backtrace per allocation still held; both are listed
//! by call site (slow; build with line tables, e.g. the debug build, for
//! readable sites).

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Counting;

thread_local! {
    static PROXY_THREAD: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread records a backtrace, whose own allocations
    /// are not recorded.
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

/// What backtraces are taken: none, one at every allocation ([`TRACES`]),
/// or one per allocation still live ([`LIVE`]).
static SITES: AtomicU8 = AtomicU8::new(OFF);
const OFF: u8 = 0;
const EVERY: u8 = 1;
const HELD: u8 = 2;
static TRACES: Mutex<Vec<(usize, Backtrace)>> = Mutex::new(Vec::new());
static LIVE: Mutex<BTreeMap<usize, (usize, Backtrace)>> = Mutex::new(BTreeMap::new());

/// Records where the allocation at `ptr` of `size` bytes was made.
fn record(ptr: *mut u8, size: usize) {
    let mode = SITES.load(Relaxed);
    if mode == OFF || RECORDING.with(|r| r.replace(true)) {
        return;
    }
    let trace = Backtrace::force_capture();
    if mode == EVERY {
        TRACES.lock().unwrap().push((size, trace));
    } else {
        LIVE.lock().unwrap().insert(ptr as usize, (size, trace));
    }
    RECORDING.with(|r| r.set(false));
}

/// The allocation at `ptr` is freed: no longer held.
fn forget(ptr: *mut u8) {
    if SITES.load(Relaxed) != HELD || RECORDING.with(|r| r.replace(true)) {
        return;
    }
    let gone = LIVE.lock().unwrap().remove(&(ptr as usize));
    drop(gone);
    RECORDING.with(|r| r.set(false));
}

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
/// Live allocations by size (the last slot gathers everything larger).
const SIZES: usize = 70 * 1024;
static LIVE_BY_SIZE: [AtomicI64; SIZES] = [const { AtomicI64::new(0) }; SIZES];

fn counted() -> bool {
    PROXY_THREAD.try_with(Cell::get).unwrap_or(false)
}

fn note(size: usize, sign: i64) {
    LIVE_BYTES.fetch_add(sign * size as i64, Relaxed);
    LIVE_BY_SIZE[size.min(SIZES - 1)].fetch_add(sign, Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; the
// bookkeeping only touches atomics, except while call sites are recorded,
// when the recording's own allocations come back here and pass through
// uncounted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
            note(layout.size(), 1);
            let ptr = System.alloc(layout);
            record(ptr, layout.size());
            return ptr;
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            note(layout.size(), -1);
            forget(ptr);
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(new_size as u64, Relaxed);
            note(layout.size(), -1);
            note(new_size, 1);
            forget(ptr);
            let new = System.realloc(ptr, layout, new_size);
            record(new, new_size);
            return new;
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A snapshot of the counters.
#[derive(Clone, Copy)]
struct Counts {
    allocs: u64,
    bytes: u64,
    live: i64,
}

fn counts() -> Counts {
    Counts {
        allocs: ALLOCS.load(Relaxed),
        bytes: ALLOC_BYTES.load(Relaxed),
        live: LIVE_BYTES.load(Relaxed),
    }
}

fn live_by_size() -> Vec<i64> {
    LIVE_BY_SIZE.iter().map(|c| c.load(Relaxed)).collect()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Client {
    proxy: SocketAddr,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl Client {
    /// Connects and upgrades; returns the open WebSocket.
    async fn open(&self) -> Box<dyn Io> {
        let tcp = TcpStream::connect(self.proxy).await.expect("connects");
        tcp.set_nodelay(true).unwrap();
        let mut io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => {
                Box::new(connector.connect(name.clone(), tcp).await.expect("TLS"))
            }
        };
        io.write_all(
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert!(io.read(&mut byte).await.unwrap() == 1, "answer cut short");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "not upgraded");
        io
    }

    /// An idle connection that has echoed one 64 B message, as the idle
    /// scenario's connections have.
    async fn idle(&self) -> Box<dyn Io> {
        let mut io = self.open().await;
        io.write_all(&[0x82, 0x80 | 64, 1, 2, 3, 4]).await.unwrap();
        io.write_all(&[0u8; 64]).await.unwrap();
        let mut echo = [0u8; 66];
        io.read_exact(&mut echo).await.unwrap();
        io
    }

    /// One cycle: upgrade, close handshake, the proxy closing TCP.
    async fn cycle(&self) {
        let mut io = self.open().await;
        // A masked close frame with code 1000 (mask 0, so payload as is).
        io.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = io.read_to_end(&mut rest).await;
    }
}

fn config(dir: &Path, backend: SocketAddr) -> String {
    format!(
        "[defaults]\nidle_timeout = \"1h\"\n\n\
         [[listener]]\nname = \"ws\"\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"wss\"\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[route]]\npath_prefix = \"/\"\npool = \"echo\"\n\n\
         [[pool]]\nname = \"echo\"\nbackends = [{{ addr = \"{backend}\" }}]\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let cycles = args.first().copied().unwrap_or(1000);
    let idle = args.get(1).copied().unwrap_or(1000);
    let sites = args.get(2).copied().unwrap_or(0);

    let dir = std::env::temp_dir().join(format!("wsgate-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls));

    // Client and echo backend: this (uncounted) thread.
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = local.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(wsgate::echo::serve(l));
        addr
    });

    // The proxy: one worker, every thread of its runtime counted.
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(|| PROXY_THREAD.with(|c| c.set(true)))
        .build()
        .unwrap();
    let toml = config(&dir, backend);
    let (ws, wss) = proxy_rt.block_on(async {
        let config = wsgate::config::parse(&toml, &dir, "alloc.toml").expect("valid");
        let server = wsgate::server::Server::start(config, None)
            .await
            .expect("binds");
        let addrs = (
            server.local_addr("ws").unwrap(),
            server.local_addr("wss").unwrap(),
        );
        tokio::spawn(server.run(std::future::pending()));
        addrs
    });

    print_sizes();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    println!("wsgate allocations, proxy threads only; {cycles} cycles, {idle} idle connections");
    for (label, client) in [
        (
            "ws",
            Client {
                proxy: ws,
                tls: None,
            },
        ),
        (
            "wss",
            Client {
                proxy: wss,
                tls: Some((connector.clone(), name.clone())),
            },
        ),
    ] {
        local.block_on(async {
            // Warm-up: first-use allocations (label maps, pools) are not
            // per handshake.
            for _ in 0..50 {
                client.cycle().await;
            }
            settle().await;
            let before = counts();
            for _ in 0..cycles {
                client.cycle().await;
            }
            settle().await;
            let after = counts();
            let n = cycles as f64;
            println!(
                "{label} handshake cycle: {:.1} allocations, {:.0} bytes allocated, {:+.1} bytes still held",
                (after.allocs - before.allocs) as f64 / n,
                (after.bytes - before.bytes) as f64 / n,
                (after.live - before.live) as f64 / n,
            );

            let sizes_before = live_by_size();
            let before = counts();
            let mut open = Vec::with_capacity(idle);
            for _ in 0..idle {
                open.push(client.idle().await);
            }
            settle().await;
            let after = counts();
            let n = idle as f64;
            println!(
                "{label} idle connection: {:.0} bytes held in {:.1} allocations",
                (after.live - before.live) as f64 / n,
                {
                    let now = live_by_size();
                    now.iter().zip(&sizes_before).map(|(a, b)| a - b).sum::<i64>() as f64 / n
                }
            );
            let now = live_by_size();
            let mut rows: Vec<(usize, f64)> = now
                .iter()
                .zip(&sizes_before)
                .enumerate()
                .map(|(size, (a, b))| (size, (a - b) as f64 / n))
                .filter(|(_, per)| per.abs() >= 0.5)
                .collect();
            rows.sort_by(|a, b| (b.0 as f64 * b.1).total_cmp(&(a.0 as f64 * a.1)));
            println!("  size (B) | held per connection");
            for (size, per) in rows {
                let size = if size == SIZES - 1 {
                    format!("≥{size}")
                } else {
                    size.to_string()
                };
                println!("  {size:>8} | {per:.2}");
            }
            drop(open);
            settle().await;

            if sites > 0 {
                SITES.store(EVERY, Relaxed);
                for _ in 0..sites {
                    client.cycle().await;
                }
                settle().await;
                SITES.store(OFF, Relaxed);
                let traces = std::mem::take(&mut *TRACES.lock().unwrap());
                print_sites(&format!("{label} allocations per cycle"), &traces, sites);

                SITES.store(HELD, Relaxed);
                let mut open = Vec::with_capacity(sites);
                for _ in 0..sites {
                    open.push(client.idle().await);
                }
                settle().await;
                SITES.store(OFF, Relaxed);
                let held: Vec<_> = std::mem::take(&mut *LIVE.lock().unwrap())
                    .into_values()
                    .collect();
                let name = format!("{label} allocations held per idle connection");
                print_sites(&name, &held, sites);
                drop(open);
                settle().await;
            }
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lists recorded allocations, `per` cycles' or connections' worth, by
/// call site: the innermost frame outside the standard library and the
/// allocator, and the innermost frame in wsgate that led there.
fn print_sites(title: &str, traces: &[(usize, Backtrace)], per: usize) {
    let mut by_site: HashMap<(String, String), (usize, usize)> = HashMap::new();
    for (size, trace) in traces {
        let text = trace.to_string();
        // Each frame: its function, then (with line tables) where it is.
        let mut frames: Vec<(&str, &str)> = Vec::new();
        for line in text.lines() {
            let line = line.trim_start();
            if let Some(at) = line.strip_prefix("at ") {
                if let Some(last) = frames.last_mut() {
                    last.1 = at;
                }
            } else if let Some((n, f)) = line.split_once(": ") {
                if n.parse::<usize>().is_ok() {
                    frames.push((f, ""));
                }
            }
        }
        let std_frame = |f: &&(&str, &str)| {
            [
                "std::", "core::", "alloc::", "<alloc::", "<core::", "<std::", "__rust", "<&",
            ]
            .iter()
            .any(|p| f.0.starts_with(p))
        };
        let site = frames.iter().find(|f| !std_frame(f)).map_or("?", |f| f.0);
        let ours = frames
            .iter()
            .find(|f| f.0.contains("wsgate::"))
            .map_or("-".to_string(), |f| {
                let at = f.1.rsplit_once("/src/").map_or(f.1, |(_, at)| at);
                format!("{} ({at})", strip_hash(f.0))
            });
        let entry = by_site.entry((strip_hash(site), ours)).or_default();
        entry.0 += 1;
        entry.1 += size;
    }
    let mut rows: Vec<_> = by_site.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1 .0));
    let n = per as f64;
    let bytes: usize = traces.iter().map(|(size, _)| size).sum();
    println!(
        "{title}, by call site: {:.1} allocations, {:.0} bytes",
        traces.len() as f64 / n,
        bytes as f64 / n
    );
    for ((site, ours), (count, bytes)) in rows {
        println!(
            "  {:>5.2} x {:>6.0} B  {site}\n                      in {ours}",
            count as f64 / n,
            bytes as f64 / count as f64
        );
    }
}

/// A frame's function without its `::h0123...` hash.
fn strip_hash(frame: &str) -> String {
    match frame.rsplit_once("::h") {
        Some((f, hash)) if hash.len() == 16 => f.to_string(),
        _ => frame.to_string(),
    }
}

/// The size of what `f` would return, without calling it.
fn returned_size<A, R>(_: impl FnOnce(A) -> R) -> usize {
    std::mem::size_of::<R>()
}

/// Sizes of the values an idle connection keeps inline in its task.
fn print_sizes() {
    use tokio_rustls::server::TlsStream;
    use wsgate::relay::{self, Settings, Signals};
    type Args<C> = (
        C,
        TcpStream,
        Settings,
        Signals,
        Option<wsgate::metrics::Meter>,
    );
    let plain = returned_size(|(c, b, s, signals, m): Args<TcpStream>| {
        relay::run(
            c,
            bytes::Bytes::new(),
            b,
            bytes::Bytes::new(),
            s,
            signals,
            m,
        )
    });
    let tls = returned_size(|(c, b, s, signals, m): Args<TlsStream<TcpStream>>| {
        relay::run(
            c,
            bytes::Bytes::new(),
            b,
            bytes::Bytes::new(),
            s,
            signals,
            m,
        )
    });
    println!(
        "sizes (bytes): TcpStream {}, TlsStream<TcpStream> {}, relay::run future over TcpStream {}, over TlsStream {}",
        std::mem::size_of::<TcpStream>(),
        std::mem::size_of::<TlsStream<TcpStream>>(),
        plain,
        tls
    );
}

/// Lets the proxy finish what the last exchange started (closing sockets,
/// ending tasks) before the counters are read.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}
