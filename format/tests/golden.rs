//! Golden tests: `tests/golden/v3.hex` is a complete version 3 payload
//! (data blocks, metadata, index, trailer; no stub, so the data section
//! starts at offset 0). docs/FORMAT.md describes these exact bytes.
//!
//! Regenerate (only for a deliberate format change, which also bumps the
//! version, or a zstd upgrade that changes compressed bytes) with
//! `TOTE_UPDATE_GOLDEN=1 cargo test -p tote-format --features write --test golden`.

#![cfg(feature = "write")]

use tote_format::*;

const GOLDEN: &str = "tests/golden/v3.hex";

fn hello_hash() -> Digest32 {
    sha256(b"hello, tote\n")
}

/// The payload the golden file was made from.
fn build() -> Vec<u8> {
    let hello = b"hello, tote\n";
    let run = b"#!/bin/sh\necho hi\n";
    let stream = [&hello[..], &run[..]].concat();
    let (block, hash) = encode_block(&stream, 3).unwrap();
    let blocks = vec![BlockRef {
        offset: 0,
        clen: block.len() as u32,
        raw_offset: 0,
        rlen: stream.len() as u32,
        hash,
    }];
    let file = |path: &str, executable, size, offset, hash| Entry {
        path: path.into(),
        kind: EntryKind::File {
            executable,
            size,
            offset,
            hash,
        },
    };
    let entries = vec![
        Entry {
            path: b"opt".to_vec(),
            kind: EntryKind::Dir,
        },
        Entry {
            path: b"opt/demo".to_vec(),
            kind: EntryKind::Dir,
        },
        file("opt/demo/dup.txt", false, 12, 0, hello_hash()),
        file("opt/demo/empty", false, 0, 0, sha256(b"")),
        file("opt/demo/hello.txt", false, 12, 0, hello_hash()),
        Entry {
            path: b"opt/demo/link".to_vec(),
            kind: EntryKind::Symlink {
                target: b"hello.txt".to_vec(),
            },
        },
        file("opt/demo/run", true, 18, 12, sha256(run)),
    ];
    let meta = Meta {
        name: "run".into(),
        creator: "tote golden".into(),
        entrypoint: b"/opt/demo/run".to_vec(),
        args: vec![b"--golden".to_vec()],
        cmd: vec![b"default".to_vec()],
        env: vec![b"GOLDEN=1".to_vec()],
        workdir: Vec::new(),
        root: Vec::new(),
        mounts: vec![MountSpec::at_own_path(MountKind::Replace, b"/opt")],
        mode: Mode::Mount,
        stats: Stats {
            entries: 7,
            files: 4,
            total_size: 42,
            unique_size: 30,
            blocks: 1,
        },
    };
    let index = Index { blocks, entries };
    let s = Sections::encode(&meta, &index, 0, 3).unwrap();
    [block, s.meta, s.index, s.trailer.encode().to_vec()].concat()
}

fn golden() -> Vec<u8> {
    if std::env::var_os("TOTE_UPDATE_GOLDEN").is_some() {
        let hex: String = build()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .chunks(32)
            .map(|c| c.concat() + "\n")
            .collect();
        std::fs::write(GOLDEN, hex).unwrap();
    }
    let text = std::fs::read_to_string(GOLDEN).unwrap();
    let hex: String = text.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn tail(b: &[u8]) -> &[u8] {
    &b[b.len().saturating_sub(TRAILER_LEN)..]
}

#[test]
fn golden_decodes_to_known_values() {
    let g = golden();
    let layout = Trailer::decode(tail(&g), g.len() as u64).unwrap();
    let t = &layout.trailer;
    assert_eq!(&g[g.len() - 8..], b"TOTEBNDL");
    assert_eq!(t.data_offset, 0);
    let meta = layout.meta(&g).unwrap();
    assert_eq!(meta.entrypoint, b"/opt/demo/run");
    assert_eq!(meta.args, vec![b"--golden".to_vec()]);
    assert_eq!(meta.cmd, vec![b"default".to_vec()]);
    assert_eq!(meta.env, vec![b"GOLDEN=1".to_vec()]);
    assert!(meta.root.is_empty() && meta.workdir.is_empty());
    assert_eq!(
        meta.mounts,
        vec![MountSpec {
            kind: MountKind::Replace,
            source: b"opt".to_vec(),
            target: b"/opt".to_vec()
        }]
    );
    assert_eq!(meta.mode, Mode::Mount);
    assert_eq!(meta.stats.unique_size, 30);
    let index = layout.index(&g).unwrap();
    let paths: Vec<&[u8]> = index.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(
        paths,
        [
            &b"opt"[..],
            b"opt/demo",
            b"opt/demo/dup.txt",
            b"opt/demo/empty",
            b"opt/demo/hello.txt",
            b"opt/demo/link",
            b"opt/demo/run"
        ]
    );
    assert_eq!(
        index.entries[5].kind,
        EntryKind::Symlink {
            target: b"hello.txt".to_vec()
        }
    );
    let data = layout.data(&g).unwrap();
    let b = index.blocks[0];
    let mut raw = vec![0u8; b.rlen as usize];
    decode_block(&data[..b.clen as usize], &b, 0, &mut raw).unwrap();
    assert_eq!(raw, b"hello, tote\n#!/bin/sh\necho hi\n");
    match &index.entries[6].kind {
        EntryKind::File {
            executable,
            size,
            offset,
            hash,
        } => {
            assert!(executable);
            assert_eq!(
                &raw[*offset as usize..(*offset + *size) as usize],
                b"#!/bin/sh\necho hi\n"
            );
            assert_eq!(*hash, sha256(b"#!/bin/sh\necho hi\n"));
        }
        other => panic!("{other:?}"),
    }
    // The bundle id is derived from the two section hashes.
    assert_eq!(
        t.bundle_id(),
        BundleId::derive(
            &sha256(&g[t.meta_offset as usize..t.index_offset as usize]),
            &t.index_hash
        )
    );
}

#[test]
fn encoder_reproduces_the_golden_bytes() {
    assert!(
        build() == golden(),
        "the encoder no longer writes the golden bytes: a format change needs a new version"
    );
}

#[test]
fn every_truncation_is_an_error() {
    let g = golden();
    for n in 0..g.len() {
        let cut = &g[..n];
        let ok = Trailer::decode(tail(cut), n as u64).and_then(|l| l.meta(cut).and(l.index(cut)));
        assert!(ok.is_err(), "prefix of {n} bytes accepted");
    }
}

#[test]
fn every_byte_flip_is_detected() {
    let g = golden();
    for i in 0..g.len() {
        let mut b = g.clone();
        b[i] ^= 0x01;
        let res = Trailer::decode(tail(&b), b.len() as u64).and_then(|l| {
            l.meta(&b)?;
            let index = l.index(&b)?;
            let data = l.data(&b)?;
            for (n, blk) in index.blocks.iter().enumerate() {
                let mut raw = vec![0u8; blk.rlen as usize];
                decode_block(
                    &data[blk.offset as usize..(blk.offset + u64::from(blk.clen)) as usize],
                    blk,
                    n as u32,
                    &mut raw,
                )?;
            }
            Ok(())
        });
        assert!(res.is_err(), "flip at byte {i} went unnoticed");
    }
}
