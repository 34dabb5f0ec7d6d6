//! `SmsSender` against the Twilio stand-in served on a real port.

use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use holdfast_notify::sim::{self, SimConfig, SimMessage, SmsSim};
use holdfast_notify::{Error, SmsSender, SmsSettings};

const SID: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "sim-token";
const FROM: &str = "+15005550006";

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn settings(addr: SocketAddr) -> SmsSettings {
    SmsSettings {
        base_url: format!("http://{addr}"),
        account_sid: SID.to_owned(),
        auth_token: TOKEN.to_owned(),
        from: FROM.to_owned(),
        timeout_secs: 5,
    }
}

async fn start() -> (SmsSim, SocketAddr, SmsSender) {
    let sim = SmsSim::new(SimConfig {
        account_sid: SID.to_owned(),
        auth_token: TOKEN.to_owned(),
    });
    let addr = serve(sim.router()).await;
    let sender = SmsSender::new(&settings(addr)).unwrap();
    (sim, addr, sender)
}

async fn listed(addr: SocketAddr) -> Vec<SimMessage> {
    reqwest::get(format!("http://{addr}/messages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn sends_and_the_simulator_lists_the_message() {
    let (sim, addr, sender) = start().await;
    let body = "Holdfast: thanh toán 2 vé tại https://pay.test/h/42 trong 10 phút";

    let id = sender.send("+84901234567", body).await.unwrap();

    assert!(id.0.starts_with("SM") && id.0.len() == 34, "{id}");
    let messages = listed(addr).await;
    assert_eq!(messages, sim.messages());
    let [m] = messages.as_slice() else {
        panic!("{messages:?}")
    };
    assert_eq!(m.sid, id.0);
    assert_eq!(
        (m.to.as_str(), m.from.as_deref(), m.body.as_str()),
        ("+84901234567", Some(FROM), body)
    );
    assert_eq!(m.num_segments, 1);
}

#[tokio::test]
async fn the_simulator_answers_like_twilio() {
    let (_sim, addr, _sender) = start().await;
    let url = format!("http://{addr}/2010-04-01/Accounts/{SID}/Messages.json");
    let service = format!("MG{}", "ab".repeat(16));
    let reply = reqwest::Client::new()
        .post(&url)
        .basic_auth(SID, Some(TOKEN))
        .form(&[
            ("To", "+84901234567"),
            ("MessagingServiceSid", &service),
            ("Body", "hi"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
    let json: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(json["status"], "accepted");
    assert_eq!(json["messaging_service_sid"], service.as_str());
    assert_eq!(json["account_sid"], SID);
    let sid = json["sid"].as_str().unwrap();
    assert_eq!(
        json["uri"],
        format!("/2010-04-01/Accounts/{SID}/Messages/{sid}.json")
    );

    let reply = reqwest::Client::new()
        .post(&url)
        .form(&[("To", "+1")])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert!(reply.headers().contains_key("www-authenticate"));
    let json: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(
        (json["code"].as_u64(), json["status"].as_u64()),
        (Some(20003), Some(401))
    );
}

#[tokio::test]
async fn provider_refusals_are_permanent() {
    let (sim, addr, sender) = start().await;
    let long = "x".repeat(1601);
    for (to, body, code) in [
        ("0901234567", "hi", "21211"),
        ("", "hi", "21604"),
        ("+84901234567", "", "21602"),
        ("+84901234567", long.as_str(), "21617"),
    ] {
        let err = sender.send(to, body).await.unwrap_err();
        assert!(matches!(err, Error::Permanent { .. }), "{err:?}");
        assert!(err.to_string().contains(code), "{code}: {err}");
        assert!(err.to_string().contains("400"), "{err}");
    }

    let wrong_token = SmsSender::new(&SmsSettings {
        auth_token: "wrong".to_owned(),
        ..settings(addr)
    })
    .unwrap();
    let err = wrong_token.send("+84901234567", "hi").await.unwrap_err();
    assert!(
        !err.is_transient() && err.to_string().contains("20003"),
        "{err}"
    );

    let bad_from = SmsSender::new(&SmsSettings {
        from: "+0".to_owned(),
        ..settings(addr)
    })
    .unwrap();
    let err = bad_from.send("+84901234567", "hi").await.unwrap_err();
    assert!(
        !err.is_transient() && err.to_string().contains("21212"),
        "{err}"
    );

    assert!(sim.messages().is_empty());
}

#[tokio::test]
async fn injected_server_errors_are_transient_then_the_retry_succeeds() {
    let (sim, addr, sender) = start().await;
    let reply = reqwest::Client::new()
        .post(format!("http://{addr}/fail-next?requests=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::NO_CONTENT);

    for _ in 0..2 {
        let err = sender.send("+84901234567", "retry me").await.unwrap_err();
        assert!(matches!(err, Error::Transient { .. }), "{err:?}");
        assert!(err.to_string().contains("20500"), "{err}");
    }
    sender.send("+84901234567", "retry me").await.unwrap();
    assert_eq!(sim.messages().len(), 1);
}

#[tokio::test]
async fn rate_limits_and_refused_connections_are_transient() {
    let too_many = Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        post(|| async {
            (
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"code": 20429, "message": "Too Many Requests", "status": 429}"#,
            )
        }),
    );
    let addr = serve(too_many).await;
    let err = SmsSender::new(&settings(addr))
        .unwrap()
        .send("+84901234567", "hi")
        .await
        .unwrap_err();
    assert!(
        err.is_transient() && err.to_string().contains("20429"),
        "{err}"
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = SmsSender::new(&settings(closed))
        .unwrap()
        .send("+84901234567", "hi")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn the_plain_router_serves_too() {
    let addr = serve(sim::router(SimConfig {
        account_sid: SID.to_owned(),
        auth_token: TOKEN.to_owned(),
    }))
    .await;
    SmsSender::new(&settings(addr))
        .unwrap()
        .send("+84901234567", "hi")
        .await
        .unwrap();
    assert_eq!(listed(addr).await.len(), 1);
}
