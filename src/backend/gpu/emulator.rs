//! The CUDA-on-CPU emulator as a [`Device`]: the very same kernels/*.cu, compiled by g++
//! against kernels/emu/cuda_emu.h (build.rs), run with one fiber per CUDA thread.
//!
//! Device memory is host memory with guard zones before and after every allocation, filled
//! with a canary pattern and checked after every launch, so a kernel writing out of bounds is
//! an error naming the kernel and the buffer.
//!
//! Kernels run when they are launched, so an asynchronous upload is a plain copy here; what
//! the emulator checks is its contract: an asynchronous upload into a buffer that a kernel
//! launched since the last fence was given is an error, since on a GPU the copy could land
//! before that kernel runs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::time::Instant;

use super::{Device, DevicePtr, KernelArg};
use crate::error::{Error, Result};

unsafe extern "C" {
    fn whorl_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: usize,
        args: *mut *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn whorl_emu_kernel_count() -> c_int;
    fn whorl_emu_kernel_name(index: c_int) -> *const c_char;
}

/// Floats of guard zone on each side of an allocation.
const GUARD: usize = 64;
/// A NaN with a recognisable payload: reading it poisons results, overwriting it is reported.
const CANARY: u32 = 0x7fc0_dead;

struct Allocation {
    id: usize,
    /// GUARD canaries, `len` values, GUARD canaries.
    memory: Box<[f32]>,
    len: usize,
}

impl Allocation {
    fn data_ptr(&self) -> u64 {
        self.memory[GUARD..].as_ptr() as u64
    }

    fn guards_intact(&self) -> bool {
        let (head, rest) = self.memory.split_at(GUARD);
        let tail = &rest[self.len..];
        head.iter().chain(tail).all(|v| v.to_bits() == CANARY)
    }
}

/// The emulated GPU.
#[derive(Default)]
pub struct Emulator {
    /// Live allocations by the address of their first value.
    allocations: BTreeMap<u64, Allocation>,
    next_id: usize,
    /// Ids of the allocations given to kernels launched since the last fence.
    used_since_fence: BTreeSet<usize>,
    /// Running timers, the newest last.
    timers: Vec<Instant>,
    /// Launches so far, by kernel.
    launches: BTreeMap<String, usize>,
}

