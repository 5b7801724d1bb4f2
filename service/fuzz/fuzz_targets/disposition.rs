//! `Content-Disposition` parsing and file-name validation: whatever bytes a client puts in a
//! multipart part header, parsing never panics, and a name that passes [`FileName::parse`]
//! is a bare base name that survives the trip to a disk file name and back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sis::http::upload::parse_disposition;
use sis::store::{FileName, Md5Hex};
use sis::store::key::MAX_NAME_BYTES;

fuzz_target!(|data: &[u8]| {
    let d = parse_disposition(data);
    for name in [d.name.as_deref(), d.filename.as_deref()].into_iter().flatten() {
        check_name(name);
        // On /derect_up the field name is the claimed MD5.
        if let Some(md5) = Md5Hex::parse(name) {
            let s = md5.as_str();
            assert_eq!(s.len(), 32);
            assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }
    // The raw bytes as a name, too (query strings and raw bodies reach FileName::parse
    // without going through a disposition).
    check_name(&String::from_utf8_lossy(data));
});

fn check_name(raw: &str) {
    let Ok(name) = FileName::parse(raw) else {
        return;
    };
    let s = name.as_str();
    assert!(!s.is_empty() && s.len() <= MAX_NAME_BYTES, "{s:?}");
    assert!(s != "." && s != "..", "{s:?}");
    assert!(!s.contains(['/', '\\']), "{s:?}");
    assert!(!s.chars().any(char::is_control), "{s:?}");
    let disk = name.to_disk();
    assert!(disk.is_ascii(), "{disk:?}");
    assert!(!disk.contains(['/', '\\', '\0']), "{disk:?}");
    assert!(!disk.starts_with('.'), "{disk:?}");
    assert!(disk.len() <= 255, "{disk:?} too long for a file system");
    assert_eq!(FileName::from_disk(&disk).as_ref(), Some(&name));
}
