// Fibers for the CPU emulator: one per blocked CUDA thread, switched cooperatively.
// On x86-64 a switch is a few instructions of assembly (callee-saved registers, the
// stack pointer, MXCSR and the x87 control word); elsewhere ucontext is the
// portable fallback (slower: swapcontext makes a sigprocmask system call).
#pragma once
#include <stddef.h>
// EMU_FIBER_UCONTEXT (MPICNN_EMU_FIBERS=ucontext) forces the fallback, to test it on x86-64.
#if defined(__x86_64__) && !defined(EMU_FIBER_UCONTEXT)
#define EMU_FIBER_ASM 1
#else
#include <ucontext.h>
#endif

struct Fiber {
    void* sp;         // saved stack pointer while switched out (x86-64)
    char* stack;      // lowest usable byte (a guard page lies below it)
    size_t size;      // usable bytes
    int serial;       // creation order, staggers the stack tops
    Fiber* next_free;
#if !EMU_FIBER_ASM
    ucontext_t uc;
#endif
};

// Saves the running context into `from` and continues `to`.
#if EMU_FIBER_ASM
extern "C" __attribute__((visibility("hidden"))) void emu_fiber_swap(void** save_sp, void* new_sp);
static inline void fiber_switch(Fiber* from, Fiber* to) { emu_fiber_swap(&from->sp, to->sp); }
#else
void fiber_switch(Fiber* from, Fiber* to);
#endif
// Makes `f` start `entry` (which must never return) when it is next switched to.
void fiber_prepare(Fiber* f, void (*entry)());
// A fiber with a stack from the pool (allocated once, reused); nullptr if out of memory.
Fiber* fiber_alloc();
void fiber_free(Fiber* f);
// Returns every fiber to the pool (after a failed launch abandons blocked fibers).
void fiber_free_all();
// Records the caller's floating-point control state; new fibers start with it.
void fiber_capture_fp_state();
