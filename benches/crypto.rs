//! Column encryption cost: encrypt and decrypt of 32 B and 1 KiB values, both modes.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use phigate::crypto::{ColumnCipher, Keyring, Mode, column_aad};

fn bench(c: &mut Criterion) {
    let ring = Keyring::from_keys(1, vec![(1, [42u8; 32])]);
    let mut group = c.benchmark_group("crypto");
    for mode in [Mode::Randomized, Mode::Deterministic] {
        let cipher = ColumnCipher::new(
            &ring,
            mode,
            &column_aad("public", "patients", "ssn", "text"),
        );
        for size in [32usize, 1024] {
            let value = vec![b'7'; size];
            let sealed = cipher.encrypt(&value);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("encrypt/{mode}"), size),
                &value,
                |b, v| b.iter(|| black_box(cipher.encrypt(black_box(v)))),
            );
            group.bench_with_input(
                BenchmarkId::new(format!("decrypt/{mode}"), size),
                &sealed,
                |b, s| b.iter(|| black_box(cipher.decrypt(black_box(s)))),
            );
        }
    }
    group.bench_function("derive column keys", |b| {
        b.iter(|| {
            black_box(ColumnCipher::new(
                &ring,
                Mode::Deterministic,
                "phigate/v1/public.patients.ssn/text",
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
