//! Modular exponentiation for RSA signature *verification*, by hand.
//!
//! Why not a crate: rsa 0.10's arithmetic (crypto-bigint) uses 64-bit limbs
//! on wasm32, where every 64×64→128-bit product becomes a `__multi3` call;
//! verification inside the guest ran 7.7× slower than natively. Here the same
//! code is instantiated for two limb widths: 32 bits ([`limb32`], for plain
//! wasm32, where u32×u32→u64 is one instruction) and 64 bits ([`limb64`], for
//! 64-bit targets and the wasm32 build with the `wide-arithmetic` cargo
//! feature, compiled with `-Ctarget-feature=+wide-arithmetic`). [`mod_pow`] is
//! the one for the build; tests run both everywhere. A cargo feature and not
//! `cfg(target_feature)`: stable rustc hides unstable target features from
//! `cfg`.
//!
//! Montgomery multiplication (operand scanning: Koç, Acar, Kaliski 1996, two
//! rows per pass) with a dedicated squaring, its full-length rows
//! straight-line code for 2048-bit moduli (what Cognito uses, so what every
//! request runs) and loops for other sizes (the `Kernels` of each module); the
//! base enters Montgomery form by one schoolbook division and the result
//! leaves it through the last product (by the plain base) instead of an
//! extra reduction; variable time: verification handles only public values
//! (key, signature, message), so there is no secret to leak through timing.
//! Callers check `base < modulus`, an odd modulus and a non-zero exponent
//! before calling.

#[cfg(not(any(target_pointer_width = "64", feature = "wide-arithmetic")))]
pub use limb32::mod_pow;
#[cfg(any(target_pointer_width = "64", feature = "wide-arithmetic"))]
pub use limb64::mod_pow;

/// The arithmetic for one limb type, its double-width type, the block
/// length of the unrolled inner loops, and the number of limbs of a 2048-bit
/// modulus (a literal: `seq!` unrolls over it).
///
/// One module per limb width, assembled from the pieces below, each a macro
/// that expands inside that module (so `Limb`, `Wide` and `LIMB_BITS` are
/// the module's). Macros, not code generic over a limb trait: the arithmetic
/// converts between the two widths with `as`, which no std trait offers.
macro_rules! montgomery {
    ($module:ident, $limb:ty, $wide:ty, $block:literal, $k2048:literal) => {
        pub mod $module {
            use crate::prelude::*;

            type Limb = $limb;
            type Wide = $wide;

            const LIMB_BITS: usize = Limb::BITS as usize;
            const LIMB_BYTES: usize = LIMB_BITS / 8;
            const _: () = assert!(Wide::BITS == 2 * Limb::BITS);

            exponentiation!();
            kernels!();
            fixed!($k2048);
            modulus!();
            division!();
            rows!($block);
            helpers!();
        }
    };
}

