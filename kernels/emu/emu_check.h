// What kernels/emu/source.py rewrites __shared__ declarations into (see there):
// default mode notes each static __shared__ variable's size, so a kernel over the
// 48 KB a GPU allows fails; under memcheck every __shared__ variable and the dynamic
// shared memory live in a guarded arena (check.cpp), so accesses past them are caught.
#pragma once

extern "C" {
__EMU_HIDDEN void* __emu_check_shared(size_t bytes, const char* name, const char* file, int line);
__EMU_HIDDEN unsigned char* __emu_check_dynamic_smem(const char* name);
// The dynamic shared memory of a memcheck launch (runtime.cpp calls it as a launch starts).
__EMU_HIDDEN unsigned char* __emu_check_launch_begin(unsigned int shared_bytes);
}

struct __emu_shared_note {
    __emu_shared_note(size_t bytes, const char* name, const char* file, int line) {
        __emu_note_static_shared(bytes, name, file, line);
    }
};
