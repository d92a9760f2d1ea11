// cuda_fp16.h for the CPU emulator: half-precision types are not emulated.
#pragma once
#error "mpicnn emulator: half precision (cuda_fp16.h) is not supported by the CPU emulator"