/// `mod_pow`: the square-and-multiply ladder over the exponent's bits.
macro_rules! exponentiation {
    () => {
        /// `base^exponent mod modulus`, all unsigned big-endian; the result is as long
        /// as `modulus`. Requires an odd `modulus` without leading zero octets,
        /// `base < modulus` and `exponent != 0`.
        pub fn mod_pow(base: &[u8], exponent: &[u8], modulus: &[u8]) -> Vec<u8> {
            if modulus.len().div_ceil(LIMB_BYTES) == fixed::K {
                mod_pow_with::<fixed::Rows>(base, exponent, modulus)
            } else {
                mod_pow_with::<Loops>(base, exponent, modulus)
            }
        }

        /// [`mod_pow`] on the given row kernels.
        fn mod_pow_with<R: Kernels>(base: &[u8], exponent: &[u8], modulus: &[u8]) -> Vec<u8> {
            debug_assert!(modulus.first().is_some_and(|&b| b != 0));
            debug_assert!(modulus.last().is_some_and(|&b| b & 1 == 1));
            let k = modulus.len().div_ceil(LIMB_BYTES);
            let m = Modulus::new(limbs(modulus, k));
            let base = limbs(base, k);
            debug_assert!(!greater_or_equal(&base, &m.n));

            let mut bits = exponent
                .iter()
                .flat_map(|byte| (0..8).rev().map(move |i| (byte >> i) & 1 == 1))
                .skip_while(|bit| !bit);
            assert!(bits.next().is_some(), "mod_pow: zero exponent");
            let bits: Vec<bool> = bits.collect();
            // Exponent 1: base < modulus is its own residue.
            let Some((&last_bit, leading_bits)) = bits.split_last() else {
                return to_bytes(&base, modulus.len());
            };

            // Room for a product before reduction.
            let mut scratch = vec![0; 2 * k];
            let base_m = m.to_montgomery::<R>(&base);
            let mut acc = base_m.clone();
            let mut product = vec![0; k];
            for &bit in leading_bits {
                m.square::<R>(&acc, &mut product, &mut scratch);
                if bit {
                    m.mul::<R>(&product, &base_m, &mut acc, &mut scratch);
                } else {
                    core::mem::swap(&mut acc, &mut product);
                }
            }
            m.square::<R>(&acc, &mut product, &mut scratch);
            if last_bit {
                // (x·R)·base·R⁻¹ = x·base: a last product by the plain
                // base leaves Montgomery form (odd exponents, 65537).
                m.mul::<R>(&product, &base, &mut acc, &mut scratch);
            } else {
                // Out of Montgomery form: x·R·R⁻¹, a reduction of x·R alone.
                scratch[..k].copy_from_slice(&product);
                scratch[k..].fill(0);
                m.reduce::<R>(&mut scratch, &mut acc);
            }
            to_bytes(&acc, modulus.len())
        }
    };
}

/// The `Kernels` trait and its loop set, `Loops`.
macro_rules! kernels {
    () => {
        /// The row operations the Montgomery arithmetic is built from, in
        /// two sets: [`Loops`] for any length (the defaults here),
        /// [`fixed::Rows`] for a 2048-bit modulus. The arithmetic is
        /// written once, generic over the set.
        trait Kernels {
            /// The modulus' length in limbs, `k`: a constant for a set
            /// made for one length, so that the callers' loops and bounds
            /// checks are resolved at compile time too.
            #[inline(always)]
            fn length(k: usize) -> usize {
                k
            }

            /// [`multiply_add_2`].
            #[inline(always)]
            fn multiply_add_2(
                t: &mut [Limb],
                a: &[Limb],
                b: [Limb; 2],
                carry_in: Limb,
                top_in: Limb,
            ) -> Wide {
                multiply_add_2(t, a, b, carry_in, top_in)
            }

            /// [`multiply_subtract`].
            #[inline(always)]
            fn multiply_subtract(t: &mut [Limb], a: &[Limb], q: Limb) -> Limb {
                multiply_subtract(t, a, q)
            }
        }

        /// Loops over any length (unrolled in blocks, see [`unrolled`]).
        struct Loops;

        impl Kernels for Loops {}
    };
}

