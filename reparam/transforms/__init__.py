"""Pure tensor maths of structural re-parameterization: tensors in, tensors out.

Floating inputs are processed in float64 and cast back to the dtype / device of the primary
input. See each module's docstring for the maths and its source paper.
"""

from .affine import fold_affine_after, fold_affine_before, norm_to_affine, repeat_affine
from .align import align_specs, concat_specs, crop_as_padding, merge_specs
from .compose import compose_sequential
from .concat import concat_kernels
from .kernels import (
    avgpool_kernel,
    center_pad_kernel,
    diagonal_kernel,
    dilate_kernel,
    identity_kernel,
    pad_kernel,
    regroup_kernel,
)
from .linear import merge_linears
from .locality import (
    conv_to_fc,
    dense_to_grouped_fc,
    fc_as_dense,
    grouped_fc_to_dense,
    inject_convs,
)
from .transposed import fold_affine_after_transposed

__all__ = [
    "align_specs",
    "concat_specs",
    "crop_as_padding",
    "merge_specs",
    "avgpool_kernel",
    "center_pad_kernel",
    "compose_sequential",
    "concat_kernels",
    "conv_to_fc",
    "dense_to_grouped_fc",
    "diagonal_kernel",
    "dilate_kernel",
    "fc_as_dense",
    "fold_affine_after",
    "fold_affine_after_transposed",
    "fold_affine_before",
    "grouped_fc_to_dense",
    "identity_kernel",
    "inject_convs",
    "merge_linears",
    "norm_to_affine",
    "pad_kernel",
    "regroup_kernel",
    "repeat_affine",
]
