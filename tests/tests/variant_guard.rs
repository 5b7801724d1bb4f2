//! Guarding variants on real processes (issue 15): presets, signed URLs (made with
//! `sis sign`), the `--variants open|presets|signed` policies on both APIs, each refusal
//! path with its 403 code and metric, on a server and on an agent in front of an open server;
//! configuration from flags, the environment and a presets file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sis_e2e::{Sis, bin, client, dimensions, get_text, md5_hex, png};

const KEY_OLD: &str = "old-signing-key";
const KEY_NEW: &str = "new-signing-key";

/// Uploads a 64×48 PNG as `a.png`; returns its MD5.
async fn upload(sis: &Sis) -> String {
    let img = png(64, 48, 3);
    let resp = client()
        .post(sis.url("/v1/images?name=a.png"))
        .body(img.clone())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    md5_hex(&img)
}

/// `sis sign URL --sign-key KEY [--exp EXP]`.
fn sign(url: &str, key: &str, exp: Option<i64>) -> String {
    let mut cmd = std::process::Command::new(bin("sis"));
    cmd.args(["sign", url, "--sign-key", key]);
    if let Some(e) = exp {
        cmd.args(["--exp", &e.to_string()]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// GETs `url`; returns status, the JSON `code` (or the text body) and the body bytes.
async fn get(url: &str, accept: Option<&str>) -> (u16, String, Vec<u8>, Option<String>) {
    let mut req = client().get(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.bytes().await.unwrap().to_vec();
    let code = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    (status, code, bytes, ct)
}

async fn refusals(sis: &Sis) -> String {
    let text = get_text(&sis.url("/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with("sis_variant_refusals_total"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn count(metrics: &str, reason: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.contains(&format!("reason=\"{reason}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {reason} series in {metrics}"))
}

/// The `signed` policy, checked on `front` (a server, or an agent with the policy).
async fn signed_policy(front: &Sis, md5: &str) {
    let base = front.url(&format!("/v1/images/{md5}/a.png"));
    // Originals are never refused.
    let (status, _, body, _) = get(&base, None).await;
    assert_eq!((status, dimensions(&body)), (200, (64, 48)));
    // Unsigned parameters.
    let (status, code, _, _) = get(&format!("{base}?w=10"), None).await;
    assert_eq!((status, code.as_str()), (403, "signature-required"));
    // A preset that is not public.
    let (status, code, _, _) = get(&format!("{base}?preset=thumb"), None).await;
    assert_eq!((status, code.as_str()), (403, "signature-required"));
    // A public preset, alone and with format negotiation.
    let (status, _, body, _) = get(&format!("{base}?preset=pub"), None).await;
    assert_eq!((status, dimensions(&body).0), (200, 16));
    let (status, _, _, ct) = get(
        &format!("{base}?preset=pub&format=auto"),
        Some("image/webp"),
    )
    .await;
    assert_eq!((status, ct.as_deref()), (200, Some("image/webp")));
    // …but not with other parameters.
    let (status, code, _, _) = get(&format!("{base}?preset=pub&w=50"), None).await;
    assert_eq!((status, code.as_str()), (403, "signature-required"));
    // Unknown preset.
    let (status, code, _, _) = get(&format!("{base}?preset=nope"), None).await;
    assert_eq!((status, code.as_str()), (403, "unknown-preset"));
    // Signed with either rotation key.
    for key in [KEY_OLD, KEY_NEW] {
        let url = sign(&format!("{base}?w=20&h=10&fit=fill"), key, None);
        let (status, code, body, _) = get(&url, None).await;
        assert_eq!(status, 200, "{url}: {code}");
        assert_eq!(dimensions(&body), (20, 10));
        // A signed preset that is not public.
        let url = sign(&format!("{base}?preset=thumb"), key, Some(now() + 600));
        let (status, _, body, _) = get(&url, None).await;
        assert_eq!((status, dimensions(&body)), (200, (30, 20)));
    }
    // Wrong key, tampered parameters, tampered path, tampered expiry.
    let url = sign(&format!("{base}?w=20"), "not-a-key", None);
    let (status, code, _, _) = get(&url, None).await;
    assert_eq!((status, code.as_str()), (403, "bad-signature"));
    let url = sign(&format!("{base}?w=20"), KEY_NEW, Some(now() + 600));
    let (status, code, _, _) = get(&url.replace("w=20", "w=21"), None).await;
    assert_eq!((status, code.as_str()), (403, "bad-signature"));
    let (status, code, _, _) = get(&url.replace("/a.png", ""), None).await;
    assert_eq!((status, code.as_str()), (403, "bad-signature"));
    let far = url.replace("exp=", "exp=9");
    let (status, code, _, _) = get(&far, None).await;
    assert_eq!((status, code.as_str()), (403, "bad-signature"));
    // Expired.
    let url = sign(&format!("{base}?w=20"), KEY_NEW, Some(now() - 5));
    let (status, code, _, _) = get(&url, None).await;
    assert_eq!((status, code.as_str()), (403, "expired"));

    // The legacy stretch endpoints obey the same policy.
    let legacy = front.url(&format!(
        "/stretch_full_down?md5={md5}&file_name=a.png&w=20&h=20"
    ));
    let (status, text, _, _) = get(&legacy, None).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("only signed variant URLs"), "{text}");
    let (status, _, body, _) = get(&sign(&legacy, KEY_OLD, None), None).await;
    assert_eq!((status, dimensions(&body)), (200, (20, 20)));
    let (status, _, _, _) = get(&format!("{legacy}&sig=00"), None).await;
    assert_eq!(status, 403);
    let simple = front.url(&format!("/stretch_simple_down?md5={md5}&preset=pub"));
    let (status, _, body, _) = get(&simple, None).await;
    assert_eq!(status, 200, "a public preset on the legacy API");
    assert_eq!(dimensions(&body).0, 16);
    // Plain legacy downloads are originals: never refused.
    let (status, _, _, _) = get(&front.url(&format!("/simple_down?md5={md5}")), None).await;
    assert_eq!(status, 200);

    let m = refusals(front).await;
    assert_eq!(count(&m, "signature-required"), 4, "{m}");
    assert_eq!(count(&m, "unknown-preset"), 1, "{m}");
    assert_eq!(count(&m, "bad-signature"), 5, "{m}");
    assert_eq!(count(&m, "expired"), 1, "{m}");
    assert_eq!(count(&m, "params-not-allowed"), 0, "{m}");
}

fn guard_flags(policy: &str) -> Vec<&str> {
    vec![
        "--variants",
        policy,
        "--sign-key",
        KEY_OLD,
        "--sign-key",
        KEY_NEW,
        "--preset",
        "thumb=w:30,h:20,fit:cover",
        "--preset",
        "pub=public,w:16,h:12",
    ]
}

#[tokio::test]
async fn signed_policy_on_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Sis::server(dir.path(), &guard_flags("signed")).await;
    let md5 = upload(&server).await;
    signed_policy(&server, &md5).await;
}

#[tokio::test]
async fn signed_policy_on_an_agent_in_front_of_an_open_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Sis::server(dir.path(), &[]).await;
    let agent = Sis::agent(&server.url(""), &guard_flags("signed")).await;
    let md5 = upload(&agent).await;
    signed_policy(&agent, &md5).await;
    // The open server behind it still renders anything.
    let (status, _, _, _) = get(&server.url(&format!("/v1/images/{md5}?w=10")), None).await;
    assert_eq!(status, 200);
}

async fn presets_policy(front: &Sis, md5: &str) {
    let base = front.url(&format!("/v1/images/{md5}/a.png"));
    let (status, _, body, _) = get(&format!("{base}?preset=thumb"), None).await;
    assert_eq!((status, dimensions(&body)), (200, (30, 20)));
    let (status, _, _, ct) = get(
        &format!("{base}?preset=thumb&format=auto"),
        Some("image/webp,*/*"),
    )
    .await;
    assert_eq!((status, ct.as_deref()), (200, Some("image/webp")));
    for (q, field) in [
        ("w=10", "w"),
        ("preset=thumb&q=5", "q"),
        ("format=webp", "format"),
    ] {
        let (status, code, bytes, _) = get(&format!("{base}?{q}"), None).await;
        assert_eq!((status, code.as_str()), (403, "params-not-allowed"), "{q}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["error"].as_str().unwrap().contains(field), "{v}");
    }
    let (status, code, _, _) = get(&format!("{base}?preset=nope"), None).await;
    assert_eq!((status, code.as_str()), (403, "unknown-preset"));
    // A signature admits any parameters here too.
    let (status, _, body, _) = get(&sign(&format!("{base}?w=8"), KEY_NEW, None), None).await;
    assert_eq!((status, dimensions(&body).0), (200, 8));
    // Legacy stretch with sizes: refused; with a preset: its w and h, stretched.
    let legacy = front.url(&format!("/stretch_full_down?md5={md5}&file_name=a.png"));
    let (status, _, _, _) = get(&format!("{legacy}&w=20&h=20"), None).await;
    assert_eq!(status, 403);
    let (status, _, body, _) = get(&format!("{legacy}&preset=thumb"), None).await;
    assert_eq!((status, dimensions(&body)), (200, (30, 20)));
    let m = refusals(front).await;
    assert_eq!(count(&m, "params-not-allowed"), 4, "{m}");
    assert_eq!(count(&m, "unknown-preset"), 1, "{m}");
}

#[tokio::test]
async fn presets_policy_on_a_server_and_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Sis::server(dir.path(), &guard_flags("presets")).await;
    let md5 = upload(&server).await;
    presets_policy(&server, &md5).await;
    let agent = Sis::agent(&server.url(""), &guard_flags("presets")).await;
    presets_policy(&agent, &md5).await;
}

#[tokio::test]
async fn open_policy_is_the_default_and_keeps_presets_usable() {
    let dir = tempfile::tempdir().unwrap();
    // From the environment and a presets file, not flags.
    let file = dir.path().join("presets.conf");
    std::fs::write(&file, "# comment\n\nthumb=w:30,h:20,fit:cover\n").unwrap();
    let server = Sis::start_with_env(
        vec![
            "server".into(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
        ],
        &[
            ("SIS_PRESETS", "tiny=w:6;pub=public,w:16"),
            ("SIS_PRESETS_FILE", file.to_str().unwrap()),
            ("SIS_SIGN_KEYS", "k1,k2"),
        ],
    )
    .await;
    let md5 = upload(&server).await;
    let base = server.url(&format!("/v1/images/{md5}/a.png"));
    for (q, w) in [
        ("w=10", 10),
        ("preset=thumb", 30),
        ("preset=tiny", 6),
        ("preset=pub", 16),
    ] {
        let (status, code, body, _) = get(&format!("{base}?{q}"), None).await;
        assert_eq!(status, 200, "{q}: {code}");
        assert_eq!(dimensions(&body).0, w, "{q}");
    }
    // Keys from the environment verify; a bad signature is refused even when open.
    let (status, _, _, _) = get(&sign(&format!("{base}?w=9"), "k2", None), None).await;
    assert_eq!(status, 200);
    let (status, code, _, _) = get(&format!("{base}?w=9&sig=abcd"), None).await;
    assert_eq!((status, code.as_str()), (403, "bad-signature"));
    let (status, code, _, _) = get(&format!("{base}?preset=nope"), None).await;
    assert_eq!((status, code.as_str()), (403, "unknown-preset"));

    // With policy "signed" from the environment.
    let dir2 = tempfile::tempdir().unwrap();
    let strict = Sis::start_with_env(
        vec![
            "server".into(),
            "--data-dir".into(),
            dir2.path().display().to_string(),
        ],
        &[("SIS_VARIANTS", "signed"), ("SIS_SIGN_KEYS", "k1")],
    )
    .await;
    let md5 = upload(&strict).await;
    let (status, code, _, _) = get(&strict.url(&format!("/v1/images/{md5}?w=10")), None).await;
    assert_eq!((status, code.as_str()), (403, "signature-required"));
}

/// Bad configurations stop the process at start-up with a clear message.
#[test]
fn bad_guard_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            vec!["--variants", "signed"],
            "needs at least one --sign-key",
        ),
        (vec!["--preset", "x=w:99999"], "variant policy: preset"),
        (vec!["--preset", "x=zoom:2"], "zoom"),
        (vec!["--preset", "x"], "NAME="),
        (vec!["--preset", "x=w:5", "--preset", "x=w:6"], "twice"),
    ] {
        let out = std::process::Command::new(bin("sis"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
