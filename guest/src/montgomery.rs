//! Modular exponentiation for RSA signature *verification*, by hand.
//!
//! Why not a crate: rsa 0.10's arithmetic (crypto-bigint) uses 64-bit limbs
//! on wasm32, where every 64×64→128-bit product becomes a `__multi3` call;
//! verification inside the guest ran 7.7× slower than natively. Here the same
//! code is instantiated for two limb widths: 32 bits ([`limb32`], for plain
//! wasm32, where u32×u32→u64 is one instruction) and 64 bits ([`limb64`], for
//! 64-bit targets and wasm32 built with `wide-arithmetic`). [`mod_pow`] is the
//! one for the target being built; tests run both everywhere.
//!
//! Montgomery multiplication (CIOS: Koç, Acar, Kaliski 1996), variable time:
//! verification handles only public values (key, signature, message), so
//! there is no secret to leak through timing. Callers check `base < modulus`,
//! an odd modulus and a non-zero exponent before calling.

#[cfg(not(any(target_pointer_width = "64", target_feature = "wide-arithmetic")))]
pub use limb32::mod_pow;
#[cfg(any(target_pointer_width = "64", target_feature = "wide-arithmetic"))]
pub use limb64::mod_pow;

/// The arithmetic, for one limb type and its double-width type.
macro_rules! montgomery {
    ($module:ident, $limb:ty, $wide:ty) => {
        pub mod $module {
            type Limb = $limb;
            type Wide = $wide;

            const LIMB_BITS: usize = Limb::BITS as usize;
            const LIMB_BYTES: usize = LIMB_BITS / 8;

            /// `base^exponent mod modulus`, all unsigned big-endian; the result is as long
            /// as `modulus`. Requires an odd `modulus` without leading zero octets,
            /// `base < modulus` and `exponent != 0`.
            pub fn mod_pow(base: &[u8], exponent: &[u8], modulus: &[u8]) -> Vec<u8> {
                debug_assert!(modulus.first().is_some_and(|&b| b != 0));
                debug_assert!(modulus.last().is_some_and(|&b| b & 1 == 1));
                let k = modulus.len().div_ceil(LIMB_BYTES);
                let m = Modulus::new(limbs(modulus, k));
                let base = limbs(base, k);
                debug_assert!(!greater_or_equal(&base, &m.n));

                let mut scratch = vec![0; k + 2];
                let r_squared = m.r_squared(&mut scratch);
                let mut base_m = vec![0; k];
                m.mul(&base, &r_squared, &mut base_m, &mut scratch);

                let mut acc = base_m.clone();
                let mut product = vec![0; k];
                let mut bits = exponent
                    .iter()
                    .flat_map(|byte| (0..8).rev().map(move |i| (byte >> i) & 1 == 1))
                    .skip_while(|bit| !bit);
                assert!(bits.next().is_some(), "mod_pow: zero exponent");
                for bit in bits {
                    m.mul(&acc, &acc, &mut product, &mut scratch);
                    if bit {
                        m.mul(&product, &base_m, &mut acc, &mut scratch);
                    } else {
                        std::mem::swap(&mut acc, &mut product);
                    }
                }
                let mut one = vec![0; k];
                one[0] = 1;
                m.mul(&acc, &one, &mut product, &mut scratch);
                to_bytes(&product, modulus.len())
            }

            struct Modulus {
                /// Little-endian limbs.
                n: Vec<Limb>,
                /// `-n⁻¹ mod 2^LIMB_BITS`.
                n0_inv: Limb,
            }

            impl Modulus {
                fn new(n: Vec<Limb>) -> Self {
                    // Newton's iteration for the inverse mod 2^LIMB_BITS: an odd n0 is
                    // its own inverse mod 8, and each step doubles the correct bits.
                    let n0 = n[0];
                    let mut inverse: Limb = n0;
                    for _ in 0..6 {
                        inverse = inverse
                            .wrapping_mul((2 as Limb).wrapping_sub(n0.wrapping_mul(inverse)));
                    }
                    debug_assert_eq!(n0.wrapping_mul(inverse), 1);
                    Self {
                        n,
                        n0_inv: inverse.wrapping_neg(),
                    }
                }

                /// `out = a·b·R⁻¹ mod n` for `a, b < n` (R = 2^(LIMB_BITS·k)).
                /// `scratch` holds k + 2 limbs.
                fn mul(&self, a: &[Limb], b: &[Limb], out: &mut [Limb], scratch: &mut [Limb]) {
                    let k = self.n.len();
                    // Slices of known length, so that the loops run without
                    // bounds checks (they cost most inside wasm).
                    let (n, a, b, t) = (&self.n[..k], &a[..k], &b[..k], &mut scratch[..k + 2]);
                    t.fill(0);
                    for &b_i in b {
                        // t += a·b_i
                        let b_i = Wide::from(b_i);
                        let mut carry: Wide = 0;
                        for (t_j, &a_j) in t[..k].iter_mut().zip(a) {
                            let sum = Wide::from(*t_j) + Wide::from(a_j) * b_i + carry;
                            *t_j = sum as Limb;
                            carry = sum >> LIMB_BITS;
                        }
                        let sum = Wide::from(t[k]) + carry;
                        t[k] = sum as Limb;
                        t[k + 1] = (sum >> LIMB_BITS) as Limb;
                        // t = (t + m·n) / 2^LIMB_BITS, with m making the low limb zero.
                        let m = Wide::from(t[0].wrapping_mul(self.n0_inv));
                        let mut carry = (Wide::from(t[0]) + m * Wide::from(n[0])) >> LIMB_BITS;
                        for j in 1..k {
                            let sum = Wide::from(t[j]) + m * Wide::from(n[j]) + carry;
                            t[j - 1] = sum as Limb;
                            carry = sum >> LIMB_BITS;
                        }
                        let sum = Wide::from(t[k]) + carry;
                        t[k - 1] = sum as Limb;
                        t[k] = t[k + 1] + (sum >> LIMB_BITS) as Limb;
                    }
                    // t < 2n: one conditional subtraction.
                    if t[k] != 0 || greater_or_equal(&t[..k], n) {
                        subtract(&mut t[..k], n);
                    }
                    out.copy_from_slice(&t[..k]);
                }

                /// `R² mod n`, the factor that moves a value into Montgomery form.
                fn r_squared(&self, scratch: &mut [Limb]) -> Vec<Limb> {
                    let n = &self.n;
                    let k = n.len();
                    let n_bits = k * LIMB_BITS - n[k - 1].leading_zeros() as usize;
                    // 2^(n_bits - 1) < n, doubled up to R mod n (Montgomery form of 1).
                    let mut x = vec![0; k];
                    x[(n_bits - 1) / LIMB_BITS] = 1 << ((n_bits - 1) % LIMB_BITS);
                    let r_bits = k * LIMB_BITS;
                    for _ in 0..(r_bits - n_bits + 1) {
                        self.double(&mut x);
                    }
                    // With r_bits = a·2^s: `a` doublings give the form of 2^a, and s
                    // Montgomery squarings the form of 2^r_bits = R, which is
                    // R² mod n. A doubling costs about 1/k of a squaring, so s is
                    // chosen to make `a` about k (the least a + s·k).
                    let mut s = r_bits.trailing_zeros();
                    while s > 0 && (r_bits >> s) < k {
                        s -= 1;
                    }
                    for _ in 0..(r_bits >> s) {
                        self.double(&mut x);
                    }
                    let mut square = vec![0; k];
                    for _ in 0..s {
                        self.mul(&x, &x, &mut square, scratch);
                        std::mem::swap(&mut x, &mut square);
                    }
                    x
                }

                /// `x = 2x mod n` for `x < n`.
                fn double(&self, x: &mut [Limb]) {
                    let mut carry = 0;
                    for limb in x.iter_mut() {
                        let next = *limb >> (LIMB_BITS - 1);
                        *limb = (*limb << 1) | carry;
                        carry = next;
                    }
                    if carry != 0 || greater_or_equal(x, &self.n) {
                        subtract(x, &self.n);
                    }
                }
            }

            /// Little-endian limbs of big-endian bytes, `k` limbs long.
            fn limbs(bytes: &[u8], k: usize) -> Vec<Limb> {
                let mut out = vec![0; k];
                for (limb, chunk) in out.iter_mut().zip(bytes.rchunks(LIMB_BYTES)) {
                    *limb = chunk.iter().fold(0, |acc, &b| (acc << 8) | Limb::from(b));
                }
                out
            }

            /// Big-endian bytes of little-endian limbs, `len` bytes long.
            fn to_bytes(limbs: &[Limb], len: usize) -> Vec<u8> {
                let mut out = vec![0; len];
                for (i, byte) in out.iter_mut().rev().enumerate() {
                    let limb = limbs.get(i / LIMB_BYTES).copied().unwrap_or(0);
                    *byte = (limb >> (8 * (i % LIMB_BYTES))) as u8;
                }
                out
            }

            fn greater_or_equal(a: &[Limb], b: &[Limb]) -> bool {
                for (x, y) in a.iter().rev().zip(b.iter().rev()) {
                    if x != y {
                        return x > y;
                    }
                }
                true
            }

            /// `a -= b`, wrapping (the caller knows the true result is non-negative or
            /// that the borrow is absorbed by a higher limb it drops).
            fn subtract(a: &mut [Limb], b: &[Limb]) {
                let mut borrow = false;
                for (x, &y) in a.iter_mut().zip(b) {
                    let (d1, b1) = x.overflowing_sub(y);
                    let (d2, b2) = d1.overflowing_sub(Limb::from(borrow));
                    *x = d2;
                    borrow = b1 || b2;
                }
            }
        }
    };
}

