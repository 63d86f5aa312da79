//! guestctl against a real agent serving the Guest service over TCP with mutual TLS
//! (`--tls-cert --tls-key --tls-client-ca`), with certificates generated here: ping and a
//! snapshot work with a client certificate; without one, with one from another CA, or over
//! plain tcp:// the connection is refused with a clear error (exit 3). Root (the snapshot
//! freezes the test's own loop filesystem).

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use support::free_port;
use system_tests::{bins, Agent, FsType, LoopFs, Scratch};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Self {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// Writes `<stem>.pem` and `<stem>.key` signed by this CA.
    fn issue(&self, dir: &Path, stem: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }

    fn write(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).unwrap();
    }
}

async fn guestctl(args: &[String]) -> Output {
    support::guestctl(args, Duration::from_secs(60)).await
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test]
async fn guestctl_over_mutual_tls_to_a_real_agent() {
    if let Err(e) = bins::guest_agent() {
        panic!("the guest-agent binary is needed: {e} (or `cargo build -p guest-agent`)");
    }
    let scratch = Scratch::new().unwrap();
    let pki = scratch.subdir("pki").unwrap();
    let ca = Ca::new("agent CA");
    ca.write(&pki.join("ca.pem"));
    ca.issue(
        &pki,
        "server",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    ca.issue(
        &pki,
        "client",
        &["host"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let rogue = Ca::new("rogue CA");
    rogue.issue(
        &pki,
        "rogue",
        &["host"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let p = |f: &str| pki.join(f).display().to_string();

    let fs = LoopFs::new(&scratch, "data", FsType::Ext4, 32).unwrap();
    let port = free_port();
    let listen = format!("tcp://127.0.0.1:{port}");
    let _agent = Agent::start(
        &scratch,
        &[
            "--listen",
            &listen,
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("ca.pem"),
        ],
    )
    .await
    .unwrap();
    let tls_uri = format!("tls+tcp://localhost:{port}");
    let with_cert = |rest: &[&str]| {
        let mut v = s(&[
            "--connect",
            &tls_uri,
            "--tls-ca",
            &p("ca.pem"),
            "--tls-cert",
            &p("client.pem"),
            "--tls-key",
            &p("client.key"),
            "--json",
        ]);
        v.extend(s(rest));
        v
    };

    let o = guestctl(&with_cert(&["ping"])).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mp = fs.mountpoint().display().to_string();
    let o = guestctl(&with_cert(&["snapshot", "--mountpoint", &mp, "--", "true"])).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["thaw"]["confirmed"], true);
    assert_eq!(r["quiesce"]["frozen_count"], 1);

    let refused: [(Vec<String>, &str); 4] = [
        // No client certificate.
        (
            s(&["--connect", &tls_uri, "--tls-ca", &p("ca.pem"), "ping"]),
            "refused our client certificate",
        ),
        // A client certificate from another CA.
        (
            s(&[
                "--connect",
                &tls_uri,
                "--tls-ca",
                &p("ca.pem"),
                "--tls-cert",
                &p("rogue.pem"),
                "--tls-key",
                &p("rogue.key"),
                "ping",
            ]),
            "refused our client certificate",
        ),
        // The agent's certificate is not trusted.
        (
            s(&[
                "--connect",
                &tls_uri,
                "--tls-ca",
                &p("rogue.pem"),
                "--tls-cert",
                &p("client.pem"),
                "--tls-key",
                &p("client.key"),
                "ping",
            ]),
            "TLS handshake with",
        ),
        // No TLS settings at all.
        (
            s(&["--connect", &tls_uri, "ping"]),
            "needs TLS client settings",
        ),
    ];
    for (args, want) in refused {
        let o = guestctl(&args).await;
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.starts_with("guestctl: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    // Plain TCP to the TLS port does not get through either.
    let o = guestctl(&s(&[
        "--connect",
        &format!("tcp://127.0.0.1:{port}"),
        "--connect-timeout",
        "2",
        "--timeout",
        "2",
        "ping",
    ]))
    .await;
    assert!(!o.status.success());
    // A bad TLS file is a usage error.
    let o = guestctl(&s(&[
        "--connect",
        &tls_uri,
        "--tls-ca",
        "/nonexistent/ca.pem",
        "ping",
    ]))
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/ca.pem"));
}
