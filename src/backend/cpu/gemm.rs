//! Matrix products on strided views of slices: through the `gemm` crate (its AVX-512 or AVX2
//! kernels, chosen at run time), and the Winograd passes' shallow ones by blocks of sums in
//! registers ([`shallow_product`]), which spare them the crate's set-up for each call.

use super::tile_transforms::prefetch;

/// A strided view of a matrix inside a slice.
#[derive(Clone, Copy)]
pub(super) struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    pub(super) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Matrix {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    pub(super) fn transposed(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    pub(super) fn cols(&self) -> usize {
        self.cols
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// c[m, n] (row-major) = a[m, k] b[k, n], or c += a b when `accumulate`.
pub(super) fn gemm(a: Matrix, b: Matrix, c: &mut [f32], accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && a.fits() && b.fits() && c.len() >= m * n);
    // SAFETY: the asserts above keep every index gemm computes from the shapes and strides
    // inside the three slices, and `c` is borrowed mutably, so it aliases neither input.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

/// c = a b, or c += a b when `accumulate`, for the Winograd passes' GEMMs: shallow ones (a
/// depth of 28 to 448), called once per group of transformed positions and piece of work, up
/// to 36 times a piece, where the `gemm` crate's set-up, packing and remainder kernels took
/// about 5% of conv5's kernel gradient. With AVX-512, blocks of c stay in registers over the
/// whole depth, 16 sums each, a block row at a time: each step of depth loads the block's
/// vectors of b's row and broadcasts a value of a per row, with no packing.
///
/// - The kernel gradients' a is transposed, its rows side by side: blocks of 4 rows by 4
///   vectors (64 columns), a step's 4 values of a in one load, or 8 by 2 where the columns
///   are fewer. On a 2-core Xeon the 4 x 4 blocks made conv3's and conv4's kernel gradients
///   (128 columns) 2-5% faster than 8 x 2, and conv2's and conv5's (64) as fast
///   (`bench/results/2026-11-30-cpu-2-threads-xeon/kernel-gradient-blocks/`); 2 x 8 and 16 x 1
///   were slower. (Blocks of 4 rows by 2 vectors, whose 8 sums cannot hide the multiply-adds'
///   latency, were 10% slower than the crate.)
/// - The other passes' a has its rows far apart: blocks of 4 rows by 4 vectors (64 columns),
///   fewer rows to gather a step, or 8 by 2 where the columns are fewer. They are used only
///   where b's panel (`depth` rows of the block's columns) reads well without packing: whole
///   rows of b, or a part of each row that stays in L1 over the depth, in half of its 48 KiB,
///   since the part's lines fall in only some of L1's sets. conv4's forward and backward-data,
///   128 rows of half of b's 128 columns, took 15% longer by blocks than by the crate.
/// - Otherwise, and for conv5's forward (38 rows a piece), the `gemm` crate.
///
/// Against the crate: conv2's forward and backward-data 9-10% faster, conv3's 5-8%, conv5's
/// backward-data 4%, every kernel gradient 4-9%
/// (`bench/results/2026-11-29-cpu-2-threads/kernel-gradient-products/` and
/// `shallow-products/`). The sums run over the depth in order, so the forward and
/// backward-data passes keep the crate's bits.
pub(super) fn shallow_product(a: Matrix, b: Matrix, c: &mut [f32], accumulate: bool) {
    let (m, depth, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == depth && a.fits() && b.fits() && c.len() >= m * n);
    let contiguous = b.col_stride == 1 && b.row_stride == n;
    let panel_reads_well = |columns: usize| n == columns || depth * columns * 4 <= 24 * 1024;
    let blocks = |rows: usize, columns: usize| contiguous && m % rows == 0 && n % columns == 0;
    let product = BlockProduct {
        a,
        b,
        c: &mut c[..m * n],
        accumulate,
    };
    let arch = pulp::Arch::new();
    if a.row_stride == 1 && blocks(4, 64) {
        arch.dispatch(Blocks::<4, 4, true>(product));
    } else if a.row_stride == 1 && blocks(8, 32) {
        arch.dispatch(Blocks::<8, 2, true>(product));
    } else if blocks(4, 64) && panel_reads_well(64) {
        arch.dispatch(Blocks::<4, 4, false>(product));
    } else if blocks(8, 32) && panel_reads_well(32) {
        arch.dispatch(Blocks::<8, 2, false>(product));
    } else {
        product.by_gemm_crate();
    }
}

/// Asks for the sums of the block after the one at (`first_row`, vector `v`) of `c` (rows of
/// `n` values, blocks of R rows by V vectors of `lanes` floats, in [`Blocks`]' order), so that
/// they arrive while this block runs. A kernel gradient's sums (conv5's: 36 x 32 KiB) leave L2
/// while a piece's transformed tiles go through it, and without the hint each block first
/// waited for its 16 lines: on a 2-core Xeon at batch 32, conv5's backward-filter took 4-6%
/// longer and conv4's 1-4% (`bench/results/2026-11-29-cpu-2-threads-xeon/`). (On the 2-core
/// EPYC, whose memory a thread reads 2.5 times as fast, a test harness found no gain.)
#[inline(always)]
fn prefetch_next_block<const R: usize, const V: usize>(
    (c, n): (&[f32], usize),
    (first_row, v): (usize, usize),
    lanes: usize,
) {
    let (first_row, v) = if v + V < n / lanes {
        (first_row, v + V)
    } else {
        (first_row + R, 0)
    };
    if first_row * n < c.len() {
        for row in c[first_row * n..].chunks_exact(n).take(R) {
            for vector in row[v * lanes..].chunks_exact(lanes).take(V) {
                prefetch(vector.as_ptr());
            }
        }
    }
}

/// [`shallow_product`]'s operands, and whether to add.
struct BlockProduct<'a> {
    a: Matrix<'a>,
    b: Matrix<'a>,
    c: &'a mut [f32],
    accumulate: bool,
}

impl BlockProduct<'_> {
    fn by_gemm_crate(self) {
        gemm(self.a, self.b, self.c, self.accumulate);
    }
}

/// [`shallow_product`] by blocks of R rows of c by V vectors of columns, for
/// [`pulp::Arch::dispatch`]; ADJACENT: a's rows lie side by side (a row stride of 1).
struct Blocks<'a, const R: usize, const V: usize, const ADJACENT: bool>(BlockProduct<'a>);

