//! `weed volume`'s command line, as weed spells it, translated to `volume-server`'s own
//! flags, so that replacing the word `weed` in a unit file, a container command or a Helm
//! chart is the whole migration: `volume-server volume -dir=/data -max=8
//! -master=m1:9333 -dataCenter=dc1 -index=leveldb`.
//!
//! Go's `flag` rules: one or two dashes, `-flag=value` or `-flag value` (a boolean flag
//! takes no separate value: `-flag` or `-flag=false`). The glog flags weed takes before
//! `volume` (`-v=2`, `-logtostderr`) are taken anywhere. Every `weed volume` flag of 4.48
//! is in `WEED_FLAGS`: implemented (translated to ours), accepted and ignored with one
//! warning saying what happens instead, or refused where ignoring it would lose track
//! of data (`-dir.idx`) or mislead the master (`-disk=ssd`). Anything else (our own
//! `--flags`, `-h`) passes through to clap unchanged.
//!
//! With the `volume` word the defaults are weed's where ours differ: `-dir=/tmp`,
//! `-master=localhost:9333` (ours is standalone without `--mserver`), and `-ip` the
//! host's address (ours is 127.0.0.1).

use std::ffi::OsString;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::Duration;

/// Our command line, and what the operator should be told about theirs.
#[derive(Debug, PartialEq, Eq)]
pub struct Translated {
    /// Arguments for clap, the program name first.
    pub args: Vec<OsString>,
    /// One line per weed flag accepted but not acted on (logged once logging is up).
    pub warnings: Vec<String>,
}

/// A weed command line we cannot honour.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeedCliError {
    #[error("-{flag} needs a value")]
    MissingValue { flag: String },
    #[error("-{flag}={value}: {reason}")]
    BadValue { flag: String, value: String, reason: String },
    #[error("-{flag} is not supported: {reason}")]
    Refused { flag: String, reason: &'static str },
    #[error("-options={path}: {reason}")]
    OptionsFile { path: String, reason: String },
}

