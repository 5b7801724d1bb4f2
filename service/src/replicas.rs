//! Servers sharing one store (S3: N replicas over one bucket) learn of each other's
//! deletes by following the store's shared change log: every poll drops the deleted
//! MD5s from this server's cache at once and merges them into its change feed, which
//! its agents poll ([`crate::feed`]). A store only one process writes (disk) has no
//! shared log and the follower ends at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::{AppState, ImageKey};

/// How often a server reads the shared log by default. With the log's settle time (4 s)
/// and an agent's poll (2 s of its 10 s window), a delete is unserved everywhere in ~7 s.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// Follows the store's shared change log until `stop`.
pub async fn follow_shared_log(state: AppState, every: Duration, stop: CancellationToken) {
    let Some(feed) = state.role.feed().cloned() else {
        return;
    };
    let mut cursor: Option<String> = None;
    let mut failing = false;
    loop {
        match state.store.shared_changes(cursor.as_deref()).await {
            Ok(None) => return,
            Ok(Some(changes)) => {
                for md5 in feed.merge(&changes) {
                    state.cache.remove_where(|k: &ImageKey| k.md5() == &md5);
                }
                cursor = Some(changes.cursor);
                if failing {
                    tracing::info!("shared change log readable again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the shared change log");
                    failing = true;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
