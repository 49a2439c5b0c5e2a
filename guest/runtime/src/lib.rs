//! What Rust's std provides a wasm32-wasip2 component, for the `no_std`
//! guests of the `ws-handler` world: an allocator, the canonical ABI's
//! `cabi_realloc`, and a panic that traps.
//!
//! The guests are `no_std` so that the component imports the world's
//! interfaces and nothing else: std on wasm32-wasip2 links wasi-libc's
//! stdio, environment and exit, about twenty WASI imports that a policy never
//! needs. Each import is a function the host resolves on every instantiation
//! (a fresh instance per request) and one more capability the sandbox would
//! have to grant. A panic traps: the host answers 500 and drops the instance;
//! it never reads a panic message, so none is formatted.
//!
//! Only meaningful on wasm32; elsewhere the crate is empty.

#![no_std]
#![cfg(target_arch = "wasm32")]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};

/// wasi-libc's allocator, as std used it: its dlmalloc first fills the
/// free part of the initial memory (after the stack and data), so most
/// requests never grow the memory (each growth is an `mprotect` on the
/// host; the dlmalloc crate grows on the first allocation).
struct LibcMalloc;

/// The alignment std trusts `malloc` with on wasm32 (std's `MIN_ALIGN`).
const MALLOC_ALIGN: usize = 8;

/// std's rule: `malloc` for alignments it surely provides (a block is at
/// least as aligned as its size allows), `aligned_alloc` otherwise.
fn malloc_aligns(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

unsafe extern "C" {
    fn malloc(size: usize) -> *mut u8;
    fn aligned_alloc(align: usize, size: usize) -> *mut u8;
    fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
    fn free(ptr: *mut u8);
}

// SAFETY: libc's functions meet `GlobalAlloc`'s contract for the layouts
// `malloc_aligns` sends them; the others go to `aligned_alloc` (as in std's
// allocator for wasi).
unsafe impl GlobalAlloc for LibcMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a size and an alignment libc accepts; see the impl's note.
        unsafe {
            if malloc_aligns(layout.align(), layout.size()) {
                malloc(layout.size())
            } else {
                aligned_alloc(layout.align(), layout.size())
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: `ptr` came from `alloc` or `realloc` (GlobalAlloc's contract).
        unsafe { free(ptr) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` holds `layout.size()` bytes from this allocator; the
        // new block, when not null, holds `new_size`; they do not overlap.
        unsafe {
            if malloc_aligns(layout.align(), new_size) {
                return realloc(ptr, new_size);
            }
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                free(ptr);
            }
            new
        }
    }
}

#[global_allocator]
static ALLOCATOR: LibcMalloc = LibcMalloc;

// `malloc` and `memcmp` from wasi-libc's static archive (the toolchain's
// self-contained libc.a): only the objects referenced are linked, and
// they import nothing. compiler-builtins leaves `memcmp` to libc here.
#[link(name = "c")]
unsafe extern "C" {}

/// The canonical ABI's allocator export, through which the host hands the
/// guest its arguments and the key set. std defines it on wasm32-wasip2
/// (wit-bindgen leaves it to std there); this is std's definition.
///
/// # Safety
/// Called by the host per the canonical ABI: `old_ptr`/`old_len`/`align`
/// describe an earlier allocation of this function (or `old_len` is 0),
/// and `align` is a power of two.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use core::alloc::Layout;
    let ptr = if old_len == 0 {
        if new_len == 0 {
            return align as *mut u8;
        }
        // SAFETY: non-zero size, and `align` is a power of two (above).
        unsafe { alloc::alloc::alloc(Layout::from_size_align_unchecked(new_len, align)) }
    } else {
        // SAFETY: the block was allocated here with this layout (above).
        unsafe {
            alloc::alloc::realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable();
    }
    ptr
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
