//! Real GPUs through cudarc: the [`Device`] trait over the CUDA driver API, loaded dynamically,
//! so building and running on the CPU needs no CUDA toolkit or driver.
//!
//! Kernels: build.rs embeds PTX for compute_89 (Ada, L40S) and compute_90a (Hopper, H100 and
//! H200, with the warpgroup-MMA kernels, which run on sm_90 only). On a GPU of compute
//! capability 9.0 the compute_90a PTX is loaded, on 8.9 and on newer GPUs the compute_89 one,
//! and the driver compiles it for the exact chip; for anything else, or when the binary was
//! built without NVRTC, the embedded kernel source is compiled at first use by the NVRTC found
//! at run time, for the GPU's own architecture (compute_90a on 9.0).
//!
//! Streams: kernels, plain copies and downloads go to one stream, in order. Asynchronous
//! uploads (the next batch) are copied from pinned host memory on a second stream, so they
//! overlap the kernels: the copy waits for the compute stream's last fence, and the compute
//! stream waits for the copy before anything issued after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr as _,
    LaunchConfig, PinnedHostSlice, PushKernelArg, sys,
};
use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};

use super::{Device, DevicePtr, KernelArg};
use crate::backend::Precision;
use crate::error::{Error, Result};

/// Hopper's arch-specific PTX target, the one whose kernels include the warpgroup-MMA tiles.
const WARPGROUP_MMA_TARGET: &str = "compute_90a";

/// The embedded PTX, per target (empty when built without NVRTC).
pub const EMBEDDED_PTX: [(&str, &str); 2] = [
    (
        "compute_89",
        include_str!(concat!(env!("OUT_DIR"), "/whorl_compute_89.ptx")),
    ),
    (
        WARPGROUP_MMA_TARGET,
        include_str!(concat!(env!("OUT_DIR"), "/whorl_compute_90a.ptx")),
    ),
];
/// Every kernel in one self-contained source, for compiling at run time.
pub const KERNEL_SOURCE: &str = include_str!(concat!(env!("OUT_DIR"), "/whorl_kernels.cu"));

fn cuda_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: "cuda".into(),
        reason: format!("{what}: {error}"),
    }
}

/// One GPU as the driver describes it.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub multiprocessors: i32,
    pub memory_bytes: usize,
    /// Boost clock of the SMs and of the memory, in kHz, and the memory bus width in bits.
    pub clock_khz: i32,
    pub memory_clock_khz: i32,
    pub memory_bus_bits: i32,
}

/// A device's peaks: FLOP/s of the unit the convolutions run on (the CUDA cores in FP32, the
/// tensor cores in TF32 or BF16 where the chip's rate is known) and memory bandwidth in bytes/s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peaks {
    pub flops: f64,
    pub bytes_per_s: f64,
}

/// Dense TF32 tensor-core FLOPs per SM per clock, by compute capability: A100 (8.0) 1,024;
/// A10, L4, L40S (8.6, 8.9) 512; H100, H200 (9.0) 2,048 (the datasheets' dense figures over
/// SMs x boost clock). None for chips not listed.
fn tf32_flops_per_sm_clock(compute_capability: (i32, i32)) -> Option<f64> {
    match compute_capability {
        (8, 0) => Some(1024.0),
        (8, 6) | (8, 9) => Some(512.0),
        (9, 0) => Some(2048.0),
        _ => None,
    }
}

