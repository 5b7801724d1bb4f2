//! File names that are not UTF-8 are refused with a clear 400 on every upload route of both
//! APIs, on a server and through an agent — never stored under a lossily changed name
//! (`\xff\xfe.jpg` used to become `��.jpg` with a 200).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sis_e2e::{Sis, client, md5_hex, png};

/// A hand-built multipart body with one file part whose `Content-Disposition` tail is
/// `disposition` (raw bytes) and whose field name is `field`.
fn multipart(field: &str, disposition: &[u8], data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "sisUtf8Boundary4f9";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        format!("Content-Disposition: form-data; name=\"{field}\"; ").as_bytes(),
    );
    body.extend_from_slice(disposition);
    body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post(url: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut req = client().post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Every upload route refuses each non-UTF-8 spelling of a name; nothing is stored.
async fn refuses_everywhere(sis: &Sis, server: &Sis) {
    let img = png(16, 12, 7);
    let md5 = md5_hex(&img);
    let dispositions: [&[u8]; 3] = [
        b"filename=\"\xff\xfe.jpg\"",
        b"filename=\"\xc3(.png\"",
        b"filename=\"ok.png\"; filename*=UTF-8''%FF%FE.png",
    ];
    for disp in dispositions {
        for (route, field) in [
            ("/up", "file"),
            ("/derect_up", md5.as_str()),
            ("/v1/images", "file"),
        ] {
            let (ct, body) = multipart(field, disp, &img);
            let (status, text) = post(&sis.url(route), Some(&ct), body).await;
            assert_eq!(status, 400, "{route} {disp:?}: {text}");
            assert!(text.contains("not valid UTF-8"), "{route}: {text}");
            if route.starts_with("/v1") {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["code"], "invalid-name-encoding", "{text}");
            }
        }
    }
    // Raw /v1 body named by the query.
    let (status, text) = post(&sis.url("/v1/images?name=%FF%FE.jpg"), None, img.clone()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid-name-encoding"), "{text}");

    // Nothing was stored, under any name, on the server.
    let resp = client()
        .get(server.url(&format!("/v1/images/{md5}/meta")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "{}", resp.text().await.unwrap());

    // UTF-8 names (raw and RFC 5987) still work, and keep their exact spelling.
    let (ct, body) = multipart("file", "filename=\"测试.png\"".as_bytes(), &img);
    let (status, text) = post(&sis.url("/up"), Some(&ct), body).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("测试.png"), "{text}");
    let (ct, body) = multipart("file", b"filename*=UTF-8''%C3%A9t%C3%A9.png", &img);
    let (status, text) = post(&sis.url("/v1/images"), Some(&ct), body).await;
    assert_eq!(status, 201, "{text}");
    assert!(text.contains("été.png"), "{text}");
}

#[tokio::test]
async fn non_utf8_names_are_refused_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Sis::server(dir.path(), &[]).await;
    refuses_everywhere(&server, &server).await;
}

#[tokio::test]
async fn non_utf8_names_are_refused_through_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Sis::server(dir.path(), &[]).await;
    let agent = Sis::agent(&server.url(""), &[]).await;
    refuses_everywhere(&agent, &server).await;
}
