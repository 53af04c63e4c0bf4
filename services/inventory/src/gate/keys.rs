use oms_kernel::Tenant;
use oms_runtime::redis::Keys;

/// Key layout of the gate. Every key of a tenant carries the hash tag
/// `{<tenant>}`: one tenant's keys share a cluster slot (so a reservation
/// of many SKUs is one atomic script), tenants spread over the cluster.
#[derive(Debug, Clone)]
pub struct GateKeys(Keys);

impl GateKeys {
    pub fn new(prefix: &str) -> Self {
        Self(Keys::new(prefix, "inventory"))
    }
    pub fn ready(&self, t: &Tenant) -> String {
        self.0.key(t.as_str(), "ready")
    }
    /// Each writer's count of its scripts in the current epoch (writes.rs).
    pub fn writes(&self, t: &Tenant) -> String {
        self.0.key(t.as_str(), "writes")
    }
    pub fn expiry(&self, t: &Tenant) -> String {
        self.0.key(t.as_str(), "expiry")
    }
    pub fn reservation(&self, t: &Tenant, id: &str) -> String {
        self.0.key(t.as_str(), &format!("res:{id}"))
    }
    pub fn avail(&self, t: &Tenant, sku: &str) -> String {
        self.0.key(t.as_str(), &format!("avail:{sku}"))
    }
}
