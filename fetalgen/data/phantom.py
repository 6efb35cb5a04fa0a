"""Procedural fetal-head phantoms: B-mode-like ultrasound images with exact masks, pixel size and HC.

The embedded default dataset for the demo and the tests (no download needed). Each phantom is rendered from
a handful of random parameters drawn from ``np.random.default_rng(seed)``, so one seed gives one image:

- a sector (fan) field of view on black, apex at the top centre;
- background tissue with a smooth random echogenicity, a dark amniotic-fluid halo around the head;
- a bright skull ring on an ellipse (random axes, angle, position, fully inside the fan), brighter where the
  beam meets it head-on; darker brain with thalami, a midline echo and the cavum septi pellucidi;
- acoustic shadowing behind the skull, depth attenuation, multiplicative Rayleigh speckle, log compression.

The mask is the filled ellipse through the outer edge of the skull (as in HC18). The head circumference is
drawn uniformly from ``HC_RANGE_MM`` and the pixel size set so that the ellipse's circumference (Ramanujan)
times the pixel size equals it.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fetalgen.data.cases import Case
from fetalgen.metrics.biometry import ellipse_circumference
from fetalgen.utils.files import atomic_write, write_json, write_png
from fetalgen.utils.seeds import derive_seed

IMAGES, MASKS = "images", "masks"
PIXEL_SIZES_CSV, HEADS_CSV, META_JSON = "pixel_sizes.csv", "heads.csv", "phantom.json"
PHANTOM_SHAPE = (270, 400)
# Phantom i of a dataset seeded with s is make_phantom(derive_seed(s, i)); datasets written under the earlier
# rule (no "rule" in phantom.json) are rewritten.
SEED_RULE = "derive_seed(seed, index)"
# Head circumference drawn uniformly over this range (mm), about HC18's, so all three trimesters occur;
# the pixel size follows from it and the ellipse drawn in pixels.
HC_RANGE_MM = (50.0, 330.0)


@dataclass(frozen=True)
class Phantom:
    """One rendered phantom.

    Attributes:
        image: uint8 HxW B-mode-like image (black outside the fan).
        mask: bool HxW filled head ellipse.
        pixel_size_mm: size of one pixel in mm.
        hc_mm: head circumference of the mask ellipse in mm.
        ellipse: ``(cx, cy, semi_a, semi_b, angle_deg)`` in pixels (x right, y down; angle of the ``a`` axis).
    """

    image: np.ndarray
    mask: np.ndarray
    pixel_size_mm: float
    hc_mm: float
    ellipse: tuple[float, float, float, float, float]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """A smooth random field in about [-1, 1]: a coarse Gaussian grid upsampled bicubically."""
    coarse = rng.standard_normal(cells).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, cos: float, sin: float):
    """Gaussian blob with radii ``rx, ry`` along the rotated axes (cos, sin)."""
    u = ((x - cx) * cos + (y - cy) * sin) / rx
    v = (-(x - cx) * sin + (y - cy) * cos) / ry
    return np.exp(-(u * u + v * v))


def _sample_geometry(rng: np.random.Generator, h: int, w: int) -> dict[str, float]:
    """Fan and head ellipse, redrawn until the ellipse plus a margin lies inside the fan."""
    apex_x, apex_y = w / 2.0, -0.04 * h
    r_max = 1.0 * h - apex_y - 0.02 * h
    half = math.radians(rng.uniform(36.0, 44.0))
    half = min(half, math.atan2(0.49 * w, r_max * 0.8))  # keep the fan inside narrow images
    r_min = 0.06 * h
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    for _ in range(1000):
        a = rng.uniform(0.22, 0.36) * min(h, 0.75 * w)
        b = a * rng.uniform(0.72, 0.92)
        ang = rng.uniform(-60.0, 60.0) + (90.0 if rng.random() < 0.25 else 0.0)
        cx = rng.uniform(0.3, 0.7) * w
        cy = rng.uniform(0.35, 0.65) * h
        c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
        margin = 1.1  # skull + halo stay in the fan too
        px = cx + margin * (a * np.cos(t) * c - b * np.sin(t) * s)
        py = cy + margin * (a * np.cos(t) * s + b * np.sin(t) * c)
        r = np.hypot(px - apex_x, py - apex_y)
        th = np.arctan2(px - apex_x, py - apex_y)
        inside = (r < r_max * 0.97) & (r > r_min) & (np.abs(th) < half * 0.95)
        inside &= (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
        if inside.all():
            return dict(
                apex_x=apex_x,
                apex_y=apex_y,
                r_max=r_max,
                r_min=r_min,
                half=half,
                a=a,
                b=b,
                angle=ang,
                cx=cx,
                cy=cy,
            )
    raise RuntimeError(f"could not place a head ellipse inside the fan of a {h}x{w} image")


def make_phantom(seed: int, shape: tuple[int, int] = (540, 800)) -> Phantom:
    """Render one phantom.

    Args:
        seed: random seed (same seed and shape, same phantom).
        shape: ``(H, W)`` of the image.

    Returns:
        :class:`Phantom` with a uint8 HxW image, a bool HxW mask, the pixel size and the HC in mm.
    """
    h, w = int(shape[0]), int(shape[1])
    if h < 32 or w < 32:
        raise ValueError(f"phantom shape must be at least 32x32, got {shape}")
    rng = np.random.default_rng(seed)
    g = _sample_geometry(rng, h, w)
    scale = h / 540.0  # pixels relative to an HC18-sized image
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)

    # Fan (polar coordinates about the apex).
    dx, dy = x - g["apex_x"], y - g["apex_y"]
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dx, dy)
    fan = (r <= g["r_max"]) & (r >= g["r_min"]) & (np.abs(theta) <= g["half"])
    depth = np.clip((r - g["r_min"]) / (g["r_max"] - g["r_min"]), 0, 1)

    # Head ellipse: normalised radius rho (1 on the mask boundary) and an approximate signed distance (px).
    a, b = g["a"], g["b"]
    c, s = math.cos(math.radians(g["angle"])), math.sin(math.radians(g["angle"]))
    ex, ey = x - g["cx"], y - g["cy"]
    u, v = (ex * c + ey * s) / a, (-ex * s + ey * c) / b
    rho = np.sqrt(u * u + v * v) + 1e-6
    gx, gy = (u * c / a - v * s / b) / rho, (u * s / a + v * c / b) / rho  # gradient of rho
    grad = np.sqrt(gx * gx + gy * gy) + 1e-6
    dist = (rho - 1.0) / grad
    mask = rho <= 1.0

    # Tissue echogenicity outside the head, a dark fluid halo around it.
    tissue = 0.5 + 0.14 * _smooth_field(rng, (h, w), (6, 9))
    tissue += 0.08 * _smooth_field(rng, (h, w), (18, 26))
    halo_w = rng.uniform(0.15, 0.45) * a
    fluid = np.exp(-((np.clip(dist, 0, None) / halo_w) ** 3)) * (dist > 0)
    echo = tissue * (1 - 0.85 * fluid)
    # Bright layers (uterine wall / placenta-like bands) near the top.
    band_r = g["r_min"] + rng.uniform(0.05, 0.2) * h
    echo += 0.25 * np.exp(-(((r - band_r) / (0.03 * h)) ** 2)) * (dist > 0)

    # Brain: darker, with thalami, a midline echo and the cavum septi pellucidi.
    brain = 0.2 + 0.07 * _smooth_field(rng, (h, w), (10, 14)) + 0.05 * _smooth_field(rng, (h, w), (30, 44))
    tha_off, tha_r = 0.18 * b, 0.16 * a
    for sign in (-1.0, 1.0):
        tx, ty = g["cx"] - sign * tha_off * s, g["cy"] + sign * tha_off * c
        brain -= 0.07 * _blob(x, y, tx, ty, tha_r, 0.7 * tha_r, c, s)
    mid_w = max(0.8, 2.2 * scale)
    along = np.abs(u)
    midline = np.exp(-(((v * b) / mid_w) ** 2)) * (along < 0.85) * (1 - 0.8 * (np.abs(u - 0.35) < 0.12))
    cavum = _blob(x, y, g["cx"] + 0.35 * a * c, g["cy"] + 0.35 * a * s, 0.1 * a, 0.05 * b, c, s)
    brain += rng.uniform(0.35, 0.6) * midline - 0.08 * cavum
    skull_t = rng.uniform(0.05, 0.09) * a
    # Skull: brighter where the beam meets it head-on (normal of the ellipse along the ray).
    incidence = np.abs((gx * dx + gy * dy) / (grad * r + 1e-6))
    patchy = 1 + 0.3 * _smooth_field(rng, (h, w), (8, 12))
    skull = np.exp(-(((dist + skull_t / 2) / (skull_t / 2)) ** 2)) * (0.2 + 0.8 * incidence**3) * patchy
    inner_edge = np.clip(-dist / (0.08 * a), 0, 1)
    echo = np.where(mask, brain * inner_edge + echo * (1 - inner_edge), echo) + 1.1 * skull

    echo *= _shadowing(rng, g, dx, dy, r, skull_t)
    image = _scanned(rng, echo, depth, fan, scale)

    hc_mm = rng.uniform(*HC_RANGE_MM)
    pixel_size = hc_mm / ellipse_circumference(a, b)
    ellipse = (float(g["cx"]), float(g["cy"]), float(a), float(b), float(g["angle"]))
    return Phantom(
        image=image, mask=mask, pixel_size_mm=float(pixel_size), hc_mm=float(hc_mm), ellipse=ellipse
    )


def _shadowing(
    rng: np.random.Generator,
    g: dict[str, float],
    dx: np.ndarray,
    dy: np.ndarray,
    r: np.ndarray,
    skull_t: float,
) -> np.ndarray:
    """Acoustic shadowing: the ray from the apex crosses the skull once (inside) or twice (beyond the head);
    returns the factor the echo is multiplied by."""
    a, b = g["a"], g["b"]
    c, s = math.cos(math.radians(g["angle"])), math.sin(math.radians(g["angle"]))
    ox, oy = g["apex_x"] - g["cx"], g["apex_y"] - g["cy"]
    p0u, p0v = (ox * c + oy * s) / a, (-ox * s + oy * c) / b
    du, dv = (dx * c + dy * s) / a / r, (-dx * s + dy * c) / b / r
    qa = du * du + dv * dv
    qb = 2 * (p0u * du + p0v * dv)
    qc = p0u * p0u + p0v * p0v - 1
    disc = qb * qb - 4 * qa * qc
    hit = disc > 0
    sq = np.sqrt(np.clip(disc, 0, None))
    t_near, t_far = (-qb - sq) / (2 * qa), (-qb + sq) / (2 * qa)
    soft = np.clip(disc / (4 * qa * 0.05), 0, 1)  # fades at the tangent rays
    crossings = hit * soft * ((r > t_near + skull_t).astype(np.float32) + (r > t_far + skull_t))
    return np.exp(-rng.uniform(0.25, 0.45) * crossings)


def _scanned(
    rng: np.random.Generator, echo: np.ndarray, depth: np.ndarray, fan: np.ndarray, scale: float
) -> np.ndarray:
    """The echo map as the scanner shows it: depth attenuation (partly compensated by time-gain), Rayleigh speckle,
    mild compression, blanked outside the fan; uint8."""
    h, w = echo.shape
    echo = echo * (np.exp(-rng.uniform(0.6, 1.2) * depth) * (1 + 0.25 * depth))  # as one factor: bit-exact
    sigma = max(0.7, 1.6 * scale)
    n1, n2 = rng.standard_normal((2, h, w), dtype=np.float32)
    n1 = cv2.GaussianBlur(n1, (0, 0), sigmaX=1.8 * sigma, sigmaY=0.8 * sigma)
    n2 = cv2.GaussianBlur(n2, (0, 0), sigmaX=1.8 * sigma, sigmaY=0.8 * sigma)
    speckle = np.sqrt(n1 * n1 + n2 * n2)  # Rayleigh amplitude
    speckle /= speckle.mean() + 1e-6
    img = np.clip(echo, 0, None) * (0.35 + 0.65 * speckle)
    img = np.clip(img / 1.2, 0, 1) ** 0.85
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigmaX=0.5 * sigma)
    img = np.where(fan, img, 0.0)
    return (img * 255.0 + 0.5).astype(np.uint8)


def phantom_name(index: int) -> str:
    """File stem of the ``index``-th phantom (``phantom_0007``)."""
    return f"phantom_{index:04d}"


def write_phantom_dataset(
    root: str | Path, n: int, seed: int = 0, shape: tuple[int, int] = PHANTOM_SHAPE
) -> list[Case]:
    """Write ``n`` phantoms in the generic folder layout.

    Layout::

        <root>/images/phantom_0000.png   uint8 grayscale
        <root>/masks/phantom_0000.png    filled mask, 0/255
        <root>/pixel_sizes.csv           filename,pixel size(mm)
        <root>/heads.csv                 filename,head circumference (mm)
        <root>/phantom.json              {"n", "seed", "shape", "rule"} the dataset was written with

    Returns:
        the written cases (cohort ``phantom``; each phantom is its own subject).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    root = Path(root)
    (root / IMAGES).mkdir(parents=True, exist_ok=True)
    (root / MASKS).mkdir(parents=True, exist_ok=True)
    keep = {f"{phantom_name(i)}.png" for i in range(n)}
    for stale in [*(root / IMAGES).glob("phantom_*.png"), *(root / MASKS).glob("phantom_*.png")]:
        if stale.name not in keep:  # left by an earlier, larger dataset
            stale.unlink()
    cases, rows = [], []
    for i in range(n):
        p = make_phantom(derive_seed(seed, i), shape)
        name = phantom_name(i)
        image_path, mask_path = root / IMAGES / f"{name}.png", root / MASKS / f"{name}.png"
        write_png(image_path, p.image, compression=1)
        write_png(mask_path, p.mask.astype(np.uint8) * 255, compression=1)
        rows.append((f"{name}.png", p.pixel_size_mm, p.hc_mm))
        cases.append(
            Case(
                name,
                image_path,
                mask_path,
                subject=name,
                pixel_size_mm=p.pixel_size_mm,
                hc_mm=p.hc_mm,
                cohort="phantom",
            )
        )
    _write_csv(
        root / PIXEL_SIZES_CSV, ["filename", "pixel size(mm)"], [(f, f"{ps:.9g}") for f, ps, _ in rows]
    )
    _write_csv(
        root / HEADS_CSV, ["filename", "head circumference (mm)"], [(f, f"{hc:.6g}") for f, _, hc in rows]
    )
    write_json(
        root / META_JSON, {"n": n, "seed": seed, "shape": [int(shape[0]), int(shape[1])], "rule": SEED_RULE}
    )
    return cases


