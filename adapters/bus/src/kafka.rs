//! [`KafkaBus`]: the bus on a Kafka cluster, through rdkafka (librdkafka built from source,
//! without TLS or SASL).
//!
//! The producer is idempotent with `acks=all`, so a retried send is written once and in order;
//! `publish` returns after every record's delivery report. Each subscription is one consumer of
//! a Kafka consumer group that never commits by itself: `commit` stores offset + 1 of the
//! delivery's partition, synchronously. Missing topics are created on first use.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::{Bus, Delivery, Error, Record, Subscription};

/// Settings of a [`KafkaBus`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaBusOptions {
    /// `host:port,host:port` of the bootstrap brokers.
    pub brokers: String,
    /// Prepended to every topic and consumer group name on the cluster; deliveries carry the
    /// names without it. Lets several deployments or test runs share one cluster.
    pub prefix: String,
    /// Partitions of the topics this bus creates.
    pub partitions: i32,
    /// Replication factor of the topics this bus creates.
    pub replication_factor: i32,
    /// How long a publish may try to deliver a record before it fails (`message.timeout.ms`).
    pub delivery_timeout_ms: u64,
    /// Further librdkafka properties for every client, e.g. `client.id`.
    pub client_config: BTreeMap<String, String>,
    /// Further librdkafka properties for the producer only, e.g. `linger.ms`.
    pub producer_config: BTreeMap<String, String>,
    /// Further librdkafka properties for the consumers only, e.g. `session.timeout.ms`.
    pub consumer_config: BTreeMap<String, String>,
}

impl Default for KafkaBusOptions {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            prefix: String::new(),
            partitions: 3,
            replication_factor: 1,
            delivery_timeout_ms: 30_000,
            client_config: BTreeMap::new(),
            producer_config: BTreeMap::new(),
            consumer_config: BTreeMap::new(),
        }
    }
}

/// How long topic creation may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The bus on a Kafka cluster; cheap to clone.
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    options: KafkaBusOptions,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Full names of the topics known to exist.
    topics: Mutex<HashSet<String>>,
}

impl fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.inner.options.brokers)
            .field("prefix", &self.inner.options.prefix)
            .finish_non_exhaustive()
    }
}

fn kafka_error(error: KafkaError) -> Error {
    Error::Backend(error.to_string())
}

impl KafkaBus {
    /// The bus on the brokers `brokers` (`host:port,…`), with every topic and group name
    /// prefixed by `prefix`, and the other settings at their defaults. Clients connect lazily.
    pub fn connect(brokers: &str, prefix: &str) -> Result<Self, Error> {
        Self::with_options(KafkaBusOptions {
            brokers: brokers.to_owned(),
            prefix: prefix.to_owned(),
            ..KafkaBusOptions::default()
        })
    }

    /// The bus with `options`. Clients connect lazily.
    pub fn with_options(options: KafkaBusOptions) -> Result<Self, Error> {
        let producer = options
            .client_config_with(&options.producer_config)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                options.delivery_timeout_ms.to_string(),
            )
            // The partitioner of the Java clients, so every client puts a key in one partition.
            .set("partitioner", "murmur2_random")
            .create()
            .map_err(kafka_error)?;
        let admin = options.client_config().create().map_err(kafka_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                producer,
                admin,
                topics: Mutex::new(HashSet::new()),
            }),
        })
    }
}

impl KafkaBusOptions {
    fn client_config(&self) -> ClientConfig {
        self.client_config_with(&BTreeMap::new())
    }

    /// The settings of every client, then `more`. The bus's own settings are set after these,
    /// so they cannot be overridden.
    fn client_config_with(&self, more: &BTreeMap<String, String>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in self.client_config.iter().chain(more) {
            config.set(key, value);
        }
        config
    }
}

impl Inner {
    fn full_name(&self, name: &str) -> String {
        format!("{}{name}", self.options.prefix)
    }