/// What a weed flag becomes.
#[derive(Clone, Copy)]
enum Action {
    /// Our `--flag` with the same value.
    Value(&'static str),
    /// A Go duration (`1m0s`) as our `--flag` in whole seconds (rounded up).
    Seconds(&'static str),
    /// `-index`: weed's leveldb maps are our persistent (RocksDB) map.
    Index,
    /// `-max`: weed's 0 (as many as the free space fits) is not ours.
    Max,
    /// `-disk`: we report our volumes as hdd only.
    Disk,
    /// `-v`: glog verbosity to our `--log-level`.
    Verbosity,
    /// A boolean flag that turns on our `--flag`.
    Switch(&'static str),
    /// `-options=FILE`: more flags, one `name=value` a line.
    Options,
    /// Accepted, not acted on: the warning says what happens instead.
    Ignore { takes_value: bool, instead: &'static str },
    /// Refused with an error: ignoring it could lose data or mislead the cluster.
    Refuse { reason: &'static str },
}

use Action::*;

/// Every flag of `weed volume -h` (4.48), and glog's.
const WEED_FLAGS: &[(&str, Action)] = &[
    ("dir", Value("--dir")),
    ("max", Max),
    ("master", Value("--mserver")),
    ("mserver", Value("--mserver")),
    ("ip", Value("--ip")),
    ("ip.bind", Value("--ip-bind")),
    ("port", Value("--port")),
    ("port.grpc", Value("--grpc-port")),
    ("port.public", Value("--public-port")),
    ("publicUrl", Value("--public-url")),
    ("dataCenter", Value("--data-center")),
    ("rack", Value("--rack")),
    ("index", Index),
    ("minFreeSpace", Value("--min-free-space")),
    ("minFreeSpacePercent", Value("--min-free-space")),
    ("readMode", Value("--read-mode")),
    ("whiteList", Value("--white-list")),
    ("fileSizeLimitMB", Value("--file-size-limit-mb")),
    ("concurrentUploadLimitMB", Value("--concurrent-upload-limit-mb")),
    ("concurrentDownloadLimitMB", Value("--concurrent-download-limit-mb")),
    ("inflightUploadDataTimeout", Seconds("--inflight-upload-data-timeout-secs")),
    ("inflightDownloadDataTimeout", Seconds("--inflight-download-data-timeout-secs")),
    ("disk", Disk),
    ("options", Options),
    ("v", Verbosity),
    ("logtostderr", Switch("--log-to-stderr")),
    ("alsologtostderr", Switch("--log-to-stderr")),
    ("dir.idx", Refuse { reason: "this server keeps each .idx beside its .dat; move the .idx files there" }),
    ("tags", Ignore { takes_value: true, instead: "no disk tags are reported to the master" }),
    ("id", Ignore { takes_value: true, instead: "the server is known to the master by ip:port" }),
    ("preStopSeconds", Ignore { takes_value: true, instead: "SIGTERM stops the server at once" }),
    ("compactionMBps", Ignore { takes_value: true, instead: "compaction and volume copies run unthrottled" }),
    (
        "maintenanceMBps",
        Ignore { takes_value: true, instead: "replication and balancing I/O run unthrottled" },
    ),
    (
        "idleTimeout",
        Ignore { takes_value: true, instead: "idle HTTP connections are kept until the client closes them" },
    ),
    (
        "hasSlowRead",
        Ignore { takes_value: false, instead: "large reads are always streamed in 1 MiB pieces" },
    ),
    ("readBufferSizeMB", Ignore { takes_value: true, instead: "large reads are streamed in 1 MiB pieces" }),
    ("images.fix.orientation", Ignore { takes_value: false, instead: "images are stored as uploaded" }),
    (
        "index.leveldbTimeout",
        Ignore { takes_value: true, instead: "RocksDB maps stay open while their volume is mounted" },
    ),
    ("metricsIp", Ignore { takes_value: true, instead: "metrics are served at /metrics on -port" }),
    ("metricsPort", Ignore { takes_value: true, instead: "metrics are served at /metrics on -port" }),
    (
        "volume.allowUntrustedRemoteEndpoints",
        Ignore { takes_value: false, instead: "FetchAndWriteNeedle is not served" },
    ),
    ("cpuprofile", Ignore { takes_value: true, instead: "no Go profiles are written" }),
    ("memprofile", Ignore { takes_value: true, instead: "no Go profiles are written" }),
    ("pprof", Ignore { takes_value: false, instead: "no pprof handlers are served" }),
    ("debug", Ignore { takes_value: false, instead: "no pprof handlers are served" }),
    ("debug.port", Ignore { takes_value: true, instead: "no pprof handlers are served" }),
    (
        "log_dir",
        Ignore {
            takes_value: true,
            instead: "logs go to standard output (or standard error with -logtostderr)",
        },
    ),
    (
        "logdir",
        Ignore {
            takes_value: true,
            instead: "logs go to standard output (or standard error with -logtostderr)",
        },
    ),
    (
        "stderrthreshold",
        Ignore { takes_value: true, instead: "every line at --log-level goes to one stream" },
    ),
    ("vmodule", Ignore { takes_value: true, instead: "one log level applies to every module" }),
    ("log_backtrace_at", Ignore { takes_value: true, instead: "no backtraces are logged" }),
];

fn lookup(name: &str) -> Option<Action> {
    WEED_FLAGS.iter().find(|(weed, _)| *weed == name).map(|(_, action)| *action)
}

/// Translates `args` (the program name first). `host_address` gives weed's default
/// `-ip` when the `volume` word is used without one.
pub fn translate(args: impl IntoIterator<Item = OsString>) -> Result<Translated, WeedCliError> {
    translate_with(args, detected_host_address)
}

fn translate_with(
    args: impl IntoIterator<Item = OsString>,
    host_address: impl FnOnce() -> Option<Ipv4Addr>,
) -> Result<Translated, WeedCliError> {
    let mut args = args.into_iter();
    let mut out = Translator::default();
    out.args.extend(args.next());
    let mut rest: Vec<OsString> = args.collect();
    // `volume` is weed's subcommand: glog flags may come before it.
    let volume_word = rest.iter().position(|a| a == "volume");
    let weed_mode = volume_word.is_some_and(|at| rest[..at].iter().all(is_self_contained_flag));
    if let (true, Some(at)) = (weed_mode, volume_word) {
        rest.remove(at);
    }
    let mut iter = rest.into_iter();
    while let Some(arg) = iter.next() {
        match parse_flag(&arg) {
            Some((name, inline)) => match lookup(&name) {
                Some(action) => out.apply(&name, action, inline, &mut || iter.next())?,
                None => out.args.push(arg),
            },
            None => out.args.push(arg),
        }
    }
    if weed_mode {
        out.weed_defaults(host_address);
    }
    Ok(Translated { args: out.args, warnings: out.warnings })
}

/// `-name`, `--name`, `-name=value`: the name and the inline value. Not a flag: `-`,
/// `--`, anything without a leading dash, and single-letter flags (clap's `-h`, `-V`).
fn parse_flag(arg: &OsString) -> Option<(String, Option<String>)> {
    let text = arg.to_str()?;
    let body = text.strip_prefix("--").or_else(|| text.strip_prefix('-'))?;
    let (name, value) = match body.split_once('=') {
        Some((name, value)) => (name, Some(value.to_string())),
        None => (body, None),
    };
    // `-v` is glog's verbosity (weed has no -h flag of its own to clash with it).
    (name.len() > 1 || name == "v").then(|| (name.to_string(), value))
}

/// A flag that carries its own value (`-v=2`, `-logtostderr`): what may stand before
/// weed's `volume` word, so that in `--dir volume` the word is a value, not the command.
fn is_self_contained_flag(arg: &OsString) -> bool {
    match parse_flag(arg) {
        Some((_, Some(_))) => true,
        Some((name, None)) => matches!(lookup(&name), Some(Switch(_) | Ignore { takes_value: false, .. })),
        None => false,
    }
}

#[derive(Default)]
struct Translator {
    args: Vec<OsString>,
    warnings: Vec<String>,
    /// Ours named so far, to leave weed's defaults out where one was given.
    given: Vec<&'static str>,
}

impl Translator {
    fn push(&mut self, ours: &'static str, value: impl Into<String>) {
        self.args.push(format!("{ours}={}", value.into()).into());
        self.given.push(ours);
    }

    fn apply(
        &mut self,
        name: &str,
        action: Action,
        inline: Option<String>,
        next: &mut dyn FnMut() -> Option<OsString>,
    ) -> Result<(), WeedCliError> {
        let mut value = || -> Result<String, WeedCliError> {
            match inline.clone() {
                Some(value) => Ok(value),
                None => next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| WeedCliError::MissingValue { flag: name.to_string() }),
            }
        };
        let bad = |value: &str, reason: String| WeedCliError::BadValue {
            flag: name.to_string(),
            value: value.to_string(),
            reason,
        };
        match action {
            Value(ours) => self.push(ours, value()?),
            Seconds(ours) => {
                let text = value()?;
                let duration = parse_go_duration(&text).map_err(|reason| bad(&text, reason))?;
                let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
                self.push(ours, seconds.to_string());
            }
            Index => {
                let text = value()?;
                self.push("--index", index_kind(&text).map_err(|reason| bad(&text, reason))?);
            }
            Max => {
                let text = value()?;
                check_max(&text).map_err(|reason| bad(&text, reason))?;
                self.push("--max", text);
            }
            Disk => {
                let text = value()?;
                check_disk(&text).map_err(|reason| bad(&text, reason))?;
            }
            Verbosity => {
                let text = value()?;
                self.push("--log-level", log_level(&text).map_err(|reason| bad(&text, reason))?);
            }
            Switch(ours) => {
                if parse_go_bool(name, inline.as_deref())? {
                    self.args.push(ours.into());
                }
            }
            Options => {
                let path = value()?;
                self.options_file(&path)?;
            }
            Ignore { takes_value, instead } => {
                let shown = if takes_value {
                    format!("-{name}={}", value()?)
                } else {
                    parse_go_bool(name, inline.as_deref())?;
                    format!("-{name}")
                };
                self.warnings.push(format!("weed flag {shown} is accepted but not implemented: {instead}"));
            }
            Refuse { reason } => return Err(WeedCliError::Refused { flag: name.to_string(), reason }),
        }
        Ok(())
    }

    /// weed's `-options` file: `name=value` per line; blank lines and `#` comments skipped.
    fn options_file(&mut self, path: &str) -> Result<(), WeedCliError> {
        let failed = |reason: String| WeedCliError::OptionsFile { path: path.to_string(), reason };
        let text = std::fs::read_to_string(Path::new(path)).map_err(|e| failed(e.to_string()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (name, value) = line.split_once('=').unwrap_or((line, "true"));
            let name = name.trim().trim_start_matches('-');
            let action = match lookup(name) {
                Some(Options) => return Err(failed("an options file cannot name another".into())),
                Some(action) => action,
                None => return Err(failed(format!("`{name}` is not a weed volume flag"))),
            };
            self.apply(name, action, Some(value.trim().to_string()), &mut || None)?;
        }
        Ok(())
    }

    /// weed's defaults where they differ from ours, for what the command line left out.
    fn weed_defaults(&mut self, host_address: impl FnOnce() -> Option<Ipv4Addr>) {
        if !self.given.contains(&"--dir") {
            self.push("--dir", "/tmp");
        }
        if !self.given.contains(&"--mserver") {
            self.push("--mserver", "localhost:9333");
        }
        if !self.given.contains(&"--ip") {
            match host_address() {
                Some(ip) => self.push("--ip", ip.to_string()),
                None => self.warnings.push(
                    "no -ip given and no host address found (no route out of this machine): serving on 127.0.0.1"
                        .into(),
                ),
            }
        }
    }
}

/// Our `--index` for weed's `-index`: every leveldb kind is our RocksDB map.
fn index_kind(weed: &str) -> Result<&'static str, String> {
    match weed {
        "memory" => Ok("memory"),
        "leveldb" | "leveldbMedium" | "leveldbLarge" | "rocksdb" => Ok("rocksdb"),
        _ => Err("expected memory, leveldb, leveldbMedium or leveldbLarge".into()),
    }
}

/// weed's `-max` as ours, but for its count of 0 (as many as the free space fits).
fn check_max(counts: &str) -> Result<(), String> {
    if counts.split(',').any(|count| count.trim() == "0") {
        return Err("a count of 0 (as many as the free space fits) is not supported: give a number".into());
    }
    Ok(())
}

/// weed's `-disk`: only the type this server reports.
fn check_disk(disk: &str) -> Result<(), String> {
    if !matches!(disk, "" | "hdd") {
        return Err("this server reports its volumes as hdd only; leave -disk out or set it to hdd".into());
    }
    Ok(())
}

/// Our `--log-level` for glog's `-v` verbosity.
fn log_level(verbosity: &str) -> Result<&'static str, String> {
    let level: u32 = verbosity.parse().map_err(|_| "expected a number".to_string())?;
    Ok(match level {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    })
}

/// Go's boolean flag values: absent (true), 1/0, t/f, true/false in any of Go's cases.
fn parse_go_bool(flag: &str, value: Option<&str>) -> Result<bool, WeedCliError> {
    match value {
        None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(WeedCliError::BadValue {
            flag: flag.to_string(),
            value: other.to_string(),
            reason: "expected true or false".into(),
        }),
    }
}

/// A Go `time.Duration` string: decimal numbers with units (`ns us µs ms s m h`), such
/// as `1m0s`, `1.5h`, `300ms`; a bare `0` is zero.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().map_err(|_| format!("`{text}` is not a Go duration"))?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("`{text}` is not a Go duration (units: ns, us, ms, s, m, h)")),
        };
        rest = &rest[unit_end..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("`{text}` is out of range"))
}

/// weed's default `-ip`: the address this host uses to reach other machines (the
/// source address of the default route; no packet is sent).
fn detected_host_address() -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Translated, WeedCliError> {
        let args = std::iter::once("volume-server").chain(args.iter().copied()).map(OsString::from);
        translate_with(args, || Some(Ipv4Addr::new(10, 1, 2, 3)))
    }

