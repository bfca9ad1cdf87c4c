//! The GPU backend: every operation as a launch of a kernel from kernels/*.cu, through a small
//! [`Device`] trait (memory, copies, launches by name). Launch shapes and buffer planning live
//! here once, for every device: the CPU emulator ([`emulator::Emulator`]) and real GPUs. The
//! kernel gradients' partial sums are in `kernel_gradient`, the FP32 passes by Winograd's
//! F(2x2, 3x3) in `winograd`, the choice of GEMM tiles in [`gemm_tiles`].

pub mod cuda;
pub mod emulator;
pub mod gemm_tiles;
mod kernel_gradient;
pub mod kernels;
mod winograd;

use super::{Adam, Backend, Conv, ConvAlgorithm, ConvInput, Nhwc, Precision, RmsProp};
use crate::error::{Error, Result};
use crate::model::Activation;
use gemm_tiles::{
    FilterShape, FilterTile, GemmShape, GemmTile, Shape, Tile, TileChoices, TilePolicy,
};
use kernel_gradient::FilterPass;
use winograd::{winograd_filter_partials_len, winograd_transform_len};

/// An address in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePtr(pub u64);

impl DevicePtr {
    /// The null pointer, for a kernel's optional input.
    pub const NULL: DevicePtr = DevicePtr(0);

    /// The address `floats` float32 values further on.
    pub fn offset(self, floats: usize) -> DevicePtr {
        DevicePtr(self.0 + 4 * floats as u64)
    }
}

/// One kernel argument, as the kernel's parameter list has it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    Ptr(DevicePtr),
    I32(i32),
    F32(f32),
}

/// A launch's shape: blocks, threads per block and dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: usize,
}

impl Launch {
    /// `grid` blocks of [`kernels::WHORL_THREADS`] threads with `shared_floats` floats of
    /// dynamic shared memory each.
    pub fn blocks(grid: [u32; 3], shared_floats: usize) -> Launch {
        Launch {
            grid,
            block: [kernels::WHORL_THREADS as u32, 1, 1],
            shared_bytes: 4 * shared_floats,
        }
    }

    /// One thread per element of `len`.
    pub fn per_element(len: usize) -> Launch {
        let threads = kernels::WHORL_THREADS as u32;
        Launch::blocks([(len as u32).div_ceil(threads).max(1), 1, 1], 0)
    }

    /// A single thread.
    pub fn single_thread() -> Launch {
        Launch {
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared_bytes: 0,
        }
    }
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
    /// Starts timing the operations issued from now on. Timers nest: each
    /// [`timer_stop`](Self::timer_stop) ends the newest running one.
    fn timer_start(&mut self) -> Result<()>;
    /// Seconds the device spent on the operations issued since the newest running
    /// [`timer_start`](Self::timer_start), once they have finished.
    fn timer_stop(&mut self) -> Result<f64>;
    /// Whether its timers measure a GPU's kernels, so that timing alternatives is worth it.
    fn times_gpu_kernels(&self) -> bool;
    /// Whether it runs the kernels of Hopper's warpgroup MMA (wgmma, compiled for compute_90a
    /// only), so that the warpgroup tiles are among the candidates.
    fn runs_warpgroup_mma(&self) -> bool;
}

/// A buffer of float32 values in device memory.
#[derive(Debug)]
pub struct GpuBuffer {
    ptr: DevicePtr,
    len: usize,
}

impl GpuBuffer {
    fn at(&self, offset: usize) -> DevicePtr {
        self.ptr.offset(offset)
    }
}

/// Blocks of the first stage of the loss reduction.
const LOSS_BLOCKS: usize = 64;
/// Output pixels per chunk of a kernel-gradient reduction (at most MAX_CHUNKS chunks); the
/// one-channel kernel's chunks are blocks of a memory-bound pass, so it takes more of them.
const CHUNK_PIXELS: usize = 1024;
const MAX_CHUNKS: usize = 128;
const ONE_CHANNEL_CHUNK_PIXELS: usize = 2048;
const ONE_CHANNEL_MAX_CHUNKS: usize = 1024;

/// A size or index as the kernels' `int` parameters take it.
fn int(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Backend {
        backend: "gpu".into(),
        reason: format!(
            "{v} elements exceed the kernels' 32-bit indexing: use a smaller batch or image size"
        ),
    })
}

fn activation_code(activation: Option<Activation>) -> i32 {
    let code = match activation {
        None => kernels::WHORL_NO_ACTIVATION,
        Some(Activation::Relu) => kernels::WHORL_RELU,
        Some(Activation::Sigmoid) => kernels::WHORL_SIGMOID,
    };
    code as i32
}

/// What a convolution kernel's epilogue makes of each sum before it stores it (epilogue_output
/// in whorl.cuh).
#[derive(Clone, Copy)]
enum Epilogue {
    /// activation(sum + bias), the bias null for none: a forward pass.
    Activate(DevicePtr, Option<Activation>),
    /// Backward-data into `x`, a tensor the activation made (or none): the sum times the
    /// activation's derivative at x's same element, so that dx needs no pass of its own
    /// (activation_backward's bits).
    Slope(DevicePtr, Option<Activation>),
}

impl Epilogue {
    /// A forward pass's: the slot's bias and the convolution's activation.
    fn forward(conv: &Conv, params: &GpuBuffer) -> Epilogue {
        Epilogue::Activate(params.at(conv.slot.bias.start), Some(conv.activation))
    }