/// `fixed`: the kernel set for a 2048-bit modulus, `$k2048` limbs.
macro_rules! fixed {
    ($k2048:literal) => {
        /// Kernels for a modulus of [`fixed::K`] limbs (2048 bits): a row of
        /// K limbs is one straight-line function.
        ///
        /// Why: in a loop over a runtime length, the compiled wasm computes
        /// every limb's address with an add of its own, pays an epoch check
        /// per block, and (inlined into the callers) keeps more values alive
        /// than there are registers, so Cranelift reloads the multipliers
        /// from the stack at every limb. Out of line and unrolled for a known
        /// length, each access is a load at a constant offset and the
        /// multipliers stay in registers: about 15 % off the RS256 check in
        /// both builds (BENCHMARKS.md).
        mod fixed {
            use super::{
                Kernels, LIMB_BITS, Limb, Wide, multiply_add_2, multiply_subtract,
                subtract_step, two_rows_step, two_rows_top,
            };

            /// Limbs of a 2048-bit modulus.
            pub const K: usize = $k2048;
            // A literal for `seq!`, so checked against the limb width here.
            const _: () = assert!(K * LIMB_BITS == 2048);

            pub struct Rows;

            impl Kernels for Rows {
                #[inline(always)]
                fn length(k: usize) -> usize {
                    debug_assert_eq!(k, K);
                    K
                }

                /// Rows of K limbs (products and reductions) run straight;
                /// a square's shorter cross-product rows take the loop:
                /// one function per length measured slower than the loop
                /// (16 more functions, each run once per square).
                #[inline(always)]
                fn multiply_add_2(
                    t: &mut [Limb],
                    a: &[Limb],
                    b: [Limb; 2],
                    carry_in: Limb,
                    top_in: Limb,
                ) -> Wide {
                    match (t.try_into(), a.try_into()) {
                        (Ok(t), Ok(a)) => two_rows(t, a, b, carry_in, top_in),
                        _ => multiply_add_2(t, a, b, carry_in, top_in),
                    }
                }

                #[inline(always)]
                fn multiply_subtract(t: &mut [Limb], a: &[Limb], q: Limb) -> Limb {
                    match (t.try_into(), a.try_into()) {
                        (Ok(t), Ok(a)) => subtract_row(t, a, q),
                        _ => multiply_subtract(t, a, q),
                    }
                }
            }

            /// [`multiply_add_2`] over K limbs of `a` (and K + 1 of `t`).
            #[inline(never)]
            fn two_rows(
                t: &mut [Limb; K + 1],
                a: &[Limb; K],
                b: [Limb; 2],
                carry_in: Limb,
                top_in: Limb,
            ) -> Wide {
                let (b0, b1) = (Wide::from(b[0]), Wide::from(b[1]));
                let sum = Wide::from(t[0]) + Wide::from(a[0]) * b0 + Wide::from(carry_in);
                t[0] = sum as Limb;
                let (mut carry_0, mut carry_1) = ((sum >> LIMB_BITS) as Limb, 0);
                seq_macro::seq!(J in 1..$k2048 {
                    let carries = (&mut carry_0, &mut carry_1);
                    t[J] = two_rows_step(t[J], a[J], a[J - 1], b0, b1, carries);
                });
                two_rows_top(&mut t[K], a[K - 1], b1, carry_0, carry_1, top_in)
            }

            /// [`multiply_subtract`] over K limbs.
            #[inline(never)]
            fn subtract_row(t: &mut [Limb; K], a: &[Limb; K], q: Limb) -> Limb {
                let q = Wide::from(q);
                let mut carry: Limb = 0;
                seq_macro::seq!(J in 0..$k2048 {
                    t[J] = subtract_step(t[J], a[J], q, &mut carry);
                });
                carry
            }
        }
    };
}

