//! Pull benchmark (not a test): builds a multi-layer image of about 120 MB
//! (busybox plus incompressible-ish data), pushes it to a private
//! docker-registry on 127.0.0.1, then times cold pulls into a fresh store,
//! and optionally the same pull by containerd (Debian's `containerd`
//! package) started with its own root, state, socket and config.
//!
//! ```text
//! cargo run --release -p image --example pull_bench -- [--runs N] [--containerd]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use image::{ImageStore, Reference, RegistryConfig};

const DATA_LAYERS: usize = 4;
const DATA_LAYER_BYTES: usize = 32 << 20;

/// Fast deterministic pseudo-random bytes (xorshift), with some runs of
/// text mixed in so gzip has a little to do.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(16) {
            out.extend_from_slice(b"the quick brown fox jumps over the lazy dog ");
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let with_containerd = args.iter().any(|a| a == "--containerd");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let reg = Registry::start();
    let host = reg.host();
    let repo = "bench/big";
    let mut layers = vec![busybox_layers().remove(0)];
    for i in 0..DATA_LAYERS {
        let mut l = Layer::new();
        l.dir("data/");
        // Several files per layer, like real images.
        for f in 0..4 {
            l.file(
                &format!("data/l{i}-f{f}.bin"),
                0o644,
                &data((i * 10 + f) as u64 + 1, DATA_LAYER_BYTES / 4),
            );
        }
        layers.push(compress(&l.tar(), Compression::Gzip, false));
    }
    let total: usize = layers.iter().map(|l| l.data.len()).sum();
    rt.block_on(async {
        let p = Pusher::new(&host, None);
        push_image(&p, repo, "1", &layers).await;
    });
    let image_ref = format!("{host}/{repo}:1");
    println!(
        "image {image_ref}: {} layers, {:.1} MB compressed",
        layers.len(),
        total as f64 / 1e6
    );

    let mut regs = BTreeMap::new();
    regs.insert(
        host.clone(),
        RegistryConfig {
            endpoints: vec![format!("http://{host}")],
            insecure: false,
        },
    );
    let reference = Reference::parse(&image_ref).expect("reference");
    let mut crid_times = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
        let store =
            ImageStore::open(dir.path(), regs.clone(), image::PullLimits::default()).expect("open");
        let t = Instant::now();
        rt.block_on(store.pull(&reference, None)).expect("pull");
        let s = t.elapsed().as_secs_f64();
        println!("crid run {run}: {s:.3} s");
        crid_times.push(s);
    }
    let crid = median(&mut crid_times);
    println!(
        "crid median: {crid:.3} s ({:.0} MB/s)",
        total as f64 / 1e6 / crid
    );

    if with_containerd {
        let mut ctr_times = Vec::new();
        for run in 0..runs {
            let s = containerd_pull(&image_ref);
            println!("containerd run {run}: {s:.3} s");
            ctr_times.push(s);
        }
        let ctr = median(&mut ctr_times);
        println!(
            "containerd median: {ctr:.3} s ({:.0} MB/s)",
            total as f64 / 1e6 / ctr
        );
        println!("speed-up crid vs containerd: {:.2}x", ctr / crid);
    }
}

/// Starts a private containerd, times `ctr images pull --plain-http`, stops
/// containerd and removes its directories. Cold every time.
fn containerd_pull(image_ref: &str) -> f64 {
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let d = dir.path();
    let sock = d.join("containerd.sock");
    let config = format!(
        "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
        root = d.join("root").display(),
        state = d.join("state").display(),
        sock = sock.display(),
        opt = d.join("opt").display(),
    );
    std::fs::write(d.join("config.toml"), config).expect("config");
    let log = std::fs::File::create(d.join("containerd.log")).expect("log");
    let mut child: Child = Command::new("containerd")
        .arg("--config")
        .arg(d.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn containerd (apt-get install containerd)");
    let mut up = false;
    for _ in 0..200 {
        if sock.exists()
            && Command::new("ctr")
                .arg("-a")
                .arg(&sock)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        up,
        "containerd did not start; see {}",
        d.join("containerd.log").display()
    );
    let t = Instant::now();
    let out = Command::new("ctr")
        .arg("-a")
        .arg(&sock)
        .args(["-n", "bench", "images", "pull", "--plain-http", image_ref])
        .output()
        .expect("ctr");
    let s = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "ctr pull failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Show that containerd unpacked too (its last lines say "unpacking ... done").
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = stdout.lines().rev().take(2).collect();
    println!("  ctr: {}", tail.join(" | "));
    stop(&mut child, d);
    s
}

fn stop(child: &mut Child, d: &Path) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    // Unmount anything containerd left under its dirs before removing them.
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mounts.lines() {
            if let Some(mp) = line.split(' ').nth(4)
                && Path::new(mp).starts_with(d)
            {
                let _ = Command::new("umount").arg("-l").arg(mp).status();
            }
        }
    }
}
