"""Gradient balancers. `get(name, **hparams)` returns one; `available()` lists the names."""

from keras_mtl.balancers.base import (
    LEVELS,
    BalanceContext,
    Balancer,
    BalanceResult,
    Weighting,
)
from keras_mtl.balancers.equal import EqualWeighting, StaticWeighting
from keras_mtl.balancers.per_group import PerGroup
from keras_mtl.balancers.ple_schedule import PLESchedule
from keras_mtl.balancers.registry import aliases, available, get, register

__all__ = [
    "LEVELS",
    "BalanceContext",
    "BalanceResult",
    "Balancer",
    "EqualWeighting",
    "PLESchedule",
    "PerGroup",
    "StaticWeighting",
    "Weighting",
    "aliases",
    "available",
    "get",
    "register",
]

# Registration happens on import.
from keras_mtl.balancers.aligned_mtl import AlignedMTL  # noqa: E402
from keras_mtl.balancers.cagrad import CAGrad  # noqa: E402
from keras_mtl.balancers.cograd import CoGrad  # noqa: E402
from keras_mtl.balancers.conflict_free import ConFIG  # noqa: E402
from keras_mtl.balancers.db_mtl import DBMTL  # noqa: E402
from keras_mtl.balancers.dtp import DTP  # noqa: E402
from keras_mtl.balancers.dualproj import DualProj  # noqa: E402
from keras_mtl.balancers.dwa import DWA  # noqa: E402
from keras_mtl.balancers.ema_loss import EMALoss  # noqa: E402
from keras_mtl.balancers.excess_mtl import ExcessMTL  # noqa: E402
from keras_mtl.balancers.fairgrad import FairGrad  # noqa: E402
from keras_mtl.balancers.famo import FAMO  # noqa: E402
from keras_mtl.balancers.gls import GeometricLoss  # noqa: E402
from keras_mtl.balancers.gradcraft import GradCraft  # noqa: E402
from keras_mtl.balancers.graddrop import GradDrop  # noqa: E402
from keras_mtl.balancers.gradnorm import GradNorm  # noqa: E402
from keras_mtl.balancers.gradvac import GradVac  # noqa: E402
from keras_mtl.balancers.imtl import IMTLG, IMTLL  # noqa: E402
from keras_mtl.balancers.krum import Krum  # noqa: E402
from keras_mtl.balancers.mean import MeanWeighting  # noqa: E402
from keras_mtl.balancers.metabalance import MetaBalance  # noqa: E402
from keras_mtl.balancers.mgda import MGDA, MGDAUB  # noqa: E402
from keras_mtl.balancers.moco import MoCo  # noqa: E402
from keras_mtl.balancers.multibalance import MultiBalance  # noqa: E402
from keras_mtl.balancers.nash_mtl import NashMTL  # noqa: E402
from keras_mtl.balancers.pcgrad import PCGrad  # noqa: E402
from keras_mtl.balancers.pe_ltr import PELTR  # noqa: E402
from keras_mtl.balancers.rlw import RandomLossWeighting  # noqa: E402
from keras_mtl.balancers.sdmgrad import SDMGrad  # noqa: E402
from keras_mtl.balancers.slaw import SLAW  # noqa: E402
from keras_mtl.balancers.stch import STCH  # noqa: E402
from keras_mtl.balancers.trimmed_mean import TrimmedMean  # noqa: E402
from keras_mtl.balancers.uncertainty import UncertaintyWeighting  # noqa: E402
from keras_mtl.balancers.upgrad import UPGrad  # noqa: E402

__all__ += [
    "AlignedMTL", "CAGrad", "CoGrad", "ConFIG", "DBMTL", "DTP", "DWA", "DualProj", "EMALoss", "ExcessMTL",
    "FAMO", "FairGrad", "GeometricLoss", "GradCraft", "GradDrop", "GradNorm", "GradVac", "IMTLG",
    "IMTLL", "Krum", "MGDA", "MGDAUB", "MeanWeighting", "MetaBalance", "MoCo", "MultiBalance", "NashMTL",
    "PCGrad", "PELTR", "RandomLossWeighting", "SDMGrad", "SLAW", "STCH", "TrimmedMean", "UPGrad",
    "UncertaintyWeighting",
]
