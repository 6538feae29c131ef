//! Golden tests: `tests/golden/v6.hex` is a complete version 6 payload, and
//! `tests/golden/v7-thin.hex` a thin bundle (version 7) of it
//! (data blocks, metadata, index, trailer; no stub, so the data section
//! starts at offset 0). docs/FORMAT.md describes these exact bytes.
//! `tests/golden/v3.hex`, `v4.hex` and `v5.hex`, the golden files of
//! versions 3 to 5, are frozen: readers must keep decoding them.
//!
//! Regenerate v6 (only for a deliberate format change, which also bumps the
//! version, or a zstd upgrade that changes compressed bytes) with
//! `TOTE_UPDATE_GOLDEN=1 cargo test -p tote-format --features write --test golden`.

#![cfg(feature = "write")]

use tote_format::*;

const GOLDEN: &str = "tests/golden/v6.hex";
const GOLDEN_V5: &str = "tests/golden/v5.hex";
const GOLDEN_V4: &str = "tests/golden/v4.hex";
const GOLDEN_V3: &str = "tests/golden/v3.hex";
const GOLDEN_THIN: &str = "tests/golden/v7-thin.hex";

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

fn again_script() -> Vec<u8> {
    format!("#!/nix/store/{H}-sh/bin/sh\necho hi\necho again\n").into_bytes()
}

/// The payload the golden file was made from: three blocks, one of each
/// kind. Block 0 (zstd) holds `hello.txt` and `run`; block 1 is `doc.gz`,
/// stored (it does not compress); block 2 holds `again`, compressed
/// against a base: the stream bytes of `run`, in block 0.
fn build() -> Vec<u8> {
    let hello = b"hello, tote\n";
    let run = run_script();
    let gz = b"\x1f\x8b(compressed)";
    let again = again_script();
    let (run_at, gz_at) = (hello.len() as u64, (hello.len() + run.len()) as u64);
    let again_at = gz_at + gz.len() as u64;
    let first = [&hello[..], &run[..]].concat();
    let stream = [&first[..], &gz[..], &again[..]].concat();
    let e0 = encode_block(&first, 3, None).unwrap();
    let e1 = encode_block(gz, 3, None).unwrap();
    let base = Base {
        offset: run_at,
        len: run.len() as u32,
    };
    let e2 = encode_block(&again, 3, Some(&run)).unwrap();
    assert_eq!(
        (e0.codec, e1.codec, e2.codec),
        (Codec::Zstd, Codec::Stored, Codec::Zstd)
    );
    let mut blocks = Vec::new();
    let mut offset = 0;
    for (e, raw_offset, rlen, base) in [
        (&e0, 0, first.len(), None),
        (&e1, gz_at, gz.len(), None),
        (&e2, again_at, again.len(), Some(base)),
    ] {
        blocks.push(BlockRef {
            offset,
            clen: e.bytes.len() as u32,
            raw_offset,
            rlen: rlen as u32,
            hash: e.hash,
            codec: e.codec,
            base,
        });
        offset += e.bytes.len() as u64;
    }
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
    let entries = vec![
        dir(b"nix"),
        dir(b"nix/store"),
        dir(&store("")),
        file(store("/again"), true, again.len() as u64, again_at, sha256(&again)),
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
        arch: Arch::Aarch64,
        stats: Stats {
            entries: 10,
            files: 6,
            total_size: 12 * 2 + (run.len() + gz.len() + again.len()) as u64,
            unique_size: stream.len() as u64,
            blocks: 3,
        },
    };
    // The store references: `/nix/store/` in the #! lines of `run` and `again`.
    let index = Index {
        blocks,
        entries,
        refs: vec![run_at + 2, again_at + 2],
    };
    let s = Sections::encode(&meta, &index, 0, 3).unwrap();
    [
        e0.bytes,
        e1.bytes,
        e2.bytes,
        s.meta,
        s.index,
        s.trailer.encode().to_vec(),
    ]
    .concat()
}

/// `path`'s bytes; with TOTE_UPDATE_GOLDEN set, `bytes` written there
/// first (hex, 32 bytes a line).
fn golden_file(path: &str, bytes: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    if std::env::var_os("TOTE_UPDATE_GOLDEN").is_some() {
        let hex: String = bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .chunks(32)
            .map(|c| c.concat() + "\n")
            .collect();
        std::fs::write(path, hex).unwrap();
    }
    read_hex(path)
}

