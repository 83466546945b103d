"""Deterministic synthetic hospital-stay data for demo projects.

The rows look like a French hospital discharge extract (one row per stay): age band, sex,
region, ICD-10 chapter of the main diagnosis, length of stay and cost.  The data is entirely
made up, but it has realistic structure:

* skewed age bands, and diagnosis chapters that depend on age and sex (no pregnancies for
  men, few neoplasms in children);
* a skewed, positive length of stay that grows with age and depends on the chapter, with a
  long tail of complicated stays;
* a cost in euros (2 decimals) correlated with the length of stay;
* rare combinations (Corse, children with circulatory diseases or neoplasms, pregnancies
  at 40+...), so that small cells exist: useful for statistical disclosure control demos.

Determinism: only :meth:`random.Random.random` is used (with an ``int`` seed), plus exact
integer and IEEE-754 ``+ - * /`` arithmetic; no ``math.exp``/``log`` (platform libm) and no
``choices``/``gauss``/``randrange`` (whose algorithms Python does not promise to keep).
Python guarantees that ``random()`` yields the same sequence for the same seed in every
version, so the same ``(n_rows, seed)`` gives the same bytes on every machine.

Standard library only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import secrets
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from decimal import Decimal
from itertools import accumulate

__all__ = ["COLUMNS", "hospital_stays", "write_hospital_stays_csv"]

COLUMNS = (
    "stay_id",
    "age_band",
    "sex",
    "region",
    "diagnosis_chapter",
    "length_of_stay_days",
    "cost_eur",
)

AGE_BANDS = ("0-17", "18-39", "40-64", "65-79", "80+")
_AGE_WEIGHTS = (10, 20, 30, 25, 15)
#: Length-of-stay multiplier by age band (older patients stay longer).
_AGE_LOS_FACTOR = (0.6, 0.8, 1.0, 1.3, 1.6)

SEXES = ("F", "M")
_SEX_WEIGHTS = (52, 48)

#: Eight regions, weighted roughly by population (Corse is deliberately small).
REGIONS = (
    "Île-de-France",
    "Auvergne-Rhône-Alpes",
    "Nouvelle-Aquitaine",
    "Occitanie",
    "Hauts-de-France",
    "Provence-Alpes-Côte d'Azur",
    "Bretagne",
    "Corse",
)
_REGION_WEIGHTS = (123, 81, 60, 60, 60, 51, 34, 4)

#: ICD-10 chapters of the main diagnosis.
CHAPTERS = (
    "II Neoplasms",
    "IV Endocrine",
    "V Mental",
    "IX Circulatory",
    "X Respiratory",
    "XI Digestive",
    "XIII Musculoskeletal",
    "XIV Genitourinary",
    "XV Pregnancy",
    "XIX Injury",
)
_PREGNANCY = CHAPTERS.index("XV Pregnancy")

#: Chapter weights by age band (rows follow AGE_BANDS, columns follow CHAPTERS).  The
#: pregnancy weight is zeroed for men.
_CHAPTER_WEIGHTS = (
    (1, 2, 4, 1, 25, 18, 5, 5, 1, 30),  # 0-17
    (4, 3, 12, 4, 8, 18, 12, 8, 45, 20),  # 18-39
    (18, 6, 8, 18, 8, 18, 14, 8, 1, 10),  # 40-64
    (22, 6, 4, 28, 12, 14, 10, 8, 0, 8),  # 65-79
    (12, 5, 5, 32, 20, 10, 6, 7, 0, 15),  # 80+
)
#: Mean length of stay (days) by chapter, before the age factor.
_CHAPTER_MEAN_LOS = (7.0, 5.0, 12.0, 7.0, 6.0, 4.0, 4.0, 3.0, 4.0, 5.0)
#: Cost model by chapter: (fixed cost of the stay, cost per day), in euros.
_CHAPTER_COST = (
    (4200, 650),
    (2100, 600),
    (3000, 380),
    (4800, 700),
    (3100, 620),
    (2800, 600),
    (3900, 560),
    (2300, 580),
    (2600, 540),
    (3300, 600),
)

_COMPLICATION_RATE = 0.05
_COMPLICATION_MEAN_LOS = 15.0
_MAX_LOS = 180
_BATCH_ROWS = 1000


class _Weighted:
    """A weighted choice driven only by ``random()`` over integer weights."""

    def __init__(self, items: Sequence[object], weights: Sequence[int]) -> None:
        self.items = tuple(items)
        self.cum = tuple(accumulate(weights))
        self.total = self.cum[-1]

    def pick_index(self, rng: random.Random) -> int:
        # random() * total < total, so bisect_right never returns len(cum).  Items with a
        # zero weight have an empty interval and are never picked.
        return bisect_right(self.cum, rng.random() * self.total)

    def pick(self, rng: random.Random) -> object:
        return self.items[self.pick_index(rng)]


_AGE = _Weighted(AGE_BANDS, _AGE_WEIGHTS)
_SEX = _Weighted(SEXES, _SEX_WEIGHTS)
_REGION = _Weighted(REGIONS, _REGION_WEIGHTS)
_CHAPTER = {
    (age, sex): _Weighted(
        CHAPTERS,
        [0 if (sex == "M" and i == _PREGNANCY) else w for i, w in enumerate(weights)],
    )
    for age, weights in enumerate(_CHAPTER_WEIGHTS)
    for sex in SEXES
}


def _geometric(rng: random.Random, mean: float) -> int:
    """A geometric variate on 1, 2, ... with the given mean (>= 1), capped at _MAX_LOS."""
    p = 1.0 / mean
    n = 1
    while n < _MAX_LOS and rng.random() >= p:
        n += 1
    return n


def hospital_stays(n_rows: int, seed: int) -> Iterator[dict[str, object]]:
    """Yield ``n_rows`` synthetic hospital stays, deterministically from ``seed``.

    Each row is a dict with the keys of :data:`COLUMNS`: ``stay_id`` (``int``, 1..n),
    ``age_band``, ``sex``, ``region``, ``diagnosis_chapter`` (``str``),
    ``length_of_stay_days`` (``int`` >= 1) and ``cost_eur`` (``Decimal`` with 2 places).
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 0:
        raise ValueError(f"n_rows must be a non-negative int (got {n_rows!r})")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int (got {seed!r})")
    return _rows(n_rows, seed)


