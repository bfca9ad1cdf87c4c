//! The GPU backend: every operation as a launch of a kernel from kernels/*.cu, through a small
//! [`Device`] trait (memory, copies, launches by name). Launch shapes and buffer planning live
//! here once, for every device: the CPU emulator ([`emulator::Emulator`]) and real GPUs.

pub mod cuda;
pub mod emulator;

use super::{Adam, Backend, Conv, ConvInput, Nhwc, RmsProp};
use crate::error::Result;
use crate::model::Activation;

/// An address in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePtr(pub u64);

impl DevicePtr {
    /// The address `floats` float32 values further on.
    pub fn offset(self, floats: usize) -> DevicePtr {
        DevicePtr(self.0 + 4 * floats as u64)
    }
}

/// One kernel argument, as the kernel's parameter list has it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    Ptr(DevicePtr),
    NullPtr,
    I32(i32),
    F32(f32),
}

/// What the GPU backend needs of a device.
pub trait Device {
    fn name(&self) -> String;
    /// `len` zeroed float32 values.
    fn alloc(&mut self, len: usize) -> Result<DevicePtr>;
    fn free(&mut self, ptr: DevicePtr);
    fn upload(&mut self, host: &[f32], device: DevicePtr) -> Result<()>;
    /// An upload that may overlap queued kernels: see [`Backend::upload_async`].
    fn upload_async(&mut self, host: &[f32], device: DevicePtr) -> Result<()>;
    /// See [`Backend::fence`].
    fn fence(&mut self) -> Result<()>;
    /// Waits for every queued operation, then copies out.
    fn download(&mut self, device: DevicePtr, host: &mut [f32]) -> Result<()>;
    /// Runs kernel `kernel` over `grid` blocks of `block` threads.
    fn launch(
        &mut self,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: usize,
        args: &[KernelArg],
    ) -> Result<()>;
    /// Starts timing the operations issued from now on.
    fn timer_start(&mut self) -> Result<()>;
    /// Seconds the device spent on the operations issued since [`timer_start`](Self::timer_start),
    /// once they have finished.
    fn timer_stop(&mut self) -> Result<f64>;
}

/// A buffer of float32 values in device memory.
#[derive(Debug)]
pub struct GpuBuffer {
    ptr: DevicePtr,
    len: usize,
}

impl GpuBuffer {
    fn at(&self, offset: usize) -> KernelArg {
        KernelArg::Ptr(self.ptr.offset(offset))
    }

    fn arg(&self) -> KernelArg {
        self.at(0)
    }
}

const THREADS: u32 = 256;
/// Blocks of the first stage of the loss reduction.
const LOSS_BLOCKS: usize = 64;
/// Output pixels per chunk of a kernel-gradient reduction (at most MAX_CHUNKS chunks).
const CHUNK_PIXELS: usize = 1024;
const MAX_CHUNKS: usize = 128;
/// Shared memory of conv2d_gathered_gemm and conv2d_filter_partials, in bytes.
const GEMM_SHARED: usize = 4 * (128 * 17 + 16 * 64);
const PARTIALS_SHARED: usize = 4 * 2 * 32 * 65;

fn blocks(len: usize) -> [u32; 3] {
    [(len as u32).div_ceil(THREADS).max(1), 1, 1]
}

fn i32_arg(v: usize) -> KernelArg {
    KernelArg::I32(v as i32)
}

fn activation_code(activation: Option<Activation>) -> KernelArg {
    KernelArg::I32(match activation {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Sigmoid) => 2,
    })
}

/// A window gathered from a source tensor for each pixel of an output grid (see conv2d.cu).
struct Gather<'a> {
    src: &'a GpuBuffer,
    src_shape: Nhwc,
    grid: Nhwc,
    window: usize,
    stride: usize,
    origin: i32,
    upsampled: bool,
}