    /// Creates those of `topics` (full names) not known to exist; one that exists already is
    /// fine.
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), Error> {
        let missing: Vec<&String> = {
            let known = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            let mut missing: Vec<&String> = topics.iter().filter(|t| !known.contains(*t)).collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.options.partitions,
                    TopicReplication::Fixed(self.options.replication_factor),
                )
            })
            .collect();
        let admin_options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .admin
            .create_topics(&new_topics, &admin_options)
            .await
            .map_err(kafka_error)?;
        let mut known = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        for result in results {
            match result {
                Ok(name) | Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    known.insert(name);
                }
                Err((name, code)) => {
                    return Err(Error::Backend(format!("create topic {name}: {code}")));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn publish(&self, records: &[Record]) -> Result<(), Error> {
        let inner = &*self.inner;
        let topics: Vec<String> = records.iter().map(|r| inner.full_name(&r.topic)).collect();
        inner.ensure_topics(&topics).await?;
        // Enqueued one by one in order (a full queue is waited out, not skipped), so records of
        // one key keep their order; then every delivery report is awaited.
        let mut reports = Vec::with_capacity(records.len());
        for (record, topic) in records.iter().zip(&topics) {
            let mut future_record = FutureRecord::to(topic)
                .key(record.key.as_str())
                .payload(record.payload.as_slice());
            loop {
                match inner.producer.send_result(future_record) {
                    Ok(report) => {
                        reports.push(report);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        future_record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((error, _)) => return Err(kafka_error(error)),
                }
            }
        }
        for report in reports {
            match report.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(kafka_error(error)),
                Err(_canceled) => {
                    return Err(Error::Backend("the producer dropped a delivery".to_owned()));
                }
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Box<dyn Subscription>, Error> {
        if topics.is_empty() {
            return Err(Error::Backend("subscribe to no topic".to_owned()));
        }
        let inner = &*self.inner;
        let full_topics: Vec<String> = topics.iter().map(|t| inner.full_name(t)).collect();
        inner.ensure_topics(&full_topics).await?;
        let group = inner.full_name(group);
        let consumer: StreamConsumer = inner
            .options
            .client_config_with(&inner.options.consumer_config)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(kafka_error)?;
        let topic_refs: Vec<&str> = full_topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topic_refs).map_err(kafka_error)?;
        tracing::debug!(%group, topics = ?full_topics, "kafka bus subscription");
        Ok(Box::new(KafkaSubscription {
            consumer: Some(Arc::new(consumer)),
            group,
            prefix: inner.options.prefix.clone(),
        }))
    }
}

/// One consumer of a Kafka consumer group. Dropping it leaves the group; the partitions it read
/// go to the other members, from the group's last commit.
///
/// Call `next` regularly: a member that is not polled holds up its group's rebalances, and one
/// silent for `max.poll.interval.ms` (5 minutes) is expelled from the group.
struct KafkaSubscription {
    /// Shared with the blocking task of a synchronous commit; `None` only while dropping.
    consumer: Option<Arc<StreamConsumer>>,
    group: String,
    prefix: String,
}

impl fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KafkaSubscription {
    fn consumer(&self) -> &Arc<StreamConsumer> {
        self.consumer
            .as_ref()
            .expect("the consumer is taken only by drop")
    }
}

impl Drop for KafkaSubscription {
    /// Closing the consumer leaves the group, which waits for the coordinator: done on a
    /// blocking thread when there is a runtime.
    fn drop(&mut self) {
        let consumer = self.consumer.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || drop(consumer));
        }
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Delivery, Error> {
        let message = self.consumer().recv().await.map_err(kafka_error)?;
        let topic = message.topic();
        let topic = topic.strip_prefix(self.prefix.as_str()).unwrap_or(topic);
        Ok(Delivery {
            topic: topic.to_owned(),
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            payload: message.payload().unwrap_or_default().to_vec(),
            partition: message.partition(),
            offset: message.offset(),
        })
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), Error> {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &format!("{}{}", self.prefix, delivery.topic),
                delivery.partition,
                Offset::Offset(delivery.offset + 1),
            )
            .map_err(kafka_error)?;
        let consumer = Arc::clone(self.consumer());
        // A synchronous commit blocks until the coordinator answers: not on a runtime thread.
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
            .await
            .map_err(|e| Error::Backend(format!("commit task failed: {e}")))?
            .map_err(kafka_error)
    }
}
