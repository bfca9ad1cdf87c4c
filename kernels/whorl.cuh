// Shared by every kernel file: the few things CUDA and the CPU emulator spell differently.
#pragma once

#ifndef WHORL_EMULATOR
// Dynamic shared memory (the emulator defines this to poisoned per-block memory).
#define WHORL_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
// Unrolls the loop that follows completely (hot loops of constant trip count).
#define WHORL_UNROLL _Pragma("unroll")
#else
#define WHORL_UNROLL
#endif

// Threads per block of every kernel launched with more than one thread.
#define WHORL_THREADS 256

// Activation codes, as the Rust side passes them.
#define WHORL_NO_ACTIVATION 0
#define WHORL_RELU 1
#define WHORL_SIGMOID 2
