//! Interop with the real Python vuer 0.1.6 server (created in a virtualenv
//! on first use; see the test kit, testkit/). Each test spawns the server on a free
//! port and checks what its handlers saw.

use vuer_client_testkit as common;

use std::time::Duration;

use common::{bounded, python_lock, PyServer};
use serde::Serialize;
use serde_json::Value as Json;
use vuer_client::{Coalesce, DynEvent, Event, Value, VuerClient};

const T: Duration = Duration::from_secs(20);

#[derive(Serialize)]
struct SetPosition([f32; 3]);
impl Event for SetPosition {
    const ETYPE: &'static str = "SET_POSITION";
    fn coalesce(&self) -> Coalesce<'_> {
        Coalesce::Never
    }
}

fn position(i: usize) -> [f32; 3] {
    let t = i as f32 * 0.05;
    [t.sin() * 2.0, 0.5 + (t * 2.0).sin() * 0.3, 0.0]
}

fn is_event(etype: &'static str) -> impl Fn(&Json) -> bool {
    move |v| v["kind"] == "event" && v["etype"] == etype
}

#[tokio::test]
async fn server_handlers_get_init_and_every_event_in_order() {
    let _py = python_lock().await;
    bounded(120, async {
        let mut py =
            PyServer::start("record", &["INIT", "SET_POSITION", "CAMERA_MOVE", "BLOB"]).await;
        let mut client = VuerClient::connect(&py.uri()).await.unwrap();

        // INIT routes the session to the handler filtered on client="rust*".
        let spawn = py.expect(|v| v["kind"] == "spawn", T).await;
        assert_eq!(spawn["handler"], "rust");
        let init = py.expect(is_event("INIT"), T).await;
        let info = &init["value"];
        assert_eq!(info["client"], "rust");
        assert_eq!(info["clientVersion"], env!("CARGO_PKG_VERSION"));
        assert!(
            info["timezoneOffset"].is_i64(),
            "timezoneOffset must be an int: {info}"
        );
        for field in ["timezone", "platform", "platformVersion", "machine"] {
            assert!(info[field].is_string(), "{field} missing: {info}");
        }
        // ts is integer milliseconds, close to now.
        let now_ms = vuer_client_testkit::server::now_unix_ns() / 1_000_000;
        let ts = init["ts"].as_u64().expect("int ts");
        assert!(now_ms.abs_diff(ts) < 10_000, "ts {ts} vs now {now_ms}");

        for i in 0..200 {
            client.send(&SetPosition(position(i))).await.unwrap();
        }
        client
            .send(
                &DynEvent::new("CAMERA_MOVE")
                    .key("defaultCamera")
                    .value(Value::map([(
                        "camera",
                        Value::map([("fov", 50.into()), ("aspect", 1.5f32.into())]),
                    )])),
            )
            .await
            .unwrap();
        client
            .send(&DynEvent::new("BLOB").value(Value::Bin(vec![0, 1, 2, 0xfe, 0xff])))
            .await
            .unwrap();

        let got = py.collect(200, is_event("SET_POSITION"), T).await;
        for (i, ev) in got.iter().enumerate() {
            let want = position(i);
            // Python saw the f32 values widened to double: exact as f32.
            let v: Vec<f32> = ev["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(v, want.to_vec(), "event {i} out of order or changed");
        }
        let cam = py.expect(is_event("CAMERA_MOVE"), T).await;
        assert_eq!(cam["key"], "defaultCamera");
        assert_eq!(cam["value"]["camera"]["fov"], 50);
        assert_eq!(cam["value"]["camera"]["aspect"], 1.5);
        let blob = py.expect(is_event("BLOB"), T).await;
        assert_eq!(blob["value"]["$bin"], "AAEC/v8=");

        // The server's scene and its UPSERT answers come back decoded.
        let mut set = None;
        let mut upserts = Vec::new();
        while upserts.len() < 200 {
            let ev = client.recv_timeout(T).await.expect("server events");
            match ev.etype() {
                "SET" => set = Some(ev),
                "UPSERT" => upserts.push(ev),
                other => panic!("unexpected {other}"),
            }
        }
        let set = set.expect("SET scene");
        let scene = set.data().unwrap();
        assert_eq!(scene["tag"], Value::from("Scene"));
        #[derive(serde::Deserialize)]
        struct Node {
            key: String,
            position: [f32; 3],
        }
        #[derive(serde::Deserialize)]
        struct Nodes {
            nodes: Vec<Node>,
        }
        for (i, up) in upserts.iter().enumerate() {
            let n: Nodes = up.data_as().unwrap();
            assert_eq!(n.nodes[0].key, "box");
            assert_eq!(n.nodes[0].position, position(i));
        }
        let stats = client.stats();
        assert_eq!(stats.sent, 202);
        assert_eq!(stats.decode_errors, 0);
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn init_can_be_overridden_for_spawn_filters() {
    let _py = python_lock().await;
    bounded(60, async {
        let mut py = PyServer::start("record", &["INIT"]).await;
        let client = VuerClient::builder()
            .uri(py.uri())
            .init_field("client", "rust-teleop")
            .init_field("robot", "g1")
            .connect()
            .await
            .unwrap();
        assert_eq!(
            py.expect(|v| v["kind"] == "spawn", T).await["handler"],
            "rust"
        );
        let init = py.expect(is_event("INIT"), T).await;
        assert_eq!(init["value"]["client"], "rust-teleop");
        assert_eq!(init["value"]["robot"], "g1");
        client.close().await.unwrap();

        // Pretending to be the Python client routes to the other handler.
        let client = VuerClient::builder()
            .uri(py.uri())
            .init_field("client", "python")
            .connect()
            .await
            .unwrap();
        assert_eq!(
            py.expect(|v| v["kind"] == "spawn", T).await["handler"],
            "python"
        );
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn grab_render_rpc_gets_the_clients_answer() {
    let _py = python_lock().await;
    bounded(60, async {
        let mut py = PyServer::start("rpc", &[]).await;
        let client = VuerClient::connect(&py.uri()).await.unwrap();
        client.answer_rpc("GRAB_RENDER", |req| {
            let quality = req.data().ok()?.get("quality")?.as_f64()?;
            Some(Value::map([
                ("dpr", 1.into()),
                ("width", 2.into()),
                ("height", 2.into()),
                ("quality", quality.into()),
                ("frame", Value::Bin(vec![0xff, 0xd8, 0xff, 0xe0])),
            ]))
        });
        for _ in 0..3 {
            let r = py.expect(|v| v["kind"] == "rpc", T).await;
            assert_eq!(
                r["ok"], true,
                "server timed out waiting for the answer: {r}"
            );
            assert!(r["etype"]
                .as_str()
                .unwrap()
                .starts_with("GRAB_RENDER_RESPONSE@"));
            assert_eq!(r["key"], "DEFAULT");
            assert_eq!(r["value"]["frame"]["$bin"], "/9j/4A==");
            assert_eq!(r["value"]["quality"], 0.5);
        }
        assert_eq!(client.stats().rpc_answered, 3);
        client.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn respond_answers_an_rpc_from_a_subscription() {
    let _py = python_lock().await;
    bounded(60, async {
        let mut py = PyServer::start("rpc", &[]).await;
        let client = VuerClient::connect(&py.uri()).await.unwrap();
        let mut renders = client.subscribe("GRAB_RENDER");
        let req = renders.recv_timeout(T).await.expect("GRAB_RENDER request");
        assert!(req.is_rpc());
        assert_eq!(req.key(), Some("DEFAULT"));
        client
            .respond(&req, Value::map([("frame", Value::Bin(vec![1, 2, 3]))]))
            .unwrap();
        let r = py.expect(|v| v["kind"] == "rpc", T).await;
        assert_eq!(r["ok"], true);
        assert_eq!(r["value"]["frame"]["$bin"], "AQID");
        client.close().await.unwrap();
    })
    .await;
}

/// `cargo run --example set_position` against `python examples/server.py`:
/// the server's handler sees all 200 SET_POSITION events, in order.
#[tokio::test]
async fn the_set_position_example_against_the_example_server() {
    let _py = python_lock().await;
    bounded(120, async {
        let mut server = PyServer::example_server().await;
        let port = server.port;
        let example = common::example_binary("set_position");
        let out = tokio::process::Command::new(&example)
            .env("VUER_CLIENT_URI", format!("ws://127.0.0.1:{port}"))
            .output()
            .await
            .expect("run example");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "example failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("sent 200 SET_POSITION events"), "{stdout}");
        assert!(stdout.contains("received 201 server events"), "{stdout}");
        let mut n = 0;
        while n < 200 {
            let line = server.next(T).await.expect("server output");
            if let Some(rest) = line.as_str().and_then(|l| l.strip_prefix("SET_POSITION ")) {
                n += 1;
                let (num, pos) = rest.split_once(": ").unwrap();
                assert_eq!(num.parse::<usize>().unwrap(), n);
                let want = position(n - 1);
                let got: Vec<f64> = serde_json::from_str(pos).unwrap();
                let got: Vec<f32> = got.into_iter().map(|x| x as f32).collect();
                assert_eq!(got, want.to_vec(), "position {n}");
            }
        }
    })
    .await;
}
