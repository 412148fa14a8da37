//! The clusters users have: PostgreSQL over verified TLS, and Kafka clients that speak TLS and
//! SASL (librdkafka built with OpenSSL). Certificates are made here with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use secrecy::SecretString;
use sluice::config::Settings;
use sluice::dev::EmbeddedPostgres;
use tokio::io::AsyncReadExt as _;

/// A self-signed certificate for `localhost` and its key, in `dir`: (cert, key).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running openssl (scripts/setup --test installs it)");
    assert!(status.success(), "openssl req failed: {status}");
    (cert, key)
}

/// `url` with host `localhost` and these query parameters.
fn over_tls(url: &str, params: &str) -> SecretString {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some("localhost")).unwrap();
    url.set_query(Some(params));
    SecretString::from(url.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_reaches_postgresql_over_verified_tls_and_refuses_an_unknown_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "server");
    let (other_ca, _) = self_signed(dir.path(), "other");
    let server = tokio::task::spawn_blocking(move || {
        EmbeddedPostgres::start_with_tls(Some((&cert, &key))).map(|server| (server, cert))
    })
    .await
    .unwrap()
    .expect("starting PostgreSQL with TLS");
    let (server, cert) = server;

    // What an operator writes in DATABASE_URL: verify the chain and the host name.
    let verified = over_tls(
        &server.url(),
        &format!("sslmode=verify-full&sslrootcert={}", cert.display()),
    );
    let pool = sluice::db::connect_and_migrate(&verified, 2)
        .await
        .expect("connecting with sslmode=verify-full");
    let (tls, version): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(tls, "the session is encrypted");
    assert!(version.is_some_and(|v| v.starts_with("TLS")));
    pool.close().await;

    // A certificate from another authority is refused, with the reason.
    let untrusted = over_tls(
        &server.url(),
        &format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
    );
    let error = sluice::db::connect_and_migrate(&untrusted, 1)
        .await
        .expect_err("an unknown certificate must not be accepted");
    let error = format!("{error:#}");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_accept_tls_and_sasl_settings_and_start_a_tls_handshake() {
    // A listener standing in for a TLS broker: it records the first bytes a client sends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mut settings = Settings::local("postgres://unused", &address, "orders").unwrap();
    for (key, value) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "sluice"),
        ("sasl.password", "secret"),
    ] {
        settings.kafka.options.push((key.into(), value.into()));
    }
    let consumer: BaseConsumer = sluice::kafka::consumer_config(&settings.kafka, "g", "tls-test")
        .create()
        .expect("librdkafka takes SASL_SSL with SCRAM (built with OpenSSL)");
    let producer: rdkafka::producer::BaseProducer =
        sluice::kafka::producer_config(&settings.kafka, "tls-test")
            .create()
            .expect("the producer takes them too");
    consumer.subscribe(&["orders"]).unwrap();
    let polling = std::thread::spawn(move || {
        for _ in 0..30 {
            consumer.poll(Duration::from_millis(100));
        }
    });
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the client connects")
        .unwrap();
    let mut hello = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut hello))
        .await
        .expect("the client speaks first")
        .unwrap();
    // A TLS record of type handshake (22), version 3.x, whose message is a ClientHello (1):
    // encryption starts before any Kafka or SASL byte is sent.
    assert_eq!((hello[0], hello[1], hello[5]), (22, 3, 1), "{hello:?}");
    drop(socket);
    polling.join().unwrap();
    drop(producer);
}
