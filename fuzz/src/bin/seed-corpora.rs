//! Writes the seed corpora: `seed-corpora <dir>` fills `<dir>/<target>/`.

use gitgazer_ws_fuzz::seeds::{TARGETS, seeds};

fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: seed-corpora <output directory>");
        std::process::exit(2);
    };
    let out = std::path::PathBuf::from(out);
    for target in TARGETS {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("create seed directory");
        let seeds = seeds(target);
        for seed in &seeds {
            std::fs::write(dir.join(&seed.name), &seed.bytes).expect("write seed");
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
}
