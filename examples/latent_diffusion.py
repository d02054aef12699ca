"""Latent-diffusion testbed, the paper's second experiment: a denoiser trained by minimizing movements.

Latents: scikit-learn's 8x8 digits, encoded to 4 dimensions by PCA and whitened. A DDPM schedule
(40 noise levels, betas linear from 1e-3 to 0.2) draws 768 training nodes (z_t, t) with their noise
eps; the denoising loss ||eps_theta(z_t, t) - eps||^2 / 2 is an L2-regression energy on those nodes,
so the exact MMS step is closed form there. The denoiser is a 5-12-12-4 tanh MLP (280 parameters for
3072 scalar targets) with inputs (z_t, t / 40); tau = 0.5, 8 MMS steps.

Besides the trajectory error, each run reports the energy distance between 500 DDPM samples of the
trained denoiser and 500 data latents (the `energy_distance` note in the summary).

    python examples/latent_diffusion.py
    python examples/latent_diffusion.py --quick --solvers gauss-newton adam

Writes mms_latent_diffusion/{results.csv, latent_diffusion.png, summary.md}.
"""

import sys

from mms_manifolds.cli import main

if __name__ == "__main__":
    sys.exit(
        main(["reproduce", "--experiments", "latent_diffusion", "--output-dir", "mms_latent_diffusion", *sys.argv[1:]])
    )