fn golden() -> Vec<u8> {
    golden_file(GOLDEN, build)
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
    let l = Trailer::decode(&b[b.len().saturating_sub(MAX_TAIL)..], b.len() as u64)?;
    let meta = l.meta(b)?;
    let index = l.index(b)?;
    meta.check_stats(&index)?;
    let data = l.data(b)?;
    let mut stream: Vec<u8> = Vec::new();
    for (n, blk) in index.blocks.iter().enumerate() {
        let mut raw = vec![0u8; blk.rlen as usize];
        // Bases lie in earlier blocks: already in `stream`.
        let base = blk
            .base
            .map(|b| &stream[b.offset as usize..(b.offset + u64::from(b.len)) as usize]);
        decode_block(blk.frame(data), blk, n as u32, base, &mut raw)?;
        stream.extend_from_slice(&raw);
    }
    Ok((meta, index, stream))
}

#[test]
fn golden_decodes_to_known_values() {
    let g = golden();
    let layout = Trailer::decode(tail(&g), g.len() as u64).unwrap();
    let t = &layout.trailer;
    assert_eq!(layout.version, 6);
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
    assert_eq!(meta.arch, Arch::Aarch64);
    assert_eq!(meta.store_dir(), Some(&b"/nix/store"[..]));
    let paths: Vec<&[u8]> = index.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths.len(), 10);
    assert_eq!(paths[9], store("/run"));
    let codecs: Vec<(Codec, Option<Base>)> = index.blocks.iter().map(|b| (b.codec, b.base)).collect();
    assert_eq!(
        codecs,
        [
            (Codec::Zstd, None),
            (Codec::Stored, None),
            (Codec::Zstd, Some(Base { offset: 12, len: 64 }))
        ],
        "as docs/FORMAT.md says"
    );
    assert_eq!(index.base_blocks(2), 0..1);
    // The references the index records are exactly those the rule finds.
    let found: Vec<u64> = refs::find(&stream, b"/nix/store")
        .into_iter()
        .map(|r| r as u64)
        .collect();
    assert_eq!(index.refs, found);
    assert_eq!(
        (stream.len(), index.refs.as_slice()),
        (12 + 64 + 14 + 75, &[14u64, 12 + 64 + 14 + 2][..]),
        "as docs/FORMAT.md says"
    );
    assert_eq!(&stream[index.refs[0] as usize..][..11], b"/nix/store/");
    match &index.entries[9].kind {
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
fn version_5_golden_still_decodes() {
    let g = read_hex(GOLDEN_V5);
    let layout = Trailer::decode(tail(&g), g.len() as u64).unwrap();
    assert_eq!(layout.version, 5);
    let (meta, index, stream) = decode_all(&g).unwrap();
    assert_eq!(meta.entrypoint, format!("/nix/store/{H}-demo/run").into_bytes());
    // Before version 6 every bundle was x86-64.
    assert_eq!(meta.arch, Arch::X86_64);
    assert_eq!(index.entries.len(), 10);
    assert_eq!(index.blocks.len(), 3);
    assert_eq!(stream.len(), 165);
}

#[test]
fn version_4_golden_still_decodes() {
    let g = read_hex(GOLDEN_V4);
    let layout = Trailer::decode(tail(&g), g.len() as u64).unwrap();
    assert_eq!(layout.version, 4);
    let (meta, index, stream) = decode_all(&g).unwrap();
    assert_eq!(meta.entrypoint, format!("/nix/store/{H}-demo/run").into_bytes());
    assert_eq!(index.entries.len(), 9);
    assert_eq!(index.blocks.len(), 1);
    assert_eq!((index.blocks[0].codec, index.blocks[0].base), (Codec::Zstd, None));
    assert_eq!(index.refs, [14]);
    assert_eq!(stream.len(), 90);
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
    for g in [golden(), read_hex(GOLDEN_V4), read_hex(GOLDEN_V3)] {
        for n in 0..g.len() {
            assert!(decode_all(&g[..n]).is_err(), "prefix of {n} bytes accepted");
        }
    }
}

#[test]
fn every_byte_flip_is_detected() {
    for g in [golden(), read_hex(GOLDEN_V4), read_hex(GOLDEN_V3)] {
        for i in 0..g.len() {
            let mut b = g.clone();
            b[i] ^= 0x01;
            assert!(decode_all(&b).is_err(), "flip at byte {i} went unnoticed");
        }
    }
}

/// The ceilings docs/FORMAT.md's "Limits" table states are the ones the
/// decoders enforce.
#[test]
fn limits_table_matches_the_decoders() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md")).unwrap();
    let section = doc
        .split("\n## Limits\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let row = |what: &str| -> String {
        let line = section
            .lines()
            .find(|l| l.starts_with(&format!("| {what} |")))
            .unwrap_or_else(|| panic!("no row {what:?} in FORMAT.md's Limits"));
        line.split('|').nth(2).unwrap().trim().to_string()
    };
    let grouped = |n: u64| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let mib = |n: u64| format!("{} MiB", n >> 20);
    let amplify = format!(
        "{MAX_AMPLIFICATION} × the data section + {} GiB",
        AMPLIFY_ALLOWANCE >> 30
    );
    let want = [
        ("metadata", mib(MAX_META_LEN)),
        (
            "decompressed index",
            format!(
                "{}, and at most {MAX_INDEX_RATIO} × its compressed length + 1 MiB",
                mib(MAX_INDEX_RAW)
            ),
        ),
        (
            "entries",
            format!("{} (2^{})", grouped(MAX_ENTRIES as u64), MAX_ENTRIES.ilog2()),
        ),
        (
            "blocks",
            format!("{} (2^{})", grouped(MAX_BLOCKS as u64), MAX_BLOCKS.ilog2()),
        ),
        (
            "store references",
            format!("{} (2^{})", grouped(MAX_REFS as u64), MAX_REFS.ilog2()),
        ),
        ("mounts", MAX_MOUNTS.to_string()),
        ("path, symlink target", format!("{} bytes", grouped(MAX_PATH as u64))),
        ("path component", format!("{MAX_NAME} bytes")),
        ("path depth", format!("{MAX_DEPTH} components")),
        (
            "block, decoded",
            format!(
                "{}, and at most {} × its stored length",
                mib(MAX_BLOCK_RAW.into()),
                grouped(MAX_BLOCK_RATIO)
            ),
        ),
        (
            "base",
            format!("{}, in at most {MAX_BASE_BLOCKS} blocks", mib(MAX_BASE_LEN.into())),
        ),
        ("data stream (Σ `rlen`)", amplify.clone()),
        (
            "bases decoded (Σ over based blocks of their base blocks' `rlen`)",
            amplify.clone(),
        ),
        ("files (Σ file `size`, shared contents counted per file)", amplify),
        ("remote record (thin bundles)", format!("{} KiB", MAX_REMOTE_LEN >> 10)),
        (
            "signature section",
            format!(
                "{} KiB, {} signatures",
                sign::MAX_SIG_SECTION >> 10,
                sign::MAX_SIGNATURES
            ),
        ),
    ];
    for (what, ceiling) in want {
        assert_eq!(row(what), ceiling, "FORMAT.md's Limits row {what:?}");
    }
    assert_eq!(
        section
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| what"))
            .count(),
        16
    );
    assert!(section.contains(&format!("last {} bytes |", grouped(MAX_TAIL as u64))));
}

