"""Exact Bayes denoisers for laws whose posterior mean is known in closed form.

Each oracle is the optimal denoiser D(x; sigma) = E[x0 | x0 + sigma * eps = x] for one data law, with the
MMSE curve that goes with it. They serve as ground truth for tests (the I-MMSE profile, the InfoNoise
estimator, the samplers) and drive ``scripts/bench_highdim.py``.

Common interface (all computations in float64; results are float64 tensors on x's device):

    oracle.denoise(x, sigma)     x: [N, d] (EmpiricalBayes: [N, ...] like the data); sigma: a scalar,
                                 or N values shaped [N], [N, 1] or [N, 1, ..., 1].
    oracle.mmse(sigma)           E||D(x_sigma) - x0||^2, summed over the d coordinates.
    oracle.rate(sigma)           mmse(sigma) / sigma^3 (the conditional-entropy rate up to a constant).
    oracle.sample(n, generator=None) -> [n, d] draws of x0 (CPU, float64).

``mmse`` and ``rate`` take a Python/numpy scalar (-> float), a numpy array (-> numpy array) or a tensor
(-> float64 tensor on the CPU). Where no closed form exists (EmpiricalBayes, CurieWeiss, CurieWeissExact)
the MMSE is a Monte Carlo average over ``num_samples`` draws (default 4096) of (x0, eps); its standard
error is about sqrt(Var||D - x0||^2 / num_samples), i.e. a few percent of the value at the default. With
no ``generator`` a fresh one seeded with 0 is used, so repeated calls return the same estimate.

Laws:
    EmpiricalBayes(data)          the empirical distribution of a dataset (the memorising denoiser).
    TwoPoint(a, p, d)             i.i.d. coordinates equal to +a (prob p) or -a; pitchfork at sigma = a.
    GaussianMixture(d, m, s, p)   x0 = c*m*1 + s*eta, P(c = +1) = p; exact D and MMSE (Gauss-Hermite).
    CurieWeiss(d, beta, h)        the large-d two-phase form of the Curie-Weiss model (seed paper).
    CurieWeissExact(d, beta, h)   the finite-d Curie-Weiss law P(s) ~ exp(beta M^2/(2d) + h M).
"""

import functools
import math
from typing import Optional, Union

import numpy as np
import torch

__all__ = [
    'BayesDenoiser', 'EmpiricalBayes', 'TwoPoint', 'GaussianMixture', 'CurieWeiss', 'CurieWeissExact',
    'binary_mmse', 'curie_weiss_magnetization', 'gauss_hermite_normal',
]

SigmaLike = Union[float, np.ndarray, torch.Tensor]

GH_NODES = 256          # Gauss-Hermite nodes for binary_mmse: abs. error < 1e-9 over all lambda (tested).
MC_SAMPLES = 4096       # default Monte Carlo sample count for the MMSE of laws without a closed form.


# ---------------------------------------------------------------------------------------------------
# Shared helpers.

@functools.lru_cache(maxsize=8)
def gauss_hermite_normal(num_nodes: int = GH_NODES):
    """Nodes xi_j and weights w_j with sum_j w_j f(xi_j) ~ E[f(xi)], xi ~ N(0, 1) (numpy float64)."""
    nodes, weights = np.polynomial.hermite.hermgauss(num_nodes)
    return nodes * math.sqrt(2.0), weights / math.sqrt(math.pi)


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def binary_mmse(lam, p: float = 0.5, num_nodes: int = GH_NODES):
    """MMSE of a sign c = +-1 (P(c = +1) = p) observed as y = lam * c + sqrt(lam) * xi, xi ~ N(0, 1).

    mmse_c(lam) = 1 - E_xi[p tanh(h + lam + sqrt(lam) xi) - (1 - p) tanh(h - lam + sqrt(lam) xi)],
    h = 1/2 log(p / (1 - p)). Written as 2 p E[sigmoid(-2(h + lam + ..))] + 2 (1 - p) E[sigmoid(2(h - lam + ..))]
    so that no cancellation occurs when the MMSE is tiny. Accepts a scalar or a numpy array.
    """
    lam = np.asarray(lam, dtype=np.float64)
    if np.any(lam < 0):
        raise ValueError('binary_mmse needs lam >= 0')
    if not 0.0 < p < 1.0:
        raise ValueError(f'p must lie in (0, 1), got {p}')
    h = 0.5 * math.log(p / (1.0 - p))
    xi, w = gauss_hermite_normal(num_nodes)
    root = np.sqrt(lam)[..., None]
    lam_ = lam[..., None]
    plus = np.exp(_log_sigmoid(-2.0 * (h + lam_ + root * xi)))
    minus = np.exp(_log_sigmoid(2.0 * (h - lam_ + root * xi)))
    out = 2.0 * (p * plus + (1.0 - p) * minus) @ w
    return float(out) if out.ndim == 0 else out