/// `Modulus`: Montgomery products and reductions.
macro_rules! modulus {
    () => {
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
                    inverse =
                        inverse.wrapping_mul((2 as Limb).wrapping_sub(n0.wrapping_mul(inverse)));
                }
                debug_assert_eq!(n0.wrapping_mul(inverse), 1);
                Self {
                    n,
                    n0_inv: inverse.wrapping_neg(),
                }
            }

            /// `out = a·b·R⁻¹ mod n` for `a, b < n` (R = 2^(LIMB_BITS·k)):
            /// the full product, then [`Self::reduce`]. `scratch`: 2k limbs.
            fn mul<R: Kernels>(
                &self,
                a: &[Limb],
                b: &[Limb],
                out: &mut [Limb],
                scratch: &mut [Limb],
            ) {
                let k = R::length(self.n.len());
                let (a, b, t) = (&a[..k], &b[..k], &mut scratch[..2 * k]);
                t.fill(0);
                // Rows i and i + 1 together reach limb i + k; their carry
                // opens limb i + k + 1 (it fits: the partial product is
                // below 2^(LIMB_BITS·(i + k + 2))).
                let mut i = 0;
                while i + 2 <= k {
                    let carry = R::multiply_add_2(&mut t[i..=i + k], a, [b[i], b[i + 1]], 0, 0);
                    t[i + k + 1] = carry as Limb;
                    i += 2;
                }
                if i < k {
                    t[i + k] = multiply_add(&mut t[i..i + k], a, b[i]);
                }
                self.reduce::<R>(t, out);
            }

            /// `out = a²·R⁻¹ mod n` for `a < n`; `scratch` holds 2k limbs.
            /// Cheaper than `mul(a, a)`: each cross product a_i·a_j is
            /// computed once and doubled (about 3/4 of the limb products).
            fn square<R: Kernels>(&self, a: &[Limb], out: &mut [Limb], scratch: &mut [Limb]) {
                let k = R::length(self.n.len());
                let (a, t) = (&a[..k], &mut scratch[..2 * k]);
                t.fill(0);
                // Cross products: t = Σ_{i<j} a_i·a_j·2^(LIMB_BITS·(i+j)). Row i
                // is a[i+1..]·a_i from limb 2i + 1. Rows i and i + 1 go together
                // after row i's first product: both multiply a[i+2..], from
                // limbs 2i + 2 and 2i + 3, and reach limb i + k.
                let mut i = 0;
                while i + 2 <= k {
                    let first = Wide::from(t[2 * i + 1]) + Wide::from(a[i + 1]) * Wide::from(a[i]);
                    t[2 * i + 1] = first as Limb;
                    let carry = R::multiply_add_2(
                        &mut t[2 * i + 2..=i + k],
                        &a[i + 2..],
                        [a[i], a[i + 1]],
                        (first >> LIMB_BITS) as Limb,
                        0,
                    );
                    t[i + k + 1] = carry as Limb;
                    i += 2;
                }
                // An odd k leaves row k - 1, which is empty.
                // Doubled (a² < R², so nothing is shifted out) ...
                let mut top = 0;
                for limb in t.iter_mut() {
                    let next = *limb >> (LIMB_BITS - 1);
                    *limb = (*limb << 1) | top;
                    top = next;
                }
                // ... plus the squares a_i² on the diagonal.
                let mut carry: Wide = 0;
                for (pair, &a_i) in t.chunks_exact_mut(2).zip(a) {
                    let product = Wide::from(a_i) * Wide::from(a_i);
                    let low = Wide::from(pair[0]) + (product as Limb as Wide) + carry;
                    pair[0] = low as Limb;
                    let high = Wide::from(pair[1]) + (product >> LIMB_BITS) + (low >> LIMB_BITS);
                    pair[1] = high as Limb;
                    carry = high >> LIMB_BITS;
                }
                self.reduce::<R>(t, out);
            }

            /// `out = t·R⁻¹ mod n` for a 2k-limb `t < n·R` (Montgomery
            /// reduction, operand scanning); `t` is overwritten.
            fn reduce<R: Kernels>(&self, t: &mut [Limb], out: &mut [Limb]) {
                let k = R::length(self.n.len());
                let (n, t) = (&self.n[..k], &mut t[..2 * k]);
                // Row i adds m_i·n from limb i, m_i chosen to make limb i zero.
                // `overflow` is what rose above the last row's carry: it
                // belongs on limb i + k of the next row(s).
                let mut overflow: Limb = 0;
                let mut i = 0;
                while i + 2 <= k {
                    // Rows i and i + 1 together; m_{i+1} depends on limb i + 1
                    // after row i, which its first two products give.
                    let m0 = t[i].wrapping_mul(self.n0_inv);
                    let limb_i = Wide::from(t[i]) + Wide::from(n[0]) * Wide::from(m0);
                    let limb_i1 = Wide::from(t[i + 1])
                        + Wide::from(n[1]) * Wide::from(m0)
                        + (limb_i >> LIMB_BITS);
                    let m1 = (limb_i1 as Limb).wrapping_mul(self.n0_inv);
                    let carry = R::multiply_add_2(&mut t[i..=i + k], n, [m0, m1], 0, overflow);
                    let sum = Wide::from(t[i + k + 1]) + carry;
                    t[i + k + 1] = sum as Limb;
                    overflow = (sum >> LIMB_BITS) as Limb;
                    i += 2;
                }
                if i < k {
                    let m = t[i].wrapping_mul(self.n0_inv);
                    let carry = multiply_add(&mut t[i..i + k], n, m);
                    let sum = Wide::from(t[i + k]) + Wide::from(carry) + Wide::from(overflow);
                    t[i + k] = sum as Limb;
                    overflow = (sum >> LIMB_BITS) as Limb;
                }
                self.finish(&t[k..], overflow != 0, out);
            }

            /// `out = t mod n` for `t < 2n`, given as k limbs and the bit
            /// above them: one conditional subtraction.
            fn finish(&self, t: &[Limb], carry: bool, out: &mut [Limb]) {
                out.copy_from_slice(t);
                if carry || greater_or_equal(out, &self.n) {
                    subtract(out, &self.n);
                }
            }
        }
    };
}

