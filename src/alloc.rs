//! The global allocator: mimalloc, asked for plain blocks whenever a plain block is aligned
//! enough.
//!
//! The `mimalloc` crate sends every request to `mi_malloc_aligned`. mimalloc 3 takes its fast
//! path there only while the size's page has a free block at hand; otherwise, for a size whose
//! block is not a power of two (a 200-byte vector), it over-allocates from the next size class,
//! and the next request of that size misses again: on steady-site most of detection's
//! allocations went that way (mimalloc_rust pull request 170, reussir pull request 339 found
//! the same). Here a request whose alignment is at most mimalloc's guaranteed one
//! (`MI_MAX_ALIGN_SIZE`, 16) and at most its size takes plain `mi_malloc`, as mimalloc's author
//! advised for Rust (mimalloc issue 314): mimalloc's size classes are multiples of 8, of 16
//! above 16 bytes, and a page's first block is 16-aligned, so such a block is aligned as asked.
//! Anything else keeps the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc's `MI_MAX_ALIGN_SIZE` on the platforms we build for.
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (`#[global_allocator]` in main.rs).
pub struct MiMalloc;

/// Whether a plain block of `size` bytes is aligned to `align`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every pointer handed out comes from mimalloc with at least the layout's size and
// alignment (plain blocks only where `plain` holds, above), and every pointer taken back was
// handed out by this allocator, which mimalloc's free and realloc accept whatever call made it.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls take any size and a power-of-two alignment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from mimalloc (the caller's contract: allocated by this allocator).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc; the new block must be aligned for the new size, so
        // the test is on `new_size` (a plain block of a smaller size may be less aligned).
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size from 1 to 2 KiB and a few larger, every alignment from 1 to 4 KiB: blocks
    /// aligned as asked, writable over their whole size, zeroed when asked, and kept by
    /// realloc (growing and shrinking) with their contents. Many blocks of each size are held
    /// at once, so that pages fill and new ones are taken (the case the aligned path handled
    /// badly).
    #[test]
    fn blocks_are_aligned_and_usable_whatever_the_path() {
        let a = MiMalloc;
        let sizes = (1..=2048).chain([3000, 4096, 5000, 65536, 1 << 20]);
        for size in sizes {
            for shift in 0..=12 {
                let align = 1usize << shift;
                let layout = Layout::from_size_align(size, align).expect("layout");
                let mut held = Vec::new();
                for i in 0..if size <= 256 { 40 } else { 3 } {
                    // SAFETY: a non-zero size; each block is checked, used within its size and
                    // freed with its layout below.
                    unsafe {
                        let zeroed = i % 2 == 1;
                        let p = if zeroed {
                            a.alloc_zeroed(layout)
                        } else {
                            a.alloc(layout)
                        };
                        assert!(!p.is_null(), "size {size} align {align}");
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        if zeroed {
                            assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                        }
                        std::ptr::write_bytes(p, 0xa5, size);
                        held.push(p);
                    }
                }
                for p in held {
                    // SAFETY: `p` was allocated above with `layout`, and is grown then shrunk
                    // with the alignment it was made with.
                    unsafe {
                        let grown = a.realloc(p, layout, size * 2 + 8);
                        assert!(!grown.is_null());
                        assert_eq!(grown as usize % align, 0, "grown {size} align {align}");
                        assert!(std::slice::from_raw_parts(grown, size)
                            .iter()
                            .all(|&b| b == 0xa5));
                        let grown_layout =
                            Layout::from_size_align(size * 2 + 8, align).expect("layout");
                        let shrunk = a.realloc(grown, grown_layout, size.div_ceil(2));
                        assert!(!shrunk.is_null());
                        assert_eq!(shrunk as usize % align, 0, "shrunk {size} align {align}");
                        assert!(std::slice::from_raw_parts(shrunk, size.div_ceil(2))
                            .iter()
                            .all(|&b| b == 0xa5));
                        a.dealloc(
                            shrunk,
                            Layout::from_size_align(size.div_ceil(2), align).expect("layout"),
                        );
                    }
                }
            }
        }
    }
}
