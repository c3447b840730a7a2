//! The tar metadata entries: a GNU long name or link (`L`, `K`) or a pax header (`x`, `g`) with
//! an arbitrary claimed size and body, before a member. The reader must never panic, never
//! hold a header over `MAX_HEADER_BYTES` (one claiming more is refused unread, counted as a
//! corrupt shard, and nothing after it emitted), and apply a long name or pax path it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webli_io::stats::{Counter, Stats};
use webli_io::tar::{read_samples, MAX_HEADER_BYTES};

/// A ustar header block for `name`, of type `kind`, claiming `size` bytes.
fn header(name: &[u8], kind: u8, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(99);
    h[..n].copy_from_slice(&name[..n]);
    h[100..107].copy_from_slice(b"0000644");
    // Sizes up to 8 GiB in octal; larger ones in GNU base-256.
    if size < 0o77777777777 {
        let s = format!("{size:011o}");
        h[124..135].copy_from_slice(s.as_bytes());
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

fn padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let kind = [b'L', b'K', b'x', b'g'][(data[0] % 4) as usize];
    // Claimed sizes around the limit and far past it (an 8 GiB claim costs nothing to state).
    let raw = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let claim = match data[0] / 4 % 3 {
        0 => raw % (2 * MAX_HEADER_BYTES),
        1 => MAX_HEADER_BYTES + raw % 4096,
        _ => raw >> (raw % 64),
    };
    let body = &data[9..];
    let mut tar = Vec::new();
    tar.extend_from_slice(&header(b"././@LongLink", kind, claim));
    let given = body.len().min(claim.min(1 << 22) as usize);
    padded(&mut tar, &body[..given]);
    tar.extend_from_slice(&header(b"a.jpg", b'0', 3));
    padded(&mut tar, b"img");
    tar.extend_from_slice(&header(b"a.txt", b'0', 3));
    padded(&mut tar, b"cap");
    tar.extend_from_slice(&[0u8; 1024]);
    let stats = Stats::new();
    let mut emitted = 0;
    read_samples(&tar[..], "fuzz.tar", 1 << 20, &stats, |raw| {
        assert!(!raw.members.is_empty());
        emitted += 1;
        true
    });
    if claim > MAX_HEADER_BYTES {
        assert_eq!(stats.get(Counter::CorruptTar), 1, "a header claiming {claim} bytes was not refused");
        assert_eq!(emitted, 0);
    }
    assert!(emitted <= 1);
});