/// The way into Montgomery form: `Modulus::to_montgomery`, a long division
/// on a normalized divisor whose quotient estimates `Reciprocal` computes.
macro_rules! division {
    () => {
        impl Modulus {
            /// `x·R mod n` for `x < n`: x in Montgomery form.
            ///
            /// The remainder of x·2^(LIMB_BITS·k) by schoolbook long division
            /// (Knuth, TAOCP vol. 2, 4.3.1, algorithm D), k quotient limbs:
            /// about the cost of one reduction, and cheaper than the usual
            /// product by R² mod n, which itself needs a division twice as
            /// long. The division needs a divisor whose top bit is set, so it
            /// runs on n' = n·2^shift, where (y·2^shift) mod n' = (y mod n)·2^shift.
            fn to_montgomery<R: Kernels>(&self, x: &[Limb]) -> Vec<Limb> {
                let k = R::length(self.n.len());
                let shift = self.n[k - 1].leading_zeros() as usize;
                let mut n_norm = self.n.clone();
                shift_left(&mut n_norm, shift);
                let top = Reciprocal::new(n_norm[k - 1]);
                // The dividend x·2^shift·2^(LIMB_BITS·k), 2k limbs and one
                // more on top; x·2^shift < n' fits in k limbs.
                let mut z: Vec<Limb> = vec![0; 2 * k + 1];
                z[k..2 * k].copy_from_slice(x);
                shift_left(&mut z[k..2 * k], shift);
                for j in (0..k).rev() {
                    // The remainder so far is z[j+1..=j+k]; bring down limb j.
                    let window = &mut z[j..=j + k];
                    // The estimate is at most 2 above the true quotient limb.
                    // The remainder is below n', so window[k] <= its top
                    // limb; when equal, the quotient limb is at most MAX
                    // (`>=`: `divide` requires the high limb below it).
                    let q = if window[k] >= top.divisor {
                        Limb::MAX
                    } else {
                        top.divide(window[k], window[k - 1])
                    };
                    // window -= q·n' over k + 1 limbs (two's complement).
                    let (low, high) = window.split_at_mut(k);
                    high[0] = high[0].wrapping_sub(R::multiply_subtract(low, &n_norm, q));
                    // Negative (the estimate was too high): add n' back.
                    while window[k] >> (LIMB_BITS - 1) != 0 {
                        let mut carry = false;
                        for (z_j, &n_j) in window[..k].iter_mut().zip(&n_norm) {
                            let (s1, c1) = z_j.overflowing_add(n_j);
                            let (s2, c2) = s1.overflowing_add(Limb::from(carry));
                            *z_j = s2;
                            carry = c1 || c2;
                        }
                        window[k] = window[k].wrapping_add(Limb::from(carry));
                    }
                    debug_assert_eq!(window[k], 0);
                }
                z.truncate(k);
                shift_right(&mut z, shift);
                z
            }
        }

        /// Division of two limbs by one fixed limb with its top bit set,
        /// by a multiplication with its precomputed reciprocal (Möller and
        /// Granlund, "Improved division by invariant integers", IEEE Trans.
        /// Computers 60(2), 2011, algorithm 4). Why by hand: the quotient
        /// estimates of [`Modulus::to_montgomery`] otherwise each call
        /// compiler-builtins' generic 128-bit division inside wasm.
        struct Reciprocal {
            divisor: Limb,
            /// ⌊(2^(2·LIMB_BITS) − 1) / divisor⌋ − 2^LIMB_BITS.
            inverse: Limb,
        }

        impl Reciprocal {
            /// `divisor` must have its top bit set.
            fn new(divisor: Limb) -> Self {
                debug_assert!(divisor >> (LIMB_BITS - 1) == 1);
                // (2^(2·LIMB_BITS) − 1 − divisor·2^LIMB_BITS) / divisor:
                // the quotient is below 2^LIMB_BITS for such a divisor.
                let numerator = (Wide::from(!divisor) << LIMB_BITS) | Wide::from(Limb::MAX);
                Self {
                    divisor,
                    inverse: (numerator / Wide::from(divisor)) as Limb,
                }
            }

            /// ⌊(high·2^LIMB_BITS + low) / divisor⌋ for `high < divisor`.
            fn divide(&self, high: Limb, low: Limb) -> Limb {
                debug_assert!(high < self.divisor);
                let d = self.divisor;
                let product = Wide::from(self.inverse) * Wide::from(high)
                    + ((Wide::from(high) << LIMB_BITS) | Wide::from(low));
                let mut quotient = ((product >> LIMB_BITS) as Limb).wrapping_add(1);
                let mut remainder = low.wrapping_sub(quotient.wrapping_mul(d));
                if remainder > product as Limb {
                    quotient = quotient.wrapping_sub(1);
                    remainder = remainder.wrapping_add(d);
                }
                if remainder >= d {
                    quotient = quotient.wrapping_add(1);
                }
                quotient
            }
        }

        /// `x <<= shift` for `shift < LIMB_BITS`, bits above the top limb dropped.
        fn shift_left(x: &mut [Limb], shift: usize) {
            if shift == 0 {
                return;
            }
            for i in (0..x.len()).rev() {
                let below = if i > 0 {
                    x[i - 1] >> (LIMB_BITS - shift)
                } else {
                    0
                };
                x[i] = (x[i] << shift) | below;
            }
        }

        /// `x >>= shift` for `shift < LIMB_BITS`.
        fn shift_right(x: &mut [Limb], shift: usize) {
            if shift == 0 {
                return;
            }
            for i in 0..x.len() {
                let above = x.get(i + 1).map_or(0, |&limb| limb << (LIMB_BITS - shift));
                x[i] = (x[i] >> shift) | above;
            }
        }

        #[cfg(test)]
        #[test]
        fn reciprocal_division_matches_plain_division() {
            let top: Limb = 1 << (LIMB_BITS - 1);
            let mut divisors = vec![top, top + 1, Limb::MAX, Limb::MAX - 1, top | (top >> 1)];
            // And pseudo-random ones (xorshift), the top bit forced.
            let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as Limb
            };
            divisors.extend((0..200).map(|_| next() | top));
            for d in divisors {
                let reciprocal = Reciprocal::new(d);
                let mut highs = vec![0, 1, d / 2, d - 1];
                highs.extend((0..20).map(|_| next() % d));
                for high in highs {
                    for low in [0, 1, d - 1, d, Limb::MAX, next(), next()] {
                        let numerator = (Wide::from(high) << LIMB_BITS) | Wide::from(low);
                        assert_eq!(
                            Wide::from(reciprocal.divide(high, low)),
                            numerator / Wide::from(d),
                            "({high}·2^{LIMB_BITS} + {low}) / {d}"
                        );
                    }
                }
            }
        }
    };
}

