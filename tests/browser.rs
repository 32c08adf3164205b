//! See it move (issue 19): the remote-control example drives the box a
//! person sees in the browser. Headless Chromium (WebGL through
//! SwiftShader) opens the page the real vuer 0.1.6 server serves, with that
//! server's websocket; a Rust client moves the box (through
//! `examples/server.py`, which updates every session), and screenshots taken
//! through the DevTools protocol must show the box where it was sent: right
//! for +x, left for −x, higher for +y; then the `set_position` example's
//! whole trajectory must move it across the screen.
//!
//! Needs Chromium: `CHROMIUM`, else `chromium`, `chromium-browser` or
//! `google-chrome` on the PATH (`tests/run.sh` installs Debian's `chromium`
//! when missing). Without one the test fails and says so. The frames are
//! written to `target/browser/` (the README's picture is one of them).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use vuer_client::{DynEvent, VuerClient};
use vuer_client_testkit as common;
use vuer_client_testkit::{bounded, python_lock, PyServer};

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no Chromium found for the browser test: install Debian's `chromium` \
         (`apt-get install -y chromium`; tests/run.sh does it) or set CHROMIUM=/path/to/chrome"
    );
}

/// An RGBA screenshot.
struct Shot {
    width: usize,
    height: usize,
    rgba: Vec<u8>,
    png: Vec<u8>,
}

impl Shot {
    fn decode(png_bytes: Vec<u8>) -> Shot {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(&png_bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let channels = info.color_type.samples();
        let rgba = buf[..info.buffer_size()]
            .chunks(channels)
            .flat_map(|p| [p[0], p[1 % channels], p[2 % channels], 255])
            .collect();
        Shot {
            width: info.width as usize,
            height: info.height as usize,
            rgba,
            png: png_bytes,
        }
    }

    /// Pixels that differ from `other` by more than a little.
    fn changed(&self, other: &Shot) -> Vec<(usize, usize)> {
        assert_eq!((self.width, self.height), (other.width, other.height));
        let mut out = Vec::new();
        for y in 0..self.height {
            for x in 0..self.width {
                let i = 4 * (y * self.width + x);
                let d: i32 = (0..3)
                    .map(|c| (self.rgba[i + c] as i32 - other.rgba[i + c] as i32).abs())
                    .sum();
                if d > 60 {
                    out.push((x, y));
                }
            }
        }
        out
    }
}

/// Where the box is in `shot`: the centroid of what differs from
/// `reference` (the same view with the box out of sight), and how many
/// pixels that is.
fn box_at(reference: &Shot, shot: &Shot) -> (f64, f64, usize) {
    let px = shot.changed(reference);
    let n = px.len().max(1) as f64;
    let cx = px.iter().map(|p| p.0 as f64).sum::<f64>() / n;
    let cy = px.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    (cx, cy, px.len())
}

/// `GET path` from the DevTools HTTP server on `port`: the body (read to
/// its `Content-Length`; the server keeps the connection open).
async fn http_get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(i) = text.find("\r\n\r\n") {
                let len = text[..i]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .unwrap_or(0);
                if buf.len() >= i + 4 + len {
                    return String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).into_owned();
                }
            }
        }
        String::new()
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_default()
}

