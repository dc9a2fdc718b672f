//! Reproducible environments for tests and benchmarks:
//! - [`pseudo_random`] and [`multipart_body`]: reproducible test payloads.
//! - [`process`]: servers under test as child processes; [`ours`]: our `volume-server`.
//! - [`weed`]: a real SeaweedFS (`weed` 4.48) master, volume server and filer on loopback,
//!   for interop.
//! - [`softroce`]: a QEMU guest with Soft-RoCE (`rdma_rxe`) where the RDMA tests and
//!   benchmarks run on real verbs.
//!
//! # The Soft-RoCE guest
//!
//! The host kernel of our machines has no RDMA at all (no `CONFIG_INFINIBAND`, no
//! modules), so verbs cannot run on the host. A guest can: QEMU boots Debian's own kernel
//! under full emulation (`-accel tcg -cpu max`; nested KVM hangs on these machines) from a
//! busybox-static initramfs that
//!
//! 1. `insmod`s the modules in dependency order (computed with `modprobe --show-depends`
//!    from [`softroce::image::ROOT_MODULES`]; `crc32_generic` first, because `rdma_rxe`
//!    needs the "crc32" crypto algorithm and no module dependency says so);
//! 2. gives `eth0` 10.99.0.2/24 (QEMU user networking with `restrict=on`: the guest
//!    reaches nothing outside);
//! 3. mounts the host's `/` read-only over 9p at `/host`, and the guest's *run directory*
//!    (`$SOFTROCE_RUN_DIR`, under the cache) writable over 9p at the same path inside it;
//!    inside `/host` it mounts proc, sysfs, devtmpfs, and tmpfs on `/tmp`, `/dev/shm`, `/run`;
//! 4. runs `rdma link add rxe0 type rxe netdev eth0`, waits for port 1 to be ACTIVE and for
//!    the RoCE v2 GID of its IPv4 address, and prints `SOFTROCE-STATUS: ready` on the
//!    serial console (which QEMU writes to `RUN/console.log`);
//! 5. runs the commands the host drops into `RUN/jobs/N/`, each in `chroot /host` with
//!    `ulimit -l unlimited` and a clean environment, so binaries built on the host (test
//!    executables, perftest, our servers) run unchanged, at the same paths.
//!
//! A guest that fails to boot or to create rxe0 is an error ([`softroce::Error::Boot`],
//! [`softroce::Error::Rxe`]) carrying the last 40 console lines, never a silent pass.
//! Every wait is bounded (boot, each command, shutdown), QEMU is killed when its
//! [`softroce::Guest`] is dropped or the booting thread dies, and the guest powers itself
//! off after [`softroce::GuestConfig::lifetime`] whatever happens on the host.
//!
//! ## The cache
//!
//! `testbeds prepare` (and every command that boots) keeps, under
//! `$HOME/.cache/seaweed-rdma/guest/` (or `$SEAWEED_RDMA_GUEST_CACHE`): the kernel `.deb`
//! (`apt-get download` of the `linux-image-*-amd64` that `linux-image-amd64` depends on),
//! `kernel-VERSION/vmlinuz`, and `kernel-VERSION/initramfs-HASH.cpio`, where HASH covers the
//! whole recipe (kernel version, module list, `init.sh`, the busybox binary). A second run
//! reuses both and says so; changing the recipe builds a new initramfs. A fresh machine
//! needs `scripts/install-deps` (Debian's qemu-system-x86, busybox-static, kmod, cpio,
//! rdma-core, ibverbs-providers, perftest, iproute2, e2fsprogs).
//!
//! ## What a command in the guest sees
//!
//! | variable | value |
//! | --- | --- |
//! | `SOFTROCE_DEVICE` | `rxe0` |
//! | `SOFTROCE_IP` | this guest's RDMA address (10.99.0.2, or 10.99.1.1 / 10.99.1.2 in a pair) |
//! | `SOFTROCE_PEER_IP` | the other guest's RDMA address (two-guest topology only) |
//! | `SOFTROCE_GID_INDEX` | index of the RoCE v2 GID `::ffff:$SOFTROCE_IP` on port 1 (1 in practice) |
//! | `SOFTROCE_RUN_DIR` | the run directory, writable, shared with the host |
//! | `SOFTROCE_READY_FILE` | a job creates it to say "serving" (see [`softroce::Job::wait_ready`]) |
//! | `SOFTROCE_SCRATCH` | an ext4 filesystem on a virtio disk, if one was asked for |
//! | `WEED_BINARY` | the host's `weed` executable (see [`weed::executable`]), when it has one |
//! | `HOME`, `TMPDIR` | `/tmp` (tmpfs): the host root is read-only |
//!
//! **Volume files go on tmpfs (`/dev/shm`, `/tmp`) or `$SOFTROCE_SCRATCH`, never on the
//! 9p mounts**: `mmap(MAP_SHARED)` of a 9p file fails with EINVAL. Everything else of the
//! host root is read-only, and the host's `/tmp`, `/run` and `/dev` are hidden by the
//! guest's own: a working directory or cache there is not visible in the guest.
//!
//! ## Topologies
//!
//! - One guest ([`softroce::Guest::boot`], the default): client and server processes share
//!   it and talk through rxe0 on eth0.
//! - Two guests ([`softroce::GuestPair::boot`]): each also gets `eth1`, joined by a QEMU
//!   socket netdev in UDP mode over loopback (10.99.1.1 = server, 10.99.1.2 = client),
//!   with rxe0 on eth1. Each guest costs a full emulated core of our two. The TCP mode of
//!   the socket netdev (`listen=`/`connect=`) was tried first and is unusable for RDMA:
//!   QEMU writes frames to that stream without `TCP_NODELAY`, so multi-packet responses
//!   wait out Nagle against delayed ACKs (a 4 KiB READ took ~44 ms instead of ~0.3 ms).
//!   Use the pair for latency and correctness, not bandwidth: the UDP hop drops bursts
//!   (50 READs of 1 MiB: 233,599 response packets sent, 169,124 received; rxe counted 275
//!   `completer_retry_err`), so bulk READs crawl at 2-12 MB/s on retransmissions.
//!   `scripts/test-all` runs one `ib_read_lat -s 4096` across the pair (~12 s of the
//!   stage); the full `testbeds selfcheck --guests 2` takes ~90 s and stays a manual command.
//!
//! ## The `testbeds` binary
//!
//! - `testbeds prepare`: fetch and build what is missing; print what was reused.
//! - `testbeds run [--guests 1|2] [--timeout SECS] [--server-cmd SCRIPT] -- CMD...`: boot,
//!   run CMD (in guest B with two guests, after `--server-cmd` signalled readiness in guest
//!   A), print its output, exit with its exit code.
//! - `testbeds selfcheck [--guests 1|2]`: `ib_read_lat -s 4096`, `ib_read_bw -s 4096` and
//!   `-s 1048576`, server and client over rxe0, figures in a table.
//! - `testbeds rdma-tests [--cross-host] [--features FEATURES] [--budget SECS]`: the guest
//!   stage of `scripts/test-all` (below); `--features` goes to the cargo build of the
//!   tests, so feature-gated RDMA code (the async-rdma engine) is built and tested too.
//!
//! ## As a library
//!
//! Benchmarks compare our READ path with perftest *in the same boot* (absolute figures
//! under emulation mean little; ratios do):
//!
//! ```no_run
//! use testbeds::softroce::{Echo, Guest, GuestCommand, GuestConfig, GuestImage, perftest};
//!
//! let image = GuestImage::prepare(&mut |line| eprintln!("{line}"))?;
//! let guest = Guest::boot(&image, &GuestConfig::default())?;
//! let baseline = perftest::run_cases(&guest, &guest, &perftest::SELFCHECK_CASES)?;
//! let ours = guest.run(&GuestCommand::argv(["/path/to/our-bench", "--size", "4096"]), Echo::Live)?;
//! println!("{}{}", perftest::render_table(&baseline), ours.stdout);
//! guest.shutdown()?;
//! # Ok::<(), testbeds::softroce::Error>(())
//! ```
//!
//! [`softroce::Guest::spawn`] starts a job without waiting (a server), and
//! [`softroce::Job::wait_ready`] waits for it to create `$SOFTROCE_READY_FILE`.
//!
//! # RDMA tests: the convention
//!
//! An RDMA test is an ordinary `#[test]` in the crate it tests, with two marks:
//!
//! - it lives in an **integration-test target whose name starts with `rdma_`**
//!   (`crates/NAME/tests/rdma_*.rs`);
//! - it is **`#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]`**.
//!
//! On the host, `cargo test` lists it as *ignored* with that reason: visible, never counted
//! as passed. `scripts/test-all` then runs `testbeds rdma-tests`, which builds the
//! workspace's test executables (`cargo test --workspace --no-run --message-format=json`),
//! keeps the `rdma_*` integration-test targets, lists their ignored tests (on the host),
//! and in one boot shows rxe0's state, runs the perftest self-check, and runs each
//! executable's RDMA tests one at a time (`EXE --ignored --test-threads 1`; working
//! directory = the package's, `$SOFTROCE_SCRATCH` attached), timing each test from
//! libtest's live report. The stage fails if a test fails, crashes or is cut off,
//! if the guest cannot boot or create rxe0, or if no RDMA test exists at all.
//! `crates/testbeds/tests/rdma_verbs_smoke.rs` is the first one. Last, if
//! `target/release/rdma-bench` was built (crates/benches, bench profile), it runs in the
//! same boot and prints the read path's figures as ratios to that perftest baseline
//! (figures only: it never fails the stage); so does `sdk-rdma-vs-http`, the SDK's
//! downloads over RDMA and over HTTP. Both measure `target/release/volume-server` when it
//! was built (`scripts/test-all` builds it), else the debug one.
//!
//! **Time.** The guest's speed follows the host's: the same stage ran ~3x slower on a
//! fresh machine than where it was tuned. The perftest baseline gives each boot's
//! slowness ([`softroce::slowness`]: the larger of 4 KiB `ib_read_lat` over 64 us and
//! 65 MB/s over 1 MiB `ib_read_bw`, at least 1), which
//! every test and benchmark gets in `$SOFTROCE_SLOWNESS`: **every time limit in a guest
//! test goes through [`softroce::slowness::scaled`]** (written for the reference guest),
//! so a slow guest is never a failure, and limits stay near what the work needs, so a
//! failing test fails about as fast as a passing one passes. An executable runs under a
//! limit of 150 s scaled per test, which only cuts off a hang (and names the test it was
//! in). The stage has a budget
//! (`--budget`, 1080 s by default: test-all's 20-minute bound is a backstop): each step's
//! limit is cut to what is left, and the stage ends with the wall time of each step and,
//! when the budget ran out, the step it ran out in. Engine-independent scenarios run
//! through the default engine only (see `rdma_read_path_async_rdma.rs`,
//! `rdma_sdk_async_rdma.rs`).
//!
//! Under emulation a 1 MiB READ takes ~20 ms and ~50-70 MB/s is the ceiling: size test
//! workloads in MiB, not GiB, and never assert on timings.
//!
//! # Facts measured here (sideway 0.4.3, rxe on Debian 12's 6.1 kernel)
//!
//! - Building sideway needs **`cmake`** as well as clang: its `rdma-mummy-sys` compiles a
//!   small C shim with CMake (it loads libibverbs/librdmacm at run time).
//! - On a host without RDMA, `DeviceList::new()` fails with ENOSYS ("Function not
//!   implemented"); it does not return an empty list.
//! - Use the basic CQ (`CompletionQueueBuilder::build`), not `build_ex`: Debian 12's rxe
//!   provider reports phantom completions on extended CQs. The basic QP is created with
//!   `sq_sig_all = 0`, so a work request must carry `WorkRequestFlags::Signaled` to produce
//!   a completion.
//! - RDMA READ needs `max_dest_read_atomic >= 1` on the responder (RTR) and
//!   `max_read_atomic >= 1` on the requester (RTS); sideway's examples set 0, with which
//!   every READ fails.
//! - rxe0 has a 1024-entry GID table: index 0 is the link-local `fe80::` GID, index 1 the
//!   RoCE v2 `::ffff:IPv4` one; `query_gid_table` and sysfs agree. Active MTU is 1024 with
//!   eth0 at 1500.
//! - Registering `mmap(MAP_SHARED, PROT_READ|PROT_WRITE)` of a file with REMOTE_READ works
//!   on tmpfs and on ext4, and READs return the file's bytes (the smoke test checks 4 MiB
//!   of each); with `PROT_READ` alone this kernel refuses the registration (EFAULT).
//! - Places where sideway panics instead of returning an error: `QueuePairBuilder::build`
//!   without both CQs, `GidType::from` on an unknown GID type, `query_gid_table` if a port
//!   query fails, and the `Drop` of a QP or CQ whose destroy call fails.
//! - Same-boot figures (one guest, 1 vCPU, loaded 2-core host): `ib_read_lat -s 4096`
//!   ~60-70 µs typical, `ib_read_bw` ~50-75 MB/s at 4 KiB and 1 MiB; across two guests a
//!   4 KiB READ is ~0.3 ms typical (bandwidth there is limited by the lossy wire, above).

pub mod canned;
pub mod ours;
mod payload;
pub mod pki;
pub mod process;
pub mod softroce;
pub mod weed;
pub mod weed_filer;

pub use payload::{multipart_body, pseudo_random};
