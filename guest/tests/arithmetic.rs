//! The hand-written modular exponentiation against an independent reference
//! (`num-bigint`), on moduli of every alignment: sizes that fill whole 32- and
//! 64-bit limbs and sizes that leave the top limb partly empty (the division
//! into Montgomery form then works on a shifted modulus), in both limb widths,
//! and on both kernel sets: moduli of 1985 to 2048 bits (32 limbs of 64 bits)
//! and of 2017 to 2048 bits (64 limbs of 32 bits) run the straight-line
//! 2048-bit rows, every other size the loops.

use gitgazer_ws_guest::montgomery::{limb32, limb64};
use num_bigint::BigUint;

/// xorshift64*: deterministic pseudo-random bytes, so a failure replays.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, out: &mut [u8]) {
        for byte in out {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            *byte = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    }
}

/// A random odd modulus of exactly `bits` bits, big-endian.
fn modulus(random: &mut Bytes, bits: usize) -> Vec<u8> {
    let mut n = vec![0; bits.div_ceil(8)];
    random.fill(&mut n);
    let top_bits = bits - (n.len() - 1) * 8;
    n[0] &= (0xffu16 >> (8 - top_bits)) as u8;
    n[0] |= 1 << (top_bits - 1);
    *n.last_mut().unwrap() |= 1;
    n
}

fn be(value: &BigUint, len: usize) -> Vec<u8> {
    let bytes = value.to_bytes_be();
    let mut out = vec![0; len - bytes.len()];
    out.extend_from_slice(&bytes);
    out
}

#[test]
fn both_widths_match_num_bigint_on_every_limb_alignment() {
    let mut random = Bytes(0x9e37_79b9_7f4a_7c15);
    let sizes = [
        1024, 1025, 1031, 1040, 1055, 1057, 1087, 1089, 1500, 1984, 1985, 2016, 2017, 2047, 2048,
        2048, 2048, 2049, 2081, 3072, 4095,
    ];
    for bits in sizes {
        let n_bytes = modulus(&mut random, bits);
        let n = BigUint::from_bytes_be(&n_bytes);
        for round in 0..3 {
            let mut base = vec![0; n_bytes.len()];
            random.fill(&mut base);
            let base = BigUint::from_bytes_be(&base) % &n;
            let base = match round {
                0 => n.clone() - 1u32, // the largest base
                _ => base,
            };
            let mut random_exponent = [0; 8];
            random.fill(&mut random_exponent);
            for exponent in [vec![3], vec![1, 0, 1], random_exponent.to_vec()] {
                let expected = be(
                    &base.modpow(&BigUint::from_bytes_be(&exponent), &n),
                    n_bytes.len(),
                );
                let base = be(&base, n_bytes.len());
                assert_eq!(
                    limb32::mod_pow(&base, &exponent, &n_bytes),
                    expected,
                    "32-bit limbs, {bits}-bit modulus, exponent {exponent:02x?}"
                );
                assert_eq!(
                    limb64::mod_pow(&base, &exponent, &n_bytes),
                    expected,
                    "64-bit limbs, {bits}-bit modulus, exponent {exponent:02x?}"
                );
            }
        }
    }
}
