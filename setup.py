"""Builds the optional native CPU kernels (mpicnn/ops/native/native.c); the rest of the
package is configured in setup.cfg. Without a working C compiler the extensions are
skipped (``optional``) and mpicnn runs its NumPy code instead (mpicnn/ops/native.py).

On x86-64 the kernels are compiled once per micro-architecture level (AVX-512, AVX2,
baseline); native.py loads the best one the CPU runs, so one install serves login and
compute nodes of different generations.
"""
import platform

from setuptools import Extension, setup

LEVELS = ["x86-64-v4", "x86-64-v3"] if platform.machine().lower() in ("x86_64", "amd64") else []


def kernels(suffix, flags):
    return Extension(f"mpicnn.ops._native_{suffix}", sources=["mpicnn/ops/native/native.c"],
                     depends=["mpicnn/ops/native/conv_impl.h", "mpicnn/ops/native/norm_impl.h",
                              "mpicnn/ops/native/pool_impl.h"],
                     extra_compile_args=["-O3", "-Wno-psabi"] + flags, optional=True)


setup(ext_modules=[kernels(level.replace("-", "_"), [f"-march={level}", f'-DMPICNN_NATIVE_LEVEL="{level}"'])
                   for level in LEVELS] + [kernels("base", [])])
