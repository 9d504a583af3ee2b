"""The linear limit: a linear autoencoder trained with seqed's optimizer recovers the principal subspace
(Bourlard & Kamp 1988), checked by principal angles against `torch.linalg.svd`."""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes" / "linear_autoencoder"))

from linear_autoencoder import (LinearAutoencoder, fit_linear_autoencoder, principal_angles,  # noqa: E402
                                principal_subspace)

D, K, N = 12, 3, 2000


pytestmark = pytest.mark.usefixtures("one_thread")


def spectral_data(seed: int = 0, top=(9.0, 6.0, 4.0), rest: float = 0.1) -> torch.Tensor:
    """N samples in D dimensions: variances `top` along K random orthogonal directions, `rest` along the
    others (a clear gap), plus an offset the fit must remove by centring."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(D, D, generator=g))  # (D, D) orthogonal
    scales = torch.tensor(list(top) + [rest] * (D - len(top))).sqrt()  # (D,)
    z = torch.randn(N, D, generator=g) * scales  # (N, D)
    return z @ basis.t() + 5.0


@pytest.mark.parametrize("tied", [False, True])
def test_learns_the_top_k_principal_subspace(tied):
    x = spectral_data()
    model = fit_linear_autoencoder(x, code_dim=K, tied=tied, steps=500, lr=3e-2)
    angles = principal_angles(model.decoder_weight.detach(), principal_subspace(x, K))
    assert angles.shape == (K,)
    assert float(angles.sin().max()) < 0.05, angles
    # PCA is the optimum: the reconstruction error is the variance left in the trailing directions.
    xc = x - x.mean(0)
    with torch.no_grad():
        err = float((model(xc) - xc).pow(2).sum(1).mean())
    s = torch.linalg.svdvals(xc)
    pca_err = float(s[K:].pow(2).sum() / N)
    assert err == pytest.approx(pca_err, rel=0.03)
    if tied:  # the tied minimiser has orthonormal rows: W1 W1^T = I
        w = model.encoder.weight.detach()
        assert torch.allclose(w @ w.t(), torch.eye(K), atol=0.03)


def test_an_untrained_model_is_far_from_the_subspace():
    x = spectral_data()
    model = LinearAutoencoder(dim=D, code_dim=K)
    angles = principal_angles(model.decoder_weight.detach(), principal_subspace(x, K))
    assert float(angles.sin().max()) > 0.3  # the test above is not passed by accident


def test_principal_angles_known_cases():
    e = torch.eye(4)
    assert torch.allclose(principal_angles(e[:, :2], e[:, :2] @ torch.tensor([[2.0, 1.0], [0.0, 3.0]])),
                          torch.zeros(2, dtype=torch.float64), atol=1e-6)  # same span, other basis
    assert torch.allclose(principal_angles(e[:, :2], e[:, 2:]), torch.full((2,), math.pi / 2, dtype=torch.float64))
    rot = torch.stack([torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, math.cos(0.3), math.sin(0.3), 0])], 1)
    assert torch.allclose(principal_angles(e[:, :2], rot), torch.tensor([0.0, 0.3], dtype=torch.float64),
                          atol=1e-6)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="code_dim"):
        LinearAutoencoder(dim=4, code_dim=4)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_linear_autoencoder(torch.randn(5), code_dim=1)
