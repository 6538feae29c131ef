//! `TOTE_INFO=1`: the bundle's metadata, one `name: value` line each, from
//! the trailer and metadata alone; what the bundle says is escaped where a
//! terminal would act on it (`tote_format::printable`).

use tote_format::Relocation;

use crate::payload::Payload;

pub fn print_info(p: &Payload) {
    let m = &p.meta;
    let t = &p.layout.trailer;
    let lossy = |b: &[u8]| tote_format::printable(b).into_owned();
    println!("name: {}", lossy(m.name.as_bytes()));
    println!("bundle id: {}", p.id());
    println!("format version: {}", p.layout.version);
    println!("creator: {}", lossy(m.creator.as_bytes()));
    println!("entry point: {}", lossy(&m.entrypoint));
    println!("architecture: {}", m.arch);
    for a in &m.args {
        println!("argument: {}", lossy(a));
    }
    for a in &m.cmd {
        println!("default argument: {}", lossy(a));
    }
    for e in &m.env {
        println!("environment: {}", lossy(e));
    }
    if !m.root.is_empty() {
        println!("root: {}", lossy(&m.root));
    }
    if !m.workdir.is_empty() {
        println!("working directory: {}", lossy(&m.workdir));
    }
    for mt in &m.mounts {
        println!(
            "mount ({}): {} -> {}",
            mt.kind.name(),
            lossy(&mt.source),
            lossy(&mt.target)
        );
    }
    println!("mode: {}", m.mode.name());
    match &m.relocation {
        Relocation::None => println!("relocation: none"),
        Relocation::Store { unrewritable } => {
            println!("relocation: store ({} files unrewritable)", unrewritable.len());
            for f in unrewritable {
                println!("unrewritable: /{}", lossy(f));
            }
        }
        Relocation::Loader { interpreter, .. } => println!("relocation: loader {}", lossy(interpreter)),
    }
    println!("entries: {} ({} files)", m.stats.entries, m.stats.files);
    println!(
        "content size: {} bytes ({} after deduplication)",
        m.stats.total_size, m.stats.unique_size
    );
    println!("payload: {} bytes in {} blocks", p.layout.data_len(), m.stats.blocks);
    if let Some(r) = &p.layout.remote {
        println!("blocks at: {}", lossy(r.location.url.as_bytes()));
        println!("full bundle: {} bytes", r.full_len);
    }
    println!("stub: {} bytes", t.data_offset);
    println!("file: {} bytes", p.layout.file_len);
}
