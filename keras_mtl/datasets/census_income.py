"""UCI Census-Income (KDD) with the MMoE paper's two tasks."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd

from keras_mtl.datasets.base import MultiTaskDataset, split_frame
from keras_mtl.datasets.reading import download
from keras_mtl.features import Categorical, FeatureSpec, Numeric
from keras_mtl.tasks import Task

# UCI's "Census-Income (KDD)" test file (Lane & Kohavi; CC BY 4.0). Only this file's checksum is
# pinned, so it is the default source; the 199,523-row training file can be passed as `path`.
URL = (
    "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"
    "census-income.test.gz"
)
SHA256 = "5ac4cacd3ca9f1ecb10de1a0a41e4ac68fdc419e3fec190f5c0c6cc03b2ea659"

COLUMNS = [
    "age", "class_of_worker", "detailed_industry_recode", "detailed_occupation_recode",
    "education", "wage_per_hour", "enroll_in_edu_inst_last_wk", "marital_stat",
    "major_industry_code", "major_occupation_code", "race", "hispanic_origin", "sex",
    "member_of_a_labor_union", "reason_for_unemployment", "full_or_part_time_employment_stat",
    "capital_gains", "capital_losses", "dividends_from_stocks", "tax_filer_stat",
    "region_of_previous_residence", "state_of_previous_residence",
    "detailed_household_and_family_stat", "detailed_household_summary_in_household",
    "instance_weight", "migration_code_change_in_msa", "migration_code_change_in_reg",
    "migration_code_move_within_reg", "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt", "num_persons_worked_for_employer",
    "family_members_under_18", "country_of_birth_father", "country_of_birth_mother",
    "country_of_birth_self", "citizenship", "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin", "veterans_benefits", "weeks_worked_in_year",
    "year", "income_label",
]
NUMERIC = [
    "age", "wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks",
    "num_persons_worked_for_employer", "weeks_worked_in_year",
]
HEAVY_TAILED = {"wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks"}
# Not features: the labels' sources and the survey's sampling weight.
EXCLUDED = {"marital_stat", "income_label", "instance_weight"}
CATEGORICAL = [c for c in COLUMNS if c not in EXCLUDED and c not in NUMERIC]


def read_census_file(path: str) -> pd.DataFrame:
    """Parses one UCI census-income file (`.gz` or plain) into a frame with both labels."""
    frame = pd.read_csv(path, header=None, names=COLUMNS, skipinitialspace=True, dtype=str)
    if frame.shape[1] != len(COLUMNS) or frame["income_label"].isna().any():
        raise ValueError(f"{path} does not look like a census-income file (42 fields per row).")
    frame["income"] = (frame["income_label"].str.strip() == "50000+.").astype(np.float32)
    frame["never_married"] = (frame["marital_stat"].str.strip() == "Never married").astype(
        np.float32
    )
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column]).astype(np.float32)
    return frame


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_census_income(
    path: str | None = None,
    seed: int = 0,
    fractions=(0.8, 0.1, 0.1),
    embedding_dim: int = 8,
    cache_dir: str | None = None,
    verify_checksum: bool | None = None,
) -> MultiTaskDataset:
    """Census-Income (KDD) as two binary tasks: income > $50K and marital status = never married.

    The task pair of Ma et al. (MMoE, KDD 2018, §5.2) and Tang et al. (PLE, RecSys 2020).

    Args:
        path: a local census-income file or a folder holding `census-income.test.gz`. Without it
            the UCI file is downloaded with `keras.utils.get_file` (cached, sha256-checked); a
            failed download raises `DownloadError` saying to pass `path=` (or `--data-path`).
        seed, fractions: the seeded row split into train/validation/test (default 80/10/10).
        embedding_dim: embedding width of every categorical column.
        verify_checksum: check a local file against the pinned sha256 (default: only when the file
            is named `census-income.test.gz`).

    Features: 7 numeric columns (money amounts `log1p`-scaled) and 32 categorical ones, with
    vocabularies and statistics taken from the train split only. Returns a `MultiTaskDataset`.
    """
    if path is None:
        path = download("census-income.test.gz", URL, SHA256, loader="load_census_income",
                        cache_dir=cache_dir)
    elif os.path.isdir(path):
        path = os.path.join(path, "census-income.test.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No census-income file at {path!r}.")
    if verify_checksum is None:
        verify_checksum = os.path.basename(path) == "census-income.test.gz"
    if verify_checksum and sha256_of(path) != SHA256:
        raise ValueError(f"{path} does not match the published census-income.test.gz (sha256).")

    frame = read_census_file(path)
    train, validation, test = split_frame(frame, fractions, seed)
    spec = FeatureSpec(
        [Numeric(c, log1p=c in HEAVY_TAILED) for c in NUMERIC]
        + [Categorical(c, embedding_dim=embedding_dim) for c in CATEGORICAL]
    ).adapt(train)
    return MultiTaskDataset(
        name="census-income",
        train=train,
        validation=validation,
        test=test,
        features=spec,
        tasks=[Task("income"), Task("never_married")],
        description=(
            f"UCI Census-Income (KDD), {len(frame)} rows of {os.path.basename(path)}, seeded "
            f"{'/'.join(str(round(100 * f)) for f in fractions)} split (seed={seed})"
        ),
    )
