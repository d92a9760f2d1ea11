"""Functional NumPy ops: the reference implementation of every layer's math.

Activations are channels-last (NHWC: (N, H, W, C)) 4-D arrays or (N, F) 2-D arrays;
weights keep PyTorch's layouts. Each op is a pure function: forward returns its
output (plus whatever backward needs), backward returns the input gradient and the
parameter gradients. The CUDA kernels (``kernels/*.cu``) are checked against these.

Each public op is wrapped by ``mpicnn.backend.kernel_version``: when the backend is
emu or cupy it calls its twin in ``mpicnn.ops.cuda`` (``op.numpy`` is always this
NumPy reference).
"""
from .activation import leaky_relu_backward, leaky_relu_forward, relu_backward, relu_forward
from .bucket import bucket_flatten, bucket_unflatten
from .conv import conv2d_backward, conv2d_forward, conv_output_size
from .dropout import dropout_keep, dropout_scale_mask, mix64, nchw_element_index
from .halo import halo_pack, halo_unpack
from .loss import cross_entropy_backward, cross_entropy_forward
from .norm import batch_norm_backward, batch_norm_eval_forward, batch_norm_train_forward
from .pool import (avg_pool2d_backward, avg_pool2d_forward, global_avg_pool_backward,
                   global_avg_pool_forward, global_max_pool_backward, global_max_pool_forward,
                   global_rms_pool_backward, global_rms_pool_forward, max_pool2d_backward,
                   max_pool2d_forward, pool_geometry)

__all__ = [
    "relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
    "conv2d_forward", "conv2d_backward", "conv_output_size",
    "dropout_keep", "dropout_scale_mask", "mix64", "nchw_element_index",
    "cross_entropy_forward", "cross_entropy_backward",
    "batch_norm_train_forward", "batch_norm_eval_forward", "batch_norm_backward",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "global_avg_pool_forward", "global_avg_pool_backward", "global_max_pool_forward",
    "global_max_pool_backward", "global_rms_pool_forward", "global_rms_pool_backward",
    "pool_geometry", "halo_pack", "halo_unpack", "bucket_flatten", "bucket_unflatten",
]