impl Gather<'_> {
    fn args(&self) -> Vec<KernelArg> {
        let (s, g) = (self.src_shape, self.grid);
        vec![
            self.src.arg(),
            i32_arg(g.batch),
            i32_arg(g.height),
            i32_arg(g.width),
            i32_arg(s.height),
            i32_arg(s.width),
            i32_arg(s.channels),
            i32_arg(self.window),
            i32_arg(self.stride),
            KernelArg::I32(self.origin),
            KernelArg::I32(i32::from(self.upsampled)),
        ]
    }

    fn k(&self) -> usize {
        self.window * self.window * self.src_shape.channels
    }
}

/// Kernel-gradient chunks for an output grid of `pixels`: (pixels per chunk, chunks).
fn filter_chunks(pixels: usize) -> (usize, usize) {
    let chunks = pixels.div_ceil(CHUNK_PIXELS).clamp(1, MAX_CHUNKS);
    let per_chunk = pixels.div_ceil(chunks);
    (per_chunk, pixels.div_ceil(per_chunk))
}

/// The backend over a device: buffers are device memory, operations are kernel launches.
pub struct GpuBackend<D: Device> {
    device: D,
    owned: Vec<DevicePtr>,
    /// A transformed kernel for backward-data (flipped, or folded through an upsampling).
    kernel_scratch: Option<GpuBuffer>,
    /// Per-chunk kernel gradients.
    partials: Option<GpuBuffer>,
    /// Per-block loss sums, then the loss.
    loss: Option<GpuBuffer>,
}

impl<D: Device> GpuBackend<D> {
    pub fn new(device: D) -> Self {
        GpuBackend {
            device,
            owned: Vec::new(),
            kernel_scratch: None,
            partials: None,
            loss: None,
        }
    }

    pub fn device(&mut self) -> &mut D {
        &mut self.device
    }

    fn launch(
        &mut self,
        kernel: &str,
        grid: [u32; 3],
        shared_bytes: usize,
        args: &[KernelArg],
    ) -> Result<()> {
        self.device
            .launch(kernel, grid, [THREADS, 1, 1], shared_bytes, args)
    }

    fn scratch(slot: &Option<GpuBuffer>) -> &GpuBuffer {
        slot.as_ref().expect("plan() allocates the scratch buffers")
    }

    /// out[p, n] = activation(bias + window(p) weights) over the gather's grid.
    fn gathered_gemm(
        &mut self,
        gather: &Gather,
        weights: KernelArg,
        n: usize,
        bias: KernelArg,
        activation: Option<Activation>,
        out: &GpuBuffer,
    ) -> Result<()> {
        let mut args = gather.args();
        args.extend([
            weights,
            i32_arg(n),
            bias,
            activation_code(activation),
            out.arg(),
        ]);
        let grid = [
            (gather.grid.pixels() as u32).div_ceil(128),
            (n as u32).div_ceil(64),
            1,
        ];
        self.launch("conv2d_gathered_gemm", grid, GEMM_SHARED, &args)
    }

    fn gather<'a>(conv: &Conv, x: &'a GpuBuffer) -> Gather<'a> {
        Gather {
            src: x,
            src_shape: conv.input,
            grid: conv.output(),
            window: 3,
            stride: 1,
            origin: -1,
            upsampled: conv.read == ConvInput::Upsampled2,
        }
    }
}

impl<D: Device> Drop for GpuBackend<D> {
    fn drop(&mut self) {
        for ptr in self.owned.drain(..) {
            self.device.free(ptr);
        }
    }
}

impl<D: Device> Backend for GpuBackend<D> {
    type Buffer = GpuBuffer;

    fn name(&self) -> String {
        self.device.name()
    }

    fn plan(&mut self, convs: &[Conv]) -> Result<()> {
        let mut kernel = 1;
        let mut partials = 1;
        for conv in convs {
            let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
            kernel = kernel.max(16 * cin * cout);
            let (_, chunks) = filter_chunks(conv.output().pixels());
            partials = partials.max(chunks * (9 * cin + 1) * cout);
        }
        self.kernel_scratch = Some(self.alloc(kernel)?);
        self.partials = Some(self.alloc(partials)?);
        self.loss = Some(self.alloc(LOSS_BLOCKS + 1)?);
        Ok(())
    }

