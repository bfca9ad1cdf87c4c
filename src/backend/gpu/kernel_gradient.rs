//! Kernel and bias gradients on the GPU as partial sums per chunk of pixels, added in a fixed
//! order: a GEMM of gathered windows by a second operand (conv2d.cu, conv2d_tf32.cu; the
//! one-channel layers' conv2d_one_channel.cu), its tile chosen by timing.

use super::gemm_tiles::{FilterShape, FilterTile};
use super::{
    Device, DevicePtr, Gather, GpuBackend, GpuBuffer, Launch, filter_chunks, int, kernels,
    shape_args,
};
use crate::backend::{Conv, ConvInput};
use crate::error::Result;

/// The operands of a convolution's kernel-gradient partials (conv2d.cu): windows gathered
/// from one tensor times a second operand of `n` columns, with `ones_row` a row of ones
/// appended to the windows, whose products are the bias gradient.
pub(super) struct FilterPass {
    gather: Gather,
    second: DevicePtr,
    n: usize,
    ones_row: bool,
}

impl FilterPass {
    /// A direct convolution: x's windows times dz (`dz_or_box_sums`), a ones row. An upsampled
    /// one: the windows of dz's box sums (`dz_or_box_sums`) at the source resolution times x,
    /// exactly cin columns; its bias gradient comes from the box sums on their own
    /// (upsample2_bias_partials), since a ones column would cost the GEMM a block of columns
    /// (129 of 64-column tiles for conv5, a third more work).
    pub(super) fn of(conv: &Conv, x: DevicePtr, dz_or_box_sums: DevicePtr) -> FilterPass {
        let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
        match conv.read {
            ConvInput::Direct => FilterPass {
                gather: Gather::same(x, conv.input),
                second: dz_or_box_sums,
                n: cout,
                ones_row: true,
            },
            ConvInput::Upsampled2 => FilterPass {
                gather: Gather::box_sums(dz_or_box_sums, conv),
                second: x,
                n: cin,
                ones_row: false,
            },
        }
    }

    /// Rows and columns of each chunk's partials.
    fn shape(&self) -> (usize, usize) {
        (self.gather.k() + usize::from(self.ones_row), self.n)
    }

    /// Floats of each chunk's bias partials after the partials (upsample2_bias_partials's: one
    /// per channel of the box sums), 0 with a ones row.
    fn bias_len(&self) -> usize {
        if self.ones_row {
            0
        } else {
            self.gather.src_shape.channels
        }
    }

    /// Whether the windows come from a one-channel tensor (conv1's and conv6's passes) that
    /// conv2d_filter_partials_one_channel takes, rather than the tiled kernels.
    fn one_channel(&self) -> bool {
        self.gather.src_shape.channels == 1 && self.shape().1 <= kernels::ONE_CHANNEL_MAX_COLUMNS
    }

    /// (pixels per chunk, chunks) of the gather's grid.
    fn chunks(&self) -> (usize, usize) {
        filter_chunks(self.gather.grid.pixels(), self.one_channel())
    }

    /// Floats of the partials, chunks x rows x columns, then the bias partials.
    pub(super) fn partials_len(&self) -> usize {
        let (rows, columns) = self.shape();
        self.chunks().1 * (rows * columns + self.bias_len())
    }
}

