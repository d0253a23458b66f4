//! Asking the CPU for memory ahead of its use: where a thread's next step is a load that misses
//! (the next record of the capture, the next observation another core wrote), a hint issued a
//! step earlier lets the load overlap the work in between.

/// Asks for the `lines` cache lines from `p` on. A hint: nothing is read, an address that is not
/// mapped is ignored, and on other architectures it does nothing.
#[inline(always)]
pub(crate) fn prefetch_lines<T: ?Sized>(p: &T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let at = std::ptr::from_ref(p).cast::<i8>();
        for i in 0..lines {
            // SAFETY: a prefetch neither reads nor writes memory and cannot fault (an address
            // past `p`, even unmapped, is only a hint); SSE, its target feature, is part of
            // every x86-64 CPU; `wrapping_add` makes no claim about the address.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    at.wrapping_add(64 * i),
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, lines);
}