    fn strings(t: &Translated) -> Vec<&str> {
        t.args[1..].iter().map(|a| a.to_str().unwrap()).collect()
    }

    #[test]
    fn a_unit_file_command_line_becomes_ours() {
        let t = run(&[
            "volume",
            "-dir=/data1,/data2",
            "-max=8,4",
            "-mserver=m1:9333,m2:9333",
            "-dataCenter=dc1",
            "-rack",
            "r1",
            "-index=leveldbLarge",
            "-port.grpc=18080",
            "-inflightUploadDataTimeout=1m30s",
            "-ip.bind=0.0.0.0",
        ])
        .unwrap();
        assert_eq!(
            strings(&t),
            [
                "--dir=/data1,/data2",
                "--max=8,4",
                "--mserver=m1:9333,m2:9333",
                "--data-center=dc1",
                "--rack=r1",
                "--index=rocksdb",
                "--grpc-port=18080",
                "--inflight-upload-data-timeout-secs=90",
                "--ip-bind=0.0.0.0",
                "--ip=10.1.2.3",
            ]
        );
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    }

    #[test]
    fn the_volume_word_brings_weeds_defaults_and_ours_stay_without_it() {
        let t = run(&["-v=2", "volume"]).unwrap();
        assert_eq!(
            strings(&t),
            ["--log-level=debug", "--dir=/tmp", "--mserver=localhost:9333", "--ip=10.1.2.3"]
        );
        let ours = run(&["--dir", "/d", "--fsync", "--data-center", "x"]).unwrap();
        assert_eq!(strings(&ours), ["--dir=/d", "--fsync", "--data-center", "x"]);
        // A file named `volume` among our flags is a value, not weed's subcommand.
        let value = run(&["--dir", "volume"]).unwrap();
        assert_eq!(strings(&value), ["--dir=volume"]);
    }

