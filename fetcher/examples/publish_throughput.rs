//! Throughput of `Cache::publish_file` against the floor it cannot beat: one sha256 pass and
//! one single-threaded zstd pass over the same bytes. Driven by `bench/publish.sh`.
//!
//!   publish_throughput FILE CACHE_DIR [none|xz|zstd] [cache,mirror]

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Instant;

use srcgrab_fetcher::store::{Cache, CacheOptions, Layout};
use srcgrab_formats::hash::{HashAlgo, HashMode};
use srcgrab_manifest::{Entry, Kind, StorePathName};

fn read_all(path: &Path, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        sink(&buffer[..n]);
    }
}

/// CPU seconds (user + system) of this process so far, helper threads included: on a
/// shared machine wall time says more about the neighbours than about this code.
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

struct Start {
    wall: Instant,
    cpu: f64,
}

fn start() -> Start {
    Start {
        wall: Instant::now(),
        cpu: cpu_seconds(),
    }
}

fn report(what: &str, bytes: u64, start: Start) {
    let wall = start.wall.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - start.cpu;
    let mib = bytes as f64 / 1048576.0;
    println!(
        "{what:<44} wall {wall:6.2} s {:7.1} MiB/s   cpu {cpu:6.2} s {:7.1} MiB/cpu-s",
        mib / wall,
        mib / cpu
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let file = Path::new(&args[1]);
    let root = Path::new(&args[2]);
    let compression = args.get(3).map_or("zstd", String::as_str).parse()?;
    let layout = args.get(4).map_or("cache,mirror", String::as_str);
    let layout = Layout {
        cache: layout.contains("cache"),
        mirror: layout.contains("mirror"),
    };
    let size = std::fs::metadata(file)?.len();

    let started = start();
    let mut hasher = HashAlgo::Sha256.hasher();
    read_all(file, |b| hasher.update(b))?;
    let hash = hasher.finalize();
    report("floor: sha256", size, started);

    let started = start();
    let mut encoder = zstd::stream::write::Encoder::new(io::sink(), 3)?;
    read_all(file, |b| io::Write::write_all(&mut encoder, b).unwrap())?;
    encoder.finish()?;
    report("floor: zstd -3, one thread", size, started);

    let name = "bench-input";
    let name = StorePathName::new(name).expect("a valid store path name");
    let entry = Entry::new(&name, HashMode::Flat, &hash, Kind::Url);
    let cache = Cache::open(
        root,
        CacheOptions {
            compression,
            layout,
            ..CacheOptions::default()
        },
    )?;
    let started = start();
    let published = cache.publish_file(&entry, file)?;
    report(
        &format!("publish_file ({compression:?}, {layout:?})"),
        size,
        started,
    );
    println!(
        "NAR {} bytes -> file {} bytes",
        published.nar_size, published.file_size
    );
    Ok(())
}