def curie_weiss_magnetization(beta: float, tol: float = 1e-15) -> float:
    """Largest root m >= 0 of m = tanh(beta * m) (0 for beta <= 1), by Newton's method."""
    if beta <= 1.0:
        return 0.0
    m = 1.0
    for _ in range(200):
        f = m - math.tanh(beta * m)
        df = 1.0 - beta * (1.0 - math.tanh(beta * m) ** 2)
        step = f / df
        m -= step
        if abs(step) < tol:
            break
    return m


def _sigma_column(sigma, n: int, device) -> torch.Tensor:
    """sigma as a float64 [n, 1] column: a scalar is broadcast, n values in any shape are reshaped."""
    t = torch.as_tensor(sigma, dtype=torch.float64, device=device)
    if t.numel() == 1:
        t = t.reshape(1, 1).expand(n, 1)
    elif t.numel() == n:
        t = t.reshape(n, 1)
    else:
        raise ValueError(f'sigma must be a scalar or hold one value per sample ({n}), got shape {tuple(t.shape)}')
    if torch.any(t <= 0):
        raise ValueError('sigma must be positive')
    return t


def _as_rows(x, sigma, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x as float64 rows [N, dim] and sigma as the float64 column [N, 1] (`_sigma_column`) on x's device."""
    x = torch.as_tensor(x)
    if x.ndim == 1 and dim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f'x must have shape [N, {dim}], got {tuple(x.shape)}')
    return x.to(torch.float64), _sigma_column(sigma, x.shape[0], x.device)


def _map_sigma(sigma: SigmaLike, fn):
    """Apply fn (numpy 1-D float64 -> numpy 1-D) keeping the caller's container kind."""
    if isinstance(sigma, torch.Tensor):
        flat = sigma.detach().to('cpu', torch.float64).reshape(-1).numpy()
        return torch.from_numpy(np.asarray(fn(flat), dtype=np.float64)).reshape(sigma.shape)
    arr = np.asarray(sigma, dtype=np.float64)
    out = np.asarray(fn(arr.reshape(-1)), dtype=np.float64).reshape(arr.shape)
    return float(out) if arr.ndim == 0 else out


# ---------------------------------------------------------------------------------------------------
# Base class.

