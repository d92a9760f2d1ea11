// mma.h for the CPU emulator: tensor-core fragments have no CPU counterpart.
#pragma once
#error "mpicnn emulator: tensor-core wmma (mma.h) cannot run on the CPU emulator; keep a non-wmma kernel for it"
