"""Schedulers for the diffusion engines: the "fast" DPM-Solver presets, and a Stable Audio sampler
that works without `torchsde`.

Stable Audio Open ships `CosineDPMSolverMultistepScheduler`, an SDE DPM-Solver++ whose Brownian
noise comes from `torchsde`; without that package diffusers cannot even build it, so a folder
saved with it does not load. Its maths is EDM DPM-Solver++ with one difference: the timestep the
transformer is conditioned on is `atan(sigma) * 2 / pi` (EDM uses `log(sigma) / 4`). Subclassing
diffusers' `EDMDPMSolverMultistepScheduler` with that mapping gives the same sigmas, timesteps and
preconditioning from the same config, with torch's own random numbers for the SDE noise.
"""

from __future__ import annotations

import math
from typing import Any

from diffusers import DPMSolverMultistepScheduler, EDMDPMSolverMultistepScheduler

COSINE_SCHEDULER = "CosineDPMSolverMultistepScheduler"


class CosineEDMDPMSolverScheduler(EDMDPMSolverMultistepScheduler):
    """EDM DPM-Solver++ (2M, or 2M SDE with `algorithm_type="sde-dpmsolver++"`) with Stable
    Audio's cosine timestep conditioning; built `from_config` of the checkpoint's scheduler."""

    def precondition_noise(self, sigma: Any) -> Any:
        import torch

        if not isinstance(sigma, torch.Tensor):
            sigma = torch.tensor([sigma])
        return sigma.atan() / math.pi * 2


def torchsde_available() -> bool:
    """True when `torchsde` imports and diffusers saw it, so the Hub's own Stable Audio
    scheduler can be built."""
    try:
        import torchsde  # noqa: F401
    except ImportError:
        return False
    from diffusers.utils import is_torchsde_available

    return bool(is_torchsde_available())


def stable_audio_sampler(config: Any, *, stochastic: bool) -> CosineEDMDPMSolverScheduler:
    """The torchsde-free sampler for a Stable Audio scheduler config: SDE (like the checkpoint's
    own sampler) or the deterministic ODE solver, which converges in fewer steps."""
    algorithm = "sde-dpmsolver++" if stochastic else "dpmsolver++"
    return CosineEDMDPMSolverScheduler.from_config(config, algorithm_type=algorithm)


def fast_ldm_scheduler(config: Any) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2M) from an AudioLDM/AudioLDM 2 DDIM config: about 20-25 steps match what
    DDIM needs 100-200 for."""
    return DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2
    )
