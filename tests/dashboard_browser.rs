//! The dashboard in a real browser: headless Chromium driven over the
//! DevTools protocol (a WebSocket, spoken with the same client the other
//! tests use). The page must load with no console error and no request
//! beyond the admin listener, follow the traffic the test makes, and drain
//! a backend from its button. A screenshot is left in `target/tmp/`.
//!
//! Chromium comes from Debian: `.ci/run` installs it, and so does the test
//! when it is missing (the `tools` kit).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium with one page attached.
struct Browser {
    child: Child,
    _profile: TempDir,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Every event the page reported, in order.
    events: Vec<Value>,
}

impl Browser {
    /// Starts Chromium, installing Debian's package first when it is
    /// missing.
    async fn start() -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() {
            require_program("chromium", "chromium");
        }
        let profile = TempDir::new("chromium");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium writes its DevTools port and path here once it listens.
        let port_file = profile.0.join("DevToolsActivePort");
        let mut endpoint = None;
        for _ in 0..300 {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    endpoint = Some(format!("ws://127.0.0.1:{port}{path}"));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let endpoint = endpoint.expect("chromium opened its DevTools port within 30 s");
        let (ws, _) = within(tokio_tungstenite::connect_async(endpoint.as_str()))
            .await
            .expect("DevTools WebSocket");
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
        };
        let target = browser
            .send("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = browser
            .send(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page", "Runtime", "Log", "Network"] {
            browser.send(&format!("{domain}.enable"), json!({})).await;
        }
        browser
            .send(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        Some(browser)
    }

    /// Sends one command (to the page once attached) and returns its result.
    async fn send(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("DevTools send");
        loop {
            let frame = within(self.ws.next())
                .await
                .expect("DevTools open")
                .expect("DevTools frame");
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["id"] == id {
                assert!(value["error"].is_null(), "{method} failed: {value}");
                return value["result"].clone();
            }
            if value["method"].is_string() {
                self.events.push(value);
            }
        }
    }

    /// Evaluates `expression` in the page; returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .send(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits (bounded) until `expression` is true in the page.
    async fn wait_for(&mut self, what: &str, expression: &str) {
        for _ in 0..150 {
            if self.eval(expression).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shown = self.eval("document.body.innerText").await;
        panic!("the page never showed {what}; it shows:\n{shown}");
    }

    /// The text of the element with `id`.
    async fn text(&mut self, id: &str) -> String {
        let v = self
            .eval(&format!("document.getElementById({id:?}).textContent"))
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .send(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Console errors, uncaught exceptions and failed loads so far.
    fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str()? {
                "Runtime.exceptionThrown" => Some(e["params"]["exceptionDetails"].to_string()),
                "Runtime.consoleAPICalled" if e["params"]["type"] == "error" => {
                    Some(e["params"]["args"].to_string())
                }
                "Log.entryAdded" if e["params"]["entry"]["level"] == "error" => {
                    Some(e["params"]["entry"]["text"].to_string())
                }
                "Network.loadingFailed" if e["params"]["canceled"] != true => {
                    Some(e["params"].to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// Every URL the page requested.
    fn requests(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn config(backends: &[SocketAddr]) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        simple_config(
            backends,
            "[[route]]\npath_prefix = \"/small\"\npool = \"p\"\nmax_message_bytes = 16\n",
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_traffic_and_drains_from_the_page() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let b1 = echo_backend().await;
    let b2 = echo_backend().await;
    let proxy = start_proxy(&config(&[b1.addr, b2.addr])).await;
    let admin = proxy.shared.admin_addr.unwrap();
    let origin = format!("http://{admin}/");
    browser
        .send("Page.navigate", json!({ "url": origin }))
        .await;
    browser
        .wait_for(
            "the live stream",
            "document.getElementById('live').textContent === 'live'",
        )
        .await;
    browser
        .wait_for(
            "both backends",
            "document.querySelectorAll('#pools tr[data-backend]').length === 2",
        )
        .await;
    assert_eq!(browser.text("open").await, "0");

    // Twenty connections open: the page shows 20; closed: 0.
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(ws_connect(proxy.addr("main"), "/echo").await);
    }
    browser
        .wait_for(
            "20 open connections",
            "document.getElementById('open').textContent === '20'",
        )
        .await;
    for mut c in clients {
        c.close(None).await.unwrap();
        while let Some(Ok(_)) = within(c.next()).await {}
    }
    browser
        .wait_for(
            "0 open connections",
            "document.getElementById('open').textContent === '0'",
        )
        .await;

    // A message over the route's limit: 1009 stands out in the close panel.
    let mut small = ws_connect(proxy.addr("main"), "/small").await;
    small.send(Message::text("x".repeat(64))).await.unwrap();
    while let Some(Ok(_)) = within(small.next()).await {}
    browser
        .wait_for(
            "a 1009 close marked as an alert",
            "document.querySelector('#closes tr.alert[data-code=\"1009\"]') !== null",
        )
        .await;

    // Drain b1 from its button: the proxy drains it and the page says so.
    let button = format!("#pools tr[data-backend=\"{}\"] button.drain", b1.addr);
    let clicked = browser
        .eval(&format!(
            "(() => {{ const b = document.querySelector({button:?}); if (!b) return false; b.click(); return true; }})()"
        ))
        .await;
    assert_eq!(clicked, json!(true), "the drain button exists");
    let state = proxy.shared.registry.get("p", b1.addr).unwrap();
    for _ in 0..100 {
        if state.is_draining() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(state.is_draining(), "the click drained the backend");
    browser
        .wait_for(
            "the backend as draining",
            &format!(
                "document.querySelector('#pools tr[data-backend=\"{}\"] .badge.draining') !== null",
                b1.addr
            ),
        )
        .await;
    browser.screenshot(&artifact("dashboard-browser.png")).await;

    let errors = browser.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let requests = browser.requests();
    assert!(requests.iter().any(|u| u.ends_with("/events")));
    let foreign: Vec<&String> = requests
        .iter()
        .filter(|u| !u.starts_with(&origin) && !u.starts_with("data:"))
        .collect();
    assert!(
        foreign.is_empty(),
        "requests beyond the admin listener: {foreign:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_before_draining() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let b = echo_backend().await;
    let dir = TempDir::new("browser-token");
    std::fs::write(dir.0.join("token"), "page-token-123\n").unwrap();
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"file:token\"\n\n{}",
        simple_config(&[b.addr], "")
    );
    let proxy = start_proxy_in(&toml, &dir.0).await;
    let admin = proxy.shared.admin_addr.unwrap();
    browser
        .send(
            "Page.navigate",
            json!({ "url": format!("http://{admin}/") }),
        )
        .await;
    browser
        .wait_for(
            "the live stream",
            "document.getElementById('live').textContent === 'live'",
        )
        .await;
    let button = format!("#pools tr[data-backend=\"{}\"] button.drain", b.addr);
    let click = format!("document.querySelector({button:?}).click()");
    browser.eval(&click).await;
    browser
        .wait_for(
            "the refusal",
            "document.getElementById('notice').textContent.includes('401')",
        )
        .await;
    let state = proxy.shared.registry.get("p", b.addr).unwrap();
    assert!(!state.is_draining(), "refused without the token");
    browser
        .eval(
            "(() => { const t = document.getElementById('token'); t.value = 'page-token-123'; \
             t.dispatchEvent(new Event('change')); return true; })()",
        )
        .await;
    browser
        .wait_for(
            "the live stream again",
            "document.getElementById('live').textContent === 'live'",
        )
        .await;
    browser
        .wait_for(
            "the drain button again",
            &format!("document.querySelector({button:?}) !== null && !document.querySelector({button:?}).disabled"),
        )
        .await;
    browser.eval(&click).await;
    for _ in 0..100 {
        if state.is_draining() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(state.is_draining(), "drained with the token");
    // The 401 is an answer the page shows, not a console error; the
    // browser logs the failed resource load itself, which is left out.
    let errors: Vec<String> = browser
        .errors()
        .into_iter()
        .filter(|e| !e.contains("401"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// Regenerates docs/dashboard.png: several pools and routes under steady
/// traffic, with a drained backend, a down one, 1009 closes, rejections and
/// a refused reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rewrites docs/dashboard.png; run by hand after changing the page"]
async fn readme_screenshot() {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let mut backends = Vec::new();
    for _ in 0..9 {
        backends.push(echo_backend().await);
    }
    let down = closed_port().await;
    let list = |range: std::ops::Range<usize>, extra: &str| {
        backends[range]
            .iter()
            .map(|b| format!("{{ addr = \"{}\"{extra} }}", b.addr))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n\
         [[route]]\nhost = \"chat.example.com\"\npath_prefix = \"/ws\"\npool = \"chat\"\nmax_message_bytes = 4096\n\n\
         [[route]]\nhost = \"*.example.com\"\npath_prefix = \"/feed\"\npool = \"feed\"\n\n\
         [[route]]\npath_prefix = \"/echo\"\npool = \"chat\"\n\n\
         [[route]]\npath_prefix = \"/prices\"\npool = \"feed\"\n\n\
         [[route]]\npath_prefix = \"/game\"\npool = \"game\"\n\n\
         [[pool]]\nname = \"chat\"\nbackends = [{}]\n\n\
         [[pool]]\nname = \"feed\"\nbackends = [{}]\n\n\
         [[pool]]\nname = \"game\"\nhealth_check = {{ kind = \"tcp\", interval = \"2s\" }}\nbackends = [{}, {{ addr = \"{down}\" }}]\n",
        list(0..4, ""),
        list(4..7, ", weight = 2, max_connections = 40"),
        list(7..9, ""),
    );
    let proxy = start_proxy(&toml).await;
    let admin = proxy.shared.admin_addr.unwrap();
    browser
        .send(
            "Page.navigate",
            json!({ "url": format!("http://{admin}/") }),
        )
        .await;
    let main = proxy.addr("main");
    let stop = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for (i, path) in ["/echo", "/prices", "/game"]
        .iter()
        .cycle()
        .take(75)
        .enumerate()
    {
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut ws = ws_connect(main, &path).await;
            let size = 64 + (i % 7) * 200;
            while tokio::time::Instant::now() < stop {
                if ws.send(Message::binary(vec![7u8; size])).await.is_err() {
                    return;
                }
                let _ = ws.next().await;
                tokio::time::sleep(Duration::from_millis(20 + (i as u64 % 5) * 10)).await;
            }
        }));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for _ in 0..3 {
        // The URL's host becomes the Host header: the chat route.
        let stream = TcpStream::connect(main).await.unwrap();
        let (mut ws, _) = within(tokio_tungstenite::client_async(
            "ws://chat.example.com/ws",
            stream,
        ))
        .await
        .unwrap();
        let _ = ws.send(Message::binary(vec![1u8; 10_000])).await;
        while let Some(Ok(_)) = within(ws.next()).await {}
    }
    for path in ["/nowhere", "/none", "/missing"] {
        raw_request(main, upgrade_request(path, "").as_bytes()).await;
    }
    let _ = raw_request(main, b"POST /echo HTTP/1.1\r\nHost: x\r\n\r\n").await;
    admin_post(admin, "/reload").await;
    admin_post(admin, &format!("/backends/chat/{}/drain", backends[3].addr)).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    browser
        .wait_for(
            "the pools",
            "document.querySelectorAll('#pools .pool').length === 3",
        )
        .await;
    browser
        .send(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    browser.screenshot(&path).await;
    for t in tasks {
        t.abort();
    }
}

async fn admin_post(addr: SocketAddr, path: &str) {
    let _ = admin(addr, "POST", path).await;
}