/// The thin example: the version 6 golden's metadata and index, no stub,
/// and where the full bundle (the golden itself) is.
fn thin_location() -> Location {
    Location {
        url: "s3://tote/apps/golden".into(),
        endpoint: "http://127.0.0.1:3900".into(),
        region: "garage".into(),
    }
}

fn build_thin() -> Vec<u8> {
    let g = golden();
    let l = Trailer::decode(tail(&g), g.len() as u64).unwrap();
    let t = &l.trailer;
    let meta = &g[t.meta_offset as usize..(t.meta_offset + t.meta_len) as usize];
    let index = &g[t.index_offset as usize..(t.index_offset + t.index_len) as usize];
    let full: [u8; TRAILER_LEN] = tail(&g).try_into().unwrap();
    encode_thin(b"", meta, index, &full, g.len() as u64, &thin_location()).unwrap()
}

fn golden_thin() -> Vec<u8> {
    golden_file(GOLDEN_THIN, build_thin)
}

/// Trailer, remote record, metadata and index of a thin file, each checked.
fn decode_thin(b: &[u8]) -> Result<(Layout, Meta, Index), FormatError> {
    let l = Trailer::decode(&b[b.len().saturating_sub(MAX_TAIL)..], b.len() as u64)?;
    let meta = l.meta(b)?;
    let index = l.index(b)?;
    meta.check_stats(&index)?;
    Ok((l, meta, index))
}

