"""jaxlab.ssm — public names re-exported here."""

from jaxlab.ssm.block import S4Block
from jaxlab.ssm.conv import causal_conv, fft_length
from jaxlab.ssm.discretize import discretize, discretize_diag
from jaxlab.ssm.hippo import hippo
from jaxlab.ssm.labels import SSM_PARAM_NAMES, ssm_adamw, ssm_multi_transform, ssm_param_labels
from jaxlab.ssm.layers import SSM, zero_state
from jaxlab.ssm.models import SSMAutoregressive, SSMClassifier
from jaxlab.ssm.naive import ssm_kernel_naive
from jaxlab.ssm.nplr import NPLR, dplr_legs, legs_low_rank, nplr_legs
from jaxlab.ssm.online import hippo_basis, hippo_project, reconstruct
from jaxlab.ssm.recurrence import (
    dense_scan,
    dense_step,
    diag_associative_scan,
    diag_scan,
    diag_step,
)
from jaxlab.ssm.s4 import S4Params, cauchy, s4_dense, s4_kernel, s4_recurrence
from jaxlab.ssm.s4d import S4DParams, s4d_discretize, s4d_init, s4d_kernel, vandermonde_kernel
from jaxlab.ssm.signals import bandlimited_noise, default_theta, reconstruct_history, reconstruction_error

__all__ = [
    "NPLR",
    "SSM",
    "SSM_PARAM_NAMES",
    "S4Block",
    "S4DParams",
    "S4Params",
    "SSMAutoregressive",
    "SSMClassifier",
    "bandlimited_noise",
    "cauchy",
    "causal_conv",
    "default_theta",
    "dense_scan",
    "dense_step",
    "diag_associative_scan",
    "diag_scan",
    "diag_step",
    "discretize",
    "discretize_diag",
    "dplr_legs",
    "fft_length",
    "hippo",
    "hippo_basis",
    "hippo_project",
    "legs_low_rank",
    "nplr_legs",
    "reconstruct",
    "reconstruct_history",
    "reconstruction_error",
    "s4_dense",
    "s4_kernel",
    "s4_recurrence",
    "s4d_discretize",
    "s4d_init",
    "s4d_kernel",
    "ssm_adamw",
    "ssm_kernel_naive",
    "ssm_multi_transform",
    "ssm_param_labels",
    "vandermonde_kernel",
    "zero_state",
]
