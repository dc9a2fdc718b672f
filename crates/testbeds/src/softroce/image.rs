//! The guest's kernel and initramfs, prepared once and cached outside the checkout.
//!
//! Layout of the cache ([`cache_dir`], normally `$HOME/.cache/seaweed-rdma/guest/`):
//!
//! ```text
//! debs/linux-image-VERSION_*.deb     the kernel package, as `apt-get download` fetched it
//! kernel-VERSION/vmlinuz             the kernel, copied out of the package
//! kernel-VERSION/initramfs-HASH.cpio busybox-static, init.sh, the modules; HASH covers the recipe
//! runs/...                           one directory per guest boot (see `guest`)
//! ```
//!
//! The kernel is the versioned `linux-image-*-amd64` that Debian's `linux-image-amd64`
//! depends on. The initramfs is keyed by a hash of its recipe (kernel version, root
//! modules, init script, busybox binary), so changing any of them rebuilds it and an
//! unchanged recipe is reused. Every file lands under a temporary name and is renamed
//! into place, so an interrupted run never leaves a half-written cache entry behind.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Error, io_error};

/// The modules the guest needs; `modprobe --show-depends` adds their dependencies in
/// load order.
///
/// `crc32_generic` comes first because `rdma_rxe` looks up the kernel's "crc32" crypto
/// algorithm by name (no module dependency records it): without it,
/// `rdma link add ... type rxe` fails with "No such file or directory".
pub const ROOT_MODULES: &[&str] = &[
    "crc32_generic",
    "virtio_pci",
    "virtio_net",
    "9pnet_virtio",
    "9p",
    "rdma_rxe",
    "ib_uverbs",
    "rdma_ucm",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
];

/// PID 1 of the guest.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// The static busybox that Debian's busybox-static installs.
const BUSYBOX: &str = "/bin/busybox";

/// Bump when the initramfs layout changes in a way the other recipe inputs do not show.
const RECIPE_LAYOUT: &str = "softroce-initramfs-v1";

/// A prepared kernel and initramfs.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel_version: String,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
}

/// Where the guest's files are cached: `$SEAWEED_RDMA_GUEST_CACHE` if set, else
/// `$HOME/.cache/seaweed-rdma/guest`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEAWEED_RDMA_GUEST_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/seaweed-rdma/guest")
}

/// A host program the preparation or the guest needs, and the Debian package with it.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("depmod", "kmod"),
    ("modprobe", "kmod"),
    ("cpio", "cpio"),
    ("busybox", "busybox-static"),
    ("rdma", "iproute2"),
    ("ib_read_lat", "perftest"),
];

/// Finds `tool` on `PATH` or in the sbin directories (which a non-login PATH may lack).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Fails with the missing package's name if any tool the guest needs is absent.
pub fn check_host_tools() -> Result<(), Error> {
    for (tool, package) in HOST_TOOLS {
        if find_tool(tool).is_none() {
            return Err(Error::MissingTool { tool: (*tool).to_owned(), package: (*package).to_owned() });
        }
    }
    Ok(())
}