#[test]
fn thin_golden_decodes_to_its_full_bundles_values() {
    let (g, full) = (golden_thin(), golden());
    assert!(build_thin() == g, "the encoder no longer writes the thin golden bytes");
    let (l, meta, index) = decode_thin(&g).unwrap();
    let (full_meta, full_index, _) = decode_all(&full).unwrap();
    assert_eq!(l.version, 7);
    assert_eq!(&g[g.len() - 8..], b"TOTEBNDL");
    let ft = Trailer::decode(tail(&full), full.len() as u64).unwrap();
    // Metadata, index, the remote record (three blobs: 4 + 21, 4 + 21,
    // 4 + 6 bytes) and the trailer; the data section is empty.
    let (m, i) = (ft.trailer.meta_len, ft.trailer.index_len);
    assert_eq!(g.len() as u64, m + i + 60 + 248);
    assert_eq!(
        (l.trailer.data_offset, l.trailer.meta_offset, l.trailer.index_offset),
        (0, 0, m)
    );
    assert_eq!(l.trailer.bundle_id(), ft.trailer.bundle_id());
    assert_eq!((meta, index), (full_meta, full_index));
    let r = l.remote.as_ref().unwrap();
    assert_eq!(r.location, thin_location());
    assert_eq!(
        (r.full_len, r.full_version, r.full.clone()),
        (full.len() as u64, 6, ft.trailer.clone())
    );
    assert_eq!(l.data_len(), ft.trailer.meta_offset - ft.trailer.data_offset);
    assert!(matches!(l.data(&g), Err(FormatError::Remote(_))));
}

#[test]
fn every_truncation_and_byte_flip_of_the_thin_golden_is_an_error() {
    let g = golden_thin();
    for n in 0..g.len() {
        assert!(decode_thin(&g[..n]).is_err(), "prefix of {n} bytes accepted");
        let mut b = g.clone();
        b[n] ^= 0x01;
        assert!(decode_thin(&b).is_err(), "flip at byte {n} went unnoticed");
    }
}

// --- Signatures ------------------------------------------------------------

const GOLDEN_SIGNED: &str = "tests/golden/v6-signed.hex";
/// 2030-01-01T00:00:00Z.
const EXPIRES: u64 = 1_893_456_000;

fn golden_keys() -> [sign::SecretKey; 2] {
    [
        sign::SecretKey::from_seed("golden-1", [1; 32]).unwrap(),
        sign::SecretKey::from_seed("golden-2", [2; 32]).unwrap(),
    ]
}

/// The golden bundle's statement: it has no stub, so the stub's SHA-256
/// is that of no bytes.
fn golden_statement(g: &[u8]) -> sign::Statement {
    let l = Trailer::decode(tail(g), g.len() as u64).unwrap();
    l.statement(sha256(b""))
}

/// The golden bundle signed by golden-1 (no expiry) and golden-2
/// (expiring 2030-01-01).
fn build_signed() -> Vec<u8> {
    let g = golden();
    let about = golden_statement(&g);
    let [k1, k2] = golden_keys();
    let sigs = [k2.sign(&about, EXPIRES), k1.sign(&about, 0)];
    [g, sign::encode_section(&about, &sigs).unwrap()].concat()
}

fn golden_signed() -> Vec<u8> {
    golden_file(GOLDEN_SIGNED, build_signed)
}

fn long_tail(b: &[u8]) -> &[u8] {
    &b[b.len().saturating_sub(MAX_TAIL)..]
}

#[test]
fn signed_golden_is_the_unsigned_bundle_then_its_signatures() {
    let (s, g) = (golden_signed(), golden());
    assert!(
        build_signed() == s,
        "the encoder no longer writes the signed golden bytes"
    );
    assert_eq!(&s[..g.len()], &g[..], "the unsigned bundle is a prefix, byte for byte");
    assert_eq!(&s[s.len() - 8..], b"TOTESIGS");
    let l = Trailer::decode(long_tail(&s), s.len() as u64).unwrap();
    assert_eq!((l.file_len, l.signed_len()), (g.len() as u64, s.len() as u64));
    let sigs = l.signed.as_ref().unwrap();
    // The statement (104 bytes), two records of 1 + 8 + 32 + 8 + 64
    // bytes, and the 16-byte footer.
    assert_eq!(sigs.section_len, 104 + 2 * 113 + 16);
    assert_eq!(&s[g.len()..g.len() + 104], &golden_statement(&g).encode());
    let names: Vec<_> = sigs.list.iter().map(|s| (s.name.as_str(), s.expires)).collect();
    assert_eq!(names, [("golden-1", 0), ("golden-2", EXPIRES)]);
    // Every section still decodes from the signed file.
    assert_eq!(decode_all(&g).unwrap().0, l.meta(&s).unwrap());
    let about = l.statement(sha256(b""));
    assert_eq!(about, golden_statement(&g));
    for (sig, key) in sigs.list.iter().zip(golden_keys()) {
        assert_eq!(sig.public(), key.public());
        assert!(sig.verifies(&about));
    }
}

