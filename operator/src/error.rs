//! The controller's error type. Each variant names the reconcile step that failed, keeps the
//! Kubernetes error as its source, and gives the `reason` label of
//! `sis_operator_reconcile_errors_total` ([`Error::metric_label`]).
//!
//! A spec the user got wrong is not an `Error`: see [`crate::validate::ValidationError`], which
//! becomes a `Degraded` condition instead of a retry.

/// Why a reconcile failed (it will be retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} {name}: {source}")]
    Fetch {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("discovering the served API versions: {source}")]
    Discovery {
        #[source]
        source: kube::Error,
    },
    #[error("serializing {kind}: {message}")]
    Serialize { kind: &'static str, message: String },
    #[error("updating status of SisCluster {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("SisCluster has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Low-cardinality label for metrics: the failing step and kind.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Fetch { kind, .. } => format!("fetch_{}", kind.to_ascii_lowercase()),
            Error::Apply { kind, .. } => format!("apply_{}", kind.to_ascii_lowercase()),
            Error::Delete { kind, .. } => format!("delete_{}", kind.to_ascii_lowercase()),
            Error::Discovery { .. } => "discovery".to_owned(),
            Error::Serialize { .. } => "serialize".to_owned(),
            Error::Status { .. } => "status".to_owned(),
            Error::MissingMetadata(_) => "missing_metadata".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_step() {
        let e = Error::Apply {
            kind: "StatefulSet",
            name: "photos-server".into(),
            source: kube::Error::LinesCodecMaxLineLengthExceeded,
        };
        assert_eq!(e.metric_label(), "apply_statefulset");
        assert!(
            e.to_string()
                .starts_with("applying StatefulSet photos-server: ")
        );
        assert_eq!(
            Error::MissingMetadata("uid").metric_label(),
            "missing_metadata"
        );
    }
}