    fn time<T>(&mut self, work: impl FnOnce(&mut Self) -> Result<T>) -> Result<(T, f64)> {
        self.device.timer_start()?;
        let result = work(self)?;
        Ok((result, self.device.timer_stop()?))
    }

    fn alloc(&mut self, len: usize) -> Result<GpuBuffer> {
        let ptr = self.device.alloc(len.max(1))?;
        self.owned.push(ptr);
        Ok(GpuBuffer { ptr, len })
    }

    fn upload(&mut self, host: &[f32], device: &mut GpuBuffer) -> Result<()> {
        self.device.upload(host, device.ptr)
    }

    fn upload_async(&mut self, host: &[f32], device: &mut GpuBuffer) -> Result<()> {
        self.device.upload_async(host, device.ptr)
    }

    fn fence(&mut self) -> Result<()> {
        self.device.fence()
    }

    fn download(&mut self, device: &GpuBuffer, host: &mut [f32]) -> Result<()> {
        self.device.download(device.ptr, host)
    }

    fn conv2d_forward(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        params: &GpuBuffer,
        y: &mut GpuBuffer,
    ) -> Result<()> {
        let slot = &conv.slot;
        let weights = params.at(slot.weight.start);
        let bias = params.at(slot.bias.start);
        let gather = Self::gather(conv, x);
        self.gathered_gemm(
            &gather,
            weights,
            slot.out_channels,
            bias,
            Some(conv.activation),
            y,
        )
    }

    fn activation_backward(
        &mut self,
        activation: Activation,
        len: usize,
        y: &GpuBuffer,
        grad: &mut GpuBuffer,
    ) -> Result<()> {
        let args = [
            activation_code(Some(activation)),
            i32_arg(len),
            y.arg(),
            grad.arg(),
        ];
        self.launch("activation_backward", blocks(len), 0, &args)
    }

    fn conv2d_backward_data(
        &mut self,
        conv: &Conv,
        dz: &GpuBuffer,
        params: &GpuBuffer,
        dx: &mut GpuBuffer,
    ) -> Result<()> {
        let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
        let scratch = Self::scratch(&self.kernel_scratch).arg();
        let kernel = params.at(conv.slot.weight.start);
        let (transform, taps, window, stride) = match conv.read {
            ConvInput::Direct => ("conv2d_flip_kernel", 9, 3, 1),
            ConvInput::Upsampled2 => ("conv2d_fold_upsampled_kernel", 16, 4, 2),
        };
        let args = [kernel, i32_arg(cin), i32_arg(cout), scratch];
        self.launch(transform, blocks(taps * cin * cout), 0, &args)?;
        let gather = Gather {
            src: dz,
            src_shape: conv.output(),
            grid: conv.input,
            window,
            stride,
            origin: -1,
            upsampled: false,
        };
        self.gathered_gemm(&gather, scratch, cin, KernelArg::NullPtr, None, dx)
    }

    fn conv2d_backward_filter(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        dz: &GpuBuffer,
        grads: &mut GpuBuffer,
    ) -> Result<()> {
        let gather = Self::gather(conv, x);
        let (k, n) = (gather.k(), conv.slot.out_channels);
        let (per_chunk, chunks) = filter_chunks(gather.grid.pixels());
        let partials = Self::scratch(&self.partials).arg();
        let mut args = gather.args();
        args.extend([dz.arg(), i32_arg(n), i32_arg(per_chunk), partials]);
        let grid = [
            (k as u32 + 1).div_ceil(64),
            (n as u32).div_ceil(64),
            chunks as u32,
        ];
        self.launch("conv2d_filter_partials", grid, PARTIALS_SHARED, &args)?;
        // Kernel rows then the bias row: exactly the slot's weight and bias ranges.
        let count = (k + 1) * n;
        let args = [
            partials,
            i32_arg(chunks),
            i32_arg(count),
            grads.at(conv.slot.weight.start),
        ];
        self.launch("sum_partials", blocks(count), 0, &args)
    }

    fn maxpool2_forward(&mut self, input: Nhwc, x: &GpuBuffer, y: &mut GpuBuffer) -> Result<()> {
        let mut args = shape_args(input);
        args.extend([x.arg(), y.arg()]);
        self.launch("maxpool2_forward", blocks(input.len() / 4), 0, &args)
    }

