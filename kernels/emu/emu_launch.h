// Included by the generated wrapper after the user's .cu: turns each kernel into a
// launcher shaped like cuLaunchKernel (void** args) and describes its parameter
// types, so Python can reject a wrong argument before it becomes garbage.
// The generated code then defines __emu_table (one entry per kernel name).
#pragma once
#undef asm  // system headers below may use the keyword
#include <stdio.h>
#include <tuple>
#include <type_traits>
#include <utility>
#include "emu_runtime.h"

// One character per scalar type: NumPy's type codes, 'c' for plain char.
template <class T> struct __emu_code { static constexpr char c = 0; };
#define __EMU_CODE(T, C) template <> struct __emu_code<T> { static constexpr char c = C; };
__EMU_CODE(bool, '?') __EMU_CODE(char, 'c') __EMU_CODE(signed char, 'b') __EMU_CODE(unsigned char, 'B')
__EMU_CODE(short, 'h') __EMU_CODE(unsigned short, 'H') __EMU_CODE(int, 'i') __EMU_CODE(unsigned int, 'I')
__EMU_CODE(long, 'l') __EMU_CODE(unsigned long, 'L') __EMU_CODE(long long, 'q')
__EMU_CODE(unsigned long long, 'Q') __EMU_CODE(float, 'f') __EMU_CODE(double, 'd')

template <class T> constexpr char __emu_scalar_code() {
    if constexpr (std::is_enum_v<T>) return __emu_code<std::underlying_type_t<T>>::c;
    else return __emu_code<T>::c;
}

// Parameter code (kernels/emu/args.py reads it): a scalar code; "V<size>" for a struct
// passed by value; "p<code>:<alignment>:<size>" for a pointer, where the code is that of
// the pointee's scalar (float4* -> f), 'v' for void and 'V' for a struct, and size is
// the pointee's (an array for it must hold a whole number of them).
template <class P> int __emu_param_code(char* out, size_t n) {
    using D = std::decay_t<P>;
    if constexpr (std::is_pointer_v<D>) {
        using E = std::remove_cv_t<std::remove_pointer_t<D>>;
        if constexpr (std::is_void_v<E>) {
            return snprintf(out, n, "pv:1:1");
        } else {
            char c = __emu_scalar_code<std::remove_cv_t<typename __emu_vec_elem<E>::type>>();
            return snprintf(out, n, "p%c:%zu:%zu", c ? c : 'V', alignof(E), sizeof(E));
        }
    } else {
        char c = __emu_scalar_code<D>();
        return c ? snprintf(out, n, "%c", c) : snprintf(out, n, "V%zu", sizeof(D));
    }
}

template <auto K> struct __emu_kernel;
template <class... P, void (*K)(P...)>
struct __emu_kernel<K> {
    using Args = std::tuple<std::decay_t<P>...>;

    template <size_t... I>
    static int run(const __emu_config* cfg, void** args, std::index_sequence<I...>) {
        Args a(*static_cast<std::decay_t<P>*>(args[I])...);
        // Each thread gets its own copy of the parameters, as on a GPU.
        return __emu_run_grid(cfg, [](void* p) { Args& a = *static_cast<Args*>(p); K(std::get<I>(a)...); }, &a);
    }
    static int launch(const __emu_config* cfg, void** args) { return run(cfg, args, std::index_sequence_for<P...>{}); }

    static void signature(char* out, size_t n) {
        int (*codes[])(char*, size_t) = {&__emu_param_code<P>..., nullptr};
        size_t k = 0;
        out[0] = 0;
        for (size_t i = 0; i < sizeof...(P) && k < n; ++i) {
            if (i) k += snprintf(out + k, n - k, ",");
            if (k < n) k += codes[i](out + k, n - k);
        }
    }
};

struct __emu_entry {
    const char* name;
    void (*signature)(char* out, size_t n);
    int (*launch)(const __emu_config* cfg, void** args);
};
#define EMU_KERNEL_ENTRY(NAME, ...) \
    { NAME, &__emu_kernel<__VA_ARGS__>::signature, &__emu_kernel<__VA_ARGS__>::launch }

extern const __emu_entry __emu_table[];
extern const int __emu_table_size;

EMU_EXPORT int emu_kernel_count(void) { return __emu_table_size; }
EMU_EXPORT const char* emu_kernel_name(int i) { return __emu_table[i].name; }
EMU_EXPORT void emu_kernel_signature(int i, char* out, int n) { __emu_table[i].signature(out, (size_t)n); }
EMU_EXPORT int emu_launch(int i, const unsigned int* grid, const unsigned int* block, unsigned int shared_bytes,
                          unsigned int shared_limit, int flags, void** args) {
    __emu_config cfg = {__emu_table[i].name, i, {grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]},
                        shared_bytes, shared_limit, flags};
    return __emu_table[i].launch(&cfg, args);
}
