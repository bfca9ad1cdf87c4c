//! Matrix products on strided views of slices, through the `gemm` crate (its AVX-512 or AVX2
//! kernels, chosen at run time), and the kernel gradients' sums of products in registers
//! ([`add_products`]), whose shallow GEMMs paid the crate's set-up once per call.

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

/// Rows of c that a block of [`add_products`] keeps in registers, by two vectors of columns:
/// 16 sums, half of AVX-512's registers. (Four rows, whose 8 sums cannot hide the latency of
/// the multiply-adds, made conv5's kernel gradient 10% slower than the `gemm` crate.)
const BLOCK_ROWS: usize = 8;

/// c[i, j] += the sum over k of a[k, i] b[k, j], with a [depth, m], b [depth, n] and c [m, n]
/// row-major: the kernel gradients' GEMMs, whose depth is a piece's tiles (28 to 448 rows for
/// conv5, 64 for conv2-4). With AVX-512, m a multiple of 8 and n of 32, a block of 8 rows of
/// c by two vectors of columns stays in registers over the whole depth, each step one
/// broadcast of a per row and two loads of b, from L1: no packing and no set-up per call.
/// That took 4-10% off the kernel gradients (the `gemm` crate's set-up is paid once per call,
/// 36 calls per piece of conv5's). Otherwise the `gemm` crate does it.
pub(super) fn add_products(a: &[f32], b: &[f32], (c, m, n): (&mut [f32], usize, usize)) {
    let depth = a.len().checked_div(m).unwrap_or(0);
    assert!(a.len() == depth * m && b.len() >= depth * n && c.len() >= m * n);
    let products = AddProducts {
        a,
        b: &b[..depth * n],
        c: &mut c[..m * n],
        depth,
        m,
        n,
    };
    if m % BLOCK_ROWS == 0 && n % 32 == 0 {
        pulp::Arch::new().dispatch(products);
    } else {
        products.by_gemm_crate();
    }
}

/// [`add_products`]' operands, for [`pulp::Arch::dispatch`].
struct AddProducts<'a> {
    a: &'a [f32],
    b: &'a [f32],
    c: &'a mut [f32],
    depth: usize,
    m: usize,
    n: usize,
}

impl AddProducts<'_> {
    fn by_gemm_crate(self) {
        let a = Matrix::row_major(self.a, self.depth, self.m).transposed();
        let b = Matrix::row_major(self.b, self.depth, self.n);
        gemm(a, b, self.c, true);
    }
}

impl pulp::WithSimd for AddProducts<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        if S::F32_LANES < 16 {
            // Narrower vectors have 16 registers, too few for the block's sums.
            return self.by_gemm_crate();
        }
        let AddProducts { a, b, c, m, n, .. } = self;
        for first_row in (0..m).step_by(BLOCK_ROWS) {
            for v in (0..n / S::F32_LANES).step_by(2) {
                let mut sums = [[simd.splat_f32s(0.0); 2]; BLOCK_ROWS];
                for (r, sums) in sums.iter_mut().enumerate() {
                    let row = S::as_simd_f32s(&c[(first_row + r) * n..][..n]).0;
                    *sums = [row[v], row[v + 1]];
                }
                for (a, b) in a.chunks_exact(m).zip(b.chunks_exact(n)) {
                    let b = S::as_simd_f32s(b).0;
                    let (b0, b1) = (b[v], b[v + 1]);
                    let a: &[f32; BLOCK_ROWS] = a[first_row..][..BLOCK_ROWS].try_into().unwrap();
                    for r in 0..BLOCK_ROWS {
                        let a = simd.splat_f32s(a[r]);
                        sums[r][0] = simd.mul_add_f32s(a, b0, sums[r][0]);
                        sums[r][1] = simd.mul_add_f32s(a, b1, sums[r][1]);
                    }
                }
                for (r, sums) in sums.iter().enumerate() {
                    let row = S::as_mut_simd_f32s(&mut c[(first_row + r) * n..][..n]).0;
                    [row[v], row[v + 1]] = *sums;
                }
            }
        }
    }
}