impl GuestImage {
    /// Makes sure the kernel and the initramfs are in the cache, fetching or building what
    /// is missing; `progress` hears one line per step, saying what was reused and what was
    /// made.
    pub fn prepare(progress: &mut dyn FnMut(&str)) -> Result<Self, Error> {
        check_host_tools()?;
        let busybox = fs::read(BUSYBOX).map_err(io_error(BUSYBOX))?;
        if !is_static_elf(&busybox) {
            return Err(Error::BusyboxNotStatic { path: PathBuf::from(BUSYBOX) });
        }
        let cache = cache_dir();
        let version = resolve_kernel_version(&cache)?;
        let kernel_dir = cache.join(format!("kernel-{version}"));
        let vmlinuz = kernel_dir.join("vmlinuz");
        let hash = recipe_hash(&version, ROOT_MODULES, INIT_SCRIPT, &busybox);
        let initramfs = kernel_dir.join(format!("initramfs-{hash}.cpio"));

        if vmlinuz.is_file() && initramfs.is_file() {
            progress(&format!("kernel {version}: reused {}", vmlinuz.display()));
            progress(&format!("initramfs (recipe {hash}): reused {}", initramfs.display()));
            return Ok(Self { kernel_version: version, vmlinuz, initramfs });
        }

        let deb = kernel_package(&cache, &version, progress)?;
        progress("kernel package: unpacking");
        fs::create_dir_all(&kernel_dir).map_err(io_error(&kernel_dir))?;
        let scratch = TempDir::new(&kernel_dir, "extract")?;
        run_host(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(scratch.path()))?;
        if vmlinuz.is_file() {
            progress(&format!("kernel {version}: reused {}", vmlinuz.display()));
        } else {
            let source = scratch.path().join(format!("boot/vmlinuz-{version}"));
            install_file(&source, &vmlinuz)?;
            progress(&format!("kernel {version}: extracted {}", vmlinuz.display()));
        }

        progress(&format!("initramfs: resolving the dependencies of {}", ROOT_MODULES.join(" ")));
        run_host(Command::new(tool_path("depmod")).arg("-b").arg(scratch.path()).arg(&version))?;
        let mut show_depends = Vec::new();
        for module in ROOT_MODULES {
            let output = run_host(
                Command::new(tool_path("modprobe"))
                    .args(["--show-depends", "-d"])
                    .arg(scratch.path())
                    .args(["-S", &version, module]),
            )?;
            show_depends.push(output);
        }
        let modules = module_load_order(&show_depends)?;
        progress(&format!("initramfs: packing busybox, init and {} modules", modules.len()));
        build_initramfs(&busybox, &modules, &initramfs, &kernel_dir)?;
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        progress(&format!(
            "initramfs (recipe {hash}): built {} with {} modules: {}",
            initramfs.display(),
            modules.len(),
            names.join(" ")
        ));
        Ok(Self { kernel_version: version, vmlinuz, initramfs })
    }
}

/// The kernel version to use: the one `linux-image-amd64` depends on, per the local apt
/// lists; if those cannot say (no lists yet), `apt-get update` first; failing that, the
/// newest kernel already in the cache.
fn resolve_kernel_version(cache: &Path) -> Result<String, Error> {
    let ask = || -> Option<String> {
        let output = Command::new("apt-cache").args(["depends", "linux-image-amd64"]).output().ok()?;
        parse_kernel_dependency(&String::from_utf8_lossy(&output.stdout))
    };
    if let Some(package) = ask() {
        return Ok(package.trim_start_matches("linux-image-").to_owned());
    }
    if let Some(cached) = newest_cached_kernel(cache) {
        return Ok(cached);
    }
    run_host(Command::new("apt-get").args(["update", "-qq"]))?;
    ask().map(|package| package.trim_start_matches("linux-image-").to_owned()).ok_or_else(|| {
        Error::KernelPackage("`apt-cache depends linux-image-amd64` names no linux-image-*-amd64".to_owned())
    })
}

/// The versioned kernel package in `apt-cache depends linux-image-amd64` output, e.g.
/// `linux-image-6.1.0-56-amd64`.
pub fn parse_kernel_dependency(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let package = line.trim().trim_start_matches('|').strip_prefix("Depends:")?.trim();
        (package.starts_with("linux-image-") && package.ends_with("-amd64") && !package.contains(' '))
            .then(|| package.to_owned())
    })
}

fn newest_cached_kernel(cache: &Path) -> Option<String> {
    let mut versions: Vec<(std::time::SystemTime, String)> = fs::read_dir(cache)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.strip_prefix("kernel-")?.to_owned();
            entry.path().join("vmlinuz").is_file().then_some(())?;
            Some((entry.metadata().ok()?.modified().ok()?, version))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, version)| version)
}