impl GpuInfo {
    /// Peaks from the device's properties: SMs x 128 FP32 lanes (Ampere to Hopper) x 2 FLOPs x
    /// clock, or in TF32 and BF16 SMs x the tensor cores' rate x clock (the FP32 rate where the
    /// chip's tensor rate is not listed); and the memory bus width x 2 (double data rate) x memory
    /// clock. The README lists the published figures beside them. None where the driver
    /// reports no clocks.
    pub fn peaks(&self, precision: Precision) -> Option<Peaks> {
        let per_sm_clock = match precision {
            Precision::Tf32 => tf32_flops_per_sm_clock(self.compute_capability),
            // BF16 runs at twice TF32's rate on the tensor cores of every chip listed there.
            Precision::Bf16 => tf32_flops_per_sm_clock(self.compute_capability).map(|f| 2.0 * f),
            Precision::Fp32 => None,
        };
        let sm_clocks = f64::from(self.multiprocessors) * f64::from(self.clock_khz) * 1e3;
        let flops = sm_clocks * per_sm_clock.unwrap_or(128.0 * 2.0);
        let bytes_per_s =
            f64::from(self.memory_bus_bits) / 8.0 * 2.0 * f64::from(self.memory_clock_khz) * 1e3;
        (flops > 0.0 && bytes_per_s > 0.0).then_some(Peaks { flops, bytes_per_s })
    }
}