    /// The kernels' bias, activation and slope_at arguments.
    fn args(self) -> (DevicePtr, i32, DevicePtr) {
        match self {
            Epilogue::Activate(bias, activation) => {
                (bias, activation_code(activation), DevicePtr::NULL)
            }
            Epilogue::Slope(x, Some(activation)) => {
                (DevicePtr::NULL, activation_code(Some(activation)), x)
            }
            Epilogue::Slope(_, None) => (DevicePtr::NULL, activation_code(None), DevicePtr::NULL),
        }
    }
}

/// A window gathered from a source tensor for each pixel of a grid (see conv2d.cu): tap
/// (ty, tx) of grid pixel (i, j) reads source pixel (stride i + origin_row + ty,
/// stride j + origin_col + tx).
#[derive(Clone, Copy)]
struct Gather {
    src: DevicePtr,
    src_shape: Nhwc,
    grid: Nhwc,
    window: usize,
    stride: usize,
    origin_row: i32,
    origin_col: i32,
}

impl Gather {
    /// The 3x3 'same' window of a stored tensor, at each of its own pixels.
    fn same(src: DevicePtr, shape: Nhwc) -> Gather {
        Gather {
            src,
            src_shape: shape,
            grid: shape,
            window: 3,
            stride: 1,
            origin_row: -1,
            origin_col: -1,
        }
    }

    /// The 3x3 windows at stride 2 over the box sums `q` of an upsampled convolution's dz, at
    /// each pixel of its stored (small) input.
    fn box_sums(q: DevicePtr, conv: &Conv) -> Gather {
        let out = conv.output();
        Gather {
            src: q,
            src_shape: Nhwc {
                height: out.height + 1,
                width: out.width + 1,
                ..out
            },
            grid: conv.input,
            window: 3,
            stride: 2,
            origin_row: 0,
            origin_col: 0,
        }
    }

    fn k(&self) -> usize {
        self.window * self.window * self.src_shape.channels
    }

    /// The kernels' leading parameters: the grid's batch, height and width, the source's
    /// height, width and channels, the window and the stride.
    fn dims(&self) -> Result<[i32; 8]> {
        let (g, s) = (self.grid, self.src_shape);
        Ok([
            int(g.batch)?,
            int(g.height)?,
            int(g.width)?,
            int(s.height)?,
            int(s.width)?,
            int(s.channels)?,
            int(self.window)?,
            int(self.stride)?,
        ])
    }
}

/// Where a GEMM's grid pixel (i, j) lands in its output tensor: (stride i + row, stride j + col).
/// With `pooled` (not NULL) the GEMM also writes there the 2x2 max pooling of its output,
/// [batch, height / 2, width / 2, n] (stride 1, height and width even).
#[derive(Clone, Copy)]
struct Scatter {
    out: DevicePtr,
    height: usize,
    width: usize,
    stride: usize,
    row: usize,
    col: usize,
    pooled: DevicePtr,
}

impl Scatter {
    /// Each grid pixel onto the same pixel of a tensor of the grid's size.
    fn dense(out: DevicePtr, grid: Nhwc) -> Scatter {
        Scatter {
            out,
            height: grid.height,
            width: grid.width,
            stride: 1,
            row: 0,
            col: 0,
            pooled: DevicePtr::NULL,
        }
    }
}

/// Timed launches of each candidate tile at a GEMM shape's first use (after one to warm up).
const TILE_TIMING_LAUNCHES: usize = 2;

/// Kernel-gradient chunks for a grid of `pixels`: (pixels per chunk, chunks).
fn filter_chunks(pixels: usize, one_channel: bool) -> (usize, usize) {
    let (chunk_pixels, max_chunks) = if one_channel {
        (ONE_CHANNEL_CHUNK_PIXELS, ONE_CHANNEL_MAX_CHUNKS)
    } else {
        (CHUNK_PIXELS, MAX_CHUNKS)
    };
    let chunks = pixels.div_ceil(chunk_pixels).clamp(1, max_chunks);
    let per_chunk = pixels.div_ceil(chunks);
    (per_chunk, pixels.div_ceil(per_chunk))
}

/// The launch of conv2d_one_input_channel (`rows` 1) or its pooled form (`rows` 2): a thread
/// for each run of ONE_INPUT_RUN columns of `rows` rows and group of ONE_INPUT_CHANNELS output
/// channels, the kernel zero-padded to whole groups in shared memory.
fn one_input_launch(conv: &Conv, rows: usize) -> Launch {
    let input = conv.input;
    let groups = conv.slot.out_channels.div_ceil(kernels::ONE_INPUT_CHANNELS);
    let runs = input.batch * (input.height / rows) * input.width.div_ceil(kernels::ONE_INPUT_RUN);
    let blocks = (runs * groups).div_ceil(kernels::WHORL_THREADS) as u32;
    Launch::blocks([blocks, 1, 1], 9 * groups * kernels::ONE_INPUT_CHANNELS)
}

/// (pooled pixels per chunk, chunks) of a pooled convolution's kernel-gradient partials.
fn pooled_filter_chunks(conv: &Conv) -> (usize, usize) {
    filter_chunks(conv.output().pixels() / 4, true)
}

/// Floats of a pooled convolution's kernel-gradient partials (chunks x 10 rows x cout), 0 for a
/// convolution that is not one.
fn pooled_partials_len(conv: &Conv) -> usize {
    if conv.check_poolable("gpu").is_err() {
        return 0;
    }
    pooled_filter_chunks(conv).1 * kernels::ONE_CHANNEL_ROWS * conv.slot.out_channels
}

/// Whether `conv` has one output channel of an upsampled input (conv6): its forward pass,
/// scored forward pass ([`Backend::conv2d_forward_scored`]) and whole backward pass
/// ([`Backend::conv2d_backward`]) each run as one kernel (conv2d_one_channel.cu).
fn one_output_upsampled(conv: &Conv) -> bool {
    conv.read == ConvInput::Upsampled2 && conv.slot.out_channels == 1
}

