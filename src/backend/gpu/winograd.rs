//! The plain convolutions' passes by Winograd's F(2x2, 3x3) in FP32 (kernels/conv2d_winograd.cu):
//! which passes take it, the padded shapes of the kernel's transform and of the kernel
//! gradient's partials, and their launches.

use super::{
    Device, DevicePtr, Epilogue, GpuBackend, GpuBuffer, Launch, MAX_CHUNKS, int, kernels,
    shape_args,
};
use crate::backend::{Conv, ConvInput, Nhwc, Precision};
use crate::error::Result;

/// The Winograd tiles (2x2 blocks of outputs) over `input`'s pixels.
fn winograd_tiles(input: Nhwc) -> usize {
    input.batch * input.height.div_ceil(2) * input.width.div_ceil(2)
}

/// The padded shape (rows, columns) of the Winograd transform of a kernel for a pass of `src_c`
/// input and `n` output channels: rows to whole chunks, columns to whole column blocks of
/// conv2d_winograd, so that it reads them unchecked.
fn winograd_transform_shape(src_c: usize, n: usize) -> (usize, usize) {
    (
        src_c.next_multiple_of(kernels::WINOGRAD_CHUNK),
        n.next_multiple_of(kernels::WINOGRAD_COLUMNS),
    )
}

/// Floats of the Winograd transforms of `conv`'s kernel: forward and backward-data's.
pub(super) fn winograd_transform_len(conv: &Conv) -> usize {
    let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
    let len = |(rows, columns): (usize, usize)| 16 * rows * columns;
    len(winograd_transform_shape(cin, cout)).max(len(winograd_transform_shape(cout, cin)))
}

/// Blocks of conv2d_winograd_filter_partials that a kernel gradient's chunks aim at (at most
/// MAX_CHUNKS chunks): a few waves of a large GPU.
const WINOGRAD_FILTER_BLOCKS: usize = 1024;

/// The chunks of tiles of `conv`'s kernel gradient by Winograd: (tiles per chunk, a whole
/// number of steps; chunks).
fn winograd_filter_chunks(conv: &Conv) -> (usize, usize) {
    let tiles = winograd_tiles(conv.input);
    let blocks = |channels: usize| channels.div_ceil(kernels::WINOGRAD_FILTER_CHANNELS);
    let per_chunk_blocks = blocks(conv.slot.in_channels) * blocks(conv.slot.out_channels);
    let chunks = WINOGRAD_FILTER_BLOCKS
        .div_ceil(per_chunk_blocks)
        .clamp(1, MAX_CHUNKS);
    let per_chunk = tiles
        .div_ceil(chunks)
        .next_multiple_of(kernels::WINOGRAD_FILTER_STEP);
    (per_chunk, tiles.div_ceil(per_chunk))
}

/// The padded (rows, columns) of a Winograd kernel gradient's partials: cin and cout rounded up
/// to whole blocks of channels.
fn winograd_filter_shape(conv: &Conv) -> (usize, usize) {
    let padded = |c: usize| c.next_multiple_of(kernels::WINOGRAD_FILTER_CHANNELS);
    (
        padded(conv.slot.in_channels),
        padded(conv.slot.out_channels),
    )
}

/// Floats of the partials of `conv`'s kernel gradient by Winograd: per chunk, 16 positions of
/// rows x columns, then per chunk a bias row of columns.
pub(super) fn winograd_filter_partials_len(conv: &Conv) -> usize {
    let (rows, columns) = winograd_filter_shape(conv);
    winograd_filter_chunks(conv).1 * (16 * rows + 1) * columns
}

impl<D: Device> GpuBackend<D> {
    /// Whether `conv`'s backward-data pass (`backward_data`), or its forward pass and kernel
    /// gradient, run by Winograd's F(2x2, 3x3) (conv2d_winograd.cu): in FP32, a plain
    /// convolution's backward-data, and its other passes with more than one input channel (one
    /// runs as direct loops), as the CPU engine does. TF32 and BF16 run them on tensor cores.
    pub(super) fn by_winograd(&self, conv: &Conv, backward_data: bool) -> bool {
        self.precision == Precision::Fp32
            && conv.read == ConvInput::Direct
            && (backward_data || conv.slot.in_channels > 1)
    }

