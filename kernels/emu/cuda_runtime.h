// cuda_runtime.h for the CPU emulator: everything it would declare for device code is
// already provided by cuda_emu.h, which g++ includes before every kernel file.
#pragma once