def _rows(n_rows: int, seed: int) -> Iterator[dict[str, object]]:
    rng = random.Random(seed)
    for stay_id in range(1, n_rows + 1):
        age = _AGE.pick_index(rng)
        sex = SEXES[_SEX.pick_index(rng)]
        region = _REGION.pick(rng)
        chapter = _CHAPTER[(age, sex)].pick_index(rng)

        mean = max(1.0, _CHAPTER_MEAN_LOS[chapter] * _AGE_LOS_FACTOR[age])
        los = _geometric(rng, mean)
        if rng.random() < _COMPLICATION_RATE:
            los = min(_MAX_LOS, los + _geometric(rng, _COMPLICATION_MEAN_LOS))

        fixed, per_day = _CHAPTER_COST[chapter]
        noise = 0.85 + 0.3 * rng.random()  # +-15 %
        cents = int((fixed + per_day * los) * noise * 100.0 + 0.5)

        yield {
            "stay_id": stay_id,
            "age_band": AGE_BANDS[age],
            "sex": sex,
            "region": region,
            "diagnosis_chapter": CHAPTERS[chapter],
            "length_of_stay_days": los,
            "cost_eur": Decimal(cents).scaleb(-2),
        }


def write_hospital_stays_csv(
    path: str | os.PathLike[str], n_rows: int = 5000, seed: int = 1
) -> str:
    """Write ``n_rows`` synthetic stays to a CSV file and return the sha256 hex of its bytes.

    UTF-8, a header row, LF line endings, minimal quoting.  The file is written atomically:
    to a temporary file in the same directory, flushed and fsynced, then ``os.replace``-d
    over ``path`` (so readers see the old file or the complete new one, never a partial one;
    the temporary file is removed on failure).  The new file gets the usual permissions
    (``0o666`` minus the umask).
    """
    rows = hospital_stays(n_rows, seed)  # validates the arguments before touching disk
    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    digest = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(COLUMNS)
            pending = 1
            for row in rows:
                writer.writerow([row[column] for column in COLUMNS])
                pending += 1
                if pending >= _BATCH_ROWS:
                    _flush(buffer, out, digest)
                    pending = 0
            _flush(buffer, out, digest)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return digest.hexdigest()


def _flush(buffer: io.StringIO, out: io.BufferedWriter, digest: hashlib._Hash) -> None:
    data = buffer.getvalue().encode("utf-8")
    digest.update(data)
    out.write(data)
    buffer.seek(0)
    buffer.truncate()


def _fsync_dir(directory: str) -> None:
    """Best effort: make the rename durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