class BayesDenoiser:
    """Interface shared by the oracles; subclasses define ``dim``, ``denoise`` and ``sample``."""

    dim: int

    def denoise(self, x: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        raise NotImplementedError

    def mmse(self, sigma: SigmaLike, num_samples: int = MC_SAMPLES,
             generator: Optional[torch.Generator] = None):
        """Monte Carlo E||D(x0 + sigma eps) - x0||^2 over num_samples draws (same draws for every sigma)."""
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        x0 = self.sample(num_samples, generator=generator)
        eps = torch.randn(x0.shape, dtype=torch.float64, generator=generator)

        def fn(sig: np.ndarray) -> np.ndarray:
            out = np.empty(sig.shape)
            for i, s in enumerate(sig):
                err = self.denoise(x0 + s * eps, float(s)).cpu() - x0
                out[i] = err.reshape(num_samples, -1).square().sum(1).mean().item()
            return out
        return _map_sigma(sigma, fn)

    def rate(self, sigma: SigmaLike, **kwargs):
        """mmse(sigma) / sigma^3, same container kind as sigma (kwargs go to mmse)."""
        return _map_sigma(sigma, lambda s: self.mmse(s, **kwargs) / s ** 3)


# ---------------------------------------------------------------------------------------------------
# Empirical distribution of a dataset.

class EmpiricalBayes(BayesDenoiser):
    """Posterior mean under the uniform distribution over the rows of ``data``.

    D(x) = sum_i softmax_i(-||x - x_i||^2 / (2 sigma^2)) x_i. The logits use ||x - x_i||^2 = ||x||^2 +
    ||x_i||^2 - 2 x.x_i; the ||x||^2 term is the same for every i and drops out of the softmax, so each
    chunk costs one matrix product. The softmax is accumulated over dataset chunks in log space (running
    maximum, rescaled running sums), in float64, so no chunk ever overflows and memory is
    O(batch_size * chunk_size). Cost: O(N n d) per call.

    Args:
        data:        [n, ...] tensor or array of training points (copied to float64; stays on its device).
        chunk_size:  dataset rows per chunk of the streamed softmax.
        batch_size:  query rows processed together.
    """

    def __init__(self, data, chunk_size: int = 4096, batch_size: int = 1024):
        data = torch.as_tensor(data)
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError('data must have shape [n, ...] with n >= 1')
        self.item_shape = tuple(data.shape[1:])
        self.data = data.reshape(data.shape[0], -1).to(torch.float64)
        self.sq_norms = self.data.square().sum(1)
        self.dim = self.data.shape[1]
        self.chunk_size = int(chunk_size)
        self.batch_size = int(batch_size)

    def denoise(self, x: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
        x = torch.as_tensor(x)
        out_device, shape = x.device, x.shape
        rows = x.reshape(shape[0], -1).to(self.data.device, torch.float64)
        if rows.shape[1] != self.dim:
            raise ValueError(f'x has {rows.shape[1]} elements per sample, the data has {self.dim}')
        inv_var = 1.0 / _sigma_column(sigma, rows.shape[0], rows.device).square()
        out = torch.empty_like(rows)
        for b0 in range(0, rows.shape[0], self.batch_size):
            xb, ib = rows[b0:b0 + self.batch_size], inv_var[b0:b0 + self.batch_size]
            run_max = torch.full_like(ib, -math.inf)
            run_sum = torch.zeros_like(ib)
            acc = torch.zeros_like(xb)
            for c0 in range(0, self.data.shape[0], self.chunk_size):
                xi = self.data[c0:c0 + self.chunk_size]
                logits = (xb @ xi.T - 0.5 * self.sq_norms[c0:c0 + self.chunk_size]) * ib
                new_max = torch.maximum(run_max, logits.amax(1, keepdim=True))
                decay = torch.exp(run_max - new_max)
                weights = torch.exp(logits - new_max)
                run_sum = run_sum * decay + weights.sum(1, keepdim=True)
                acc = acc * decay + weights @ xi
                run_max = new_max
            out[b0:b0 + self.batch_size] = acc / run_sum
        return out.reshape(shape).to(out_device)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        idx = torch.randint(self.data.shape[0], (n,), generator=generator)
        return self.data.cpu()[idx].reshape(n, *self.item_shape)


# ---------------------------------------------------------------------------------------------------
# Two-point law.

class TwoPoint(BayesDenoiser):
    """Coordinates i.i.d. equal to +a with probability p and -a otherwise.

    D(x) = a tanh(h + a x / sigma^2), h = 1/2 log(p / (1 - p)); mmse = d a^2 mmse_c(a^2 / sigma^2).
    For p = 1/2 the map x -> D(x) has the fixed point 0 with slope D'(0) = a^2 / sigma^2: for sigma > a it
    is the only (attracting) fixed point, below sigma_c = a it turns unstable and two symmetric fixed
    points +-x* appear (a pitchfork bifurcation, the 'speciation' of the two-point law).

    Args:
        a:  half the distance between the two points (> 0).
        p:  probability of +a, in (0, 1).
        d:  number of i.i.d. coordinates.
    """

    def __init__(self, a: float = 1.0, p: float = 0.5, d: int = 1):
        if a <= 0 or not 0.0 < p < 1.0 or d < 1:
            raise ValueError('TwoPoint needs a > 0, 0 < p < 1 and d >= 1')
        self.a, self.p, self.dim = float(a), float(p), int(d)
        self.h = 0.5 * math.log(p / (1.0 - p))

    @property
    def sigma_c(self) -> float:
        """Critical noise level of the pitchfork (exact for p = 1/2; imperfect bifurcation otherwise)."""
        return self.a

    def denoise(self, x: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
        xr, sig = _as_rows(x, sigma, self.dim)
        return self.a * torch.tanh(self.h + self.a * xr / sig.square())

    def mmse(self, sigma: SigmaLike):
        return _map_sigma(sigma, lambda s: self.dim * self.a ** 2 * binary_mmse(self.a ** 2 / s ** 2, self.p))

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        u = torch.rand(n, self.dim, dtype=torch.float64, generator=generator)
        return torch.where(u < self.p, self.a, -self.a)


# ---------------------------------------------------------------------------------------------------
# Two-Gaussian mixture in d dimensions.

class GaussianMixture(BayesDenoiser):
    """x0 = c m 1 + s eta with c = +1 (prob p) or -1, eta ~ N(0, I_d).

    With mu = m 1, |mu| = m sqrt(d), mu_hat = mu / |mu|, y = mu_hat . x and x_perp = x - y mu_hat:
        D_par(y)  = [s^2 y + sigma^2 |mu| tanh(h + |mu| y / (s^2 + sigma^2))] / (s^2 + sigma^2),
        D_perp    = s^2 / (s^2 + sigma^2) * x_perp     (linear: x_perp is only rescaled),
        mmse      = d s^2 sigma^2 / (s^2 + sigma^2) + |mu|^2 sigma^4 / (s^2 + sigma^2)^2 * mmse_c(lam),
        lam       = |mu|^2 / (s^2 + sigma^2),   h = 1/2 log(p / (1 - p)).

    Args:
        d:  dimension.
        m:  per-coordinate mean of the + mode (|mu| = m sqrt(d)).
        s:  within-mode standard deviation per coordinate.
        p:  weight of the + mode, in (0, 1).
    """

    def __init__(self, d: int, m: float = 1.0, s: float = 0.5, p: float = 0.5):
        if d < 1 or m <= 0 or s <= 0 or not 0.0 < p < 1.0:
            raise ValueError('GaussianMixture needs d >= 1, m > 0, s > 0 and 0 < p < 1')
        self.dim, self.m, self.s, self.p = int(d), float(m), float(s), float(p)
        self.h = 0.5 * math.log(p / (1.0 - p))
        self.mu_norm = self.m * math.sqrt(self.dim)

    def mu_hat(self, device=None) -> torch.Tensor:
        return torch.full((self.dim,), 1.0 / math.sqrt(self.dim), dtype=torch.float64, device=device)

    def perp_factor(self, sigma):
        """The linear shrinkage s^2 / (s^2 + sigma^2) applied to x_perp (float or tensor like sigma)."""
        return self.s ** 2 / (self.s ** 2 + sigma ** 2)

    def denoise_reduced(self, y: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
        """D_par(y): the posterior mean of mu_hat . x0 given y = mu_hat . x (any shape; sigma broadcasts)."""
        y = torch.as_tensor(y, dtype=torch.float64)
        sig = torch.as_tensor(sigma, dtype=torch.float64, device=y.device)
        var = self.s ** 2 + sig.square()
        return (self.s ** 2 * y + sig.square() * self.mu_norm * torch.tanh(self.h + self.mu_norm * y / var)) / var

    def denoise(self, x: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
        xr, sig = _as_rows(x, sigma, self.dim)
        mu_hat = self.mu_hat(xr.device)
        y = xr @ mu_hat
        x_perp = xr - y[:, None] * mu_hat
        d_par = self.denoise_reduced(y, sig[:, 0])
        return d_par[:, None] * mu_hat + self.perp_factor(sig) * x_perp

    def mmse(self, sigma: SigmaLike):
        def fn(sig: np.ndarray) -> np.ndarray:
            var = self.s ** 2 + sig ** 2
            lam = self.mu_norm ** 2 / var
            return (self.dim * self.s ** 2 * sig ** 2 / var
                    + self.mu_norm ** 2 * sig ** 4 / var ** 2 * binary_mmse(lam, self.p))
        return _map_sigma(sigma, fn)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        c = torch.where(torch.rand(n, 1, dtype=torch.float64, generator=generator) < self.p, 1.0, -1.0)
        eta = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return c * self.m + self.s * eta


# ---------------------------------------------------------------------------------------------------
# Curie-Weiss: the large-d two-phase form and the exact finite-d law.

class CurieWeiss(BayesDenoiser):
    """Large-d two-phase Curie-Weiss law on spins s in {-1, +1}^d (the seed paper's form).

    m > 0 solves m = tanh(beta m) (beta = 2: m = 0.957504...). Phase + (prob W+) or - (prob W-),
    W+- proportional to exp(+-h m); within a phase the spins are independent with mean +-m:
        P(s) = sum_{+-} W+- prod_i (1 +- m s_i) / 2.
    Posterior mean, with t_i = tanh(x_i / sigma^2):
        E[s_i | x] = pi+ (t_i + m) / (1 + m t_i) + pi- (t_i - m) / (1 - m t_i),
        log(pi+ / pi-) = log(W+ / W-) + sum_i log[(1 + m t_i) / (1 - m t_i)],   log(W+ / W-) = 2 h m.
    Since m < 1, 1 +- m t_i >= 1 - m > 0: no overflow or cancellation for any sigma.
    This is the d -> infinity limit of CurieWeissExact(d, beta, h / d) (the field per spin scaled by 1/d),
    not of CurieWeissExact(d, beta, h). Cost O(N d). The MMSE is Monte Carlo (see module docstring).

    Args:
        d:     number of spins.
        beta:  inverse temperature (> 1 for two distinct phases; m = 0 otherwise).
        h:     field; the phase weights are W+- ~ exp(+-h m). Default 1/2 log 4 (W+ / W- = 4^m).
    """

    def __init__(self, d: int, beta: float = 2.0, h: float = 0.5 * math.log(4.0)):
        if d < 1 or beta < 0:
            raise ValueError('CurieWeiss needs d >= 1 and beta >= 0')
        self.dim, self.beta, self.h = int(d), float(beta), float(h)
        self.m = curie_weiss_magnetization(self.beta)
        self.log_phase_ratio = 2.0 * self.h * self.m            # log(W+ / W-)
        self.pi_plus = 1.0 / (1.0 + math.exp(-self.log_phase_ratio))

    def _tanh_and_logit(self, x: torch.Tensor, sigma: SigmaLike):
        xr, sig = _as_rows(x, sigma, self.dim)
        t = torch.tanh(xr / sig.square())
        # 1 +- m t >= 1 - m > 0, so both logarithms are well conditioned for every t in [-1, 1].
        logit = self.log_phase_ratio + (torch.log1p(self.m * t) - torch.log1p(-self.m * t)).sum(1, keepdim=True)
        return t, logit

    def phase_posterior(self, x: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
        """pi+(x) = P(phase + | x), shape [N]."""
        return torch.sigmoid(self._tanh_and_logit(x, sigma)[1])[:, 0]

    def denoise(self, x: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
        t, logit = self._tanh_and_logit(x, sigma)
        pi_plus = torch.sigmoid(logit)
        return pi_plus * (t + self.m) / (1.0 + self.m * t) + (1.0 - pi_plus) * (t - self.m) / (1.0 - self.m * t)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        phase = torch.where(torch.rand(n, 1, dtype=torch.float64, generator=generator) < self.pi_plus, 1.0, -1.0)
        u = torch.rand(n, self.dim, dtype=torch.float64, generator=generator)
        return torch.where(u < 0.5 * (1.0 + self.m), phase, -phase)


class CurieWeissExact(BayesDenoiser):
    """The finite-d Curie-Weiss law P(s) ~ exp(beta M^2 / (2d) + h M), M = sum_i s_i, s in {-1, +1}^d.

    Exact posterior mean by summing over the number k of + spins (M = 2k - d). With u = x / sigma^2,
        log Z(x) = logsumexp_k [beta M_k^2 / (2d) + h M_k + log e_k(exp(2u))] - sum_i u_i,
    where e_k is the k-th elementary symmetric polynomial, built in log space by the recursion over spins
    log e_k^(i+1) = logaddexp(log e_k^(i), log e_{k-1}^(i) + 2 u_i) (no overflow for any sigma).
    E[s_i | x] = d log Z / d u_i, taken by reverse-mode autodiff through that recursion.
    Complexity: O(N d^2) time and O(chunk d^2) memory per chunk of samples (rows are processed in chunks
    of about 2e7 / d^2). Meant for d up to a few hundred. The MMSE is Monte Carlo (module docstring).

    Args:
        d:     number of spins.
        beta:  coupling (inverse temperature).
        h:     external field multiplying M (not M / d; see CurieWeiss for the correspondence).
    """

    def __init__(self, d: int, beta: float = 2.0, h: float = 0.5 * math.log(4.0)):
        if d < 1:
            raise ValueError('CurieWeissExact needs d >= 1')
        self.dim, self.beta, self.h = int(d), float(beta), float(h)
        k = torch.arange(self.dim + 1, dtype=torch.float64)
        big_m = 2.0 * k - self.dim
        self.log_g = self.beta * big_m.square() / (2.0 * self.dim) + self.h * big_m    # per configuration
        log_binom = (torch.lgamma(torch.tensor(self.dim + 1.0, dtype=torch.float64))
                     - torch.lgamma(k + 1.0) - torch.lgamma(self.dim - k + 1.0))
        self.log_pk = torch.log_softmax(self.log_g + log_binom, 0)                         # law of k

    def magnetization_pmf(self) -> torch.Tensor:
        """P(k plus spins), k = 0..d (M = 2k - d)."""
        return self.log_pk.exp()

    def _log_esp(self, two_u: torch.Tensor) -> torch.Tensor:
        """log e_k(exp(two_u)) for k = 0..d, rows independent; two_u: [N, d] -> [N, d + 1]."""
        n = two_u.shape[0]
        log_e = torch.zeros(n, 1, dtype=two_u.dtype, device=two_u.device)
        for i in range(self.dim):
            w = two_u[:, i:i + 1]
            middle = torch.logaddexp(log_e[:, 1:], log_e[:, :-1] + w)
            log_e = torch.cat([log_e[:, :1], middle, log_e[:, -1:] + w], dim=1)
        return log_e

    def log_partition(self, u: torch.Tensor) -> torch.Tensor:
        """log sum_s exp(beta M^2/(2d) + h M + s.u) for rows u [N, d] -> [N]."""
        log_g = self.log_g.to(u.device)
        return torch.logsumexp(log_g + self._log_esp(2.0 * u), dim=1) - u.sum(1)

    def denoise(self, x: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
        xr, sig = _as_rows(x, sigma, self.dim)
        u_all = (xr / sig.square()).detach()
        chunk = max(1, int(2e7 // (self.dim + 1) ** 2))
        out = torch.empty_like(u_all)
        with torch.enable_grad():
            for c0 in range(0, u_all.shape[0], chunk):
                u = u_all[c0:c0 + chunk].clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.log_partition(u).sum(), u)
                out[c0:c0 + chunk] = grad
        return out

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        k = torch.multinomial(self.log_pk.exp(), n, replacement=True, generator=generator)
        ranks = torch.rand(n, self.dim, dtype=torch.float64, generator=generator).argsort(1).argsort(1)
        return torch.where(ranks < k[:, None], 1.0, -1.0).to(torch.float64)
