//! TLS, mutual TLS, certificate reload, tokens, permissions and quotas on a
//! real broker process. Certificates are generated per test with rcgen.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use strata::auth::token::TokenDigest;
use strata::client::{ClientTls, ConnectOptions, Connection};
use strata::proto::v1::admin_client::AdminClient;
use strata::proto::v1::groups_client::GroupsClient;
use strata::proto::v1::log_client::LogClient;
use strata::proto::v1::{
    AlterTopicConfigRequest, CommitOffsetsRequest, ConsumeRequest, CreatePartitionsRequest,
    CreateTopicRequest, DeleteGroupRequest, DeleteTopicRequest, DescribeGroupRequest,
    DescribeTopicRequest, FetchOffsetsRequest, FetchRequest, HeartbeatRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, ListTopicsRequest, PartitionOffset, ResetOffsetsRequest,
    SubscribeRequest, TopicConfig,
};
use tonic::Code;

use crate::harness::BrokerProcess;
use crate::log_api::{produce_req, record};

/// How long to wait for a broker's line before failing (a failure
/// detector, not synchronisation).
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A CA that signs server and client certificates into a directory.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// Writes `NAME.pem` (the CA), returning its path.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// Signs a leaf certificate and writes `NAME.pem` and `NAME.key`.
    fn leaf(
        &self,
        dir: &Path,
        name: &str,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn server(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        self.leaf(dir, name, "localhost", ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.leaf(dir, name, cn, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tls(ca: &Path, client: Option<&(PathBuf, PathBuf)>, token: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        tls: Some(ClientTls {
            ca: Some(ca.to_path_buf()),
            cert: client.map(|c| c.0.clone()),
            key: client.map(|c| c.1.clone()),
        }),
        token: token.map(str::to_string),
    }
}

async fn list_topics(addr: &str, options: &ConnectOptions) -> Result<Vec<String>, String> {
    let client = strata::client::Client::connect_with(addr, options)
        .await
        .map_err(|e| e.to_string())?;
    let topics = client.list_topics().await.map_err(|e| e.to_string())?;
    Ok(topics.into_iter().map(|t| t.name).collect())
}

// ---------------------------------------------------------------------------
// A broker whose log lines the test can wait for
// ---------------------------------------------------------------------------

/// A broker process with its stderr (info logs) readable line by line.
struct LoggingBroker {
    child: Child,
    addr: String,
    logs: mpsc::Receiver<String>,
}

impl LoggingBroker {
    fn start(data_dir: &Path, extra: &[&str]) -> LoggingBroker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("strata listening on ") {
                    let _ = addr_tx.send(addr.trim().to_string());
                }
            }
        });
        let (log_tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[broker] {line}");
                let _ = log_tx.send(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(PATIENCE)
            .expect("broker did not start");
        LoggingBroker { child, addr, logs }
    }

    /// Waits for a log line containing `text`.
    fn wait_for_log(&self, text: &str) -> String {
        loop {
            match self.logs.recv_timeout(PATIENCE) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with '{text}': {e}"),
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for LoggingBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tls_refuses_plaintext_and_serves_clients_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_pem = ca.write(dir.path(), "ca");
    let (cert, key) = ca.server(dir.path(), "server");
    let other_ca = Ca::new("other CA").write(dir.path(), "other-ca");
    let b = BrokerProcess::start_with(&["--tls-cert", arg(&cert), "--tls-key", arg(&key)]);

    let plain = list_topics(&b.addr, &ConnectOptions::default()).await;
    assert!(plain.is_err(), "plaintext must not be served: {plain:?}");

    let client = strata::client::Client::connect_with(&b.addr, &tls(&ca_pem, None, None))
        .await
        .unwrap();
    client
        .create_topic("secure", 1, TopicConfig::default())
        .await
        .unwrap();
    let appended = client
        .produce(
            "secure",
            None,
            vec![record(b"over tls")],
            strata::client::Acks::Leader,
        )
        .await
        .unwrap();
    assert_eq!(appended[0].base_offset, 0);
    // `localhost` is in the certificate too.
    let port = b.addr.rsplit(':').next().unwrap();
    let by_name = list_topics(&format!("localhost:{port}"), &tls(&ca_pem, None, None)).await;
    assert_eq!(by_name.unwrap(), vec!["secure".to_string()]);

    let wrong_ca = list_topics(&b.addr, &tls(&other_ca, None, None)).await;
    let e = wrong_ca.unwrap_err();
    assert!(
        e.contains("UnknownIssuer") || e.contains("certificate"),
        "{e}"
    );
}

#[tokio::test]
async fn a_stalled_handshake_delays_nobody_and_times_out() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_pem = ca.write(dir.path(), "ca");
    let (cert, key) = ca.server(dir.path(), "server");
    let b = BrokerProcess::start_with(&[
        "--tls-cert",
        arg(&cert),
        "--tls-key",
        arg(&key),
        "--tls-handshake-timeout-ms",
        "200",
    ]);
    // A client that connects and never says hello.
    let mut stalled = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    // Others are served meanwhile.
    assert!(list_topics(&b.addr, &tls(&ca_pem, None, None))
        .await
        .is_ok());
    // The broker gives up on the silent one: it closes the connection.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, stalled.read(&mut buf))
        .await
        .expect("the broker closes a stalled handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_pem = ca.write(dir.path(), "ca");
    let (cert, key) = ca.server(dir.path(), "server");
    let client_cert = ca.client(dir.path(), "client", "some-service");
    let rogue = Ca::new("rogue CA").client(dir.path(), "rogue", "some-service");
    let b = BrokerProcess::start_with(&[
        "--tls-cert",
        arg(&cert),
        "--tls-key",
        arg(&key),
        "--tls-client-ca",
        arg(&ca_pem),
    ]);

    let without = list_topics(&b.addr, &tls(&ca_pem, None, None)).await;
    assert!(without.is_err(), "no client certificate: {without:?}");
    let untrusted = list_topics(&b.addr, &tls(&ca_pem, Some(&rogue), None)).await;
    assert!(
        untrusted.is_err(),
        "certificate from another CA: {untrusted:?}"
    );
    let with = list_topics(&b.addr, &tls(&ca_pem, Some(&client_cert), None)).await;
    assert_eq!(with.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn certificates_reload_on_sighup_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let ca1 = Ca::new("CA one");
    let ca1_pem = ca1.write(dir.path(), "ca1");
    let (cert, key) = ca1.server(dir.path(), "server");
    let b = LoggingBroker::start(
        data.path(),
        &[
            "--tls-cert",
            arg(&cert),
            "--tls-key",
            arg(&key),
            // Only SIGHUP reloads, so the test decides when.
            "--reload-check-interval-ms",
            "0",
        ],
    );
    let old = strata::client::Client::connect_with(&b.addr, &tls(&ca1_pem, None, None))
        .await
        .unwrap();
    old.create_topic("t", 1, TopicConfig::default())
        .await
        .unwrap();

    // New certificate from another CA, written over the old files.
    let ca2 = Ca::new("CA two");
    let ca2_pem = ca2.write(dir.path(), "ca2");
    let (cert2, key2) = ca2.server(dir.path(), "server2");
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    b.signal(libc::SIGHUP);
    b.wait_for_log("TLS certificates reloaded");

    assert_eq!(
        list_topics(&b.addr, &tls(&ca2_pem, None, None))
            .await
            .unwrap(),
        vec!["t".to_string()],
        "a new connection gets the new certificate"
    );
    assert!(
        list_topics(&b.addr, &tls(&ca1_pem, None, None))
            .await
            .is_err(),
        "a new connection no longer gets the old certificate"
    );
    // The old connection still works (it could not reconnect with CA one).
    assert_eq!(old.list_topics().await.unwrap().len(), 1);

    // A broken file at reload keeps the certificate in force.
    std::fs::write(&cert, "not a certificate").unwrap();
    b.signal(libc::SIGHUP);
    let line = b.wait_for_log("TLS reload failed");
    assert!(line.contains(arg(&cert)), "{line}");
    assert_eq!(
        list_topics(&b.addr, &tls(&ca2_pem, None, None))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(old.list_topics().await.unwrap().len(), 1);
}

#[test]
fn bad_security_files_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "garbage").unwrap();
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        "[[principal]]\nname = \"x\"\ntoken_sha256 = \"00\"\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--tls-cert", arg(&bad), "--tls-key", arg(&bad)]);
    assert!(
        e.contains("invalid TLS certificate") && e.contains("bad.pem"),
        "{e}"
    );
    let e = run(&["--tls-cert", arg(&bad)]);
    assert!(e.contains("--tls-cert and --tls-key go together"), "{e}");
    let e = run(&["--auth-file", arg(&auth)]);
    assert!(
        e.contains("principal 'x'") && e.contains("64 hex digits"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// Authentication and permissions
// ---------------------------------------------------------------------------

const ADMIN_TOKEN: &str = "admin-token";
const ALLOWED_TOKEN: &str = "allowed-token";
const DENIED_TOKEN: &str = "denied-token";

fn hash(token: &str) -> String {
    TokenDigest::of(token.as_bytes()).to_hex()
}

fn write_auth_file(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("auth.toml");
    let text = format!(
        r#"
[[principal]]
name = "admin"
token_sha256 = "{}"
permissions = ["admin:*", "produce:*", "consume:*", "group:*"]

[[principal]]
name = "allowed"
token_sha256 = "{}"
permissions = ["produce:t", "consume:t", "admin:t*", "group:g"]

[[principal]]
name = "denied"
token_sha256 = "{}"
permissions = ["produce:other", "consume:other", "admin:other", "group:other"]
{extra}
"#,
        hash(ADMIN_TOKEN),
        hash(ALLOWED_TOKEN),
        hash(DENIED_TOKEN)
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Plaintext options carrying `token`.
fn with_token(token: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        tls: None,
        token: token.map(str::to_string),
    }
}

/// A broker whose auth file adds one principal, `name` with `token`, allowed
/// to produce to and consume topic `t` (with `limits`: extra lines such as
/// quotas), and topic `t`, created by the admin.
async fn broker_with_topic_t(dir: &Path, name: &str, token: &str, limits: &str) -> BrokerProcess {
    let auth = write_auth_file(
        dir,
        &format!(
            "[[principal]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\npermissions = [\"produce:t\", \"consume:t\"]\n{limits}",
            hash(token)
        ),
    );
    let b = BrokerProcess::start_with(&["--auth-file", arg(&auth)]);
    AdminClient::new(connection(&b.addr, Some(ADMIN_TOKEN)).await)
        .create_topic(CreateTopicRequest {
            name: "t".into(),
            partitions: 1,
            config: None,
        })
        .await
        .unwrap();
    b
}

async fn connection(addr: &str, token: Option<&str>) -> Connection {
    let options = with_token(token);
    strata::client::connect::connect(addr, &options)
        .await
        .unwrap()
}

/// Every RPC of `Log`, `Admin` and `Groups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Produce,
    Fetch,
    Subscribe,
    ListOffsets,
    CreateTopic,
    DeleteTopic,
    ListTopics,
    DescribeTopic,
    CreatePartitions,
    AlterTopicConfig,
    Heartbeat,
    LeaveGroup,
    CommitOffsets,
    FetchOffsets,
    DescribeGroup,
    ListGroups,
    DeleteGroup,
    ResetOffsets,
    Consume,
}

const ALL_RPCS: [Rpc; 19] = [
    Rpc::Produce,
    Rpc::Fetch,
    Rpc::Subscribe,
    Rpc::ListOffsets,
    Rpc::CreateTopic,
    Rpc::DeleteTopic,
    Rpc::ListTopics,
    Rpc::DescribeTopic,
    Rpc::CreatePartitions,
    Rpc::AlterTopicConfig,
    Rpc::Heartbeat,
    Rpc::LeaveGroup,
    Rpc::CommitOffsets,
    Rpc::FetchOffsets,
    Rpc::DescribeGroup,
    Rpc::ListGroups,
    Rpc::DeleteGroup,
    Rpc::ResetOffsets,
    Rpc::Consume,
];

/// What a call needs to name: the topics, the group and a member.
struct Target<'a> {
    topic: &'a str,
    new_topic: &'a str,
    group: &'a str,
    member_id: String,
    member_epoch: i32,
}

/// Makes one call; Ok carries how many items a list returned.
async fn call(rpc: Rpc, conn: &Connection, t: &Target<'_>) -> Result<usize, tonic::Status> {
    let mut log = LogClient::new(conn.clone());
    let mut admin = AdminClient::new(conn.clone());
    let mut groups = GroupsClient::new(conn.clone());
    let topic = t.topic.to_string();
    let group = t.group.to_string();
    match rpc {
        Rpc::Produce => log
            .produce(produce_req(t.topic, Some(0), vec![record(b"x")]))
            .await
            .map(|_| 0),
        Rpc::Fetch => log
            .fetch(FetchRequest {
                topic,
                ..Default::default()
            })
            .await
            .map(|_| 0),
        Rpc::Subscribe => log
            .subscribe(SubscribeRequest {
                topic,
                ..Default::default()
            })
            .await
            .map(|_| 0),
        Rpc::ListOffsets => log
            .list_offsets(ListOffsetsRequest {
                topic,
                ..Default::default()
            })
            .await
            .map(|_| 0),
        Rpc::CreateTopic => admin
            .create_topic(CreateTopicRequest {
                name: t.new_topic.into(),
                partitions: 1,
                config: None,
            })
            .await
            .map(|_| 0),
        Rpc::DeleteTopic => admin
            .delete_topic(DeleteTopicRequest {
                name: t.new_topic.into(),
            })
            .await
            .map(|_| 0),
        Rpc::ListTopics => admin
            .list_topics(ListTopicsRequest {})
            .await
            .map(|r| r.into_inner().topics.len()),
        Rpc::DescribeTopic => admin
            .describe_topic(DescribeTopicRequest { name: topic })
            .await
            .map(|_| 0),
        Rpc::CreatePartitions => admin
            .create_partitions(CreatePartitionsRequest {
                name: t.new_topic.into(),
                total_partitions: 2,
            })
            .await
            .map(|_| 0),
        Rpc::AlterTopicConfig => admin
            .alter_topic_config(AlterTopicConfigRequest {
                name: t.new_topic.into(),
                config: Some(TopicConfig {
                    retention_ms: Some(1000),
                    ..Default::default()
                }),
            })
            .await
            .map(|_| 0),
        Rpc::Heartbeat => groups
            .heartbeat(HeartbeatRequest {
                group,
                member_id: t.member_id.clone(),
                member_epoch: t.member_epoch,
                topics: vec![topic],
                ..Default::default()
            })
            .await
            .map(|_| 0),
        Rpc::LeaveGroup => groups
            .leave_group(LeaveGroupRequest {
                group,
                member_id: t.member_id.clone(),
            })
            .await
            .map(|_| 0),
        Rpc::CommitOffsets => groups
            .commit_offsets(CommitOffsetsRequest {
                group,
                member_id: t.member_id.clone(),
                member_epoch: t.member_epoch,
                offsets: vec![PartitionOffset {
                    topic,
                    partition: 0,
                    offset: 1,
                    metadata: String::new(),
                }],
            })
            .await
            .map(|_| 0),
        Rpc::FetchOffsets => groups
            .fetch_offsets(FetchOffsetsRequest {
                group,
                partitions: vec![],
            })
            .await
            .map(|_| 0),
        Rpc::DescribeGroup => groups
            .describe_group(DescribeGroupRequest { group })
            .await
            .map(|_| 0),
        Rpc::ListGroups => groups
            .list_groups(ListGroupsRequest {})
            .await
            .map(|r| r.into_inner().groups.len()),
        Rpc::DeleteGroup => groups
            .delete_group(DeleteGroupRequest { group })
            .await
            .map(|_| 0),
        Rpc::ResetOffsets => groups
            .reset_offsets(ResetOffsetsRequest {
                group,
                topic,
                dry_run: false,
                ..Default::default()
            })
            .await
            .map(|_| 0),
        Rpc::Consume => groups
            .consume(ConsumeRequest {
                group,
                topics: vec![topic],
                auto_offset_reset: 0,
            })
            .await
            .map(|_| 0),
    }
}

/// What the broker holds that a refused request could have changed.
async fn snapshot(admin_conn: &Connection) -> String {
    let mut admin = AdminClient::new(admin_conn.clone());
    let mut groups = GroupsClient::new(admin_conn.clone());
    let topics = admin
        .list_topics(ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut out = format!("{:?}", topics.topics);
    for t in &topics.topics {
        let d = admin
            .describe_topic(DescribeTopicRequest {
                name: t.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        out.push_str(&format!("{:?}", d.topic));
    }
    let g = groups
        .list_groups(ListGroupsRequest {})
        .await
        .unwrap()
        .into_inner();
    out.push_str(&format!("{:?}", g.groups));
    out
}

#[tokio::test]
async fn every_rpc_checks_credentials_then_permissions_with_no_side_effect() {
    let dir = tempfile::tempdir().unwrap();
    let auth = write_auth_file(dir.path(), "");
    let b = BrokerProcess::start_with(&[
        "--auth-file",
        arg(&auth),
        "--metrics-listen",
        "127.0.0.1:0",
        "--auth-metrics",
        "open",
    ]);
    let admin = connection(&b.addr, Some(ADMIN_TOKEN)).await;
    let mut a = AdminClient::new(admin.clone());
    a.create_topic(CreateTopicRequest {
        name: "t".into(),
        partitions: 1,
        config: None,
    })
    .await
    .unwrap();
    LogClient::new(admin.clone())
        .produce(produce_req("t", Some(0), vec![record(b"first")]))
        .await
        .unwrap();
    let before = snapshot(&admin).await;

    let target = Target {
        topic: "t",
        new_topic: "t2",
        group: "g",
        member_id: String::new(),
        member_epoch: 0,
    };
    let none = connection(&b.addr, None).await;
    let wrong = connection(&b.addr, Some("not-a-registered-token")).await;
    let denied = connection(&b.addr, Some(DENIED_TOKEN)).await;
    for rpc in ALL_RPCS {
        for (who, conn) in [("no token", &none), ("wrong token", &wrong)] {
            let e = call(rpc, conn, &target).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{rpc:?} with {who}: {e:?}");
        }
        match (rpc, call(rpc, &denied, &target).await) {
            // Lists are filtered instead: nothing the principal may see.
            (Rpc::ListTopics | Rpc::ListGroups, Ok(n)) => assert_eq!(n, 0, "{rpc:?}"),
            (_, Err(e)) => {
                assert_eq!(e.code(), Code::PermissionDenied, "{rpc:?}: {e:?}");
                assert!(e.message().contains("principal 'denied'"), "{e:?}");
            }
            (_, Ok(_)) => panic!("{rpc:?} allowed without permission"),
        }
    }
    assert_eq!(
        snapshot(&admin).await,
        before,
        "a refused request changed something"
    );
    let failures = crate::metrics::scrape(&b).await["strata_auth_failures_total"];
    assert_eq!(
        failures,
        2.0 * ALL_RPCS.len() as f64,
        "each refusal counted once"
    );

    // The same calls with the permissions, in an order where each can succeed.
    let allowed = connection(&b.addr, Some(ALLOWED_TOKEN)).await;
    for rpc in [
        Rpc::Produce,
        Rpc::Fetch,
        Rpc::Subscribe,
        Rpc::ListOffsets,
        Rpc::CreateTopic,
        Rpc::CreatePartitions,
        Rpc::AlterTopicConfig,
        Rpc::DescribeTopic,
        Rpc::DeleteTopic,
    ] {
        call(rpc, &allowed, &target)
            .await
            .unwrap_or_else(|e| panic!("{rpc:?}: {e:?}"));
    }
    assert_eq!(call(Rpc::ListTopics, &allowed, &target).await.unwrap(), 1);
    let mut g = GroupsClient::new(allowed.clone());
    let joined = g
        .heartbeat(HeartbeatRequest {
            group: "g".into(),
            topics: vec!["t".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let member = Target {
        member_id: joined.member_id,
        member_epoch: joined.member_epoch,
        ..target
    };
    for rpc in [
        Rpc::Heartbeat,
        Rpc::CommitOffsets,
        Rpc::FetchOffsets,
        Rpc::DescribeGroup,
        Rpc::ResetOffsets,
        Rpc::LeaveGroup,
        Rpc::DeleteGroup,
        Rpc::Consume,
    ] {
        call(rpc, &allowed, &member)
            .await
            .unwrap_or_else(|e| panic!("{rpc:?}: {e:?}"));
    }
    assert_eq!(call(Rpc::ListGroups, &allowed, &member).await.unwrap(), 1);

    // A group permission alone does not open the group's topics.
    let e = g
        .heartbeat(HeartbeatRequest {
            group: "g".into(),
            topics: vec!["secret".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("consume from topic 'secret'"), "{e:?}");
}

#[tokio::test]
async fn health_is_open_and_reflection_needs_a_principal() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let dir = tempfile::tempdir().unwrap();
    let auth = write_auth_file(dir.path(), "");
    let b = BrokerProcess::start_with(&["--auth-file", arg(&auth)]);
    let none = connection(&b.addr, None).await;
    let health = HealthClient::new(none.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");

    let list = || {
        tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    let e = ServerReflectionClient::new(none)
        .server_reflection_info(list())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let denied = connection(&b.addr, Some(DENIED_TOKEN)).await;
    let mut stream = ServerReflectionClient::new(denied)
        .server_reflection_info(list())
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
}

#[tokio::test]
async fn mtls_subject_names_the_principal() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_pem = ca.write(dir.path(), "ca");
    let (cert, key) = ca.server(dir.path(), "server");
    let billing = ca.client(dir.path(), "billing", "billing");
    let stranger = ca.client(dir.path(), "stranger", "stranger");
    let auth = write_auth_file(
        dir.path(),
        "[[principal]]\nname = \"billing\"\ncert_subject = \"billing\"\npermissions = [\"admin:bills\"]\n",
    );
    let b = BrokerProcess::start_with(&[
        "--tls-cert",
        arg(&cert),
        "--tls-key",
        arg(&key),
        "--tls-client-ca",
        arg(&ca_pem),
        "--auth-file",
        arg(&auth),
    ]);
    let as_billing =
        strata::client::Client::connect_with(&b.addr, &tls(&ca_pem, Some(&billing), None))
            .await
            .unwrap();
    as_billing
        .create_topic("bills", 1, TopicConfig::default())
        .await
        .unwrap();
    let e = as_billing
        .create_topic("other", 1, TopicConfig::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = list_topics(&b.addr, &tls(&ca_pem, Some(&stranger), None))
        .await
        .unwrap_err();
    assert!(
        e.starts_with("UNAUTHENTICATED") && e.contains("matches no principal"),
        "{e}"
    );
    // A token wins over the certificate.
    let admin = list_topics(&b.addr, &tls(&ca_pem, Some(&stranger), Some(ADMIN_TOKEN)))
        .await
        .unwrap();
    assert_eq!(admin, vec!["bills".to_string()]);
}

// ---------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------

#[tokio::test]
async fn quotas_refuse_with_a_retry_hint_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // 10 bytes/s: after the first request the bucket is seconds in debt, so
    // the test does not depend on how fast it runs.
    let b = broker_with_topic_t(
        dir.path(),
        "slow",
        "slow-token",
        "produce_bytes_per_sec = 10\nfetch_bytes_per_sec = 10\n",
    )
    .await;
    let admin = connection(&b.addr, Some(ADMIN_TOKEN)).await;
    let slow = connection(&b.addr, Some("slow-token")).await;
    let mut log = LogClient::new(slow.clone());
    log.produce(produce_req("t", Some(0), vec![record(&[b'x'; 100])]))
        .await
        .unwrap();
    let e = log
        .produce(produce_req("t", Some(0), vec![record(&[b'y'; 100])]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message()
            .contains("produce quota of 10 bytes/s; retry in"),
        "{e:?}"
    );
    let hint: u64 = e
        .metadata()
        .get("retry-after-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(hint > 1000, "about ten seconds of debt: {hint} ms");
    let client = strata::client::Client::connect_with(&b.addr, &with_token(Some("slow-token")))
        .await
        .unwrap();
    let err = client
        .produce(
            "t",
            Some(0),
            vec![record(b"z")],
            strata::client::Acks::Leader,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.retry_after().map(|d| d.as_millis() > 1000),
        Some(true),
        "{err}"
    );
    // Nothing of the refused requests was appended; others are not throttled.
    let mut admin_log = LogClient::new(admin.clone());
    let hw = admin_log
        .list_offsets(ListOffsetsRequest {
            topic: "t".into(),
            spec: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .offset;
    assert_eq!(hw, 1);
    admin_log
        .produce(produce_req("t", Some(0), vec![record(&[b'a'; 100])]))
        .await
        .unwrap();

    // Fetch: the first read puts the quota in debt, the next is refused.
    log.fetch(FetchRequest {
        topic: "t".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let e = log
        .fetch(FetchRequest {
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("fetch quota"), "{e:?}");
    assert!(e.metadata().get("retry-after-ms").is_some());
}

#[tokio::test]
async fn the_producer_waits_out_quota_hints_and_stores_everything_once() {
    use strata::client::{Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    // 4 KiB/s with 2 KiB records sent one per request: the first fits the
    // burst, most of the rest are refused with hints and must be resent.
    let b = broker_with_topic_t(
        dir.path(),
        "app",
        "app-token",
        "produce_bytes_per_sec = 4096\n",
    )
    .await;
    let client = strata::client::Client::connect_with(&b.addr, &with_token(Some("app-token")))
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_records: 1,
            ..Default::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..6u8 {
        let value = vec![b'0' + i; 2048];
        deliveries.push(
            producer
                .send_to("t", Some(0), record(&value))
                .await
                .unwrap(),
        );
    }
    let mut offsets = Vec::new();
    for d in deliveries {
        offsets.push(d.wait().await.unwrap().offset);
    }
    producer.close().await;
    assert_eq!(offsets, vec![0, 1, 2, 3, 4, 5], "in order, each once");
    let fetched = client.fetch("t", 0, 0, 0, 0).await.unwrap();
    let values: Vec<u8> = strata::client::ConsumedRecord::from_response(0, fetched)
        .into_iter()
        .map(|r| r.value[0])
        .collect();
    assert_eq!(values, b"012345".to_vec());
}

#[tokio::test]
async fn the_auth_file_reloads_on_sighup_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let auth = write_auth_file(dir.path(), "");
    let b = LoggingBroker::start(
        data.path(),
        &["--auth-file", arg(&auth), "--reload-check-interval-ms", "0"],
    );
    let names = |token: &'static str| {
        let addr = b.addr.clone();
        async move { list_topics(&addr, &with_token(Some(token))).await }
    };
    assert!(names("new-token")
        .await
        .unwrap_err()
        .starts_with("UNAUTHENTICATED"));
    write_auth_file(
        dir.path(),
        &format!(
            "[[principal]]\nname = \"new\"\ntoken_sha256 = \"{}\"\npermissions = []\n",
            hash("new-token")
        ),
    );
    b.signal(libc::SIGHUP);
    b.wait_for_log("auth file reloaded");
    assert_eq!(names("new-token").await.unwrap(), Vec::<String>::new());

    std::fs::write(&auth, "[[principal]]\nname = \"broken\"\n").unwrap();
    b.signal(libc::SIGHUP);
    b.wait_for_log("auth file reload failed");
    assert!(
        names("new-token").await.is_ok(),
        "the previous principals stay"
    );
    assert!(names(ADMIN_TOKEN).await.is_ok());
}

/// `GET /metrics` on `addr` with an optional bearer token; the status code.
async fn metrics_status(addr: &str, token: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line")
}

#[tokio::test]
async fn metrics_need_a_principal_unless_opened() {
    let dir = tempfile::tempdir().unwrap();
    let auth = write_auth_file(dir.path(), "");
    let b =
        BrokerProcess::start_with(&["--auth-file", arg(&auth), "--metrics-listen", "127.0.0.1:0"]);
    let addr = b.metrics_addr.clone().expect("metrics address");
    assert_eq!(metrics_status(&addr, None).await, 401);
    assert_eq!(metrics_status(&addr, Some("wrong-token")).await, 401);
    // Any principal may scrape: metrics need no particular permission.
    assert_eq!(metrics_status(&addr, Some(DENIED_TOKEN)).await, 200);
    let open = BrokerProcess::start_with(&[
        "--auth-file",
        arg(&auth),
        "--metrics-listen",
        "127.0.0.1:0",
        "--auth-metrics",
        "open",
    ]);
    let addr = open.metrics_addr.clone().expect("metrics address");
    assert_eq!(metrics_status(&addr, None).await, 200);
}
