// 2x2 max pooling (stride 2) and nearest x2 upsampling, NHWC, forward and backward.
// One thread per output element (per input element for upsample backward); block 256.
#include "whorl.cuh"

// The input index of the first maximum (row-major) of output element e's window.
__device__ __forceinline__ int first_max(const float* __restrict__ x, int e, int h, int w, int c) {
    int ch = e % c, col = e / c % (w / 2), row = e / (c * (w / 2));  // row over batch x h/2
    int top = ((2 * row) * w + 2 * col) * c + ch, bottom = top + w * c;
    int window[4] = {top, top + c, bottom, bottom + c};
    int best = window[0];
    for (int i = 1; i < 4; ++i)
        if (x[window[i]] > x[best]) best = window[i];
    return best;
}

// y = max of each 2x2 window. Grid ceil(len(y) / 256).
extern "C" __global__ void maxpool2_forward(int batch, int h, int w, int c, const float* __restrict__ x,
                                            float* __restrict__ y) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * (h / 2) * (w / 2) * c) return;
    y[e] = x[first_max(x, e, h, w, c)];
}

// dx = dy at the window's first maximum (as TensorFlow) times the derivative there of the
// activation that produced x (activation_slope; WHORL_NO_ACTIVATION for none), 0 elsewhere;
// each thread writes its window's four elements, so no two threads touch the same element.
// Grid ceil(len(dy) / 256).
extern "C" __global__ void maxpool2_backward(int batch, int h, int w, int c, const float* __restrict__ x,
                                             int activation, const float* __restrict__ dy,
                                             float* __restrict__ dx) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * (h / 2) * (w / 2) * c) return;
    int ch = e % c, col = e / c % (w / 2), row = e / (c * (w / 2));
    int top = ((2 * row) * w + 2 * col) * c + ch, bottom = top + w * c;
    int best = first_max(x, e, h, w, c);
    const float g = dy[e] * activation_slope(x[best], activation);
    dx[top] = top == best ? g : 0.0f;
    dx[top + c] = top + c == best ? g : 0.0f;
    dx[bottom] = bottom == best ? g : 0.0f;
    dx[bottom + c] = bottom + c == best ? g : 0.0f;
}

// y[2r + i, 2s + j] = x[r, s]. Grid ceil(len(y) / 256).
extern "C" __global__ void upsample2_forward(int batch, int h, int w, int c, const float* __restrict__ x,
                                             float* __restrict__ y) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * 4 * h * w * c) return;
    int ch = e % c, col = e / c % (2 * w), row = e / (c * 2 * w);  // row over batch x 2h
    y[e] = x[((row / 2) * w + col / 2) * c + ch];
}

// dx[r, s] = sum over i, j of dy[2r + i, 2s + j]. Grid ceil(len(dx) / 256).
extern "C" __global__ void upsample2_backward(int batch, int h, int w, int c, const float* __restrict__ dy,
                                              float* __restrict__ dx) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= batch * h * w * c) return;
    int ch = e % c, col = e / c % w, row = e / (c * w);  // row over batch x h
    int top = ((2 * row) * 2 * w + 2 * col) * c + ch, bottom = top + 2 * w * c;
    dx[e] = dy[top] + dy[top + c] + dy[bottom] + dy[bottom + c];
}
