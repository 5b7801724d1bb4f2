//! `GET /v1/images?limit=&cursor=&prefix=` on a real server and through a real agent: every
//! stored (MD5, name) exactly once across pages, in a stable order, with size, format,
//! dimensions and time stored; the prefix filter; the token needed for listing while reads by
//! address stay public.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use sis_e2e::{Sis, client, md5_hex, png};

const TOKEN: &str = "list-token-123";

/// Uploads `n` distinct PNGs (plus one second name for the first), returns the expected
/// (md5, name, size, width, height) set.
async fn upload(base: &str, n: u8) -> BTreeSet<(String, String, u64, u32, u32)> {
    let mut want = BTreeSet::new();
    for i in 0..n {
        let (w, h) = (10 + u32::from(i), 7 + u32::from(i % 5));
        let img = png(w, h, i);
        let name = format!("img-{i:02}.png");
        let resp = client()
            .post(format!("{base}/v1/images?name={name}"))
            .bearer_auth(TOKEN)
            .body(img.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        want.insert((md5_hex(&img), name, img.len() as u64, w, h));
        if i == 0 {
            let resp = client()
                .post(format!("{base}/v1/images?name=second-name.png"))
                .bearer_auth(TOKEN)
                .body(img.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            want.insert((
                md5_hex(&img),
                "second-name.png".into(),
                img.len() as u64,
                w,
                h,
            ));
        }
    }
    want
}

async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = client().get(url).bearer_auth(TOKEN).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

/// Pages through everything with `limit`; returns entries in the order given.
async fn all_pages(sis: &Sis, limit: usize, prefix: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut url = sis.url(&format!("/v1/images?limit={limit}&prefix={prefix}"));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, v) = get_json(&url).await;
        assert_eq!(status, 200, "{v}");
        let images = v["images"].as_array().unwrap();
        assert!(images.len() <= limit);
        out.extend(images.iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(images.len(), limit, "a short page must be the last");
                cursor = Some(c.to_owned());
            }
            None => return out,
        }
    }
    panic!("listing did not end");
}

async fn lists_everything(sis: &Sis) {
    let want = upload(&sis.url(""), 23).await;
    for limit in [1, 7, 24, 1000] {
        let got = all_pages(sis, limit, "").await;
        let keys: Vec<(String, String)> = got
            .iter()
            .map(|e| {
                (
                    e["md5"].as_str().unwrap().to_owned(),
                    e["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            keys, sorted,
            "limit {limit}: not in a stable key order, or repeated"
        );
        let facts: BTreeSet<(String, String, u64, u32, u32)> = got
            .iter()
            .map(|e| {
                assert_eq!(e["format"], "png", "{e}");
                assert!(e["stored_ms"].as_u64().unwrap() > 1_700_000_000_000, "{e}");
                assert!(e["stored"].as_str().unwrap().ends_with("GMT"), "{e}");
                assert_eq!(
                    e["url"].as_str().unwrap(),
                    format!(
                        "/v1/images/{}/{}",
                        e["md5"].as_str().unwrap(),
                        e["name"].as_str().unwrap()
                    )
                );
                (
                    e["md5"].as_str().unwrap().to_owned(),
                    e["name"].as_str().unwrap().to_owned(),
                    e["size"].as_u64().unwrap(),
                    u32::try_from(e["width"].as_u64().unwrap()).unwrap(),
                    u32::try_from(e["height"].as_u64().unwrap()).unwrap(),
                )
            })
            .collect();
        assert_eq!(facts, want, "limit {limit}");
    }
    // Prefix: exactly the MD5s that start with it, for one and two digits.
    let md5s: BTreeSet<String> = want.iter().map(|w| w.0.clone()).collect();
    let first = md5s.iter().next().unwrap().clone();
    for prefix in [&first[..1], &first[..2], &first[..], "f", "0"] {
        let got: BTreeSet<(String, String)> = all_pages(sis, 3, prefix)
            .await
            .iter()
            .map(|e| {
                (
                    e["md5"].as_str().unwrap().to_owned(),
                    e["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expect: BTreeSet<(String, String)> = want
            .iter()
            .filter(|w| w.0.starts_with(prefix))
            .map(|w| (w.0.clone(), w.1.clone()))
            .collect();
        assert_eq!(got, expect, "prefix {prefix}");
    }
    // A cursor stays valid after its entry is deleted.
    let (_, v) = get_json(&sis.url("/v1/images?limit=3")).await;
    let cursor = v["next_cursor"].as_str().unwrap().to_owned();
    let third = &v["images"][2];
    let resp = client()
        .delete(sis.url(third["url"].as_str().unwrap()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (status, v2) = get_json(&sis.url(&format!("/v1/images?limit=3&cursor={cursor}"))).await;
    assert_eq!(status, 200, "{v2}");
    assert_ne!(v2["images"][0]["url"], third["url"]);
    let total = all_pages(sis, 50, "").await.len();
    assert_eq!(
        total,
        want.len() - 1,
        "the deleted entry is gone from the listing"
    );

    // Strict parameters.
    for bad in ["limit=0", "limit=1001", "cursor=zz", "prefix=xyz", "w=100"] {
        let (status, v) = get_json(&sis.url(&format!("/v1/images?{bad}"))).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert_eq!(v["code"], "invalid-params", "{bad}: {v}");
    }
    // Listing needs the token; reads by address stay public.
    let resp = client().get(sis.url("/v1/images")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client()
        .get(sis.url("/v1/images"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let url = sis.url(v2["images"][0]["url"].as_str().unwrap());
    assert_eq!(client().get(url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn listing_on_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Sis::server(dir.path(), &["--api-token", TOKEN]).await;
    lists_everything(&server).await;
}

#[tokio::test]
async fn listing_through_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Sis::server(dir.path(), &["--api-token", TOKEN]).await;
    let agent = Sis::agent(&server.url(""), &["--api-token", TOKEN]).await;
    lists_everything(&agent).await;
    // The agent's listing is the server's.
    let a = all_pages(&agent, 1000, "").await;
    let s = all_pages(&server, 1000, "").await;
    assert_eq!(a, s);
}
