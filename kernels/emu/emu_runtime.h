// Interface between the generated kernel table (emu_launch.h) and the emulator
// runtime (runtime.cpp), plus the functions a kernel library exports to Python.
#pragma once
#include <stddef.h>

#define EMU_MAX_THREADS 1024
#define EMU_MAX_DYNAMIC_SMEM (227 * 1024)  // as on sm_80/sm_90 with opt-in
#define EMU_EXPORT extern "C" __attribute__((visibility("default")))

// Launch flags (kernels/emu/library.py mirrors them).
enum {
    EMU_POISON_SHARED = 1,  // fill dynamic shared memory with 0xff bytes
    EMU_CHECK_MEM = 2,      // memcheck: the library is instrumented (check.cpp)
    EMU_CHECK_SYNC = 4,     // synccheck: every thread of a block reaches the same barriers
    EMU_CHECK_RACE = 8,     // racecheck: shared-memory accesses of two threads between barriers (check.cpp)
};

struct __emu_config {
    const char* kernel;         // name, for error messages
    int index;                  // in the launch table
    unsigned int grid[3];
    unsigned int block[3];
    unsigned int shared_bytes;  // dynamic shared memory of this launch
    unsigned int shared_limit;  // static + dynamic may not exceed it (48 KB unless opted in)
    int flags;
};

// Runs `body(ctx)` once per CUDA thread of the grid. 0 on success; -1 with the reason
// in emu_last_error() when the kernel failed (deadlock, assert, __trap, ...).
extern "C" __attribute__((visibility("hidden"))) int __emu_run_grid(const __emu_config* cfg, void (*body)(void*), void* ctx);

EMU_EXPORT const char* emu_last_error(void);

// For check.cpp: ends the launch with "kernel 'k', block (x,y,z): thread (...): <message>".
[[noreturn]] __attribute__((visibility("hidden"), format(printf, 1, 2))) void __emu_fail_thread(const char* fmt, ...);
// "thread (x,y,z) [warp w lane l]" of thread t of the current block, for messages.
__attribute__((visibility("hidden"))) const char* __emu_thread_name(int t, char* buf, size_t n);
// racecheck: accesses in different epochs are ordered. The epoch moves on at every
// block start, released barrier and memory fence; a warp's count at every collective
// it completes (lanes of one warp are ordered by those too).
extern __attribute__((visibility("hidden"))) unsigned long long __emu_race_epoch;
extern __attribute__((visibility("hidden"))) unsigned int __emu_race_warp[EMU_MAX_THREADS / 32];
// The running launch, or nullptr outside launches.
__attribute__((visibility("hidden"))) const __emu_config* __emu_current_launch(void);
// Adds a kernel's static __shared__ variable to its total, checked against the launch's limit.
__attribute__((visibility("hidden"), cold)) void __emu_note_static_shared(size_t bytes, const char* name, const char* file, int line);
// The watchdog (watchdog.cpp): started by a launch; it calls back into runtime.cpp.
__attribute__((visibility("hidden"))) void __emu_watch_launch();
__attribute__((visibility("hidden"))) bool __emu_watch_in_launch();
__attribute__((visibility("hidden"))) unsigned long long __emu_watch_activity();
// The current thread loops on memory without calling the runtime: yield, or fail the launch.
__attribute__((visibility("hidden"))) void __emu_watch_spin(const void* pc);
// Measures one fiber switch, in nanoseconds, over n round trips.
EMU_EXPORT double emu_fiber_switch_ns(int n);
