//! Labels every child carries (`app.kubernetes.io/*`), and the smaller set that selects pods.
//!
//! Selector labels never change for the life of a SisCluster (Deployment and StatefulSet
//! selectors are immutable), so they leave out `version` and `managed-by`.

use std::collections::BTreeMap;

use crate::validate::ValidatedCluster;

/// `app.kubernetes.io/name` of everything the operator creates.
pub const APP_NAME: &str = "sis";
/// `app.kubernetes.io/managed-by`, also the server-side-apply field manager.
pub const MANAGED_BY: &str = "sis-operator";

/// The two halves of a SisCluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Server,
    Agent,
}

impl Component {
    /// The `app.kubernetes.io/component` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Server => "server",
            Component::Agent => "agent",
        }
    }

    /// Name of this component's workload and Service: `<cluster>-server` / `<cluster>-agent`.
    pub fn resource_name(self, cluster: &str) -> String {
        format!("{cluster}-{}", self.as_str())
    }
}

/// Labels that select the component's pods.
pub fn selector_labels(
    cluster: &ValidatedCluster,
    component: Component,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        (
            "app.kubernetes.io/instance".to_owned(),
            cluster.name.clone(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            component.as_str().to_owned(),
        ),
    ])
}

/// All standard labels of a child object or pod.
pub fn labels(cluster: &ValidatedCluster, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster, component);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGED_BY.to_owned(),
    );
    if let Some(version) = version_label(&cluster.image) {
        labels.insert("app.kubernetes.io/version".to_owned(), version);
    }
    labels
}

/// The image tag as a label value: `registry:5000/sis:0.1.0` → `0.1.0`; `sis` → `latest`;
/// digests and tags that are not valid label values give no label.
pub fn version_label(image: &str) -> Option<String> {
    if image.contains('@') {
        return None;
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    let tag = match last_segment.rsplit_once(':') {
        Some((_, tag)) => tag,
        None => "latest",
    };
    let valid = !tag.is_empty()
        && tag.len() <= 63
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric())
        && tag.ends_with(|c: char| c.is_ascii_alphanumeric());
    valid.then(|| tag.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_tag() {
        assert_eq!(
            version_label("registry.example/sis:0.1.0").as_deref(),
            Some("0.1.0")
        );
        assert_eq!(
            version_label("localhost:5000/sis:v2").as_deref(),
            Some("v2")
        );
        assert_eq!(
            version_label("localhost:5000/sis").as_deref(),
            Some("latest")
        );
        assert_eq!(version_label("sis").as_deref(), Some("latest"));
        assert_eq!(version_label("sis@sha256:abcd"), None);
        assert_eq!(version_label("sis:-bad"), None);
    }
}
