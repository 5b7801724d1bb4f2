//! Whole multipart bodies through [`read_multipart`] (multer plus our disposition parser),
//! delivered in arbitrary chunks: never a panic, never more bytes kept than were sent.
//!
//! Input layout: byte 0 picks the boundary, byte 1 the chunk size, the rest is the body.
#![no_main]

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use sis::http::upload::read_multipart;
use sis::store::FileName;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

const BOUNDARIES: [&str; 4] = ["X", "boundary", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "a b"];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let boundary = BOUNDARIES[usize::from(data[0]) % BOUNDARIES.len()];
    let chunk = usize::from(data[1]).max(1);
    let body = &data[2..];
    let mut headers = HeaderMap::new();
    let ct = if data[0] & 0x80 != 0 {
        format!("multipart/form-data; boundary=\"{boundary}\"")
    } else {
        format!("multipart/form-data; boundary={boundary}")
    };
    let Ok(v) = HeaderValue::from_str(&ct) else {
        return;
    };
    headers.insert(header::CONTENT_TYPE, v);
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    if let Ok(parts) = runtime().block_on(read_multipart(&headers, Body::from_stream(stream), 64)) {
        let total: usize = parts.iter().map(|p| p.bytes.len()).sum();
        assert!(total <= body.len());
        for p in &parts {
            if let Some(name) = p.filename.as_deref()
                && let Ok(n) = FileName::parse(name)
            {
                assert_eq!(FileName::from_disk(&n.to_disk()).as_ref(), Some(&n));
            }
        }
    }
});