def phantom_cases(
    root: str | Path, n: int = 64, seed: int = 0, shape: tuple[int, int] = PHANTOM_SHAPE
) -> list[Case]:
    """The phantom dataset at ``root``: written first if absent, incomplete or made with another seed or
    shape, then read with ``read_folder``.

    Returns:
        ``n`` cases, cohort ``phantom``, with pixel size and HC.
    """
    from fetalgen.data.folder import read_folder

    root = Path(root)
    names = [phantom_name(i) for i in range(n)]
    if not _is_complete(root, names, seed, shape):
        write_phantom_dataset(root, n=n, seed=seed, shape=shape)
    cases = read_folder(root, cohort="phantom")
    by_name = {c.name: c for c in cases}
    return [by_name[m] for m in names]


def _is_complete(root: Path, names: list[str], seed: int, shape: tuple[int, int]) -> bool:
    try:
        meta = json.loads((root / META_JSON).read_text())
        with open(root / HEADS_CSV, newline="") as f:
            listed = {row["filename"] for row in csv.DictReader(f)}
    except (OSError, ValueError, KeyError):
        return False
    if (
        meta.get("seed") != seed
        or meta.get("rule") != SEED_RULE
        or meta.get("shape") != [int(shape[0]), int(shape[1])]
        or meta["n"] < len(names)
    ):
        return False
    return listed >= {f"{m}.png" for m in names} and all(
        (root / IMAGES / f"{m}.png").is_file() and (root / MASKS / f"{m}.png").is_file() for m in names
    )


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(header)
            wr.writerows(rows)

    atomic_write(path, write)
