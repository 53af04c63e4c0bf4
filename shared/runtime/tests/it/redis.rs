use oms_runtime::{Config, Service, redis::Keys};

#[tokio::test]
async fn connects_to_a_single_node_and_keeps_keys_under_the_prefix() {
    let prefix = oms_testkit::redis_prefix();
    let url =
        std::env::var("OMS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = Config::from_lookup(Service::Inventory, |k| match k {
        "OMS_REDIS_URL" => Some(url.clone()),
        "OMS_REDIS_KEY_PREFIX" => Some(prefix.clone()),
        _ => None,
    })
    .unwrap();
    let mut conn = oms_runtime::redis::connect(&config.redis).await.unwrap();
    assert!(oms_runtime::redis::ping(&mut conn).await);
    let keys = Keys::new(&config.redis.key_prefix, "inventory");
    let key = keys.key("acme:SKU-1", "avail");
    assert!(key.starts_with(&prefix));
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(7)
        .query_async(&mut conn)
        .await
        .unwrap();
    let back: i64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(back, 7);
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
}
