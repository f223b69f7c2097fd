//! What the AVX-512F kernels share: the run-time check, lane masks, and the permute
//! indices that split 32 consecutive columns into their even and odd ones (how the
//! stride-2 kernels read a row: [`super::pool`]'s and [`super::depthwise`]'s `rows512`).

/// Whether this CPU has AVX-512F (std caches the answer after the first check).
pub(crate) fn detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The mask of lanes `lo..hi` of 16 (none when `hi <= lo`; bounds outside 0..=16 are
/// clamped, so a caller can pass a row's edges relative to a load's first column).
#[cfg(target_arch = "x86_64")]
pub(super) fn lanes(lo: isize, hi: isize) -> u16 {
    let (lo, hi) = (lo.clamp(0, 16) as u32, hi.clamp(0, 16) as u32);
    if hi <= lo {
        return 0;
    }
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
}

/// The `vpermt2ps` indices (`_mm512_permutex2var_ps(lo, idx, hi)`) that take the even
/// (`.0`) and the odd (`.1`) columns of the 32 in `lo` then `hi`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn even_odd() -> (std::arch::x86_64::__m512i, std::arch::x86_64::__m512i) {
    use std::arch::x86_64::_mm512_setr_epi32;
    (
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
    )
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::lanes;

    #[test]
    fn lanes_are_the_range_clamped_to_sixteen() {
        assert_eq!(lanes(0, 16), u16::MAX);
        assert_eq!(lanes(0, 40), u16::MAX);
        assert_eq!(lanes(0, 3), 0b111);
        assert_eq!(lanes(2, 5), 0b11100);
        assert_eq!(lanes(-7, 1), 0b1);
        assert_eq!(lanes(15, 99), 1 << 15);
        assert_eq!(lanes(5, 5), 0);
        assert_eq!(lanes(9, 3), 0);
        assert_eq!(lanes(-20, -4), 0);
        assert_eq!(lanes(16, 32), 0);
    }
}
