//! Work done under a lease: kept alive while the work runs, and given up the moment
//! the lease is lost to another host.

use super::Service;
use std::time::Duration;

/// This process's name in leases, and their length.
#[derive(Debug, Clone)]
pub struct Leases {
    pub owner: String,
    pub lease: Duration,
}

impl Service {
    /// Whether this host holds (or now took, or kept) the lease on periodic job `name`
    /// for `lease` from now; a failure to ask counts as not holding it.
    pub async fn holds_job(&self, name: &str, lease: Duration) -> bool {
        match self.store.hold_lease(name, &self.leases.owner, lease).await {
            Ok(held) => held,
            Err(err) => {
                tracing::warn!(%err, job = name, "cannot take the job's lease");
                false
            }
        }
    }
}

/// Runs `work`, extending its lease of length `lease` every third of it with `extend`
/// (work may outlast a lease), so that no other host takes the work up meanwhile.
/// Once `extend` finds the lease lost, the work is dropped where it stands: `None`.
/// A failure to extend is logged and tried again at the next third.
pub async fn under_lease<T, E: std::fmt::Display, Extended: Future<Output = Result<bool, E>>>(
    lease: Duration,
    work: impl Future<Output = T>,
    mut extend: impl FnMut() -> Extended,
) -> Option<T> {
    tokio::pin!(work);
    let third = (lease / 3).max(Duration::from_millis(1));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + third, third);
    loop {
        tokio::select! {
            done = &mut work => return Some(done),
            _ = renew.tick() => match extend().await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(err) => tracing::warn!(%err, "cannot extend a lease"),
            },
        }
    }
}
