//! Golden tests: `tests/golden/v4.hex` is a complete version 4 payload
//! (data blocks, metadata, index, trailer; no stub, so the data section
//! starts at offset 0). docs/FORMAT.md describes these exact bytes.
//! `tests/golden/v3.hex`, the version 3 golden file, is frozen: readers
//! must keep decoding it.
//!
//! Regenerate v4 (only for a deliberate format change, which also bumps the
//! version, or a zstd upgrade that changes compressed bytes) with
//! `TOTE_UPDATE_GOLDEN=1 cargo test -p tote-format --features write --test golden`.

#![cfg(feature = "write")]

use tote_format::*;

const GOLDEN: &str = "tests/golden/v4.hex";
const GOLDEN_V3: &str = "tests/golden/v3.hex";

/// The hash part of the store path in the golden bundle.
const H: &str = "00000000000000000000000000000000";

fn hello_hash() -> Digest32 {
    sha256(b"hello, tote\n")
}

fn run_script() -> Vec<u8> {
    format!("#!/nix/store/{H}-sh/bin/sh\necho hi\n").into_bytes()
}

fn store(rel: &str) -> Vec<u8> {
    format!("nix/store/{H}-demo{rel}").into_bytes()
}

/// The payload the golden file was made from.
fn build() -> Vec<u8> {
    let hello = b"hello, tote\n";
    let run = run_script();
    let gz = b"\x1f\x8b(compressed)";
    let stream = [&hello[..], &run[..], &gz[..]].concat();
    let (block, hash) = encode_block(&stream, 3).unwrap();
    let blocks = vec![BlockRef {
        offset: 0,
        clen: block.len() as u32,
        raw_offset: 0,
        rlen: stream.len() as u32,
        hash,
    }];
    let file = |path: Vec<u8>, executable, size, offset, hash| Entry {
        path,
        kind: EntryKind::File {
            executable,
            size,
            offset,
            hash,
        },
    };
    let dir = |path: &[u8]| Entry {
        path: path.to_vec(),
        kind: EntryKind::Dir,
    };
    let (run_at, gz_at) = (hello.len() as u64, (hello.len() + run.len()) as u64);
    let entries = vec![
        dir(b"nix"),
        dir(b"nix/store"),
        dir(&store("")),
        file(store("/doc.gz"), false, gz.len() as u64, gz_at, sha256(gz)),
        file(store("/dup.txt"), false, 12, 0, hello_hash()),
        file(store("/empty"), false, 0, 0, sha256(b"")),
        file(store("/hello.txt"), false, 12, 0, hello_hash()),
        Entry {
            path: store("/link"),
            kind: EntryKind::Symlink {
                target: b"hello.txt".to_vec(),
            },
        },
        file(store("/run"), true, run.len() as u64, run_at, sha256(&run)),
    ];
    let meta = Meta {
        name: "run".into(),
        creator: "tote golden".into(),
        entrypoint: format!("/nix/store/{H}-demo/run").into_bytes(),
        args: vec![b"--golden".to_vec()],
        cmd: vec![b"default".to_vec()],
        env: vec![b"GOLDEN=1".to_vec()],
        workdir: Vec::new(),
        root: Vec::new(),
        mounts: vec![MountSpec::at_own_path(MountKind::Layer, b"/nix/store")],
        mode: Mode::Mount,
        relocation: Relocation::Store {
            unrewritable: vec![store("/doc.gz")],
        },
        stats: Stats {
            entries: 9,
            files: 5,
            total_size: 12 * 2 + run.len() as u64 + gz.len() as u64,
            unique_size: stream.len() as u64,
            blocks: 1,
        },
    };
    // The one store reference: `/nix/store/` in the #! line of `run`.
    let index = Index {
        blocks,
        entries,
        refs: vec![run_at + 2],
    };
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
    read_hex(GOLDEN)
}