#[test]
fn the_signed_message_is_as_documented() {
    let g = golden();
    let about = golden_statement(&g);
    let mut want = b"tote signed bundle v1\0".to_vec();
    want.extend_from_slice(&(g.len() as u64).to_le_bytes());
    want.extend_from_slice(&sha256(b"").0);
    want.extend_from_slice(&sha256(tail(&g)).0);
    want.extend_from_slice(
        &Trailer::decode(tail(&g), g.len() as u64)
            .unwrap()
            .trailer
            .bundle_id()
            .0
             .0,
    );
    want.extend_from_slice(&EXPIRES.to_le_bytes());
    want.extend_from_slice(b"\x08golden-2");
    assert_eq!(about.message("golden-2", EXPIRES), want);
    // What a Nix narinfo signature signs starts `1;/nix/store/`.
    assert!(!want.starts_with(b"1;"));
}

#[test]
fn signatures_added_in_either_order_encode_alike() {
    let g = golden();
    let about = golden_statement(&g);
    let [k1, k2] = golden_keys();
    let (a, b) = (k1.sign(&about, 0), k2.sign(&about, EXPIRES));
    let one = sign::encode_section(&about, &[a.clone(), b.clone()]).unwrap();
    assert_eq!(one, sign::encode_section(&about, &[b, a]).unwrap());
    assert!(sign::encode_section(&about, &[]).unwrap().is_empty());
}

/// Under a policy trusting both golden keys (at 2029), does `b` pass?
fn passes(b: &[u8]) -> bool {
    let Ok(l) = Trailer::decode(long_tail(b), b.len() as u64) else {
        return false;
    };
    // Every section and block, as `tote verify` checks them.
    if decode_all(b).is_err() {
        return false;
    }
    let policy = sign::Policy {
        keys: golden_keys().iter().map(|k| k.public()).collect(),
        sigs_needed: 2,
    };
    let about = l.statement(sha256(&b[..l.trailer.data_offset as usize]));
    let Some(sigs) = l.signed.as_deref() else {
        return false;
    };
    policy
        .check(Some(sigs), &about, EXPIRES - 1, |s| s.verifies(&sigs.statement))
        .refused
        .is_none()
}

#[test]
fn every_byte_flip_and_truncation_of_the_signed_golden_is_refused() {
    let s = golden_signed();
    assert!(passes(&s));
    for n in 0..s.len() {
        let mut b = s.clone();
        b[n] ^= 0x01;
        assert!(!passes(&b), "flip at byte {n} went unnoticed");
        assert!(!passes(&s[..n]), "prefix of {n} bytes accepted");
    }
}

#[test]
fn policy_verdicts() {
    let s = golden_signed();
    let l = Trailer::decode(long_tail(&s), s.len() as u64).unwrap();
    let about = l.statement(sha256(b""));
    let [k1, k2] = golden_keys();
    let other = sign::SecretKey::from_seed("other", [3; 32]).unwrap();
    let check = |keys: Vec<sign::PublicKey>, needed: usize, now: u64| {
        let p = sign::Policy {
            keys,
            sigs_needed: needed,
        };
        p.check(l.signed.as_deref(), &about, now, |s| s.verifies(&about))
    };
    // Rotation: either key alone is enough.
    assert!(check(vec![k1.public()], 1, 0).refused.is_none());
    assert!(check(vec![k2.public()], 1, 0).refused.is_none());
    let v = check(vec![other.public()], 1, 0);
    assert_eq!(
        v.refused.unwrap(),
        "0 signatures by a trusted key, 1 needed (signed by golden-1, golden-2, not trusted here)"
    );
    let v = check(vec![k1.public(), k2.public()], 2, EXPIRES);
    assert_eq!(v.refused.unwrap(), "the signature by golden-2 has expired");
    let statuses: Vec<_> = v.signers.iter().map(|(_, st)| *st).collect();
    assert_eq!(statuses, [sign::Status::Trusted, sign::Status::Expired]);
    // A key of the same bytes under another name is another key.
    let renamed = sign::PublicKey {
        name: "golden-x".into(),
        key: k1.public().key,
    };
    assert!(check(vec![renamed], 1, 0).refused.is_some());
    let unsigned = sign::Policy {
        keys: vec![k1.public()],
        sigs_needed: 1,
    }
    .check(None, &about, 0, |_| true);
    assert_eq!(unsigned.refused.unwrap(), "it is not signed");
}

