//! Redis: one connection type for a single node and for Redis Cluster, and
//! the key layout `<prefix>oms:<service>:{<hash tag>}:<rest>`, whose hash
//! tag keeps every key a script touches in one cluster slot.
use crate::config::RedisConfig;
use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

/// A multiplexed, auto-reconnecting connection to a node or a cluster;
/// cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to the cluster when `cluster_nodes` is set, else to `url`.
pub async fn connect(cfg: &RedisConfig) -> anyhow::Result<RedisConn> {
    // A WAIT for replicas holds its answer up to its timeout: the client
    // must wait longer than that before it gives the answer up.
    let response =
        (cfg.min_replicas > 0).then(|| cfg.replica_timeout + std::time::Duration::from_millis(500));
    if cfg.cluster_nodes.is_empty() {
        let client = redis::Client::open(cfg.url.as_str())?;
        let conn = match response {
            Some(t) => {
                let config = ConnectionManagerConfig::new().set_response_timeout(Some(t));
                ConnectionManager::new_with_config(client, config).await?
            }
            None => ConnectionManager::new(client).await?,
        };
        Ok(RedisConn::Single(conn))
    } else {
        let mut builder = ClusterClient::builder(cfg.cluster_nodes.clone());
        if let Some(t) = response {
            builder = builder.response_timeout(t);
        }
        Ok(RedisConn::Cluster(
            builder.build()?.get_async_connection().await?,
        ))
    }
}

/// Waits until `replicas` replicas of the node holding `key` have every
/// write sent before on this connection (`WAIT`; on a cluster, sent to
/// that node). Returns how many had them within `timeout`.
pub async fn wait_for_replicas(
    conn: &mut RedisConn,
    key: &str,
    replicas: u32,
    timeout: std::time::Duration,
) -> redis::RedisResult<i64> {
    let mut wait = redis::cmd("WAIT");
    wait.arg(replicas)
        .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    match conn {
        RedisConn::Single(c) => wait.query_async(c).await,
        RedisConn::Cluster(c) => {
            use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
            let node = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
            let acked = c.route_command(wait, RoutingInfo::SingleNode(node)).await?;
            Ok(redis::from_redis_value(acked)?)
        }
    }
}

/// Builds keys for one service.
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
}

impl Keys {
    pub fn new(prefix: &str, service: &str) -> Self {
        Self {
            base: format!("{prefix}oms:{service}:"),
        }
    }

    /// `<prefix>oms:<service>:{<tag>}:<rest>`.
    pub fn key(&self, tag: &str, rest: &str) -> String {
        format!("{}{{{tag}}}:{rest}", self.base)
    }
}

/// Is Redis answering? Used by health checks.
pub async fn ping(conn: &mut RedisConn) -> bool {
    let ping = redis::cmd("PING");
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        ping.query_async::<String>(conn),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_carry_hash_tags() {
        let k = super::Keys::new("t1:", "inventory");
        assert_eq!(
            k.key("acme:SKU-1", "avail"),
            "t1:oms:inventory:{acme:SKU-1}:avail"
        );
    }
}
