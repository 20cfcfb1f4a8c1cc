"""EDM-style v-prediction: preconditioning, training sigmas and the loss.

Notation of Karras et al. 2022 (EDM) / k-diffusion. With data std sigma_data:

    x_sigma  = x0 + sigma * n                          n ~ N(0, I)
    D(x; s)  = c_skip(s) x + c_out(s) F(c_in(s) x; c_noise(s))
    c_skip = sd^2 / (s^2 + sd^2)    c_out = -s sd / sqrt(s^2 + sd^2)  (v-prediction)
    c_in   = 1 / sqrt(s^2 + sd^2)   c_noise = 0.25 log s
    loss     = E[ lambda(s) |D - x0|^2 ] + w_hf E[ lambda(s) |HP(D - x0)|^2 ],  lambda = (s^2 + sd^2) / (s sd)^2

The preconditioning and the Euler sampler are diffusers' `EDMEulerScheduler` (prediction_type
"v_prediction"); this module only adds the training side.

Choices the paper leaves open ([dev] = seen in the development code, [ours] = ours; all in the
`diffusion` config section):
- sigma_max 700 [dev]; sigma_min 0.002, Karras schedule rho 7, sigma_data 1.0 (SVD's v-scaling,
  which is what sigma_max 700 comes from) [ours].
- training sigmas log-normal, ln(sigma) ~ N(p_mean = 1.0, p_std = 1.6) (the SVD/Vista high-noise
  setting) [ours; log-normal itself is dev].
- lambda(sigma) is EDM's weighting, which makes the denoised-space L2 equal to an unweighted L2 on
  the v target [ours: "weighted L2" in dev].
- high-frequency term: the same weighted L2 on the high-passed error HP(D - x0); HP keeps the 2-D
  FFT frequencies whose radius is >= `hf_cutoff` x Nyquist (hard radial mask, orthonormal FFT so the
  term is at most the full L2) [ours; weight 0.1 is dev].
- Euler without churn (deterministic) [ours]; `num_steps` 4 embedded, 15-50 in dev.
- each sampled frame's latent channel means taken from the last real frame of its chain
  (`anchor_channel_means`, stage/model/sampler.py) [ours; off in dev].
"""

from __future__ import annotations

import torch
from diffusers import EDMEulerScheduler


def make_scheduler(cfg: dict) -> EDMEulerScheduler:
    """diffusers' EDM Euler scheduler from the `diffusion` config section."""
    return EDMEulerScheduler(
        sigma_min=cfg["sigma_min"],
        sigma_max=cfg["sigma_max"],
        sigma_data=cfg["sigma_data"],
        sigma_schedule=cfg["sigma_schedule"],
        prediction_type=cfg["prediction_type"],
        rho=cfg["rho"],
    )


def sample_sigmas(batch: int, p_mean: float, p_std: float, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Log-normal training noise levels: ln(sigma) ~ N(p_mean, p_std^2). Returns (batch,)."""
    z = torch.randn(batch, generator=generator, device=device)
    return (p_mean + p_std * z).exp()


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (= 1 / c_out^2)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def high_pass(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Orthonormal 2-D FFT of x (..., H, W) with frequencies below `cutoff` x Nyquist set to zero (complex)."""
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, device=x.device)[:, None]
    fx = torch.fft.fftfreq(w, device=x.device)[None, :]
    radius = torch.sqrt(fy**2 + fx**2) / 0.5  # 1.0 = Nyquist along an axis
    return torch.fft.fft2(x.float(), norm="ortho") * (radius >= cutoff)


def edm_loss(denoised: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor, sigma_data: float,
             hf_weight: float = 0.1, hf_cutoff: float = 0.25) -> dict[str, torch.Tensor]:
    """Weighted L2 + hf_weight x weighted high-frequency L2.

    Args:
        denoised: D(x; sigma) (B, C, H, W); target: x0 (B, C, H, W); sigma: (B,).
    Returns:
        {"loss": scalar, "l2": scalar, "hf": scalar}.
    """
    lam = loss_weight(sigma, sigma_data).view(-1, 1, 1, 1)
    err = denoised.float() - target.float()
    l2 = (lam * err**2).mean()
    hf = (lam * high_pass(err, hf_cutoff).abs() ** 2).mean()
    return {"loss": l2 + hf_weight * hf, "l2": l2.detach(), "hf": hf.detach()}
