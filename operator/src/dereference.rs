//! Step 1b of a reconcile: read what the spec only names — the Secrets whose values the pods
//! consume — and reduce them to hashes for the pod templates (client, no writes).
//!
//! The pods read the API token, the URL signing keys and the S3 keys through `secretKeyRef`, which Kubernetes
//! resolves only when a container starts, so a new value in the same Secret would reach no
//! running pod. Hashing the values into a pod-template annotation
//! ([`crate::build::SECRET_HASH_ANNOTATION`]) makes a changed value a changed template, which
//! rolls the tier. The operator never logs or stores a value, only a truncated SHA-256 of all
//! of them. The controller watches Secrets (metadata only) to notice changes.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::validate::{SecretHashes, ServerStorage, ValidatedCluster};

/// One Secret key a tier consumes: (secret name, key).
pub type SecretKey = (String, String);

/// The Secret keys each tier's pods read: (agent keys, server keys).
pub fn consumed_keys(cluster: &ValidatedCluster) -> (Vec<SecretKey>, Vec<SecretKey>) {
    let token: Vec<SecretKey> = cluster
        .api_token_secret
        .iter()
        .chain(&cluster.variants.signing_key_secret)
        .map(|s| (s.name.clone(), s.key.clone()))
        .collect();
    let mut server = token.clone();
    if let ServerStorage::S3(s3) = &cluster.server.storage
        && let Some(c) = &s3.credentials_secret
    {
        server.push((c.name.clone(), c.access_key_id_key.clone()));
        server.push((c.name.clone(), c.secret_access_key_key.clone()));
    }
    (token, server)
}

/// Hash of the values of `keys` (16 hex digits), or `None` when no key is consumed. A missing
/// Secret or key hashes as absent, so its later creation rolls the pods too.
pub fn hash_values(
    keys: &[SecretKey],
    secrets: &BTreeMap<String, Option<BTreeMap<String, ByteString>>>,
) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let mut hasher = Sha256::new();
    for (name, key) in keys {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(key.as_bytes());
        match secrets
            .get(name)
            .and_then(Option::as_ref)
            .and_then(|d| d.get(key))
        {
            Some(value) => {
                hasher.update([1]);
                hasher.update((value.0.len() as u64).to_be_bytes());
                hasher.update(&value.0);
            }
            None => hasher.update([0]),
        }
    }
    Some(hex::encode(&hasher.finalize()[..8]))
}

/// Read the consumed Secrets and hash their values per tier.
///
/// # Errors
/// [`Error::Fetch`] when reading a Secret fails (a missing one is not an error).
pub async fn secret_hashes(
    client: &Client,
    namespace: &str,
    cluster: &ValidatedCluster,
) -> Result<SecretHashes, Error> {
    let (agent, server) = consumed_keys(cluster);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secrets = BTreeMap::new();
    for (name, _) in agent.iter().chain(&server) {
        if secrets.contains_key(name) {
            continue;
        }
        let secret = api.get_opt(name).await.map_err(|source| Error::Fetch {
            kind: "Secret",
            name: name.clone(),
            source,
        })?;
        secrets.insert(name.clone(), secret.and_then(|s| s.data));
    }
    Ok(SecretHashes {
        agent: hash_values(&agent, &secrets),
        server: hash_values(&server, &secrets),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::validate::{Defaults, validate};

    fn data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, ByteString>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        )
    }

    #[test]
    fn tiers_consume_their_keys() {
        let v = validate(&fixtures::s3_sample(), &Defaults::default()).unwrap();
        let (agent, server) = consumed_keys(&v);
        let token = ("sis-token".to_owned(), "token".to_owned());
        assert_eq!(agent, std::slice::from_ref(&token));
        assert_eq!(
            server,
            [
                token,
                ("photos-s3".to_owned(), "AWS_ACCESS_KEY_ID".to_owned()),
                ("photos-s3".to_owned(), "AWS_SECRET_ACCESS_KEY".to_owned()),
            ]
        );
    }

    #[test]
    fn the_hash_follows_the_value_of_consumed_keys_only() {
        let keys = vec![("sis-token".to_owned(), "token".to_owned())];
        let with = |d| BTreeMap::from([("sis-token".to_owned(), d)]);
        let a = hash_values(&keys, &with(data(&[("token", "one")]))).unwrap();
        assert_eq!(a.len(), 16);
        let b = hash_values(&keys, &with(data(&[("token", "two")]))).unwrap();
        assert_ne!(a, b, "a new value, a new hash");
        let other_key = hash_values(&keys, &with(data(&[("token", "one"), ("x", "y")]))).unwrap();
        assert_eq!(a, other_key, "keys the pods do not read do not matter");
        let missing = hash_values(&keys, &with(None)).unwrap();
        assert_ne!(missing, a);
        assert_eq!(hash_values(&[], &BTreeMap::new()), None);
    }
}