impl Emulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times `kernel` has been launched.
    pub fn launches(&self, kernel: &str) -> usize {
        self.launches.get(kernel).copied().unwrap_or(0)
    }

    /// Every kernel the emulator can run.
    pub fn kernels() -> Vec<String> {
        // SAFETY: the generated table holds `count` entries of static C strings.
        unsafe {
            (0..whorl_emu_kernel_count())
                .map(|i| {
                    CStr::from_ptr(whorl_emu_kernel_name(i))
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        }
    }

    fn error(&self, reason: String) -> Error {
        Error::Backend {
            backend: self.name(),
            reason,
        }
    }

    /// The allocation that `ptr` points into.
    fn allocation_at(&self, ptr: DevicePtr) -> Option<&Allocation> {
        self.allocations
            .range(..=ptr.0)
            .next_back()
            .filter(|(start, allocation)| ptr.0 < *start + 4 * allocation.len as u64)
            .map(|(_, allocation)| allocation)
    }

    /// The allocation holding `len` values from `ptr`.
    fn region(&mut self, ptr: DevicePtr, len: usize) -> Result<&mut [f32]> {
        let found = self.allocations.range_mut(..=ptr.0).next_back();
        match found {
            Some((&start, allocation))
                if ptr.0 + 4 * len as u64 <= start + 4 * allocation.len as u64 =>
            {
                let offset = ((ptr.0 - start) / 4) as usize;
                Ok(&mut allocation.memory[GUARD + offset..GUARD + offset + len])
            }
            _ => Err(Error::Backend {
                backend: "emulator".into(),
                reason: format!("{len} values at {:#x} are not inside one allocation", ptr.0),
            }),
        }
    }
}

impl Device for Emulator {
    fn name(&self) -> String {
        "cuda-emulator (CUDA kernels run on the CPU)".into()
    }

    fn alloc(&mut self, len: usize) -> Result<DevicePtr> {
        let mut memory = vec![f32::from_bits(CANARY); len + 2 * GUARD].into_boxed_slice();
        memory[GUARD..GUARD + len].fill(0.0);
        let allocation = Allocation {
            id: self.next_id,
            memory,
            len,
        };
        self.next_id += 1;
        let ptr = allocation.data_ptr();
        self.allocations.insert(ptr, allocation);
        Ok(DevicePtr(ptr))
    }

    fn free(&mut self, ptr: DevicePtr) {
        self.allocations.remove(&ptr.0);
    }

    fn upload(&mut self, host: &[f32], device: DevicePtr) -> Result<()> {
        self.region(device, host.len())?.copy_from_slice(host);
        Ok(())
    }

    fn upload_async(&mut self, host: &[f32], device: DevicePtr) -> Result<()> {
        let in_use = self
            .allocation_at(device)
            .map(|a| a.id)
            .filter(|id| self.used_since_fence.contains(id));
        if let Some(id) = in_use {
            return Err(self.error(format!(
                "asynchronous upload into buffer #{id}, which a kernel launched since the last \
                 fence uses: on a GPU the copy could land before that kernel runs"
            )));
        }
        self.upload(host, device)
    }

    fn fence(&mut self) -> Result<()> {
        self.used_since_fence.clear();
        Ok(())
    }

    fn download(&mut self, device: DevicePtr, host: &mut [f32]) -> Result<()> {
        host.copy_from_slice(self.region(device, host.len())?);
        Ok(())
    }

    fn launch(
        &mut self,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: usize,
        args: &[KernelArg],
    ) -> Result<()> {
        if let Some(reason) = super::kernels::arity_mismatch(kernel, args.len()) {
            return Err(self.error(reason));
        }
        // Each argument in its own 8-byte slot; the kernel reads the slot as its parameter type.
        let mut slots: Vec<u64> = args
            .iter()
            .map(|arg| match *arg {
                KernelArg::Ptr(p) => p.0,
                KernelArg::I32(v) => u64::from(v as u32),
                KernelArg::F32(v) => u64::from(v.to_bits()),
            })
            .collect();
        let mut pointers: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        for arg in args {
            if let KernelArg::Ptr(ptr) = *arg
                && let Some(id) = self.allocation_at(ptr).map(|a| a.id)
            {
                self.used_since_fence.insert(id);
            }
        }
        *self.launches.entry(kernel.to_string()).or_default() += 1;
        let name = CString::new(kernel).expect("kernel names have no NUL");
        let mut message = vec![0 as c_char; 1024];
        // SAFETY: every pointer argument addresses a live allocation (the backend passes only
        // its own buffers), `pointers` has one slot per kernel parameter (checked above against
        // the signature), and `message` is a writable buffer of the length given.
        let status = unsafe {
            whorl_emu_launch(
                name.as_ptr(),
                grid.as_ptr(),
                block.as_ptr(),
                shared_bytes,
                pointers.as_mut_ptr(),
                message.as_mut_ptr(),
                message.len(),
            )
        };
        if status != 0 {
            // SAFETY: the runtime wrote a NUL-terminated message into the buffer.
            let text = unsafe { CStr::from_ptr(message.as_ptr()) };
            return Err(self.error(text.to_string_lossy().into_owned()));
        }
        if let Some(broken) = self.allocations.values().find(|a| !a.guards_intact()) {
            return Err(self.error(format!(
                "{kernel}: out-of-bounds write: the guard zone of buffer #{} ({} values) was overwritten",
                broken.id, broken.len
            )));
        }
        Ok(())
    }

    fn timer_start(&mut self) -> Result<()> {
        self.timers.push(Instant::now());
        Ok(())
    }

    fn timer_stop(&mut self) -> Result<f64> {
        let start = self
            .timers
            .pop()
            .ok_or_else(|| self.error("timer_stop without timer_start".into()))?;
        Ok(start.elapsed().as_secs_f64())
    }

    fn times_gpu_kernels(&self) -> bool {
        false
    }

    /// The emulator runs the warpgroup MMA wrappers as C++ (kernels/emu/).
    fn runs_warpgroup_mma(&self) -> bool {
        true
    }
}