/// The cached `.deb` of `linux-image-VERSION`, downloaded if absent (after an
/// `apt-get update` if the lists name a package version the mirror no longer has).
fn kernel_package(cache: &Path, version: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, Error> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(io_error(&debs))?;
    let prefix = format!("linux-image-{version}_");
    let find = |dir: &Path| -> Result<Option<PathBuf>, Error> {
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let path = entry.map_err(io_error(dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with(&prefix) && name.ends_with(".deb") {
                return Ok(Some(path));
            }
        }
        Ok(None)
    };
    if let Some(deb) = find(&debs)? {
        progress(&format!("kernel package: reused {}", deb.display()));
        return Ok(deb);
    }
    let download = TempDir::new(&debs, "download")?;
    let package = format!("linux-image-{version}");
    let mut fetch = || {
        let size = package_size(&package);
        progress(&format!(
            "kernel package: downloading {package}{}",
            size.map(|b| format!(" ({:.1} MiB)", mib(b))).unwrap_or_default()
        ));
        watching_downloads(download.path(), size, &mut *progress, || {
            run_host(Command::new("apt-get").args(["download", "-q", &package]).current_dir(download.path()))
        })
    };
    if fetch().is_err() {
        run_host(Command::new("apt-get").args(["update", "-qq"]))?;
        fetch()?;
    }
    let fetched = find(download.path())?
        .ok_or_else(|| Error::KernelPackage(format!("`apt-get download {package}` left no {prefix}*.deb")))?;
    let deb = debs.join(fetched.file_name().unwrap_or_default());
    fs::rename(&fetched, &deb).map_err(io_error(&deb))?;
    progress(&format!("kernel package: downloaded {}", deb.display()));
    Ok(deb)
}

/// The hash that names an initramfs: any change to what goes into it changes the name.
pub fn recipe_hash(kernel_version: &str, root_modules: &[&str], init_script: &str, busybox: &[u8]) -> String {
    let mut hasher = Sha256::new();
    for part in [RECIPE_LAYOUT.as_bytes(), kernel_version.as_bytes(), root_modules.join(" ").as_bytes()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.update((init_script.len() as u64).to_le_bytes());
    hasher.update(init_script.as_bytes());
    hasher.update(Sha256::digest(busybox));
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// One kernel module to load: its name (the file stem) and its file in the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    pub name: String,
    pub path: PathBuf,
}

/// Merges the `modprobe --show-depends` outputs of the root modules into one load order:
/// each module after its dependencies, each once, built-in ones skipped.
pub fn module_load_order(show_depends_outputs: &[String]) -> Result<Vec<ModuleFile>, Error> {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for output in show_depends_outputs {
        for line in output.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("insmod") => {
                    let path = PathBuf::from(words.next().ok_or_else(|| {
                        Error::InvalidSetup(format!("modprobe printed `{line}` without a file"))
                    })?);
                    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    let name = file.strip_suffix(".ko").ok_or_else(|| {
                        // busybox insmod in the initramfs cannot decompress .ko.xz / .ko.zst.
                        Error::InvalidSetup(format!("module {} is not a plain .ko file", path.display()))
                    })?;
                    if seen.insert(name.to_owned()) {
                        order.push(ModuleFile { name: name.to_owned(), path });
                    }
                }
                Some("builtin") | None => {}
                Some(_) => return Err(Error::InvalidSetup(format!("unexpected modprobe output: `{line}`"))),
            }
        }
    }
    Ok(order)
}

/// Whether `bytes` is an ELF file without a program interpreter (i.e. statically linked).
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read_u16 = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let read_u32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let read_u64 = |at: usize| {
        bytes.get(at..at + 8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    // 64-bit little-endian ELF only: that is what x86-64 Debian ships.
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (read_u64(0x20), read_u16(0x36), read_u16(0x38)) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else { return false };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff + i * usize::from(phentsize);
        matches!(read_u32(at), Some(kind) if kind != PT_INTERP)
    })
}

