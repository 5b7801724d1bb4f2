//! The node's role: a **server** owns its store (local disk or a bucket shared with other
//! servers) and publishes a change feed of deletes for agents; an **agent** stores
//! nothing, caches and resizes in front of a server, and learns of deletes by polling
//! that feed. Where bytes live is the store's business ([`crate::store`]); what a node
//! exposes and records is decided here, instead of asking the store what it is.

use std::sync::Arc;

use crate::feed::ChangeFeed;
use crate::id::Md5Hex;

/// What this process is.
#[derive(Debug, Clone)]
pub enum Role {
    /// Stores images; serves the internal API and the change feed to agents.
    Server { feed: Arc<ChangeFeed> },
    /// Caches and resizes in front of a server (its store is the server's client).
    Agent,
}

impl Role {
    /// A server with a feed private to this process (disk storage).
    pub fn server() -> Self {
        Self::Server {
            feed: Arc::new(ChangeFeed::new(crate::feed::DEFAULT_CAPACITY)),
        }
    }

    /// A server over storage shared with other servers: its feed is merged from the
    /// store's shared log named `log_id`.
    pub fn shared_server(log_id: String) -> Self {
        Self::Server {
            feed: Arc::new(ChangeFeed::shared(crate::feed::DEFAULT_CAPACITY, log_id)),
        }
    }

    /// `server` or `agent` (metrics label, logs).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Server { .. } => "server",
            Self::Agent => "agent",
        }
    }

    /// The internal API (objects, names, change feed) is for agents to call on a server.
    pub fn serves_internal_api(&self) -> bool {
        matches!(self, Self::Server { .. })
    }

    /// The change feed, on a server.
    pub fn feed(&self) -> Option<&Arc<ChangeFeed>> {
        match self {
            Self::Server { feed } => Some(feed),
            Self::Agent => None,
        }
    }

    /// Notes a delete made through this node (a server's feed; nothing on an agent,
    /// whose server records it).
    pub fn record_delete(&self, md5: &Md5Hex) {
        if let Self::Server { feed } = self {
            feed.record(md5);
        }
    }
}
