//! crid's config parser with its drop-in merge, as `Config::load` reads
//! them: the input is the main file, then (after a line
//! `#### config.d/10.toml`) one drop-in. No input panics it, and a config
//! it reads prints (`crid config default`'s form) to TOML that reads back
//! the same.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use cri_server::config::Config;
use libfuzzer_sys::fuzz_target;

const DROP_IN_MARKER: &[u8] = b"\n#### config.d/10.toml\n";

/// One directory for the process's files, rewritten by every input.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temporary directory"))
}

fn write(name: &str, contents: &[u8]) -> PathBuf {
    let path = dir().path().join(name);
    std::fs::write(&path, contents).expect("writing a config file");
    path
}

fn split(input: &[u8]) -> (&[u8], Option<&[u8]>) {
    match input
        .windows(DROP_IN_MARKER.len())
        .position(|window| window == DROP_IN_MARKER)
    {
        Some(at) => (&input[..at], Some(&input[at + DROP_IN_MARKER.len()..])),
        None => (input, None),
    }
}

fn round_trip(config: &Config) {
    let text = config.to_toml().expect("a parsed config prints");
    let path = write("printed.toml", text.as_bytes());
    let again = Config::from_file(&path)
        .unwrap_or_else(|error| panic!("printed config does not read back: {error}\n{text}"));
    assert_eq!(&again, config, "printed as\n{text}");
}

fuzz_target!(|input: &[u8]| {
    let (main, drop_in) = split(input);
    let mut files = vec![write("config.toml", main)];
    if let Some(drop_in) = drop_in {
        files.push(write("10.toml", drop_in));
    }
    let Ok(config) = Config::from_files(&files) else {
        return;
    };
    let _ = config.validate();
    round_trip(&config);
});
