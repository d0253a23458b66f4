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

/// [`prefetch_lines`] for memory about to be written that another core read last (an
/// observation the reader handed back, which the worker fills again): the lines are asked for
/// with the intent to write (PREFETCHW), so that they come without the other core's copy and
/// the stores that follow do not wait for it to be invalidated. A plain prefetch brought the
/// lines shared, and the stores still waited. Where the CPU lacks PREFETCHW, a plain prefetch.
#[inline(always)]
pub(crate) fn prefetch_lines_for_write<T: ?Sized>(p: &T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if !has_prefetchw() {
            return prefetch_lines(p, lines);
        }
        let at = std::ptr::from_ref(p).cast::<u8>();
        for i in 0..lines {
            // SAFETY: PREFETCHW is a hint as PREFETCHT0 is (it neither reads nor writes memory
            // as the program sees it, cannot fault, and leaves the flags and the stack alone);
            // the CPU has it (`has_prefetchw`).
            unsafe {
                std::arch::asm!(
                    "prefetchw [{0}]",
                    // An address, not a pointer handed over: nothing behind it is accessed
                    // as the program sees it (`nomem`), so the compiler need not write out
                    // pending stores first.
                    in(reg) at.wrapping_add(64 * i) as usize,
                    options(nomem, nostack, preserves_flags)
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, lines);
}

/// Whether the CPU says it has PREFETCHW (CPUID 8000_0001h, ECX bit 8: Intel since Broadwell,
/// AMD's recent cores; an older AMD core with the instruction but not the bit gets plain
/// prefetches), asked once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not asked yet, 1: no, 2: yes.
    static HAS: AtomicU8 = AtomicU8::new(0);
    match HAS.load(Ordering::Relaxed) {
        0 => {
            use core::arch::x86_64::__cpuid;
            let has =
                __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0;
            HAS.store(1 + u8::from(has), Ordering::Relaxed);
            has
        }
        known => known == 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU's own account of PREFETCHW, on Linux: the kernel shows the `3dnowprefetch` flag
    /// of /proc/cpuinfo for the CPUID bit (and for older AMD cores without it, which have the
    /// instruction), so a CPU found to have it has the flag.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn prefetchw_is_found_only_where_the_kernel_finds_it() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
        let flags = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .expect("a flags line");
        let kernel = flags.split_whitespace().any(|f| f == "3dnowprefetch");
        let found = has_prefetchw();
        assert!(
            !found || kernel,
            "PREFETCHW found, the kernel's flag absent"
        );
        // Asked once, the same after.
        assert_eq!(has_prefetchw(), found);
    }

    /// A hint past the end of what it points into does not trap (what the prefetches must not
    /// do; that they read or write nothing the program sees cannot be observed from here).
    #[test]
    fn prefetching_past_the_end_does_not_trap() {
        let data: Vec<u64> = (0..64).collect();
        // Ten lines from the last element: past the end of the vector, only hints.
        prefetch_lines(&data[63], 10);
        prefetch_lines_for_write(&data[63], 10);
        prefetch_lines_for_write(data.as_slice(), 8);
        assert!(data.iter().copied().eq(0..64));
    }
}