    /// A plain convolution's pass by Winograd's F(2x2, 3x3) (conv2d_winograd.cu): forward, x
    /// into the output (and its 2x2 max pooling into `pooled` unless that is null), or with
    /// `backward_data`, dz into dx through the flipped kernel; `epilogue` applied to each. The
    /// kernel's transform goes to the kernel scratch first.
    pub(super) fn winograd(
        &mut self,
        conv: &Conv,
        backward_data: bool,
        (src, params): (DevicePtr, &GpuBuffer),
        epilogue: Epilogue,
        (out, pooled): (DevicePtr, DevicePtr),
    ) -> Result<()> {
        let slot = &conv.slot;
        let (cin, cout) = (slot.in_channels, slot.out_channels);
        let (input, n) = match backward_data {
            false => (conv.input, cout),
            true => (conv.output(), cin),
        };
        let (rows, columns) = winograd_transform_shape(input.channels, n);
        let needed = (
            slot.name,
            "the kernel's Winograd transform",
            16 * rows * columns,
        );
        let u = Self::planned(&self.kernel_scratch, 0, needed)?;
        kernels::conv2d_winograd_kernel_transform(
            &mut self.device,
            Launch::per_element(rows * columns),
            params.at(slot.weight.start),
            int(cin)?,
            int(cout)?,
            i32::from(backward_data),
            int(rows)?,
            int(columns)?,
            u,
        )?;
        let (bias, activation, slope_at) = epilogue.args();
        int(input.len())?; // the kernel indexes its source in 32 bits
        let blocks = winograd_tiles(input).div_ceil(kernels::WINOGRAD_TILES)
            * (columns / kernels::WINOGRAD_COLUMNS);
        let [batch, h, w, src_c] = shape_args(input)?;
        kernels::conv2d_winograd(
            &mut self.device,
            Launch::blocks([int(blocks)? as u32, 1, 1], kernels::WINOGRAD_SHARED_FLOATS),
            src,
            batch,
            h,
            w,
            src_c,
            u,
            int(rows)?,
            int(columns)?,
            int(n)?,
            bias,
            activation,
            slope_at,
            out,
            pooled,
        )
    }

    /// A plain convolution's kernel and bias gradients by Winograd's F(2x2, 3x3)
    /// (conv2d_winograd.cu): per chunk of tiles, the 16 transformed products and the sums of
    /// dz, then the chunks added in order and transformed back, into the slot's ranges.
    pub(super) fn winograd_filter(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        dz: DevicePtr,
        grads: &mut GpuBuffer,
    ) -> Result<()> {
        let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
        let (rows, columns) = winograd_filter_shape(conv);
        let (per_chunk, chunks) = winograd_filter_chunks(conv);
        let partials = self.planned_partials(conv, winograd_filter_partials_len(conv))?;
        let bias_partials = partials.offset(chunks * 16 * rows * columns);
        int(conv.input.len().max(conv.output().len()))?; // the kernel indexes x and dz in 32 bits
        let [batch, h, w, _] = shape_args(conv.input)?;
        let channel_blocks = (rows * columns) / kernels::WINOGRAD_FILTER_CHANNELS.pow(2);
        kernels::conv2d_winograd_filter_partials(
            &mut self.device,
            Launch::blocks(
                [int(channel_blocks)? as u32, int(chunks)? as u32, 1],
                kernels::WINOGRAD_FILTER_SHARED_FLOATS,
            ),
            x.ptr,
            batch,
            h,
            w,
            int(cin)?,
            dz,
            int(cout)?,
            int(per_chunk)?,
            partials,
            bias_partials,
        )?;
        kernels::conv2d_winograd_filter_gradient(
            &mut self.device,
            Launch::per_element((cin + 1) * cout),
            partials,
            bias_partials,
            int(chunks)?,
            int(cin)?,
            int(cout)?,
            int(rows)?,
            int(columns)?,
            grads.at(conv.slot.weight.start),
        )
    }
}