fn read_hex(path: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let hex: String = text.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn tail(b: &[u8]) -> &[u8] {
    &b[b.len().saturating_sub(TRAILER_LEN)..]
}

/// Decode every section and every block of `b`.
fn decode_all(b: &[u8]) -> Result<(Meta, Index, Vec<u8>), FormatError> {
    let l = Trailer::decode(tail(b), b.len() as u64)?;
    let meta = l.meta(b)?;
    let index = l.index(b)?;
    meta.check_stats(&index)?;
    let data = l.data(b)?;
    let mut stream = Vec::new();
    for (n, blk) in index.blocks.iter().enumerate() {
        let mut raw = vec![0u8; blk.rlen as usize];
        decode_block(blk.frame(data), blk, n as u32, &mut raw)?;
        stream.extend_from_slice(&raw);
    }
    Ok((meta, index, stream))
}

#[test]
fn golden_decodes_to_known_values() {
    let g = golden();
    let layout = Trailer::decode(tail(&g), g.len() as u64).unwrap();
    let t = &layout.trailer;
    assert_eq!(layout.version, 4);
    assert_eq!(&g[g.len() - 8..], b"TOTEBNDL");
    assert_eq!(t.data_offset, 0);
    let (meta, index, stream) = decode_all(&g).unwrap();
    assert_eq!(meta.entrypoint, format!("/nix/store/{H}-demo/run").into_bytes());
    assert_eq!(meta.args, vec![b"--golden".to_vec()]);
    assert_eq!(meta.cmd, vec![b"default".to_vec()]);
    assert_eq!(meta.env, vec![b"GOLDEN=1".to_vec()]);
    assert!(meta.root.is_empty() && meta.workdir.is_empty());
    assert_eq!(
        meta.mounts,
        vec![MountSpec {
            kind: MountKind::Layer,
            source: b"nix/store".to_vec(),
            target: b"/nix/store".to_vec()
        }]
    );
    assert_eq!(meta.mode, Mode::Mount);
    assert_eq!(
        meta.relocation,
        Relocation::Store {
            unrewritable: vec![store("/doc.gz")]
        }
    );
    assert_eq!(meta.store_dir(), Some(&b"/nix/store"[..]));
    let paths: Vec<&[u8]> = index.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths.len(), 9);
    assert_eq!(paths[8], store("/run"));
    // The references the index records are exactly those the rule finds.
    let found: Vec<u64> = refs::find(&stream, b"/nix/store")
        .into_iter()
        .map(|r| r as u64)
        .collect();
    assert_eq!(index.refs, found);
    assert_eq!(
        (stream.len(), index.refs.as_slice()),
        (90, &[14u64][..]),
        "as docs/FORMAT.md says"
    );
    assert_eq!(&stream[index.refs[0] as usize..][..11], b"/nix/store/");
    match &index.entries[8].kind {
        EntryKind::File {
            executable,
            size,
            offset,
            hash,
        } => {
            assert!(executable);
            assert_eq!(&stream[*offset as usize..(*offset + *size) as usize], run_script());
            assert_eq!(*hash, sha256(&run_script()));
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
fn version_3_golden_still_decodes() {
    let g = read_hex(GOLDEN_V3);
    let layout = Trailer::decode(tail(&g), g.len() as u64).unwrap();
    assert_eq!(layout.version, 3);
    let (meta, index, stream) = decode_all(&g).unwrap();
    assert_eq!(meta.entrypoint, b"/opt/demo/run");
    assert_eq!(meta.mounts, vec![MountSpec::at_own_path(MountKind::Replace, b"/opt")]);
    assert_eq!(meta.mode, Mode::Mount);
    assert_eq!(meta.relocation, Relocation::None);
    assert!(index.refs.is_empty());
    assert_eq!(index.entries.len(), 7);
    assert_eq!(stream, b"hello, tote\n#!/bin/sh\necho hi\n");
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
    for g in [golden(), read_hex(GOLDEN_V3)] {
        for n in 0..g.len() {
            assert!(decode_all(&g[..n]).is_err(), "prefix of {n} bytes accepted");
        }
    }
}

#[test]
fn every_byte_flip_is_detected() {
    for g in [golden(), read_hex(GOLDEN_V3)] {
        for i in 0..g.len() {
            let mut b = g.clone();
            b[i] ^= 0x01;
            assert!(decode_all(&b).is_err(), "flip at byte {i} went unnoticed");
        }
    }
}
