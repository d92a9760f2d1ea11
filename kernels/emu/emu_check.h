// What kernels/emu/source.py rewrites __shared__ declarations into (see there):
// default mode notes each static __shared__ variable's size, so a kernel over the
// 48 KB a GPU allows fails; under memcheck every __shared__ variable and the dynamic
// shared memory live in a guarded arena (check.cpp), so accesses past them are caught.
#pragma once

extern "C" {
__EMU_HIDDEN void* __emu_check_shared(size_t bytes, const char* name, const char* file, int line);
__EMU_HIDDEN unsigned char* __emu_check_dynamic_smem(const char* name);
// The dynamic shared memory of a memcheck launch (runtime.cpp calls it as a launch starts);
// `race`: racecheck is on for it.
__EMU_HIDDEN unsigned char* __emu_check_launch_begin(unsigned int shared_bytes, int race);
// racecheck: the accesses of an atomic are not hazards (set around them in memcheck builds).
extern __EMU_HIDDEN int __emu_race_in_atomic;
}

// Once per variable, in the function that declares it: the first thread to pass the
// declaration notes its size (a plain flag and a cold call, not a C++ static
// initialiser: every thread takes this path, and barrier-heavy kernels felt the guard).
#define __EMU_NOTE_SHARED(name)                                                      \
    do {                                                                             \
        static bool __emu_noted;                                                     \
        if (__builtin_expect(!__emu_noted, 0)) {                                     \
            __emu_noted = true;                                                      \
            __emu_note_static_shared(sizeof(name), #name, __FILE__, __LINE__);       \
        }                                                                            \
    } while (0)