    #[test]
    fn unimplemented_flags_warn_once_each_and_consume_their_value() {
        let t =
            run(&["volume", "-dir=/d", "-compactionMBps", "50", "-pprof", "-ip=1.2.3.4", "-master=m:9333"])
                .unwrap();
        assert_eq!(strings(&t), ["--dir=/d", "--ip=1.2.3.4", "--mserver=m:9333"]);
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
        assert!(t.warnings[0].contains("-compactionMBps=50") && t.warnings[0].contains("unthrottled"));
        assert!(t.warnings[1].contains("-pprof"));
    }

    #[test]
    fn flags_that_would_mislead_are_refused_with_the_reason() {
        assert!(matches!(run(&["volume", "-dir.idx=/idx"]), Err(WeedCliError::Refused { .. })));
        let ssd = run(&["volume", "-disk=ssd"]).unwrap_err();
        assert!(ssd.to_string().contains("hdd only"), "{ssd}");
        assert!(run(&["volume", "-disk=hdd"]).is_ok());
        assert!(run(&["volume", "-max=0"]).unwrap_err().to_string().contains("not supported"));
        assert!(matches!(run(&["volume", "-index=btree"]), Err(WeedCliError::BadValue { .. })));
        assert_eq!(
            run(&["volume", "-dataCenter"]),
            Err(WeedCliError::MissingValue { flag: "dataCenter".into() })
        );
    }

