"""jaxlab.generative — generative methods as pure functions plus one adapter each."""

from jaxlab.generative.flow import (
    RectifiedFlow,
    flow_matching_loss,
    interpolate,
    sample_ode,
    sample_time,
)

__all__ = ["RectifiedFlow", "flow_matching_loss", "interpolate", "sample_ode", "sample_time"]

from jaxlab.generative.tarflow import (
    TarFlow,
    patchify,
    tarflow_denoise,
    tarflow_forward,
    tarflow_log_prob,
    unpatchify,
)
from jaxlab.generative.tarflow_sampling import (
    block_forward,
    invert_cached,
    invert_jacobi,
    invert_recompute,
    supports_cache,
    tarflow_inverse,
)

__all__ += [
    "TarFlow",
    "block_forward",
    "invert_cached",
    "invert_jacobi",
    "invert_recompute",
    "patchify",
    "supports_cache",
    "tarflow_denoise",
    "tarflow_forward",
    "tarflow_inverse",
    "tarflow_log_prob",
    "unpatchify",
]

from jaxlab.generative import schedules
from jaxlab.generative.diffusion import (
    Diffusion,
    classifier_free_guidance,
    diffusion_loss,
)
from jaxlab.generative.likelihood import bits_per_dim, ode_log_likelihood
from jaxlab.generative.reflow import ReFlow, generate_couplings, paired_flow_matching_loss, straightness
from jaxlab.generative.samplers import sample_ddim, sample_ddpm, sample_pf_ode, uniform_times
from jaxlab.generative.upsample_guidance import upsample_guidance

__all__ += [
    "Diffusion",
    "ReFlow",
    "bits_per_dim",
    "classifier_free_guidance",
    "diffusion_loss",
    "generate_couplings",
    "ode_log_likelihood",
    "paired_flow_matching_loss",
    "sample_ddim",
    "sample_ddpm",
    "sample_pf_ode",
    "schedules",
    "straightness",
    "uniform_times",
    "upsample_guidance",
]

from jaxlab.generative.ddcm import (
    DDCMCode,
    ddcm_bits,
    ddcm_codebook,
    ddcm_decode,
    ddcm_encode,
    ddcm_generate,
    ddcm_start,
    psnr,
)

__all__ += ["DDCMCode", "ddcm_bits", "ddcm_codebook", "ddcm_decode", "ddcm_encode", "ddcm_generate", "ddcm_start", "psnr"]

from jaxlab.generative import consistency, shortcut
from jaxlab.generative.consistency import (
    ConsistencyTraining,
    ImprovedConsistencyTraining,
    consistency_training_loss,
    sample_consistency,
)
from jaxlab.generative.consistency_distillation import ConsistencyDistillation, consistency_distillation_loss
from jaxlab.generative.ign import IGN, ign_loss
from jaxlab.generative.shortcut import Shortcut, sample_shortcut, shortcut_loss, shortcut_targets
from jaxlab.generative.sid import SiD, sid_fake_score_loss, sid_generator_loss

__all__ += [
    "IGN",
    "ConsistencyDistillation",
    "ConsistencyTraining",
    "ImprovedConsistencyTraining",
    "Shortcut",
    "SiD",
    "consistency",
    "consistency_distillation_loss",
    "consistency_training_loss",
    "ign_loss",
    "sample_consistency",
    "sample_shortcut",
    "shortcut",
    "shortcut_loss",
    "shortcut_targets",
    "sid_fake_score_loss",
    "sid_generator_loss",
]