/// The CUDA driver's version (e.g. 13000) and every GPU, or why there are none. Never panics:
/// a machine without libcuda is an error saying so.
pub fn probe() -> Result<(i32, Vec<GpuInfo>)> {
    // SAFETY: only probes whether the library can be loaded.
    if !unsafe { sys::is_culib_present() } {
        return Err(cuda_error(
            "no CUDA driver",
            "libcuda was not found (is an NVIDIA driver installed?)",
        ));
    }
    cudarc::driver::result::init().map_err(|e| cuda_error("cuInit", e))?;
    let mut version = 0;
    // SAFETY: cuInit succeeded; the driver writes one int.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| cuda_error("cuDriverGetVersion", e))?;
    let count = CudaContext::device_count().map_err(|e| cuda_error("device count", e))?;
    let gpus = (0..count as usize)
        .map(|ordinal| {
            let ctx = CudaContext::new(ordinal).map_err(|e| cuda_error("context", e))?;
            use sys::CUdevice_attribute as A;
            let attribute = |a| ctx.attribute(a).map_err(|e| cuda_error("attribute", e));
            // Clocks and bus width only feed the benchmark's share of peak: 0 (no peak) where
            // a driver no longer reports them.
            let optional = |a| ctx.attribute(a).unwrap_or(0);
            Ok(GpuInfo {
                ordinal,
                name: ctx.name().map_err(|e| cuda_error("name", e))?,
                compute_capability: ctx
                    .compute_capability()
                    .map_err(|e| cuda_error("compute capability", e))?,
                multiprocessors: attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
                memory_bytes: ctx.total_mem().map_err(|e| cuda_error("memory", e))?,
                clock_khz: optional(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
                memory_clock_khz: optional(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE),
                memory_bus_bits: optional(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((version, gpus))
}

/// The version of the NVRTC that can be loaded now, if any.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    // SAFETY: probes the library, then asks it for two ints.
    unsafe {
        if !cudarc::nvrtc::sys::is_culib_present() {
            return None;
        }
        let (mut major, mut minor) = (0, 0);
        cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor);
        Some((major, minor))
    }
}

/// The PTX target of a GPU of compute capability (major, minor): Hopper's arch-specific
/// compute_90a on 9.0 (its wgmma runs there only), else compute_MAJORMINOR.
fn ptx_target((major, minor): (i32, i32)) -> String {
    match (major, minor) {
        (9, 0) => WARPGROUP_MMA_TARGET.into(),
        _ => format!("compute_{major}{minor}"),
    }
}

/// The PTX for a GPU of compute capability (major, minor), where it came from, and whether it
/// holds the warpgroup-MMA kernels (its target is compute_90a).
fn ptx_for((major, minor): (i32, i32)) -> Result<(String, String, bool)> {
    let capability = major * 10 + minor;
    let embedded = match capability {
        90 => Some(EMBEDDED_PTX[1]),
        89.. => Some(EMBEDDED_PTX[0]),
        _ => None,
    };
    if let Some((target, ptx)) = embedded.filter(|(_, ptx)| !ptx.is_empty()) {
        return Ok((
            ptx.to_string(),
            format!("embedded PTX for {target}"),
            target == WARPGROUP_MMA_TARGET,
        ));
    }
    let version = nvrtc_version().ok_or_else(|| {
        cuda_error(
            "kernels",
            format!(
                "this binary has no PTX for compute capability {major}.{minor} and no NVRTC \
                 (libnvrtc) was found to compile them"
            ),
        )
    })?;
    let arch = ptx_target((major, minor));
    let options = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some("whorl_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(KERNEL_SOURCE, options)
        .map_err(|e| cuda_error("NVRTC compiling the kernels", format!("{e:?}")))?;
    Ok((
        ptx.to_src(),
        format!(
            "compiled at first use for {arch} by NVRTC {}.{}",
            version.0, version.1
        ),
        arch == WARPGROUP_MMA_TARGET,
    ))
}

/// Pinned host memory that asynchronous uploads copy from, and the event its last copy recorded.
struct Staging {
    pinned: PinnedHostSlice<f32>,
    copied: CudaEvent,
}

/// Dynamic shared memory a kernel may use without opting in (CUDA's limit since Volta).
const DEFAULT_SHARED_BYTES: usize = 48 * 1024;

/// A GPU: a context, its streams, the kernels' module, and every live allocation.
pub struct CudaDevice {
    info: GpuInfo,
    kernels_from: String,
    /// Whether the loaded kernels were compiled for compute_90a (the warpgroup-MMA ones run).
    warpgroup_mma: bool,
    /// Kernels, plain copies and downloads, in order.
    stream: Arc<CudaStream>,
    /// Asynchronous uploads.
    copy_stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    /// Loaded kernels, with the dynamic shared memory each may use (opted into above 48 KiB).
    functions: HashMap<String, (CudaFunction, usize)>,
    /// Allocations by device address, kept alive here.
    buffers: BTreeMap<u64, CudaSlice<f32>>,
    /// Two staging buffers that asynchronous uploads alternate between, so the host fills one
    /// while the other may still be copying.
    staging: [Option<Staging>; 2],
    next_staging: usize,
    /// Recorded on `stream` by fence(); asynchronous uploads wait for it.
    fence: CudaEvent,
    /// The start events of the running timers, the newest last, recorded on `stream`.
    timers: Vec<CudaEvent>,
}

impl CudaDevice {
    /// Opens GPU `ordinal` and loads the kernels; a clear error without a driver or GPU.
    pub fn new(ordinal: usize) -> Result<Self> {
        let (_, gpus) = probe()?;
        let info = gpus.get(ordinal).cloned().ok_or_else(|| {
            cuda_error(
                "no such GPU",
                format!("cuda:{ordinal} asked for, {} GPUs found", gpus.len()),
            )
        })?;
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_error("context", e))?;
        // SAFETY: this device orders its two streams itself, with the events below.
        unsafe { ctx.disable_event_tracking() };
        let new_stream = || {
            ctx.new_stream()
                .map_err(|e| cuda_error("creating a stream", e))
        };
        let (stream, copy_stream) = (new_stream()?, new_stream()?);
        let new_event = |flags| {
            ctx.new_event(flags)
                .map_err(|e| cuda_error("creating an event", e))
        };
        let fence = new_event(None)?;
        let (ptx, kernels_from, warpgroup_mma) = ptx_for(info.compute_capability)?;
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| {
            cuda_error(
                "loading the kernels (is the driver older than the NVRTC that compiled them?)",
                e,
            )
        })?;
        Ok(CudaDevice {
            info,
            kernels_from,
            warpgroup_mma,
            stream,
            copy_stream,
            module,
            functions: HashMap::new(),
            buffers: BTreeMap::new(),
            staging: [None, None],
            next_staging: 0,
            fence,
            timers: Vec::new(),
        })
    }

    /// A new event that records time.
    fn timing_event(&self) -> Result<CudaEvent> {
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        self.stream
            .context()
            .new_event(timing)
            .map_err(|e| cuda_error("creating an event", e))
    }

    /// Waits for everything issued to the compute stream.
    fn synchronize(&mut self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| cuda_error("synchronize", e))
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// How the kernels were obtained (embedded PTX for which target, or compiled at run time).
    pub fn kernels_from(&self) -> &str {
        &self.kernels_from
    }

    /// The allocation holding `len` values from `ptr`, and the offset of `ptr` in it.
    fn region(&mut self, ptr: DevicePtr, len: usize) -> Result<(&mut CudaSlice<f32>, usize)> {
        let (&start, slice) = self
            .buffers
            .range_mut(..=ptr.0)
            .next_back()
            .ok_or_else(|| cuda_error("copy", format!("{:#x} is not device memory", ptr.0)))?;
        let offset = ((ptr.0 - start) / 4) as usize;
        if offset + len > slice.len() {
            return Err(cuda_error(
                "copy",
                format!("{len} values at {:#x} overrun their buffer", ptr.0),
            ));
        }
        Ok((slice, offset))
    }
}

impl Drop for CudaDevice {
    /// The staging buffers are freed after this: no copy may still read them.
    fn drop(&mut self) {
        // An error here has nowhere to go; the context reports it on its next call, if any.
        let _ = self.copy_stream.synchronize();
    }
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        let (major, minor) = self.info.compute_capability;
        format!(
            "cuda:{} ({}, sm_{major}{minor})",
            self.info.ordinal, self.info.name
        )
    }

    fn alloc(&mut self, len: usize) -> Result<DevicePtr> {
        let slice = self
            .stream
            .alloc_zeros::<f32>(len)
            .map_err(|e| cuda_error("allocating device memory", e))?;
        let address = {
            let (address, _sync) = slice.device_ptr(&self.stream);
            address
        };
        self.buffers.insert(address, slice);
        // Allocations are made while planning, never inside a step: waiting here makes the
        // memory ready for the copy stream too.
        self.synchronize()?;
        Ok(DevicePtr(address))
    }

    fn free(&mut self, ptr: DevicePtr) {
        self.buffers.remove(&ptr.0);
    }

    fn upload(&mut self, host: &[f32], device: DevicePtr) -> Result<()> {
        let stream = Arc::clone(&self.stream);
        let (slice, offset) = self.region(device, host.len())?;
        let mut view = slice.slice_mut(offset..offset + host.len());
        stream
            .memcpy_htod(host, &mut view)
            .map_err(|e| cuda_error("copy to the GPU", e))
    }

    fn upload_async(&mut self, host: &[f32], device: DevicePtr) -> Result<()> {
        self.region(device, host.len())?;
        let index = self.next_staging;
        self.next_staging = 1 - index;
        let ctx = Arc::clone(self.stream.context());
        let slot = &mut self.staging[index];
        if slot.as_ref().is_none_or(|s| s.pinned.len() < host.len()) {
            // SAFETY: the memory is written below before any copy reads it.
            let pinned = unsafe { ctx.alloc_pinned::<f32>(host.len()) }
                .map_err(|e| cuda_error("allocating pinned host memory", e))?;
            let copied = ctx
                .new_event(None)
                .map_err(|e| cuda_error("creating an event", e))?;
            *slot = Some(Staging { pinned, copied });
        }
        let Staging { pinned, copied } = slot.as_mut().expect("allocated above");
        // The host may refill this buffer once its previous copy is done.
        copied
            .synchronize()
            .map_err(|e| cuda_error("waiting for an upload", e))?;
        let pinned = &mut pinned
            .as_mut_slice()
            .map_err(|e| cuda_error("pinned host memory", e))?[..host.len()];
        pinned.copy_from_slice(host);
        let copy = || -> std::result::Result<(), cudarc::driver::DriverError> {
            self.copy_stream.wait(&self.fence)?;
            // SAFETY: `device` holds host.len() values of a live allocation (checked above),
            // and `pinned` is neither freed nor written before `copied` completes.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(
                    device.0,
                    pinned,
                    self.copy_stream.cu_stream(),
                )
            }?;
            copied.record(&self.copy_stream)?;
            self.stream.wait(copied)
        };
        copy().map_err(|e| cuda_error("asynchronous copy to the GPU", e))
    }

    fn fence(&mut self) -> Result<()> {
        self.fence
            .record(&self.stream)
            .map_err(|e| cuda_error("recording a fence", e))
    }

    fn download(&mut self, device: DevicePtr, host: &mut [f32]) -> Result<()> {
        let stream = Arc::clone(&self.stream);
        let (slice, offset) = self.region(device, host.len())?;
        let view = slice.slice(offset..offset + host.len());
        stream
            .memcpy_dtoh(&view, host)
            .map_err(|e| cuda_error("copy from the GPU", e))?;
        self.synchronize()
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
            return Err(cuda_error("launch", reason));
        }
        if !self.functions.contains_key(kernel) {
            let function = self
                .module
                .load_function(kernel)
                .map_err(|e| cuda_error(&format!("kernel {kernel}"), e))?;
            self.functions
                .insert(kernel.to_string(), (function, DEFAULT_SHARED_BYTES));
        }
        let (function, shared_limit) = self
            .functions
            .get_mut(kernel)
            .expect("the kernel was loaded above");
        if shared_bytes > *shared_limit {
            function
                .set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared_bytes as i32,
                )
                .map_err(|e| {
                    cuda_error(
                        &format!("{kernel}: {shared_bytes} bytes of shared memory"),
                        e,
                    )
                })?;
            *shared_limit = shared_bytes;
        }
        let function = &*function;
        // Every argument as its own value, alive until the launch is queued.
        let pointers: Vec<u64> = args
            .iter()
            .map(|a| match a {
                KernelArg::Ptr(p) => p.0,
                _ => 0,
            })
            .collect();
        let mut builder = self.stream.launch_builder(function);
        for (arg, pointer) in args.iter().zip(&pointers) {
            match arg {
                KernelArg::Ptr(_) => builder.arg(pointer),
                KernelArg::I32(v) => builder.arg(v),
                KernelArg::F32(v) => builder.arg(v),
            };
        }
        let config = LaunchConfig {
            grid_dim: (grid[0], grid[1], grid[2]),
            block_dim: (block[0], block[1], block[2]),
            shared_mem_bytes: shared_bytes as u32,
        };
        // SAFETY: the arguments match the kernel's parameter list (GpuBackend launches through
        // the typed functions generated from the signatures in kernels/*.cu) and every pointer
        // is a live allocation of this device.
        unsafe { builder.launch(config) }
            .map_err(|e| cuda_error(&format!("launching {kernel}"), e))?;
        if cfg!(debug_assertions) {
            self.synchronize()
                .map_err(|e| cuda_error(&format!("after {kernel}"), e))?;
        }
        Ok(())
    }

    fn timer_start(&mut self) -> Result<()> {
        let start = self.timing_event()?;
        start
            .record(&self.stream)
            .map_err(|e| cuda_error("recording a timing event", e))?;
        self.timers.push(start);
        Ok(())
    }

    fn timer_stop(&mut self) -> Result<f64> {
        let start = self
            .timers
            .pop()
            .ok_or_else(|| cuda_error("timing with events", "timer_stop without timer_start"))?;
        let end = self.timing_event()?;
        let elapsed = end
            .record(&self.stream)
            .and_then(|()| start.elapsed_ms(&end))
            .map_err(|e| cuda_error("timing with events", e))?;
        Ok(f64::from(elapsed) / 1e3)
    }

    fn times_gpu_kernels(&self) -> bool {
        true
    }

    fn runs_warpgroup_mma(&self) -> bool {
        self.warpgroup_mma
    }
}