montgomery!(limb32, u32, u64);
montgomery!(limb64, u64, u128);

#[cfg(test)]
mod tests {
    use super::{limb32, limb64};

    /// Schoolbook `base^exp mod m` on u128, for small operands.
    fn reference(base: u128, exp: u128, m: u128) -> u128 {
        let mut result = 1 % m;
        let mut b = base % m;
        let mut e = exp;
        while e > 0 {
            if e & 1 == 1 {
                result = result * b % m;
            }
            b = b * b % m;
            e >>= 1;
        }
        result
    }

    fn be(value: u128, len: usize) -> Vec<u8> {
        value.to_be_bytes()[16 - len..].to_vec()
    }

    #[test]
    fn matches_schoolbook_arithmetic_on_small_moduli() {
        for mod_pow in [limb32::mod_pow, limb64::mod_pow] {
            // Odd moduli of 1 to 8 bytes (one and two limbs), several bases and
            // exponents, including base 0, 1, n - 1 and exponents 1, 3, 65537.
            let moduli: [u128; 6] = [
                3,
                251,
                65_521,
                4_294_967_291,
                0xffff_ffff_ffff_ffc5,
                0x8000_0000_0000_0001,
            ];
            for &m in &moduli {
                let len = (128 - m.leading_zeros() as usize).div_ceil(8);
                for base in [0, 1, 2, m / 2, m - 1, m / 3 + 7] {
                    let base = base % m;
                    for exp in [1u128, 2, 3, 17, 65_537, 0xffff_ffff] {
                        let got = mod_pow(&be(base, len), &be(exp, 4), &be(m, len));
                        assert_eq!(
                            got,
                            be(reference(base, exp, m), len),
                            "{base}^{exp} mod {m}"
                        );
                    }
                }
            }
        }
    }
}
