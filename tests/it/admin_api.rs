//! The `Admin` service and restarts on a real broker process.

use strata::proto::v1::{
    AlterTopicConfigRequest, CreatePartitionsRequest, CreateTopicRequest, DeleteTopicRequest,
    DescribeTopicRequest, ListTopicsRequest, TopicConfig,
};
use tonic::Code;

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, fetch_all, produce_req, record};

async fn describe(b: &BrokerProcess, name: &str) -> strata::proto::v1::TopicDescription {
    b.admin()
        .await
        .describe_topic(DescribeTopicRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap()
}

#[tokio::test]
async fn topic_lifecycle() {
    let b = BrokerProcess::start();
    let mut admin = b.admin().await;
    let created = admin
        .create_topic(CreateTopicRequest {
            name: "orders".into(),
            partitions: 3,
            config: Some(TopicConfig {
                retention_ms: Some(3_600_000),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(created.partitions.len(), 3);
    let config = created.config.unwrap();
    assert_eq!(config.retention_ms, Some(3_600_000));
    assert_eq!(
        config.segment_bytes,
        Some(1 << 30),
        "defaults are filled in"
    );

    let e = admin
        .create_topic(CreateTopicRequest {
            name: "orders".into(),
            partitions: 1,
            config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    for bad in ["", ".", "..", "a b", "x/y", &"n".repeat(250)] {
        let e = admin
            .create_topic(CreateTopicRequest {
                name: bad.into(),
                partitions: 1,
                config: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
        assert!(e.message().contains("[A-Za-z0-9._-]"), "{}", e.message());
    }
    let e = admin
        .create_topic(CreateTopicRequest {
            name: "huge".into(),
            partitions: 10_001,
            config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("10000"), "{}", e.message());

    let mut log = b.log().await;
    log.produce(produce_req(
        "orders",
        Some(1),
        vec![record(b"a"), record(b"b")],
    ))
    .await
    .unwrap();
    let d = describe(&b, "orders").await;
    assert_eq!(d.partitions[1].high_watermark, 2);
    assert!(d.partitions[1].size_bytes > 0);
    assert_eq!(d.partitions[1].segment_count, 1);

    let grown = admin
        .create_partitions(CreatePartitionsRequest {
            name: "orders".into(),
            total_partitions: 5,
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(grown.partitions.len(), 5);
    let e = admin
        .create_partitions(CreatePartitionsRequest {
            name: "orders".into(),
            total_partitions: 4,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    log.produce(produce_req("orders", Some(4), vec![record(b"new")]))
        .await
        .unwrap();

    let altered = admin
        .alter_topic_config(AlterTopicConfigRequest {
            name: "orders".into(),
            config: Some(TopicConfig {
                retention_bytes: Some(1 << 30),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap()
        .config
        .unwrap();
    assert_eq!(altered.retention_bytes, Some(1 << 30));
    assert_eq!(altered.retention_ms, Some(3_600_000), "unset fields stay");
    let e = admin
        .alter_topic_config(AlterTopicConfigRequest {
            name: "orders".into(),
            config: Some(TopicConfig {
                segment_bytes: Some(10),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let list = admin
        .list_topics(ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].name.as_str(), list[0].partitions), ("orders", 5));

    admin
        .delete_topic(DeleteTopicRequest {
            name: "orders".into(),
        })
        .await
        .unwrap();
    let e = admin
        .delete_topic(DeleteTopicRequest {
            name: "orders".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        !b.data_dir.join("topics/orders").exists(),
        "files are removed"
    );
    // The name can be reused at once, and the new topic starts empty.
    create_topic(&b, "orders", 1).await;
    assert_eq!(describe(&b, "orders").await.partitions[0].high_watermark, 0);
}

#[tokio::test]
async fn topics_and_data_survive_restart_and_kill_9() {
    let mut b = BrokerProcess::start();
    create_topic(&b, "keep", 2).await;
    let mut log = b.log().await;
    for i in 0..50 {
        log.produce(produce_req(
            "keep",
            Some(i % 2),
            vec![record(format!("r{i}").as_bytes())],
        ))
        .await
        .unwrap();
    }
    assert!(b.stop().await, "SIGTERM gives a clean exit 0");
    assert!(
        b.data_dir.join(".clean-shutdown").exists(),
        "a clean stop leaves its marker"
    );
    b.restart();
    assert!(
        !b.data_dir.join(".clean-shutdown").exists(),
        "the marker goes at start-up, so a later crash is not taken for a clean stop"
    );
    assert_eq!(fetch_all(&b, "keep", 0, 0).await.len(), 25);
    let mut log = b.log().await;
    for i in 50..60 {
        log.produce(produce_req(
            "keep",
            Some(i % 2),
            vec![record(format!("r{i}").as_bytes())],
        ))
        .await
        .unwrap();
    }
    b.kill();
    b.restart();
    let p1 = fetch_all(&b, "keep", 1, 0).await;
    assert_eq!(p1.len(), 30);
    assert_eq!(
        p1[29].1.value, b"r59",
        "acknowledged records survive kill -9"
    );
    let d = describe(&b, "keep").await;
    assert_eq!(d.partitions.len(), 2);
    assert_eq!(d.partitions[0].truncated_bytes, 0);
}
