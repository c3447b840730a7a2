//! A hostile server's answers: `Location` headers (only http(s) may come out, never a panic),
//! `Content-Range` values, and URLs through the redaction that keeps secrets out of messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webli_io::remote::{content_range_total, redact, redirect_target};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_at(text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i));
    for base in ["http://127.0.0.1:8080/shards/a.tar?X-Amz-Signature=s3cr3t", a] {
        if let Ok(next) = redirect_target(base, b) {
            assert!(next.starts_with("http://") || next.starts_with("https://"), "{next}");
        }
    }
    let _ = content_range_total(&text);
    // Whatever the query string was, what is shown has none but the marker.
    let shown = redact(&text);
    if let Some((_, query)) = shown.split_once('?') {
        assert_eq!(query, "<redacted>", "{text:?} -> {shown:?}");
    }
});