impl<const R: usize, const V: usize, const ADJACENT: bool> pulp::WithSimd
    for Blocks<'_, R, V, ADJACENT>
{
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        if S::F32_LANES != 16 {
            // The blocks are made for AVX-512's 32 registers; narrower vectors have 16, too
            // few for a block's sums.
            return self.0.by_gemm_crate();
        }
        let BlockProduct {
            a,
            b,
            c,
            accumulate,
        } = self.0;
        // b's rows lie one after another (`shallow_product` checked it).
        let n = b.cols;
        let b = &b.data[..b.rows * n];
        let (row_step, depth_step) = (a.row_stride, a.col_stride);
        for first_row in (0..a.rows).step_by(R) {
            for v in (0..n / S::F32_LANES).step_by(V) {
                let mut sums = [[simd.splat_f32s(0.0); V]; R];
                if accumulate {
                    for (r, sums) in sums.iter_mut().enumerate() {
                        let row = S::as_simd_f32s(&c[(first_row + r) * n..][..n]).0;
                        *sums = std::array::from_fn(|j| row[v + j]);
                    }
                    prefetch_next_block::<R, V>((c, n), (first_row, v), S::F32_LANES);
                }
                let a_rows = a.data[first_row * row_step..].as_ptr();
                for (k, b) in b.chunks_exact(n).enumerate() {
                    let b = S::as_simd_f32s(b).0;
                    let b: [S::f32s; V] = std::array::from_fn(|j| b[v + j]);
                    let values: [f32; R] = if ADJACENT {
                        a.data[first_row + k * depth_step..][..R]
                            .try_into()
                            .unwrap()
                    } else {
                        // SAFETY: a(first_row + r, k) lies at (first_row + r) row_step +
                        // k depth_step in a.data, which `a.fits()` asserted for every row
                        // below a.rows and every k below the depth, b's rows.
                        std::array::from_fn(|r| unsafe {
                            *a_rows.add(r * row_step + k * depth_step)
                        })
                    };
                    for (sums, &a) in sums.iter_mut().zip(&values) {
                        let a = simd.splat_f32s(a);
                        for (sum, &b) in sums.iter_mut().zip(&b) {
                            *sum = simd.mul_add_f32s(a, b, *sum);
                        }
                    }
                }
                for (r, sums) in sums.iter().enumerate() {
                    let row = S::as_mut_simd_f32s(&mut c[(first_row + r) * n..][..n]).0;
                    row[v..v + V].copy_from_slice(sums);
                }
            }
        }
    }
}
