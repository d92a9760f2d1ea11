// The header g++ includes before every .cu for the CPU emulator (kernels/emu). It
// makes plain CUDA C++ compile as C++17: qualifiers, built-in variables, vector types,
// device math, atomics, barriers and warp collectives. Like NVRTC it defines
// __CUDACC__ and __CUDACC_RTC__; unlike device code it does not define __CUDA_ARCH__,
// so `#ifdef __CUDA_ARCH__` blocks (inline PTX and such) take their portable branch.
#pragma once
#define __CUDACC__ 1
#define __CUDACC_RTC__ 1
#define __CUDACC_VER_MAJOR__ 12
#define __CUDACC_VER_MINOR__ 0
#define __MPICNN_EMU__ 1

#ifdef __EMU_PARSE_ONLY
// Preprocessing pass that lists the kernels of a file (kernels/emu/source.py).
#define __global__ __emu_kernel_marker__
#endif

#include "emu_types.h"

#ifndef __EMU_PARSE_ONLY
#include "emu_math.h"
#include "emu_atomic.h"
#include "emu_sync.h"
#include "emu_runtime.h"
#include "emu_check.h"
#include "emu_refuse.h"
#endif
