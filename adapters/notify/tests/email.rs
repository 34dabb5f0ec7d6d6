//! `Mailer` against real SMTP servers: aiosmtpd for delivery, and a scripted server for the
//! classification of refusals.

use std::net::SocketAddr;

use holdfast_notify::testing::SmtpServer;
use holdfast_notify::{Attachment, Email, Error, Mailer, MailerSettings, TlsMode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const FROM: &str = "Holdfast <tickets@holdfast.test>";

/// Bytes that survive only a binary-safe transfer encoding.
fn png_like() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..=255u8).cycle().take(3000));
    bytes
}

#[tokio::test]
async fn delivers_text_html_and_attachments() {
    let server = SmtpServer::start().await;
    let mailer = Mailer::new(&server.settings(FROM)).unwrap();
    let qr = png_like();
    let email = Email {
        to: "An Nguyễn <an@buyer.test>".to_owned(),
        subject: "Vé của bạn: Holdfast Live 2026".to_owned(),
        text_body: "Xin chào An,\nhere are your 2 tickets.\n".to_owned(),
        html_body: Some("<p>Xin chào An, here are your <b>2</b> tickets.</p>".to_owned()),
        attachments: vec![
            Attachment {
                filename: "ticket-1.png".to_owned(),
                content_type: "image/png".to_owned(),
                bytes: qr.clone(),
            },
            Attachment {
                filename: "ticket-2.png".to_owned(),
                content_type: "image/png".to_owned(),
                bytes: qr[..100].to_vec(),
            },
        ],
        message_id: Some("outbox-7".to_owned()),
    };

    let id = mailer.send(&email).await.unwrap();

    assert_eq!(id.0, "<outbox-7@holdfast.test>");
    let received = server.messages().await;
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(m.envelope_from, "tickets@holdfast.test");
    assert_eq!(m.envelope_to, ["an@buyer.test"]);
    assert_eq!(m.from, FROM);
    assert_eq!(m.to, "An Nguyễn <an@buyer.test>");
    assert_eq!(m.subject, email.subject);
    assert_eq!(m.message_id, id.0);
    // Line ends are CRLF on the wire; Python's parser keeps them in the content.
    let text = m.text_body.as_deref().unwrap().replace("\r\n", "\n");
    assert_eq!(text, email.text_body);
    let html = m.html_body.as_deref().unwrap().replace("\r\n", "\n");
    assert_eq!(html.trim_end(), email.html_body.as_deref().unwrap());
    assert_eq!(m.attachments, email.attachments);
}

#[tokio::test]
async fn delivers_plain_text_one_message_per_send() {
    let server = SmtpServer::start().await;
    let mailer = Mailer::new(&server.settings(FROM)).unwrap();
    for n in 1..=2 {
        let email = Email {
            to: format!("buyer{n}@buyer.test"),
            subject: format!("Payment link {n}"),
            text_body: format!("Pay here: https://pay.test/{n}\n"),
            ..Email::default()
        };
        mailer.send(&email).await.unwrap();
    }
    let received = server.messages().await;
    let subjects: Vec<_> = received.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["Payment link 1", "Payment link 2"]);
    assert_eq!(received[1].envelope_to, ["buyer2@buyer.test"]);
    assert!(received[1].html_body.is_none());
    assert!(received[1].attachments.is_empty());
    assert!(received[0].message_id.ends_with("@holdfast.test>"));
    assert_ne!(received[0].message_id, received[1].message_id);
}

fn email() -> Email {
    Email {
        to: "an@buyer.test".to_owned(),
        subject: "s".to_owned(),
        text_body: "t".to_owned(),
        ..Email::default()
    }
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mailer = Mailer::new(&MailerSettings::plain("127.0.0.1", addr.port(), FROM)).unwrap();
    let err = mailer.send(&email()).await.unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn tls_failures_are_transient() {
    // aiosmtpd here speaks plain SMTP only: it offers no STARTTLS, and a TLS hello gets no
    // TLS answer.
    let server = SmtpServer::start().await;
    for tls in [TlsMode::Starttls, TlsMode::Tls] {
        let settings = MailerSettings {
            tls: Some(tls),
            ..server.settings(FROM)
        };
        let err = Mailer::new(&settings)
            .unwrap()
            .send(&email())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Transient { .. }), "{tls:?}: {err:?}");
    }
    assert!(server.messages().await.is_empty());
}

/// An SMTP server that accepts everything up to `RCPT TO`, which it answers with `reply`.
async fn refusing_server(reply: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let answer = match verb.as_str() {
                        "EHLO" => "250 scripted\r\n".to_owned(),
                        "MAIL" | "RSET" | "NOOP" => "250 OK\r\n".to_owned(),
                        "RCPT" => format!("{reply}\r\n"),
                        "QUIT" => "221 bye\r\n".to_owned(),
                        _ => "502 not implemented\r\n".to_owned(),
                    };
                    if write.write_all(answer.as_bytes()).await.is_err() || verb == "QUIT" {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn smtp_replies_are_classified_by_their_first_digit() {
    for (reply, transient) in [
        ("450 4.2.0 mailbox busy, try again later", true),
        ("452 4.3.1 insufficient system storage", true),
        ("550 5.1.1 no such user", false),
        ("553 5.1.3 mailbox name not allowed", false),
    ] {
        let addr = refusing_server(reply).await;
        let mailer = Mailer::new(&MailerSettings::plain("127.0.0.1", addr.port(), FROM)).unwrap();
        let err = mailer.send(&email()).await.unwrap_err();
        assert_eq!(err.is_transient(), transient, "{reply}: {err:?}");
        assert!(err.to_string().contains(&reply[..3]), "{err}");
    }
}

#[tokio::test]
async fn an_invalid_recipient_is_permanent_without_connecting() {
    let server = SmtpServer::start().await;
    let mailer = Mailer::new(&server.settings(FROM)).unwrap();
    let err = mailer
        .send(&Email {
            to: "not-an-address".to_owned(),
            ..email()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Permanent { .. }), "{err:?}");
    assert!(server.messages().await.is_empty());
}