impl<D: Device> GpuBackend<D> {
    /// Partial sums of window(p)[k] * second[p, c] over chunks of the gather's grid pixels,
    /// with a row of ones appended where the pass has one (conv2d_filter_partials); returns the
    /// chunks.
    pub(super) fn filter_partials(&mut self, pass: &FilterPass) -> Result<usize> {
        let (gather, second, n) = (&pass.gather, pass.second, pass.n);
        let ones_row = i32::from(pass.ones_row);
        let (rows, columns) = pass.shape();
        let (per_chunk, chunks) = pass.chunks();
        if pass.one_channel() {
            let [grid_n, grid_h, grid_w, src_h, src_w, _, _, stride] = gather.dims()?;
            let launch = Launch::blocks([chunks as u32, 1, 1], kernels::ONE_CHANNEL_SHARED_FLOATS);
            kernels::conv2d_filter_partials_one_channel(
                &mut self.device,
                launch,
                gather.src,
                grid_n,
                grid_h,
                grid_w,
                src_h,
                src_w,
                stride,
                gather.origin_row,
                second,
                int(n)?,
                ones_row,
                int(per_chunk)?,
                Self::scratch(&self.partials),
            )?;
            return Ok(chunks);
        }
        let precision = self.gemm_precision(gather, n);
        let [grid_n, grid_h, grid_w, src_h, src_w, src_c, window, stride] = gather.dims()?;
        // The wide tile where it pads no more columns than the regular one (128 columns; not 64
        // or fewer, which one regular tile holds).
        let (wide_columns, regular_columns) = if precision.on_tensor_cores() {
            (
                kernels::TF32_FILTER_WIDE_COLUMNS,
                kernels::TF32_FILTER_COLUMNS,
            )
        } else {
            (kernels::FILTER_WIDE_TILE, kernels::FILTER_TILE_N)
        };
        let padded = |tile: usize| columns.div_ceil(tile) * tile;
        let wide = padded(wide_columns) <= padded(regular_columns);
        let candidates = FilterTile::candidates(precision, self.offers_warpgroup_tiles(), wide);
        let shape = FilterShape {
            gather: gather.dims()?,
            origin: gather.origin_row,
            rows,
            columns,
            pixels_per_chunk: per_chunk,
            chunks,
            precision,
        };
        let (n, per_chunk) = (int(n)?, int(per_chunk)?);
        let partials = Self::scratch(&self.partials);
        let launch = |b: &mut Self, tile: FilterTile| {
            tile.kernel()(
                &mut b.device,
                tile.launch(rows, columns, chunks),
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
                second,
                n,
                ones_row,
                per_chunk,
                partials,
            )
        };
        let tile = self.choose_tile(|b| &mut b.filter_tiles, shape, &candidates, launch)?;
        launch(self, tile)?;
        Ok(chunks)
    }

    /// The kernel and bias gradients into the slot's ranges, from what [`Self::dz_or_box_sums`]
    /// gave: by Winograd where [`Self::by_winograd`] says so (dz), else as GEMM partials over
    /// x's windows times dz, or an upsampled convolution's over the windows of dz's box sums
    /// times x (conv2d.cu), the chunks then added in order.
    pub(super) fn backward_filter(
        &mut self,
        conv: &Conv,
        x: &GpuBuffer,
        dz_or_box_sums: DevicePtr,
        grads: &mut GpuBuffer,
    ) -> Result<()> {
        if self.by_winograd(conv, false) {
            return self.winograd_filter(conv, x, dz_or_box_sums, grads);
        }
        let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
        let partials = Self::scratch(&self.partials);
        let weights = grads.at(conv.slot.weight.start);
        let pass = FilterPass::of(conv, x.ptr, dz_or_box_sums);
        let chunks = self.filter_partials(&pass)?;
        match conv.read {
            // Kernel rows then the bias row: exactly the slot's weight and bias ranges.
            ConvInput::Direct => {
                let count = (9 * cin + 1) * cout;
                kernels::sum_partials(
                    &mut self.device,
                    Launch::per_element(count),
                    partials,
                    int(chunks)?,
                    int(count)?,
                    weights,
                )
            }
            ConvInput::Upsampled2 => {
                kernels::sum_partials_upsampled(
                    &mut self.device,
                    Launch::per_element(9 * cin * cout),
                    partials,
                    int(chunks)?,
                    int(cin)?,
                    int(cout)?,
                    weights,
                )?;
                let bias_partials = self.upsampled_bias_partials(conv, &pass)?;
                kernels::sum_partials(
                    &mut self.device,
                    Launch::per_element(cout),
                    bias_partials,
                    int(chunks)?,
                    int(cout)?,
                    grads.at(conv.slot.bias.start),
                )
            }
        }
    }

    /// An upsampled convolution's bias gradient per chunk of `pass`'s source pixels: the sums
    /// of dz from its aligned box sums, the windows `pass` gathers (upsample2_bias_partials),
    /// into the partials scratch after the pass's own partials. Returns where they are.
    pub(super) fn upsampled_bias_partials(
        &mut self,
        conv: &Conv,
        pass: &FilterPass,
    ) -> Result<DevicePtr> {
        let (rows, columns) = pass.shape();
        let (per_chunk, chunks) = pass.chunks();
        let out = Self::scratch(&self.partials).offset(chunks * rows * columns);
        let [batch, src_h, src_w, _] = shape_args(conv.input)?;
        kernels::upsample2_bias_partials(
            &mut self.device,
            Launch::blocks([int(chunks)? as u32, 1, 1], 0),
            pass.gather.src,
            batch,
            src_h,
            src_w,
            int(conv.slot.out_channels)?,
            int(per_chunk)?,
            out,
        )?;
        Ok(out)
    }
}