#[test]
fn keys_read_as_nix_writes_them() {
    let [k1, _] = golden_keys();
    let secret = k1.to_text();
    let back = sign::SecretKey::parse(&secret).unwrap();
    assert_eq!(back.public(), k1.public());
    let public = k1.public().to_string();
    assert_eq!(sign::PublicKey::parse(&public).unwrap(), k1.public());
    let err = sign::SecretKey::parse(&public).err().unwrap();
    assert!(err.contains("a public key"), "{err}");
    // A secret key whose public half belongs to another key.
    let mut raw = sign::base64_decode(secret.split_once(':').unwrap().1).unwrap();
    raw[40] ^= 1;
    let forged = format!("golden-1:{}", sign::base64_encode(&raw));
    assert!(sign::SecretKey::parse(&forged).is_err());
    let p = sign::parse_policy(&format!(
        "# ours\n{public}  {}\nsigs-needed 2\n",
        golden_keys()[1].public()
    ))
    .unwrap();
    assert_eq!((p.keys.len(), p.sigs_needed), (2, 2));
}

#[test]
fn a_changed_region_is_named() {
    let s = golden_signed();
    let l = Trailer::decode(long_tail(&s), s.len() as u64).unwrap();
    let sigs = l.signed.as_deref().unwrap();
    let policy = sign::Policy {
        keys: golden_keys().iter().map(|k| k.public()).collect(),
        sigs_needed: 1,
    };
    let verdict = |actual: &sign::Statement| {
        policy
            .check(Some(sigs), actual, 0, |s| s.verifies(&sigs.statement))
            .changed
    };
    let own = l.statement(sha256(b""));
    assert_eq!(verdict(&own), None);
    let other_stub = l.statement(sha256(b"another stub"));
    assert_eq!(verdict(&other_stub), Some("stub"));
    let mut other_trailer = own.clone();
    other_trailer.trailer = sha256(b"x");
    assert_eq!(verdict(&other_trailer), Some("trailer"));
    // A record's signature bytes changed: that signer is invalid.
    let mut b = s.clone();
    let at = b.len() - 16 - 1;
    b[at] ^= 1;
    let l = Trailer::decode(long_tail(&b), b.len() as u64).unwrap();
    let sigs = l.signed.as_deref().unwrap();
    let v = policy.check(Some(sigs), &own, 0, |s| s.verifies(&sigs.statement));
    assert_eq!(
        v.refused.unwrap(),
        "the signature by golden-2 is damaged (it does not verify)"
    );
}

#[test]
fn a_thin_bundles_object_may_be_its_full_bundle_signed() {
    let (l, _, _) = decode_thin(&golden_thin()).unwrap();
    let r = l.remote.as_deref().unwrap();
    // What a server answers to the probe's range: up to OBJECT_TAIL bytes
    // from the full bundle's trailer, or fewer at the object's end.
    let (start, most) = r.object_probe();
    let end = |b: &[u8]| b[(start as usize).min(b.len())..b.len().min((start + most) as usize)].to_vec();
    assert_eq!(end(&golden()).len(), 144, "an unsigned object: its trailer alone");
    let (full, signed) = (golden(), golden_signed());
    assert!(r.is_object(&end(&full), full.len() as u64));
    assert!(r.is_object(&end(&signed), signed.len() as u64));
    // Anything else after the bundle, or a changed trailer: not it.
    let mut more = full.clone();
    more.extend_from_slice(&[0; 16]);
    assert!(!r.is_object(&end(&more), more.len() as u64));
    let mut other = signed.clone();
    let at = full.len() - 20;
    other[at] ^= 1;
    assert!(!r.is_object(&end(&other), other.len() as u64));
    assert!(!r.is_object(&end(&full[..full.len() - 1]), full.len() as u64 - 1));
    assert!(!r.is_object(&[], 0));
    // A short answer (a proxy's cut) or a signature section cut short.
    assert!(!r.is_object(&end(&signed)[..200], signed.len() as u64));
    // Bytes beyond the probe's reach after the bundle: more than a
    // signature section can be.
    let mut huge = signed.clone();
    huge.splice(full.len()..full.len(), vec![0u8; most as usize]);
    assert!(!r.is_object(&end(&huge), huge.len() as u64));
}
