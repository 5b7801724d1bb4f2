//! Test-only SisCluster builders: short YAML in, a `SisCluster` out, plus chainable tweaks.
//!
//! Tests describe the cluster the way a user would write it, so a change in serde defaults or
//! field names shows up as a test failure here rather than on a real cluster.
#![allow(clippy::expect_used)]

use crate::crd::SisCluster;

/// Parse a SisCluster from YAML; `apiVersion` and `kind` may be left out.
///
/// # Panics
/// On invalid YAML (a broken test).
pub fn cluster_from_yaml(yaml: &str) -> SisCluster {
    let mut value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("fixture YAML parses");
    if let Some(map) = value.as_mapping_mut() {
        map.entry("apiVersion".into())
            .or_insert_with(|| "sis.dev/v1alpha1".into());
        map.entry("kind".into())
            .or_insert_with(|| "SisCluster".into());
        map.entry("spec".into())
            .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    }
    serde_yaml::from_value(value).expect("fixture is a SisCluster")
}

/// The sample from the issue: `photos` in `media`, 3 agents, a token secret, a signed variant
/// policy with two presets and GPS stripping.
pub fn sample() -> SisCluster {
    cluster_from_yaml(
        r#"
        apiVersion: sis.dev/v1alpha1
        kind: SisCluster
        metadata:
          name: photos
          namespace: media
          uid: 6c8f0f5e-0000-4000-8000-000000000001
          generation: 1
        spec:
          image: registry.example/sis:0.1.0
          imagePullPolicy: IfNotPresent
          agent:
            replicas: 3
            cacheSize: 256Mi
            resources: {}
            service: {type: ClusterIP, port: 80}
          server:
            cacheSize: 0
            storage: {size: 10Gi, storageClassName: fast}
            resources: {}
          apiTokenSecret: {name: sis-token, key: token}
          variants:
            policy: signed
            presets:
              - {name: thumb, params: {w: 300, h: 200, fit: cover}}
              - {name: avatar, params: {w: 64, h: 64, fit: cover, gravity: smart}, public: true}
            signingKeySecret: {name: sis-sign, key: keys}
          stripMetadata: gps
        "#,
    )
}

/// The sample with S3 storage (issue 12): a bucket on a Ceph RGW, keys from a Secret, the
/// default two servers.
pub fn s3_sample() -> SisCluster {
    cluster_from_yaml(
        r#"
        apiVersion: sis.dev/v1alpha1
        kind: SisCluster
        metadata:
          name: photos
          namespace: media
          uid: 6c8f0f5e-0000-4000-8000-000000000001
          generation: 1
        spec:
          image: registry.example/sis:0.1.0
          imagePullPolicy: IfNotPresent
          agent: {replicas: 3}
          server:
            storage:
              s3:
                bucket: photos
                prefix: prod
                endpoint: http://rgw.ceph.svc:8080
                region: default
                pathStyle: true
                credentialsSecret: {name: photos-s3}
          apiTokenSecret: {name: sis-token, key: token}
        "#,
    )
}

/// Chainable tweaks on a fixture.
pub trait ClusterExt: Sized {
    fn with_agent_replicas(self, replicas: i32) -> Self;
    fn with_image(self, image: &str) -> Self;
    fn with_agent_cache(self, quantity: &str) -> Self;
    fn with_generation(self, generation: i64) -> Self;
}

impl ClusterExt for SisCluster {
    fn with_agent_replicas(mut self, replicas: i32) -> Self {
        self.spec.agent.replicas = replicas;
        self
    }

    fn with_image(mut self, image: &str) -> Self {
        self.spec.image = Some(image.to_owned());
        self
    }

    fn with_agent_cache(mut self, quantity: &str) -> Self {
        self.spec.agent.cache_size =
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(quantity.to_owned());
        self
    }

    fn with_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }
}
