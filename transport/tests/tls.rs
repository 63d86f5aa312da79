//! TLS with client certificates on tcp listeners, with certificates generated here (rcgen):
//! a client with a certificate from the right CA gets through; no certificate, a certificate
//! from another CA, an untrusted server or a wrong server name are refused; a client that
//! never handshakes does not hold up the others.

use std::time::Duration;

use futures::StreamExt;
use guest_transport::{
    bind, connect_stream, connect_stream_with, ClientTls, Conn, ConnInfo, ConnectUri,
    ListenOptions, ListenUri, ServerTls, TransportError,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and what it signed.
struct Pki {
    ca_pem: String,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and key in PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let ca_cert = p.self_signed(&ca_key).unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            ca_cert,
            ca_key,
        }
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Leaf {
        self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self) -> Leaf {
        self.leaf(&["host-client"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A TLS echo server trusting client certificates of `client_ca`; returns its port.
async fn echo_server(server_pki: &Pki, client_ca: &Pki) -> u16 {
    echo_server_with(&server_pki.server(), client_ca).await
}

/// Like [`echo_server`] with a given server certificate.
async fn echo_server_with(leaf: &Leaf, client_ca: &Pki) -> u16 {
    let tls = ServerTls::from_pem(
        leaf.cert.as_bytes(),
        leaf.key.as_bytes(),
        client_ca.ca_pem.as_bytes(),
    )
    .unwrap();
    let opts = ListenOptions {
        tls: Some(tls),
        ..ListenOptions::default()
    };
    let uri: ListenUri = "tcp://127.0.0.1:0".parse().unwrap();
    let listener = bind(&uri, &opts).await.unwrap();
    assert!(listener.is_tls());
    let ListenUri::Tcp { addr } = listener.local_uri() else {
        panic!("tcp")
    };
    let mut incoming = listener.into_incoming();
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = incoming.next().await {
            assert!(matches!(conn, Conn::Tls(_)));
            assert!(matches!(conn.info(), ConnInfo::Tls { peer: Some(_) }));
            tokio::spawn(async move {
                let mut buf = [0u8; 4];
                if conn.read_exact(&mut buf).await.is_ok() {
                    let _ = conn.write_all(&buf).await;
                    let _ = conn.flush().await;
                }
            });
        }
    });
    addr.port()
}

fn client_tls(ca: &Pki, identity: Option<&Leaf>) -> ClientTls {
    ClientTls::from_pem(
        ca.ca_pem.as_bytes(),
        identity.map(|l| (l.cert.as_bytes(), l.key.as_bytes())),
    )
    .unwrap()
}

fn uri(host: &str, port: u16) -> ConnectUri {
    format!("tls+tcp://{host}:{port}").parse().unwrap()
}

/// Sends 4 bytes and reads them back; an error when the server refused us.
async fn echo(uri: &ConnectUri, tls: &ClientTls) -> Result<(), String> {
    let mut s = connect_stream_with(uri, Duration::from_secs(5), Some(tls))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"ping").await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(_)) if &buf == b"ping" => Ok(()),
        Ok(Ok(_)) => Err(format!("wrong echo {buf:?}")),
    }
}

#[tokio::test]
async fn mutual_tls_round_trip() {
    let pki = Pki::new("agent CA");
    let port = echo_server(&pki, &pki).await;
    let me = pki.client();
    let tls = client_tls(&pki, Some(&me));
    echo(&uri("localhost", port), &tls).await.unwrap();
    echo(&uri("127.0.0.1", port), &tls).await.unwrap();
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = Pki::new("agent CA");
    let port = echo_server(&pki, &pki).await;
    let err = echo(&uri("localhost", port), &client_tls(&pki, None))
        .await
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("eof") || err.contains("reset"),
        "{err}"
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new("agent CA");
    let rogue = Pki::new("rogue CA");
    let port = echo_server(&pki, &pki).await;
    let theirs = rogue.client();
    let err = echo(&uri("localhost", port), &client_tls(&pki, Some(&theirs)))
        .await
        .unwrap_err();
    println!("rogue client certificate: {err}");
    let lower = err.to_lowercase();
    assert!(
        lower.contains("certificate")
            || lower.contains("unknownca")
            || lower.contains("unknown ca"),
        "the refusal should be about the certificate: {err}"
    );
    // The same server, the same moment, a certificate from its own CA: served. So the refusal
    // above was the certificate check, not a server that was not there.
    let ours = pki.client();
    echo(&uri("localhost", port), &client_tls(&pki, Some(&ours)))
        .await
        .expect("a client certificate from the agent's CA is accepted");
}

#[tokio::test]
async fn untrusted_server_or_wrong_name_fails_the_handshake() {
    let pki = Pki::new("agent CA");
    let other = Pki::new("other CA");
    let port = echo_server(&pki, &pki).await;
    let me = pki.client();
    // The client trusts another CA.
    let e = connect_stream_with(
        &uri("localhost", port),
        Duration::from_secs(5),
        Some(&client_tls(&other, Some(&me))),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(e, TransportError::TlsHandshake { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("TLS handshake with tls+tcp://localhost"),
        "{e}"
    );
    // The name is not in the certificate (it names only "localhost").
    let named = pki.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let port = echo_server_with(&named, &pki).await;
    let e = connect_stream_with(
        &uri("127.0.0.1", port),
        Duration::from_secs(5),
        Some(&client_tls(&pki, Some(&me))),
    )
    .await
    .err();
    assert!(
        matches!(e, Some(TransportError::TlsHandshake { .. })),
        "{e:?}"
    );
}

#[tokio::test]
async fn tls_uri_without_settings_is_a_clear_error() {
    let e = connect_stream(&uri("localhost", 1), Duration::from_secs(1))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, TransportError::TlsNotConfigured { .. }), "{e}");
    assert!(e.to_string().contains("needs TLS client settings"));
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_others() {
    let pki = Pki::new("agent CA");
    let port = echo_server(&pki, &pki).await;
    // Connects and never says anything.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let me = pki.client();
    let started = std::time::Instant::now();
    echo(&uri("localhost", port), &client_tls(&pki, Some(&me)))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn bad_pem_material_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem").unwrap();
    let e = ServerTls::from_pem_files(&junk, &junk, &junk).unwrap_err();
    assert!(e.to_string().contains("junk.pem"), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = ClientTls::from_pem_files(&missing, None, None).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let pki = Pki::new("ca");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let e = ClientTls::from_pem_files(&ca, Some(&ca), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("--tls-cert and --tls-key go together"),
        "{e}"
    );
    // A key that does not match the certificate.
    let a = pki.server();
    let b = pki.server();
    let e = ServerTls::from_pem(a.cert.as_bytes(), b.key.as_bytes(), pki.ca_pem.as_bytes())
        .unwrap_err();
    assert!(e.to_string().starts_with("TLS configuration"), "{e}");
}
