//! Optional C libraries loaded at run time with `dlopen` (libjpeg-turbo, libavif): sis builds
//! and runs without them, and uses them when the machine has them. A library is never closed,
//! so the function pointers taken from it stay valid for the life of the process.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_void};

/// An opened library.
pub(crate) struct Library(*mut c_void);

impl Library {
    /// Opens `soname`, unless the environment variable `switch` is `off`, `0` or `false`;
    /// `None` when switched off or not installed.
    pub(crate) fn open(soname: &CStr, switch: &str) -> Option<Self> {
        if std::env::var(switch).is_ok_and(|v| matches!(v.as_str(), "off" | "0" | "false")) {
            return None;
        }
        // SAFETY: dlopen with a NUL-terminated name; the handle is never closed.
        let handle = unsafe { libc::dlopen(soname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        (!handle.is_null()).then_some(Self(handle))
    }

    /// The address of the symbol `name`, or `None` when the library lacks it.
    pub(crate) fn symbol(&self, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: dlsym on a handle that is never closed, with a NUL-terminated name.
        let p = unsafe { libc::dlsym(self.0, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    }
}
