//! PNG ancillary chunks: an 8×8 PNG with arbitrary `iCCP`, `zTXt`, `iTXt`, `tEXt`, `eXIf` or
//! unknown chunks (correct CRCs, so the fuzzer explores their contents, not checksum failures)
//! between its header and its pixels. Decoding must never panic; a profile or text that would
//! inflate past the header budget is refused cheaply (the decode returns, bounded by the
//! decoder's allocation limit); when the pixels decode, they are the 8×8 image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webli_io::decode::{decode, Request};

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// zlib of `raw` as one stored (uncompressed) deflate block.
fn zlib_stored(raw: &[u8]) -> Vec<u8> {
    let mut z = vec![0x78, 0x01, 0x01];
    let n = raw.len() as u16;
    z.extend_from_slice(&n.to_le_bytes());
    z.extend_from_slice(&(!n).to_le_bytes());
    z.extend_from_slice(raw);
    z.extend_from_slice(&adler32(raw).to_be_bytes());
    z
}

const KINDS: [&[u8; 4]; 6] = [b"iCCP", b"zTXt", b"iTXt", b"tEXt", b"eXIf", b"prVt"];

fuzz_target!(|data: &[u8]| {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&8u32.to_be_bytes());
    ihdr.extend_from_slice(&8u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    // The fuzz input as chunks: a kind byte, a length byte (×64), then that many bytes.
    let mut rest = data;
    while rest.len() >= 2 {
        let kind = KINDS[(rest[0] % KINDS.len() as u8) as usize];
        let n = (rest[1] as usize * 64).min(rest.len() - 2);
        chunk(&mut png, kind, &rest[2..2 + n]);
        rest = &rest[2 + n..];
    }
    let mut raw = Vec::new();
    for y in 0..8u8 {
        raw.push(0); // filter: none
        for x in 0..8u8 {
            raw.extend_from_slice(&[x * 30, y * 30, 128]);
        }
    }
    chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    chunk(&mut png, b"IEND", &[]);
    if let Ok(d) = decode(&png, 1 << 20, |_, _| Request::FULL) {
        assert_eq!((d.image.width, d.image.height), (8, 8));
        assert_eq!(&d.image.data[..3], &[0, 0, 128]);
    }
});