/// Writes the initramfs (a `newc` cpio archive, uncompressed: decompressing under full
/// emulation would only slow the boot) to `target`.
fn build_initramfs(busybox: &[u8], modules: &[ModuleFile], target: &Path, work: &Path) -> Result<(), Error> {
    let staging = TempDir::new(work, "initramfs")?;
    let root = staging.path();
    for dir in ["bin", "dev", "etc", "host", "lib/modules", "proc", "sys", "tmp"] {
        fs::create_dir_all(root.join(dir)).map_err(io_error(root.join(dir)))?;
    }
    write_file(&root.join("bin/busybox"), busybox, 0o755)?;
    write_file(&root.join("init"), INIT_SCRIPT.as_bytes(), 0o755)?;
    let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    write_file(&root.join("etc/modules"), format!("{}\n", names.join("\n")).as_bytes(), 0o644)?;
    for module in modules {
        install_file(&module.path, &root.join("lib/modules").join(format!("{}.ko", module.name)))?;
    }

    let mut entries = Vec::new();
    collect_relative(root, Path::new(""), &mut entries)?;
    entries.sort();
    let list: String = entries.iter().map(|p| format!("{}\n", p.display())).collect();
    let partial = target.with_extension("cpio.partial");
    let out = fs::File::create(&partial).map_err(io_error(&partial))?;
    let mut child = Command::new("cpio")
        .args(["--create", "--format=newc", "--reproducible", "--owner=0:0", "--quiet"])
        .current_dir(root)
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io_error("cpio"))?;
    {
        use std::io::Write;
        let mut stdin =
            child.stdin.take().ok_or_else(|| Error::InvalidSetup("cpio has no stdin".to_owned()))?;
        stdin.write_all(list.as_bytes()).map_err(io_error("cpio stdin"))?;
    }
    let output = child.wait_with_output().map_err(io_error("cpio"))?;
    if !output.status.success() {
        return Err(Error::HostCommand {
            command: "cpio --create --format=newc".to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    fs::rename(&partial, target).map_err(io_error(target))
}

fn collect_relative(root: &Path, relative: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let dir = root.join(relative);
    for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
        let entry = entry.map_err(io_error(&dir))?;
        let path = relative.join(entry.file_name());
        out.push(path.clone());
        if entry.file_type().map_err(io_error(entry.path()))?.is_dir() {
            collect_relative(root, &path, out)?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, bytes).map_err(io_error(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(path))
}

/// Copies `source` to `target` through a temporary name, so `target` is either absent or whole.
fn install_file(source: &Path, target: &Path) -> Result<(), Error> {
    let partial = target.with_extension("partial");
    fs::copy(source, &partial).map_err(io_error(source))?;
    fs::rename(&partial, target).map_err(io_error(target))
}

/// The absolute path of a host tool, falling back to its bare name (so the spawn error names it).
/// How often a download's progress is told at most.
const DOWNLOAD_REPORT_EVERY: Duration = Duration::from_secs(2);

/// The size apt's lists give for `package`'s candidate version, if they say.
fn package_size(package: &str) -> Option<u64> {
    let output = Command::new("apt-cache").args(["show", "--no-all-versions", package]).output().ok()?;
    parse_package_size(&String::from_utf8_lossy(&output.stdout))
}

/// The `Size:` field of `apt-cache show` output.
pub fn parse_package_size(apt_cache_show: &str) -> Option<u64> {
    apt_cache_show.lines().find_map(|line| line.strip_prefix("Size:")?.trim().parse().ok())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One line of download progress: bytes so far, of how many if known.
pub fn download_progress_line(done: u64, total: Option<u64>) -> String {
    match total {
        Some(total) if total > 0 => format!(
            "kernel package: {:.1} of {:.1} MiB ({}%)",
            mib(done),
            mib(total),
            (done.min(total) * 100 / total)
        ),
        _ => format!("kernel package: {:.1} MiB", mib(done)),
    }
}

/// Runs `download` (which fills `dir`) while telling `progress`, every
/// [`DOWNLOAD_REPORT_EVERY`] that the bytes in `dir` grew, how far it is.
fn watching_downloads<T: Send>(
    dir: &Path,
    total: Option<u64>,
    progress: &mut dyn FnMut(&str),
    download: impl FnOnce() -> T + Send,
) -> T {
    let bytes_in = |dir: &Path| -> u64 {
        fs::read_dir(dir)
            .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    std::thread::scope(|scope| {
        let worker = scope.spawn(download);
        let (mut told, mut told_at) = (0, Instant::now());
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(200));
            let done = bytes_in(dir);
            if done > told && told_at.elapsed() >= DOWNLOAD_REPORT_EVERY {
                progress(&download_progress_line(done, total));
                (told, told_at) = (done, Instant::now());
            }
        }
        worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn tool_path(tool: &str) -> PathBuf {
    find_tool(tool).unwrap_or_else(|| PathBuf::from(tool))
}

/// Runs a host command to completion; a non-zero exit is an error carrying its stderr.
fn run_host(command: &mut Command) -> Result<String, Error> {
    let shown = format!("{command:?}").replace('"', "");
    let output = command.output().map_err(io_error(command.get_program()))?;
    if !output.status.success() {
        return Err(Error::HostCommand {
            command: shown,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A directory removed (with its contents) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path, what: &str) -> Result<Self, Error> {
        let path = parent.join(format!(".{what}-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).map_err(io_error(&path))?;
        }
        fs::create_dir_all(&path).map_err(io_error(&path))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_progress_reads_apts_size_and_counts_up_to_it() {
        let show = "Package: linux-image-6.1.0-41-amd64\nVersion: 6.1.158-1\nSize: 71303168\nSHA256: ab\n";
        assert_eq!(parse_package_size(show), Some(71_303_168));
        assert_eq!(parse_package_size("Package: x\nSize: many\n"), None);
        assert_eq!(parse_package_size(""), None);
        assert_eq!(
            download_progress_line(17 << 20, Some(68 << 20)),
            "kernel package: 17.0 of 68.0 MiB (25%)"
        );
        assert_eq!(
            download_progress_line(70 << 20, Some(68 << 20)),
            "kernel package: 70.0 of 68.0 MiB (100%)",
            "a size the lists got wrong never shows past 100%"
        );
        assert_eq!(download_progress_line(3 << 19, None), "kernel package: 1.5 MiB");
    }

    #[test]
    fn finds_the_versioned_kernel_package() {
        let output = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(parse_kernel_dependency(output).as_deref(), Some("linux-image-6.1.0-56-amd64"));
        let alternatives = "linux-image-amd64\n |Depends: linux-image-6.1.0-57-amd64\n  Depends: other\n";
        assert_eq!(parse_kernel_dependency(alternatives).as_deref(), Some("linux-image-6.1.0-57-amd64"));
        assert_eq!(parse_kernel_dependency("linux-image-amd64\n  Recommends: firmware\n"), None);
        assert_eq!(parse_kernel_dependency(""), None);
    }

    #[test]
    fn load_order_puts_dependencies_first_once_and_skips_builtins() {
        let outputs = vec![
            "insmod /m/kernel/crypto/crc32_generic.ko \n".to_owned(),
            "insmod /m/virtio_ring.ko \ninsmod /m/virtio.ko \ninsmod /m/virtio_pci.ko \n".to_owned(),
            "insmod /m/virtio_ring.ko \ninsmod /m/virtio.ko \ninsmod /m/virtio_net.ko \n".to_owned(),
            "builtin crc16\ninsmod /m/ib_core.ko \ninsmod /m/rdma_rxe.ko \n".to_owned(),
        ];
        let order = module_load_order(&outputs).unwrap();
        let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["crc32_generic", "virtio_ring", "virtio", "virtio_pci", "virtio_net", "ib_core", "rdma_rxe"]
        );
        assert_eq!(order[0].path, PathBuf::from("/m/kernel/crypto/crc32_generic.ko"));
    }

    #[test]
    fn load_order_rejects_compressed_modules_and_garbage() {
        assert!(matches!(
            module_load_order(&["insmod /m/ext4.ko.xz \n".to_owned()]),
            Err(Error::InvalidSetup(_))
        ));
        assert!(matches!(
            module_load_order(&["FATAL: Module nope not found\n".to_owned()]),
            Err(Error::InvalidSetup(_))
        ));
    }

    #[test]
    fn recipe_hash_follows_every_input() {
        let base = recipe_hash("6.1.0-56-amd64", &["a", "b"], "init", b"busybox");
        assert_eq!(base.len(), 16);
        assert_eq!(base, recipe_hash("6.1.0-56-amd64", &["a", "b"], "init", b"busybox"));
        assert_ne!(base, recipe_hash("6.1.0-57-amd64", &["a", "b"], "init", b"busybox"));
        assert_ne!(base, recipe_hash("6.1.0-56-amd64", &["a", "b", "c"], "init", b"busybox"));
        assert_ne!(base, recipe_hash("6.1.0-56-amd64", &["a", "b"], "init2", b"busybox"));
        assert_ne!(base, recipe_hash("6.1.0-56-amd64", &["a", "b"], "init", b"busybox2"));
        // Length prefixes keep boundaries: moving a character between fields changes the hash.
        assert_ne!(
            recipe_hash("6.1.0-56-amd64", &["ab"], "init", b"x"),
            recipe_hash("6.1.0-56-amd64a", &["b"], "init", b"x")
        );
    }

    /// A minimal 64-bit ELF header with one program header of type `kind`.
    fn elf_with_program_header(kind: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x40 + 0x38];
        bytes[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        bytes[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        bytes[0x40..0x44].copy_from_slice(&kind.to_le_bytes());
        bytes
    }

    #[test]
    fn static_elf_detection() {
        assert!(is_static_elf(&elf_with_program_header(1)));
        assert!(!is_static_elf(&elf_with_program_header(3)));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        let mut truncated = elf_with_program_header(1);
        truncated.truncate(0x42);
        assert!(!is_static_elf(&truncated));
        // This test executable is linked against glibc, so it has an interpreter.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
    }
}
