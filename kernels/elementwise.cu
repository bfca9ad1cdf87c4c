// Element-wise kernels: activation derivatives, the MSE gradient and the fused RMSprop and Adam
// updates.
// Each thread handles one element; grid ceil(len / 256), block 256.
#include "whorl.cuh"

// relu: dz = dy * (y > 0); sigmoid: dz = dy * y * (1 - y); in place on grad.
extern "C" __global__ void activation_backward(int activation, int len, const float* __restrict__ y,
                                               float* __restrict__ grad) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    grad[i] *= activation_slope(y[i], activation);
}

// grad = d mse / d prediction = 2 (prediction - target) / len
extern "C" __global__ void mse_backward(int len, const float* __restrict__ prediction,
                                        const float* __restrict__ target, float* __restrict__ grad) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) grad[i] = 2.0f * (prediction[i] - target[i]) / float(len);
}

// Keras's RMSprop over every parameter in one launch:
// v = rho v + (1 - rho) g^2; w = w - lr g / sqrt(v + epsilon)
extern "C" __global__ void rmsprop_update(int count, float learning_rate, float rho, float epsilon,
                                          float* __restrict__ params, const float* __restrict__ grads,
                                          float* __restrict__ velocity) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    float g = grads[i];
    float v = rho * velocity[i] + (1.0f - rho) * g * g;
    velocity[i] = v;
    params[i] -= learning_rate * g / sqrtf(v + epsilon);
}

// Keras's Adam over every parameter in one launch, at step t; step_size is the bias-corrected
// alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t), computed once on the host:
// m = m + (g - m)(1 - beta_1); v = v + (g^2 - v)(1 - beta_2); w = w - alpha m / (sqrt(v) + epsilon)
extern "C" __global__ void adam_update(int count, float step_size, float beta_1, float beta_2,
                                       float epsilon, float* __restrict__ params,
                                       const float* __restrict__ grads, float* __restrict__ momentum,
                                       float* __restrict__ velocity) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    float g = grads[i];
    float m = momentum[i] + (g - momentum[i]) * (1.0f - beta_1);
    float v = velocity[i] + (g * g - velocity[i]) * (1.0f - beta_2);
    momentum[i] = m;
    velocity[i] = v;
    params[i] -= step_size * m / (sqrtf(v) + epsilon);
}
