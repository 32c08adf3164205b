use serde::Serialize;
use std::time::Duration;
use vuer_client::server::{LocalServer, ServerOptions};
use vuer_client::{Event, Value, VuerClient};

#[derive(Serialize)]
struct SetPosition([f32; 3]);
impl Event for SetPosition {
    const ETYPE: &'static str = "SET_POSITION";
    fn coalesce(&self) -> vuer_client::Coalesce<'_> {
        vuer_client::Coalesce::Never
    }
}

#[tokio::test]
async fn smoke() {
    let server = LocalServer::start(ServerOptions::default()).await.unwrap();
    let mut client = VuerClient::connect(&server.uri()).await.unwrap();
    for i in 0..100 {
        client.publish(&SetPosition([i as f32, 0.0, 0.0])).unwrap();
    }
    assert!(
        server
            .wait_until(|s| s.events >= 101, Duration::from_secs(5))
            .await,
        "{:?}",
        server.stats()
    );
    let got = server.received();
    assert_eq!(got[0].event.etype(), "INIT");
    println!("{}", got[0].event.data().unwrap());
    for (i, r) in got[1..].iter().enumerate() {
        assert_eq!(r.event.data().unwrap()[0], Value::F32(i as f32));
    }
    let ev = client.recv_timeout(Duration::from_secs(2)).await.unwrap();
    assert_eq!(ev.etype(), "SET");
    println!("{:?}", client.stats());
    client.close().await.unwrap();
    assert!(
        server
            .wait_until(|s| s.closes == 1, Duration::from_secs(2))
            .await
    );
    println!("{:?} {:?}", client.stats(), server.close_codes());
}