/// The row primitives: one row (or two) of limb products added to or
/// subtracted from `t`, unrolled in blocks of `$block` limbs.
macro_rules! rows {
    ($block:literal) => {
        /// Calls `step` on each pair of `t` and `a` in order, unrolled: inside
        /// wasm each loop iteration also pays an epoch (deadline) check and a
        /// branch, which cost as much as a few limb steps.
        #[inline(always)]
        fn unrolled(t: &mut [Limb], a: &[Limb], mut step: impl FnMut(&mut Limb, Limb)) {
            debug_assert_eq!(t.len(), a.len());
            // Blocks of `$block` limbs, then of 4 (the rows of a square have
            // every length), then single limbs. 16 for 32-bit limbs, 8 for
            // 64-bit ones: LLVM kept a block of 16 two-row steps on u128 as
            // a loop (an epoch check per limb) instead of unrolling it.
            let (t_blocks, t_rest) = t.as_chunks_mut::<$block>();
            let (a_blocks, a_rest) = a.as_chunks::<$block>();
            for (t_block, a_block) in t_blocks.iter_mut().zip(a_blocks) {
                for (t_j, &a_j) in t_block.iter_mut().zip(a_block) {
                    step(t_j, a_j);
                }
            }
            let (t_blocks, t_rest) = t_rest.as_chunks_mut::<4>();
            let (a_blocks, a_rest) = a_rest.as_chunks::<4>();
            for (t_block, a_block) in t_blocks.iter_mut().zip(a_blocks) {
                for (t_j, &a_j) in t_block.iter_mut().zip(a_block) {
                    step(t_j, a_j);
                }
            }
            for (t_j, &a_j) in t_rest.iter_mut().zip(a_rest) {
                step(t_j, a_j);
            }
        }

        /// `t += a·b` over equally long `t` and `a`; returns the carry out.
        #[inline(always)]
        fn multiply_add(t: &mut [Limb], a: &[Limb], b: Limb) -> Limb {
            let b = Wide::from(b);
            // The carry is one limb (the sum's high half): kept as `Limb`,
            // not `Wide`, so the compiler knows its upper half is zero
            // (with wide-arithmetic, fewer 128-bit adds per step).
            let mut carry: Limb = 0;
            unrolled(t, a, |t_j, a_j| {
                let sum = Wide::from(*t_j) + Wide::from(a_j) * b + Wide::from(carry);
                *t_j = sum as Limb;
                carry = (sum >> LIMB_BITS) as Limb;
            });
            carry
        }

        /// `t -= a·q` over equally long `t` and `a`; returns what is to be
        /// subtracted from the limb above `t` (the product's top limb
        /// plus the borrow; it fits: the top limb of a·q + carry is
        /// at most MAX − 1 unless its low limb is zero).
        #[inline(always)]
        fn multiply_subtract(t: &mut [Limb], a: &[Limb], q: Limb) -> Limb {
            let q = Wide::from(q);
            let mut carry: Limb = 0;
            unrolled(t, a, |t_j, a_j| {
                *t_j = subtract_step(*t_j, a_j, q, &mut carry)
            });
            carry
        }

        /// One limb of [`multiply_subtract`]: `t_j − a_j·q − carry`, the
        /// product's high limb and the borrow carried on.
        #[inline(always)]
        fn subtract_step(t_j: Limb, a_j: Limb, q: Wide, carry: &mut Limb) -> Limb {
            let product = Wide::from(a_j) * q + Wide::from(*carry);
            let (difference, borrow) = t_j.overflowing_sub(product as Limb);
            *carry = ((product >> LIMB_BITS) as Limb) + Limb::from(borrow);
            difference
        }

        /// Two rows at once: `t += a·b[0] + a·b[1]·2^LIMB_BITS + carry_in
        /// + top_in·2^(LIMB_BITS·len(a))` over `t`, one limb longer than
        /// `a`; returns the carry out of `t`'s last limb.
        ///
        /// Why two: one row's carry chain (add, shift, add) bounds a step
        /// at a few cycles whatever the core's width; two rows in one pass
        /// run two independent chains side by side, and load and store
        /// each limb of `t` once for two products.
        #[inline(always)]
        fn multiply_add_2(
            t: &mut [Limb],
            a: &[Limb],
            b: [Limb; 2],
            carry_in: Limb,
            top_in: Limb,
        ) -> Wide {
            debug_assert_eq!(t.len(), a.len() + 1);
            let (b0, b1) = (Wide::from(b[0]), Wide::from(b[1]));
            let (top, t) = t.split_last_mut().expect("t is one limb longer than a");
            // Row 0's carry, row 1's carry, and the limb of `a` that row 1
            // multiplies at the current limb of `t` (row 0's previous one).
            let (mut carry_0, mut carry_1, mut a_previous): (Limb, Limb, Limb) = (carry_in, 0, 0);
            if let Some((&a_0, a_rest)) = a.split_first() {
                let (t_0, t_rest) = t.split_first_mut().expect("as long as a");
                let sum = Wide::from(*t_0) + Wide::from(a_0) * b0 + Wide::from(carry_0);
                *t_0 = sum as Limb;
                carry_0 = (sum >> LIMB_BITS) as Limb;
                a_previous = a_0;
                unrolled(t_rest, a_rest, |t_j, a_j| {
                    let carries = (&mut carry_0, &mut carry_1);
                    *t_j = two_rows_step(*t_j, a_j, a_previous, b0, b1, carries);
                    a_previous = a_j;
                });
            }
            two_rows_top(top, a_previous, b1, carry_0, carry_1, top_in)
        }

        /// One limb of [`multiply_add_2`]: `t_j` plus row 0's product
        /// `a_j·b0` and row 1's `a_previous·b1`, with each row's carry.
        #[inline(always)]
        fn two_rows_step(
            t_j: Limb,
            a_j: Limb,
            a_previous: Limb,
            b0: Wide,
            b1: Wide,
            (carry_0, carry_1): (&mut Limb, &mut Limb),
        ) -> Limb {
            let sum_0 = Wide::from(t_j) + Wide::from(a_j) * b0 + Wide::from(*carry_0);
            *carry_0 = (sum_0 >> LIMB_BITS) as Limb;
            let sum_1 =
                Wide::from(sum_0 as Limb) + Wide::from(a_previous) * b1 + Wide::from(*carry_1);
            *carry_1 = (sum_1 >> LIMB_BITS) as Limb;
            sum_1 as Limb
        }

        /// The last limb of [`multiply_add_2`]: row 0's carry and `top_in`,
        /// row 1's last product `a_last·b1`; returns the carry out.
        #[inline(always)]
        fn two_rows_top(
            top: &mut Limb,
            a_last: Limb,
            b1: Wide,
            carry_0: Limb,
            carry_1: Limb,
            top_in: Limb,
        ) -> Wide {
            let sum_0 = Wide::from(*top) + Wide::from(carry_0) + Wide::from(top_in);
            let sum_1 = Wide::from(sum_0 as Limb) + Wide::from(a_last) * b1 + Wide::from(carry_1);
            *top = sum_1 as Limb;
            (sum_0 >> LIMB_BITS) + (sum_1 >> LIMB_BITS)
        }
    };
}

/// Byte conversions, comparison and subtraction of limb vectors.
macro_rules! helpers {
    () => {
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
    };
}

// A panic inside either module reports the line of its call here, so moving
// these lines changes one word of a component's data, and no code.
montgomery!(limb32, u32, u64, 16, 64);
montgomery!(limb64, u64, u128, 8, 32);

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
