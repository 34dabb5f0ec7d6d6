//! The Holdfast node runtime: settings, the event actors of a node, the backend the gateway
//! calls, and the composition of a node. The `holdfast` binary lives in `main.rs`.

pub mod addr;
pub mod backend;
pub mod backup;
pub mod cancel_refunds;
pub mod captcha;
pub mod cluster;
pub mod config;
pub mod deny_list;
pub mod inventories;
pub mod node;
pub mod ops;
pub mod output;
pub mod rate_limits;
pub mod redis_link;
pub mod saga;
pub mod secrets;
pub mod shards_cli;

pub use config::Config;
pub use node::{RunningNode, start};
