//! The frozen-GraphDef loader on arbitrary bytes. It streams from a path (so weights are
//! never in memory twice), so each input is written to a file on tmpfs first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("kiln-fuzz-tf-graphdef-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir.join("frozen.pb")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write the input to tmpfs");
    if let Ok(g) = kiln_bridges::tensorflow::load_frozen(path) {
        let _ = kiln_ir::verify(&g);
    }
});
