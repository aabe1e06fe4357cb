"""InfoNoise: an online, entropy-rate-driven training noise distribution for diffusion models.

Depends on torch and numpy only. What it provides:
σ-samplers (`LogNormalSampler`, `LogUniformSampler`, `DDPMSampler`, `InfoNoiseSampler`, and the rival schedules of
rivals.py: `LossSecondMomentSampler`, `KingmaGaoSampler`, `CDCDSampler`, `LaplaceSampler`) sharing
sample / observe / step / profile / state_dict / load_state_dict; the grid (`SigmaGrid`); loss weights;
pure profile functions; InfoGrid; profile (de)serialisation; exact Bayes denoisers (oracles).
"""
from .adaptive import InfoNoiseSampler
from .grid import SigmaGrid
from .infogrid import (GRIDS, edm_sigma_steps, infogrid_sigma_steps, loguniform_sigma_steps, sigma_steps,
                       solver_aware_sigma_steps, tempered_sigma_steps)
from .oracles import CurieWeiss, EmpiricalBayes, GaussianMixture, TwoPoint
from .profile import band_shares, entropy_rate, gate, gated_profile, log_smooth, onset_pivot, powerlaw_pivot, sampler_table
from .samplers import DDPMSampler, LogNormalSampler, LogUniformSampler
from .serialize import profile_from_json, profile_to_json
from .rivals import CDCDSampler, KingmaGaoSampler, LaplaceSampler, LossSecondMomentSampler, isotonic_increasing
from .weights import edm_weight, get_weight, min_snr_weight, unit_weight, ve_weight, vp_weight

__all__ = [
    'SigmaGrid', 'LogNormalSampler', 'LogUniformSampler', 'DDPMSampler', 'InfoNoiseSampler',
    'LossSecondMomentSampler', 'KingmaGaoSampler', 'CDCDSampler', 'LaplaceSampler', 'isotonic_increasing',
    'min_snr_weight', 'edm_weight', 'vp_weight', 've_weight', 'unit_weight', 'get_weight',
    'entropy_rate', 'log_smooth', 'onset_pivot', 'powerlaw_pivot', 'gate', 'gated_profile', 'sampler_table',
    'band_shares',
    'sigma_steps', 'GRIDS', 'edm_sigma_steps', 'infogrid_sigma_steps', 'tempered_sigma_steps',
    'solver_aware_sigma_steps', 'loguniform_sigma_steps',
    'profile_to_json', 'profile_from_json',
    'EmpiricalBayes', 'TwoPoint', 'GaussianMixture', 'CurieWeiss',
]
