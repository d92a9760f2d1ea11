// Interface between the generated kernel table (emu_launch.h) and the emulator
// runtime (runtime.cpp), plus the functions a kernel library exports to Python.
#pragma once

#define EMU_MAX_THREADS 1024
#define EMU_MAX_DYNAMIC_SMEM (227 * 1024)  // as on sm_80/sm_90 with opt-in
#define EMU_EXPORT extern "C" __attribute__((visibility("default")))

enum { EMU_POISON_SHARED = 1 };  // launch flag: fill dynamic shared memory with 0xff bytes

struct __emu_config {
    const char* kernel;    // name, for error messages
    unsigned int grid[3];
    unsigned int block[3];
    unsigned int shared_bytes;
    int flags;
};

// Runs `body(ctx)` once per CUDA thread of the grid. 0 on success; -1 with the reason
// in emu_last_error() when the kernel failed (deadlock, assert, __trap, ...).
extern "C" __attribute__((visibility("hidden"))) int __emu_run_grid(const __emu_config* cfg, void (*body)(void*), void* ctx);

EMU_EXPORT const char* emu_last_error(void);
// Measures one fiber switch, in nanoseconds, over n round trips.
EMU_EXPORT double emu_fiber_switch_ns(int n);
