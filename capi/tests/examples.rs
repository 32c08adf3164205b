//! The C and C++ examples, built with the system's `cc`/`c++` against this
//! crate's static library as the README shows, and run against the
//! embedded server and the real vuer 0.1.6 server; the C example also
//! under valgrind (no leak, no invalid access).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vuer_client_testkit::server::{LocalServer, ServerOptions};
use vuer_client_testkit::{bounded, PyServer};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/release`, with libvuer_client_c.a built there as the README
/// says (`cargo build --release -p vuer-client-c`), once per run.
fn target_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "--release", "-p", "vuer-client-c"])
                .current_dir(root())
                .status()
                .expect("cargo runs");
            assert!(
                status.success(),
                "cargo build --release -p vuer-client-c failed"
            );
            // target/<profile>/deps/<this test> -> target
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().join("release")
        })
        .clone()
}

/// Compiles `source` with `compiler` and the flags given, as the README
/// does, into a binary in the target directory.
fn build(compiler: &str, std: &str, source: &str, out: &str) -> PathBuf {
    let lib = target_dir().join("libvuer_client_c.a");
    assert!(
        lib.exists(),
        "{} is missing (cargo builds it with this test)",
        lib.display()
    );
    let bin = target_dir().join(out);
    let status = Command::new(compiler)
        .arg(std)
        .args(["-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("capi/include"))
        .arg(root().join(source))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&bin)
        .status()
        .expect("the compiler runs");
    assert!(status.success(), "{compiler} {source} failed");
    bin
}

fn run(bin: &Path, uri: &str, args: &[&str], wrapper: Option<&[&str]>) -> std::process::Output {
    let mut cmd = match wrapper {
        Some(w) => {
            let mut c = Command::new(w[0]);
            c.args(&w[1..]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let out = cmd
        .args(args)
        .env("VUER_CLIENT_URI", uri)
        .output()
        .expect("the example runs");
    println!(
        "{}: {}\n{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn expected(i: usize) -> [f32; 3] {
    let t = i as f32 * 0.05;
    [t.sin() * 2.0, 0.5 + (t * 2.0).sin() * 0.3, 0.0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_delivers_200_positions_to_the_embedded_server() {
    // Built before the clock starts: a clean release build of the
    // library alone takes over a minute on a CI machine.
    let bin = build(
        "cc",
        "-std=c11",
        "examples/c/set_position.c",
        "set_position_c",
    );
    bounded(60, async move {
        let server = LocalServer::start(ServerOptions {
            upsert_on: Some("SET_POSITION".into()),
            ..ServerOptions::default()
        })
        .await
        .unwrap();
        let uri = server.uri();
        let out = tokio::task::spawn_blocking(move || run(&bin, &uri, &[], None))
            .await
            .unwrap();
        assert!(out.status.success());
        let got: Vec<Vec<f32>> = server
            .received()
            .iter()
            .filter(|r| r.event.etype() == "SET_POSITION")
            .map(|r| r.event.data_as::<Vec<f32>>().unwrap())
            .collect();
        assert_eq!(got.len(), 200);
        for (i, p) in got.iter().enumerate() {
            assert_eq!(p.as_slice(), expected(i).as_slice(), "position {i}");
        }
        assert!(String::from_utf8_lossy(&out.stdout).contains("received 201 server events"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_and_cpp_examples_work_against_the_real_vuer_server() {
    // Built before the clock starts: a clean release build of the
    // library alone takes over a minute on a CI machine.
    let c = build(
        "cc",
        "-std=c11",
        "examples/c/set_position.c",
        "set_position_c_real",
    );
    let cpp = build(
        "c++",
        "-std=c++17",
        "examples/cpp/teleop.cpp",
        "teleop_cpp_real",
    );
    bounded(120, async move {
        let mut server = PyServer::example_server().await;
        let uri = server.uri();
        let u = uri.clone();
        let out = tokio::task::spawn_blocking(move || run(&c, &u, &[], None))
            .await
            .unwrap();
        assert!(out.status.success());
        // examples/server.py prints each position it receives, numbered.
        server
            .expect(
                |l| {
                    l.as_str()
                        .is_some_and(|s| s.starts_with("SET_POSITION 200:"))
                },
                Duration::from_secs(20),
            )
            .await;
        let out = tokio::task::spawn_blocking(move || run(&cpp, &uri, &["1"], None))
            .await
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        // The server's answer (the scene it sets on INIT) is printed.
        assert!(text.contains("server: SET"), "{text}");
        assert!(text.contains("published"), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpp_example_streams_at_1_khz_to_the_embedded_server() {
    // Built before the clock starts: a clean release build of the
    // library alone takes over a minute on a CI machine.
    let bin = build("c++", "-std=c++17", "examples/cpp/teleop.cpp", "teleop_cpp");
    bounded(60, async move {
        let server = LocalServer::start(ServerOptions::default()).await.unwrap();
        let uri = server.uri();
        let out = tokio::task::spawn_blocking(move || run(&bin, &uri, &["1"], None))
            .await
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("server: SET"), "{text}");
        let joints = server
            .received()
            .iter()
            .filter(|r| r.event.etype() == "JOINT_POSE")
            .count();
        assert!(joints >= 100, "{joints} joint poses arrived");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_runs_clean_under_valgrind() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        panic!("valgrind is needed (apt-get install valgrind); tests/run.sh installs it");
    }
    // Built before the clock starts: a clean release build of the
    // library alone takes over a minute on a CI machine.
    let bin = build(
        "cc",
        "-std=c11",
        "examples/c/set_position.c",
        "set_position_vg",
    );
    bounded(300, async move {
        let server = LocalServer::start(ServerOptions {
            upsert_on: Some("SET_POSITION".into()),
            ..ServerOptions::default()
        })
        .await
        .unwrap();
        let uri = server.uri();
        let out = tokio::task::spawn_blocking(move || {
            run(
                &bin,
                &uri,
                &[],
                Some(&[
                    "valgrind",
                    "--leak-check=full",
                    "--errors-for-leak-kinds=definite,indirect",
                    "--error-exitcode=99",
                ]),
            )
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "valgrind: {err}");
        assert!(err.contains("ERROR SUMMARY: 0 errors"), "{err}");
        assert!(
            err.contains("no leaks are possible") || err.contains("definitely lost: 0 bytes"),
            "{err}"
        );
        assert_eq!(
            server
                .received()
                .iter()
                .filter(|r| r.event.etype() == "SET_POSITION")
                .count(),
            200
        );
    })
    .await;
}
