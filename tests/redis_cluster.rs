//! The Redis store against a real Redis Cluster (3 masters, 3 replicas) and a real Sentinel set-up,
//! all on loopback ports.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use cluster::{RedisCluster, SentinelSetup};

#[test]
fn harness_forms_a_cluster_and_a_sentinel_setup() {
    let c = RedisCluster::start(3, 1);
    assert_eq!(c.masters().len(), 3);
    assert_eq!(c.replicas().len(), 3);
    let r = c.replica_of(c.masters()[0]);
    c.manual_failover(r);
    assert_eq!(c.masters().len(), 3);
    let s = SentinelSetup::start();
    let m = s.master();
    s.failover();
    assert_ne!(s.master(), m);
}
