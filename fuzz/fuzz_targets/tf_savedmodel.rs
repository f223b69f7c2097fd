//! The SavedModel loader: the input is `saved_model.pb`, next to a fixed small variables
//! bundle (the `tiny_saved_model` fixture's). The loader reads from a directory, so the
//! input is written to tmpfs first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

const INDEX: &[u8] = include_bytes!("../../bridges/tests/fixtures/tf/tiny_saved_model/variables/variables.index");
const DATA: &[u8] =
    include_bytes!("../../bridges/tests/fixtures/tf/tiny_saved_model/variables/variables.data-00000-of-00001");

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("kiln-fuzz-tf-savedmodel-{}", std::process::id()));
        let vars = dir.join("variables");
        std::fs::create_dir_all(&vars).expect("scratch dir");
        std::fs::write(vars.join("variables.index"), INDEX).expect("write the index");
        std::fs::write(vars.join("variables.data-00000-of-00001"), DATA).expect("write the shard");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    std::fs::write(dir.join("saved_model.pb"), data).expect("write the input to tmpfs");
    if let Ok(g) = kiln_bridges::tensorflow::load_saved_model(dir, None) {
        let _ = kiln_ir::verify(&g);
    }
});