/// Whether [`Backend::conv2d_forward_and_pool`] pools `conv`'s output in its GEMM's epilogue
/// (conv2d_gathered_gemm_pooled, conv2d_gathered_gemm_tf32_pooled): a plain convolution of more
/// than one input channel (a GEMM), an even output, and output channels a pooling tile takes
/// ([`GemmTile::pools`]: conv2's 64); others pool in turn.
fn pools_in_gemm_epilogue(conv: &Conv) -> bool {
    let output = conv.output();
    conv.read == ConvInput::Direct
        && conv.slot.in_channels > 1
        && output.height.is_multiple_of(2)
        && output.width.is_multiple_of(2)
        && GemmTile::pools(conv.slot.out_channels)
}

/// Blocks of conv2d_upsampled_one_output_channel(_scored) over `conv`: per image, strips of
/// ONE_OUTPUT_STRIP source columns by ONE_OUTPUT_ROWS source rows.
fn one_output_blocks(conv: &Conv) -> usize {
    let input = conv.input;
    input.batch
        * input.height.div_ceil(kernels::ONE_OUTPUT_ROWS)
        * input.width.div_ceil(kernels::ONE_OUTPUT_STRIP)
}

/// Partial sums of a loss: the one-output kernel's blocks for a scored `conv`, else
/// mse_partials's fixed grid.
fn loss_partials_len(conv: &Conv) -> usize {
    if one_output_upsampled(conv) {
        one_output_blocks(conv).max(LOSS_BLOCKS)
    } else {
        LOSS_BLOCKS
    }
}

/// (source pixels per chunk, chunks) of the fused backward pass: blocks of a memory-bound pass,
/// chunked as the one-channel kernel gradients are.
fn fused_backward_chunks(conv: &Conv) -> (usize, usize) {
    filter_chunks(conv.input.pixels(), true)
}

/// Floats of the fused backward pass's partials (chunks x (9 cin + 1): the kernel and bias
/// gradients' layout), 0 for a convolution that does not take it.
fn fused_backward_partials_len(conv: &Conv) -> usize {
    if !one_output_upsampled(conv) {
        return 0;
    }
    fused_backward_chunks(conv).1 * (9 * conv.slot.in_channels + 1)
}

/// The backend over a device: buffers are device memory, operations are kernel launches.
pub struct GpuBackend<D: Device> {
    device: D,
    precision: Precision,
    /// Whether Hopper's warpgroup tiles are among the TF32 GEMMs' and partials' candidates.
    warpgroup_tiles: bool,
    owned: Vec<DevicePtr>,
    /// A transformed kernel for backward-data (flipped, or folded through an upsampling).
    kernel_scratch: Option<GpuBuffer>,
    /// A tensor-core GEMM's weights as its B operand (tensor_core_weights_k_major); TF32 and
    /// BF16 only.
    tensor_core_weights: Option<GpuBuffer>,
    /// Per-chunk kernel gradients.
    partials: Option<GpuBuffer>,
    /// The 2x2 box sums of an upsampled convolution's dz.
    box_sums: Option<GpuBuffer>,
    /// The loss of [`Backend::mse_loss`], then per-block sums of squared errors.
    loss: Option<GpuBuffer>,
    /// The gathered GEMM's and the kernel-gradient partials' tile for each shape (see
    /// [`gemm_tiles`]).
    gemm_tiles: TileChoices<GemmShape, GemmTile>,
    filter_tiles: TileChoices<FilterShape, FilterTile>,
}

impl<D: Device> GpuBackend<D> {
    /// The backend in FP32 (see [`with_precision`](Self::with_precision)); on a GPU, the
    /// GEMM shapes with several tiles time them at first use ([`TilePolicy::Timed`]).
    pub fn new(device: D) -> Self {
        let policy = if device.times_gpu_kernels() {
            TilePolicy::Timed
        } else {
            TilePolicy::Default
        };
        GpuBackend {
            gemm_tiles: TileChoices::new(policy),
            filter_tiles: TileChoices::new(policy),
            device,
            precision: Precision::Fp32,
            warpgroup_tiles: false,
            owned: Vec::new(),
            kernel_scratch: None,
            tensor_core_weights: None,
            partials: None,
            box_sums: None,
            loss: None,
        }
    }

    /// Convolutions in `precision`: TF32 and BF16 run the GEMM-shaped passes whose channel
    /// counts are multiples of 4 on tensor cores (conv2d_tf32.cu), the rest in FP32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Whether the TF32 GEMMs and kernel-gradient partials may run on Hopper's warpgroup tiles
    /// (wgmma), where the device runs them: not by default until a GPU run has checked them
    /// (they have only run in the emulator, and a GPU's tensor cores may round a wgmma's sums
    /// otherwise than an mma.sync's, so a timed choice between the two could change a run's
    /// bits); `whorl bench --warpgroup-tiles` times them.
    pub fn with_warpgroup_tiles(mut self, warpgroup_tiles: bool) -> Self {
        self.warpgroup_tiles = warpgroup_tiles;
        self
    }

    /// How GEMM shapes with several candidate tiles pick one.
    pub fn with_tile_policy(mut self, policy: TilePolicy) -> Self {
        self.gemm_tiles = TileChoices::new(policy);
        self.filter_tiles = TileChoices::new(policy);
        self
    }

