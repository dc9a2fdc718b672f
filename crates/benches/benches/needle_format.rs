//! The needle format's hot paths: CRC32-C, record encode and decode, fid parsing.
//!
//! Decode borrows the payload, so `decode_parse_only` (structure, no CRC) should not
//! grow with the payload size, and `decode_verified` should run at the CRC's rate.
//! Throughput is reported in payload bytes per second.

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use needle::{Cookie, FileId, Needle, NeedleId, Version};

const SIZES: [(&str, usize); 3] = [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn sample_needle(data: &[u8]) -> Needle<'_> {
    Needle::new(NeedleId(0x1234), Cookie(0x637037d6), data)
        .with_name(b"object.bin")
        .with_mime(b"application/octet-stream")
        .with_last_modified(1_700_000_000)
        .with_append_at_ns(1_700_000_000_123_456_789)
}

fn crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for (label, len) in SIZES {
        let data = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(label, |b| b.iter(|| needle::crc::crc32c(black_box(&data))));
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("needle_encode_v3");
    for (label, len) in SIZES {
        let data = payload(len);
        let needle = sample_needle(&data);
        let mut out = Vec::with_capacity(len + 128);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(label, |b| {
            b.iter(|| {
                out.clear();
                black_box(&needle).encode_into(Version::V3, &mut out).unwrap();
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("needle_decode_v3");
    for (label, len) in SIZES {
        let data = payload(len);
        let record = sample_needle(&data).to_bytes(Version::V3).unwrap();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("parse_only", label), &record, |b, record| {
            b.iter(|| Needle::parse(black_box(record), Version::V3).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("verified", label), &record, |b, record| {
            b.iter(|| Needle::decode(black_box(record), Version::V3).unwrap())
        });
    }
    group.finish();
}

fn fid_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("fid");
    for text in ["3,01637037d6", "4294967295,fed4c8114ed4c811f0116e41_12345"] {
        group.bench_with_input(BenchmarkId::new("parse", text.len()), text, |b, text| {
            b.iter(|| black_box(text).parse::<FileId>().unwrap())
        });
    }
    let fid: FileId = "4294967295,fed4c8114ed4c811f0116e41_12345".parse().unwrap();
    group.bench_function("format", |b| b.iter(|| black_box(&fid).to_string()));
    group.finish();
}

criterion_group!(benches, crc, encode, decode, fid_parse);
criterion_main!(benches);
