// Fiber implementation for the CPU emulator: the x86-64 context switch, the
// ucontext fallback, and a pool of guarded stacks that are allocated once and reused.
#include "fiber.h"
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>


namespace {
constexpr int kMaxFibers = 1100;  // one per thread of a 1024-thread block, plus spares
Fiber g_fibers[kMaxFibers];
int g_nfibers;
Fiber* g_free;
size_t g_page;
size_t g_stack_bytes;
}  // namespace

#if EMU_FIBER_ASM
// emu_fiber_swap(void** save_sp, void* new_sp) (declared in fiber.h): push callee-saved
// state on the current stack, store the stack pointer, load the other one, pop its state.
asm(R"(
    .text
    .globl emu_fiber_swap
    .hidden emu_fiber_swap
    .type emu_fiber_swap, @function
emu_fiber_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_fiber_swap, .-emu_fiber_swap
)");

namespace {
unsigned int g_mxcsr = 0x1f80;
unsigned short g_fpucw = 0x037f;
}

void fiber_capture_fp_state() {
    asm volatile("stmxcsr %0" : "=m"(g_mxcsr));
    asm volatile("fnstcw %0" : "=m"(g_fpucw));
}

void fiber_prepare(Fiber* f, void (*entry)()) {
    // Stagger stack tops: tops spaced by a power of two would all map to the same
    // cache and TLB sets.
    size_t stagger = ((size_t)f->serial * 1088) % 16384;
    unsigned long long* top = (unsigned long long*)(((size_t)(f->stack + f->size) - stagger) & ~(size_t)15);
    // Frame popped by emu_fiber_swap: fp state, r15..r12, rbx, rbp, return address.
    // `entry` is entered with rsp % 16 == 8, as after a call.
    unsigned long long* sp = top - 9;
    unsigned int fp[2] = {g_mxcsr, g_fpucw};
    memcpy(&sp[0], fp, 8);
    for (int i = 1; i <= 6; ++i) sp[i] = 0;  // r15 r14 r13 r12 rbx rbp
    sp[7] = (unsigned long long)entry;       // return address, at a 16-byte boundary
    sp[8] = 0;                               // fake return address of `entry`
    f->sp = sp;
}
#else
void fiber_capture_fp_state() {}
void fiber_switch(Fiber* from, Fiber* to) { swapcontext(&from->uc, &to->uc); }
void fiber_prepare(Fiber* f, void (*entry)()) {
    getcontext(&f->uc);
    size_t stagger = ((size_t)f->serial * 1088) % 16384;
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = f->size - stagger;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, entry, 0);
}
#endif

Fiber* fiber_alloc() {
    if (g_free) {
        Fiber* f = g_free;
        g_free = f->next_free;
        return f;
    }
    if (g_nfibers == kMaxFibers) return nullptr;
    if (!g_page) {
        g_page = (size_t)sysconf(_SC_PAGESIZE);
        const char* kb = getenv("MPICNN_EMU_STACK_KB");
        size_t want = (kb && atol(kb) > 0 ? (size_t)atol(kb) : 256) * 1024;
        g_stack_bytes = (want + g_page - 1) / g_page * g_page;
        if (g_stack_bytes < 32 * 1024) g_stack_bytes = 32 * 1024;
    }
    // NORESERVE: only the pages a fiber touches are ever backed by memory.
    char* base = (char*)mmap(nullptr, g_stack_bytes + g_page, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) return nullptr;
    mprotect(base, g_page, PROT_NONE);  // guard page: an overflow faults instead of corrupting
    Fiber* f = &g_fibers[g_nfibers];
    f->serial = g_nfibers++;
    f->stack = base + g_page;
    f->size = g_stack_bytes;
    f->next_free = nullptr;
    return f;
}

void fiber_free(Fiber* f) {
    f->next_free = g_free;
    g_free = f;
}

void fiber_free_all() {
    g_free = nullptr;
    for (int i = g_nfibers - 1; i >= 0; --i) fiber_free(&g_fibers[i]);
}