    /// The tile `shape` runs on among `candidates` (not empty): picked by its `choices`, or each
    /// candidate timed (one launch to warm up, then TILE_TIMING_LAUNCHES on the clock) and the
    /// fastest kept. Candidates write the same bits, so the output stands whichever ran last.
    fn choose_tile<S: Shape, T: Tile>(
        &mut self,
        choices: fn(&mut Self) -> &mut TileChoices<S, T>,
        shape: S,
        candidates: &[T],
        launch: impl Fn(&mut Self, T) -> Result<()>,
    ) -> Result<T> {
        if let Some(tile) = choices(self).pick(&shape, candidates) {
            return Ok(tile);
        }
        let mut times = Vec::with_capacity(candidates.len());
        for &tile in candidates {
            launch(self, tile)?;
            let ((), seconds) =
                self.time(|b| (0..TILE_TIMING_LAUNCHES).try_for_each(|_| launch(b, tile)))?;
            times.push((tile, seconds));
        }
        Ok(choices(self).keep_fastest(shape, times))
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    /// Whether the warpgroup tiles are among the candidates: asked for, and the device runs them.
    fn offers_warpgroup_tiles(&self) -> bool {
        self.warpgroup_tiles && self.device.runs_warpgroup_mma()
    }

    /// The precision a GEMM over `gather` with `n` columns multiplies in: the backend's on
    /// tensor cores (TF32, BF16) where 16-byte copies fit its channels (multiples of 4), else
    /// FP32.
    fn gemm_precision(&self, gather: &Gather, n: usize) -> Precision {
        let fits = gather.src_shape.channels.is_multiple_of(4) && n.is_multiple_of(4);
        if fits {
            self.precision
        } else {
            Precision::Fp32
        }
    }

    /// The partials scratch, if `plan()` made it at least `needed` floats long for `conv`.
    fn planned_partials(&self, conv: &Conv, needed: usize) -> Result<DevicePtr> {
        let what = "the kernel-gradient partials";
        Self::planned(&self.partials, 0, (conv.slot.name, what, needed))
    }

    /// `slot` from float `start` on, if `plan()` made it at least `needed` floats longer for
    /// `who` (a layer, or what runs for it), which needs them for `what`.
    fn planned(
        slot: &Option<GpuBuffer>,
        start: usize,
        (who, what, needed): (&str, &str, usize),
    ) -> Result<DevicePtr> {
        let planned = slot.as_ref().map_or(0, |s| s.len.saturating_sub(start));
        if planned < needed {
            return Err(Error::Backend {
                backend: "gpu".into(),
                reason: format!(
                    "{who}: {what} need {needed} floats, plan() allocated {planned}: plan() \
                     with this convolution first"
                ),
            });
        }
        Ok(Self::scratch(slot).offset(start))
    }

    fn scratch(slot: &Option<GpuBuffer>) -> DevicePtr {
        slot.as_ref()
            .expect("plan() allocates the scratch buffers")
            .ptr
    }

    /// out[p, n] = epilogue(window(p) weights) over the gather's grid, scattered by `out`.
    fn gathered_gemm(
        &mut self,
        gather: &Gather,
        weights: DevicePtr,
        n: usize,
        epilogue: Epilogue,
        out: Scatter,
    ) -> Result<()> {
        let precision = self.gemm_precision(gather, n);
        let weights = match precision.on_tensor_cores() {
            true => self.tensor_core_weights_k_major(gather, weights, n, precision)?,
            false => weights,
        };
        let pooling = out.pooled != DevicePtr::NULL;
        let (bias, activation, slope_at) = epilogue.args();
        let warpgroups = self.offers_warpgroup_tiles();
        let candidates = GemmTile::candidates(precision, warpgroups, n, pooling);
        if candidates.is_empty() {
            return Err(Error::Backend {
                backend: "gpu".into(),
                reason: format!("{n} output channels: only the 33-64 channel GEMM tiles pool"),
            });
        }
        let [grid_n, grid_h, grid_w, src_h, src_w, src_c, window, stride] = gather.dims()?;
        let shape = GemmShape {
            gather: gather.dims()?,
            origin: (gather.origin_row, gather.origin_col),
            n,
            out_stride: out.stride,
            precision,
            pooling,
        };
        let pixels = gather.grid.pixels();
        let columns = int(n)?;
        let (out_h, out_w) = (int(out.height)?, int(out.width)?);
        let (out_stride, out_row, out_col) = (int(out.stride)?, int(out.row)?, int(out.col)?);
        let launch = |b: &mut Self, tile: GemmTile| {
            tile.kernel()(
                &mut b.device,
                tile.launch(pixels, n),
                gather.src,
                grid_n,
                grid_h,
                grid_w,
                src_h,
                src_w,
                src_c,
                window,
                stride,
                gather.origin_row,
                gather.origin_col,
                weights,
                columns,
                bias,
                activation,
                slope_at,
                out.out,
                out_h,
                out_w,
                out_stride,
                out_row,
                out_col,
                out.pooled,
            )
        };
        let tile = self.choose_tile(|b| &mut b.gemm_tiles, shape, &candidates, launch)?;
        launch(self, tile)
    }

    /// `weights` ([K][n], K the gather's window rows) as a tensor-core GEMM's B operand:
    /// transposed to [n][K] and rounded to `precision` (TF32 or BF16;
    /// tensor_core_weights_k_major), in the tensor-core weights scratch.
    fn tensor_core_weights_k_major(
        &mut self,
        gather: &Gather,
        weights: DevicePtr,
        n: usize,
        precision: Precision,
    ) -> Result<DevicePtr> {
        let k = gather.k();
        let who = format!("a tensor-core GEMM of {k} x {n} weights");
        let what = "the tensor-core weights";
        let out = Self::planned(&self.tensor_core_weights, 0, (&who, what, k * n))?;
        let launch = Launch::per_element(k * n);
        let bf16 = i32::from(precision == Precision::Bf16);
        let (k, n) = (int(k)?, int(n)?);
        kernels::tensor_core_weights_k_major(&mut self.device, launch, weights, k, n, bf16, out)?;
        Ok(out)
    }

    /// q = the 2x2 box sums of an upsampled convolution's dz (upsample2_box_sums).
    fn box_sums(&mut self, conv: &Conv, dz: &GpuBuffer) -> Result<DevicePtr> {
        let out = conv.output();
        let q = Self::scratch(&self.box_sums);
        let [batch, h, w, c] = shape_args(out)?;
        // A thread for each pixel of q and quad of 4 channels.
        let launch =
            Launch::per_element(box_sums_len(conv) / out.channels * out.channels.div_ceil(4));
        kernels::upsample2_box_sums(&mut self.device, launch, dz.ptr, batch, h, w, c, q)?;
        Ok(q)
    }

    /// What `conv`'s backward passes read of dz: dz itself, or for an upsampled convolution its
    /// box sums, made here.
    fn dz_or_box_sums(&mut self, conv: &Conv, dz: &GpuBuffer) -> Result<DevicePtr> {
        match conv.read {
            ConvInput::Direct => Ok(dz.ptr),
            ConvInput::Upsampled2 => self.box_sums(conv, dz),
        }
    }

    /// Backward-data into dx with `epilogue`, from what [`Self::dz_or_box_sums`] gave: by
    /// Winograd where [`Self::by_winograd`] says so (dz), else as a GEMM of the flipped kernel
    /// over the windows of dz, or of an upsampled convolution's box sums at the source
    /// resolution (conv2d.cu).
    fn backward_data(
        &mut self,
        conv: &Conv,
        dz_or_box_sums: DevicePtr,
        params: &GpuBuffer,
        epilogue: Epilogue,
        dx: &mut GpuBuffer,
    ) -> Result<()> {
        if self.by_winograd(conv, true) {
            let out = (dx.ptr, DevicePtr::NULL);
            return self.winograd(conv, true, (dz_or_box_sums, params), epilogue, out);
        }
        let flipped = self.rearranged_kernel(conv, params, kernels::conv2d_flip_kernel, 9)?;
        let gather = match conv.read {
            ConvInput::Direct => Gather::same(dz_or_box_sums, conv.output()),
            ConvInput::Upsampled2 => Gather::box_sums(dz_or_box_sums, conv),
        };
        let out = Scatter::dense(dx.ptr, conv.input);
        self.gathered_gemm(&gather, flipped, conv.slot.in_channels, epilogue, out)
    }

    /// A plain convolution's forward pass as one GEMM over its input's windows, with bias and
    /// activation, scattered by `out` (which may pool it too).
    fn forward_gemm(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        params: &GpuBuffer,
        out: Scatter,
    ) -> Result<()> {
        let slot = &conv.slot;
        let gather = Gather::same(x.ptr, conv.input);
        let kernel = params.at(slot.weight.start);
        let epilogue = Epilogue::forward(conv, params);
        self.gathered_gemm(&gather, kernel, slot.out_channels, epilogue, out)
    }

    /// An upsampled convolution's kernel folded into its four 2x2 phase kernels (conv2d.cu),
    /// in the kernel scratch.
    fn fold_phases(&mut self, conv: &Conv, params: &GpuBuffer) -> Result<DevicePtr> {
        self.rearranged_kernel(conv, params, kernels::conv2d_fold_phases_kernel, 16)
    }

    /// `conv`'s kernel rearranged by `rearrange` (conv2d.cu: its flip or its phases, one thread
    /// per element of a taps x cin x cout range) into the kernel scratch.
    fn rearranged_kernel(
        &mut self,
        conv: &Conv,
        params: &GpuBuffer,
        rearrange: fn(&mut D, Launch, DevicePtr, i32, i32, DevicePtr) -> Result<()>,
        taps: usize,
    ) -> Result<DevicePtr> {
        let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
        let out = Self::scratch(&self.kernel_scratch);
        let kernel = params.at(conv.slot.weight.start);
        let launch = Launch::per_element(taps * cin * cout);
        rearrange(&mut self.device, launch, kernel, int(cin)?, int(cout)?, out)?;
        Ok(out)
    }

    /// Where `blocks` sums of squared errors go for `conv`, after the loss itself.
    fn loss_partials(&self, conv: &Conv, blocks: usize) -> Result<DevicePtr> {
        Self::planned(
            &self.loss,
            1,
            (conv.slot.name, "the loss's partial sums", blocks),
        )
    }

    /// mse_partials's sums of squared errors over the first `len` values, into the loss
    /// scratch; returns how many.
    fn squared_error_partials(
        &mut self,
        len: usize,
        prediction: &GpuBuffer,
        target: &GpuBuffer,
    ) -> Result<usize> {
        let partials = Self::scratch(&self.loss).offset(1);
        let launch = Launch::blocks([LOSS_BLOCKS as u32, 1, 1], kernels::MSE_SHARED_FLOATS);
        kernels::mse_partials(
            &mut self.device,
            launch,
            int(len)?,
            prediction.ptr,
            target.ptr,
            partials,
        )?;
        Ok(LOSS_BLOCKS)
    }

    /// out[0] = the mean squared error over `len` values from the first `blocks` partial sums
    /// in the loss scratch, added in a fixed order.
    fn finish_mse(&mut self, blocks: usize, len: usize, out: DevicePtr) -> Result<()> {
        let partials = Self::scratch(&self.loss).offset(1);
        kernels::mse_finish(
            &mut self.device,
            Launch::blocks([1, 1, 1], kernels::MSE_FINISH_SHARED_FLOATS),
            int(blocks)?,
            int(len)?,
            partials,
            out,
        )
    }

    /// The loss at `out` (waits for the operations queued before).
    fn read_loss(&mut self, out: DevicePtr) -> Result<f64> {
        let mut value = [0.0f32];
        self.device.download(out, &mut value)?;
        Ok(f64::from(value[0]))
    }
}

/// Elements of an upsampled convolution's box sums: [batch, 2h + 1, 2w + 1, cout].
fn box_sums_len(conv: &Conv) -> usize {
    let out = conv.output();
    out.batch * (out.height + 1) * (out.width + 1) * out.channels
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
        let precision = match self.precision {
            Precision::Tf32 => "TF32 convolutions on tensor cores",
            Precision::Bf16 => "BF16 convolutions on tensor cores",
            Precision::Fp32 => "FP32",
        };
        format!("{} ({precision})", self.device.name())
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn conv_algorithm(&self) -> ConvAlgorithm {
        match self.precision {
            Precision::Fp32 => ConvAlgorithm::WinogradPlain,
            Precision::Tf32 | Precision::Bf16 => ConvAlgorithm::Direct,
        }
    }

    fn timed_choices(&self) -> Vec<String> {
        let gemms = self.gemm_tiles.describe(TILE_TIMING_LAUNCHES);
        gemms
            .into_iter()
            .chain(self.filter_tiles.describe(TILE_TIMING_LAUNCHES))
            .collect()
    }

    fn plan(&mut self, convs: &[Conv]) -> Result<()> {
        let (mut kernel, mut partials, mut box_sums, mut loss) = (1, 1, 1, LOSS_BLOCKS);
        for conv in convs {
            let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
            kernel = kernel.max(16 * cin * cout);
            if self.by_winograd(conv, true) {
                kernel = kernel.max(winograd_transform_len(conv));
            }
            if conv.read == ConvInput::Upsampled2 {
                box_sums = box_sums.max(box_sums_len(conv));
            }
            let pass = FilterPass::of(conv, DevicePtr::NULL, DevicePtr::NULL);
            partials = partials.max(pass.partials_len());
            partials = partials.max(pooled_partials_len(conv));
            partials = partials.max(fused_backward_partials_len(conv));
            if self.by_winograd(conv, false) {
                partials = partials.max(winograd_filter_partials_len(conv));
            }
            loss = loss.max(loss_partials_len(conv));
        }
        self.kernel_scratch = Some(self.alloc(kernel)?);
        if self.precision.on_tensor_cores() {
            // The largest GEMM B operand: 9 cin x cout (forward), 9 cout x cin (backward-data).
            let weights = convs
                .iter()
                .map(|c| 9 * c.slot.in_channels * c.slot.out_channels);
            self.tensor_core_weights = Some(self.alloc(weights.max().unwrap_or(1))?);
        }
        self.partials = Some(self.alloc(partials)?);
        self.box_sums = Some(self.alloc(box_sums)?);
        self.loss = Some(self.alloc(1 + loss)?);
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
        let (cin, cout) = (slot.in_channels, slot.out_channels);
        let kernel = params.at(slot.weight.start);
        let epilogue = Epilogue::forward(conv, params);
        let (bias, activation, _) = epilogue.args();
        if conv.read == ConvInput::Direct && cin == 1 {
            let [batch, h, w, _] = shape_args(conv.input)?;
            return kernels::conv2d_one_input_channel(
                &mut self.device,
                one_input_launch(conv, 1),
                x.ptr,
                batch,
                h,
                w,
                kernel,
                int(cout)?,
                bias,
                activation,
                y.ptr,
            );
        }
        if self.by_winograd(conv, false) {
            let out = (y.ptr, DevicePtr::NULL);
            return self.winograd(conv, false, (x.ptr, params), epilogue, out);
        }
        if conv.read == ConvInput::Direct {
            return self.forward_gemm(conv, x, params, Scatter::dense(y.ptr, conv.output()));
        }
        // Four 2x2 phase convolutions of the small input, one per output parity (conv2d.cu);
        // with one output channel, one direct kernel computes all four (conv2d_one_channel.cu).
        let phases = self.fold_phases(conv, params)?;
        if cout == 1 {
            let [_, h, w, _] = shape_args(conv.input)?;
            let blocks = one_output_blocks(conv) as u32;
            return kernels::conv2d_upsampled_one_output_channel(
                &mut self.device,
                Launch::blocks([blocks, 1, 1], kernels::ONE_OUTPUT_SHARED_FLOATS),
                x.ptr,
                h,
                w,
                int(cin)?,
                phases,
                bias,
                activation,
                y.ptr,
            );
        }
        let out = conv.output();
        for (phase, (row, col)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
            let gather = Gather {
                window: 2,
                origin_row: row as i32 - 1,
                origin_col: col as i32 - 1,
                ..Gather::same(x.ptr, conv.input)
            };
            let scatter = Scatter {
                out: y.ptr,
                height: out.height,
                width: out.width,
                stride: 2,
                row,
                col,
                pooled: DevicePtr::NULL,
            };
            let weights = phases.offset(phase * 4 * cin * cout);
            self.gathered_gemm(&gather, weights, cout, epilogue, scatter)?;
        }
        Ok(())
    }

    fn conv2d_forward_and_pool(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        params: &GpuBuffer,
        y: &mut GpuBuffer,
        pooled: &mut GpuBuffer,
    ) -> Result<()> {
        let output = conv.output();
        let even = output.height.is_multiple_of(2) && output.width.is_multiple_of(2);
        if self.by_winograd(conv, false) && even {
            let epilogue = Epilogue::forward(conv, params);
            return self.winograd(conv, false, (x.ptr, params), epilogue, (y.ptr, pooled.ptr));
        }
        if !pools_in_gemm_epilogue(conv) {
            self.conv2d_forward(conv, x, params, y)?;
            return self.maxpool2_forward(output, y, pooled);
        }
        let out = Scatter {
            pooled: pooled.ptr,
            ..Scatter::dense(y.ptr, output)
        };
        self.forward_gemm(conv, x, params, out)
    }

    fn activation_backward(
        &mut self,
        activation: Activation,
        len: usize,
        y: &GpuBuffer,
        grad: &mut GpuBuffer,
    ) -> Result<()> {
        kernels::activation_backward(
            &mut self.device,
            Launch::per_element(len),
            activation_code(Some(activation)),
            int(len)?,
            y.ptr,
            grad.ptr,
        )
    }

    fn conv2d_backward_data(
        &mut self,
        conv: &Conv,
        dz: &GpuBuffer,
        params: &GpuBuffer,
        dx: &mut GpuBuffer,
    ) -> Result<()> {
        let dz_or_box_sums = self.dz_or_box_sums(conv, dz)?;
        let plain = Epilogue::Slope(DevicePtr::NULL, None);
        self.backward_data(conv, dz_or_box_sums, params, plain, dx)
    }

    fn conv2d_backward_filter(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        dz: &GpuBuffer,
        grads: &mut GpuBuffer,
    ) -> Result<()> {
        let dz_or_box_sums = self.dz_or_box_sums(conv, dz)?;
        self.backward_filter(conv, x, dz_or_box_sums, grads)
    }

    fn conv2d_backward(
        &mut self,
        conv: &Conv,
        (x, x_activation): (&GpuBuffer, Option<Activation>),
        dz: &GpuBuffer,
        params: &GpuBuffer,
        grads: &mut GpuBuffer,
        dx: &mut GpuBuffer,
    ) -> Result<()> {
        if !one_output_upsampled(conv) {
            // The kernel gradient, then dx with the activation's derivative in its epilogue;
            // an upsampled convolution's box sums of dz made once for both (conv5).
            let dz_or_box_sums = self.dz_or_box_sums(conv, dz)?;
            self.backward_filter(conv, x, dz_or_box_sums, grads)?;
            let epilogue = Epilogue::Slope(x.ptr, x_activation);
            return self.backward_data(conv, dz_or_box_sums, params, epilogue, dx);
        }
        // conv6: dx, its activation's derivative and the per-chunk kernel and bias gradients in
        // one pass over x, then the chunks added in order into the slot's ranges.
        let slot = &conv.slot;
        let cin = slot.in_channels;
        let [batch, h, w, _] = shape_args(conv.input)?;
        int(conv.input.len())?; // the kernel indexes x and dx in 32 bits
        let (per_chunk, chunks) = fused_backward_chunks(conv);
        let partials = self.planned_partials(conv, fused_backward_partials_len(conv))?;
        kernels::conv2d_upsampled_one_output_channel_backward(
            &mut self.device,
            Launch::blocks(
                [chunks as u32, 1, 1],
                kernels::UPSAMPLED_BACKWARD_SHARED_FLOATS,
            ),
            x.ptr,
            batch,
            h,
            w,
            int(cin)?,
            dz.ptr,
            params.at(slot.weight.start),
            activation_code(x_activation),
            dx.ptr,
            int(per_chunk)?,
            partials,
        )?;
        let count = 9 * cin + 1;
        kernels::sum_partials(
            &mut self.device,
            Launch::per_element(count),
            partials,
            int(chunks)?,
            int(count)?,
            grads.at(slot.weight.start),
        )
    }

    fn conv2d_pooled_forward(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        params: &GpuBuffer,
        pooled: &mut GpuBuffer,
    ) -> Result<()> {
        conv.check_poolable("gpu")?;
        let slot = &conv.slot;
        let cout = slot.out_channels;
        let [batch, h, w, _] = shape_args(conv.input)?;
        kernels::conv2d_one_input_channel_pooled(
            &mut self.device,
            one_input_launch(conv, 2),
            x.ptr,
            batch,
            h,
            w,
            params.at(slot.weight.start),
            int(cout)?,
            params.at(slot.bias.start),
            activation_code(Some(conv.activation)),
            pooled.ptr,
        )
    }

    fn conv2d_pooled_backward_filter(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        params: &GpuBuffer,
        d_pooled: &GpuBuffer,
        grads: &mut GpuBuffer,
    ) -> Result<()> {
        conv.check_poolable("gpu")?;
        let slot = &conv.slot;
        let cout = slot.out_channels;
        let [batch, h, w, _] = shape_args(conv.input)?;
        let (per_chunk, chunks) = pooled_filter_chunks(conv);
        let partials = self.planned_partials(conv, pooled_partials_len(conv))?;
        let channel_blocks = cout.div_ceil(kernels::POOLED_CHANNELS) as u32;
        kernels::conv2d_pooled_filter_partials_one_channel(
            &mut self.device,
            Launch::blocks(
                [chunks as u32, channel_blocks, 1],
                kernels::POOLED_SHARED_FLOATS,
            ),
            x.ptr,
            batch,
            h,
            w,
            params.at(slot.weight.start),
            int(cout)?,
            params.at(slot.bias.start),
            activation_code(Some(conv.activation)),
            d_pooled.ptr,
            int(per_chunk)?,
            partials,
        )?;
        // Kernel rows then the bias row, as conv2d_backward_filter's for a direct convolution
        // with one input channel: exactly the slot's weight and bias ranges.
        let count = kernels::ONE_CHANNEL_ROWS * cout;
        kernels::sum_partials(
            &mut self.device,
            Launch::per_element(count),
            partials,
            int(chunks)?,
            int(count)?,
            grads.at(slot.weight.start),
        )
    }

    fn maxpool2_forward(&mut self, input: Nhwc, x: &GpuBuffer, y: &mut GpuBuffer) -> Result<()> {
        let [batch, h, w, c] = shape_args(input)?;
        let launch = Launch::per_element(input.len() / 4);
        kernels::maxpool2_forward(&mut self.device, launch, batch, h, w, c, x.ptr, y.ptr)
    }

    fn maxpool2_backward(
        &mut self,
        input: Nhwc,
        (x, x_activation): (&GpuBuffer, Option<Activation>),
        dy: &GpuBuffer,
        dx: &mut GpuBuffer,
    ) -> Result<()> {
        let [batch, h, w, c] = shape_args(input)?;
        let launch = Launch::per_element(input.len() / 4);
        kernels::maxpool2_backward(
            &mut self.device,
            launch,
            batch,
            h,
            w,
            c,
            x.ptr,
            activation_code(x_activation),
            dy.ptr,
            dx.ptr,
        )
    }

    fn upsample2_forward(&mut self, input: Nhwc, x: &GpuBuffer, y: &mut GpuBuffer) -> Result<()> {
        let [batch, h, w, c] = shape_args(input)?;
        let launch = Launch::per_element(4 * input.len());
        kernels::upsample2_forward(&mut self.device, launch, batch, h, w, c, x.ptr, y.ptr)
    }

    fn upsample2_backward(
        &mut self,
        input: Nhwc,
        dy: &GpuBuffer,
        dx: &mut GpuBuffer,
    ) -> Result<()> {
        let [batch, h, w, c] = shape_args(input)?;
        let launch = Launch::per_element(input.len());
        kernels::upsample2_backward(&mut self.device, launch, batch, h, w, c, dy.ptr, dx.ptr)
    }

    fn mse_loss(&mut self, len: usize, prediction: &GpuBuffer, target: &GpuBuffer) -> Result<f64> {
        let out = Self::scratch(&self.loss);
        let blocks = self.squared_error_partials(len, prediction, target)?;
        self.finish_mse(blocks, len, out)?;
        self.read_loss(out)
    }

    fn conv2d_forward_scored(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        params: &GpuBuffer,
        target: &GpuBuffer,
        y: &mut GpuBuffer,
        dz: &mut GpuBuffer,
        loss: &mut GpuBuffer,
    ) -> Result<()> {
        let len = conv.output().len();
        if !one_output_upsampled(conv) {
            super::forward_scored_in_turn(self, conv, (x, params, target), y, dz)?;
            let blocks = self.squared_error_partials(len, y, target)?;
            return self.finish_mse(blocks, len, loss.ptr);
        }
        // conv6: y, dz and a sum of squared errors per block in one kernel, then the sums added.
        let blocks = one_output_blocks(conv);
        let partials = self.loss_partials(conv, blocks)?;
        let phases = self.fold_phases(conv, params)?;
        let slot = &conv.slot;
        let [_, h, w, cin] = shape_args(conv.input)?;
        let shared = kernels::ONE_OUTPUT_SHARED_FLOATS + kernels::ONE_CHANNEL_WARPS;
        kernels::conv2d_upsampled_one_output_channel_scored(
            &mut self.device,
            Launch::blocks([blocks as u32, 1, 1], shared),
            x.ptr,
            h,
            w,
            cin,
            phases,
            params.at(slot.bias.start),
            activation_code(Some(conv.activation)),
            y.ptr,
            int(len)?,
            target.ptr,
            dz.ptr,
            partials,
        )?;
        self.finish_mse(blocks, len, loss.ptr)
    }

    fn scored_loss(
        &mut self,
        _len: usize,
        _outputs: (&GpuBuffer, &GpuBuffer),
        loss: &GpuBuffer,
    ) -> Result<f64> {
        self.read_loss(loss.ptr)
    }

    fn mse_backward(
        &mut self,
        len: usize,
        prediction: &GpuBuffer,
        target: &GpuBuffer,
        grad: &mut GpuBuffer,
    ) -> Result<()> {
        kernels::mse_backward(
            &mut self.device,
            Launch::per_element(len),
            int(len)?,
            prediction.ptr,
            target.ptr,
            grad.ptr,
        )
    }

    fn rmsprop_update(
        &mut self,
        hyper: RmsProp,
        params: &mut GpuBuffer,
        grads: &GpuBuffer,
        velocity: &mut GpuBuffer,
    ) -> Result<()> {
        let count = params.len;
        kernels::rmsprop_update(
            &mut self.device,
            Launch::per_element(count),
            int(count)?,
            hyper.learning_rate,
            hyper.rho,
            hyper.epsilon,
            params.ptr,
            grads.ptr,
            velocity.ptr,
        )
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
        kernels::adam_update(
            &mut self.device,
            Launch::per_element(count),
            int(count)?,
            hyper.step_size(t) as f32,
            hyper.beta_1,
            hyper.beta_2,
            hyper.epsilon,
            params.ptr,
            grads.ptr,
            momentum.ptr,
            velocity.ptr,
        )
    }
}

/// batch, height, width, channels as the pooling and upsampling kernels take them.
fn shape_args(input: Nhwc) -> Result<[i32; 4]> {
    Ok([
        int(input.batch)?,
        int(input.height)?,
        int(input.width)?,
        int(input.channels)?,
    ])
}