/// A headless Chromium showing one page, driven over the DevTools protocol.
struct Browser {
    _child: tokio::process::Child,
    cdp: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    dir: PathBuf,
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let dir = std::env::temp_dir().join(format!("vuer-browser-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = tokio::process::Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                "--no-first-run",
                "--no-default-browser-check",
                "--window-size=1000,700",
                // Traffic only to 127.0.0.1: the page must render from what
                // the local server serves (no CDN, no telemetry).
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start Chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    return rest.split('/').next().unwrap().parse::<u16>().unwrap();
                }
            }
            panic!("Chromium exited without opening its DevTools port");
        })
        .await
        .expect("Chromium's DevTools port within 60 s");
        // Keep draining stderr so that Chromium never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        eprintln!("browser: DevTools on port {port}");
        let page = Self::page_target(port).await;
        // (It may name `localhost`, which can resolve to ::1 first.)
        let page = page.replace("ws://localhost:", "ws://127.0.0.1:");
        eprintln!("browser: page target {page}");
        let (cdp, _) = tokio_tungstenite::connect_async(page.as_str())
            .await
            .expect("DevTools websocket");
        Browser {
            _child: child,
            cdp,
            next_id: 1,
            dir,
        }
    }

    /// The page's DevTools websocket, from `/json/list`.
    async fn page_target(port: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = http_get(port, "/json/list").await;
            let targets: Json = serde_json::from_str(&body).unwrap_or(json!([]));
            if let Some(url) = targets
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                return url.to_owned();
            }
            assert!(Instant::now() < deadline, "no page target: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn call(&mut self, method: &str, params: Json) -> Json {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.cdp.send(Message::Text(msg.into())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(60), self.cdp.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within 60 s"))
                .expect("DevTools connection open")
                .unwrap();
            if let Message::Text(t) = m {
                let v: Json = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    async fn screenshot(&mut self) -> Shot {
        use base64::Engine;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        Shot::decode(png)
    }

    /// A screenshot once the page has stopped changing (two in a row
    /// alike), within 30 s.
    async fn settled(&mut self) -> Shot {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = self.screenshot().await;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.screenshot().await;
            if now.changed(&last).len() < 20 {
                return now;
            }
            assert!(Instant::now() < deadline, "the page never settled");
            last = now;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends the box to `pos` and waits until the server has handled it.
async fn move_box(client: &VuerClient, server: &mut PyServer, n: &mut u32, pos: [f32; 3]) {
    client
        .send(&DynEvent::new("SET_POSITION").value(pos))
        .await
        .unwrap();
    client.flush().await.unwrap();
    *n += 1;
    let want = format!("SET_POSITION {n}:");
    server
        .expect(
            |l| l.as_str().is_some_and(|s| s.starts_with(&want)),
            Duration::from_secs(30),
        )
        .await;
}

/// The reference view with the box drawn at every place it was seen in
/// `shots` (the pixels where each differs from the reference), as PNG.
fn trail(reference: &Shot, shots: &[Shot]) -> Vec<u8> {
    let mut rgba = reference.rgba.clone();
    for s in shots {
        for (x, y) in s.changed(reference) {
            let i = 4 * (y * reference.width + x);
            rgba[i..i + 4].copy_from_slice(&s.rgba[i..i + 4]);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, reference.width as u32, reference.height as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&rgba).unwrap();
    }
    out
}

fn save(name: &str, shot: &Shot) {
    let dir = common::repo().join("target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), &shot.png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_sees_the_box_follow_the_rust_client() {
    let _py = python_lock().await;
    bounded(300, async {
        let mut server = PyServer::example_server().await;
        let port = server.port;
        let url = format!("http://127.0.0.1:{port}/?ws=ws://127.0.0.1:{port}");
        let mut browser = Browser::open(&url).await;
        eprintln!("browser: DevTools attached");
        // The page's own session has started (the scene is sent to it).
        server
            .expect(
                |l| l.as_str().is_some_and(|s| s.starts_with("Server started")),
                Duration::from_secs(90),
            )
            .await;

        eprintln!("browser: the page's session started");
        let client = VuerClient::connect(&format!("ws://127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut n = 0;
        // Out of sight: what the view looks like without the box.
        move_box(&client, &mut server, &mut n, [0.0, -50.0, 0.0]).await;
        let reference = browser.settled().await;
        eprintln!("browser: reference taken");
        save("reference.png", &reference);
        let mut seen = Vec::new();
        for (name, pos) in [
            ("left", [-1.2f32, 0.5, 0.0]),
            ("right", [1.2, 0.5, 0.0]),
            ("up", [0.0, 1.5, 0.0]),
        ] {
            move_box(&client, &mut server, &mut n, pos).await;
            let shot = browser.settled().await;
            save(&format!("box-{name}.png"), &shot);
            let at = box_at(&reference, &shot);
            assert!(
                at.2 >= 30,
                "the box is not visible at {pos:?}: {} pixels changed",
                at.2
            );
            seen.push(at);
        }
        let [(lx, ly, _), (rx, _, _), (_, uy, _)] = seen[..] else {
            unreachable!()
        };
        assert!(
            rx > lx + 30.0,
            "+x is not to the right of -x on screen: {seen:?}"
        );
        assert!(uy < ly - 15.0, "+y is not higher on screen: {seen:?}");
        client.close().await.unwrap();

        // The example's whole trajectory (200 positions at 60 Hz), watched.
        let mut example = tokio::process::Command::new(common::example_binary("set_position"))
            .env("VUER_CLIENT_URI", format!("ws://127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the set_position example (cargo test builds it)");
        let mut xs = Vec::new();
        let mut frames = Vec::new();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = example.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the example hangs"
            );
            let shot = browser.screenshot().await;
            let (x, _, count) = box_at(&reference, &shot);
            if count >= 30 {
                xs.push(x);
                frames.push(shot);
            }
        };
        assert!(status.success(), "the example failed: {status}");
        // The README's picture: where the browser showed the box while the
        // example ran (`VUER_UPDATE_PICTURES=1` writes it into docs/).
        let picture = trail(&reference, &frames);
        std::fs::write(
            common::repo().join("target/browser/trajectory.png"),
            &picture,
        )
        .unwrap();
        if std::env::var_os("VUER_UPDATE_PICTURES").is_some() {
            std::fs::create_dir_all(common::repo().join("docs")).unwrap();
            std::fs::write(common::repo().join("docs/see-it-move.png"), &picture).unwrap();
        }
        let (min, max) = xs
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(
            xs.len() >= 3 && max - min > 40.0,
            "the box did not move across the screen during the example: {xs:?}"
        );
        eprintln!(
            "browser: box at x {:.0}/{:.0} px for -x/+x, y {:.0}/{:.0} for 0.5/1.5 m; \
             during the example {} frames, x from {min:.0} to {max:.0} px",
            lx,
            rx,
            ly,
            uy,
            xs.len()
        );
    })
    .await;
}