    fn maxpool2_backward(
        &mut self,
        input: Nhwc,
        x: &GpuBuffer,
        dy: &GpuBuffer,
        dx: &mut GpuBuffer,
    ) -> Result<()> {
        let mut args = shape_args(input);
        args.extend([x.arg(), dy.arg(), dx.arg()]);
        self.launch("maxpool2_backward", blocks(input.len() / 4), 0, &args)
    }

    fn upsample2_forward(&mut self, input: Nhwc, x: &GpuBuffer, y: &mut GpuBuffer) -> Result<()> {
        let mut args = shape_args(input);
        args.extend([x.arg(), y.arg()]);
        self.launch("upsample2_forward", blocks(4 * input.len()), 0, &args)
    }

    fn upsample2_backward(
        &mut self,
        input: Nhwc,
        dy: &GpuBuffer,
        dx: &mut GpuBuffer,
    ) -> Result<()> {
        let mut args = shape_args(input);
        args.extend([dy.arg(), dx.arg()]);
        self.launch("upsample2_backward", blocks(input.len()), 0, &args)
    }

    fn mse_loss(&mut self, len: usize, prediction: &GpuBuffer, target: &GpuBuffer) -> Result<f64> {
        let loss = Self::scratch(&self.loss);
        let (partials, out) = (loss.arg(), loss.at(LOSS_BLOCKS));
        let args = [i32_arg(len), prediction.arg(), target.arg(), partials];
        let grid = [LOSS_BLOCKS as u32, 1, 1];
        self.launch("mse_partials", grid, 4 * (THREADS as usize / 32), &args)?;
        let args = [i32_arg(LOSS_BLOCKS), i32_arg(len), partials, out];
        self.device
            .launch("mse_finish", [1, 1, 1], [1, 1, 1], 0, &args)?;
        let mut value = [0.0f32];
        let ptr = Self::scratch(&self.loss).ptr.offset(LOSS_BLOCKS);
        self.device.download(ptr, &mut value)?;
        Ok(f64::from(value[0]))
    }

    fn mse_backward(
        &mut self,
        len: usize,
        prediction: &GpuBuffer,
        target: &GpuBuffer,
        grad: &mut GpuBuffer,
    ) -> Result<()> {
        let args = [i32_arg(len), prediction.arg(), target.arg(), grad.arg()];
        self.launch("mse_backward", blocks(len), 0, &args)
    }

    fn rmsprop_update(
        &mut self,
        hyper: RmsProp,
        params: &mut GpuBuffer,
        grads: &GpuBuffer,
        velocity: &mut GpuBuffer,
    ) -> Result<()> {
        let count = params.len;
        let args = [
            i32_arg(count),
            KernelArg::F32(hyper.learning_rate),
            KernelArg::F32(hyper.rho),
            KernelArg::F32(hyper.epsilon),
            params.arg(),
            grads.arg(),
            velocity.arg(),
        ];
        self.launch("rmsprop_update", blocks(count), 0, &args)
    }

    fn adam_update(
        &mut self,
        hyper: Adam,
        t: u64,
        params: &mut GpuBuffer,
        grads: &GpuBuffer,
        momentum: &mut GpuBuffer,
        velocity: &mut GpuBuffer,
    ) -> Result<()> {
        let count = params.len;
        let args = [
            i32_arg(count),
            KernelArg::F32(hyper.step_size(t) as f32),
            KernelArg::F32(hyper.beta_1),
            KernelArg::F32(hyper.beta_2),
            KernelArg::F32(hyper.epsilon),
            params.arg(),
            grads.arg(),
            momentum.arg(),
            velocity.arg(),
        ];
        self.launch("adam_update", blocks(count), 0, &args)
    }
}

fn shape_args(input: Nhwc) -> Vec<KernelArg> {
    vec![
        i32_arg(input.batch),
        i32_arg(input.height),
        i32_arg(input.width),
        i32_arg(input.channels),
    ]
}
