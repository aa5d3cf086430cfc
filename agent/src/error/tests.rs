use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// What the agent says when its `Subscribe` call to `server` fails.
async fn subscribe_error(server: &str) -> StreamError {
    let endpoint = tonic::transport::Endpoint::from_shared(server.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(10));
    let addr = endpoint.uri().authority().unwrap().to_string();
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return StreamError::connect(server, e),
    };
    let mut client = weft_api::ControlClient::new(channel);
    let hello = weft_api::ProxyMessage::default();
    let status = client
        .subscribe(tokio_stream::iter([hello]))
        .await
        .expect_err("no server here accepts the stream");
    StreamError::subscribe(server, &addr, status).await
}

#[tokio::test]
async fn a_closed_port_says_what_the_os_said() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = subscribe_error(&url).await;
    assert_eq!(
        e.to_string(),
        format!("cannot connect to {url}: connection refused")
    );
}

#[tokio::test]
async fn an_http1_server_is_not_a_weft_config_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // What a plain HTTP/1 server (Python's http.server, say) answers an HTTP/2
    // preface with, before it closes the connection: the client may read the
    // answer, or first meet the closed connection when it writes.
    let server = tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let answer = b"HTTP/1.0 400 Bad request version ('HTTP/2.0')\r\n\r\n";
            let _ = conn.write_all(answer).await;
        }
    });
    let e = subscribe_error(&format!("http://{addr}")).await;
    assert_eq!(
        e.to_string(),
        format!("this is not a Weft config server (it does not speak gRPC at {addr})")
    );
    server.abort();
}

#[tokio::test]
async fn the_servers_own_refusals_are_said_with_its_reason() {
    let e = StreamError::subscribe(
        "http://a:1",
        "a:1",
        Status::already_exists("node \"web-1\" is in use"),
    )
    .await;
    assert_eq!(
        e.to_string(),
        "the config server refused the stream (AlreadyExists): node \"web-1\" is in use"
    );
    let e = StreamError::subscribe("http://a:1", "a:1", Status::unimplemented("")).await;
    assert_eq!(
        e.to_string(),
        "this is not a Weft config server (it does not serve weft.control.v1.Control at a:1)"
    );
    let e = StreamError::stream("http://a:1", Status::unavailable("shutting down"));
    assert_eq!(
        e.to_string(),
        "the config server ended the stream (Unavailable): shutting down"
    );
}

#[test]
fn a_broken_connection_says_the_os_reason() {
    let io = std::io::Error::from_raw_os_error(104);
    let e = StreamError::stream("http://a:1", Status::from_error(Box::new(io)));
    assert_eq!(
        e.to_string(),
        "lost the connection to http://a:1: connection reset by peer"
    );
}

#[test]
fn the_same_problem_has_the_same_key() {
    let held = |left: u32| StreamError::Refused {
        code: Code::AlreadyExists,
        message: format!("held; take it in {left}s"),
    };
    assert_eq!(held(12).key(), held(7).key());
    let other = StreamError::Refused {
        code: Code::Unauthenticated,
        message: "token".into(),
    };
    assert_ne!(held(12).key(), other.key());
}

#[test]
fn os_reasons_read_as_the_end_of_a_sentence() {
    assert_eq!(
        os_reason(&std::io::Error::from_raw_os_error(111)),
        "connection refused"
    );
    let dns =
        std::io::Error::other("failed to lookup address information: Name or service not known");
    assert_eq!(
        os_reason(&dns),
        "failed to lookup address information: Name or service not known"
    );
}
