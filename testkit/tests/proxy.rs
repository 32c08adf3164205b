//! The fault-injection proxy itself, against a TCP echo server: bandwidth
//! limits, stalls, black holes and cuts do what the resilience tests rely
//! on.

use std::time::{Duration, Instant};

use vuer_client_testkit::bounded;
use vuer_client_testkit::proxy::{Cut, Direction, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_limits_stalls_black_holes_and_cuts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(30, async {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = Proxy::start(target).await.unwrap();
        let mut c = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = vec![0u8; 64 << 10];

        // Bandwidth: 50 KB up at 100 KB/s takes about half a second.
        proxy.set_bandwidth(Direction::Up, Some(100_000));
        let t = Instant::now();
        c.write_all(&[1u8; 50_000]).await.unwrap();
        c.read_exact(&mut buf[..50_000]).await.unwrap();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took <= Duration::from_secs(3),
            "{took:?}"
        );
        proxy.set_bandwidth(Direction::Both, None);

        // A stall in one direction holds the bytes until resumed.
        proxy.stall(Direction::Down);
        c.write_all(b"ping").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await;
        assert!(r.is_err(), "bytes crossed a stalled direction");
        proxy.resume(Direction::Down);
        c.read_exact(&mut buf[..4]).await.unwrap();
        assert_eq!(&buf[..4], b"ping");
        // Counted once each write returns (a moment after the echo).
        let deadline = Instant::now() + Duration::from_secs(2);
        while proxy.forwarded() != (50_004, 50_004) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(proxy.forwarded(), (50_004, 50_004));

        // A black hole: nothing crosses, nothing closes.
        assert_eq!(proxy.black_hole(), 1);
        c.write_all(b"lost").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
        assert!(r.is_err(), "a black hole answered or closed: {r:?}");
        assert_eq!(proxy.open(), 1);

        // New connections work; a cut with RST resets them.
        let mut d = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        d.write_all(b"again").await.unwrap();
        d.read_exact(&mut buf[..5]).await.unwrap();
        assert_eq!(proxy.cut(Cut::Reset), 2);
        let err = d.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(proxy.accepted(), 2);
    })
    .await;
}
