// Constructs the CPU emulator cannot run, turned into compile errors that name them.
// Included last by cuda_emu.h, after every system header the emulator itself needs.
#pragma once

// Inline PTX. Code under `#ifdef __CUDA_ARCH__` is skipped (the emulator does not
// define it), so the portable `#else` branch of such code compiles fine.
// kernels/emu/build.py recognises this name in g++'s output and explains it.
#define asm mpicnn_emulator_cannot_run_inline_PTX_asm

template <class T>
struct __emu_refused { static constexpr bool value = false; };