    #[test]
    fn an_options_file_adds_its_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("volume.options");
        std::fs::write(&file, "# site\ndir=/srv\nmax = 3\n\nlogtostderr\npreStopSeconds=5\n").unwrap();
        let t = run(&["volume", &format!("-options={}", file.display()), "-ip=1.1.1.1"]).unwrap();
        assert_eq!(
            strings(&t),
            ["--dir=/srv", "--max=3", "--log-to-stderr", "--ip=1.1.1.1", "--mserver=localhost:9333"]
        );
        assert_eq!(t.warnings.len(), 1);
        std::fs::write(&file, "port=1\nbogus=2\n").unwrap();
        let error = run(&["volume", "-options", file.to_str().unwrap()]).unwrap_err();
        assert!(error.to_string().contains("`bogus` is not a weed volume flag"), "{error}");
    }

    #[test]
    fn go_booleans_and_durations_parse_as_go_does() {
        assert_eq!(strings(&run(&["-logtostderr=false"]).unwrap()), Vec::<&str>::new());
        assert!(run(&["-logtostderr=maybe"]).is_err());
        assert_eq!(parse_go_duration("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("5 days").is_err());
        let t = run(&["-inflightDownloadDataTimeout=1500ms"]).unwrap();
        assert_eq!(strings(&t), ["--inflight-download-data-timeout-secs=2"]);
    }

    #[test]
    fn every_weed_volume_flag_is_listed() {
        // `weed volume -h` of 4.48, in its order.
        let help = "compactionMBps concurrentDownloadLimitMB concurrentUploadLimitMB cpuprofile \
            dataCenter debug debug.port dir dir.idx disk fileSizeLimitMB hasSlowRead id idleTimeout \
            images.fix.orientation index index.leveldbTimeout inflightDownloadDataTimeout \
            inflightUploadDataTimeout ip ip.bind maintenanceMBps master max memprofile metricsIp \
            metricsPort minFreeSpace minFreeSpacePercent mserver options port port.grpc port.public \
            pprof preStopSeconds publicUrl rack readBufferSizeMB readMode tags \
            volume.allowUntrustedRemoteEndpoints whiteList";
        let missing: Vec<&str> = help.split_whitespace().filter(|flag| lookup(flag).is_none()).collect();
        assert!(missing.is_empty(), "weed flags not handled: {missing:?}");
    }
}
